// RankContext: everything one rank knows about itself and the world. Built once in main() and
// passed down explicitly; there is no global mutable state (STYLE.md R7).
//
// Lifetime: the MpiSession must outlive every RankContext built from it. Works both under mpirun
// and as a singleton (plain `expertmesh ...`), where world == 1.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "common/log.h"
#include "common/status.h"

namespace expertmesh {

// RAII MPI_Init_thread / MPI_Finalize. Requests MPI_THREAD_FUNNELED: only the thread that
// created the session calls MPI; worker threads compute.
class MpiSession {
 public:
  static Result<std::unique_ptr<MpiSession>> init(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int thread_level() const { return thread_level_; }

 private:
  MpiSession() = default;
  int thread_level_ = 0;
};

struct RankContext {
  int rank = 0;                    // this rank in `comm`
  int world = 1;                   // ranks in `comm`
  std::string host;                // gethostname()
  MPI_Comm comm = MPI_COMM_WORLD;  // the job's communicator (a sub-communicator for sweep groups)
  int n_threads = 1;               // compute threads this rank may use (-t)
  Logger log;                      // "[rank r/host]" prefixed

  bool is_root() const { return rank == 0; }

  // Builds the context for `comm` (MPI must be initialised). Sets MPI_ERRORS_RETURN on comm so
  // MPI failures come back as Status instead of aborting the process.
  static Result<std::unique_ptr<RankContext>> create(MPI_Comm comm, LogLevel level);

  // All ranks agree on failure: every rank passes its local status; if any rank failed, every
  // rank gets back Status::Aborted naming the first failing rank and its message (which is
  // broadcast from that rank). Collective over `comm`.
  Status agree(const Status& local) const;
};

// Broadcasts *s from `root` to every rank of `comm` (its length, then its bytes); on the other
// ranks *s is replaced. Collective. REQUIRES: s->size() < 2^31 on root.
Status broadcast_string(MPI_Comm comm, int root, std::string* s);

}  // namespace expertmesh
