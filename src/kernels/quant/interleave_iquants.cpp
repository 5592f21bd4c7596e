// Interleaved mainline i-quants IQ2_XXS_R4 IQ2_XS_R4 IQ2_S_R4 IQ3_XXS_R4 IQ3_S_R4 IQ4_XS_R8
// (iqk_quantize.cpp repack_iq2_xxs .. repack_iq4_xs). Grid indices and scales are moved, not
// re-encoded, except the 7-bit sign fields of IQ2_XXS / IQ2_XS / IQ3_XXS, which the interleaved
// types store "scrambled" (kScrambledSign, a permutation of 0..127) so that the kernels recover
// all 8 signs with s ^ (s << 1). Offsets in bytes; sub-block ib = weights 32*ib .. 32*ib+31.
#include <array>

#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/interleave_superblock.h"

namespace expertmesh::quant::interleave {
namespace {

// The peer's scrambled_sign table (iqk_quantize.cpp).
constexpr uint8_t kScrambledSign[128] = {
    0x00, 0x7f, 0x7e, 0x01, 0x7c, 0x03, 0x02, 0x7d, 0x78, 0x07, 0x06, 0x79, 0x04, 0x7b, 0x7a, 0x05,
    0x70, 0x0f, 0x0e, 0x71, 0x0c, 0x73, 0x72, 0x0d, 0x08, 0x77, 0x76, 0x09, 0x74, 0x0b, 0x0a, 0x75,
    0x60, 0x1f, 0x1e, 0x61, 0x1c, 0x63, 0x62, 0x1d, 0x18, 0x67, 0x66, 0x19, 0x64, 0x1b, 0x1a, 0x65,
    0x10, 0x6f, 0x6e, 0x11, 0x6c, 0x13, 0x12, 0x6d, 0x68, 0x17, 0x16, 0x69, 0x14, 0x6b, 0x6a, 0x15,
    0x40, 0x3f, 0x3e, 0x41, 0x3c, 0x43, 0x42, 0x3d, 0x38, 0x47, 0x46, 0x39, 0x44, 0x3b, 0x3a, 0x45,
    0x30, 0x4f, 0x4e, 0x31, 0x4c, 0x33, 0x32, 0x4d, 0x48, 0x37, 0x36, 0x49, 0x34, 0x4b, 0x4a, 0x35,
    0x20, 0x5f, 0x5e, 0x21, 0x5c, 0x23, 0x22, 0x5d, 0x58, 0x27, 0x26, 0x59, 0x24, 0x5b, 0x5a, 0x25,
    0x50, 0x2f, 0x2e, 0x51, 0x2c, 0x53, 0x52, 0x2d, 0x28, 0x57, 0x56, 0x29, 0x54, 0x2b, 0x2a, 0x55,
};

constexpr std::array<uint8_t, 128> make_unscramble() {
  std::array<uint8_t, 128> inv{};
  for (int s = 0; s < 128; ++s) inv[kScrambledSign[s]] = static_cast<uint8_t>(s);
  return inv;
}
constexpr std::array<uint8_t, 128> kUnscrambleSign = make_unscramble();

constexpr bool scramble_is_permutation() {
  for (int s = 0; s < 128; ++s)
    if (kUnscrambleSign[kScrambledSign[s]] != s) return false;
  return true;
}
static_assert(scramble_is_permutation());

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Base "signs and scale" word (IQ2_XXS, IQ3_XXS): 4 x 7 sign bits at bits 7*m, 4-bit scale at
// bits 28..31. Interleaved word: byte m = scrambled(signs m) << 1 | scale bit m.
uint32_t scramble_sas(uint32_t a) {
  const uint32_t scale = a >> 28;
  uint32_t r = 0;
  for (int m = 0; m < 4; ++m)
    r |= static_cast<uint32_t>((kScrambledSign[(a >> (7 * m)) & 127] << 1) | ((scale >> m) & 1)) << (8 * m);
  return r;
}
uint32_t unscramble_sas(uint32_t r) {
  uint32_t a = 0;
  for (int m = 0; m < 4; ++m) {
    const uint32_t b = (r >> (8 * m)) & 0xff;
    a |= static_cast<uint32_t>(kUnscrambleSign[b >> 1]) << (7 * m);
    a |= (b & 1) << (28 + m);
  }
  return a;
}

// ------------------------------------------------------------------ IQ2_XXS_R4
// Base: d @0, per sub-block 8 bytes @2+8*ib: 4 grid indices, then the signs-and-scale u32.
// R: d[4] @0, sas[128] @8 (u32 [4*ib + k], scrambled), qs[128] @136 (qs[16*ib + 4*k + i] = index i).
struct IQ2_XXS_R4 {
  static constexpr GgmlType kType = GgmlType::IQ2_XXS_R4, kBase = GgmlType::IQ2_XXS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 32;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(y + 136 + 16 * ib + 4 * k, x[k] + 2 + 8 * ib, 4);
        store_u32(y + 8 + 4 * (4 * ib + k), scramble_sas(load_u32(x[k] + 6 + 8 * ib)));
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(x[k] + 2 + 8 * ib, y + 136 + 16 * ib + 4 * k, 4);
        store_u32(x[k] + 6 + 8 * ib, unscramble_sas(load_u32(y + 8 + 4 * (4 * ib + k))));
      }
    }
  }
};

