// Shared pieces of the legacy-family matmul kernels (Q8_0, Q4_0, IQ4_NL × Q8a32; gemm.h) and the
// SIMD Q8a32 activation quantizers. Internal to kernels/cpu.
//
// Every kernel of the family computes, for each output (weight row r, activation row t), over the
// 32-blocks b of the row in column order:
//   s_b = fp16_to_f32(w_b.d) * a_b.d              (one float multiply, weight scale first)
//   S_b = Σ_i v_b[i] * a_b.qs[i]                  (exact int32)
//   acc = fmaf(s_b, float(S_b), acc)              (acc starts at +0)
// with v = qs (Q8_0), q - 8 (Q4_0), kIq4nlValues[q] (IQ4_NL); 4-bit q: element j is the low nibble
// of qs[j], element j + 16 the high nibble (legacy_blocks.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/gemm.h"

namespace expertmesh::cpu {

// Q8a32 activation quantizers, bit-identical to quantize_act_ref(ActType::kQ8a32, x, out, n) for
// every finite input (d = bf16_rne(amax / 127), id = d > 0 ? 1 / d : 0, q = clamp(round-half-even
// (x * id), -128, 127), s = Σ q). A NaN product (x = 0 in a block whose d is so small that
// 1 / d overflows) gives q = 0, as the reference's float-to-int8 conversion does on x86.
// n % 32 == 0; out receives n / 32 BlockQ8a32 (no alignment needed). Pure, thread-safe.
// Require the CPU features of their ISA (cpu_supports).
void quantize_act_q8a32_avx2(const float* x, void* out, int64_t n);
void quantize_act_q8a32_avx512(const float* x, void* out, int64_t n);

namespace legacy_gemm {

// Bytes of one 32-weight block, and where its quants start (after the fp16 scale).
inline constexpr size_t kQ8_0BlockBytes = 34;
inline constexpr size_t kQ4BlockBytes = 18;  // Q4_0 and IQ4_NL
inline constexpr size_t kQsOffset = 2;

// Offsets inside BlockQ8a32 (gemm.h).
inline constexpr size_t kActD = 0;
inline constexpr size_t kActS = 4;
inline constexpr size_t kActQs = 8;
inline constexpr size_t kActBlockBytes = sizeof(BlockQ8a32);

}  // namespace legacy_gemm
}  // namespace expertmesh::cpu
