// The legacy family: Q4_0, Q4_1, Q5_0, Q5_1, Q6_0, Q8_0, IQ4_NL, MXFP4, Q8_KV (weights) and the
// activation-side Q8_1. 32-weight blocks with one or two fp16 (MXFP4: E8M0) block scales;
// Q8_KV has one f32 scale per row instead (8 bytes of row meta: f32 d, i32 sum of the quants).
//
// Dequantization follows the peer's reference dequantize_row_* operation for operation.
// Quantization follows what ggml_quantize_chunk calls in ik_llama.cpp for each type:
//   Q4_0 Q4_1 Q5_0 Q5_1  without imatrix: quantize_row_*_ref (absmax / min-max rounding);
//                        with imatrix: quantize_row_*_impl (weighted search, legacy_search.cpp)
//   Q6_0                 always the weighted search (weights x² without an imatrix)
//   Q8_0, Q8_1           absmax rounding, imatrix ignored
//   IQ4_NL               quantize_row_iq4_nl_impl (scale search over the non-linear values)
//   MXFP4                E8M0 exponent from the block max, nearest e2m1 value; imatrix ignored
//   Q8_KV                per-row absmax scale, round half to even; imatrix ignored
// See legacy_blocks.h for why some products are computed with std::fma.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"
#include "kernels/quant/quant.h"

// Bit-exactness relies on no contraction beyond the explicit std::fma calls. GCC in ISO C++ mode
// does not contract; clang would (-ffp-contract=on), so switch it off there.
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace expertmesh::quant {
namespace {

using namespace legacy;

// Number of 32-weight blocks in nrows rows (types without row meta store rows back to back).
int64_t nblocks(int64_t nrows, int64_t n_per_row) { return nrows * n_per_row / kBlock; }

// Truncating float -> int conversion of a rounding-offset value (ggml's `(int8_t)(v + 0.5f)`),
// clamped to [0, hi]. For the finite in-range values the peer sees this equals
// MIN(hi, (int8_t)v); the clamp only makes degenerate inputs (inf / NaN from a subnormal scale's
// reciprocal) well defined instead of undefined behaviour.
int trunc_clamped(float v, int hi) {
  if (!(v >= 0.f)) return 0;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(v);
}

// ===================================== dequantization ==========================================

void q4_0_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ4_0>(p + ib * sizeof(BlockQ4_0));
    const float d = fp16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((b.qs[j] & 0x0F) - 8) * d;
      y[j + 16] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1 / Q5_1: the peer's `q*d + m` is one fused multiply-add.
void q4_1_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ4_1>(p + ib * sizeof(BlockQ4_1));
    const float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
    for (int j = 0; j < 16; ++j) {
      y[j] = std::fma(static_cast<float>(b.qs[j] & 0x0F), d, m);
      y[j + 16] = std::fma(static_cast<float>(b.qs[j] >> 4), d, m);
    }
  }
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void q5_0_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ5_0>(p + ib * sizeof(BlockQ5_0));
    const float d = fp16_to_f32(b.d);
    const uint32_t qh = load_u32(b.qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[j] = static_cast<float>(((b.qs[j] & 0x0F) | h0) - 16) * d;
      y[j + 16] = static_cast<float>(((b.qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void q5_1_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ5_1>(p + ib * sizeof(BlockQ5_1));
    const float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
    const uint32_t qh = load_u32(b.qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      y[j] = std::fma(static_cast<float>((b.qs[j] & 0x0F) | h0), d, m);
      y[j + 16] = std::fma(static_cast<float>((b.qs[j] >> 4) | h1), d, m);
    }
  }
}

void q6_0_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ6_0>(p + ib * sizeof(BlockQ6_0));
    const float d = fp16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) {
      const int h = b.qh[j % 8] >> (4 * (j / 8));
      y[j] = static_cast<float>(((b.qs[j] & 0x0F) | ((h << 4) & 0x30)) - 32) * d;
      y[j + 16] = static_cast<float>(((b.qs[j] >> 4) | ((h << 2) & 0x30)) - 32) * d;
    }
  }
}

