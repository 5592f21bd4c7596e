// Shared by the x86 k-quant GEMM kernels (x86/gemm_kquants_{avx2,avx512}.cpp; the specification
// is ref/gemm_kquants_ref.cpp): the SIMD Q8K activation quantizers, the Q4_K scale unpacking,
// the layout of a weight tile unpacked into GemmArgs::scratch, and the 256-bit code both
// variants run (GEMV driver, tile unpacking, tile loop).
//
// This header is included by translation units compiled with different -m flags, so its helpers
// have internal linkage (an inline function with external linkage could be emitted with AVX512
// instructions in one unit and picked by the linker for the AVX2 one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <utility>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/prefetch_x86.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"
#endif

// Full unrolling of the fixed-trip loops (tokens, rows, columns) of the SIMD kernels, so that
// their arrays of accumulators live in registers: GCC -O2 does not peel them by itself.
#define EM_KQ_UNROLL _Pragma("GCC unroll 16")

namespace expertmesh::cpu {

// One row of n floats (n % 256 == 0, values finite) into n / 256 BlockQ8K: the same bits as
// quantize_act_ref(ActType::kQ8K, x, out, n). out has no alignment requirement beyond 4 bytes.
// Require AVX2+FMA (resp. AVX512 F/BW/VL) at run time.
void quantize_act_q8k_avx2(const float* x, void* out, int64_t n);
void quantize_act_q8k_avx512(const float* x, void* out, int64_t n);

namespace kquants_detail {
namespace {

// The 8 scales (sc[0..7]) and 8 mins (mn[0..7]) of a Q4_K block's 12 packed bytes, the same
// values as quant::kq::scale_min_k4(j, ...) for j = 0..7 (4 bytes at a time).
inline void unpack_q4k_scales(const uint8_t* packed, uint8_t* sc, uint8_t* mn) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  const uint32_t sc_lo = w[0] & 0x3f3f3f3fu;
  const uint32_t mn_lo = w[1] & 0x3f3f3f3fu;
  const uint32_t sc_hi = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}

}  // namespace

// Unpacked tile (the GEMM path, nt large). Weight rows are taken 8 at a time (a "group"; a last
// partial group repeats its last row). For each group and super-block of 256 columns:
//   q[64][8][4]  int8/uint8 quants: q[c][r][k] is column 4c + k of row r, so one 32-byte load
//                holds 4 columns of all 8 rows and a broadcast 4-byte activation feeds them all
//                (Q4_K: 0..15, Q6_K: 0..63; Q6_K's offset -32 comes in through corr and bsums).
//   Q4_K: sc[8][8]  int32 per (sub-block j, row): AVX512 the scale, AVX2 (sc | sc << 16);
//         mn[8][8]  int32 (m_2k | m_2k+1 << 16) per (k < 4, row), paired with bsum_pairs();
//                   k >= 4 unused;
//         d[8], dmin[8] floats.
//   Q6_K: sc[16][8] int32 per (group k of 16, row): AVX512 the scale, AVX2 (sc | sc << 16);
//         corr[8][8] int32 (-32·sc_2k | -32·sc_2k+1 << 16) per (k, row), paired with
//         bsums[2k], bsums[2k+1];  d[8] floats.
// Bytes per row per super-block: Q4_K 328, Q6_K 356, within gemm_scratch_bytes' 384.
inline constexpr int kGroupRows = 8;
// Byte offsets inside one group × super-block of the tile.
inline constexpr size_t kQ4kSc = 2048, kQ4kMn = 2304, kQ4kD = 2560, kQ4kDmin = 2592, kQ4kGroupBlockBytes = 2624;
inline constexpr size_t kQ6kSc = 2048, kQ6kCorr = 2560, kQ6kD = 2816, kQ6kGroupBlockBytes = 2848;
static_assert(kQ4kGroupBlockBytes == kQ4kDmin + 32 && kQ6kGroupBlockBytes == kQ6kD + 32);
// gemm_scratch_bytes(n) gives each of the 64 rows n + n/2 + 64 bytes, 384 per super-block.
static_assert(kQ4kGroupBlockBytes <= 384 * kGroupRows && kQ6kGroupBlockBytes <= 384 * kGroupRows);

namespace {

#if defined(__AVX2__)
// ---- 256-bit helpers shared by the AVX2 and AVX512 variants ----

using quant::fp16_to_f32;
using quant::kq::BlockQ4K;
using quant::kq::BlockQ6K;

// GEMV path: weight rows and tokens per pass.
inline constexpr int kGemvRows = 4;
inline constexpr int64_t kGemvTokens = 4;

inline __m256i loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline void storeu(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }
inline __m256i bcast_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline const BlockQ8K* act_row(const GemmArgs& g, int64_t t) {
  return reinterpret_cast<const BlockQ8K*>(g.a + size_t(t) * g.a_stride);
}
inline const uint8_t* weight_row(const GemmArgs& g, int64_t r) {
  return g.w + size_t(std::min(r, g.nr - 1)) * g.w_stride;  // rows past nr repeat the last one
}

inline void store_rows4(const GemmArgs& g, int64_t t, int64_t r0, __m128 v) {
  float tmp[4];
  _mm_storeu_ps(tmp, v);
  const int64_t rows = std::min<int64_t>(4, g.nr - r0);
  for (int64_t k = 0; k < rows; ++k) g.y[t * g.ldy + r0 + k] = tmp[k];
}

// The 8 vectors of 32 quants (0..63) of a Q6_K block: vector m holds weights 32m..32m+31.
inline void unpack_q6k(const BlockQ6K& x, __m256i* v) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
  const __m256i mc = _mm256_set1_epi8(0x0C), m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8(char(0xC0));
  EM_KQ_UNROLL for (int h = 0; h < 2; ++h) {
    const __m256i ql0 = loadu(x.ql + 64 * h), ql1 = loadu(x.ql + 64 * h + 32), qh = loadu(x.qh + 32 * h);
    v[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
    v[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, mc), 2));
    v[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
    v[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_srli_epi16(_mm256_and_si256(qh, mc0), 2));
  }
}

// GEMV: kGemvRows rows × T tokens per pass. Row (one per ISA and type) unpacks one weight block
// in its constructor; row.dot(a) returns 8 int32 lanes: for Q6_K (kHasMin false) lanes summing
// to S; for Q4_K hadd(X, Y) of the lanes X summing to S and Y summing to M. The rows are read
// one after the other, kGemvChunk blocks at a time (so the weights stream in address order,
// which the hardware prefetchers follow), and the 4 rows' vectors of each block are reduced
// together before the canonical float steps, block by block in column order.
inline constexpr int64_t kGemvChunk = 16;

template <class Row, int T>
void gemv_rows(const GemmArgs& g, int64_t r0, int64_t t0, const typename Row::Consts& consts) {
  using Block = typename Row::Block;
  static_assert(kGemvRows == 4);
  const int64_t nb = g.n / 256;
  const Block* w[kGemvRows];
  EM_KQ_UNROLL for (int k = 0; k < kGemvRows; ++k) w[k] = reinterpret_cast<const Block*>(weight_row(g, r0 + k));
  const BlockQ8K* a[T];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) a[t] = act_row(g, t0 + t);
  __m128 acc[T];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) acc[t] = _mm_setzero_ps();
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6), odd = _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7);
  for (int64_t b0 = 0; b0 < nb; b0 += kGemvChunk) {
    const int64_t nc = std::min(kGemvChunk, nb - b0);
    __m256i z[kGemvRows][kGemvChunk][T];
    alignas(8) uint16_t dh[kGemvChunk][kGemvRows], mh[kGemvChunk][kGemvRows] = {};
    EM_KQ_UNROLL for (int k = 0; k < kGemvRows; ++k) {
      for (int64_t c = 0; c < nc; ++c) {
        const Block& x = w[k][b0 + c];
        prefetch_lines(reinterpret_cast<const uint8_t*>(&x) + kGemvPrefetchAhead, sizeof(Block));
        dh[c][k] = x.d;
        if constexpr (Row::kHasMin) mh[c][k] = x.dmin;
        const Row row(x, consts);
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) z[k][c][t] = row.dot(a[t][b0 + c]);
      }
    }
    for (int64_t c = 0; c < nc; ++c) {
      const __m128 dv = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)dh[c]));
      const __m128 mv = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)mh[c]));
      EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
        const __m256i w01 = _mm256_hadd_epi32(z[0][c][t], z[1][c][t]);
        const __m256i w23 = _mm256_hadd_epi32(z[2][c][t], z[3][c][t]);
        const __m128 ad = _mm_set1_ps(a[t][b0 + c].d);
        if constexpr (Row::kHasMin) {
          // [S0 M0 S1 M1 | S2 M2 S3 M3]
          const __m256 sm = _mm256_cvtepi32_ps(
              _mm256_add_epi32(_mm256_permute2x128_si256(w01, w23, 0x20), _mm256_permute2x128_si256(w01, w23, 0x31)));
          const __m128 sf = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(sm, even));
          const __m128 mf = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(sm, odd));
          acc[t] = _mm_fmadd_ps(_mm_mul_ps(dv, ad), sf, acc[t]);
          acc[t] = _mm_fnmadd_ps(_mm_mul_ps(mv, ad), mf, acc[t]);
        } else {
          const __m256i h = _mm256_hadd_epi32(w01, w23);  // [S lane-0 parts | S lane-1 parts]
          const __m128 sf = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
          acc[t] = _mm_fmadd_ps(_mm_mul_ps(dv, ad), sf, acc[t]);
        }
      }
    }
  }
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) store_rows4(g, t0 + t, r0, acc[t]);
}

