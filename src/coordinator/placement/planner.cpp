// make_placement / complete_placement: stages, layer stages and the dealing of heads, FFN rows,
// experts and vocabulary rows over the ranks of each stage. Pure and deterministic: every tie is
// broken by the lowest index.
#include "coordinator/placement/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>

#include "coordinator/placement/internal.h"

namespace expertmesh::placement {

const char* policy_kind_name(PolicyKind k) {
  switch (k) {
    case PolicyKind::kEp:
      return "ep";
    case PolicyKind::kPp:
      return "pp";
    case PolicyKind::kHybrid:
      return "hybrid";
  }
  return "?";
}

namespace internal {
namespace {

// Relative capacity of each rank: its memory when every rank's is known, else equal weights.
std::vector<double> capacities(const PlacementRequest& req) {
  std::vector<double> cap(req.ranks.size(), 1.0);
  bool all_known = true;
  for (const RankResources& r : req.ranks) {
    const bool gpu = req.options.use_gpus() && r.gpu >= 0;
    all_known = all_known && (gpu ? r.gpu_memory_bytes : r.memory_bytes) > 0;
  }
  if (!all_known) return cap;
  for (size_t i = 0; i < cap.size(); ++i) {
    const RankResources& r = req.ranks[i];
    cap[i] = static_cast<double>(req.options.use_gpus() && r.gpu >= 0 ? r.gpu_memory_bytes : r.memory_bytes);
  }
  return cap;
}

// Deals `n_units` units of `unit_bytes` each over `ranks`: every rank first gets the whole part of
// its capacity share (equal shares when capacities are equal), so each layer stays balanced (the
// ranks of a stage meet at every layer's allreduce); the remaining units go one each to the ranks
// with the lowest load relative to capacity (lowest stage position on ties), which rotates the
// remainder across layers. Returns counts in stage order and adds the dealt bytes to `load`.
std::vector<int64_t> deal(int64_t n_units, double unit_bytes, const std::vector<int>& ranks,
                          const std::vector<double>& cap, std::vector<double>* load) {
  double cap_sum = 0;
  for (int r : ranks) cap_sum += cap[static_cast<size_t>(r)];
  std::vector<int64_t> count(ranks.size(), 0);
  int64_t left = n_units;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const double share = static_cast<double>(n_units) * cap[static_cast<size_t>(ranks[i])] / cap_sum;
    count[i] = std::min(left, static_cast<int64_t>(share + 1e-9));
    left -= count[i];
  }
  std::vector<size_t> order(ranks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto rel = [&](size_t i) {
    const size_t r = static_cast<size_t>(ranks[i]);
    return ((*load)[r] + unit_bytes * static_cast<double>(count[i])) / cap[r];
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rel(a) < rel(b); });
  for (size_t k = 0; left > 0; k = (k + 1) % order.size(), --left) ++count[order[k]];
  for (size_t i = 0; i < ranks.size(); ++i)
    (*load)[static_cast<size_t>(ranks[i])] += unit_bytes * static_cast<double>(count[i]);
  return count;
}

// Turns per-rank unit counts into contiguous RankRanges over [0, total), `align` per unit (the
// last unit may be shorter).
void to_ranges(const std::vector<int>& ranks, const std::vector<int64_t>& count, int64_t align, int64_t total,
               google::protobuf::RepeatedPtrField<proto::RankRange>* out) {
  int64_t at = 0;
  for (size_t i = 0; i < ranks.size(); ++i) {
    proto::RankRange* rr = out->Add();
    rr->set_rank(ranks[i]);
    rr->set_begin(at);
    at = std::min(total, at + count[i] * align);
    rr->set_end(at);
  }
}

// One rank owns everything: the range [0, total) on `owner`, empty ranges on the others.
void pin_ranges(const std::vector<int>& ranks, int owner, int64_t total,
                google::protobuf::RepeatedPtrField<proto::RankRange>* out) {
  int64_t at = 0;
  for (int r : ranks) {
    proto::RankRange* rr = out->Add();
    rr->set_rank(r);
    rr->set_begin(at);
    if (r == owner) at = total;
    rr->set_end(at);
  }
}

int64_t sum_bytes(const ModelShape& m, const LayerShape& l, Unit unit) {
  int64_t b = 0;
  for (int i : l.tensors) {
    const TensorShape& t = m.tensors[static_cast<size_t>(i)];
    if (unit_of(t.split) == unit && !is_out_rows(t.split)) b += t.bytes;
  }
  return b;
}

// The rank<N> overrides that apply to one layer, per unit. Errors when two rules pin one unit to
// different ranks, or the rank is not in the layer's stage.
Status layer_pins(const ModelShape& m, int il, const std::vector<int>& stage_ranks,
                  const std::vector<CompiledOverride>& rules, std::map<Unit, int>* pins) {
  for (int i : m.layers[static_cast<size_t>(il)].tensors) {
    const TensorShape& t = m.tensors[static_cast<size_t>(i)];
    const proto::TensorOverride* o = first_rank_rule(rules, t.name);
    const Unit unit = unit_of(t.split);
    if (!o || !o->has_rank() || unit == Unit::kNone) continue;
    if (std::find(stage_ranks.begin(), stage_ranks.end(), o->rank()) == stage_ranks.end())
      return Status::InvalidArgument(
          fmt::format("-ot {}=rank{}: tensor '{}' is computed by the ranks of another "
                      "pipeline stage; rank {} cannot own it",
                      o->pattern(), o->rank(), t.name, o->rank()));
    auto [it, inserted] = pins->emplace(unit, o->rank());
    if (!inserted && it->second != o->rank())
      return Status::InvalidArgument(
          fmt::format("-ot: tensor '{}' is pinned to rank {} but another tensor of the same "
                      "layer unit is pinned to rank {}",
                      t.name, o->rank(), it->second));
  }
  return Status::Ok();
}

void deal_experts(const PlacementRequest& req, const LayerShape& ls, const std::vector<int>& ranks,
                  std::optional<int> pin, const std::vector<double>& cap, std::vector<double>* load,
                  proto::LayerPlacement* lp) {
  std::vector<int> primary(static_cast<size_t>(ls.n_expert));
  if (pin) {
    std::fill(primary.begin(), primary.end(), *pin);
    (*load)[static_cast<size_t>(*pin)] += static_cast<double>(ls.expert_bytes * ls.n_expert);
  } else {
    const std::vector<int64_t> count = deal(ls.n_expert, static_cast<double>(ls.expert_bytes), ranks, cap, load);
    size_t e = 0;
    for (size_t i = 0; i < ranks.size(); ++i)
      for (int64_t c = 0; c < count[i]; ++c) primary[e++] = ranks[i];
  }
  // Replicas go to the next ranks of the stage after the primary (at most one copy per rank).
  const int replicas = pin ? 1 : std::clamp(req.options.expert_replicas(), 1, static_cast<int>(ranks.size()));
  for (int64_t e = 0; e < ls.n_expert; ++e) {
    proto::ExpertOwners* eo = lp->add_experts();
    eo->set_expert(static_cast<int32_t>(e));
    const int p = primary[static_cast<size_t>(e)];
    const size_t pos = static_cast<size_t>(std::find(ranks.begin(), ranks.end(), p) - ranks.begin());
    for (int k = 0; k < replicas; ++k) {
      const int r = ranks[(pos + static_cast<size_t>(k)) % ranks.size()];
      eo->add_rank(r);
      if (k > 0) (*load)[static_cast<size_t>(r)] += static_cast<double>(ls.expert_bytes);
    }
  }
}

}  // namespace

Status deal_layers(const PlacementRequest& req, const Layout& layout, const std::vector<CompiledOverride>& rules,
                   proto::Placement* p) {
  const ModelShape& m = *req.model;
  const std::vector<double> cap = capacities(req);
  std::vector<double> load(req.ranks.size(), 0.0);
  std::vector<double> head_load(req.ranks.size(), 0.0);  // head units dealt so far, per rank
  // Stage-wide copies first, so the dealing below compensates the ranks that carry them.
  for (const TensorShape& t : m.tensors)
    if (t.split == Split::kEmbedding)
      for (int r : layout.stages.front()) load[static_cast<size_t>(r)] += static_cast<double>(t.bytes);
  for (int il = 0; il < m.n_layer; ++il) {
    const LayerShape& ls = m.layers[static_cast<size_t>(il)];
    proto::LayerPlacement* lp = p->mutable_layers(il);
    const std::vector<int>& ranks = layout.stages[static_cast<size_t>(lp->stage())];
    std::map<Unit, int> pins;
    EM_RETURN_IF_ERROR(layer_pins(m, il, ranks, rules, &pins));
    auto pin = [&](Unit u) -> std::optional<int> {
      auto it = pins.find(u);
      return it == pins.end() ? std::nullopt : std::optional<int>(it->second);
    };
    const double replicated = static_cast<double>(sum_bytes(m, ls, Unit::kNone));
    for (int r : ranks) load[static_cast<size_t>(r)] += replicated;
    // attn_output / ffn_down: each owner of heads / FFN rows holds a share of their output rows.
    auto add_out_rows = [&](Split s) {
      for (int i : ls.tensors) {
        const TensorShape& t = m.tensors[static_cast<size_t>(i)];
        if (t.split != s) continue;
        for (int r : ranks) load[static_cast<size_t>(r)] += static_cast<double>(out_rows_bytes(t, *p, *lp, r));
      }
    };
    if (lp->heads_size() == 0) {
      // Heads first, balanced by count (attention time and KV cache grow with the context, not
      // with weight bytes); head_load rotates the remainder across layers. Bytes are then added
      // to `load`, so experts and FFN rows even out the memory.
      const int64_t units = (m.n_head + ls.head_align - 1) / ls.head_align;
      const double ub = static_cast<double>(sum_bytes(m, ls, Unit::kAttention)) / static_cast<double>(units);
      if (auto r = pin(Unit::kAttention)) {
        pin_ranges(ranks, *r, m.n_head, lp->mutable_heads());
        load[static_cast<size_t>(*r)] += ub * static_cast<double>(units);
      } else {
        const std::vector<int64_t> count = deal(units, 1.0, ranks, cap, &head_load);
        for (size_t i = 0; i < ranks.size(); ++i)
          load[static_cast<size_t>(ranks[i])] += ub * static_cast<double>(count[i]);
        to_ranges(ranks, count, ls.head_align, m.n_head, lp->mutable_heads());
      }
    }
    add_out_rows(Split::kAttnOutRows);
    if (ls.n_expert > 0 && lp->experts_size() == 0) deal_experts(req, ls, ranks, pin(Unit::kExperts), cap, &load, lp);
    if (ls.n_ff > 0 && lp->ffn_rows_size() == 0) {
      const int64_t units = (ls.n_ff + ls.ffn_row_align - 1) / ls.ffn_row_align;
      if (auto r = pin(Unit::kFfn)) {
        pin_ranges(ranks, *r, ls.n_ff, lp->mutable_ffn_rows());
      } else {
        const double ub = static_cast<double>(sum_bytes(m, ls, Unit::kFfn)) / static_cast<double>(units);
        to_ranges(ranks, deal(units, ub, ranks, cap, &load), ls.ffn_row_align, ls.n_ff, lp->mutable_ffn_rows());
      }
    }
    add_out_rows(Split::kFfnOutRows);
  }
  if (p->output_vocab_size() == 0) {
    const std::vector<int>& last = layout.stages.back();
    std::optional<int> out_pin;
    int64_t out_bytes = 0;
    for (const TensorShape& t : m.tensors) {
      const bool head = t.split == Split::kVocabRows || (m.tied_output && t.split == Split::kEmbedding);
      if (!head) continue;
      out_bytes += t.bytes;
      const proto::TensorOverride* o = first_rank_rule(rules, t.name);
      if (o && o->has_rank() && t.split == Split::kVocabRows) {
        if (std::find(last.begin(), last.end(), o->rank()) == last.end())
          return Status::InvalidArgument(
              fmt::format("-ot {}=rank{}: '{}' is computed by the last pipeline stage; rank {} is not in it",
                          o->pattern(), o->rank(), t.name, o->rank()));
        out_pin = o->rank();
      }
    }
    if (out_pin) {
      pin_ranges(last, *out_pin, m.n_vocab, p->mutable_output_vocab());
    } else {
      const int64_t units = (m.n_vocab + m.vocab_align - 1) / m.vocab_align;
      const double ub = static_cast<double>(out_bytes) / static_cast<double>(units);
      to_ranges(last, deal(units, ub, last, cap, &load), m.vocab_align, m.n_vocab, p->mutable_output_vocab());
    }
  }
  return Status::Ok();
}

}  // namespace internal

