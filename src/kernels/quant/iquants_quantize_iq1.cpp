// Quantizers of IQ1_S and IQ1_M (ternary grid {-1, 0, +1} + a shared +-1/8 shift): faithful ports
// of the peer's quantize_row_iq1_s_impl / iq1s_process_1block and quantize_row_iq1_m_impl /
// iq1m_process_1block (ggml-quants.c), with iq1_find_best_neighbour2, in the same float
// operation order and with the same tie-breaking, so the output bytes are the peer's.
#include <algorithm>
#include <cfloat>
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

constexpr float kGroupMaxEpsIq1s = 1e-12f;  // GROUP_MAX_EPS_IQ1_S
constexpr float kGroupMaxEpsIq1m = 1e-7f;   // GROUP_MAX_EPS_IQ1_M

// Dequantized ternary levels l = 0, 1, 2 with the delta added (shift +1) or subtracted (-1).
constexpr float kXp[3] = {-1 + kIq1sDelta, kIq1sDelta, 1 + kIq1sDelta};
constexpr float kXm[3] = {-1 - kIq1sDelta, -kIq1sDelta, 1 - kIq1sDelta};

// Order of a block's values, ascending; the peer sorts (value, index) pairs with qsort on the
// value alone (glibc: a stable merge sort), so equal values keep their index order.
template <int N>
void sorted_order(const float* xb, int* order) {
  for (int j = 0; j < N; ++j) order[j] = j;
  std::stable_sort(order, order + N, [&](int a, int b) { return xb[a] < xb[b]; });
}

// The peer's iq1_find_best_neighbour2: the neighbour of off-grid u with the least weighted
// squared error of scale * xg[l] against xb. Writes L, returns the grid index.
int best_neighbour_iq1(const Lattice& lat, int u, const float* xb, const float* weight, float scale, const float* xg,
                       int8_t* L) {
  auto error = [&](int gi) {
    const int8_t* pg = lat.point(gi);
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float q = xg[(pg[i] - 1) / 2];
      const float diff = fmadd(scale, q, -xb[i]);
      d2 = fmadd(weight[i] * diff, diff, d2);
    }
    return d2;
  };
  const uint16_t* nb = lat.neighbours_of(u);
  float best = FLT_MAX;
  int grid_index = -1;
  for (int j = 1; j <= nb[0]; ++j) {
    const float d2 = error(nb[j]);
    if (d2 < best) {
      best = d2;
      grid_index = nb[j];
    }
  }
  if (grid_index < 0) {  // only with non-finite errors: search the whole grid, as the peer does
    const int ngrid = static_cast<int>(lat.points.size()) / lat.dim;
    for (int gi = 0; gi < ngrid; ++gi) {
      const float d2 = error(gi);
      if (d2 < best) {
        best = d2;
        grid_index = gi;
      }
    }
    if (grid_index < 0) grid_index = nb[1];
  }
  const int8_t* pg = lat.point(grid_index);
  for (int i = 0; i < 8; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
  return grid_index;
}

int ternary_u(const int8_t* L) {
  int u = 0;
  for (int j = 0; j < 8; ++j) u |= L[j] << (2 * j);
  return u;
}

}  // namespace

// ---- IQ1_S: 32-weight blocks, one shift and 3-bit scale per block ----------------------------

