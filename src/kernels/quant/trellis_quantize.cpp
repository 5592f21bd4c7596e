// Reference quantizers of the trellis family: ports of ik's quantize_row_iq{1,2,3,4}_kt_impl
// (iqk_quantize.cpp) that aim at its exact bytes. Per row: importance weights (set_weights), a
// per-32 block search for the best seeds and block scale over a few trial scales, one row scale
// fitted to the block scales, then a final pass that re-picks the seeds with the quantized block
// scales and refits the row scale by least squares.
//
// Float arithmetic follows ik's GCC build: products that feed a sum are fused (std::fma) where its
// compiled code fuses them and kept separate where it does not (see iqk_k_common.h).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/trellis_internal.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace expertmesh::quant::trellis {
namespace {

constexpr int kBlocks = kNumSub;  // 32-weight blocks per 256-block

// ik's iq4nl_index: for t = (int)x + 127, the nearest kIq4kValues[0..15] entry (t < 16) or the
// pair (t - 16, t - 15) to decide between.
constexpr uint8_t kIq4nlIndex[241] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 17, 17, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 18, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 19, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 20, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 21, 21, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 22, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 23, 23, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 24, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    9, 9, 25, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 26, 26, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 27, 27, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 28, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 29, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15,
};

// (int)x as x86's cvttss2si computes it: out of range and NaN give INT_MIN.
inline int trunc_to_int(float x) {
  if (!(x > -2147483648.f && x < 2147483648.f)) return INT_MIN;
  return static_cast<int>(x);
}

// ik's best_index_iq4nl over kIq4kValues[0..15]: nearest value, ties to the upper one.
inline int best_index_iq4nl(float x) {
  const int t = trunc_to_int(x);
  if (t == INT_MIN) return 0;
  const int ix = t - kIq4kValues[0];
  if (ix < 0 || ix >= 241) return ix < 0 ? 0 : 15;
  const int i = kIq4nlIndex[ix];
  if (i < 16) return i;
  return x - kIq4kValues[i - 16] < kIq4kValues[i - 15] - x ? i - 16 : i - 15;
}

// ggml's nearest_int of a*b where ik's build fuses the product into the rounding addition.
inline int nearest_int_fma(float a, float b) {
  const float val = std::fma(a, b, 12582912.f);
  int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

float max_abs(const float* x, int64_t n) {
  float m = 0;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, std::abs(x[j]));
  return m;
}

void store_row(void* dst, float d, const void* blocks, size_t bytes) {
  std::memcpy(dst, &d, sizeof(d));
  std::memcpy(static_cast<uint8_t*>(dst) + sizeof(d), blocks, bytes);
}

// Weighted least-squares row scale over all blocks for block scale values dl(ib) applied to the
// chosen seeds: the (sumqx, sumq2) accumulation of ik's scale search (q = dl * value).
template <typename DlFn>
void accumulate_fit(const Codebook& cb, int nblock, const float* x, const float* w, const int* idx, DlFn dl_of,
                    float* sumqx, float* sumq2) {
  const int g = cb.group;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const float dl = dl_of(ibl, ib);
      for (int ig = 0; ig < kSubBlock / g; ++ig) {
        const float* qb = cb.seed_values(idx[base / g + ig]);
        for (int j = 0; j < g; ++j) {
          const int p = base + ig * g + j;
          const float q = dl * qb[j];
          *sumqx = std::fma(w[p] * x[p], q, *sumqx);
          *sumq2 = std::fma(w[p] * q, q, *sumq2);
        }
      }
    }
  }
}

// ---- IQ1_KT / IQ2_KT: 8-value groups, block scales from kIq4kValues ---------------------------

