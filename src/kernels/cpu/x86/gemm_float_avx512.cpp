// AVX512 float matmul kernels (gemm.h): F32 × F32, F16 × F16 (vcvtph2ps), BF16 × F32 (exact
// widening, bits << 16). Tiling and the per-output instruction sequence: gemm_float_common.h.
// Here each output's accumulator is one __m512 over 16 columns per step (a masked, zero-filled
// load for the last n % 16), 16-lane FMA, and hsum16's fixed reduction tree. Register block:
// up to 4 weight rows × 6 tokens (24 accumulators + 4 weight vectors + 1 activation vector).
// GCC 12's AVX512 intrinsics self-initialise their _mm512_undefined_* operands, which
// -Wuninitialized reports wherever they are inlined (GCC PR 105593); the headers are fine.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_float_common.h"
#include "kernels/cpu/x86/hsum_avx512.h"

namespace expertmesh::cpu {
namespace {

inline __mmask16 tail_mask16(int rem) { return __mmask16((1u << rem) - 1u); }

inline __m512 load_f32(const uint8_t* row, int64_t c) {
  return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + c);
}
inline __m512 load_f32_tail(const uint8_t* row, int64_t c, int rem) {
  return _mm512_maskz_loadu_ps(tail_mask16(rem), reinterpret_cast<const float*>(row) + c);
}
inline __m256i load_u16x16(const uint8_t* row, int64_t c) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c));
}
inline __m256i load_u16x16_tail(const uint8_t* row, int64_t c, int rem) {
  return _mm256_maskz_loadu_epi16(tail_mask16(rem), row + 2 * c);
}
inline __m512 widen_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

struct LanesBase {
  using Acc = __m512;
  using W = __m512;
  using X = __m512;
  static constexpr int kStep = 16, kMaxRow = 4, kMaxTok = 6;
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512 madd(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
  static float hsum(__m512 acc) { return hsum16(acc); }
  static void hsum16x16(const __m512* acc, float* out) { cpu::hsum16x16(acc, out); }
};

struct F32Lanes : LanesBase {
  static constexpr int kActBytes = 4, kWBytes = 4;
  static __m512 load_w(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m512 load_x(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m512 load_w_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
  static __m512 load_x_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
};

struct F16Lanes : LanesBase {
  static constexpr int kActBytes = 2, kWBytes = 2;
  static __m512 load_w(const uint8_t* p, int64_t c) { return _mm512_cvtph_ps(load_u16x16(p, c)); }
  static __m512 load_x(const uint8_t* p, int64_t c) { return _mm512_cvtph_ps(load_u16x16(p, c)); }
  static __m512 load_w_tail(const uint8_t* p, int64_t c, int rem) {
    return _mm512_cvtph_ps(load_u16x16_tail(p, c, rem));
  }
  static __m512 load_x_tail(const uint8_t* p, int64_t c, int rem) {
    return _mm512_cvtph_ps(load_u16x16_tail(p, c, rem));
  }
};

struct Bf16F32Lanes : LanesBase {
  static constexpr int kActBytes = 4, kWBytes = 2;
  static __m512 load_w(const uint8_t* p, int64_t c) { return widen_bf16(load_u16x16(p, c)); }
  static __m512 load_x(const uint8_t* p, int64_t c) { return load_f32(p, c); }
  static __m512 load_w_tail(const uint8_t* p, int64_t c, int rem) { return widen_bf16(load_u16x16_tail(p, c, rem)); }
  static __m512 load_x_tail(const uint8_t* p, int64_t c, int rem) { return load_f32_tail(p, c, rem); }
};

void gemm_f32(const GemmArgs& g) { float_gemm::gemm<F32Lanes>(g); }
void gemm_f16(const GemmArgs& g) { float_gemm::gemm<F16Lanes>(g); }
void gemm_bf16(const GemmArgs& g) { float_gemm::gemm<Bf16F32Lanes>(g); }

}  // namespace

void register_gemm_float_avx512(GemmTable& t) {
  t[size_t(GgmlType::F32)] = {ActType::kF32, gemm_f32};
  t[size_t(GgmlType::F16)] = {ActType::kF16, gemm_f16};
  t[size_t(GgmlType::BF16)] = {ActType::kF32, gemm_bf16};
}

}  // namespace expertmesh::cpu
