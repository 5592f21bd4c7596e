// `expertmesh bench`: prompt-processing and generation speed, printed as llama-bench's markdown
// table (examples/llama-bench/llama-bench.cpp in the peer), and a sweep over the KV cache as
// llama-sweep-bench prints it (examples/sweep-bench/sweep-bench.cpp).
//
//   expertmesh bench -m MODEL [-p 512] [-n 128] [-pg PP,TG]... [-gp PP,TG]... [-t N] [-r 5]
//                    [-b 2048] [-ub 512] [-c N] [-ctk f16] [-ctv f16] [--bandwidth]
//   expertmesh bench -m MODEL --sweep -c N [-ub 512] [-n UB/4] [-t N] [-r 1]
//   expertmesh bench --bandwidth [-t N]                       (no model: the bandwidth line only)
//
// Contract, as llama-bench measures:
//   - one warm-up evaluation (a 1-token decode) before the timed runs;
//   - ppN: per repetition, clear the KV cache and decode N tokens (BOS first when the vocabulary
//     adds one, the rest pseudo-random with a fixed seed) in forward batches of min(-b, -ub)
//     tokens (the peer's logical batch -b is cut into physical batches of -ub), logits of each
//     batch's last row;
//   - tgN: per repetition, clear the KV cache and decode N single tokens at positions 0..N-1
//     (the first one BOS when the vocabulary adds one);
//   - -pg PP,TG ("ppPP+tgTG"): per repetition, clear, ppPP then tgTG at positions PP.., one
//     timed unit; t/s = (PP + TG) / seconds;
//   - -gp PP,TG ("tgTG@ppPP", ik_llama.cpp's llama-bench): per repetition, clear, ppPP
//     untimed, then tgTG at positions PP..; t/s = TG / seconds of the generation only;
//   - t/s is tokens / seconds of each repetition; the table shows mean ± sample stddev over -r.
// -p 0 or -n 0 skips that test; -pg / -gp repeat (each occurrence adds one test). Rows in the
// peer's order: pp, tg, the -pg tests, the -gp tests (each kind in command-line order). The context
// holds the longest test (PP + TG positions), or -c positions when given (at least that).
//
// Below the llama-bench table (after one empty line) a second table gives, for each test that
// generates one token per forward (tgN and tgTG@ppPP), the weight bytes read per generated token
// and the effective weight bandwidth (bytes/token × mean t/s). Bytes per token: every tensor of
// the file in full, except expert tensors (names with "_exps", [.., .., n_expert]) at
// n_expert_used / n_expert of their bytes, and token_embd at one row; the output head in full
// (token_embd in full as well when the head is tied to it). KV-cache reads are not counted.
// Under mpirun the bytes are the whole model's (all ranks together).
//
// --bandwidth measures rank 0's read bandwidth before the warm-up: -t threads each first write,
// then repeatedly stream-read, their share of a --bandwidth-mib buffer (default 1024 MiB, far
// larger than any last-level cache), summing 64-bit words in 8 independent accumulators; GB/s (1e9
// bytes/s) of the fastest of 8 passes. It prints "bandwidth: X GB/s ..." and fills the second
// table's "of bandwidth" column (else "-"). Under mpirun only rank 0 measures (the other ranks
// wait for its first batch), so the figure is one rank's, not the job's.
//
// --sweep (llama-sweep-bench's loop): for N_KV = 0, U, 2U, ... while N_KV + max(U, T) <= -c:
// first TG = T generated (random) tokens at positions N_KV.. (timed: T_TG; S_TG = T / T_TG), then the
// cache is rewound to N_KV and PP = U random tokens are decoded at N_KV.. (timed: T_PP;
// S_PP = U / T_PP), which leaves the cache filled to N_KV + U for the next row. U = -ub
// (default 512), T = -n (default U / 4, as the peer's). With -r R each of the two is run R times
// from the same N_KV and the mean time shown (the peer repeats only its first row).
//
// stdout gets only the tables (and the bandwidth line); progress notes go to stderr.
// Under mpirun every rank computes its share (--placement ep|pp|hybrid|FILE, -ot, --cluster);
// rank 0 times and prints. --comm-stats adds, per test, rank 0's communication time per token
// (stderr: "bench: comm tgN: X ms/token of Y ms/token").
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <new>
#include <random>
#include <thread>

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

