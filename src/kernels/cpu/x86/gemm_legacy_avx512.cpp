// AVX512-VNNI legacy-family matmul kernels (Q8_0, Q4_0, IQ4_NL × Q8a32) and the Q8a32 activation
// quantizer. Bit-identical with ref/gemm_legacy_ref.cpp and quantize_act_ref (gemm_legacy_common.h).
//
// Integer sums use vpdpbusd (u8 × s8 -> i32). Each weight is made unsigned by an offset: Q8_0
// u = w + 128, Q4_0 u = q (= w + 8), IQ4_NL u = value + 128; the exact block sum is then
// S = Σ u·a - off·a.s with the activation block's Σ a (BlockQ8a32::s). No step can overflow int32
// (|Σ u·a| <= 255·128·32).
//
// Two paths that give the same bits (both follow the canonical per-block formula):
//  - GEMV (nt <= kGemvMaxTokens), straight from the weight rows, 8 rows per pass, each row read
//    whole in one visit so the weights stream in address order; per row and 16
//    blocks one vector pass gives the 16 exact block sums (Q8_0: a zmm holds two blocks' u8,
//    eight vpdpbusd results transpose-add to one i32 lane per block; 4-bit: a ymm holds two
//    blocks' packed bytes, low nibbles dot activations 0..15 and high nibbles 16..31 — the order
//    of a block's products does not change its sum), then an 8×16 transpose turns them into one
//    vector per block (lane = row) for the canonical float chains. Details above gemv().
//  - GEMM: the tile is unpacked ONCE into scratch, 16 rows per group; per group and block,
//    576 bytes: 8 chunks of 64 bytes (chunk k = elements 4k..4k+3 of rows 0..15: byte 4·r + e is
//    u of element 4k + e of row r), then the 16 rows' scales as f32. The activations of up to
//    8 tokens are packed per block (320 bytes: 8 × 32 qs, 8 × i32 -off·s, 8 × f32 d), and a
//    16-rows × 8-tokens micro-kernel runs 8 vpdpbusd per token and block with the activation's
//    4-byte groups broadcast (then per token: cvt, scale multiply, fma).
// Block scales are read with word inserts: a 16-lane gather per block costs a third of the GEMV
// time on Zen 4.
// GCC 12 reports the `__Y = __Y` placeholders inside its own intrinsic headers as uninitialized
// once they are inlined here (a known false positive); the pragmas must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_legacy_common.h"
#include "kernels/cpu/prefetch_x86.h"
#include "kernels/quant/legacy_blocks.h"

