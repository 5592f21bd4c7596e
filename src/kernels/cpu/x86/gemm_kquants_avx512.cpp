// AVX512 (F/BW/VL/VNNI) Q4_K and Q6_K × Q8K kernels and the Q8K activation quantizer.
// Bit-identical to ref/gemm_kquants_ref.cpp: exact int32 super-block sums, then gemm.h's float
// steps (one multiply, one fused multiply-add per term) per super-block in column order.
//
// Two paths, same bits:
//   - GEMV (nt <= kQ4kGemvMaxTokens, kQ6kGemvMaxTokens): 4 weight rows per pass, read straight
//     from the rows (gemv_rows in gemm_kquants_common.h). Per sub-block a 256-bit vpdpbusd (u8
//     quants × s8 activations) leaves 8 partial sums of 4 products each (|.| <= 4·63·128, exact
//     in int16); two of them are packed to int16 and vpdpwssd applies the sub-block scales; the
//     4 rows' vectors are then reduced together.
//   - GEMM: the tile is unpacked once into scratch (layout in gemm_kquants_common.h: 4 columns
//     × 8 rows per 32 bytes; Q4_K interleaves two such groups into 4 columns × 16 rows per 64
//     bytes), then a micro-kernel runs vpdpbusd with a broadcast 4-byte activation, one int32
//     lane per weight row, scaling each sub-block's sum with vpmulld: Q4_K 4 tokens × 32 rows in
//     zmm (229 G MAC/s per Zen 5 core at 64 rows × 64 tokens, an 8-row ymm kernel 143: it
//     spilled its accumulators), Q6_K 4 tokens × 16 rows in ymm.
// GCC 12's AVX512 headers self-initialise their "undefined" vectors (__m512 __Y = __Y), which
// -Wmaybe-uninitialized reports once the 512-bit intrinsics are inlined into the Q4_K kernel.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kquants_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"

namespace expertmesh::cpu {
namespace {

using namespace kquants_detail;
using quant::fp16_to_f32;
using quant::kq::BlockQ4K;
using quant::kq::BlockQ6K;

// ---------------------------------------------------------------------------------------------
// GEMV
// ---------------------------------------------------------------------------------------------

// One Q4_K block of a row, unpacked for gemv_rows: sub-block j's quants in q[j] (32 bytes), and
// scv[c] the int16 scales matching _mm256_packs_epi32(p_2c, p_2c+1), whose int16 slots 0-3 of
// each lane hold sub-block 2c and slots 4-7 sub-block 2c+1.
struct Q4kRow {
  using Block = BlockQ4K;
  static constexpr bool kHasMin = true;
  struct Consts {
    Consts() {
      for (int c = 0; c < 4; ++c) {
        alignas(32) uint8_t m[32];
        for (int s = 0; s < 16; ++s) {
          const int idx = 2 * c + (s % 8 >= 4 ? 1 : 0);
          m[2 * s] = uint8_t(2 * idx);
          m[2 * s + 1] = uint8_t(2 * idx + 1);
        }
        scale_mask[c] = loadu(m);
      }
    }
    __m256i scale_mask[4];
  };

  Q4kRow(const BlockQ4K& x, const Consts& k) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    EM_KQ_UNROLL for (int c = 0; c < 4; ++c) {
      const __m256i v = loadu(x.qs + 32 * c);
      q[2 * c] = _mm256_and_si256(v, m4);
      q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    alignas(8) uint8_t sc[8], mn[8];
    unpack_q4k_scales(x.scales, sc, mn);
    const __m256i scb = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)sc)));
    EM_KQ_UNROLL for (int c = 0; c < 4; ++c) scv[c] = _mm256_shuffle_epi8(scb, k.scale_mask[c]);
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)mn));
    mdup = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16), _mm_unpacklo_epi16(mn16, mn16));
  }

  __m256i dot(const BlockQ8K& y) const {
    __m256i s = _mm256_setzero_si256();
    EM_KQ_UNROLL for (int c = 0; c < 4; ++c) {
      const __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[2 * c], loadu(y.qs + 64 * c));
      const __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[2 * c + 1], loadu(y.qs + 64 * c + 32));
      s = _mm256_dpwssd_epi32(s, _mm256_packs_epi32(p0, p1), scv[c]);  // |p| <= 4·15·128: exact in int16
    }
    const __m256i m = _mm256_madd_epi16(loadu(y.bsums), mdup);  // m_j · (bsums[2j] + bsums[2j+1])
    return _mm256_hadd_epi32(s, m);
  }

  __m256i q[8], scv[4], mdup;
};

