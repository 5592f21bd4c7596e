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
  EM_RETURN_IF_ERROR(broadcast_string(comm, first, &msg));
  if (first == rank) return local;
  return Status::Aborted(fmt::format("rank {} failed: {}", first, msg));
}

Status broadcast_string(MPI_Comm comm, int root, std::string* s) {
  int len = static_cast<int>(s->size());
  EM_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, root, comm));
  s->resize(static_cast<size_t>(len));
  if (len > 0) EM_MPI_CHECK(MPI_Bcast(s->data(), len, MPI_CHAR, root, comm));
  return Status::Ok();
}

}  // namespace expertmesh
