// AVX2 legacy-family matmul kernels (Q8_0, Q4_0, IQ4_NL × Q8a32) and the Q8a32 activation
// quantizer. Bit-identical with ref/gemm_legacy_ref.cpp and quantize_act_ref (gemm_legacy_common.h).
//
// GEMV integer sums: Q8_0 uses vpmaddwd on sign-extended int16 values, exact for every int8 pair
// (vpmaddubsw with u = w + 128 would saturate, and the sign trick breaks on w = a = -128). The
// 4-bit types use vpmaddubsw, which cannot saturate for them: Q4_0 as q (u8, <= 15) × a with the
// correction -8·a.s; IQ4_NL as |a| × sign(v, a), |v| <= 127 (|-128| = 128 is exact as u8).
//
// GEMV (nt <= 2): each row read whole, details above gemv(). GEMM (nt > 2): each group of 8
// weight rows unpacked once, row-interleaved, details above gemm_r8().
// GCC 12 reports the `__Y = __Y` placeholders inside its own intrinsic headers as uninitialized
// once they are inlined here (a known false positive); the pragmas must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_legacy_common.h"
#include "kernels/cpu/prefetch_x86.h"
#include "kernels/cpu/x86/avx2_common.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu {
namespace {

namespace lg = legacy_gemm;
namespace lq = quant::legacy;

enum class Kind { kQ8_0, kQ4_0, kIq4Nl };

template <Kind K>
inline constexpr size_t kBlockBytes = K == Kind::kQ8_0 ? lg::kQ8_0BlockBytes : lg::kQ4BlockBytes;

inline constexpr int kGroupRows = 8;

inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline int load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// One row's block prepared for row_partial (unpack_r8 reuses the 4-bit forms). Q8_0: the values as int16 (x = elements
// 0..15, y = 16..31). Q4_0: x = the 32 unsigned q in element order. IQ4_NL: x = the 32 signed values.
template <Kind K>
inline void prep_block(const uint8_t* blk, __m256i& x, __m256i& y) {
  if constexpr (K == Kind::kQ8_0) {
    x = _mm256_cvtepi8_epi16(load128(blk + lg::kQsOffset));
    y = _mm256_cvtepi8_epi16(load128(blk + lg::kQsOffset + 16));
  } else {
    const __m128i q = load128(blk + lg::kQsOffset);
    x = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                         _mm256_set1_epi8(0x0F));
    if constexpr (K == Kind::kIq4Nl) {
      x = _mm256_shuffle_epi8(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lq::kIq4nlValues))), x);
    }
    y = x;
  }
}

// One token's activation block ab as row_partial reads it: 64 bytes at qs (Q8_0 the qs widened to
// int16, the 4-bit types the qs and then |qs| as u8), a.d to d and -offset·a.s to corr (both
// 4 bytes, any alignment).
inline void pack_block(const uint8_t* ab, bool widen, int32_t offset, uint8_t* qs, uint8_t* d, uint8_t* corr) {
  auto* o = reinterpret_cast<__m256i*>(qs);
  if (widen) {
    _mm256_store_si256(o, _mm256_cvtepi8_epi16(load128(ab + lg::kActQs)));
    _mm256_store_si256(o + 1, _mm256_cvtepi8_epi16(load128(ab + lg::kActQs + 16)));
  } else {
    const __m256i q = load256(ab + lg::kActQs);
    _mm256_store_si256(o, q);
    _mm256_store_si256(o + 1, _mm256_abs_epi8(q));  // |-128| = 0x80 = 128 as u8
  }
  std::memcpy(d, ab + lg::kActD, 4);
  const int32_t c = -offset * load_i32(ab + lg::kActS);
  std::memcpy(corr, &c, 4);
}

