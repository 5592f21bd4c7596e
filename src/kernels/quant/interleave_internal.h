// Row-interleaved types (_R4 / _R8 / _R16): the generic machinery shared by every repack family
// file (interleave_*.cpp). Internal to kernels/quant.
//
// An interleaved type R stores `rows` consecutive rows of its base type B together. A group of
// rows is laid out as
//     [rows × R's per-row meta]  [unit 0] [unit 1] ...
// where a "unit" holds the same `kUnitElems` columns of all the rows (one super-block of B per
// row, or a pair of columns for BF16_R16), and the per-row meta (the f32 row scales of
// IQ4_KS / IQ5_KS / IQ2_BN / Q8_KV) of all rows comes first. Each type only describes how one
// unit is shuffled, in a Spec struct:
//
//   struct Spec {
//     static constexpr GgmlType kType, kBase;
//     static constexpr int kUnitElems;      // columns per unit (a multiple of B's block size)
//     static constexpr int kQHelperBlock;   // the block size of the peer's QHelper imatrix
//                                           // sanitising in quantize_<r>, 0 if it passes the
//                                           // imatrix to quantize_<b> unchanged
//     static void repack(const uint8_t* const* x, uint8_t* y);  // x[k]: unit of base row k
//     static void unpack(const uint8_t* y, uint8_t* const* x);  // the inverse
//     // optional:
//     static void dequant(const uint8_t* meta, const uint8_t* y, float* const* out);
//         // the peer's dequantize_row_<r> for one unit (out[k]: row k's kUnitElems floats),
//         // for types whose R dequantizer does not round exactly like B's; meta is the group's
//         // row meta
//     static void finish_row(uint8_t* row, int64_t n);  // unpack: fill B's derived meta
//     static void quantize(const float*, void*, int64_t, int64_t, const float*);
//         // a quantizer of its own where the peer's quantize_<r> is not quantize_<b> + repack
//   };
//
// From a Spec, register_spec<S> derives the QuantTable entry: repack / unpack (always), and
// to_float = unpack a group, then B's to_float (or S::dequant), quantize = B's quantize row by
// row (imatrix sanitised as the peer's QHelper does) then repack — each only when B's function
// exists (register_interleaved runs after every base family has filled the table).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"
#include "model/types.h"

namespace expertmesh::quant::interleave {

// Quantized buffers carry no alignment promise: blocks are read and written through memcpy.
template <typename B>
inline B load(const uint8_t* p) {
  B b;
  std::memcpy(&b, p, sizeof(B));
  return b;
}
template <typename B>
inline void store(uint8_t* p, const B& b) {
  std::memcpy(p, &b, sizeof(B));
}
inline float load_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof(f));
  return f;
}

// Sizes of one interleave group of a Spec for rows of n columns.
struct Geometry {
  int rows = 0;             // rows per group
  int64_t units = 0;        // units per row
  int64_t base_unit = 0;    // bytes of one base row's unit
  int64_t r_unit = 0;       // bytes of one interleaved unit (all rows of the group)
  int64_t base_meta = 0;    // base row meta bytes
  int64_t r_meta = 0;       // interleaved meta bytes per row (copied from the start of base meta)
  int64_t base_row = 0;     // bytes of one base row
  int64_t r_group = 0;      // bytes of one interleaved group
};

template <class S>
Geometry geometry(int64_t n) {
  const TypeTraits* rt = type_traits(S::kType);
  const TypeTraits* bt = type_traits(S::kBase);
  Geometry g;
  g.rows = rt->interleave;
  g.units = n / S::kUnitElems;
  g.base_unit = int64_t{bt->type_size} * S::kUnitElems / bt->block_size;
  // Usually rows * base_unit; not for Q8_K_R8 / Q8_K_R16, whose fp16 scales replace Q8_K's f32
  // scale, sum and bsums.
  g.r_unit = int64_t{rt->type_size} * S::kUnitElems / rt->block_size * g.rows;
  g.base_meta = bt->row_meta_size;
  g.r_meta = rt->row_meta_size;
  g.base_row = row_size(S::kBase, n);
  g.r_group = row_size(S::kType, n) * g.rows;
  return g;
}

template <class S>
concept HasDequant = requires(const uint8_t* p, float* const* y) { S::dequant(p, p, y); };
template <class S>
concept HasFinishRow = requires(uint8_t* p) { S::finish_row(p, int64_t{0}); };
template <class S>
concept HasQuantize = requires(const float* x, void* y) { S::quantize(x, y, int64_t{0}, int64_t{0}, x); };

// One group: `rows` base rows starting at src (base_row bytes apart) -> one interleaved group.
template <class S>
void repack_group(const Geometry& g, const uint8_t* src, uint8_t* dst) {
  const uint8_t* x[16];
  for (int k = 0; k < g.rows; ++k) {
    const uint8_t* row = src + k * g.base_row;
    std::memcpy(dst + k * g.r_meta, row, static_cast<size_t>(g.r_meta));
    x[k] = row + g.base_meta;
  }
  uint8_t* y = dst + g.rows * g.r_meta;
  for (int64_t u = 0; u < g.units; ++u, y += g.r_unit) {
    S::repack(x, y);
    for (int k = 0; k < g.rows; ++k) x[k] += g.base_unit;
  }
}

