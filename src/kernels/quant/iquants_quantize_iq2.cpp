// Quantizers of IQ2_XXS, IQ2_XS and IQ2_S (E8-lattice grids of magnitudes {1, 3, 5} x scale):
// faithful ports of the peer's quantize_row_iq2_xxs_impl, quantize_row_iq2_xs_impl and
// quantize_row_iq2_s_impl (ggml-quants.c), with make_qp_quants, in the same float operation
// order and with the same tie-breaking, so the output bytes are the peer's.
//
// Where the peer keeps search state in buffers that outlive one block (L, the last accepted
// candidate, is reused when no candidate of a later block improves on zero, which needs all
// weights of that block to vanish), the state here lives for one row: deterministic for any
// split of rows across threads, and identical to the peer for every block whose weights are not
// all zero.
#include <algorithm>
#include <cmath>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iquants_internal.h"

// Our float arithmetic must not be fused behind our back: every fusion the peer's build makes is
// spelled out with fmadd (iquants_internal.h). GCC does not contract in ISO C++ mode; clang would.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace expertmesh::quant::iq {
namespace {

constexpr float kGroupMaxEps = 1e-15f;     // GROUP_MAX_EPS
constexpr float kGroupMaxEpsIq2s = 1e-8f;  // GROUP_MAX_EPS_IQ2_S
constexpr int kMaxQ = 3;                   // l in {0, 1, 2}: magnitudes 1, 3, 5

// Weights of a block: imatrix * sqrt(sigma2 + x^2), or sigma2/4 + x^2 without an imatrix.
void block_weights(const float* xb, const float* qw, float sigma2, float* weight, int n) {
  if (qw) {
    for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(fmadd(xb[i], xb[i], sigma2));
  } else {
    for (int i = 0; i < n; ++i) weight[i] = fmadd(xb[i], xb[i], 0.25f * sigma2);
  }
}

// The peer's make_qp_quants: x onto l in [0, nmax] with the best weighted scale. L is uint8_t as
// in the peer: IQ2_XXS passes values with one possibly negative element per group of 8 (the
// sign-parity flip), whose negative l wraps to 255.. when stored and is read back that way.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* w) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = peer_max(max, x[i]);
  if (max < 1e-16f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int_fma(iscale, x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = fmadd(-scale, static_cast<float>(L[i]), x[i]);
    best_mse = fmadd(w[i] * diff, diff, best_mse);
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = fmadd(0.1f, static_cast<float>(is), static_cast<float>(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int_fma(iscale_is, x[i]));
      const float diff = fmadd(-scale_is, static_cast<float>(l), x[i]);
      mse = fmadd(w[i] * diff, diff, mse);
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
    sumlx = fmadd(w[i] * x[i], static_cast<float>(l), sumlx);
    suml2 = fmadd(w[i] * static_cast<float>(l), static_cast<float>(l), suml2);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float li = static_cast<float>(L[i]);
      float slx = fmadd(-(w[i] * x[i]), li, sumlx);
      float sl2 = fmadd(-(w[i] * li), li, suml2);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx = fmadd(w[i] * x[i], static_cast<float>(new_l), slx);
          sl2 = fmadd(w[i] * static_cast<float>(new_l), static_cast<float>(new_l), sl2);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
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

// Snaps 8 values to l = round((x/s - 1)/2) in [0, 2] (id = 1/s); an off-grid result is replaced
// by its best neighbour under `scale`. Writes L, returns the grid index.
int snap_group(const Lattice& lat, const float* xval, const float* waux, float id, float scale, int8_t* L,
               bool* on_grid) {
  int u = 0;
  for (int i = 0; i < 8; ++i) {
    int l = nearest_int_fma(0.5f, fmadd(id, xval[i], -1.f));
    l = std::max(0, std::min(kMaxQ - 1, l));
    L[i] = static_cast<int8_t>(l);
    u |= l << (2 * i);
  }
  *on_grid = lat.on_grid(u);
  if (*on_grid) return lat.map[u];
  return best_neighbour(lat, u, xval, waux, scale, L);
}

void weighted_sums(const float* weight, const float* xval, const int8_t* L, int n, float* sumqx, float* sumq2) {
  float sx = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const float w = weight[i];
    const float q = static_cast<float>(2 * L[i] + 1);
    sx = fmadd(w * xval[i], q, sx);
    s2 = fmadd(w * q, q, s2);
  }
  *sumqx = sx;
  *sumq2 = s2;
}

int grid_index_of(const Lattice& lat, const int8_t* L) {
  int u = 0;
  for (int i = 0; i < 8; ++i) u |= (L[i] & 3) << (2 * i);
  const int gi = lat.map[u];
  return gi >= 0 ? gi : 0;  // L comes from a grid point; the peer aborts otherwise
}

void load_grid_l(const Lattice& lat, int gi, int8_t* L) {
  const int8_t* pg = lat.point(gi);
  for (int i = 0; i < 8; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
}

// ---- IQ2_XXS: 32-weight blocks, 4-bit scales, 8-bit grid indices ---------------------------

void quantize_row_iq2_xxs(const float* x, BlockIq2xxs* y, int64_t nblocks, const float* quant_weights) {
  const Lattice& lat = iq2xxs_lattice();
  float scales[8], weight[32], xval[32], waux[32];
  int8_t L[32] = {}, Laux[32];
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq2xxs out{};
    uint32_t q2[16] = {};
    const float* xbl = x + kSuperBlock * ibl;
    const float sigma2 = sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      block_weights(xb, quant_weights ? quant_weights + kSuperBlock * ibl + 32 * ib : nullptr, sigma2, weight, 32);
      for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
      uint8_t block_signs[4];
      for (int k = 0; k < 4; ++k) block_signs[k] = abs_with_even_signs(xb + 8 * k, weight + 8 * k, xval + 8 * k);
      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = peer_max(max, xval[i]);
      if (max < kGroupMaxEps) {
        scales[ib] = 0;
        std::memset(L, 0, sizeof(L));
        continue;
      }
      float scale = make_qp_quants(32, kMaxQ + 1, xval, reinterpret_cast<uint8_t*>(L), weight);
      const float eff_max = scale * kMaxQ;
      float best = 0;
      for (int is = -6; is <= 6; ++is) {
        const float id = fmadd(static_cast<float>(is), 0.1f, 2 * kMaxQ - 1) / eff_max;
        const float this_scale = 1 / id;
        bool on_grid;
        for (int k = 0; k < 4; ++k) snap_group(lat, xval + 8 * k, waux + 8 * k, id, this_scale, Laux + 8 * k, &on_grid);
        float sumqx, sumq2;
        weighted_sums(weight, xval, Laux, 32, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::memcpy(L, Laux, 32);
        }
      }
      if (scale > 0) {
        const float id = 1 / scale;
        bool on_grid;
        for (int k = 0; k < 4; ++k) {
          const int gi = snap_group(lat, xval + 8 * k, waux + 8 * k, id, scale, L + 8 * k, &on_grid);
          load_grid_l(lat, gi, L + 8 * k);
        }
        float sumqx, sumq2;
        weighted_sums(weight, xval, L, 32, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
      }
      if (scale < 0) {  // cannot happen; the peer flips scale and signs just in case
        scale = -scale;
        for (int k = 0; k < 4; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k] & 127);
      }
      if (std::isnan(scale)) scale = 0;  // all-zero weights (the peer writes NaN or aborts)
      for (int k = 0; k < 4; ++k) {
        q2[2 * ib + 0] |= static_cast<uint32_t>(grid_index_of(lat, L + 8 * k)) << (8 * k);
        q2[2 * ib + 1] |= static_cast<uint32_t>(block_signs[k]) << (7 * k);
      }
      scales[ib] = scale;
      max_scale = peer_max(max_scale, scale);
    }
    if (max_scale != 0) {
      const float d = max_scale / 31;
      out.d = iq_scale_to_fp16(d);
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ++ib) {
        const int l = std::max(0, std::min(15, nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f))));
        q2[2 * ib + 1] |= static_cast<uint32_t>(l) << 28;
      }
      std::memcpy(out.qs, q2, sizeof(q2));
    }
    y[ibl] = out;
  }
}

