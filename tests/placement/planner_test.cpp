// Planner invariants over many (model shape, world, policy) combinations, uneven splits, memory
// limits, overrides, manual placements and determinism.
#include "coordinator/placement/planner.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include "tests/placement/placement_test_util.h"

namespace expertmesh::placement {
namespace {

using testing::make_ranks;
using testing::make_shape;
using testing::ShapeSpec;

Result<proto::Placement> plan(const ModelShape& m, int world, PolicyKind pk, int per_host = 0,
                              std::vector<proto::TensorOverride> ot = {}, int64_t memory = 0) {
  PlacementRequest req;
  req.model = &m;
  req.ranks = make_ranks(world, per_host > 0 ? per_host : world, memory);
  req.policy = pk;
  req.overrides = std::move(ot);
  return make_placement(req);
}

std::vector<proto::TensorOverride> ot(const std::string& v) {
  auto r = parse_tensor_overrides({v});
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : std::vector<proto::TensorOverride>{};
}

// Checks, independently of validate_placement, the invariants the runtime relies on.
void check_invariants(const proto::Placement& p, const ModelShape& m, int world, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(validate_placement(p, m, world).ok()) << validate_placement(p, m, world).to_string();
  ASSERT_EQ(p.world(), world);
  // Every rank in exactly one stage; stages hold contiguous, non-empty layer runs.
  std::vector<int> seen(static_cast<size_t>(world), 0);
  for (const auto& s : p.stages())
    for (int r : s.rank()) ++seen[static_cast<size_t>(r)];
  for (int r = 0; r < world; ++r) EXPECT_EQ(seen[static_cast<size_t>(r)], 1) << "rank " << r;
  for (int il = 0; il < m.n_layer; ++il) {
    const auto& l = p.layers(il);
    const std::vector<int> ranks = stage_ranks(p, l.stage());
    // Heads: whole GQA groups, disjoint, covering.
    std::vector<int> owner(static_cast<size_t>(m.n_head), -1);
    for (int r : ranks) {
      const Range h = head_range(l, r);
      EXPECT_EQ(h.begin % m.n_gqa(), 0) << "layer " << il;
      EXPECT_EQ(h.end % m.n_gqa(), 0) << "layer " << il;
      for (int64_t i = h.begin; i < h.end; ++i) {
        EXPECT_EQ(owner[static_cast<size_t>(i)], -1);
        owner[static_cast<size_t>(i)] = r;
      }
    }
    for (int o : owner) EXPECT_GE(o, 0) << "layer " << il << ": a head without owner";
    // Experts: each exactly one primary owner on the layer's stage.
    std::vector<int> primaries(static_cast<size_t>(m.layers[static_cast<size_t>(il)].n_expert), 0);
    for (int r : ranks)
      for (int e : primary_experts(l, r)) ++primaries[static_cast<size_t>(e)];
    for (int c : primaries) EXPECT_EQ(c, 1) << "layer " << il;
    // FFN rows cover n_ff.
    int64_t rows = 0;
    for (int r : ranks) rows += ffn_range(l, r).size();
    EXPECT_EQ(rows, m.layers[static_cast<size_t>(il)].n_ff);
  }
  int64_t vocab = 0;
  for (int r : stage_ranks(p, n_stages(p) - 1)) vocab += vocab_range(p, r).size();
  EXPECT_EQ(vocab, m.n_vocab);
  // Split tensors' bytes sum to the tensor over the ranks (no double counting, nothing lost).
  std::map<std::string, int64_t> held;
  for (const auto& l : p.layers())
    for (const auto& t : l.tensors()) held[t.name()] += t.bytes();
  for (const auto& t : p.global_tensors()) held[t.name()] += t.bytes();
  for (const TensorShape& t : m.tensors) {
    const int copies = t.split == Split::kReplicated && t.layer >= 0
                           ? static_cast<int>(stage_ranks(p, p.layers(t.layer).stage()).size())
                           : 1;
    // attn_output / ffn_down: the runtime's output-row split over the stage (the shares of a
    // stage's ranks add up to the tensor).
    if (t.split == Split::kExperts || t.split == Split::kHeadRows || t.split == Split::kFfnRows ||
        t.split == Split::kAttnOutRows || t.split == Split::kFfnOutRows || t.split == Split::kVocabRows ||
        t.split == Split::kReplicated)
      if (t.layer >= 0 || t.split == Split::kVocabRows) {
        EXPECT_EQ(held[t.name], t.bytes * copies) << t.name;
      }
  }
}

TEST(Planner, InvariantsAcrossShapesWorldsAndPolicies) {
  std::vector<ShapeSpec> shapes;
  shapes.push_back({});  // tiny qwen3moe-like, dense
  ShapeSpec moe;
  moe.n_expert = 8;
  shapes.push_back(moe);  // n_expert 8, n_head 4 / kv 2
  ShapeSpec stories;
  stories.n_layer = 5, stories.n_embd = 64, stories.n_head = 8, stories.n_head_kv = 4, stories.head_dim = 8;
  stories.n_ff = 172;
  shapes.push_back(stories);  // ffn 172 wide (not a multiple of 32)
  ShapeSpec big;
  big.n_layer = 12, big.n_head = 32, big.n_head_kv = 4, big.head_dim = 128, big.n_embd = 1024;
  big.n_expert = 60, big.n_ff_exp = 256, big.type = GgmlType::Q4_K;
  shapes.push_back(big);
  ShapeSpec q8moe = moe;
  q8moe.type = GgmlType::Q8_0, q8moe.tied = true;
  shapes.push_back(q8moe);
  int combos = 0;
  for (size_t si = 0; si < shapes.size(); ++si) {
    const ModelShape m = make_shape(shapes[si]);
    for (int world = 1; world <= 5; ++world)
      for (PolicyKind pk : {PolicyKind::kEp, PolicyKind::kPp, PolicyKind::kHybrid})
        for (int per_host : {world, 2}) {
          const std::string what =
              fmt::format("shape {} world {} policy {} per_host {}", si, world, policy_kind_name(pk), per_host);
          auto p = plan(m, world, pk, per_host);
          ASSERT_TRUE(p.ok()) << what << ": " << p.status().to_string();
          check_invariants(*p, m, world, what);
          ++combos;
        }
  }
  EXPECT_EQ(combos, 5 * 5 * 3 * 2);
}

TEST(Planner, EightExpertsOverThreeRanksBalance) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 3, PolicyKind::kEp);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  std::vector<size_t> total(3, 0);
  for (const auto& l : p->layers()) {
    std::multiset<size_t> counts;
    for (int r = 0; r < 3; ++r) {
      counts.insert(primary_experts(l, r).size());
      total[static_cast<size_t>(r)] += primary_experts(l, r).size();
    }
    EXPECT_EQ(counts, (std::multiset<size_t>{2, 3, 3})) << "layer " << l.layer();
  }
  // Balanced by bytes, not by expert count: a rank with fewer experts takes the attention heads
  // (here one expert weighs as much as two head groups), so the bytes agree within 2%.
  EXPECT_EQ(total[0] + total[1] + total[2], 24u);
  std::vector<int64_t> b;
  for (int r = 0; r < 3; ++r) b.push_back(rank_bytes(*p, r));
  EXPECT_LT(static_cast<double>(*std::max_element(b.begin(), b.end())),
            1.02 * static_cast<double>(*std::min_element(b.begin(), b.end())));
}

