// Scale searches of the k-quants, ports of ggml-quants.c (make_qx_quants, make_q3_quants,
// make_qkx2_quants, make_qkx3_quants, make_qp_quants) with the peer's exact float arithmetic:
// see kquants.h for why some products are std::fma and others are not. Comments "fused" mark
// the peer's contracted operations; loops marked "in order, unfused" are the ones its compiler
// vectorized (products rounded, then summed left to right).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant/kquants.h"

namespace expertmesh::quant::kq {

namespace {
constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS
}  // namespace

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  auto clamp_l = [&](int l) { return std::max(-nmax, std::min(nmax - 1, l)); };

  float iscale = -static_cast<float>(nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = clamp_l(nearest_int_fma(iscale, x[i]));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    const float fl = static_cast<float>(l);
    sumlx = std::fma(w * x[i], fl, sumlx);  // fused
    suml2 = std::fma(w * fl, fl, suml2);    // fused
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  float best_sumlx = sumlx, best_suml2 = suml2;

  // Tries scales around ±nmax/max; the candidate sums are in order, unfused.
  auto try_scale = [&](float is_scale) {
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; ++i) {
      const float fl = static_cast<float>(clamp_l(nearest_int_fma(is_scale, x[i])));
      const float w = weight(i);
      const float tx = (w * x[i]) * fl;
      const float t2 = (w * fl) * fl;
      slx += tx;
      sl2 += t2;
    }
    if (sl2 > 0 && slx * slx > best * sl2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + clamp_l(nearest_int_fma(is_scale, x[i])));
      scale = slx / sl2;
      best = scale * slx;
      best_sumlx = slx;
      best_suml2 = sl2;
    }
  };
  for (int is = -9; is <= 9; ++is) {
    const float step = static_cast<float>(is) * 0.1f;
    try_scale(-(step + static_cast<float>(nmax)) / max);
    try_scale((step + static_cast<float>(nmax - 1)) / max);
  }

  // Coordinate descent on single quants along the largest weighted gradient.
  sumlx = best_sumlx;
  suml2 = best_suml2;
  for (int iter = 0; iter < n * (2 * nmax - 1); ++iter) {
    float abs_gmax = 0, gmax = 0;
    int best_j = -1;
    for (int j = 0; j < n; ++j) {
      const float w = weight(j);
      const int l = L[j] - nmax;
      const float g = (scale * w) * std::fma(-scale, static_cast<float>(l), x[j]);  // x - scale*l fused
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
    const float w = weight(best_j);
    int l = L[best_j] - nmax;
    const float wx = w * x[best_j];
    float new_sumlx, new_suml2;
    if (gmax > 0) {
      new_sumlx = sumlx + wx;
      new_suml2 = std::fma(w, static_cast<float>(2 * l + 1), suml2);  // fused
      l += 1;
    } else {
      new_sumlx = sumlx - wx;
      new_suml2 = std::fma(-w, static_cast<float>(2 * l - 1), suml2);  // fused
      l -= 1;
    }
    if (new_suml2 > 0 && new_sumlx * new_sumlx > best * new_suml2) {
      sumlx = new_sumlx;
      suml2 = new_suml2;
      scale = sumlx / suml2;
      best = sumlx * scale;
      L[best_j] = static_cast<int8_t>(l + nmax);
    } else {
      break;
    }
  }
  return scale;
}

