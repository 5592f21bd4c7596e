// Interleaved k-quants Q2_K_R4 .. Q6_K_R4 (iqk_quantize.cpp repack_q2_k .. repack_q6_k). Each
// base super-block (256 weights) is converted to its quants L[256] (unsigned) and scales, then
// written into the 4-row block in the layout stated per type; unpack is the exact inverse.
// Offsets are in bytes. "sub-block ib" = weights 32*ib .. 32*ib+31.
#include "kernels/quant/interleave_internal.h"
#include "kernels/quant/interleave_patterns.h"
#include "kernels/quant/interleave_superblock.h"

namespace expertmesh::quant::interleave {
namespace {

// ------------------------------------------------------------------ Q2_K_R4
// Base Q2_K: scales[16] @0 (4-bit scale | 4-bit min << 4 per 16 weights), qs[64] @16, d @80,
// dmin @82. R: d[4] @0, dmin[4] @8, scales[64] @16 (scales[4*j + k] = row k's scales[j]),
// qs[256] @80 (32 bytes per sub-block, 2-bit pattern).
struct Q2_K_R4 {
  static constexpr GgmlType kType = GgmlType::Q2_K_R4, kBase = GgmlType::Q2_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k] + 80, 2);
      std::memcpy(y + 8 + 2 * k, x[k] + 82, 2);
      for (int j = 0; j < 16; ++j) y[16 + 4 * j + k] = x[k][j];
      uint8_t L[256];
      crumbs256_get(x[k] + 16, L);
      for (int ib = 0; ib < 8; ++ib) put_crumbs4(L + 32 * ib, y + 80 + 32 * ib, k);
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k] + 80, y + 2 * k, 2);
      std::memcpy(x[k] + 82, y + 8 + 2 * k, 2);
      for (int j = 0; j < 16; ++j) x[k][j] = y[16 + 4 * j + k];
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) get_crumbs4(y + 80 + 32 * ib, k, L + 32 * ib);
      crumbs256_put(L, x[k] + 16);
    }
  }
};

// ------------------------------------------------------------------ Q3_K_R4
// Base Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96 (16 packed 6-bit scales), d @108.
// L = low 2 bits + 4 * hmask bit (0..7). R: d[4] @0, scales_h[16] @8, scales_l[32] @24 (6-bit
// scale j of row k at index 8*(j/2) + k + 4*(j%2), see put_scale6), qh[128] @56 (16 bytes per
// sub-block: bit 2 of L, linear order), qs[256] @184 (2-bit pattern).
struct Q3_K_R4 {
  static constexpr GgmlType kType = GgmlType::Q3_K_R4, kBase = GgmlType::Q3_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 8, 0, 48);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k] + 108, 2);
      uint8_t sc[16];
      q3k_scales_get(x[k] + 96, sc);
      for (int j = 0; j < 16; ++j) put_scale6(y + 24, y + 8, 8 * (j / 2) + k + 4 * (j % 2), sc[j]);
      uint8_t L[256];
      crumbs256_get(x[k] + 32, L);
      bits256_or(x[k], 2, L);
      for (int ib = 0; ib < 8; ++ib) {
        put_crumbs4(L + 32 * ib, y + 184 + 32 * ib, k);
        put_high_bits4(L + 32 * ib, y + 56 + 16 * ib, k, 2, kOrderLinear);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k] + 108, y + 2 * k, 2);
      uint8_t sc[16];
      for (int j = 0; j < 16; ++j) sc[j] = get_scale6(y + 24, y + 8, 8 * (j / 2) + k + 4 * (j % 2));
      q3k_scales_put(sc, x[k] + 96);
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        get_crumbs4(y + 184 + 32 * ib, k, L + 32 * ib);
        or_high_bits4(y + 56 + 16 * ib, k, 2, kOrderLinear, L + 32 * ib);
      }
      crumbs256_put(L, x[k] + 32);
      bits256_put(L, 2, x[k]);
    }
  }
};

