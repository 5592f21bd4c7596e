// Human-readable placement reports and per-token traffic estimates (`expertmesh plan`).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "coordinator/placement/planner.h"

namespace expertmesh::placement {

// Expected communication per generated token (one row through the model), activations in F32.
// The runtime's stage sums are gather-based (src/comm/cluster.h): each rank of an S-rank stage
// sends and receives (S - 1) x payload.
struct TrafficEstimate {
  int64_t allreduce_payload_per_layer = 0;  // bytes summed per layer over the stage (attention + FFN/MoE)
  int64_t allreduce_payload = 0;            // the same over all layers
  int64_t allreduce_rank_bytes = 0;         // bytes one rank of the widest stage sends + receives for them
  int64_t pipeline_bytes = 0;               // hidden states between stages (n_stages - 1 sends)
  int64_t logits_gather_bytes = 0;          // vocabulary slices gathered to rank 0 for sampling
  int64_t total() const { return allreduce_payload + pipeline_bytes + logits_gather_bytes; }
};
TrafficEstimate estimate_traffic(const proto::Placement& p, const ModelShape& m);

// Bytes `rank` holds, by TensorKind (index = static_cast<int>(kind)).
std::array<int64_t, kTensorKindCount> rank_bytes_by_kind(const proto::Placement& p, const ModelShape& m, int rank);

// The text `expertmesh plan` prints: stages, per layer the stage, heads, FFN rows and experts per
// rank, per rank bytes by tensor kind, total and share of the model, and the traffic estimate.
std::string format_plan(const proto::Placement& p, const ModelShape& m, const std::string& model_name);

}  // namespace expertmesh::placement
