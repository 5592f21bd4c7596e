// End to end: the expertmesh binary under `mpirun -np 2` fails cleanly (non-zero exit, a message
// naming the file) instead of hanging or aborting, and works as a singleton.
//
// The binary is found through EXPERTMESH_BIN (set by ctest, see em_add_test); mpirun is the
// MPIEXEC_EXECUTABLE CMake found, run with --oversubscribe and, as root, --allow-run-as-root.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/common/golden.h"
#include "tests/common/mpirun.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::expertmesh_binary;
using testing::run_command;

// `timeout` bounds a hang (the failure this test exists to catch) well below ctest's limit.
std::string mpirun(int np) { return testing::mpirun_prefix(np, 120); }

class CliMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = expertmesh_binary();
    ASSERT_TRUE(fs::exists(bin_)) << "expertmesh binary not found at " << bin_ << " (build target expertmesh)";
    missing_ =
        (fs::temp_directory_path() / ("expertmesh-no-such-dir-" + std::to_string(getpid())) / "no-such-model.gguf")
            .string();
    ASSERT_FALSE(fs::exists(missing_));
  }
  std::string bin_;
  std::string missing_;
};

TEST_F(CliMpi, HelpWorksUnderMpirun) {
  std::string out;
  int rc = run_command(mpirun(2) + bin_ + " --help", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("inspect"), std::string::npos) << out;
}

TEST_F(CliMpi, InspectMissingFileSingleton) {
  std::string out;
  int rc = run_command(bin_ + " inspect " + missing_, &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "timed out:\n" << out;
  EXPECT_NE(out.find(missing_), std::string::npos) << "the message must name the file:\n" << out;
}

TEST_F(CliMpi, InspectMissingFileTwoRanks) {
  std::string out;
  int rc = run_command(mpirun(2) + bin_ + " inspect " + missing_, &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "timed out (ranks did not agree on the failure?):\n" << out;
  EXPECT_NE(out.find("expertmesh inspect: error:"), std::string::npos) << out;
  EXPECT_NE(out.find(missing_), std::string::npos) << "the message must name the file:\n" << out;
  EXPECT_EQ(out.find("MPI_ABORT"), std::string::npos) << "failure must be agreed, not aborted:\n" << out;
}

TEST_F(CliMpi, UnknownCommandTwoRanks) {
  std::string out;
  int rc = run_command(mpirun(2) + bin_ + " no-such-command", &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("unknown command 'no-such-command'"), std::string::npos) << out;
}

}  // namespace
}  // namespace expertmesh
