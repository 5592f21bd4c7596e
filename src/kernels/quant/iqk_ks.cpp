// ik's IQK "_KS" row-scaled types: IQ2_KS, IQ3_KS, IQ4_KS, IQ5_KS, IQ4_KSS.
// This file: dequantization (bit-exact with the peer's reference dequantize_row_* in
// ggml/src/iqk/iqk_quantize.cpp: `row_scale * (float)(sub-block scale)` first, then times the
// table value), the shared per-row quantize driver, and register_iqk_ks. The quantizers live in
// iqk_ks_quantize.cpp (IQ3/4/5_KS), iqk_ks_iq2.cpp (IQ2_KS) and iqk_kss.cpp (IQ4_KSS); layouts
// are documented in iqk_ks_internal.h.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_ks_internal.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
namespace iqk_ks {
namespace {

float read_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof(f));
  return f;
}
float read_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return fp16_to_f32(h);
}

void dequant_row_iq2_ks(const uint8_t* row, float* y, int64_t n) {
  const float d = read_f16(row);
  const auto* blocks = reinterpret_cast<const block_iq2_ks*>(row + 2);
  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const block_iq2_ks& b = blocks[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int ls = ((b.scales[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((b.extra >> (8 + ib)) & 1) << 4);
      const float dl = d * static_cast<float>(ls - 16);
      const int8_t* values = kIq2nlValues + 4 * ((b.extra >> ib) & 1);
      const uint8_t* qs = b.qs + 32 * (ib / 4);
      const int shift = 2 * (ib % 4);
      for (int j = 0; j < kBlock; ++j) y[j] = dl * static_cast<float>(values[(qs[j] >> shift) & 3]);
      y += kBlock;
    }
  }
}

void dequant_row_iq3_ks(const uint8_t* row, float* y, int64_t n) {
  const float d = read_f16(row);
  const auto* blocks = reinterpret_cast<const block_iq3_ks*>(row + 2);
  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const block_iq3_ks& b = blocks[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const int ls = ((b.scales[ib % 4] >> 4 * (ib / 4)) & 0xf) | (((b.extra >> ib) & 1) << 4);
      const float dl = d * static_cast<float>(ls - 16);
      const int8_t* values = kIq3nlValues + 8 * ((b.extra >> (8 + ib)) & 1);
      const uint8_t* qs = b.qs + 32 * (ib / 4);
      const int shift = 2 * (ib % 4);
      for (int j = 0; j < kBlock; ++j) {
        const int idx = ((qs[j] >> shift) & 3) | (((b.qh[j] >> ib) & 1) << 2);
        y[j] = dl * static_cast<float>(values[idx]);
      }
      y += kBlock;
    }
  }
}

void dequant_row_iq4_ks(const uint8_t* row, float* y, int64_t n) {
  const float d = read_f32(row);
  const auto* blocks = reinterpret_cast<const block_iq4_ks*>(row + 4);
  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const block_iq4_ks& b = blocks[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float dl = d * static_cast<float>((b.scales[ib] & 254) - 127);
      const int8_t* values = kIq4kValues + 16 * (b.scales[ib] & 1);
      const uint8_t* qs = b.qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * static_cast<float>(values[qs[j] & 0xf]);
        y[j + 16] = dl * static_cast<float>(values[qs[j] >> 4]);
      }
      y += kBlock;
    }
  }
}

void dequant_row_iq5_ks(const uint8_t* row, float* y, int64_t n) {
  const float d = read_f32(row);
  const auto* blocks = reinterpret_cast<const block_iq5_ks*>(row + 4);
  for (int64_t ibl = 0; ibl < n / kSuperBlock; ++ibl) {
    const block_iq5_ks& b = blocks[ibl];
    for (int ib = 0; ib < kSuperBlock / kBlock; ++ib) {
      const float dl = d * static_cast<float>((b.scales[ib] & 254) - 127);
      const int8_t* values = kIq5nlValues + 32 * (b.scales[ib] & 1);
      const uint8_t* qs = b.qs + 32 * (ib / 2);
      const int shift = 4 * (ib % 2);
      for (int j = 0; j < kBlock; ++j) {
        const int idx = ((qs[j] >> shift) & 0xf) | (((b.qh[j] >> ib) & 1) << 4);
        y[j] = dl * static_cast<float>(values[idx]);
      }
      y += kBlock;
    }
  }
}

void dequant_row_iq4_kss(const uint8_t* row, float* y, int64_t n) {
  const float d = read_f32(row);
  const uint8_t* qs = row + 4;  // 8 little-endian u16 words per 32-weight sub-block
  for (int64_t ib = 0; ib < n / kBlock; ++ib) {
    uint8_t idx[16];  // the IQ4_KS nibble bytes of this sub-block, rebuilt from the words
    int ls = 0;
    for (int k = 0; k < 8; ++k) {
      uint16_t w;
      std::memcpy(&w, qs + 2 * k, sizeof(w));
      uint16_t v = w & 0xfffe;
      v ^= static_cast<uint16_t>(v >> 1);
      idx[2 * k] = static_cast<uint8_t>(v & 0xff);
      idx[2 * k + 1] = static_cast<uint8_t>(v >> 8);
      ls |= (w & 1) << k;
    }
    const int8_t* values = kIq4kValues + 16 * (ls & 1);
    const float dl = d * static_cast<float>((ls & 254) - 127);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * static_cast<float>(values[idx[j] & 0xf]);
      y[j + 16] = dl * static_cast<float>(values[idx[j] >> 4]);
    }
    y += kBlock;
    qs += 16;
  }
}

