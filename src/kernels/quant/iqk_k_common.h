// Private to the IQK "_K" family (iqk_k*.cpp): block layouts of IQ2_K, IQ3_K, IQ4_K, IQ5_K,
// IQ6_K and IQ2_KL, and the small numeric helpers their quantizers share. Layouts are ik's
// (ggml-common.h); every multi-byte field is little-endian, blocks are packed (no padding).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

// The helpers below must not gain implicit fusions either (see fmadd()).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace expertmesh::quant::iqk_k {

inline constexpr int kQK = 256;  // super-block size of every type here

// IQ2_K: 16 sub-blocks of 16, 4-bit scales (s - 8), 2-bit indices into kIq2nlValues, one shift
// flag per sub-block in `extra`.
struct BlockIq2K {
  uint16_t d;            // fp16 super-block scale
  uint16_t extra;        // bit 2*ib+h: sub-block h of 32-chunk ib uses the shifted table half
  uint8_t scales[8];     // per 32-chunk: low nibble first 16, high nibble second 16
  uint8_t qs[64];        // 2-bit indices, 4 chunks per 32 bytes at bit offsets 0,2,4,6
};
static_assert(sizeof(BlockIq2K) == 76);

// IQ3_K: 16 sub-blocks of 16, odd signed scales ±(2s+1), 3-bit indices into kIq3nlValues.
struct BlockIq3K {
  uint16_t d;
  uint16_t extra;        // shift flags, as IQ2_K
  uint16_t scales_h;     // sign of each sub-block scale
  uint8_t scales_l[8];   // 4-bit magnitudes: low nibble first 16 of the chunk, high second 16
  uint8_t qs[64];        // low 2 bits of the indices (as IQ2_K)
  uint8_t qh[32];        // bit ib of qh[j] / qh[j+16]: high index bit of chunk ib
};
static_assert(sizeof(BlockIq3K) == 110);

// IQ4_K: 16 sub-blocks of 16, 6-bit scales (s - 32), 4-bit indices into kIq4kValues.
struct BlockIq4K {
  uint16_t d;
  uint16_t extra;        // shift flags, as IQ2_K
  uint8_t scales_h[4];   // 2 high scale bits per sub-block, 4 sub-blocks per byte
  uint8_t scales_l[8];   // 4 low scale bits, low nibble first 16 of the chunk
  uint8_t qs[128];       // per 32-chunk 16 bytes: low nibble y[j], high nibble y[j+16]
};
static_assert(sizeof(BlockIq4K) == 144);

// IQ5_K: as IQ4_K plus a 5th index bit per weight, table kIq5nlValues.
struct BlockIq5K {
  uint16_t d;
  uint16_t extra;        // bit 4*c+k: sub-block k of 64-chunk c is shifted
  uint8_t scales_h[4];   // byte c: 2 high bits of sub-blocks 0..3 of 64-chunk c
  uint8_t scales_l[8];   // bytes 2c, 2c+1: low nibbles of sub-blocks 0,1 and 2,3
  uint8_t qs[128];       // per 64-chunk 32 bytes: low nibbles sub-blocks 0,1; high 2,3
  uint8_t qh[32];        // bits 2c, 2c+1 of qh[j] (j<16: sub-blocks 0/2; j>=16: 1/3)
};
static_assert(sizeof(BlockIq5K) == 176);

// IQ6_K: 16 sub-blocks of 16 with int8 scales, 6-bit indices into a cubic non-linear grid.
struct BlockIq6K {
  uint16_t d;
  uint16_t extra;        // shift flags, as IQ5_K
  int8_t scales[16];
  uint8_t qs[128];       // low 4 bits, as IQ5_K
  uint8_t qh[64];        // 2 high bits: 64-chunk c uses qh[32*(c/2) + ...] at bit 4*(c%2)
};
static_assert(sizeof(BlockIq6K) == 212);

// IQ2_KL: rows start with an fp16 scale; 8 blocks of 32 with 6-bit scales (s - 32); weights
// coded in pairs by 5-bit indices into kIq2klValues.
struct BlockIq2KL {
  uint16_t scales_h;     // 2 high scale bits per block
  uint8_t scales_l[4];   // 4 low scale bits: block b in scales_l[b%4], nibble b/4
  uint8_t qs[64];        // per 64-chunk 16 bytes: low nibble pair j of block 2c, high of 2c+1
  uint8_t qh[16];        // bit 2c / 2c+1 of qh[j]: 5th index bit of the pair
};
static_assert(sizeof(BlockIq2KL) == 86);

