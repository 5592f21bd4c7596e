// Forward + perplexity + KL-divergence against the peer's figures in ../shared/golden/SUMMARY.json
// (issue 4 acceptance). Runs the built binary like a user would.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

using testing::expertmesh_binary;
using testing::golden_dir;
using testing::run_command;

nlohmann::json summary() {
  std::ifstream in(golden_dir() / "SUMMARY.json");
  return nlohmann::json::parse(in);
}

std::string ppl_cmd(const std::string& model, const std::string& extra = "") {
  const auto g = golden_dir();
  return expertmesh_binary().string() + " perplexity -m " + (g / "models" / model).string() + " -f " +
         (g / "data" / "wiki.test.raw").string() + " -c 128 --chunks 16 -t 2 " + extra + " 2>&1";
}

double final_ppl(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(Final estimate: PPL over \d+ chunks for n_ctx=\d+ = ([0-9.]+))")))
    return -1;
  return std::stod(m[1]);
}

double stat(const std::string& out, const std::string& label) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(label + R"(\s*:\s*(-?[0-9.]+))"))) return -1;
  return std::stod(m[1]);
}

void expect_ppl(const std::string& model, const std::string& key, double rel) {
  EM_REQUIRE_GOLDEN();
  std::string out;
  ASSERT_EQ(run_command(ppl_cmd(model), &out), 0) << out;
  const double want = summary()["ppl"][key]["ppl"].get<double>();
  const double got = final_ppl(out);
  EXPECT_NEAR(got, want, rel * want) << model << ": ours " << got << ", peer " << want << "\n" << out;
}

TEST(ForwardGolden, Stories260KF32MatchesPeerTo1e4) { expect_ppl("stories260K-f32.gguf", "stories-f32", 1e-4); }
// The peer's quantized stories260K figures. These weight types multiply Q8_2-rounded activations
// (per 32 values, d = bf16(amax/127), q = round(x/d)): a float difference of one ulp anywhere
// upstream can move an activation across a rounding boundary, and this 64-wide model amplifies
// such flips. Measured: accumulating our dot products in double instead of float (a change of
// ~1e-7 per dot) moves Q8_0's PPL by 1.6e-3 and Q4_0's by 1.1e-3. With the peer's exact x86
// arithmetic (block sums stored as int16) our figures are within 1.1e-4 (Q8_0), 8e-5 (IQ4_NL),
// 2.9e-3 (Q4_0) and 4.1e-3 (Q6_0) of the peer's; 1e-3 would need bit-identical float order in
// every op of the forward. 5e-3 is the floor this chaos allows for Q6_0 and Q4_0; Q8_0 and
// IQ4_NL stay at 1e-3, which a wrong activation model fails (without the activation rounding
// Q8_0 lands 1.8e-3 away; with ARM's bf16-rounded block sums IQ4_NL lands 1.9e-3 away).
TEST(ForwardGolden, Stories260KQ8_0F16DownMatchesPeerTo1e3) {
  expect_ppl("stories260K-Q8_0-f16down.gguf", "stories-Q8_0-f16down", 1e-3);
}
TEST(ForwardGolden, Stories260KIQ4_NLF16DownMatchesPeerTo1e3) {
  expect_ppl("stories260K-IQ4_NL-f16down.gguf", "stories-IQ4_NL-f16down", 1e-3);
}
TEST(ForwardGolden, Stories260KQ6_0F16DownMatchesPeerTo5e3) {
  expect_ppl("stories260K-Q6_0-f16down.gguf", "stories-Q6_0-f16down", 5e-3);
}
TEST(ForwardGolden, Stories260KQ4_0F16DownMatchesPeerTo5e3) {
  expect_ppl("stories260K-Q4_0-f16down.gguf", "stories-Q4_0-f16down", 5e-3);
}
TEST(ForwardGolden, TinyQwen3MoeBf16MatchesPeerF32To1e4) { expect_ppl("tiny-qwen3moe-bf16.gguf", "tiny-f32", 1e-4); }

TEST(ForwardGolden, TinyQwen3MoeKldAgainstPeerF32IsBelow1e5) {
  EM_REQUIRE_GOLDEN();
  std::string out;
  const std::string kld = (golden_dir() / "ppl" / "tiny-f32.kld").string();
  ASSERT_EQ(run_command(ppl_cmd("tiny-qwen3moe-bf16.gguf", "--kl-divergence-base " + kld + " --kl-divergence"), &out),
            0)
      << out;
  const double mean_kld = stat(out, "Mean    KLD");
  EXPECT_GE(mean_kld, -1e-6) << out;
  EXPECT_LT(mean_kld, 1e-5) << out;
}

TEST(ForwardGolden, TinyQuantizedWithin1PercentAnd105xKld) {
  EM_REQUIRE_GOLDEN();
  const auto s = summary();
  const std::string kld = (golden_dir() / "ppl" / "tiny-f32.kld").string();
  for (const char* t : {"Q8_0", "IQ4_KS", "IQ4_KSS", "IQ2_KL", "MIX"}) {
    SCOPED_TRACE(t);
    std::string out;
    ASSERT_EQ(
        run_command(ppl_cmd(std::string("tiny-") + t + ".gguf", "--kl-divergence-base " + kld + " --kl-divergence"),
                    &out),
        0)
        << out;
    const auto& peer = s["ppl"][std::string("tiny-") + t];
    const double ppl = stat(out, R"(Mean PPL\(Q\))"), kl = stat(out, "Mean    KLD");
    EXPECT_NEAR(ppl, peer["ppl"].get<double>(), 0.01 * peer["ppl"].get<double>()) << out;
    EXPECT_LE(kl, 1.05 * peer["kld_mean"].get<double>()) << out;
  }
}

TEST(ForwardGolden, PeerCorruptQ8_0IsRefusedNamingTheTensor) {
  EM_REQUIRE_GOLDEN();
  std::string out;
  EXPECT_NE(run_command(ppl_cmd("bad/stories260K-Q8_0-peer-corrupt.gguf"), &out), 0) << out;
  EXPECT_NE(out.find("blk.0.ffn_down.weight"), std::string::npos) << out;
  EXPECT_EQ(out.find("Final estimate"), std::string::npos) << out;
}

}  // namespace
}  // namespace expertmesh
