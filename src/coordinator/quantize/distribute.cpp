#include "coordinator/quantize/distribute.h"

#include <algorithm>
#include <numeric>

namespace expertmesh {

double quantize_type_cost(GgmlType dst) {
  const TypeTraits* tt = type_traits(dst);
  if (!tt) return 1.0;
  // Interleaved types cost their base type's quantization plus a cheap repack.
  const GgmlType base = tt->interleave > 1 ? tt->base : dst;
  switch (base) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      return 1.0;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q6_0:
    case GgmlType::Q8_0:
    case GgmlType::Q8_KV:
    case GgmlType::MXFP4:
      return 4.0;
    case GgmlType::IQ4_NL:
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return 20.0;
    case GgmlType::IQ1_KT:
    case GgmlType::IQ2_KT:
    case GgmlType::IQ3_KT:
    case GgmlType::IQ4_KT:
      return 2000.0;
    case GgmlType::IQ1_S:
    case GgmlType::IQ1_M:
    case GgmlType::IQ2_XXS:
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
      return 200.0;
    default:  // IQ*_K, IQ*_KS, IQ4_KSS, IQ2_KL, BN types
      return 60.0;
  }
}

double tensor_cost(const TensorPlan& tp) {
  if (tp.action != TensorAction::kQuantize) return static_cast<double>(tp.src_bytes) * 0.05;
  return static_cast<double>(tp.n_elements) * quantize_type_cost(tp.dst_type);
}

std::vector<int> deal_tensors(std::span<const double> costs, int world) {
  world = std::max(world, 1);
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<size_t>(world), 0.0);
  std::vector<int> owner(costs.size(), 0);
  for (size_t i : order) {
    const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = static_cast<int>(r);
    load[r] += costs[i];
  }
  return owner;
}

}  // namespace expertmesh
