// placement -> RankPlan: what one rank executes under a proto::Placement (the contract with the
// planner, src/comm/proto/cluster.proto and src/coordinator/placement/planner.h). A pure
// function: no MPI, no tensor data; every rank derives its own plan from the identical Placement.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/proto/cluster.pb.h"
#include "common/status.h"
#include "model/hparams.h"
#include "worker/plan.h"

namespace expertmesh::worker {

// Output rows (of n_embd) of attn_output (ffn_down) that each rank of a pipeline stage computes
// and holds, by stage index, given which ranks own heads (FFN rows): an even split over those
// ranks, in stage order, in whole groups of kOutRowAlign rows (the widest row interleave of a
// weight type) when n_embd is a multiple of it, else of single rows; empty for the others. So a
// unit pinned to one rank (-ot attn_=rank1) keeps its output projection there. Derived, not a
// field of the Placement; the planner's byte report uses this same function.
inline constexpr int64_t kOutRowAlign = 16;
std::vector<Span> out_rows_by_stage(int64_t n_embd, const std::vector<bool>& owns);

// The plan of `rank` under `p` for a model with hyper-parameters `hp`.
//
// Semantics (defaults for what a placement leaves empty):
//   - stages empty: one stage of ranks 0 .. world-1. Otherwise stage i lists its ranks; every
//     rank of the world is in exactly one stage, stages are numbered 0 .. S-1 in order.
//   - layers: exactly hp.n_layer entries in layer order; stages non-decreasing with the layer
//     and every stage computes at least one layer. A rank runs the layers of its stage.
//   - heads: ranges on ranks of the layer's stage, disjoint, covering [0, n_head), whole GQA
//     groups; a rank absent from the list (or with an empty range) owns no heads.
//     Empty list: the stage's first rank owns every head.
//   - ffn_rows (dense layers): the same over [0, n_ff); empty list: the first rank owns all.
//   - experts (MoE layers): every expert 0 .. n_expert-1 listed once, owners on the layer's
//     stage; the first owner computes it (replicas are never used, so results do not depend on
//     them). Empty list: the first rank of the stage owns every expert.
//   - attn_output / ffn_down on a stage of several ranks: out_rows_by_stage over the ranks with
//     heads (FFN rows).
//   - output_vocab: ranges on last-stage ranks covering [0, n_vocab); empty list: the last
//     stage's first rank computes every row.
// Errors (InvalidArgument) name the field and layer, e.g. "placement: layer 2: heads: ...".
Result<RankPlan> rank_plan(const proto::Placement& p, const HParams& hp, int rank);

}  // namespace expertmesh::worker
