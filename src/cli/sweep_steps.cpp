#include "cli/sweep_steps.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/engine_setup.h"
#include "common/sha256.h"
#include "coordinator/kld.h"
#include "coordinator/perplexity.h"
#include "model/gguf/gguf.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Opens the printout file on the rank that drives (group rank 0); closes it on scope exit.
struct LogFile {
  explicit LogFile(const std::string& path) : f(std::fopen(path.c_str(), "w")) {}
  ~LogFile() {
    if (f) std::fclose(f);
  }
  std::FILE* f;
};

Result<EngineSetup> build_engine(RankContext& g, const SweepOptions& o, const std::string& model_path) {
  EM_ASSIGN_OR_RETURN(auto model, load_model_agreed(g, model_path));
  worker::EngineOptions eo;
  eo.n_threads = o.threads;
  eo.n_ctx = o.n_ctx;
  return setup_engine(g, std::move(model), o.placement, eo);
}

coordinator::PerplexityOptions ppl_options(const SweepOptions& o, const std::string& kld_file) {
  coordinator::PerplexityOptions p;
  p.text_file = o.text_file;
  p.n_ctx = o.n_ctx;
  p.n_batch = o.n_batch;
  p.n_chunks = o.n_chunks;
  p.kld_base_file = kld_file;
  return p;
}

}  // namespace

Status write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::IoError(fmt::format("{}: cannot create", tmp));
    out << text;
    out.flush();
    if (!out) return Status::IoError(fmt::format("{}: write failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IoError(fmt::format("{}: cannot rename to {}: {}", tmp, path, ec.message()));
  return Status::Ok();
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<std::string> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::NotFound(fmt::format("{}: cannot stat", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: cannot open", path));
  std::vector<char> head(size_t(1) << 20);
  in.read(head.data(), std::streamsize(head.size()));
  const auto n = size_t(in.gcount());
  return fmt::format("{}:{}.{}:{}", int64_t(st.st_size), int64_t(st.st_mtim.tv_sec), int64_t(st.st_mtim.tv_nsec),
                     sha256_hex(head.data(), n));
}

void model_size(const gguf::File& f, double* gib, double* bpw) {
  int64_t bytes = 0, params = 0;
  for (const auto& t : f.tensors()) {
    bytes += t.nbytes;
    params += t.n_elements();
  }
  *gib = double(bytes) / double(1ull << 30);
  *bpw = params > 0 ? 8.0 * double(bytes) / double(params) : 0.0;
}

Result<double> quantize_recipe(RankContext& g, const SweepOptions& o, const coordinator::Recipe& r,
                               const std::string& out_path) {
  std::vector<std::string> args = r.args;
  const bool has_imatrix = std::find(args.begin(), args.end(), "--imatrix") != args.end();
  if (!o.imatrix.empty() && !has_imatrix) {
    args.insert(args.begin(), o.imatrix);
    args.insert(args.begin(), "--imatrix");
  }
  args.push_back(o.base);
  args.push_back(out_path);
  args.push_back(r.type);
  args.push_back(std::to_string(o.threads));
  const auto t0 = Clock::now();
  Status s = cmd_quantize(g, args);
  if (!s.ok()) return s.with_context(fmt::format("recipe {} (line {}): quantize", r.name, r.line));
  return seconds_since(t0);
}

Result<coordinator::RecipeResult> evaluate_base(RankContext& g, const SweepOptions& o, const std::string& kld_path,
                                                const std::string& log_path) {
  coordinator::RecipeResult row;
  row.name = "base";
  row.recipe = "base " + o.base;
  row.model_path = o.base;
  row.is_base = true;
  row.same_top_p = 100;
  EM_ASSIGN_OR_RETURN(EngineSetup setup, build_engine(g, o, o.base));
  model_size(setup.model->file(), &row.size_gib, &row.bpw);
  const std::string tmp = kld_path + ".partial";
  EM_RETURN_IF_ERROR(run_lockstep(g, setup, [&]() -> Status {
    LogFile log(log_path);
    if (!log.f) return Status::IoError(fmt::format("{}: cannot create", log_path));
    EM_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_gguf(setup.engine->model().file()));
    const auto t0 = Clock::now();
    EM_ASSIGN_OR_RETURN(auto p, coordinator::perplexity(*setup.engine, *tok, ppl_options(o, tmp), log.f));
    const double secs = seconds_since(t0);
    row.ppl = p.ppl;
    row.ppl_err = p.ppl_err;
    row.eval_tokens_per_s = secs > 0 ? double(p.n_chunk * p.n_ctx) / secs : 0;
    std::error_code ec;
    std::filesystem::rename(tmp, kld_path, ec);
    if (ec) return Status::IoError(fmt::format("{}: cannot rename to {}: {}", tmp, kld_path, ec.message()));
    return Status::Ok();
  }));
  row.complete = true;
  return row;
}

Status evaluate_recipe(RankContext& g, const SweepOptions& o, const std::string& model_path,
                       const std::string& kld_path, const std::string& log_path, coordinator::RecipeResult* row) {
  EM_ASSIGN_OR_RETURN(EngineSetup setup, build_engine(g, o, model_path));
  model_size(setup.model->file(), &row->size_gib, &row->bpw);
  EM_RETURN_IF_ERROR(run_lockstep(g, setup, [&]() -> Status {
    LogFile log(log_path);
    if (!log.f) return Status::IoError(fmt::format("{}: cannot create", log_path));
    EM_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_gguf(setup.engine->model().file()));
    const auto t0 = Clock::now();
    EM_ASSIGN_OR_RETURN(auto k, coordinator::kl_divergence(*setup.engine, *tok, ppl_options(o, kld_path), log.f));
    const double secs = seconds_since(t0);
    row->ppl = k.ppl;
    row->ppl_err = k.ppl_err;
    row->kld_mean = k.kld_mean;
    row->kld_median = k.kld_median;
    row->kld_p99 = k.kld_p99;
    row->same_top_p = k.same_top_p;
    row->rms_dp = k.rms_dp;
    // kl_divergence evaluates every window in full; its count is the scored tokens only.
    const int64_t n_ctx = o.n_ctx, n_scored_per_chunk = n_ctx - 1 - n_ctx / 2;
    const double n_eval = n_scored_per_chunk > 0 ? double(k.count) / double(n_scored_per_chunk) * double(n_ctx) : 0;
    row->eval_tokens_per_s = secs > 0 ? n_eval / secs : 0;
    return Status::Ok();
  }));
  return Status::Ok();
}

}  // namespace expertmesh::cli
