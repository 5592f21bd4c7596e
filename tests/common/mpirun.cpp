#include "tests/common/mpirun.h"

#include <fmt/format.h>
#include <unistd.h>

namespace expertmesh::testing {

std::string mpirun_prefix(int np, int timeout_s, const std::vector<std::string>& exported_env) {
  std::string cmd = timeout_s > 0 ? fmt::format("timeout {} ", timeout_s) : std::string();
  cmd += EXPERTMESH_MPIEXEC " --oversubscribe";
  if (::geteuid() == 0) cmd += " --allow-run-as-root";
  for (const auto& name : exported_env) cmd += " -x " + name;
  return cmd + fmt::format(" -np {} ", np);
}

}  // namespace expertmesh::testing