// First pass shared by IQ1_KT and IQ2_KT: per block the seeds and scale for x/d = ±amax/scale_0
// (IQ1_KT also tries scale_0 - 8). Returns the signed block scale of largest magnitude.
float first_pass_iq12(const Codebook& cb, bool second_try, int nblock, const float* x, const float* w,
                      float amax_row, float* scales, int* idx) {
  constexpr int kNg = kSubBlock / 8;
  float amax_scale = 0, max_scale = 0;
  int best_idx[2 * kNg];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const float* xb = x + base;
      const float* wb = w + base;
      float* sc = scales + ibl * kBlocks + ib;
      int* out = idx + base / 8;
      const float amax = max_abs(xb, kSubBlock);
      if (amax < 1e-16f) {
        *sc = 0;
        std::fill(out, out + kNg, 0);
        continue;
      }
      float scale_0 = std::max(90.f, 124.f * amax / amax_row);
      float dp, score_p, dm, score_m;
      cb.find_best_match(amax / scale_0, xb, wb, best_idx);
      cb.find_best_scale(xb, wb, best_idx, &dp, &score_p);
      cb.find_best_match(-amax / scale_0, xb, wb, best_idx + kNg);
      cb.find_best_scale(xb, wb, best_idx + kNg, &dm, &score_m);
      const int* chosen = best_idx;
      if (score_p > score_m) {
        *sc = dp;
      } else {
        *sc = dm;
        chosen += kNg;
        score_p = score_m;
      }
      std::copy(chosen, chosen + kNg, out);
      if (second_try) {
        scale_0 -= 8;
        float dp1, score_p1, dm1, score_m1;
        cb.find_best_match(amax / scale_0, xb, wb, best_idx);
        cb.find_best_scale(xb, wb, best_idx, &dp1, &score_p1);
        cb.find_best_match(-amax / scale_0, xb, wb, best_idx + kNg);
        cb.find_best_scale(xb, wb, best_idx + kNg, &dm1, &score_m1);
        if (score_p1 > score_p || score_m1 > score_p) {
          chosen = best_idx;
          if (score_p1 > score_m1) {
            *sc = dp1;
          } else {
            *sc = dm1;
            chosen += kNg;
          }
          std::copy(chosen, chosen + kNg, out);
        }
      }
      if (std::abs(*sc) > amax_scale) {
        amax_scale = std::abs(*sc);
        max_scale = *sc;
      }
    }
  }
  return max_scale;
}

