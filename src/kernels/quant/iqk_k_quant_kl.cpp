// Reference quantizer of IQ2_KL: a port of ik's quantize_iq2_kl that reproduces its bytes exactly
// (iqk_quantize.cpp, the FMA roundings of ik's build included; see fmadd() in iqk_k_common.h).
//
// IQ2_KL codes weights in pairs: each pair of a 32-weight block is one of 32 grid points
// (kIq2klValues), pairs of values drawn from the 8-value IQ3 grid. A pair is mapped to the grid
// by rounding each coordinate to the IQ3 grid; when that pair is not a grid point, the best of 8
// precomputed neighbours by weighted squared error is taken. The row has one fp16 scale; each block
// a 6-bit scale chosen among the nearest three by the block's weighted error.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

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

// k_index[8*l1 + l2]: the grid entry (0..31) of the value pair (v[l1], v[l2]), or -(1+k) when the
// pair is not on the grid, k selecting its row of candidate neighbours in kIq2klNeighbours.
constexpr int8_t kIq2klIndex[64] = {
     -1,  -2,   0,  -3,  -4,   1,  -5,  -6,   2,  -7,  -8,   3,  -9,   4, -10,   5,
    -11,   6,   7, -12,   8,   9,  10, -13,  11, -14, -15, -16,  12,  13, -17,  14,
    -18, -19,  15,  16,  17,  18,  19, -20, -21,  20,  21,  22,  23,  24, -22, -23,
     25, -24,  26, -25,  27, -26,  28,  29, -27, -28,  30, -29, -30,  31, -31, -32,
};
constexpr uint8_t kIq2klNeighbours[32][8] = {
    { 2,  0,  6, 11,  7,  3,  8, 15}, { 0,  2,  3,  6,  7,  1,  8,  4},
    { 0,  1,  3,  4,  8,  7,  9,  6}, { 1,  0,  3,  4,  8,  9,  7, 10},
    { 1,  4,  5, 10,  9,  3,  8,  0}, { 5,  1,  4, 10,  9, 14,  8,  3},
    { 6,  2,  7,  0,  3, 11,  8, 15}, { 3,  7,  0,  6,  8,  4, 12,  9},
    { 3,  4,  8,  9,  1,  7, 12, 10}, { 4, 10,  5,  9,  1,  8, 13, 14},
    {11,  2,  6,  7, 20, 15, 25, 21}, { 8,  7,  3, 12,  9, 16, 17, 13},
    {14,  5, 10, 19,  9, 13,  4, 18}, { 6, 15,  7, 11, 20, 21, 16,  2},
    {15,  7, 16,  6, 21, 12, 17, 22}, {12, 16, 17,  8, 15,  7, 13, 22},
    {19, 10, 13, 18, 14,  9, 12, 24}, {11, 20, 25,  6, 15,  2, 21,  7},
    {20, 15, 21,  6, 11,  7, 16, 26}, {14, 19, 29, 10, 28, 18, 13, 24},
    {25, 11, 20, 21, 15,  6, 26, 30}, {19, 24, 28, 18, 29, 23, 13, 17},
    {29, 19, 14, 28, 24, 18, 10, 13}, {20, 26, 21, 25, 30, 15, 22, 16},
    {27, 26, 22, 23, 21, 30, 16, 24}, {27, 24, 28, 31, 23, 18, 22, 17},
    {25, 30, 20, 26, 21, 11, 15, 22}, {30, 26, 25, 20, 21, 27, 22, 15},
    {30, 27, 31, 26, 22, 23, 21, 24}, {31, 27, 30, 26, 28, 23, 22, 24},
    {31, 28, 29, 27, 24, 23, 19, 18}, {29, 28, 31, 24, 19, 27, 14, 18},
};

constexpr GridSpec kIq3Grid = {8, kIq3nlIndex, 111, false};

struct KlGrid {
  float values[8];         // the plain half of the IQ3 grid
  float first[32], second[32];
  int ifirst[32], isecond[32];
};
const KlGrid& kl_grid() {
  static const KlGrid g = [] {
    KlGrid r{};
    for (int i = 0; i < 8; ++i) r.values[i] = kIq3nlValues[i];
    for (int i = 0; i < 32; ++i) {
      r.ifirst[i] = static_cast<int8_t>(kIq2klValues[i] & 0xff);
      r.isecond[i] = static_cast<int8_t>(kIq2klValues[i] >> 8);
      r.first[i] = static_cast<float>(r.ifirst[i]);
      r.second[i] = static_cast<float>(r.isecond[i]);
    }
    return r;
  }();
  return g;
}