TEST(Planner, FourHeadsTwoKvOverThreeRanksLeavesARankWithoutHeads) {
  const ModelShape m = make_shape({});  // n_head 4, kv 2: two GQA groups of 2
  auto p = plan(m, 3, PolicyKind::kEp);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  std::set<int> idle;
  for (const auto& l : p->layers()) {
    int zero = 0;
    for (int r = 0; r < 3; ++r) {
      const Range h = head_range(l, r);
      EXPECT_TRUE(h.size() == 0 || h.size() == 2) << "layer " << l.layer() << " rank " << r;
      if (h.empty()) ++zero, idle.insert(r);
    }
    EXPECT_EQ(zero, 1) << "layer " << l.layer();
  }
  EXPECT_GE(idle.size(), 2u) << "the rank without heads should rotate across layers";
}

TEST(Planner, SingleRankOwnsEverything) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 1, PolicyKind::kHybrid);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(rank_bytes(*p, 0), m.total_bytes);
  EXPECT_EQ(primary_experts(p->layers(0), 0).size(), 8u);
  EXPECT_EQ(head_range(p->layers(2), 0).size(), 4);
}

TEST(Planner, PipelineStagesAreContiguousAndBalanced) {
  ShapeSpec s;
  s.n_layer = 8, s.n_ff = 1024;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 4, PolicyKind::kPp);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(n_stages(*p), 4);
  std::vector<int> per(4, 0);
  for (const auto& l : p->layers()) ++per[static_cast<size_t>(l.stage())];
  for (int c : per) EXPECT_GE(c, 1);
  // 8 equal layers: 2 per stage except where embedding/output tilt it by at most one.
  for (int c : per) EXPECT_LE(std::abs(c - 2), 1);
  // More ranks than layers: stages shrink to the layer count, ranks grouped.
  auto q = plan(make_shape({}), 4, PolicyKind::kPp);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(n_stages(*q), 3);
  // Hybrid: one stage per host.
  auto h = plan(m, 4, PolicyKind::kHybrid, 2);
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(n_stages(*h), 2);
  EXPECT_EQ(stage_ranks(*h, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(stage_ranks(*h, 1), (std::vector<int>{2, 3}));
}

TEST(Planner, MemoryLimitsAreHonouredAndNamed) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  // Fits: 2 ranks with 80% of the model each (10% headroom).
  auto ok = plan(m, 2, PolicyKind::kEp, 0, {}, m.total_bytes * 8 / 10);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  // Does not fit: 2 ranks with 30% each.
  auto bad = plan(m, 2, PolicyKind::kEp, 0, {}, m.total_bytes * 3 / 10);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("does not fit"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("rank "), std::string::npos);
  EXPECT_NE(bad.status().message().find("bytes"), std::string::npos);
  // Unequal memory: the rank with 3x the memory gets more experts.
  PlacementRequest req;
  req.model = &m;
  req.ranks = make_ranks(2, 2, 0);
  req.ranks[0].memory_bytes = m.total_bytes / 2;
  req.ranks[1].memory_bytes = 3 * m.total_bytes / 2;
  auto p = make_placement(req);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_GT(rank_bytes(*p, 1), 2 * rank_bytes(*p, 0));
}