namespace expertmesh::cpu {
namespace {

namespace lg = legacy_gemm;
namespace lq = quant::legacy;

enum class Kind { kQ8_0, kQ4_0, kIq4Nl };

template <Kind K>
inline constexpr size_t kBlockBytes = K == Kind::kQ8_0 ? lg::kQ8_0BlockBytes : lg::kQ4BlockBytes;
template <Kind K>
inline constexpr int32_t kOffset = K == Kind::kQ4_0 ? 8 : 128;

inline constexpr int64_t kGemvMaxTokens = 2;  // nt at or below this takes the GEMV path
inline constexpr int kGroupRows = 16;
inline constexpr int kMaxTokens = 8;
inline constexpr size_t kGroupBlockBytes = 8 * 64 + 16 * 4;
inline constexpr size_t kPackBlockBytes = kMaxTokens * (32 + 4 + 4);
inline constexpr size_t kPackCorr = kMaxTokens * 32;
inline constexpr size_t kPackD = kMaxTokens * 36;

struct U8Table {
  uint8_t v[16];
};
constexpr U8Table make_iq4nl_u8() {
  U8Table t{};
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) t.v[i] = static_cast<uint8_t>(lq::kIq4nlValues[i] + 128);
  return t;
}
inline constexpr U8Table kIq4nlU8 = make_iq4nl_u8();

inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q8_0: the 32 unsigned weights u = w + 128 of one block, in element order.
inline __m256i q8_u8(const uint8_t* blk) {
  return _mm256_xor_si256(load256(blk + lg::kQsOffset), _mm256_set1_epi8(static_cast<char>(0x80)));
}

// Row pointers of a 16-row group starting at r0 (rows past nr repeat row nr - 1) and the mask
// of the rows to store.
struct RowGroup {
  const uint8_t* rows[kGroupRows];
  __mmask16 mask;
};
inline RowGroup row_group(const GemmArgs& g, int64_t r0) {
  RowGroup rg;
#pragma GCC unroll 16
  for (int i = 0; i < kGroupRows; ++i) {
    const int64_t r = std::min<int64_t>(r0 + i, g.nr - 1);
    rg.rows[i] = g.w + size_t(r) * g.w_stride;
  }
  const int64_t valid = std::min<int64_t>(kGroupRows, g.nr - r0);
  rg.mask = static_cast<__mmask16>((1u << valid) - 1u);
  return rg;
}

inline int load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// f32 scales of the 16 rows' blocks at byte offset off. Word inserts (vpinsrw from memory) are
// much cheaper on Zen 4 than a 16-lane gather per block.
inline __m512 scales16(const RowGroup& rg, size_t off) {
  __m128i lo = _mm_cvtsi32_si128(load_u16(rg.rows[0] + off));
  __m128i hi = _mm_cvtsi32_si128(load_u16(rg.rows[8] + off));
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[1] + off), 1);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[9] + off), 1);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[2] + off), 2);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[10] + off), 2);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[3] + off), 3);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[11] + off), 3);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[4] + off), 4);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[12] + off), 4);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[5] + off), 5);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[13] + off), 5);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[6] + off), 6);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[14] + off), 6);
  lo = _mm_insert_epi16(lo, load_u16(rg.rows[7] + off), 7);
  hi = _mm_insert_epi16(hi, load_u16(rg.rows[15] + off), 7);
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// p[j] holds rows (j, j + 4) for j < 4 and (j + 4, j + 8) for j >= 4, 8 partial sums per row;
// returns the 16 row sums in row order.
inline __m512i reduce16(const __m512i p[8]) {
  __m512i t[4];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) {
    t[i] =
        _mm512_add_epi32(_mm512_unpacklo_epi32(p[2 * i], p[2 * i + 1]), _mm512_unpackhi_epi32(p[2 * i], p[2 * i + 1]));
  }
  const __m512i q0 = _mm512_add_epi32(_mm512_unpacklo_epi64(t[0], t[1]), _mm512_unpackhi_epi64(t[0], t[1]));
  const __m512i q1 = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2], t[3]), _mm512_unpackhi_epi64(t[2], t[3]));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// ---- GEMV: nt <= kGemvMaxTokens, straight from the rows ------------------------------------------
//
// Memory order matters more than instruction count here: each row is read whole, one after
// another, kGemvRows rows per pass, so the weights stream in address order (16 rows interleaved
// block by block reached about half the DRAM rate; visiting rows in column chunks, as this kernel
// did for rows over 2048 wide, ran 4096-wide rows at 27 GB/s and 6144-wide at 30 against 44 for
// 2048-wide, two threads from DRAM). Per row and sub-chunk of 16 blocks, one vector pass stores
// the 16 exact block sums float(S_b) ([row][block]) and the blocks' fp16 scales (scalar stores,
// [block][row]: cheaper than inserts or gathers) to a buffer in scratch (GemvSums, the whole
// row). Then per sub-chunk the sums of the pass's 8 rows are transposed to one vector per block
// (lane = row) and the canonical chain acc = fmaf(fp16(w.d) * a.d, float(S_b), acc) runs block by
// block in column order, 8 rows × T chains at once. The activations are repacked once per call
// for all rows of the tile (GemvAct). Measured and rejected: software-pipelining the chains into
// the next pass, 16 rows per pass (bigger L1 footprint, 15-25% slower from DRAM). Software
// prefetch about 4 KiB of weights ahead in stream order (prefetch_x86.h) gave +8-12% tg on the
// bench model with the pool's contiguous per-thread task ranges (an earlier round-robin dealing
// of tiles hid it).
inline constexpr int kGemvRows = 8;
inline constexpr int64_t kGemvSub = 16;  // blocks per vector pass: one zmm of block sums