// One Q6_K block: vector m of unpack_q6k holds groups 2m | 2m+1 in its two lanes. Pair p packs
// vectors 2p (groups 4p | 4p+1) and 2p+1 (4p+2 | 4p+3): lane 0 slots 0-3 take scale 4p, 4-7
// scale 4p+2; lane 1 scales 4p+1, 4p+3 (masks index 8 int16 scales replicated in both lanes).
struct Q6kRow {
  using Block = BlockQ6K;
  static constexpr bool kHasMin = false;
  struct Consts {
    Consts() {
      for (int p = 0; p < 2; ++p) {
        alignas(32) uint8_t m[32];
        for (int s = 0; s < 16; ++s) {
          const int idx = 4 * p + s / 8 + (s % 8 >= 4 ? 2 : 0);
          m[2 * s] = uint8_t(2 * idx);
          m[2 * s + 1] = uint8_t(2 * idx + 1);
        }
        scale_mask[p] = loadu(m);
      }
    }
    __m256i scale_mask[2];
  };

  Q6kRow(const BlockQ6K& x, const Consts& k) {
    unpack_q6k(x, q);
    sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)x.scales));
    const __m256i lo = _mm256_permute4x64_epi64(sc16, 0x44), hi = _mm256_permute4x64_epi64(sc16, 0xEE);
    scv[0] = _mm256_shuffle_epi8(lo, k.scale_mask[0]);
    scv[1] = _mm256_shuffle_epi8(lo, k.scale_mask[1]);
    scv[2] = _mm256_shuffle_epi8(hi, k.scale_mask[0]);
    scv[3] = _mm256_shuffle_epi8(hi, k.scale_mask[1]);
  }

  __m256i dot(const BlockQ8K& y) const {
    // Σ_k sc_k Σ q·a  −  32 Σ_k sc_k bsum_k  =  Σ_k sc_k Σ (q − 32)·a
    __m256i s = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(loadu(y.bsums), sc16), 5));
    EM_KQ_UNROLL for (int p = 0; p < 4; ++p) {
      const __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[2 * p], loadu(y.qs + 64 * p));
      const __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q[2 * p + 1], loadu(y.qs + 64 * p + 32));
      s = _mm256_dpwssd_epi32(s, _mm256_packs_epi32(p0, p1), scv[p]);  // |p| <= 4·63·128: exact in int16
    }
    return s;
  }

  __m256i q[8], scv[4], sc16;
};

// ---------------------------------------------------------------------------------------------
// GEMM: unpack the tile, then the micro-kernel
// ---------------------------------------------------------------------------------------------

// The 16-row layout (two 8-row groups interleaved by 32-byte units, unpack_group_q4k with
// us = 64): one zmm holds 4 columns of 16 rows, so each broadcast activation word feeds 16 rows
// and the accumulators of T tokens × G 16-row groups stay in registers (an 8-row ymm kernel
// spilled them). Same integer sums and float steps, so the same bits.
inline constexpr int kRows16 = 2 * kGroupRows;
inline constexpr size_t kQ4k16BlockBytes = 2 * kQ4kGroupBlockBytes;

inline void store_group16(const GemmArgs& g, int64_t t, int64_t grp, __m512 v) {
  const int64_t rows = std::min<int64_t>(kRows16, g.nr - kRows16 * grp);
  float* y = g.y + t * g.ldy + kRows16 * grp;
  _mm512_mask_storeu_ps(y, rows >= kRows16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1u), v);
}

