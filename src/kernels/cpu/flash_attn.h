// Flash attention over the KV cache (issue 13): causal softmax(q·Kᵀ·scale)·V for the queries
// that share ONE kv head of one sequence, reading K and V directly from the cache rows in the
// cache type (F16, BF16, Q8_0, F32), with an online softmax over key tiles. Memory is tiles
// only: a kernel never holds more than kFlashTile keys' scores per query block, so nothing is
// proportional to n_kv × n_q (or to n_kv at all).
//
// The canonical computation of one query q at position pos (every ISA and every batching follows
// exactly this order; between ISAs only exp differs, and the scalar reference forms the products
// of a_j and O with plain multiply-adds instead of fma):
//  - keys are cut into tiles of kFlashTile positions starting at position 0, and tiles into
//    splits of kFlashSplit positions starting at 0 (the boundaries depend on the key position
//    only, never on the batch);
//  - per split, from an empty state: per tile t (keys j of the tile with j <= pos):
//      a_j = Σ_d K_j[d]·q[d]   (F32 fma chain over d = 0..head_dim-1, starting from 0; K_j
//                               widened exactly from the cache type, Q8_0: d·q)
//      m_t = max(m, max_j a_j·scale)          (a_j·scale rounded; masked keys are -inf)
//      α = exp(m - m_t),  p_j = exp(fma(a_j, scale, -m_t))   (exp(x) = 0 below about -87)
//      l = fma(l, α, Σ_j p_j)                 (Σ in j order, from 0)
//      O[d] = (O[d]·α) then O[d] = fma(V_j[d], p_j, O[d]) for j in order
//  - splits are folded left to right into the total with flash_fold (below), a split without
//    visible keys being skipped; the result is O_total[d] / l_total.
// A query's result therefore depends on its own q, pos and the cache only: not on the other
// queries of the call, the query blocking, the key range split into calls, or the thread count.
//
// Thread split: a caller may run each split of a query as its own call in partial mode (m/l
// set) and fold the partial states in split order with FlashAttnKernels::merge; that gives the
// same bits as one call over all the splits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "model/types.h"

namespace expertmesh::cpu {

inline constexpr int64_t kFlashTile = 64;      // keys per tile; tiles start at multiples of it
inline constexpr int64_t kFlashSplit = 512;    // positions per split (a multiple of kFlashTile)
inline constexpr int64_t kFlashMaxBlock = 64;  // queries a SIMD kernel processes together

struct FlashAttnArgs {
  int64_t head_dim = 0;
  float scale = 1.0f;
  // K and V of one kv head of one sequence: the row of position p starts at k + p * k_row
  // bytes (v + p * v_row), head_dim values of type_k (type_v). Only positions in
  // [kv_begin, min(kv_end, max pos + 1)) are read. kv_begin is a multiple of kFlashSplit.
  GgmlType type_k = GgmlType::F16, type_v = GgmlType::F16;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_row = 0, v_row = 0;
  int64_t kv_begin = 0, kv_end = 0;
  // Queries: n_rows rows × n_heads heads; query (r, h) is q_rows[r] + h * head_dim (head_dim
  // floats) and sees the keys at positions <= pos[r] (0 <= pos[r] < 2^24).
  int64_t n_rows = 0, n_heads = 0;
  const float* const* q_rows = nullptr;
  const int32_t* pos = nullptr;
  // Result of query (r, h) at out_rows[r] + h * head_dim. Normal mode (m == nullptr): the
  // attention output. Partial mode (m, l set): the unnormalized state of the key range,
  // O at out_rows, m[r * n_heads + h], l[...]; a query that sees no key of the range gets
  // m = -inf, l = 0, O = 0. In partial mode [kv_begin, kv_end) must lie within one split.
  float* const* out_rows = nullptr;
  float* m = nullptr;
  float* l = nullptr;
  float* scratch = nullptr;  // flash_attn_scratch_floats(head_dim) floats, 64-byte aligned
};

// One ISA's kernels. Thread-safe (no state; each call uses only its arguments and scratch) and
// allocation-free.
struct FlashAttnKernels {
  const char* name = "scalar";
  // The queries of `a` (any number; the kernel blocks them itself).
  void (*attend)(const FlashAttnArgs& a) = nullptr;
  // Folds n_parts partial states of one query in order (part i: m[i * ml_stride],
  // l[i * ml_stride], O at o + i * o_stride) and writes O_total / l_total to out (head_dim
  // floats). Parts with m = -inf are skipped; with none left, out is all zeros.
  void (*merge)(int64_t n_parts, const float* m, const float* l, int64_t ml_stride, const float* o, int64_t o_stride,
                int64_t head_dim, float* out) = nullptr;
};

// Scratch a kernel needs (floats), for any number of queries.
inline int64_t flash_attn_scratch_floats(int64_t head_dim) {
  return 2 * kFlashTile * head_dim + 3 * head_dim * kFlashMaxBlock + kFlashTile * kFlashMaxBlock + 8 * kFlashMaxBlock;
}

// The kernels of one ISA (the caller checks cpu_supports(isa) first, e.g. via Kernels::isa).
const FlashAttnKernels& flash_attn_kernels(Isa isa);

// The per-ISA variants (the x86 ones are compiled in on x86 only).
const FlashAttnKernels& flash_attn_ref();
const FlashAttnKernels* flash_attn_avx2();
const FlashAttnKernels* flash_attn_avx512();

// The fold of one split's state (ms, ls, Os) into a query's total (m, l, O), applied by every
// kernel and merge, element by element exactly these IEEE operations:
//   split empty (ms = -inf): nothing; total empty (m = -inf): (m, l, O) = (ms, ls, Os);
//   else mn = max(m, ms), a = expf(m - mn), b = expf(ms - mn), l = fma(ls, b, l·a),
//        O[d] = fma(Os[d], b, O[d]·a), m = mn.
// `static`: every translation unit (each compiled with its own ISA flags) keeps its own copy.
struct FlashFoldCoeffs {
  float mn, a, b;
};
static inline FlashFoldCoeffs flash_fold_coeffs(float m, float ms) {
  const float mn = std::max(m, ms);
  return {mn, std::exp(m - mn), std::exp(ms - mn)};
}
static inline void flash_fold(float& m, float& l, float* o, int64_t o_stride, float ms, float ls, const float* os,
                              int64_t os_stride, int64_t head_dim) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (ms == kNegInf) return;
  if (m == kNegInf) {
    m = ms;
    l = ls;
    for (int64_t d = 0; d < head_dim; ++d) o[d * o_stride] = os[d * os_stride];
    return;
  }
  const FlashFoldCoeffs c = flash_fold_coeffs(m, ms);
  l = std::fma(ls, c.b, l * c.a);
  for (int64_t d = 0; d < head_dim; ++d) o[d * o_stride] = std::fma(os[d * os_stride], c.b, o[d * o_stride] * c.a);
  m = c.mn;
}
// The attention output of a total state: O[d] / l, or zeros for an empty state.
static inline void flash_finalize(float m, float l, const float* o, int64_t o_stride, int64_t head_dim, float* out) {
  const bool empty = m == -std::numeric_limits<float>::infinity();
  for (int64_t d = 0; d < head_dim; ++d) out[d] = empty ? 0.0f : o[d * o_stride] / l;
}

}  // namespace expertmesh::cpu
