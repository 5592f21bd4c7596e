// Q2_K..Q6_K row quantizers, ports of ggml-quants.c: quantize_row_qN_K_ref when there is no
// imatrix, quantize_row_qN_K_impl with one (what the peer's quantize_qN_K dispatches to).
// Arithmetic follows the peer's binary exactly (kquants.h); "fused" marks its contractions.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"

namespace expertmesh::quant::kq {

namespace {

// Packs 2-bit quants L[0..255] in ggml order: byte l of 32-byte group g holds L[128g + l + 32k]
// at bits 2k.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q4_K/Q5_K scale/min packing (inverse of scale_min_k4).
void pack_scales_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// Final pass shared by Q4_K/Q5_K: quants from the stored (fp16) scales and mins.
void requantize_k4(const float* x, uint16_t d16, uint16_t dmin16, const uint8_t* scales, int nmax, uint8_t* L) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, scales, &sc, &m);
    const float d = fp16_to_f32(d16) * static_cast<float>(sc);
    if (d == 0) continue;
    const float dm = fp16_to_f32(dmin16) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

// Q3_K: stores 16 6-bit scales (already offset by +32) and returns nothing.
void pack_scales_q3(const int* l6, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int l = l6[j];
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    }
    l >>= 4;
    scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
}

// Q3_K final pass and bit packing from the stored scales.
void finish_q3(const float* x, BlockQ3K* y, int8_t* L) {
  for (int j = 0; j < 16; ++j) {
    int sc = j < 8 ? y->scales[j] & 0xF : y->scales[j - 8] >> 4;
    sc = (sc | (((y->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
    const float d = fp16_to_f32(y->d) * static_cast<float>(sc);
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = std::max(-4, std::min(3, nearest_int(x[16 * j + ii] / d)));
      L[16 * j + ii] = static_cast<int8_t>(l + 4);
    }
  }
  std::memset(y->hmask, 0, sizeof(y->hmask));
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < kQK; ++j) {
    if (L[j] > 3) {
      y->hmask[m] |= hm;
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    if (++m == kQK / 8) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  pack_2bit(reinterpret_cast<const uint8_t*>(L), y->qs);
}

// Q6_K: scales from the per-16 search results, final pass and packing.
void finish_q6(const float* x, BlockQ6K* y, const float* scales, int8_t* L) {
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < 1e-15f) {
    std::memset(y, 0, sizeof(*y));
    return;
  }
  const float iscale = -128.f / max_scale;
  y->d = f32_to_fp16(1 / iscale);
  for (int ib = 0; ib < 16; ++ib)
    y->scales[ib] = static_cast<int8_t>(std::min(127, nearest_int_fma(iscale, scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_f32(y->d) * static_cast<float>(y->scales[j]);
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = std::max(-32, std::min(31, nearest_int(x[16 * j + ii] / d)));
      L[16 * j + ii] = static_cast<int8_t>(l + 32);
    }
  }
  uint8_t* ql = y->ql;
  uint8_t* qh = y->qh;
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
      const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                   ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

// Σx² over a super-block, left to right without fusion (the peer vectorized this loop).
float sum_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) {
    const float t = x[i] * x[i];
    s += t;
  }
  return s;
}

// ik's Q2_K reference first checks whether the data is ternary ({-m, 0, m}, e.g. TriLM) and
// then stores it exactly. The peer tests the whole chunk of rows it was handed; we test each
// row, which keeps the result independent of how rows are split among threads.
bool q2_k_trinet(const float* x, int64_t n, BlockQ2K* y) {
  float max = 0;
  for (int64_t j = 0; j < n; ++j) max = std::max(max, std::fabs(x[j]));
  float mse0 = 0, mse = 0;
  for (int64_t j = 0; j < n; ++j) {
    const int l = x[j] < -0.5f * max ? -1 : x[j] < 0.5f * max ? 0 : 1;
    mse0 = std::fma(x[j], x[j], mse0);                              // fused
    const float diff = std::fma(-static_cast<float>(l), max, x[j]);  // exact
    mse = std::fma(diff, diff, mse);                                 // fused
  }
  if (!(mse < 0.1f * mse0)) return false;
  uint8_t L[kQK];
  for (int64_t ibl = 0; ibl < n / kQK; ++ibl) {
    y[ibl].d = f32_to_fp16(max);
    y[ibl].dmin = f32_to_fp16(max);
    for (int ib = 0; ib < 16; ++ib) y[ibl].scales[ib] = 1 | (1 << 4);
    const float* xb = x + kQK * ibl;
    for (int j = 0; j < kQK; ++j) L[j] = xb[j] < -0.5f * max ? 0 : xb[j] < 0.5f * max ? 1 : 2;
    pack_2bit(L, y[ibl].qs);
  }
  return true;
}

}  // namespace

void quantize_row_q2_k(const float* x, BlockQ2K* y, int64_t n_per_row, const float* qw) {
  const int64_t nb = n_per_row / kQK;
  uint8_t L[kQK], Laux[16];
  float mins[16], scales[16], weight[16];
  if (!qw) {  // quantize_row_q2_K_ref
    if (q2_k_trinet(x, n_per_row, y)) return;
    for (int64_t i = 0; i < nb; ++i, x += kQK) {
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = std::fabs(x[16 * j + l]);
        scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                     /*use_mad=*/true, /*fused_sum_x=*/true);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
      }
      if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(nearest_int_fma(iscale, scales[j]));
        y[i].d = f32_to_fp16(max_scale / 15.f);
      } else {
        for (int j = 0; j < 16; ++j) y[i].scales[j] = 0;
        y[i].d = f32_to_fp16(0.f);
      }
      if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < 16; ++j) y[i].scales[j] |= static_cast<uint8_t>(nearest_int_fma(iscale, mins[j]) << 4);
        y[i].dmin = f32_to_fp16(max_min / 15.f);
      } else {
        y[i].dmin = f32_to_fp16(0.f);
      }
      for (int j = 0; j < 16; ++j) {
        const float d = fp16_to_f32(y[i].d) * static_cast<float>(y[i].scales[j] & 0xF);
        if (d == 0) continue;
        const float dm = fp16_to_f32(y[i].dmin) * static_cast<float>(y[i].scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii)
          L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, nearest_int((x[16 * j + ii] + dm) / d))));
      }
      pack_2bit(L, y[i].qs);
    }
    return;
  }
  // quantize_row_q2_K_impl
  float sw[16];
  uint8_t Ls[16], Lm[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float sigma2 = 0.75f * sum_squares(x, kQK) / kQK;
    for (int j = 0; j < 16; ++j) {
      const float* w = qw + kQK * i + 16 * j;
      for (int l = 0; l < 16; ++l) weight[l] = w[l] * std::sqrt(std::fma(x[16 * j + l], x[16 * j + l], sigma2));
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += weight[l];
      scales[j] = make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                   /*fused_sum_x2=*/true);
    }
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y[i].d = f32_to_fp16(dm);
    y[i].dmin = f32_to_fp16(mm);
    for (int j = 0; j < 16; ++j) {
      const float d = dm * static_cast<float>(Ls[j]);
      const float id = d != 0 ? 1 / d : 0.f;
      for (int l = 0; l < 16; ++l) {
        // (x + mm*Lm) * id: the peer fuses mm*Lm into the addition, and that into nearest_int.
        const float xm = std::fma(mm, static_cast<float>(Lm[j]), x[16 * j + l]);
        L[16 * j + l] = static_cast<uint8_t>(std::max(0, std::min(3, nearest_int_fma(xm, id))));
      }
    }
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    pack_2bit(L, y[i].qs);
  }
}

