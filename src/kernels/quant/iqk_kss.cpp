// IQ4_KSS quantizer: a port of the peer's quantize_row_iq4_kss_impl and prune_iq4ks
// (ggml/src/iqk/iqk_quantize.cpp), reproducing its search order and float rounding.
//
// IQ4_KSS stores IQ4_KS data in 4.0 bpw: every group of four 4-bit indices (16 bits) must have
// even parity, which frees one bit per group for the sub-block scale (see block_iq4_kss). Groups
// with odd parity are "pruned": the one index change (by at most ±2 steps, flipping the parity)
// that increases the weighted squared error least is applied.
//
// Algorithm (per row):
//  1. Per 32-weight sub-block: try 2*ntry+1 inverse scales (itry + values[0]) / max for both
//     table halves and both signs, pruning every group, and keep the least-squares scale with
//     the best score sum(w*q*x)² / sum(w*q²).
//  2. Row scale d = amax/127 over the sub-block scales; each sub-block scale becomes a 7-bit code.
//  3. With the integer scale, pick plain or shifted values by lower weighted error (both pruned),
//     and refit the row scale by least squares (times 1.01, as the peer does).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant/iqk_ks_internal.h"
#include "kernels/quant/iqk_tables.h"

namespace expertmesh::quant::iqk_ks {
namespace {

// Makes the 16-bit group v (four indices into `values`) even-parity by changing one index; x, w:
// the group's four weights and importances (in nibble order), dl: the scale in use. The error of
// the current index is measured against the plain table even when `values` is the shifted half
// (as the peer does).
uint16_t prune(uint16_t v, const int8_t* values, const float* x, const float* w, float dl) {
  if (popcount16(v) % 2 == 0) return v;
  float best_score = FLT_MAX;
  uint8_t q4[4];
  int jbest = -1;
  uint8_t bestq = 0;
  for (int j = 0; j < 4; ++j) {
    const uint8_t q = (v >> 4 * j) & 0xf;
    q4[j] = q;
    const int pc = popcount16(q);
    const float diff0 = fmadd(dl, static_cast<float>(kIq4kValues[q]), -x[j]);
    const float diff0_sq = diff0 * diff0;
    const int qmin = std::max(int(q) - 2, 0);
    const int qmax = std::min(int(q) + 2, 15);
    for (int iq = qmin; iq <= qmax; ++iq) {
      if (iq == q) continue;
      if (std::abs(popcount16(static_cast<uint16_t>(iq)) - pc) % 2 == 0) continue;
      const float diff1 = fmadd(dl, static_cast<float>(values[iq]), -x[j]);
      const float score = w[j] * fmadd(diff1, diff1, -diff0_sq);
      if (score < best_score) {
        best_score = score;
        jbest = j;
        bestq = static_cast<uint8_t>(iq);
      }
    }
  }
  // Some neighbour at distance 1 always flips the parity, so jbest >= 0.
  q4[jbest] = bestq;
  return static_cast<uint16_t>(q4[0] | (q4[1] << 4) | (q4[2] << 8) | (q4[3] << 12));
}

// The four weights of group k of a sub-block, in nibble order: 2k, 2k+16, 2k+1, 2k+17.
void gather_group(const float* src, int k, float* out) {
  out[0] = src[2 * k];
  out[1] = src[2 * k + 16];
  out[2] = src[2 * k + 1];
  out[3] = src[2 * k + 17];
}

// Inverse of the parity encoding: the 15-bit t with (t << 1) ^ t == v (v has even parity).
uint16_t scramble(uint16_t v) {
  uint16_t t = 0;
  int prev = 0;
  for (int b = 0; b < 15; ++b) {
    prev ^= (v >> b) & 1;
    t |= static_cast<uint16_t>(prev << b);
  }
  return t;
}

void block_weights(const float* xb, const float* qw, float sigma2, float* w) {
  if (qw) {
    imatrix_weights(qw, xb, sigma2, w);
  } else {
    for (int j = 0; j < kBlock; ++j) w[j] = xb[j] * xb[j];
  }
}

// Step 1 for one sub-block (max = its signed largest-magnitude value, non-zero).
float search_block(const float* xb, const float* w, float max) {
  constexpr int ntry = 7;
  float best = 0;
  float d = -max / kIq4kValues[0];
  float xv[4], wv[4];
  for (int itry = -ntry; itry <= ntry; ++itry) {
    for (int half = 0; half < 2; ++half) {
      const int8_t* values = kIq4kValues + 16 * half;
      const float id = static_cast<float>(itry + values[0]) / max;
      const float this_d = 1 / id;
      float sumqx_p = 0, sumq2_p = 0, sumqx_m = 0, sumq2_m = 0;
      for (int k = 0; k < kBlock / 4; ++k) {
        gather_group(xb, k, xv);
        gather_group(w, k, wv);
        uint16_t vp = 0, vm = 0;
        for (int j = 0; j < 4; ++j) {
          const float al = id * xv[j];
          vp |= static_cast<uint16_t>(best_index_iq4nl(values, al) << 4 * j);
          vm |= static_cast<uint16_t>(best_index_iq4nl(values, -al) << 4 * j);
        }
        vp = prune(vp, values, xv, wv, this_d);
        vm = prune(vm, values, xv, wv, this_d);
        for (int j = 0; j < 4; ++j) {
          float q = values[(vp >> 4 * j) & 0xf];
          float wq = wv[j] * q;
          sumqx_p = fmadd(wq, xv[j], sumqx_p);
          sumq2_p = fmadd(wq, q, sumq2_p);
          q = values[(vm >> 4 * j) & 0xf];
          wq = wv[j] * q;
          sumqx_m = fmadd(wq, xv[j], sumqx_m);
          sumq2_m = fmadd(wq, q, sumq2_m);
        }
      }
      if (sumq2_p > 0 && sumqx_p * sumqx_p > best * sumq2_p) {
        d = sumqx_p / sumq2_p;
        best = d * sumqx_p;
      }
      if (sumq2_m > 0 && sumqx_m * sumqx_m > best * sumq2_m) {
        d = sumqx_m / sumq2_m;
        best = d * sumqx_m;
      }
    }
  }
  return d;
}

float super_block_sigma2(const float* xbl) { return sum_squares(xbl, kSuperBlock) * (2.f / kSuperBlock); }

}  // namespace

float quantize_row_iq4_kss(const float* x, void* vblocks, int n_per_row, const float* weights) {
  auto* y = static_cast<block_iq4_kss*>(vblocks);
  const int nblock = n_per_row / kSuperBlock;
  std::vector<float> all_scales(nblock * 8);
  float w[kBlock];
  float amax_scale = 0;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    std::memset(&y[ibl], 0, sizeof(block_iq4_kss));
    const float* xbl = x + ibl * kSuperBlock;
    const float sigma2 = super_block_sigma2(xbl);
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + ib * kBlock;
      block_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
      float amax = 0, max = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float ax = std::fabs(xb[j]);
        if (ax > amax) {
          amax = ax;
          max = xb[j];
        }
      }
      float d = 0;
      if (amax >= 1e-16f) d = search_block(xb, w, max);
      all_scales[ibl * 8 + ib] = d;
      amax_scale = std::max(amax_scale, std::fabs(d));
    }
  }
  const float d = amax_scale / 127;
  if (!d) return d;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  const int8_t* shifted_values = kIq4kValues + 16;
  float xv[4], wv[4];
  uint16_t vps[kBlock / 4], vms[kBlock / 4];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    const float* xbl = x + ibl * kSuperBlock;
    const float sigma2 = super_block_sigma2(xbl);
    uint8_t* q16_bytes = reinterpret_cast<uint8_t*>(y[ibl].qs);
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + ib * kBlock;
      block_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
      int l = nearest_int(0.5f * fmadd(id, all_scales[ibl * 8 + ib], 127.f));
      l = (std::max(0, std::min(127, l)) << 1) - 127;
      // l = 2*code - 127 is odd, never 0 (the peer's `if (l)` branch is always taken).
      uint16_t words[kBlock / 4];
      const float dl = d * l;
      const float idl = 1 / dl;
      float mse_p = 0, mse_m = 0;
      for (int k = 0; k < kBlock / 4; ++k) {
        gather_group(xb, k, xv);
        gather_group(w, k, wv);
        uint16_t vp = 0, vm = 0;
        for (int j = 0; j < 4; ++j) {
          const float al = idl * xv[j];
          vp |= static_cast<uint16_t>(best_index_iq4nl(kIq4kValues, al) << 4 * j);
          vm |= static_cast<uint16_t>(best_index_iq4nl(shifted_values, al) << 4 * j);
        }
        vp = prune(vp, kIq4kValues, xv, wv, dl);
        vm = prune(vm, shifted_values, xv, wv, dl);
        for (int j = 0; j < 4; ++j) {
          float diff = fmadd(-dl, static_cast<float>(kIq4kValues[(vp >> 4 * j) & 0xf]), xv[j]);
          mse_p = fmadd(wv[j] * diff, diff, mse_p);
          diff = fmadd(-dl, static_cast<float>(shifted_values[(vm >> 4 * j) & 0xf]), xv[j]);
          mse_m = fmadd(wv[j] * diff, diff, mse_m);
        }
        vps[k] = vp;
        vms[k] = vm;
      }
      const bool use_shifted = mse_m < mse_p;
      const uint16_t* v = use_shifted ? vms : vps;
      const int8_t* values = use_shifted ? shifted_values : kIq4kValues;
      for (int k = 0; k < kBlock / 4; ++k) {
        gather_group(xb, k, xv);
        gather_group(w, k, wv);
        for (int j = 0; j < 4; ++j) {
          const float q = static_cast<float>(values[(v[k] >> 4 * j) & 0xf] * l);
          const float wq = wv[j] * q;
          sumqx = fmadd(wq, xv[j], sumqx);
          sumq2 = fmadd(wq, q, sumq2);
        }
      }
      l += 127;
      if (use_shifted) l |= 1;
      for (int k = 0; k < kBlock / 4; ++k) words[k] = static_cast<uint16_t>((scramble(v[k]) << 1) | ((l >> k) & 1));
      std::memcpy(q16_bytes + 16 * ib, words, sizeof(words));
    }
  }
  return sumq2 > 0 ? sumqx / sumq2 * 1.01f : d;
}

}  // namespace expertmesh::quant::iqk_ks