// 8 int32 partial sums of one row's block against one token's packed activations (pt). The
// 4-bit forms use vpmaddubsw, which cannot saturate here: Q4_0 pairs are q·a with q <= 15
// (|pair| <= 3840); IQ4_NL pairs are |a|·(±v) with |v| <= 127 (|pair| <= 32512).
template <Kind K>
inline __m256i row_partial(__m256i x, __m256i y, const uint8_t* pt) {
  const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt));
  const __m256i a2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pt + 32));
  if constexpr (K == Kind::kQ8_0) {
    return _mm256_add_epi32(_mm256_madd_epi16(x, a), _mm256_madd_epi16(y, a2));
  } else if constexpr (K == Kind::kQ4_0) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x, a), _mm256_set1_epi16(1));
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a2, _mm256_sign_epi8(x, a)), _mm256_set1_epi16(1));
  }
}

// ---- GEMV: nt <= kGemvMaxTokens, each row read whole ---------------------------------------------
//
// Reading 8 rows interleaved block by block ran Q8_0 tg from DRAM at about half the rate of the
// AVX512 kernel, which reads the rows one after another. Here, as there, each row is visited once, whole: per 8 blocks
// one hadd tree gives the row's 8 exact block sums S_b (stored as floats, [row][block]) and the blocks' fp16 scales go
// to [block][row] by scalar stores; after the pass's 8 rows an 8×8 transpose per 8 blocks turns the sums into one
// vector per block (lane = row), and the canonical chain acc = fmaf(fp16(w.d) * a.d, float(S_b), acc) runs in column
// order, the same operations as gemm_r8. Software prefetch 4 KiB ahead in stream order.
inline constexpr int64_t kGemvMaxTokens = 2;
inline constexpr int64_t kGemvSub = 8;  // blocks per hadd tree

// Scratch layout for nb blocks (nbp = nb rounded up to 8), T tokens: qs [nbp][T][64] as packed by
// pack_tokens for one token, d and corr [T][nbp], sums sf [T][8][nbp], scales wd [nbp][8].
template <int T>
struct GemvBufs {
  int64_t nbp = 0;
  uint8_t* qs_ = nullptr;
  float* d_ = nullptr;
  int32_t* corr_ = nullptr;
  float* sf_ = nullptr;
  uint16_t* wd_ = nullptr;
  GemvBufs(uint8_t* scratch, int64_t nb) : nbp((nb + kGemvSub - 1) / kGemvSub * kGemvSub) {
    uint8_t* p = scratch;
    qs_ = p;
    p += size_t(nbp) * T * 64;
    d_ = reinterpret_cast<float*>(p);
    p += size_t(T) * size_t(nbp) * 4;
    corr_ = reinterpret_cast<int32_t*>(p);
    p += size_t(T) * size_t(nbp) * 4;
    sf_ = reinterpret_cast<float*>(p);
    p += size_t(T) * kGroupRows * size_t(nbp) * 4;
    wd_ = reinterpret_cast<uint16_t*>(p);
  }
  uint8_t* qs(int64_t b, int t) const { return qs_ + (size_t(b) * T + t) * 64; }
  float* d(int t) const { return d_ + size_t(t) * nbp; }
  int32_t* corr(int t) const { return corr_ + size_t(t) * nbp; }
  float* sf(int t, int k) const { return sf_ + (size_t(t) * kGroupRows + k) * nbp; }
  uint16_t* wd(int64_t b) const { return wd_ + size_t(b) * kGroupRows; }
};