void quantize_row_q3_k(const float* x, BlockQ3K* y, int64_t n_per_row, const float* qw) {
  const int64_t nb = n_per_row / kQK;
  int8_t L[kQK];
  float scales[16];
  int l6[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    if (!qw) {  // quantize_row_q3_K_ref
      float max_scale = 0, amax = 0;
      for (int j = 0; j < 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float scale = std::fabs(scales[j]);
        if (scale > amax) {
          amax = scale;
          max_scale = scales[j];
        }
      }
      if (max_scale != 0) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j) {
          const int8_t l = static_cast<int8_t>(nearest_int_fma(iscale, scales[j]));
          l6[j] = std::max<int>(-32, std::min<int>(31, l)) + 32;
        }
        pack_scales_q3(l6, y[i].scales);
        y[i].d = f32_to_fp16(1 / iscale);
      } else {
        std::memset(y[i].scales, 0, 12);
        y[i].d = f32_to_fp16(0.f);
      }
    } else {  // quantize_row_q3_K_impl
      const float sigma2 = 2 * sum_squares(x, kQK) / kQK;
      float weight[16], sw[16];
      int8_t Ls[16];
      for (int j = 0; j < 16; ++j) {
        const float* w = qw + kQK * i + 16 * j;
        for (int l = 0; l < 16; ++l) weight[l] = w[l] * std::sqrt(std::fma(x[16 * j + l], x[16 * j + l], sigma2));
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
      }
      const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
      for (int j = 0; j < 16; ++j) l6[j] = Ls[j];
      pack_scales_q3(l6, y[i].scales);
      y[i].d = f32_to_fp16(d_block);
    }
    finish_q3(x, &y[i], L);
  }
}

