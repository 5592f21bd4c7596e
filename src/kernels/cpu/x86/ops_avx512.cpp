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
// exp(x) of every lane: Cephes' single-precision polynomial after range reduction by ln 2
// (within 2 ulp of expf), 0 below -87, finite up to 88.
inline VEC EXP(VEC x) {
  x = _mm512_min_ps(x, SET1(88.0f));
  const VEC n = _mm512_roundscale_ps(MUL(x, SET1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VEC r = FMA(n, SET1(-0.693359375f), x);
  r = FMA(n, SET1(2.12194440e-4f), r);
  VEC p = SET1(1.9875691500e-4f);
  p = FMA(p, r, SET1(1.3981999507e-3f));
  p = FMA(p, r, SET1(8.3334519073e-3f));
  p = FMA(p, r, SET1(4.1665795894e-2f));
  p = FMA(p, r, SET1(1.6666665459e-1f));
  p = FMA(p, r, SET1(5.0000001201e-1f));
  const VEC y = ADD(FMA(p, MUL(r, r), r), SET1(1.0f));
  const VEC scale =
      _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, SET1(-87.0f), _CMP_GE_OQ), MUL(y, scale));
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
// Activation quantizers of this ISA (bit-identical to quantize_act_ref).
void quantize_act_avx512(ActType a, const float* x, void* out, int64_t n) {
  switch (a) {
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