// Row scale d such that the block scales map onto kIq4kValues: 19 trial inverse scales around
// -127/max_scale, keeping the best weighted least-squares fit.
float fit_row_scale_iq4k(const Codebook& cb, int nblock, const float* x, const float* w, const float* scales,
                         const int* idx, float max_scale) {
  float d = max_scale / kIq4kValues[0];
  float best = 0;
  for (int itry = -9; itry <= 9; ++itry) {
    const float id = float(itry + kIq4kValues[0]) / max_scale;
    float sumqx = 0, sumq2 = 0;
    accumulate_fit(cb, nblock, x, w, idx,
                   [&](int ibl, int ib) { return float(kIq4kValues[best_index_iq4nl(id * scales[ibl * kBlocks + ib])]); },
                   &sumqx, &sumq2);
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// Final pass of IQ1_KT / IQ2_KT for block ib: new seeds for the quantized block scale ls, kept
// only if they beat the first pass's seeds (prev, updated in place). Adds to the row scale fit.
void final_block_iq12(const Codebook& cb, float d, int ls, const float* xb, const float* wb, int* prev, int* best_idx,
                      float* sumqx, float* sumq2) {
  constexpr int kNg = kSubBlock / 8;
  const float dl = d * float(ls);
  cb.find_best_match(dl, xb, wb, best_idx);
  float mse1 = 0, mse2 = 0;
  for (int ig = 0; ig < kNg; ++ig) {
    const float* q1 = cb.seed_values(prev[ig]);
    const float* q2 = cb.seed_values(best_idx[ig]);
    for (int j = 0; j < 8; ++j) {
      const int p = 8 * ig + j;
      const float diff1 = std::fma(-dl, q1[j], xb[p]);
      const float diff2 = std::fma(-dl, q2[j], xb[p]);
      mse1 = std::fma(wb[p] * diff1, diff1, mse1);
      mse2 = std::fma(wb[p] * diff2, diff2, mse2);
    }
  }
  if (mse1 < mse2) {
    std::copy(prev, prev + kNg, best_idx);
  } else {
    std::copy(best_idx, best_idx + kNg, prev);
  }
  for (int ig = 0; ig < kNg; ++ig) {
    const float* qv = cb.seed_values(best_idx[ig]);
    for (int k = 0; k < 8; ++k) {
      const int p = 8 * ig + k;
      const float q = qv[k] * float(ls);
      *sumqx = std::fma(wb[p] * xb[p], q, *sumqx);
      *sumq2 = std::fma(wb[p] * q, q, *sumq2);
    }
  }
}

struct Scratch {
  std::vector<float> scales, weights, qtmp;
  std::vector<int> idx;
  explicit Scratch(int64_t n, int group)
      : scales(static_cast<size_t>(n / kSubBlock)), weights(static_cast<size_t>(n)), qtmp(static_cast<size_t>(n)),
        idx(static_cast<size_t>(n / group)) {}
};

void quantize_row_iq1_kt(const float* x, uint8_t* dst, int n, const float* imatrix, Scratch& s) {
  const Codebook& cb = codebook_iq1kt();
  const int nblock = n / kQK;
  std::vector<BlockIq1Kt> y(nblock);
  std::memset(y.data(), 0, y.size() * sizeof(BlockIq1Kt));
  set_weights(nblock, x, imatrix, s.weights.data(), /*vectorized=*/true);
  const float amax_row = max_abs(x, n);
  const float max_scale = amax_row > 0 ? first_pass_iq12(cb, true, nblock, x, s.weights.data(), amax_row,
                                                         s.scales.data(), s.idx.data())
                                       : 0.f;
  if (max_scale == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq1Kt));
  float d = fit_row_scale_iq4k(cb, nblock, x, s.weights.data(), s.scales.data(), s.idx.data(), max_scale);
  const float id = d != 0 ? 1 / d : 0.f;
  for (int ibl = 0; ibl < nblock; ++ibl)
    for (int ib = 0; ib < kBlocks; ++ib) y[ibl].sh[ib] = uint8_t(best_index_iq4nl(id * s.scales[ibl * kBlocks + ib]));
  if (d == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq1Kt));

  float sumqx = 0, sumq2 = 0;
  int best_idx[4];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const int ls = kIq4kValues[y[ibl].sh[ib] & 0xF];
      final_block_iq12(cb, d, ls, x + base, s.weights.data() + base, s.idx.data() + base / 8, best_idx, &sumqx,
                       &sumq2);
      for (int j = 0; j < 4; ++j) {
        // 13-bit seed: bits 0-7 in ql, 8-11 in a qh nibble, 12 in sh bit 4+j.
        y[ibl].ql[4 * ib + j] = uint8_t(best_idx[j] & 0xFF);
        y[ibl].qh[(ib % 4) * 4 + j] |= uint8_t(((best_idx[j] >> 8) & 0xF) << (4 * (ib / 4)));
        y[ibl].sh[ib] |= uint8_t((best_idx[j] >> 12) << (4 + j));
      }
    }
  }
  // ik stores the refit scale enlarged by 7% (an empirical correction of IQ1_KT's low bit rate).
  if (sumq2 > 0) d = sumqx / sumq2 * 1.07f;
  store_row(dst, d, y.data(), y.size() * sizeof(BlockIq1Kt));
}

void quantize_row_iq2_kt(const float* x, uint8_t* dst, int n, const float* imatrix, Scratch& s) {
  const Codebook& cb = codebook_iq2kt();
  const int nblock = n / kQK;
  std::vector<BlockIq2Kt> y(nblock);
  std::memset(y.data(), 0, y.size() * sizeof(BlockIq2Kt));
  set_weights(nblock, x, imatrix, s.weights.data(), /*vectorized=*/true);
  const float amax_row = max_abs(x, n);
  const float max_scale = amax_row > 0 ? first_pass_iq12(cb, false, nblock, x, s.weights.data(), amax_row,
                                                         s.scales.data(), s.idx.data())
                                       : 0.f;
  if (max_scale == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq2Kt));
  float d = fit_row_scale_iq4k(cb, nblock, x, s.weights.data(), s.scales.data(), s.idx.data(), max_scale);
  const float id = d != 0 ? 1 / d : 0.f;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks / 2; ++ib) {
      const int ls1 = best_index_iq4nl(id * s.scales[ibl * kBlocks + ib]);
      const int ls2 = best_index_iq4nl(id * s.scales[ibl * kBlocks + ib + kBlocks / 2]);
      y[ibl].scales[ib] = uint8_t(ls1 | (ls2 << 4));
    }
  }
  if (d == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq2Kt));

  float sumqx = 0, sumq2 = 0;
  int best_idx[4];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const int ls = kIq4kValues[(y[ibl].scales[ib % 4] >> (4 * (ib / 4))) & 0xF];
      final_block_iq12(cb, d, ls, x + base, s.weights.data() + base, s.idx.data() + base / 8, best_idx, &sumqx,
                       &sumq2);
      for (int j = 0; j < 4; ++j) {  // little-endian u16 seeds
        y[ibl].ql[2 * (4 * ib + j)] = uint8_t(best_idx[j] & 0xFF);
        y[ibl].ql[2 * (4 * ib + j) + 1] = uint8_t(best_idx[j] >> 8);
      }
    }
  }
  if (sumq2 > 0) d = sumqx / sumq2;
  store_row(dst, d, y.data(), y.size() * sizeof(BlockIq2Kt));
}

