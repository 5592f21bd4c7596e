// IQK "_K" family: IQ2_K, IQ3_K, IQ4_K, IQ5_K, IQ6_K, IQ2_KL (ik_llama.cpp iqk_quantize.cpp).
// This file: the reference dequantizers (bit-exact with ik's `dequantize_row_*`, including the
// order of float operations) and the registration. Quantizers: iqk_k_quantize*.cpp.
#include <cmath>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_k_common.h"
#include "kernels/quant/iqk_k_quantize.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
namespace iqk_k {
namespace {

// ---- IQ2_K -------------------------------------------------------------------------------------
void dequant_block_iq2_k(const BlockIq2K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* qs = b.qs;
  uint16_t extra = b.extra;
  int shift = 0;
  for (int ib = 0; ib < kQK / 32; ++ib) {
    // The scale product is rounded to float once, then multiplied by the table value.
    const float dl1 = d * static_cast<float>((b.scales[ib] & 0xf) - 8);
    const float dl2 = d * static_cast<float>((b.scales[ib] >> 4) - 8);
    const int8_t* v1 = kIq2nlValues + ((extra & 1) ? 4 : 0);
    const int8_t* v2 = kIq2nlValues + ((extra & 2) ? 4 : 0);
    extra >>= 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = dl1 * static_cast<float>(v1[(qs[j] >> shift) & 3]);
      y[j + 16] = dl2 * static_cast<float>(v2[(qs[j + 16] >> shift) & 3]);
    }
    y += 32;
    shift += 2;
    if (shift == 8) {
      qs += 32;
      shift = 0;
    }
  }
}

// ---- IQ3_K -------------------------------------------------------------------------------------
void dequant_block_iq3_k(const BlockIq3K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* qs = b.qs;
  uint16_t sh = b.scales_h;
  uint16_t extra = b.extra;
  for (int ib = 0; ib < kQK / 32; ++ib) {
    const int s1 = (2 * (b.scales_l[ib] & 0xf) + 1) * ((sh & 1) ? -1 : 1);
    const int s2 = (2 * (b.scales_l[ib] >> 4) + 1) * ((sh & 2) ? -1 : 1);
    sh >>= 2;
    const float dl1 = d * static_cast<float>(s1);
    const float dl2 = d * static_cast<float>(s2);
    const int8_t* v1 = kIq3nlValues + ((extra & 1) ? 8 : 0);
    const int8_t* v2 = kIq3nlValues + ((extra & 2) ? 8 : 0);
    extra >>= 2;
    const int shift_l = 2 * (ib % 4);
    const int shift_h = ib;
    for (int j = 0; j < 16; ++j) {
      const int q1 = ((qs[j] >> shift_l) & 3) | (((b.qh[j] >> shift_h) & 1) << 2);
      const int q2 = ((qs[j + 16] >> shift_l) & 3) | (((b.qh[j + 16] >> shift_h) & 1) << 2);
      y[j] = dl1 * static_cast<float>(v1[q1]);
      y[j + 16] = dl2 * static_cast<float>(v2[q2]);
    }
    y += 32;
    if (shift_l == 6) qs += 32;
  }
}

// ---- IQ4_K -------------------------------------------------------------------------------------
void dequant_block_iq4_k(const BlockIq4K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* qs = b.qs;
  uint16_t extra = b.extra;
  for (int ib = 0; ib < kQK / 32; ++ib) {
    const int sh = b.scales_h[ib / 2] >> (4 * (ib % 2));
    const float dl1 = d * static_cast<float>(((b.scales_l[ib] & 0xf) | ((sh << 4) & 0x30)) - 32);
    const float dl2 = d * static_cast<float>(((b.scales_l[ib] >> 4) | ((sh << 2) & 0x30)) - 32);
    const int8_t* v1 = kIq4kValues + ((extra & 1) ? 16 : 0);
    const int8_t* v2 = kIq4kValues + ((extra & 2) ? 16 : 0);
    extra >>= 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = dl1 * static_cast<float>(v1[qs[j] & 0xf]);
      y[j + 16] = dl2 * static_cast<float>(v2[qs[j] >> 4]);
    }
    y += 32;
    qs += 16;
  }
}

