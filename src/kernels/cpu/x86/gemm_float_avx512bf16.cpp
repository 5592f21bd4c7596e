// BF16 weights × BF16 activations with AVX512-BF16 (vdpbf16ps), the --bf16-activations kernel
// (gemm.h). Compiled with the AVX512 flags plus -mavx512bf16; only called after
// cpu_supports_bf16(). Tiling and the per-output instruction sequence: gemm_float_common.h.
// Each output's accumulator is one __m512: per step of 32 columns, lane i gets
// acc += w[2i+1]·a[2i+1], then += w[2i]·a[2i] (vdpbf16ps: bf16 products are exact in f32, each
// addition rounds to nearest even; denormal inputs and results flush to zero); the last n % 32
// columns are a masked, zero-filled load; then the fixed hsum16 tree. Register block: up to
// 4 weight rows × 6 tokens.
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

inline __m512bh load_bf16x32(const uint8_t* row, int64_t c) { return (__m512bh)_mm512_loadu_si512(row + 2 * c); }
inline __m512bh load_bf16x32_tail(const uint8_t* row, int64_t c, int rem) {
  return (__m512bh)_mm512_maskz_loadu_epi16(__mmask32((1u << rem) - 1u), row + 2 * c);
}

struct Bf16DpLanes {
  using Acc = __m512;
  using W = __m512bh;
  using X = __m512bh;
  static constexpr int kStep = 32, kMaxRow = 4, kMaxTok = 6, kActBytes = 2, kWBytes = 2;
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512bh load_w(const uint8_t* p, int64_t c) { return load_bf16x32(p, c); }
  static __m512bh load_x(const uint8_t* p, int64_t c) { return load_bf16x32(p, c); }
  static __m512bh load_w_tail(const uint8_t* p, int64_t c, int rem) { return load_bf16x32_tail(p, c, rem); }
  static __m512bh load_x_tail(const uint8_t* p, int64_t c, int rem) { return load_bf16x32_tail(p, c, rem); }
  static __m512 madd(__m512 acc, __m512bh w, __m512bh x) { return _mm512_dpbf16_ps(acc, w, x); }
  static float hsum(__m512 acc) { return hsum16(acc); }
  static void hsum16x16(const __m512* acc, float* out) { cpu::hsum16x16(acc, out); }
};

void gemm_bf16_bf16act(const GemmArgs& g) { float_gemm::gemm<Bf16DpLanes>(g); }

}  // namespace

GemmFn gemm_bf16_bf16act_avx512bf16() { return gemm_bf16_bf16act; }

}  // namespace expertmesh::cpu
