// AVX2 flash attention (flash_attn.h; compiled with -mavx2 -mfma -mf16c -mbmi2, used only after
// cpuid says so): 8 query lanes per vector, blocks of up to 16 queries (flash_attn_simd.inc).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/flash_attn.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu::flash_avx2 {
namespace {

struct Y8 {
  using V = __m256;
  using M = __m256;
  static constexpr int kW = 8, kRegs = 16;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V zero() { return _mm256_setzero_ps(); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M le(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
  static V mask_fma(V a, V b, V c, M m) { return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), m); }
  static V zero_if(M m, V x) { return _mm256_andnot_ps(m, x); }
};

#include "kernels/cpu/x86/flash_attn_simd.inc"

void attend(const FlashAttnArgs& a) {
  const int64_t nq = a.n_rows * a.n_heads;
  for (int64_t q0 = 0; q0 < nq; q0 += 16) {
    const int64_t n = std::min<int64_t>(16, nq - q0);
    if (n <= 8)
      flash_block<Y8, 1>(a, q0, n);
    else
      flash_block<Y8, 2>(a, q0, n);
  }
}

}  // namespace
}  // namespace expertmesh::cpu::flash_avx2

namespace expertmesh::cpu {
const FlashAttnKernels* flash_attn_avx2() {
  static const FlashAttnKernels k{"avx2", flash_avx2::attend, flash_avx2::flash_merge};
  return &k;
}
}  // namespace expertmesh::cpu
