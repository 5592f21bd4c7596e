// Block layouts of the legacy family (32-weight blocks; ggml-common.h in ik_llama.cpp) and the
// weighted searches shared by its quantizers (legacy_search.cpp). Internal to kernels/quant.
//
// Every block starts with its scale(s); 4-bit values pack element j in the low nibble of qs[j]
// and element j+16 in the high nibble. fp16 fields are raw IEEE half bits (see fp16.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/quant/fp16.h"

namespace expertmesh::quant::legacy {

inline constexpr int kBlock = 32;  // weights per block, for every type of this family

struct BlockQ4_0 {
  uint16_t d;       // scale (fp16): x = d * (q - 8)
  uint8_t qs[16];
};
struct BlockQ4_1 {
  uint16_t d;       // scale (fp16)
  uint16_t m;       // offset (fp16): x = d * q + m
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;       // x = d * (q - 16)
  uint8_t qh[4];    // bit 4 of element j is bit j of this little-endian u32
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;       // x = d * q + m
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ6_0 {
  uint16_t d;       // x = d * (q - 32)
  uint8_t qh[8];    // bits 4-5: element j (j < 16) in qh[j % 8] bits 4*(j/8)+0..1, element j+16 in bits 4*(j/8)+2..3
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;       // x = d * q
  int8_t qs[32];
};
struct BlockQ8_1 {
  uint16_t d;       // x = d * q
  uint16_t s;       // d * sum(q), for the kernels' offset correction
  int8_t qs[32];
};
struct BlockIq4Nl {
  uint16_t d;       // x = d * kIq4nlValues[q]
  uint8_t qs[16];
};
struct BlockMxfp4 {
  uint8_t e;        // E8M0 exponent: x = 2^(e-128) * kMxfp4Values[q] (values are doubled e2m1)
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ6_0) == 26 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36 && sizeof(BlockIq4Nl) == 18 && sizeof(BlockMxfp4) == 17);

// Q8_KV row: f32 scale, i32 sum of all quants (the 8 bytes of row meta), then one int8 per weight.
inline constexpr int kQ8KvMetaBytes = 8;

// IQ4_NL's non-linear values (ik's kvalues_iq4nl; equal to kIq4kValues[0..15]).
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};
// MXFP4 (OCP microscaling e2m1) values, doubled so they are integers; the block scale is halved.
inline constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// Blocks are read and written through memcpy: quantized buffers carry no alignment promise.
template <typename B>
inline B load_block(const uint8_t* p) {
  B b;
  std::memcpy(&b, p, sizeof(B));
  return b;
}
template <typename B>
inline void store_block(uint8_t* p, const B& b) {
  std::memcpy(p, &b, sizeof(B));
}

// fp16 of a block scale. For every finite in-range scale this is f32_to_fp16 (the peer's
// conversion); a scale beyond the fp16 range (e.g. |x| > ~5e5 for the 4-bit types) saturates to
// ±65504 instead of becoming inf, and a NaN from degenerate input becomes 0, so that no block we
// write decodes to Inf or NaN (the peer writes such blocks and then fails its own validation).
inline uint16_t scale_to_fp16(float d) {
  if (std::isnan(d)) return 0;
  return f32_to_fp16(d < -65504.f ? -65504.f : (d > 65504.f ? 65504.f : d));
}

// Rounded value r -> int clamped to [lo, hi]; NaN (0 * inf from a subnormal scale) gives 0.
inline int clamp_rounded(float r, int lo, int hi) {
  if (!(r == r)) return 0;
  if (r <= static_cast<float>(lo)) return lo;
  if (r >= static_cast<float>(hi)) return hi;
  return static_cast<int>(r);
}

// ---- Floating-point arithmetic as the peer's build evaluates it -------------------------------
// ik_llama.cpp is built by GCC 12 with -O3 -march=native in GNU mode (-ffp-contract=fast): many
// products feeding an addition become one fused multiply-add (rounded once). Our build does not
// contract (ISO C++ mode), so the quantizers spell those fusions out with std::fma. GCC does not
// fuse everywhere, though: a loop whose only fusable operation is one loop-carried accumulation
// (`s += a*b`, FMA-chain avoidance of the znver tuning), loops it vectorises (products in vector
// registers, then an in-order scalar sum) and products hoisted out of both arms of a branch stay
// unfused. Which case applies where was established by compiling the peer's ggml-quants.c and
// iqk_quantize.cpp with the same compiler and flags (which reproduces every golden byte) and
// comparing against it on the golden models and on random rows with and without imatrix.

// ggml's nearest_int of the product a*b as the peer computes it: the magic-number rounding
// (round half to even) of the exact product, because the add is fused with the multiply.
inline int nearest_int_of_product(float a, float b) {
  const float v = std::fma(a, b, 12582912.f);
  uint32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return static_cast<int>(i & 0x007fffff) - 0x00400000;
}

// ---- Weighted searches (legacy_search.cpp) -----------------------------------------------------

// ik's make_qx_quants with rmse_type 1 and explicit weights: symmetric quants L[i] in
// [0, 2*nmax-1] (value L - nmax) minimising sum w (x - d*(L-nmax))²; returns d.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* w);

// ik's make_qkx3_quants (use_mad = false) with explicit weights: asymmetric quants L in [0, nmax]
// minimising sum w (x - (d*L - m))²; returns d and stores m (>= 0) in *the_min.
float make_qkx3_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep);

// One IQ4_NL block (32 weights) as ik's quantize_row_iq4_nl_impl(32, 32, ..., ntry = 7): the
// scale search over kIq4nlValues with weights qw (imatrix, or nullptr for x²). Writes d (fp16
// bits) and the 16 packed nibble bytes.
void quantize_iq4_nl_block(const float* x, const float* qw, uint16_t* d, uint8_t* qs);

}  // namespace expertmesh::quant::legacy
