// Mainline i-quants (IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_XS): dequantization and
// registration. Quantizers live in iquants_quantize_*.cpp, grids in iquants_tables*.cpp.
//
// Dequantization reproduces the peer's reference dequantize_row_* float for float: the block
// scale is formed in the same order (e.g. (d * (0.5 + s)) * 0.25), then multiplied by the grid
// value, then by the sign. Changing the association changes the last bit of some outputs.
#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/iquants_internal.h"
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
namespace iq {
namespace {

inline float sign_of(uint8_t signs, int j) { return (signs & kMaskIq2xs[j]) ? -1.f : 1.f; }

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void dequant_iq2_xxs(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;  // no row meta: rows are back to back
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq2xxs>(src, i);
    const float d = fp16_to_f32(b.d);
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const uint32_t idx = load_u32(&b.qs[4 * ib]);      // 4 grid indices, one per byte
      const uint32_t sgn = load_u32(&b.qs[4 * ib + 2]);  // 4 x 7 sign bits | scale << 28
      const float db = d * (0.5f + static_cast<float>(sgn >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l) {
        const uint64_t grid = kIq2xxsGrid[(idx >> (8 * l)) & 0xff];
        const uint8_t signs = kSignsIq2xs[(sgn >> (7 * l)) & 127];
        for (int j = 0; j < 8; ++j) y[j] = db * static_cast<float>(grid_byte(grid, j)) * sign_of(signs, j);
        y += 8;
      }
    }
  }
}

void dequant_iq2_xs(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq2xs>(src, i);
    const float d = fp16_to_f32(b.d);
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const float db[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f,
                           d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l) {
        const uint16_t q = b.qs[4 * ib + l];
        const uint64_t grid = kIq2xsGrid[q & 511];
        const uint8_t signs = kSignsIq2xs[q >> 9];
        for (int j = 0; j < 8; ++j) y[j] = db[l / 2] * static_cast<float>(grid_byte(grid, j)) * sign_of(signs, j);
        y += 8;
      }
    }
  }
}

void dequant_iq2_s(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq2s>(src, i);
    const float d = fp16_to_f32(b.d);
    const uint8_t* qs = b.qs;
    const uint8_t* signs = b.qs + kSuperBlock / 8;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const float db[2] = {d * (0.5f + static_cast<float>(b.scales[ib] & 0xf)) * 0.25f,
                           d * (0.5f + static_cast<float>(b.scales[ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l) {
        const uint64_t grid = kIq2sGrid[qs[l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300)];
        for (int j = 0; j < 8; ++j) y[j] = db[l / 2] * static_cast<float>(grid_byte(grid, j)) * sign_of(signs[l], j);
        y += 8;
      }
      qs += 4;
      signs += 4;
    }
  }
}

void dequant_iq3_xxs(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq3xxs>(src, i);
    const float d = fp16_to_f32(b.d);
    const uint8_t* qs = b.qs;
    const uint8_t* scales_and_signs = b.qs + kSuperBlock / 4;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const uint32_t aux = load_u32(scales_and_signs + 4 * ib);
      const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
      for (int l = 0; l < 4; ++l) {
        const uint8_t signs = kSignsIq2xs[(aux >> (7 * l)) & 127];
        const uint32_t g1 = kIq3xxsGrid[qs[2 * l + 0]];
        const uint32_t g2 = kIq3xxsGrid[qs[2 * l + 1]];
        for (int j = 0; j < 4; ++j) {
          y[j + 0] = db * static_cast<float>(grid_byte(g1, j)) * sign_of(signs, j + 0);
          y[j + 4] = db * static_cast<float>(grid_byte(g2, j)) * sign_of(signs, j + 4);
        }
        y += 8;
      }
      qs += 8;
    }
  }
}

void dequant_iq3_s(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq3s>(src, i);
    const float d = fp16_to_f32(b.d);
    const uint8_t* qs = b.qs;
    const uint8_t* signs = b.signs;
    // Two 32-weight sub-blocks share one scale byte; each has its own qh byte (9th index bits).
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const int ls = ib % 2 == 0 ? (b.scales[ib / 2] & 0xf) : (b.scales[ib / 2] >> 4);
      const float db = d * static_cast<float>(1 + 2 * ls);
      const uint8_t qh = b.qh[ib];
      for (int l = 0; l < 4; ++l) {
        const uint32_t g1 = kIq3sGrid[qs[2 * l + 0] | ((qh << (8 - 2 * l)) & 256)];
        const uint32_t g2 = kIq3sGrid[qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256)];
        for (int j = 0; j < 4; ++j) {
          y[j + 0] = db * static_cast<float>(grid_byte(g1, j)) * sign_of(signs[l], j + 0);
          y[j + 4] = db * static_cast<float>(grid_byte(g2, j)) * sign_of(signs[l], j + 4);
        }
        y += 8;
      }
      qs += 8;
      signs += 4;
    }
  }
}

