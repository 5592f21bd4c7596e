// `mpirun -np 4 expertmesh sweep --group-size 2` and `--group-size 4` give the figures of one rank
// (issue: sweep acceptance): the same recipes evaluated by different group layouts must agree.
// Runs mpirun itself (label mpi), like tests/mpi/cli_mpi_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/common/golden.h"
#include "tests/common/mpirun.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::expertmesh_binary;
using testing::golden_dir;
using testing::run_command;

nlohmann::json sweep(const fs::path& dir, const fs::path& recipes, int np, int group_size) {
  const auto g = golden_dir();
  const fs::path out = dir / ("np" + std::to_string(np) + "_gs" + std::to_string(group_size));
  const std::string cmd = (np > 1 ? testing::mpirun_prefix(np, 600) : std::string()) + expertmesh_binary().string() +
                          " sweep --base " + (g / "models" / "tiny-qwen3moe-bf16.gguf").string() + " --imatrix " +
                          (g / "imatrix" / "tiny.imatrix.dat").string() + " --recipes " + recipes.string() + " -f " +
                          (g / "data" / "wiki.test.raw").string() + " -c 128 --chunks 2 -t 1 --group-size " +
                          std::to_string(group_size) + " -o " + out.string() + " 2>&1";
  std::string log;
  EXPECT_EQ(run_command(cmd, &log), 0) << cmd << "\n" << log;
  std::ifstream in(out / "results.json");
  return nlohmann::json::parse(in, nullptr, false);
}

TEST(SweepMpi, GroupLayoutsGiveTheFiguresOfOneRank) {
  EM_REQUIRE_GOLDEN();
  const fs::path dir = testing::temp_dir("sweep-mpi");
  const fs::path recipes = dir / "recipes.txt";
  std::ofstream(recipes)
      << "Q8_0: Q8_0\nIQ4_KS: IQ4_KS\nIQ2_KL: IQ2_KL\n"
         "MIX: IQ2_KL --custom-q \"blk\\..*\\.attn_.*=q8_0,blk\\..*\\.ffn_down_exps\\.weight=iq3_k\"\n";
  const auto one = sweep(dir, recipes, 1, 1);
  ASSERT_TRUE(one.is_object());
  ASSERT_EQ(one["results"].size(), 5u);
  for (int gs : {2, 4}) {
    SCOPED_TRACE("group size " + std::to_string(gs));
    const auto many = sweep(dir, recipes, 4, gs);
    ASSERT_TRUE(many.is_object());
    ASSERT_EQ(many["results"].size(), one["results"].size());
    for (size_t i = 0; i < one["results"].size(); ++i) {
      const auto &a = one["results"][i], &b = many["results"][i];
      SCOPED_TRACE(a["name"].get<std::string>());
      EXPECT_EQ(a["name"], b["name"]);
      EXPECT_TRUE(b["complete"].get<bool>());
      const double pa = a["ppl"].get<double>(), pb = b["ppl"].get<double>();
      EXPECT_NEAR(pb, pa, 1e-5 * pa);
      EXPECT_NEAR(b["kld_mean"].get<double>(), a["kld_mean"].get<double>(), 1e-6 + 1e-4 * a["kld_mean"].get<double>());
      EXPECT_EQ(a["size_gib"], b["size_gib"]);  // the same quantized bytes
      EXPECT_EQ(a["recipe_hash"], b["recipe_hash"]);
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace expertmesh