// ------------------------------------------------------------------ Q4_K_R4 / Q5_K_R4
// Base Q4_K: d @0, dmin @2, scales[12] @4 (8 packed 6-bit scale/min pairs), qs[128] @16.
// Base Q5_K: the same, then qh[32] @16 (bit 4 of L) and qs[128] @48.
// R: d[4] @0, dmin[4] @8, scales_h[16] @16, scales_l[32] @32 (for sub-block ib of row k, s = 4*ib+k:
// scales_l[s] = scale & 15 | (min & 15) << 4; scales_h[s % 16] nibble s / 16 = scale >> 4 |
// (min >> 4) << 2). Q5_K_R4 then has qh[128] @64 (16 bytes per sub-block, bit order kOrderQ5K);
// then qs (@64 / @192): 64 bytes per sub-block in the 4-row nibble pattern.
template <bool kFive>
struct QxKR4 {
  static constexpr int kBaseQs = kFive ? 48 : 16;
  static constexpr int kRQs = kFive ? 192 : 64;
  static void repack(const uint8_t* const* x, uint8_t* y) {
    std::memset(y + 16, 0, 16);
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k], 2);
      std::memcpy(y + 8 + 2 * k, x[k] + 2, 2);
      uint8_t sc[8], mn[8];
      k4_scales_get(x[k] + 4, sc, mn);
      uint8_t L[256];
      nibbles256_get(x[k] + kBaseQs, L);
      if constexpr (kFive) bits256_or(x[k] + 16, 4, L);
      for (int ib = 0; ib < 8; ++ib) {
        const int s = 4 * ib + k;
        y[32 + s] = static_cast<uint8_t>((sc[ib] & 0xf) | ((mn[ib] & 0xf) << 4));
        y[16 + s % 16] |= static_cast<uint8_t>(((sc[ib] >> 4) | ((mn[ib] >> 4) << 2)) << (4 * (s / 16)));
        put_nibbles4(L + 32 * ib, y + kRQs + 64 * ib, k);
        if constexpr (kFive) put_high_bits4(L + 32 * ib, y + 64 + 16 * ib, k, 4, kOrderQ5K);
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k], y + 2 * k, 2);
      std::memcpy(x[k] + 2, y + 8 + 2 * k, 2);
      uint8_t sc[8], mn[8], L[256];
      for (int ib = 0; ib < 8; ++ib) {
        const int s = 4 * ib + k;
        const int h = y[16 + s % 16] >> (4 * (s / 16));
        sc[ib] = static_cast<uint8_t>((y[32 + s] & 0xf) | ((h & 3) << 4));
        mn[ib] = static_cast<uint8_t>((y[32 + s] >> 4) | (((h >> 2) & 3) << 4));
        get_nibbles4(y + kRQs + 64 * ib, k, L + 32 * ib);
        if constexpr (kFive) or_high_bits4(y + 64 + 16 * ib, k, 4, kOrderQ5K, L + 32 * ib);
      }
      k4_scales_put(sc, mn, x[k] + 4);
      nibbles256_put(L, x[k] + kBaseQs);
      if constexpr (kFive) bits256_put(L, 4, x[k] + 16);
    }
  }
};
struct Q4_K_R4 : QxKR4<false> {
  static constexpr GgmlType kType = GgmlType::Q4_K_R4, kBase = GgmlType::Q4_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 32;
};
struct Q5_K_R4 : QxKR4<true> {
  static constexpr GgmlType kType = GgmlType::Q5_K_R4, kBase = GgmlType::Q5_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 32;
};