// ---- IQ5_K -------------------------------------------------------------------------------------
void dequant_block_iq5_k(const BlockIq5K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* qs = b.qs;
  const uint8_t* qh = b.qh;
  uint16_t extra = b.extra;
  int shift = 0;
  for (int c = 0; c < kQK / 64; ++c) {
    const uint8_t sl0 = b.scales_l[2 * c], sl1 = b.scales_l[2 * c + 1], sh = b.scales_h[c];
    const float dl1 = d * static_cast<float>(((sl0 & 0xf) | ((sh << 4) & 0x30)) - 32);
    const float dl2 = d * static_cast<float>(((sl0 >> 4) | ((sh << 2) & 0x30)) - 32);
    const float dl3 = d * static_cast<float>(((sl1 & 0xf) | (sh & 0x30)) - 32);
    const float dl4 = d * static_cast<float>(((sl1 >> 4) | ((sh >> 2) & 0x30)) - 32);
    const int8_t* v1 = kIq5nlValues + ((extra & 1) ? 32 : 0);
    const int8_t* v2 = kIq5nlValues + ((extra & 2) ? 32 : 0);
    const int8_t* v3 = kIq5nlValues + ((extra & 4) ? 32 : 0);
    const int8_t* v4 = kIq5nlValues + ((extra & 8) ? 32 : 0);
    for (int j = 0; j < 16; ++j) {
      const int h0 = qh[j] >> shift, h1 = qh[j + 16] >> shift;
      y[j] = dl1 * static_cast<float>(v1[(qs[j] & 0xf) | ((h0 & 1) << 4)]);
      y[j + 16] = dl2 * static_cast<float>(v2[(qs[j + 16] & 0xf) | ((h1 & 1) << 4)]);
      y[j + 32] = dl3 * static_cast<float>(v3[(qs[j] >> 4) | ((h0 & 2) << 3)]);
      y[j + 48] = dl4 * static_cast<float>(v4[(qs[j + 16] >> 4) | ((h1 & 2) << 3)]);
    }
    y += 64;
    qs += 32;
    extra >>= 4;
    shift += 2;
    if (shift == 8) {
      qh += 32;
      shift = 0;
    }
  }
}

// ---- IQ6_K -------------------------------------------------------------------------------------
// The reference grid value of a 6-bit index q: the cubic A + q(B + q(-C + qD)) in float, then
// +1 for shifted sub-blocks. ik's build (x86-64, FMA available) contracts each Horner step into a
// fused multiply-add, and its golden F32 hashes carry that rounding: we spell the FMAs out so the
// result does not depend on our compiler flags. (Kernels use the rounded kIq6nlValues instead.)
inline float iq6k_grid(float q, float shift) {
  constexpr float kA = -127.f, kB = 6.2568f, kC = 0.11218f, kD = 0.0011972f;
  const float t1 = std::fma(q, kD, -kC);
  const float t2 = std::fma(q, t1, kB);
  const float t3 = std::fma(q, t2, kA);
  return t3 + shift;
}

void dequant_block_iq6_k(const BlockIq6K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* qs = b.qs;
  const uint8_t* qh = b.qh;
  uint16_t extra = b.extra;
  int shift = 0;
  for (int c = 0; c < kQK / 64; ++c) {
    const float dl1 = d * static_cast<float>(b.scales[4 * c + 0]);
    const float dl2 = d * static_cast<float>(b.scales[4 * c + 1]);
    const float dl3 = d * static_cast<float>(b.scales[4 * c + 2]);
    const float dl4 = d * static_cast<float>(b.scales[4 * c + 3]);
    const float m1 = (extra & 1) ? 1.f : 0.f;
    const float m2 = (extra & 2) ? 1.f : 0.f;
    const float m3 = (extra & 4) ? 1.f : 0.f;
    const float m4 = (extra & 8) ? 1.f : 0.f;
    for (int j = 0; j < 16; ++j) {
      const int h0 = qh[j] >> shift, h1 = qh[j + 16] >> shift;
      const float q1 = static_cast<float>((qs[j] & 0xf) | ((h0 & 0x03) << 4));
      const float q2 = static_cast<float>((qs[j + 16] & 0xf) | ((h1 & 0x03) << 4));
      const float q3 = static_cast<float>((qs[j] >> 4) | ((h0 & 0x0c) << 2));
      const float q4 = static_cast<float>((qs[j + 16] >> 4) | ((h1 & 0x0c) << 2));
      y[j] = dl1 * iq6k_grid(q1, m1);
      y[j + 16] = dl2 * iq6k_grid(q2, m2);
      y[j + 32] = dl3 * iq6k_grid(q3, m3);
      y[j + 48] = dl4 * iq6k_grid(q4, m4);
    }
    y += 64;
    qs += 32;
    extra >>= 4;
    shift += 4;
    if (shift == 8) {
      qh += 32;
      shift = 0;
    }
  }
}

