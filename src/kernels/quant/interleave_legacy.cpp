// Interleaved variants of the 32-weight and 8/16-bit types (iqk_quantize.cpp repack_q4_0,
// repack_q5_0, repack_q6_0, repack_q8_0, repack_iq4_nl, repack_mxfp4, repack_q8_KV, repack_q8_k,
// repack_q16_k, repack_bf16, repack_iq2_bn): Q4_0_R8 Q5_0_R4 Q6_0_R4 Q8_0_R8 IQ4_NL_R4 MXFP4_R8
// Q8_KV_R8 Q8_K_R8 Q8_K_R16 BF16_R16 IQ2_BN_R4. Layouts are stated per Spec; "row k" is the k-th
// row of a group, "L[j]" the j-th quant of a block as an unsigned integer.
#include <algorithm>

#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/interleave_patterns.h"

// Bit-exactness of the dequantizers relies on no floating-point contraction (GCC in ISO C++ mode
// does not contract; clang would).
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace expertmesh::quant::interleave {
namespace {

// ------------------------------------------------------------------ Q4_0_R8 / MXFP4_R8
// Base block: scale (fp16 d or E8M0 e) + qs[16] (L[j] | L[j+16] << 4).
// R block (8 rows): scales[8], then qs[128] with qs[32*l + 4*k + i] = row k's qs[4*l + i].
template <GgmlType R, GgmlType B, int kScaleBytes>
struct Nibble8Rows {
  static constexpr GgmlType kType = R, kBase = B;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = R == GgmlType::Q4_0_R8 ? 32 : 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 8; ++k) {
      std::memcpy(y + kScaleBytes * k, x[k], kScaleBytes);
      for (int l = 0; l < 4; ++l) std::memcpy(y + 8 * kScaleBytes + 32 * l + 4 * k, x[k] + kScaleBytes + 4 * l, 4);
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 8; ++k) {
      std::memcpy(x[k], y + kScaleBytes * k, kScaleBytes);
      for (int l = 0; l < 4; ++l) std::memcpy(x[k] + kScaleBytes + 4 * l, y + 8 * kScaleBytes + 32 * l + 4 * k, 4);
    }
  }
};
using Q4_0_R8 = Nibble8Rows<GgmlType::Q4_0_R8, GgmlType::Q4_0, 2>;
using MXFP4_R8 = Nibble8Rows<GgmlType::MXFP4_R8, GgmlType::MXFP4, 1>;

// ------------------------------------------------------------------ IQ4_NL_R4
// Base: d, qs[16]. R (4 rows): d[4], qs[64] in the 4-row nibble pattern (interleave_patterns.h).
struct IQ4_NL_R4 {
  static constexpr GgmlType kType = GgmlType::IQ4_NL_R4, kBase = GgmlType::IQ4_NL;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = 32;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      uint8_t L[32];
      nibbles_to_quants(x[k] + 2, L);
      put_nibbles4(L, y + 8, k);
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      uint8_t L[32];
      get_nibbles4(y + 8, k, L);
      quants_to_nibbles(L, x[k] + 2);
    }
  }
};

// ------------------------------------------------------------------ Q5_0_R4 / Q6_0_R4
// Base Q5_0: d, qh[4] (bit j of the u32: bit 4 of L[j]), qs[16]. Q6_0: d, qh[8] (L[j] bits 4-5
// for j < 16 in qh[j%8] bits 4*(j/8)+0..1, for j+16 in bits 4*(j/8)+2..3), qs[16].
// R (4 rows): d[4], qh, qs[64]. qs in the 4-row nibble pattern. With l1 = 4*(l/2) + 16*(l%2) and
// l2 = l1 + 8 (the quants of qs byte 4*k + i + 16*l): Q5_0_R4 qh[16] holds in qh[4*k + i] bit l
// the 5th bit of L[i+l1] and bit l+4 that of L[i+l2]; Q6_0_R4 qh[32] holds in
// qh[4*k + i + 16*(l%2)] bits 2*(l/2) (L[i+l1]) and 2*(l/2)+4 (L[i+l2]) the two high bits.
template <int kHighBits>
struct HighBitsR4 {
  static constexpr int kQhBytes = kHighBits == 1 ? 4 : 8;  // base block's qh
  static void base_to_quants(const uint8_t* x, uint8_t* L) {
    nibbles_to_quants(x + 2 + kQhBytes, L);
    for (int j = 0; j < 32; ++j) {
      if constexpr (kHighBits == 1) {
        L[j] |= ((x[2 + j / 8] >> (j % 8)) & 1) << 4;
      } else {
        const int jj = j % 16, shift = 4 * (jj / 8) + 2 * (j / 16);
        L[j] |= ((x[2 + jj % 8] >> shift) & 3) << 4;
      }
    }
  }
  static void quants_to_base(const uint8_t* L, uint8_t* x) {
    quants_to_nibbles(L, x + 2 + kQhBytes);
    std::memset(x + 2, 0, kQhBytes);
    for (int j = 0; j < 32; ++j) {
      if constexpr (kHighBits == 1) {
        x[2 + j / 8] |= static_cast<uint8_t>((L[j] >> 4) << (j % 8));
      } else {
        const int jj = j % 16, shift = 4 * (jj / 8) + 2 * (j / 16);
        x[2 + jj % 8] |= static_cast<uint8_t>((L[j] >> 4) << shift);
      }
    }
  }
  // Position of the high bits of L[i + l1] (h = 0) / L[i + l2] (h = 1) in the R block's qh.
  static int qh_byte(int k, int i, int l) { return kHighBits == 1 ? 4 * k + i : 4 * k + i + 16 * (l % 2); }
  static int qh_shift(int l, int h) { return kHighBits == 1 ? l + 4 * h : 2 * (l / 2) + 4 * h; }
  static constexpr int kRQh = kHighBits == 1 ? 16 : 32;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    uint8_t* qh = y + 8;
    std::memset(qh, 0, kRQh);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      uint8_t L[32];
      base_to_quants(x[k], L);
      put_nibbles4(L, qh + kRQh, k);
      for (int l = 0; l < 4; ++l) {
        const int l1 = 4 * (l / 2) + 16 * (l % 2), l2 = l1 + 8;
        for (int i = 0; i < 4; ++i)
          qh[qh_byte(k, i, l)] |= static_cast<uint8_t>(((L[i + l1] >> 4) << qh_shift(l, 0)) | ((L[i + l2] >> 4) << qh_shift(l, 1)));
      }
    }
  }
  // Row k's 32 quants of an R block.
  static void row_quants(const uint8_t* y, int k, uint8_t* L) {
    const uint8_t* qh = y + 8;
    const int mask = (1 << kHighBits) - 1;
    get_nibbles4(qh + kRQh, k, L);
    for (int l = 0; l < 4; ++l) {
      const int l1 = 4 * (l / 2) + 16 * (l % 2), l2 = l1 + 8;
      for (int i = 0; i < 4; ++i) {
        const int h = qh[qh_byte(k, i, l)];
        L[i + l1] |= static_cast<uint8_t>(((h >> qh_shift(l, 0)) & mask) << 4);
        L[i + l2] |= static_cast<uint8_t>(((h >> qh_shift(l, 1)) & mask) << 4);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      uint8_t L[32];
      row_quants(y, k, L);
      quants_to_base(L, x[k]);
    }
  }
  // dequantize_row_q5_0_r4 / q6_0_r4 compute `d * q + m` with m = -16 d (-32 d): two roundings
  // (the peer's build does not fuse them), unlike the base types' single `d * (q - 16)`.
  static void dequant(const uint8_t*, const uint8_t* y, float* const* out) {
    for (int k = 0; k < 4; ++k) {
      const float d = fp16_to_f32(load<uint16_t>(y + 2 * k));
      const float m = -static_cast<float>(16 << (kHighBits - 1)) * d;
      uint8_t L[32];
      row_quants(y, k, L);
      for (int j = 0; j < 32; ++j) out[k][j] = d * static_cast<float>(L[j]) + m;
    }
  }
};
struct Q5_0_R4 : HighBitsR4<1> {
  static constexpr GgmlType kType = GgmlType::Q5_0_R4, kBase = GgmlType::Q5_0;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = 0;  // quantize_q5_0_r4 passes the imatrix straight through
};
struct Q6_0_R4 : HighBitsR4<2> {
  static constexpr GgmlType kType = GgmlType::Q6_0_R4, kBase = GgmlType::Q6_0;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = 32;
};

// ------------------------------------------------------------------ Q8_0_R8
// Base: d, qs[32]. R (8 rows): d[8], qs[256] with qs[32*l + 4*k + i] = row k's qs[4*l + i] and
// qs[128 + 32*l + 4*k + i] = row k's qs[16 + 4*l + i].
struct Q8_0_R8 {
  static constexpr GgmlType kType = GgmlType::Q8_0_R8, kBase = GgmlType::Q8_0;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 8; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int h = 0; h < 8; ++h) std::memcpy(y + 16 + 32 * h + 4 * k, x[k] + 2 + 4 * h, 4);
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 8; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      for (int h = 0; h < 8; ++h) std::memcpy(x[k] + 2 + 4 * h, y + 16 + 32 * h + 4 * k, 4);
    }
  }
};

// ------------------------------------------------------------------ Q8_KV_R8
// Base row: f32 d, i32 sum of the quants, int8 q[n]. R group (8 rows): f32 d[8], then per 16
// columns 128 bytes: q[32*l + 4*k + i] = row k's q[4*l + i] (the peer's AVX2 transpose).
struct Q8_KV_R8 {
  static constexpr GgmlType kType = GgmlType::Q8_KV_R8, kBase = GgmlType::Q8_KV;
  static constexpr int kUnitElems = 32;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 8; ++k)
        for (int l = 0; l < 4; ++l) std::memcpy(y + 128 * h + 32 * l + 4 * k, x[k] + 16 * h + 4 * l, 4);
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int h = 0; h < 2; ++h)
      for (int k = 0; k < 8; ++k)
        for (int l = 0; l < 4; ++l) std::memcpy(x[k] + 16 * h + 4 * l, y + 128 * h + 32 * l + 4 * k, 4);
  }
  // The interleaved type keeps only d; the base row's sum of quants is recomputed.
  static void finish_row(uint8_t* row, int64_t n) {
    int32_t sum = 0;
    const auto* q = reinterpret_cast<const int8_t*>(row + 8);
    for (int64_t j = 0; j < n; ++j) sum += q[j];
    std::memcpy(row + 4, &sum, sizeof(sum));
  }
};

// ------------------------------------------------------------------ Q8_K_R8 / Q8_K_R16
// Base Q8_K (ik's 296-byte activation block): f32 d, f32 sum, int8 qs[256], int16 bsums[16].
// R (N rows): fp16 d[N], then qs[N*256] with qs[4*N*j + 4*k + i] = row k's qs[4*j + i].
// Q8_K_R16 stores the quants offset by 128 (unsigned): the peer's AVX512 build, which wrote the
// reference files, always flips the sign bit in repack_q16_k, and its dequantizer reads them as
// `d * u - 128 d`.
template <int N>
struct Q8KRows {
  static constexpr GgmlType kType = N == 8 ? GgmlType::Q8_K_R8 : GgmlType::Q8_K_R16, kBase = GgmlType::Q8_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
  static constexpr uint8_t kFlip = N == 16 ? 0x80 : 0x00;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < N; ++k) {
      // Saturating instead of the peer's plain conversion: only a block beyond 127 * 65504
      // differs (the peer would store an infinite scale).
      const float d = std::clamp(load_f32(x[k]), -65504.f, 65504.f);
      const uint16_t h = f32_to_fp16(d);
      std::memcpy(y + 2 * k, &h, 2);
      for (int j = 0; j < 64; ++j)
        for (int i = 0; i < 4; ++i) y[2 * N + 4 * N * j + 4 * k + i] = x[k][8 + 4 * j + i] ^ kFlip;
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < N; ++k) {
      uint16_t h;
      std::memcpy(&h, y + 2 * k, 2);
      const float d = fp16_to_f32(h);
      int8_t q[256];
      for (int j = 0; j < 64; ++j)
        for (int i = 0; i < 4; ++i) q[4 * j + i] = static_cast<int8_t>(y[2 * N + 4 * N * j + 4 * k + i] ^ kFlip);
      int16_t bsums[16];
      int total = 0;
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += q[16 * g + l];
        bsums[g] = static_cast<int16_t>(s);
        total += s;
      }
      const float sum = d * static_cast<float>(total);  // as ik's Q8_K quantizer fills it
      std::memcpy(x[k], &d, 4);
      std::memcpy(x[k] + 4, &sum, 4);
      std::memcpy(x[k] + 8, q, 256);
      std::memcpy(x[k] + 264, bsums, 32);
    }
  }
};
using Q8_K_R8 = Q8KRows<8>;
using Q8_K_R16 = Q8KRows<16>;

