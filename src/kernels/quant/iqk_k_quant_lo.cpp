// Reference quantizers of IQ2_K, IQ3_K and IQ2_KL: ports of ik's quantize_iq2_k, quantize_iq3_k
// and quantize_iq2_kl that reproduce its bytes exactly (iqk_quantize.cpp, the FMA roundings of
// ik's build included; see fmadd() in iqk_k_common.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

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

// Per 16-weight sub-block importance: imatrix * sqrt(sigma2 + x²), else sigma2/4 + x².
inline void weights16(const float* xb, const float* qw, float sigma2, float* w) {
  for (int j = 0; j < 16; ++j) {
    if (qw) {
      w[j] = qw[j] * std::sqrt(fmadd(xb[j], xb[j], sigma2));
    } else {
      const float quarter = 0.25f * sigma2;
      const float x2 = xb[j] * xb[j];
      w[j] = quarter + x2;
    }
  }
}

inline float sum_squares(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// ggml's make_qx_quants for ik's IQ2_K sub-block scales: signed levels in [-nmax, nmax-1] with
// weights qw, trying 18 perturbed inverse scales. Returns the scale (0 if x is all zero).
float make_qx_quants(int n, int nmax, const float* x, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax == 0) return 0.f;
  auto fit = [&](float iscale, float* sumlx, float* suml2) {
    *sumlx = 0;
    *suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int_fma(iscale, x[i]), -nmax, nmax - 1);
      const float fl = static_cast<float>(l);
      *sumlx = fmadd(fl, x[i] * qw[i], *sumlx);
      *suml2 = fmadd(fl, fl * qw[i], *suml2);
    }
  };
  float sumlx, suml2;
  fit(static_cast<float>(-nmax) / max, &sumlx, &suml2);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -fmadd(static_cast<float>(is), 0.1f, static_cast<float>(nmax)) / max;
    fit(iscale, &sumlx, &suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// ---- IQ2_K -------------------------------------------------------------------------------------

// Nearest of the 4 IQ2 values, ties to the upper one.
inline int best_index_iq2(const float* v, float x) {
  const int i = x < v[1] ? 0 : x > v[2] ? 2 : 1;
  return x - v[i] < v[i + 1] - x ? i : i + 1;
}

// sum_k a_k*b_k over 4 terms, rounded as ik's build evaluates ((t0 + t1) + t2) + t3: the first
// product fused with the rounded second, then each further product fused into the sum.
inline float dot4(const float a[4], const float b[4]) {
  float acc = fmadd(a[0], b[0], a[1] * b[1]);
  acc = fmadd(a[2], b[2], acc);
  return fmadd(a[3], b[3], acc);
}

// IQ2_K's exhaustive sub-block scale search: with the 16 weights sorted, every split into 4
// contiguous runs assigned to the 4 grid values (either order, plain or shifted grid) is scored.
float search_iq2_k(const float* xb, const float* w, const float* values, const float* shifted, bool* is_shifted) {
  std::array<std::pair<float, int>, 16> pairs;
  for (int j = 0; j < 16; ++j) pairs[j] = {xb[j], j};
  std::sort(pairs.begin(), pairs.end());
  float sumx[17], sumw[17];
  sumx[0] = sumw[0] = 0;
  for (int j = 0; j < 16; ++j) {
    const int jj = pairs[j].second;
    sumw[j + 1] = sumw[j] + w[jj];
    sumx[j + 1] = fmadd(w[jj], xb[jj], sumx[j]);
  }
  // Candidate grids in ik's order: plain, shifted, plain reversed, shifted reversed.
  const float grids[4][4] = {{values[0], values[1], values[2], values[3]},
                             {shifted[0], shifted[1], shifted[2], shifted[3]},
                             {values[3], values[2], values[1], values[0]},
                             {shifted[3], shifted[2], shifted[1], shifted[0]}};
  float best = 0, d = 0;
  *is_shifted = false;
  for (int i1 = 0; i1 < 16; ++i1) {
    for (int i2 = i1; i2 < 16; ++i2) {
      for (int i3 = i2; i3 < 16; ++i3) {
        const float dx[4] = {sumx[i1] - sumx[0], sumx[i2] - sumx[i1], sumx[i3] - sumx[i2], sumx[16] - sumx[i3]};
        const float dw[4] = {sumw[i1] - sumw[0], sumw[i2] - sumw[i1], sumw[i3] - sumw[i2], sumw[16] - sumw[i3]};
        for (int g = 0; g < 4; ++g) {
          const float* v = grids[g];
          // sumq2 term k is (dw_k * v_k) * v_k: the inner product rounded first.
          const float dwv[4] = {dw[0] * v[0], dw[1] * v[1], dw[2] * v[2], dw[3] * v[3]};
          const float sumqx = dot4(dx, v);
          const float sumq2 = dot4(dwv, v);
          if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
            *is_shifted = (g % 2) == 1;
          }
        }
      }
    }
  }
  return d;
}

