// IQ2_KS quantizer: a scalar port of the peer's quantize_row_iq2_ks_fast_impl
// (ggml/src/iqk/iqk_quantize.cpp). The peer's llama-quantize takes that AVX2 path on every x86
// build unless run with --slow-iq2ks, so it is what produced the golden files; we reproduce its
// arithmetic exactly, including the 8-lane accumulation order of its __m256 sums and the
// horizontal add hsum_float_8 ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
//
// Algorithm (per row):
//  1. Per 32-weight sub-block: try d = max/22, then max/(v0 + itry/2) for itry in [-13, 13] with
//     both table halves (v0 = -31 or -26). For each d every weight takes the nearest of d*values
//     (and, separately, of -d*values); the candidate's least-squares scale and score
//     sum(w*q*x)²/sum(w*q²) are kept when the score improves.
//  2. The sub-block scales become 5-bit integers times a row scale (make_qx_quants, weighted by
//     the sub-blocks' summed weights).
//  3. Each integer scale may move by one step toward its float scale when that lowers the
//     weighted squared error; the row scale is refit by least squares over the row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant/iqk_ks_internal.h"
#include "kernels/quant/iqk_tables.h"

namespace expertmesh::quant::iqk_ks {
namespace {

// One __m256 accumulator: lane p accumulates elements 8k+p.
struct Lanes {
  float v[8] = {};
  float hsum() const {
    const float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
    return (s0 + s2) + (s1 + s3);
  }
};

// Index (0..3) of the value nearest to x among val[0..3] by squared distance; the first wins ties.
// sign = -1 measures the distance to -val (x + val), as the peer does for the mirrored scale.
int nearest4(float x, const float* val, float sign) {
  int best_j = 0;
  float diff = sign > 0 ? x - val[0] : x + val[0];
  float best = diff * diff;
  for (int j = 1; j < 4; ++j) {
    diff = sign > 0 ? x - val[j] : x + val[j];
    diff = diff * diff;
    if (diff < best) {
      best = diff;
      best_j = j;
    }
  }
  return best_j;
}

struct Candidate {
  bool ok = false;
  float d = 0;
  float score = 0;
};

// compute_1block_iq2ks: the least-squares scale and score for the values nearest to d*values
// (p) and to -d*values (m); m replaces p when its score is higher.
Candidate try_scale(float d, const float* x, const float* w, const int8_t* values) {
  float val[4];
  for (int j = 0; j < 4; ++j) val[j] = d * values[j];
  Lanes qx1, q21, qx2, q22;
  for (int i = 0; i < kBlock; ++i) {
    const float q1 = values[nearest4(x[i], val, 1.f)];
    const float q2 = values[nearest4(x[i], val, -1.f)];
    const float wq1 = w[i] * q1, wq2 = w[i] * q2;
    float* a = &qx1.v[i % 8];
    *a = fmadd(wq1, x[i], *a);
    a = &q21.v[i % 8];
    *a = fmadd(wq1, q1, *a);
    a = &qx2.v[i % 8];
    *a = fmadd(wq2, x[i], *a);
    a = &q22.v[i % 8];
    *a = fmadd(wq2, q2, *a);
  }
  const float sumqx1 = qx1.hsum(), sumq21 = q21.hsum(), sumqx2 = qx2.hsum(), sumq22 = q22.hsum();
  Candidate c;
  if (sumq21 > 0) {
    c.d = sumqx1 / sumq21;
    c.score = sumqx1 * c.d;
    c.ok = true;
  }
  if (sumq22 > 0 && (!c.ok || sumqx2 * sumqx2 > c.score * sumq22)) {
    c.d = sumqx2 / sumq22;
    c.score = sumqx2 * c.d;
    c.ok = true;
  }
  return c;
}

// compute_1block_iq2ks_rmse: nearest values to d*values, their indices in idx, and the weighted
// squared error sum(w * (x - d*q)²) with x - d*q computed as one fused operation.
float block_error(float d, const float* x, const float* w, const int8_t* values, uint8_t* idx) {
  float val[4];
  for (int j = 0; j < 4; ++j) val[j] = d * values[j];
  Lanes err;
  for (int i = 0; i < kBlock; ++i) {
    idx[i] = static_cast<uint8_t>(nearest4(x[i], val, 1.f));
    const float diff = fmadd(-d, static_cast<float>(values[idx[i]]), x[i]);
    err.v[i % 8] = fmadd(w[i] * diff, diff, err.v[i % 8]);
  }
  return err.hsum();
}

// The peer's make_qx_quants with nmax = 16: integer scales L[i] in [0, 31] (value L - 16) for the
// float scales x[i], chosen to maximise sum(qw*x*l)² / sum(qw*l²) over 19 trial inverse scales.
float make_qx_quants16(int n, const float* x, int8_t* L, const float* qw) {
  constexpr int nmax = 16;
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (!amax) {
    std::fill(L, L + n, int8_t{0});
    return 0.f;
  }
  auto level = [&](float iscale, int i) { return std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))); };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = static_cast<int8_t>(l + nmax);
    sumlx = fmadd(qw[i] * x[i], static_cast<float>(l), sumlx);
    suml2 = fmadd(qw[i] * static_cast<float>(l), static_cast<float>(l), suml2);
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -fmadd(0.1f, static_cast<float>(is), static_cast<float>(nmax)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale, i);
      sumlx = fmadd(qw[i] * x[i], static_cast<float>(l), sumlx);
      suml2 = fmadd(qw[i] * static_cast<float>(l), static_cast<float>(l), suml2);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + level(iscale, i));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Weights of a sub-block: imatrix-based, or 0.25*sigma2 + x² without one.
