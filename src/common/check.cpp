#include "common/check.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace expertmesh {

std::string call_site_identity() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown");
  int rank = 0, inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (inited && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return fmt::format("host '{}' rank {}", host, rank);
}

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(buf, static_cast<size_t>(len));
}

void assert_fail(const char* cond, const char* file, int line, const char* func, const std::string& msg) {
  std::fprintf(stderr, "%s: internal error: assertion `%s` failed in %s at %s:%d%s%s\n", call_site_identity().c_str(),
               cond, func, file, line, msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace expertmesh
