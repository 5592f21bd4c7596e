// The distributed setup shared by run, perplexity and bench (ARCHITECTURE.md §3): every rank maps
// the model, the ranks agree on one Placement (--placement / -ot / --cluster), each derives its
// RankPlan and builds its engine on a comm::Cluster; then rank 0 drives and the others follow.
//
// Memory: Model::load maps the GGUF read-only and reads no tensor data. A rank that holds the
// whole model (one rank) computes from that mapping; a rank with a share of it reads exactly
// the rows, expert slabs, head slices and vocabulary rows its plan owns into private memory
// (worker::WeightStore) and never touches the mapping's tensor pages, so the resident memory
// summed over ranks is one copy of the model plus the replicated norms and routers.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "cli/flags.h"
#include "comm/cluster.h"
#include "common/rank_context.h"
#include "common/status.h"
#include "coordinator/placement/planner.h"
#include "model/model.h"
#include "worker/engine.h"

namespace expertmesh::cli {

struct EngineSetup {
  std::unique_ptr<Model> model;
  std::unique_ptr<comm::Cluster> cluster;
  std::unique_ptr<worker::Engine> engine;  // refers to *model and *cluster
};

// Collective over ctx.comm: every rank maps the model; a failure on any rank is agreed (every
// rank returns an error naming the first failing rank and its cause).
// Test hook: EXPERTMESH_TEST_FAIL_LOAD_RANK=<r> makes rank r fail its model load (used by the
// failure-agreement tests; never set it otherwise).
Result<std::unique_ptr<Model>> load_model_agreed(const RankContext& ctx, const std::string& path);

// Collective over ctx.comm: resolves the placement, derives this rank's plan and builds its
// engine. On one rank the plan is the full plan (no placement is resolved). Failures (a bad
// placement, a KV cache that does not fit) are agreed like load_model_agreed's.
Result<EngineSetup> setup_engine(const RankContext& ctx, std::unique_ptr<Model> model,
                                 const placement::PlacementFlags& pf, const worker::EngineOptions& eo);

// Runs `drive` on rank 0 and the follower loop on the other ranks, then releases the followers.
// A rank that fails tells the others (comm::Cluster::notify_failure), so no rank is left
// waiting: every rank returns non-OK (Aborted, naming the failed rank, on the others).
Status run_lockstep(const RankContext& ctx, EngineSetup& s, const std::function<Status()>& drive);

// `--comm-stats` (rank 0's communication timers, per token when n_tokens > 0) and `--mem-stats`
// (every rank's VmRSS / RssFile / RssAnon from /proc/self/status, the resident kB of the model
// file's mappings from /proc/self/smaps ("model") and of its private weight store from mincore
// ("weights", 0 when it computes from the mapping), gathered to rank 0), on stderr.
struct RuntimeFlags {
  bool comm_stats = false;
  bool mem_stats = false;
};
void add_runtime_flags(FlagSet& fs, RuntimeFlags* f);
// Registers -ctk/--cache-type-k and -ctv/--cache-type-v (llama.cpp's names) on eo->type_k /
// eo->type_v; a bad type name is an error naming the flag. Also --bf16-activations
// (eo->bf16_activations), the other engine numeric option every subcommand shares.
void add_kv_cache_flags(FlagSet& fs, worker::EngineOptions* eo);
// Collective over ctx.comm (every rank calls it after run_lockstep succeeded).
Status report_runtime(const RankContext& ctx, const EngineSetup& s, const char* cmd, int64_t n_tokens,
                      const RuntimeFlags& f);

}  // namespace expertmesh::cli
