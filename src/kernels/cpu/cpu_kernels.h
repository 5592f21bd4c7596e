// CPU compute kernels used by the forward pass (ARCHITECTURE.md §2, STYLE.md R6).
//
// One table of function pointers per instruction set: ref/ (scalar, the specification),
// x86/avx2, x86/avx512. select_kernels() picks one ONCE, from cpuid, and the engine keeps the
// table it got; nothing here is global mutable state. Every SIMD entry is tested against the
// scalar one on random data (tests/model/cpu_ops_test.cpp).
//
// Numerics follow ggml where the peer's result depends on it:
//  - rmsnorm: float squares summed in double, scale = 1/sqrtf(mean + eps), y = (scale*w)*x.
//  - softmax: max-subtraction, expf, sum in double; a row whose entries are all -inf (a fully
//    masked attention row) yields all zeros, never NaN.
//  - rope: cos/sin tables from rope_cache() (theta advanced by repeated multiplication by
//    base^(-2/n_rot) as ggml_rope_cache_init does), applied in NORMAL (adjacent pairs) or NEOX
//    (halves) layout to the first n_rot dims of each head.
#pragma once

#include <cstdint>

#include "kernels/cpu/gemm.h"

namespace expertmesh::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };
enum class RopeMode { kNormal, kNeox };

struct Kernels {
  Isa isa = Isa::kScalar;
  const char* name = "scalar";
  // sum_i a[i]*b[i], accumulated in float lanes.
  float (*dot_f32)(const float* a, const float* b, int64_t n) = nullptr;
  // y[i] += a * x[i]
  void (*axpy_f32)(float a, const float* x, float* y, int64_t n) = nullptr;
  // y[i] = x[i] * s * (w ? w[i] : 1), s = 1/sqrtf(mean(x^2) + eps). x and y may alias.
  void (*rmsnorm_f32)(const float* x, const float* w, float* y, int64_t n, float eps) = nullptr;
  // In place over one row; all -inf -> all 0.
  void (*softmax_f32)(float* x, int64_t n) = nullptr;
  // out[i] = silu(g[i]) * u[i]
  void (*swiglu_f32)(const float* g, const float* u, float* out, int64_t n) = nullptr;
  // Rotates n_heads heads of head_dim floats (contiguous) at one position; cs holds n_rot/2
  // (cos, sin) pairs from rope_cache().
  void (*rope_f32)(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs,
                   RopeMode mode) = nullptr;
  // Quantized matmul kernels of this ISA (gemm.h), indexed by weight type; never null.
  const GemmTable* gemm = nullptr;
  // BF16 weights × BF16-rounded activations. Null in the selected tables (BF16 weights then
  // take F32 activations); an engine with --bf16-activations sets it from bf16_activation_kernel().
  GemmFn gemm_bf16_bf16act = nullptr;
  // Activation quantizer of this ISA (bit-identical to quantize_act_ref).
  void (*quantize_act)(ActType a, const float* x, void* out, int64_t n) = quantize_act_ref;
};

// (cos, sin) pairs for one position: theta_0 = pos*freq_scale, theta_{i+1} = theta_i*base^(-2/n_rot).
void rope_cache(int64_t pos, int64_t n_rot, float freq_base, float freq_scale, float* cs);

const Kernels& ref_kernels();
// nullptr when the variant was not compiled in; callers must check cpu_supports() first.
const Kernels* avx2_kernels();
const Kernels* avx512_kernels();

// kAvx2: AVX2 + FMA + F16C. kAvx512: AVX512 F/BW/VL/VNNI (+ the AVX2 set); a CPU with AVX512F
// but no VNNI runs the AVX2 variant.
bool cpu_supports(Isa isa);
// AVX512-BF16 (vdpbf16ps), used by the --bf16-activations kernel of the AVX512 variant.
bool cpu_supports_bf16();
// The BF16 × BF16-activation kernel of an ISA (vdpbf16ps where the CPU has AVX512-BF16).
GemmFn bf16_activation_kernel(Isa isa);
// The quantized-matmul table of one ISA (built once, on first use, immutable). REQUIRES
// cpu_supports(isa): building a SIMD table runs that variant's code.
const GemmTable& gemm_table(Isa isa);
// The best variant this CPU runs (cpuid checked once per call; callers keep the result).
// EXPERTMESH_ISA=scalar|avx2|avx512 caps the choice (for tests and bisecting).
const Kernels& select_kernels();

}  // namespace expertmesh::cpu
