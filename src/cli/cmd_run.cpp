// `expertmesh run`: text generation from a prompt, as the peer's llama-cli does it (non-interactive).
//
//   expertmesh run -m MODEL -p PROMPT [-n 128] [--temp 0.8] [--top-k 40] [--top-p 0.95] [--min-p 0.05]
//                  [--repeat-penalty 1.0] [--repeat-last-n 64] [--frequency-penalty 0] [--presence-penalty 0]
//                  [--seed S] [-t N] [-c CTX] [-ctk f16] [-ctv f16]
//
// Contract (matches llama-cli's stdout):
//   - The prompt is tokenised with add_special = true (BOS when the vocabulary says add_bos) and
//     parse_special = true, as llama-cli does.
//   - stdout gets the prompt echo (token_to_piece of each prompt token, special = false, so BOS
//     prints nothing and SPM's "▁Once" prints " Once"), then each generated token's piece as soon
//     as it is sampled (flushed per token). Nothing else goes to stdout.
//   - The prompt is evaluated in one decode() call; then one token per decode() with the KV cache.
//   - Generation stops after -n tokens (-n < 0: until EOG or the context is full), at an
//     end-of-generation token (not printed), or when the context is full (no context shifting;
//     a note on stderr says so).
//   - stderr gets the sampler settings and the prompt / generation speed lines.
// -c 0 (default) sizes the context to min(n_ctx_train, prompt + n) tokens.
// Under mpirun every rank maps the model and computes its share of each step (--placement
// ep|pp|hybrid|FILE, -ot, --cluster); rank 0 tokenizes, samples and prints; the others follow.
// --comm-stats prints rank 0's communication time per generated token at the end (stderr).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "cli/compat_flags.h"
#include "cli/engine_setup.h"
#include "cli/flags.h"
#include "cli/sampling_flags.h"
#include "model/model.h"
#include "model/sampling.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine.h"

namespace expertmesh::cli {

namespace {

using Clock = std::chrono::steady_clock;

// What rank 0's generation loop needs besides the engine.
struct Generation {
  const Tokenizer* tok = nullptr;
  std::vector<int32_t> prompt_ids;
  int64_t n_predict = 0;
  std::string model_path;
  int threads = 1;
  SamplingParams sp;
  int64_t n_eval = 0;  // out: single-token evaluations done
};

Status generate(worker::Engine& eng, Generation& g);

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void print_speed(const char* what, int64_t n, double sec) {
  const double ms = sec * 1e3;
  std::fprintf(stderr, "run: %-11s = %10.2f ms / %5lld tokens (%8.2f ms per token, %8.2f tokens per second)\n", what,
               ms, static_cast<long long>(n), n > 0 ? ms / static_cast<double>(n) : 0.0,
               sec > 0 ? static_cast<double>(n) / sec : 0.0);
}

}  // namespace

Status cmd_run(RankContext& ctx, const std::vector<std::string>& args) {
  std::string model_path, prompt;
  int64_t n_predict = 128, n_ctx = 0, seed = -1;
  int threads = ctx.n_threads;
  SamplingFlags sf;
  worker::EngineOptions eo;
  placement::PlacementFlags pf;
  RuntimeFlags rf;
  FlagSet fs("run", "generate text from a prompt, as llama-cli does");
  fs.add_string({"-m", "--model"}, &model_path, "FILE", "model GGUF (first shard of a split model)");
  fs.add_string({"-p", "--prompt"}, &prompt, "TEXT", "prompt to start generation from");
  fs.add_int({"-n", "--n-predict"}, &n_predict, "N",
             "tokens to generate (default 128, -1 = until EOG or context full)");
  add_sampling_flags(fs, &sf);
  fs.add_int({"-s", "--seed"}, &seed, "S", "RNG seed (default -1 = random)");
  fs.add_int({"-t", "--threads"}, &threads, "N", "compute threads");
  fs.add_int({"-c", "--ctx-size"}, &n_ctx, "N", "context size (default 0 = min(n_ctx_train, prompt + n))");
  add_kv_cache_flags(fs, &eo);
  placement::add_placement_flags(fs, &pf);
  PeerCompatFlags compat;
  add_peer_compat_flags(fs, &compat);
  add_runtime_flags(fs, &rf);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::printf("%s", fs.usage().c_str());
    return Status::Ok();
  }
  note_peer_compat_flags(ctx, "run", compat);
  if (model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (prompt.empty()) return Status::InvalidArgument("-p: a prompt is required");
  if (threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", threads));
  if (n_ctx < 0) return Status::InvalidArgument(fmt::format("-c: must be >= 0, got {}", n_ctx));
  EM_RETURN_IF_ERROR(check_sampling_flags(sf));
  if (seed < -1 || seed > 0xFFFFFFFFll)
    return Status::InvalidArgument(fmt::format("--seed: must be -1 or a 32-bit unsigned value, got {}", seed));

  // Every rank tokenizes the prompt: the context size depends on it.
  EM_ASSIGN_OR_RETURN(auto model, load_model_agreed(ctx, model_path));
  EM_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_gguf(model->file()));
  const SamplingParams sp = sampling_params(sf, *tok);
  const std::vector<int32_t> prompt_ids = tok->encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  if (prompt_ids.empty())
    return Status::InvalidArgument(fmt::format("-p: the prompt gives no tokens with {}'s vocabulary", model_path));

  const int64_t n_prompt = static_cast<int64_t>(prompt_ids.size());
  if (n_ctx == 0) {
    const int64_t train = model->hparams().n_ctx_train > 0 ? model->hparams().n_ctx_train : 4096;
    n_ctx = n_predict < 0 ? train : std::min(train, n_prompt + n_predict);
  }
  if (n_prompt > n_ctx)
    return Status::InvalidArgument(
        fmt::format("-p: the prompt has {} tokens, more than the context size {} (-c)", n_prompt, n_ctx));
  eo.n_threads = threads;
  if (compat.no_mmap) eo.weights = worker::WeightSource::kRead;
  eo.n_ctx = n_ctx;
  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model), pf, eo));
  Generation g{tok.get(), prompt_ids, n_predict, model_path, threads, sp, 0};
  g.sp.seed = seed < 0 ? std::random_device{}() : static_cast<uint32_t>(seed);
  EM_RETURN_IF_ERROR(run_lockstep(ctx, setup, [&] { return generate(*setup.engine, g); }));
  return report_runtime(ctx, setup, "run", g.n_eval + n_prompt, rf);
}