// A flag left at this value was not given (the default then depends on the mode).
constexpr int64_t kUnset = std::numeric_limits<int64_t>::min();

enum class TestKind { kPp, kTg, kPg, kGp };

// One row of the llama-bench table: n_prompt prompt tokens, then n_gen generated tokens.
struct TestSpec {
  TestKind kind;
  int64_t n_prompt = 0, n_gen = 0;
  std::string label() const {
    switch (kind) {
      case TestKind::kPp:
        return fmt::format("pp{}", n_prompt);
      case TestKind::kTg:
        return fmt::format("tg{}", n_gen);
      case TestKind::kPg:
        return fmt::format("pp{}+tg{}", n_prompt, n_gen);
      case TestKind::kGp:
        return fmt::format("tg{}@pp{}", n_gen, n_prompt);
    }
    return "?";
  }
  int64_t positions() const { return n_prompt + n_gen; }
  // Tokens counted by t/s: -gp times the generation only.
  int64_t timed_tokens() const { return kind == TestKind::kGp ? n_gen : n_prompt + n_gen; }
  // One token per forward at a time: the tests whose weight traffic per token means something.
  bool generates() const { return kind == TestKind::kTg || kind == TestKind::kGp; }
};

struct TestResult {
  std::string label;
  std::vector<double> ts;  // tokens per second of each repetition
  double comm_s = 0;       // rank 0's communication seconds over all repetitions
  double total_s = 0;      // wall seconds over all repetitions
  int64_t tokens = 0;      // timed tokens over all repetitions
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

// "PP,TG" of -pg / -gp: two non-negative integers. Errors name the flag.
Result<TestSpec> parse_pair(const char* flag, TestKind kind, const std::string& v) {
  auto bad = [&] {
    return Status::InvalidArgument(fmt::format("{}: expected PP,TG (two non-negative integers), got '{}'", flag, v));
  };
  const size_t comma = v.find(',');
  if (comma == std::string::npos) return bad();
  const std::string a = v.substr(0, comma), b = v.substr(comma + 1);
  for (const std::string& s : {a, b})
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return bad();
  TestSpec t{kind, std::stoll(a), std::stoll(b)};
  if (kind == TestKind::kPg && t.n_prompt == 0 && t.n_gen == 0)
    return Status::InvalidArgument(fmt::format("{}: nothing to measure in '{}'", flag, v));
  if (kind == TestKind::kGp && t.n_gen == 0)
    return Status::InvalidArgument(
        fmt::format("{}: TG must be > 0 (the generation is what is timed), got '{}'", flag, v));
  return t;
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

// Weight bytes one generated token reads (see the file comment for what is counted).
struct WeightTraffic {
  double dense = 0;        // every tensor read in full, except the head and the experts
  double experts_all = 0;  // all expert tensors' bytes
  double experts = 0;      // their share read per token: experts_all × n_expert_used / n_expert
  double head = 0;         // output.weight (or token_embd when tied)
  double embd_row = 0;     // one row of token_embd
  double total() const { return dense + experts + head + embd_row; }
};

// Decimal units with 2 decimals ("243.07 MB", "193.54 kB", "512.00 B").
std::string format_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.2f} kB", b / 1e3);
  return fmt::format("{:.2f} B", b);
}

WeightTraffic weight_traffic(const Model& m) {
  const HParams& hp = m.hparams();
  WeightTraffic w;
  bool has_output = false;
  double embd_all = 0;
  for (const auto& t : m.file().tensors()) {
    const double b = static_cast<double>(t.nbytes);
    if (t.name == "token_embd.weight") {
      embd_all = b;
      w.embd_row = b / static_cast<double>(std::max<int64_t>(1, t.ne[1] * t.ne[2] * t.ne[3]));
    } else if (t.name == "output.weight") {
      has_output = true;
      w.head = b;
    } else if (hp.n_expert > 0 && t.name.find("_exps") != std::string::npos) {
      w.experts_all += b;
    } else {
      w.dense += b;
    }
  }
  if (!has_output) w.head = embd_all;  // tied head: the whole embedding matrix per token
  if (hp.n_expert > 0)
    w.experts = w.experts_all * static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert);
  return w;
}

