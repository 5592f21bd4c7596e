// Interleaved IQK types IQ2_K_R4 IQ3_K_R4 IQ4_K_R4 IQ5_K_R4 IQ4_KS_R4 IQ5_KS_R4
// (iqk_quantize.cpp repack_iq2_k .. repack_iq5_ks). Offsets in bytes; sub-block ib = weights
// 32*ib .. 32*ib+31, each with two 16-weight scales (the _K types) or one (the _KS types).
//
// _K types: the base u16 `extra` has bits 2*ib / 2*ib+1 (shifted value table for the first /
// second 16 weights of sub-block ib); R stores them as extra[k] bit ib / extra[k+4] bit ib.
// Their two scales of sub-block ib go to interleaved index 8*ib + k and 8*ib + k + 4.
// _KS types: the f32 row scale is row meta (the 4 scales of a group come first, handled by the
// generic driver); scales[4*ib + k] = row k's scales[ib].
#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/interleave_patterns.h"
#include "kernels/quant/interleave_superblock.h"

namespace expertmesh::quant::interleave {
namespace {

void extra_put(uint16_t extra, int k, uint8_t* ye) {
  for (int ib = 0; ib < 8; ++ib) {
    ye[k] |= static_cast<uint8_t>(((extra >> (2 * ib)) & 1) << ib);
    ye[k + 4] |= static_cast<uint8_t>(((extra >> (2 * ib + 1)) & 1) << ib);
  }
}
uint16_t extra_get(const uint8_t* ye, int k) {
  uint16_t extra = 0;
  for (int ib = 0; ib < 8; ++ib)
    extra |= static_cast<uint16_t>((((ye[k] >> ib) & 1) << (2 * ib)) | (((ye[k + 4] >> ib) & 1) << (2 * ib + 1)));
  return extra;
}

// 4-bit interleaved scale at index is: nibble is/32 of s[is%32].
void put_scale4(uint8_t* s, int is, int v) { s[is % 32] |= static_cast<uint8_t>((v & 0xf) << (4 * (is / 32))); }
int get_scale4(const uint8_t* s, int is) { return (s[is % 32] >> (4 * (is / 32))) & 0xf; }

// ------------------------------------------------------------------ IQ2_K_R4
// Base: d @0, extra @2, scales[8] @4 (two 4-bit scales per sub-block), qs[64] @12 (2-bit).
// R: d[4] @0, extra[8] @8, scales[32] @16 (put_scale4), qs[256] @48 (2-bit pattern).
struct IQ2_K_R4 {
  static constexpr GgmlType kType = GgmlType::IQ2_K_R4, kBase = GgmlType::IQ2_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 8, 0, 40);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      extra_put(load<uint16_t>(x[k] + 2), k, y + 8);
      uint8_t L[256];
      crumbs256_get(x[k] + 12, L);
      for (int ib = 0; ib < 8; ++ib) {
        put_scale4(y + 16, 8 * ib + k, x[k][4 + ib] & 0xf);
        put_scale4(y + 16, 8 * ib + k + 4, x[k][4 + ib] >> 4);
        put_crumbs4(L + 32 * ib, y + 48 + 32 * ib, k);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      store<uint16_t>(x[k] + 2, extra_get(y + 8, k));
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        x[k][4 + ib] = static_cast<uint8_t>(get_scale4(y + 16, 8 * ib + k) | (get_scale4(y + 16, 8 * ib + k + 4) << 4));
        get_crumbs4(y + 48 + 32 * ib, k, L + 32 * ib);
      }
      crumbs256_put(L, x[k] + 12);
    }
  }
};

