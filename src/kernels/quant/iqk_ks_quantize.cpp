// Quantizers of IQ3_KS, IQ4_KS and IQ5_KS: a port of the peer's quantize_row_iq3_ks_impl,
// quantize_row_iq4_k_impl_bs128 and quantize_row_iq5_ks_impl (ggml/src/iqk/iqk_quantize.cpp),
// reproducing their search order, tie-breaking and float rounding (see iqk_ks_internal.h).
//
// Algorithm (per row):
//  1. For every 32-weight sub-block, search the best float scale and table half (plain or
//     shifted): start from d = max/|values[0]|, then try 2*ntry+1 inverse scales
//     (itry + values[0]) / max for both halves, each with the positive and the mirrored sign,
//     scoring sum(w*q*x)² / sum(w*q²).
//  2. The row scale d is the largest sub-block scale over the representable range
//     (IQ3_KS: -max/16 with 5-bit signed scales; IQ4/5_KS: amax/127 with 7-bit odd scales).
//  3. Round every sub-block scale to its integer, re-pick the nearest table values with it, and
//     refit the row scale by weighted least squares over the whole row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant/iqk_ks_internal.h"
#include "kernels/quant/iqk_tables.h"

namespace expertmesh::quant::iqk_ks {
namespace {

using BestIndexFn = int (*)(const int8_t*, float);

// Weights of sub-block xb for the first and the final pass.
void block_weights(const float* xb, const float* qw, float sigma2, float* w) {
  if (qw) {
    imatrix_weights(qw, xb, sigma2, w);
  } else {
    for (int j = 0; j < kBlock; ++j) w[j] = xb[j] * xb[j];
  }
}

// Weighted sums for one candidate inverse scale `id` against one table half: p = the nearest
// values of id*x, m = of -id*x (the mirrored sign).
struct Sums {
  float qx_p = 0, q2_p = 0, qx_m = 0, q2_m = 0;
};
template <BestIndexFn kBest>
Sums block_sums(const float* xb, const float* w, const int8_t* values, float id) {
  Sums s;
  for (int j = 0; j < kBlock; ++j) {
    const float al = id * xb[j];
    float q = values[kBest(values, al)];
    float wq = w[j] * q;
    s.qx_p = fmadd(wq, xb[j], s.qx_p);
    s.q2_p = fmadd(wq, q, s.q2_p);
    q = values[kBest(values, -al)];
    wq = w[j] * q;
    s.qx_m = fmadd(wq, xb[j], s.qx_m);
    s.q2_m = fmadd(wq, q, s.q2_m);
  }
  return s;
}

struct BlockScale {
  float d = 0;
  bool shifted = false;
};

// Step 1 for one sub-block with max = its signed largest-magnitude value (non-zero).
// `guard_first`: IQ3_KS accepts the first candidate only when its sum(w*q²) > 0; IQ4/5_KS take it
// unconditionally (as the peer does).
template <BestIndexFn kBest>
BlockScale search_block(const float* xb, const float* w, float max, const int8_t* values, const int8_t* shifted,
                        int ntry, bool guard_first) {
  BlockScale r;
  float d = -max / values[0];
  float best = 0;
  Sums s = block_sums<kBest>(xb, w, values, 1 / d);
  if (!guard_first || s.q2_p > 0) {
    d = s.qx_p / s.q2_p;
    best = d * s.qx_p;
  }
  if (s.q2_m > 0 && s.qx_m * s.qx_m > best * s.q2_m) {
    d = s.qx_m / s.q2_m;
    best = d * s.qx_m;
  }
  bool is_shifted = false;
  for (int itry = -ntry; itry <= ntry; ++itry) {
    for (int half = 0; half < 2; ++half) {
      const int8_t* v = half ? shifted : values;
      s = block_sums<kBest>(xb, w, v, static_cast<float>(itry + v[0]) / max);
      if (s.q2_p > 0 && s.qx_p * s.qx_p > best * s.q2_p) {
        d = s.qx_p / s.q2_p;
        best = d * s.qx_p;
        is_shifted = half;
      }
      if (s.q2_m > 0 && s.qx_m * s.qx_m > best * s.q2_m) {
        d = s.qx_m / s.q2_m;
        best = d * s.qx_m;
        is_shifted = half;
      }
    }
  }
  r.d = d;
  r.shifted = is_shifted;
  return r;
}

// Signed value of largest magnitude (the first one on ties) and its magnitude.
float block_max(const float* xb, float* amax_out) {
  float amax = 0, max = 0;
  for (int j = 0; j < kBlock; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  *amax_out = amax;
  return max;
}

float super_block_sigma2(const float* xbl) { return sum_squares(xbl, kSuperBlock) * (2.f / kSuperBlock); }

// Step 1 over a whole row. Calls on_block(ibl, ib, scale) for each sub-block (scale 0 for
// blocks below 1e-16 in magnitude).
template <BestIndexFn kBest, typename OnBlock>
void search_row(const float* x, int n_per_row, const float* weights, const int8_t* values, int n_half, int ntry,
                bool guard_first, OnBlock&& on_block) {
  float w[kBlock];
  for (int ibl = 0; ibl < n_per_row / kSuperBlock; ++ibl) {
    const float* xbl = x + ibl * kSuperBlock;
    const float sigma2 = super_block_sigma2(xbl);
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + ib * kBlock;
      block_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
      float amax;
      const float max = block_max(xb, &amax);
      if (amax < 1e-16f) {
        on_block(ibl, ib, BlockScale{});
        continue;
      }
      on_block(ibl, ib, search_block<kBest>(xb, w, max, values, values + n_half, ntry, guard_first));
    }
  }
}

// Final pass helper: weights of sub-block (ibl, ib) as in the search.
struct FinalPass {
  const float* x;
  const float* weights;
  float sigma2 = 0;
  float w[kBlock] = {};
  void begin_super_block(int ibl) { sigma2 = super_block_sigma2(x + ibl * kSuperBlock); }
  const float* block(int ibl, int ib) {
    const float* xb = x + ibl * kSuperBlock + ib * kBlock;
    block_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
    return xb;
  }
};

// IQ4_KS / IQ5_KS scale code: an even byte l (7 bits in bits 1..7) whose scale value is l - 127.
int odd_scale_code(float id, float scale) {
  int l = nearest_int(0.5f * fmadd(id, scale, 127.f));
  return std::max(0, std::min(127, l)) << 1;
}

}  // namespace

float quantize_row_iq3_ks(const float* x, void* vblocks, int n_per_row, const float* weights) {
  auto* y = static_cast<block_iq3_ks*>(vblocks);
  const int nblock = n_per_row / kSuperBlock;
  std::vector<float> all_scales(nblock * 8);
  std::memset(y, 0, sizeof(block_iq3_ks) * nblock);
  float amax_scale = 0, max_scale = 0;
  search_row<best_index_iq3nl>(x, n_per_row, weights, kIq3nlValues, 8, 5, true,
                               [&](int ibl, int ib, BlockScale s) {
                                 all_scales[8 * ibl + ib] = s.d;
                                 if (s.shifted) y[ibl].extra |= static_cast<uint16_t>(1 << (8 + ib));
                                 const float as = std::fabs(s.d);
                                 if (as > amax_scale) {
                                   amax_scale = as;
                                   max_scale = s.d;
                                 }
                               });
  const float d = -max_scale / 16;
  if (!d) return d;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  FinalPass fp{x, weights};
  for (int ibl = 0; ibl < nblock; ++ibl) {
    fp.begin_super_block(ibl);
    block_iq3_ks& b = y[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int8_t* values = kIq3nlValues + ((b.extra >> (8 + ib)) & 1 ? 8 : 0);
      int l = nearest_int(id * all_scales[8 * ibl + ib]);
      l = std::max(-16, std::min(15, l));
      const int ul = l + 16;
      b.scales[ib % 4] |= static_cast<uint8_t>((ul & 0xf) << 4 * (ib / 4));
      b.extra |= static_cast<uint16_t>((ul >> 4) << ib);
      const float dl = d * l;
      const float idl = dl ? 1 / dl : 0.f;
      const float* xb = fp.block(ibl, ib);
      uint8_t* qs = b.qs + 32 * (ib / 4);
      for (int j = 0; j < kBlock; ++j) {
        const int i = best_index_iq3nl(values, idl * xb[j]);
        qs[j] |= static_cast<uint8_t>((i & 3) << 2 * (ib % 4));
        b.qh[j] |= static_cast<uint8_t>((i >> 2) << ib);
        const float q = static_cast<float>(values[i] * l);
        const float wq = fp.w[j] * q;
        sumqx = fmadd(wq, xb[j], sumqx);
        sumq2 = fmadd(wq, q, sumq2);
      }
    }
  }
  return sumq2 > 0 ? sumqx / sumq2 : d;
}

float quantize_row_iq4_ks(const float* x, void* vblocks, int n_per_row, const float* weights) {
  auto* y = static_cast<block_iq4_ks*>(vblocks);
  const int nblock = n_per_row / kSuperBlock;
  std::vector<float> all_scales(nblock * 8);
  std::memset(y, 0, sizeof(block_iq4_ks) * nblock);
  float amax_scale = 0;
  search_row<best_index_iq4nl>(x, n_per_row, weights, kIq4kValues, 16, 7, false, [&](int ibl, int ib, BlockScale s) {
    all_scales[8 * ibl + ib] = s.d;
    if (s.shifted) y[ibl].scales[ib] = 0x01;
    amax_scale = std::max(amax_scale, std::fabs(s.d));
  });
  const float d = amax_scale / 127;
  if (!d) return d;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  FinalPass fp{x, weights};
  for (int ibl = 0; ibl < nblock; ++ibl) {
    fp.begin_super_block(ibl);
    block_iq4_ks& b = y[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int8_t* values = kIq4kValues + (b.scales[ib] & 1 ? 16 : 0);
      int l = odd_scale_code(id, all_scales[8 * ibl + ib]);
      b.scales[ib] |= static_cast<uint8_t>(l);
      l -= 127;
      const float dl = d * l;
      const float idl = dl ? 1 / dl : 0.f;
      const float* xb = fp.block(ibl, ib);
      uint8_t* qs = b.qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        const int i1 = best_index_iq4nl(values, idl * xb[j]);
        const int i2 = best_index_iq4nl(values, idl * xb[j + 16]);
        qs[j] = static_cast<uint8_t>(i1 | (i2 << 4));
        const float q1 = static_cast<float>(values[i1] * l);
        const float q2 = static_cast<float>(values[i2] * l);
        const float wq1 = fp.w[j] * q1;
        const float wq2 = fp.w[j + 16] * q2;
        // The peer's `s += w1*q1*x1 + w2*q2*x2`: the first product is fused into the second.
        sumqx += fmadd(wq1, xb[j], wq2 * xb[j + 16]);
        sumq2 += fmadd(wq1, q1, wq2 * q2);
      }
    }
  }
  return sumq2 > 0 ? sumqx / sumq2 : d;
}