// The activations of the call's T tokens in the layout row_partial reads; blocks past the row
// repeat the last block (their sums are computed and never used).
// Q4_0 reads blocks in pairs (gemv_sub): the 64 bytes at qs(b, t), b even, hold the activations
// of columns 0..15 of blocks b and b+1, then of columns 16..31 of both (qs(b + 1, t) is unused).
template <Kind K, int T>
void pack_gemv(const GemmArgs& g, int64_t nb, const GemvBufs<T>& bf) {
  for (int64_t b = 0; b < bf.nbp; ++b) {
    for (int t = 0; t < T; ++t) {
      const uint8_t* ab = g.a + size_t(t) * g.a_stride + size_t(std::min(b, nb - 1)) * lg::kActBlockBytes;
      pack_block(ab, K == Kind::kQ8_0, K == Kind::kQ4_0 ? 8 : 0, bf.qs(b, t), reinterpret_cast<uint8_t*>(bf.d(t) + b),
                 reinterpret_cast<uint8_t*>(bf.corr(t) + b));
      if (K == Kind::kQ4_0 && b % 2 == 1) {
        auto* pair = reinterpret_cast<__m256i*>(bf.qs(b - 1, t));
        const __m256i a0 = _mm256_load_si256(pair), a1 = _mm256_load_si256(reinterpret_cast<__m256i*>(bf.qs(b, t)));
        _mm256_store_si256(pair, _mm256_permute2x128_si256(a0, a1, 0x20));
        _mm256_store_si256(pair + 1, _mm256_permute2x128_si256(a0, a1, 0x31));
      }
    }
  }
}

// Q4_0's 4 pair vectors of 8 blocks (p[j] low half: block 2j, high half: 2j+1) -> lane i = the
// exact sum of block i.
inline __m256i hsum4x2(const __m256i p[4]) {
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  return _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));  // h = blocks 0 2 4 6 1 3 5 7
}

// Row k's blocks b0..b0+7 (kFull: all inside the row; else past nb repeat the last): scales to
// bf.wd, 8 partial-sum vectors per token to p.
template <Kind K, int T, bool kFull>
[[gnu::always_inline]] inline void gemv_sub(const uint8_t* row, int64_t b0, int64_t nb, int k, const GemvBufs<T>& bf,
                                            __m256i p[T][kGemvSub]) {
  constexpr size_t bs = kBlockBytes<K>;
  if constexpr (K == Kind::kQ4_0) {
    // Two blocks per vector (low nibbles of both, then high nibbles of both), so one vpmaddubsw
    // pair, one int16 add (|.| <= 7680) and one vpmaddwd serve two blocks: p[t][i / 2] lane
    // L holds partial sums of block b0 + i + L / 4 (reduced by hsum4x2).
    const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int i = 0; i < kGemvSub; i += 2) {
      const int64_t b = kFull ? b0 + i : std::min(b0 + i, nb - 1);
      const int64_t b1 = kFull ? b0 + i + 1 : std::min(b0 + i + 1, nb - 1);
      bf.wd(b0 + i)[k] = static_cast<uint16_t>(load_u16(row + size_t(b) * bs));
      bf.wd(b0 + i + 1)[k] = static_cast<uint16_t>(load_u16(row + size_t(b1) * bs));
      const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(load128(row + size_t(b) * bs + lg::kQsOffset)),
                                                load128(row + size_t(b1) * bs + lg::kQsOffset), 1);
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) {
        const uint8_t* pa = bf.qs(b0 + i, t);
        const __m256i s16 =
            _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(pa))),
                             _mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(pa + 32))));
        p[t][i / 2] = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
      }
    }
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < kGemvSub; ++i) {
    const int64_t b = kFull ? b0 + i : std::min(b0 + i, nb - 1);
    bf.wd(b0 + i)[k] = static_cast<uint16_t>(load_u16(row + size_t(b) * bs));
    __m256i x, y;
    prep_block<K>(row + size_t(b) * bs, x, y);
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) p[t][i] = row_partial<K>(x, y, bf.qs(b0 + i, t));
  }
}