// ---- IQ3_KT: |values| with separate signs, unsigned 4-bit block scales ------------------------

void quantize_row_iq3_kt(const float* x, uint8_t* dst, int n, const float* imatrix, Scratch& s) {
  constexpr int kNg = kSubBlock / 8;
  constexpr float kStep = 8.0f;
  const Codebook& cb = codebook_iq3kt();
  const int nblock = n / kQK;
  std::vector<BlockIq3Kt> y(nblock);
  std::memset(y.data(), 0, y.size() * sizeof(BlockIq3Kt));
  const float amax_row = max_abs(x, n);
  if (amax_row == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq3Kt));
  float* w = s.weights.data();
  set_weights(nblock, x, imatrix, w, /*vectorized=*/false);  // ik's IQ3_KT build fuses here

  float amax_scale = 0, max_scale = 0;
  float xaux[kSubBlock];
  int best_idx[2 * kNg];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      float* sc = s.scales.data() + ibl * kBlocks + ib;
      float amax = 0;
      for (int j = 0; j < kSubBlock; ++j) {
        xaux[j] = std::abs(x[base + j]);
        amax = std::max(amax, xaux[j]);
      }
      std::fill(s.qtmp.begin() + base, s.qtmp.begin() + base + kSubBlock, 0.f);
      if (amax < 1e-16f) {
        *sc = 0;
        continue;
      }
      const float scale_0 = std::max(84.f, 123.f * amax / amax_row);
      float best = 0;
      bool found = false;
      for (int itry = -3; itry <= 3; ++itry) {
        float dl, score;
        cb.find_best_match(amax / std::fma(kStep, float(itry), scale_0), xaux, w + base, best_idx);
        cb.find_best_scale(xaux, w + base, best_idx, &dl, &score);
        if (score > best) {
          best = score;
          found = true;
          *sc = dl;
          std::copy(best_idx, best_idx + kNg, best_idx + kNg);
        }
      }
      // ik aborts when no trial scores above zero (impossible for finite, non-zero blocks).
      if (!found) {
        *sc = 0;
        continue;
      }
      for (int ig = 0; ig < kNg; ++ig)
        std::copy_n(cb.seed_values(best_idx[kNg + ig]), 8, s.qtmp.begin() + base + 8 * ig);
      if (std::abs(*sc) > amax_scale) {
        amax_scale = std::abs(*sc);
        max_scale = *sc;
      }
    }
  }

  float d = max_scale / 15;
  float best = 0;
  for (int itry = -9; itry <= 9; ++itry) {
    const float id = std::fma(float(itry), 0.2f, 15.f) / max_scale;
    float sumqx = 0, sumq2 = 0;
    for (int ibl = 0; ibl < nblock; ++ibl) {
      for (int ib = 0; ib < kBlocks; ++ib) {
        const int base = ibl * kQK + ib * kSubBlock;
        const int ls = std::clamp(nearest_int_fma(id, s.scales[ibl * kBlocks + ib]), 0, 15);
        const float dl = float(ls);
        for (int j = 0; j < kSubBlock; ++j) {
          // ik's build vectorizes this loop as an in-order reduction: products rounded, not fused.
          const float q = dl * s.qtmp[base + j];
          sumqx += w[base + j] * std::abs(x[base + j]) * q;
          sumq2 += w[base + j] * q * q;
        }
      }
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  const float id = d != 0 ? 1 / d : 0.f;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks / 2; ++ib) {
      const int ls1 = std::clamp(nearest_int_fma(id, s.scales[ibl * kBlocks + ib]), 0, 15);
      const int ls2 = std::clamp(nearest_int_fma(id, s.scales[ibl * kBlocks + ib + kBlocks / 2]), 0, 15);
      y[ibl].scales[ib] = uint8_t(ls1 | (ls2 << 4));
    }
  }

  float sumqx = 0, sumq2 = 0;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      for (int j = 0; j < kSubBlock; ++j) {
        xaux[j] = std::abs(x[base + j]);
        if (x[base + j] < 0) y[ibl].qh[j] |= uint8_t(1 << ib);
      }
      const int ls = (y[ibl].scales[ib % 4] >> (4 * (ib / 4))) & 0xF;
      cb.find_best_match(d * float(ls), xaux, w + base, best_idx);
      for (int j = 0; j < kNg; ++j) {
        y[ibl].ql[2 * (4 * ib + j)] = uint8_t(best_idx[j] & 0xFF);
        y[ibl].ql[2 * (4 * ib + j) + 1] = uint8_t(best_idx[j] >> 8);
        const float* qv = cb.seed_values(best_idx[j]);
        for (int k = 0; k < 8; ++k) {
          const int p = 8 * j + k;
          const float q = qv[k] * float(ls);
          sumqx = std::fma(w[base + p] * xaux[p], q, sumqx);
          sumq2 = std::fma(w[base + p] * q, q, sumq2);
        }
      }
    }
  }
  if (sumq2 > 0) d = sumqx / sumq2;
  store_row(dst, d, y.data(), y.size() * sizeof(BlockIq3Kt));
}