// Activations of one call for T tokens, nsub sub-chunks (the row's blocks rounded up to 16), in
// scratch. qs(t, s, j) (64 bytes) for sub-chunk s: Q8_0, the 32 qs of blocks pair_lo(j) (bytes
// 0..31) and pair_lo(j) + 4 (bytes 32..63); 4-bit, qs[0..15] of those two blocks (bytes 0..15,
// 16..31) and their qs[16..31] (bytes 32..47, 48..63). corr = offset · a.s, d = a.d per block.
// Block indices past the row repeat the last block (their sums are computed and never used).
template <int T>
struct GemvAct {
  uint8_t* qs_ = nullptr;
  int32_t* corr_ = nullptr;
  float* d_ = nullptr;
  int64_t nbp = 0;  // blocks rounded up to kGemvSub
  uint8_t* qs(int t, int s, int j) const { return qs_ + ((size_t(t) * size_t(nbp / kGemvSub) + s) * 8 + j) * 64; }
  int32_t* corr(int t) const { return corr_ + size_t(t) * nbp; }
  float* d(int t) const { return d_ + size_t(t) * nbp; }
};

// The weight scales (fp16, [block][row], written by scalar stores: no shuffles) and per token
// float(S_b) ([row][block], transposed by the chain) of the pass's rows over the whole row.
template <int T>
struct GemvSums {
  uint16_t* wd_ = nullptr;
  float* sf_ = nullptr;
  int64_t nbp = 0;
  uint16_t* wd(int64_t b) const { return wd_ + size_t(b) * kGemvRows; }
  float* sf(int t, int k) const { return sf_ + (size_t(t) * kGemvRows + k) * nbp; }
};

// Carves GemvAct and GemvSums for nb blocks out of scratch: nbp·(72·T + 16) bytes,
// far below gemm_scratch_bytes(n) (about 96 bytes per column).
template <int T>
void gemv_buffers(uint8_t* scratch, int64_t nb, GemvAct<T>& act, GemvSums<T>& sums) {
  const int64_t nbp = (nb + kGemvSub - 1) / kGemvSub * kGemvSub;
  uint8_t* p = scratch;
  act.nbp = sums.nbp = nbp;
  act.qs_ = p;
  p += size_t(T) * size_t(nbp) * 32;
  act.corr_ = reinterpret_cast<int32_t*>(p);
  p += size_t(T) * size_t(nbp) * 4;
  act.d_ = reinterpret_cast<float*>(p);
  p += size_t(T) * size_t(nbp) * 4;
  sums.sf_ = reinterpret_cast<float*>(p);
  p += size_t(T) * kGemvRows * size_t(nbp) * 4;
  sums.wd_ = reinterpret_cast<uint16_t*>(p);
}

// Vector j of a sub-chunk holds blocks pair_lo(j) and pair_lo(j) + 4: the order reduce16 (Q8_0)
// and the two 4-vector transpose-adds (4-bit) turn into block order.
constexpr int pair_lo(int j) { return j < 4 ? j : j + 4; }

template <bool kFull>
inline int64_t blk(int64_t b0, int i, int64_t nb) {
  return kFull ? b0 + i : std::min<int64_t>(b0 + i, nb - 1);
}

template <Kind K, int T>
void pack_gemv_act(const GemmArgs& g, int64_t nb, const GemvAct<T>& act) {
  const int nsub = static_cast<int>(act.nbp / kGemvSub);
#pragma GCC unroll 2
  for (int t = 0; t < T; ++t) {
    const uint8_t* a = g.a + size_t(t) * g.a_stride + lg::kActQs;
    for (int s = 0; s < nsub; ++s) {
      const int64_t b0 = kGemvSub * s;
      if constexpr (K == Kind::kQ8_0) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          const int64_t lo = blk<false>(b0, pair_lo(j), nb), hi = blk<false>(b0, pair_lo(j) + 4, nb);
          _mm256_store_si256(reinterpret_cast<__m256i*>(act.qs(t, s, j)), load256(a + size_t(lo) * lg::kActBlockBytes));
          _mm256_store_si256(reinterpret_cast<__m256i*>(act.qs(t, s, j) + 32),
                             load256(a + size_t(hi) * lg::kActBlockBytes));
        }
      } else {
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
          const uint8_t* qa = a + size_t(blk<false>(b0, pair_lo(j), nb)) * lg::kActBlockBytes;
          const uint8_t* qb = a + size_t(blk<false>(b0, pair_lo(j) + 4, nb)) * lg::kActBlockBytes;
          uint8_t* dst = act.qs(t, s, j);
          _mm_store_si128(reinterpret_cast<__m128i*>(dst), load128(qa));
          _mm_store_si128(reinterpret_cast<__m128i*>(dst + 16), load128(qb));
          _mm_store_si128(reinterpret_cast<__m128i*>(dst + 32), load128(qa + 16));
          _mm_store_si128(reinterpret_cast<__m128i*>(dst + 48), load128(qb + 16));
        }
      }
    }
    const uint8_t* ab = g.a + size_t(t) * g.a_stride;
    for (int64_t c = 0; c < act.nbp; ++c) {
      const uint8_t* blk_a = ab + size_t(std::min(c, nb - 1)) * lg::kActBlockBytes;
      act.corr(t)[c] = kOffset<K> * load_i32(blk_a + lg::kActS);
      act.d(t)[c] = load_f32(blk_a + lg::kActD);
    }
  }
}