void dequant_iq1_s(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq1s>(src, i);
    const float d = fp16_to_f32(b.d);
    const uint8_t* qs = b.qs;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const uint16_t qh = b.qh[ib];
      const float dl = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
      const float delta = (qh & 0x8000) ? -kIq1sDelta : kIq1sDelta;
      for (int l = 0; l < 4; ++l) {
        const uint64_t grid = kIq1sGrid[qs[l] | (((qh >> (3 * l)) & 7) << 8)];
        for (int j = 0; j < 8; ++j) {
          const auto g = static_cast<int8_t>(grid_byte(grid, j));
          y[j] = dl * (static_cast<float>(g) + delta);
        }
        y += 8;
      }
      qs += 4;
    }
  }
}

void dequant_iq1_m(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq1m>(src, i);
    uint16_t sc[4];
    std::memcpy(sc, b.scales, sizeof(sc));
    // The fp16 super-block scale is the top nibble of each of the four u16 scale words.
    const uint16_t d16 =
        static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    const float d = fp16_to_f32(d16);
    const uint8_t* qs = b.qs;
    const uint8_t* qh = b.qh;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const float dl1 = d * static_cast<float>(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1);
      const float dl2 = d * static_cast<float>(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1);
      const int idx[4] = {qs[0] | ((qh[0] << 8) & 0x700), qs[1] | ((qh[0] << 4) & 0x700),
                          qs[2] | ((qh[1] << 8) & 0x700), qs[3] | ((qh[1] << 4) & 0x700)};
      const float delta[4] = {(qh[0] & 0x08) ? -kIq1sDelta : kIq1sDelta, (qh[0] & 0x80) ? -kIq1sDelta : kIq1sDelta,
                              (qh[1] & 0x08) ? -kIq1sDelta : kIq1sDelta, (qh[1] & 0x80) ? -kIq1sDelta : kIq1sDelta};
      for (int l = 0; l < 4; ++l) {
        const float dl = l < 2 ? dl1 : dl2;
        const uint64_t grid = kIq1sGrid[idx[l]];
        for (int j = 0; j < 8; ++j) {
          const auto g = static_cast<int8_t>(grid_byte(grid, j));
          y[j] = dl * (static_cast<float>(g) + delta[l]);
        }
        y += 8;
      }
      qs += 4;
      qh += 2;
    }
  }
}

void dequant_iq4_xs(const void* src, float* y, int64_t nrows, int64_t n) {
  const int64_t nb = nrows * n / kSuperBlock;
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockIq4xs>(src, i);
    const float d = fp16_to_f32(b.d);
    const uint8_t* qs = b.qs;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      const int ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) | (((b.scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j + 0] = dl * static_cast<float>(kIq4kValues[qs[j] & 0xf]);
        y[j + 16] = dl * static_cast<float>(kIq4kValues[qs[j] >> 4]);
      }
      y += 32;
      qs += 16;
    }
  }
}

}  // namespace
}  // namespace iq

void register_iquants(QuantTable& t) {
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q, bool needs_imatrix) {
    QuantFns& f = t[static_cast<size_t>(ty)];
    f.to_float = tf;
    f.quantize = q;
    f.needs_imatrix = needs_imatrix;
  };
  // needs_imatrix mirrors ggml_quantize_requires_imatrix (IQ1_M is not in that list).
  set(GgmlType::IQ2_XXS, iq::dequant_iq2_xxs, iq::quantize_iq2_xxs, true);
  set(GgmlType::IQ2_XS, iq::dequant_iq2_xs, iq::quantize_iq2_xs, true);
  set(GgmlType::IQ2_S, iq::dequant_iq2_s, iq::quantize_iq2_s, false);
  set(GgmlType::IQ3_XXS, iq::dequant_iq3_xxs, iq::quantize_iq3_xxs, false);
  set(GgmlType::IQ3_S, iq::dequant_iq3_s, iq::quantize_iq3_s, false);
  set(GgmlType::IQ1_S, iq::dequant_iq1_s, iq::quantize_iq1_s, true);
  set(GgmlType::IQ1_M, iq::dequant_iq1_m, iq::quantize_iq1_m, false);
  set(GgmlType::IQ4_XS, iq::dequant_iq4_xs, iq::quantize_iq4_xs, false);
}

}  // namespace expertmesh::quant
