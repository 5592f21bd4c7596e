// The subcommand table. Each subcommand lives in its own cmd_<name>.cpp and is registered here
// as data; main() looks the name up, builds nothing else, and reports the returned Status.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"

namespace expertmesh::cli {

// A subcommand gets the arguments after its name. It returns Ok, or a Status that main prints
// (on rank 0, or on the failing rank) before exiting non-zero. Collective: every rank runs it.
using CommandFn = Status (*)(RankContext& ctx, const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;
  CommandFn run;
};

Status cmd_inspect(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_synth(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_convert(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_quantize(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_perplexity(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_imatrix(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_plan(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_run(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_bench(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_sweep(RankContext& ctx, const std::vector<std::string>& args);
Status cmd_serve(RankContext& ctx, const std::vector<std::string>& args);

std::span<const Command> commands();

}  // namespace expertmesh::cli
