// Reference quantizers of IQ4_K, IQ5_K and IQ6_K: ports of ik's quantize_iq{4,5,6}_k that
// reproduce its bytes exactly (iqk_quantize.cpp, the FMA roundings of ik's build included; see
// fmadd() in iqk_k_common.h).
//
// All three share one scheme per 256-block: for each sub-block of 16 search a float scale (both
// signs, the plain and the shifted grid half, 2*ntry+1 trial inverse scales), then quantize the
// 16 sub-block scales against one fp16 super-scale and re-pick every weight's grid index for its
// final scale; the super-scale is finally refit by weighted least squares.
#include <algorithm>
#include <cmath>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_k_common.h"
#include "kernels/quant/iqk_k_index_tables.h"
#include "kernels/quant/iqk_k_quantize.h"
#include "kernels/quant/iqk_tables.h"

// No implicit fusions here: every FMA of ik's build is explicit (see iqk_k_common.h).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace expertmesh::quant::iqk_k {
namespace {

struct TypeSpec {
  GridSpec grid;
  int ntry;
  int max_scale_q;        // super-scale d = -max_scale / max_scale_q
  int scale_min, scale_max;  // clamp of the quantized sub-block scales
  bool sigma_in_plain_weights;  // no imatrix: weight = sigma2/4 + x² (IQ5/6) or x² (IQ4)
  bool refine_block_scale;      // IQ5/6 refit each sub-block scale on its chosen grid half
  bool skip_zero_superblock;    // IQ5/6 leave an all-zero 256-block zeroed; IQ4 writes d = -0
};

// Per 16-weight sub-block importance: imatrix * sqrt(sigma2 + x²), or the plain fallback.
inline void sub_block_weights(const TypeSpec& ts, const float* xb, const float* qw, float sigma2, float* w) {
  for (int j = 0; j < 16; ++j) {
    if (qw) {
      w[j] = qw[j] * std::sqrt(fmadd(xb[j], xb[j], sigma2));
    } else if (ts.sigma_in_plain_weights) {
      const float quarter = 0.25f * sigma2;
      const float x2 = xb[j] * xb[j];
      w[j] = quarter + x2;
    } else {
      w[j] = xb[j] * xb[j];
    }
  }
}

// Best scale of one 16-weight sub-block; sets *shifted when the shifted grid half won.
float search_sub_block(const TypeSpec& ts, const float* values, const float* shifted, const float* xb,
                       const float* w, bool* shifted_out) {
  const GridSpec& g = ts.grid;
  *shifted_out = false;
  float amax = 0, max = 0;
  for (int j = 0; j < 16; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < 1e-16f) return 0;
  float d = -max / values[0];
  Fit f = fit16(g, values, xb, w, 1 / d);
  d = f.sumqx_p / f.sumq2_p;
  float best = d * f.sumqx_p;
  if (f.sumq2_m > 0 && f.sumqx_m * f.sumqx_m > best * f.sumq2_m) {
    d = f.sumqx_m / f.sumq2_m;
    best = d * f.sumqx_m;
  }
  bool is_shifted = false;
  // A candidate replaces the best when it explains more weighted energy: sumqx²/sumq2 > best.
  auto consider = [&](float sumqx, float sumq2, bool sh) {
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
      is_shifted = sh;
    }
  };
  for (int itry = -ts.ntry; itry <= ts.ntry; ++itry) {
    f = fit16(g, values, xb, w, (static_cast<float>(itry) + values[0]) / max);
    consider(f.sumqx_p, f.sumq2_p, false);
    consider(f.sumqx_m, f.sumq2_m, false);
    f = fit16(g, shifted, xb, w, (static_cast<float>(itry) + shifted[0]) / max);
    consider(f.sumqx_p, f.sumq2_p, true);
    consider(f.sumqx_m, f.sumq2_m, true);
  }
  if (ts.refine_block_scale && d != 0) {
    const float* bv = is_shifted ? shifted : values;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 16; ++j) {
      const float q = bv[best_index(g, bv, id * xb[j])];
      const float wq = w[j] * q;
      sumqx = fmadd(wq, xb[j], sumqx);
      sumq2 = fmadd(wq, q, sumq2);
    }
    if (sumq2 > 0) d = sumqx / sumq2;
  }
  *shifted_out = is_shifted;
  return d;
}

