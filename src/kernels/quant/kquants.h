// Internal to the k-quant family (kquants*.cpp): block layouts, rounding helpers and the
// scale-search routines shared by the Q2_K..Q6_K quantizers.
//
// Bit-exactness with the peer. ik_llama.cpp's k-quant quantizers (ggml-quants.c) are plain C,
// but the peer's binary is GCC 12.2 -O3 -march=native (Zen 4) in gnu11 mode, which contracts
// a*b+c into fused multiply-adds wherever GCC's widening_mul pass finds a single-use product,
// except inside loops it vectorized (there the reductions are open-coded in order, unfused).
// Which sums are fused changes the chosen scales (the D = Σw·Σwl² − (Σwl)² determinants cancel
// badly), so every fused operation of the peer is written here as an explicit std::fma and
// every other product is rounded on its own. The code using this header must therefore be
// compiled without FP contraction: GCC contracts even in ISO C++ mode once the target has FMA
// (-march=native), clang contracts within expressions by default; the pragmas below turn both
// off for every function defined after this include.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace expertmesh::quant::kq {

inline constexpr int kQK = 256;  // weights per super-block

// Layouts (ggml-common.h), little-endian fp16 scales stored as raw bits.
struct BlockQ2K {
  uint8_t scales[16];  // low nibble: 4-bit scale, high nibble: 4-bit min, per 16 weights
  uint8_t qs[64];      // 2-bit quants; byte l of 32-byte group g holds weights l, l+32, l+64, l+96
  uint16_t d;          // fp16 super-scale of the scales
  uint16_t dmin;       // fp16 super-scale of the mins
};
static_assert(sizeof(BlockQ2K) == 84);

struct BlockQ3K {
  uint8_t hmask[32];   // high bit of each quant: bit b of byte m is weight 32*b + m
  uint8_t qs[64];      // low 2 bits, same order as Q2_K
  uint8_t scales[12];  // 16 6-bit scales: low nibbles in bytes 0..7, high 2-bit pairs in 8..11
  uint16_t d;
};
static_assert(sizeof(BlockQ3K) == 110);

struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // 8 6-bit scales + 8 6-bit mins (get_scale_min_k4 packing)
  uint8_t qs[128];     // 64-weight chunks: low nibbles weights 0..31, high nibbles 32..63
};
static_assert(sizeof(BlockQ4K) == 144);

struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];      // 5th bit: chunk c uses bits 2c (low half) and 2c+1 (high half)
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5K) == 176);

struct BlockQ6K {
  uint8_t ql[128];     // low 4 bits
  uint8_t qh[64];      // high 2 bits
  int8_t scales[16];   // one per 16 weights
  uint16_t d;
};
static_assert(sizeof(BlockQ6K) == 210);

// ik's activation-side Q8_K (296 bytes; mainline's has no `sum`).
struct BlockQ8K {
  float d;             // scale
  float sum;           // d * Σ qs
  int8_t qs[256];
  int16_t bsums[16];   // Σ qs over each group of 16
};
static_assert(sizeof(BlockQ8K) == 296);

// ggml's nearest_int: round-to-nearest-even via the 1.5·2^23 trick. Valid for |v| <= 2^22.
inline int nearest_int(float v) {
  float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// nearest_int(a*b) as the peer computes it: the product is fused into the magic-number add,
// so it is never rounded on its own.
inline int nearest_int_fma(float a, float b) {
  float t = std::fma(a, b, 12582912.f);
  int32_t i;
  std::memcpy(&i, &t, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// Unpacks scale/min j (0..7) of a Q4_K/Q5_K block.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// --- scale searches (kquants_search.cpp); names and arguments follow ggml-quants.c ---

// Symmetric search, rmse_type 1: weights qw, or x² when qw is null. Writes L[i] = q + nmax
// with q in [-nmax, nmax-1]; returns the scale. Used with n = 16 (Q3_K, Q6_K).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw);

// Q3_K reference search (x² weights, do_rmse): L[i] = q + nmax; returns the scale.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L);

// Asymmetric (scale, min) search in float; returns the scale and stores -min in *the_min.
// fused_sum_x: the peer fuses sum_x += w*x only where GCC unrolled the loop (n = 16, Q2_K).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad, bool fused_sum_x);

// Asymmetric search in double with a final coordinate-descent pass (use_mad = false; weights
// non-null, as every caller passes). fused_sum_x2: as above, true only for n = 16 (Q2_K).
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool fused_sum_x2);

// Non-negative values (scales or mins) to [0, nmax] levels with weights; returns the scale.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);

// --- row quantizers (kquants_quantize.cpp): one row of n_per_row weights, imatrix optional ---
void quantize_row_q2_k(const float* x, BlockQ2K* y, int64_t n_per_row, const float* qw);
void quantize_row_q3_k(const float* x, BlockQ3K* y, int64_t n_per_row, const float* qw);
void quantize_row_q4_k(const float* x, BlockQ4K* y, int64_t n_per_row, const float* qw);
void quantize_row_q5_k(const float* x, BlockQ5K* y, int64_t n_per_row, const float* qw);
void quantize_row_q6_k(const float* x, BlockQ6K* y, int64_t n_per_row, const float* qw);

}  // namespace expertmesh::quant::kq
