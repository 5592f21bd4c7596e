// Shared pieces of the legacy-family matmul kernels (Q8_0, Q4_0, IQ4_NL × Q8a32; gemm.h) and the
// SIMD Q8a32 activation quantizers. Internal to kernels/cpu.
//
// Every kernel of the family computes, for each output (weight row r, activation row t), over the
// 32-blocks b of the row in column order:
//   s_b = fp16_to_f32(w_b.d) * a_b.d              (one float multiply, weight scale first)
//   S_b = Σ_i v_b[i] * a_b.qs[i]                  (exact int32)
//   acc = fmaf(s_b, float(S_b), acc)              (acc starts at +0)
// with v = qs (Q8_0), q - 8 (Q4_0), kIq4nlValues[q] (IQ4_NL); 4-bit q: element j is the low nibble
// of qs[j], element j + 16 the high nibble (legacy_blocks.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/gemm.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include <cstring>
#endif

namespace expertmesh::cpu {

// Q8a32 activation quantizers, bit-identical to quantize_act_ref(ActType::kQ8a32, x, out, n) for
// every finite input (d = bf16_rne(amax / 127), id = d > 0 ? 1 / d : 0, q = clamp(round-half-even
// (x * id), -128, 127), s = Σ q). A NaN product (x = 0 in a block whose d is so small that
// 1 / d overflows) gives q = 0, as the reference's float-to-int8 conversion does on x86.
// n % 32 == 0; out receives n / 32 BlockQ8a32 (no alignment needed). Pure, thread-safe.
// Require the CPU features of their ISA (cpu_supports).
void quantize_act_q8a32_avx2(const float* x, void* out, int64_t n);
void quantize_act_q8a32_avx512(const float* x, void* out, int64_t n);

namespace legacy_gemm {

// Bytes of one 32-weight block, and where its quants start (after the fp16 scale).
inline constexpr size_t kQ8_0BlockBytes = 34;
inline constexpr size_t kQ4BlockBytes = 18;  // Q4_0 and IQ4_NL
inline constexpr size_t kQsOffset = 2;

// Offsets inside BlockQ8a32 (gemm.h).
inline constexpr size_t kActD = 0;
inline constexpr size_t kActS = 4;
inline constexpr size_t kActQs = 8;
inline constexpr size_t kActBlockBytes = sizeof(BlockQ8a32);

#if defined(__AVX2__)
// 256-bit pieces both x86 quantizers share. Internal linkage: this header is compiled with
// different -m flags in different units, and the linker must not pick one unit's copy for another.
namespace {

// m[j] are 8 lanes of block j's partial maxima; returns the 8 block maxima in block order.
inline __m256 hmax8x8(const __m256 m[8]) {
  __m256 a[4], v[2];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
    a[i] = _mm256_max_ps(_mm256_unpacklo_ps(m[2 * i], m[2 * i + 1]), _mm256_unpackhi_ps(m[2 * i], m[2 * i + 1]));
  }
#pragma GCC unroll 16
  for (int i = 0; i < 2; ++i) {
    v[i] = _mm256_max_ps(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm256_max_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20), _mm256_permute2f128_ps(v[0], v[1], 0x31));
}

// p[j] are 8 partial sums of block j; returns the 8 block sums in block order.
inline __m256i hsum8x8(const __m256i p[8]) {
  const __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
  const __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
  const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

// One row of n floats (n % 32 == 0) into BlockQ8a32s, 8 blocks per call of Quantize8 (256
// floats -> 8 blocks); a tail of fewer than 8 blocks goes through a zero-padded copy.
template <void (*Quantize8)(const float* x, uint8_t* out)>
void quantize_row_q8a32(const float* x, void* out, int64_t n) {
  auto* o = static_cast<uint8_t*>(out);
  const int64_t nb = n / 32;
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) Quantize8(x + 32 * b, o + kActBlockBytes * size_t(b));
  if (b < nb) {
    alignas(64) float xs[256] = {};
    alignas(64) uint8_t os[8 * kActBlockBytes];
    const int64_t rest = nb - b;
    std::memcpy(xs, x + 32 * b, size_t(rest) * 32 * sizeof(float));
    Quantize8(xs, os);
    std::memcpy(o + kActBlockBytes * size_t(b), os, size_t(rest) * kActBlockBytes);
  }
}

}  // namespace
#endif

}  // namespace legacy_gemm
}  // namespace expertmesh::cpu
