#include "worker/placement_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace expertmesh::worker {
namespace {

struct Range {
  int64_t begin = 0, end = 0;
};

// Checks a list of per-rank ranges: ranks belong to `stage_ranks`, appear at most once, ranges
// are aligned to `align` (or end at `extent`), disjoint and cover [0, extent). Returns `rank`'s
// range (empty when absent). An empty list means "the stage's first rank owns everything".
Result<Range> check_ranges(const google::protobuf::RepeatedPtrField<proto::RankRange>& list,
                           const std::vector<int>& stage_ranks, int64_t extent, int64_t align, int rank,
                           const std::string& what) {
  if (list.empty()) return rank == stage_ranks.front() ? Range{0, extent} : Range{};
  std::set<int> seen;
  std::vector<Range> nonempty;
  Range mine;
  for (const proto::RankRange& r : list) {
    if (std::find(stage_ranks.begin(), stage_ranks.end(), r.rank()) == stage_ranks.end())
      return Status::InvalidArgument(fmt::format("placement: {}: rank {} is not in the stage", what, r.rank()));
    if (!seen.insert(r.rank()).second)
      return Status::InvalidArgument(fmt::format("placement: {}: rank {} listed twice", what, r.rank()));
    if (r.begin() < 0 || r.end() < r.begin() || r.end() > extent)
      return Status::InvalidArgument(fmt::format("placement: {}: rank {} range [{}, {}) outside [0, {})", what,
                                                 r.rank(), r.begin(), r.end(), extent));
    for (int64_t b : {r.begin(), r.end()})
      if (b % align != 0 && b != extent)
        return Status::InvalidArgument(fmt::format("placement: {}: rank {} range [{}, {}) is not aligned to {}", what,
                                                   r.rank(), r.begin(), r.end(), align));
    if (r.end() > r.begin()) nonempty.push_back({r.begin(), r.end()});
    if (r.rank() == rank) mine = {r.begin(), r.end()};
  }
  std::sort(nonempty.begin(), nonempty.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  int64_t at = 0;
  for (const Range& r : nonempty) {
    if (r.begin != at)
      return Status::InvalidArgument(fmt::format("placement: {}: ranges {} at {} (must be disjoint and cover [0, {}))",
                                                 what, r.begin < at ? "overlap" : "leave a gap", at, extent));
    at = r.end;
  }
  if (at != extent)
    return Status::InvalidArgument(fmt::format("placement: {}: ranges cover [0, {}), not [0, {})", what, at, extent));
  return mine;
}

// The (validated) ranges of every rank of the stage, by stage index.
std::vector<Span> spans_by_stage(const google::protobuf::RepeatedPtrField<proto::RankRange>& list,
                                 const std::vector<int>& stage_ranks, int64_t extent) {
  std::vector<Span> out(stage_ranks.size());
  if (list.empty()) out[0] = {0, extent};
  for (const proto::RankRange& r : list)
    out[size_t(std::find(stage_ranks.begin(), stage_ranks.end(), r.rank()) - stage_ranks.begin())] = {r.begin(),
                                                                                                      r.end()};
  return out;
}

// Stages as lists of world ranks; every rank in exactly one.
Result<std::vector<std::vector<int>>> stages_of(const proto::Placement& p, int world) {
  std::vector<std::vector<int>> stages;
  if (p.stages().empty()) {
    stages.emplace_back();
    for (int r = 0; r < world; ++r) stages.back().push_back(r);
    return stages;
  }
  std::vector<int> stage_of(static_cast<size_t>(world), -1);
  for (int s = 0; s < p.stages_size(); ++s) {
    const proto::Stage& st = p.stages(s);
    if (st.stage() != s)
      return Status::InvalidArgument(fmt::format("placement: stages[{}] has stage {} (must be {})", s, st.stage(), s));
    if (st.rank().empty()) return Status::InvalidArgument(fmt::format("placement: stage {} has no ranks", s));
    for (int r : st.rank()) {
      if (r < 0 || r >= world)
        return Status::InvalidArgument(
            fmt::format("placement: stage {}: rank {} outside the world of {}", s, r, world));
      if (stage_of[size_t(r)] >= 0)
        return Status::InvalidArgument(
            fmt::format("placement: rank {} is in stages {} and {}", r, stage_of[size_t(r)], s));
      stage_of[size_t(r)] = s;
    }
    stages.emplace_back(st.rank().begin(), st.rank().end());
  }
  for (int r = 0; r < world; ++r)
    if (stage_of[size_t(r)] < 0) return Status::InvalidArgument(fmt::format("placement: rank {} is in no stage", r));
  return stages;
}

// Fills the MoE fields of `lp` from the layer's expert owners.
Status plan_experts(const proto::LayerPlacement& l, const HParams& hp, const std::vector<int>& ranks, int rank,
                    LayerPlan* lp) {
  auto index_in_stage = [&](int r) { return int32_t(std::find(ranks.begin(), ranks.end(), r) - ranks.begin()); };
  lp->expert_owner.assign(size_t(hp.n_expert), 0);
  if (!l.experts().empty()) {
    std::vector<bool> seen(size_t(hp.n_expert), false);
    for (const proto::ExpertOwners& eo : l.experts()) {
      const std::string what = fmt::format("layer {}: experts: expert {}", l.layer(), eo.expert());
      if (eo.expert() < 0 || eo.expert() >= hp.n_expert || seen[size_t(eo.expert())])
        return Status::InvalidArgument(fmt::format("placement: {}: out of range or listed twice", what));
      seen[size_t(eo.expert())] = true;
      if (eo.rank().empty()) return Status::InvalidArgument(fmt::format("placement: {}: no owner", what));
      for (int r : eo.rank())
        if (size_t(index_in_stage(r)) == ranks.size())
          return Status::InvalidArgument(fmt::format("placement: {}: rank {} is not in the stage", what, r));
      lp->expert_owner[size_t(eo.expert())] = index_in_stage(eo.rank(0));
    }
    for (int64_t e = 0; e < hp.n_expert; ++e)
      if (!seen[size_t(e)])
        return Status::InvalidArgument(
            fmt::format("placement: layer {}: experts: expert {} has no owner", l.layer(), e));
  }
  const int32_t me = index_in_stage(rank);
  for (int32_t e = 0; e < int32_t(hp.n_expert); ++e)
    if (lp->expert_owner[size_t(e)] == me) lp->experts.push_back(e);
  return Status::Ok();
}

}  // namespace

std::vector<Span> out_rows_by_stage(int64_t n_embd, const std::vector<bool>& owns) {
  const int64_t align = n_embd % kOutRowAlign == 0 ? kOutRowAlign : 1, units = n_embd / align;
  const int64_t k = std::count(owns.begin(), owns.end(), true);
  std::vector<Span> out(owns.size());
  int64_t i = 0;
  for (size_t r = 0; r < owns.size(); ++r)
    if (owns[r]) {
      out[r] = {i * units / k * align, (i + 1) * units / k * align};
      ++i;
    }
  return out;
}

Result<RankPlan> rank_plan(const proto::Placement& p, const HParams& hp, int rank) {
  const int world = p.world();
  if (world < 1) return Status::InvalidArgument(fmt::format("placement: world {} must be >= 1", world));
  if (rank < 0 || rank >= world)
    return Status::InvalidArgument(fmt::format("placement: made for {} ranks, this is rank {}", world, rank));
  EM_ASSIGN_OR_RETURN(auto stages, stages_of(p, world));
  const int n_stages = int(stages.size());
  if (p.layers_size() != hp.n_layer)
    return Status::InvalidArgument(fmt::format("placement: {} layers, the model has {}", p.layers_size(), hp.n_layer));
  RankPlan plan;
  plan.world = world;
  plan.n_stages = n_stages;
  for (int s = 0; s < n_stages; ++s)
    if (std::find(stages[size_t(s)].begin(), stages[size_t(s)].end(), rank) != stages[size_t(s)].end()) plan.stage = s;
  plan.stage_ranks = stages[size_t(plan.stage)];
  plan.prev_stage_root = plan.stage > 0 ? stages[size_t(plan.stage - 1)].front() : -1;
  plan.next_stage_root = plan.stage + 1 < n_stages ? stages[size_t(plan.stage + 1)].front() : -1;
  plan.embed = plan.stage == 0;
  plan.output = plan.stage == n_stages - 1;

  std::vector<int> layers_in_stage(size_t(n_stages), 0);
  int prev_stage = 0;
  for (int il = 0; il < p.layers_size(); ++il) {
    const proto::LayerPlacement& l = p.layers(il);
    if (l.layer() != il)
      return Status::InvalidArgument(fmt::format("placement: layers[{}] is layer {} (must be {})", il, l.layer(), il));
    if (l.stage() < prev_stage || l.stage() >= n_stages)
      return Status::InvalidArgument(
          fmt::format("placement: layer {}: stage {} (stages must be non-decreasing, < {})", il, l.stage(), n_stages));
    prev_stage = l.stage();
    ++layers_in_stage[size_t(l.stage())];
    const std::vector<int>& ranks = stages[size_t(l.stage())];
    // Validate every layer (not only this rank's) so all ranks accept or reject alike.
    EM_ASSIGN_OR_RETURN(
        Range heads, check_ranges(l.heads(), ranks, hp.n_head, hp.n_gqa(), rank, fmt::format("layer {}: heads", il)));
    Range ffn;
    if (!hp.is_moe() && hp.n_ff > 0) {
      EM_ASSIGN_OR_RETURN(ffn,
                          check_ranges(l.ffn_rows(), ranks, hp.n_ff, 1, rank, fmt::format("layer {}: ffn_rows", il)));
    }
    LayerPlan lp;
    lp.layer = il;
    lp.head_begin = heads.begin;
    lp.head_end = heads.end;
    lp.ffn_begin = ffn.begin;
    lp.ffn_end = ffn.end;
    if (hp.is_moe()) EM_RETURN_IF_ERROR(plan_experts(l, hp, ranks, rank, &lp));
    const auto me = std::find(ranks.begin(), ranks.end(), rank);
    if (ranks.size() > 1 && me != ranks.end()) {
      const size_t i = size_t(me - ranks.begin());
      auto owners = [](const std::vector<Span>& s) {
        std::vector<bool> o(s.size());
        for (size_t r = 0; r < s.size(); ++r) o[r] = s[r].size() > 0;
        return o;
      };
      lp.stage_heads = spans_by_stage(l.heads(), ranks, hp.n_head);
      lp.stage_attn_out = out_rows_by_stage(hp.n_embd, owners(lp.stage_heads));
      lp.attn_out = lp.stage_attn_out[i];
      if (!hp.is_moe() && hp.n_ff > 0) {
        lp.stage_ffn = spans_by_stage(l.ffn_rows(), ranks, hp.n_ff);
        lp.stage_ffn_out = out_rows_by_stage(hp.n_embd, owners(lp.stage_ffn));
        lp.ffn_out = lp.stage_ffn_out[i];
      }
    }
    if (l.stage() == plan.stage) plan.layers.push_back(std::move(lp));
  }
  for (int s = 0; s < n_stages; ++s)
    if (layers_in_stage[size_t(s)] == 0)
      return Status::InvalidArgument(fmt::format("placement: stage {} computes no layer", s));

  const std::vector<int>& last = stages.back();
  EM_ASSIGN_OR_RETURN(Range vocab, check_ranges(p.output_vocab(), last, hp.n_vocab, 1, rank, "output_vocab"));
  plan.vocab_begin = vocab.begin;
  plan.vocab_end = vocab.end;
  if (p.output_vocab().empty()) {
    plan.vocab_shares.push_back({last.front(), 0, hp.n_vocab});
  } else {
    for (const proto::RankRange& r : p.output_vocab())
      if (r.end() > r.begin()) plan.vocab_shares.push_back({r.rank(), r.begin(), r.end()});
    std::sort(plan.vocab_shares.begin(), plan.vocab_shares.end(),
              [](const VocabShare& a, const VocabShare& b) { return a.rank < b.rank; });
  }
  return plan;
}

}  // namespace expertmesh::worker