// Row k of the pass, sub-chunk s (blocks b0 = c0 + 16 s .., chunk position cs = 16 s): the 16
// blocks' fp16 scales into sums.wd(cs + i)[k] and float(S_b) into sums.sf(t, k)[cs + i].
// kHalf: at most 8 blocks are left (rows of 768 = 16 + 8 blocks, the down projection of Qwen3-30B's
// experts): only vectors j < 4 (blocks 0..7) are loaded and dotted, the sums of blocks 8..15 are
// zeros the chain never reads (computing them from repeated last blocks cost a quarter of the
// row's work).
template <Kind K, int T, bool kFull, bool kHalf = false>
inline void gemv_row_sub(const uint8_t* row, int64_t b0, int64_t nb, const GemvAct<T>& act, int s, int k,
                         GemvSums<T>& sums) {
  static_assert(!(kFull && kHalf));
  constexpr size_t bs = kBlockBytes<K>;
  constexpr int kVecs = kHalf ? 4 : 8, kBlocks = kHalf ? 8 : 16;
  const int64_t cs = kGemvSub * s;
#pragma GCC unroll 16
  for (int i = 0; i < kBlocks; ++i) {
    sums.wd(cs + i)[k] = static_cast<uint16_t>(load_u16(row + size_t(blk<kFull>(b0, i, nb)) * bs));
  }
  if constexpr (K == Kind::kQ8_0) {
    __m512i w[8];
#pragma GCC unroll 8
    for (int j = kVecs; j < 8; ++j) w[j] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int j = 0; j < kVecs; ++j) {
      // Masked broadcast: load + blend, no shuffle-port insert.
      const __m512i v = _mm512_mask_broadcast_i64x4(
          _mm512_broadcast_i64x4(load256(row + size_t(blk<kFull>(b0, pair_lo(j), nb)) * bs + lg::kQsOffset)), 0xF0,
          load256(row + size_t(blk<kFull>(b0, pair_lo(j) + 4, nb)) * bs + lg::kQsOffset));
      w[j] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
    }
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) {
      __m512i p[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        p[j] = j < kVecs ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[j], _mm512_load_si512(act.qs(t, s, j)))
                         : _mm512_setzero_si512();
      }
      const __m512i sum = _mm512_sub_epi32(reduce16(p), _mm512_load_si512(act.corr(t) + cs));
      _mm512_store_ps(sums.sf(t, k) + cs, _mm512_cvtepi32_ps(sum));
    }
  } else {
    // 4-bit: ymm j holds the 16 packed bytes of blocks pair_lo(j) (low lane) and pair_lo(j) + 4
    // (ymm rather than zmm: a 128-bit insert costs Zen 4 one 256-bit slot, a zmm blend two).
    const __m256i nib = _mm256_set1_epi8(0x0F);
    __m256i lo[8], hi[8];
#pragma GCC unroll 8
    for (int j = 0; j < kVecs; ++j) {
      const uint8_t* q = row + lg::kQsOffset;
      const __m256i v =
          _mm256_inserti128_si256(_mm256_castsi128_si256(load128(q + size_t(blk<kFull>(b0, pair_lo(j), nb)) * bs)),
                                  load128(q + size_t(blk<kFull>(b0, pair_lo(j) + 4, nb)) * bs), 1);
      lo[j] = _mm256_and_si256(v, nib);
      hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
      if constexpr (K == Kind::kIq4Nl) {
        const __m256i table = _mm256_broadcastsi128_si256(load128(kIq4nlU8.v));
        lo[j] = _mm256_shuffle_epi8(table, lo[j]);
        hi[j] = _mm256_shuffle_epi8(table, hi[j]);
      }
    }
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) {
      __m256i p[8];
#pragma GCC unroll 8
      for (int j = 0; j < kVecs; ++j) {
        const uint8_t* aq = act.qs(t, s, j);
        p[j] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo[j], load256(aq)), hi[j],
                                   load256(aq + 32));
      }
      // Transpose-add per 4 vectors: 128-bit lane h, element j = block sum of p[j]'s lane h, so
      // p[0..3] give blocks 0..7 and p[4..7] blocks 8..15 in order.
      const auto tadd = [](const __m256i* q4) {
        const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(q4[0], q4[1]), _mm256_unpackhi_epi32(q4[0], q4[1]));
        const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(q4[2], q4[3]), _mm256_unpackhi_epi32(q4[2], q4[3]));
        return _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
      };
      const __m512i sum =
          _mm512_inserti64x4(_mm512_castsi256_si512(tadd(p)), kHalf ? _mm256_setzero_si256() : tadd(p + 4), 1);
      _mm512_store_ps(sums.sf(t, k) + cs,
                      _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, _mm512_load_si512(act.corr(t) + cs))));
    }
  }
}

