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

// Dequantizes one row (row r of w, which may sit inside an interleaved group) to F32.
Status dequantize_row(const Weight& w, int64_t r, float* out);

}  // namespace expertmesh::worker
