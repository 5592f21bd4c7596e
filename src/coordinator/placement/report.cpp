// format_plan / estimate_traffic (see report.h).
#include "coordinator/placement/report.h"

#include <fmt/format.h>

#include <map>

#include "coordinator/placement/internal.h"

namespace expertmesh::placement {

TrafficEstimate estimate_traffic(const proto::Placement& p, const ModelShape& m) {
  TrafficEstimate t;
  const int64_t hidden = m.n_embd * static_cast<int64_t>(sizeof(float));
  size_t widest = 1;
  for (int s = 0; s < n_stages(p); ++s) widest = std::max(widest, stage_ranks(p, s).size());
  for (const proto::LayerPlacement& l : p.layers()) {
    const size_t n = stage_ranks(p, l.stage()).size();
    if (n < 2) continue;
    const int64_t per_layer = 2 * hidden;  // attention output + FFN/MoE output
    t.allreduce_payload_per_layer = std::max(t.allreduce_payload_per_layer, per_layer);
    t.allreduce_payload += per_layer;
    if (n == widest) t.allreduce_rank_bytes += 2 * static_cast<int64_t>(n - 1) * per_layer;
  }
  t.pipeline_bytes = static_cast<int64_t>(n_stages(p) - 1) * hidden;
  // Rank 0 needs the full logits row: every vocabulary slice held elsewhere travels to it.
  for (const proto::RankRange& r : p.output_vocab())
    if (r.rank() != 0) t.logits_gather_bytes += (r.end() - r.begin()) * static_cast<int64_t>(sizeof(float));
  return t;
}

std::array<int64_t, kTensorKindCount> rank_bytes_by_kind(const proto::Placement& p, const ModelShape& m, int rank) {
  std::map<std::string, TensorKind> kind;
  for (const TensorShape& t : m.tensors) kind[t.name] = t.kind;
  std::array<int64_t, kTensorKindCount> out{};
  auto add = [&](const proto::TensorLocation& loc) {
    if (loc.rank() != rank) return;
    auto it = kind.find(loc.name());
    out[static_cast<size_t>(it == kind.end() ? TensorKind::kOther : it->second)] += loc.bytes();
  };
  for (const auto& l : p.layers())
    for (const auto& loc : l.tensors()) add(loc);
  for (const auto& loc : p.global_tensors()) add(loc);
  return out;
}

namespace {

std::string ranges_text(const google::protobuf::RepeatedPtrField<proto::RankRange>& rr) {
  if (rr.empty()) return "-";
  std::string s;
  for (const proto::RankRange& r : rr) {
    if (!s.empty()) s += ' ';
    s +=
        r.end() > r.begin() ? fmt::format("{}:{}-{}", r.rank(), r.begin(), r.end() - 1) : fmt::format("{}:-", r.rank());
  }
  return s;
}

// "0:0-2 1:3-5,7" — each rank's primary experts as compressed runs.
std::string experts_text(const proto::Placement& p, const proto::LayerPlacement& l) {
  if (l.experts().empty()) return "-";
  std::string s;
  for (int r : stage_ranks(p, l.stage())) {
    const std::vector<int> e = primary_experts(l, r);
    std::string runs;
    for (size_t i = 0; i < e.size();) {
      size_t j = i;
      while (j + 1 < e.size() && e[j + 1] == e[j] + 1) ++j;
      if (!runs.empty()) runs += ',';
      runs += j == i ? fmt::format("{}", e[i]) : fmt::format("{}-{}", e[i], e[j]);
      i = j + 1;
    }
    if (!s.empty()) s += ' ';
    s += fmt::format("{}:{}", r, runs.empty() ? "-" : runs);
  }
  int replicas = 0;
  for (const proto::ExpertOwners& e : l.experts()) replicas += std::max(0, e.rank_size() - 1);
  if (replicas > 0) s += fmt::format(" (+{} replicas)", replicas);
  return s;
}

}  // namespace

std::string format_plan(const proto::Placement& p, const ModelShape& m, const std::string& model_name) {
  using internal::format_bytes;
  std::string s = fmt::format(
      "placement {}: {} rank(s), {} stage(s); model {} ({}, {} layers, {} heads / {} kv, {} experts, vocab {}), {}\n",
      p.policy(), p.world(), n_stages(p), model_name, m.arch, m.n_layer, m.n_head, m.n_head_kv, m.n_expert, m.n_vocab,
      format_bytes(static_cast<double>(m.total_bytes)));
  s += "stages:\n";
  for (int st = 0; st < n_stages(p); ++st) {
    int first = -1, last = -1;
    for (const auto& l : p.layers())
      if (l.stage() == st) last = l.layer(), first = first < 0 ? l.layer() : first;
    std::string ranks;
    for (int r : stage_ranks(p, st))
      ranks += fmt::format("{}{}{}", ranks.empty() ? "" : " ", r,
                           r < p.rank_host_size() ? fmt::format("@{}", p.rank_host(r)) : "");
    s += fmt::format("  stage {}: layers {}-{}, ranks {}\n", st, first, last, ranks);
  }
  s += "layers (rank:first-last per rank; '-' = none):\n";
  s += fmt::format("  {:>5} {:>5}  {:<24} {:<24} {}\n", "layer", "stage", "heads", "ffn_rows", "experts");
  for (const auto& l : p.layers())
    s += fmt::format("  {:>5} {:>5}  {:<24} {:<24} {}\n", l.layer(), l.stage(), ranges_text(l.heads()),
                     ranges_text(l.ffn_rows()), experts_text(p, l));
  s += fmt::format("  output vocab: {}\n", ranges_text(p.output_vocab()));
  s += "ranks (bytes held by tensor kind):\n  rank";
  for (int k = 0; k < kTensorKindCount; ++k) s += fmt::format(" {:>10}", tensor_kind_name(static_cast<TensorKind>(k)));
  s += fmt::format(" {:>10} {:>7}\n", "total", "model%");
  int64_t sum = 0;
  for (int r = 0; r < p.world(); ++r) {
    const auto by = rank_bytes_by_kind(p, m, r);
    const int64_t total = rank_bytes(p, r);
    sum += total;
    s += fmt::format("  {:>4}", r);
    for (int64_t b : by) s += fmt::format(" {:>10}", b ? format_bytes(static_cast<double>(b)) : "-");
    s += fmt::format(" {:>10} {:>6.1f}%\n", format_bytes(static_cast<double>(total)),
                     100.0 * static_cast<double>(total) / static_cast<double>(std::max<int64_t>(1, m.total_bytes)));
  }
  s += fmt::format("  all ranks: {} = {:.2f} copies of the model\n", format_bytes(static_cast<double>(sum)),
                   static_cast<double>(sum) / static_cast<double>(std::max<int64_t>(1, m.total_bytes)));
  for (const proto::TensorOverride& o : p.overrides())
    s += fmt::format(
        "override: '{}' -> {}\n", o.pattern(),
        o.has_rank() ? fmt::format("rank{}", o.rank()) : (o.device().kind() == proto::DEVICE_KIND_GPU ? "GPU" : "CPU"));
  const TrafficEstimate t = estimate_traffic(p, m);
  s += fmt::format(
      "traffic per token (F32 activations): allreduce {} B per layer x {} layers = {} (each rank of the widest stage "
      "sends+receives {}), pipeline sends {}, logits gather {}; total {}\n",
      t.allreduce_payload_per_layer, p.layers_size(), format_bytes(static_cast<double>(t.allreduce_payload)),
      format_bytes(static_cast<double>(t.allreduce_rank_bytes)), format_bytes(static_cast<double>(t.pipeline_bytes)),
      format_bytes(static_cast<double>(t.logits_gather_bytes)), format_bytes(static_cast<double>(t.total())));
  return s;
}

}  // namespace expertmesh::placement
