// Scalar flash attention (flash_attn.h): the readable specification of the tile / split order,
// one query at a time, with std::exp. Its dot products and V sums are plain multiply-adds (the
// compiler may fuse them or not); the SIMD variants use the fma chains of flash_attn.h. Also the
// ISA selection of the flash-attention kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/flash_attn.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One cache row widened exactly to head_dim floats (Q8_0: d * q, as its reference dequantizer).
void widen_row(GgmlType t, const uint8_t* src, int64_t n, float* dst) {
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = quant::fp16_to_f32(h);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = quant::bf16_to_f32(h);
      }
      return;
    case GgmlType::Q8_0:
      for (int64_t ib = 0; ib < n / 32; ++ib) {
        quant::legacy::BlockQ8_0 b;
        std::memcpy(&b, src + ib * sizeof(quant::legacy::BlockQ8_0), sizeof(b));
        const float d = quant::fp16_to_f32(b.d);
        for (int j = 0; j < 32; ++j) dst[ib * 32 + j] = static_cast<float>(b.qs[j]) * d;
      }
      return;
    default:
      std::fill(dst, dst + n, std::numeric_limits<float>::quiet_NaN());
      return;
  }
}

// One query over keys [kv_begin, lim) (lim <= its pos + 1): the split-folded total state.
void attend_query(const FlashAttnArgs& a, const float* q, int64_t lim, float* kf, float* vf, float* os, float& m_t,
                  float& l_t, float* ot) {
  const int64_t hd = a.head_dim;
  const auto* kb = static_cast<const uint8_t*>(a.k);
  const auto* vb = static_cast<const uint8_t*>(a.v);
  float s[kFlashTile];
  m_t = kNegInf;
  l_t = 0.0f;
  std::fill(ot, ot + hd, 0.0f);
  for (int64_t s0 = a.kv_begin; s0 < lim; s0 += kFlashSplit) {
    const int64_t s1 = std::min(s0 + kFlashSplit, lim);
    float m = kNegInf, l = 0.0f;
    std::fill(os, os + hd, 0.0f);
    for (int64_t t0 = s0; t0 < s1; t0 += kFlashTile) {
      const int64_t n = std::min(t0 + kFlashTile, s1) - t0;
      float amax = kNegInf;
      for (int64_t j = 0; j < n; ++j) {
        widen_row(a.type_k, kb + (t0 + j) * a.k_row, hd, kf);
        float acc = 0.0f;
        for (int64_t d = 0; d < hd; ++d) acc += kf[d] * q[d];
        s[j] = acc;
        amax = std::max(amax, acc);
      }
      const float mn = std::max(m, amax * a.scale);
      const float alpha = std::exp(m - mn);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(std::fma(s[j], a.scale, -mn));
        sum += s[j];
      }
      l = std::fma(l, alpha, sum);
      for (int64_t d = 0; d < hd; ++d) os[d] *= alpha;
      for (int64_t j = 0; j < n; ++j) {
        widen_row(a.type_v, vb + (t0 + j) * a.v_row, hd, vf);
        for (int64_t d = 0; d < hd; ++d) os[d] += vf[d] * s[j];
      }
      m = mn;
    }
    flash_fold(m_t, l_t, ot, 1, m, l, os, 1, hd);
  }
}

void attend_ref(const FlashAttnArgs& a) {
  const int64_t hd = a.head_dim;
  float* kf = a.scratch;
  float* vf = kf + hd;
  float* os = vf + hd;
  float* ot = os + hd;
  for (int64_t r = 0; r < a.n_rows; ++r) {
    const int64_t lim = std::min<int64_t>(a.kv_end, int64_t(a.pos[r]) + 1);
    for (int64_t h = 0; h < a.n_heads; ++h) {
      const int64_t i = r * a.n_heads + h;
      float m_t, l_t;
      attend_query(a, a.q_rows[r] + h * hd, lim, kf, vf, os, m_t, l_t, ot);
      float* out = a.out_rows[r] + h * hd;
      if (a.m) {
        a.m[i] = m_t;
        a.l[i] = l_t;
        std::copy(ot, ot + hd, out);
      } else {
        flash_finalize(m_t, l_t, ot, 1, hd, out);
      }
    }
  }
}

void merge_ref(int64_t n_parts, const float* m, const float* l, int64_t ml_stride, const float* o, int64_t o_stride,
               int64_t head_dim, float* out) {
  float m_t = kNegInf, l_t = 0.0f;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t i = 0; i < n_parts; ++i)
    flash_fold(m_t, l_t, out, 1, m[i * ml_stride], l[i * ml_stride], o + i * o_stride, 1, head_dim);
  flash_finalize(m_t, l_t, out, 1, head_dim, out);
}

}  // namespace

const FlashAttnKernels& flash_attn_ref() {
  static const FlashAttnKernels k{"scalar", attend_ref, merge_ref};
  return k;
}

const FlashAttnKernels& flash_attn_kernels(Isa isa) {
  const FlashAttnKernels* k = nullptr;
  if (isa == Isa::kAvx512) k = flash_attn_avx512();
  if (isa == Isa::kAvx2) k = flash_attn_avx2();
  return k ? *k : flash_attn_ref();
}

}  // namespace expertmesh::cpu
