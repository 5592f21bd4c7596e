// The bit-shuffles the peer's 4-row repacks share, on 32 quants at a time. Internal to
// kernels/quant (interleave_*.cpp).
//
// L[0..31] are the quants of one 32-weight (sub-)block of one row as small unsigned integers; the
// helpers write or read row k's bytes of a 4-row interleaved block. "get" functions overwrite L
// with the field they extract (other bits zero); callers OR further fields in.
#pragma once

#include <cstdint>

namespace expertmesh::quant::interleave {

// Base 4-bit packing of 32 quants (legacy / IQ4_NL style): qs[j] = L[j] | L[j+16] << 4.
inline void nibbles_to_quants(const uint8_t* qs, uint8_t* L) {
  for (int j = 0; j < 16; ++j) {
    L[j] = qs[j] & 0xf;
    L[j + 16] = qs[j] >> 4;
  }
}
inline void quants_to_nibbles(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((L[j] & 0xf) | ((L[j + 16] & 0xf) << 4));
}

// 4-row nibble pattern (64 bytes per 32 columns): for i < 4
//   y[4k+i+ 0] = L[i]    | L[i+8]  << 4     y[4k+i+32] = L[i+4]  | L[i+12] << 4
//   y[4k+i+16] = L[i+16] | L[i+24] << 4     y[4k+i+48] = L[i+20] | L[i+28] << 4   (low 4 bits of L)
inline constexpr int kNibbleLo[4] = {0, 16, 4, 20};  // quant offset of the low nibble of y[4k+i+16*s]
inline void put_nibbles4(const uint8_t* L, uint8_t* y, int k) {
  for (int s = 0; s < 4; ++s)
    for (int i = 0; i < 4; ++i) {
      const int o = kNibbleLo[s] + i;
      y[16 * s + 4 * k + i] = static_cast<uint8_t>((L[o] & 0xf) | ((L[o + 8] & 0xf) << 4));
    }
}
inline void get_nibbles4(const uint8_t* y, int k, uint8_t* L) {
  for (int s = 0; s < 4; ++s)
    for (int i = 0; i < 4; ++i) {
      const int o = kNibbleLo[s] + i;
      const uint8_t v = y[16 * s + 4 * k + i];
      L[o] = v & 0xf;
      L[o + 8] = v >> 4;
    }
}

// 4-row 2-bit pattern (32 bytes per 32 columns): y[4k+i+16h] bits 2m..2m+1 = L[16h + 4m + i] & 3.
inline void put_crumbs4(const uint8_t* L, uint8_t* y, int k) {
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      uint8_t v = 0;
      for (int m = 0; m < 4; ++m) v |= static_cast<uint8_t>((L[16 * h + 4 * m + i] & 3) << (2 * m));
      y[16 * h + 4 * k + i] = v;
    }
}
inline void get_crumbs4(const uint8_t* y, int k, uint8_t* L) {
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      const uint8_t v = y[16 * h + 4 * k + i];
      for (int m = 0; m < 4; ++m) L[16 * h + 4 * m + i] = (v >> (2 * m)) & 3;
    }
}

// 4-row single high bit (16 bytes per 32 columns): y[4k+i] bit m = bit `bit` of L[order[m] + i].
inline constexpr int kOrderLinear[8] = {0, 4, 8, 12, 16, 20, 24, 28};   // Q3_K_R4, IQ3_K_R4
inline constexpr int kOrderQ5K[8] = {0, 8, 4, 12, 16, 24, 20, 28};      // Q5_K_R4
inline constexpr int kOrderIq5K[8] = {0, 8, 16, 24, 4, 12, 20, 28};     // IQ5_K_R4, IQ5_KS_R4
inline void put_high_bits4(const uint8_t* L, uint8_t* y, int k, int bit, const int* order) {
  for (int i = 0; i < 4; ++i) {
    uint8_t v = 0;
    for (int m = 0; m < 8; ++m) v |= static_cast<uint8_t>(((L[order[m] + i] >> bit) & 1) << m);
    y[4 * k + i] = v;
  }
}
inline void or_high_bits4(const uint8_t* y, int k, int bit, const int* order, uint8_t* L) {
  for (int i = 0; i < 4; ++i)
    for (int m = 0; m < 8; ++m) L[order[m] + i] |= static_cast<uint8_t>(((y[4 * k + i] >> m) & 1) << bit);
}

}  // namespace expertmesh::quant::interleave