// The whole tile through gemv_rows, kGemvTokens tokens at a time.
template <class Row>
void gemv_driver(const GemmArgs& g) {
  const typename Row::Consts consts;
  for (int64_t t0 = 0; t0 < g.nt; t0 += kGemvTokens) {
    const int64_t nt = std::min(kGemvTokens, g.nt - t0);
    for (int64_t r0 = 0; r0 < g.nr; r0 += kGemvRows) {
      switch (nt) {
        case 1:
          gemv_rows<Row, 1>(g, r0, t0, consts);
          break;
        case 2:
          gemv_rows<Row, 2>(g, r0, t0, consts);
          break;
        case 3:
          gemv_rows<Row, 3>(g, r0, t0, consts);
          break;
        default:
          gemv_rows<Row, 4>(g, r0, t0, consts);
          break;
      }
    }
  }
}

// r[i] holds 8 int32 (4-byte column groups 0..7) of row i; writes dst[us·c + 4i] = column group c
// of row i, i.e. the 8×8 transpose, one 32-byte unit per column group, units us bytes apart.
inline void store_transposed(const __m256i* r, uint8_t* dst, size_t us = 32) {
  __m256i t[8], u[8];
  EM_KQ_UNROLL for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  EM_KQ_UNROLL for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  EM_KQ_UNROLL for (int c = 0; c < 4; ++c) {
    storeu(dst + us * c, _mm256_permute2x128_si256(u[c], u[4 + c], 0x20));
    storeu(dst + us * (c + 4), _mm256_permute2x128_si256(u[c], u[4 + c], 0x31));
  }
}

