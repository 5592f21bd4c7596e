// Quantized matrix multiplication kernels: one entry per weight type and instruction set
// (issue 13; STYLE.md R6). The worker's matmul (worker/matmul.cpp) quantizes each activation
// row ONCE into the format the weight type dots against (its ActType, the peer's vec_dot_type),
// then calls the type's GemmFn on tiles of weight rows × activation rows, split over threads.
// A type without an entry (gemm == nullptr) takes the generic path: dequantize a tile, F32 dot.
//
// Contract of every GemmFn (all ISAs):
//   y[t * ldy + r] = Σ_c W[r][c] · A[t][c]      for r < nr, t < nt
//   - w: weight row 0 of the tile, its row meta included (IQ4_KS's float scale); rows w_stride
//     bytes apart. n columns, n % block == 0 (whole rows; the caller never passes a column slice).
//   - a: activation row 0, already in `act` format (act_row_bytes(act, n) each), a_stride apart.
//   - scratch: gemm_scratch_bytes(n) bytes, 64-byte aligned, private to the calling thread
//     (for unpacking a weight tile once and reusing it across the tile's activation rows).
//   - The value computed for (r, t) does not depend on nr, nt, or where r and t sit in the
//     tile: a row's result is the same alone or in a batch of 512 (serve's continuous batching
//     relies on it, bit for bit).
//
// Integer types (everything but F32/F16/BF16) compute with exact integer block sums, and the
// float steps are fixed by the canonical formulas below, so scalar, AVX2 and AVX512 give the
// same bits. For each output, with fmaf = fused multiply-add (std::fma in the scalar code):
//   acc = 0; for each block b in column order: acc = fmaf(s_b, float(S_b), acc)  [+ the min term]
//   - Q8_0 × Q8a32 (block 32):  s_b = fp16(w.d) * a.d,  S_b = Σ w.qs[i] * a.qs[i]
//   - Q4_0 × Q8a32:             s_b = fp16(w.d) * a.d,  S_b = Σ (q[i] - 8) * a.qs[i]
//   - IQ4_NL × Q8a32:           s_b = fp16(w.d) * a.d,  S_b = Σ kIq4nlValues[q[i]] * a.qs[i]
//   - Q4_K × Q8K (block 256): s = fp16(w.d) * a.d,  S = Σ_j sc_j · Σ_{32 of j} q·a.qs;
//                             then acc = fmaf(-(fp16(w.dmin) * a.d), float(M), acc),
//                             M = Σ_j m_j · (a.bsums[2j] + a.bsums[2j+1])        (j < 8)
//   - Q6_K × Q8K:             s = fp16(w.d) * a.d,  S = Σ_k sc_k · Σ_{16 of k} (q - 32)·a.qs  (k < 16)
//   - IQ4_XS × Q8K:           s = fp16(w.d) * a.d,  S = Σ_j (ls_j - 32) · Σ_{32 of j} v·a.qs
//   - IQ4_KS × Q8K:           s = a.d,  S = Σ_j ls_j · Σ_{32 of j} v·a.qs  (ls_j = (scales[j] & 254) - 127,
//                             v from the table half the shift bit picks); y = d_row * acc
// Float types (F32, F16, BF16 weights) are compared with the scalar reference within a
// tolerance; their value still must not depend on the tile (same instruction sequence per output).
//
// Thread-safety: the tables are immutable; GemmFns are pure apart from writing y and scratch.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "model/types.h"

namespace expertmesh::cpu {

// Activation formats (the peer's vec_dot_type on x86).
enum class ActType : uint8_t {
  kF32,    // raw floats
  kF16,    // F16 weights: activations rounded to F16 (IEEE half bits), as the peer does
  kBF16,   // BF16 weights with --bf16-activations: activations rounded to BF16 (round to nearest even)
  kQ8a32,  // BlockQ8a32: the legacy 32-blocks (Q4_0, Q8_0, IQ4_NL, ...)
  kQ8K,    // BlockQ8K: k-quants, i-quants, IQK types (256-blocks)
  kCount,
};

// 32 activations. The scale follows the peer's Q8_2: d = bf16(amax / 127) (round to nearest
// even), q = round-to-nearest-even(x / d) clamped to [-128, 127] (0 when d == 0); s = Σ q.
struct BlockQ8a32 {
  float d;
  int32_t s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8a32) == 40);