// ---- IQ2_KL ------------------------------------------------------------------------------------
// `d` is the row's fp16 scale (row meta).
void dequant_block_iq2_kl(const BlockIq2KL& b, float d, float* y) {
  const uint8_t* qs = b.qs;
  for (int c = 0; c < kQK / 64; ++c) {
    const int s1 = ((b.scales_l[(2 * c) % 4] >> (4 * (c / 2))) & 0xf) | (((b.scales_h >> (4 * c)) & 3) << 4);
    const int s2 = ((b.scales_l[(2 * c + 1) % 4] >> (4 * (c / 2))) & 0xf) | (((b.scales_h >> (4 * c + 2)) & 3) << 4);
    const float dl1 = d * static_cast<float>(s1 - 32);
    const float dl2 = d * static_cast<float>(s2 - 32);
    for (int j = 0; j < 16; ++j) {
      const uint16_t p1 = kIq2klValues[(qs[j] & 0xf) | (((b.qh[j] >> (2 * c)) & 1) << 4)];
      const uint16_t p2 = kIq2klValues[(qs[j] >> 4) | (((b.qh[j] >> (2 * c + 1)) & 1) << 4)];
      y[2 * j] = dl1 * static_cast<float>(static_cast<int8_t>(p1 & 0xff));
      y[2 * j + 1] = dl1 * static_cast<float>(static_cast<int8_t>(p1 >> 8));
      y[2 * j + 32] = dl2 * static_cast<float>(static_cast<int8_t>(p2 & 0xff));
      y[2 * j + 33] = dl2 * static_cast<float>(static_cast<int8_t>(p2 >> 8));
    }
    y += 64;
    qs += 16;
  }
}

// Rows without meta: nblocks consecutive blocks per row.
template <typename Block, void (*Dequant)(const Block&, float*)>
void to_float_blocks(const void* src, float* dst, int64_t nrows, int64_t n_per_row) {
  const int64_t nb = n_per_row / kQK;
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nrows * nb; ++i) {
    Block b;
    std::memcpy(&b, p + i * sizeof(Block), sizeof(Block));
    Dequant(b, dst + i * kQK);
  }
}

// IQ2_KL rows: fp16 d, then the blocks.
void to_float_iq2_kl(const void* src, float* dst, int64_t nrows, int64_t n_per_row) {
  const int64_t nb = n_per_row / kQK;
  const int64_t rs = 2 + nb * static_cast<int64_t>(sizeof(BlockIq2KL));
  for (int64_t r = 0; r < nrows; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(src) + r * rs;
    uint16_t dh;
    std::memcpy(&dh, row, 2);
    const float d = fp16_to_f32(dh);
    for (int64_t i = 0; i < nb; ++i) {
      BlockIq2KL b;
      std::memcpy(&b, row + 2 + i * sizeof(BlockIq2KL), sizeof(BlockIq2KL));
      dequant_block_iq2_kl(b, d, dst + r * n_per_row + i * kQK);
    }
  }
}

}  // namespace
}  // namespace iqk_k

void register_iqk_k(QuantTable& t) {
  using namespace iqk_k;
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
  };
  set(GgmlType::IQ2_K, to_float_blocks<BlockIq2K, dequant_block_iq2_k>, quantize_iq2_k);
  set(GgmlType::IQ3_K, to_float_blocks<BlockIq3K, dequant_block_iq3_k>, quantize_iq3_k);
  set(GgmlType::IQ4_K, to_float_blocks<BlockIq4K, dequant_block_iq4_k>, quantize_iq4_k);
  set(GgmlType::IQ5_K, to_float_blocks<BlockIq5K, dequant_block_iq5_k>, quantize_iq5_k);
  set(GgmlType::IQ6_K, to_float_blocks<BlockIq6K, dequant_block_iq6_k>, quantize_iq6_k);
  set(GgmlType::IQ2_KL, to_float_iq2_kl, quantize_iq2_kl);
}

}  // namespace expertmesh::quant
