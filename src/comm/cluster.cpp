#include "comm/cluster.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "common/check.h"

namespace expertmesh::comm {
namespace {

constexpr int kFailTag = 7;
constexpr int kPipeTag = 11;
constexpr int kSpinPolls = 64;           // MPI_Test calls before the first sleep (a few µs)
constexpr long kMinSleepNs = 10'000;     // first sleep
constexpr long kMaxSleepNs = 1'000'000;  // backoff cap: a waiting rank wakes at least every 1 ms

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

Result<int> to_int(int64_t n, const char* what) {
  if (n < 0 || n > INT_MAX)
    return Status::OutOfRange(fmt::format("{}: {} elements exceed one MPI message (max {})", what, n, INT_MAX));
  return int(n);
}

Status set_errors_return(MPI_Comm c) {
  EM_MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
  return Status::Ok();
}

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::kControl:
      return "control (token batches)";
    case Op::kStageSum:
      return "stage sum (attention, dense FFN)";
    case Op::kStageGather:
      return "stage gather (MoE slots)";
    case Op::kPipeline:
      return "pipeline (hidden states)";
    case Op::kOutputGather:
      return "output gather (logits)";
  }
  return "?";
}

double CommStats::total_seconds() const {
  double s = 0;
  for (double x : seconds) s += x;
  return s;
}

std::string CommStats::report(int64_t n_tokens) const {
  std::string out;
  for (int i = 0; i < kOpCount; ++i) {
    if (calls[size_t(i)] == 0) continue;
    out += fmt::format("  {:<34} {:8} calls {:10.3f} ms {:12.1f} KiB", op_name(Op(i)), calls[size_t(i)],
                       seconds[size_t(i)] * 1e3, double(bytes[size_t(i)]) / 1024.0);
    if (n_tokens > 0) out += fmt::format("  {:8.3f} ms/token", seconds[size_t(i)] * 1e3 / double(n_tokens));
    out += "\n";
  }
  out += fmt::format(
      "  {:<34} {:8} calls {:10.3f} ms", "total",
      [&] {
        int64_t c = 0;
        for (int64_t x : calls) c += x;
        return c;
      }(),
      total_seconds() * 1e3);
  if (n_tokens > 0) out += fmt::format("{:27}{:8.3f} ms/token", "", total_seconds() * 1e3 / double(n_tokens));
  return out + "\n";
}

Result<std::unique_ptr<Cluster>> Cluster::create(const RankContext& ctx, const std::vector<int>& stage_ranks) {
  std::unique_ptr<Cluster> c(new Cluster());
  c->rank_ = ctx.rank;
  c->world_ = ctx.world;
  const auto it = std::find(stage_ranks.begin(), stage_ranks.end(), ctx.rank);
  if (it == stage_ranks.end())
    return Status::InvalidArgument(fmt::format("rank {} is not in its own stage's rank list", ctx.rank));
  c->stage_rank_ = int(it - stage_ranks.begin());
  c->stage_size_ = int(stage_ranks.size());
  EM_MPI_CHECK(MPI_Comm_dup(ctx.comm, &c->data_));
  EM_MPI_CHECK(MPI_Comm_dup(ctx.comm, &c->ctl_));
  // A stage is named by its first rank; the key keeps the stage order.
  EM_MPI_CHECK(MPI_Comm_split(ctx.comm, stage_ranks.front(), c->stage_rank_, &c->stage_));
  for (MPI_Comm m : {c->data_, c->ctl_, c->stage_}) EM_RETURN_IF_ERROR(set_errors_return(m));
  int n = 0;
  EM_MPI_CHECK(MPI_Comm_size(c->stage_, &n));
  if (n != c->stage_size_)
    return Status::InvalidArgument(
        fmt::format("stage of rank {}: {} ranks joined, the plan lists {}", ctx.rank, n, c->stage_size_));
  return c;
}