// ---- IQ2_XS: 16-weight blocks, 9-bit grid indices with 7 sign bits, refit super-scale --------

void quantize_row_iq2_xs(const float* x, BlockIq2xs* y, int64_t nblocks, const float* quant_weights) {
  const Lattice& lat = iq2xs_lattice();
  float scales[16], weight[16], xval[16], waux[16];
  int8_t L[16] = {}, Laux[16];
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq2xs out{};
    uint16_t q2[32] = {};
    const float* xbl = x + kSuperBlock * ibl;
    const float* qwbl = quant_weights ? quant_weights + kSuperBlock * ibl : nullptr;
    const float sigma2 = sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = xbl + 16 * ib;
      block_weights(xb, qwbl ? qwbl + 16 * ib : nullptr, sigma2, weight, 16);
      for (int i = 0; i < 16; ++i) waux[i] = std::sqrt(weight[i]);
      uint8_t block_signs[2];
      for (int k = 0; k < 2; ++k) block_signs[k] = abs_with_even_signs(xb + 8 * k, weight + 8 * k, xval + 8 * k);
      float max = xval[0];
      for (int i = 1; i < 16; ++i) max = peer_max(max, xval[i]);
      if (max < kGroupMaxEps) {
        scales[ib] = 0;
        std::memset(L, 0, sizeof(L));
        continue;
      }
      // Exact best split of the sorted values into magnitudes 1 / 3 / 5 gives the start scale.
      // The peer sorts with qsort (glibc: a stable merge sort) on the value alone.
      int order[16];
      for (int j = 0; j < 16; ++j) order[j] = j;
      std::stable_sort(order, order + 16, [&](int a, int b) { return xval[a] < xval[b]; });
      float sumx[17], sumw[17];
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < 16; ++j) {
        const int i = order[j];
        sumx[j + 1] = fmadd(weight[i], xval[i], sumx[j]);
        sumw[j + 1] = sumw[j] + weight[i];
      }
      float best = 0, scale = 0;
      for (int i1 = 0; i1 <= 16; ++i1) {
        for (int i2 = i1; i2 <= 16; ++i2) {
          const float sumqx = fmadd(sumx[16] - sumx[i2], 5.f, fmadd(sumx[i2] - sumx[i1], 3.f, sumx[i1] - sumx[0]));
          const float sumq2 = fmadd(sumw[16] - sumw[i2], 25.f, fmadd(sumw[i2] - sumw[i1], 9.f, sumw[i1] - sumw[0]));
          if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
          }
        }
      }
      best = 0;
      const float eff_max = scale * (2 * kMaxQ - 1);
      int index[2] = {0, 0}, aux_index[2];
      for (int is = -7; is <= 7; ++is) {
        const float id = fmadd(static_cast<float>(is), 0.1f, 2 * kMaxQ - 1) / eff_max;
        const float this_scale = 1 / id;
        bool on_grid;
        for (int k = 0; k < 2; ++k)
          aux_index[k] = snap_group(lat, xval + 8 * k, waux + 8 * k, id, this_scale, Laux + 8 * k, &on_grid);
        float sumqx, sumq2;
        weighted_sums(weight, xval, Laux, 16, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::memcpy(L, Laux, 16);
          index[0] = aux_index[0];
          index[1] = aux_index[1];
        }
      }
      if (scale != 0) {  // up to 3 refits while the chosen grid points change and the fit improves
        for (int iter = 0; iter < 3; ++iter) {
          const float id = 1 / scale;
          bool changed = false, on_grid;
          for (int k = 0; k < 2; ++k) {
            aux_index[k] = snap_group(lat, xval + 8 * k, waux + 8 * k, id, scale, Laux + 8 * k, &on_grid);
            if (aux_index[k] != index[k]) changed = true;
          }
          if (!changed) break;
          float sumqx, sumq2;
          weighted_sums(weight, xval, Laux, 16, &sumqx, &sumq2);
          if (!(sumq2 > 0 && sumqx * sumqx > best * sumq2)) break;
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::memcpy(L, Laux, 16);
          index[0] = aux_index[0];
          index[1] = aux_index[1];
        }
      }
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k] & 127);
      }
      if (std::isnan(scale)) scale = 0;
      for (int k = 0; k < 2; ++k)
        q2[2 * ib + k] = static_cast<uint16_t>(grid_index_of(lat, L + 8 * k) | (block_signs[k] << 9));
      scales[ib] = scale;
      max_scale = peer_max(max_scale, scale);
    }
    if (max_scale == 0) {
      y[ibl] = out;
      continue;
    }
    // 4-bit block scales against d = max/31, then the super-block scale is refit to the
    // dequantized values (times the peer's 1.05 fudge factor).
    const float d = max_scale / 31;
    out.d = iq_scale_to_fp16(d);
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < 16; ++ib) {
      int l = std::max(0, std::min(15, nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f))));
      if (ib % 2 == 0) {
        out.scales[ib / 2] = static_cast<uint8_t>(l);
      } else {
        out.scales[ib / 2] = static_cast<uint8_t>(out.scales[ib / 2] | (l << 4));
      }
      l = 2 * l + 1;
      const float* xb = xbl + 16 * ib;
      block_weights(xb, qwbl ? qwbl + 16 * ib : nullptr, sigma2, weight, 16);
      for (int k = 0; k < 2; ++k) {
        const uint64_t grid = kIq2xsGrid[q2[2 * ib + k] & 511];
        const uint8_t signs = kSignsIq2xs[q2[2 * ib + k] >> 9];
        for (int j = 0; j < 8; ++j) {
          const float w = weight[8 * k + j];
          const float q = 0.125f * static_cast<float>(l) * static_cast<float>(grid_byte(grid, j)) *
                          ((signs & kMaskIq2xs[j]) ? -1.f : 1.f);
          sumqx = fmadd(w * q, xb[8 * k + j], sumqx);
          sumq2 = fmadd(w * q, q, sumq2);
        }
      }
    }
    std::memcpy(out.qs, q2, sizeof(q2));
    if (sumq2 > 0) out.d = iq_scale_to_fp16(1.05f * sumqx / sumq2);
    y[ibl] = out;
  }
}

