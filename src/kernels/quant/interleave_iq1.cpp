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
#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/iquants_tables.h"

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

}  // namespace

void register_interleaved_iq1(QuantTable& t) {
  t[static_cast<size_t>(GgmlType::IQ1_S_R4)].to_float = iq1_s_r4_to_float;
  t[static_cast<size_t>(GgmlType::IQ1_M_R4)].to_float = iq1_m_r4_to_float;
}

}  // namespace expertmesh::quant::interleave
