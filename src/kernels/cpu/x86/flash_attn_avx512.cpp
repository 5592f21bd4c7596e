// AVX512 flash attention (flash_attn.h; compiled with the AVX512 F/BW/VL/VNNI flags, used only
// after cpuid says so): one token's query group (<= 8 queries) runs 8 lanes wide (ymm, AVX512VL
// masks), larger batches 16 lanes wide in blocks of up to 64 queries (flash_attn_simd.inc).
// Both widths run the same per-lane operations, so a query's bits do not depend on which one
// its batch used.
//
// GCC 12's AVX512 headers self-initialise their "undefined" vectors (__m512 __Y = __Y), which
// -Wmaybe-uninitialized reports once the intrinsics are inlined into these templates.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/flash_attn.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu::flash_avx512 {
namespace {

struct Y8 {
  using V = __m256;
  using M = __mmask8;
  static constexpr int kW = 8, kRegs = 32;
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
  static V round(V x) { return _mm256_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static M lt(V a, V b) { return _mm256_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(V a, V b) { return _mm256_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M le(V a, V b) { return _mm256_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static V select(M m, V a, V b) { return _mm256_mask_blend_ps(m, b, a); }
  static V mask_fma(V a, V b, V c, M m) { return _mm256_mask3_fmadd_ps(a, b, c, m); }
  static V zero_if(M m, V x) { return _mm256_maskz_mov_ps(M(~m), x); }
};

struct Z16 {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kW = 16, kRegs = 32;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V zero() { return _mm512_setzero_ps(); }
  static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M le(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  static V mask_fma(V a, V b, V c, M m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
  static V zero_if(M m, V x) { return _mm512_maskz_mov_ps(M(~m), x); }
};

#include "kernels/cpu/x86/flash_attn_simd.inc"

void attend(const FlashAttnArgs& a) {
  const int64_t nq = a.n_rows * a.n_heads;
  for (int64_t q0 = 0; q0 < nq; q0 += kFlashMaxBlock) {
    const int64_t n = std::min<int64_t>(kFlashMaxBlock, nq - q0);
    switch ((n + 15) / 16) {
      case 1:
        if (n <= 8)
          flash_block<Y8, 1>(a, q0, n);
        else
          flash_block<Z16, 1>(a, q0, n);
        break;
      case 2:
        flash_block<Z16, 2>(a, q0, n);
        break;
      case 3:
        flash_block<Z16, 3>(a, q0, n);
        break;
      default:
        flash_block<Z16, 4>(a, q0, n);
        break;
    }
  }
}

}  // namespace
}  // namespace expertmesh::cpu::flash_avx512

namespace expertmesh::cpu {
const FlashAttnKernels* flash_attn_avx512() {
  static const FlashAttnKernels k{"avx512", flash_avx512::attend, flash_avx512::flash_merge};
  return &k;
}
}  // namespace expertmesh::cpu