template <Kind K, int T>
void gemv(const GemmArgs& g) {
  constexpr size_t bs = kBlockBytes<K>;
  const int64_t nb = g.n / 32;
  const GemvBufs<T> bf(g.scratch, nb);
  pack_gemv<K, T>(g, nb, bf);
  const int64_t nsub = bf.nbp / kGemvSub;
  for (int64_t r0 = 0; r0 < g.nr; r0 += kGroupRows) {
    for (int k = 0; k < kGroupRows; ++k) {
      const uint8_t* row = g.w + size_t(std::min<int64_t>(r0 + k, g.nr - 1)) * g.w_stride;
      for (int64_t s = 0; s < nsub; ++s) {
        const int64_t b0 = kGemvSub * s;
        prefetch_lines(row + size_t(b0) * bs + kGemvPrefetchAhead, size_t(kGemvSub) * bs);
        __m256i p[T][kGemvSub];
        if (b0 + kGemvSub <= nb) {
          gemv_sub<K, T, true>(row, b0, nb, k, bf, p);
        } else {
          gemv_sub<K, T, false>(row, b0, nb, k, bf, p);
        }
#pragma GCC unroll 2
        for (int t = 0; t < T; ++t) {
          __m256i sum = K == Kind::kQ4_0 ? hsum4x2(p[t]) : lg::hsum8x8(p[t]);
          if constexpr (K == Kind::kQ4_0)
            sum = _mm256_add_epi32(sum, _mm256_load_si256(reinterpret_cast<const __m256i*>(bf.corr(t) + b0)));
          _mm256_store_ps(bf.sf(t, k) + b0, _mm256_cvtepi32_ps(sum));
        }
      }
    }
    const int64_t valid = std::min<int64_t>(kGroupRows, g.nr - r0);
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) {
      __m256 acc = _mm256_setzero_ps();
      const float* ad = bf.d(t);
      for (int64_t s = 0; s < nsub; ++s) {
        const int64_t b0 = kGemvSub * s;
        __m256 v[8], o[8];
#pragma GCC unroll 8
        for (int k = 0; k < kGroupRows; ++k) v[k] = _mm256_load_ps(bf.sf(t, k) + b0);
        transpose8x8(v, o);
#pragma GCC unroll 8
        for (int c = 0; c < kGemvSub; ++c) {
          if (b0 + c >= nb) break;
          const __m256 ws = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(bf.wd(b0 + c))));
          acc = _mm256_fmadd_ps(_mm256_mul_ps(ws, _mm256_set1_ps(ad[b0 + c])), o[c], acc);
        }
      }
      _mm256_maskstore_ps(g.y + t * g.ldy + r0, mask, acc);
    }
  }
}

// ---- GEMM: nt > kGemvMaxTokens, weight rows interleaved by 8 -----------------------------------------
//
// Each group of 8 weight rows is unpacked once per call into scratch, row-interleaved: per block,
// vector j holds columns 4j..4j+3 of the 8 rows (lane = row), then the rows' fp16 scales as f32.
// A token's 4 activations of those columns, broadcast to every lane, then give per-lane products
// whose sum over the block's 8 vectors is the exact block sum S_b of each row: no horizontal
// reduction (the 8-rows-in-parallel kernel this replaced spent most of its time in vphaddd trees:
// Q8_0 GEMM 51 -> 76 GMAC/s per thread, Q4_0 52 -> 100, in cache, Zen 5 with AVX2 forced).
//   - Q4_0: vpmaddubsw(q as u8 <= 15, a); 8 vectors of pairs (|pair| <= 3840) sum in int16
//     without overflow (<= 30720), one vpmaddwd widens them; S = Σ q·a - 8·a.s.
//   - Q8_0 and IQ4_NL (signed weights): vpmaddubsw(|v|, sign(a, v)), exact while a != -128
//     (|v| <= 128, |sign(a, v)| <= 127: |pair| <= 32512). The Q8a32 quantizer never emits -128
//     for finite inputs with a normal scale (amax / d < 127.5 after the bf16 rounding of d), but
//     arbitrary blocks may hold it: a call whose activations contain -128 goes token by token
//     through the exact GEMV instead.
// The unpacked group (9 bytes per column) stays in L1 while all the call's tokens pass over it,
// 4 at a time (token_passes4), their activation blocks read in place (dword broadcasts of the qs).
// Then acc = fmaf(fp16(w.d) * a.d, float(S_b), acc) per block in column order, as everywhere.
inline constexpr size_t kR8Quants = 256;                 // 8 vectors of 8 rows × 4 columns
inline constexpr size_t kR8BlockBytes = kR8Quants + 32;  // + 8 f32 scales

