// 8×8 transpose of 32-bit lanes for the AVX2 kernels (include only from files compiled with
// -mavx2). Internal linkage: a copy compiled with other ISA flags must never be merged with it.
#pragma once

#include <immintrin.h>

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

}  // namespace
}  // namespace expertmesh::cpu