// int32 scales as stored in the tile: plain (vpmulld, AVX512) or paired (sc | sc << 16, vpmaddwd).
template <bool kPairedScales>
inline __m256i scales_i32(__m256i v) {
  return kPairedScales ? _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v, 16)) : v;
}

// Rows of the group, and a prefetch of the next group's rows spread over this group's
// super-blocks: the unpacking is compute-bound on cached rows, so without it the DRAM fetch of
// each group would not overlap with the work (GCC deletes loops of _mm_prefetch alone, hence asm).
template <class Block>
struct GroupRows {
  GroupRows(const GemmArgs& g, int64_t grp) {
    EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) {
      w[i] = reinterpret_cast<const Block*>(weight_row(g, kGroupRows * grp + i));
    }
    const int64_t next = kGroupRows * (grp + 1), nb = g.n / 256;
    if (next < g.nr) {
      next_rows = g.w + size_t(next) * g.w_stride;
      next_bytes = size_t(std::min<int64_t>(kGroupRows, g.nr - next) - 1) * g.w_stride + size_t(nb) * sizeof(Block);
      lines_per_block = (next_bytes / 64 + size_t(nb)) / size_t(nb);
    }
  }
  void prefetch_next(int64_t b) const {
    for (size_t l = size_t(b) * lines_per_block; l < size_t(b + 1) * lines_per_block && 64 * l < next_bytes; ++l) {
      __asm__ volatile("prefetcht0 %0" : : "m"(next_rows[64 * l]));
    }
  }
  const Block* w[kGroupRows];
  const uint8_t* next_rows = nullptr;
  size_t next_bytes = 0, lines_per_block = 0;
};

