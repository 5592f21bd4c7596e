// Reference activation quantizers (gemm.h): the definition of every ActType's bits.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"

namespace expertmesh::cpu {

int64_t act_block(ActType a) {
  switch (a) {
    case ActType::kQ8a32:
      return 32;
    case ActType::kQ8K:
      return 256;
    default:
      return 1;
  }
}

size_t act_row_bytes(ActType a, int64_t n) {
  switch (a) {
    case ActType::kF32:
      return size_t(n) * 4;
    case ActType::kF16:
    case ActType::kBF16:
      return size_t(n) * 2;
    case ActType::kQ8a32:
      return size_t(n / 32) * sizeof(BlockQ8a32);
    case ActType::kQ8K:
      return size_t(n / 256) * sizeof(BlockQ8K);
    case ActType::kCount:
      break;
  }
  return 0;
}

size_t gemm_scratch_bytes(int64_t n) {
  // A tile of kGemmMaxTileRows rows unpacked to one byte per weight plus up to 8 bytes of
  // scales per 16 weights, rounded up to whole cache lines.
  const size_t per_row = size_t(n) + size_t(n / 16) * 8 + 64;
  return (size_t(kGemmMaxTileRows) * per_row + 63) / 64 * 64;
}

namespace {

void quantize_q8a32(const float* x, BlockQ8a32* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = quant::bf16_to_f32(quant::f32_to_bf16(amax / 127.f));
    const float id = d > 0 ? 1 / d : 0.f;
    int32_t s = 0;
    for (int i = 0; i < 32; ++i) {
      // x * id is NaN only for x = 0 in a block whose 1/d overflowed (subnormal d): q = 0.
      const float v = std::nearbyint(x[i] * id);
      const int8_t q = v == v ? static_cast<int8_t>(std::clamp(v, -128.0f, 127.0f)) : int8_t{0};
      y[b].qs[i] = q;
      s += q;
    }
    y[b].d = d;
    y[b].s = s;
  }
}

}  // namespace

void quantize_act_ref(ActType a, const float* x, void* out, int64_t n) {
  switch (a) {
    case ActType::kF32:
      std::memcpy(out, x, size_t(n) * 4);
      return;
    case ActType::kF16: {
      auto* o = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = quant::f32_to_fp16(x[i]);
      return;
    }
    case ActType::kBF16: {
      auto* o = static_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) o[i] = quant::f32_to_bf16(x[i]);
      return;
    }
    case ActType::kQ8a32:
      quantize_q8a32(x, static_cast<BlockQ8a32*>(out), n);
      return;
    case ActType::kQ8K:
      // The quant library's Q8_K (the peer's x86 iqk_quantize_row_q8_K): the same 296-byte
      // block, so its reference quantizer is this format's definition.
      quant::quant_fns(GgmlType::Q8_K).quantize(x, out, 1, n, nullptr);
      return;
    case ActType::kCount:
      return;
  }
}

}  // namespace expertmesh::cpu
