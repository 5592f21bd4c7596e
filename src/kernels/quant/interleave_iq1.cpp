// IQ1_S_R4 and IQ1_M_R4: ik's 4-row 1-bit formats. Unlike the other _R4 types they are not
// repacks of IQ1_S / IQ1_M but formats of their own with 32-weight blocks and one fp16 scale per
// row (the 4 scales of a group are the group's row meta, stored first).
//
// IQ1_S_R4 block (4 rows x 32 weights, 24 bytes): qs[16] @0, qh u16[4] @16. For row k and group
// i of 8 weights: grid index = qs[4*i + k] | ((qh[k] >> 3*i) & 7) << 8; bits 12..14 of qh[k] are
// the block scale ls, bit 15 the sign of the shift. Value = d * (2*ls + 1) * (grid + ±0.125).
//
// IQ1_M_R4 block (28 bytes): qs[16] @0, qh[8] @16, scales[4] @24. For row k and half i (16
// weights): grid indices qs[8*i + k] | (qh[4*i + k] & 7) << 8 and qs[8*i + k + 4] |
// (qh[4*i + k] & 0x70) << 4, shift signs in bits 3 / 7 of qh[4*i + k]; half i's scale is nibble
// i of scales[k]. Value = d * scale * (grid + ±0.125).
//
// Quantizers: ik's quantize_iq1_s_r4 / quantize_iq1_m_r4 (iqk_quantize.cpp), with the block
// searches of IQ1_S / IQ1_M (iquants_internal.h). Per row k of a group, every 32-weight block is
// searched on its own; the row's fp16 scale is 1.0625 * max(block scale) / 15 and the block
// scales are then rounded against max / 15. No imatrix is required (the peer's
// ggml_quantize_requires_imatrix does not list them; llama-quantize's own rule is enforced by
// the quantize planner). There are no golden files for these types: the float operation order
// follows the peer's source with the FMA fusion its build makes elsewhere, unverified.
#include <algorithm>
#include <cmath>

#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/iquants_internal.h"
#include "kernels/quant/iquants_tables.h"

// Fusions are spelled out with iq::fmadd; clang must not add its own.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

namespace expertmesh::quant::interleave {
namespace {

constexpr int kBlock = 32;

inline int8_t grid_value(uint16_t idx, int j) { return static_cast<int8_t>(kIq1sGrid[idx] >> (8 * j)); }

void scales_of(const uint8_t* group, float* d) {
  for (int k = 0; k < 4; ++k) d[k] = fp16_to_f32(load<uint16_t>(group + 2 * k));
}

// dequantize_row_iq1_s_r4.
void iq1_s_r4_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* group = static_cast<const uint8_t*>(src);
  const int64_t nblock = n / kBlock;
  for (int64_t r = 0; r < nrows; r += 4, group += 8 + 24 * nblock, y += 4 * n) {
    float d[4];
    scales_of(group, d);
    const uint8_t* b = group + 8;
    for (int64_t ib = 0; ib < nblock; ++ib, b += 24) {
      for (int k = 0; k < 4; ++k) {
        const uint16_t qh = load<uint16_t>(b + 16 + 2 * k);
        const float shift = (qh & 0x8000) ? -kIq1sDelta : kIq1sDelta;
        const float dl = d[k] * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
        for (int i = 0; i < 4; ++i) {
          const uint16_t idx = static_cast<uint16_t>(b[4 * i + k] | (((qh >> (3 * i)) & 7) << 8));
          for (int j = 0; j < 8; ++j)
            y[k * n + kBlock * ib + 8 * i + j] = dl * (static_cast<float>(grid_value(idx, j)) + shift);
        }
      }
    }
  }
}

// dequantize_row_iq1_m_r4.
void iq1_m_r4_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* group = static_cast<const uint8_t*>(src);
  const int64_t nblock = n / kBlock;
  for (int64_t r = 0; r < nrows; r += 4, group += 8 + 28 * nblock, y += 4 * n) {
    float d[4];
    scales_of(group, d);
    const uint8_t* b = group + 8;
    for (int64_t ib = 0; ib < nblock; ++ib, b += 28) {
      for (int k = 0; k < 4; ++k) {
        const float dl[2] = {d[k] * static_cast<float>(b[24 + k] & 0xf), d[k] * static_cast<float>(b[24 + k] >> 4)};
        for (int i = 0; i < 2; ++i) {
          const uint8_t qh = b[16 + 4 * i + k];
          const uint16_t idx1 = static_cast<uint16_t>(b[8 * i + k] | ((qh & 0x07) << 8));
          const uint16_t idx2 = static_cast<uint16_t>(b[8 * i + k + 4] | ((qh & 0x70) << 4));
          const float delta1 = (qh & 0x08) ? -kIq1sDelta : kIq1sDelta;
          const float delta2 = (qh & 0x80) ? -kIq1sDelta : kIq1sDelta;
          float* yk = y + k * n + kBlock * ib + 16 * i;
          for (int j = 0; j < 8; ++j) yk[j] = dl[i] * (static_cast<float>(grid_value(idx1, j)) + delta1);
          for (int j = 0; j < 8; ++j) yk[j + 8] = dl[i] * (static_cast<float>(grid_value(idx2, j)) + delta2);
        }
      }
    }
  }
}