// 8×16 transpose: o[c] lane r = v[r] lane c.
[[gnu::always_inline]] inline void transpose8x16(const __m512 v[8], __m256 o[16]) {
  __m512 t[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  const auto lo = [](__m512 x, __m512 y) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)));
  };
  const auto hi = [](__m512 x, __m512 y) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)));
  };
  // u[4i + j], 128-bit lane L: rows 4i..4i+3 of element 4L + j.
  __m512 u[8];
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = lo(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    // (u[j].L0, u[4+j].L0, u[j].L1, u[4+j].L1): elements j and 4 + j; likewise L2, L3.
    const __m512 x = _mm512_shuffle_f32x4(u[j], u[4 + j], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 y = _mm512_shuffle_f32x4(u[j], u[4 + j], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 xs = _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(3, 1, 2, 0));
    const __m512 ys = _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(3, 1, 2, 0));
    o[j] = _mm512_castps512_ps256(xs);
    o[4 + j] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xs), 1));
    o[8 + j] = _mm512_castps512_ps256(ys);
    o[12 + j] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ys), 1));
  }
}

// The float chains of sub-chunk s for the pass's 8 rows (acc[t] lane k = row k): the rows'
// float(S_b) are transposed to one vector per block, s_b = fp16(w.d) * a.d is formed per block
// from wd, then acc = fmaf(s_b, float(S_b), acc) for the blocks in column order (c < nc).
template <int T, bool kFull>
inline void gemv_chain(const GemvSums<T>& sums, const float* const ad[T], int s, int64_t nc, __m256 acc[T]) {
  static_assert(kGemvRows == 8);
  const int64_t cs = kGemvSub * s;
#pragma GCC unroll 2
  for (int t = 0; t < T; ++t) {
    __m512 v[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) v[k] = _mm512_load_ps(sums.sf(t, k) + cs);
    __m256 o[16];
    transpose8x16(v, o);
    __m256 a = acc[t];
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c) {
      if (!kFull && cs + c >= nc) break;
      const __m256 wd = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(sums.wd(cs + c))));
      a = _mm256_fmadd_ps(_mm256_mul_ps(wd, _mm256_set1_ps(ad[t][cs + c])), o[c], a);
    }
    acc[t] = a;
  }
}