namespace {

using internal::Layout;

// Hosts in order of their lowest rank, each with its ranks ascending.
std::vector<std::vector<int>> ranks_by_host(const PlacementRequest& req) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<int>> by;
  for (const RankResources& r : req.ranks) {
    if (!by.count(r.host)) order.push_back(r.host);
    by[r.host].push_back(r.rank);
  }
  std::vector<std::vector<int>> out;
  for (const std::string& h : order) out.push_back(by[h]);
  return out;
}

// Merges consecutive groups until there are at most `n` (a stage needs at least one layer).
std::vector<std::vector<int>> at_most(std::vector<std::vector<int>> groups, size_t n) {
  if (groups.size() <= n) return groups;
  std::vector<std::vector<int>> out(n);
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& dst = out[g * n / groups.size()];
    dst.insert(dst.end(), groups[g].begin(), groups[g].end());
  }
  return out;
}

// Layer stages: contiguous layers, minimising the largest stage load relative to the stage's
// capacity (dynamic programming over split points; the first minimum wins ties).
std::vector<int> split_layers(const PlacementRequest& req, const std::vector<std::vector<int>>& stages) {
  const ModelShape& m = *req.model;
  const size_t L = static_cast<size_t>(m.n_layer), S = stages.size();
  const std::vector<double> cap = internal::capacities(req);
  std::vector<double> stage_cap(S, 0.0), extra(S, 0.0);
  for (size_t s = 0; s < S; ++s)
    for (int r : stages[s]) stage_cap[s] += cap[static_cast<size_t>(r)];
  for (const TensorShape& t : m.tensors) {
    if (t.split == Split::kEmbedding) extra[0] += static_cast<double>(t.bytes * static_cast<int64_t>(stages[0].size()));
    if (t.split == Split::kVocabRows) extra[S - 1] += static_cast<double>(t.bytes);
  }
  std::vector<double> prefix(L + 1, 0.0);
  for (size_t i = 0; i < L; ++i) prefix[i + 1] = prefix[i] + static_cast<double>(m.layers[i].bytes);
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][j]: the smallest bottleneck placing layers [0, j) on stages [0, s].
  std::vector<std::vector<double>> best(S, std::vector<double>(L + 1, inf));
  std::vector<std::vector<size_t>> from(S, std::vector<size_t>(L + 1, 0));
  auto cost = [&](size_t s, size_t i, size_t j) { return (prefix[j] - prefix[i] + extra[s]) / stage_cap[s]; };
  for (size_t j = 1; j <= L; ++j) best[0][j] = cost(0, 0, j);
  for (size_t s = 1; s < S; ++s)
    for (size_t j = s + 1; j <= L; ++j)
      for (size_t i = s; i < j; ++i) {
        const double v = std::max(best[s - 1][i], cost(s, i, j));
        if (v < best[s][j]) best[s][j] = v, from[s][j] = i;
      }
  std::vector<int> layer_stage(L, 0);
  size_t j = L;
  for (size_t s = S; s-- > 0;) {
    const size_t i = s == 0 ? 0 : from[s][j];
    for (size_t k = i; k < j; ++k) layer_stage[k] = static_cast<int>(s);
    j = i;
  }
  return layer_stage;
}

