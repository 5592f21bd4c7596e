// Quantizers of IQ3_XXS, IQ3_S (D4-lattice grids) and IQ4_XS (non-linear 4-bit values): faithful
// ports of the peer's quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl and
// quantize_row_iq4_nl_impl (ggml-quants.c), including the order of every float operation, the
// tie-breaking of every search and the fudge factors, so the output bytes are the peer's.
#include <cmath>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/iquants_internal.h"

// Our float arithmetic must not be fused behind our back: every fusion the peer's build makes is
// spelled out with fmadd (iquants_internal.h). GCC does not contract in ISO C++ mode; clang would.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace expertmesh::quant::iq {
namespace {

constexpr float kGroupMaxEps = 1e-15f;       // GROUP_MAX_EPS
constexpr float kGroupMaxEpsIq3xxs = 1e-8f;  // GROUP_MAX_EPS_IQ3_XXS

// Weights of one 32-weight block: imatrix * sqrt(sigma2 + x^2), or x^2 without an imatrix.
void block_weights(const float* xb, const float* qw, float sigma2, float* weight, int n) {
  if (qw) {
    for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(fmadd(xb[i], xb[i], sigma2));
  } else {
    for (int i = 0; i < n; ++i) weight[i] = xb[i] * xb[i];
  }
}

// 4-bit grid index search shared by IQ3_XXS and IQ3_S: snaps each group of 4 to l = round((x/s - 1)/2)
// in [0, 7]; off-grid groups take their best neighbour under `scale`.
int snap_group(const Lattice& lat, const float* xval, const float* waux, float id, float scale, int8_t* L,
               bool* on_grid) {
  int u = 0;
  for (int i = 0; i < 4; ++i) {
    int l = nearest_int_fma(0.5f, fmadd(id, xval[i], -1.f));
    l = std::max(0, std::min(7, l));
    L[i] = static_cast<int8_t>(l);
    u |= l << (3 * i);
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
  for (int i = 0; i < 4; ++i) u |= L[i] << (3 * i);
  const int gi = lat.map[u];
  return gi >= 0 ? gi : 0;  // L comes from a grid point; the peer aborts otherwise
}

// Scale search of one 32-weight block (IQ3_XXS: nis = 15, IQ3_S: nis = 9; step 0.2 around 15/max).
// `is_on_grid` and L carry over from the previous block when no candidate improves (the peer
// keeps them in buffers that outlive the block); returns the block scale.
float search_block_iq3(const Lattice& lat, int nis, bool recheck_all, const float* xval, const float* weight,
                       const float* waux, float max, int8_t* L, bool* is_on_grid) {
  constexpr int kMaxQ = 8;
  int8_t Laux[32];
  bool on_grid_aux[8];
  float best = 0;
  float scale = max / (2 * kMaxQ - 1);
  for (int is = -nis; is <= nis; ++is) {
    const float id = fmadd(static_cast<float>(is), 0.2f, 2 * kMaxQ - 1) / max;
    const float this_scale = 1 / id;
    for (int k = 0; k < 8; ++k)
      snap_group(lat, xval + 4 * k, waux + 4 * k, id, this_scale, Laux + 4 * k, &on_grid_aux[k]);
    float sumqx, sumq2;
    weighted_sums(weight, xval, Laux, 32, &sumqx, &sumq2);
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      scale = sumqx / sumq2;
      best = scale * sumqx;
      std::memcpy(L, Laux, 32);
      std::memcpy(is_on_grid, on_grid_aux, 8);
    }
  }
  int n_not_on_grid = 0;
  for (int k = 0; k < 8; ++k) n_not_on_grid += is_on_grid[k] ? 0 : 1;
  if (n_not_on_grid > 0 && scale > 0) {
    const float id = 1 / scale;
    for (int k = 0; k < 8; ++k) {
      // IQ3_XXS re-snaps only the off-grid groups, IQ3_S all of them.
      if (!recheck_all && is_on_grid[k]) continue;
      int8_t Lk[4];
      bool dummy;
      const int gi = snap_group(lat, xval + 4 * k, waux + 4 * k, id, scale, Lk, &dummy);
      const int8_t* pg = lat.point(gi);
      for (int i = 0; i < 4; ++i) L[4 * k + i] = static_cast<int8_t>((pg[i] - 1) / 2);
    }
    float sumqx, sumq2;
    weighted_sums(weight, xval, L, 32, &sumqx, &sumq2);
    if (sumq2 > 0) scale = sumqx / sumq2;
  }
  return scale;
}

void quantize_row_iq3_xxs(const float* x, BlockIq3xxs* y, int64_t nblocks, const float* quant_weights) {
  const Lattice& lat = iq3xxs_lattice();
  float scales[8], weight[32], xval[32], waux[32];
  int8_t L[32] = {};
  bool is_on_grid[8] = {};
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq3xxs out{};
    uint32_t scales_and_signs[8] = {};
    const float* xbl = x + kSuperBlock * ibl;
    const float sigma2 = 2 * sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      block_weights(xb, quant_weights ? quant_weights + kSuperBlock * ibl + 32 * ib : nullptr, sigma2, weight, 32);
      for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
      uint8_t block_signs[4];
      for (int k = 0; k < 4; ++k) block_signs[k] = abs_with_even_signs(xb + 8 * k, weight + 8 * k, xval + 8 * k);
      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = peer_max(max, xval[i]);
      if (max < kGroupMaxEpsIq3xxs) {
        scales[ib] = 0;
        std::memset(L, 0, sizeof(L));
        continue;
      }
      float scale = search_block_iq3(lat, 15, false, xval, weight, waux, max, L, is_on_grid);
      if (scale < 0) {  // cannot happen (xval >= 0 up to one flipped element); kept for safety
        scale = -scale;
        for (int k = 0; k < 4; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k] & 127);
      }
      for (int k = 0; k < 8; ++k) out.qs[8 * ib + k] = static_cast<uint8_t>(grid_index_of(lat, L + 4 * k));
      scales_and_signs[ib] = block_signs[0] | (block_signs[1] << 7) | (block_signs[2] << 14) | (block_signs[3] << 21);
      scales[ib] = scale;
      max_scale = peer_max(max_scale, scale);
    }
    if (max_scale != 0) {
      const float d = max_scale / 31;
      out.d = iq_scale_to_fp16(d * 1.0125f);  // the peer's fudge factor
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ++ib) {
        int l = nearest_int_fma(0.5f, fmadd(id, scales[ib], -1.f));
        l = std::max(0, std::min(15, l));
        scales_and_signs[ib] |= static_cast<uint32_t>(l) << 28;
      }
      std::memcpy(out.qs + kSuperBlock / 4, scales_and_signs, sizeof(scales_and_signs));
    } else {
      std::memset(out.qs, 0, sizeof(out.qs));
    }
    y[ibl] = out;
  }
}