void iq2_weights(const float* xb, const float* qw, float sigma2, float* w) {
  if (qw) {
    imatrix_weights(qw, xb, sigma2, w);
  } else {
    const float base = 0.25f * sigma2;
    for (int j = 0; j < kBlock; ++j) w[j] = fmadd(xb[j], xb[j], base);
  }
}

float iq2_sigma2(const float* xbl) { return 1.5f * sum_squares(xbl, kSuperBlock) / kSuperBlock; }

}  // namespace

float quantize_row_iq2_ks(const float* x, void* vblocks, int n_per_row, const float* weights) {
  auto* y = static_cast<block_iq2_ks*>(vblocks);
  const int nblock = n_per_row / kSuperBlock;
  const int nsub = nblock * (kSuperBlock / kBlock);
  std::vector<float> all_scales(nsub), all_sw(nsub);
  std::vector<int8_t> all_ls(nsub);
  const int8_t* shifted_values = kIq2nlValues + 4;
  float w[kBlock];

  for (int ibl = 0; ibl < nblock; ++ibl) {
    std::memset(&y[ibl], 0, sizeof(block_iq2_ks));
    const float* xbl = x + ibl * kSuperBlock;
    const float sigma2 = iq2_sigma2(xbl);
    uint16_t extra = 0;
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + kBlock * ib;
      iq2_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
      float amax = 0, max = 0, sumw = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float ax = std::fabs(xb[j]);
        if (ax > amax) {
          amax = ax;
          max = xb[j];
        }
        sumw += w[j];
      }
      const int is = ibl * 8 + ib;
      all_sw[is] = sumw;
      if (amax < 1e-14f) {
        all_scales[is] = 0;
        continue;
      }
      float d = max / kIq2nlValues[7];
      float best = 0;
      Candidate c = try_scale(d, xb, w, kIq2nlValues);
      if (c.ok) {
        best = c.score;
        d = c.d;
      }
      bool is_shifted = false;
      for (int half = 0; half < 2; ++half) {
        const int8_t* values = half ? shifted_values : kIq2nlValues;
        for (int itry = -13; itry <= 13; ++itry) {
          c = try_scale(max / (values[0] + 0.5f * static_cast<float>(itry)), xb, w, values);
          if (c.ok && c.score > best) {
            best = c.score;
            d = c.d;
            is_shifted = half;
          }
        }
      }
      all_scales[is] = d;
      if (is_shifted) extra |= static_cast<uint16_t>(1 << ib);
    }
    y[ibl].extra = extra;
  }

  const float d = make_qx_quants16(nsub, all_scales.data(), all_ls.data(), all_sw.data());
  if (!d) return 0.f;

  Lanes sumqx, sumq2;  // continued across the whole row, as the peer's vsumqx / vsumq2
  for (int ibl = 0; ibl < nblock; ++ibl) {
    const float* xbl = x + ibl * kSuperBlock;
    const float sigma2 = iq2_sigma2(xbl);
    block_iq2_ks& b = y[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int is = ibl * 8 + ib;
      const int8_t* values = (b.extra & (1 << ib)) ? shifted_values : kIq2nlValues;
      const float* xb = xbl + kBlock * ib;
      iq2_weights(xb, weights ? weights + ibl * kSuperBlock + ib * kBlock : nullptr, sigma2, w);
      int8_t& ls = all_ls[is];
      const float dl = d * (ls - 16);
      uint8_t idx1[kBlock], idx2[kBlock];
      const float err1 = block_error(dl, xb, w, values, idx1);
      // One step toward the float scale (the peer stops the upward step at 15, not 31).
      if (ls > 0 && dl > all_scales[is]) {
        if (block_error(d * (ls - 17), xb, w, values, idx2) < err1) {
          --ls;
          std::memcpy(idx1, idx2, sizeof(idx1));
        }
      } else if (ls < 15 && dl < all_scales[is]) {
        if (block_error(d * (ls - 15), xb, w, values, idx2) < err1) {
          ++ls;
          std::memcpy(idx1, idx2, sizeof(idx1));
        }
      }
      const float vd = static_cast<float>(ls - 16);
      for (int i = 0; i < kBlock; ++i) {
        const float vq = vd * static_cast<float>(values[idx1[i]]);
        const float wvq = w[i] * vq;
        sumqx.v[i % 8] = fmadd(wvq, xb[i], sumqx.v[i % 8]);
        sumq2.v[i % 8] = fmadd(wvq, vq, sumq2.v[i % 8]);
      }
      b.scales[ib / 2] |= static_cast<uint8_t>((ls & 0xf) << 4 * (ib % 2));
      b.extra |= static_cast<uint16_t>((ls >> 4) << (8 + ib));
      uint8_t* qs = b.qs + 32 * (ib / 4);
      for (int i = 0; i < kBlock; ++i) qs[i] |= static_cast<uint8_t>(idx1[i] << 2 * (ib % 4));
    }
  }
  const float sqx = sumqx.hsum(), sq2 = sumq2.hsum();
  return sq2 > 0 ? sqx / sq2 : d;
}

}  // namespace expertmesh::quant::iqk_ks