Layout layout_for(const PlacementRequest& req, bool per_host, bool rank_per_stage) {
  const size_t world = req.ranks.size(), L = static_cast<size_t>(req.model->n_layer);
  Layout lo;
  if (per_host) {
    lo.stages = at_most(ranks_by_host(req), L);
  } else if (rank_per_stage) {
    // One rank per stage; with more ranks than layers, consecutive ranks share a stage.
    std::vector<std::vector<int>> one(world);
    for (size_t r = 0; r < world; ++r) one[r] = {static_cast<int>(r)};
    lo.stages = at_most(one, L);
  } else {
    lo.stages.emplace_back();
    for (size_t r = 0; r < world; ++r) lo.stages[0].push_back(static_cast<int>(r));
  }
  lo.layer_stage = lo.stages.size() == 1 ? std::vector<int>(L, 0) : split_layers(req, lo.stages);
  return lo;
}

Status check_request(const PlacementRequest& req) {
  if (!req.model) return Status::InvalidArgument("placement: no model shape");
  if (req.ranks.empty()) return Status::InvalidArgument("placement: no ranks");
  for (size_t i = 0; i < req.ranks.size(); ++i)
    if (req.ranks[i].rank != static_cast<int>(i))
      return Status::InvalidArgument(fmt::format("placement: ranks[{}] describes rank {}", i, req.ranks[i].rank));
  for (const proto::TensorOverride& o : req.overrides)
    if (o.has_rank() && (o.rank() < 0 || o.rank() >= static_cast<int>(req.ranks.size())))
      return Status::InvalidArgument(fmt::format("-ot {}=rank{}: rank outside 0..{} (the job has {} ranks)",
                                                 o.pattern(), o.rank(), req.ranks.size() - 1, req.ranks.size()));
  return Status::Ok();
}