// iq1s_process_1block: exact best split of the sorted block into levels 0 / 1 / 2 for both
// shifts, then grid snapping. Writes 4 grid indices; returns the scale, sets *shift to +-1.
float process_block_iq1_s(const Lattice& lat, const float* xb, const float* weight, uint16_t* index, int* shift) {
  constexpr int kBlock = 32;
  float max = std::fabs(xb[0]);
  for (int i = 1; i < kBlock; ++i) max = peer_max(max, std::fabs(xb[i]));
  if (max < kGroupMaxEpsIq1s) {
    *shift = 1;
    for (int k = 0; k < kBlock / 8; ++k) index[k] = 0;
    return 0;
  }
  int order[kBlock];
  sorted_order<kBlock>(xb, order);
  float sumx[kBlock + 1], sumw[kBlock + 1];
  sumx[0] = sumw[0] = 0;
  for (int j = 0; j < kBlock; ++j) {
    const int i = order[j];
    sumx[j + 1] = fmadd(weight[i], xb[i], sumx[j]);
    sumw[j + 1] = sumw[j] + weight[i];
  }
  float best_score = -FLT_MIN, scale = max;
  int besti1 = -1, besti2 = -1, best_shift = 0;
  for (int i1 = 0; i1 <= kBlock; ++i1) {
    for (int i2 = i1; i2 <= kBlock; ++i2) {
      for (int s : {1, -1}) {
        const float* xx = s == 1 ? kXp : kXm;
        // The peer's build fuses only the last product of each sum.
        const float sumqx =
            fmadd(sumx[kBlock] - sumx[i2], xx[2], (sumx[i1] - sumx[0]) * xx[0] + (sumx[i2] - sumx[i1]) * xx[1]);
        const float sumq2 = fmadd((sumw[kBlock] - sumw[i2]) * xx[2], xx[2],
                                  (sumw[i1] - sumw[0]) * xx[0] * xx[0] + (sumw[i2] - sumw[i1]) * xx[1] * xx[1]);
        if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
          scale = sumqx / sumq2;
          best_score = scale * sumqx;
          besti1 = i1;
          besti2 = i2;
          best_shift = s;
        }
      }
    }
  }
  if (besti1 < 0) {  // all weights zero (the peer asserts): an empty block
    *shift = 1;
    for (int k = 0; k < kBlock / 8; ++k) index[k] = 0;
    return 0;
  }
  int8_t L[kBlock];
  for (int j = 0; j < kBlock; ++j) L[order[j]] = static_cast<int8_t>(j < besti1 ? 0 : j < besti2 ? 1 : 2);
  if (scale < 0) {
    for (int j = 0; j < kBlock; ++j) L[j] = static_cast<int8_t>(2 - L[j]);
    scale = -scale;
    best_shift = -best_shift;
  }
  const float* xx = best_shift == 1 ? kXp : kXm;
  bool all_on_grid = true;
  for (int k = 0; k < kBlock / 8; ++k) {
    const int u = ternary_u(L + 8 * k);
    int gi = lat.map[u];
    if (gi < 0) {
      all_on_grid = false;
      gi = best_neighbour_iq1(lat, u, xb + 8 * k, weight + 8 * k, scale, xx, L + 8 * k);
    }
    index[k] = static_cast<uint16_t>(gi);
  }
  if (!all_on_grid) {
    float sumqx = 0, sumq2 = 0;
    for (int k = 0; k < kBlock / 8; ++k) {
      const int8_t* pg = lat.point(index[k]);
      for (int j = 0; j < 8; ++j) {
        const float w = weight[8 * k + j];
        const float q = xx[(pg[j] - 1) / 2];
        sumqx = fmadd(w * q, xb[8 * k + j], sumqx);
        sumq2 = fmadd(w * q, q, sumq2);
      }
    }
    if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
  }
  *shift = best_shift;
  return scale;
}