// ------------------------------------------------------------------ IQ3_K_R4
// Base: d @0, extra @2, scales_h u16 @4 (sign bit per 16-weight scale), scales_l[8] @6 (4-bit),
// qs[64] @14 (2 low bits), qh[32] @78 (bit 2). R: d[4] @0, extra[8] @8, scales_h[8] @16 (bit
// is/8 of scales_h[is%8]), scales_l[32] @24 (put_scale4), qs[256] @56 (2-bit pattern), qh[128]
// @312 (16 bytes per sub-block, bit 2 of L in linear order).
struct IQ3_K_R4 {
  static constexpr GgmlType kType = GgmlType::IQ3_K_R4, kBase = GgmlType::IQ3_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 8, 0, 48);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      extra_put(load<uint16_t>(x[k] + 2), k, y + 8);
      const uint16_t sh = load<uint16_t>(x[k] + 4);
      uint8_t L[256];
      crumbs256_get(x[k] + 14, L);
      bits256_or(x[k] + 78, 2, L);
      for (int ib = 0; ib < 8; ++ib) {
        for (int h = 0; h < 2; ++h) {
          const int is = 8 * ib + k + 4 * h;
          put_scale4(y + 24, is, x[k][6 + ib] >> (4 * h));
          y[16 + is % 8] |= static_cast<uint8_t>(((sh >> (2 * ib + h)) & 1) << (is / 8));
        }
        put_crumbs4(L + 32 * ib, y + 56 + 32 * ib, k);
        put_high_bits4(L + 32 * ib, y + 312 + 16 * ib, k, 2, kOrderLinear);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      store<uint16_t>(x[k] + 2, extra_get(y + 8, k));
      uint16_t sh = 0;
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        x[k][6 + ib] = 0;
        for (int h = 0; h < 2; ++h) {
          const int is = 8 * ib + k + 4 * h;
          x[k][6 + ib] |= static_cast<uint8_t>(get_scale4(y + 24, is) << (4 * h));
          sh |= static_cast<uint16_t>(((y[16 + is % 8] >> (is / 8)) & 1) << (2 * ib + h));
        }
        get_crumbs4(y + 56 + 32 * ib, k, L + 32 * ib);
        or_high_bits4(y + 312 + 16 * ib, k, 2, kOrderLinear, L + 32 * ib);
      }
      store<uint16_t>(x[k] + 4, sh);
      crumbs256_put(L, x[k] + 14);
      bits256_put(L, 2, x[k] + 78);
    }
  }
};

// ------------------------------------------------------------------ IQ4_K_R4 / IQ5_K_R4
// Base IQ4_K: d @0, extra @2, scales_h[4] @4 (2 bits per 16-weight scale: scale 2*ib+h in bits
// 4*(ib%2) + 2*h of scales_h[ib/2]), scales_l[8] @8 (4 bits), qs[128] @16 (nibbles per
// sub-block). IQ5_K: the same, qs[128] @16 in the Q5_K nibble layout, qh[32] @144 (bit 4).
// R: d[4] @0, extra[8] @8, scales_h[16] @16, scales_l[32] @32 (6-bit scales, put_scale6),
// qs[512] @64 (4-row nibble pattern); IQ5_K_R4 adds qh[128] @576 (bit 4, kOrderIq5K).
template <bool kFive>
struct IqxKR4 {
  static void base_quants(const uint8_t* x, uint8_t* L) {
    if constexpr (kFive) {
      nibbles256_get(x + 16, L);
      bits256_or(x + 144, 4, L);
    } else {
      nibbles_sub_get(x + 16, L);
    }
  }
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 8, 0, 56);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      extra_put(load<uint16_t>(x[k] + 2), k, y + 8);
      uint8_t L[256];
      base_quants(x[k], L);
      for (int ib = 0; ib < 8; ++ib) {
        for (int h = 0; h < 2; ++h) {
          const int lo = (x[k][8 + ib] >> (4 * h)) & 0xf;
          const int hi = (x[k][4 + ib / 2] >> (4 * (ib % 2) + 2 * h)) & 3;
          put_scale6(y + 32, y + 16, 8 * ib + k + 4 * h, lo | (hi << 4));
        }
        put_nibbles4(L + 32 * ib, y + 64 + 64 * ib, k);
        if constexpr (kFive) put_high_bits4(L + 32 * ib, y + 576 + 16 * ib, k, 4, kOrderIq5K);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      store<uint16_t>(x[k] + 2, extra_get(y + 8, k));
      std::memset(x[k] + 4, 0, 12);
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        for (int h = 0; h < 2; ++h) {
          const int v = get_scale6(y + 32, y + 16, 8 * ib + k + 4 * h);
          x[k][8 + ib] |= static_cast<uint8_t>((v & 0xf) << (4 * h));
          x[k][4 + ib / 2] |= static_cast<uint8_t>((v >> 4) << (4 * (ib % 2) + 2 * h));
        }
        get_nibbles4(y + 64 + 64 * ib, k, L + 32 * ib);
        if constexpr (kFive) or_high_bits4(y + 576 + 16 * ib, k, 4, kOrderIq5K, L + 32 * ib);
      }
      if constexpr (kFive) {
        nibbles256_put(L, x[k] + 16);
        bits256_put(L, 4, x[k] + 144);
      } else {
        nibbles_sub_put(L, x[k] + 16);
      }
    }
  }
};
struct IQ4_K_R4 : IqxKR4<false> {
  static constexpr GgmlType kType = GgmlType::IQ4_K_R4, kBase = GgmlType::IQ4_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
};
struct IQ5_K_R4 : IqxKR4<true> {
  static constexpr GgmlType kType = GgmlType::IQ5_K_R4, kBase = GgmlType::IQ5_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
};

