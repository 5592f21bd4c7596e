// AVX2 float matmul kernels (gemm.h): F32 × F32, F16 × F16 (F16C vcvtph2ps), BF16 × F32 and
// BF16 × BF16 (exact widening, bits << 16). Tiling and the per-output instruction sequence:
// gemm_float_common.h. Here each output's accumulator is one __m256 over 8 columns per step
// (the last n % 8 columns copied into a zero-filled vector), 8-lane FMA, and hsum8's fixed
// reduction tree. Register block: up to 3 weight rows × 4 tokens (12 accumulators + 3 weight
// vectors + 1 activation vector: the 16 ymm registers; 4 × 3 spills an accumulator).
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_float_common.h"

namespace expertmesh::cpu {
namespace {

// Lanes (i, i+4), then (i, i+2), (i, i+1): the same tree for every output.
inline float hsum8(__m256 v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
  return _mm_cvtss_f32(s1);
}

inline __m256 load_f32(const uint8_t* row, int64_t c) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
}
inline __m256 load_f32_tail(const uint8_t* row, int64_t c, int rem) {
  alignas(32) float buf[8] = {};
  std::memcpy(buf, row + 4 * c, size_t(rem) * 4);
  return _mm256_load_ps(buf);
}
inline __m128i load_u16x8(const uint8_t* row, int64_t c) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c));
}
inline __m128i load_u16x8_tail(const uint8_t* row, int64_t c, int rem) {
  alignas(16) uint16_t buf[8] = {};
  std::memcpy(buf, row + 2 * c, size_t(rem) * 2);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
}
inline __m256 widen_bf16(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }

struct LanesBase {
  using Acc = __m256;
  using W = __m256;
  using X = __m256;
  static constexpr int kStep = 8, kMaxRow = 3, kMaxTok = 4;
  static __m256 zero() { return _mm256_setzero_ps(); }
  static __m256 madd(__m256 acc, __m256 w, __m256 x) { return _mm256_fmadd_ps(w, x, acc); }
  static float hsum(__m256 acc) { return hsum8(acc); }
};

struct F32Lanes : LanesBase {
  static constexpr int kActBytes = 4, kWBytes = 4;
  static __m256 load_w(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m256 load_x(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m256 load_w_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
  static __m256 load_x_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
};

struct F16Lanes : LanesBase {
  static constexpr int kActBytes = 2, kWBytes = 2;
  static __m256 load_w(const uint8_t* p, int64_t c) { return _mm256_cvtph_ps(load_u16x8(p, c)); }
  static __m256 load_x(const uint8_t* p, int64_t c) { return _mm256_cvtph_ps(load_u16x8(p, c)); }
  static __m256 load_w_tail(const uint8_t* p, int64_t c, int rem) {
    return _mm256_cvtph_ps(load_u16x8_tail(p, c, rem));
  }
  static __m256 load_x_tail(const uint8_t* p, int64_t c, int rem) {
    return _mm256_cvtph_ps(load_u16x8_tail(p, c, rem));
  }
};

struct Bf16F32Lanes : LanesBase {
  static constexpr int kActBytes = 4, kWBytes = 2;
  static __m256 load_w(const uint8_t* p, int64_t c) { return widen_bf16(load_u16x8(p, c)); }
  static __m256 load_x(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m256 load_w_tail(const uint8_t* p, int64_t c, int rem) { return widen_bf16(load_u16x8_tail(p, c, rem)); }
  static __m256 load_x_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
};

struct Bf16Bf16Lanes : LanesBase {
  static constexpr int kActBytes = 2, kWBytes = 2;
  static __m256 load_w(const uint8_t* p, int64_t c) { return widen_bf16(load_u16x8(p, c)); }
  static __m256 load_x(const uint8_t* p, int64_t c) { return widen_bf16(load_u16x8(p, c)); }
  static __m256 load_w_tail(const uint8_t* p, int64_t c, int rem) { return widen_bf16(load_u16x8_tail(p, c, rem)); }
  static __m256 load_x_tail(const uint8_t* p, int64_t c, int rem) { return widen_bf16(load_u16x8_tail(p, c, rem)); }
};

void gemm_f32(const GemmArgs& g) { float_gemm::gemm<F32Lanes>(g); }
void gemm_f16(const GemmArgs& g) { float_gemm::gemm<F16Lanes>(g); }
void gemm_bf16(const GemmArgs& g) { float_gemm::gemm<Bf16F32Lanes>(g); }
void gemm_bf16_bf16(const GemmArgs& g) { float_gemm::gemm<Bf16Bf16Lanes>(g); }

}  // namespace

void register_gemm_float_avx2(GemmTable& t) {
  t[size_t(GgmlType::F32)] = {ActType::kF32, gemm_f32};
  t[size_t(GgmlType::F16)] = {ActType::kF16, gemm_f16};
  t[size_t(GgmlType::BF16)] = {ActType::kF32, gemm_bf16};
}

GemmFn gemm_bf16_bf16act_avx2() { return gemm_bf16_bf16; }

}  // namespace expertmesh::cpu