// Weighted squared error of a pair, rounded as ik's build evaluates w1*e1*e1 + w2*e2*e2.
inline float pair_error(float w1, float e1, float w2, float e2) { return fmadd(w1 * e1, e1, (w2 * e2) * e2); }

// Grid entry for the pair (x1, x2) at inverse scale id.
int pair_index(const KlGrid& g, float id, float x1, float x2, float w1, float w2) {
  const float sx1 = id * x1;
  const float sx2 = id * x2;
  const int l1 = best_index(kIq3Grid, g.values, sx1);
  const int l2 = best_index(kIq3Grid, g.values, sx2);
  const int i = kIq2klIndex[8 * l1 + l2];
  if (i >= 0) return i;
  const uint8_t* neigh = kIq2klNeighbours[-i - 1];
  float best = std::numeric_limits<float>::max();
  int ibest = neigh[0];  // ik asserts a candidate scores below FLT_MAX; keep the first otherwise
  for (int k = 0; k < 8; ++k) {
    const int n = neigh[k];
    const float score = pair_error(w1, g.first[n] - sx1, w2, g.second[n] - sx2);
    if (score < best) {
      best = score;
      ibest = n;
    }
  }
  return ibest;
}

// Block weights: imatrix * sqrt(sigma2 + x²), else |x|.
void weights32(const float* xb, const float* qw, float sigma2, float* w) {
  for (int j = 0; j < 32; ++j) w[j] = qw ? qw[j] * std::sqrt(fmadd(xb[j], xb[j], sigma2)) : std::fabs(xb[j]);
}

float block_sigma2(const float* x) {
  float s = 0;
  for (int j = 0; j < kQK; ++j) s += x[j] * x[j];
  return s * (2.25f / kQK);
}

// Weighted fit of a 32-block to the pair grid at inverse scale id (sign +) and -id (sign -).
struct PairFit {
  float sumqx_p = 0, sumq2_p = 0, sumqx_m = 0, sumq2_m = 0;
};
PairFit fit32(const KlGrid& g, const float* xb, const float* w, float id) {
  PairFit f;
  auto add = [&](int idx, int j, float* sumqx, float* sumq2) {
    const float q1 = g.first[idx], q2 = g.second[idx];
    const float wq1 = w[j] * q1, wq2 = w[j + 1] * q2;
    *sumqx = fmadd(xb[j], wq1, wq2 * xb[j + 1]) + *sumqx;
    *sumq2 = fmadd(wq1, q1, wq2 * q2) + *sumq2;
  };
  for (int j = 0; j < 32; j += 2) {
    add(pair_index(g, id, xb[j], xb[j + 1], w[j], w[j + 1]), j, &f.sumqx_p, &f.sumq2_p);
    add(pair_index(g, -id, xb[j], xb[j + 1], w[j], w[j + 1]), j, &f.sumqx_m, &f.sumq2_m);
  }
  return f;
}

// Best float scale of one 32-block (both signs, 11 trial inverse scales); 0 if (near) zero.
float search_block(const KlGrid& g, const float* xb, const float* w) {
  constexpr int kNtry = 5;
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < 1e-16f) return 0;
  float d = -max / g.values[0];
  PairFit f = fit32(g, xb, w, 1 / d);
  d = f.sumqx_p / f.sumq2_p;
  float best = d * f.sumqx_p;
  auto consider = [&](float sumqx, float sumq2) {
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  };
  consider(f.sumqx_m, f.sumq2_m);
  for (int itry = -kNtry; itry <= kNtry; ++itry) {
    f = fit32(g, xb, w, static_cast<float>(itry + static_cast<int>(g.values[0])) / max);
    consider(f.sumqx_p, f.sumq2_p);
    consider(f.sumqx_m, f.sumq2_m);
  }
  return d;
}