float quantize_row_iq5_ks(const float* x, void* vblocks, int n_per_row, const float* weights) {
  auto* y = static_cast<block_iq5_ks*>(vblocks);
  const int nblock = n_per_row / kSuperBlock;
  std::vector<float> all_scales(nblock * 8);
  std::memset(y, 0, sizeof(block_iq5_ks) * nblock);
  float amax_scale = 0;
  search_row<best_index_iq5nl>(x, n_per_row, weights, kIq5nlValues, 32, 5, false, [&](int ibl, int ib, BlockScale s) {
    all_scales[8 * ibl + ib] = s.d;
    if (s.shifted) y[ibl].scales[ib] = 0x01;
    amax_scale = std::max(amax_scale, std::fabs(s.d));
  });
  const float d = amax_scale / 127;
  if (!d) return d;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  FinalPass fp{x, weights};
  for (int ibl = 0; ibl < nblock; ++ibl) {
    fp.begin_super_block(ibl);
    block_iq5_ks& b = y[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int8_t* values = kIq5nlValues + (b.scales[ib] & 1 ? 32 : 0);
      int l = odd_scale_code(id, all_scales[8 * ibl + ib]);
      b.scales[ib] |= static_cast<uint8_t>(l);
      l -= 127;
      const float dl = d * l;
      const float idl = dl ? 1 / dl : 0.f;
      const float* xb = fp.block(ibl, ib);
      uint8_t* qs = b.qs + 32 * (ib / 2);
      for (int j = 0; j < kBlock; ++j) {
        const int i = best_index_iq5nl(values, idl * xb[j]);
        qs[j] |= static_cast<uint8_t>((i & 0xf) << 4 * (ib % 2));
        b.qh[j] |= static_cast<uint8_t>((i >> 4) << ib);
        const float q = static_cast<float>(values[i] * l);
        const float wq = fp.w[j] * q;
        sumqx = fmadd(wq, xb[j], sumqx);
        sumq2 = fmadd(wq, q, sumq2);
      }
    }
  }
  return sumq2 > 0 ? sumqx / sumq2 : d;
}

}  // namespace expertmesh::quant::iqk_ks