TEST(Planner, AutoPipelineWhenOneHostIsTooSmall) {
  ShapeSpec s;
  s.n_expert = 8, s.n_layer = 4;
  const ModelShape m = make_shape(s);
  // Each rank holds 40% of the model: a single stage over 4 ranks fits.
  auto p = plan(m, 4, PolicyKind::kEp, 2, {}, m.total_bytes * 4 / 10);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(n_stages(*p), 1);
  PlacementRequest req;
  req.model = &m;
  req.ranks = make_ranks(4, 2, m.total_bytes * 4 / 10);
  req.options.set_pipeline(proto::Policy::PIPELINE_PER_HOST);
  auto q = make_placement(req);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(n_stages(*q), 2);
}

TEST(Planner, RankOverridesPinUnits) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 3, PolicyKind::kEp, 0, ot("blk\\.1\\.ffn_.*_exps=rank2,blk\\.0\\.attn_.*=rank1"));
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  check_invariants(*p, m, 3, "overrides");
  EXPECT_EQ(primary_experts(p->layers(1), 2).size(), 8u);
  EXPECT_EQ(head_range(p->layers(0), 1).size(), 4);
  EXPECT_TRUE(head_range(p->layers(0), 0).empty());
  EXPECT_EQ(p->overrides_size(), 2);
  // Device overrides: CPU is the rank's own NUMA node; a GPU on a GPU-less rank is an error.
  auto c = plan(m, 2, PolicyKind::kEp, 0, ot("exps=CPU"));
  ASSERT_TRUE(c.ok());
  for (const auto& t : c->layers(0).tensors()) EXPECT_EQ(t.device().kind(), proto::DEVICE_KIND_CPU);
  auto g = plan(m, 2, PolicyKind::kEp, 0, ot("exps=GPU"));
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("has none"), std::string::npos) << g.status().message();
  // Out-of-range rank, and a rank in another pipeline stage.
  EXPECT_FALSE(plan(m, 2, PolicyKind::kEp, 0, ot("exps=rank7")).ok());
  auto pp = plan(m, 3, PolicyKind::kPp, 0, ot("blk\\.0\\.ffn_up_exps=rank2"));
  ASSERT_FALSE(pp.ok());
  EXPECT_NE(pp.status().message().find("another pipeline stage"), std::string::npos) << pp.status().message();
  // GPU placement on a rank with a GPU.
  PlacementRequest req;
  req.model = &m;
  req.ranks = make_ranks(2, 2);
  req.ranks[1].gpu = 0;
  // Attention on rank 1 alone, its matrices on rank 1's GPU; attn_norm stays on the CPUs.
  req.overrides = ot("attn_(q|k|v|output)\\.weight=GPU,attn_=rank1");
  auto gp = make_placement(req);
  ASSERT_TRUE(gp.ok()) << gp.status().to_string();
  int on_gpu = 0;
  for (const auto& t : gp->layers(0).tensors())
    if (t.device().kind() == proto::DEVICE_KIND_GPU) {
      EXPECT_EQ(t.rank(), 1);
      ++on_gpu;
    }
  EXPECT_GT(on_gpu, 0);
}

