// The distributed engine gives the one-rank results under every placement (ARCHITECTURE.md §3
// invariant). Run under mpirun -np 2, 3, 4: rank 0 evaluates a seeded token sequence (a prompt
// in two batches, then single tokens) with a one-rank engine and again with the distributed
// engine of each policy (ep, pp, hybrid) on the golden tiny-qwen3moe and stories260K and on a
// synthetic model with a tied output head; the other ranks follow. The distributed engine is
// exact by construction (activations and per-slot expert outputs are gathered, never partial
// sums reduced), so every placement must give bit-identical logits, and hence identical greedy
// tokens. Each rank computes from its private weight store (worker/weight_store.h).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "comm/cluster.h"
#include "tests/common/golden.h"
#include "tests/mpi/test_models.h"
#include "tests/mpi/test_placements.h"
#include "worker/engine.h"
#include "worker/placement_plan.h"

namespace expertmesh {
namespace {

constexpr int64_t kPrompt = 40, kGen = 8;

std::vector<int32_t> seeded_tokens(int64_t n_vocab) {
  std::mt19937 rng(20260815);
  std::vector<int32_t> t(size_t(kPrompt + kGen));
  for (auto& x : t) x = int32_t(rng() % uint32_t(n_vocab));
  return t;
}

// All logits of the sequence: prompt rows in two batches, then one row per single-token step.
Status evaluate(worker::Engine& e, const std::vector<int32_t>& toks, std::vector<float>* out) {
  const int64_t nv = e.n_vocab();
  out->assign(size_t((kPrompt + kGen) * nv), 0.0f);
  e.clear();
  const int64_t half = kPrompt / 2;
  for (int64_t b0 : {int64_t{0}, half}) {
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < half; ++i) rows.push_back(i);
    EM_RETURN_IF_ERROR(e.decode(std::span(toks.data() + b0, size_t(half)), rows, out->data() + b0 * nv));
  }
  for (int64_t i = kPrompt; i < kPrompt + kGen; ++i) {
    const int64_t row[1] = {0};
    EM_RETURN_IF_ERROR(e.decode(std::span(toks.data() + i, 1), row, out->data() + i * nv));
  }
  return Status::Ok();
}

int argmax(const float* x, int64_t n) { return int(std::max_element(x, x + n) - x); }

// This rank's engine under a test placement of `policy`, on the cluster of its stage (which it
// keeps alive). `engine` is null after a failed expectation.
struct RankEngine {
  std::unique_ptr<comm::Cluster> cluster;
  std::unique_ptr<worker::Engine> engine;
};
RankEngine rank_engine(const RankContext& ctx, const Model& model, const char* policy,
                       const worker::EngineOptions& eo) {
  RankEngine re;
  const HParams& hp = model.hparams();
  const proto::Placement pl = testing::test_placement(hp, testing::test_stages(policy, ctx.world, hp.n_layer));
  auto plan = worker::rank_plan(pl, hp, ctx.rank);
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  if (!plan.ok()) return re;
  auto cluster = comm::Cluster::create(ctx, plan->stage_ranks);
  EXPECT_TRUE(cluster.ok()) << cluster.status().to_string();
  if (!cluster.ok()) return re;
  auto engine = worker::Engine::create(model, *plan, eo);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  if (!engine.ok()) return re;
  re.cluster = std::move(*cluster);
  re.engine = std::move(*engine);
  re.engine->set_cluster(re.cluster.get());
  return re;
}

class DistributedEngine : public ::testing::TestWithParam<const char*> {};

TEST_P(DistributedEngine, MatchesOneRankUnderEveryPolicy) {
  EM_REQUIRE_GOLDEN();
  auto ctx_or = RankContext::create(MPI_COMM_WORLD, LogLevel::kWarn);
  ASSERT_TRUE(ctx_or.ok());
  const RankContext& ctx = **ctx_or;
  // "synth:<arch>" is a small synthetic model each rank writes for itself (identical bytes).
  const std::string param = GetParam();
  const std::string path = param.starts_with("synth:")
                               ? testing::synth_model(testing::temp_dir("dist-engine"), param.substr(6), "m.gguf")
                               : (testing::golden_dir() / "models" / param).string();
  auto model = Model::load(path);
  ASSERT_TRUE(model.ok()) << model.status().to_string();  // same on every rank: no collective skipped
  const HParams& hp = (*model)->hparams();
  worker::EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = kPrompt + kGen;
  const std::vector<int32_t> toks = seeded_tokens(hp.n_vocab);
  std::vector<float> ref;
  if (ctx.is_root()) {
    auto one = worker::Engine::create(**model, worker::full_plan(hp), eo);
    ASSERT_TRUE(one.ok());
    Status s = evaluate(**one, toks, &ref);
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  for (const char* policy : {"ep", "pp", "hybrid"}) {
    SCOPED_TRACE(policy);
    RankEngine re = rank_engine(ctx, **model, policy, eo);
    ASSERT_TRUE(re.engine);
    worker::Engine* engine = re.engine.get();
    if (!ctx.is_root()) {
      Status s = engine->follow();
      EXPECT_TRUE(s.ok()) << s.to_string();
      continue;
    }
    std::vector<float> got;
    Status s = evaluate(*engine, toks, &got);
    EXPECT_TRUE(s.ok()) << s.to_string();
    Status f = engine->finish();
    EXPECT_TRUE(f.ok()) << f.to_string();
    ASSERT_EQ(got.size(), ref.size());
    const int64_t nv = hp.n_vocab;
    double max_rel = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      max_rel = std::max(max_rel, std::abs(double(got[i]) - ref[i]) / std::max(1.0, std::abs(double(ref[i]))));
    EXPECT_EQ(max_rel, 0.0) << "every placement must reproduce one rank's logits bit for bit";
    for (int64_t r = 0; r < kPrompt + kGen; ++r)
      EXPECT_EQ(argmax(got.data() + r * nv, nv), argmax(ref.data() + r * nv, nv)) << "row " << r;
    // Not degenerate: the reference logits vary across the vocabulary.
    EXPECT_NE(ref[0], ref[1]);
  }
}

// Serve's slots distributed: two sequences interleaved in shared batches on every placement give
// rank 0 each sequence's one-rank logits (the batch's seq ids reach every rank).
TEST_P(DistributedEngine, MultiSequenceBatchesMatchOneRank) {
  EM_REQUIRE_GOLDEN();
  auto ctx_or = RankContext::create(MPI_COMM_WORLD, LogLevel::kWarn);
  ASSERT_TRUE(ctx_or.ok());
  const RankContext& ctx = **ctx_or;
  const std::string param = GetParam();
  if (param.starts_with("synth:")) GTEST_SKIP() << "covered by the golden models";
  auto model = Model::load((testing::golden_dir() / "models" / param).string());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const HParams& hp = (*model)->hparams();
  worker::EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = kPrompt + kGen;
  const std::vector<int32_t> a = seeded_tokens(hp.n_vocab);
  const std::vector<int32_t> b(a.rbegin(), a.rend());
  std::vector<float> ref_a, ref_b;
  if (ctx.is_root()) {
    auto one = worker::Engine::create(**model, worker::full_plan(hp), eo);
    ASSERT_TRUE(one.ok());
    ASSERT_TRUE(evaluate(**one, a, &ref_a).ok());
    ASSERT_TRUE(evaluate(**one, b, &ref_b).ok());
  }
  eo.n_seq = 2;
  for (const char* policy : {"ep", "pp"}) {
    SCOPED_TRACE(policy);
    RankEngine re = rank_engine(ctx, **model, policy, eo);
    ASSERT_TRUE(re.engine);
    worker::Engine* engine = re.engine.get();
    if (!ctx.is_root()) {
      Status s = engine->follow();
      EXPECT_TRUE(s.ok()) << s.to_string();
      continue;
    }
    // Sequence 0 advances 3 rows per batch, sequence 1 (from step 2 on) 5 rows.
    const int64_t nv = hp.n_vocab, n = kPrompt + kGen;
    std::vector<float> got_a(size_t(n * nv)), got_b(size_t(n * nv));
    int64_t da = 0, db = 0;
    for (int step = 0; da < n || db < n; ++step) {
      std::vector<int32_t> tok, pos, seq;
      for (int64_t i = 0; i < 3 && da < n; ++i, ++da)
        tok.push_back(a[size_t(da)]), pos.push_back(int32_t(da)), seq.push_back(0);
      for (int64_t i = 0; step >= 2 && i < 5 && db < n; ++i, ++db)
        tok.push_back(b[size_t(db)]), pos.push_back(int32_t(db)), seq.push_back(1);
      std::vector<int64_t> rows(tok.size());
      for (size_t i = 0; i < rows.size(); ++i) rows[i] = int64_t(i);
      std::vector<float> lg(rows.size() * size_t(nv));
      Status s = engine->decode_batch(tok, pos, seq, rows, lg.data());
      ASSERT_TRUE(s.ok()) << s.to_string();
      for (size_t i = 0; i < tok.size(); ++i)
        std::copy_n(lg.data() + i * size_t(nv), nv, (seq[i] == 0 ? got_a : got_b).data() + pos[i] * nv);
    }
    EXPECT_TRUE(engine->finish().ok());
    EXPECT_EQ(got_a, ref_a);
    EXPECT_EQ(got_b, ref_b);
  }
}

// llama-tied: the output head is token_embd, held whole by the first stage and by vocabulary
// rows on a later last stage (the rank-local weight store's tied path).
INSTANTIATE_TEST_SUITE_P(Golden, DistributedEngine,
                         ::testing::Values("tiny-qwen3moe-bf16.gguf", "stories260K-f32.gguf", "synth:llama-tied"));

}  // namespace
}  // namespace expertmesh
