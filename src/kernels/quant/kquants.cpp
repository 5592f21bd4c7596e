// k-quants: Q2_K..Q6_K (weights) and Q8_K (ik's activation-side layout). Dequantization is the
// peer's reference dequantize_row_*; the quantizers live in kquants_quantize.cpp and
// kquants_search.cpp. Layouts are in kquants.h.
//
// Dequantization arithmetic: in Q2_K/Q4_K/Q5_K every product of `d*sc*q - m` is exact in float
// (fp16 d: 11 significant bits, scale <= 6, quant <= 5), so whether the peer's compiler fused it
// into an FMA does not change the result; Q3_K/Q6_K have no addition. We keep the peer's order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
namespace {

using namespace kq;

void dequant_q2_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ2K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(x[i].d), min = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int c = 0; c < kQK; c += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = x[i].scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF), ml = min * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequant_q3_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ3K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d_all = fp16_to_f32(x[i].d);
    // 16 6-bit scales: low nibbles from bytes 0..7 (j and j-8 high nibble), high pairs from 8..11.
    int8_t scales[16];
    for (int j = 0; j < 16; ++j) {
      const int lo = j < 8 ? x[i].scales[j] & 0xF : x[i].scales[j - 8] >> 4;
      const int hi = (x[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
      scales[j] = static_cast<int8_t>(lo | (hi << 4));
    }
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    int is = 0;
    for (int c = 0; c < kQK; c += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int half = 0; half < 2; ++half) {
          const float dl = d_all * static_cast<float>(scales[is++] - 32);
          for (int l = 0; l < 16; ++l) {
            const int k = l + 16 * half;
            const int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
      }
    }
  }
}

void dequant_q4_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ4K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(x[i].d), min = fp16_to_f32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      scale_min_k4(is, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ5K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(x[i].d), min = fp16_to_f32(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32) {
      uint8_t sc, m;
      scale_min_k4(is, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void dequant_q6_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ6K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int c = 0; c < kQK; c += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        // (d * scale) * q, in the peer's order.
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

void dequant_q8_k(const void* src, float* y, int64_t nrows, int64_t n) {
  const auto* x = static_cast<const BlockQ8K*>(src);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < kQK; ++j) *y++ = x[i].d * static_cast<float>(x[i].qs[j]);
}

// Q8_K as ik quantizes activations (iqk_quantize_row_q8_K, the AVX2 path its x86 build runs):
// d = amax/127, q = round-to-nearest-even(x * 127/amax), bsums per 16, sum = d * Σq.
// (ggml's quantize_row_q8_K_ref instead uses d = -max/127 with the signed extreme mapped to
// -127 and leaves `sum` unset; ik never uses it for matmuls, so we do not reproduce it.)
// The imatrix is ignored, as for every activation type.
void quantize_q8_k(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  auto* y = static_cast<BlockQ8K*>(dst);
  const int64_t nb = nrows * n / kQK;
  for (int64_t i = 0; i < nb; ++i, src += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.f;
    const float id = amax != 0 ? 127.f / amax : 0.f;
    int total = 0;
    for (int g = 0; g < 16; ++g) {
      int bsum = 0;
      for (int l = 0; l < 16; ++l) {
        const int v = static_cast<int>(std::nearbyint(id * src[16 * g + l]));
        y[i].qs[16 * g + l] = static_cast<int8_t>(std::clamp(v, -128, 127));
        bsum += y[i].qs[16 * g + l];
      }
      y[i].bsums[g] = static_cast<int16_t>(bsum);
      total += bsum;
    }
    y[i].d = d;
    y[i].sum = d * static_cast<float>(total);
  }
}

template <typename Block, void (*Row)(const float*, Block*, int64_t, const float*)>
void quantize_rows_k(const float* src, void* dst, int64_t nrows, int64_t n, const float* imatrix) {
  auto* y = static_cast<Block*>(dst);
  const int64_t nb = n / kQK;
  for (int64_t r = 0; r < nrows; ++r) Row(src + r * n, y + r * nb, n, imatrix);
}

}  // namespace

void register_kquants(QuantTable& t) {
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
  };
  set(GgmlType::Q2_K, dequant_q2_k, quantize_rows_k<BlockQ2K, quantize_row_q2_k>);
  set(GgmlType::Q3_K, dequant_q3_k, quantize_rows_k<BlockQ3K, quantize_row_q3_k>);
  set(GgmlType::Q4_K, dequant_q4_k, quantize_rows_k<BlockQ4K, quantize_row_q4_k>);
  set(GgmlType::Q5_K, dequant_q5_k, quantize_rows_k<BlockQ5K, quantize_row_q5_k>);
  set(GgmlType::Q6_K, dequant_q6_k, quantize_rows_k<BlockQ6K, quantize_row_q6_k>);
  set(GgmlType::Q8_K, dequant_q8_k, quantize_q8_k);
}

}  // namespace expertmesh::quant
