// Field codecs of the 256-weight base super-blocks (k-quants, IQK _K types), as far as the
// repacks need them: quants L[256] in and out of the base packings, and the packed 6-bit scales.
// Layouts from ggml-common.h / the peer's quantize_row_*_ref. Internal to kernels/quant.
#pragma once

#include <cstdint>
#include <cstring>

namespace expertmesh::quant::interleave {

// 2-bit quants (Q2_K / Q3_K low bits, IQ2_K, IQ3_K low bits): quant e is bits 2*((e/32)%4) of
// qs[32*(e/128) + e%32] (64 bytes).
inline void crumbs256_get(const uint8_t* qs, uint8_t* L) {
  for (int e = 0; e < 256; ++e) L[e] = (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
}
inline void crumbs256_put(const uint8_t* L, uint8_t* qs) {
  std::memset(qs, 0, 64);
  for (int e = 0; e < 256; ++e) qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((L[e] & 3) << (2 * ((e / 32) % 4)));
}

// One extra bit per quant (Q3_K hmask, Q5_K / IQ3_K / IQ5_K qh): bit e/32 of h[e%32] (32 bytes)
// is bit `bit` of quant e.
inline void bits256_or(const uint8_t* h, int bit, uint8_t* L) {
  for (int e = 0; e < 256; ++e) L[e] |= static_cast<uint8_t>(((h[e % 32] >> (e / 32)) & 1) << bit);
}
inline void bits256_put(const uint8_t* L, int bit, uint8_t* h) {
  std::memset(h, 0, 32);
  for (int e = 0; e < 256; ++e) h[e % 32] |= static_cast<uint8_t>(((L[e] >> bit) & 1) << (e / 32));
}

// 4-bit quants (Q4_K, Q5_K, IQ5_K low bits): quant e = 64*b + 32*h + j is nibble h of qs[32*b + j].
inline void nibbles256_get(const uint8_t* qs, uint8_t* L) {
  for (int e = 0; e < 256; ++e) L[e] = (qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 0xf;
}
inline void nibbles256_put(const uint8_t* L, uint8_t* qs) {
  std::memset(qs, 0, 128);
  for (int e = 0; e < 256; ++e) qs[32 * (e / 64) + e % 32] |= static_cast<uint8_t>((L[e] & 0xf) << (4 * ((e / 32) % 2)));
}

// 4-bit quants in 16-byte groups per 32 weights (IQ4_K, IQ4_KS, IQ4_XS): quant 32*ib + j is
// nibble j/16 of qs[16*ib + j%16].
inline void nibbles_sub_get(const uint8_t* qs, uint8_t* L) {
  for (int e = 0; e < 256; ++e) L[e] = (qs[16 * (e / 32) + e % 16] >> (4 * ((e % 32) / 16))) & 0xf;
}
inline void nibbles_sub_put(const uint8_t* L, uint8_t* qs) {
  std::memset(qs, 0, 128);
  for (int e = 0; e < 256; ++e) qs[16 * (e / 32) + e % 16] |= static_cast<uint8_t>((L[e] & 0xf) << (4 * ((e % 32) / 16)));
}

// Q3_K's 16 6-bit scales in 12 bytes: scale j's low 4 bits in nibble j/8 of s[j%8], its high 2
// bits in bits 2*(j/4) of s[8 + j%4].
inline void q3k_scales_get(const uint8_t* s, uint8_t* sc) {
  for (int j = 0; j < 16; ++j)
    sc[j] = static_cast<uint8_t>(((s[j % 8] >> (4 * (j / 8))) & 0xf) | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4));
}
inline void q3k_scales_put(const uint8_t* sc, uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 16; ++j) {
    s[j % 8] |= static_cast<uint8_t>((sc[j] & 0xf) << (4 * (j / 8)));
    s[8 + j % 4] |= static_cast<uint8_t>((sc[j] >> 4) << (2 * (j / 4)));
  }
}

// Q4_K / Q5_K: 8 (scale, min) pairs of 6 bits in 12 bytes (ggml's get_scale_min_k4).
inline void k4_scales_get(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sc[j] = q[j] & 63;
      mn[j] = q[j + 4] & 63;
    } else {
      sc[j] = static_cast<uint8_t>((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
      mn[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
  }
}
inline void k4_scales_put(const uint8_t* sc, const uint8_t* mn, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] |= sc[j] & 63;
      q[j + 4] |= mn[j] & 63;
    } else {
      q[j + 4] = static_cast<uint8_t>((sc[j] & 0xf) | ((mn[j] & 0xf) << 4));
      q[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      q[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
}

// Interleaved 6-bit scale s (index `is` over rows and sub-blocks): low 4 bits in nibble is/32 of
// sl[is%32], high 2 bits in bits 2*(is/16) of sh[is%16] (Q3_K_R4, IQ4_K_R4, IQ5_K_R4, IQ4_XS_R8).
// Callers zero sl / sh before the first put.
inline void put_scale6(uint8_t* sl, uint8_t* sh, int is, int v) {
  sl[is % 32] |= static_cast<uint8_t>((v & 0xf) << (4 * (is / 32)));
  sh[is % 16] |= static_cast<uint8_t>(((v >> 4) & 3) << (2 * (is / 16)));
}
inline uint8_t get_scale6(const uint8_t* sl, const uint8_t* sh, int is) {
  return static_cast<uint8_t>(((sl[is % 32] >> (4 * (is / 32))) & 0xf) | (((sh[is % 16] >> (2 * (is / 16))) & 3) << 4));
}

}  // namespace expertmesh::quant::interleave