// ---- quantizers -----------------------------------------------------------------------------

// A block whose sum of squares is below this is stored as "all zero": grid entry 1029 (eight
// zeros; high bits 4, low byte 5) in every group, block scale 0.
constexpr float kZeroBlockSumx2 = 1e-14f;
constexpr uint16_t kZeroGridIndex = 1029;
// The row scale is 1.0625 * max / 15 (the peer's fudge factor for the _R4 variants).
constexpr float kRowScaleFudge = 1.0625f;

// Importance of each of the n weights of xb. With an imatrix: imatrix * sqrt(sigma2 + x^2);
// where the weighted sum of |x| nearly vanishes (all weights zero, or x zero where they are
// not) the imatrix is ignored, as without one: sqrt(sigma2 + x^2).
void block_weights(const float* xb, const float* imatrix, float sigma2, int n, float* weight) {
  if (imatrix) {
    float sumwx = 0;
    for (int j = 0; j < n; ++j) {
      weight[j] = imatrix[j] * std::sqrt(iq::fmadd(xb[j], xb[j], sigma2));
      sumwx = iq::fmadd(weight[j], std::fabs(xb[j]), sumwx);
    }
    if (!(sumwx < kZeroBlockSumx2)) return;  // as the peer: a NaN sum keeps the imatrix
  }
  for (int j = 0; j < n; ++j) weight[j] = std::sqrt(iq::fmadd(xb[j], xb[j], sigma2));
}

// Row scales of a group (fp16 meta) from each row's largest block scale; returns 1 / (max / 15)
// per row (0 for an all-zero row) in invd.
void store_row_scales(uint8_t* group, const float* max, float* invd) {
  for (int k = 0; k < 4; ++k) {
    store<uint16_t>(group + 2 * k, iq::iq_scale_to_fp16(kRowScaleFudge * max[k] / 15));
    invd[k] = max[k] != 0 ? 15 / max[k] : 0.f;
  }
}

// quantize_iq1_s_r4. Block (24 bytes) per layout above; scales[4*ib + k]: block ib of row k.
void quantize_iq1_s_r4(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  const iq::Lattice& lat = iq::iq1s_lattice();
  const int64_t nblock = n / kBlock;
  std::vector<float> scales(static_cast<size_t>(4 * nblock));
  auto* group = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; r += 4, group += 8 + 24 * nblock, src += 4 * n) {
    float max[4] = {0, 0, 0, 0};
    for (int64_t ib = 0; ib < nblock; ++ib) {
      uint8_t* b = group + 8 + 24 * ib;
      for (int k = 0; k < 4; ++k) {
        const float* xb = src + k * n + kBlock * ib;
        float& scale = scales[static_cast<size_t>(4 * ib + k)];
        const float sumx2 = iq::sum_squares(xb, kBlock);
        uint16_t index[4];
        int shift = 1;
        if (sumx2 < kZeroBlockSumx2) {
          scale = 0;
          for (auto& i : index) i = kZeroGridIndex;
        } else {
          float weight[kBlock];
          block_weights(xb, imatrix ? imatrix + kBlock * ib : nullptr, 1.5f * sumx2 / kBlock, kBlock, weight);
          scale = iq::process_block_iq1_s(lat, xb, weight, index, &shift);
          max[k] = std::max(max[k], scale);
        }
        unsigned h = shift < 0 ? 0x8000u : 0u;
        for (int i = 0; i < 4; ++i) {
          b[4 * i + k] = static_cast<uint8_t>(index[i] & 255);
          h |= static_cast<unsigned>(index[i] >> 8) << (3 * i);
        }
        store<uint16_t>(b + 16 + 2 * k, static_cast<uint16_t>(h));
      }
    }
    float invd[4];
    store_row_scales(group, max, invd);
    // Block scale (2 ls + 1) * d: ls = round((scale / d - 1) / 2), d = max / 15.
    for (int64_t ib = 0; ib < nblock; ++ib) {
      uint8_t* b = group + 8 + 24 * ib;
      for (int k = 0; k < 4; ++k) {
        const float scale = scales[static_cast<size_t>(4 * ib + k)];
        const int ls = std::clamp(iq::nearest_int_fma(0.5f, iq::fmadd(scale, invd[k], -1.f)), 0, 7);
        store<uint16_t>(b + 16 + 2 * k, static_cast<uint16_t>(load<uint16_t>(b + 16 + 2 * k) | (ls << 12)));
      }
    }
  }
}

