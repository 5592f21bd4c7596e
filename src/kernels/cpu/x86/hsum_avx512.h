// Horizontal sums of __m512 float accumulators for the AVX512 float matmul kernels
// (gemm_float_avx512.cpp, gemm_float_avx512bf16.cpp). One fixed tree per output: lanes
// (i, i+8), then (i, i+4), (i, i+2), (i, i+1). hsum16x16 reduces 16 accumulators at once with
// the same additions (so the same bits as 16 calls of hsum16) in about a third of the
// instructions: with rows of 768 (a 24-step dot product) the one-by-one sums took a fifth of
// the block.
//
// Included by translation units compiled with AVX512 flags only; internal linkage (an inline
// function with external linkage could be picked by the linker for another ISA's unit).
#pragma once

#include <immintrin.h>

namespace expertmesh::cpu {
namespace {

inline float hsum16(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

// out[i] = hsum16(a[i]) for i < 16.
inline void hsum16x16(const __m512* a, float* out) {
  __m512 u[8], w[4];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p) {  // 128-bit lanes: [a s8 lo, a s8 hi, b s8 lo, b s8 hi]
    u[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {  // 128-bit lane k: s4 of output 4q + k
    w[q] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * q], u[2 * q + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u[2 * q], u[2 * q + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // 128-bit lane k: [s2_0, s2_1] of outputs k and 4 + k (z0), 8 + k and 12 + k (z1).
  const __m512 z0 = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 z1 = _mm512_add_ps(_mm512_shuffle_ps(w[2], w[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(w[2], w[3], _MM_SHUFFLE(3, 2, 3, 2)));
  // Lane 4k + j: output 4j + k.
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(out, _mm512_permutexvar_ps(order, r));
}

}  // namespace
}  // namespace expertmesh::cpu
