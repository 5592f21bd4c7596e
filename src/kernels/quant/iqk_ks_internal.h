// Private helpers of the IQK "_KS" family (iqk_ks*.cpp, iqk_kss.cpp): block layouts, the
// peer's nearest-value lookups and rounding helpers, and the per-row driver shared by the
// quantizers. Not part of the quant API; do not include from other families.
//
// Row layouts (n_per_row = 256 * nblock):
//   IQ2_KS:  fp16 row scale, then nblock × block_iq2_ks   (70 B)
//   IQ3_KS:  fp16 row scale, then nblock × block_iq3_ks   (102 B)
//   IQ4_KS:  f32 row scale,  then nblock × block_iq4_ks   (136 B)
//   IQ5_KS:  f32 row scale,  then nblock × block_iq5_ks   (168 B)
//   IQ4_KSS: f32 row scale,  then nblock × block_iq4_kss  (128 B)
//
// Bit-exactness with the peer's quantizers: ik_llama.cpp is built with -march=native and GCC's
// default -ffp-contract=fast, so its scalar `s += a*b` and `a*b + c` compile to fused
// multiply-adds. We write each such fusion explicitly with fmadd() so that the roundings match.
// One exception, from GCC's FMA-chain avoidance for AMD Zen (the golden files were made on such
// an AVX512 machine): a loop whose body is one basic block holding a single accumulation chain
// `s += a*b` (and no other fusable product) keeps the multiply and the add separate. In the
// peer's quantizers that is exactly the sum of squares of a super-block (sum_squares below);
// loops with two chains, or with branches, are fused. Verified against the golden bytes.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/quant/iqk_tables.h"

namespace expertmesh::quant::iqk_ks {

inline constexpr int kSuperBlock = 256;  // QK_K
inline constexpr int kBlock = 32;        // every _KS type has 32-weight sub-blocks (8 per super-block)

// IQ2_KS: 2-bit indices into kIq2nlValues (second half when the block's shift bit is set).
// extra bits 0..7: shift flag of sub-block ib; bits 8..15: bit 4 of its 5-bit scale.
// scales[i]: low 4 bits of the scales of sub-blocks 2i (low nibble) and 2i+1 (high nibble).
// qs[32*(ib/4) + j] bits 2*(ib%4)..: index of weight j of sub-block ib.
struct block_iq2_ks {
  uint16_t extra;
  uint8_t scales[kSuperBlock / 64];
  uint8_t qs[kSuperBlock / 4];
};
static_assert(sizeof(block_iq2_ks) == 70);

// IQ3_KS: 3-bit indices into kIq3nlValues. extra bits 0..7: bit 4 of sub-block ib's 5-bit scale;
// bits 8..15: shift flag of sub-block ib. scales[i]: low 4 bits of the scales of sub-blocks i
// (low nibble) and i+4 (high nibble). qs[32*(ib/4) + j] bits 2*(ib%4): index bits 0..1;
// qh[j] bit ib: index bit 2.
struct block_iq3_ks {
  uint16_t extra;
  uint8_t scales[kSuperBlock / 64];
  uint8_t qs[kSuperBlock / 4];
  uint8_t qh[kSuperBlock / 8];
};
static_assert(sizeof(block_iq3_ks) == 102);

// IQ4_KS: scales[ib] = 7-bit scale (bits 1..7, value (s & 254) - 127) | shift flag (bit 0).
// qs[16*ib + j]: low nibble = weight j, high nibble = weight j+16 of sub-block ib.
struct block_iq4_ks {
  uint8_t scales[kSuperBlock / 32];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(block_iq4_ks) == 136);

// IQ5_KS: scales as IQ4_KS, indices into kIq5nlValues. qs[32*(ib/2) + j] nibble ib%2: index bits
// 0..3 of weight j of sub-block ib; qh[j] bit ib: index bit 4.
struct block_iq5_ks {
  uint8_t scales[kSuperBlock / 32];
  uint8_t qs[kSuperBlock / 2];
  uint8_t qh[kSuperBlock / 8];
};
static_assert(sizeof(block_iq5_ks) == 168);

// IQ4_KSS: IQ4_KS squeezed to 4.0 bpw. Sub-block ib owns the 8 u16 words qs16[8*ib + k]. Bit 0 of
// word k is bit k of the sub-block's IQ4_KS scale byte. Bits 1..15 hold 15 bits t; the 16-bit
// group of four 4-bit indices is v = (t << 1) ^ t, i.e. v's bit 15 is implied by even parity.
// Nibbles of v (low first): weights 2k, 2k+16, 2k+1, 2k+17 of the sub-block.
struct block_iq4_kss {
  uint32_t qs[kSuperBlock / 8];
};
static_assert(sizeof(block_iq4_kss) == 128);

// Explicit fused multiply-add a*b + c (one rounding), see the file comment.
inline float fmadd(float a, float b, float c) { return std::fma(a, b, c); }

// ggml's nearest_int: round half to even via the 1.5·2^23 trick (valid for |f| < 2^22).
inline int nearest_int(float f) {
  float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

inline int popcount16(uint16_t v) { return __builtin_popcount(v); }

// Nearest-value searches of the peer (best_index_iq{2,3,4,5}nl). The lookup tables are indexed by
// (int)x - values[0] (truncation toward zero, as the peer does); an entry < N is the answer, an
// entry e >= N means "compare with values e-N and e-N+1" (ties go to the upper value). They work
// for both halves of each table because the shifted half is the first half plus a constant.
inline int best_index_iq2nl(const int8_t* values, float x) {
  int idx = x < values[1] ? 0 : x > values[2] ? 2 : 1;
  return x - values[idx] < values[idx + 1] - x ? idx : idx + 1;
}

inline constexpr int8_t kIq3nlIndex[111] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  8,  8,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,
     1,  1,  1,  1,  1,  1,  1,  9,  9,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 10, 10,
     3,  3,  3,  3,  3,  3,  3,  3,  3,  3, 11, 11,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, 12,  5,
     5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5, 13, 13,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,
     6,  6,  6,  6, 14, 14,  7,  7,  7,  7,  7,  7,  7,  7,  7,
};
inline int best_index_iq3nl(const int8_t* values, float x) {
  int ix = static_cast<int>(x) - values[0];
  if (ix < 0 || ix >= 111) return ix < 0 ? 0 : 7;
  ix = kIq3nlIndex[ix];
  return ix < 8 ? ix : x - values[ix - 8] < values[ix - 7] - x ? ix - 8 : ix - 7;
}

inline constexpr int8_t kIq4nlIndex[241] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, 16, 16,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,
     1,  1,  1,  1,  1,  1,  1,  1,  1, 17, 17,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2, 18,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3, 19,  4,
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, 20,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,
     5,  5, 21, 21,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6, 22,  7,  7,  7,  7,  7,  7,  7,  7,
     7,  7, 23, 23,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8, 24,  9,  9,  9,  9,  9,  9,  9,  9,  9,
     9,  9, 25, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 26, 26, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 27, 27, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 28, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 29, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15,
};
inline int best_index_iq4nl(const int8_t* values, float x) {
  int ix = static_cast<int>(x) - values[0];
  if (ix < 0 || ix >= 241) return ix < 0 ? 0 : 15;
  ix = kIq4nlIndex[ix];
  return ix < 16 ? ix : x - values[ix - 16] < values[ix - 15] - x ? ix - 16 : ix - 15;
}