template <void (*Row)(const uint8_t*, float*, int64_t), int kMeta, int kBlockBytes>
void to_float(const void* src, float* dst, int64_t nrows, int64_t n_per_row) {
  const int64_t row_bytes = kMeta + (n_per_row / kSuperBlock) * kBlockBytes;
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r) Row(s + r * row_bytes, dst + r * n_per_row, n_per_row);
}

// The peer's QHelper::row_weights: copy the imatrix, but a 32-weight block whose weights, values
// or their product are all (nearly) zero gets the uniform weight 1e-9 instead.
void sanitize_weights(const float* imatrix, const float* x, int64_t n, float* w) {
  constexpr float kEps = 1e-9f;
  constexpr float kEps2 = kEps * kEps;
  constexpr float kLimit = kBlock * kEps2;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    float sumw2 = 0, sumx2 = 0, sumwx = 0;
    for (int j = 0; j < kBlock; ++j) {
      const float wj = imatrix[i0 + j];
      const float xj = x[i0 + j];
      w[i0 + j] = wj;
      sumw2 = fmadd(wj, wj, sumw2);
      sumx2 = fmadd(xj, xj, sumx2);
      sumwx = fmadd(wj, std::fabs(xj), sumwx);
    }
    if (sumw2 > kLimit && sumx2 > kLimit && sumwx > kLimit) continue;
    std::fill(w + i0, w + i0 + kBlock, kEps);
  }
}

template <RowQuantizer Q, bool kFp16, int kBlockBytes>
void quantize(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix) {
  const int64_t row_bytes = (kFp16 ? 2 : 4) + (n_per_row / kSuperBlock) * kBlockBytes;
  quantize_rows_ks(src, dst, nrows, n_per_row, imatrix, row_bytes, kFp16, Q);
}

}  // namespace

void quantize_rows_ks(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix,
                      int64_t row_bytes, bool fp16_scale, RowQuantizer q) {
  // Rows beyond these magnitudes would overflow (x² summed over 256 values, times imatrix
  // weights and table values) or lose precision to denormals in the peer's float arithmetic;
  // the peer writes Inf/NaN or zeros for them. We quantize such a row scaled by 2^-e (exact)
  // and scale the row scale back. Rows inside the range are untouched, hence bit-exact.
  constexpr float kHuge = 4294967296.0f;      // 2^32
  constexpr float kTiny = 9.094947e-13f;      // 2^-40
  std::vector<float> weights(imatrix ? n_per_row : 0);
  std::vector<float> scaled;
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; ++r, src += n_per_row, out += row_bytes) {
    float amax = 0;
    for (int64_t j = 0; j < n_per_row; ++j) amax = std::max(amax, std::fabs(src[j]));
    const float* x = src;
    int e = 0;
    if (amax > 0 && (amax > kHuge || amax < kTiny)) {
      std::frexp(amax, &e);
      scaled.resize(n_per_row);
      for (int64_t j = 0; j < n_per_row; ++j) scaled[j] = std::ldexp(src[j], -e);
      x = scaled.data();
    }
    const float* w = nullptr;
    if (imatrix) {
      sanitize_weights(imatrix, x, n_per_row, weights.data());
      w = weights.data();
    }
    const int meta = fp16_scale ? 2 : 4;
    float d = q(x, out + meta, static_cast<int>(n_per_row), w);
    if (e != 0) d = std::ldexp(d, e);
    if (fp16_scale) {
      d = std::clamp(d, -65504.f, 65504.f);
      const uint16_t h = f32_to_fp16(d);
      std::memcpy(out, &h, sizeof(h));
    } else {
      d = std::clamp(d, -FLT_MAX, FLT_MAX);
      std::memcpy(out, &d, sizeof(d));
    }
  }
}

}  // namespace iqk_ks

void register_iqk_ks(QuantTable& t) {
  using namespace iqk_ks;
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
  };
  set(GgmlType::IQ2_KS, to_float<dequant_row_iq2_ks, 2, sizeof(block_iq2_ks)>,
      quantize<quantize_row_iq2_ks, true, sizeof(block_iq2_ks)>);
  set(GgmlType::IQ3_KS, to_float<dequant_row_iq3_ks, 2, sizeof(block_iq3_ks)>,
      quantize<quantize_row_iq3_ks, true, sizeof(block_iq3_ks)>);
  set(GgmlType::IQ4_KS, to_float<dequant_row_iq4_ks, 4, sizeof(block_iq4_ks)>,
      quantize<quantize_row_iq4_ks, false, sizeof(block_iq4_ks)>);
  set(GgmlType::IQ5_KS, to_float<dequant_row_iq5_ks, 4, sizeof(block_iq5_ks)>,
      quantize<quantize_row_iq5_ks, false, sizeof(block_iq5_ks)>);
  set(GgmlType::IQ4_KSS, to_float<dequant_row_iq4_kss, 4, sizeof(block_iq4_kss)>,
      quantize<quantize_row_iq4_kss, false, sizeof(block_iq4_kss)>);
}

}  // namespace expertmesh::quant
