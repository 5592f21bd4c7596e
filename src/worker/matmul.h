// Generic matrix multiplication for every weight type (ARCHITECTURE.md §5: every type works in
// every op). A tile of weight rows is dequantized to F32 with quant::dequantize_rows (F32 rows
// are used in place), then F32 dot products against each token's activations with the
// selected SIMD kernel. Rows are split across the engine's threads by tiles.
//
//   y[t*ldy + r] = sum_{c in cols} W[row0 + r][c] * x[t*ldx + (c - cols.begin)]
//
// for r in [0, nrows), t in [0, n_tok). `cols` restricts the reduction to a column range (a
// rank's slice of the heads for attn_output); by default all ne0 columns.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/model.h"
#include "worker/thread_pool.h"

namespace expertmesh::worker {

struct ColRange {
  int64_t begin = 0;
  int64_t end = -1;  // -1: ne0
};

Status matmul(const Weight& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx, int64_t n_tok, float* y,
              int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, ColRange cols = {});

// How the peer rounds activations before a dot product with a weight of type t (its
// vec_dot_type on AVX2/AVX512 builds): the legacy 32-blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q6_0, Q8_0,
// IQ4_NL) use Q8_2_X4 — per block of 32, d = bf16(amax/127), q = round-to-nearest-even(x/d)
// clamped to int8, value d*q. Every other type is multiplied with F32 activations here.
enum class ActivationRounding { kNone, kQ8_2 };
ActivationRounding activation_rounding(GgmlType t);
// x (n floats, n % 32 == 0) -> the values the peer's Q8_2 blocks represent. On x86 the peer
// stores each block's sum of quants as an exact int16 (quantize_row_q8_2_x4), so every kernel
// that uses it (the offset/min types and the Q8_0_R8 repack) computes the same exact value as a
// dot product of the dequantized weights with these activations; only the float summation order
// differs. (ARM builds store a bf16-rounded sum instead; we follow the x86 build the golden
// figures come from.)
void round_activations_q8_2(const float* x, float* out, int64_t n);

// Dequantizes one row (row r of w, which may sit inside an interleaved group) to F32.
Status dequantize_row(const Weight& w, int64_t r, float* out);

}  // namespace expertmesh::worker