void q8_0_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ8_0>(p + ib * sizeof(BlockQ8_0));
    const float d = fp16_to_f32(b.d);
    for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
  }
}

// Q8_1 has no to_float in the peer (it is an activation type); this is the obvious d * q.
void q8_1_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockQ8_1>(p + ib * sizeof(BlockQ8_1));
    const float d = fp16_to_f32(b.d);
    for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
  }
}

void iq4_nl_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockIq4Nl>(p + ib * sizeof(BlockIq4Nl));
    const float d = fp16_to_f32(b.d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kIq4nlValues[b.qs[j] & 0x0F]);
      y[j + 16] = d * static_cast<float>(kIq4nlValues[b.qs[j] >> 4]);
    }
  }
}

// E8M0 exponent e -> 2^(e-127) / 2, as ggml_e8m0_to_fp32_half (e 0 and 1 give subnormals).
float e8m0_to_f32_half(uint8_t e) {
  if (e >= 2) return bits_to_f32(static_cast<uint32_t>(e - 1) << 23);
  return bits_to_f32(e == 0 ? 0x00200000u : 0x00400000u);
}

void mxfp4_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib, y += kBlock) {
    const auto b = load_block<BlockMxfp4>(p + ib * sizeof(BlockMxfp4));
    const float d = e8m0_to_f32_half(b.e);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kMxfp4Values[b.qs[j] & 0x0F]);
      y[j + 16] = d * static_cast<float>(kMxfp4Values[b.qs[j] >> 4]);
    }
  }
}

void q8_kv_to_float(const void* src, float* y, int64_t nrows, int64_t n) {
  const uint8_t* row = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r, row += kQ8KvMetaBytes + n, y += n) {
    float d;
    std::memcpy(&d, row, sizeof(d));
    const int8_t* q = reinterpret_cast<const int8_t*>(row + kQ8KvMetaBytes);
    for (int64_t j = 0; j < n; ++j) y[j] = d * static_cast<float>(q[j]);
  }
}

// =============================== reference (no imatrix) quantizers ==============================

