// `expertmesh perplexity`: llama-perplexity's flags and output (inventory §5.1/5.2).
//
//   expertmesh perplexity -m MODEL -f TEXT [-c 512] [-b 2048] [--chunks N] [-t N] [-ctk f16] [-ctv f16]
//                         [--kl-divergence-base FILE [--kl-divergence]] [--dump-activations DIR]
//
// Under mpirun every rank computes its share of each window (--placement ep|pp|hybrid|FILE, -ot,
// --cluster); rank 0 reads the text, scores and prints; the others follow. --comm-stats prints
// rank 0's communication time per evaluated token at the end (stderr).
#include <fmt/format.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/compat_flags.h"
#include "cli/engine_setup.h"
#include "cli/flags.h"
#include "coordinator/kld.h"
#include "coordinator/perplexity.h"
#include "model/model.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/activation_dump.h"
#include "worker/engine.h"

namespace expertmesh::cli {

namespace {
Result<int64_t> evaluate(worker::Engine& eng, const std::string& model_path, int threads, const std::string& dump_dir,
                         bool kl, const coordinator::PerplexityOptions& opt);
}  // namespace

Status cmd_perplexity(RankContext& ctx, const std::vector<std::string>& args) {
  std::string model_path, dump_dir;
  coordinator::PerplexityOptions opt;
  bool kl = false;
  int threads = ctx.n_threads;
  worker::EngineOptions eo;
  placement::PlacementFlags pf;
  RuntimeFlags rf;
  FlagSet fs("perplexity", "perplexity of a model on a text file, as llama-perplexity computes it");
  fs.add_string({"-m", "--model"}, &model_path, "FILE", "model GGUF (first shard of a split model)");
  fs.add_string({"-f", "--file"}, &opt.text_file, "FILE", "text to evaluate (e.g. wiki.test.raw)");
  fs.add_int({"-c", "--ctx-size"}, &opt.n_ctx, "N", "tokens per chunk (default 512)");
  fs.add_int({"-b", "--batch-size"}, &opt.n_batch, "N", "tokens per forward batch (default 2048)");
  fs.add_int({"--chunks"}, &opt.n_chunks, "N", "evaluate at most N chunks (default all)");
  fs.add_int({"-t", "--threads"}, &threads, "N", "compute threads");
  add_kv_cache_flags(fs, &eo);
  fs.add_string({"--kl-divergence-base", "--save-all-logits"}, &opt.kld_base_file, "FILE",
                "write the base logits here (or read them with --kl-divergence)");
  fs.add_bool({"--kl-divergence"}, &kl, "compare against --kl-divergence-base FILE (tokens come from FILE)");
  fs.add_string({"--dump-activations"}, &dump_dir, "DIR",
                "write the first chunk's per-layer intermediates (raw f32 + index.json)");
  placement::add_placement_flags(fs, &pf);
  PeerCompatFlags compat;
  add_peer_compat_flags(fs, &compat);
  add_runtime_flags(fs, &rf);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::printf("%s", fs.usage().c_str());
    return Status::Ok();
  }
  note_peer_compat_flags(ctx, "perplexity", compat);
  if (model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (kl && opt.kld_base_file.empty())
    return Status::InvalidArgument("--kl-divergence needs --kl-divergence-base FILE");
  if (!kl && opt.text_file.empty()) return Status::InvalidArgument("-f: a text file is required");
  if (threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", threads));
  if (opt.n_batch <= 0) return Status::InvalidArgument(fmt::format("-b: must be > 0, got {}", opt.n_batch));

  EM_ASSIGN_OR_RETURN(auto model, load_model_agreed(ctx, model_path));
  eo.n_threads = threads;
  if (compat.no_mmap) eo.weights = worker::WeightSource::kRead;
  eo.n_ctx = opt.n_ctx;
  eo.n_batch_max = std::min(opt.n_batch, opt.n_ctx);
  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model), pf, eo));
  int64_t n_tokens = 0;
  EM_RETURN_IF_ERROR(run_lockstep(ctx, setup, [&]() -> Status {
    EM_ASSIGN_OR_RETURN(n_tokens, evaluate(*setup.engine, model_path, threads, dump_dir, kl, opt));
    return Status::Ok();
  }));
  return report_runtime(ctx, setup, "perplexity", n_tokens, rf);
}

namespace {

// Rank 0's part: PPL (or KLD) over the chunks; returns the number of tokens evaluated.
Result<int64_t> evaluate(worker::Engine& eng, const std::string& model_path, int threads, const std::string& dump_dir,
                         bool kl, const coordinator::PerplexityOptions& opt) {
  worker::Engine* engine = &eng;
  EM_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_gguf(engine->model().file()));
  std::fprintf(stderr, "perplexity: %s, %s kernels, %d threads\n", model_path.c_str(), engine->kernels().name, threads);
  std::unique_ptr<worker::ActivationDump> dump;
  if (!dump_dir.empty()) {
    EM_ASSIGN_OR_RETURN(dump, worker::ActivationDump::create(dump_dir));
    engine->set_dump(dump->sink());
  }
  int64_t n_tokens = 0;
  if (kl) {
    EM_ASSIGN_OR_RETURN(auto s, coordinator::kl_divergence(*engine, *tok, opt, stdout));
    n_tokens = s.count;
  } else {
    EM_ASSIGN_OR_RETURN(auto r, coordinator::perplexity(*engine, *tok, opt, stdout));
    n_tokens = r.n_chunk * opt.n_ctx;
  }
  if (dump) EM_RETURN_IF_ERROR(dump->finish());
  return n_tokens;
}

}  // namespace

}  // namespace expertmesh::cli
