// `expertmesh sweep` end to end on the golden tiny model (issue: sweep): four recipes, a crash in
// the middle (the sweep's test hook kills it after two recipes), a rerun that skips what was
// finished, and every row checked against what `expertmesh perplexity` reports for that file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::expertmesh_binary;
using testing::golden_dir;
using testing::run_command;

constexpr const char* kRecipes =
    "# the issue's four recipes on the tiny model\n"
    "Q8_0: Q8_0\n"
    "IQ4_KS: IQ4_KS\n"
    "IQ2_KL: IQ2_KL\n"
    "MIX: IQ2_KL --custom-q \"blk\\..*\\.attn_q.*=iq6_k,blk\\..*\\.attn_k.*=q8_0,blk\\..*\\.attn_v.*=q8_0,\\\n"
    "blk\\..*\\.attn_output.*=iq6_k,blk\\..*\\.ffn_down_exps\\.weight=iq3_k,\\\n"
    "blk\\..*\\.ffn_(gate|up)_exps\\.weight=iq2_kl,token_embd\\.weight=iq4_k,output\\.weight=iq6_k\"\n";

std::string sweep_cmd(const fs::path& dir, const fs::path& recipes, const std::string& prefix = "") {
  const auto g = golden_dir();
  return prefix + expertmesh_binary().string() + " sweep --base " +
         (g / "models" / "tiny-qwen3moe-bf16.gguf").string() + " --imatrix " +
         (g / "imatrix" / "tiny.imatrix.dat").string() + " --recipes " + recipes.string() + " -f " +
         (g / "data" / "wiki.test.raw").string() + " -c 128 --chunks 4 -t 2 -o " + dir.string() + " 2>&1";
}

double stat(const std::string& out, const std::string& label) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(label + R"(\s*:\s*(-?[0-9.]+))"))) return -1;
  return std::stod(m[1]);
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in, nullptr, false);
}

TEST(SweepCli, CrashResumeAndRowsMatchPerplexity) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("sweep");
  const fs::path recipes = dir / "recipes.txt";
  std::ofstream(recipes) << kRecipes;
  const fs::path out = dir / "out";

  std::string log;
  EXPECT_NE(run_command(sweep_cmd(out, recipes, "EXPERTMESH_SWEEP_TEST_KILL_AFTER=2 "), &log), 0) << log;
  EXPECT_TRUE(fs::exists(out / "results" / "Q8_0.json")) << log;
  EXPECT_TRUE(fs::exists(out / "results" / "IQ4_KS.json")) << log;
  EXPECT_FALSE(fs::exists(out / "results" / "IQ2_KL.json")) << log;
  EXPECT_FALSE(fs::exists(out / "results.json")) << "a crashed sweep must not report final results\n" << log;

  ASSERT_EQ(run_command(sweep_cmd(out, recipes), &log), 0) << log;
  EXPECT_NE(log.find("recipe 1/4 Q8_0: finished earlier, skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("recipe 2/4 IQ4_KS: finished earlier, skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("Pareto front"), std::string::npos) << log;

  const auto j = read_json(out / "results.json");
  ASSERT_TRUE(j.is_object()) << log;
  const auto& rows = j["results"];
  ASSERT_EQ(rows.size(), 5u) << j.dump(2);
  EXPECT_TRUE(rows[0]["is_base"].get<bool>());
  const double base_ppl = rows[0]["ppl"].get<double>();
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& r = rows[i];
    const std::string name = r["name"];
    SCOPED_TRACE(name);
    EXPECT_TRUE(r["complete"].get<bool>());
    // The row is what `expertmesh perplexity` reports for that file against the same base logits.
    std::string pout;
    const auto g = golden_dir();
    ASSERT_EQ(
        run_command(expertmesh_binary().string() + " perplexity -m " + r["model_path"].get<std::string>() +
                        " --kl-divergence-base " + (out / "base.kld").string() + " --kl-divergence -c 128 -t 2 2>&1",
                    &pout),
        0)
        << pout;
    EXPECT_NEAR(r["ppl"].get<double>(), stat(pout, R"(Mean PPL\(Q\))"), 1e-5 * base_ppl) << pout;
    EXPECT_NEAR(r["kld_mean"].get<double>(), stat(pout, "Mean    KLD"), 1e-6) << pout;
    EXPECT_NEAR(stat(pout, R"(Mean PPL\(base\))"), base_ppl, 1e-5 * base_ppl) << pout;
    EXPECT_GT(r["kld_mean"].get<double>(), 0.0);
    EXPECT_GT(r["bpw"].get<double>(), 1.0);
  }
  // Lower bit widths cost more KLD (a broken evaluation would not order them).
  auto kld_of = [&](const std::string& n) {
    for (const auto& r : rows)
      if (r["name"] == n) return r["kld_mean"].get<double>();
    return -1.0;
  };
  EXPECT_LT(kld_of("Q8_0"), kld_of("IQ4_KS"));
  EXPECT_LT(kld_of("IQ4_KS"), kld_of("IQ2_KL"));
  for (const char* f : {"results.csv", "results.md", "ppl-vs-bpw.svg", "kld-vs-bpw.svg"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  if (std::system("command -v rsvg-convert > /dev/null 2>&1") == 0) {
    const std::string cmd = "rsvg-convert -o " + (dir / "kld.png").string() + " " + (out / "kld-vs-bpw.svg").string();
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    EXPECT_GT(fs::file_size(dir / "kld.png"), 1000u);
  }
  // Rerunning a finished sweep recomputes nothing and reports the same figures.
  ASSERT_EQ(run_command(sweep_cmd(out, recipes), &log), 0) << log;
  EXPECT_EQ(log.find("quantizing"), std::string::npos) << log;
  const auto j2 = read_json(out / "results.json");
  ASSERT_EQ(j2["results"].size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(j2["results"][i]["ppl"], rows[i]["ppl"]);
  fs::remove_all(dir);
}

TEST(SweepCli, AFailingRecipeIsNamedAndNothingIsReportedAsFinal) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("sweep-bad");
  const fs::path recipes = dir / "recipes.txt";
  std::ofstream(recipes) << "Q8_0: Q8_0\nbroken: Q8_0 --no-such-flag\n";
  std::string log;
  EXPECT_NE(run_command(sweep_cmd(dir / "out", recipes), &log), 0) << log;
  EXPECT_NE(log.find("recipe broken failed"), std::string::npos) << log;
  EXPECT_NE(log.find("--no-such-flag"), std::string::npos) << log;
  EXPECT_NE(log.find("1 of 2 recipes did not finish"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir / "out" / "results" / "Q8_0.json")) << log;
  EXPECT_FALSE(fs::exists(dir / "out" / "results.json")) << log;
  // A bad recipes file is refused before any work, naming the file and line.
  std::ofstream(recipes) << "ok: Q8_0\nnope: NOT_A_TYPE\n";
  EXPECT_NE(run_command(sweep_cmd(dir / "out2", recipes), &log), 0) << log;
  EXPECT_NE(log.find("recipes.txt:2"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir / "out2" / "base.kld")) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh
