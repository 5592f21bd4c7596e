// Trellis family (IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT): reference dequantization, bit-exact with ik's
// dequantize_row_iq*_kt, and the family's QuantTable entries. Layouts: trellis_internal.h.
//
// Every value is (d * block_scale) * trellis_value: the block scale product is rounded once, then
// multiplied by the (exact, integer-valued) trellis value, as ik's reference does. The matmul
// kernels' extra factors (IQ2_KT 1.05, IQ3_KT 1.01) are NOT applied here (see trellis_internal.h).
#include <cmath>
#include <cstring>

#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/quant.h"
#include "kernels/quant/trellis_internal.h"

namespace expertmesh::quant {
namespace {

using namespace trellis;

template <typename B>
B load_block(const uint8_t* p) {
  B b;
  std::memcpy(&b, p, sizeof(B));
  return b;
}

float row_scale(const uint8_t* row) {
  float d;
  std::memcpy(&d, row, sizeof(d));
  return d;
}

// Writes scale * value for the `n` values of `seed`.
inline void emit(uint32_t seed, uint32_t offset, int n, float scale, float* y) {
  int v[8];
  trellis_values(seed, offset, n, v);
  for (int k = 0; k < n; ++k) y[k] = scale * static_cast<float>(v[k]);
}

void iq1_kt_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const int64_t nb = n / kQK;
  const uint8_t* row = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r, row += 4 + nb * sizeof(BlockIq1Kt)) {
    const float d = row_scale(row);
    for (int64_t ibl = 0; ibl < nb; ++ibl) {
      const auto b = load_block<BlockIq1Kt>(row + 4 + ibl * sizeof(BlockIq1Kt));
      for (int ib = 0; ib < kNumSub; ++ib) {
        const float sl = d * static_cast<float>(kIq4kValues[b.sh[ib] & 0xF]);
        for (int ig = 0; ig < 4; ++ig) {
          const int jj = 4 * ib + ig;
          const uint32_t seed = b.ql[jj] | ((uint32_t(b.qh[jj % 16]) << (8 - 4 * (jj / 16))) & 0xF00) |
                                ((uint32_t(b.sh[ib]) << (8 - ig)) & 0x1000);
          emit(seed, kOffset, 8, sl, dst);
          dst += 8;
        }
      }
    }
  }
}

void iq2_kt_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const int64_t nb = n / kQK;
  const uint8_t* row = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r, row += 4 + nb * sizeof(BlockIq2Kt)) {
    const float d = row_scale(row);
    for (int64_t ibl = 0; ibl < nb; ++ibl) {
      const auto b = load_block<BlockIq2Kt>(row + 4 + ibl * sizeof(BlockIq2Kt));
      for (int ib = 0; ib < kNumSub; ++ib) {
        const int nib = (b.scales[ib % 4] >> (4 * (ib / 4))) & 0xF;
        const float sl = d * static_cast<float>(kIq4kValues[nib]);
        for (int ig = 0; ig < 4; ++ig) {
          const int jj = 4 * ib + ig;
          emit(uint32_t(b.ql[2 * jj]) | uint32_t(b.ql[2 * jj + 1]) << 8, kOffset, 8, sl, dst);
          dst += 8;
        }
      }
    }
  }
}

void iq3_kt_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const int64_t nb = n / kQK;
  const uint8_t* row = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r, row += 4 + nb * sizeof(BlockIq3Kt)) {
    const float d = row_scale(row);
    for (int64_t ibl = 0; ibl < nb; ++ibl) {
      const auto b = load_block<BlockIq3Kt>(row + 4 + ibl * sizeof(BlockIq3Kt));
      for (int ib = 0; ib < kNumSub; ++ib) {
        const int nib = (b.scales[ib % 4] >> (4 * (ib / 4))) & 0xF;
        const float sl = d * static_cast<float>(nib);
        for (int ig = 0; ig < 4; ++ig) {
          const int jj = 4 * ib + ig;
          int v[8];
          trellis_values(uint32_t(b.ql[2 * jj]) | uint32_t(b.ql[2 * jj + 1]) << 8, kOffset, 8, v);
          for (int k = 0; k < 8; ++k) {
            const float y = sl * std::fabs(static_cast<float>(v[k]));
            // Negation, not multiplication by -1: a zero becomes -0.0f exactly as in ik.
            dst[k] = (b.qh[8 * ig + k] >> ib) & 1 ? -y : y;
          }
          dst += 8;
        }
      }
    }
  }
}

void iq4_kt_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const int64_t nb = n / kQK;
  const uint8_t* row = static_cast<const uint8_t*>(src);
  for (int64_t r = 0; r < nrows; ++r, row += 4 + nb * sizeof(BlockIq4Kt)) {
    const float d = row_scale(row);
    for (int64_t ibl = 0; ibl < nb; ++ibl) {
      const auto b = load_block<BlockIq4Kt>(row + 4 + ibl * sizeof(BlockIq4Kt));
      const uint8_t* ql = reinterpret_cast<const uint8_t*>(b.qs + kNumSub);  // 64 bytes: seed bits 0-7
      const uint8_t* qh = ql + 64;                                           // 32 bytes: bits 8-11
      for (int ib = 0; ib < kNumSub; ++ib) {
        const uint32_t shb = b.qs[ib];  // bit 0: offset flag, bits 1-7: scale + 64, bits 8+3g..: seed bits 12-14
        const uint32_t offset = shb & 1 ? kIq4AltOffset : kOffset;
        const float sl = d * static_cast<float>(int((shb & 0xFF) >> 1) - 64);
        for (int ig = 0; ig < 8; ++ig) {
          const int jj = 8 * ib + ig;
          const uint32_t seed = ql[jj] | ((uint32_t(qh[jj % 32]) << (8 - 4 * (jj / 32))) & 0xF00) |
                                (((shb >> (8 + 3 * ig)) & 7) << 12);
          emit(seed, offset, 4, sl, dst);
          dst += 4;
        }
      }
    }
  }
}

}  // namespace

void register_trellis(QuantTable& t) {
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
    // ggml does not require an imatrix for any KT type (llama-quantize's rule for IQ1_KT/IQ2_KT
    // is enforced by the quantize command, not here).
    t[static_cast<size_t>(ty)].needs_imatrix = false;
  };
  set(GgmlType::IQ1_KT, iq1_kt_to_float, trellis::quantize_iq1_kt);
  set(GgmlType::IQ2_KT, iq2_kt_to_float, trellis::quantize_iq2_kt);
  set(GgmlType::IQ3_KT, iq3_kt_to_float, trellis::quantize_iq3_kt);
  set(GgmlType::IQ4_KT, iq4_kt_to_float, trellis::quantize_iq4_kt);
}

}  // namespace expertmesh::quant