void quantize_row_iq3_s(const float* x, BlockIq3s* y, int64_t nblocks, const float* quant_weights) {
  const Lattice& lat = iq3s_lattice();
  float scales[8], weight[32], xval[32], waux[32];
  int8_t L[32] = {};
  for (int64_t ibl = 0; ibl < nblocks; ++ibl) {
    BlockIq3s out{};
    const float* xbl = x + kSuperBlock * ibl;
    const float sigma2 = 2 * sum_squares(xbl, kSuperBlock) / kSuperBlock;
    float max_scale = 0;
    // The peer advances its qs / signs write positions only for non-zero blocks (a block of
    // zeros shifts the following blocks' indices); reproduced for identical bytes.
    int qs_pos = 0, signs_pos = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      block_weights(xb, quant_weights ? quant_weights + kSuperBlock * ibl + 32 * ib : nullptr, sigma2, weight, 32);
      for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
      uint8_t block_signs[4];
      for (int k = 0; k < 4; ++k) {  // IQ3_S stores all 8 signs: plain absolute values
        unsigned s = 0;
        for (int i = 0; i < 8; ++i) {
          const float v = xb[8 * k + i];
          xval[8 * k + i] = v >= 0 ? v : -v;
          if (!(v >= 0)) s |= 1u << i;
        }
        block_signs[k] = static_cast<uint8_t>(s);
      }
      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = peer_max(max, xval[i]);
      if (max == 0) {
        scales[ib] = 0;
        continue;
      }
      bool is_on_grid[8] = {};
      float scale = search_block_iq3(lat, 9, true, xval, weight, waux, max, L, is_on_grid);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 4; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k]);
      }
      for (int k = 0; k < 8; ++k) {
        const int gi = grid_index_of(lat, L + 4 * k);
        out.qs[qs_pos + k] = static_cast<uint8_t>(gi & 255);
        out.qh[(ib * 8 + k) / 8] |= static_cast<uint8_t>((gi >> 8) << ((ib * 8 + k) % 8));
      }
      qs_pos += 8;
      for (int k = 0; k < 4; ++k) out.signs[signs_pos + k] = block_signs[k];
      signs_pos += 4;
      scales[ib] = scale;
      max_scale = peer_max(max_scale, scale);
    }
    if (max_scale != 0) {
      const float d = max_scale / 31;
      out.d = iq_scale_to_fp16(d * 1.033f);  // the peer's fudge factor
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ib += 2) {
        const int l1 = std::max(0, std::min(15, nearest_int_fma(0.5f, fmadd(id, scales[ib + 0], -1.f))));
        const int l2 = std::max(0, std::min(15, nearest_int_fma(0.5f, fmadd(id, scales[ib + 1], -1.f))));
        out.scales[ib / 2] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
    }
    y[ibl] = out;
  }
}

