// A rank's private weight store (worker/weight_store.h) and the planner's byte report against it:
//   - rows_needed() of every rank under ep / pp / hybrid partitions the split tensors (experts,
//     heads, output rows, vocabulary rows) and replicates only norms, routers and the embedding;
//   - the planner's TensorLocation bytes are exactly the bytes the runtime holds, per tensor and
//     rank (attn_output and ffn_down by output rows, as the runtime splits them);
//   - an engine reading its weights into private memory computes bit-identical logits to one
//     computing from the file mapping, and the store is resident exactly;
//   - a file truncated after it was opened fails the read with the tensor it ends in.
#include "worker/weight_store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "coordinator/placement/planner.h"
#include "model/gguf/gguf.h"
#include "model/synth.h"
#include "tests/common/golden.h"
#include "tests/mpi/test_models.h"
#include "tests/mpi/test_placements.h"
#include "worker/engine.h"
#include "worker/placement_plan.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;
using testing::synth_model;

std::map<std::string, int64_t> bytes_by_tensor(const std::vector<worker::TensorRows>& needs) {
  std::map<std::string, int64_t> out;
  for (const worker::TensorRows& t : needs) out[t.w->name] += t.bytes();
  return out;
}

bool replicated(const std::string& name, bool first_stage) {
  return name.find("norm") != std::string::npos || name.find("ffn_gate_inp") != std::string::npos ||
         (name == "token_embd.weight" && first_stage);
}

class RowsNeeded : public ::testing::TestWithParam<const char*> {};

TEST_P(RowsNeeded, RanksPartitionTheSplitTensors) {
  const fs::path dir = testing::temp_dir("weight-store-rows");
  auto model = Model::load(synth_model(dir, GetParam(), "m.gguf"));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const HParams& hp = (*model)->hparams();
  const ModelWeights& w = (*model)->weights();
  EXPECT_EQ((*model)->file().find_tensor("output.weight") == nullptr, std::string(GetParam()).ends_with("-tied"));
  {
    const auto full = worker::rows_needed(hp, w, worker::full_plan(hp));
    EXPECT_TRUE(worker::needs_whole_model(w, full));
  }
  for (const char* policy : {"ep", "pp", "hybrid"})
    for (int world : {2, 3, 4}) {
      SCOPED_TRACE(fmt::format("{} np {}", policy, world));
      const auto stages = testing::test_stages(policy, world, hp.n_layer);
      const proto::Placement pl = testing::test_placement(hp, stages);
      std::map<std::string, int64_t> sum;
      std::map<std::string, int> copies;  // ranks holding the whole of a replicated tensor
      for (int r = 0; r < world; ++r) {
        auto plan = worker::rank_plan(pl, hp, r);
        ASSERT_TRUE(plan.ok()) << plan.status().to_string();
        const auto needs = worker::rows_needed(hp, w, *plan);
        EXPECT_FALSE(worker::needs_whole_model(w, needs));
        for (const worker::TensorRows& t : needs) {
          for (size_t i = 0; i < t.rows.size(); ++i) {  // ascending, disjoint, inside the tensor
            EXPECT_LT(t.rows[i].begin, t.rows[i].end);
            if (i > 0) {
              EXPECT_LT(t.rows[i - 1].end, t.rows[i].begin);
            }
          }
          EXPECT_LE(t.rows.back().end, t.w->n_rows());
          if (replicated(t.w->name, plan->embed)) {
            EXPECT_EQ(t.bytes(), t.w->row_bytes * t.w->n_rows()) << t.w->name;
            ++copies[t.w->name];
          } else {
            sum[t.w->name] += t.bytes();
          }
        }
      }
      // Every split tensor is held exactly once over the ranks; replicated ones by every rank
      // of their stage. A tied head (token_embd) is whole on the first stage and split by
      // vocabulary rows over a later last stage.
      for (const gguf::TensorInfo& ti : (*model)->file().tensors()) {
        if (ti.name == "token_embd.weight" && !(*model)->file().find_tensor("output.weight")) {
          EXPECT_GE(copies[ti.name], 1);
          if (stages.size() > 1) {
            EXPECT_EQ(sum[ti.name], ti.nbytes) << "tied head rows over the last stage";
          }
          continue;
        }
        if (copies.count(ti.name)) {
          EXPECT_EQ(sum.count(ti.name), 0u) << ti.name;
          EXPECT_GE(copies[ti.name], 1) << ti.name;
          continue;
        }
        EXPECT_EQ(sum[ti.name], ti.nbytes) << ti.name << " is not partitioned over the ranks";
      }
    }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, RowsNeeded, ::testing::Values("qwen3moe", "llama", "llama-tied"), [](const auto& info) {
  std::string n = info.param;
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
});

