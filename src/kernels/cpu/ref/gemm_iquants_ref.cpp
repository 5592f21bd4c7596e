// Reference (scalar) IQ4_XS and IQ4_KS × Q8K matmul kernels: the specification the AVX2 and
// AVX512 kernels reproduce bit for bit (gemm.h, canonical formulas):
//   IQ4_XS: per super-block s = fp16(d) * a.d, S = Σ_j (ls_j - 32) · Σ_{32 of j} v·a.qs,
//           acc = fmaf(s, float(S), acc);                                   y = acc
//   IQ4_KS: per super-block s = a.d, S = Σ_j ls_j · Σ_{32 of j} v·a.qs, acc = fmaf(s, float(S), acc);
//           y = d_row * acc
// v are the values the reference dequantizers use (kIq4kValues, IQ4_KS's shifted half when the
// sub-block's bit 0 is set), so y is the dot product of the dequantized weights
// (dequant = float(d * ls) * v) with the dequantized activations, up to float rounding.
#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_iquants_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_ks_internal.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/iquants_internal.h"

namespace expertmesh::cpu {
namespace {

using quant::iq::BlockIq4xs;
using quant::iqk_ks::block_iq4_ks;

// The offsets the SIMD kernels hard-code (gemm_iquants_common.h) are the real layouts.
static_assert(sizeof(BlockIq4xs) == iquants::kBlockBytes && offsetof(BlockIq4xs, qs) == iquants::kQsOffset);
static_assert(offsetof(BlockIq4xs, scales_h) == 2 && offsetof(BlockIq4xs, scales_l) == 4);
static_assert(sizeof(block_iq4_ks) == iquants::kBlockBytes && offsetof(block_iq4_ks, qs) == iquants::kQsOffset);

// Σ over the 32 weights of one sub-block of v·a: qs = its 16 index bytes, values = 16-entry table.
int32_t sub_block_dot(const uint8_t* qs, const int8_t* values, const int8_t* a) {
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) {
    s += int32_t(values[qs[j] & 0xf]) * a[j];
    s += int32_t(values[qs[j] >> 4]) * a[j + 16];
  }
  return s;
}

float dot_row_iq4_xs(const uint8_t* w_row, const uint8_t* a_row, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    BlockIq4xs w;
    std::memcpy(&w, w_row + b * sizeof(BlockIq4xs), sizeof(w));
    const auto* a = reinterpret_cast<const BlockQ8K*>(a_row + b * sizeof(BlockQ8K));  // 4-byte aligned
    int32_t S = 0;
    for (int ib = 0; ib < iquants::kSubBlocks; ++ib) {
      const int ls = ((w.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) | (((w.scales_h >> (2 * ib)) & 3) << 4);
      S += (ls - 32) * sub_block_dot(w.qs + 16 * ib, quant::kIq4kValues, a->qs + 32 * ib);
    }
    const float s = quant::fp16_to_f32(w.d) * a->d;
    acc = std::fma(s, static_cast<float>(S), acc);
  }
  return acc;
}

float dot_row_iq4_ks(const uint8_t* w_row, const uint8_t* a_row, int64_t nb) {
  const float d_row = iquants::load_f32(w_row);
  const uint8_t* blocks = w_row + iquants::row_meta_bytes(iquants::Iq4Kind::kKs);
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    block_iq4_ks w;
    std::memcpy(&w, blocks + b * sizeof(block_iq4_ks), sizeof(w));
    const auto* a = reinterpret_cast<const BlockQ8K*>(a_row + b * sizeof(BlockQ8K));
    int32_t S = 0;
    for (int ib = 0; ib < iquants::kSubBlocks; ++ib) {
      const int ls = (w.scales[ib] & 254) - 127;
      const int8_t* values = quant::kIq4kValues + 16 * (w.scales[ib] & 1);
      S += ls * sub_block_dot(w.qs + 16 * ib, values, a->qs + 32 * ib);
    }
    acc = std::fma(a->d, static_cast<float>(S), acc);
  }
  return d_row * acc;
}

template <float (*Dot)(const uint8_t*, const uint8_t*, int64_t)>
void gemm_ref(const GemmArgs& g) {
  const int64_t nb = g.n / iquants::kSuperBlock;
  for (int64_t t = 0; t < g.nt; ++t) {
    const uint8_t* a_row = g.a + t * g.a_stride;
    for (int64_t r = 0; r < g.nr; ++r) g.y[t * g.ldy + r] = Dot(g.w + r * g.w_stride, a_row, nb);
  }
}

}  // namespace

void register_gemm_iquants_ref(GemmTable& t) {
  t[size_t(GgmlType::IQ4_XS)] = {ActType::kQ8K, gemm_ref<dot_row_iq4_xs>};
  t[size_t(GgmlType::IQ4_KS)] = {ActType::kQ8K, gemm_ref<dot_row_iq4_ks>};
}

}  // namespace expertmesh::cpu