// Rows r0..r0+7 (past nr: row nr - 1, never stored) into dst (nb × kR8BlockBytes).
template <Kind K>
void unpack_r8(const GemmArgs& g, int64_t r0, uint8_t* dst) {
  constexpr size_t bs = kBlockBytes<K>;
  const int64_t nb = g.n / 32;
  const uint8_t* rows[kGroupRows];
  for (int i = 0; i < kGroupRows; ++i) rows[i] = g.w + size_t(std::min<int64_t>(r0 + i, g.nr - 1)) * g.w_stride;
  for (int64_t b = 0; b < nb; ++b, dst += kR8BlockBytes) {
    const size_t off = size_t(b) * bs;
    __m256 v[kGroupRows], o[kGroupRows];
    alignas(16) uint16_t dh[kGroupRows];
#pragma GCC unroll 8
    for (int i = 0; i < kGroupRows; ++i) {
      __m256i x, y;
      prep_block<K>(rows[i] + off, x, y);
      if constexpr (K == Kind::kQ8_0) x = load256(rows[i] + off + lg::kQsOffset);  // the int8 values as stored
      v[i] = _mm256_castsi256_ps(x);
      dh[i] = static_cast<uint16_t>(load_u16(rows[i] + off));
    }
    transpose8x8(v, o);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) _mm256_store_ps(reinterpret_cast<float*>(dst + 32 * j), o[j]);
    _mm256_store_ps(reinterpret_cast<float*>(dst + kR8Quants),
                    _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh))));
  }
}

// One unpacked row group × T tokens (activation rows a[t], Q8a32) -> y[t * ldy + 0..valid-1].
template <Kind K, int T>
void r8_tokens(const uint8_t* wq, int64_t nb, const uint8_t* const a[T], float* y, int64_t ldy, int64_t valid) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, wq += kR8BlockBytes) {
    const size_t ao = size_t(b) * lg::kActBlockBytes;
    __m256i sum[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) sum[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int j = 0; j < 8; ++j) {
      const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 32 * j));
      if constexpr (K == Kind::kQ4_0) {
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m256i x = _mm256_set1_epi32(load_i32(a[t] + ao + lg::kActQs + 4 * j));
          sum[t] = _mm256_add_epi16(sum[t], _mm256_maddubs_epi16(w, x));
        }
      } else {
        const __m256i u = _mm256_abs_epi8(w);  // |-128| = 0x80 = 128 as u8
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m256i x = _mm256_set1_epi32(load_i32(a[t] + ao + lg::kActQs + 4 * j));
          sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(x, w)), ones));
        }
      }
    }
    const __m256 ws = _mm256_load_ps(reinterpret_cast<const float*>(wq + kR8Quants));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m256i s = sum[t];
      if constexpr (K == Kind::kQ4_0)
        s = _mm256_sub_epi32(_mm256_madd_epi16(s, ones), _mm256_set1_epi32(8 * load_i32(a[t] + ao + lg::kActS)));
      const __m256 sc = _mm256_mul_ps(ws, _mm256_set1_ps(load_f32(a[t] + ao + lg::kActD)));
      acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(s), acc[t]);
    }
  }
  store_rows8<T>(acc, y, ldy, valid);
}

template <Kind K>
void gemm_r8(const GemmArgs& g) {
  const int64_t nb = g.n / 32;
  uint8_t* const wq = g.scratch;
  for (int64_t r0 = 0; r0 < g.nr; r0 += kGroupRows) {
    unpack_r8<K>(g, r0, wq);
    const int64_t valid = std::min<int64_t>(kGroupRows, g.nr - r0);
    token_passes4(g.nt, [&](int64_t t0, auto tokens) {
      constexpr int T = decltype(tokens)::value;
      const uint8_t* a[T];
      for (int t = 0; t < T; ++t) a[t] = g.a + size_t(t0 + t) * g.a_stride;
      r8_tokens<K, T>(wq, nb, a, g.y + t0 * g.ldy + r0, g.ldy, valid);
    });
  }
}

