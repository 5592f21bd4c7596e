// model/sampling.h: each sampler's defining property, the chain's determinism, greedy argmax.
#include "model/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

namespace expertmesh {
namespace {

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(g() % 10000) / 1000.0f - 5.0f;
  return v;
}

TEST(Sampling, GreedyIsArgmaxLowestIdOnTies) {
  EXPECT_EQ(sampling::greedy(std::vector<float>{0.1f, 3.0f, -1.0f, 2.9f}), 1);
  EXPECT_EQ(sampling::greedy(std::vector<float>{1.0f, 5.0f, 5.0f, 5.0f}), 1);
  SamplingParams p;
  p.temp = 0.0f;
  Sampler s(p);
  const auto l = random_logits(1000, 3);
  EXPECT_EQ(s.sample(l), sampling::greedy(l));
}

TEST(Sampling, TopKKeepsTheKLargest) {
  const auto l = random_logits(500, 1);
  auto c = sampling::candidates(l);
  sampling::top_k(c, 7, 1);
  ASSERT_EQ(c.size(), 7u);
  float min_kept = c.back().logit;
  for (size_t i = 1; i < c.size(); ++i) EXPECT_GE(c[i - 1].logit, c[i].logit);
  int larger = 0;
  for (float x : l) larger += x > min_kept;
  EXPECT_LE(larger, 6);
  auto all = sampling::candidates(l);
  sampling::top_k(all, 0, 1);  // off
  EXPECT_EQ(all.size(), l.size());
  auto mk = sampling::candidates(l);
  sampling::top_k(mk, 2, 5);  // min_keep wins
  EXPECT_EQ(mk.size(), 5u);
}

TEST(Sampling, TopPKeepsShortestPrefixReachingMass) {
  const auto l = random_logits(300, 2);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    auto c = sampling::candidates(l);
    sampling::top_p(c, p, 1);
    auto full = sampling::candidates(l);
    sampling::softmax(full);
    ASSERT_LE(c.size(), full.size());
    double mass = 0, mass_before_last = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_EQ(c[i].id, full[i].id);
      if (i + 1 == c.size()) mass_before_last = mass;
      mass += full[i].p;
    }
    EXPECT_GE(mass, p - 1e-5) << p;
    EXPECT_LT(mass_before_last, p + 1e-5) << p;  // one fewer would not reach p
  }
  auto c = sampling::candidates(l);
  sampling::top_p(c, 1.0f, 1);
  EXPECT_EQ(c.size(), l.size());
}

TEST(Sampling, MinPKeepsTokensAboveFractionOfMax) {
  const auto l = random_logits(400, 4);
  const float p = 0.2f;
  auto c = sampling::candidates(l);
  sampling::min_p(c, p, 1);
  auto full = sampling::candidates(l);
  sampling::softmax(full);
  const float pmax = full[0].p;
  std::set<int32_t> kept;
  for (const auto& x : c) kept.insert(x.id);
  for (const auto& x : full) {
    if (x.p >= p * pmax * (1 + 1e-4f)) {
      EXPECT_TRUE(kept.count(x.id)) << x.id;
    }
    if (x.p < p * pmax * (1 - 1e-4f)) {
      EXPECT_FALSE(kept.count(x.id)) << x.id;
    }
  }
  EXPECT_GE(c.size(), 1u);
}

TEST(Sampling, SameSeedSameChoicesDifferentSeedDiffers) {
  const auto l = random_logits(200, 5);
  SamplingParams p;
  p.temp = 1.5f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(l));
    sb.push_back(b.sample(l));
  }
  EXPECT_EQ(sa, sb);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> sc;
  for (int i = 0; i < 50; ++i) sc.push_back(c.sample(l));
  EXPECT_NE(sa, sc);
  EXPECT_GT(std::set<int32_t>(sa.begin(), sa.end()).size(), 1u);  // really sampling
}

TEST(Sampling, ChainOnlyDrawsSurvivors) {
  const auto l = random_logits(300, 6);
  SamplingParams p;
  p.temp = 1.0f;
  p.top_k = 5;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 7;
  auto c = sampling::candidates(l);
  sampling::top_k(c, 5, 1);
  std::set<int32_t> allowed;
  for (const auto& x : c) allowed.insert(x.id);
  Sampler s(p);
  for (int i = 0; i < 200; ++i) EXPECT_TRUE(allowed.count(s.sample(l)));
}

TEST(Sampling, DrawFollowsDistribution) {
  // Two tokens with logits ln 3 and 0: p = 0.75 / 0.25.
  std::vector<Candidate> c = {{0, std::log(3.0f), 0}, {1, 0.0f, 0}};
  std::mt19937 rng(9);
  int n0 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) n0 += sampling::draw(c, rng) == 0;
  EXPECT_NEAR(n0 / double(n), 0.75, 0.02);
}

