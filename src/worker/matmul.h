// Matrix multiplication for every weight type (ARCHITECTURE.md §5; issue 13).
//
//   y[t*ldy + r] = sum_{c in cols} W[row0 + r][c] * x[t*ldx + (c - cols.begin)]
//
// for r in [0, nrows), t in [0, n_tok). `cols` restricts the reduction to a column range (a
// rank's slice of the heads for attn_output); by default all ne0 columns.
//
// Two paths, chosen per weight here and nowhere else:
//  - fast: the type has a kernel in the ISA's GemmTable (kernels/cpu/gemm.h) and the columns are
//    whole rows: the activations are quantized ONCE into the kernel's format (Activations caches
//    each format, so q/k/v or gate/up reading one input share it) and tiles of weight rows ×
//    activation rows go to the kernel, split over the pool's threads.
//  - generic: every other type (and column slices): a tile of rows is dequantized to F32 and
//    dotted with activations rounded as the peer's vec_dot_type rounds them (Q8_2 values for
//    the legacy 32-block types, F16 for F16), so no type ever asserts.
// Either way a row's result does not depend on n_tok, the tiling or the thread count.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/model.h"
#include "worker/thread_pool.h"

namespace expertmesh::worker {

struct ColRange {
  int64_t begin = 0;
  int64_t end = -1;  // -1: ne0
};

// How the generic path rounds activations before its F32 dot products.
enum class GenericRounding : uint8_t { kNone, kQ8_2, kF16, kCount };

// One matmul input (n_tok rows of n_cols floats, stride ldx; not owned, must outlive this) and
// its quantized forms, made on first use and reused by every weight that reads it.
// Not thread-safe: one forward thread uses it (the quantization itself runs on the pool).
class Activations {
 public:
  Activations(const float* x, int64_t ldx, int64_t n_tok, int64_t n_cols)
      : x_(x), ldx_(ldx), n_tok_(n_tok), n_cols_(n_cols) {}
  // The rows `rows` of `src` (in that order) as a new contiguous input: every form src has
  // already made is copied (bytes only: nothing is quantized twice), the floats too unless
  // `with_floats` is false (then data() is null and only those forms may be asked for).
  // The copies run on the pool.
  Activations(const Activations& src, const std::vector<int64_t>& rows, ThreadPool& pool, bool with_floats = true);
  Activations(const Activations&) = delete;
  Activations& operator=(const Activations&) = delete;
  const float* data() const { return x_; }
  int64_t ldx() const { return ldx_; }
  int64_t n_tok() const { return n_tok_; }
  int64_t n_cols() const { return n_cols_; }
  // Rows in kernel format `a`, quantized_stride(a) bytes apart, row 0 64-byte aligned.
  // REQUIRES n_cols % act_block(a) == 0.
  const uint8_t* quantized(cpu::ActType a, const cpu::Kernels& k, ThreadPool& pool);
  // Bytes between the rows of quantized(a): act_row_bytes(a, n_cols), for the float formats
  // (F32, F16, BF16) rounded up to an odd number of cache lines. Rows 2^k bytes apart map to the
  // same L1 sets, and the float kernels read up to 6 of them at once beside 4 weight rows: at
  // this stride they read them in place, instead of copying each token group per weight tile
  // (8% of BF16 prompt time; gemm_float_common.h).
  size_t quantized_stride(cpu::ActType a) const;
  // Rows rounded for the generic path (n_cols floats apart; the input itself for kNone).
  const float* rounded(GenericRounding r, ThreadPool& pool);

 private:
  const float* x_;
  int64_t ldx_, n_tok_, n_cols_;
  std::vector<float> own_;  // the copied floats of a gathered input
  // Storage of format f (64 bytes of slack) and its 64-byte aligned start.
  uint8_t* alloc_q(size_t f);
  std::array<std::vector<uint8_t>, size_t(cpu::ActType::kCount)> q_;
  std::array<uint8_t*, size_t(cpu::ActType::kCount)> q_ptr_{};
  std::array<bool, size_t(cpu::ActType::kCount)> q_ready_{};
  std::array<std::vector<float>, size_t(GenericRounding::kCount)> r_;
  std::array<bool, size_t(GenericRounding::kCount)> r_ready_{};
};

// The kernel a weight is multiplied with (the fast entry, or none: generic).
struct MatmulKernel {
  cpu::TypeGemm fast;  // fast.gemm == nullptr: generic path
  GenericRounding rounding = GenericRounding::kNone;
};
MatmulKernel matmul_kernel(GgmlType t, const cpu::Kernels& k);

// The model's matmul weights (attention, FFN, router, experts, output) whose type has no fast
// kernel under k, grouped by type: "" when every one has one; else one line for the load log
// naming each such type, how many tensors hold it and the first two of them, so a user sees
// why a mix is slow (those tensors take the generic path: a tile dequantized to F32, then F32
// dot products).
std::string generic_path_report(const ModelWeights& w, const cpu::Kernels& k);

Status matmul(const Weight& w, int64_t row0, int64_t nrows, Activations& x, float* y, int64_t ldy, ThreadPool& pool,
              const cpu::Kernels& k, ColRange cols = {});
// Convenience form for a one-off input.
Status matmul(const Weight& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx, int64_t n_tok, float* y,
              int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, ColRange cols = {});

// One tile of a matmul on the calling pool thread (for callers that build their own task list,
// such as the fused MoE FFN): weight rows [r0, r0 + nr) (nr <= cpu::kGemmMaxTileRows) ×
// activation rows [t0, t0 + nt) of `x`, whole rows (no column slice), into y[t*ldy + r].
// REQUIRES: check_rows(w, r0, nr) passed; x.quantized()/rounded() for the kernel's format
// already made (prepare_input) — this function never quantizes.
Status check_rows(const Weight& w, int64_t row0, int64_t nrows);
// True when matmul_tile of w reads the input's floats themselves (generic path, no rounding).
bool reads_floats(const Weight& w, const MatmulKernel& mk);
Status prepare_input(const Weight& w, const MatmulKernel& mk, Activations& x, ThreadPool& pool, const cpu::Kernels& k);
void matmul_tile(const Weight& w, const MatmulKernel& mk, Activations& x, int64_t r0, int64_t nr, int64_t t0,
                 int64_t nt, float* y, int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, int thread);

// What activations a weight of type t is multiplied with under kernels k: the fast kernel's
// format, or F32 rows (rounded per generic_rounding() on the generic path).
bool activations_quantized(GgmlType t, const cpu::Kernels& k);
// The generic path's rounding (the peer's vec_dot_type): the legacy 32-blocks (Q4_0, Q4_1,
// Q5_0, Q5_1, Q6_0, Q8_0, IQ4_NL) use Q8_2_X4 — per block of 32, d = bf16(amax/127),
// q = round-to-nearest-even(x/d) clamped to int8, value d*q; F16 rounds to F16.
GenericRounding generic_rounding(GgmlType t);
// x (n floats, n % 32 == 0) -> the values the peer's Q8_2 blocks represent.
void round_activations_q8_2(const float* x, float* out, int64_t n);

// Dequantizes one row (row r of w, which may sit inside an interleaved group) to F32.
Status dequantize_row(const Weight& w, int64_t r, float* out);

}  // namespace expertmesh::worker