namespace {

void quantize_row_iq1_s(const float* x, BlockIq1s* y, int64_t nblocks, const float* quant_weights) {
  constexpr int kBlock = 32;
  const Lattice& lat = iq1s_lattice();
  float scales[kSuperBlock / kBlock], weight[kBlock];
  int shifts[kSuperBlock / kBlock];
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq1s out{};
    const float* xbl = x + kSuperBlock * ibl;
    const float sigma2 = 2 * sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + kBlock * ib;
      // Without an imatrix the peer's reference path uses weights of 1.
      for (int i = 0; i < kBlock; ++i) {
        const float qw = quant_weights ? quant_weights[kSuperBlock * ibl + kBlock * ib + i] : 1.f;
        weight[i] = qw * std::sqrt(fmadd(xb[i], xb[i], sigma2));
      }
      uint16_t index[kBlock / 8];
      scales[ib] = process_block_iq1_s(lat, xb, weight, index, &shifts[ib]);
      unsigned h = 0;
      for (int k = 0; k < kBlock / 8; ++k) {
        out.qs[(kBlock / 8) * ib + k] = static_cast<uint8_t>(index[k] & 255);
        h |= static_cast<unsigned>(index[k] >> 8) << (3 * k);
      }
      out.qh[ib] = static_cast<uint16_t>(h);
      max_scale = peer_max(max_scale, scales[ib]);
    }
    if (max_scale != 0) {
      const float d = max_scale / 15;
      out.d = iq_scale_to_fp16(d * 1.125f);  // the peer's fudge factor
      const float id = 1 / d;
      for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
        int l = std::max(0, std::min(7, nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f))));
        if (shifts[ib] == -1) l |= 8;
        out.qh[ib] = static_cast<uint16_t>(out.qh[ib] | (l << 12));
      }
    }
    y[ibl] = out;
  }
}

}  // namespace

// ---- IQ1_M: 16-weight blocks, a shift per group of 8, 3-bit scales ---------------------------

// iq1m_process_1block: exact best split into levels 0 / 1 / 2 for each of the 4 combinations of
// the two groups' shifts (k: bit 1 = first group negative, bit 0 = second group negative).
// Writes 2 grid indices; returns the scale, sets *best_k.
float process_block_iq1_m(const Lattice& lat, const float* xb, const float* weight, uint16_t* index, int* best_k_out) {
  constexpr int kBlock = 16;
  int order[kBlock];
  sorted_order<kBlock>(xb, order);
  // Prefix sums over the sorted order, separately for the first (1) and second (2) group of 8.
  float sumw1[kBlock + 1], sumw2[kBlock + 1], sumx1[kBlock + 1], sumx2[kBlock + 1];
  sumw1[0] = sumw2[0] = sumx1[0] = sumx2[0] = 0;
  for (int j = 0; j < kBlock; ++j) {
    const int i = order[j];
    const bool first = i < kBlock / 2;
    sumw1[j + 1] = first ? sumw1[j] + weight[i] : sumw1[j];
    sumx1[j + 1] = first ? sumx1[j] + weight[i] * xb[i] : sumx1[j];
    sumw2[j + 1] = first ? sumw2[j] : sumw2[j] + weight[i];
    sumx2[j + 1] = first ? sumx2[j] : sumx2[j] + weight[i] * xb[i];
  }
  float best_score = 0, scale = 0.f;
  int besti1 = -1, besti2 = -1, best_k = -1;
  for (int i1 = 0; i1 <= kBlock; ++i1) {
    for (int i2 = i1; i2 <= kBlock; ++i2) {
      float sumqx[4], sumq2[4];
      for (int k = 0; k < 4; ++k) {
        const float* a = k < 2 ? kXp : kXm;       // first group
        const float* b = k % 2 == 0 ? kXp : kXm;  // second group
        // Six products summed left to right; the peer's build fuses the third and the sixth.
        float sx = (sumx1[i1] - sumx1[0]) * a[0] + (sumx1[i2] - sumx1[i1]) * a[1];
        sx = fmadd(sumx1[kBlock] - sumx1[i2], a[2], sx);
        sx = sx + (sumx2[i1] - sumx2[0]) * b[0] + (sumx2[i2] - sumx2[i1]) * b[1];
        sumqx[k] = fmadd(sumx2[kBlock] - sumx2[i2], b[2], sx);
        float s2 = (sumw1[i1] - sumw1[0]) * a[0] * a[0] + (sumw1[i2] - sumw1[i1]) * a[1] * a[1];
        s2 = fmadd((sumw1[kBlock] - sumw1[i2]) * a[2], a[2], s2);
        s2 = s2 + (sumw2[i1] - sumw2[0]) * b[0] * b[0] + (sumw2[i2] - sumw2[i1]) * b[1] * b[1];
        sumq2[k] = fmadd((sumw2[kBlock] - sumw2[i2]) * b[2], b[2], s2);
      }
      for (int k = 0; k < 4; ++k) {
        if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
          scale = sumqx[k] / sumq2[k];
          best_score = scale * sumqx[k];
          besti1 = i1;
          besti2 = i2;
          best_k = k;
        }
      }
    }
  }
  if (besti1 < 0) {  // all weights zero (the peer asserts): an empty block
    *best_k_out = 0;
    index[0] = index[1] = 0;
    return 0;
  }
  int8_t L[kBlock];
  for (int j = 0; j < kBlock; ++j) L[order[j]] = static_cast<int8_t>(j < besti1 ? 0 : j < besti2 ? 1 : 2);
  if (scale < 0) {
    for (int j = 0; j < kBlock; ++j) L[j] = static_cast<int8_t>(2 - L[j]);
    scale = -scale;
    best_k = 3 - best_k;
  }
  bool all_on_grid = true;
  for (int k = 0; k < kBlock / 8; ++k) {
    const float* xx = k == 0 ? (best_k < 2 ? kXp : kXm) : (best_k % 2 == 0 ? kXp : kXm);
    const int u = ternary_u(L + 8 * k);
    int gi = lat.map[u];
    if (gi < 0) {
      all_on_grid = false;
      gi = best_neighbour_iq1(lat, u, xb + 8 * k, weight + 8 * k, scale, xx, L + 8 * k);
    }
    index[k] = static_cast<uint16_t>(gi);
  }
  if (!all_on_grid) {  // refit scale and shifts to the snapped levels
    float sumqx[4] = {0, 0, 0, 0}, sumq2[4] = {0, 0, 0, 0};
    for (int j = 0; j < kBlock; ++j) {
      const float w = weight[j];
      const float qp = kXp[L[j]];
      const float qm = kXm[L[j]];
      sumqx[0] += w * xb[j] * qp;
      sumq2[0] += w * qp * qp;
      sumqx[3] += w * xb[j] * qm;
      sumq2[3] += w * qm * qm;
      const int kp = j < 8 ? 1 : 2, km = j < 8 ? 2 : 1;
      sumqx[kp] += w * xb[j] * qp;
      sumq2[kp] += w * qp * qp;
      sumqx[km] += w * xb[j] * qm;
      sumq2[km] += w * qm * qm;
    }
    best_score = 0;
    for (int k = 0; k < 4; ++k) {
      if (sumqx[k] > 0 && sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
        scale = sumqx[k] / sumq2[k];
        best_score = scale * sumqx[k];
        best_k = k;
      }
    }
  }
  *best_k_out = best_k;
  return scale;
}

