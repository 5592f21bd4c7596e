// `expertmesh plan` through the binary: text report, --json, --textproto round trip through
// --placement FILE, simulated hosts, memory errors; on a synth model and the golden models.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

using testing::expertmesh_binary;
using testing::run_command;

std::string bin() { return expertmesh_binary().string(); }

// A small qwen3moe written by `expertmesh synth` (8 experts, 2 layers, 4 heads / 2 KV).
std::string synth_model() {
  static const std::string path = [] {
    const std::string p = (testing::temp_dir("plan_cli") / "moe.gguf").string();
    std::string out;
    const int rc = run_command(bin() +
                                   " synth --arch qwen3moe --layers 2 --embd 64 --heads 4 --kv-heads 2 "
                                   "--experts 8 --ff-exp 32 --dtype f32 -t 1 -o " +
                                   p + " 2>&1",
                               &out);
    EXPECT_EQ(rc, 0) << out;
    return p;
  }();
  return path;
}

TEST(PlanCli, TextReportOnSynthModel) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " plan -m " + synth_model() + " --np 3 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("placement ep: 3 rank(s), 1 stage(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("traffic per token"), std::string::npos) << out;
  EXPECT_NE(out.find("all ranks:"), std::string::npos) << out;
  // One line per layer and per rank.
  for (const char* row : {"\n      0     0  ", "\n      1     0  ", "\n     0 ", "\n     2 "})
    EXPECT_NE(out.find(row), std::string::npos) << "missing row '" << row << "' in\n" << out;
}

TEST(PlanCli, JsonCoversEveryExpertOnce) {
  std::string out;
  ASSERT_EQ(run_command(bin() + " plan -m " + synth_model() + " --np 3 --json", &out), 0) << out;
  const auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["world"], 3);
  ASSERT_EQ(j["layers"].size(), 2u);
  for (const auto& l : j["layers"]) {
    std::set<int> experts;
    for (const auto& e : l["experts"]) experts.insert(e.value("expert", 0));
    EXPECT_EQ(experts.size(), 8u);
    int64_t heads = 0;
    for (const auto& h : l["heads"])
      heads += std::stoll(h.value("end", std::string("0"))) - std::stoll(h.value("begin", std::string("0")));
    EXPECT_EQ(heads, 4);
  }
}

TEST(PlanCli, TextprotoRoundTripsThroughPlacementFile) {
  std::string first, second;
  ASSERT_EQ(run_command(bin() + " plan -m " + synth_model() + " --np 4 --hosts a:2,b:2 --placement hybrid --textproto",
                        &first),
            0)
      << first;
  EXPECT_NE(first.find("stage: 1"), std::string::npos) << first;
  const std::string path = (testing::temp_dir("plan_cli_roundtrip") / "hybrid.textproto").string();
  std::ofstream(path) << first;
  ASSERT_EQ(
      run_command(bin() + " plan -m " + synth_model() + " --np 4 --hosts a:2,b:2 --placement " + path + " --textproto",
                  &second),
      0)
      << second;
  // The file's policy ("hybrid") is kept, so a manual placement made by the planner prints the same.
  EXPECT_EQ(first, second);
  // The same file on the wrong number of ranks is refused, naming the file.
  std::string bad;
  EXPECT_NE(run_command(bin() + " plan -m " + synth_model() + " --np 3 --placement " + path + " 2>&1", &bad), 0);
  EXPECT_NE(bad.find("hybrid.textproto"), std::string::npos) << bad;
}

TEST(PlanCli, ErrorsNameTheCause) {
  std::string out;
  EXPECT_NE(run_command(bin() + " plan -m " + synth_model() + " --np 2 --rank-memory 64K 2>&1", &out), 0);
  EXPECT_NE(out.find("does not fit: rank 0"), std::string::npos) << out;
  EXPECT_NE(run_command(bin() + " plan -m " + synth_model() + " --np 2 -ot exps=rank5 2>&1", &out), 0);
  EXPECT_NE(out.find("rank5"), std::string::npos) << out;
  EXPECT_NE(run_command(bin() + " plan -m " + synth_model() + " --np 2 --placement tensor 2>&1", &out), 0);
  EXPECT_NE(out.find("--placement"), std::string::npos) << out;
}

TEST(PlanCli, GoldenModels) {
  EM_REQUIRE_GOLDEN();
  const std::string tiny = (testing::golden_dir() / "models" / "tiny-qwen3moe-bf16.gguf").string();
  const std::string stories = (testing::golden_dir() / "models" / "stories260K-f32.gguf").string();
  const std::string cluster =
      std::string(std::getenv("EXPERTMESH_SOURCE_DIR") ? std::getenv("EXPERTMESH_SOURCE_DIR") : ".") +
      "/configs/two-hosts.textproto";
  std::string out;
  ASSERT_EQ(run_command(bin() + " plan -m " + tiny + " --cluster " + cluster + " --placement hybrid 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("placement hybrid: 4 rank(s), 2 stage(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("ranks 2@node-b 3@node-b"), std::string::npos) << out;
  ASSERT_EQ(run_command(bin() + " plan -m " + stories + " --np 3 --placement pp --json", &out), 0) << out;
  const auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["stages"].size(), 3u);
  ASSERT_EQ(j["layers"].size(), 5u);
  int prev = 0;
  for (const auto& l : j["layers"]) {
    const int s = l.value("stage", 0);
    EXPECT_TRUE(s == prev || s == prev + 1);
    prev = s;
  }
  ASSERT_EQ(run_command(bin() + " plan -m " + stories + " --np 3 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("8 heads / 4 kv"), std::string::npos) << out;
}

}  // namespace
}  // namespace expertmesh
