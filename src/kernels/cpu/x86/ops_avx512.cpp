// AVX512F kernel variant (compiled with -mavx512f -mfma; used only after cpuid says so).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"

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
const Kernels* avx512_kernels() {
  static const Kernels k{Isa::kAvx512,        "avx512",        avx512::dot,     avx512::axpy,
                         avx512::rmsnorm,     avx512::softmax, avx512::swiglu, avx512::rope};
  return &k;
}
}  // namespace expertmesh::cpu