TEST(Sampling, TemperatureScalesLogits) {
  std::vector<Candidate> c = {{0, 2.0f, 0}, {1, -1.0f, 0}};
  sampling::temperature(c, 0.5f);
  EXPECT_FLOAT_EQ(c[0].logit, 4.0f);
  EXPECT_FLOAT_EQ(c[1].logit, -2.0f);
}

TEST(Sampling, PenaltiesFollowThePeerFormula) {
  SamplingParams p;
  p.repeat_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
  const std::vector<int32_t> last = {0, 0, 1, 3, 99};  // 99 is outside the row: ignored
  sampling::apply_penalties(l, last, p);
  EXPECT_FLOAT_EQ(l[0], 2.0f / 2 - (2 * 0.5f + 0.25f));  // positive: divided, seen twice
  EXPECT_FLOAT_EQ(l[1], -2.0f * 2 - (0.5f + 0.25f));     // negative: multiplied
  EXPECT_FLOAT_EQ(l[2], 1.0f);                           // not seen
  EXPECT_FLOAT_EQ(l[3], 0.5f / 2 - (0.5f + 0.25f));
  EXPECT_FLOAT_EQ(l[4], 3.0f);
  // The exempt token (newline without penalize_nl) keeps its logit.
  p.penalty_exempt = 0;
  std::vector<float> l2 = {2.0f, -2.0f};
  sampling::apply_penalties(l2, last, p);
  EXPECT_FLOAT_EQ(l2[0], 2.0f);
  EXPECT_FLOAT_EQ(l2[1], -4.75f);
}

TEST(Sampling, PenaltyWindowHoldsTheLastAcceptedTokens) {
  // Token 0 leads, 1 is second, 2 third. A presence penalty of 10 pushes any seen token last.
  const std::vector<float> l = {5.0f, 4.0f, 3.0f, 0.0f};
  SamplingParams p;
  p.temp = 0.0f;  // greedy sees the penalties too
  p.presence_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  EXPECT_EQ(s.sample(l), 0);
  s.accept(0);
  EXPECT_EQ(s.sample(l), 1);
  s.accept(1);
  EXPECT_EQ(s.sample(l), 2);
  s.accept(2);  // the window is now {1, 2}: 0 left it
  EXPECT_EQ(s.sample(l), 0);
  p.repeat_last_n = -1;  // the whole history
  Sampler all(p);
  for (int32_t id : {0, 1, 2}) all.accept(id);
  EXPECT_EQ(all.sample(l), 3);
  p.repeat_last_n = 0;  // off
  Sampler off(p);
  off.accept(0);
  EXPECT_EQ(off.sample(l), 0);
}

TEST(Sampling, LogitBiasBansAndBoosts) {
  const auto l = random_logits(200, 5);
  const int32_t top = sampling::greedy(l);
  SamplingParams p;
  p.temp = 0.0f;
  p.logit_bias = {{top, -INFINITY}, {-3, 100.0f}, {1000, 100.0f}};  // out-of-range ids are ignored
  Sampler greedy(p);
  std::vector<float> without = l;
  without[size_t(top)] = -INFINITY;
  EXPECT_EQ(greedy.sample(l), sampling::greedy(without));
  p.logit_bias = {{7, 1000.0f}};
  EXPECT_EQ(Sampler(p).sample(l), 7);
  // Sampled: a banned token is never drawn, even at a high temperature with no truncation.
  p.temp = 5.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.logit_bias = {{top, -INFINITY}};
  Sampler hot(p);
  for (int i = 0; i < 2000; ++i) ASSERT_NE(hot.sample(l), top);
}

TEST(Sampling, NeutralPenaltiesLeaveTheChainBitIdentical) {
  const auto l = random_logits(400, 8);
  SamplingParams p;
  p.seed = 11;
  Sampler plain(p), with_history(p);  // default penalties are off: repeat 1, frequency 0, presence 0
  for (int i = 0; i < 100; ++i) {
    const int32_t a = plain.sample(l);
    const int32_t b = with_history.sample(l);
    ASSERT_EQ(a, b) << "step " << i;
    with_history.accept(b);
  }
  // And a real penalty does change the choices.
  p.repeat_penalty = 3.0f;
  p.presence_penalty = 2.0f;
  SamplingParams neutral;
  neutral.seed = 11;
  Sampler plain2(neutral), penalised(p);
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    const int32_t a = plain2.sample(l);
    const int32_t b = penalised.sample(l);
    differ += a != b;
    penalised.accept(b);
  }
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace expertmesh