// The planner's TensorLocation bytes (what `expertmesh plan` reports) equal what the runtime holds.
TEST_P(RowsNeeded, PlannerBytesAreWhatTheRuntimeHolds) {
  const fs::path dir = testing::temp_dir("weight-store-planner");
  auto model = Model::load(synth_model(dir, GetParam(), "m.gguf"));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const HParams& hp = (*model)->hparams();
  auto shape = placement::model_shape((*model)->file());
  ASSERT_TRUE(shape.ok()) << shape.status().to_string();
  for (placement::PolicyKind pk :
       {placement::PolicyKind::kEp, placement::PolicyKind::kPp, placement::PolicyKind::kHybrid})
    for (int world : {2, 3, 4}) {
      SCOPED_TRACE(fmt::format("{} np {}", placement::policy_kind_name(pk), world));
      placement::PlacementRequest req;
      req.model = &*shape;
      req.policy = pk;
      for (int r = 0; r < world; ++r) req.ranks.push_back({.rank = r, .host = r < (world + 1) / 2 ? "a" : "b"});
      auto pl = placement::make_placement(req);
      ASSERT_TRUE(pl.ok()) << pl.status().to_string();
      for (int r = 0; r < world; ++r) {
        auto plan = worker::rank_plan(*pl, hp, r);
        ASSERT_TRUE(plan.ok()) << plan.status().to_string();
        const auto held = bytes_by_tensor(worker::rows_needed(hp, (*model)->weights(), *plan));
        std::map<std::string, int64_t> planned;
        for (const auto& l : pl->layers())
          for (const auto& t : l.tensors())
            if (t.rank() == r) planned[t.name()] += t.bytes();
        for (const auto& t : pl->global_tensors())
          if (t.rank() == r) planned[t.name()] += t.bytes();
        EXPECT_EQ(planned, held) << "rank " << r;
      }
    }
  fs::remove_all(dir);
}

// Logits of a seeded token sequence (prompt, then single tokens).
std::vector<float> logits_of(worker::Engine& e, int64_t n_vocab) {
  std::mt19937 rng(7);
  std::vector<int32_t> toks(12);
  for (int32_t& t : toks) t = int32_t(rng() % uint32_t(n_vocab));
  std::vector<float> out(toks.size() * size_t(n_vocab));
  std::vector<int64_t> rows = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_TRUE(e.decode(std::span(toks.data(), 8), rows, out.data()).ok());
  for (size_t i = 8; i < toks.size(); ++i) {
    const int64_t row[1] = {0};
    EXPECT_TRUE(e.decode(std::span(toks.data() + i, 1), row, out.data() + i * size_t(n_vocab)).ok());
  }
  return out;
}