template <Kind K, int T>
void gemv(const GemmArgs& g) {
  const int64_t nb = g.n / 32;
  GemvAct<T> act;
  GemvSums<T> sums;
  gemv_buffers<T>(g.scratch, nb, act, sums);
  const int nsub = static_cast<int>(act.nbp / kGemvSub);
  constexpr size_t kSubBytes = size_t(kGemvSub) * kBlockBytes<K>;
  pack_gemv_act<K, T>(g, nb, act);
  const float* ad[T];
#pragma GCC unroll 2
  for (int t = 0; t < T; ++t) ad[t] = act.d(t);
  for (int64_t r0 = 0; r0 < g.nr; r0 += kGemvRows) {
    for (int k = 0; k < kGemvRows; ++k) {
      const uint8_t* row = g.w + size_t(std::min<int64_t>(r0 + k, g.nr - 1)) * g.w_stride;
      for (int s = 0; s < nsub; ++s) {
        const int64_t b0 = kGemvSub * s;
        // About 4 KiB on in the stream: later in this row, or in the rows after it.
        const uint8_t* here = row + size_t(b0) * kBlockBytes<K>;
        prefetch_lines(here + kGemvPrefetchAhead, kSubBytes);
        if (b0 + kGemvSub <= nb) {
          gemv_row_sub<K, T, true>(row, b0, nb, act, s, k, sums);
        } else if (b0 + kGemvSub / 2 >= nb) {
          gemv_row_sub<K, T, false, true>(row, b0, nb, act, s, k, sums);
        } else {
          gemv_row_sub<K, T, false>(row, b0, nb, act, s, k, sums);
        }
      }
    }
    // The pass's whole chains (each row is read once, whole): its 8 outputs per token.
    __m256 acc[T];
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int s = 0; s < nsub; ++s) {
      if (kGemvSub * (s + 1) <= nb) {
        gemv_chain<T, true>(sums, ad, s, nb, acc);
      } else {
        gemv_chain<T, false>(sums, ad, s, nb, acc);
      }
    }
    const int valid = static_cast<int>(std::min<int64_t>(kGemvRows, g.nr - r0));
    const __mmask8 mask = static_cast<__mmask8>((1u << valid) - 1u);
#pragma GCC unroll 2
    for (int t = 0; t < T; ++t) _mm256_mask_storeu_ps(g.y + t * g.ldy + r0, mask, acc[t]);
  }
}

// ---- GEMM: unpacked tile × packed tokens ---------------------------------------------------------

// Unpacks the 16-row group at r0 into dst (nb × kGroupBlockBytes, layout in the file comment).
void unpack_group_q8_0(const GemmArgs& g, int64_t r0, uint8_t* dst) {
  constexpr size_t bs = lg::kQ8_0BlockBytes;
  const int64_t nb = g.n / 32;
  const RowGroup rg = row_group(g, r0);
  const __m512i lo_idx = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
  const __m512i hi_idx = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
  for (int64_t b = 0; b < nb; ++b, dst += kGroupBlockBytes) {
    const size_t off = size_t(b) * bs;
    __m512i z[8];
#pragma GCC unroll 16
    for (int j = 0; j < 8; ++j) {
      z[j] = _mm512_inserti64x4(_mm512_castsi256_si512(q8_u8(rg.rows[j] + off)), q8_u8(rg.rows[j + 8] + off), 1);
    }
    // 8×8 dword transpose inside each 256-bit half.
    __m512i t[8], u[8];
#pragma GCC unroll 16
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm512_unpacklo_epi32(z[2 * i], z[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_epi32(z[2 * i], z[2 * i + 1]);
    }
#pragma GCC unroll 16
    for (int h = 0; h < 2; ++h) {
      u[4 * h + 0] = _mm512_unpacklo_epi64(t[4 * h + 0], t[4 * h + 2]);
      u[4 * h + 1] = _mm512_unpackhi_epi64(t[4 * h + 0], t[4 * h + 2]);
      u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
      u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
#pragma GCC unroll 16
    for (int k = 0; k < 4; ++k) {
      _mm512_store_si512(dst + 64 * k, _mm512_permutex2var_epi64(u[k], lo_idx, u[4 + k]));
      _mm512_store_si512(dst + 64 * (k + 4), _mm512_permutex2var_epi64(u[k], hi_idx, u[4 + k]));
    }
    _mm512_store_ps(dst + 512, scales16(rg, off));
  }
}

// The same layout for the 4-bit types, cheaper: zmm j holds the 16 packed bytes of rows j, 4+j,
// 8+j, 12+j (one per 128-bit lane), a 4×4 dword transpose per lane gives dword k of all 16 rows
// in row order, and its low / high nibbles are chunks k and k + 4 (elements 4k.., 16 + 4k..).
template <Kind K>
void unpack_group4(const GemmArgs& g, int64_t r0, uint8_t* dst) {
  constexpr size_t bs = kBlockBytes<K>;
  const int64_t nb = g.n / 32;
  const RowGroup rg = row_group(g, r0);
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const __m512i table = _mm512_broadcast_i32x4(load128(kIq4nlU8.v));
  for (int64_t b = 0; b < nb; ++b, dst += kGroupBlockBytes) {
    const size_t off = size_t(b) * bs;
    __m512i z[4];
#pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) {
      z[j] = _mm512_castsi128_si512(load128(rg.rows[j] + off + lg::kQsOffset));
      z[j] = _mm512_inserti32x4(z[j], load128(rg.rows[4 + j] + off + lg::kQsOffset), 1);
      z[j] = _mm512_inserti32x4(z[j], load128(rg.rows[8 + j] + off + lg::kQsOffset), 2);
      z[j] = _mm512_inserti32x4(z[j], load128(rg.rows[12 + j] + off + lg::kQsOffset), 3);
    }
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    const __m512i w[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2), _mm512_unpacklo_epi64(t1, t3),
                          _mm512_unpackhi_epi64(t1, t3)};
#pragma GCC unroll 16
    for (int k = 0; k < 4; ++k) {
      __m512i lo = _mm512_and_si512(w[k], nib);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w[k], 4), nib);
      if constexpr (K == Kind::kIq4Nl) {
        lo = _mm512_shuffle_epi8(table, lo);
        hi = _mm512_shuffle_epi8(table, hi);
      }
      _mm512_store_si512(dst + 64 * k, lo);
      _mm512_store_si512(dst + 64 * (k + 4), hi);
    }
    _mm512_store_ps(dst + 512, scales16(rg, off));
  }
}