TEST(Planner, OverrideSyntax) {
  auto r = parse_tensor_overrides({"a=CPU,b=cuda1", "c=GPU", "d=rank3"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[1].device().kind(), proto::DEVICE_KIND_GPU);
  EXPECT_EQ((*r)[1].device().index(), 1);
  EXPECT_EQ((*r)[2].device().index(), -1);
  EXPECT_EQ((*r)[3].rank(), 3);
  for (const char* bad : {"noequals", "x=TPU", "=CPU", "x=", "([=CPU", "x=rank"}) {
    auto b = parse_tensor_overrides({bad});
    EXPECT_FALSE(b.ok()) << bad;
    if (!b.ok()) {
      EXPECT_NE(b.status().message().find("-ot"), std::string::npos);
    }
  }
}

TEST(Planner, ManualTextprotoRoundTripAndCompletion) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 4, PolicyKind::kHybrid, 2);
  ASSERT_TRUE(p.ok());
  const std::string path = ::testing::TempDir() + "/placement_roundtrip.textproto";
  std::ofstream(path) << to_textproto(*p);
  auto loaded = load_placement_file(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->SerializeAsString(), p->SerializeAsString());
  PlacementRequest req;
  req.model = &m;
  req.ranks = make_ranks(4, 2);
  auto again = complete_placement(*loaded, req);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->SerializeAsString(), p->SerializeAsString());
  // A partial file: only stages and the layers' stages; the rest is filled in.
  proto::Placement partial;
  partial.set_world(4);
  auto* s0 = partial.add_stages();
  s0->set_stage(0), s0->add_rank(0), s0->add_rank(3);
  auto* s1 = partial.add_stages();
  s1->set_stage(1), s1->add_rank(1), s1->add_rank(2);
  for (int il = 0; il < 3; ++il) {
    auto* l = partial.add_layers();
    l->set_layer(il), l->set_stage(il == 0 ? 0 : 1);
  }
  auto done = complete_placement(partial, req);
  ASSERT_TRUE(done.ok()) << done.status().to_string();
  check_invariants(*done, m, 4, "partial");
  EXPECT_EQ(done->policy(), "manual");
  EXPECT_EQ(head_range(done->layers(1), 0).size(), 0);
  // A broken file: heads not whole GQA groups; the error names layer and field.
  proto::Placement broken = *p;
  broken.mutable_layers(1)->mutable_heads(0)->set_end(1);
  broken.mutable_layers(1)->mutable_heads(1)->set_begin(1);
  Status st = validate_placement(broken, m, 4);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("layer 1: heads"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("GQA"), std::string::npos) << st.message();
  // Bad textproto: error names the file and line.
  const std::string bad_path = ::testing::TempDir() + "/placement_bad.textproto";
  std::ofstream(bad_path) << "world: 2\nstages { stage: 0 rank: x }\n";
  auto bad = load_placement_file(bad_path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos) << bad.status().message();
}

