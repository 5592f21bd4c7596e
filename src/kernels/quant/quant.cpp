// Quant table assembly and the threaded, deterministic row drivers.
#include "kernels/quant/quant.h"

#include <algorithm>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace expertmesh::quant {

const QuantTable& quant_table() {
  static const QuantTable table = [] {
    QuantTable t{};
    register_float(t);
    register_legacy(t);
    register_kquants(t);
    register_iquants(t);
    register_iqk_k(t);
    register_iqk_ks(t);
    register_trellis(t);
    register_interleaved(t);  // last: builds on the base types' functions
    return t;
  }();
  return table;
}

namespace {

// Splits [0, nrows) into n_threads contiguous chunks aligned to `group` rows and runs f on each.
// The split never changes the result: every row is computed independently.
template <typename Fn>
void parallel_rows(int64_t nrows, int64_t group, int n_threads, Fn&& f) {
  int64_t ngroups = nrows / group;
  int nt = static_cast<int>(std::clamp<int64_t>(n_threads, 1, std::max<int64_t>(ngroups, 1)));
  if (nt <= 1) {
    f(int64_t{0}, nrows);
    return;
  }
  std::vector<std::thread> threads;
  int64_t per = (ngroups + nt - 1) / nt;
  for (int i = 0; i < nt; ++i) {
    int64_t r0 = std::min(ngroups, i * per) * group;
    int64_t r1 = std::min(ngroups, (i + 1) * per) * group;
    if (r0 >= r1) break;
    threads.emplace_back([&, r0, r1] { f(r0, r1); });
  }
  for (auto& th : threads) th.join();
}

// Validates the shape with the registry's own row check (block multiple, overflow) plus whole
// interleave groups, and returns the type and its row size.
Status check_shape(GgmlType type, int64_t nrows, int64_t n_per_row, const TypeTraits** out, int64_t* row_bytes) {
  const TypeTraits* tt = type_traits(type);
  if (!tt) return Status::Unsupported(fmt::format("unknown type id {}", static_cast<int>(type)));
  EM_ASSIGN_OR_RETURN(*row_bytes, row_size_checked(type, n_per_row));
  if (nrows < 0 || nrows % tt->interleave != 0)
    return Status::InvalidArgument(
        fmt::format("{} rows are not a whole number of {}-row groups of {}", nrows, tt->interleave, tt->name));
  *out = tt;
  return Status::Ok();
}

}  // namespace

Status dequantize_rows(GgmlType type, const void* src, float* dst, int64_t nrows, int64_t n_per_row, int n_threads) {
  const TypeTraits* tt = nullptr;
  int64_t rs = 0;
  EM_RETURN_IF_ERROR(check_shape(type, nrows, n_per_row, &tt, &rs));
  ToFloatFn fn = quant_fns(type).to_float;
  if (!fn) return Status::Unsupported(fmt::format("cannot dequantize type {}", tt->name));
  parallel_rows(nrows, tt->interleave, n_threads, [&](int64_t r0, int64_t r1) {
    fn(static_cast<const uint8_t*>(src) + r0 * rs, dst + r0 * n_per_row, r1 - r0, n_per_row);
  });
  return Status::Ok();
}

Status quantize_rows(GgmlType type, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                     const float* imatrix, int n_threads) {
  const TypeTraits* tt = nullptr;
  int64_t rs = 0;
  EM_RETURN_IF_ERROR(check_shape(type, nrows, n_per_row, &tt, &rs));
  QuantizeFn fn = quant_fns(type).quantize;
  if (!fn) return Status::Unsupported(fmt::format("cannot quantize to type {}", tt->name));
  if (quant_fns(type).needs_imatrix && imatrix == nullptr)
    return Status::InvalidArgument(fmt::format("type {} requires an importance matrix (--imatrix)", tt->name));
  parallel_rows(nrows, tt->interleave, n_threads, [&](int64_t r0, int64_t r1) {
    fn(src + r0 * n_per_row, static_cast<uint8_t*>(dst) + r0 * rs, r1 - r0, n_per_row, imatrix);
  });
  return Status::Ok();
}

}  // namespace expertmesh::quant