// ------------------------------------------------------------------ IQ2_XS_R4
// Base: d @0, qs u16[32] @2 (9-bit index | 7 sign bits << 9 per 8 weights), scales[8] @66.
// R: d[4] @0, qs u16[128] @8 (qs[16*ib + 4*k + i] = row k's qs[4*ib + i], signs scrambled),
// scales[32] @264 (scales[4*ib + k]).
struct IQ2_XS_R4 {
  static constexpr GgmlType kType = GgmlType::IQ2_XS_R4, kBase = GgmlType::IQ2_XS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int ib = 0; ib < 8; ++ib) {
        for (int i = 0; i < 4; ++i) {
          const uint16_t v = load<uint16_t>(x[k] + 2 + 2 * (4 * ib + i));
          store<uint16_t>(y + 8 + 2 * (16 * ib + 4 * k + i), static_cast<uint16_t>((v & 511) | (kScrambledSign[v >> 9] << 9)));
        }
        y[264 + 4 * ib + k] = x[k][66 + ib];
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      for (int ib = 0; ib < 8; ++ib) {
        for (int i = 0; i < 4; ++i) {
          const uint16_t v = load<uint16_t>(y + 8 + 2 * (16 * ib + 4 * k + i));
          store<uint16_t>(x[k] + 2 + 2 * (4 * ib + i), static_cast<uint16_t>((v & 511) | (kUnscrambleSign[v >> 9] << 9)));
        }
        x[k][66 + ib] = y[264 + 4 * ib + k];
      }
    }
  }
};

// ------------------------------------------------------------------ IQ2_S_R4
// Base: d @0, qs[32] @2 (index low bits), signs[32] @34, qh[8] @66, scales[8] @74.
// R: d[4] @0, qs[128] @8, qh[32] @136, signs[128] @168, scales[32] @296; qs / signs at
// 16*ib + 4*k + i (from 4*ib + i), qh / scales at 4*ib + k (from ib).
struct IQ2_S_R4 {
  static constexpr GgmlType kType = GgmlType::IQ2_S_R4, kBase = GgmlType::IQ2_S;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(y + 8 + 16 * ib + 4 * k, x[k] + 2 + 4 * ib, 4);
        std::memcpy(y + 168 + 16 * ib + 4 * k, x[k] + 34 + 4 * ib, 4);
        y[136 + 4 * ib + k] = x[k][66 + ib];
        y[296 + 4 * ib + k] = x[k][74 + ib];
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(x[k] + 2 + 4 * ib, y + 8 + 16 * ib + 4 * k, 4);
        std::memcpy(x[k] + 34 + 4 * ib, y + 168 + 16 * ib + 4 * k, 4);
        x[k][66 + ib] = y[136 + 4 * ib + k];
        x[k][74 + ib] = y[296 + 4 * ib + k];
      }
    }
  }
};

// ------------------------------------------------------------------ IQ3_XXS_R4
// Base: d @0, qs[64] @2 (grid indices, 8 per sub-block), sas u32[8] @66.
// R: d[4] @0, sas[128] @8 (u32 [4*ib + k], scrambled), qs[256] @136 (qs[32*ib + 8*k + i]).
struct IQ3_XXS_R4 {
  static constexpr GgmlType kType = GgmlType::IQ3_XXS_R4, kBase = GgmlType::IQ3_XXS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 32;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(y + 136 + 32 * ib + 8 * k, x[k] + 2 + 8 * ib, 8);
        store_u32(y + 8 + 4 * (4 * ib + k), scramble_sas(load_u32(x[k] + 66 + 4 * ib)));
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      for (int ib = 0; ib < 8; ++ib) {
        std::memcpy(x[k] + 2 + 8 * ib, y + 136 + 32 * ib + 8 * k, 8);
        store_u32(x[k] + 66 + 4 * ib, unscramble_sas(load_u32(y + 8 + 4 * (4 * ib + k))));
      }
    }
  }
};