// Absmax with sign: the value of largest magnitude (the first one on ties).
float signed_absmax(const float* x) {
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < kBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, float* mn, float* mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

// q in [0, 15], x ≈ d * (q - 8) with d = max / -8 (the extreme value maps to q = 0).
BlockQ4_0 q4_0_ref_block(const float* x) {
  BlockQ4_0 b{};
  const float d = signed_absmax(x) / -8.f;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  b.d = scale_to_fp16(d);
  for (int j = 0; j < 16; ++j) {
    const int q0 = trunc_clamped(std::fma(x[j], id, 8.5f), 15);
    const int q1 = trunc_clamped(std::fma(x[j + 16], id, 8.5f), 15);
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
  return b;
}

BlockQ4_1 q4_1_ref_block(const float* x) {
  BlockQ4_1 b{};
  float mn, mx;
  min_max(x, &mn, &mx);
  const float d = (mx - mn) / 15.f;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  b.d = scale_to_fp16(d);
  b.m = scale_to_fp16(mn);
  for (int j = 0; j < 16; ++j) {
    const int q0 = trunc_clamped(std::fma(x[j] - mn, id, 0.5f), 15);
    const int q1 = trunc_clamped(std::fma(x[j + 16] - mn, id, 0.5f), 15);
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
  return b;
}

// Packs 32 5-bit values (element j and j+16 share qs[j]; bit 4 of element i is bit i of qh).
template <typename B>
void pack_q5(const uint8_t* q, B& b) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    b.qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
    qh |= static_cast<uint32_t>((q[j] & 0x10u) >> 4) << j;
    qh |= static_cast<uint32_t>((q[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(b.qh, &qh, sizeof(qh));
}

BlockQ5_0 q5_0_ref_block(const float* x) {
  BlockQ5_0 b{};
  const float d = signed_absmax(x) / -16.f;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  b.d = scale_to_fp16(d);
  uint8_t q[kBlock];
  for (int j = 0; j < kBlock; ++j) q[j] = static_cast<uint8_t>(trunc_clamped(std::fma(x[j], id, 16.5f), 31));
  pack_q5(q, b);
  return b;
}

BlockQ5_1 q5_1_ref_block(const float* x) {
  BlockQ5_1 b{};
  float mn, mx;
  min_max(x, &mn, &mx);
  const float d = (mx - mn) / 31.f;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  b.d = scale_to_fp16(d);
  b.m = scale_to_fp16(mn);
  uint8_t q[kBlock];
  for (int j = 0; j < kBlock; ++j) q[j] = static_cast<uint8_t>(trunc_clamped(std::fma(x[j] - mn, id, 0.5f), 31));
  pack_q5(q, b);
  return b;
}

// Q8_0 / Q8_1: d = amax / 127, q = round(x / d) half away from zero.
template <typename B>
float q8_block(const float* x, B& b) {
  float amax = 0.f;
  for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  b.d = scale_to_fp16(d);
  for (int j = 0; j < kBlock; ++j) {
    b.qs[j] = static_cast<int8_t>(clamp_rounded(std::round(x[j] * id), -127, 127));  // |q| <= 127 anyway
  }
  return d;
}

template <typename B, B (*BlockFn)(const float*)>
void quantize_blocks(const float* x, uint8_t* dst, int64_t nb) {
  for (int64_t ib = 0; ib < nb; ++ib) store_block(dst + ib * sizeof(B), BlockFn(x + ib * kBlock));
}

// ================================ imatrix-weighted quantizers ==================================

// Importance weights of one block as the peer derives them from an imatrix row:
// w_j = qw_j * sqrt(sigma2 + x_j²), sigma2 = mean of x² over the whole row.
void block_weights(const float* xb, const float* qw, float sigma2, float* w) {
  for (int j = 0; j < kBlock; ++j) w[j] = qw[j] * std::sqrt(std::fma(xb[j], xb[j], sigma2));
}

// Mean of x² over a row. The peer's loop is a lone loop-carried accumulation: not fused.
float row_sigma2(const float* x, int64_t n) {
  float s = 0.f;
  for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s / static_cast<float>(n);
}

// Shared row driver for the imatrix paths: per row sigma2, per block weights, then `block`.
template <typename B, typename Fn>
void quantize_weighted_rows(const float* src, uint8_t* dst, int64_t nrows, int64_t n, const float* imatrix, Fn block) {
  float w[kBlock];
  for (int64_t r = 0; r < nrows; ++r, src += n) {
    const float sigma2 = row_sigma2(src, n);
    for (int64_t ib = 0; ib < n / kBlock; ++ib, dst += sizeof(B)) {
      const float* xb = src + ib * kBlock;
      block_weights(xb, imatrix + ib * kBlock, sigma2, w);
      store_block(dst, block(xb, w));
    }
  }
}

// The weighted searches overflow only on absurd inputs (x² beyond the float range); a block
// whose search gives a non-finite scale falls back to the unweighted reference quantization.

BlockQ4_0 q4_0_weighted_block(const float* xb, const float* w) {
  int8_t L[kBlock];
  BlockQ4_0 b{};
  const float d = make_qx_quants(kBlock, 8, xb, L, w);
  if (!std::isfinite(d)) return q4_0_ref_block(xb);
  b.d = scale_to_fp16(d);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  return b;
}

BlockQ4_1 q4_1_weighted_block(const float* xb, const float* w) {
  uint8_t L[kBlock];
  float mn;
  BlockQ4_1 b{};
  const float d = make_qkx3_quants(kBlock, 15, xb, w, L, &mn, -0.9f, 0.05f, 36);
  if (!std::isfinite(d) || !std::isfinite(mn)) return q4_1_ref_block(xb);
  b.d = scale_to_fp16(d);
  b.m = scale_to_fp16(-mn);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  return b;
}

BlockQ5_0 q5_0_weighted_block(const float* xb, const float* w) {
  int8_t L[kBlock];
  BlockQ5_0 b{};
  const float d = make_qx_quants(kBlock, 16, xb, L, w);
  if (!std::isfinite(d)) return q5_0_ref_block(xb);
  b.d = scale_to_fp16(d);
  uint8_t q[kBlock];
  for (int j = 0; j < kBlock; ++j) q[j] = static_cast<uint8_t>(L[j]);
  pack_q5(q, b);
  return b;
}

BlockQ5_1 q5_1_weighted_block(const float* xb, const float* w) {
  uint8_t L[kBlock];
  float mn;
  BlockQ5_1 b{};
  const float d = make_qkx3_quants(kBlock, 31, xb, w, L, &mn, -0.9f, 0.05f, 36);
  if (!std::isfinite(d) || !std::isfinite(mn)) return q5_1_ref_block(xb);
  b.d = scale_to_fp16(d);
  b.m = scale_to_fp16(-mn);
  pack_q5(L, b);
  return b;
}

BlockQ6_0 q6_0_weighted_block(const float* xb, const float* w) {
  int8_t L[kBlock];
  BlockQ6_0 b{};
  float d = make_qx_quants(kBlock, 32, xb, L, w);
  if (!std::isfinite(d)) {  // no reference quantizer in this path: unit weights instead
    const float ones[kBlock] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    d = make_qx_quants(kBlock, 32, xb, L, ones);
  }
  b.d = scale_to_fp16(d);
  for (int j = 0; j < 16; ++j) {
    const int q0 = L[j], q1 = L[j + 16];
    b.qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    const int h = (q0 >> 4) | ((q1 >> 4) << 2);
    b.qh[j % 8] = static_cast<uint8_t>(b.qh[j % 8] | (h << (4 * (j / 8))));
  }
  return b;
}

// ====================================== QuantizeFn entries =====================================

template <typename B, B (*RefBlock)(const float*), B (*WeightedBlock)(const float*, const float*)>
void quantize_ref_or_weighted(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  if (!imatrix) {
    quantize_blocks<B, RefBlock>(src, out, nblocks(nrows, n));
    return;
  }
  quantize_weighted_rows<B>(src, out, nrows, n, imatrix, WeightedBlock);
}

void q6_0_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  if (imatrix) {
    quantize_weighted_rows<BlockQ6_0>(src, out, nrows, n, imatrix, q6_0_weighted_block);
    return;
  }
  // Without an imatrix the peer still runs the weighted search, with weights x².
  float w[kBlock];
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib) {
    const float* xb = src + ib * kBlock;
    for (int j = 0; j < kBlock; ++j) w[j] = xb[j] * xb[j];
    store_block(out + ib * sizeof(BlockQ6_0), q6_0_weighted_block(xb, w));
  }
}

void q8_0_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib) {
    BlockQ8_0 b{};
    q8_block(src + ib * kBlock, b);
    store_block(out + ib * sizeof(BlockQ8_0), b);
  }
}

// Q8_1: as Q8_0 plus s = d * sum(q) (fp16), which the kernels use for the offset of Q4_1/Q5_1.
void q8_1_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib) {
    BlockQ8_1 b{};
    const float d = q8_block(src + ib * kBlock, b);
    int sum = 0;
    for (int j = 0; j < kBlock; ++j) sum += b.qs[j];
    b.s = scale_to_fp16(static_cast<float>(sum) * d);
    store_block(out + ib * sizeof(BlockQ8_1), b);
  }
}