Cluster::~Cluster() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Comm* m : {&data_, &ctl_, &stage_})
    if (*m != MPI_COMM_NULL) MPI_Comm_free(m);
}

Status Cluster::peer_failure() {
  int flag = 0;
  MPI_Status st;
  EM_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kFailTag, ctl_, &flag, &st));
  if (!flag) return Status::Ok();
  int len = 0;
  EM_MPI_CHECK(MPI_Get_count(&st, MPI_CHAR, &len));
  std::string msg(size_t(len), '\0');
  EM_MPI_CHECK(MPI_Recv(msg.data(), len, MPI_CHAR, st.MPI_SOURCE, kFailTag, ctl_, MPI_STATUS_IGNORE));
  return Status::Aborted(fmt::format("rank {} failed: {}", st.MPI_SOURCE, msg));
}

Status Cluster::wait(MPI_Request* req) {
  long sleep_ns = 0;
  for (int polls = 0;; ++polls) {
    int done = 0;
    EM_MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) break;
    if (polls < kSpinPolls) continue;
    EM_RETURN_IF_ERROR(peer_failure());
    sleep_ns = std::min(std::max(sleep_ns * 2, kMinSleepNs), kMaxSleepNs);
    timespec ts{0, sleep_ns};
    nanosleep(&ts, nullptr);
  }
  return Status::Ok();
}

Status Cluster::wait(MPI_Request* req, Op op, int64_t bytes, double t0) {
  EM_RETURN_IF_ERROR(wait(req));
  const size_t i = size_t(op);
  stats_.seconds[i] += now_s() - t0;
  stats_.bytes[i] += bytes;
  ++stats_.calls[i];
  return Status::Ok();
}

void Cluster::notify_failure(const Status& s) {
  if (world_ == 1 || !failure_msg_.empty()) return;
  failure_msg_ = s.message().empty() ? s.to_string() : s.message();
  for (int r = 0; r < world_; ++r) {
    if (r == rank_) continue;
    MPI_Request req;
    // Small messages go out eagerly; the request is released without waiting for the receiver.
    if (MPI_Isend(failure_msg_.data(), int(failure_msg_.size()), MPI_CHAR, r, kFailTag, ctl_, &req) == MPI_SUCCESS)
      MPI_Request_free(&req);
  }
}

Status Cluster::bcast_batch(proto::TokenBatch* b) {
  if (world_ == 1) return Status::Ok();
  const double t0 = now_s();
  std::string bytes;
  if (rank_ == 0 && !b->SerializeToString(&bytes)) return Status::Internal("TokenBatch: serialization failed");
  int64_t len = int64_t(bytes.size());
  MPI_Request req;
  EM_MPI_CHECK(MPI_Ibcast(&len, 1, MPI_INT64_T, 0, data_, &req));
  EM_RETURN_IF_ERROR(wait(&req));
  EM_ASSIGN_OR_RETURN(int n, to_int(len, "TokenBatch"));
  bytes.resize(size_t(n));
  EM_MPI_CHECK(MPI_Ibcast(bytes.data(), n, MPI_CHAR, 0, data_, &req));
  EM_RETURN_IF_ERROR(wait(&req, Op::kControl, len + 8, t0));
  if (rank_ != 0 && !b->ParseFromString(bytes))
    return Status::Corruption("TokenBatch: message from rank 0 does not parse");
  return Status::Ok();
}

Status Cluster::stage_sum(float* x, int64_t n) {
  if (stage_size_ == 1) return Status::Ok();
  const double t0 = now_s();
  EM_ASSIGN_OR_RETURN(int cnt, to_int(n, "stage sum"));
  scratch_.resize(size_t(n) * size_t(stage_size_));
  MPI_Request req;
  EM_MPI_CHECK(MPI_Iallgather(x, cnt, MPI_FLOAT, scratch_.data(), cnt, MPI_FLOAT, stage_, &req));
  EM_RETURN_IF_ERROR(wait(&req, Op::kStageSum, int64_t(sizeof(float)) * n * stage_size_, t0));
  // Stage order on every rank: bit-identical everywhere.
  std::copy_n(scratch_.data(), n, x);
  for (int r = 1; r < stage_size_; ++r) {
    const float* p = scratch_.data() + size_t(r) * size_t(n);
    for (int64_t i = 0; i < n; ++i) x[i] += p[i];
  }
  return Status::Ok();
}

