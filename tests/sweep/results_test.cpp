#include "coordinator/sweep/results.h"

#include <gtest/gtest.h>

namespace expertmesh::coordinator {
namespace {

RecipeResult make(const std::string& name, double size, double kld, bool complete = true) {
  RecipeResult r;
  r.name = name;
  r.recipe = name + " --pure";
  r.recipe_hash = std::string(64, 'a');
  r.model_path = "/out/" + name + ".gguf";
  r.size_gib = size;
  r.bpw = size * 2;
  r.ppl = 10 + kld;
  r.ppl_err = 0.1;
  r.kld_mean = kld;
  r.kld_median = kld / 2;
  r.kld_p99 = kld * 5;
  r.same_top_p = 90;
  r.rms_dp = 3;
  r.quantize_seconds = 1.5;
  r.eval_tokens_per_s = 100;
  r.complete = complete;
  return r;
}

TEST(SweepResults, JsonRoundTripKeepsEveryField) {
  RecipeResult r = make("IQ4_KS", 0.5, 0.01);
  r.is_base = true;
  auto back = recipe_result_from_json(to_json(r));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(to_json(*back), to_json(r));
  auto all = results_from_json(results_to_json({r, make("b", 1, 2, false)}));
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_FALSE((*all)[1].complete);
}

TEST(SweepResults, JsonErrorsNameTheField) {
  nlohmann::json j = to_json(make("x", 1, 1));
  j["kld_mean"] = "high";
  auto r = recipe_result_from_json(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("\"kld_mean\""), std::string::npos) << r.status().message();
  j = to_json(make("x", 1, 1));
  j.erase("name");
  EXPECT_FALSE(recipe_result_from_json(j).ok());
  auto all = results_from_json(nlohmann::json{{"results", {to_json(make("x", 1, 1)), 7}}});
  ASSERT_FALSE(all.ok());
  EXPECT_NE(std::string(all.status().message()).find("results[1]"), std::string::npos) << all.status().message();
}

TEST(SweepResults, ParetoFrontIsTheUnbeatenSet) {
  std::vector<RecipeResult> rs = {
      make("big-good", 4.0, 0.001), make("mid", 2.0, 0.01),
      make("mid-worse", 2.5, 0.02),                                       // beaten by mid
      make("small", 1.0, 0.1),      make("tie-a", 1.0, 0.1),              // equal: both kept
      make("tiny-bad", 0.5, 1.0),   make("partial", 0.1, 0.0001, false),  // incomplete: ignored
  };
  RecipeResult base = make("bf16", 8.0, 0.0);
  base.is_base = true;
  rs.push_back(base);  // the base never competes
  const auto front = pareto_front(rs);
  std::vector<std::string> names;
  for (size_t i : front) names.push_back(rs[i].name);
  EXPECT_EQ(names, (std::vector<std::string>{"tiny-bad", "small", "tie-a", "mid", "big-good"}));
}

TEST(SweepResults, TablesSortBySizeAndSkipPartialResults) {
  std::vector<RecipeResult> rs = {make("b,quoted \"x\"", 2.0, 0.01), make("a|pipe", 1.0, 0.1),
                                  make("c", 0.5, 1, false)};
  const std::string csv = results_csv(rs);
  EXPECT_EQ(csv.find("c,"), std::string::npos) << csv;
  const size_t pa = csv.find("a|pipe"), pb = csv.find("\"b,quoted \"\"x\"\"\"");
  ASSERT_NE(pa, std::string::npos) << csv;
  ASSERT_NE(pb, std::string::npos) << csv;
  EXPECT_LT(pa, pb);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);  // header + 2 rows
  const std::string md = results_markdown(rs);
  EXPECT_NE(md.find("a\\|pipe"), std::string::npos) << md;
  EXPECT_LT(md.find("a\\|pipe"), md.find("b,quoted"));
  EXPECT_EQ(md.find("| c |"), std::string::npos) << md;
}

}  // namespace
}  // namespace expertmesh::coordinator