// ------------------------------------------------------------------ IQ4_KS_R4 / IQ5_KS_R4
// Base block (after the row's f32 scale): scales[8] @0, qs[128] @8 (IQ4_KS: nibbles per
// sub-block; IQ5_KS: Q5_K nibble layout), IQ5_KS qh[32] @136 (bit 4).
// R block: scales[32] @0 (scales[4*ib + k]), qs[512] @32 (4-row nibble pattern); IQ5_KS_R4 adds
// qh[128] @544 (bit 4, kOrderIq5K).
template <bool kFive>
struct IqxKsR4 {
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      uint8_t L[256];
      if constexpr (kFive) {
        nibbles256_get(x[k] + 8, L);
        bits256_or(x[k] + 136, 4, L);
      } else {
        nibbles_sub_get(x[k] + 8, L);
      }
      for (int ib = 0; ib < 8; ++ib) {
        y[4 * ib + k] = x[k][ib];
        put_nibbles4(L + 32 * ib, y + 32 + 64 * ib, k);
        if constexpr (kFive) put_high_bits4(L + 32 * ib, y + 544 + 16 * ib, k, 4, kOrderIq5K);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        x[k][ib] = y[4 * ib + k];
        get_nibbles4(y + 32 + 64 * ib, k, L + 32 * ib);
        if constexpr (kFive) or_high_bits4(y + 544 + 16 * ib, k, 4, kOrderIq5K, L + 32 * ib);
      }
      if constexpr (kFive) {
        nibbles256_put(L, x[k] + 8);
        bits256_put(L, 4, x[k] + 136);
      } else {
        nibbles_sub_put(L, x[k] + 8);
      }
    }
  }
};
struct IQ4_KS_R4 : IqxKsR4<false> {
  static constexpr GgmlType kType = GgmlType::IQ4_KS_R4, kBase = GgmlType::IQ4_KS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
};
struct IQ5_KS_R4 : IqxKsR4<true> {
  static constexpr GgmlType kType = GgmlType::IQ5_KS_R4, kBase = GgmlType::IQ5_KS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 0;
};

}  // namespace

void register_interleaved_iqk(QuantTable& t) {
  register_spec<IQ2_K_R4>(t);
  register_spec<IQ3_K_R4>(t);
  register_spec<IQ4_K_R4>(t);
  register_spec<IQ5_K_R4>(t);
  register_spec<IQ4_KS_R4>(t);
  register_spec<IQ5_KS_R4>(t);
}

}  // namespace expertmesh::quant::interleave