// 256 activations, the peer's x86 Q8_K (iqk_quantize_row_q8_K): d = amax/127,
// q = round-to-nearest-even(x * 127/amax) clamped, bsums[g] = Σ q over 16 values, sum = d * Σ q.
struct BlockQ8K {
  float d;
  float sum;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(BlockQ8K) == 296);  // == quant::kq::BlockQ8K (GGML_TYPE_Q8_K), field for field

// Block of an activation format (1 for the float formats) and bytes of a row of n values.
int64_t act_block(ActType a);
size_t act_row_bytes(ActType a, int64_t n);
// One row of n floats (n % act_block(a) == 0) into format a: the reference quantizer, the
// definition every SIMD quantizer must reproduce bit for bit.
void quantize_act_ref(ActType a, const float* x, void* out, int64_t n);

struct GemmArgs {
  int64_t n = 0;               // columns (multiple of the type's block)
  const uint8_t* w = nullptr;  // weight row 0 of the tile
  size_t w_stride = 0;         // bytes between weight rows
  int64_t nr = 0;              // weight rows in the tile
  const uint8_t* a = nullptr;  // activation row 0 (act format)
  size_t a_stride = 0;         // bytes between activation rows
  int64_t nt = 0;              // activation rows
  float* y = nullptr;          // y[t * ldy + r]
  int64_t ldy = 0;
  uint8_t* scratch = nullptr;  // gemm_scratch_bytes(n), 64-aligned, thread-private
};
using GemmFn = void (*)(const GemmArgs& g);

// Scratch every GemmFn may use for a tile of up to kGemmMaxTileRows weight rows of n columns.
inline constexpr int64_t kGemmMaxTileRows = 64;
size_t gemm_scratch_bytes(int64_t n);

struct TypeGemm {
  ActType act = ActType::kF32;
  GemmFn gemm = nullptr;  // nullptr: no fast kernel for this type on this ISA (generic path)
};
using GemmTable = std::array<TypeGemm, static_cast<size_t>(GgmlType::kCount)>;

// Per-family registration, one set per ISA (ref/, x86/). Each fills its types' entries.
void register_gemm_legacy_ref(GemmTable& t);   // Q8_0 Q4_0 IQ4_NL
void register_gemm_kquants_ref(GemmTable& t);  // Q4_K Q6_K
void register_gemm_iquants_ref(GemmTable& t);  // IQ4_XS IQ4_KS
void register_gemm_float_ref(GemmTable& t);    // F32 F16 BF16
void register_gemm_legacy_avx2(GemmTable& t);
void register_gemm_kquants_avx2(GemmTable& t);
void register_gemm_iquants_avx2(GemmTable& t);
void register_gemm_float_avx2(GemmTable& t);
void register_gemm_legacy_avx512(GemmTable& t);
void register_gemm_kquants_avx512(GemmTable& t);
void register_gemm_iquants_avx512(GemmTable& t);
void register_gemm_float_avx512(GemmTable& t);

// BF16 weights × BF16-rounded activations (--bf16-activations): the one entry outside the
// per-type table, since it changes the activation format of a type that has one by default.
// nullptr where the ISA has no such kernel (the reference has one; AVX512 uses vdpbf16ps when
// the CPU has AVX512-BF16, see cpu_supports_bf16()).
GemmFn gemm_bf16_bf16act_ref();
GemmFn gemm_bf16_bf16act_avx2();
GemmFn gemm_bf16_bf16act_avx512bf16();  // requires AVX512-BF16

}  // namespace expertmesh::cpu
