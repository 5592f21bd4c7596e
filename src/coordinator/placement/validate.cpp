// validate_placement and the runtime's queries on a Placement.
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "coordinator/placement/internal.h"
#include "coordinator/placement/planner.h"

namespace expertmesh::placement {

namespace {

using RangeList = google::protobuf::RepeatedPtrField<proto::RankRange>;

// Ranges disjoint, covering [0, total), on ranks of `stage_ranks`, each rank once, boundaries
// multiples of `align` (or total). `what` names the field in errors ("layer 3: heads").
Status check_ranges(const RangeList& rr, int64_t total, int64_t align, const std::set<int>& stage_ranks,
                    const std::string& what, const char* unit_name) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  std::set<int> seen;
  for (const proto::RankRange& r : rr) {
    if (!stage_ranks.count(r.rank()))
      return Status::InvalidArgument(fmt::format("{}: rank {} is not a rank of the layer's stage", what, r.rank()));
    if (!seen.insert(r.rank()).second)
      return Status::InvalidArgument(fmt::format("{}: rank {} is listed twice", what, r.rank()));
    if (r.begin() < 0 || r.end() < r.begin() || r.end() > total)
      return Status::InvalidArgument(
          fmt::format("{}: rank {} [{}, {}) is outside [0, {})", what, r.rank(), r.begin(), r.end(), total));
    for (int64_t b : {r.begin(), r.end()})
      if (b % align != 0 && b != total)
        return Status::InvalidArgument(fmt::format("{}: rank {} [{}, {}) does not start and end on a multiple of {} {}",
                                                   what, r.rank(), r.begin(), r.end(), align, unit_name));
    if (r.end() > r.begin()) spans.emplace_back(r.begin(), r.end());
  }
  std::sort(spans.begin(), spans.end());
  int64_t at = 0;
  for (const auto& [b, e] : spans) {
    if (b < at) return Status::InvalidArgument(fmt::format("{}: ranges overlap at {}", what, b));
    if (b > at) return Status::InvalidArgument(fmt::format("{}: [{}, {}) is owned by no rank", what, at, b));
    at = e;
  }
  if (at != total) return Status::InvalidArgument(fmt::format("{}: [{}, {}) is owned by no rank", what, at, total));
  return Status::Ok();
}

Status check_experts(const proto::LayerPlacement& l, int64_t n_expert, const std::set<int>& stage_ranks) {
  const std::string what = fmt::format("layer {}: experts", l.layer());
  if (l.experts_size() != n_expert)
    return Status::InvalidArgument(
        fmt::format("{}: {} entries, the layer has {} routed experts", what, l.experts_size(), n_expert));
  std::vector<bool> seen(static_cast<size_t>(n_expert), false);
  for (const proto::ExpertOwners& e : l.experts()) {
    if (e.expert() < 0 || e.expert() >= n_expert || seen[static_cast<size_t>(e.expert())])
      return Status::InvalidArgument(
          fmt::format("{}: expert {} is outside 0..{} or listed twice", what, e.expert(), n_expert - 1));
    seen[static_cast<size_t>(e.expert())] = true;
    if (e.rank_size() == 0) return Status::InvalidArgument(fmt::format("{}: expert {} has no owner", what, e.expert()));
    std::set<int> owners;
    for (int r : e.rank()) {
      if (!stage_ranks.count(r))
        return Status::InvalidArgument(
            fmt::format("{}: expert {}: rank {} is not a rank of the layer's stage", what, e.expert(), r));
      if (!owners.insert(r).second)
        return Status::InvalidArgument(fmt::format("{}: expert {}: rank {} is listed twice", what, e.expert(), r));
    }
  }
  return Status::Ok();
}

// Stages: numbered 0.., non-empty, every rank of [0, world) in exactly one. Fills `stages`.
Status check_stages(const proto::Placement& p, int world, std::vector<std::set<int>>* stages) {
  if (p.stages_size() == 0) {
    stages->emplace_back();
    for (int r = 0; r < world; ++r) stages->back().insert(r);
    return Status::Ok();
  }
  std::vector<int> stage_of(static_cast<size_t>(world), -1);
  for (int s = 0; s < p.stages_size(); ++s) {
    const proto::Stage& st = p.stages(s);
    if (st.stage() != s)
      return Status::InvalidArgument(fmt::format("stages[{}]: stage is {}, expected {}", s, st.stage(), s));
    if (st.rank_size() == 0) return Status::InvalidArgument(fmt::format("stage {}: no ranks", s));
    stages->emplace_back();
    for (int r : st.rank()) {
      if (r < 0 || r >= world)
        return Status::InvalidArgument(fmt::format("stage {}: rank {} is outside 0..{}", s, r, world - 1));
      if (stage_of[static_cast<size_t>(r)] >= 0)
        return Status::InvalidArgument(
            fmt::format("stage {}: rank {} is already in stage {}", s, r, stage_of[static_cast<size_t>(r)]));
      stage_of[static_cast<size_t>(r)] = s;
      stages->back().insert(r);
    }
  }
  for (int r = 0; r < world; ++r)
    if (stage_of[static_cast<size_t>(r)] < 0)
      return Status::InvalidArgument(fmt::format("stages: rank {} is in no stage", r));
  return Status::Ok();
}

}  // namespace

