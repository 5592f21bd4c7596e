// `expertmesh bench`: prompt-processing and generation speed, printed as llama-bench's markdown
// table (examples/llama-bench/llama-bench.cpp in the peer).
//
//   expertmesh bench -m MODEL [-p 512] [-n 128] [-t N] [-r 5] [-b 2048] [-ctk f16] [-ctv f16]
//
// Contract, as llama-bench measures:
//   - one warm-up evaluation (a 1-token decode) before the timed runs;
//   - ppN: per repetition, clear the KV cache and decode N tokens (BOS first when the vocabulary
//     adds one, the rest pseudo-random with a fixed seed) in batches of -b, logits of the last row;
//   - tgN: per repetition, clear the KV cache and decode N single tokens at positions 0..N-1;
//   - t/s is tokens / seconds of each repetition; the table shows mean ± sample stddev over -r.
// -p 0 or -n 0 skips that test. stdout gets only the table; progress notes go to stderr.
// Under mpirun every rank computes its share (--placement ep|pp|hybrid|FILE, -ot, --cluster);
// rank 0 times and prints. --comm-stats adds, per test, rank 0's communication time per token
// (stderr: "bench: comm tgN: X ms/token of Y ms/token").
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "cli/compat_flags.h"
#include "cli/engine_setup.h"
#include "cli/flags.h"
#include "coordinator/quantize/presets.h"
#include "model/model.h"
#include "worker/engine.h"

