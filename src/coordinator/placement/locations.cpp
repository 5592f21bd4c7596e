// Tensor locations: which rank holds how many bytes of every tensor, on which device, after the
// -ot overrides; and the per-rank memory check.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "coordinator/placement/internal.h"
#include "worker/placement_plan.h"

namespace expertmesh::placement::internal {

Result<std::vector<CompiledOverride>> compile_overrides(const std::vector<proto::TensorOverride>& rules) {
  std::vector<CompiledOverride> out;
  for (const proto::TensorOverride& o : rules) {
    try {
      out.push_back({o, std::regex(o.pattern(), std::regex::ECMAScript)});
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument(fmt::format("-ot: pattern '{}' is not a valid regex: {}", o.pattern(), e.what()));
    }
  }
  return out;
}

const proto::TensorOverride* first_rank_rule(const std::vector<CompiledOverride>& rules, const std::string& name) {
  for (const CompiledOverride& c : rules)
    if (c.rule.has_rank() && std::regex_search(name, c.re)) return &c.rule;
  return nullptr;
}

Unit unit_of(Split s) {
  switch (s) {
    case Split::kHeadRows:
    case Split::kAttnOutRows:
      return Unit::kAttention;
    case Split::kFfnRows:
    case Split::kFfnOutRows:
      return Unit::kFfn;
    case Split::kExperts:
      return Unit::kExperts;
    case Split::kVocabRows:
      return Unit::kOutput;
    case Split::kReplicated:
    case Split::kEmbedding:
      return Unit::kNone;
  }
  return Unit::kNone;
}

std::string format_bytes(double b) {
  if (b < 1024) return fmt::format("{:.0f} B", b);
  if (b < 1024.0 * 1024) return fmt::format("{:.1f} KiB", b / 1024);
  if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
}

namespace {

int64_t range_of(const google::protobuf::RepeatedPtrField<proto::RankRange>& rr, int rank) {
  for (const proto::RankRange& r : rr)
    if (r.rank() == rank) return r.end() - r.begin();
  return 0;
}

bool in_stage(const proto::Placement& p, int stage, int rank) {
  const auto& rs = p.stages(stage).rank();
  return std::find(rs.begin(), rs.end(), rank) != rs.end();
}

}  // namespace

bool is_out_rows(Split s) { return s == Split::kAttnOutRows || s == Split::kFfnOutRows; }

int64_t out_rows_bytes(const TensorShape& t, const proto::Placement& p, const proto::LayerPlacement& l, int rank) {
  const auto& ranks = p.stages(l.stage()).rank();
  const auto me = std::find(ranks.begin(), ranks.end(), rank);
  if (me == ranks.end()) return 0;
  const auto& owned = t.split == Split::kAttnOutRows ? l.heads() : l.ffn_rows();
  std::vector<bool> owns(static_cast<size_t>(ranks.size()));
  for (int i = 0; i < ranks.size(); ++i)  // an empty list: the stage's first rank owns all (proto)
    owns[static_cast<size_t>(i)] = owned.empty() ? i == 0 : range_of(owned, ranks[i]) > 0;
  const std::vector<worker::Span> rows = worker::out_rows_by_stage(t.ne[1], owns);
  return t.bytes / t.ne[1] * rows[static_cast<size_t>(me - ranks.begin())].size();  // t.bytes: ne[1] whole rows
}

int64_t slice_bytes(const ModelShape& m, const TensorShape& t, const proto::Placement& p,
                    const proto::LayerPlacement* l, int rank) {
  const int last = p.stages_size() - 1;
  if (!l) {  // global tensors
    if (t.split == Split::kEmbedding) {
      if (in_stage(p, 0, rank)) return t.bytes;
      if (m.tied_output && in_stage(p, last, rank)) return t.bytes * range_of(p.output_vocab(), rank) / m.n_vocab;
      return 0;
    }
    if (t.split == Split::kVocabRows) return t.bytes * range_of(p.output_vocab(), rank) / m.n_vocab;
    if (t.name.rfind("output_norm", 0) == 0) return in_stage(p, last, rank) ? t.bytes : 0;
    return t.bytes;  // rope factors and the like: every rank
  }
  if (!in_stage(p, l->stage(), rank)) return 0;
  const LayerShape& ls = m.layers[static_cast<size_t>(l->layer())];
  switch (t.split) {
    case Split::kHeadRows:
      return t.bytes * range_of(l->heads(), rank) / m.n_head;
    case Split::kAttnOutRows:
    case Split::kFfnOutRows:
      return out_rows_bytes(t, p, *l, rank);
    case Split::kFfnRows:
      return t.bytes * range_of(l->ffn_rows(), rank) / ls.n_ff;
    case Split::kExperts: {
      int64_t n = 0;
      for (const proto::ExpertOwners& e : l->experts()) n += std::count(e.rank().begin(), e.rank().end(), rank);
      return t.bytes / t.ne[2] * n;
    }
    case Split::kReplicated:
    case Split::kEmbedding:
    case Split::kVocabRows:
      return t.bytes;
  }
  return 0;
}

namespace {

// Device of `rank`'s part of tensor `name`: the first matching override with a device, else the
// rank's GPU (use_gpus) or its NUMA node. Errors when a rule asks for a GPU the rank lacks.
Result<proto::Device> device_for(const PlacementRequest& req, const std::vector<CompiledOverride>& rules,
                                 const std::string& name, int rank) {
  const RankResources& r = req.ranks[static_cast<size_t>(rank)];
  proto::Device d;
  const bool gpu_default = req.options.use_gpus() && r.gpu >= 0;
  d.set_kind(gpu_default ? proto::DEVICE_KIND_GPU : proto::DEVICE_KIND_CPU);
  d.set_index(gpu_default ? r.gpu : r.numa_node);
  for (const CompiledOverride& c : rules) {
    if (c.rule.device().kind() == proto::DEVICE_KIND_UNSPECIFIED || !std::regex_search(name, c.re)) continue;
    if (c.rule.device().kind() == proto::DEVICE_KIND_CPU) {
      d.set_kind(proto::DEVICE_KIND_CPU);
      d.set_index(r.numa_node);
    } else {
      if (r.gpu < 0)
        return Status::InvalidArgument(fmt::format("-ot {}: tensor '{}' goes to a GPU, but rank {} (host {}) has none",
                                                   c.rule.pattern(), name, rank, r.host));
      d.set_kind(proto::DEVICE_KIND_GPU);
      d.set_index(c.rule.device().index() >= 0 ? c.rule.device().index() : r.gpu);
    }
    break;
  }
  return d;
}

Status add_locations(const PlacementRequest& req, const std::vector<CompiledOverride>& rules, const TensorShape& t,
                     const proto::Placement& p, const proto::LayerPlacement* l,
                     google::protobuf::RepeatedPtrField<proto::TensorLocation>* out) {
  for (int r = 0; r < p.world(); ++r) {
    const int64_t b = slice_bytes(*req.model, t, p, l, r);
    if (b <= 0) continue;
    proto::TensorLocation* loc = out->Add();
    loc->set_name(t.name);
    loc->set_rank(r);
    loc->set_bytes(b);
    EM_ASSIGN_OR_RETURN(*loc->mutable_device(), device_for(req, rules, t.name, r));
  }
  return Status::Ok();
}

Status check_memory(const PlacementRequest& req, const proto::Placement& p) {
  const double headroom = req.options.memory_headroom() > 0 ? req.options.memory_headroom() : 0.10;
  std::vector<int64_t> cpu(static_cast<size_t>(p.world()), 0), gpu(static_cast<size_t>(p.world()), 0);
  auto add = [&](const proto::TensorLocation& loc) {
    auto& v = loc.device().kind() == proto::DEVICE_KIND_GPU ? gpu : cpu;
    v[static_cast<size_t>(loc.rank())] += loc.bytes();
  };
  for (const auto& l : p.layers())
    for (const auto& loc : l.tensors()) add(loc);
  for (const auto& loc : p.global_tensors()) add(loc);
  for (int r = 0; r < p.world(); ++r) {
    const RankResources& rr = req.ranks[static_cast<size_t>(r)];
    const struct {
      const char* what;
      int64_t need, have;
    } checks[] = {{"host memory", cpu[static_cast<size_t>(r)], rr.memory_bytes},
                  {"GPU memory", gpu[static_cast<size_t>(r)], rr.gpu_memory_bytes}};
    for (const auto& c : checks) {
      const double usable = static_cast<double>(c.have) * (1.0 - headroom);
      if (c.have > 0 && static_cast<double>(c.need) > usable)
        return Status::InvalidArgument(fmt::format(
            "the model does not fit: rank {} (host {}, NUMA node {}) needs {} ({} bytes) of {} for its tensors under "
            "placement '{}' over {} ranks, but has {} ({} less {:.0f}% headroom)",
            r, rr.host, rr.numa_node, format_bytes(static_cast<double>(c.need)), c.need, c.what, p.policy(), p.world(),
            format_bytes(usable), format_bytes(static_cast<double>(c.have)), headroom * 100));
    }
  }
  return Status::Ok();
}

}  // namespace

Status place_tensors(const PlacementRequest& req, const std::vector<CompiledOverride>& rules, proto::Placement* p) {
  const ModelShape& m = *req.model;
  p->clear_global_tensors();
  p->clear_overrides();
  for (const CompiledOverride& c : rules) *p->add_overrides() = c.rule;
  for (auto& l : *p->mutable_layers()) l.clear_tensors();
  for (const TensorShape& t : m.tensors) {
    if (t.layer < 0) {
      EM_RETURN_IF_ERROR(add_locations(req, rules, t, *p, nullptr, p->mutable_global_tensors()));
    } else {
      proto::LayerPlacement* l = p->mutable_layers(t.layer);
      EM_RETURN_IF_ERROR(add_locations(req, rules, t, *p, l, l->mutable_tensors()));
    }
  }
  return check_memory(req, *p);
}

}  // namespace expertmesh::placement::internal