Status validate_placement(const proto::Placement& p, const ModelShape& m, int world) {
  if (world < 1) return Status::InvalidArgument(fmt::format("placement: world {} < 1", world));
  if (p.world() != world)
    return Status::InvalidArgument(fmt::format("placement: made for world {}, the job has {} ranks", p.world(), world));
  std::vector<std::set<int>> stages;
  EM_RETURN_IF_ERROR(check_stages(p, world, &stages));
  if (p.layers_size() != m.n_layer)
    return Status::InvalidArgument(fmt::format("placement: {} layers, the model has {}", p.layers_size(), m.n_layer));
  int prev = 0;
  for (int il = 0; il < m.n_layer; ++il) {
    const proto::LayerPlacement& l = p.layers(il);
    const LayerShape& ls = m.layers[static_cast<size_t>(il)];
    const std::string at = fmt::format("layer {}", il);
    if (l.layer() != il)
      return Status::InvalidArgument(fmt::format("layers[{}]: layer is {}, expected {}", il, l.layer(), il));
    if (l.stage() < 0 || l.stage() >= static_cast<int>(stages.size()))
      return Status::InvalidArgument(fmt::format("{}: stage {} outside 0..{}", at, l.stage(), stages.size() - 1));
    if ((il == 0 && l.stage() != 0) || (il > 0 && l.stage() != prev && l.stage() != prev + 1))
      return Status::InvalidArgument(
          fmt::format("{}: stage {} after stage {}: stages must hold contiguous layers in order, starting with stage 0",
                      at, l.stage(), prev));
    prev = l.stage();
    const std::set<int>& sr = stages[static_cast<size_t>(l.stage())];
    if (ls.head_align > m.n_gqa())
      EM_RETURN_IF_ERROR(
          check_ranges(l.heads(), m.n_head, ls.head_align, sr, at + ": heads",
                       "query heads (whole GQA groups whose attn_q/k/v row slices are whole interleave groups)"));
    else
      EM_RETURN_IF_ERROR(
          check_ranges(l.heads(), m.n_head, ls.head_align, sr, at + ": heads", "query heads (whole GQA groups)"));
    if (ls.n_ff > 0) {
      EM_RETURN_IF_ERROR(check_ranges(l.ffn_rows(), ls.n_ff, ls.ffn_row_align, sr, at + ": ffn_rows",
                                      "rows (ffn_up/ffn_gate row slices of whole interleave groups)"));
    } else if (l.ffn_rows_size() > 0) {
      return Status::InvalidArgument(fmt::format("{}: ffn_rows given, but the layer has no dense or shared FFN", at));
    }
    if (ls.n_expert > 0 || l.experts_size() > 0) EM_RETURN_IF_ERROR(check_experts(l, ls.n_expert, sr));
    for (const proto::TensorLocation& t : l.tensors())
      if (t.rank() < 0 || t.rank() >= world)
        return Status::InvalidArgument(
            fmt::format("{}: tensor '{}': rank {} outside 0..{}", at, t.name(), t.rank(), world - 1));
  }
  if (prev != static_cast<int>(stages.size()) - 1)
    return Status::InvalidArgument(fmt::format("placement: stage {} computes no layer", prev + 1));
  EM_RETURN_IF_ERROR(check_ranges(p.output_vocab(), m.n_vocab, m.vocab_align, stages.back(), "output_vocab",
                                  "vocabulary rows (interleaved row groups)"));
  for (const proto::TensorLocation& t : p.global_tensors())
    if (t.rank() < 0 || t.rank() >= world)
      return Status::InvalidArgument(
          fmt::format("global_tensors: '{}': rank {} outside 0..{}", t.name(), t.rank(), world - 1));
  return Status::Ok();
}

int n_stages(const proto::Placement& p) { return std::max(1, p.stages_size()); }

int stage_of_rank(const proto::Placement& p, int rank) {
  if (p.stages_size() == 0) return rank >= 0 && rank < p.world() ? 0 : -1;
  for (const proto::Stage& s : p.stages())
    if (std::find(s.rank().begin(), s.rank().end(), rank) != s.rank().end()) return s.stage();
  return -1;
}

std::vector<int> stage_ranks(const proto::Placement& p, int stage) {
  std::vector<int> out;
  if (p.stages_size() == 0) {
    for (int r = 0; r < p.world(); ++r) out.push_back(r);
  } else if (stage >= 0 && stage < p.stages_size()) {
    out.assign(p.stages(stage).rank().begin(), p.stages(stage).rank().end());
  }
  return out;
}

namespace {
Range find_range(const RangeList& rr, int rank) {
  for (const proto::RankRange& r : rr)
    if (r.rank() == rank) return Range{r.begin(), r.end()};
  return Range{};
}
}  // namespace

Range head_range(const proto::LayerPlacement& l, int rank) { return find_range(l.heads(), rank); }
Range ffn_range(const proto::LayerPlacement& l, int rank) { return find_range(l.ffn_rows(), rank); }
Range vocab_range(const proto::Placement& p, int rank) { return find_range(p.output_vocab(), rank); }

std::vector<int> primary_experts(const proto::LayerPlacement& l, int rank) {
  std::vector<int> out;
  for (const proto::ExpertOwners& e : l.experts())
    if (e.rank_size() > 0 && e.rank(0) == rank) out.push_back(e.expert());
  std::sort(out.begin(), out.end());
  return out;
}

int64_t rank_bytes(const proto::Placement& p, int rank) {
  int64_t b = 0;
  for (const auto& l : p.layers())
    for (const auto& t : l.tensors())
      if (t.rank() == rank) b += t.bytes();
  for (const auto& t : p.global_tensors())
    if (t.rank() == rank) b += t.bytes();
  return b;
}

}  // namespace expertmesh::placement
