// The plain-data plan a rank executes (ARCHITECTURE.md §3): which layers it runs, which query
// heads (with their KV heads) and which routed experts it owns in each, and whether it embeds
// and computes the output head. Layer steps take their LayerPlan as a parameter; a step with a
// partial plan produces partial sums that the engine's reduce hook combines (an MPI allreduce
// in the distributed runtime, a no-op on one rank). full_plan() is the one-rank plan.
#pragma once

#include <cstdint>
#include <vector>

#include "model/hparams.h"

namespace expertmesh::worker {

struct LayerPlan {
  int64_t layer = 0;
  int64_t head_begin = 0, head_end = 0;  // query heads [begin, end); must cover whole GQA groups
  std::vector<int32_t> experts;          // routed experts this rank computes (MoE layers)
  bool dense_ffn = true;                 // this rank computes the dense FFN (split later: tp)
  int64_t kv_head_begin(int64_t n_gqa) const { return head_begin / n_gqa; }
  int64_t kv_head_end(int64_t n_gqa) const { return (head_end + n_gqa - 1) / n_gqa; }
};

struct RankPlan {
  std::vector<LayerPlan> layers;  // in execution order
  bool embed = true;
  bool output = true;
};

inline RankPlan full_plan(const HParams& hp) {
  RankPlan p;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    LayerPlan lp;
    lp.layer = il;
    lp.head_begin = 0;
    lp.head_end = hp.n_head;
    for (int32_t e = 0; e < hp.n_expert; ++e) lp.experts.push_back(e);
    p.layers.push_back(std::move(lp));
  }
  return p;
}

}  // namespace expertmesh::worker
