// `expertmesh bench` on a tiny synth qwen3moe model: the llama-bench markdown table parses, with
// one pp and one tg row of positive tokens/s.
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/cli/cli_test_util.h"

namespace expertmesh {
namespace {

using testing::expertmesh_binary;
using testing::run_command;
using testing::shell_quote;

TEST(Bench, TableHasPpAndTgRows) {
  const auto tmp = testing::temp_dir("bench");
  const auto model = (tmp / "tiny.gguf").string();
  std::string out;
  ASSERT_EQ(testing::run_expertmesh({"synth", "--arch", "qwen3moe", "--embd", "64", "--layers", "2", "--heads", "4",
                                     "--kv-heads", "2", "--head-dim", "32", "--experts", "4", "--top-k", "2",
                                     "--ff-exp", "32", "--vocab-size", "300", "--dtype", "bf16", "-t", "2", "-o", model},
                                    &out),
            0)
      << out;
  const auto out_path = tmp / "table.md";
  std::string err;
  // run_command appends 2>&1; the subshell keeps stderr (progress notes) out of the table file.
  ASSERT_EQ(run_command("(" + shell_quote(expertmesh_binary().string()) + " bench -m " + shell_quote(model) +
                            " -p 32 -n 8 -t 2 -r 2 > " + shell_quote(out_path.string()) + ")",
                        &err),
            0)
      << err;
  std::istringstream in(testing::read_text(out_path));
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 4u) << testing::read_text(out_path);
  EXPECT_TRUE(std::regex_search(lines[0], std::regex(R"(^\| model +\| +size \| +params \| backend +\| threads \| +test \| +t/s \|$)")))
      << lines[0];
  EXPECT_TRUE(std::regex_search(lines[1], std::regex(R"(^\| -+ \| -+: \| -+: \| -+ \| -+: \| -+: \| -+: \|$)"))) << lines[1];
  const std::regex row(R"(^\| qwen3moe .*\| +[0-9.]+ MiB \| +[0-9.]+ M \| CPU +\| +2 \| +(pp32|tg8) \| +([0-9.]+) ± ([0-9.]+) \|$)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(lines[2], m, row)) << lines[2];
  EXPECT_EQ(m[1], "pp32");
  EXPECT_GT(std::stod(m[2]), 0.0);
  ASSERT_TRUE(std::regex_search(lines[3], m, row)) << lines[3];
  EXPECT_EQ(m[1], "tg8");
  EXPECT_GT(std::stod(m[2]), 0.0);
}

}  // namespace
}  // namespace expertmesh