namespace {

void quantize_row_iq1_m(const float* x, BlockIq1m* y, int64_t nblocks, const float* quant_weights) {
  constexpr int kBlock = 16;
  constexpr uint8_t kShiftMasks[4] = {0x00, 0x80, 0x08, 0x88};  // qh delta-sign bits per best_k
  const Lattice& lat = iq1s_lattice();
  float scales[kSuperBlock / kBlock], weight[kBlock];
  // A block below GROUP_MAX_EPS_IQ1_M keeps the previous super-block's shift at its position:
  // the peer's buffer outlives the super-block. Here it lives for one row.
  int shifts[kSuperBlock / kBlock] = {};
  auto block_weights = [&](const float* xb, const float* qw, float sigma2) {
    if (qw) {
      for (int i = 0; i < kBlock; ++i) weight[i] = qw[i] * std::sqrt(fmadd(xb[i], xb[i], sigma2));
    } else {
      for (int i = 0; i < kBlock; ++i) weight[i] = xb[i] * xb[i];
    }
  };
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq1m out{};
    const float* xbl = x + kSuperBlock * ibl;
    const float* qwbl = quant_weights ? quant_weights + kSuperBlock * ibl : nullptr;
    float all_sigma2[kSuperBlock / 32];
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) all_sigma2[ib] = 1.5f * sum_squares(xbl + 32 * ib, 32) / 32;
    float max_scale = 0;
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float* xb = xbl + kBlock * ib;
      block_weights(xb, qwbl ? qwbl + kBlock * ib : nullptr, all_sigma2[ib / 2]);
      float max = std::fabs(xb[0]);
      float sumwx = 0;  // the peer starts at element 1
      for (int i = 1; i < kBlock; ++i) {
        const float ax = std::fabs(xb[i]);
        max = peer_max(max, ax);
        sumwx = fmadd(weight[i], ax, sumwx);
      }
      if (max < kGroupMaxEpsIq1m) {
        scales[ib] = 0;
        continue;
      }
      if (sumwx == 0) {  // the weights vanish wherever x does not: ignore them
        for (int i = 0; i < kBlock; ++i) weight[i] = xb[i] * xb[i];
      }
      uint16_t index[2];
      scales[ib] = process_block_iq1_m(lat, xb, weight, index, &shifts[ib]);
      out.qs[2 * ib + 0] = static_cast<uint8_t>(index[0] & 255);
      out.qs[2 * ib + 1] = static_cast<uint8_t>(index[1] & 255);
      out.qh[ib] = static_cast<uint8_t>((index[0] >> 8) | ((index[1] >> 8) << 4));
      max_scale = peer_max(max_scale, scales[ib]);
    }
    if (max_scale == 0) {
      y[ibl] = out;
      continue;
    }
    // 3-bit block scales against max/15, then the super-block scale is refit to the
    // dequantized values (times the peer's 1.085 fudge factor).
    uint16_t sc[4] = {0, 0, 0, 0};
    float d = max_scale / 15;
    const float id = 1 / d;
    float sumqx_f = 0, sumq2_f = 0;
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int l = std::max(0, std::min(7, nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f))));
      sc[ib / 4] = static_cast<uint16_t>(sc[ib / 4] | (l << (3 * (ib % 4))));
      out.qh[ib] = static_cast<uint8_t>(out.qh[ib] | kShiftMasks[shifts[ib]]);
      const float* xb = xbl + kBlock * ib;
      block_weights(xb, qwbl ? qwbl + kBlock * ib : nullptr, all_sigma2[ib / 2]);
      for (int k = 0; k < kBlock / 8; ++k) {
        const float* xx = k == 0 ? (shifts[ib] < 2 ? kXp : kXm) : (shifts[ib] % 2 == 0 ? kXp : kXm);
        const int8_t* pg = lat.point(out.qs[2 * ib + k] + ((out.qh[ib] << (8 - 4 * k)) & 0x700));
        for (int j = 0; j < 8; ++j) {
          const float w = weight[8 * k + j];
          const float q = xx[(pg[j] - 1) / 2] * static_cast<float>(2 * l + 1);
          sumqx_f = fmadd(w * q, xb[8 * k + j], sumqx_f);
          sumq2_f = fmadd(w * q, q, sumq2_f);
        }
      }
    }
    if (sumq2_f > 0) d = sumqx_f / sumq2_f;
    const uint16_t s = iq_scale_to_fp16(d * 1.085f);
    sc[0] = static_cast<uint16_t>(sc[0] | ((s & 0x000f) << 12));
    sc[1] = static_cast<uint16_t>(sc[1] | ((s & 0x00f0) << 8));
    sc[2] = static_cast<uint16_t>(sc[2] | ((s & 0x0f00) << 4));
    sc[3] = static_cast<uint16_t>(sc[3] | (s & 0xf000));
    std::memcpy(out.scales, sc, sizeof(sc));
    y[ibl] = out;
  }
}

}  // namespace

void quantize_iq1_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq1s>(src, dst, nrows, n_per_row,
                          [&](const float* x, BlockIq1s* y, int64_t nb) { quantize_row_iq1_s(x, y, nb, imatrix); });
}

void quantize_iq1_m(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq1m>(src, dst, nrows, n_per_row,
                          [&](const float* x, BlockIq1m* y, int64_t nb) { quantize_row_iq1_m(x, y, nb, imatrix); });
}

}  // namespace expertmesh::quant::iq
