// End to end (issue 5 acceptance): `expertmesh perplexity` and greedy `expertmesh run` under
// `mpirun -np 2, 3, 4` with --placement ep, pp and hybrid (two simulated hosts from a
// ClusterConfig: configs/two-hosts.textproto at np = 4, a generated two-host config at np = 2, 3)
// print the same as one rank: identical generated text, PPL equal to 1e-5 relative (the engine
// is exact, so in practice identical).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "tests/common/golden.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::expertmesh_binary;
using testing::golden_dir;
using testing::run_command;

std::string mpirun(int np) {
  std::string cmd = "timeout 60 " EXPERTMESH_MPIEXEC " --oversubscribe";
  if (geteuid() == 0) cmd += " --allow-run-as-root";
  return cmd + " -np " + std::to_string(np) + " ";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A ClusterConfig of two hosts, ranks [0, h) on the first and [h, np) on the second.
std::string two_host_config(const fs::path& dir, int np) {
  if (np == 4) return (fs::path(EXPERTMESH_SOURCE) / "configs" / "two-hosts.textproto").string();
  const fs::path p = dir / ("two-hosts-" + std::to_string(np) + ".textproto");
  std::ofstream out(p);
  const int h = (np + 1) / 2;
  for (int host = 0; host < 2; ++host) {
    out << "hosts { name: \"node-" << char('a' + host) << "\" memory_bytes: 68719476736\n";
    for (int r = host == 0 ? 0 : h; r < (host == 0 ? h : np); ++r) out << "  ranks { rank: " << r << " }\n";
    out << "}\n";
  }
  return p.string();
}

class DistributedCli : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    bin_ = expertmesh_binary().string();
    ASSERT_TRUE(fs::exists(bin_)) << bin_;
    dir_ = testing::temp_dir("dist-cli");
    // A few KB of wikitext: enough for 4 chunks of 128 tokens, fast to tokenize on every run.
    std::ifstream in(golden_dir() / "data" / "wiki.test.raw");
    std::string text(40000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    std::ofstream(dir_ / "wiki.txt") << text;
  }
  // Runs `prefix expertmesh args`; returns stdout, fails the test on a non-zero exit.
  std::string run(const std::string& prefix, const std::string& args) {
    const fs::path err = dir_ / "stderr.txt";
    std::string out;
    const int rc = run_command("(" + prefix + bin_ + " " + args + " 2>" + err.string() + ")", &out);
    EXPECT_EQ(rc, 0) << prefix << args << "\n" << out << slurp(err);
    return out;
  }
  std::string bin_;
  fs::path dir_;
};

double final_ppl(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(Final estimate: PPL over \d+ chunks for n_ctx=\d+ = ([0-9.]+))")))
    return -1;
  return std::stod(m[1].str());
}

TEST_P(DistributedCli, PerplexityAndGreedyRunMatchOneRank) {
  EM_REQUIRE_GOLDEN();
  const std::string model = (golden_dir() / "models" / GetParam()).string();
  const std::string ppl_args =
      "perplexity -m " + model + " -f " + (dir_ / "wiki.txt").string() + " -c 128 --chunks 4 -t 1";
  const std::string run_args = "run -m " + model + " -p \"Once upon a time\" -n 24 --temp 0 -t 1";
  const double ppl1 = final_ppl(run("", ppl_args));
  const std::string text1 = run("", run_args);
  ASSERT_GT(ppl1, 1.0);
  ASSERT_GT(text1.size(), std::string("Once upon a time").size() + 8) << text1;
  for (int np : {2, 3, 4}) {
    for (const std::string policy : {"ep", "pp", "hybrid"}) {
      SCOPED_TRACE("np " + std::to_string(np) + " " + policy);
      std::string flags = " --placement " + policy;
      if (policy == "hybrid") flags += " --cluster " + two_host_config(dir_, np);
      const double ppl = final_ppl(run(mpirun(np), ppl_args + flags));
      EXPECT_NEAR(ppl, ppl1, 1e-5 * ppl1);
      EXPECT_EQ(run(mpirun(np), run_args + flags), text1);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, DistributedCli, ::testing::Values("tiny-qwen3moe-bf16.gguf", "stories260K-f32.gguf"));

}  // namespace
}  // namespace expertmesh
