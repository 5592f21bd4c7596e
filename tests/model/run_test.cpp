// `expertmesh run` (issue 4 acceptance): greedy generation on the golden stories260K model prints
// exactly the peer's llama-cli output (data/stories260K-greedy.txt: the prompt echo " Once upon a
// time" followed by 128 generated tokens), and flag / file errors name the culprit.
#include <gtest/gtest.h>

#include <string>

#include "tests/cli/cli_test_util.h"
#include "tests/common/golden.h"

namespace expertmesh {
namespace {

using testing::expertmesh_binary;
using testing::golden_dir;
using testing::read_text;
using testing::run_command;
using testing::shell_quote;

TEST(RunGolden, Stories260KGreedyMatchesPeer) {
  EM_REQUIRE_GOLDEN();
  const auto g = golden_dir();
  const auto tmp = testing::temp_dir("run-greedy");
  const auto out_path = tmp / "stdout.txt";
  const auto err_path = tmp / "stderr.txt";
  std::string ignored;
  // run_command appends 2>&1; the subshell keeps stdout and stderr in their own files.
  const std::string cmd = "(" + shell_quote(expertmesh_binary().string()) + " run -m " +
                          shell_quote((g / "models" / "stories260K-f32.gguf").string()) +
                          " -p 'Once upon a time' -n 128 --temp 0 -t 2 > " + shell_quote(out_path.string()) + " 2> " +
                          shell_quote(err_path.string()) + ")";
  const int rc = run_command(cmd, &ignored);
  const std::string err = read_text(err_path);
  ASSERT_EQ(rc, 0) << err;
  std::string got = read_text(out_path);
  std::string want = read_text(g / "data" / "stories260K-greedy.txt");
  // Byte-exact: the 128th generated token is itself the final "\n" of the file.
  EXPECT_EQ(got, want) << "stderr:\n" << err;
  EXPECT_NE(err.find("tokens per second"), std::string::npos) << err;
}

// The penalties change the greedy text (stories260K's greedy story repeats names and phrases);
// a bad penalty is refused before any model is read.
TEST(RunGolden, Stories260KPenaltiesChangeTheGreedyText) {
  EM_REQUIRE_GOLDEN();
  const auto g = golden_dir();
  std::string out;
  const std::string model = (g / "models" / "stories260K-f32.gguf").string();
  ASSERT_EQ(testing::run_expertmesh({"run", "-m", model, "-p", "Once upon a time", "-n", "128", "--temp", "0", "-t",
                                     "2", "--repeat-penalty", "1.3", "--presence-penalty", "0.5"},
                                    &out),
            0)
      << out;
  EXPECT_NE(out.find("run: penalties: repeat_last_n = 64, repeat_penalty = 1.300"), std::string::npos) << out;
  const std::string greedy = read_text(g / "data" / "stories260K-greedy.txt");
  ASSERT_FALSE(greedy.empty());
  const std::string story = greedy.substr(0, greedy.size() - 1);  // without the final newline token
  EXPECT_EQ(out.find(story), std::string::npos) << "the penalised text equals the plain greedy one:\n" << out;
  EXPECT_NE(out.find("Once upon a time"), std::string::npos) << out;

  EXPECT_NE(testing::run_expertmesh({"run", "-m", "/nonexistent/x.gguf", "-p", "hi", "--repeat-penalty", "0"}, &out),
            0);
  EXPECT_NE(out.find("--repeat-penalty: must be in (0, 100]"), std::string::npos) << out;
  EXPECT_NE(testing::run_expertmesh({"run", "-m", "/nonexistent/x.gguf", "-p", "hi", "--repeat-last-n", "-5"}, &out),
            0);
  EXPECT_NE(out.find("--repeat-last-n"), std::string::npos) << out;
}

TEST(RunErrors, NamesMissingModelAndBadFlag) {
  std::string out;
  EXPECT_NE(testing::run_expertmesh({"run", "-m", "/nonexistent/model.gguf", "-p", "hi"}, &out), 0);
  EXPECT_NE(out.find("/nonexistent/model.gguf"), std::string::npos) << out;
  EXPECT_NE(testing::run_expertmesh({"run", "-m", "x.gguf", "-p", "hi", "--top-p", "abc"}, &out), 0);
  EXPECT_NE(out.find("--top-p"), std::string::npos) << out;
  EXPECT_NE(testing::run_expertmesh({"run", "-p", "hi"}, &out), 0);
  EXPECT_NE(out.find("-m"), std::string::npos) << out;
}

}  // namespace
}  // namespace expertmesh
