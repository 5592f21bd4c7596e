// Ranks' resources (reports, cluster configs, simulated jobs) and the collective resolve_placement.
#include <fmt/format.h>
#include <mpi.h>

#include <map>

#include "comm/topology.h"
#include "common/check.h"
#include "coordinator/placement/planner.h"
#include "model/gguf/gguf.h"

namespace expertmesh::placement {

Result<PolicyKind> parse_policy(const std::string& placement, std::string* file) {
  file->clear();
  if (placement == "ep" || placement.empty()) return PolicyKind::kEp;
  if (placement == "pp") return PolicyKind::kPp;
  if (placement == "hybrid") return PolicyKind::kHybrid;
  if (placement.find('.') == std::string::npos && placement.find('/') == std::string::npos)
    return Status::InvalidArgument(
        fmt::format("--placement: unknown policy '{}' (ep, pp, hybrid, or a .textproto file)", placement));
  *file = placement;
  return PolicyKind::kEp;
}

Result<proto::RankReport> local_report(int rank, const std::string& host) {
  EM_ASSIGN_OR_RETURN(topology::Machine m, topology::discover());
  EM_ASSIGN_OR_RETURN(std::vector<int> allowed, topology::allowed_cpus());
  proto::RankReport r;
  r.set_rank(rank);
  r.set_host(host.empty() ? m.hostname : host);
  r.set_host_numa_nodes(static_cast<int32_t>(m.numa.size()));
  const int node = m.numa.size() > 1 ? topology::launched_node(m, allowed) : -1;
  r.set_numa_node(node);
  const topology::NumaNode* n = node >= 0 ? m.node(node) : nullptr;
  r.set_node_memory_bytes(n ? n->memory_bytes : m.memory_bytes);
  r.set_cores(n ? n->cores : m.n_cores);
  for (const topology::Gpu& g : m.gpus) r.add_gpu_memory_bytes(g.memory_bytes);
  return r;
}

Result<std::vector<proto::RankReport>> simulated_reports(int np, const std::string& hosts, const topology::Machine& m) {
  if (np < 1 && hosts.empty()) return Status::InvalidArgument(fmt::format("--np: {} < 1", np));
  std::vector<std::pair<std::string, int>> spec;
  if (hosts.empty()) {
    spec.emplace_back(m.hostname.empty() ? "localhost" : m.hostname, np);
  } else {
    size_t at = 0;
    while (at <= hosts.size()) {
      const size_t comma = std::min(hosts.find(',', at), hosts.size());
      const std::string item = hosts.substr(at, comma - at);
      const size_t colon = item.rfind(':');
      int n = 1;
      if (colon != std::string::npos) {
        const std::string num = item.substr(colon + 1);
        if (num.empty() || num.size() > 6 || num.find_first_not_of("0123456789") != std::string::npos || num == "0")
          return Status::InvalidArgument(fmt::format("--hosts: '{}' is not HOST[:RANKS]", item));
        n = std::stoi(num);
      }
      const std::string name = item.substr(0, colon);
      if (name.empty()) return Status::InvalidArgument(fmt::format("--hosts: '{}' has no host name", item));
      spec.emplace_back(name, n);
      at = comma + 1;
    }
  }
  int total = 0;
  for (const auto& s : spec) total += s.second;
  if (np <= 0) np = total;
  if (total != np)
    return Status::InvalidArgument(fmt::format("--hosts '{}' holds {} ranks, --np is {}", hosts, total, np));
  std::vector<proto::RankReport> out;
  for (const auto& [name, n] : spec)
    for (int local = 0; local < n; ++local) {
      proto::RankReport r;
      r.set_rank(static_cast<int32_t>(out.size()));
      r.set_host(name);
      r.set_host_numa_nodes(static_cast<int32_t>(m.numa.size()));
      const topology::NumaNode& node = m.numa[static_cast<size_t>(local) % m.numa.size()];
      const bool bound = m.numa.size() > 1;
      r.set_numa_node(bound ? node.os_index : -1);
      r.set_node_memory_bytes(bound ? node.memory_bytes : m.memory_bytes);
      r.set_cores(bound ? node.cores : m.n_cores);
      for (const topology::Gpu& g : m.gpus) r.add_gpu_memory_bytes(g.memory_bytes);
      out.push_back(std::move(r));
    }
  return out;
}

namespace {

// Applies the ClusterConfig's hosts, rank specs and sizes on top of the hwloc facts.
Status apply_cluster(const proto::ClusterConfig& c, std::vector<RankResources>* ranks,
                     std::map<std::pair<std::string, int>, int64_t>* node_memory) {
  size_t listed = 0;
  for (const proto::Host& h : c.hosts()) listed += static_cast<size_t>(h.ranks_size());
  if (listed != ranks->size())
    return Status::InvalidArgument(
        fmt::format("--cluster '{}': the config places {} ranks, the job has {}", c.name(), listed, ranks->size()));
  for (const proto::Host& h : c.hosts()) {
    for (const proto::RankSpec& s : h.ranks()) {
      if (s.rank() < 0 || static_cast<size_t>(s.rank()) >= ranks->size())
        return Status::InvalidArgument(
            fmt::format("--cluster: host '{}': rank {} outside the job", h.name(), s.rank()));
      RankResources& r = (*ranks)[static_cast<size_t>(s.rank())];
      r.host = h.name();
      r.numa_node = s.numa_node();
      if (s.threads() > 0) r.cores = s.threads();
      int64_t mem = 0;
      for (const proto::NumaNode& n : h.numa())
        if (n.id() == s.numa_node()) mem = n.memory_bytes();
      if (mem == 0 && h.memory_bytes() > 0) mem = h.memory_bytes() / std::max(1, h.numa_size());
      if (mem > 0) (*node_memory)[{r.host, r.numa_node}] = mem;
      if (s.has_gpu()) {
        r.gpu = s.gpu();
        for (const proto::Gpu& g : h.gpus())
          if (g.index() == s.gpu() && g.memory_bytes() > 0) r.gpu_memory_bytes = g.memory_bytes();
      } else {
        r.gpu = -1, r.gpu_memory_bytes = 0;
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<RankResources>> rank_resources(const std::vector<proto::RankReport>& reports,
                                                  const proto::ClusterConfig* cluster) {
  std::vector<RankResources> ranks(reports.size());
  std::map<std::pair<std::string, int>, int64_t> node_memory;  // (host, node) -> bytes
  std::map<std::string, int> local_index;                      // ranks seen per host so far
  for (size_t i = 0; i < reports.size(); ++i) {
    const proto::RankReport& rep = reports[i];
    if (rep.rank() != static_cast<int>(i))
      return Status::Internal(fmt::format("placement: report {} comes from rank {}", i, rep.rank()));
    RankResources& r = ranks[i];
    r.rank = rep.rank();
    r.host = rep.host();
    r.numa_node = std::max(0, rep.numa_node());
    r.cores = rep.cores();
    node_memory[{r.host, rep.numa_node() < 0 ? -1 : r.numa_node}] = rep.node_memory_bytes();
    if (rep.numa_node() < 0) r.numa_node = -1;  // sentinel until shared memory is divided below
    // GPUs: the host's i-th rank drives its i-th GPU, when there is one.
    const int local = local_index[r.host]++;
    if (local < rep.gpu_memory_bytes_size()) r.gpu = local, r.gpu_memory_bytes = rep.gpu_memory_bytes(local);
  }
  if (cluster) EM_RETURN_IF_ERROR(apply_cluster(*cluster, &ranks, &node_memory));
  std::map<std::pair<std::string, int>, int> sharing;
  for (const RankResources& r : ranks) ++sharing[{r.host, r.numa_node}];
  for (RankResources& r : ranks) {
    const auto key = std::make_pair(r.host, r.numa_node);
    r.memory_bytes = node_memory.count(key) ? node_memory[key] / sharing[key] : 0;
    r.numa_node = std::max(0, r.numa_node);
  }
  return ranks;
}

Result<proto::Placement> placement_for_reports(const PlacementFlags& flags, const ModelShape& m,
                                               const std::vector<proto::RankReport>& reports) {
  std::string file;
  EM_ASSIGN_OR_RETURN(PolicyKind kind, parse_policy(flags.placement, &file));
  proto::ClusterConfig cluster;
  if (!flags.cluster.empty()) {
    EM_ASSIGN_OR_RETURN(cluster, load_cluster_config(flags.cluster));
  }
  PlacementRequest req;
  req.model = &m;
  req.policy = kind;
  EM_ASSIGN_OR_RETURN(req.ranks, rank_resources(reports, flags.cluster.empty() ? nullptr : &cluster));
  req.options = cluster.policy();
  req.options.clear_overrides();
  EM_ASSIGN_OR_RETURN(req.overrides, parse_tensor_overrides(flags.overrides));
  for (const proto::TensorOverride& o : cluster.policy().overrides()) req.overrides.push_back(o);
  if (file.empty()) return make_placement(req);
  EM_ASSIGN_OR_RETURN(proto::Placement partial, load_placement_file(file));
  auto p = complete_placement(partial, req);
  if (!p.ok()) return p.status().with_context(file);
  return p;
}

Result<proto::Placement> resolve_placement(const PlacementFlags& flags, const gguf::File& f, const RankContext& ctx) {
  auto report = local_report(ctx.rank, ctx.host);
  EM_RETURN_IF_ERROR(ctx.agree(report.ok() ? Status::Ok() : report.status()));
  std::string mine;
  report->SerializeToString(&mine);
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(ctx.world)), displs(static_cast<size_t>(ctx.world));
  EM_MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, ctx.comm));
  int total = 0;
  for (int r = 0; r < ctx.world; ++r) displs[static_cast<size_t>(r)] = total, total += lens[static_cast<size_t>(r)];
  std::string all(ctx.is_root() ? static_cast<size_t>(total) : 0, '\0');
  EM_MPI_CHECK(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, ctx.comm));

  Result<proto::Placement> planned = Status::Internal("placement: not planned on this rank");
  std::string wire;
  Status local;
  if (ctx.is_root()) {
    std::vector<proto::RankReport> reports(static_cast<size_t>(ctx.world));
    for (int r = 0; r < ctx.world; ++r)
      reports[static_cast<size_t>(r)].ParseFromArray(all.data() + displs[static_cast<size_t>(r)],
                                                     lens[static_cast<size_t>(r)]);
    auto shape = model_shape(f);
    planned = shape.ok() ? placement_for_reports(flags, *shape, reports) : Result<proto::Placement>(shape.status());
    if (planned.ok()) planned->SerializeToString(&wire);
    local = planned.ok() ? Status::Ok() : planned.status();
  }
  EM_RETURN_IF_ERROR(ctx.agree(local));
  EM_RETURN_IF_ERROR(broadcast_string(ctx.comm, 0, &wire));
  if (ctx.is_root()) return planned;
  proto::Placement p;
  if (!p.ParseFromString(wire)) return Status::Internal("placement: cannot parse the placement broadcast by rank 0");
  return p;
}

}  // namespace expertmesh::placement