// Group `grp` (rows 8·grp..) of the tile, all super-blocks, into dst (nb · kQ4kGroupBlockBytes,
// resp. kQ6kGroupBlockBytes), in the layout above. The layout is made of 32-byte units (8 rows
// × 4 bytes); with us = 64, unit u goes to dst + 64u instead of dst + 32u, so two calls at dst
// and dst + 32 interleave groups 2h and 2h + 1 into the 16-row layout of the AVX512 micro-kernel
// (every offset above doubled, 64 bytes = 16 rows per unit).
template <bool kPairedScales>
void unpack_group_q4k(const GemmArgs& g, int64_t grp, uint8_t* dst, size_t us = 32) {
  const int64_t nb = g.n / 256;
  const GroupRows<BlockQ4K> rows(g, grp);
  const BlockQ4K* const* w = rows.w;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const auto at = [us](uint8_t* base, size_t off) { return base + off / 32 * us; };
  for (int64_t b = 0; b < nb; ++b, dst = at(dst, kQ4kGroupBlockBytes)) {
    rows.prefetch_next(b);
    EM_KQ_UNROLL for (int c = 0; c < 4; ++c) {
      __m256i lo[kGroupRows], hi[kGroupRows];
      EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) {
        const __m256i v = loadu(w[i][b].qs + 32 * c);
        lo[i] = _mm256_and_si256(v, m4);
        hi[i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      }
      store_transposed(lo, at(dst, 256 * (2 * c)), us);  // sub-block 2c: column groups 16c..16c+7
      store_transposed(hi, at(dst, 256 * (2 * c + 1)), us);
    }
    __m256i sc[kGroupRows], mn[kGroupRows];  // row i: sc_0..7 as int32; (m_2k | m_2k+1 << 16), k < 4
    alignas(16) uint16_t dh[kGroupRows], mh[kGroupRows];
    EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) {
      alignas(8) uint8_t s8[8], m8[8];
      unpack_q4k_scales(w[i][b].scales, s8, m8);
      sc[i] = scales_i32<kPairedScales>(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)s8)));
      mn[i] = _mm256_zextsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)m8)));
      dh[i] = w[i][b].d;
      mh[i] = w[i][b].dmin;
    }
    store_transposed(sc, at(dst, kQ4kSc), us);
    store_transposed(mn, at(dst, kQ4kMn), us);  // rows 4..7 of the transpose (k >= 4) are unused zeros
    _mm256_storeu_ps(reinterpret_cast<float*>(at(dst, kQ4kD)), _mm256_cvtph_ps(_mm_load_si128((const __m128i*)dh)));
    _mm256_storeu_ps(reinterpret_cast<float*>(at(dst, kQ4kDmin)), _mm256_cvtph_ps(_mm_load_si128((const __m128i*)mh)));
  }
}

template <bool kPairedScales>
void unpack_group_q6k(const GemmArgs& g, int64_t grp, uint8_t* dst) {
  const int64_t nb = g.n / 256;
  const GroupRows<BlockQ6K> rows(g, grp);
  const BlockQ6K* const* w = rows.w;
  for (int64_t b = 0; b < nb; ++b, dst += kQ6kGroupBlockBytes) {
    rows.prefetch_next(b);
    __m256i v[kGroupRows][8];
    EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) unpack_q6k(w[i][b], v[i]);
    EM_KQ_UNROLL for (int m = 0; m < 8; ++m) {
      __m256i r[kGroupRows];
      EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) r[i] = v[i][m];
      store_transposed(r, dst + 256 * m);
    }
    __m256i sc_lo[kGroupRows], sc_hi[kGroupRows], corr[kGroupRows];
    alignas(16) uint16_t dh[kGroupRows];
    EM_KQ_UNROLL for (int i = 0; i < kGroupRows; ++i) {
      const __m128i s = _mm_loadu_si128((const __m128i*)w[i][b].scales);
      sc_lo[i] = scales_i32<kPairedScales>(_mm256_cvtepi8_epi32(s));
      sc_hi[i] = scales_i32<kPairedScales>(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(s, s)));
      // int16 -32·sc_k (|.| <= 4096): int32 lane k holds the pair (2k, 2k+1).
      corr[i] = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(_mm256_cvtepi8_epi16(s), 5));
      dh[i] = w[i][b].d;
    }
    store_transposed(sc_lo, dst + kQ6kSc);
    store_transposed(sc_hi, dst + kQ6kSc + 256);
    store_transposed(corr, dst + kQ6kCorr);
    _mm256_storeu_ps(reinterpret_cast<float*>(dst + kQ6kD), _mm256_cvtph_ps(_mm_load_si128((const __m128i*)dh)));
  }
}

// The 4 int16 pairs (bp_2k, bp_2k+1), bp_j = bsums[2j] + bsums[2j+1] (|.| <= 4096), each
// broadcast to all lanes: Q4_K's M = Σ_k (m_2k, m_2k+1)·(bp_2k, bp_2k+1).
inline void bsum_pairs(const BlockQ8K& a, __m256i* bp) {
  const __m256i s = _mm256_madd_epi16(loadu(a.bsums), _mm256_set1_epi16(1));  // int32 bp_0..7
  const __m256i p = _mm256_packs_epi32(s, s);  // int32 units: lane 0 (0,1) (2,3) x2, lane 1 (4,5) (6,7) x2
  bp[0] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(0));
  bp[1] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(1));
  bp[2] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(4));
  bp[3] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(5));
}