// ------------------------------------------------------------------ Q6_K_R4
// Base Q6_K: ql[128] @0, qh[64] @128, scales[16] @192 (int8 per 16 weights), d @208.
// Quant e = 128*c + 32*s + l (l < 32): low 4 bits in nibble s/2 of ql[64*c + 32*(s%2) + l], high
// 2 bits in bits 2*s of qh[32*c + l].
// R: d[4] @0, scales[64] @8 (row k's scales 2*ib, 2*ib+1 at 8*ib + k, 8*ib + k + 4), qh[256] @72
// (32 bytes per sub-block: qh[4k+i] = hi(L[i]) | hi(L[i+8]) << 2 | hi(L[i+4]) << 4 |
// hi(L[i+12]) << 6, qh[4k+i+16] the same for L[i+16..]), ql[512] @328 (4-row nibble pattern).
struct Q6_K_R4 {
  static constexpr GgmlType kType = GgmlType::Q6_K_R4, kBase = GgmlType::Q6_K;
  static constexpr int kUnitElems = 256;
  static constexpr int kQHelperBlock = 16;
  static constexpr int kHiOrder[4] = {0, 8, 4, 12};
  static void quants_get(const uint8_t* x, uint8_t* L) {
    for (int e = 0; e < 256; ++e) {
      const int c = e / 128, s = (e / 32) % 4, l = e % 32;
      const int lo = (x[64 * c + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0xf;
      const int hi = (x[128 + 32 * c + l] >> (2 * s)) & 3;
      L[e] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
  static void quants_put(const uint8_t* L, uint8_t* x) {
    std::memset(x, 0, 192);
    for (int e = 0; e < 256; ++e) {
      const int c = e / 128, s = (e / 32) % 4, l = e % 32;
      x[64 * c + 32 * (s % 2) + l] |= static_cast<uint8_t>((L[e] & 0xf) << (4 * (s / 2)));
      x[128 + 32 * c + l] |= static_cast<uint8_t>((L[e] >> 4) << (2 * s));
    }
  }
  static void repack(const uint8_t* const* x, uint8_t* y) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(y + 2 * k, x[k] + 208, 2);
      uint8_t L[256];
      quants_get(x[k], L);
      for (int ib = 0; ib < 8; ++ib) {
        y[8 + 8 * ib + k] = x[k][192 + 2 * ib];
        y[8 + 8 * ib + k + 4] = x[k][192 + 2 * ib + 1];
        const uint8_t* Lb = L + 32 * ib;
        put_nibbles4(Lb, y + 328 + 64 * ib, k);
        for (int h = 0; h < 2; ++h)
          for (int i = 0; i < 4; ++i) {
            uint8_t v = 0;
            for (int m = 0; m < 4; ++m) v |= static_cast<uint8_t>((Lb[16 * h + kHiOrder[m] + i] >> 4) << (2 * m));
            y[72 + 32 * ib + 16 * h + 4 * k + i] = v;
          }
      }
    }
  }
  static void unpack(const uint8_t* y, uint8_t* const* x) {
    for (int k = 0; k < 4; ++k) {
      std::memcpy(x[k] + 208, y + 2 * k, 2);
      uint8_t L[256];
      for (int ib = 0; ib < 8; ++ib) {
        x[k][192 + 2 * ib] = y[8 + 8 * ib + k];
        x[k][192 + 2 * ib + 1] = y[8 + 8 * ib + k + 4];
        uint8_t* Lb = L + 32 * ib;
        get_nibbles4(y + 328 + 64 * ib, k, Lb);
        for (int h = 0; h < 2; ++h)
          for (int i = 0; i < 4; ++i) {
            const uint8_t v = y[72 + 32 * ib + 16 * h + 4 * k + i];
            for (int m = 0; m < 4; ++m) Lb[16 * h + kHiOrder[m] + i] |= static_cast<uint8_t>(((v >> (2 * m)) & 3) << 4);
          }
      }
      quants_put(L, x[k]);
    }
  }
};

}  // namespace

void register_interleaved_kquants(QuantTable& t) {
  register_spec<Q2_K_R4>(t);
  register_spec<Q3_K_R4>(t);
  register_spec<Q4_K_R4>(t);
  register_spec<Q5_K_R4>(t);
  register_spec<Q6_K_R4>(t);
}

}  // namespace expertmesh::quant::interleave
