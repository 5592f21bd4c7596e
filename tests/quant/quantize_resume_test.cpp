// Crash and resume (issue 6): a quantize run killed with SIGKILL after some tensors are in its
// manifest (the documented test hook EXPERTMESH_QUANTIZE_TEST_KILL_AFTER=K, job.h) leaves
// OUT.partial and the manifest but no OUT; rerunning the same command skips the recorded tensors
// after verifying their bytes and ends with the bytes of an uninterrupted run (here the peer's
// own file). A recorded tensor whose bytes were damaged is redone; a rerun with other options
// starts over instead of mixing plans. Non-TTY output is plain lines (no carriage returns).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {
namespace fs = std::filesystem;
using testing::golden_dir;
using testing::run_command;

int run_quantize(const std::string& env, const std::string& preset, const fs::path& out, std::string* log) {
  return run_command(
      fmt::format("cd '{}' && {} '{}' quantize --imatrix imatrix/tiny.imatrix.dat "
                  "models/tiny-qwen3moe-bf16.gguf '{}' {} 2 2>&1",
                  golden_dir().string(), env, testing::expertmesh_binary().string(), out.string(), preset),
      log);
}

bool same_bytes(const fs::path& a, const fs::path& b) {
  std::string out;
  return run_command(fmt::format("cmp '{}' '{}'", a.string(), b.string()), &out) == 0;
}

int manifest_lines(const fs::path& p) {
  std::ifstream f(p);
  int n = 0;
  for (std::string line; std::getline(f, line);) ++n;
  return n - 1;  // less the fingerprint line
}

TEST(QuantizeResume, KillNineThenRerunGivesTheUninterruptedBytes) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("quant-resume");
  const fs::path out = dir / "out.gguf";
  const fs::path peer = golden_dir() / "models" / "tiny-IQ4_KS.gguf";
  std::string log;
  const int rc = run_quantize("EXPERTMESH_QUANTIZE_TEST_KILL_AFTER=12", "IQ4_KS", out, &log);
  EXPECT_EQ(rc, 128 + 9) << "expected a SIGKILL exit\n" << log;
  EXPECT_FALSE(fs::exists(out));
  ASSERT_TRUE(fs::exists(dir / "out.gguf.partial"));
  ASSERT_EQ(manifest_lines(dir / "out.gguf.partial.manifest.0"), 12);
  EXPECT_EQ(log.find('\r'), std::string::npos) << "non-TTY output must be plain lines";

  // Damage the first recorded tensor (token_embd, right after the header): it must be redone.
  {
    std::ifstream m(dir / "out.gguf.partial.manifest.0");
    std::string head;
    size_t index = 0;
    int file = 0;
    uint64_t offset = 0;
    std::getline(m, head);
    m >> index >> file >> offset;
    std::fstream f(dir / "out.gguf.partial", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write("\xff\xff\xff\xff", 4);
  }
  ASSERT_EQ(run_quantize("", "IQ4_KS", out, &log), 0) << log;
  EXPECT_NE(log.find("resumed: 11 tensors"), std::string::npos) << log;
  EXPECT_TRUE(same_bytes(out, peer)) << log;
  EXPECT_FALSE(fs::exists(dir / "out.gguf.partial"));
  EXPECT_FALSE(fs::exists(dir / "out.gguf.partial.manifest.0"));
  fs::remove_all(dir);
}

TEST(QuantizeResume, OtherOptionsStartOver) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("quant-restart");
  const fs::path out = dir / "out.gguf";
  std::string log;
  EXPECT_NE(run_quantize("EXPERTMESH_QUANTIZE_TEST_KILL_AFTER=5", "IQ4_KS", out, &log), 0) << log;
  ASSERT_TRUE(fs::exists(dir / "out.gguf.partial"));
  // Same output name, another preset: nothing of the first plan may be reused.
  ASSERT_EQ(run_quantize("", "Q8_0", out, &log), 0) << log;
  EXPECT_EQ(log.find("resumed:"), std::string::npos) << log;
  EXPECT_TRUE(same_bytes(out, golden_dir() / "models" / "tiny-Q8_0.gguf")) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh
