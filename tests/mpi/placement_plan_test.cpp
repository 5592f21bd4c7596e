// placement -> RankPlan (worker/placement_plan.h): the plans of all ranks partition the work
// exactly (every head, FFN row, expert and vocabulary row computed by exactly one rank of the
// right stage), the pipeline links are consistent, and malformed placements are rejected with a
// message naming the field.
#include "worker/placement_plan.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "tests/mpi/test_placements.h"

namespace expertmesh {
namespace {

using testing::test_placement;
using testing::test_stages;
using worker::RankPlan;

HParams moe_hp() {
  HParams hp;
  hp.arch = Arch::kQwen3Moe;
  hp.n_layer = 3, hp.n_embd = 256, hp.n_head = 4, hp.n_head_kv = 2, hp.head_dim = 64;
  hp.n_expert = 8, hp.n_expert_used = 2, hp.n_ff_exp = 256, hp.n_vocab = 512;
  return hp;
}

HParams dense_hp() {
  HParams hp;
  hp.arch = Arch::kLlama;
  hp.n_layer = 5, hp.n_embd = 64, hp.n_head = 8, hp.n_head_kv = 4, hp.head_dim = 8, hp.n_ff = 172, hp.n_vocab = 512;
  return hp;
}

std::vector<RankPlan> all_plans(const proto::Placement& p, const HParams& hp) {
  std::vector<RankPlan> plans;
  for (int r = 0; r < p.world(); ++r) {
    auto rp = worker::rank_plan(p, hp, r);
    EXPECT_TRUE(rp.ok()) << rp.status().to_string();
    if (rp.ok()) plans.push_back(*rp);
  }
  return plans;
}

// Every unit of work of every layer is done by exactly one rank.
void expect_partition(const std::vector<RankPlan>& plans, const HParams& hp) {
  std::map<int64_t, std::vector<int>> heads, ffn, experts;
  std::vector<int> vocab(size_t(hp.n_vocab), 0);
  for (const RankPlan& rp : plans) {
    for (const auto& lp : rp.layers) {
      auto& h = heads[lp.layer];
      h.resize(size_t(hp.n_head));
      for (int64_t i = lp.head_begin; i < lp.head_end; ++i) ++h[size_t(i)];
      EXPECT_EQ(lp.head_begin % hp.n_gqa(), 0);
      auto& f = ffn[lp.layer];
      f.resize(size_t(hp.n_ff));
      for (int64_t i = lp.ffn_begin; i < lp.ffn_end; ++i) ++f[size_t(i)];
      auto& e = experts[lp.layer];
      e.resize(size_t(hp.n_expert));
      for (int32_t x : lp.experts) ++e[size_t(x)];
      EXPECT_EQ(int64_t(lp.expert_owner.size()), hp.n_expert);
    }
    for (int64_t v = rp.vocab_begin; v < rp.vocab_end; ++v) ++vocab[size_t(v)];
    if (rp.vocab_end > rp.vocab_begin) {
      EXPECT_TRUE(rp.output);
    }
  }
  ASSERT_EQ(int64_t(heads.size()), hp.n_layer);
  for (auto& [il, h] : heads) {
    for (int c : h) EXPECT_EQ(c, 1) << "layer " << il;
    for (int c : ffn[il]) EXPECT_EQ(c, 1) << "layer " << il;
    for (int c : experts[il]) EXPECT_EQ(c, 1) << "layer " << il;
  }
  for (int c : vocab) EXPECT_EQ(c, 1);
}

TEST(PlacementPlan, OneRankIsTheFullPlan) {
  for (const HParams& hp : {moe_hp(), dense_hp()}) {
    auto rp = worker::rank_plan(test_placement(hp, {{0}}), hp, 0);
    ASSERT_TRUE(rp.ok()) << rp.status().to_string();
    const RankPlan full = worker::full_plan(hp);
    ASSERT_EQ(rp->layers.size(), full.layers.size());
    for (size_t i = 0; i < full.layers.size(); ++i) {
      EXPECT_EQ(rp->layers[i].head_begin, full.layers[i].head_begin);
      EXPECT_EQ(rp->layers[i].head_end, full.layers[i].head_end);
      EXPECT_EQ(rp->layers[i].experts, full.layers[i].experts);
      if (!hp.is_moe()) {
        EXPECT_EQ(rp->layers[i].ffn_end, hp.n_ff);
      }
    }
    EXPECT_TRUE(rp->embed && rp->output);
    EXPECT_EQ(rp->vocab_end, hp.n_vocab);
  }
}

TEST(PlacementPlan, EveryPolicyPartitionsTheWork) {
  for (const HParams& hp : {moe_hp(), dense_hp()})
    for (const char* policy : {"ep", "pp", "hybrid"})
      for (int world = 1; world <= 5; ++world) {
        SCOPED_TRACE(std::string(policy) + " world " + std::to_string(world));
        const auto stages = test_stages(policy, world, hp.n_layer);
        const auto plans = all_plans(test_placement(hp, stages), hp);
        ASSERT_EQ(int(plans.size()), world);
        expect_partition(plans, hp);
        for (int r = 0; r < world; ++r) {
          const RankPlan& rp = plans[size_t(r)];
          EXPECT_EQ(rp.n_stages, int(stages.size()));
          EXPECT_EQ(rp.stage_ranks, stages[size_t(rp.stage)]);
          EXPECT_EQ(rp.embed, rp.stage == 0);
          EXPECT_EQ(rp.output, rp.stage == rp.n_stages - 1);
          EXPECT_EQ(rp.prev_stage_root, rp.stage > 0 ? stages[size_t(rp.stage - 1)].front() : -1);
          EXPECT_EQ(rp.next_stage_root, rp.stage + 1 < rp.n_stages ? stages[size_t(rp.stage + 1)].front() : -1);
          // Ranks of one stage agree on who owns each expert.
          for (const RankPlan& other : plans)
            if (other.stage == rp.stage) {
              for (size_t i = 0; i < rp.layers.size(); ++i) {
                EXPECT_EQ(rp.layers[i].expert_owner, other.layers[i].expert_owner);
              }
            }
        }
      }
}

TEST(PlacementPlan, ZeroHeadRankAndRoundRobinExperts) {
  const HParams hp = moe_hp();  // 2 GQA groups over 3 ranks: one rank owns no heads
  const auto plans = all_plans(test_placement(hp, {{0, 1, 2}}), hp);
  ASSERT_EQ(plans.size(), 3u);
  EXPECT_EQ(plans[0].layers[0].n_heads(), 0);
  EXPECT_EQ(plans[1].layers[0].n_heads() + plans[2].layers[0].n_heads(), 4);
  EXPECT_EQ(plans[1].layers[0].experts, (std::vector<int32_t>{1, 4, 7}));
  EXPECT_EQ(plans[0].layers[0].expert_owner, (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 0, 1}));
  // attn_output's rows are split over the ranks with heads only: the head-less rank holds none
  // (so -ot attn_=rankN keeps the whole attention on rank N), the others cover n_embd in
  // 16-row groups, and every rank knows every rank's rows.
  EXPECT_EQ(plans[0].layers[0].attn_out.size(), 0);
  EXPECT_EQ(plans[1].layers[0].attn_out, (worker::Span{0, hp.n_embd / 2}));
  EXPECT_EQ(plans[2].layers[0].attn_out, (worker::Span{hp.n_embd / 2, hp.n_embd}));
  for (const worker::RankPlan& rp : plans)
    EXPECT_EQ(rp.layers[0].stage_attn_out,
              (std::vector<worker::Span>{{0, 0}, {0, hp.n_embd / 2}, {hp.n_embd / 2, hp.n_embd}}));
}

TEST(PlacementPlan, ReplicasComputeOnThePrimaryOnly) {
  const HParams hp = moe_hp();
  proto::Placement p = test_placement(hp, {{0, 1}});
  for (auto& l : *p.mutable_layers())
    for (auto& e : *l.mutable_experts()) e.add_rank(1 - e.rank(0));  // every expert replicated
  const auto plans = all_plans(p, hp);
  expect_partition(plans, hp);
}

TEST(PlacementPlan, EmptyListsDefaultToTheStagesFirstRank) {
  const HParams hp = dense_hp();
  proto::Placement p;
  p.set_world(2);
  for (int il = 0; il < hp.n_layer; ++il) p.add_layers()->set_layer(il);
  const auto plans = all_plans(p, hp);
  ASSERT_EQ(plans.size(), 2u);
  expect_partition(plans, hp);
  EXPECT_EQ(plans[0].layers[0].n_heads(), hp.n_head);
  EXPECT_EQ(plans[1].layers[0].n_heads(), 0);
}

void expect_rejected(const proto::Placement& p, const HParams& hp, const std::string& needle) {
  for (int r = 0; r < std::max(p.world(), 1); ++r) {
    auto rp = worker::rank_plan(p, hp, r);
    ASSERT_FALSE(rp.ok()) << "rank " << r << " accepted a placement with: " << needle;
    EXPECT_NE(rp.status().message().find(needle), std::string::npos) << rp.status().message();
  }
}

TEST(PlacementPlan, MalformedPlacementsAreRejectedOnEveryRank) {
  const HParams hp = moe_hp();
  const proto::Placement good = test_placement(hp, {{0, 1}});
  {
    proto::Placement p = good;
    p.mutable_layers(1)->mutable_heads(1)->set_begin(3);  // [3, 4): gap at 2, not a whole group
    expect_rejected(p, hp, "layer 1: heads");
  }
  {
    proto::Placement p = good;
    p.mutable_layers(2)->mutable_experts(3)->set_expert(2);  // expert 2 twice, 3 missing
    expect_rejected(p, hp, "layer 2: experts");
  }
  {
    proto::Placement p = good;
    p.mutable_layers(0)->mutable_heads(0)->set_rank(5);
    expect_rejected(p, hp, "rank 5 is not in the stage");
  }
  {
    proto::Placement p = good;
    p.mutable_layers()->RemoveLast();
    expect_rejected(p, hp, "2 layers, the model has 3");
  }
  {
    proto::Placement p = good;
    p.mutable_output_vocab(1)->set_end(500);
    expect_rejected(p, hp, "output_vocab");
  }
  {
    proto::Placement p = test_placement(hp, {{0}, {1}});
    for (auto& l : *p.mutable_layers()) {  // stage 1 computes nothing
      l.set_stage(0);
      l.clear_heads();
      l.clear_experts();
    }
    expect_rejected(p, hp, "stage 1 computes no layer");
  }
}

}  // namespace
}  // namespace expertmesh