inline void store_group(const GemmArgs& g, int64_t t, int64_t grp, __m256 v) {
  const int64_t rows = std::min<int64_t>(kGroupRows, g.nr - kGroupRows * grp);
  float* y = g.y + t * g.ldy + kGroupRows * grp;
  if (rows == kGroupRows) {
    _mm256_storeu_ps(y, v);
  } else {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(y, _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(rows)), lane), v);
  }
}

using TileFn = void (*)(const GemmArgs&, const uint8_t*, int64_t, int64_t);

template <template <int, int> class K, int T, int... Gs>
constexpr std::array<TileFn, sizeof...(Gs)> tile_fn_row(std::integer_sequence<int, Gs...>) {
  return {K<T, Gs + 1>::run...};
}
template <template <int, int> class K, int kG, int... Ts>
constexpr std::array<std::array<TileFn, kG>, sizeof...(Ts)> tile_fn_table(std::integer_sequence<int, Ts...>) {
  return {tile_fn_row<K, Ts + 1>(std::make_integer_sequence<int, kG>{})...};
}

// Runs the tile kernel K<T, G>::run over all tokens (T <= kT at a time) and groups (G <= kG at a
// time); the tails use smaller T and G.
template <template <int, int> class K, int kT, int kG>
void tile_loop(const GemmArgs& g, const uint8_t* tile, int64_t ngroups) {
  static constexpr auto kFns = tile_fn_table<K, kG>(std::make_integer_sequence<int, kT>{});
  for (int64_t t0 = 0; t0 < g.nt; t0 += kT) {
    const int64_t tn = std::min<int64_t>(kT, g.nt - t0);
    for (int64_t grp = 0; grp < ngroups; grp += kG) {
      const int64_t gn = std::min<int64_t>(kG, ngroups - grp);
      kFns[size_t(tn - 1)][size_t(gn - 1)](g, tile, t0, grp);
    }
  }
}

// The Q8K quantizer (quantize_act_ref's bits) in AVX2 + FMA code, for both x86 variants.
inline void quantize_q8k_256(const float* x, void* out, int64_t n) {
  auto* o = static_cast<uint8_t*>(out);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
  const __m256i byte_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < n / 256; ++b, x += 256, o += sizeof(BlockQ8K)) {
    __m256 mx = _mm256_setzero_ps();
    EM_KQ_UNROLL for (int i = 0; i < 32; ++i) {
      mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);  // max is exact: the same value in any order
    const float d = amax / 127.f;
    const float id = amax != 0 ? 127.f / amax : 0.f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i gsum[16];                              // per group of 16: 8 partial sums
    EM_KQ_UNROLL for (int gp = 0; gp < 8; ++gp) {  // two groups (32 values) at a time
      __m256i v[4];
      EM_KQ_UNROLL for (int k = 0; k < 4; ++k) {
        // x * id rounded to float, then to the nearest integer, ties to even (MXCSR default),
        // clamped to [-128, 127] as the reference does.
        v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(vid, _mm256_loadu_ps(x + 32 * gp + 8 * k)));
        v[k] = _mm256_min_epi32(_mm256_max_epi32(v[k], lo), hi);
      }
      gsum[2 * gp] = _mm256_add_epi32(v[0], v[1]);
      gsum[2 * gp + 1] = _mm256_add_epi32(v[2], v[3]);
      const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + offsetof(BlockQ8K, qs) + 32 * gp),
                          _mm256_permutevar8x32_epi32(p, byte_order));
    }
    __m256i bs[2];  // bsums 0..7, 8..15 as int32
    EM_KQ_UNROLL for (int h = 0; h < 2; ++h) {
      const __m256i* s = gsum + 8 * h;
      const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
      const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
      bs[h] = _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31));
    }
    // |bsum| <= 16·128: packing to int16 is exact.
    const __m256i b16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(bs[0], bs[1]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + offsetof(BlockQ8K, bsums)), b16);
    __m256i t = _mm256_add_epi32(bs[0], bs[1]);
    __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
    t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
    const int32_t total = _mm_cvtsi128_si32(t4);
    const float sum = d * static_cast<float>(total);
    std::memcpy(o + offsetof(BlockQ8K, d), &d, 4);
    std::memcpy(o + offsetof(BlockQ8K, sum), &sum, 4);
  }
}

#endif  // __AVX2__

}  // namespace
}  // namespace kquants_detail
}  // namespace expertmesh::cpu
