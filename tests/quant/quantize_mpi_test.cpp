// `mpirun -np N expertmesh quantize ...` (issue 6): tensors are dealt to ranks, each rank writes
// its own at precomputed offsets, and the output is byte-identical for np = 1, 2, 3 — and equal to
// the peer's kept file. A distributed run killed mid-way (one rank SIGKILLs itself through the
// documented test hook, mpirun takes the others down) resumes with another rank count and still
// ends with the same bytes.
//
// Runs mpirun itself (MPIEXEC_EXECUTABLE, --oversubscribe, --allow-run-as-root as root).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/common/golden.h"
#include "tests/common/mpirun.h"

namespace expertmesh {
namespace {
namespace fs = std::filesystem;
using testing::golden_dir;
using testing::run_command;

std::string mpirun(int np, const std::string& env = "") {
  return testing::mpirun_prefix(np, 300, env.empty() ? std::vector<std::string>{} : std::vector<std::string>{env});
}

// IQ2_KL with the golden imatrix, one thread per rank; the peer kept this file.
std::string quantize_args(const fs::path& out) {
  return fmt::format("quantize --imatrix imatrix/tiny.imatrix.dat models/tiny-qwen3moe-bf16.gguf '{}' IQ2_KL 1",
                     out.string());
}

int run_quantize(const std::string& launcher, const fs::path& out, std::string* log) {
  return run_command(fmt::format("cd '{}' && {}'{}' {} 2>&1", golden_dir().string(), launcher,
                                 testing::expertmesh_binary().string(), quantize_args(out)),
                     log);
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  std::string out;
  return run_command(fmt::format("cmp '{}' '{}'", a.string(), b.string()), &out) == 0;
}

TEST(QuantizeMpi, OutputIsIdenticalForOneTwoAndThreeRanks) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("quant-mpi");
  const fs::path peer = golden_dir() / "models" / "tiny-IQ2_KL.gguf";
  for (int np : {1, 2, 3}) {
    const fs::path out = dir / fmt::format("np{}.gguf", np);
    std::string log;
    ASSERT_EQ(run_quantize(mpirun(np), out, &log), 0) << log;
    EXPECT_NE(log.find(fmt::format("on {} rank", np)), std::string::npos) << log;
    // Every rank did part of the work: each one logged tensor lines.
    for (int r = 0; r < np; ++r)
      EXPECT_NE(log.find(fmt::format("[rank {}/", r)), std::string::npos) << r << "\n" << log;
    EXPECT_TRUE(same_bytes(out, peer)) << "np=" << np << " differs from the peer's file\n" << log;
    EXPECT_FALSE(fs::exists(dir / fmt::format("np{}.gguf.partial", np)));
  }
  fs::remove_all(dir);
}

TEST(QuantizeMpi, KilledTwoRankRunResumesOnThreeRanksWithTheSameBytes) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("quant-mpi-resume");
  const fs::path out = dir / "out.gguf";
  std::string log;
  EXPECT_NE(run_quantize(mpirun(2, "EXPERTMESH_QUANTIZE_TEST_KILL_AFTER=3"), out, &log), 0) << log;
  EXPECT_FALSE(fs::exists(out)) << log;
  ASSERT_TRUE(fs::exists(dir / "out.gguf.partial")) << log;
  ASSERT_TRUE(fs::exists(dir / "out.gguf.partial.manifest.0") || fs::exists(dir / "out.gguf.partial.manifest.1"));
  ASSERT_EQ(run_quantize(mpirun(3), out, &log), 0) << log;
  EXPECT_NE(log.find("resumed:"), std::string::npos) << log;
  EXPECT_TRUE(same_bytes(out, golden_dir() / "models" / "tiny-IQ2_KL.gguf")) << log;
  EXPECT_FALSE(fs::exists(dir / "out.gguf.partial"));
  EXPECT_FALSE(fs::exists(dir / "out.gguf.partial.manifest.0"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh
