// Weighted scale searches of the legacy family, ported from ik_llama.cpp's ggml-quants.c
// (make_qx_quants, make_qkx3_quants, quantize_row_iq4_nl_impl) with the same search order,
// tie-breaking and floating-point operations. Where the peer's GCC build fuses a multiply into
// the following add, we call std::fma (see legacy_blocks.h); every other operation is evaluated
// exactly as written there, in float or double as there.
#include <cmath>
#include <limits>

#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"

// Bit-exactness relies on no contraction beyond the explicit std::fma calls. GCC in ISO C++ mode
// does not contract; clang would (-ffp-contract=on), so switch it off there.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace expertmesh::quant::legacy {
namespace {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS: below this a block is all zero

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Σ w x l and Σ w l² of quants l = clamp(round(iscale * x), -nmax, nmax-1); optionally stores L.
// The peer's first pass (which stores L) is a scalar loop with fused accumulations; its scan
// loop is vectorised: the products are computed in vector registers and then added in order,
// unfused.
void qx_sums(int n, int nmax, const float* x, const float* w, float iscale, int8_t* L, float* sumlx, float* suml2) {
  float slx = 0.f, sl2 = 0.f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int_of_product(iscale, x[i]), -nmax, nmax - 1);
    const float fl = static_cast<float>(l);
    if (L) {
      L[i] = static_cast<int8_t>(l + nmax);
      slx = std::fma(w[i] * x[i], fl, slx);
      sl2 = std::fma(w[i] * fl, fl, sl2);
    } else {
      slx += w[i] * x[i] * fl;
      sl2 += w[i] * fl * fl;
    }
  }
  *sumlx = slx;
  *suml2 = sl2;
}

void qx_fill(int n, int nmax, const float* x, float iscale, int8_t* L) {
  for (int i = 0; i < n; ++i)
    L[i] = static_cast<int8_t>(nmax + clamp_int(nearest_int_of_product(iscale, x[i]), -nmax, nmax - 1));
}

// a*b - c*d with the first product fused and the second rounded, and the other way round: the
// peer's build evaluates make_qkx3_quants' determinant and offset the first way, its scale the
// second way.
double fms(double a, double b, double c, double d) { return std::fma(a, b, -(c * d)); }
double fms_second(double a, double b, double c, double d) { return std::fma(-c, d, a * b); }

// Weighted least-squares score 2·s·Σwxl + 2·m·Σwx − 2·s·m·Σwl − s²·Σwl² − m²·Σw of
// scale s and offset m (larger is better), with the peer's association and fusions.
double qkx_score(double s, double m, double sum_w, double sum_x, double sum_l, double sum_l2, double sum_xl) {
  double r = std::fma(2 * s, sum_xl, 2 * m * sum_x);
  r = std::fma(-(2 * s * m), sum_l, r);
  r = std::fma(-(s * s), sum_l2, r);
  return std::fma(-(m * m), sum_w, r);
}

// Index of the IQ4_NL value nearest to x (ik's best_index_iq4nl: a 241-entry lookup over the
// integer part, entries >= 16 meaning "between value ix-16 and ix-15, compare").
int best_index_iq4nl(float x) {
  static constexpr int8_t kIndex[241] = {
      0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  16, 16, 1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,
      1,  1,  1,  1,  1,  1,  1,  1,  17, 17, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
      2,  2,  2,  18, 3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  19, 4,  4,  4,  4,
      4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  20, 5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  21, 21,
      6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  6,  22, 7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  23, 23, 8,
      8,  8,  8,  8,  8,  8,  8,  8,  8,  24, 9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  25, 10, 10, 10,
      10, 10, 10, 10, 10, 10, 10, 10, 26, 26, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 27, 27, 12,
      12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 28, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13,
      13, 13, 13, 13, 13, 13, 29, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
      14, 14, 14, 30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15};
  // Far outside the value range (or not finite): the table's answer without the undefined
  // float -> int conversion.
  if (!(x > -200.f && x < 200.f)) return x < 0.f ? 0 : 15;
  int ix = static_cast<int>(x) - kIq4nlValues[0];
  if (ix < 0 || ix >= 241) return ix < 0 ? 0 : 15;
  ix = kIndex[ix];
  if (ix < 16) return ix;
  return x - kIq4nlValues[ix - 16] < kIq4nlValues[ix - 15] - x ? ix - 16 : ix - 15;
}

// Σ w q x and Σ w q² for the IQ4_NL quants of x at inverse scale id.
void iq4nl_sums(const float* x, const float* w, float id, float* sumqx, float* sumq2) {
  float sqx = 0.f, sq2 = 0.f;
  for (int j = 0; j < kBlock; ++j) {
    const float q = kIq4nlValues[best_index_iq4nl(id * x[j])];
    const float wq = w[j] * q;
    sqx = std::fma(wq, x[j], sqx);
    sq2 = std::fma(wq, q, sq2);
  }
  *sumqx = sqx;
  *sumq2 = sq2;
}

}  // namespace

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* w) {
  float max = 0.f, amax = 0.f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  // First guess: the extreme value maps to -nmax.
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx, suml2;
  qx_sums(n, nmax, x, w, iscale, L, &sumlx, &suml2);
  float scale = suml2 != 0.f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  float best_sumlx = sumlx, best_suml2 = suml2;
  // Scan 19 scales either side: the extreme value to -nmax + 0.1·is, or to nmax-1 + 0.1·is.
  for (int is = -9; is <= 9; ++is) {
    for (int side = 0; side < 2; ++side) {
      const float target = std::fma(0.1f, static_cast<float>(is), static_cast<float>(side == 0 ? nmax : nmax - 1));
      iscale = (side == 0 ? -target : target) / max;
      qx_sums(n, nmax, x, w, iscale, nullptr, &sumlx, &suml2);
      if (suml2 > 0 && sumlx * sumlx > best * suml2) {
        qx_fill(n, nmax, x, iscale, L);
        scale = sumlx / suml2;
        best = scale * sumlx;
        best_sumlx = sumlx;
        best_suml2 = suml2;
      }
    }
  }
  // Coordinate descent: move the quant with the largest weighted-error gradient by one step
  // while the score improves.
  sumlx = best_sumlx;
  suml2 = best_suml2;
  for (int iter = 0; iter < n * (2 * nmax - 1); ++iter) {
    float abs_gmax = 0.f, gmax = 0.f;
    int best_j = -1;
    for (int j = 0; j < n; ++j) {
      const int l = L[j] - nmax;
      const float g = scale * w[j] * std::fma(-scale, static_cast<float>(l), x[j]);
      if ((g > 0 && l < nmax - 1) || (g < 0 && l > -nmax)) {
        const float ag = std::fabs(g);
        if (ag > abs_gmax) {
          abs_gmax = ag;
          gmax = g;
          best_j = j;
        }
      }
    }
    if (best_j < 0) break;
    const float wj = w[best_j];
    int l = L[best_j] - nmax;
    float new_sumlx, new_suml2;
    // w·x is common to both branches: the peer's build hoists it, so it is rounded, not fused.
    const float wx = wj * x[best_j];
    if (gmax > 0) {
      new_sumlx = sumlx + wx;
      new_suml2 = std::fma(wj, static_cast<float>(2 * l + 1), suml2);
      l += 1;
    } else {
      new_sumlx = sumlx - wx;
      new_suml2 = std::fma(-wj, static_cast<float>(2 * l - 1), suml2);
      l -= 1;
    }
    if (new_suml2 > 0 && new_sumlx * new_sumlx > best * new_suml2) {
      sumlx = new_sumlx;
      suml2 = new_suml2;
      scale = sumlx / suml2;
      best = scale * sumlx;
      L[best_j] = static_cast<int8_t>(l + nmax);
    } else {
      break;
    }
  }
  return scale;
}

float make_qkx3_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, float rmin,
                       float rdelta, int nstep) {
  float min = x[0], max = x[0];
  double sum_w = w[0];
  double sum_x = sum_w * double(x[0]);
  double sum_x2 = sum_x * double(x[0]);
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const double wx = double(w[i]) * double(x[i]);
    sum_w += double(w[i]);
    sum_x += wx;
    sum_x2 += wx * double(x[i]);  // lone loop-carried accumulation: not fused by the peer
  }
  if (min > 0) min = 0;
  if (max - min < 1e-10f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  double best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int_of_product(iscale, x[i] - min);
    L[i] = static_cast<uint8_t>(clamp_int(l, 0, nmax));
    double diff = std::fma(double(scale), double(L[i]), double(min)) - double(x[i]);
    diff = diff * diff;
    best_mad = std::fma(double(w[i]), diff, best_mad);
  }
  uint8_t Laux[256];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (std::fma(rdelta, static_cast<float>(is), rmin) + static_cast<float>(nmax)) / (max - min);
    double sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int_of_product(iscale, x[i] - min), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const double wl = double(w[i]) * l;
      sum_l += wl;
      sum_l2 = std::fma(wl, double(l), sum_l2);
      sum_xl = std::fma(wl, double(x[i]), sum_xl);
    }
    const double D = fms(sum_w, sum_l2, sum_l, sum_l);
    if (D > 0) {
      double this_scale = fms_second(sum_w, sum_xl, sum_x, sum_l) / D;
      double this_min = fms(sum_l2, sum_x, sum_l, sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      // Weighted squared error of (this_scale, this_min), expanded.
      double mad = std::fma(-(2 * this_scale), sum_xl, sum_x2);
      mad = std::fma(-(2 * this_min), sum_x, mad);
      mad = std::fma(2 * this_scale * this_min, sum_l, mad);
      mad = std::fma(this_scale * this_scale, sum_l2, mad);
      mad = std::fma(this_min * this_min, sum_w, mad);
      if (mad < best_mad) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_mad = mad;
        scale = static_cast<float>(this_scale);
        min = static_cast<float>(this_min);
      }
    }
  }
  // Coordinate descent on single quants, re-solving scale and offset after each step.
  double sum_l = 0, sum_l2 = 0, sum_xl = 0;
  for (int i = 0; i < n; ++i) {
    const int l = L[i];
    const double wl = double(w[i]) * l;
    sum_l += wl;
    sum_l2 = std::fma(wl, double(l), sum_l2);
    sum_xl = std::fma(wl, double(x[i]), sum_xl);
  }
  double best = qkx_score(scale, min, sum_w, sum_x, sum_l, sum_l2, sum_xl);
  int last_j = -1, last_dir = 0;
  for (int itry = 0; itry < nmax * n; ++itry) {
    float gmax = 0;
    int best_j = -1, dir = 0;
    for (int j = 0; j < n; ++j) {
      const float g = std::fma(-scale, static_cast<float>(L[j]), x[j]) - min;
      if (g > 0 && L[j] < nmax && g > gmax) {
        gmax = g;
        best_j = j;
        dir = 1;
      } else if (g < 0 && L[j] > 0 && -g > gmax) {
        gmax = -g;
        best_j = j;
        dir = -1;
      }
    }
    if (best_j < 0 || (best_j == last_j && dir == -last_dir)) break;
    const double wj = w[best_j];
    sum_l = std::fma(wj, double(dir), sum_l);
    sum_l2 = std::fma(wj, double(2 * L[best_j] * dir + 1), sum_l2);
    sum_xl = std::fma(wj * double(x[best_j]), double(dir), sum_xl);
    const double D = fms(sum_w, sum_l2, sum_l, sum_l);
    if (D <= 0) break;
    double this_scale = fms_second(sum_w, sum_xl, sum_x, sum_l) / D;
    double this_min = fms(sum_l2, sum_x, sum_l, sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    if (this_scale < 0) break;
    const double score = qkx_score(this_scale, this_min, sum_w, sum_x, sum_l, sum_l2, sum_xl);
    if (score <= best) break;
    best = score;
    scale = static_cast<float>(this_scale);
    min = static_cast<float>(this_min);
    L[best_j] = static_cast<uint8_t>(L[best_j] + dir);
    last_j = best_j;
    last_dir = dir;
  }
  *the_min = -min;
  return scale;
}