// ------------------------------------------------------------------ BF16_R16
// Base: bf16 per element. R (16 rows): per pair of columns 2j, 2j+1: y[32*j + 2*k + c] = row k's
// element 2j + c (uint16 units).
struct BF16_R16 {
  static constexpr GgmlType kType = GgmlType::BF16_R16, kBase = GgmlType::BF16;
  static constexpr int kUnitElems = 2;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 16; ++k) std::memcpy(y + 4 * k, x[k], 4);
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 16; ++k) std::memcpy(x[k], y + 4 * k, 4);
  }
  // The peer's llama-quantize writes BF16_R16 with repack_f32_bf16_r16, whose f32 -> bf16 is a
  // truncation (the top 16 bits), not BF16's round-to-nearest-even. We write the same bytes.
  static void quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
    auto* y = static_cast<uint8_t*>(dst);
    for (int64_t r = 0; r < nrows; r += 16, src += 16 * n, y += 32 * n)
      for (int k = 0; k < 16; ++k)
        for (int64_t j = 0; j < n; ++j) {
          const auto h = static_cast<uint16_t>(f32_to_bits(src[k * n + j]) >> 16);
          std::memcpy(y + 2 * (16 * (j - j % 2) + 2 * k + j % 2), &h, 2);
        }
  }
};

// ------------------------------------------------------------------ IQ2_BN_R4
// Base row: f32 scale, then per 64 weights qs[16]: element 16*l + j is bits 2l..2l+1 of qs[j].
// R group: f32 d[4], then per 64 columns 64 bytes: y[4*k + i + 16*l] bits 2m..2m+1 hold row k's
// element 16*l + 4*m + i. Value = d * (q - 1).
struct IQ2_BN_R4 {
  static constexpr GgmlType kType = GgmlType::IQ2_BN_R4, kBase = GgmlType::IQ2_BN;
  static constexpr int kUnitElems = 64;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 4; ++l)
        for (int i = 0; i < 4; ++i) {
          uint8_t v = 0;
          for (int m = 0; m < 4; ++m) v |= static_cast<uint8_t>(((x[k][i + 4 * m] >> (2 * l)) & 3) << (2 * m));
          y[4 * k + i + 16 * l] = v;
        }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 16; ++j) {
        const int i = j % 4, m = j / 4;
        uint8_t v = 0;
        for (int l = 0; l < 4; ++l) v |= static_cast<uint8_t>(((y[4 * k + i + 16 * l] >> (2 * m)) & 3) << (2 * l));
        x[k][j] = v;
      }
  }
  // dequantize_row_iq2_bn_r4 (there is no base IQ2_BN dequantizer in the table).
  static void dequant(const uint8_t* meta, const uint8_t* y, float* const* out) {
    for (int k = 0; k < 4; ++k) {
      const float d = load_f32(meta + 4 * k);
      for (int l = 0; l < 4; ++l)
        for (int i = 0; i < 4; ++i) {
          const uint8_t q = y[4 * k + i + 16 * l];
          for (int m = 0; m < 4; ++m) out[k][16 * l + 4 * m + i] = d * static_cast<float>(((q >> (2 * m)) & 3) - 1);
        }
    }
  }
};

}  // namespace

void register_interleaved_legacy(QuantTable& t) {
  register_spec<Q4_0_R8>(t);
  register_spec<MXFP4_R8>(t);
  register_spec<IQ4_NL_R4>(t);
  register_spec<Q5_0_R4>(t);
  register_spec<Q6_0_R4>(t);
  register_spec<Q8_0_R8>(t);
  register_spec<Q8_KV_R8>(t);
  register_spec<Q8_K_R8>(t);
  register_spec<Q8_K_R16>(t);
  register_spec<BF16_R16>(t);
  register_spec<IQ2_BN_R4>(t);
}

}  // namespace expertmesh::quant::interleave
