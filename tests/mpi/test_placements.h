// Hand-made placements for the distributed-runtime tests, independent of the planner: layers
// dealt to stages in contiguous blocks, heads (whole GQA groups), FFN rows and the vocabulary
// split evenly inside a stage, routed experts dealt round-robin (so owners are interleaved).
#pragma once

#include <vector>

#include "comm/proto/cluster.pb.h"
#include "model/hparams.h"

namespace expertmesh::testing {

// stages[s] = the world ranks of stage s, in stage order. The world is the total rank count.
inline proto::Placement test_placement(const HParams& hp, const std::vector<std::vector<int>>& stages) {
  proto::Placement p;
  int world = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    proto::Stage* st = p.add_stages();
    st->set_stage(int(s));
    for (int r : stages[s]) st->add_rank(r);
    world += int(stages[s].size());
  }
  p.set_world(world);
  const int64_t n_stage = int64_t(stages.size());
  auto add_split = [](auto* list, const std::vector<int>& ranks, int64_t units, int64_t unit) {
    const int64_t k = int64_t(ranks.size());
    for (int64_t i = 0; i < k; ++i) {
      proto::RankRange* r = list->Add();
      r->set_rank(ranks[size_t(i)]);
      r->set_begin(i * units / k * unit);
      r->set_end((i + 1) * units / k * unit);
    }
  };
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    proto::LayerPlacement* l = p.add_layers();
    l->set_layer(int32_t(il));
    const int64_t s = il * n_stage / hp.n_layer;
    l->set_stage(int32_t(s));
    const std::vector<int>& ranks = stages[size_t(s)];
    add_split(l->mutable_heads(), ranks, hp.n_head_kv, hp.n_gqa());
    if (!hp.is_moe()) add_split(l->mutable_ffn_rows(), ranks, hp.n_ff, 1);
    for (int64_t e = 0; e < hp.n_expert; ++e) {
      proto::ExpertOwners* o = l->add_experts();
      o->set_expert(int32_t(e));
      o->add_rank(ranks[size_t(e) % ranks.size()]);
    }
  }
  add_split(p.mutable_output_vocab(), stages.back(), hp.n_vocab, 1);
  return p;
}

// Policies by name for `world` ranks: "ep" one stage; "pp" one rank per stage (at most n_layer
// stages, the rest of the ranks join the last); "hybrid" two stages of half the ranks each.
inline std::vector<std::vector<int>> test_stages(const std::string& policy, int world, int64_t n_layer) {
  std::vector<std::vector<int>> st;
  if (policy == "ep") {
    st.emplace_back();
    for (int r = 0; r < world; ++r) st.back().push_back(r);
  } else if (policy == "pp") {
    for (int r = 0; r < world; ++r) {
      if (int64_t(st.size()) < n_layer) st.emplace_back();
      st.back().push_back(r);
    }
  } else {  // hybrid
    const int h = (world + 1) / 2;
    st.resize(world > 1 ? 2 : 1);
    for (int r = 0; r < world; ++r) st[size_t(r < h ? 0 : 1)].push_back(r);
  }
  return st;
}

}  // namespace expertmesh::testing