struct Bandwidth {
  double gbps = 0;  // 1e9 bytes per second, best pass
  int threads = 0;
  int64_t bytes = 0;
  int passes = 0;
};

// Sum of the 64-bit words [p, p + n) (n a multiple of 8) in 8 independent named accumulators:
// no dependency chain limits the loads, and the compiler may pair them into vector adds (an
// accumulator array instead is kept in memory at -O2 and reads ~30% slower). The loads are the
// point; the sum only keeps them from being optimised away.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  for (size_t i = 0; i < n; i += 8) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
    s4 += p[i + 4];
    s5 += p[i + 5];
    s6 += p[i + 6];
    s7 += p[i + 7];
  }
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

// Streams `bytes` (rounded down to whole 64-byte lines per thread) with `threads` threads: each
// writes its slice first (so its pages are its own and resident), then all read their slices
// together `passes` times between two barriers; the fastest pass gives the figure.
Bandwidth measure_read_bandwidth(int threads, int64_t bytes, int passes) {
  const size_t words_per_thread = static_cast<size_t>(bytes / threads / 64) * 8;
  const size_t n_words = words_per_thread * static_cast<size_t>(threads);
  auto* buf = static_cast<uint64_t*>(::operator new(n_words * sizeof(uint64_t), std::align_val_t(64)));
  std::barrier sync(threads);
  std::vector<double> seconds(static_cast<size_t>(passes), 0.0);
  std::atomic<uint64_t> sink{0};
  auto work = [&](int id) {
    uint64_t* mine = buf + static_cast<size_t>(id) * words_per_thread;
    for (size_t i = 0; i < words_per_thread; ++i) mine[i] = i ^ static_cast<uint64_t>(id);
    uint64_t s = 0;
    for (int pass = 0; pass < passes; ++pass) {
      sync.arrive_and_wait();
      const auto t0 = Clock::now();
      s += sum_words(mine, words_per_thread);
      sync.arrive_and_wait();
      if (id == 0) seconds[static_cast<size_t>(pass)] = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    sink.fetch_add(s, std::memory_order_relaxed);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(work, i);
  work(0);
  for (auto& t : pool) t.join();
  ::operator delete(buf, std::align_val_t(64));
  const double best = *std::min_element(seconds.begin(), seconds.end());
  const int64_t read = static_cast<int64_t>(n_words * sizeof(uint64_t));
  return {best > 0 ? static_cast<double>(read) / best / 1e9 : 0.0, threads, read, passes};
}

void print_bandwidth(const Bandwidth& bw) {
  std::printf("bandwidth: %.2f GB/s read, %d threads (%.0f MiB buffer, best of %d passes)\n", bw.gbps, bw.threads,
              static_cast<double>(bw.bytes) / 1024.0 / 1024.0, bw.passes);
}

// Decodes `toks` into sequence 0 at positions pos0.. (a position below the sequence's length
// rewinds it) in forward batches of n_batch tokens, logits of each batch's last row.
Status decode_at(worker::Engine& e, std::span<const int32_t> toks, int64_t pos0, int64_t n_batch,
                 std::vector<float>& logits) {
  std::vector<int32_t> pos, seq;
  for (size_t b0 = 0; b0 < toks.size(); b0 += static_cast<size_t>(n_batch)) {
    const size_t nb = std::min(static_cast<size_t>(n_batch), toks.size() - b0);
    pos.resize(nb);
    seq.assign(nb, 0);
    for (size_t i = 0; i < nb; ++i) pos[i] = static_cast<int32_t>(pos0 + static_cast<int64_t>(b0 + i));
    const int64_t last[1] = {static_cast<int64_t>(nb) - 1};
    EM_RETURN_IF_ERROR(e.decode_batch(toks.subspan(b0, nb), pos, seq, last, logits.data()));
  }
  return Status::Ok();
}

struct TokenSource {
  int32_t bos;  // -1: the vocabulary adds none
  int64_t n_vocab;
  std::mt19937 rng{1234};
  int32_t random() { return static_cast<int32_t>(rng() % static_cast<uint32_t>(n_vocab)); }
};

// n prompt tokens at positions pos0.. (BOS first at position 0 when the vocabulary adds one).
Status run_prompt(worker::Engine& e, int64_t n, int64_t pos0, int64_t n_batch, TokenSource& src,
                  std::vector<float>& logits) {
  std::vector<int32_t> toks(static_cast<size_t>(n));
  for (auto& t : toks) t = src.random();
  if (pos0 == 0 && src.bos >= 0) toks[0] = src.bos;
  return decode_at(e, toks, pos0, n_batch, logits);
}

// n single-token decodes at positions pos0..; the first token is BOS when `bos_first` and the
// vocabulary adds one (llama-bench's test_gen), the others random.
Status run_gen(worker::Engine& e, int64_t n, int64_t pos0, bool bos_first, TokenSource& src,
               std::vector<float>& logits) {
  int32_t tok = bos_first && src.bos >= 0 ? src.bos : src.random();
  const int32_t seq[1] = {0};
  const int64_t row[1] = {0};
  for (int64_t i = 0; i < n; ++i) {
    const int32_t one[1] = {tok}, pos[1] = {static_cast<int32_t>(pos0 + i)};
    EM_RETURN_IF_ERROR(e.decode_batch(one, pos, seq, row, logits.data()));
    tok = src.random();
  }
  return Status::Ok();
}

struct BenchArgs {
  std::string model_path;
  std::vector<TestSpec> tests;  // table mode
  int64_t n_batch;              // forward batch: min(-b, -ub)
  int64_t n_ubatch;             // -ub: the sweep step
  int64_t sweep_tg;             // sweep: generated tokens per row
  int reps, threads;
  int32_t bos;
  bool comm_stats;
  bool sweep;
  int64_t bandwidth_bytes;  // 0: no --bandwidth
};

Status bench_root(EngineSetup& setup, const BenchArgs& a);
Status sweep_root(EngineSetup& setup, const BenchArgs& a);

}  // namespace

Status cmd_bench(RankContext& ctx, const std::vector<std::string>& args) {
  std::string model_path;
  int64_t n_prompt = kUnset, n_gen = kUnset, n_batch = 2048, n_ubatch = 512, n_ctx = 0, bw_mib = 1024;
  int64_t reps = kUnset;
  int threads = ctx.n_threads;
  bool sweep = false, bandwidth = false;
  std::vector<TestSpec> pairs;
  worker::EngineOptions eo;
  placement::PlacementFlags pf;
  RuntimeFlags rf;
  FlagSet fs("bench", "prompt processing and generation speed, as llama-bench (or llama-sweep-bench) prints it");
  fs.add_string({"-m", "--model"}, &model_path, "FILE", "model GGUF (first shard of a split model)");
  fs.add_int({"-p", "--n-prompt"}, &n_prompt, "N", "prompt tokens of the pp test (default 512, 0 = skip)");
  fs.add_int({"-n", "--n-gen"}, &n_gen, "N",
             "generated tokens of the tg test (default 128, 0 = skip); --sweep: per row (default -ub / 4)");
  fs.add_custom({"-pg"}, "PP,TG", "test ppPP+tgTG: PP prompt tokens then TG generated, timed together (repeatable)",
                [&pairs](const std::string& v) -> Status {
                  EM_ASSIGN_OR_RETURN(TestSpec t, parse_pair("-pg", TestKind::kPg, v));
                  pairs.push_back(t);
                  return Status::Ok();
                });
  fs.add_custom({"-gp"}, "PP,TG", "test tgTG@ppPP: TG generated tokens timed after a PP-token prompt (repeatable)",
                [&pairs](const std::string& v) -> Status {
                  EM_ASSIGN_OR_RETURN(TestSpec t, parse_pair("-gp", TestKind::kGp, v));
                  pairs.push_back(t);
                  return Status::Ok();
                });
  fs.add_int({"-b", "--batch-size"}, &n_batch, "N", "logical batch of the prompt tests (default 2048)");
  fs.add_int({"-ub", "--ubatch-size"}, &n_ubatch, "N",
             "tokens per forward: batches of min(-b, -ub) (default 512); --sweep: the prompt step");
  fs.add_int({"-c", "--ctx-size"}, &n_ctx, "N",
             "context positions (default: the longest test; at least that); required with --sweep");
  fs.add_int({"-r", "--repetitions"}, &reps, "N", "repetitions of each test (default 5; --sweep: 1)");
  fs.add_int({"-t", "--threads"}, &threads, "N", "compute threads");
  fs.add_bool({"--sweep"}, &sweep, "llama-sweep-bench's table: pp and tg speed as the KV cache fills to -c");
  fs.add_bool({"--bandwidth"}, &bandwidth, "measure the read bandwidth with -t threads; tg rows show its fraction");
  fs.add_int({"--bandwidth-mib"}, &bw_mib, "N", "buffer of the --bandwidth measurement in MiB (default 1024)");
  add_kv_cache_flags(fs, &eo);
  placement::add_placement_flags(fs, &pf);
  PeerCompatFlags compat;
  add_peer_compat_flags(fs, &compat, CompatScope{.ubatch = false});
  add_runtime_flags(fs, &rf);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::printf("%s", fs.usage().c_str());
    return Status::Ok();
  }
  note_peer_compat_flags(ctx, "bench", compat);
  if (threads <= 0) return Status::InvalidArgument(fmt::format("-t: must be > 0, got {}", threads));
  if (bw_mib < 1 || bw_mib > (int64_t{1} << 20))
    return Status::InvalidArgument(fmt::format("--bandwidth-mib: must be in 1..1048576, got {}", bw_mib));
  const int64_t bw_bytes = bandwidth ? bw_mib * 1024 * 1024 : 0;
  if (model_path.empty() && bandwidth) {  // the measurement alone
    if (ctx.is_root()) {
      print_bandwidth(measure_read_bandwidth(threads, bw_bytes, 8));
      std::fflush(stdout);
    }
    return Status::Ok();
  }
  if (model_path.empty()) return Status::InvalidArgument("-m: a model is required");
  if (n_batch <= 0) return Status::InvalidArgument(fmt::format("-b: must be > 0, got {}", n_batch));
  if (n_ubatch <= 0) return Status::InvalidArgument(fmt::format("-ub: must be > 0, got {}", n_ubatch));
  if (n_ctx < 0) return Status::InvalidArgument(fmt::format("-c: must be >= 0, got {}", n_ctx));
  if (reps != kUnset && reps <= 0) return Status::InvalidArgument(fmt::format("-r: must be > 0, got {}", reps));
  if (n_prompt != kUnset && n_prompt < 0)
    return Status::InvalidArgument(fmt::format("-p: must be >= 0, got {}", n_prompt));
  if (n_gen != kUnset && n_gen < 0) return Status::InvalidArgument(fmt::format("-n: must be >= 0, got {}", n_gen));

  std::vector<TestSpec> tests;
  int64_t sweep_tg = 0;
  if (sweep) {
    if (n_ctx == 0) return Status::InvalidArgument("--sweep: -c N is required (the context size the sweep fills)");
    if (n_prompt != kUnset) return Status::InvalidArgument("--sweep: -p is not used (each row processes -ub tokens)");
    if (!pairs.empty()) return Status::InvalidArgument("--sweep: -pg/-gp are not used (the rows are the depths)");
    if (n_gen == 0) return Status::InvalidArgument("--sweep: -n must be > 0 (tokens generated at each depth)");
    sweep_tg = n_gen == kUnset ? std::max<int64_t>(1, n_ubatch / 4) : n_gen;
    if (n_ctx < std::max(n_ubatch, sweep_tg))
      return Status::InvalidArgument(
          fmt::format("-c: {} positions hold no sweep row (-ub {}, -n {})", n_ctx, n_ubatch, sweep_tg));
    if (reps == kUnset) reps = 1;
  } else {
    if (n_prompt == kUnset) n_prompt = 512;
    if (n_gen == kUnset) n_gen = 128;
    if (reps == kUnset) reps = 5;
    if (n_prompt > 0) tests.push_back({TestKind::kPp, n_prompt, 0});
    if (n_gen > 0) tests.push_back({TestKind::kTg, 0, n_gen});
    for (TestKind k : {TestKind::kPg, TestKind::kGp})  // the peer's order: all -pg tests, then all -gp
      for (const auto& t : pairs)
        if (t.kind == k) tests.push_back(t);
    if (tests.empty()) return Status::InvalidArgument("-p/-n: nothing to measure (both 0)");
    const TestSpec* longest = &tests.front();
    for (const auto& t : tests)
      if (t.positions() > longest->positions()) longest = &t;
    if (n_ctx == 0) n_ctx = longest->positions();
    if (n_ctx < longest->positions())
      return Status::InvalidArgument(fmt::format("-c: {} positions are fewer than the {} of test {}", n_ctx,
                                                 longest->positions(), longest->label()));
  }

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
  eo.n_ctx = std::max<int64_t>(n_ctx, 1);
  eo.n_batch_max = std::min(n_batch, n_ubatch);  // the forward batch of the prompt tests
  EM_ASSIGN_OR_RETURN(EngineSetup setup, setup_engine(ctx, std::move(model_owned), pf, eo));
  EM_RETURN_IF_ERROR(run_lockstep(ctx, setup, [&]() -> Status {
    BenchArgs a{model_path, tests,    std::min(n_batch, n_ubatch),
                n_ubatch,   sweep_tg, static_cast<int>(reps),
                threads,    bos,      rf.comm_stats,
                sweep,      bw_bytes};
    return sweep ? sweep_root(setup, a) : bench_root(setup, a);
  }));
  RuntimeFlags mem_only = rf;
  mem_only.comm_stats = false;  // bench prints its per-test communication figures itself
  return report_runtime(ctx, setup, "bench", 0, mem_only);
}