// ggml's nearest_int: round half to even via the 1.5*2^23 trick (valid for |x| < 2^22).
inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// Float arithmetic contract. ik's golden files were made by GCC 12 on x86-64 with FMA, which fuses
// `a*b + c` into one rounding wherever the product feeds only additions (-ffp-contract=fast),
// except in loops its vectorizer turned into in-order reductions (there every product is rounded
// before it is added). Bit-identical output needs the same roundings, so the quantizers spell
// every fused step with fmadd() and every separate one with plain operators, and the family's
// files are compiled with contraction off (see the pragmas below each file's includes) so that
// no compiler or -march setting adds or removes a fusion.
inline float fmadd(float a, float b, float c) { return std::fma(a, b, c); }

// nearest_int(a*b) as ik's build computes it: the product is fused into the rounding addition.
inline int nearest_int_fma(float a, float b) {
  float val = std::fma(a, b, 12582912.f);
  int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// (int)x as x86's cvttss2si computes it: out of range and NaN give INT_MIN (C++ leaves it undefined).
inline int trunc_to_int(float x) {
  if (!(x > -2147483648.f && x < 2147483648.f)) return INT_MIN;
  return static_cast<int>(x);
}

// A non-linear grid of N values (and its shifted half) with ik's bucket table for the nearest
// value search. subtract_first: IQ6_K buckets (int)(x - v[0]); IQ4_K / IQ5_K bucket (int)x - v[0].
struct GridSpec {
  int n;
  const uint8_t* index;
  int index_limit;
  bool subtract_first;
};

// Nearest grid value to x, ties (equal distance) to the upper one, exactly as ik's best_index_*.
inline int best_index(const GridSpec& g, const float* values, float x) {
  const int ix = g.subtract_first ? trunc_to_int(x - values[0])
                                  : (trunc_to_int(x) == INT_MIN ? INT_MIN : trunc_to_int(x) - static_cast<int>(values[0]));
  if (ix < 0 || ix >= g.index_limit) return ix < 0 ? 0 : g.n - 1;
  const int t = g.index[ix];
  if (t < g.n) return t;
  return x - values[t - g.n] < values[t - g.n + 1] - x ? t - g.n : t - g.n + 1;
}

// Weighted fit of x to scale*grid for one trial inverse scale `id`: the + and - sign variants.
struct Fit {
  float sumqx_p = 0, sumq2_p = 0, sumqx_m = 0, sumq2_m = 0;
};
inline Fit fit16(const GridSpec& g, const float* values, const float* xb, const float* w, float id) {
  Fit f;
  for (int j = 0; j < 16; ++j) {
    const float al = id * xb[j];
    float q = values[best_index(g, values, al)];
    float wq = w[j] * q;
    f.sumqx_p = fmadd(wq, xb[j], f.sumqx_p);
    f.sumq2_p = fmadd(wq, q, f.sumq2_p);
    q = values[best_index(g, values, -al)];
    wq = w[j] * q;
    f.sumqx_m = fmadd(wq, xb[j], f.sumqx_m);
    f.sumq2_m = fmadd(wq, q, f.sumq2_m);
  }
  return f;
}

// ik's QHelper: copies the imatrix row per block of `block_size` and replaces a block's weights by
// 1e-9 when the block's weights or values are all (near) zero, so no block has zero total weight.
// Returns nullptr without an imatrix. The sums are plain in-order sums of rounded products.
class RowWeights {
 public:
  RowWeights(const float* imatrix, int64_t n_per_row, int block_size)
      : imatrix_(imatrix), block_size_(block_size) {
    if (imatrix_) weights_.resize(static_cast<size_t>(n_per_row));
  }
  const float* for_row(const float* x) {
    constexpr float kEps = 1e-9f;
    constexpr float kEps2 = kEps * kEps;
    if (!imatrix_) return nullptr;
    const float limit = static_cast<float>(block_size_) * kEps2;
    const int64_t nblock = static_cast<int64_t>(weights_.size()) / block_size_;
    for (int64_t ib = 0; ib < nblock; ++ib) {
      const float* w_in = imatrix_ + ib * block_size_;
      const float* xb = x + ib * block_size_;
      float* wb = weights_.data() + ib * block_size_;
      float sumw2 = 0, sumx2 = 0, sumwx = 0;
      for (int j = 0; j < block_size_; ++j) {
        wb[j] = w_in[j];
        sumw2 += wb[j] * wb[j];
        sumx2 += xb[j] * xb[j];
        sumwx += wb[j] * std::fabs(xb[j]);
      }
      if (sumw2 > limit && sumx2 > limit && sumwx > limit) continue;
      for (int j = 0; j < block_size_; ++j) wb[j] = kEps;
    }
    return weights_.data();
  }

 private:
  const float* imatrix_;
  int block_size_;
  std::vector<float> weights_;
};

}  // namespace expertmesh::quant::iqk_k

#if !defined(__clang__) && defined(__GNUC__)
#pragma GCC pop_options
#endif
