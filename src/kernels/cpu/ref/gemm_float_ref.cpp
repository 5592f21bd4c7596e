// Reference float matmul kernels (gemm.h): F32 × F32, F16 × F16 (IEEE half bits on both
// sides: the peer rounds activations to F16 for F16 weights), BF16 × F32 (the default) and
// BF16 × BF16 (--bf16-activations). The specification the SIMD variants are tested against:
//   y[t][r] = float( Σ_c double(W[r][c]) · double(A[t][c]) )     (c in column order)
// with W and A the exact values of their bits (fp16 / bf16 widen exactly). Every product is
// exact in double, so this is the correctly rounded dot product up to the double summation
// error; the SIMD kernels (float accumulators) agree with it within a relative tolerance of
// Σ|W·A|, and each of them is bit-for-bit independent of the tile within its ISA.
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/quant/fp16.h"

namespace expertmesh::cpu {
namespace {

inline float load_f32(const uint8_t* row, int64_t c) {
  float v;
  std::memcpy(&v, row + 4 * c, 4);
  return v;
}
inline uint16_t load_u16(const uint8_t* row, int64_t c) {
  uint16_t v;
  std::memcpy(&v, row + 2 * c, 2);
  return v;
}

struct F32Values {
  static float w(const uint8_t* row, int64_t c) { return load_f32(row, c); }
  static float a(const uint8_t* row, int64_t c) { return load_f32(row, c); }
};
struct F16Values {
  static float w(const uint8_t* row, int64_t c) { return quant::fp16_to_f32(load_u16(row, c)); }
  static float a(const uint8_t* row, int64_t c) { return quant::fp16_to_f32(load_u16(row, c)); }
};
struct Bf16F32Values {
  static float w(const uint8_t* row, int64_t c) { return quant::bf16_to_f32(load_u16(row, c)); }
  static float a(const uint8_t* row, int64_t c) { return load_f32(row, c); }
};
struct Bf16Bf16Values {
  static float w(const uint8_t* row, int64_t c) { return quant::bf16_to_f32(load_u16(row, c)); }
  static float a(const uint8_t* row, int64_t c) { return quant::bf16_to_f32(load_u16(row, c)); }
};

template <class V>
void gemm_ref(const GemmArgs& g) {
  for (int64_t t = 0; t < g.nt; ++t) {
    const uint8_t* x = g.a + size_t(t) * g.a_stride;
    for (int64_t r = 0; r < g.nr; ++r) {
      const uint8_t* w = g.w + size_t(r) * g.w_stride;
      double s = 0;
      for (int64_t c = 0; c < g.n; ++c) s += double(V::w(w, c)) * double(V::a(x, c));
      g.y[size_t(t) * size_t(g.ldy) + size_t(r)] = float(s);
    }
  }
}

}  // namespace

void register_gemm_float_ref(GemmTable& t) {
  t[size_t(GgmlType::F32)] = {ActType::kF32, gemm_ref<F32Values>};
  t[size_t(GgmlType::F16)] = {ActType::kF16, gemm_ref<F16Values>};
  t[size_t(GgmlType::BF16)] = {ActType::kF32, gemm_ref<Bf16F32Values>};
}

GemmFn gemm_bf16_bf16act_ref() { return gemm_ref<Bf16Bf16Values>; }

}  // namespace expertmesh::cpu