// ------------------------------------------------------------------ IQ3_S_R4
// Base: d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106 (two 4-bit scales per byte).
// R: d[4] @0, qs[256] @8 (qs[32*ib + k + 8*i (+4)] = row k's qs[8*ib + i (+4)]), qh[32] @264
// (qh[4*ib + k]), signs[128] @296 (signs[16*ib + 4*k + i] bit 2m / 2m+1 = bit i / 4+i of row k's
// signs[4*ib + m]), scales[16] @424 (scale j of row k in nibble l/16 of scales[l % 16], l = 4*j + k).
struct IQ3_S_R4 {
  static constexpr GgmlType kType = GgmlType::IQ3_S_R4, kBase = GgmlType::IQ3_S;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 296, 0, 128 + 16);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      for (int j = 0; j < 8; ++j) {
        const int l = 4 * j + k, s = (x[k][106 + j / 2] >> (4 * (j % 2))) & 0xf;
        y[424 + l % 16] |= static_cast<uint8_t>(s << (4 * (l / 16)));
      }
      for (int ib = 0; ib < 8; ++ib) {
        y[264 + 4 * ib + k] = x[k][66 + ib];
        for (int i = 0; i < 8; ++i) y[8 + 32 * ib + k + 8 * (i % 4) + 4 * (i / 4)] = x[k][2 + 8 * ib + i];
        for (int i = 0; i < 4; ++i) {
          uint8_t v = 0;
          for (int m = 0; m < 4; ++m) {
            const uint8_t sg = x[k][74 + 4 * ib + m];
            v |= static_cast<uint8_t>((((sg >> i) & 1) << (2 * m)) | (((sg >> (4 + i)) & 1) << (2 * m + 1)));
          }
          y[296 + 16 * ib + 4 * k + i] = v;
        }
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      std::memset(x[k] + 74, 0, 36);
      for (int j = 0; j < 8; ++j) {
        const int l = 4 * j + k, s = (y[424 + l % 16] >> (4 * (l / 16))) & 0xf;
        x[k][106 + j / 2] |= static_cast<uint8_t>(s << (4 * (j % 2)));
      }
      for (int ib = 0; ib < 8; ++ib) {
        x[k][66 + ib] = y[264 + 4 * ib + k];
        for (int i = 0; i < 8; ++i) x[k][2 + 8 * ib + i] = y[8 + 32 * ib + k + 8 * (i % 4) + 4 * (i / 4)];
        for (int i = 0; i < 4; ++i) {
          const uint8_t v = y[296 + 16 * ib + 4 * k + i];
          for (int m = 0; m < 4; ++m)
            x[k][74 + 4 * ib + m] |= static_cast<uint8_t>((((v >> (2 * m)) & 1) << i) | (((v >> (2 * m + 1)) & 1) << (4 + i)));
        }
      }
    }
  }
};

// ------------------------------------------------------------------ IQ4_XS_R8
// Base: d @0, scales_h u16 @2 (2 bits per sub-block), scales_l[4] @4 (4 bits per sub-block),
// qs[128] @8 (quant 32*ib + j: nibble j/16 of qs[16*ib + j%16]).
// R (8 rows): d[8] @0, scales_h[16] @16, scales_l[32] @32 (6-bit scale at index 8*ib + k, see
// put_scale6), qs[1024] @64: qs[128*ib + 4*k + i + 32*s] = L[8*s + i] | L[8*s + i + 4] << 4.
struct IQ4_XS_R8 {
  static constexpr GgmlType kType = GgmlType::IQ4_XS_R8, kBase = GgmlType::IQ4_XS;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 32;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 16, 0, 48);
    for (int k = 0; k < 8; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      const uint16_t sh = load<uint16_t>(x[k] + 2);
      uint8_t L[256];
      nibbles_sub_get(x[k] + 8, L);
      for (int ib = 0; ib < 8; ++ib) {
        const int sl = (x[k][4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
        put_scale6(y + 32, y + 16, 8 * ib + k, sl | (((sh >> (2 * ib)) & 3) << 4));
        for (int s = 0; s < 4; ++s)
          for (int i = 0; i < 4; ++i)
            y[64 + 128 * ib + 4 * k + i + 32 * s] =
                static_cast<uint8_t>(L[32 * ib + 8 * s + i] | (L[32 * ib + 8 * s + i + 4] << 4));
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 8; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      uint16_t sh = 0;
      std::memset(x[k] + 4, 0, 4);
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        const int v = get_scale6(y + 32, y + 16, 8 * ib + k);
        x[k][4 + ib / 2] |= static_cast<uint8_t>((v & 0xf) << (4 * (ib % 2)));
        sh |= static_cast<uint16_t>((v >> 4) << (2 * ib));
        for (int s = 0; s < 4; ++s)
          for (int i = 0; i < 4; ++i) {
            const uint8_t b = y[64 + 128 * ib + 4 * k + i + 32 * s];
            L[32 * ib + 8 * s + i] = b & 0xf;
            L[32 * ib + 8 * s + i + 4] = b >> 4;
          }
      }
      store<uint16_t>(x[k] + 2, sh);
      nibbles_sub_put(L, x[k] + 8);
    }
  }
};

}  // namespace

void register_interleaved_iquants(QuantTable& t) {
  register_spec<IQ2_XXS_R4>(t);
  register_spec<IQ2_XS_R4>(t);
  register_spec<IQ2_S_R4>(t);
  register_spec<IQ3_XXS_R4>(t);
  register_spec<IQ3_S_R4>(t);
  register_spec<IQ4_XS_R8>(t);
}

}  // namespace expertmesh::quant::interleave
