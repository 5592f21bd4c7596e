// Shared pieces of the planner's .cpp files (not part of the public API).
#pragma once

#include <optional>
#include <regex>
#include <vector>

#include "coordinator/placement/planner.h"

namespace expertmesh::placement::internal {

// The overrides compiled once. Errors name the pattern.
struct CompiledOverride {
  proto::TensorOverride rule;
  std::regex re;
};
Result<std::vector<CompiledOverride>> compile_overrides(const std::vector<proto::TensorOverride>& rules);
// First rule with a rank (rank<N>) whose pattern is found in `name` (std::regex_search), or
// nullptr. Ranks and devices are resolved independently: the first matching rule with a rank
// decides the owner, the first matching rule with a device decides where the bytes live.
const proto::TensorOverride* first_rank_rule(const std::vector<CompiledOverride>& rules, const std::string& name);

// Units a rank<N> override can pin to one rank.
enum class Unit { kAttention, kFfn, kExperts, kOutput, kNone };
Unit unit_of(Split s);

// Ranks of each stage (stage order), and the stage of each layer.
struct Layout {
  std::vector<std::vector<int>> stages;
  std::vector<int> layer_stage;
};

// Fills every layer's heads/ffn_rows/experts left empty in `p` (and output_vocab), balancing bytes
// per rank as the planner does; keeps what `p` already has. `p` must carry `layout` in stages and
// layers (layer and stage set).
Status deal_layers(const PlacementRequest& req, const Layout& layout, const std::vector<CompiledOverride>& rules,
                   proto::Placement* p);

// Recomputes every TensorLocation (bytes and device) from the ranges/experts in `p`, records the
// applied overrides, then checks each rank's bytes against its memory. Errors name the rank.
Status place_tensors(const PlacementRequest& req, const std::vector<CompiledOverride>& rules, proto::Placement* p);

// Bytes of `rank`'s part of tensor t in layer placement l (0 when it holds none). Global tensors
// pass l == nullptr.
int64_t slice_bytes(const ModelShape& m, const TensorShape& t, const proto::Placement& p,
                    const proto::LayerPlacement* l, int rank);

// attn_output / ffn_down: split by output rows (worker::out_rows_by_stage) over the ranks of the
// layer's stage that own heads / FFN rows, not by a range of the placement.
bool is_out_rows(Split s);
// Bytes of those rows of t that `rank` holds under layer placement l (its heads or ffn_rows set).
int64_t out_rows_bytes(const TensorShape& t, const proto::Placement& p, const proto::LayerPlacement& l, int rank);

// Human-readable byte count: "1.25 GiB", "312.0 KiB", "17 B".
std::string format_bytes(double bytes);

}  // namespace expertmesh::placement::internal