namespace {

// The weight-traffic table below the llama-bench table (see the file comment). Its first
// column is "tgN weights" rather than the bare test name, so scripts that pick the llama-bench
// row of a test by a "| tgN |" cell do not match this table's rows.
void print_traffic_table(const std::vector<TestSpec>& tests, const std::vector<TestResult>& results,
                         const WeightTraffic& w, const Bandwidth* bw) {
  bool any = false;
  for (const auto& t : tests) any = any || t.generates();
  if (!any) return;
  std::printf("\n| %-22s | %14s | %10s | %12s |\n", "test", "weights/token", "GB/s", "of bandwidth");
  std::printf("| %s- | %s: | %s: | %s: |\n", std::string(21, '-').c_str(), std::string(13, '-').c_str(),
              std::string(9, '-').c_str(), std::string(11, '-').c_str());
  for (size_t i = 0; i < tests.size(); ++i) {
    if (!tests[i].generates()) continue;
    const double gbps = w.total() * mean(results[i].ts) / 1e9;
    const std::string frac = bw && bw->gbps > 0 ? fmt::format("{:.1f}%", 100.0 * gbps / bw->gbps) : "-";
    std::printf("| %-22s | %14s | %10.2f | %12s |\n", (results[i].label + " weights").c_str(),
                format_bytes(w.total()).c_str(), gbps, frac.c_str());
  }
}

Status bench_root(EngineSetup& setup, const BenchArgs& a) {
  const Model* model = setup.model.get();
  const HParams& hp = model->hparams();
  worker::Engine* engine = setup.engine.get();
  const comm::Cluster& cluster = *setup.cluster;
  std::fprintf(stderr, "bench: %s, %s kernels, %d threads\n", a.model_path.c_str(), engine->kernels().name, a.threads);
  Bandwidth bw;
  if (a.bandwidth_bytes > 0) bw = measure_read_bandwidth(a.threads, a.bandwidth_bytes, 8);

  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  TokenSource src{a.bos, hp.n_vocab};
  EM_RETURN_IF_ERROR(run_gen(*engine, 1, 0, true, src, logits));  // warm-up
  std::vector<TestResult> results;
  for (const TestSpec& t : a.tests) {
    TestResult r{t.label(), {}};
    const double c0 = cluster.stats().total_seconds();
    for (int i = 0; i < a.reps; ++i) {
      engine->clear();
      auto t0 = Clock::now();
      if (t.n_prompt > 0) EM_RETURN_IF_ERROR(run_prompt(*engine, t.n_prompt, 0, a.n_batch, src, logits));
      if (t.kind == TestKind::kGp) t0 = Clock::now();
      if (t.n_gen > 0) EM_RETURN_IF_ERROR(run_gen(*engine, t.n_gen, t.n_prompt, true, src, logits));
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      r.ts.push_back(static_cast<double>(t.timed_tokens()) / s);
      r.total_s += s;
      r.tokens += t.timed_tokens();
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
                "CPU", a.threads, r.label.c_str(), ts.c_str());
  }
  const WeightTraffic w = weight_traffic(*model);
  if (a.bandwidth_bytes > 0) {
    std::printf("\n");
    print_bandwidth(bw);
  }
  print_traffic_table(a.tests, results, w, a.bandwidth_bytes > 0 ? &bw : nullptr);
  std::fflush(stdout);
  std::fprintf(stderr,
               "bench: weights read per generated token: %s (dense %s, experts %lld/%lld of %s = %s, output head %s, "
               "one token_embd row %s)\n",
               format_bytes(w.total()).c_str(), format_bytes(w.dense).c_str(), static_cast<long long>(hp.n_expert_used),
               static_cast<long long>(hp.n_expert), format_bytes(w.experts_all).c_str(),
               format_bytes(w.experts).c_str(), format_bytes(w.head).c_str(), format_bytes(w.embd_row).c_str());
  if (a.comm_stats)
    for (const auto& r : results)
      std::fprintf(stderr, "bench: comm %s: %.4f ms/token of %.4f ms/token (%.1f%%)\n", r.label.c_str(),
                   r.comm_s * 1e3 / double(r.tokens), r.total_s * 1e3 / double(r.tokens),
                   r.total_s > 0 ? 100.0 * r.comm_s / r.total_s : 0.0);
  return Status::Ok();
}

Status sweep_root(EngineSetup& setup, const BenchArgs& a) {
  const HParams& hp = setup.model->hparams();
  worker::Engine* engine = setup.engine.get();
  const int64_t n_kv_max = engine->n_ctx(), pp = a.n_ubatch, tg = a.sweep_tg;
  std::fprintf(stderr,
               "bench: %s, %s kernels; sweep n_kv_max = %lld, n_batch = %lld, n_ubatch = %lld, n_threads = %d\n",
               a.model_path.c_str(), engine->kernels().name, static_cast<long long>(n_kv_max),
               static_cast<long long>(a.n_batch), static_cast<long long>(pp), a.threads);
  Bandwidth bw;
  if (a.bandwidth_bytes > 0) bw = measure_read_bandwidth(a.threads, a.bandwidth_bytes, 8);
  std::vector<float> logits(static_cast<size_t>(hp.n_vocab));
  TokenSource src{a.bos, hp.n_vocab};
  EM_RETURN_IF_ERROR(run_gen(*engine, 1, 0, true, src, logits));  // warm-up
  engine->clear();
  // llama-sweep-bench's table, byte for byte.
  std::printf("|%6s | %6s | %6s | %8s | %8s | %8s | %8s |\n", "PP", "TG", "N_KV", "T_PP s", "S_PP t/s", "T_TG s",
              "S_TG t/s");
  std::printf("|%6s-|-%6s-|-%6s-|-%8s-|-%8s-|-%8s-|-%8s-|\n", "------", "------", "------", "--------", "--------",
              "--------", "--------");
  std::fflush(stdout);
  for (int64_t n_kv = 0; n_kv + std::max(pp, tg) <= n_kv_max; n_kv += pp) {
    auto t0 = Clock::now();
    for (int i = 0; i < a.reps; ++i) EM_RETURN_IF_ERROR(run_gen(*engine, tg, n_kv, false, src, logits));
    const double t_tg = std::chrono::duration<double>(Clock::now() - t0).count() / a.reps;
    std::vector<int32_t> toks(static_cast<size_t>(pp));
    for (auto& t : toks) t = src.random();
    t0 = Clock::now();
    for (int i = 0; i < a.reps; ++i) EM_RETURN_IF_ERROR(decode_at(*engine, toks, n_kv, a.n_batch, logits));
    const double t_pp = std::chrono::duration<double>(Clock::now() - t0).count() / a.reps;
    std::printf("|%6lld | %6lld | %6lld | %8.3f | %8.2f | %8.3f | %8.2f |\n", static_cast<long long>(pp),
                static_cast<long long>(tg), static_cast<long long>(n_kv), t_pp, static_cast<double>(pp) / t_pp, t_tg,
                static_cast<double>(tg) / t_tg);
    std::fflush(stdout);
  }
  if (a.bandwidth_bytes > 0) {
    std::printf("\n");
    print_bandwidth(bw);
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace

}  // namespace expertmesh::cli
