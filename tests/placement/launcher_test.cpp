// launch/expertmesh-mpirun --dry-run: the rankfile and the mpirun command it would run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

std::string script() {
  const char* src = std::getenv("EXPERTMESH_SOURCE_DIR");
  return std::string(src ? src : ".") + "/launch/expertmesh-mpirun";
}

TEST(Launcher, TwoHostsOfTwoNumaNodesGetOneRankPerNode) {
  const auto dir = testing::temp_dir("launcher");
  const std::string hostfile = (dir / "hosts").string(), rankfile = (dir / "rankfile").string();
  std::ofstream(hostfile) << "# two dual-socket servers\nnode-a slots=2\nnode-b\n";
  std::string out;
  const int rc =
      testing::run_command("EXPERTMESH_NUMA_CPUS='0-7;8-15' " + script() + " --dry-run --hostfile " + hostfile +
                               " --rankfile-out " + rankfile + " -x OMP_NUM_THREADS=8 -- expertmesh run -m m.gguf 2>&1",
                           &out);
  ASSERT_EQ(rc, 0) << out;
  for (const char* line : {"rank 0=node-a slot=0-7\n", "rank 1=node-a slot=8-15\n", "rank 2=node-b slot=0-7\n",
                           "rank 3=node-b slot=8-15\n"})
    EXPECT_NE(out.find(line), std::string::npos) << "missing '" << line << "' in\n" << out;
  EXPECT_NE(out.find("--rankfile " + rankfile), std::string::npos) << out;
  EXPECT_NE(out.find("--mca rmaps_rank_file_physical 1 -np 4 -x OMP_NUM_THREADS=8 expertmesh run -m m.gguf"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("--oversubscribe"), std::string::npos) << out;
  std::ifstream in(rankfile);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "rank 0=node-a slot=0-7\nrank 1=node-a slot=8-15\nrank 2=node-b slot=0-7\nrank 3=node-b slot=8-15\n");
}

TEST(Launcher, MoreRanksThanNodesOversubscribes) {
  std::string out;
  ASSERT_EQ(
      testing::run_command("EXPERTMESH_NUMA_CPUS='0-1' " + script() + " --dry-run -np 4 expertmesh plan 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("--oversubscribe --bind-to none -np 4 expertmesh plan"), std::string::npos) << out;
  EXPECT_EQ(out.find("--rankfile"), std::string::npos) << out;
  // One rank on this machine's real topology (hwloc-calc): bound with a rankfile.
  ASSERT_EQ(testing::run_command(script() + " --dry-run -np 1 expertmesh plan 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("rank 0="), std::string::npos) << out;
  EXPECT_NE(out.find("--rankfile"), std::string::npos) << out;
}

TEST(Launcher, ErrorsNameTheProblem) {
  std::string out;
  EXPECT_NE(testing::run_command(script() + " --dry-run -np 0 x 2>&1", &out), 0);
  EXPECT_NE(out.find("-np"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(script() + " --dry-run --hostfile /nonexistent x 2>&1", &out), 0);
  EXPECT_NE(out.find("/nonexistent"), std::string::npos) << out;
  EXPECT_NE(testing::run_command(script() + " --dry-run 2>&1", &out), 0);
  EXPECT_NE(out.find("no program"), std::string::npos) << out;
}

}  // namespace
}  // namespace expertmesh
