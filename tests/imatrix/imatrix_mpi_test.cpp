// `mpirun -np N expertmesh imatrix` (issue 6, distributed imatrix) on the golden tiny qwen3moe
// model with the golden calibration text, -c 128 --chunks 4 -t 1:
//   * np = 1, 2, 4 under --placement ep, pp and hybrid (two simulated hosts: a generated config
//     at np = 2, configs/two-hosts.textproto at np = 4) write byte-identical .dat and .state
//     files and print the same running PPL; every rank accumulated a share (the expert slices
//     of the ranks add up to one rank's, so each expert was accumulated once, by its owner);
//   * -lsim with -ofreq / --save-frequency under pp at np = 3 prints the same layer similarity
//     and writes the same snapshots as one rank;
//   * calls too short for the 2-D weights (-ub) and --process-output give one rank's ncall at
//     np = 4 (the driver counts calls; no rank reads every expert);
//   * a NaN in chunk 2 stops np = 2 with one rank's message and saved file, --skip-bad-chunks
//     gives one rank's file, and --resume --skip-bad-chunks continues the stopped np = 2 run to
//     the same bytes.
//
// Runs mpirun itself (testing::mpirun_prefix).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include "model/imatrix_dat.h"
#include "tests/common/golden.h"
#include "tests/common/mpirun.h"
#include "tests/imatrix/poisoned_model.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::golden_dir;
using testing::run_command;

constexpr int64_t kChunk = 256;  // -c 128 padded as the peer pads it

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class ImatrixMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    EM_REQUIRE_GOLDEN();
    model_ = (golden_dir() / "models" / "tiny-qwen3moe-bf16.gguf").string();
    text_ = (golden_dir() / "data" / "groups_merged.txt").string();
    dir_ = testing::temp_dir("imatrix-mpi");
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }
  // `mpirun -np N` (nothing for np = 0: the plain binary).
  static std::string launcher(int np) {
    if (np == 0) return "";
    return testing::mpirun_prefix(np, 120);
  }
  // A ClusterConfig of two hosts, ranks [0, np/2) and [np/2, np).
  std::string two_hosts(int np) {
    if (np == 4) return (fs::path(EXPERTMESH_SOURCE) / "configs" / "two-hosts.textproto").string();
    const fs::path p = dir_ / fmt::format("two-hosts-{}.textproto", np);
    std::ofstream out(p);
    for (int host = 0; host < 2; ++host) {
      out << "hosts { name: \"node-" << char('a' + host) << "\" memory_bytes: 68719476736\n";
      for (int r = host * np / 2; r < (host + 1) * np / 2; ++r) out << "  ranks { rank: " << r << " }\n";
      out << "}\n";
    }
    return p.string();
  }
  // Runs imatrix on `np` ranks (0: plain) with `args`; stdout in *out, stderr in *err.
  int imatrix(int np, const std::string& model, const std::string& args, std::string* out, std::string* err) {
    const fs::path err_file = dir_ / "stderr.txt";
    const std::string cmd = fmt::format("({}{} imatrix -m {} -f {} -c 128 -t 1 {} 2>{})", launcher(np),
                                        testing::expertmesh_binary().string(), model, text_, args, err_file.string());
    const int rc = run_command(cmd, out);
    *err = slurp(err_file);
    return rc;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string model_, text_;
  fs::path dir_;
};

// Sum of the "expert slices" every rank reported with --verbosity 2; the number of ranks that did.
std::pair<int64_t, int> expert_slices(const std::string& err) {
  static const std::regex re(R"(imatrix: rank (\d+)/\d+ accumulated \d+ entries, (\d+) expert slices)");
  int64_t sum = 0;
  int ranks = 0;
  for (std::sregex_iterator it(err.begin(), err.end(), re), end; it != end; ++it) {
    sum += std::stoll((*it)[2]);
    ++ranks;
  }
  return {sum, ranks};
}