float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  const float iscale = -static_cast<float>(nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = std::max(-nmax, std::min(nmax - 1, nearest_int_fma(iscale, x[i])));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    const float fl = static_cast<float>(l);
    sumlx = std::fma(w * x[i], fl, sumlx);  // fused
    suml2 = std::fma(w * fl, fl, suml2);    // fused
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      const float wx = w * x[i];
      const float li = static_cast<float>(L[i]);
      float slx = std::fma(-wx, li, sumlx);  // fused
      if (slx > 0) {
        float sl2 = std::fma(-(w * li), li, suml2);  // fused
        int new_l = nearest_int((x[i] * sl2) / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          const float fl = static_cast<float>(new_l);
          slx = std::fma(wx, fl, slx);        // fused
          sl2 = std::fma(w * fl, fl, sl2);    // fused
          if (sl2 > 0 && (slx * slx) * suml2 > (sumlx * sumlx) * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return sumlx / suml2;
}

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad, bool fused_sum_x) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    if (fused_sum_x) {
      sum_x = std::fma(w, x[i], sum_x);
    } else {
      const float wx = w * x[i];
      sum_x += wx;
    }
  }
  if (min > 0) min = 0;
  if (max - min < 1e-10f) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.f;
  }
  auto err = [&](float d) { return use_mad ? std::fabs(d) : d * d; };
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int_fma(iscale, x[i] - min);
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = std::fma(scale, static_cast<float>(L[i]), min) - x[i];  // fused
    best_mad = std::fma(err(diff), weights[i], best_mad);                       // fused
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (std::fma(static_cast<float>(is), rdelta, rmin) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = std::max(0, std::min(nmax, nearest_int_fma(iscale, x[i] - min)));
      Laux[i] = static_cast<uint8_t>(l);
      const float fl = static_cast<float>(l);
      const float wl = weights[i] * fl;  // used thrice, so the peer rounds it
      sum_l += wl;
      sum_l2 = std::fma(fl, wl, sum_l2);    // fused
      sum_xl = std::fma(x[i], wl, sum_xl);  // fused
    }
    const float D = std::fma(sum_l2, sum_w, -(sum_l * sum_l));
    if (D > 0) {
      float this_scale = std::fma(-sum_l, sum_x, sum_xl * sum_w) / D;
      float this_min = std::fma(sum_l2, sum_x, -(sum_l * sum_xl)) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = std::fma(static_cast<float>(Laux[i]), this_scale, this_min) - x[i];  // fused
        mad = std::fma(err(diff), weights[i], mad);                                             // fused
      }
      if (mad < best_mad) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_mad = mad;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool fused_sum_x2) {
  float min = x[0], max = x[0];
  double sum_w = weights[0];
  double sum_x = sum_w * double(x[0]);
  double sum_x2 = sum_x * double(x[0]);
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const double w = weights[i], xd = x[i];
    sum_w += w;
    const double wx = xd * w;
    sum_x += wx;
    if (fused_sum_x2) {
      sum_x2 = std::fma(xd, wx, sum_x2);
    } else {
      const double wx2 = wx * xd;
      sum_x2 += wx2;
    }
  }
  if (min > 0) min = 0;
  if (max - min < 1e-10f) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  double best_mad = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int_fma(iscale, x[i] - min);
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const double diff = std::fma(double(L[i]), double(scale), double(min)) - double(x[i]);  // fused
    best_mad = std::fma(diff * diff, double(weights[i]), best_mad);                        // fused
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  // Σw(x - s·l - m)² expanded; the peer's evaluation order and fusions.
  auto score_of = [&](double s, double m, double sl, double sl2, double sxl) {
    const double s2 = s * 2;
    double a = std::fma(sxl, s2, (m * 2) * sum_x);
    a = std::fma(-sl, s2 * m, a);
    a = std::fma(-sl2, s * s, a);
    return std::fma(-(m * m), sum_w, a);
  };
  for (int is = 0; is <= nstep; ++is) {
    iscale = (static_cast<float>(nmax) + std::fma(static_cast<float>(is), rdelta, rmin)) / (max - min);
    double sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = std::max(0, std::min(nmax, nearest_int_fma(iscale, x[i] - min)));
      Laux[i] = static_cast<uint8_t>(l);
      const double dl = l;
      const double wl = double(weights[i]) * dl;
      sum_l += wl;
      sum_l2 = std::fma(dl, wl, sum_l2);         // fused
      sum_xl = std::fma(wl, double(x[i]), sum_xl);  // fused
    }
    const double D = std::fma(sum_l2, sum_w, -(sum_l * sum_l));
    if (D > 0) {
      double this_scale = std::fma(-sum_l, sum_x, sum_xl * sum_w) / D;
      double this_min = std::fma(sum_l2, sum_x, -(sum_l * sum_xl)) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      // mad = Σx² - 2s·Σxl - 2m·Σx + 2sm·Σl + s²·Σl² + m²·Σw
      const double ts2 = this_scale * 2;
      double mad = std::fma(-sum_xl, ts2, sum_x2);
      mad = std::fma(-sum_x, this_min * 2, mad);
      mad = std::fma(sum_l, this_min * ts2, mad);
      mad = std::fma(sum_l2, this_scale * this_scale, mad);
      mad = std::fma(sum_w, this_min * this_min, mad);
      if (mad < best_mad) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_mad = mad;
        scale = static_cast<float>(this_scale);
        min = static_cast<float>(this_min);
      }
    }
  }

  // Coordinate descent: move single quants by ±1 while the exact weighted error improves.
  double sum_l = 0, sum_l2 = 0, sum_xl = 0;
  for (int i = 0; i < n; ++i) {
    const double dl = L[i];
    const double wl = double(weights[i]) * dl;
    sum_l += wl;
    sum_l2 = std::fma(dl, wl, sum_l2);
    sum_xl = std::fma(wl, double(x[i]), sum_xl);
  }
  double best = score_of(scale, min, sum_l, sum_l2, sum_xl);
  int last_j = -1, last_dir = 0;
  for (int itry = 0; itry < nmax * n; ++itry) {
    float gmax = 0;
    int best_j = -1, dir = 0;
    for (int j = 0; j < n; ++j) {
      const float g = std::fma(-static_cast<float>(L[j]), scale, x[j]) - min;  // x - scale*L fused
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
    const double w = weights[best_j];
    const double ddir = dir;
    sum_l = std::fma(w, ddir, sum_l);
    sum_l2 = std::fma(w, double(2 * L[best_j] * dir + 1), sum_l2);
    sum_xl = std::fma(ddir, w * double(x[best_j]), sum_xl);
    const double D = std::fma(sum_l2, sum_w, -(sum_l * sum_l));
    if (D <= 0) break;
    double this_scale = std::fma(-sum_l, sum_x, sum_xl * sum_w) / D;
    double this_min = std::fma(sum_l2, sum_x, -(sum_l * sum_xl)) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    if (this_scale < 0) break;
    const double score = score_of(this_scale, this_min, sum_l, sum_l2, sum_xl);
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

float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < 1e-16f) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int_fma(iscale, x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = std::fma(-scale, static_cast<float>(L[i]), x[i]);  // fused
    const float w = quant_weights[i];
    best_mse = std::fma(w * diff, diff, best_mse);  // fused
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = std::fma(static_cast<float>(is), 0.1f, static_cast<float>(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int_fma(iscale_is, x[i]));
      const float diff = std::fma(-scale_is, static_cast<float>(l), x[i]);
      mse = std::fma(quant_weights[i] * diff, diff, mse);
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int_fma(iscale, x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    const float fl = static_cast<float>(l);
    sumlx = std::fma(w * x[i], fl, sumlx);
    suml2 = std::fma(w * fl, fl, suml2);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      const float wx = w * x[i];
      const float li = static_cast<float>(L[i]);
      float slx = std::fma(-wx, li, sumlx);
      float sl2 = std::fma(-(w * li), li, suml2);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int((x[i] * sl2) / slx));
        if (new_l != L[i]) {
          const float fl = static_cast<float>(new_l);
          slx = std::fma(wx, fl, slx);
          sl2 = std::fma(w * fl, fl, sl2);
          if ((slx * slx) * suml2 > (sumlx * sumlx) * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return sumlx / suml2;
}

}  // namespace expertmesh::quant::kq