// ---- IQ4_XS ------------------------------------------------------------------------------

// Index of the IQ4_NL value nearest to x (ties and rounding exactly as the peer's
// best_index_iq4nl, including its lookup table of the nearest value per integer offset).
int best_index_iq4nl(float x) {
  static constexpr int8_t kIndex[241] = {
      0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  16, 16, 1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,
      1,  1,  1,  1,  1,  1,  17, 17, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  18,
      3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  19, 4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
      4,  4,  4,  4,  20, 5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  21, 21, 6,  6,  6,  6,  6,  6,  6,  6,
      6,  6,  6,  22, 7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  23, 23, 8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  24,
      9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  9,  25, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 26, 26, 11, 11,
      11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 27, 27, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 28,
      13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 29, 14, 14, 14, 14, 14, 14, 14, 14, 14,
      14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15};
  const int8_t* values = kIq4kValues;
  // (int)x truncates; out of int range x86 yields INT_MIN, i.e. index 0.
  if (!(x > -2147483648.f && x < 2147483648.f)) return 0;
  int ix = static_cast<int>(x) - values[0];
  if (ix < 0 || ix >= 241) return ix < 0 ? 0 : 15;
  ix = kIndex[ix];
  if (ix < 16) return ix;
  return x - static_cast<float>(values[ix - 16]) < static_cast<float>(values[ix - 15]) - x ? ix - 16 : ix - 15;
}