void quantize_row_iq2_kl(const float* x, uint8_t* row, int64_t n_per_row, const float* qw, std::vector<float>& scales) {
  const KlGrid& g = kl_grid();
  const int64_t nb = n_per_row / kQK;
  // Blocks are built here and copied behind the row's fp16 scale (which misaligns them in place).
  std::vector<BlockIq2KL> y(static_cast<size_t>(nb));
  std::memset(y.data(), 0, y.size() * sizeof(BlockIq2KL));
  float w[32];

  // Pass 1: a float scale per 32-block; the row's extreme scale sets the row scale.
  float max_scale = 0, max_abs_scale = 0;
  for (int64_t ibl = 0; ibl < nb; ++ibl) {
    const float* xbl = x + ibl * kQK;
    const float sigma2 = block_sigma2(xbl);
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      weights32(xb, qw ? qw + ibl * kQK + 32 * ib : nullptr, sigma2, w);
      const float d = search_block(g, xb, w);
      scales[static_cast<size_t>(ibl * 8 + ib)] = d;
      if (std::fabs(d) > max_abs_scale) {
        max_abs_scale = std::fabs(d);
        max_scale = d;
      }
    }
  }
  uint16_t dh = f32_to_fp16(0.f);
  if (max_abs_scale != 0) {
    float d = -max_scale / 32;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    // Pass 2: per block the 6-bit scale among round(s/d) and its two neighbours with the least
    // weighted error, then the indices for it; finally the row scale is refit.
    for (int64_t ibl = 0; ibl < nb; ++ibl) {
      const float* xbl = x + ibl * kQK;
      const float sigma2 = block_sigma2(xbl);
      BlockIq2KL& b = y[static_cast<size_t>(ibl)];
      for (int ib = 0; ib < 8; ++ib) {
        const float* xb = xbl + 32 * ib;
        weights32(xb, qw ? qw + ibl * kQK + 32 * ib : nullptr, sigma2, w);
        const int ls0 = std::clamp(nearest_int_fma(id, scales[static_cast<size_t>(ibl * 8 + ib)]), -32, 31);
        float best_score = std::numeric_limits<float>::max();
        int ls = ls0;
        for (int ils = std::max(-32, ls0 - 1); ils <= std::min(31, ls0 + 1); ++ils) {
          const float dl = d * static_cast<float>(ils);
          const float idl = dl != 0 ? 1 / dl : 0.f;
          float score = 0;
          for (int j = 0; j < 16; ++j) {
            const float x1 = xb[2 * j], x2 = xb[2 * j + 1];
            const int idx = pair_index(g, idl, x1, x2, w[2 * j], w[2 * j + 1]);
            const float e1 = fmadd(dl, g.first[idx], -x1);
            const float e2 = fmadd(dl, g.second[idx], -x2);
            score = pair_error(w[2 * j], e1, w[2 * j + 1], e2) + score;
          }
          if (score < best_score) {
            best_score = score;
            ls = ils;
          }
        }
        const int uls = ls + 32;
        b.scales_l[ib % 4] |= static_cast<uint8_t>((uls & 0xf) << (4 * (ib / 4)));
        b.scales_h |= static_cast<uint16_t>((uls >> 4) << (2 * ib));
        if (ls == 0) continue;
        const float dl = d * static_cast<float>(ls);
        const float idl = 1 / dl;
        for (int j = 0; j < 16; ++j) {
          const float x1 = xb[2 * j], x2 = xb[2 * j + 1];
          const float w1 = w[2 * j], w2 = w[2 * j + 1];
          const int idx = pair_index(g, idl, x1, x2, w1, w2);
          b.qs[16 * (ib / 2) + j] |= static_cast<uint8_t>((idx & 0xf) << (4 * (ib % 2)));
          b.qh[j] |= static_cast<uint8_t>((idx >> 4) << ib);
          const float q1 = static_cast<float>(ls * g.ifirst[idx]);
          const float q2 = static_cast<float>(ls * g.isecond[idx]);
          const float wq1 = w1 * q1, wq2 = w2 * q2;
          sumqx = fmadd(wq1, x1, wq2 * x2) + sumqx;
          sumq2 = fmadd(wq1, q1, wq2 * q2) + sumq2;
        }
      }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    dh = f32_to_fp16(1.025f * d);
  }
  std::memcpy(row, &dh, 2);
  std::memcpy(row + 2, y.data(), y.size() * sizeof(BlockIq2KL));
}

}  // namespace

void quantize_iq2_kl(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  RowWeights rw(imatrix, n_per_row, 32);
  std::vector<float> scales(static_cast<size_t>(n_per_row / 32));
  const int64_t rs = 2 + (n_per_row / kQK) * static_cast<int64_t>(sizeof(BlockIq2KL));
  for (int64_t r = 0; r < nrows; ++r) {
    const float* x = src + r * n_per_row;
    quantize_row_iq2_kl(x, static_cast<uint8_t*>(dst) + r * rs, n_per_row, rw.for_row(x), scales);
  }
}

}  // namespace expertmesh::quant::iqk_k
