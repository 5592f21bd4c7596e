// Dealing a quantization plan's tensors to MPI ranks. Pure functions (no MPI): every rank computes
// the same assignment from the same plan, so no message is needed to agree on it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "coordinator/quantize/plan.h"
#include "model/types.h"

namespace expertmesh {

// Relative cost of producing one element of `dst` from F32 (1.0 = a plain conversion such as
// F16). Measured orders of magnitude of our reference quantizers: legacy and k-quants are cheap,
// the lattice (IQ1/IQ2/IQ3) and IQ*_K searches cost more, the trellis (KT) types the most.
double quantize_type_cost(GgmlType dst);

// Estimated cost of one planned tensor: elements × type cost for quantized tensors, bytes for
// copies and repacks (I/O bound).
double tensor_cost(const TensorPlan& tp);

// Deals tensors to `world` ranks so the largest per-rank total cost is small: longest
// processing time first (tensors by decreasing cost, ties by index; each to the least-loaded
// rank, ties to the lowest rank). Returns owner[i] in [0, world). Deterministic; every tensor is
// dealt exactly once; the maximum load is at most the ideal share plus the largest single cost.
std::vector<int> deal_tensors(std::span<const double> costs, int world);

}  // namespace expertmesh
