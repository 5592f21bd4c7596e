// Helpers shared by the AVX2 kernels (include only from files compiled with -mavx2). Internal
// linkage: a copy compiled with other ISA flags must never be merged with these.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace expertmesh::cpu {
namespace {

// o[c] lane r = v[r] lane c.
[[gnu::always_inline]] inline void transpose8x8(const __m256 v[8], __m256 o[8]) {
  __m256 a[8], b[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    b[4 * i + 0] = _mm256_shuffle_ps(a[4 * i], a[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    b[4 * i + 1] = _mm256_shuffle_ps(a[4 * i], a[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    b[4 * i + 2] = _mm256_shuffle_ps(a[4 * i + 1], a[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    b[4 * i + 3] = _mm256_shuffle_ps(a[4 * i + 1], a[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // b[j] (rows 0..3) and b[4 + j] (rows 4..7): 128-bit lane L holds elements j + 4L.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    o[j] = _mm256_permute2f128_ps(b[j], b[4 + j], 0x20);
    o[4 + j] = _mm256_permute2f128_ps(b[j], b[4 + j], 0x31);
  }
}

// acc[t] lane r (the result of row r for token t) -> y[t * ldy + r] for r < valid (<= 8).
template <int T>
[[gnu::always_inline]] inline void store_rows8(const __m256* acc, float* y, int64_t ldy, int64_t valid) {
  if (valid == 8) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) _mm256_storeu_ps(y + t * ldy, acc[t]);
  } else {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) _mm256_maskstore_ps(y + t * ldy, mask, acc[t]);
  }
}

// The token passes of the row-interleaved GEMMs: pass(t0, std::integral_constant<int, T>{}) for
// tokens [t0, t0 + T) of [0, nt), T = 4 while 4 remain, then one pass of the 1..3 left.
template <class Pass>
[[gnu::always_inline]] inline void token_passes4(int64_t nt, Pass&& pass) {
  int64_t t0 = 0;
  for (; t0 + 4 <= nt; t0 += 4) pass(t0, std::integral_constant<int, 4>{});
  if (nt - t0 == 1) pass(t0, std::integral_constant<int, 1>{});
  if (nt - t0 == 2) pass(t0, std::integral_constant<int, 2>{});
  if (nt - t0 == 3) pass(t0, std::integral_constant<int, 3>{});
}

// Whether any of nt activation rows (a, stride bytes apart; nb blocks of block_bytes each) holds
// a -128 among each block's qs_bytes (a multiple of 32) quants at qs_offset: the one input the
// sign trick vpmaddubsw(|w|, sign(a, w)) gets wrong.
inline bool acts_hold_min(const uint8_t* a, size_t stride, int64_t nt, int64_t nb, size_t block_bytes, size_t qs_offset,
                          size_t qs_bytes) {
  const __m256i m = _mm256_set1_epi8(-128);
  for (int64_t t = 0; t < nt; ++t) {
    const uint8_t* row = a + size_t(t) * stride + qs_offset;
    __m256i any = _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 8
      for (size_t i = 0; i < qs_bytes; i += 32) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + size_t(b) * block_bytes + i));
        any = _mm256_or_si256(any, _mm256_cmpeq_epi8(x, m));
      }
    }
    if (!_mm256_testz_si256(any, any)) return true;
  }
  return false;
}

}  // namespace
}  // namespace expertmesh::cpu
