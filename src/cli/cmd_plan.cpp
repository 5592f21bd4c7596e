// `expertmesh plan -m MODEL [--np N] [--hosts h1:2,h2:2] [--placement ep|pp|hybrid|FILE]
//                  [-ot REGEX=DEV] [--cluster FILE] [--rank-memory SIZE] [--json | --textproto]`
//
// Prints the placement the planner makes for a job, from the model's metadata only (no weights
// are read): stages, per layer the heads, FFN rows and experts of each rank, per rank the bytes by
// tensor kind and the share of the model, and the expected communication per token.
//
// With --np (or --hosts / a --cluster config) the job is simulated: N ranks on hosts like this
// machine (hwloc), bound to NUMA nodes the way launch/expertmesh-mpirun binds them. Without them,
// under `mpirun -np N`, it is the real job: every rank reports its resources (resolve_placement)
// and rank 0 prints. --json / --textproto print the Placement message itself.
#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <string>

#include "cli/commands.h"
#include "cli/flags.h"
#include "comm/topology.h"
#include "coordinator/placement/planner.h"
#include "coordinator/placement/report.h"
#include "model/gguf/gguf.h"

namespace expertmesh::cli {

namespace {

struct PlanOptions {
  std::string model;
  int np = 0;
  std::string hosts;
  std::string rank_memory;
  bool json = false;
  bool textproto = false;
  placement::PlacementFlags placement;
};

// "64G", "512M", "1.5GiB", "123456" -> bytes.
Result<int64_t> parse_size(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  std::string unit = s.substr(used);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  double mul = 0;
  if (unit.empty()) mul = 1;
  if (unit == "K" || unit == "k") mul = 1024.0;
  if (unit == "M" || unit == "m") mul = 1024.0 * 1024;
  if (unit == "G" || unit == "g") mul = 1024.0 * 1024 * 1024;
  if (unit == "T" || unit == "t") mul = 1024.0 * 1024 * 1024 * 1024;
  if (used == 0 || mul == 0 || v < 0)
    return Status::InvalidArgument(fmt::format("--rank-memory: '{}' is not a size (e.g. 64G, 512M)", s));
  return static_cast<int64_t>(v * mul);
}

// The simulated job: reports for `np` ranks (0: as many as --hosts lists), memory overridden by
// --rank-memory.
Result<proto::Placement> simulate(const PlanOptions& o, const placement::ModelShape& shape, int np) {
  EM_ASSIGN_OR_RETURN(topology::Machine machine, topology::discover());
  EM_ASSIGN_OR_RETURN(auto reports, placement::simulated_reports(np, o.hosts, machine));
  if (!o.rank_memory.empty()) {
    EM_ASSIGN_OR_RETURN(int64_t mem, parse_size(o.rank_memory));
    std::map<std::string, int64_t> per_host;
    for (const proto::RankReport& r : reports) ++per_host[r.host()];
    for (proto::RankReport& r : reports) {
      r.set_numa_node(-1);  // unbound: the host's memory is shared evenly by its ranks
      r.set_node_memory_bytes(mem * per_host[r.host()]);
    }
  }
  return placement::placement_for_reports(o.placement, shape, reports);
}

}  // namespace

Status cmd_plan(RankContext& ctx, const std::vector<std::string>& args) {
  PlanOptions o;
  FlagSet fs("plan", "print the placement of a model on N ranks (per-layer split, per-rank bytes, traffic per token)");
  fs.add_string({"-m", "--model"}, &o.model, "FILE", "the GGUF model (only its metadata is read)");
  fs.add_int({"--np"}, &o.np, "N", "simulate a job of N ranks (default: the ranks of this mpirun job)");
  fs.add_string({"--hosts"}, &o.hosts, "H1:N1,H2:N2",
                "simulate hosts with that many ranks each, like this machine (implies --np = the sum)");
  fs.add_string({"--rank-memory"}, &o.rank_memory, "SIZE", "simulate ranks with SIZE bytes each (64G, 512M)");
  fs.add_bool({"--json"}, &o.json, "print the Placement message as JSON");
  fs.add_bool({"--textproto"}, &o.textproto, "print the Placement message as a textproto (a --placement FILE)");
  placement::add_placement_flags(fs, &o.placement);
  EM_RETURN_IF_ERROR(fs.parse(args));
  if (fs.help_requested()) {
    if (ctx.is_root()) std::fputs(fs.usage().c_str(), stdout);
    return Status::Ok();
  }
  if (o.model.empty()) return Status::InvalidArgument("plan: -m MODEL is required");
  if (o.json && o.textproto) return Status::InvalidArgument("plan: --json and --textproto exclude each other");
  EM_ASSIGN_OR_RETURN(auto file, gguf::File::open(o.model));
  EM_ASSIGN_OR_RETURN(placement::ModelShape shape, placement::model_shape(*file));

  int np = o.np;
  if (np == 0 && o.hosts.empty() && !o.placement.cluster.empty()) {
    EM_ASSIGN_OR_RETURN(auto cluster, placement::load_cluster_config(o.placement.cluster));
    for (const auto& h : cluster.hosts()) np += h.ranks_size();
  }
  const bool simulated = np > 0 || !o.hosts.empty() || ctx.world == 1;
  Result<proto::Placement> p = Status::Internal("plan: no placement");
  if (simulated) {
    if (!ctx.is_root()) return Status::Ok();
    p = simulate(o, shape, np > 0 || !o.hosts.empty() ? np : 1);
  } else {
    p = placement::resolve_placement(o.placement, *file, ctx);
    if (!ctx.is_root() || !p.ok()) return p.ok() ? Status::Ok() : p.status();
  }
  if (!p.ok()) return p.status();
  std::string out;
  if (o.json) {
    out = placement::to_json(*p);
  } else if (o.textproto) {
    out = "# proto-file: src/comm/proto/cluster.proto\n# proto-message: expertmesh.proto.Placement\n" +
          placement::to_textproto(*p);
  } else {
    const size_t slash = o.model.find_last_of('/');
    out = placement::format_plan(*p, shape, slash == std::string::npos ? o.model : o.model.substr(slash + 1));
  }
  std::fputs(out.c_str(), stdout);
  if (!out.empty() && out.back() != '\n') std::fputc('\n', stdout);
  return Status::Ok();
}

}  // namespace expertmesh::cli
