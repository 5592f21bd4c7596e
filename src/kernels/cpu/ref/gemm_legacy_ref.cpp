// Reference (scalar) legacy-family matmul kernels: Q8_0, Q4_0 and IQ4_NL weights × Q8a32
// activations. This file is the specification of the family's bits (gemm_legacy_common.h): every
// SIMD kernel must reproduce it exactly.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_legacy_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu {
namespace {

namespace lq = quant::legacy;

// The 32 integer weight values of one block and its fp16 scale bits.
struct BlockValues {
  uint16_t d;
  int32_t v[32];
};

BlockValues values_q8_0(const uint8_t* p) {
  const auto b = lq::load_block<lq::BlockQ8_0>(p);
  BlockValues out;
  out.d = b.d;
  for (int i = 0; i < 32; ++i) out.v[i] = b.qs[i];
  return out;
}

BlockValues values_q4_0(const uint8_t* p) {
  const auto b = lq::load_block<lq::BlockQ4_0>(p);
  BlockValues out;
  out.d = b.d;
  for (int j = 0; j < 16; ++j) {
    out.v[j] = (b.qs[j] & 0x0F) - 8;
    out.v[j + 16] = (b.qs[j] >> 4) - 8;
  }
  return out;
}

BlockValues values_iq4_nl(const uint8_t* p) {
  const auto b = lq::load_block<lq::BlockIq4Nl>(p);
  BlockValues out;
  out.d = b.d;
  for (int j = 0; j < 16; ++j) {
    out.v[j] = lq::kIq4nlValues[b.qs[j] & 0x0F];
    out.v[j + 16] = lq::kIq4nlValues[b.qs[j] >> 4];
  }
  return out;
}

// y[t * ldy + r] = the canonical block-wise sum of row r and activation row t (file comment).
template <size_t kBlockBytes, BlockValues (*kValues)(const uint8_t*)>
void gemm_legacy(const GemmArgs& g) {
  const int64_t nb = g.n / 32;
  for (int64_t t = 0; t < g.nt; ++t) {
    const uint8_t* arow = g.a + size_t(t) * g.a_stride;
    for (int64_t r = 0; r < g.nr; ++r) {
      const uint8_t* wrow = g.w + size_t(r) * g.w_stride;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const BlockValues w = kValues(wrow + size_t(b) * kBlockBytes);
        BlockQ8a32 a;
        std::memcpy(&a, arow + size_t(b) * sizeof(BlockQ8a32), sizeof(a));
        int32_t sum = 0;
        for (int i = 0; i < 32; ++i) sum += w.v[i] * int32_t(a.qs[i]);
        const float s = quant::fp16_to_f32(w.d) * a.d;
        acc = std::fma(s, static_cast<float>(sum), acc);
      }
      g.y[t * g.ldy + r] = acc;
    }
  }
}

}  // namespace

void register_gemm_legacy_ref(GemmTable& t) {
  using legacy_gemm::kQ4BlockBytes;
  using legacy_gemm::kQ8_0BlockBytes;
  t[size_t(GgmlType::Q8_0)] = {ActType::kQ8a32, gemm_legacy<kQ8_0BlockBytes, values_q8_0>};
  t[size_t(GgmlType::Q4_0)] = {ActType::kQ8a32, gemm_legacy<kQ4BlockBytes, values_q4_0>};
  t[size_t(GgmlType::IQ4_NL)] = {ActType::kQ8a32, gemm_legacy<kQ4BlockBytes, values_iq4_nl>};
}

}  // namespace expertmesh::cpu