// ---- IQ2_S: 16-weight blocks, 10-bit grid indices, 8 explicit sign bits ---------------------

void quantize_row_iq2_s(const float* x, BlockIq2s* y, int64_t nblocks, const float* quant_weights) {
  const Lattice& lat = iq2s_lattice();
  float scales[16], weight[16], xval[16], waux[16];
  int8_t L[16] = {}, Laux[16];
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq2s out{};
    const float* xbl = x + kSuperBlock * ibl;
    const float sigma2 = 2 * sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = xbl + 16 * ib;
      block_weights(xb, quant_weights ? quant_weights + kSuperBlock * ibl + 16 * ib : nullptr, sigma2, weight, 16);
      for (int i = 0; i < 16; ++i) waux[i] = std::sqrt(weight[i]);
      uint8_t block_signs[2];
      for (int k = 0; k < 2; ++k) {
        unsigned s = 0;
        for (int i = 0; i < 8; ++i) {
          const float v = xb[8 * k + i];
          xval[8 * k + i] = v >= 0 ? v : -v;
          if (!(v >= 0)) s |= 1u << i;
        }
        block_signs[k] = static_cast<uint8_t>(s);
      }
      float max = xval[0];
      for (int i = 1; i < 16; ++i) max = peer_max(max, xval[i]);
      if (max < kGroupMaxEpsIq2s) {
        scales[ib] = 0;
        continue;
      }
      float best = 0;
      float scale = max / (2 * kMaxQ - 1);
      bool is_on_grid[2] = {true, true}, on_grid_aux[2];
      for (int is = -9; is <= 9; ++is) {
        const float id = fmadd(static_cast<float>(is), 0.1f, 2 * kMaxQ - 1) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 2; ++k)
          snap_group(lat, xval + 8 * k, waux + 8 * k, id, this_scale, Laux + 8 * k, &on_grid_aux[k]);
        float sumqx, sumq2;
        weighted_sums(weight, xval, Laux, 16, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::memcpy(L, Laux, 16);
          is_on_grid[0] = on_grid_aux[0];
          is_on_grid[1] = on_grid_aux[1];
        }
      }
      if ((!is_on_grid[0] || !is_on_grid[1]) && scale > 0) {
        const float id = 1 / scale;
        bool on_grid;
        for (int k = 0; k < 2; ++k) {
          if (is_on_grid[k]) continue;
          snap_group(lat, xval + 8 * k, waux + 8 * k, id, scale, L + 8 * k, &on_grid);
        }
        float sumqx, sumq2;
        weighted_sums(weight, xval, L, 16, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
      }
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k]);
      }
      if (std::isnan(scale)) scale = 0;
      for (int k = 0; k < 2; ++k) {
        const int gi = grid_index_of(lat, L + 8 * k);
        const int i8 = 2 * ib + k;
        out.qs[i8] = static_cast<uint8_t>(gi & 255);
        out.qh[i8 / 4] = static_cast<uint8_t>(out.qh[i8 / 4] | ((gi >> 8) << (2 * (i8 % 4))));
        out.qs[kSuperBlock / 8 + i8] = block_signs[k];
      }
      scales[ib] = scale;
      max_scale = peer_max(max_scale, scale);
    }
    if (max_scale != 0) {
      const float d = max_scale / 31;
      out.d = iq_scale_to_fp16(d * 0.9875f);  // the peer's fudge factor
      const float id = 1 / d;
      for (int ib = 0; ib < 16; ++ib) {
        const int l = std::max(0, std::min(15, nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f))));
        if (ib % 2 == 0) {
          out.scales[ib / 2] = static_cast<uint8_t>(l);
        } else {
          out.scales[ib / 2] = static_cast<uint8_t>(out.scales[ib / 2] | (l << 4));
        }
      }
    }
    y[ibl] = out;
  }
}

}  // namespace

void quantize_iq2_xxs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq2xxs>(src, dst, nrows, n_per_row, [&](const float* x, BlockIq2xxs* y, int64_t nb) {
    quantize_row_iq2_xxs(x, y, nb, imatrix);
  });
}

void quantize_iq2_xs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq2xs>(src, dst, nrows, n_per_row,
                           [&](const float* x, BlockIq2xs* y, int64_t nb) { quantize_row_iq2_xs(x, y, nb, imatrix); });
}

void quantize_iq2_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq2s>(src, dst, nrows, n_per_row,
                          [&](const float* x, BlockIq2s* y, int64_t nb) { quantize_row_iq2_s(x, y, nb, imatrix); });
}

}  // namespace expertmesh::quant::iq