void iq4_nl_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; ++r) {
    for (int64_t ib = 0; ib < n / kBlock; ++ib) {
      BlockIq4Nl b{};
      quantize_iq4_nl_block(src + r * n + ib * kBlock, imatrix ? imatrix + ib * kBlock : nullptr, &b.d, b.qs);
      store_block(out + (r * (n / kBlock) + ib) * sizeof(BlockIq4Nl), b);
    }
  }
}

// Index of the e2m1 value nearest to x / d (the first one on ties).
int mxfp4_best_index(float d, float x) {
  float best = std::fabs(x - d * static_cast<float>(kMxfp4Values[0]));
  int index = 0;
  for (int j = 1; j < 16; ++j) {
    const float diff = std::fabs(x - d * static_cast<float>(kMxfp4Values[j]));
    if (diff < best) {
      best = diff;
      index = j;
    }
  }
  return index;
}

void mxfp4_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t ib = 0; ib < nblocks(nrows, n); ++ib) {
    const float* xb = src + ib * kBlock;
    BlockMxfp4 b{};
    float amax = 0.f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    if (amax != 0.f) {
      // The block max lands in [4, 8) * 2^(e-128), i.e. on the top e2m1 values (6, doubled 12).
      // Clamped only for magnitudes below 2^-125, where the peer's conversion is undefined.
      const float e = std::floor(std::log2(amax)) - 2.f + 127.f;
      b.e = static_cast<uint8_t>(std::clamp(e, 0.f, 254.f));
      const float d = e8m0_to_f32_half(b.e);
      for (int j = 0; j < 16; ++j)
        b.qs[j] = static_cast<uint8_t>(mxfp4_best_index(d, xb[j]) | (mxfp4_best_index(d, xb[j + 16]) << 4));
    }
    store_block(out + ib * sizeof(BlockMxfp4), b);
  }
}