inline constexpr int8_t kIq5nlIndex[248] = {
     0,  0,  0,  0,  0,  0, 32,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1, 33, 33,  2,  2,  2,  2,  2,
     2,  2,  2,  2, 34, 34,  3,  3,  3,  3,  3,  3,  3,  3, 35, 35,  4,  4,  4,  4,  4,  4,  4, 36,
    36,  5,  5,  5,  5,  5,  5,  5, 37, 37,  6,  6,  6,  6,  6,  6,  6, 38,  7,  7,  7,  7,  7,  7,
    39, 39,  8,  8,  8,  8,  8, 40, 40,  9,  9,  9,  9,  9, 41, 41, 10, 10, 10, 10, 10, 42, 11, 11,
    11, 11, 11, 43, 12, 12, 12, 12, 12, 44, 13, 13, 13, 13, 13, 45, 14, 14, 14, 14, 14, 46, 15, 15,
    15, 15, 47, 47, 16, 16, 16, 16, 48, 17, 17, 17, 17, 17, 49, 18, 18, 18, 18, 18, 50, 19, 19, 19,
    19, 19, 51, 20, 20, 20, 20, 20, 52, 21, 21, 21, 21, 21, 53, 53, 22, 22, 22, 22, 22, 54, 54, 23,
    23, 23, 23, 23, 23, 55, 24, 24, 24, 24, 24, 24, 24, 56, 25, 25, 25, 25, 25, 25, 25, 57, 57, 26,
    26, 26, 26, 26, 26, 26, 58, 58, 27, 27, 27, 27, 27, 27, 27, 27, 59, 28, 28, 28, 28, 28, 28, 28,
    28, 28, 60, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 61, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    30, 62, 31, 31, 31, 31, 31, 31,
};
inline int best_index_iq5nl(const int8_t* values, float x) {
  int ix = static_cast<int>(x) - values[0];
  if (ix < 0 || ix >= 247) return ix < 0 ? 0 : 31;
  ix = kIq5nlIndex[ix];
  return ix < 32 ? ix : x - values[ix - 32] < values[ix - 31] - x ? ix - 32 : ix - 31;
}

// Weights of one sub-block for the imatrix case: qw * sqrt(sigma2 + x²).
inline void imatrix_weights(const float* qw, const float* xb, float sigma2, float* w) {
  for (int j = 0; j < kBlock; ++j) w[j] = qw[j] * std::sqrt(fmadd(xb[j], xb[j], sigma2));
}

// Sum of squares of a super-block, accumulated in order as the peer does: a lone accumulation
// chain, so not fused (see the file comment). volatile keeps our compiler from contracting it.
inline float sum_squares(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) {
    volatile float sq = x[j] * x[j];
    s += sq;
  }
  return s;
}

// One row's quantizer: x (n_per_row values, |x| in a sane range), sanitized weights or nullptr,
// blocks = the row's block area (after the row scale). Returns the row scale to store.
using RowQuantizer = float (*)(const float* x, void* blocks, int n_per_row, const float* weights);

// The QuantizeFn body shared by the family: per row, sanitize the imatrix weights as the peer's
// QHelper does, rescale rows whose magnitude would overflow or underflow the peer's float
// arithmetic (exact power-of-two scaling: such rows only), run `q`, store the row scale as fp16
// (fp16_scale) or f32.
void quantize_rows_ks(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      int64_t row_bytes, bool fp16_scale, RowQuantizer q);

float quantize_row_iq2_ks(const float* x, void* blocks, int n_per_row, const float* weights);
float quantize_row_iq3_ks(const float* x, void* blocks, int n_per_row, const float* weights);
float quantize_row_iq4_ks(const float* x, void* blocks, int n_per_row, const float* weights);
float quantize_row_iq5_ks(const float* x, void* blocks, int n_per_row, const float* weights);
float quantize_row_iq4_kss(const float* x, void* blocks, int n_per_row, const float* weights);

}  // namespace expertmesh::quant::iqk_ks
