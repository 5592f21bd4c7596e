#include "cli/engine_setup.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "worker/matmul.h"
#include "worker/placement_plan.h"

namespace expertmesh::cli {
Result<std::unique_ptr<Model>> load_model_agreed(const RankContext& ctx, const std::string& path) {
  Result<std::unique_ptr<Model>> model = Status::Internal("unset");
  if (const char* r = std::getenv("EXPERTMESH_TEST_FAIL_LOAD_RANK"); r && *r && std::atoi(r) == ctx.rank)
    model = Status::IoError(fmt::format("{}: load failed (injected by EXPERTMESH_TEST_FAIL_LOAD_RANK={})", path, r));
  else
    model = Model::load(path);
  EM_RETURN_IF_ERROR(ctx.agree(model.status()));
  return std::move(*model);
}

Result<EngineSetup> setup_engine(const RankContext& ctx, std::unique_ptr<Model> model,
                                 const placement::PlacementFlags& pf, const worker::EngineOptions& eo) {
  EngineSetup s;
  s.model = std::move(model);
  const HParams& hp = s.model->hparams();

  worker::RankPlan plan = worker::full_plan(hp);
  if (ctx.world > 1) {
    EM_ASSIGN_OR_RETURN(proto::Placement pl, placement::resolve_placement(pf, s.model->file(), ctx));
    auto rp = worker::rank_plan(pl, hp, ctx.rank);
    EM_RETURN_IF_ERROR(ctx.agree(rp.status()));
    plan = std::move(*rp);
  }
  auto cluster = comm::Cluster::create(ctx, plan.stage_ranks);
  EM_RETURN_IF_ERROR(ctx.agree(cluster.status()));
  s.cluster = std::move(*cluster);
  const auto t0 = std::chrono::steady_clock::now();
  auto engine = worker::Engine::create(*s.model, std::move(plan), eo);
  EM_RETURN_IF_ERROR(ctx.agree(engine.status()));
  s.engine = std::move(*engine);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (const worker::WeightStore* ws = s.engine->weight_store())
    ctx.log.debug("weights: read {:.1f} MiB (its share) into private memory in {:.3f} s",
                  double(ws->bytes()) / (1 << 20), secs);
  else
    ctx.log.debug("weights: computing from the file mapping (engine ready in {:.3f} s)", secs);
  if (ctx.is_root()) {
    if (const std::string slow = worker::generic_path_report(s.model->weights(), s.engine->kernels()); !slow.empty())
      ctx.log.info("kernels: {}", slow);
  }
  s.engine->set_cluster(s.cluster.get());
  return s;
}

Status run_lockstep(const RankContext& ctx, EngineSetup& s, const std::function<Status()>& drive) {
  Status local = ctx.is_root() ? drive() : s.engine->follow();
  if (ctx.is_root() && local.ok()) local = s.engine->finish();
  // A rank that stopped because another one failed has nothing new to tell.
  if (!local.ok() && local.code() != StatusCode::kAborted) s.cluster->notify_failure(local);
  return local;
}

void add_runtime_flags(FlagSet& fs, RuntimeFlags* f) {
  fs.add_bool({"--comm-stats"}, &f->comm_stats, "print rank 0's communication time per token at the end (stderr)");
  fs.add_bool({"--mem-stats"}, &f->mem_stats,
              "print every rank's resident memory (VmRSS, RssFile, RssAnon) at the end");
}

void add_kv_cache_flags(FlagSet& fs, worker::EngineOptions* eo) {
  auto kv_type = [](GgmlType* dst, const char* flag) {
    return [dst, flag](const std::string& v) -> Status {
      auto t = parse_type_name(v);
      if (!t.ok()) return Status::InvalidArgument(fmt::format("{}: {}", flag, t.status().message()));
      *dst = *t;
      return Status::Ok();
    };
  };
  fs.add_custom({"-ctk", "--cache-type-k"}, "TYPE", "KV cache type of K: f16 (default), q8_0, bf16, f32",
                kv_type(&eo->type_k, "-ctk"));
  fs.add_custom({"-ctv", "--cache-type-v"}, "TYPE", "KV cache type of V: f16 (default), q8_0, bf16, f32",
                kv_type(&eo->type_v, "-ctv"));
  fs.add_bool({"--bf16-activations"}, &eo->bf16_activations,
              "BF16 weights multiply BF16-rounded activations, as the peer does (AVX512-BF16 dot products); "
              "default: F32 activations, more accurate");
}

namespace {

// kB values of VmRSS, RssFile, RssAnon from /proc/self/status (0 where absent).
std::array<int64_t, 3> resident_kb() {
  std::array<int64_t, 3> kb{};
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    long long v = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %lld", &v) == 1) kb[0] = v;
    if (std::sscanf(line.c_str(), "RssFile: %lld", &v) == 1) kb[1] = v;
    if (std::sscanf(line.c_str(), "RssAnon: %lld", &v) == 1) kb[2] = v;
  }
  return kb;
}

// kB of the model's file mappings resident in this process (Rss of those lines of smaps).
int64_t model_resident_kb(const std::vector<std::string>& paths) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool in_model = false;
  int64_t kb = 0;
  while (std::getline(in, line)) {
    long long v = 0;
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ')) {
      in_model = false;  // a mapping header: "start-end perms offset dev inode path"
      for (const std::string& p : paths)
        if (line.size() >= p.size() && line.compare(line.size() - p.size(), p.size(), p) == 0) in_model = true;
    } else if (in_model && std::sscanf(line.c_str(), "Rss: %lld", &v) == 1) {
      kb += v;
    }
  }
  return kb;
}

}  // namespace

Status report_runtime(const RankContext& ctx, const EngineSetup& s, const char* cmd, int64_t n_tokens,
                      const RuntimeFlags& f) {
  if (f.comm_stats && ctx.is_root())
    std::fprintf(stderr, "%s: communication of rank 0 over %d ranks (%lld tokens):\n%s", cmd, ctx.world,
                 static_cast<long long>(n_tokens), s.cluster->stats().report(n_tokens).c_str());
  if (!f.mem_stats) return Status::Ok();
  constexpr int kFields = 5;
  std::array<int64_t, kFields> mine{};
  const std::array<int64_t, 3> rss = resident_kb();
  std::copy(rss.begin(), rss.end(), mine.begin());
  std::vector<std::string> paths = s.model->file().shard_paths();
  if (paths.empty()) paths.push_back(s.model->file().path());
  for (std::string& p : paths) p = std::filesystem::weakly_canonical(p).string();
  mine[3] = model_resident_kb(paths);
  const worker::WeightStore* store = s.engine->weight_store();
  mine[4] = store ? store->resident_bytes() / 1024 : 0;
  std::vector<int64_t> all(size_t(kFields * ctx.world));
  EM_MPI_CHECK(MPI_Gather(mine.data(), kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, 0, ctx.comm));
  if (ctx.is_root())
    for (int r = 0; r < ctx.world; ++r) {
      const int64_t* v = all.data() + kFields * r;
      std::fprintf(stderr,
                   "%s: memory rank %d: VmRSS %lld kB RssFile %lld kB RssAnon %lld kB model %lld kB weights %lld kB\n",
                   cmd, r, static_cast<long long>(v[0]), static_cast<long long>(v[1]), static_cast<long long>(v[2]),
                   static_cast<long long>(v[3]), static_cast<long long>(v[4]));
    }
  return Status::Ok();
}

}  // namespace expertmesh::cli