namespace {

Status generate(worker::Engine& eng, Generation& g) {
  worker::Engine* engine = &eng;
  const Tokenizer* tok = g.tok;
  const std::vector<int32_t>& prompt_ids = g.prompt_ids;
  const int64_t n_predict = g.n_predict;
  const int64_t n_prompt = static_cast<int64_t>(prompt_ids.size());
  const int64_t n_ctx = engine->n_ctx();
  const SamplingParams& sp = g.sp;
  Sampler sampler(sp);
  std::fprintf(stderr, "run: %s, %s kernels, %d threads, n_ctx = %lld, prompt %lld tokens\n", g.model_path.c_str(),
               engine->kernels().name, g.threads, static_cast<long long>(n_ctx), static_cast<long long>(n_prompt));
  if (sp.temp <= 0.0f) {
    std::fprintf(stderr, "run: sampling: greedy (temp = %.3f)\n", sp.temp);
  } else {
    std::fprintf(stderr, "run: sampling: top_k = %d -> top_p = %.3f -> min_p = %.3f -> temp = %.3f, seed = %u\n",
                 sp.top_k, sp.top_p, sp.min_p, sp.temp, sp.seed);
  }
  if (sp.penalties_on())
    std::fprintf(stderr,
                 "run: penalties: repeat_last_n = %d, repeat_penalty = %.3f, frequency_penalty = %.3f, "
                 "presence_penalty = %.3f\n",
                 sp.repeat_last_n, sp.repeat_penalty, sp.frequency_penalty, sp.presence_penalty);

  for (int32_t id : prompt_ids) {
    std::fputs(tok->token_to_piece(id, /*special=*/false).c_str(), stdout);
    sampler.accept(id);  // the penalties see the prompt, as in the peer
  }
  std::fflush(stdout);

  std::vector<float> logits(static_cast<size_t>(engine->n_vocab()));  // one row, as decode() writes it
  const int64_t last_row[1] = {n_prompt - 1};
  auto t0 = Clock::now();
  EM_RETURN_IF_ERROR(engine->decode(prompt_ids, last_row, logits.data()));
  const double t_prompt = seconds_since(t0);

  int64_t n_gen = 0, n_eval = 0;
  double t_gen = 0;
  const int64_t zero_row[1] = {0};
  while (n_predict < 0 || n_gen < n_predict) {
    const int32_t id = sampler.sample(logits);
    sampler.accept(id);
    ++n_gen;
    if (tok->is_eog(id)) break;
    std::fputs(tok->token_to_piece(id, /*special=*/false).c_str(), stdout);
    std::fflush(stdout);
    if (n_predict >= 0 && n_gen >= n_predict) break;  // the last token needs no evaluation
    if (engine->n_past() >= engine->n_ctx()) {
      std::fprintf(stderr, "\nrun: context full (%lld tokens, -c); stopping\n",
                   static_cast<long long>(engine->n_ctx()));
      break;
    }
    const int32_t one[1] = {id};
    auto t1 = Clock::now();
    EM_RETURN_IF_ERROR(engine->decode(one, zero_row, logits.data()));
    t_gen += seconds_since(t1);
    ++n_eval;
  }
  std::fputs("\n", stderr);
  print_speed("prompt eval", n_prompt, t_prompt);
  print_speed("eval", n_eval, t_gen);
  std::fprintf(stderr, "run: generated %lld tokens\n", static_cast<long long>(n_gen));
  g.n_eval = n_eval;
  return Status::Ok();
}

}  // namespace

}  // namespace expertmesh::cli