// Builds the whole placement for one layout (or the partial one, for manual placements).
Result<proto::Placement> build(const PlacementRequest& req, const Layout& lo, proto::Placement p,
                               const std::string& policy) {
  EM_ASSIGN_OR_RETURN(auto rules, internal::compile_overrides(req.overrides));
  p.set_world(static_cast<int32_t>(req.ranks.size()));
  p.set_policy(policy);
  p.clear_rank_host();
  for (const RankResources& r : req.ranks) p.add_rank_host(r.host);
  p.clear_stages();
  for (size_t s = 0; s < lo.stages.size(); ++s) {
    proto::Stage* st = p.add_stages();
    st->set_stage(static_cast<int32_t>(s));
    for (int r : lo.stages[s]) st->add_rank(r);
  }
  for (int il = 0; il < req.model->n_layer; ++il) {
    proto::LayerPlacement* lp = il < p.layers_size() ? p.mutable_layers(il) : p.add_layers();
    lp->set_layer(il);
    lp->set_stage(lo.layer_stage[static_cast<size_t>(il)]);
  }
  EM_RETURN_IF_ERROR(internal::deal_layers(req, lo, rules, &p));
  EM_RETURN_IF_ERROR(validate_placement(p, *req.model, static_cast<int>(req.ranks.size())));
  EM_RETURN_IF_ERROR(internal::place_tensors(req, rules, &p));
  return p;
}

}  // namespace