// ---- IQ4_KT: 4-value groups with 15-bit seeds, two codebooks (offset flag per block) ----------

void quantize_row_iq4_kt(const float* x, uint8_t* dst, int n, const float* imatrix, Scratch& s) {
  constexpr int kNg = kSubBlock / 4;
  constexpr int kNtry = 2;
  const Codebook& cb1 = codebook_iq4kt(false);
  const Codebook& cb2 = codebook_iq4kt(true);
  const int nblock = n / kQK;
  std::vector<BlockIq4Kt> y(nblock);
  std::memset(y.data(), 0, y.size() * sizeof(BlockIq4Kt));
  float* w = s.weights.data();
  set_weights(nblock, x, imatrix, w, /*vectorized=*/true);
  const float amax_row = max_abs(x, n);
  if (amax_row == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq4Kt));

  float amax_scale = 0, max_scale = 0;
  int best_idx[kNg];
  for (int ibl = 0; ibl < nblock; ++ibl) {
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const float* xb = x + base;
      const float* wb = w + base;
      float* sc = s.scales.data() + ibl * kBlocks + ib;
      const float amax = max_abs(xb, kSubBlock);
      if (amax < 1e-16f) {
        *sc = 0;
        continue;
      }
      float best = 0;
      const float scale_0 = std::max(90.f, 124.f * amax / amax_row);
      for (int itry = -kNtry; itry <= kNtry; ++itry) {
        const float t = std::fma(8.f, float(itry), scale_0);
        float dl, score;
        cb1.find_best_match(amax / t, xb, wb, best_idx);
        cb1.find_best_scale(xb, wb, best_idx, &dl, &score);
        if (score > best) {
          best = score;
          *sc = dl;
        }
        cb1.find_best_match(-amax / t, xb, wb, best_idx);
        cb1.find_best_scale(xb, wb, best_idx, &dl, &score);
        if (score > best) {
          best = score;
          *sc = dl;
        }
      }
      // The offset codebook at the best scale so far. As in ik, a better score here sets the
      // block's flag without raising `best`, so the trials below compare against the old best.
      {
        float dl, score;
        cb2.find_best_match(*sc, xb, wb, best_idx);
        cb2.find_best_scale(xb, wb, best_idx, &dl, &score);
        if (score > best) {
          *sc = dl;
          y[ibl].qs[ib] = 1;
        }
      }
      bool with_offset = false;
      for (int itry = -kNtry; itry <= kNtry; ++itry) {
        const float t = std::fma(8.f, float(itry), scale_0);
        float dl, score;
        cb2.find_best_match(amax / t, xb, wb, best_idx);
        cb2.find_best_scale(xb, wb, best_idx, &dl, &score);
        if (score > best) {
          best = score;
          *sc = dl;
          with_offset = true;
        }
        cb2.find_best_match(-amax / t, xb, wb, best_idx);
        cb2.find_best_scale(xb, wb, best_idx, &dl, &score);
        if (score > best) {
          best = score;
          *sc = dl;
          with_offset = true;
        }
      }
      if (with_offset) y[ibl].qs[ib] = 1;
      if (std::abs(*sc) > amax_scale) {
        amax_scale = std::abs(*sc);
        max_scale = *sc;
      }
    }
  }

  float d = -max_scale / 64;
  if (d == 0) return store_row(dst, 0.f, y.data(), y.size() * sizeof(BlockIq4Kt));
  const float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    uint32_t* shb = y[ibl].qs;  // per block: bit 0 offset flag, bits 1-7 scale + 64, bits 8+3g: seed bits 12-14
    uint8_t* ql = reinterpret_cast<uint8_t*>(shb + kBlocks);
    uint8_t* qh = ql + 64;
    for (int ib = 0; ib < kBlocks; ++ib) {
      const int base = ibl * kQK + ib * kSubBlock;
      const Codebook& cb = shb[ib] & 1 ? cb2 : cb1;
      const int ls = std::min(nearest_int_fma(id, s.scales[ibl * kBlocks + ib]), 63);
      shb[ib] = (shb[ib] & ~0xFFu) | (uint32_t(uint8_t((ls + 64) << 1)) | (shb[ib] & 1));
      cb.find_best_match(d * float(ls), x + base, w + base, best_idx);
      for (int j = 0; j < kNg; ++j) {
        const int jj = kNg * ib + j;
        shb[ib] |= uint32_t(best_idx[j] >> 12) << (8 + 3 * j);
        ql[jj] = uint8_t(best_idx[j] & 0xFF);
        qh[jj % 32] |= uint8_t(((best_idx[j] >> 8) & 0xF) << (4 * (jj / 32)));
        const float* qv = cb.seed_values(best_idx[j]);
        for (int k = 0; k < 4; ++k) {
          const int p = base + 4 * j + k;
          const float q = qv[k] * float(ls);
          sumqx = std::fma(w[p] * x[p], q, sumqx);
          sumq2 = std::fma(w[p] * q, q, sumq2);
        }
      }
    }
  }
  if (sumq2 > 0) d = sumqx / sumq2;
  store_row(dst, d, y.data(), y.size() * sizeof(BlockIq4Kt));
}

