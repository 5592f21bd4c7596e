// Distributed imatrix: every rank accumulates the inputs of the matmuls it runs (its layers,
// its heads' columns of attn_output, its experts), and rank 0 gathers all ranks' statistics on
// every save. The merge is deterministic and independent of how work was dealt:
//   * per element (entry, expert, column), the lowest rank with a non-zero count supplies its
//     sum and count. Inputs a rank owns alone (its experts, its attn_output columns) come from
//     that rank; inputs several ranks compute identically (q/k/v and the router when heads or
//     experts are split, which every rank of the stage reads) are taken once, not summed;
//   * ncall is the maximum over ranks; the driver then sets it from its call counts
//     (ImatrixStats::set_ncalls), since a rank whose experts got no token in a call does not
//     count that call.
#pragma once

#include <optional>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"
#include "coordinator/imatrix/stats.h"

namespace expertmesh::coordinator::imatrix {

// Collective over ctx.comm. Rank 0 with world > 1 gets the merged statistics; other ranks, and
// rank 0 alone in its communicator, get nullopt (a single rank's statistics need no merge).
Result<std::optional<ImatrixStats>> gather_stats(const RankContext& ctx, const ImatrixStats& local);

// Collective over ctx.comm: rank 0 gets every rank's `mine` in rank order (its own first);
// the other ranks get an empty list.
Result<std::vector<std::vector<char>>> gather_bytes(const RankContext& ctx, const std::vector<char>& mine);

// The merge rule above, applied to `from` into `into` (exposed for tests).
Status merge_rank(ImatrixStats& into, const std::map<std::string, StatsEntry>& from);

}  // namespace expertmesh::coordinator::imatrix