// Tokens t0..t0+T-1 × 16-row groups grp0..grp0+G-1 of the 16-row tile.
template <int T, int G>
void tile_q4k16(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
  const int64_t nb = g.n / 256;
  const BlockQ8K* a[T];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) a[t] = act_row(g, t0 + t);
  __m512 f[T][G];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) EM_KQ_UNROLL for (int j = 0; j < G; ++j) f[t][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk[G];
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) blk[j] = tile + size_t((grp0 + j) * nb + b) * kQ4k16BlockBytes;
    __m512i S[T][G];
    EM_KQ_UNROLL for (int sb = 0; sb < 8; ++sb) {
      __m512i sub[T][G];
      EM_KQ_UNROLL for (int c = 0; c < 8; ++c) {
        __m512i wv[G];
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) wv[j] = _mm512_loadu_si512(blk[j] + 64 * (8 * sb + c));
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          int32_t aw;
          std::memcpy(&aw, a[t][b].qs + 32 * sb + 4 * c, 4);
          const __m512i av = _mm512_set1_epi32(aw);
          EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
            sub[t][j] = _mm512_dpbusd_epi32(c == 0 ? _mm512_setzero_si512() : sub[t][j], wv[j], av);
          }
        }
      }
      EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
        const __m512i scv = _mm512_loadu_si512(blk[j] + 2 * kQ4kSc + 64 * sb);
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          const __m512i p = _mm512_mullo_epi32(sub[t][j], scv);
          S[t][j] = sb == 0 ? p : _mm512_add_epi32(S[t][j], p);
        }
      }
    }
    EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
      __m256i bp[4];
      bsum_pairs(a[t][b], bp);
      const __m512 ad = _mm512_set1_ps(a[t][b].d);
      EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
        __m512i M = _mm512_setzero_si512();
        EM_KQ_UNROLL for (int k = 0; k < 4; ++k) {
          M = _mm512_dpwssd_epi32(M, _mm512_loadu_si512(blk[j] + 2 * kQ4kMn + 64 * k),
                                  _mm512_broadcastd_epi32(_mm256_castsi256_si128(bp[k])));
        }
        const __m512 dv = _mm512_loadu_ps(blk[j] + 2 * kQ4kD);
        const __m512 mv = _mm512_loadu_ps(blk[j] + 2 * kQ4kDmin);
        f[t][j] = _mm512_fmadd_ps(_mm512_mul_ps(dv, ad), _mm512_cvtepi32_ps(S[t][j]), f[t][j]);
        f[t][j] = _mm512_fnmadd_ps(_mm512_mul_ps(mv, ad), _mm512_cvtepi32_ps(M), f[t][j]);
      }
    }
  }
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) store_group16(g, t0 + t, grp0 + j, f[t][j]);
  }
}

template <int T, int G>
void tile_q6k(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
  const int64_t nb = g.n / 256;
  const BlockQ8K* a[T];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) a[t] = act_row(g, t0 + t);
  __m256 f[T][G] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk[G];
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) blk[j] = tile + size_t((grp0 + j) * nb + b) * kQ6kGroupBlockBytes;
    __m256i S[T][G] = {};
    EM_KQ_UNROLL for (int k = 0; k < 16; ++k) {
      __m256i sub[T][G] = {};
      EM_KQ_UNROLL for (int c = 0; c < 4; ++c) {
        __m256i wv[G];
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) wv[j] = loadu(blk[j] + 32 * (4 * k + c));
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          const __m256i av = bcast_i32(a[t][b].qs + 16 * k + 4 * c);
          EM_KQ_UNROLL for (int j = 0; j < G; ++j) sub[t][j] = _mm256_dpbusd_epi32(sub[t][j], wv[j], av);
        }
      }
      EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
        const __m256i scv = loadu(blk[j] + kQ6kSc + 32 * k);
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          S[t][j] = _mm256_add_epi32(S[t][j], _mm256_mullo_epi32(sub[t][j], scv));
        }
      }
    }
    EM_KQ_UNROLL for (int k = 0; k < 8; ++k) {  // − 32 Σ_k sc_k bsum_k
      EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
        const __m256i bp = bcast_i32(a[t][b].bsums + 2 * k);
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
          S[t][j] = _mm256_dpwssd_epi32(S[t][j], loadu(blk[j] + kQ6kCorr + 32 * k), bp);
        }
      }
    }
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
      const __m256 dv = _mm256_loadu_ps(reinterpret_cast<const float*>(blk[j] + kQ6kD));
      EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
        const __m256 ad = _mm256_set1_ps(a[t][b].d);
        f[t][j] = _mm256_fmadd_ps(_mm256_mul_ps(dv, ad), _mm256_cvtepi32_ps(S[t][j]), f[t][j]);
      }
    }
  }
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) store_group(g, t0 + t, grp0 + j, f[t][j]);
  }
}

