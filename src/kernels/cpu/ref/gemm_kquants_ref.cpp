// Reference (scalar) Q4_K and Q6_K × Q8K kernels: the specification of gemm.h's canonical
// formulas for the k-quant family. Every SIMD variant (x86/gemm_kquants_*.cpp) must produce
// exactly these bits.
//
// Weight meaning (quant/kquants.cpp, dequant_q4_k / dequant_q6_k):
//   Q4_K super-block of 256: value = d·sc_j·q − dmin·m_j for weight l of sub-block j = l / 32,
//     q the 4-bit quant: qs[32c + i] holds weight 64c + i (low nibble) and 64c + 32 + i (high).
//     (sc_j, m_j) are 6-bit, packed in scales[12] as quant::kq::scale_min_k4 unpacks them.
//   Q6_K super-block of 256: value = d·scales[l / 16]·(q − 32), q = 4 low bits from ql, 2 high
//     bits from qh; in each 128-half, for i < 32: weight i = ql[i] & 15 | (qh[i] & 3) << 4,
//     i + 32 = ql[i + 32] & 15 | (qh[i] >> 2 & 3) << 4, i + 64 = ql[i] >> 4 | (qh[i] >> 4 & 3) << 4,
//     i + 96 = ql[i + 32] >> 4 | (qh[i] >> 6) << 4.
#include <cmath>

#include "kernels/cpu/gemm.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"

namespace expertmesh::cpu {
namespace {

using quant::fp16_to_f32;
using quant::kq::BlockQ4K;
using quant::kq::BlockQ6K;

// acc of one super-block of Q4_K against one Q8K block, in the canonical order.
float q4k_block(const BlockQ4K& w, const BlockQ8K& a, float acc) {
  int32_t S = 0, M = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    quant::kq::scale_min_k4(j, w.scales, &sc, &m);
    const uint8_t* q = w.qs + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    int32_t sj = 0;
    for (int i = 0; i < 32; ++i) sj += ((q[i] >> shift) & 0xF) * a.qs[32 * j + i];
    S += int32_t(sc) * sj;
    M += int32_t(m) * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
  }
  const float s = fp16_to_f32(w.d) * a.d;
  acc = std::fma(s, static_cast<float>(S), acc);
  const float mn = -(fp16_to_f32(w.dmin) * a.d);
  return std::fma(mn, static_cast<float>(M), acc);
}

// The 6-bit quant (0..63) of weight l (0..255) of a Q6_K block.
int q6k_quant(const BlockQ6K& w, int l) {
  const int half = l / 128, i = l % 128;
  const uint8_t* ql = w.ql + 64 * half;
  const uint8_t* qh = w.qh + 32 * half;
  const int quarter = i / 32, k = i % 32;
  // quarter 0: ql[k] low, 1: ql[k+32] low, 2: ql[k] high, 3: ql[k+32] high; qh bits 2*quarter.
  const uint8_t qlb = ql[k + 32 * (quarter & 1)];
  const int low4 = quarter < 2 ? (qlb & 0xF) : (qlb >> 4);
  const int high2 = (qh[k] >> (2 * quarter)) & 3;
  return low4 | (high2 << 4);
}

float q6k_block(const BlockQ6K& w, const BlockQ8K& a, float acc) {
  int32_t S = 0;
  for (int g = 0; g < 16; ++g) {
    int32_t sg = 0;
    for (int i = 0; i < 16; ++i) sg += (q6k_quant(w, 16 * g + i) - 32) * a.qs[16 * g + i];
    S += int32_t(w.scales[g]) * sg;
  }
  const float s = fp16_to_f32(w.d) * a.d;
  return std::fma(s, static_cast<float>(S), acc);
}

template <typename Block, float (*kBlockFn)(const Block&, const BlockQ8K&, float)>
void gemm_ref(const GemmArgs& g) {
  const int64_t nb = g.n / 256;
  for (int64_t t = 0; t < g.nt; ++t) {
    const auto* a = reinterpret_cast<const BlockQ8K*>(g.a + size_t(t) * g.a_stride);
    for (int64_t r = 0; r < g.nr; ++r) {
      // Rows are 4-byte aligned; the blocks need 2 (Q4_K, Q6_K) and 4 (Q8K).
      const auto* w = reinterpret_cast<const Block*>(g.w + size_t(r) * g.w_stride);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) acc = kBlockFn(w[b], a[b], acc);
      g.y[t * g.ldy + r] = acc;
    }
  }
}

}  // namespace

void register_gemm_kquants_ref(GemmTable& t) {
  t[size_t(GgmlType::Q4_K)] = {ActType::kQ8K, gemm_ref<BlockQ4K, q4k_block>};
  t[size_t(GgmlType::Q6_K)] = {ActType::kQ8K, gemm_ref<BlockQ6K, q6k_block>};
}

}  // namespace expertmesh::cpu
