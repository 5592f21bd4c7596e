// The distributed runtime's communication layer (ARCHITECTURE.md §3): the MPI operations one
// forward step needs, on communicators of their own, with waits that do not spin a core and
// that notice a failure on any other rank.
//
//   - bcast_batch:       rank 0 -> every rank, a serialized proto::TokenBatch (control plane)
//   - stage_sum:         partial sums over the ranks of this rank's pipeline stage
//   - stage_allgatherv:  per-rank blocks concatenated in stage order (exact MoE combine)
//   - stage_bcast:       the stage's first rank -> the other ranks of the stage
//   - send / recv:       hidden states between pipeline stages (point-to-point, world ranks)
//   - gather_to_root:    logits blocks of the last stage -> rank 0
//
// Waiting: every operation is non-blocking underneath (MPI_I*) and completed by wait(), which
// polls MPI_Test for a few microseconds and then sleeps with an exponential backoff (10 µs to
// 1 ms): a rank waiting for work (e.g. for rank 0 to sample the next token, or for the previous
// pipeline stage) uses next to no CPU, instead of Open MPI's default busy polling. Each poll also
// probes a failure channel: a rank that fails calls notify_failure(), and every other rank's
// current or next wait returns Aborted("rank R failed: cause") instead of hanging.
//
// Determinism: stage_sum adds the ranks' buffers in stage order on every rank (gathered, then
// summed locally), so every rank holds bit-identical results, independent of MPI's reduction
// algorithm. Traffic is (stage size - 1) × n floats per rank, like a gather-based allreduce.
//
// Timers: every operation adds its wall time (including waiting for the slowest peer) and bytes
// to stats(); `--comm-stats` in run/perplexity/bench prints them.
//
// Thread-safety: only the thread that created the MpiSession calls these (MPI_THREAD_FUNNELED).
// NCCL: a CUDA build would add device-buffer variants here; this build has none (CPU only).
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/proto/cluster.pb.h"
#include "common/rank_context.h"
#include "common/status.h"

namespace expertmesh::comm {

enum class Op { kControl, kStageSum, kStageGather, kPipeline, kOutputGather };
inline constexpr int kOpCount = 5;
const char* op_name(Op op);

struct CommStats {
  std::array<double, kOpCount> seconds{};
  std::array<int64_t, kOpCount> bytes{};  // bytes this rank sent + received
  std::array<int64_t, kOpCount> calls{};
  double total_seconds() const;
  // A multi-line report; per-token figures divide by `n_tokens` when it is > 0.
  std::string report(int64_t n_tokens) const;
};

class Cluster {
 public:
  // Collective over ctx.comm. `stage_ranks` are the ranks (of ctx.comm) of this rank's pipeline
  // stage, in stage order, and must list this rank; ranks of one stage pass equal lists.
  static Result<std::unique_ptr<Cluster>> create(const RankContext& ctx, const std::vector<int>& stage_ranks);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int stage_rank() const { return stage_rank_; }
  int stage_size() const { return stage_size_; }

  // Rank 0 sends *b; the others replace *b with it. Collective over the world.
  Status bcast_batch(proto::TokenBatch* b);
  // x (n floats, same n on every rank of the stage) := sum over the stage in stage order.
  Status stage_sum(float* x, int64_t n);
  // Stage rank i contributes counts[i] floats (send has counts[stage_rank()]); recv gets the
  // concatenation in stage order (sum of counts floats).
  Status stage_allgatherv(const float* send, float* recv, const std::vector<int64_t>& counts);
  // n floats from the stage's first rank to the others of the stage.
  Status stage_bcast(float* x, int64_t n);
  // Point-to-point between world ranks (pipeline stages).
  Status send(const float* x, int64_t n, int dest);
  Status recv(float* x, int64_t n, int src);
  // World rank r contributes counts[r] floats (possibly 0); rank 0 gets the concatenation in
  // rank order in recv (others may pass nullptr). Collective over the world.
  Status gather_to_root(const float* send, float* recv, const std::vector<int64_t>& counts);

  // Tells every other rank that this one failed; their waits return Aborted naming this rank
  // and s's message. Call once, from the failing rank, before returning its error.
  void notify_failure(const Status& s);

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 private:
  Cluster() = default;
  // Completes *req (sleep-polling, watching the failure channel).
  Status wait(MPI_Request* req);
  // The same, then adds the time since t0 and `bytes` to the stats of `op`.
  Status wait(MPI_Request* req, Op op, int64_t bytes, double t0);
  Status peer_failure();

  int rank_ = 0, world_ = 1, stage_rank_ = 0, stage_size_ = 1;
  MPI_Comm data_ = MPI_COMM_NULL;   // world collectives and pipeline point-to-point
  MPI_Comm stage_ = MPI_COMM_NULL;  // this rank's stage
  MPI_Comm ctl_ = MPI_COMM_NULL;    // failure notices only
  std::string failure_msg_;         // kept alive for the non-blocking sends of notify_failure
  std::vector<float> scratch_;
  CommStats stats_;
};

}  // namespace expertmesh::comm