// Micro-kernel shape (tokens × 8-row groups) and the GEMV/GEMM switch: tiles with at most
// k*GemvMaxTokens tokens take the GEMV path, where unpacking the tile does not pay off yet
// (measured on Zen 4; both paths give the same bits).
constexpr int kQ4kTileTokens = 4, kQ4kTileGroups = 2;  // Q4_K: 16-row groups
constexpr int kQ6kTileTokens = 4, kQ6kTileGroups = 2;
constexpr int64_t kQ4kGemvMaxTokens = 4, kQ6kGemvMaxTokens = 6;

template <int T, int G>
struct TileQ4k {
  static void run(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
    tile_q4k16<T, G>(g, tile, t0, grp0);
  }
};
template <int T, int G>
struct TileQ6k {
  static void run(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
    tile_q6k<T, G>(g, tile, t0, grp0);
  }
};

void gemm_q4k(const GemmArgs& g) {
  if (g.nt <= kQ4kGemvMaxTokens) {
    gemv_driver<Q4kRow>(g);
    return;
  }
  const int64_t ngroups = (g.nr + kRows16 - 1) / kRows16;
  const size_t group_bytes = size_t(g.n / 256) * kQ4k16BlockBytes;
  for (int64_t grp = 0; grp < ngroups; ++grp) {
    unpack_group_q4k<false>(g, 2 * grp, g.scratch + grp * group_bytes, 64);
    unpack_group_q4k<false>(g, 2 * grp + 1, g.scratch + grp * group_bytes + 32, 64);
  }
  tile_loop<TileQ4k, kQ4kTileTokens, kQ4kTileGroups>(g, g.scratch, ngroups);
}

void gemm_q6k(const GemmArgs& g) {
  if (g.nt <= kQ6kGemvMaxTokens) {
    gemv_driver<Q6kRow>(g);
    return;
  }
  const int64_t ngroups = (g.nr + kGroupRows - 1) / kGroupRows;
  const size_t group_bytes = size_t(g.n / 256) * kQ6kGroupBlockBytes;
  for (int64_t grp = 0; grp < ngroups; ++grp) unpack_group_q6k<false>(g, grp, g.scratch + grp * group_bytes);
  tile_loop<TileQ6k, kQ6kTileTokens, kQ6kTileGroups>(g, g.scratch, ngroups);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Q8K activations
// ---------------------------------------------------------------------------------------------

// 256-bit code shared with the AVX2 variant (gemm_kquants_common.h): GCC 12's 512-bit
// intrinsics used there (max, reduce, convert) trip -Wmaybe-uninitialized, and the loop is
// short anyway.
void quantize_act_q8k_avx512(const float* x, void* out, int64_t n) { quantize_q8k_256(x, out, n); }

void register_gemm_kquants_avx512(GemmTable& t) {
  t[size_t(GgmlType::Q4_K)] = {ActType::kQ8K, gemm_q4k};
  t[size_t(GgmlType::Q6_K)] = {ActType::kQ8K, gemm_q6k};
}

}  // namespace expertmesh::cpu
