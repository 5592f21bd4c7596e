// Unit tests of the imatrix accumulator, its .dat conversion, the state sidecar and the
// per-rank merge rule (no model needed).
#include "coordinator/imatrix/stats.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "coordinator/imatrix/gather.h"
#include "coordinator/imatrix/similarity.h"
#include "coordinator/imatrix/similarity_feed.h"
#include "coordinator/imatrix/state_file.h"
#include "tests/common/golden.h"

namespace expertmesh::coordinator::imatrix {
namespace {

Weight make_weight(const std::string& name, int64_t ne0, int64_t ne1, int64_t ne2 = 1) {
  Weight w;
  w.name = name;
  w.ne[0] = ne0;
  w.ne[1] = ne1;
  w.ne[2] = ne2;
  return w;
}

std::vector<float> random_rows(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = d(rng);
  return x;
}

worker::MatmulInput input(const Weight& w, int32_t expert, const std::vector<float>& x, int64_t rows, int64_t cols,
                          int64_t col_begin = 0, int64_t layer = 0) {
  return worker::MatmulInput{&w, expert, layer, x.data(), rows, cols, cols, col_begin};
}

TEST(ImatrixStats, AccumulatesMeanOfSquaresPerColumnAndExpert) {
  std::mt19937 rng(1);
  const Weight wq = make_weight("blk.0.attn_q.weight", 8, 4);
  const Weight up = make_weight("blk.0.ffn_up_exps.weight", 8, 4, 3);
  ImatrixStats s;
  std::vector<double> ref_q(8, 0.0), ref_e1(8, 0.0);
  for (int call = 0; call < 3; ++call) {
    s.begin_ubatch();
    auto x = random_rows(rng, 20, 8);
    ASSERT_TRUE(s.observe(input(wq, -1, x, 20, 8)).ok());
    ASSERT_TRUE(s.observe(input(wq, -1, x, 20, 8)).ok());  // same call: ncall counts once
    for (int r = 0; r < 20; ++r)
      for (int j = 0; j < 8; ++j) ref_q[size_t(j)] += 2.0 * double(x[size_t(r * 8 + j)]) * x[size_t(r * 8 + j)];
    auto xe = random_rows(rng, 3, 8);
    ASSERT_TRUE(s.observe(input(up, 1, xe, 3, 8)).ok());  // experts: any row count
    for (int r = 0; r < 3; ++r)
      for (int j = 0; j < 8; ++j) ref_e1[size_t(j)] += double(xe[size_t(r * 8 + j)]) * xe[size_t(r * 8 + j)];
  }
  const StatsEntry& q = s.entries().at(wq.name);
  EXPECT_EQ(q.ncall, 3);
  for (int j = 0; j < 8; ++j) {
    EXPECT_NEAR(q.sums[size_t(j)], ref_q[size_t(j)], 1e-9 * ref_q[size_t(j)]);
    EXPECT_EQ(q.counts[size_t(j)], 120);
  }
  const StatsEntry& e = s.entries().at(up.name);
  EXPECT_EQ(e.n_seg, 3);
  EXPECT_EQ(e.ncall, 3);
  EXPECT_EQ(e.counts[0], 0);      // expert 0 never routed
  EXPECT_EQ(e.counts[8 + 3], 9);  // expert 1
  EXPECT_NEAR(e.sums[8 + 5], ref_e1[5], 1e-9 * ref_e1[5]);

  // .dat: value = mean * ncall; the expert weight lacks data for 2 of 3 experts -> skipped.
  Imatrix dat = s.to_dat("calib.txt", nullptr);
  ASSERT_EQ(dat.entries.size(), 1u);
  EXPECT_EQ(dat.entries[0].name, wq.name);
  EXPECT_EQ(dat.entries[0].ncall, 3);
  EXPECT_NEAR(dat.entries[0].values[2], float(ref_q[2] / 120.0 * 3.0), 1e-5 * ref_q[2] / 40);
  EXPECT_EQ(*dat.last_call, 3);
  EXPECT_EQ(dat.dataset, "calib.txt");
}

TEST(ImatrixStats, FollowsThePeersSelectionRules) {
  std::mt19937 rng(2);
  const Weight wq = make_weight("blk.3.attn_q.weight", 4, 4);
  const Weight out = make_weight("output.weight", 4, 10);
  const Weight tok = make_weight("token_embd.weight", 4, 10);
  auto x15 = random_rows(rng, 15, 4), x16 = random_rows(rng, 16, 4);
  ImatrixStats plain;
  EXPECT_FALSE(plain.wants(input(wq, -1, x15, 15, 4)));  // < 16 rows
  EXPECT_TRUE(plain.wants(input(wq, -1, x16, 16, 4)));
  EXPECT_FALSE(plain.wants(input(out, -1, x16, 16, 4)));
  EXPECT_FALSE(plain.wants(input(tok, -1, x16, 16, 4)));
  ImatrixStats with_output(CollectRules{.process_output = true});
  EXPECT_TRUE(with_output.wants(input(out, -1, x16, 16, 4)));
  ImatrixStats lsim(CollectRules{.layer_similarity = true});
  EXPECT_TRUE(lsim.wants(input(out, -1, x16, 16, 4)));
  EXPECT_EQ(block_index("blk.12.attn_q.weight"), 12);
  EXPECT_EQ(block_index("output.weight"), -1);
  EXPECT_EQ(block_index("blk.x.attn_q.weight"), -1);
}

TEST(ImatrixStats, RollbackDropsTheChunkAndNonFiniteInputsAreCaught) {
  std::mt19937 rng(3);
  const Weight wq = make_weight("blk.0.attn_q.weight", 8, 4);
  const Weight wk = make_weight("blk.0.attn_k.weight", 8, 4);
  ImatrixStats s;
  s.begin_chunk();
  s.begin_ubatch();
  auto x = random_rows(rng, 16, 8);
  ASSERT_TRUE(s.observe(input(wq, -1, x, 16, 8)).ok());
  s.commit_chunk();
  const StatsEntry before = s.entries().at(wq.name);

  s.begin_chunk();
  s.begin_ubatch();
  auto y = random_rows(rng, 16, 8);
  ASSERT_TRUE(s.observe(input(wq, -1, y, 16, 8)).ok());
  ASSERT_TRUE(s.observe(input(wk, -1, y, 16, 8)).ok());  // created in this chunk
  y[37] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(s.observe(input(wq, -1, y, 16, 8, 0, 0)).ok());
  ASSERT_TRUE(s.bad().has_value());
  EXPECT_EQ(s.bad()->tensor, wq.name);
  EXPECT_EQ(s.bad()->layer, 0);
  EXPECT_TRUE(std::isnan(s.bad()->value));
  s.rollback_chunk();
  EXPECT_FALSE(s.bad().has_value());
  EXPECT_EQ(s.entries().count(wk.name), 0u);
  const StatsEntry& after = s.entries().at(wq.name);
  EXPECT_EQ(after.ncall, before.ncall);
  EXPECT_EQ(after.sums, before.sums);
  EXPECT_EQ(after.counts, before.counts);

  // Inf is caught too (the peer checks only NaN).
  s.begin_chunk();
  s.begin_ubatch();
  y[37] = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(s.observe(input(wq, -1, y, 16, 8)).ok());
  EXPECT_TRUE(s.bad().has_value());
}

TEST(ImatrixStats, PartialExpertsFollowThePeersFivePercentRule) {
  const Weight w = make_weight("blk.0.ffn_down_exps.weight", 4, 2, 40);
  std::vector<float> x(4, 1.5f);
  auto fill = [&](int missing) {
    ImatrixStats s;
    s.begin_ubatch();
    for (int e = missing; e < 40; ++e) EXPECT_TRUE(s.observe(input(w, e, x, 1, 4)).ok());
    return s.to_dat("", nullptr);
  };
  // round(40 * 0.05) = 2: one expert missing is stored (mean 1 for it), two are not.
  Imatrix one = fill(1);
  ASSERT_EQ(one.entries.size(), 1u);
  EXPECT_FLOAT_EQ(one.entries[0].values[0], 1.0f);         // placeholder: mean 1 * ncall 1
  EXPECT_FLOAT_EQ(one.entries[0].values[4], 1.5f * 1.5f);  // expert 1
  EXPECT_TRUE(fill(2).entries.empty());
}

TEST(ImatrixStats, MergeIsExactWithCountsAndThePeersRuleWithout) {
  std::mt19937 rng(4);
  const Weight w = make_weight("blk.1.ffn_up_exps.weight", 6, 2, 2);
  auto run = [&](ImatrixStats& s, int calls, int rows0, int rows1) {
    for (int c = 0; c < calls; ++c) {
      s.begin_ubatch();
      auto a = random_rows(rng, rows0, 6), b = random_rows(rng, rows1, 6);
      EXPECT_TRUE(s.observe(input(w, 0, a, rows0, 6)).ok());
      EXPECT_TRUE(s.observe(input(w, 1, b, rows1, 6)).ok());
    }
  };
  ImatrixStats h1, h2;
  run(h1, 2, 5, 1);  // expert 1 sees far fewer rows per call in the first half
  run(h2, 2, 2, 7);
  ImatrixStats full;
  ASSERT_TRUE(add_stats(full, h1).ok());
  ASSERT_TRUE(add_stats(full, h2).ok());
  const Imatrix want = full.to_dat("", nullptr);

  const Imatrix d1 = h1.to_dat("", nullptr), d2 = h2.to_dat("", nullptr);
  const SegmentCounts c1 = h1.segment_counts(), c2 = h2.segment_counts();
  EXPECT_EQ(c1.at(w.name), (std::vector<int64_t>{10, 2}));
  ImatrixStats exact;
  ASSERT_TRUE(exact.merge(d1, &c1, "a").ok());
  ASSERT_TRUE(exact.merge(d2, &c2, "b").ok());
  const Imatrix got = exact.to_dat("", nullptr);
  ASSERT_EQ(got.entries.size(), 1u);
  EXPECT_EQ(got.entries[0].ncall, 4);
  for (size_t i = 0; i < want.entries[0].values.size(); ++i)
    EXPECT_NEAR(got.entries[0].values[i], want.entries[0].values[i], 1e-6 * std::abs(want.entries[0].values[i]));

  // Without counts: values add, ncall adds to every count (a call-weighted average).
  ImatrixStats peer;
  ASSERT_TRUE(peer.merge(d1, nullptr, "a").ok());
  ASSERT_TRUE(peer.merge(d2, nullptr, "b").ok());
  const Imatrix p = peer.to_dat("", nullptr);
  for (size_t i = 0; i < p.entries[0].values.size(); ++i)
    EXPECT_NEAR(p.entries[0].values[i], d1.entries[0].values[i] + d2.entries[0].values[i],
                1e-6 * p.entries[0].values[i]);
}

TEST(ImatrixStateFile, RoundTripsAndRejectsDamage) {
  ImatrixState st;
  st.first_chunk = 3;
  st.chunks_done = 5;
  st.bad_chunks = 1;
  st.n_ctx = 256;
  st.n_batch = 128;
  st.n_ubatch = 128;
  st.text_file = "data/groups_merged.txt";
  st.ppl_count = 635;
  st.nll = 4000.25;
  st.nll2 = 30000.5;
  st.last_call = 10;
  st.counts["blk.0.ffn_up_exps.weight"] = {12, 0, -1};
  StatsEntry e;
  e.n_cols = 2;
  e.n_seg = 2;
  e.ncall = 7;
  e.sums = {1, 2, 3, 4};
  e.counts = {5, 5, 0, 0};
  st.unstored["blk.0.ffn_down_exps.weight"] = e;
  const auto dir = testing::temp_dir("imatrix_state");
  const std::string path = (dir / "x.dat.state").string();
  ASSERT_TRUE(write_state(path, st).ok());
  auto back = read_state(path);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->first_chunk, 3);
  EXPECT_EQ(back->chunks_done, 5);
  EXPECT_EQ(back->bad_chunks, 1);
  EXPECT_EQ(back->text_file, st.text_file);
  EXPECT_EQ(back->nll2, st.nll2);
  EXPECT_EQ(back->last_call, 10);
  EXPECT_EQ(back->counts, st.counts);
  EXPECT_EQ(back->unstored.at("blk.0.ffn_down_exps.weight").sums, e.sums);

  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  auto cut = read_state(path);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find(path), std::string::npos);
  EXPECT_EQ(read_state((dir / "missing.state").string()).status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(ImatrixGather, MergeRuleTakesOwnedDataOnceAndIsOrderIndependent) {
  std::mt19937 rng(5);
  const Weight wq = make_weight("blk.0.attn_q.weight", 6, 4);
  const Weight wo = make_weight("blk.0.attn_output.weight", 6, 4);
  const Weight ex = make_weight("blk.0.ffn_down_exps.weight", 6, 4, 4);
  auto xq = random_rows(rng, 16, 6), xo = random_rows(rng, 16, 6);
  std::vector<std::vector<float>> xe;
  for (int e = 0; e < 4; ++e) xe.push_back(random_rows(rng, 2 + e, 6));
  // Reference: one rank sees everything.
  ImatrixStats one;
  one.begin_ubatch();
  ASSERT_TRUE(one.observe(input(wq, -1, xq, 16, 6)).ok());
  ASSERT_TRUE(one.observe(input(wo, -1, xo, 16, 6)).ok());
  for (int e = 0; e < 4; ++e) ASSERT_TRUE(one.observe(input(ex, e, xe[size_t(e)], 2 + e, 6)).ok());
  // Two ranks: q replicated, attn_output columns split 0..2 / 2..6, experts dealt e % 2.
  ImatrixStats r[2];
  for (int k = 0; k < 2; ++k) {
    r[k].begin_ubatch();
    ASSERT_TRUE(r[k].observe(input(wq, -1, xq, 16, 6)).ok());
    const int64_t c0 = k == 0 ? 0 : 2, n = k == 0 ? 2 : 4;
    std::vector<float> slice(size_t(16 * n));
    for (int t = 0; t < 16; ++t)
      for (int j = 0; j < n; ++j) slice[size_t(t * n + j)] = xo[size_t(t * 6 + c0 + j)];
    ASSERT_TRUE(r[k].observe(input(wo, -1, slice, 16, n, c0)).ok());
    for (int e = k; e < 4; e += 2) ASSERT_TRUE(r[k].observe(input(ex, e, xe[size_t(e)], 2 + e, 6)).ok());
  }
  for (int first : {0, 1}) {
    ImatrixStats m;
    m.mutable_entries() = r[first].entries();
    ASSERT_TRUE(merge_rank(m, r[1 - first].entries()).ok());
    for (const auto& [name, want] : one.entries()) {
      const StatsEntry& got = m.entries().at(name);
      EXPECT_EQ(got.ncall, want.ncall) << name;
      EXPECT_EQ(got.counts, want.counts) << name;
      EXPECT_EQ(got.sums, want.sums) << name;
    }
  }
}

TEST(LayerSimilarity, ComparesFirstInputsOfConsecutiveBlocks) {
  // Layer 0's input x, its FFN input y (orthogonal to x), layer 1's input x again, output -x.
  const Weight q0 = make_weight("blk.0.attn_q.weight", 4, 4), k0 = make_weight("blk.0.attn_k.weight", 4, 4);
  const Weight g0 = make_weight("blk.0.ffn_gate_inp.weight", 4, 4), q1 = make_weight("blk.1.attn_q.weight", 4, 4);
  const Weight g1 = make_weight("blk.1.ffn_gate_inp.weight", 4, 4), out = make_weight("output.weight", 4, 4);
  std::vector<float> x, y, z, neg;
  for (int t = 0; t < 16; ++t) {
    x.insert(x.end(), {1.0f + t, 2.0f, 0.0f, 0.0f});
    y.insert(y.end(), {0.0f, 0.0f, 3.0f, 1.0f + t});
    z.insert(z.end(), {1.0f + t, 2.0f, 3.0f, 1.0f + t});
    neg.insert(neg.end(), {-1.0f - t, -2.0f, 0.0f, 0.0f});
  }
  LayerSimilarity sim("output.weight");
  for (int chunk = 0; chunk < 2; ++chunk) {
    sim.observe(input(q0, -1, x, 16, 4));
    sim.observe(input(k0, -1, y, 16, 4));  // not the first matmul of the layer: ignored
    sim.observe(input(g0, -1, y, 16, 4));
    sim.observe(input(q1, -1, x, 16, 4));
    sim.observe(input(g1, -1, z, 16, 4));
    sim.observe(input(out, -1, neg, 16, 4));
  }
  char buf[4096] = {};
  FILE* f = fmemopen(buf, sizeof(buf) - 1, "w");
  ASSERT_NE(f, nullptr);
  sim.print(f);
  std::fclose(f);
  const std::string text(buf);
  // layer: cos(x, x) = 1 for layer 0, cos(x, -x) = -1 for layer 1 (sorted by |cos|: a tie, by index).
  EXPECT_NE(text.find("sorted layer importances\n  0: Layer   0, <cos_sim> = 1\n  1: Layer   1, <cos_sim> = -1\n"),
            std::string::npos)
      << text;
  // attention: cos(x, y) = 0 for layer 0; ffn: cos(y, x) = 0 for layer 0.
  EXPECT_NE(text.find("sorted attention importances\n  0: Layer   0, <cos_sim> = 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sorted ffn importances\n  0: Layer   0, <cos_sim> = 0\n"), std::string::npos) << text;
}

TEST(ImatrixForwardKey, OrdersReadsAsTheForwardDoes) {
  const Weight q = make_weight("blk.0.attn_q.weight", 4, 4), o = make_weight("blk.0.attn_output.weight", 4, 4);
  const Weight r = make_weight("blk.0.ffn_gate_inp.weight", 4, 8),
               g = make_weight("blk.0.ffn_gate_exps.weight", 4, 4, 8);
  const Weight d = make_weight("blk.0.ffn_down_exps.weight", 4, 4, 8), q1 = make_weight("blk.1.attn_q.weight", 4, 4);
  const Weight head = make_weight("output.weight", 4, 4);
  const std::vector<float> x(16, 1.0f);
  // One call at position 0 (layers 0, 1, then the head read at the call's end, 128), then the
  // next call's first read at 128: strictly increasing keys.
  const std::vector<ForwardKey> keys = {
      forward_key(input(q, -1, x, 4, 4, 0, 0), 0),  forward_key(input(o, -1, x, 4, 4, 0, 0), 0),
      forward_key(input(r, -1, x, 4, 4, 0, 0), 0),  forward_key(input(g, 0, x, 4, 4, 0, 0), 0),
      forward_key(input(d, 0, x, 4, 4, 0, 0), 0),   forward_key(input(g, 5, x, 4, 4, 0, 0), 0),
      forward_key(input(q1, -1, x, 4, 4, 0, 1), 0), forward_key(input(head, -1, x, 4, 4, 0, -1), 128),
      forward_key(input(q, -1, x, 4, 4, 0, 0), 128)};
  for (size_t i = 1; i < keys.size(); ++i) EXPECT_LT(keys[i - 1], keys[i]) << i;
  BadActivation b{"blk.0.ffn_down_exps.weight", 0, 0, NAN, 0};
  EXPECT_EQ(forward_key(b), keys[4]);
  EXPECT_GT(op_order("blk.0.some_new_tensor.weight"), op_order("blk.0.ffn_down_exps.weight"));
}

TEST(ImatrixCallCounts, SetNcallPerKindOfWeight) {
  CallCounts c;
  c.add(128, 0);  // dense and experts
  c.add(8, 8);    // too few rows for 2-D weights: experts only
  c.add(20, 20);  // all three
  c.add(0, 0);    // nothing ran
  EXPECT_EQ(c.all, 3);
  EXPECT_EQ(c.dense, 2);
  EXPECT_EQ(c.output, 1);
  ImatrixStats s(CollectRules{true, false, "output.weight"});
  std::mt19937 rng(7);
  const Weight q = make_weight("blk.0.attn_q.weight", 8, 4), up = make_weight("blk.0.ffn_up_exps.weight", 8, 4, 2);
  const Weight head = make_weight("output.weight", 8, 4);
  const auto x = random_rows(rng, 16, 8);
  s.begin_chunk();
  s.begin_ubatch();
  ASSERT_TRUE(s.observe(input(q, -1, x, 16, 8)).ok());
  ASSERT_TRUE(s.observe(input(up, 1, x, 3, 8)).ok());
  ASSERT_TRUE(s.observe(input(head, -1, x, 16, 8, 0, -1)).ok());
  s.commit_chunk();
  EXPECT_TRUE(s.entries().at("blk.0.ffn_up_exps.weight").expert);
  EXPECT_FALSE(s.entries().at("blk.0.attn_q.weight").expert);
  s.set_ncalls(c);
  EXPECT_EQ(s.entries().at("blk.0.attn_q.weight").ncall, 2);
  EXPECT_EQ(s.entries().at("blk.0.ffn_up_exps.weight").ncall, 3);
  EXPECT_EQ(s.entries().at("output.weight").ncall, 1);
}

std::string printed(const LayerSimilarity& sim) {
  char buf[8192] = {};
  FILE* f = fmemopen(buf, sizeof(buf) - 1, "w");
  if (f == nullptr) return "fmemopen failed";
  sim.print(f);
  std::fclose(f);
  return buf;
}

TEST(LayerSimilarityFeed, ReplayEqualsDirectObservationAndDroppedChunksLeaveNoTrace) {
  // Three layers (attention q/k/v/o, router, experts) and the head, two calls per chunk.
  std::mt19937 rng(11);
  std::vector<Weight> ws;
  for (int l = 0; l < 3; ++l)
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp"})
      ws.push_back(make_weight(fmt::format("blk.{}.{}.weight", l, n), 6, 6));
  const Weight experts = make_weight("blk.0.ffn_up_exps.weight", 6, 6, 4), head = make_weight("output.weight", 6, 6);
  LayerSimilarity direct("output.weight"), replayed("output.weight");
  SimilarityFeed feed;
  RankContext one;  // world 1: replay needs no MPI
  for (int chunk = 0; chunk < 3; ++chunk) {
    const bool keep = chunk != 1;
    for (int64_t pos : {0, 20}) {
      for (int l = 0; l < 3; ++l)
        for (int i = 0; i < 5; ++i) {
          const auto x = random_rows(rng, 20, 6);
          const auto in = input(ws[size_t(l * 5 + i)], -1, x, 20, 6, 0, l);
          if (keep) direct.observe(in);
          feed.observe(in, pos);
          if (l == 0 && i == 4) {  // experts are not part of the similarity
            const auto xe = random_rows(rng, 5, 6);
            feed.observe(input(experts, 2, xe, 5, 6, 0, 0), pos);
          }
        }
      const auto y = random_rows(rng, 20, 6);
      if (keep) direct.observe(input(head, -1, y, 20, 6, 0, -1));
      feed.observe(input(head, -1, y, 20, 6, 0, -1), pos + 20);
    }
    if (keep) {
      ASSERT_TRUE(feed.replay(one, replayed).ok());
    } else {
      feed.clear();
    }
  }
  const std::string want = printed(direct);
  EXPECT_NE(want.find("sorted ffn importances"), std::string::npos) << want;
  EXPECT_EQ(printed(replayed), want);
}

}  // namespace
}  // namespace expertmesh::coordinator::imatrix