void quantize_iq4_nl_block(const float* x, const float* qw, uint16_t* dh, uint8_t* qs) {
  constexpr int kNtry = 7;
  const int8_t* values = kIq4nlValues;
  // sigma2 = 2·mean(x²) over the block (lone loop-carried accumulation: not fused).
  float sigma2 = 0.f;
  for (int j = 0; j < kBlock; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / kBlock;

  float weight[kBlock];
  if (qw) {
    for (int j = 0; j < kBlock; ++j) weight[j] = qw[j] * std::sqrt(std::fma(x[j], x[j], sigma2));
  } else {
    for (int j = 0; j < kBlock; ++j) weight[j] = x[j] * x[j];
  }
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < kBlock; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  float d = 0.f;
  uint8_t L[kBlock];
  if (amax >= kGroupMaxEps) {
    // First guess: the extreme value on the most negative value (-127).
    d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0.f, sumq2 = 0.f;
    for (int j = 0; j < kBlock; ++j) {
      const int l = best_index_iq4nl(id * x[j]);
      L[j] = static_cast<uint8_t>(l);
      const float q = values[l];
      const float wq = weight[j] * q;
      sumqx = std::fma(wq, x[j], sumqx);
      sumq2 = std::fma(wq, q, sumq2);
    }
    // All weights zero: the peer divides 0 by 0 here; keep the first guess instead of a NaN.
    if (sumq2 > 0) d = sumqx / sumq2;
    float best = d * sumqx;
    float best_sumqx = sumqx, best_sumq2 = sumq2;
    // Try the extreme value on the ends of the value table, shifted by itry.
    for (int itry = -kNtry; itry <= kNtry; ++itry) {
      for (int end = 0; end < 2; ++end) {
        id = static_cast<float>(itry + values[end == 0 ? 0 : 15]) / max;
        iq4nl_sums(x, weight, id, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
          best_sumqx = sumqx;
          best_sumq2 = sumq2;
          for (int j = 0; j < kBlock; ++j) L[j] = static_cast<uint8_t>(best_index_iq4nl(id * x[j]));
        }
      }
    }
    // Coordinate descent: the quant whose move to a neighbouring value needs the smallest
    // relative step, while the score improves.
    sumqx = best_sumqx;
    sumq2 = best_sumq2;
    for (int iter = 0; iter < 32 * kBlock; ++iter) {
      float min_step = std::numeric_limits<float>::infinity();
      int best_j = -1, dir = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float g = d * weight[j] * std::fma(-d, static_cast<float>(values[L[j]]), x[j]);
        if (g > 0 && L[j] < 15) {
          const float step = static_cast<float>(values[L[j] + 1] - values[L[j]]) / g;
          if (step < min_step) {
            min_step = step;
            best_j = j;
            dir = 1;
          }
        } else if (g < 0 && L[j] > 0) {
          const float step = static_cast<float>(values[L[j] - 1] - values[L[j]]) / g;
          if (step < min_step) {
            min_step = step;
            best_j = j;
            dir = -1;
          }
        }
      }
      if (best_j < 0) break;
      const float w = weight[best_j];
      const int v_old = values[L[best_j]], v_new = values[L[best_j] + dir];
      const float new_sumqx = std::fma(w * x[best_j], static_cast<float>(v_new - v_old), sumqx);
      const float new_sumq2 = std::fma(w, static_cast<float>(v_new * v_new - v_old * v_old), sumq2);
      if (new_sumq2 > 0 && new_sumqx * new_sumqx > best * new_sumq2) {
        sumqx = new_sumqx;
        sumq2 = new_sumq2;
        d = sumqx / sumq2;
        best = d * sumqx;
        L[best_j] = static_cast<uint8_t>(L[best_j] + dir);
      } else {
        break;
      }
    }
  }
  // Overflowing weights (x² beyond the float range) can leave a NaN scale: use the first guess.
  if (!std::isfinite(d)) d = max / 127.f;
  // The stored quants are re-derived from the final scale (not its fp16 rounding).
  *dh = scale_to_fp16(d);
  const float id = d != 0.f ? 1 / d : 0.f;
  for (int j = 0; j < kBlock; ++j) L[j] = static_cast<uint8_t>(best_index_iq4nl(id * x[j]));
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
}

}  // namespace expertmesh::quant::legacy
