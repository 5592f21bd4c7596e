// AVX2 (+FMA, F16C) Q4_K and Q6_K × Q8K kernels and the Q8K activation quantizer.
// Bit-identical to ref/gemm_kquants_ref.cpp: exact int32 super-block sums, then gemm.h's float
// steps (one multiply, one fused multiply-add per term) per super-block in column order.
//
// Two paths, same bits (structure as in gemm_kquants_avx512.cpp, without VNNI):
//   - GEMV (nt <= kQ4kGemvMaxTokens, kQ6kGemvMaxTokens): 4 weight rows per pass (gemv_rows in
//     gemm_kquants_common.h). vpmaddubsw (u8 quants × s8 activations, pair sums |.| <= 2·63·128,
//     no saturation) then vpmaddwd with the sub-block's scale broadcast as int16 gives int32
//     partial sums of the scaled products; the 4 rows' vectors are reduced together once per
//     super-block.
//   - GEMM: the tile is unpacked once into scratch (gemm_kquants_common.h, scales stored as
//     int16 pairs), then a micro-kernel of 4 tokens × 16 rows (Q6_K: 8) sums vpmaddubsw results in int16
//     over as many columns as stay exact (Q4_K: 32, |.| <= 16·15·128; Q6_K: 8, <= 4·63·128),
//     and vpmaddwd with the scale pairs widens them to int32.
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
using quant::kq::BlockQ4K;
using quant::kq::BlockQ6K;

// ---------------------------------------------------------------------------------------------
// GEMV
// ---------------------------------------------------------------------------------------------

// One Q4_K block of a row, unpacked for gemv_rows: sub-block j's quants in q[j] (32 bytes) and
// its scale broadcast as int16 in scv[j].
struct Q4kRow {
  using Block = BlockQ4K;
  static constexpr bool kHasMin = true;
  struct Consts {
    Consts() {
      // Mask j broadcasts int16 j of an 8-scale vector replicated in both lanes.
      for (int j = 0; j < 8; ++j) scale_mask[j] = _mm256_set1_epi16(int16_t((2 * j) | ((2 * j + 1) << 8)));
    }
    __m256i scale_mask[8];
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
    EM_KQ_UNROLL for (int j = 0; j < 8; ++j) scv[j] = _mm256_shuffle_epi8(scb, k.scale_mask[j]);
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i*)mn));
    mdup = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16), _mm_unpacklo_epi16(mn16, mn16));
  }

  __m256i dot(const BlockQ8K& y) const {
    __m256i s = _mm256_setzero_si256();
    EM_KQ_UNROLL for (int j = 0; j < 8; ++j) {
      const __m256i p = _mm256_maddubs_epi16(q[j], loadu(y.qs + 32 * j));  // |.| <= 2·15·128
      s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scv[j]));
    }
    const __m256i m = _mm256_madd_epi16(loadu(y.bsums), mdup);  // m_j · (bsums[2j] + bsums[2j+1])
    return _mm256_hadd_epi32(s, m);
  }

  __m256i q[8], scv[8], mdup;
};

// One Q6_K block: vector m of unpack_q6k holds groups 2m | 2m+1 in its lanes; scv[m] their
// scales as int16 (lane 0 all sc_2m, lane 1 all sc_2m+1).
struct Q6kRow {
  using Block = BlockQ6K;
  static constexpr bool kHasMin = false;
  struct Consts {
    Consts() {
      // Mask m (of 4) picks int16 2m in lane 0 and 2m+1 in lane 1 of 8 scales replicated per lane.
      for (int m = 0; m < 4; ++m) {
        scale_mask[m] = _mm256_setr_m128i(_mm_set1_epi16(int16_t((4 * m) | ((4 * m + 1) << 8))),
                                          _mm_set1_epi16(int16_t((4 * m + 2) | ((4 * m + 3) << 8))));
      }
    }
    __m256i scale_mask[4];
  };