TEST_F(ImatrixMpi, DatAndStateAreIdenticalForOneTwoAndFourRanksUnderEveryPlacement) {
  const std::string common = "--chunks 4 --verbosity 2 -o ";
  std::string out1, err;
  const std::string ref = path("np1.dat");
  ASSERT_EQ(imatrix(0, model_, common + ref, &out1, &err), 0) << out1 << err;
  const auto [slices1, ranks1] = expert_slices(err);
  ASSERT_EQ(ranks1, 1) << err;
  ASSERT_EQ(slices1, 3 * 3 * 8) << err;  // 3 layers x gate/up/down x 8 experts, each seen
  EXPECT_NE(out1.find("Final estimate: PPL = "), std::string::npos) << out1;
  const std::string dat1 = slurp(ref), state1 = slurp(ref + ".state");
  ASSERT_FALSE(dat1.empty());
  ASSERT_FALSE(state1.empty());
  for (const char* placement : {"ep", "pp", "hybrid"}) {
    for (int np : {2, 4}) {
      const std::string what = fmt::format("--placement {} np={}", placement, np);
      const std::string o = path(fmt::format("{}-{}.dat", placement, np));
      std::string args = fmt::format("--placement {} ", placement);
      if (std::string(placement) == "hybrid") args += "--cluster " + two_hosts(np) + " ";
      std::string out;
      ASSERT_EQ(imatrix(np, model_, args + common + o, &out, &err), 0) << what << "\n" << out << err;
      EXPECT_TRUE(slurp(o) == dat1) << what << ": the .dat differs from one rank's";
      EXPECT_TRUE(slurp(o + ".state") == state1) << what << ": the .state differs from one rank's";
      EXPECT_EQ(out, out1) << what << ": running PPL";
      // Every rank accumulated a share, and each expert slice was accumulated by one rank only.
      const auto [slices, ranks] = expert_slices(err);
      EXPECT_EQ(ranks, np) << what << "\n" << err;
      EXPECT_EQ(slices, slices1) << what << "\n" << err;
    }
  }
}

TEST_F(ImatrixMpi, LayerSimilarityAndPeriodicSavesMatchOneRank) {
  const std::string args = "--chunks 3 -lsim -ofreq 2 --save-frequency 3 -o ";
  std::string out1, out3, err;
  const std::string a = path("one.dat"), b = path("pp3.dat");
  ASSERT_EQ(imatrix(0, model_, args + a, &out1, &err), 0) << out1 << err;
  ASSERT_EQ(imatrix(3, model_, "--placement pp " + args + b, &out3, &err), 0) << out3 << err;
  EXPECT_NE(out1.find("sorted layer importances"), std::string::npos) << out1;
  EXPECT_NE(out1.find("sorted ffn importances"), std::string::npos) << out1;
  EXPECT_EQ(out3, out1) << "-lsim tables and running PPL";
  for (const char* suffix : {"", ".state", ".at_4", ".at_4.state", ".at_6", ".at_6.state"}) {
    ASSERT_TRUE(fs::exists(b + suffix)) << suffix << "\n" << err;
    EXPECT_TRUE(slurp(a + suffix) == slurp(b + suffix)) << suffix;
  }
}

TEST_F(ImatrixMpi, ShortCallsAndTheOutputHeadCountLikeOneRank) {
  // -b 100 -ub 45: calls of 45, 45 and 10 tokens; the 10-token calls feed the experts but not
  // the 2-D weights (ncall 10 vs 16 over 2 chunks), whichever rank computes them.
  const std::string args = "--no-ppl --chunks 2 -b 100 -ub 45 --process-output -o ";
  std::string out, err;
  const std::string a = path("short1.dat"), b = path("short4.dat");
  ASSERT_EQ(imatrix(0, model_, args + a, &out, &err), 0) << out << err;
  ASSERT_EQ(imatrix(4, model_, "--placement hybrid --cluster " + two_hosts(4) + " " + args + b, &out, &err), 0)
      << out << err;
  auto one = Imatrix::read(a);
  ASSERT_TRUE(one.ok()) << one.status().to_string();
  const ImatrixEntry* q = one->find("blk.0.attn_q.weight");
  const ImatrixEntry* up = one->find("blk.0.ffn_up_exps.weight");
  const ImatrixEntry* head = one->find("output.weight");
  ASSERT_TRUE(q && up && head);
  EXPECT_EQ(q->ncall, 10);
  EXPECT_EQ(head->ncall, 10);
  EXPECT_EQ(up->ncall, 16);
  EXPECT_TRUE(slurp(a) == slurp(b));
  EXPECT_TRUE(slurp(a + ".state") == slurp(b + ".state"));
}

