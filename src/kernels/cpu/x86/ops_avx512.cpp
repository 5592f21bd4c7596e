// AVX512 kernel variant (F/BW/VL/VNNI; compiled with those flags, used only after cpuid says so).
// GCC 12 reports the `__Y = __Y` placeholders inside its own intrinsic headers as uninitialized
// once they are inlined (a known false positive); the pragmas must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_kquants_common.h"
#include "kernels/cpu/gemm_legacy_common.h"

namespace expertmesh::cpu::avx512 {
using VEC = __m512;
constexpr int W = 16;
inline VEC LOAD(const float* p) { return _mm512_loadu_ps(p); }
inline void STORE(float* p, VEC v) { _mm512_storeu_ps(p, v); }
inline VEC SET1(float a) { return _mm512_set1_ps(a); }
inline VEC ZERO() { return _mm512_setzero_ps(); }
inline VEC ADD(VEC a, VEC b) { return _mm512_add_ps(a, b); }
inline VEC SUB(VEC a, VEC b) { return _mm512_sub_ps(a, b); }
inline VEC MUL(VEC a, VEC b) { return _mm512_mul_ps(a, b); }
inline VEC MAX(VEC a, VEC b) { return _mm512_max_ps(a, b); }
inline VEC FMA(VEC a, VEC b, VEC c) { return _mm512_fmadd_ps(a, b, c); }
inline VEC DIV(VEC a, VEC b) { return _mm512_div_ps(a, b); }
inline VEC MIN(VEC a, VEC b) { return _mm512_min_ps(a, b); }
inline VEC ROUND(VEC x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127].
inline VEC POW2(VEC n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
// v where x >= lim, else 0 (NaN x keeps v).
inline VEC ZERO_BELOW(VEC x, float lim, VEC v) {
  return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(x, SET1(lim), _CMP_LT_OQ), _mm512_setzero_ps());
}
inline float HSUM(VEC v) { return _mm512_reduce_add_ps(v); }
inline float HMAX(VEC v) { return _mm512_reduce_max_ps(v); }
inline double sum_squares_f64(const float* x, int64_t n) {
  __m512d acc = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 f = _mm256_loadu_ps(x + i);
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_mul_ps(f, f)));  // float square, double sum
  }
  double s = _mm512_reduce_add_pd(acc);
  for (; i < n; ++i) s += double(x[i] * x[i]);
  return s;
}
}  // namespace expertmesh::cpu::avx512

#define NS avx512
#include "kernels/cpu/x86/ops_simd.inc"
#undef NS

namespace expertmesh::cpu {
namespace {
// quant::f32_to_bf16 on 16 lanes: round to nearest even, NaN quieted (integer steps, so
// denormals round as the scalar code does; vcvtneps2bf16 would flush them).
void round_bf16_avx512(const float* x, void* out, int64_t n) {
  auto* o = static_cast<uint16_t*>(out);
  int64_t i = 0;
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q)));
  }
  if (i < n) quantize_act_ref(ActType::kBF16, x + i, o + i, n - i);
}

// Activation quantizers of this ISA (bit-identical to quantize_act_ref).
void quantize_act_avx512(ActType a, const float* x, void* out, int64_t n) {
  switch (a) {
    case ActType::kBF16:
      round_bf16_avx512(x, out, n);
      return;
    case ActType::kQ8a32:
      quantize_act_q8a32_avx512(x, out, n);
      return;
    case ActType::kQ8K:
      quantize_act_q8k_avx512(x, out, n);
      return;
    default:
      quantize_act_ref(a, x, out, n);
      return;
  }
}
}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels k = [] {
    Kernels r{Isa::kAvx512,    "avx512",        avx512::dot,    avx512::axpy,
              avx512::rmsnorm, avx512::softmax, avx512::swiglu, avx512::rope};
    r.quantize_act = quantize_act_avx512;
    r.gemm = &gemm_table(Isa::kAvx512);
    return r;
  }();
  return &k;
}
}  // namespace expertmesh::cpu