  Q6kRow(const BlockQ6K& x, const Consts& k) {
    unpack_q6k(x, q);
    sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)x.scales));
    const __m256i lo = _mm256_permute4x64_epi64(sc16, 0x44), hi = _mm256_permute4x64_epi64(sc16, 0xEE);
    EM_KQ_UNROLL for (int m = 0; m < 4; ++m) {
      scv[m] = _mm256_shuffle_epi8(lo, k.scale_mask[m]);
      scv[m + 4] = _mm256_shuffle_epi8(hi, k.scale_mask[m]);
    }
  }

  __m256i dot(const BlockQ8K& y) const {
    // Σ_k sc_k Σ q·a  −  32 Σ_k sc_k bsum_k  =  Σ_k sc_k Σ (q − 32)·a
    __m256i s = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(loadu(y.bsums), sc16), 5));
    EM_KQ_UNROLL for (int m = 0; m < 8; ++m) {
      const __m256i p = _mm256_maddubs_epi16(q[m], loadu(y.qs + 32 * m));  // |.| <= 2·63·128
      s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scv[m]));
    }
    return s;
  }

  __m256i q[8], scv[8], sc16;
};

// ---------------------------------------------------------------------------------------------
// GEMM micro-kernels over the unpacked tile (scales as int16 pairs)
// ---------------------------------------------------------------------------------------------

