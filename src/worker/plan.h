// The plain-data plan a rank executes (ARCHITECTURE.md §3): which layers it runs, which query
// heads (with their KV heads), dense-FFN rows and routed experts it owns in each, whether it
// embeds and which vocabulary rows of the output head it computes, and where its pipeline stage
// sits. Layer steps take their LayerPlan as a parameter; a step with a partial plan produces
// partial results that the engine's hooks combine across the stage (MPI in the distributed
// runtime, nothing on one rank). full_plan() is the one-rank plan; rank_plan() in
// worker/placement_plan.h derives a rank's plan from a proto::Placement.
#pragma once

#include <cstdint>
#include <vector>

#include "model/hparams.h"

namespace expertmesh::worker {

// A half-open index range [begin, end).
struct Span {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Span&) const = default;
};

struct LayerPlan {
  int64_t layer = 0;
  // Query heads [begin, end); whole GQA groups; may be empty (the rank adds a zero partial sum).
  int64_t head_begin = 0, head_end = 0;
  // Dense FFN intermediate rows [begin, end) (rows of ffn_up/ffn_gate; ffn_down is split by its
  // output rows, ffn_out below); may be empty. Ignored by MoE layers.
  int64_t ffn_begin = 0, ffn_end = 0;
  // Routed experts this rank computes (it is their primary owner), ascending (MoE layers).
  std::vector<int32_t> experts;
  // Index within the stage (0 .. stage size-1) of the rank computing each expert, n_expert
  // entries; empty on one rank (everything is local). Every rank of the stage knows the full
  // map, so the exchange of per-slot expert outputs needs no count messages.
  std::vector<int32_t> expert_owner;
  // Exact tensor parallelism over a stage of several ranks (all empty on a one-rank stage):
  // every rank's query heads and FFN rows by stage index, and the output rows (of n_embd) of
  // attn_output (ffn_down) each rank computes and holds: an even split over the stage's ranks
  // that own heads (FFN rows), worker::out_rows_by_stage. The attention (FFN) activations of
  // all heads (rows) are gathered, so each output row is one whole dot product, as on one rank.
  std::vector<Span> stage_heads, stage_ffn, stage_attn_out, stage_ffn_out;
  Span attn_out, ffn_out;  // this rank's entries of stage_attn_out / stage_ffn_out
  int64_t kv_head_begin(int64_t n_gqa) const { return head_begin / n_gqa; }
  int64_t kv_head_end(int64_t n_gqa) const { return (head_end + n_gqa - 1) / n_gqa; }
  int64_t n_heads() const { return head_end - head_begin; }
};

// One rank's share of the output head: vocabulary rows [begin, end) computed by world rank `rank`.
struct VocabShare {
  int rank = 0;
  int64_t begin = 0, end = 0;
};

struct RankPlan {
  std::vector<LayerPlan> layers;           // in execution order (the layers of this rank's stage)
  bool embed = true;                       // first stage: looks up token_embd
  bool output = true;                      // last stage: output norm + its vocabulary rows
  int64_t vocab_begin = 0, vocab_end = 0;  // output-head rows this rank computes (may be empty)

  // Pipeline position. stage_ranks are world ranks in stage order; the first one receives the
  // hidden states from the previous stage's first rank and sends them to the next stage's.
  int stage = 0;
  int n_stages = 1;
  std::vector<int> stage_ranks = {0};
  int prev_stage_root = -1;  // world rank, -1 for the first stage
  int next_stage_root = -1;  // world rank, -1 for the last stage
  // Every last-stage rank's vocabulary rows, ascending by rank (rank 0 gathers the logits).
  std::vector<VocabShare> vocab_shares;
  int world = 1;
};

inline RankPlan full_plan(const HParams& hp) {
  RankPlan p;
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    LayerPlan lp;
    lp.layer = il;
    lp.head_begin = 0;
    lp.head_end = hp.n_head;
    lp.ffn_begin = 0;
    lp.ffn_end = hp.n_ff;
    for (int32_t e = 0; e < hp.n_expert; ++e) lp.experts.push_back(e);
    p.layers.push_back(std::move(lp));
  }
  p.vocab_begin = 0;
  p.vocab_end = hp.n_vocab;
  p.vocab_shares = {VocabShare{0, 0, hp.n_vocab}};
  return p;
}

}  // namespace expertmesh::worker
