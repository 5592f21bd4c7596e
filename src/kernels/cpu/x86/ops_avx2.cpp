// AVX2 + FMA kernel variant (compiled with -mavx2 -mfma -mf16c -mbmi2; used only after cpuid says so).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm_kquants_common.h"
#include "kernels/cpu/gemm_legacy_common.h"

namespace expertmesh::cpu::avx2 {
using VEC = __m256;
constexpr int W = 8;
inline VEC LOAD(const float* p) { return _mm256_loadu_ps(p); }
inline void STORE(float* p, VEC v) { _mm256_storeu_ps(p, v); }
inline VEC SET1(float a) { return _mm256_set1_ps(a); }
inline VEC ZERO() { return _mm256_setzero_ps(); }
inline VEC ADD(VEC a, VEC b) { return _mm256_add_ps(a, b); }
inline VEC SUB(VEC a, VEC b) { return _mm256_sub_ps(a, b); }
inline VEC MUL(VEC a, VEC b) { return _mm256_mul_ps(a, b); }
inline VEC MAX(VEC a, VEC b) { return _mm256_max_ps(a, b); }
inline VEC FMA(VEC a, VEC b, VEC c) { return _mm256_fmadd_ps(a, b, c); }
inline VEC DIV(VEC a, VEC b) { return _mm256_div_ps(a, b); }
inline VEC MIN(VEC a, VEC b) { return _mm256_min_ps(a, b); }
inline VEC ROUND(VEC x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127].
inline VEC POW2(VEC n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
// v where x >= lim, else 0 (NaN x keeps v).
inline VEC ZERO_BELOW(VEC x, float lim, VEC v) { return _mm256_andnot_ps(_mm256_cmp_ps(x, SET1(lim), _CMP_LT_OQ), v); }
inline float HSUM(VEC v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float HMAX(VEC v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double sum_squares_f64(const float* x, int64_t n) {
  __m256d acc = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 f = _mm_loadu_ps(x + i);
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_mul_ps(f, f)));  // float square, double sum
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, acc);
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; i < n; ++i) s += double(x[i] * x[i]);
  return s;
}
}  // namespace expertmesh::cpu::avx2

#define NS avx2
#include "kernels/cpu/x86/ops_simd.inc"
#undef NS

namespace expertmesh::cpu {
namespace {
// Activation quantizers of this ISA (bit-identical to quantize_act_ref).
void quantize_act_avx2(ActType a, const float* x, void* out, int64_t n) {
  switch (a) {
    case ActType::kQ8a32:
      quantize_act_q8a32_avx2(x, out, n);
      return;
    case ActType::kQ8K:
      quantize_act_q8k_avx2(x, out, n);
      return;
    default:
      quantize_act_ref(a, x, out, n);
      return;
  }
}
}  // namespace

const Kernels* avx2_kernels() {
  static const Kernels k = [] {
    Kernels r{Isa::kAvx2, "avx2", avx2::dot, avx2::axpy, avx2::rmsnorm, avx2::softmax, avx2::swiglu, avx2::rope};
    r.quantize_act = quantize_act_avx2;
    r.gemm = &gemm_table(Isa::kAvx2);
    return r;
  }();
  return &k;
}
}  // namespace expertmesh::cpu