void quantize_row_q4_k(const float* x, BlockQ4K* y, int64_t n_per_row, const float* qw) {
  const int64_t nb = n_per_row / kQK;
  uint8_t L[kQK], Laux[32], ls[8], lm[8];
  float weights[32], mins[8], scales[8], sw[8];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    if (!qw) {  // quantize_row_q4_K_ref
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j) {
        const float av_x = std::sqrt(sum_squares(x + 32 * j, 32) / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20,
                                     /*use_mad=*/false, /*fused_sum_x=*/false);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
      }
      const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
      const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
      for (int j = 0; j < 8; ++j) {
        ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int_fma(inv_scale, scales[j])));
        lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int_fma(inv_min, mins[j])));
      }
      pack_scales_k4(ls, lm, y[i].scales);
      y[i].d = f32_to_fp16(max_scale / 63.f);
      y[i].dmin = f32_to_fp16(max_min / 63.f);
    } else {  // quantize_row_q4_K_impl
      const float sigma2 = 2 * sum_squares(x, kQK) / kQK;
      for (int j = 0; j < 8; ++j) {
        const float* w = qw + kQK * i + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = w[l] * std::sqrt(std::fma(x[32 * j + l], x[32 * j + l], sigma2));
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx3_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                     /*fused_sum_x2=*/false);
      }
      const float d_block = make_qp_quants(8, 63, scales, ls, sw);
      const float m_block = make_qp_quants(8, 63, mins, lm, sw);
      pack_scales_k4(ls, lm, y[i].scales);
      y[i].d = f32_to_fp16(d_block);
      y[i].dmin = f32_to_fp16(m_block);
    }
    requantize_k4(x, y[i].d, y[i].dmin, y[i].scales, 15, L);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQK; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

void quantize_row_q5_k(const float* x, BlockQ5K* y, int64_t n_per_row, const float* qw) {
  const int64_t nb = n_per_row / kQK;
  uint8_t L[kQK], Laux[32], ls[8], lm[8];
  float weights[32], mins[8], scales[8], sw[8];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    if (!qw) {  // quantize_row_q5_K_ref
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j) {
        const float av_x = std::sqrt(sum_squares(x + 32 * j, 32) / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                     /*use_mad=*/false, /*fused_sum_x=*/false);
        max_scale = std::max(max_scale, scales[j]);
        max_min = std::max(max_min, mins[j]);
      }
      const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
      const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
      for (int j = 0; j < 8; ++j) {
        ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int_fma(inv_scale, scales[j])));
        lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int_fma(inv_min, mins[j])));
      }
      pack_scales_k4(ls, lm, y[i].scales);
      y[i].d = f32_to_fp16(max_scale / 63.f);
      y[i].dmin = f32_to_fp16(max_min / 63.f);
    } else {  // quantize_row_q5_K_impl
      const float sigma2 = 2 * sum_squares(x, kQK) / kQK;
      for (int j = 0; j < 8; ++j) {
        const float* w = qw + kQK * i + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = w[l] * std::sqrt(std::fma(x[32 * j + l], x[32 * j + l], sigma2));
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx3_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                     /*fused_sum_x2=*/false);
      }
      const float d_block = make_qp_quants(8, 63, scales, ls, sw);
      const float m_block = make_qp_quants(8, 63, mins, lm, sw);
      for (int j = 0; j < 8; ++j) {
        ls[j] = std::min<uint8_t>(63, ls[j]);
        lm[j] = std::min<uint8_t>(63, lm[j]);
      }
      pack_scales_k4(ls, lm, y[i].scales);
      y[i].d = f32_to_fp16(d_block);
      y[i].dmin = f32_to_fp16(m_block);
    }
    requantize_k4(x, y[i].d, y[i].dmin, y[i].scales, 31, L);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQK; n += 64, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
    }
  }
}

void quantize_row_q6_k(const float* x, BlockQ6K* y, int64_t n_per_row, const float* qw) {
  const int64_t nb = n_per_row / kQK;
  int8_t L[kQK];
  float scales[16];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    // Reference and imatrix variants differ only in the weights of the per-16 search.
    for (int ib = 0; ib < 16; ++ib)
      scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + kQK * i + 16 * ib : nullptr);
    finish_q6(x, &y[i], scales, L);
  }
}

}  // namespace expertmesh::quant::kq