template <class S>
void unpack_group(const Geometry& g, int64_t n, const uint8_t* src, uint8_t* dst) {
  uint8_t* x[16];
  for (int k = 0; k < g.rows; ++k) {
    uint8_t* row = dst + k * g.base_row;
    std::memset(row, 0, static_cast<size_t>(g.base_meta));
    std::memcpy(row, src + k * g.r_meta, static_cast<size_t>(g.r_meta));
    x[k] = row + g.base_meta;
  }
  const uint8_t* y = src + g.rows * g.r_meta;
  for (int64_t u = 0; u < g.units; ++u, y += g.r_unit) {
    S::unpack(y, x);
    for (int k = 0; k < g.rows; ++k) x[k] += g.base_unit;
  }
  if constexpr (HasFinishRow<S>) {
    for (int k = 0; k < g.rows; ++k) S::finish_row(dst + k * g.base_row, n);
  }
}

template <class S>
void repack_rows(const void* src, void* dst, int64_t nrows, int64_t n) {
  const Geometry g = geometry<S>(n);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; r += g.rows, s += g.rows * g.base_row, d += g.r_group) repack_group<S>(g, s, d);
}

template <class S>
void unpack_rows(const void* src, void* dst, int64_t nrows, int64_t n) {
  const Geometry g = geometry<S>(n);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; r += g.rows, s += g.r_group, d += g.rows * g.base_row) unpack_group<S>(g, n, s, d);
}

// to_float: the type's own unit dequantizer, or unpack + the base type's to_float.
template <class S>
void to_float_rows(const void* src, float* dst, int64_t nrows, int64_t n) {
  const Geometry g = geometry<S>(n);
  const auto* s = static_cast<const uint8_t*>(src);
  if constexpr (HasDequant<S>) {
    for (int64_t r = 0; r < nrows; r += g.rows, s += g.r_group, dst += g.rows * n) {
      float* y[16];
      for (int k = 0; k < g.rows; ++k) y[k] = dst + k * n;
      const uint8_t* unit = s + g.rows * g.r_meta;
      for (int64_t u = 0; u < g.units; ++u, unit += g.r_unit) {
        S::dequant(s, unit, y);
        for (int k = 0; k < g.rows; ++k) y[k] += S::kUnitElems;
      }
    }
  } else {
    const ToFloatFn base = quant_fns(S::kBase).to_float;
    std::vector<uint8_t> scratch(static_cast<size_t>(g.rows * g.base_row));
    for (int64_t r = 0; r < nrows; r += g.rows, s += g.r_group, dst += g.rows * n) {
      unpack_group<S>(g, n, s, scratch.data());
      base(scratch.data(), dst, g.rows, n);
    }
  }
}

// ik's QHelper::row_weights (iqk_quantize.cpp): a block of `block` imatrix weights is replaced by
// 1e-9 everywhere when the weights, the values or their product are all (nearly) zero there, so
// that the base quantizer never sees an all-zero weight block.
void sanitise_weights(const float* imatrix, const float* x, int64_t n, int block, float* out);

// quantize: the base type's quantizer row by row into a group of base rows, then repack.
template <class S>
void quantize_rows_generic(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  const Geometry g = geometry<S>(n);
  const QuantizeFn base = quant_fns(S::kBase).quantize;
  std::vector<uint8_t> scratch(static_cast<size_t>(g.rows * g.base_row));
  std::vector<float> w(imatrix && S::kQHelperBlock > 0 ? static_cast<size_t>(n) : 0);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; r += g.rows, d += g.r_group) {
    for (int k = 0; k < g.rows; ++k, src += n) {
      const float* wk = imatrix;
      if (!w.empty()) {
        sanitise_weights(imatrix, src, n, S::kQHelperBlock, w.data());
        wk = w.data();
      }
      base(src, scratch.data() + k * g.base_row, 1, n, wk);
    }
    repack_group<S>(g, scratch.data(), d);
  }
}

// Fills t[S::kType]. `base` is the base type's (already registered) entry.
template <class S>
void register_spec(QuantTable& t) {
  const QuantFns& base = t[static_cast<size_t>(S::kBase)];
  QuantFns& e = t[static_cast<size_t>(S::kType)];
  e.repack = repack_rows<S>;
  e.unpack = unpack_rows<S>;
  e.needs_imatrix = base.needs_imatrix;
  if (HasDequant<S> || base.to_float) e.to_float = to_float_rows<S>;
  if constexpr (HasQuantize<S>) {
    e.quantize = S::quantize;
  } else {
    if (base.quantize) e.quantize = quantize_rows_generic<S>;
  }
}

// Per-family registration (interleave_*.cpp), called by register_interleaved.
void register_interleaved_legacy(QuantTable& t);   // Q4_0 Q5_0 Q6_0 Q8_0 IQ4_NL MXFP4 Q8_KV Q8_K BF16 IQ2_BN
void register_interleaved_kquants(QuantTable& t);  // Q2_K..Q6_K
void register_interleaved_iquants(QuantTable& t);  // IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_XS
void register_interleaved_iqk(QuantTable& t);      // IQ2_K IQ3_K IQ4_K IQ5_K IQ4_KS IQ5_KS
void register_interleaved_iq1(QuantTable& t);      // IQ1_S_R4 IQ1_M_R4 (own formats)

}  // namespace expertmesh::quant::interleave