// Result of quantizing one 256-block, before packing.
struct Quantized256 {
  float d = 0;              // fp32 super-scale to store as fp16
  uint16_t extra = 0;       // shifted flags per sub-block
  int ls[16] = {};          // quantized sub-block scales
  uint8_t idx[256] = {};    // grid index per weight
  bool zero = false;        // all-zero block to leave zeroed (skip_zero_superblock types)
};

void quantize_256(const TypeSpec& ts, const float* values, const float* shifted, const float* x,
                  const float* qw, Quantized256& out) {
  float sumx2 = 0;
  for (int j = 0; j < kQK; ++j) sumx2 += x[j] * x[j];
  // sigma2 = 2*<x²>: IQ4_K multiplies by 2/256, IQ5/6 (sigma_in_plain_weights) compute 2*sum/256;
  // the same value except on overflow, where the first stays finite.
  const float sigma2 = ts.sigma_in_plain_weights ? 2 * sumx2 / kQK : sumx2 * (2.f / kQK);

  float scales[16];
  float w[16];
  float max_scale = 0, amax_scale = 0;
  uint16_t extra = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float* xb = x + 16 * ib;
    sub_block_weights(ts, xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    bool sh = false;
    scales[ib] = search_sub_block(ts, values, shifted, xb, w, &sh);
    if (sh) extra |= static_cast<uint16_t>(1u << ib);
    const float abs_d = std::fabs(scales[ib]);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = scales[ib];
    }
  }
  if (ts.skip_zero_superblock && amax_scale == 0) {
    out.zero = true;
    return;
  }
  const float d = -max_scale / static_cast<float>(ts.max_scale_q);
  out.d = d;
  out.extra = extra;
  const float id = ts.skip_zero_superblock ? 1 / d : (d != 0 ? 1 / d : 0.f);
  float sumqx = 0, sumq2 = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float* bv = (extra & (1u << ib)) ? shifted : values;
    const int l = std::clamp(nearest_int_fma(id, scales[ib]), ts.scale_min, ts.scale_max);
    out.ls[ib] = l;
    const float dl = d * static_cast<float>(l);
    if (ts.skip_zero_superblock && dl == 0) continue;  // IQ5/6: indices stay 0
    const float idl = dl != 0 ? 1 / dl : 0.f;
    const float* xb = x + 16 * ib;
    sub_block_weights(ts, xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    for (int j = 0; j < 16; ++j) {
      const int k = best_index(ts.grid, bv, idl * xb[j]);
      out.idx[16 * ib + j] = static_cast<uint8_t>(k);
      const float q = static_cast<float>(static_cast<int>(bv[k]) * l);
      const float wq = w[j] * q;
      sumqx = fmadd(wq, xb[j], sumqx);
      sumq2 = fmadd(wq, q, sumq2);
    }
  }
  if (sumq2 > 0) out.d = sumqx / sumq2;
}

// Grids as floats (every value is a small integer, so the arithmetic is that of ik's int8 tables).
struct Grids {
  float iq4[32], iq5[64], iq6[128];
};
const Grids& grids() {
  static const Grids g = [] {
    Grids r{};
    for (int i = 0; i < 32; ++i) r.iq4[i] = kIq4kValues[i];
    for (int i = 0; i < 64; ++i) r.iq5[i] = kIq5nlValues[i];
    // ik's IQ6_K quantizer derives the shifted half as first half + 1.
    for (int i = 0; i < 64; ++i) {
      r.iq6[i] = kIq6nlValues[i];
      r.iq6[i + 64] = r.iq6[i] + 1.f;
    }
    return r;
  }();
  return g;
}

constexpr TypeSpec kIq4 = {{16, kIq4nlIndex, 241, false}, 7, 32, -32, 31, false, false, false};
constexpr TypeSpec kIq5 = {{32, kIq5nlIndex, 247, false}, 5, 32, -32, 31, true, true, true};
constexpr TypeSpec kIq6 = {{64, kIq6nlIndex, 249, true}, 5, 127, -127, 127, true, true, true};

