// The `mpirun` prefix for tests that launch `expertmesh` on several ranks themselves (labels mpi):
// Open MPI's mpiexec with --oversubscribe (CI machines have 2 cores), --allow-run-as-root when
// the test runs as root, `-x NAME` for every exported environment variable, and `timeout S` in
// front when timeout_s > 0, so a hang (the failure several of these tests exist to catch) ends
// well before ctest's own limit.
#pragma once

#include <string>
#include <vector>

namespace expertmesh::testing {

// "[timeout S ]mpiexec --oversubscribe [--allow-run-as-root] [-x NAME ...] -np N " (trailing space).
std::string mpirun_prefix(int np, int timeout_s = 0, const std::vector<std::string>& exported_env = {});

}  // namespace expertmesh::testing