// quantize_iq1_m_r4. Block (28 bytes) per layout above; each 32-weight block is two 16-weight
// halves searched separately; scales[8*ib + 2*k + i]: half i of block ib of row k.
void quantize_iq1_m_r4(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  constexpr int kHalf = kBlock / 2;
  constexpr uint8_t kShiftMasks[4] = {0x00, 0x80, 0x08, 0x88};  // qh shift bits per best_k
  const iq::Lattice& lat = iq::iq1s_lattice();
  const int64_t nblock = n / kBlock;
  std::vector<float> scales(static_cast<size_t>(8 * nblock));
  auto* group = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; r += 4, group += 8 + 28 * nblock, src += 4 * n) {
    float max[4] = {0, 0, 0, 0};
    for (int64_t ib = 0; ib < nblock; ++ib) {
      uint8_t* b = group + 8 + 28 * ib;
      for (int k = 0; k < 4; ++k) {
        const float* xb = src + k * n + kBlock * ib;
        float* scale = scales.data() + 8 * ib + 2 * k;
        const float sumx2_half[2] = {iq::sum_squares(xb, kHalf), iq::sum_squares(xb + kHalf, kHalf)};
        const float sumx2 = sumx2_half[0] + sumx2_half[1];
        uint16_t index[4] = {kZeroGridIndex, kZeroGridIndex, kZeroGridIndex, kZeroGridIndex};
        // An all-zero half gets scale 0, so its shift bits do not matter: 0 (the peer leaves
        // the previous half's value there).
        int best_k[2] = {0, 0};
        scale[0] = scale[1] = 0;
        if (sumx2 >= kZeroBlockSumx2) {
          const float sigma2 = 1.5f * sumx2 / kBlock;
          const float* im = imatrix ? imatrix + kBlock * ib : nullptr;
          float weight[kBlock];
          for (int i = 0; i < 2; ++i)  // the imatrix fallback is decided per half
            block_weights(xb + kHalf * i, im ? im + kHalf * i : nullptr, sigma2, kHalf, weight + kHalf * i);
          for (int i = 0; i < 2; ++i) {
            if (sumx2_half[i] > kZeroBlockSumx2)
              scale[i] = iq::process_block_iq1_m(lat, xb + kHalf * i, weight + kHalf * i, index + 2 * i, &best_k[i]);
          }
          max[k] = std::max(max[k], std::max(scale[0], scale[1]));
        }
        for (int i = 0; i < 4; ++i) b[4 * i + k] = static_cast<uint8_t>(index[i] & 255);
        for (int i = 0; i < 2; ++i) {
          b[16 + 4 * i + k] =
              static_cast<uint8_t>((index[2 * i] >> 8) | ((index[2 * i + 1] >> 8) << 4) | kShiftMasks[best_k[i]]);
        }
      }
    }
    float invd[4];
    store_row_scales(group, max, invd);
    // 4-bit half scales: round(scale / d), d = max / 15.
    for (int64_t ib = 0; ib < nblock; ++ib) {
      uint8_t* b = group + 8 + 28 * ib;
      for (int k = 0; k < 4; ++k) {
        const float* scale = scales.data() + 8 * ib + 2 * k;
        const int ls0 = std::clamp(iq::nearest_int_fma(scale[0], invd[k]), 0, 15);
        const int ls1 = std::clamp(iq::nearest_int_fma(scale[1], invd[k]), 0, 15);
        b[24 + k] = static_cast<uint8_t>(ls0 | (ls1 << 4));
      }
    }
  }
}

}  // namespace

void register_interleaved_iq1(QuantTable& t) {
  QuantFns& s = t[static_cast<size_t>(GgmlType::IQ1_S_R4)];
  s.to_float = iq1_s_r4_to_float;
  s.quantize = quantize_iq1_s_r4;
  s.needs_imatrix = false;
  QuantFns& m = t[static_cast<size_t>(GgmlType::IQ1_M_R4)];
  m.to_float = iq1_m_r4_to_float;
  m.quantize = quantize_iq1_m_r4;
  m.needs_imatrix = false;
}

}  // namespace expertmesh::quant::interleave