// y[t * ldy + r] for the 16 rows of one unpacked group (mask: rows to store) and T packed tokens.
template <int T>
void micro_kernel(const uint8_t* tile, const uint8_t* pack, int64_t nb, float* y, int64_t ldy, __mmask16 mask) {
  __m512 acc[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, tile += kGroupBlockBytes, pack += kPackBlockBytes) {
    __m512i s[T];
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) s[t] = _mm512_set1_epi32(load_i32(pack + kPackCorr + 4 * t));
#pragma GCC unroll 16
    for (int k = 0; k < 8; ++k) {
      const __m512i w = _mm512_load_si512(tile + 64 * k);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        s[t] = _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(load_i32(pack + 32 * t + 4 * k)));
      }
    }
    const __m512 ws = _mm512_load_ps(tile + 512);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m512 sc = _mm512_mul_ps(ws, _mm512_set1_ps(load_f32(pack + kPackD + 4 * t)));
      acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s[t]), acc[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + t * ldy, mask, acc[t]);
}

// Dispatches on the token count of a group (1..kMaxTokens).
inline void micro_dispatch(int nt, const uint8_t* tile, const uint8_t* pack, int64_t nb, float* y, int64_t ldy,
                           __mmask16 mask) {
  switch (nt) {
    case 1:
      return micro_kernel<1>(tile, pack, nb, y, ldy, mask);
    case 2:
      return micro_kernel<2>(tile, pack, nb, y, ldy, mask);
    case 3:
      return micro_kernel<3>(tile, pack, nb, y, ldy, mask);
    case 4:
      return micro_kernel<4>(tile, pack, nb, y, ldy, mask);
    case 5:
      return micro_kernel<5>(tile, pack, nb, y, ldy, mask);
    case 6:
      return micro_kernel<6>(tile, pack, nb, y, ldy, mask);
    case 7:
      return micro_kernel<7>(tile, pack, nb, y, ldy, mask);
    default:
      return micro_kernel<8>(tile, pack, nb, y, ldy, mask);
  }
}

