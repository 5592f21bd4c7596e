#include "common/rank_context.h"

#include <unistd.h>

#include <thread>
#include <vector>

#include "common/check.h"

namespace expertmesh {

Result<std::unique_ptr<MpiSession>> MpiSession::init(int* argc, char*** argv) {
  std::unique_ptr<MpiSession> s(new MpiSession());
  int provided = 0;
  EM_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  s->thread_level_ = provided;
  return s;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Result<std::unique_ptr<RankContext>> RankContext::create(MPI_Comm comm, LogLevel level) {
  auto ctx = std::make_unique<RankContext>();
  ctx->comm = comm;
  EM_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  EM_MPI_CHECK(MPI_Comm_rank(comm, &ctx->rank));
  EM_MPI_CHECK(MPI_Comm_size(comm, &ctx->world));
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown");
  ctx->host = host;
  unsigned hw = std::thread::hardware_concurrency();
  ctx->n_threads = hw == 0 ? 1 : static_cast<int>(hw);
  ctx->log = Logger(ctx->rank, ctx->world, ctx->host, level);
  return ctx;
}

Status RankContext::agree(const Status& local) const {
  if (world == 1) return local;
  // Lowest failing rank wins, so every rank reports the same cause.
  int mine = local.ok() ? world : rank;
  int first = world;
  EM_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == world) return Status::Ok();
  std::string msg = first == rank ? local.to_string() : std::string();
  int len = static_cast<int>(msg.size());
  EM_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, first, comm));
  msg.resize(static_cast<size_t>(len));
  EM_MPI_CHECK(MPI_Bcast(msg.data(), len, MPI_CHAR, first, comm));
  if (first == rank) return local;
  return Status::Aborted(fmt::format("rank {} failed: {}", first, msg));
}

}  // namespace expertmesh