// One 256-weight super-block of IQ4_XS: quantize_row_iq4_nl_impl(QK_K, 32, ..., ntry = 7).
void quantize_block_iq4_xs(const float* x, const float* quant_weights, BlockIq4xs* out) {
  constexpr int kBlock = 32;
  constexpr int kNtry = 7;
  const int8_t* values = kIq4kValues;  // the 16 IQ4_NL values
  float sigma2 = sum_squares(x, kSuperBlock);
  sigma2 *= 2.f / kSuperBlock;

  *out = BlockIq4xs{};
  uint8_t L[kSuperBlock] = {};
  float scales[kSuperBlock / kBlock];
  float weight[kBlock];
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
    const float* xb = x + ib * kBlock;
    uint8_t* Lb = L + ib * kBlock;
    if (quant_weights) {
      for (int j = 0; j < kBlock; ++j)
        weight[j] = quant_weights[ib * kBlock + j] * std::sqrt(fmadd(xb[j], xb[j], sigma2));
    } else {
      for (int j = 0; j < kBlock; ++j) weight[j] = xb[j] * xb[j];
    }
    float amax = 0, max = 0;
    for (int j = 0; j < kBlock; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    // Sums of w*q*x and w*q^2 for the indices chosen under inverse scale id.
    auto sums = [&](float id, float* sumqx, float* sumq2) {
      float sx = 0, s2 = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float q = values[best_index_iq4nl(id * xb[j])];
        const float wq = weight[j] * q;
        sx = fmadd(wq, xb[j], sx);
        s2 = fmadd(wq, q, s2);
      }
      *sumqx = sx;
      *sumq2 = s2;
    };
    float d = -max / values[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < kBlock; ++j) Lb[j] = static_cast<uint8_t>(best_index_iq4nl(id * xb[j]));
    sums(id, &sumqx, &sumq2);
    d = sumqx / sumq2;
    float best = d * sumqx;
    float best_sumqx = sumqx, best_sumq2 = sumq2;
    for (int itry = -kNtry; itry <= kNtry; ++itry) {
      for (int end : {0, 15}) {  // scales mapping max onto the lowest / highest value, nudged
        id = static_cast<float>(itry + values[end]) / max;
        sums(id, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
          best_sumqx = sumqx;
          best_sumq2 = sumq2;
          for (int j = 0; j < kBlock; ++j) Lb[j] = static_cast<uint8_t>(best_index_iq4nl(id * xb[j]));
        }
      }
    }
    // Greedy coordinate moves: step the index whose move along the gradient is cheapest while
    // the weighted fit improves.
    sumqx = best_sumqx;
    sumq2 = best_sumq2;
    for (int iter = 0; iter < 32 * kBlock; ++iter) {
      float min_step = INFINITY;
      int best_j = -1, dir = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float w = weight[j];
        const float g = d * w * fmadd(-d, values[Lb[j]], xb[j]);
        if (g > 0 && Lb[j] < 15) {
          const float step = static_cast<float>(values[Lb[j] + 1] - values[Lb[j]]) / g;
          if (step < min_step) {
            min_step = step;
            best_j = j;
            dir = 1;
          }
        } else if (g < 0 && Lb[j] > 0) {
          const float step = static_cast<float>(values[Lb[j] - 1] - values[Lb[j]]) / g;
          if (step < min_step) {
            min_step = step;
            best_j = j;
            dir = -1;
          }
        }
      }
      if (best_j < 0) break;
      const float w = weight[best_j];
      const int v0 = values[Lb[best_j]], v1 = values[Lb[best_j] + dir];
      float new_sumqx = sumqx, new_sumq2 = sumq2;
      new_sumqx = fmadd(w * xb[best_j], static_cast<float>(v1 - v0), new_sumqx);
      new_sumq2 = fmadd(w, static_cast<float>(v1 * v1 - v0 * v0), new_sumq2);
      if (!(new_sumq2 > 0 && new_sumqx * new_sumqx > best * new_sumq2)) break;
      sumqx = new_sumqx;
      sumq2 = new_sumq2;
      d = sumqx / sumq2;
      best = d * sumqx;
      Lb[best_j] = static_cast<uint8_t>(Lb[best_j] + dir);
    }
    scales[ib] = d;
    const float abs_d = std::fabs(d);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = d;
    }
  }

  // 6-bit block scales relative to d = -max_scale/32; indices re-chosen for the rounded scales.
  const float d = -max_scale / 32;
  out->d = iq_scale_to_fp16(d);
  const float id = d != 0 ? 1 / d : 0.f;
  for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
    int l = nearest_int_fma(id, scales[ib]);
    l = std::max(-32, std::min(31, l));
    const float dl = d * static_cast<float>(l);
    const float idl = dl != 0 ? 1 / dl : 0.f;
    uint8_t* Lb = L + ib * kBlock;
    const float* xb = x + ib * kBlock;
    for (int j = 0; j < kBlock; ++j) Lb[j] = static_cast<uint8_t>(best_index_iq4nl(idl * xb[j]));
    l += 32;
    const int l_l = l & 0xf, l_h = l >> 4;
    if (ib % 2 == 0) {
      out->scales_l[ib / 2] = static_cast<uint8_t>(l_l);
    } else {
      out->scales_l[ib / 2] = static_cast<uint8_t>(out->scales_l[ib / 2] | (l_l << 4));
    }
    out->scales_h = static_cast<uint16_t>(out->scales_h | (l_h << (2 * ib)));
  }
  for (int i = 0; i < kSuperBlock / 32; ++i)
    for (int j = 0; j < 16; ++j) out->qs[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

}  // namespace

void quantize_iq3_xxs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq3xxs>(src, dst, nrows, n_per_row, [&](const float* x, BlockIq3xxs* y, int64_t nb) {
    quantize_row_iq3_xxs(x, y, nb, imatrix);
  });
}

void quantize_iq3_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq3s>(src, dst, nrows, n_per_row,
                          [&](const float* x, BlockIq3s* y, int64_t nb) { quantize_row_iq3_s(x, y, nb, imatrix); });
}

void quantize_iq4_xs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  for_each_row<BlockIq4xs>(src, dst, nrows, n_per_row, [&](const float* x, BlockIq4xs* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i)
      quantize_block_iq4_xs(x + kSuperBlock * i, imatrix ? imatrix + kSuperBlock * i : nullptr, &y[i]);
  });
}

}  // namespace expertmesh::quant::iq