template <Kind K>
void gemm_legacy(const GemmArgs& g) {
  if (g.nr <= 0 || g.nt <= 0) return;
  if (g.nt == 1) return gemv<K, 1>(g);
  if (g.nt <= kGemvMaxTokens) return gemv<K, 2>(g);
  if (K == Kind::kQ4_0 || !acts_hold_min(g.a, g.a_stride, g.nt, g.n / 32, lg::kActBlockBytes, lg::kActQs, 32))
    return gemm_r8<K>(g);
  // The rare call with a -128 activation: token by token through the exact GEMV.
  for (int64_t t = 0; t < g.nt; ++t) {
    GemmArgs one = g;
    one.a = g.a + size_t(t) * g.a_stride;
    one.nt = 1;
    one.y = g.y + t * g.ldy;
    gemv<K, 1>(one);
  }
}

// ---- Q8a32 activation quantizer --------------------------------------------------------------------

// 8 blocks: 256 floats from x into 8 BlockQ8a32 at out.
inline void quantize8(const float* x, uint8_t* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m[8];
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    // max(new, acc): a NaN input is skipped like std::max(amax, NaN) in the reference.
    __m256 acc = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) acc = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 32 * j + 8 * i), abs_mask), acc);
    m[j] = acc;
  }
  const __m256 q = _mm256_div_ps(lg::hmax8x8(m), _mm256_set1_ps(127.0f));
  // bf16 round to nearest even (q >= 0, never NaN).
  __m256i u = _mm256_castps_si256(q);
  u = _mm256_add_epi32(
      u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
  const __m256 d = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  const __m256 id =
      _mm256_and_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), d));
  alignas(32) float ds[8], ids[8];
  alignas(32) int32_t ss[8];
  _mm256_store_ps(ds, d);
  _mm256_store_ps(ids, id);
  const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i low_byte = _mm256_set1_epi32(0xFF);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i sums[8];
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    const __m256 vid = _mm256_set1_ps(ids[j]);
    __m256i v[4];
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      // clamp(round(p)) == round(clamp(p)) for integer bounds; max/min keep a NaN (second
      // operand), which converts to 0x80000000, whose low byte 0 is what the reference yields.
      const __m256 p = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(x + 32 * j + 8 * i), vid)));
      v[i] = _mm256_and_si256(_mm256_cvtps_epi32(p), low_byte);  // the int8 bits as 0..255
    }
    // Unsigned packs keep 0..255 exact; the lane interleave is undone by the final permute.
    const __m256i p01 = _mm256_packus_epi32(v[0], v[1]), p23 = _mm256_packus_epi32(v[2], v[3]);
    const __m256i qs = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + lg::kActBlockBytes * j + lg::kActQs), qs);
    sums[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qs), _mm256_set1_epi16(1));
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(ss), lg::hsum8x8(sums));
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    std::memcpy(out + lg::kActBlockBytes * j + lg::kActD, &ds[j], 4);
    std::memcpy(out + lg::kActBlockBytes * j + lg::kActS, &ss[j], 4);
  }
}

}  // namespace

void quantize_act_q8a32_avx2(const float* x, void* out, int64_t n) { lg::quantize_row_q8a32<quantize8>(x, out, n); }

void register_gemm_legacy_avx2(GemmTable& t) {
  t[size_t(GgmlType::Q8_0)] = {ActType::kQ8a32, gemm_legacy<Kind::kQ8_0>};
  t[size_t(GgmlType::Q4_0)] = {ActType::kQ8a32, gemm_legacy<Kind::kQ4_0>};
  t[size_t(GgmlType::IQ4_NL)] = {ActType::kQ8a32, gemm_legacy<Kind::kIq4Nl>};
}

}  // namespace expertmesh::cpu
