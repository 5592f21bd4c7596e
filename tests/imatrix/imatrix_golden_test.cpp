// `expertmesh imatrix` end to end on the golden tiny qwen3moe model and calibration text:
//   * against the peer's imatrix/tiny.imatrix.dat (same parameters as its log): every entry
//     the peer wrote is ours to 1e-3 relative (mean of x² per column), same ncall and chunk
//     count, the dataset name stored, ffn_gate_exps present and equal to ffn_up_exps, and the
//     running PPL as the peer printed it;
//   * two half runs merged with --in-file equal one full run; --resume equals one full run;
//   * a poisoned token embedding (NaN) stops the run naming tensor, layer and chunk after
//     saving the good chunks; --skip-bad-chunks drops exactly that chunk.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "model/imatrix_dat.h"
#include "tests/common/golden.h"
#include "tests/imatrix/poisoned_model.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::expertmesh_binary;
using testing::golden_dir;
using testing::run_command;

constexpr int64_t kChunk = 256;  // -c 128 padded as the peer pads it

class ImatrixGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    EM_REQUIRE_GOLDEN();
    model_ = (golden_dir() / "models" / "tiny-qwen3moe-bf16.gguf").string();
    text_ = (golden_dir() / "data" / "groups_merged.txt").string();
    dir_ = testing::temp_dir("imatrix_golden");
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }
  // Runs `expertmesh imatrix` with -c 128 and `extra`; returns the exit status.
  int imatrix(const std::string& model, const std::string& extra, std::string* out) {
    const std::string cmd =
        expertmesh_binary().string() + " imatrix -m " + model + " -f " + text_ + " -c 128 -t 2 " + extra + " 2>&1";
    return run_command(cmd, out);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string model_, text_;
  fs::path dir_;
};

Imatrix read_dat(const std::string& p) {
  auto r = Imatrix::read(p);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : Imatrix{};
}

// Same entries, ncall and chunk count; mean of x² within `rel`.
void expect_same(const Imatrix& got, const Imatrix& want, double rel, const std::string& what) {
  ASSERT_EQ(got.entries.size(), want.entries.size()) << what;
  EXPECT_EQ(got.last_call, want.last_call) << what;
  for (const ImatrixEntry& w : want.entries) {
    const ImatrixEntry* g = got.find(w.name);
    ASSERT_NE(g, nullptr) << what << ": " << w.name;
    EXPECT_EQ(g->ncall, w.ncall) << what << ": " << w.name;
    ASSERT_EQ(g->values.size(), w.values.size()) << w.name;
    const auto gm = g->mean(), wm = w.mean();
    for (size_t i = 0; i < wm.size(); ++i)
      ASSERT_NEAR(gm[i], wm[i], rel * std::abs(wm[i])) << what << ": " << w.name << "[" << i << "]";
  }
}

// The peer's running PPL figures "[i]x," from its log, in order.
std::vector<double> running_ppl(const std::string& text) {
  std::vector<double> v;
  static const std::regex re(R"(\[(\d+)\]([0-9.]+),)");
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) v.push_back(std::stod((*it)[2]));
  return v;
}