Status Cluster::stage_allgatherv(const float* send, float* recv, const std::vector<int64_t>& counts) {
  if (int(counts.size()) != stage_size_) return Status::Internal("stage_allgatherv: one count per stage rank");
  const double t0 = now_s();
  std::vector<int> cnt(counts.size()), displ(counts.size());
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    EM_ASSIGN_OR_RETURN(cnt[i], to_int(counts[i], "stage gather"));
    EM_ASSIGN_OR_RETURN(displ[i], to_int(total, "stage gather"));
    total += counts[i];
  }
  if (stage_size_ == 1) {
    std::copy_n(send, counts[0], recv);
    return Status::Ok();
  }
  MPI_Request req;
  EM_MPI_CHECK(MPI_Iallgatherv(send, cnt[size_t(stage_rank_)], MPI_FLOAT, recv, cnt.data(), displ.data(), MPI_FLOAT,
                               stage_, &req));
  return wait(&req, Op::kStageGather, int64_t(sizeof(float)) * total, t0);
}

Status Cluster::stage_bcast(float* x, int64_t n) {
  if (stage_size_ == 1) return Status::Ok();
  const double t0 = now_s();
  EM_ASSIGN_OR_RETURN(int cnt, to_int(n, "stage broadcast"));
  MPI_Request req;
  EM_MPI_CHECK(MPI_Ibcast(x, cnt, MPI_FLOAT, 0, stage_, &req));
  return wait(&req, Op::kPipeline, int64_t(sizeof(float)) * n, t0);
}

Status Cluster::send(const float* x, int64_t n, int dest) {
  const double t0 = now_s();
  EM_ASSIGN_OR_RETURN(int cnt, to_int(n, "pipeline send"));
  MPI_Request req;
  EM_MPI_CHECK(MPI_Isend(x, cnt, MPI_FLOAT, dest, kPipeTag, data_, &req));
  return wait(&req, Op::kPipeline, int64_t(sizeof(float)) * n, t0);
}

Status Cluster::recv(float* x, int64_t n, int src) {
  const double t0 = now_s();
  EM_ASSIGN_OR_RETURN(int cnt, to_int(n, "pipeline receive"));
  MPI_Request req;
  EM_MPI_CHECK(MPI_Irecv(x, cnt, MPI_FLOAT, src, kPipeTag, data_, &req));
  return wait(&req, Op::kPipeline, int64_t(sizeof(float)) * n, t0);
}

Status Cluster::gather_to_root(const float* send, float* recv, const std::vector<int64_t>& counts) {
  if (int(counts.size()) != world_) return Status::Internal("gather_to_root: one count per rank");
  const double t0 = now_s();
  std::vector<int> cnt(counts.size()), displ(counts.size());
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    EM_ASSIGN_OR_RETURN(cnt[i], to_int(counts[i], "logits gather"));
    EM_ASSIGN_OR_RETURN(displ[i], to_int(total, "logits gather"));
    total += counts[i];
  }
  if (world_ == 1) {
    std::copy_n(send, counts[0], recv);
    return Status::Ok();
  }
  MPI_Request req;
  EM_MPI_CHECK(
      MPI_Igatherv(send, cnt[size_t(rank_)], MPI_FLOAT, recv, cnt.data(), displ.data(), MPI_FLOAT, 0, data_, &req));
  const int64_t moved = rank_ == 0 ? total : counts[size_t(rank_)];
  return wait(&req, Op::kOutputGather, int64_t(sizeof(float)) * moved, t0);
}

}  // namespace expertmesh::comm