namespace expertmesh::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct TestResult {
  std::string label;
  std::vector<double> ts;  // tokens per second of each repetition
  double comm_s = 0;       // rank 0's communication seconds over all repetitions
  double total_s = 0;      // wall seconds over all repetitions
  int64_t tokens = 0;      // tokens over all repetitions
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

// Sample standard deviation (n - 1), 0 for fewer than two values, as llama-bench's stdev().
double stdev(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double m = mean(v);
  double sq = 0;
  for (double x : v) sq += (x - m) * (x - m);
  return std::sqrt(sq / static_cast<double>(v.size() - 1));
}

// llama_model_desc: "<arch> <size class> <file type>"; we do not classify sizes ("?B").
std::string model_desc(const Model& m) {
  std::string ftype;
  if (auto ft = m.file().get_int("general.file_type"); ft.ok()) {
    if (auto p = parse_quant_preset(std::to_string(*ft)); p.ok()) ftype = p->name;
  }
  if (ftype.empty()) {  // the type holding the most bytes
    std::vector<int64_t> bytes(512, 0);
    GgmlType best = GgmlType::F32;
    for (const auto& t : m.file().tensors()) {
      const auto i = static_cast<size_t>(t.type);
      if (i < bytes.size() && (bytes[i] += t.nbytes) > bytes[static_cast<size_t>(best)]) best = t.type;
    }
    ftype = type_name(best);
    for (auto& c : ftype) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return fmt::format("{} ?B {}", m.hparams().arch_str, ftype);
}

Result<double> time_pp(worker::Engine& e, int64_t n, int64_t n_batch, int32_t bos, int64_t n_vocab, std::mt19937& rng,
                       std::vector<float>& logits) {
  e.clear();
  std::vector<int32_t> toks(static_cast<size_t>(n));
  for (auto& t : toks) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  if (bos >= 0) toks[0] = bos;
  auto t0 = Clock::now();
  for (int64_t b0 = 0; b0 < n; b0 += n_batch) {
    const int64_t nb = std::min(n_batch, n - b0);
    const int64_t last[1] = {nb - 1};
    EM_RETURN_IF_ERROR(
        e.decode(std::span<const int32_t>(toks.data() + b0, static_cast<size_t>(nb)), last, logits.data()));
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Result<double> time_tg(worker::Engine& e, int64_t n, int32_t bos, int64_t n_vocab, std::mt19937& rng,
                       std::vector<float>& logits) {
  e.clear();
  int32_t tok = bos >= 0 ? bos : static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  const int64_t row[1] = {0};
  auto t0 = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t one[1] = {tok};
    EM_RETURN_IF_ERROR(e.decode(one, row, logits.data()));
    tok = static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab));
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct BenchArgs {
  std::string model_path;
  int64_t n_prompt, n_gen, n_batch;
  int reps, threads;
  int32_t bos;
  bool comm_stats;
};

Status bench_root(EngineSetup& setup, const BenchArgs& a);

}  // namespace

Status cmd_bench(RankContext& ctx, const std::vector<std::string>& args) {
  std::string model_path;
  int64_t n_prompt = 512, n_gen = 128, n_batch = 2048;
  int reps = 5;
  int threads = ctx.n_threads;
  worker::EngineOptions eo;
  placement::PlacementFlags pf;
  RuntimeFlags rf;
  FlagSet fs("bench", "prompt processing and generation speed, as llama-bench prints it");
  fs.add_string({"-m", "--model"}, &model_path, "FILE", "model GGUF (first shard of a split model)");
  fs.add_int({"-p", "--n-prompt"}, &n_prompt, "N", "prompt tokens of the pp test (default 512, 0 = skip)");
  fs.add_int({"-n", "--n-gen"}, &n_gen, "N", "generated tokens of the tg test (default 128, 0 = skip)");
  fs.add_int({"-b", "--batch-size"}, &n_batch, "N", "tokens per forward batch in pp (default 2048)");
  fs.add_int({"-r", "--repetitions"}, &reps, "N", "repetitions of each test (default 5)");
  fs.add_int({"-t", "--threads"}, &threads, "N", "compute threads");
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
  note_peer_compat_flags(ctx, "bench", compat);
  if (model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (n_prompt < 0) return Status::InvalidArgument(fmt::format("-p: must be >= 0, got {}", n_prompt));
  if (n_gen < 0) return Status::InvalidArgument(fmt::format("-n: must be >= 0, got {}", n_gen));
  if (n_prompt == 0 && n_gen == 0) return Status::InvalidArgument("-p/-n: nothing to measure (both 0)");
  if (n_batch <= 0) return Status::InvalidArgument(fmt::format("-b: must be > 0, got {}", n_batch));
  if (reps <= 0) return Status::InvalidArgument(fmt::format("-r: must be > 0, got {}", reps));
  if (threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", threads));

  EM_ASSIGN_OR_RETURN(auto model_owned, load_model_agreed(ctx, model_path));
  const Model* model = model_owned.get();
  const HParams& hp = model->hparams();
  int32_t bos = -1;
  if (auto add = model->file().find("tokenizer.ggml.add_bos_token"); add == nullptr || add->as_bool()) {
    if (auto b = model->file().get_int("tokenizer.ggml.bos_token_id"); b.ok() && *b >= 0 && *b < hp.n_vocab)
      bos = static_cast<int32_t>(*b);
  }
  eo.n_threads = threads;
  if (compat.no_mmap) eo.weights = worker::WeightSource::kRead;
  eo.n_ctx = std::max<int64_t>({n_prompt, n_gen, 1});
  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model_owned), pf, eo));
  EM_RETURN_IF_ERROR(run_lockstep(ctx, setup, [&]() -> Status {
    BenchArgs a{model_path, n_prompt, n_gen, n_batch, reps, threads, bos, rf.comm_stats};
    return bench_root(setup, a);
  }));
  RuntimeFlags mem_only = rf;
  mem_only.comm_stats = false;  // bench prints its per-test communication figures itself
  return report_runtime(ctx, setup, "bench", 0, mem_only);
}

namespace {

Status bench_root(EngineSetup& setup, const BenchArgs& a) {
  const std::string& model_path = a.model_path;
  const int64_t n_prompt = a.n_prompt, n_gen = a.n_gen, n_batch = a.n_batch;
  const int reps = a.reps, threads = a.threads;
  const int32_t bos = a.bos;
  const Model* model = setup.model.get();
  const HParams& hp = model->hparams();
  worker::Engine* engine = setup.engine.get();
  const comm::Cluster& cluster = *setup.cluster;
  std::fprintf(stderr, "bench: %s, %s kernels, %d threads\n", model_path.c_str(), engine->kernels().name, threads);

  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  std::mt19937 rng(1234);
  {  // warm-up
    auto w = time_tg(*engine, 1, bos, hp.n_vocab, rng, logits);
    if (!w.ok()) return w.status();
  }
  std::vector<TestResult> results;
  if (n_prompt > 0) {
    TestResult r{fmt::format("pp{}", n_prompt), {}};
    const double c0 = cluster.stats().total_seconds();
    for (int i = 0; i < reps; ++i) {
      EM_ASSIGN_OR_RETURN(double s, time_pp(*engine, n_prompt, n_batch, bos, hp.n_vocab, rng, logits));
      r.ts.push_back(static_cast<double>(n_prompt) / s);
      r.total_s += s;
      r.tokens += n_prompt;
    }
    r.comm_s = cluster.stats().total_seconds() - c0;
    results.push_back(std::move(r));
  }
  if (n_gen > 0) {
    TestResult r{fmt::format("tg{}", n_gen), {}};
    const double c0 = cluster.stats().total_seconds();
    for (int i = 0; i < reps; ++i) {
      EM_ASSIGN_OR_RETURN(double s, time_tg(*engine, n_gen, bos, hp.n_vocab, rng, logits));
      r.ts.push_back(static_cast<double>(n_gen) / s);
      r.total_s += s;
      r.tokens += n_gen;
    }
    r.comm_s = cluster.stats().total_seconds() - c0;
    results.push_back(std::move(r));
  }

  uint64_t size = 0, params = 0;
  for (const auto& t : model->file().tensors()) {
    size += static_cast<uint64_t>(t.nbytes);
    params += static_cast<uint64_t>(t.n_elements());
  }
  const std::string size_s = size < 1024ull * 1024 * 1024 ? fmt::format("{:.2f} MiB", size / 1024.0 / 1024.0)
                                                          : fmt::format("{:.2f} GiB", size / 1024.0 / 1024.0 / 1024.0);
  const std::string params_s =
      params < 1000ull * 1000 * 1000 ? fmt::format("{:.2f} M", params / 1e6) : fmt::format("{:.2f} B", params / 1e9);
  const std::string desc = model_desc(*model);
  // Column widths of llama-bench's markdown_printer (negative = left-aligned); "±" is 2 bytes.
  std::printf("| %-30s | %10s | %10s | %-10s | %7s | %13s | %16s |\n", "model", "size", "params", "backend", "threads",
              "test", "t/s");
  std::printf("| %s- | %s: | %s: | %s- | %s: | %s: | %s: |\n", std::string(29, '-').c_str(),
              std::string(9, '-').c_str(), std::string(9, '-').c_str(), std::string(9, '-').c_str(),
              std::string(6, '-').c_str(), std::string(12, '-').c_str(), std::string(15, '-').c_str());
  for (const auto& r : results) {
    const std::string ts = fmt::format("{:.2f} ± {:.2f}", mean(r.ts), stdev(r.ts));
    std::printf("| %-30s | %10s | %10s | %-10s | %7d | %13s | %17s |\n", desc.c_str(), size_s.c_str(), params_s.c_str(),
                "CPU", threads, r.label.c_str(), ts.c_str());
  }
  std::fflush(stdout);
  if (a.comm_stats)
    for (const auto& r : results)
      std::fprintf(stderr, "bench: comm %s: %.4f ms/token of %.4f ms/token (%.1f%%)\n", r.label.c_str(),
                   r.comm_s * 1e3 / double(r.tokens), r.total_s * 1e3 / double(r.tokens),
                   r.total_s > 0 ? 100.0 * r.comm_s / r.total_s : 0.0);
  return Status::Ok();
}

}  // namespace

}  // namespace expertmesh::cli