void quantize_block_iq2_k(const float* x, const float* qw, BlockIq2K& y) {
  static const float kValues[8] = {kIq2nlValues[0], kIq2nlValues[1], kIq2nlValues[2], kIq2nlValues[3],
                                   kIq2nlValues[4], kIq2nlValues[5], kIq2nlValues[6], kIq2nlValues[7]};
  const float* values = kValues;
  const float* shifted = kValues + 4;
  std::memset(&y, 0, sizeof(y));
  const float sigma2 = 1.5f * sum_squares(x, kQK) / kQK;

  float scales[16], sw[16], w[16];
  uint16_t extra = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float* xb = x + 16 * ib;
    weights16(xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    sw[ib] = 0;
    float amax = 0;
    for (int j = 0; j < 16; ++j) {
      sw[ib] += w[j];
      amax = std::max(amax, std::fabs(xb[j]));
    }
    if (amax < 1e-16f) {
      scales[ib] = 0;
      continue;
    }
    bool sh = false;
    scales[ib] = search_iq2_k(xb, w, values, shifted, &sh);
    if (sh) extra |= static_cast<uint16_t>(1u << ib);
    max_abs_scale = std::max(max_abs_scale, std::fabs(scales[ib]));
  }
  if (max_abs_scale == 0) return;
  const float d = make_qx_quants(16, 8, scales, sw);
  if (d == 0) return;

  y.extra = extra;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const int ls = std::clamp(nearest_int_fma(id, scales[ib]), -8, 7);
    y.scales[ib / 2] |= static_cast<uint8_t>((ls + 8) << (4 * (ib % 2)));
    const float dl = d * static_cast<float>(ls);
    if (dl == 0) continue;
    const float* bv = (extra & (1u << ib)) ? shifted : values;
    const float* xb = x + 16 * ib;
    weights16(xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    const float idl = 1 / dl;
    // Sub-block ib: 32-chunk c = ib/2, bytes qs[32*(c/4) + 16*(ib%2) + j] at bit offset 2*(c%4).
    const int c = ib / 2;
    uint8_t* qs = y.qs + 32 * (c / 4) + 16 * (ib % 2);
    for (int j = 0; j < 16; ++j) {
      const int k = best_index_iq2(bv, idl * xb[j]);
      qs[j] |= static_cast<uint8_t>(k << (2 * (c % 4)));
      const float q = static_cast<float>(static_cast<int>(bv[k]) * ls);
      const float wq = w[j] * q;
      sumqx = fmadd(wq, xb[j], sumqx);
      sumq2 = fmadd(wq, q, sumq2);
    }
  }
  y.d = f32_to_fp16(1.030f * (sumq2 > 0 ? sumqx / sumq2 : d));
}

// ---- IQ3_K -------------------------------------------------------------------------------------

constexpr GridSpec kIq3Grid = {8, kIq3nlIndex, 111, false};

const float* iq3_values() {
  static const std::array<float, 16> v = [] {
    std::array<float, 16> r{};
    for (int i = 0; i < 16; ++i) r[i] = kIq3nlValues[i];
    return r;
  }();
  return v.data();
}

// Best scale of one IQ3_K sub-block (both signs, plain and shifted grid, 7 trial scales), then
// refit on the chosen grid half. 0 for an all-(near-)zero sub-block.
float search_iq3_k(const float* xb, const float* w, bool* shifted_out) {
  constexpr int kNtry = 3;
  const float* values = iq3_values();
  const float* shifted = values + 8;
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
  float best = 0;
  Fit f = fit16(kIq3Grid, values, xb, w, 1 / d);
  if (f.sumq2_p > 0) {
    d = f.sumqx_p / f.sumq2_p;
    best = d * f.sumqx_p;
  }
  if (f.sumq2_m > 0 && f.sumqx_m * f.sumqx_m > best * f.sumq2_m) {
    d = f.sumqx_m / f.sumq2_m;
    best = d * f.sumqx_m;
  }
  bool is_shifted = false;
  auto consider = [&](float sumqx, float sumq2, bool sh) {
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
      is_shifted = sh;
    }
  };
  for (int itry = -kNtry; itry <= kNtry; ++itry) {
    f = fit16(kIq3Grid, values, xb, w, static_cast<float>(2 * itry + static_cast<int>(values[0])) / max);
    consider(f.sumqx_p, f.sumq2_p, false);
    consider(f.sumqx_m, f.sumq2_m, false);
    f = fit16(kIq3Grid, shifted, xb, w, static_cast<float>(2 * itry + static_cast<int>(shifted[0])) / max);
    consider(f.sumqx_p, f.sumq2_p, true);
    consider(f.sumqx_m, f.sumq2_m, true);
  }
  if (d == 0) return 0;  // the shift flag is dropped with the scale
  const float* bv = is_shifted ? shifted : values;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 16; ++j) {
    const float q = bv[best_index(kIq3Grid, bv, id * xb[j])];
    const float wq = w[j] * q;
    sumqx = fmadd(wq, xb[j], sumqx);
    sumq2 = fmadd(wq, q, sumq2);
  }
  if (sumq2 > 0) d = sumqx / sumq2;
  // (ik follows this with a greedy per-weight refinement whose result it never uses.)
  *shifted_out = is_shifted;
  return d;
}

