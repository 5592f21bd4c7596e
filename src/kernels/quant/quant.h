// Reference quantize / dequantize for every ik_llama.cpp weight type: the specification every
// SIMD and CUDA kernel is tested against (ARCHITECTURE.md §5). Scalar, readable, bit-exact with
// the peer's reference `dequantize_row_*` on every file in ../shared/golden/types.
//
// Row contract: a row of n_per_row elements occupies row_size(type, n_per_row) bytes: row meta
// (ik's per-row scales) then blocks. Per-row metadata and interleaving are handled here, in
// one place: family code sees whole rows (and, for interleaved types, whole row groups).
//
// Thread-safety: all functions are pure; the tables are immutable after first use.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "model/types.h"

namespace expertmesh::quant {

// Dequantize `nrows` rows of `n_per_row` elements. src points at the first row (its meta).
// For interleaved types nrows is a multiple of the interleave.
using ToFloatFn = void (*)(const void* src, float* dst, int64_t nrows, int64_t n_per_row);

// Quantize `nrows` rows. `imatrix` is n_per_row importance weights (mean of x² per column, as
// read from an imatrix .dat) or nullptr. Writes nrows * row_size bytes to dst.
// Precondition: n_per_row % block_size == 0 and every input value is finite (checked by callers).
using QuantizeFn = void (*)(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);

// Convert between an interleaved type and its base type: `nrows` (a multiple of the interleave)
// rows of n_per_row elements. repack: base -> interleaved; unpack: interleaved -> base.
using RepackFn = void (*)(const void* src, void* dst, int64_t nrows, int64_t n_per_row);

struct QuantFns {
  ToFloatFn to_float = nullptr;
  QuantizeFn quantize = nullptr;  // for interleaved types: quantize base + repack (filled generically)
  RepackFn repack = nullptr;      // interleaved types only
  RepackFn unpack = nullptr;      // interleaved types only
  bool needs_imatrix = false;     // ggml_quantize_requires_imatrix (IQ2_XXS, IQ2_XS, IQ1_S)
};

using QuantTable = std::array<QuantFns, static_cast<size_t>(GgmlType::kCount)>;

// Immutable table of every type's functions (entries are null where a type has none).
const QuantTable& quant_table();
inline const QuantFns& quant_fns(GgmlType t) { return quant_table()[static_cast<size_t>(t)]; }

// Each family file fills its types' entries. Called once by quant_table().
void register_float(QuantTable& t);       // float_types.cpp: F32, F16, BF16 (+ F64/I* to_float)
void register_legacy(QuantTable& t);      // legacy.cpp: Q4_0 Q4_1 Q5_0 Q5_1 Q6_0 Q8_0 Q8_1 IQ4_NL MXFP4 Q8_KV
void register_kquants(QuantTable& t);     // kquants.cpp: Q2_K..Q6_K, Q8_K
void register_iquants(QuantTable& t);     // iquants*.cpp: IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_XS
void register_iqk_k(QuantTable& t);       // iqk_k*.cpp: IQ2_K IQ3_K IQ4_K IQ5_K IQ6_K IQ2_KL
void register_iqk_ks(QuantTable& t);      // iqk_ks*.cpp: IQ2_KS IQ3_KS IQ4_KS IQ5_KS IQ4_KSS
void register_trellis(QuantTable& t);     // trellis.cpp: IQ1_KT..IQ4_KT
void register_interleaved(QuantTable& t); // interleave.cpp: every _R4/_R8/_R16 (after the base types)

// Threaded, deterministic drivers (the same bytes for any n_threads). Rows are split in chunks
// on interleave-group boundaries. Errors: unknown type, no function for the type, bad row size.
Status dequantize_rows(GgmlType type, const void* src, float* dst, int64_t nrows, int64_t n_per_row, int n_threads);
Status quantize_rows(GgmlType type, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                     const float* imatrix, int n_threads);

}  // namespace expertmesh::quant