// Tokens t0..t0+T-1 × groups grp0..grp0+G-1 of the unpacked tile.
template <int T, int G>
void tile_q4k(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
  const int64_t nb = g.n / 256;
  const BlockQ8K* a[T];
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) a[t] = act_row(g, t0 + t);
  __m256 f[T][G] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk[G];
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) blk[j] = tile + size_t((grp0 + j) * nb + b) * kQ4kGroupBlockBytes;
    __m256i S[T][G] = {}, M[T][G] = {};
    _Pragma("GCC unroll 1") for (int sb = 0; sb < 8; ++sb) {
      __m256i sub[T][G] = {};  // int16: 16 products of one row per slot, |.| <= 30720
      _Pragma("GCC unroll 2") for (int c = 0; c < 8; ++c) {
        __m256i wv[G];
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) wv[j] = loadu(blk[j] + 32 * (8 * sb + c));
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          const __m256i av = bcast_i32(a[t][b].qs + 32 * sb + 4 * c);
          EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
            sub[t][j] = _mm256_add_epi16(sub[t][j], _mm256_maddubs_epi16(wv[j], av));
          }
        }
      }
      EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
        const __m256i scv = loadu(blk[j] + kQ4kSc + 32 * sb);
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) S[t][j] = _mm256_add_epi32(S[t][j], _mm256_madd_epi16(sub[t][j], scv));
      }
    }
    EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
      __m256i bp[4];
      bsum_pairs(a[t][b], bp);
      EM_KQ_UNROLL for (int k = 0; k < 4; ++k) {
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
          M[t][j] = _mm256_add_epi32(M[t][j], _mm256_madd_epi16(loadu(blk[j] + kQ4kMn + 32 * k), bp[k]));
        }
      }
    }
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
      const __m256 dv = _mm256_loadu_ps(reinterpret_cast<const float*>(blk[j] + kQ4kD));
      const __m256 mv = _mm256_loadu_ps(reinterpret_cast<const float*>(blk[j] + kQ4kDmin));
      EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
        const __m256 ad = _mm256_set1_ps(a[t][b].d);
        f[t][j] = _mm256_fmadd_ps(_mm256_mul_ps(dv, ad), _mm256_cvtepi32_ps(S[t][j]), f[t][j]);
        f[t][j] = _mm256_fnmadd_ps(_mm256_mul_ps(mv, ad), _mm256_cvtepi32_ps(M[t][j]), f[t][j]);
      }
    }
  }
  EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
    EM_KQ_UNROLL for (int j = 0; j < G; ++j) store_group(g, t0 + t, grp0 + j, f[t][j]);
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
    _Pragma("GCC unroll 1") for (int k = 0; k < 16; ++k) {
      EM_KQ_UNROLL for (int h = 0; h < 2; ++h) {  // 8 columns: int16 slots of 4 products, |.| <= 32256
        __m256i sub[T][G] = {};
        EM_KQ_UNROLL for (int c = 2 * h; c < 2 * h + 2; ++c) {
          __m256i wv[G];
          EM_KQ_UNROLL for (int j = 0; j < G; ++j) wv[j] = loadu(blk[j] + 32 * (4 * k + c));
          EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
            const __m256i av = bcast_i32(a[t][b].qs + 16 * k + 4 * c);
            EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
              sub[t][j] = _mm256_add_epi16(sub[t][j], _mm256_maddubs_epi16(wv[j], av));
            }
          }
        }
        EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
          const __m256i scv = loadu(blk[j] + kQ6kSc + 32 * k);
          EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
            S[t][j] = _mm256_add_epi32(S[t][j], _mm256_madd_epi16(sub[t][j], scv));
          }
        }
      }
    }
    EM_KQ_UNROLL for (int k = 0; k < 8; ++k) {  // − 32 Σ_k sc_k bsum_k
      EM_KQ_UNROLL for (int j = 0; j < G; ++j) {
        const __m256i cv = loadu(blk[j] + kQ6kCorr + 32 * k);
        EM_KQ_UNROLL for (int t = 0; t < T; ++t) {
          S[t][j] = _mm256_add_epi32(S[t][j], _mm256_madd_epi16(cv, bcast_i32(a[t][b].bsums + 2 * k)));
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

// Loop unrolling in the tile kernels is limited on purpose: fully unrolled, GCC reassociates the
// int16 sums into trees over all of a sub-block's products and spills most of them (Q4_K 77,
// Q6_K 64 GMAC/s per thread in cache, Zen 5; with these limits and shapes 122 and 106).
// Micro-kernel shape (tokens × 8-row groups) and the GEMV/GEMM switch: tiles with at most
// k*GemvMaxTokens tokens take the GEMV path, where unpacking the tile does not pay off yet
// (measured on Zen 4; both paths give the same bits).
constexpr int kQ4kTileTokens = 4, kQ4kTileGroups = 2;
constexpr int kQ6kTileTokens = 4, kQ6kTileGroups = 1;
constexpr int64_t kQ4kGemvMaxTokens = 2, kQ6kGemvMaxTokens = 4;

template <int T, int G>
struct TileQ4k {
  static void run(const GemmArgs& g, const uint8_t* tile, int64_t t0, int64_t grp0) {
    tile_q4k<T, G>(g, tile, t0, grp0);
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
  const int64_t ngroups = (g.nr + kGroupRows - 1) / kGroupRows;
  const size_t group_bytes = size_t(g.n / 256) * kQ4kGroupBlockBytes;
  for (int64_t grp = 0; grp < ngroups; ++grp) unpack_group_q4k<true>(g, grp, g.scratch + grp * group_bytes);
  tile_loop<TileQ4k, kQ4kTileTokens, kQ4kTileGroups>(g, g.scratch, ngroups);
}

void gemm_q6k(const GemmArgs& g) {
  if (g.nt <= kQ6kGemvMaxTokens) {
    gemv_driver<Q6kRow>(g);
    return;
  }
  const int64_t ngroups = (g.nr + kGroupRows - 1) / kGroupRows;
  const size_t group_bytes = size_t(g.n / 256) * kQ6kGroupBlockBytes;
  for (int64_t grp = 0; grp < ngroups; ++grp) unpack_group_q6k<true>(g, grp, g.scratch + grp * group_bytes);
  tile_loop<TileQ6k, kQ6kTileTokens, kQ6kTileGroups>(g, g.scratch, ngroups);
}

}  // namespace

void quantize_act_q8k_avx2(const float* x, void* out, int64_t n) { kquants_detail::quantize_q8k_256(x, out, n); }

void register_gemm_kquants_avx2(GemmTable& t) {
  t[size_t(GgmlType::Q4_K)] = {ActType::kQ8K, gemm_q4k};
  t[size_t(GgmlType::Q6_K)] = {ActType::kQ8K, gemm_q6k};
}

}  // namespace expertmesh::cpu