template <Kind K>
void gemm_tiled(const GemmArgs& g) {
  const int64_t nb = g.n / 32;
  const int64_t groups = (g.nr + kGroupRows - 1) / kGroupRows;
  uint8_t* const tile = g.scratch;
  uint8_t* const pack = tile + size_t(groups * nb) * kGroupBlockBytes;
  for (int64_t gi = 0; gi < groups; ++gi) {
    uint8_t* const dst = tile + size_t(gi * nb) * kGroupBlockBytes;
    if constexpr (K == Kind::kQ8_0) {
      unpack_group_q8_0(g, gi * kGroupRows, dst);
    } else {
      unpack_group4<K>(g, gi * kGroupRows, dst);
    }
  }
  for (int64_t t0 = 0; t0 < g.nt; t0 += kMaxTokens) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, g.nt - t0));
    // Pack the group's activations (layout in the file comment). This stays inline: as a
    // separate function GCC 12 -O2 deleted the call as dead (its modref/DCE), leaving the
    // micro-kernel to read stale scratch.
    uint8_t* dst = pack;
    for (int64_t b = 0; b < nb; ++b, dst += kPackBlockBytes) {
      for (int t = 0; t < nt; ++t) {
        const uint8_t* ab = g.a + size_t(t0 + t) * g.a_stride + size_t(b) * lg::kActBlockBytes;
        std::memcpy(dst + 32 * t, ab + lg::kActQs, 32);
        const int32_t corr = -kOffset<K> * load_i32(ab + lg::kActS);
        std::memcpy(dst + kPackCorr + 4 * t, &corr, 4);
        std::memcpy(dst + kPackD + 4 * t, ab + lg::kActD, 4);
      }
    }
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t valid = std::min<int64_t>(kGroupRows, g.nr - gi * kGroupRows);
      micro_dispatch(nt, tile + size_t(gi * nb) * kGroupBlockBytes, pack, nb, g.y + t0 * g.ldy + gi * kGroupRows, g.ldy,
                     static_cast<__mmask16>((1u << valid) - 1u));
    }
  }
}

template <Kind K>
void gemm_legacy(const GemmArgs& g) {
  if (g.nr <= 0 || g.nt <= 0) return;
  if (g.nt == 1) return gemv<K, 1>(g);
  if (g.nt <= kGemvMaxTokens) return gemv<K, 2>(g);
  gemm_tiled<K>(g);
}

// ---- Q8a32 activation quantizer --------------------------------------------------------------------

// 8 blocks: 256 floats from x into 8 BlockQ8a32 at out.
inline void quantize8(const float* x, uint8_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  __m256 m[8];
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    // max(new, acc): a NaN input is skipped like std::max(amax, NaN) in the reference.
    const __m512 a = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 32 * j)), zero);
    const __m512 mm = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 32 * j + 16)), a);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(mm), 1));
    m[j] = _mm256_max_ps(_mm512_castps512_ps256(mm), hi);
  }
  const __m256 q = _mm256_div_ps(lg::hmax8x8(m), _mm256_set1_ps(127.0f));
  // bf16 round to nearest even (q >= 0, never NaN).
  __m256i u = _mm256_castps_si256(q);
  u = _mm256_add_epi32(
      u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
  const __m256 d = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  const __m256 id =
      _mm256_and_ps(_mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), d));
  alignas(32) float ds[8], ids[8];
  alignas(32) int32_t ss[8];
  _mm256_store_ps(ds, d);
  _mm256_store_ps(ids, id);
  const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
  __m256i sums[8];
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    const __m512 vid = _mm512_set1_ps(ids[j]);
    // clamp(round(p)) == round(clamp(p)) for integer bounds; max/min keep a NaN (second operand),
    // which converts to 0x80000000, whose low byte 0 is what the reference's conversion yields.
    const __m512 p0 = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(x + 32 * j), vid)));
    const __m512 p1 = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(_mm512_loadu_ps(x + 32 * j + 16), vid)));
    const __m128i b0 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(p0));
    const __m128i b1 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(p1));
    const __m256i qs = _mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + lg::kActBlockBytes * j + lg::kActQs), qs);
    sums[j] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), qs);
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(ss), lg::hsum8x8(sums));
#pragma GCC unroll 16
  for (int j = 0; j < 8; ++j) {
    std::memcpy(out + lg::kActBlockBytes * j + lg::kActD, &ds[j], 4);
    std::memcpy(out + lg::kActBlockBytes * j + lg::kActS, &ss[j], 4);
  }
}

}  // namespace

void quantize_act_q8a32_avx512(const float* x, void* out, int64_t n) { lg::quantize_row_q8a32<quantize8>(x, out, n); }

void register_gemm_legacy_avx512(GemmTable& t) {
  t[size_t(GgmlType::Q8_0)] = {ActType::kQ8a32, gemm_legacy<Kind::kQ8_0>};
  t[size_t(GgmlType::Q4_0)] = {ActType::kQ8a32, gemm_legacy<Kind::kQ4_0>};
  t[size_t(GgmlType::IQ4_NL)] = {ActType::kQ8a32, gemm_legacy<Kind::kIq4Nl>};
}

}  // namespace expertmesh::cpu