// Q8_KV: d = amax / 127 over the whole row, q = round-half-even(x / d) (the peer's AVX2 path),
// meta = {d, sum of q}. An all-zero row stores d = 0 and sum = 0.
void q8_kv_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint8_t* row = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < nrows; ++r, src += n, row += kQ8KvMetaBytes + n) {
    float amax = 0.f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(src[j]));
    int8_t* q = reinterpret_cast<int8_t*>(row + kQ8KvMetaBytes);
    int32_t sum = 0;
    float d = 0.f;
    if (amax != 0.f) {
      d = amax / 127.f;
      const float id = 1.f / d;
      for (int64_t j = 0; j < n; ++j) {
        const int v = clamp_rounded(std::nearbyint(id * src[j]), -127, 127);
        q[j] = static_cast<int8_t>(v);
        sum += v;
      }
    } else {
      std::memset(q, 0, static_cast<size_t>(n));
    }
    std::memcpy(row, &d, sizeof(d));
    std::memcpy(row + sizeof(d), &sum, sizeof(sum));
  }
}

}  // namespace

void register_legacy(QuantTable& t) {
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
  };
  set(GgmlType::Q4_0, q4_0_to_float,
      quantize_ref_or_weighted<BlockQ4_0, q4_0_ref_block, q4_0_weighted_block>);
  set(GgmlType::Q4_1, q4_1_to_float,
      quantize_ref_or_weighted<BlockQ4_1, q4_1_ref_block, q4_1_weighted_block>);
  set(GgmlType::Q5_0, q5_0_to_float,
      quantize_ref_or_weighted<BlockQ5_0, q5_0_ref_block, q5_0_weighted_block>);
  set(GgmlType::Q5_1, q5_1_to_float,
      quantize_ref_or_weighted<BlockQ5_1, q5_1_ref_block, q5_1_weighted_block>);
  set(GgmlType::Q6_0, q6_0_to_float, q6_0_quantize);
  set(GgmlType::Q8_0, q8_0_to_float, q8_0_quantize);
  set(GgmlType::Q8_1, q8_1_to_float, q8_1_quantize);
  set(GgmlType::IQ4_NL, iq4_nl_to_float, iq4_nl_quantize);
  set(GgmlType::MXFP4, mxfp4_to_float, mxfp4_quantize);
  set(GgmlType::Q8_KV, q8_kv_to_float, q8_kv_quantize);
}

}  // namespace expertmesh::quant