TEST(Planner, ValidateRejectsBrokenPlacements) {
  ShapeSpec s;
  s.n_expert = 8;
  const ModelShape m = make_shape(s);
  auto p = plan(m, 2, PolicyKind::kEp);
  ASSERT_TRUE(p.ok());
  struct Case {
    const char* expect;
    std::function<void(proto::Placement*)> edit;
  } cases[] = {
      {"world", [](proto::Placement* q) { q->set_world(3); }},
      {"layer 2: experts", [](proto::Placement* q) { q->mutable_layers(2)->mutable_experts(3)->set_expert(4); }},
      {"layer 0: experts: expert 0 has no owner",
       [](proto::Placement* q) { q->mutable_layers(0)->mutable_experts(0)->clear_rank(); }},
      {"rank 5", [](proto::Placement* q) { q->mutable_layers(0)->mutable_experts(0)->set_rank(0, 5); }},
      {"owned by no rank",
       [](proto::Placement* q) { q->mutable_output_vocab(1)->set_end(q->output_vocab(1).end() - 1); }},
      {"overlap", [](proto::Placement* q) { q->mutable_layers(1)->mutable_heads(1)->set_begin(0); }},
      {"listed twice", [](proto::Placement* q) { q->mutable_layers(1)->mutable_heads(1)->set_rank(0); }},
      {"stage 1", [](proto::Placement* q) { q->mutable_layers(1)->set_stage(1); }},
      {"in no stage", [](proto::Placement* q) { q->mutable_stages(0)->mutable_rank()->RemoveLast(); }},
  };
  for (const Case& c : cases) {
    proto::Placement q = *p;
    c.edit(&q);
    Status st = validate_placement(q, m, 2);
    EXPECT_FALSE(st.ok()) << c.expect;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << "want '" << c.expect << "' in: " << st.message();
  }
}

TEST(Planner, DeterministicForRandomRequests) {
  std::mt19937 rng(1234);
  int distinct_worlds = 0;
  std::set<int> worlds;
  for (int trial = 0; trial < 20; ++trial) {
    ShapeSpec s;
    s.n_layer = 1 + static_cast<int64_t>(rng() % 6);
    s.n_head_kv = 1 + static_cast<int64_t>(rng() % 4);
    s.n_head = s.n_head_kv * (1 + static_cast<int64_t>(rng() % 4));
    s.n_expert = (rng() % 2) ? 1 + static_cast<int64_t>(rng() % 16) : 0;
    s.n_ff = s.n_expert == 0 ? 32 * (1 + static_cast<int64_t>(rng() % 8)) : 0;
    s.head_dim = 32;
    const ModelShape m = make_shape(s);
    const int world = 1 + static_cast<int>(rng() % 6);
    worlds.insert(world);
    const PolicyKind pk = static_cast<PolicyKind>(rng() % 3);
    auto a = plan(m, world, pk, 2);
    auto b = plan(m, world, pk, 2);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(a->SerializeAsString(), b->SerializeAsString());
    check_invariants(*a, m, world, fmt::format("trial {}", trial));
  }
  distinct_worlds = static_cast<int>(worlds.size());
  EXPECT_GE(distinct_worlds, 3) << "random worlds degenerate";
}

}  // namespace
}  // namespace expertmesh::placement