TEST_F(ImatrixGolden, MatchesThePeersDatAndPpl) {
  std::string out;
  const std::string o = path("tiny.dat");
  ASSERT_EQ(imatrix(model_, "--chunks 8 -o " + o, &out), 0) << out;
  const Imatrix peer = read_dat((golden_dir() / "imatrix" / "tiny.imatrix.dat").string());
  const Imatrix ours = read_dat(o);
  ASSERT_EQ(peer.entries.size(), 21u);
  EXPECT_EQ(ours.last_call, peer.last_call);  // 8 chunks x 2 forward calls
  EXPECT_EQ(*ours.last_call, 16);
  EXPECT_EQ(ours.dataset, text_);  // the -f argument, verbatim, as the peer stores it
  size_t gate = 0;
  for (const ImatrixEntry& p : peer.entries) {
    const ImatrixEntry* g = ours.find(p.name);
    ASSERT_NE(g, nullptr) << p.name;
    EXPECT_EQ(g->ncall, p.ncall) << p.name;
    ASSERT_EQ(g->values.size(), p.values.size()) << p.name;
    const auto gm = g->mean(), pm = p.mean();
    for (size_t i = 0; i < pm.size(); ++i)
      ASSERT_NEAR(gm[i], pm[i], 1e-3 * std::abs(pm[i])) << p.name << "[" << i << "]";
  }
  for (const ImatrixEntry& e : ours.entries) {
    if (e.name.find("ffn_gate_exps") == std::string::npos) continue;
    ++gate;
    std::string up = e.name;
    up.replace(up.find("ffn_gate_exps"), 13, "ffn_up_exps");
    const ImatrixEntry* u = ours.find(up);
    ASSERT_NE(u, nullptr) << up;
    EXPECT_EQ(e.ncall, u->ncall);
    EXPECT_EQ(e.values, u->values) << e.name << ": gate and up read the same input";
    EXPECT_EQ(e.values.size(), 256u * 8u);  // n_embd x n_expert
  }
  EXPECT_EQ(gate, 3u);
  EXPECT_EQ(ours.entries.size(), peer.entries.size() + 3);

  std::ifstream log(golden_dir() / "imatrix" / "tiny.imatrix.log");
  const std::string peer_log((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  const auto pp = running_ppl(peer_log), op = running_ppl(out);
  ASSERT_EQ(pp.size(), 8u);
  ASSERT_EQ(op.size(), pp.size()) << out;
  for (size_t i = 0; i < pp.size(); ++i) EXPECT_NEAR(op[i], pp[i], 1e-4 * pp[i]) << "chunk " << i + 1;
  EXPECT_NE(out.find("Final estimate: PPL = "), std::string::npos) << out;
  EXPECT_NE(out.find("save_imatrix: stored collected data after 10 chunks in " + o), std::string::npos) << out;
  EXPECT_NE(out.find("save_imatrix: stored collected data after 16 chunks in " + o), std::string::npos) << out;
}

TEST_F(ImatrixGolden, HalvesMergedWithInFileAndResumeEqualOneRun) {
  std::string out;
  const std::string full = path("full.dat"), a = path("a.dat"), b = path("b.dat"), m = path("m.dat"), r = path("r.dat");
  ASSERT_EQ(imatrix(model_, "--no-ppl --chunks 4 -o " + full, &out), 0) << out;
  ASSERT_EQ(imatrix(model_, "--no-ppl --chunks 2 -o " + a, &out), 0) << out;
  ASSERT_EQ(imatrix(model_, "--no-ppl --from-chunk 2 --chunks 2 -o " + b, &out), 0) << out;
  const std::string merge =
      expertmesh_binary().string() + " imatrix --in-file " + a + " --in-file " + b + " -o " + m + " 2>&1";
  ASSERT_EQ(run_command(merge, &out), 0) << out;
  const Imatrix want = read_dat(full);
  EXPECT_EQ(*want.last_call, 8);
  expect_same(read_dat(m), want, 1e-6, "--in-file a + b");

  // The experts see different numbers of tokens in each half, so the peer's merge (a call-
  // weighted average, what a .dat without its .state gives) is not the full run.
  fs::remove(a + ".state");
  fs::remove(b + ".state");
  ASSERT_EQ(run_command(merge, &out), 0) << out;
  const Imatrix peer_merge = read_dat(m);
  const ImatrixEntry* e = peer_merge.find("blk.0.ffn_down_exps.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->mean(), want.find(e->name)->mean());

  // --resume continues a saved run: 2 chunks, then resumed to 4.
  ASSERT_EQ(imatrix(model_, "--no-ppl --chunks 2 -o " + r, &out), 0) << out;
  ASSERT_EQ(imatrix(model_, "--no-ppl --chunks 4 --resume -o " + r, &out), 0) << out;
  EXPECT_NE(out.find("resuming " + r + " after 2 chunks"), std::string::npos) << out;
  expect_same(read_dat(r), want, 1e-6, "--resume");
}

TEST_F(ImatrixGolden, NanStopsAfterSavingAndSkipBadChunksDropsTheChunk) {
  // A copy of the model whose embedding row for a token that only chunk 2 uses is NaN.
  const std::string poisoned = path("poisoned.gguf");
  const Status p = testing::write_poisoned_model(model_, text_, kChunk, 4, 2, poisoned);
  ASSERT_TRUE(p.ok()) << p.to_string();
  std::string out;
  const std::string stop = path("stop.dat"), skip = path("skip.dat"), ref01 = path("ref01.dat"),
                    ref3 = path("ref3.dat");
  const std::string want_msg = "in the input of blk.0.attn_q.weight (layer 0) in chunk 2";
  EXPECT_NE(imatrix(poisoned, "--chunks 4 -ofreq 1000 -o " + stop, &out), 0) << out;
  EXPECT_NE(out.find("non-finite activation (nan) " + want_msg), std::string::npos) << out;
  EXPECT_NE(out.find("saved the 2 chunks before it to " + stop), std::string::npos) << out;
  // What was saved is exactly chunks 0 and 1 (the poisoned row is not used there).
  ASSERT_EQ(imatrix(model_, "--no-ppl --chunks 2 -o " + ref01, &out), 0) << out;
  expect_same(read_dat(stop), read_dat(ref01), 1e-6, "saved before the NaN");

  // --skip-bad-chunks: chunks 0, 1 and 3, i.e. ref01 merged with chunk 3 alone.
  ASSERT_EQ(imatrix(poisoned, "--no-ppl --chunks 4 --skip-bad-chunks -o " + skip, &out), 0) << out;
  EXPECT_NE(out.find("skipping chunk 2: non-finite activation (nan) " + want_msg), std::string::npos) << out;
  ASSERT_EQ(imatrix(model_, "--no-ppl --from-chunk 3 --chunks 1 -o " + ref3, &out), 0) << out;
  const std::string merged = path("ref013.dat");
  ASSERT_EQ(run_command(expertmesh_binary().string() + " imatrix --in-file " + ref01 + " --in-file " + ref3 + " -o " +
                            merged + " 2>&1",
                        &out),
            0)
      << out;
  const Imatrix skipped = read_dat(skip);
  EXPECT_EQ(*skipped.last_call, 6);
  expect_same(skipped, read_dat(merged), 1e-6, "--skip-bad-chunks");

  // The stopped run resumes past the bad chunk with --skip-bad-chunks and ends where skip did.
  ASSERT_EQ(imatrix(poisoned, "--no-ppl --chunks 4 -ofreq 1000 --resume --skip-bad-chunks -o " + stop, &out), 0) << out;
  expect_same(read_dat(stop), skipped, 1e-6, "--resume --skip-bad-chunks");
}

}  // namespace
}  // namespace expertmesh