void quantize_block_iq3_k(const float* x, const float* qw, BlockIq3K& y) {
  const float* values = iq3_values();
  std::memset(&y, 0, sizeof(y));
  const float sigma2 = 1.5f * sum_squares(x, kQK) / kQK;
  float scales[16], w[16];
  uint16_t extra = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float* xb = x + 16 * ib;
    weights16(xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    bool sh = false;
    scales[ib] = search_iq3_k(xb, w, &sh);
    if (sh) extra |= static_cast<uint16_t>(1u << ib);
    max_abs_scale = std::max(max_abs_scale, std::fabs(scales[ib]));
  }
  if (max_abs_scale == 0) return;
  const float d = max_abs_scale / 31;
  y.extra = extra;
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int ib = 0; ib < 16; ++ib) {
    // Odd scale levels 2*ls+1, ls = round((|s|/d - 1)/2) in [0, 15], sign in scales_h.
    const float t = fmadd(id, std::fabs(scales[ib]), -1.f);
    const float val = fmadd(t, 0.5f, 12582912.f);
    int32_t bits;
    std::memcpy(&bits, &val, sizeof(bits));
    int ls = std::clamp((bits & 0x007fffff) - 0x00400000, 0, 15);
    y.scales_l[ib / 2] |= static_cast<uint8_t>(ls << (4 * (ib % 2)));
    if (scales[ib] < 0) y.scales_h |= static_cast<uint16_t>(1u << ib);
    ls = (2 * ls + 1) * (scales[ib] < 0 ? -1 : 1);
    const float dl = d * static_cast<float>(ls);
    if (dl == 0) continue;
    const float* bv = values + ((extra & (1u << ib)) ? 8 : 0);
    const float* xb = x + 16 * ib;
    weights16(xb, qw ? qw + 16 * ib : nullptr, sigma2, w);
    const float idl = 1 / dl;
    // Sub-block ib: 32-chunk c = ib/2; low 2 bits as IQ2_K, high bit at bit c of qh[16*(ib%2) + j].
    const int c = ib / 2, off = 16 * (ib % 2);
    for (int j = 0; j < 16; ++j) {
      const int k = best_index(kIq3Grid, bv, idl * xb[j]);
      y.qs[32 * (c / 4) + off + j] |= static_cast<uint8_t>((k & 3) << (2 * (c % 4)));
      y.qh[off + j] |= static_cast<uint8_t>((k >> 2) << c);
      const float q = static_cast<float>(static_cast<int>(bv[k]) * ls);
      const float wq = w[j] * q;
      sumqx = fmadd(wq, xb[j], sumqx);
      sumq2 = fmadd(wq, q, sumq2);
    }
  }
  y.d = f32_to_fp16(1.01f * (sumq2 > 0 ? sumqx / sumq2 : d));
}

template <typename Block, void (*Quantize)(const float*, const float*, Block&)>
void quantize_rows_blocks(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  RowWeights rw(imatrix, n_per_row, 16);
  const int64_t nb = n_per_row / kQK;
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; ++r) {
    const float* x = src + r * n_per_row;
    const float* w = rw.for_row(x);
    for (int64_t i = 0; i < nb; ++i) {
      Block b;
      Quantize(x + i * kQK, w ? w + i * kQK : nullptr, b);
      std::memcpy(out, &b, sizeof(b));
      out += sizeof(b);
    }
  }
}

}  // namespace

void quantize_iq2_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  quantize_rows_blocks<BlockIq2K, quantize_block_iq2_k>(src, dst, nrows, n_per_row, imatrix);
}
void quantize_iq3_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  quantize_rows_blocks<BlockIq3K, quantize_block_iq3_k>(src, dst, nrows, n_per_row, imatrix);
}

}  // namespace expertmesh::quant::iqk_k