void pack_iq4_k(const Quantized256& q, BlockIq4K& b) {
  std::memset(&b, 0, sizeof(b));
  b.d = f32_to_fp16(q.d);
  b.extra = q.extra;
  for (int ib = 0; ib < 16; ++ib) {
    const int u = q.ls[ib] + 32;
    b.scales_l[ib / 2] |= static_cast<uint8_t>((u & 0xf) << (4 * (ib % 2)));
    b.scales_h[ib / 4] |= static_cast<uint8_t>((u >> 4) << (2 * (ib % 4)));
  }
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 16; ++j) b.qs[16 * i + j] = static_cast<uint8_t>(q.idx[32 * i + j] | (q.idx[32 * i + 16 + j] << 4));
}

void pack_iq5_k(const Quantized256& q, BlockIq5K& b) {
  std::memset(&b, 0, sizeof(b));
  if (q.zero) return;
  b.d = f32_to_fp16(q.d);
  b.extra = q.extra;
  for (int ib = 0; ib < 16; ++ib) {
    const int u = q.ls[ib] + 32;
    b.scales_l[ib / 2] |= static_cast<uint8_t>((u & 0xf) << (4 * (ib % 2)));
    b.scales_h[ib / 4] |= static_cast<uint8_t>((u >> 4) << (2 * (ib % 4)));
    // Sub-block ib: 32-chunk c = ib/2; low nibbles in qs[32*(c/2) + 16*(ib%2) + j] at 4*(c%2),
    // 5th bit in qh[16*(ib%2) + j] at bit c.
    const int c = ib / 2, off = 16 * (ib % 2);
    for (int j = 0; j < 16; ++j) {
      const int k = q.idx[16 * ib + j];
      b.qs[32 * (c / 2) + off + j] |= static_cast<uint8_t>((k & 0xf) << (4 * (c % 2)));
      b.qh[off + j] |= static_cast<uint8_t>((k >> 4) << c);
    }
  }
}

void pack_iq6_k(const Quantized256& q, BlockIq6K& b) {
  std::memset(&b, 0, sizeof(b));
  if (q.zero) return;
  b.d = f32_to_fp16(q.d);
  b.extra = q.extra;
  for (int ib = 0; ib < 16; ++ib) {
    b.scales[ib] = static_cast<int8_t>(q.ls[ib]);
    // Low nibbles as IQ5_K; 2 high bits in qh[32*(c/4) + 16*(ib%2) + j] at bit 2*(c%4).
    const int c = ib / 2, off = 16 * (ib % 2);
    for (int j = 0; j < 16; ++j) {
      const int k = q.idx[16 * ib + j];
      b.qs[32 * (c / 2) + off + j] |= static_cast<uint8_t>((k & 0xf) << (4 * (c % 2)));
      b.qh[32 * (c / 4) + off + j] |= static_cast<uint8_t>((k >> 4) << (2 * (c % 4)));
    }
  }
}

template <typename Block, void (*Pack)(const Quantized256&, Block&)>
void quantize_rows16(const TypeSpec& ts, const float* values, const float* src, void* dst, int64_t nrows,
                     int64_t n_per_row, const float* imatrix) {
  RowWeights rw(imatrix, n_per_row, 16);
  const int64_t nb = n_per_row / kQK;
  uint8_t* out = static_cast<uint8_t*>(dst);
  Quantized256 q;
  for (int64_t r = 0; r < nrows; ++r) {
    const float* x = src + r * n_per_row;
    const float* w = rw.for_row(x);
    for (int64_t i = 0; i < nb; ++i) {
      q = Quantized256{};
      quantize_256(ts, values, values + ts.grid.n, x + i * kQK, w ? w + i * kQK : nullptr, q);
      Block b;
      Pack(q, b);
      std::memcpy(out, &b, sizeof(b));
      out += sizeof(b);
    }
  }
}

}  // namespace

void quantize_iq4_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  quantize_rows16<BlockIq4K, pack_iq4_k>(kIq4, grids().iq4, src, dst, nrows, n_per_row, imatrix);
}
void quantize_iq5_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  quantize_rows16<BlockIq5K, pack_iq5_k>(kIq5, grids().iq5, src, dst, nrows, n_per_row, imatrix);
}
void quantize_iq6_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  quantize_rows16<BlockIq6K, pack_iq6_k>(kIq6, grids().iq6, src, dst, nrows, n_per_row, imatrix);
}

}  // namespace expertmesh::quant::iqk_k