TEST_P(RowsNeeded, PrivateCopyComputesWhatTheMappingComputes) {
  const fs::path dir = testing::temp_dir("weight-store-exact");
  // A split model: the store reads from every shard.
  auto model = Model::load(synth_model(dir, GetParam(), "m.gguf", /*split=*/true));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  ASSERT_GT((*model)->file().n_splits(), 1);
  const HParams& hp = (*model)->hparams();
  worker::EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = 16;
  eo.weights = worker::WeightSource::kMap;
  auto mapped = worker::Engine::create(**model, worker::full_plan(hp), eo);
  ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
  EXPECT_EQ((*mapped)->weight_store(), nullptr);
  eo.weights = worker::WeightSource::kRead;
  auto copied = worker::Engine::create(**model, worker::full_plan(hp), eo);
  ASSERT_TRUE(copied.ok()) << copied.status().to_string();
  const worker::WeightStore* store = (*copied)->weight_store();
  ASSERT_NE(store, nullptr);
  int64_t file_bytes = 0;
  for (const gguf::TensorInfo& t : (*model)->file().tensors()) file_bytes += t.nbytes;
  EXPECT_EQ(store->bytes(), file_bytes);
  // Every page written by the reads is resident (and nothing beyond the region's last page).
  EXPECT_GE(store->resident_bytes(), store->bytes());
  EXPECT_LT(store->resident_bytes(), store->bytes() + 64 * 4096);
  const std::vector<float> a = logits_of(**mapped, hp.n_vocab), b = logits_of(**copied, hp.n_vocab);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "logits differ";
  fs::remove_all(dir);
}

TEST(WeightStore, TruncatedFileNamesTheTensorItEndsIn) {
  const fs::path dir = testing::temp_dir("weight-store-trunc");
  const std::string path = synth_model(dir, "qwen3moe", "m.gguf");
  auto model = Model::load(path);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const gguf::File& f = (*model)->file();
  const gguf::TensorInfo* t = f.find_tensor("blk.1.ffn_up_exps.weight");
  ASSERT_NE(t, nullptr);
  // Cut the file in the middle of that tensor after the header was parsed (a file replaced or
  // cut while a job starts); the store never touches the stale mapping, so no SIGBUS.
  fs::resize_file(path, f.data_offset(0) + t->offset + uint64_t(t->nbytes / 2));
  const HParams& hp = (*model)->hparams();
  worker::EngineOptions eo;
  eo.n_ctx = 16;
  eo.weights = worker::WeightSource::kRead;
  auto e = worker::Engine::create(**model, worker::full_plan(hp), eo);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("tensor 'blk.1.ffn_up_exps.weight'"), std::string::npos)
      << e.status().to_string();
  EXPECT_NE(e.status().message().find("truncated"), std::string::npos) << e.status().to_string();
  EXPECT_NE(e.status().message().find(path), std::string::npos) << e.status().to_string();
  // A rank of a 2-rank ep job that owns a slab of it reads it by default (kAuto) and fails alike.
  const proto::Placement pl = testing::test_placement(hp, testing::test_stages("ep", 2, hp.n_layer));
  auto plan = worker::rank_plan(pl, hp, 1);
  ASSERT_TRUE(plan.ok());
  eo.weights = worker::WeightSource::kAuto;
  auto e1 = worker::Engine::create(**model, *plan, eo);
  ASSERT_FALSE(e1.ok());
  EXPECT_NE(e1.status().message().find("blk.1.ffn_up_exps.weight"), std::string::npos) << e1.status().to_string();
  fs::remove_all(dir);
}

TEST(WeightStore, WeightHoldsOnlyItsBlocks) {
  Weight w;
  w.ne[0] = 4, w.ne[1] = 10;
  w.row_bytes = 16;
  std::vector<uint8_t> a(3 * 16), b(2 * 16);
  w.blocks = {{2, 5, a.data()}, {7, 9, b.data()}};
  EXPECT_TRUE(w.holds(2, 3));
  EXPECT_TRUE(w.holds(7, 2));
  EXPECT_FALSE(w.holds(4, 2));  // crosses into a row not held
  EXPECT_FALSE(w.holds(5, 1));
  EXPECT_FALSE(w.holds(0, 1));
  EXPECT_EQ(w.row(3), a.data() + 16);
  EXPECT_EQ(w.row(8), b.data() + 16);
  EXPECT_EQ(w.row(6), nullptr);
  EXPECT_EQ(w.row(9), nullptr);
}

}  // namespace
}  // namespace expertmesh