TEST_F(ImatrixMpi, NanStopSkipAndResumeOnTwoRanksMatchOneRank) {
  const std::string poisoned = path("poisoned.gguf");
  const Status p = testing::write_poisoned_model(model_, text_, kChunk, 4, 2, poisoned);
  ASSERT_TRUE(p.ok()) << p.to_string();
  const std::string msg = "non-finite activation (nan) in the input of blk.0.attn_q.weight (layer 0) in chunk 2";
  std::string out, err1, err2;
  // Stop: the same message, the same file of chunks 0 and 1.
  const std::string stop1 = path("stop1.dat"), stop2 = path("stop2.dat");
  EXPECT_NE(imatrix(0, poisoned, "--no-ppl --chunks 4 -ofreq 1000 -o " + stop1, &out, &err1), 0);
  EXPECT_NE(imatrix(2, poisoned, "--no-ppl --chunks 4 -ofreq 1000 -o " + stop2, &out, &err2), 0);
  EXPECT_NE(err1.find(msg), std::string::npos) << err1;
  EXPECT_NE(err2.find(msg), std::string::npos) << err2;
  EXPECT_NE(err2.find("saved the 2 chunks before it to " + stop2), std::string::npos) << err2;
  ASSERT_FALSE(slurp(stop1).empty());
  EXPECT_TRUE(slurp(stop1) == slurp(stop2)) << "the file saved before the NaN";
  EXPECT_TRUE(slurp(stop1 + ".state") == slurp(stop2 + ".state"));

  // --skip-bad-chunks: chunks 0, 1 and 3 on both.
  const std::string skip1 = path("skip1.dat"), skip2 = path("skip2.dat");
  ASSERT_EQ(imatrix(0, poisoned, "--no-ppl --chunks 4 --skip-bad-chunks -o " + skip1, &out, &err1), 0) << err1;
  ASSERT_EQ(imatrix(2, poisoned, "--placement pp --no-ppl --chunks 4 --skip-bad-chunks -o " + skip2, &out, &err2), 0)
      << err2;
  EXPECT_NE(err2.find("skipping chunk 2: " + msg), std::string::npos) << err2;
  EXPECT_TRUE(slurp(skip1) == slurp(skip2)) << "--skip-bad-chunks";
  EXPECT_TRUE(slurp(skip1 + ".state") == slurp(skip2 + ".state"));

  // The stopped two-rank run resumes past the bad chunk on two ranks and ends where skip did.
  ASSERT_EQ(imatrix(2, poisoned, "--no-ppl --chunks 4 -ofreq 1000 --resume --skip-bad-chunks -o " + stop2, &out, &err2),
            0)
      << err2;
  EXPECT_NE(err2.find("resuming " + stop2 + " after 2 chunks"), std::string::npos) << err2;
  // Resuming restores sums from the saved means, so equal up to float rounding.
  auto resumed = Imatrix::read(stop2), want = Imatrix::read(skip1);
  ASSERT_TRUE(resumed.ok() && want.ok());
  ASSERT_EQ(resumed->entries.size(), want->entries.size());
  EXPECT_EQ(resumed->last_call, want->last_call);
  for (const ImatrixEntry& w : want->entries) {
    const ImatrixEntry* g = resumed->find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_EQ(g->ncall, w.ncall) << w.name;
    ASSERT_EQ(g->values.size(), w.values.size()) << w.name;
    for (size_t i = 0; i < w.values.size(); ++i)
      ASSERT_NEAR(g->values[i], w.values[i], 1e-6 * std::abs(w.values[i])) << w.name << "[" << i << "]";
  }
}

}  // namespace
}  // namespace expertmesh