Result<proto::Placement> make_placement(const PlacementRequest& req) {
  EM_RETURN_IF_ERROR(check_request(req));
  const std::string name = policy_kind_name(req.policy);
  const proto::Policy::Pipeline pipe = req.options.pipeline();
  if (req.policy == PolicyKind::kHybrid || (req.policy == PolicyKind::kEp && pipe == proto::Policy::PIPELINE_PER_HOST))
    return build(req, layout_for(req, true, false), {}, name);
  if (req.policy == PolicyKind::kPp)
    return build(req, layout_for(req, pipe == proto::Policy::PIPELINE_PER_HOST, true), {}, name);
  auto single = build(req, layout_for(req, false, false), {}, name);
  // PIPELINE_AUTO: when the model does not fit one stage, pipeline across hosts.
  if (single.ok() || pipe != proto::Policy::PIPELINE_AUTO || ranks_by_host(req).size() < 2) return single;
  auto per_host = build(req, layout_for(req, true, false), {}, name + "+pipeline");
  return per_host.ok() ? per_host : single;
}

Result<proto::Placement> complete_placement(const proto::Placement& partial, const PlacementRequest& req) {
  EM_RETURN_IF_ERROR(check_request(req));
  const int world = static_cast<int>(req.ranks.size());
  if (partial.world() != 0 && partial.world() != world)
    return Status::InvalidArgument(
        fmt::format("placement: made for {} ranks (world), the job has {}", partial.world(), world));
  Layout lo;
  for (const proto::Stage& s : partial.stages()) lo.stages.emplace_back(s.rank().begin(), s.rank().end());
  if (lo.stages.empty()) lo = layout_for(req, false, false);
  for (size_t s = 0; s < lo.stages.size(); ++s)
    if (partial.stages_size() > 0 && partial.stages(static_cast<int>(s)).stage() != static_cast<int>(s))
      return Status::InvalidArgument(fmt::format("placement: stages[{}] has stage {}, expected {}", s,
                                                 partial.stages(static_cast<int>(s)).stage(), s));
  if (partial.layers_size() == 0) {
    lo.layer_stage = lo.stages.size() == 1 ? std::vector<int>(static_cast<size_t>(req.model->n_layer), 0)
                                           : split_layers(req, lo.stages);
  } else if (partial.layers_size() != req.model->n_layer) {
    return Status::InvalidArgument(fmt::format("placement: lists {} layers, the model has {} (list all or none)",
                                               partial.layers_size(), req.model->n_layer));
  } else {
    for (const proto::LayerPlacement& l : partial.layers()) {
      if (l.stage() < 0 || l.stage() >= static_cast<int>(lo.stages.size()))
        return Status::InvalidArgument(
            fmt::format("placement: layer {}: stage {} outside 0..{}", l.layer(), l.stage(), lo.stages.size() - 1));
      lo.layer_stage.push_back(l.stage());
    }
  }
  proto::Placement p = partial;
  for (auto& l : *p.mutable_layers()) l.clear_tensors();
  p.clear_global_tensors();
  return build(req, lo, std::move(p), partial.policy().empty() ? "manual" : partial.policy());
}

}  // namespace expertmesh::placement