// ik's float sums overflow for rows with |x| beyond ~1e4 (the block score squares sum(w q x) with
// w ~ x^2), giving wrong choices, Inf or NaN. Such rows (never seen in model weights) are quantized
// scaled by a power of two and the row scale is scaled back: exact, except that ik's absolute
// thresholds for near-zero blocks then apply to the scaled values.
constexpr float kHugeRow = 4096.f;

template <void (*Row)(const float*, uint8_t*, int, const float*, Scratch&), typename Block>
void quantize_rows_impl(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix, int group) {
  Scratch s(n, group);
  std::vector<float> scaled;
  const size_t row_bytes = sizeof(float) + static_cast<size_t>(n / kQK) * sizeof(Block);
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; ++r) {
    const float* x = src + r * n;
    uint8_t* y = out + r * row_bytes;
    const float amax = max_abs(x, n);
    if (!(amax > kHugeRow)) {
      Row(x, y, static_cast<int>(n), imatrix, s);
      continue;
    }
    int e = 0;
    std::frexp(amax, &e);
    scaled.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) scaled[static_cast<size_t>(j)] = std::ldexp(x[j], -e);
    Row(scaled.data(), y, static_cast<int>(n), imatrix, s);
    float d;
    std::memcpy(&d, y, sizeof(d));
    d = std::ldexp(d, e);
    std::memcpy(y, &d, sizeof(d));
  }
}

}  // namespace

void quantize_iq1_kt(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  quantize_rows_impl<quantize_row_iq1_kt, BlockIq1Kt>(src, dst, nrows, n, imatrix, 8);
}
void quantize_iq2_kt(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  quantize_rows_impl<quantize_row_iq2_kt, BlockIq2Kt>(src, dst, nrows, n, imatrix, 8);
}
void quantize_iq3_kt(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  quantize_rows_impl<quantize_row_iq3_kt, BlockIq3Kt>(src, dst, nrows, n, imatrix, 8);
}
void quantize_iq4_kt(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  quantize_rows_impl<quantize_row_iq4_kt, BlockIq4Kt>(src, dst, nrows, n, imatrix, 4);
}

}  // namespace expertmesh::quant::trellis
