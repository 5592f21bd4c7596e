// Shared pieces of the IQ4_XS / IQ4_KS quantized matmul kernels (gemm_iquants_{ref,avx2,avx512}.cpp).
//
// Both types store 256-weight super-blocks of 136 bytes with the same index layout: 8 bytes of
// scales, then qs[128], where qs[16*ib + j] holds weight j (low nibble) and weight j+16 (high
// nibble) of 32-weight sub-block ib. They differ in the scale bytes and the row meta:
//   IQ4_XS (BlockIq4xs, iquants_internal.h): d (fp16), scales_h (u16), scales_l[4];
//            ls_j = 6-bit scale (low 4 bits: nibble j of scales_l, high 2 bits: bits 2j..2j+1 of
//            scales_h) - 32; values kIq4kValues[0..15]; no row meta.
//   IQ4_KS (block_iq4_ks, iqk_ks_internal.h): a 4-byte float row scale, then the blocks;
//            scales[j]: ls_j = (scales[j] & 254) - 127, bit 0 picks kIq4kValues[16..31] (the
//            "shifted" half, which is exactly the first half + 4).
// The canonical dot products are in gemm.h. Everything here is pure and header-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/quant/iqk_tables.h"

namespace expertmesh::cpu::iquants {

inline constexpr int kSuperBlock = 256;
inline constexpr int kSubBlocks = 8;
inline constexpr size_t kBlockBytes = 136;  // both types
inline constexpr size_t kQsOffset = 8;      // qs[128] after 8 bytes of scales (both types)

enum class Iq4Kind { kXs, kKs };

// Bytes of row meta before a row's first block (IQ4_KS's float row scale).
constexpr size_t row_meta_bytes(Iq4Kind k) { return k == Iq4Kind::kKs ? 4 : 0; }

// Added to ls_j in the "biased scale bytes" below: the stored, non-negative form of the scale.
constexpr int scale_bias(Iq4Kind k) { return k == Iq4Kind::kKs ? 127 : 32; }

// The shifted half of kIq4kValues is the first half plus this constant (checked below).
inline constexpr int kShiftDelta = 4;

constexpr bool shifted_half_is_offset() {
  for (int i = 0; i < 16; ++i) {
    if (quant::kIq4kValues[16 + i] != quant::kIq4kValues[i] + kShiftDelta) return false;
  }
  return true;
}
static_assert(shifted_half_is_offset(), "IQ4_KS kernels rely on kIq4kValues[16 + i] == kIq4kValues[i] + 4");

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// IQ4_XS: byte j = the 6-bit stored scale of sub-block j (ls_j + 32). blk = the block's first byte.
inline uint64_t iq4xs_scale_bytes(const uint8_t* blk) {
  const uint32_t h = load_u16(blk + 2);
  const uint32_t l = load_u32(blk + 4);
  uint64_t r = 0;
  for (int j = 0; j < kSubBlocks; ++j) {
    const uint64_t s = ((l >> (4 * j)) & 0xf) | (((h >> (2 * j)) & 3) << 4);
    r |= s << (8 * j);
  }
  return r;
}

// IQ4_KS: byte j = scales[j] & 254 (ls_j + 127).
inline uint64_t iq4ks_scale_bytes(const uint8_t* blk) { return load_u64(blk) & 0xfefefefefefefefeull; }

// IQ4_KS: bit j = the shift flag of sub-block j.
inline uint32_t iq4ks_shift_bits(const uint8_t* blk) {
  uint32_t r = 0;
  for (int j = 0; j < kSubBlocks; ++j) r |= uint32_t(blk[j] & 1) << j;
  return r;
}

}  // namespace expertmesh::cpu::iquants
