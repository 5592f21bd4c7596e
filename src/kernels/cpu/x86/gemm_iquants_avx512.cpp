// AVX512-VNNI IQ4_XS and IQ4_KS × Q8K matmul kernels (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512vnni -mavx2 -mfma -mf16c -mbmi2). Bit-identical with the reference
// (gemm_iquants_ref.cpp): exact int32 super-block sums S, then s = fp16(d) * a.d (IQ4_XS) or a.d
// (IQ4_KS), acc = fma(s, float(S), acc) per super-block in column order, y = acc (IQ4_KS: d_row * acc).
//
// Two paths with identical results (both follow the canonical formula):
//  - nt < kGemmMinTokens (token generation, small expert batches): 8 rows per pass, each row
//    read in one contiguous run of up to 16 super-blocks (memory bound: the weights stream in
//    address order); each super-block is decoded in registers (16-entry table lookups with
//    vpshufb, weights as unsigned v + 128, qs regrouped so every dword holds one sub-block) and
//    dotted with the pass's tokens, whose activations were permuted once to match: 4 vpdpbusd
//    into one accumulator, one vpmulld by the sub-block scales; the 8 rows' vectors are reduced
//    together afterwards, then the canonical fma per super-block in column order (gemv_rows).
//  - otherwise: the tile's rows are unpacked once into g.scratch, 16 rows per group, as signed
//    table values in dword columns (unpack_group, layout below), and a micro-kernel runs 16 rows
//    × up to 8 tokens: per sub-block 8 vpdpbusd per token (activations as a.qs ^ 0x80 = a + 128,
//    broadcast 4 bytes at a time), one vpmulld by the 16 rows' scales, the +128 offset taken out
//    exactly by a per-row constant (gemm_tile). About 1.15 cycles per vpdpbusd on Zen 4.
//  Both reduce the +128 offset of the unsigned vpdpbusd operand exactly: the GEMV path starts the
//  sums at -128 · Σ a.qs of each sub-block (from the token's bsums; -124 · Σ a.qs for an IQ4_KS
//  sub-block whose shift flag is set, since its values are the first half's + 4), the GEMM
//  path subtracts 128 · Σ_j ls_j Σ v_j per row (computed once while unpacking).
//
// GCC 12 reports the `__Y = __Y` placeholders inside its own intrinsic headers as uninitialized
// once they are inlined here (GCC PR 105593, a false positive); the pragmas must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_iquants_common.h"
#include "kernels/cpu/prefetch_x86.h"
#include "kernels/quant/iqk_tables.h"

namespace expertmesh::cpu {
namespace {

using iquants::Iq4Kind;
using iquants::kBlockBytes;
using iquants::kQsOffset;
using iquants::kSuperBlock;

constexpr int kMaxTokens = 8;          // tokens per pass of either path
constexpr int64_t kGemmMinTokens = 7;  // from here on the unpacked GEMM path is faster (Zen 4)

// Tokens of the pass starting at token t0 of nt: the passes of at most kMaxTokens are balanced
// (9 tokens: 5 + 4, not 8 + 1), since a pass of few tokens runs below the micro-kernel's peak.
inline int pass_tokens(int64_t nt, int64_t t0) {
  const int64_t passes = (nt + kMaxTokens - 1) / kMaxTokens;
  const int64_t base = nt / passes, extra = nt % passes;  // the first `extra` passes get base + 1
  const int64_t i = t0 < extra * (base + 1) ? t0 / (base + 1) : extra + (t0 - extra * (base + 1)) / base;
  return int(i < extra ? base + 1 : base);
}

// ---- decoding helpers ------------------------------------------------------------------------

// kIq4kValues[0..15] in every 128-bit lane: signed (GEMM) or + 128 as unsigned bytes (GEMV).
inline __m512i table_s8() {
  return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(quant::kIq4kValues)));
}
inline __m512i table_u8() { return _mm512_xor_si512(table_s8(), _mm512_set1_epi8(char(0x80))); }

// Biased scale bytes (gemm_iquants_common.h): byte j = ls_j + scale_bias(K).
template <Iq4Kind K>
inline uint64_t scale_bytes(const uint8_t* blk) {
  if constexpr (K == Iq4Kind::kXs) {
    return _pdep_u64(iquants::load_u32(blk + 4), 0x0f0f0f0f0f0f0f0full) |
           _pdep_u64(iquants::load_u16(blk + 2), 0x3030303030303030ull);
  } else {
    return iquants::iq4ks_scale_bytes(blk);
  }
}

// Shuffle control: int32 lane d of the paired scale vector = byte l (d % 4 < 2) or byte 4 + l
// (d % 4 >= 2) of the scale bytes (zero-extended), l = d / 4 the 128-bit lane.
alignas(64) constexpr uint32_t kPairScaleCtrl[16] = {
    0x80808000, 0x80808000, 0x80808004, 0x80808004, 0x80808001, 0x80808001, 0x80808005, 0x80808005,
    0x80808002, 0x80808002, 0x80808006, 0x80808006, 0x80808003, 0x80808003, 0x80808007, 0x80808007};

// ls_j (int32) in the dword layout of gemv_split: lane l = [ls_l, ls_l, ls_{4+l}, ls_{4+l}].
template <Iq4Kind K>
inline __m512i pair_scales(uint64_t sbytes) {
  const __m512i b = _mm512_set1_epi64(int64_t(sbytes));
  return _mm512_sub_epi32(_mm512_shuffle_epi8(b, _mm512_load_si512(kPairScaleCtrl)),
                          _mm512_set1_epi32(iquants::scale_bias(K)));
}

// Horizontal sums of N <= 8 vectors: lane i of the result = Σ of y[i]'s 8 int32 (lanes >= N
// unspecified).
template <int N>
inline __m256i hsum_lanes(const __m256i* y) {
  if constexpr (N == 1) {
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(y[0]), _mm256_extracti128_si256(y[0], 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xb1));
    return _mm256_castsi128_si256(x);
  } else if constexpr (N == 2) {
    const __m256i h = _mm256_hadd_epi32(y[0], y[1]);
    const __m128i x = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    return _mm256_castsi128_si256(_mm_hadd_epi32(x, x));
  } else {
    const auto v = [&](int t) { return t < N ? y[t] : _mm256_setzero_si256(); };  // t, N constant
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v(0), v(1)), _mm256_hadd_epi32(v(2), v(3)));
    if constexpr (N <= 4) {
      return _mm256_castsi128_si256(_mm_add_epi32(_mm256_castsi256_si128(h0), _mm256_extracti128_si256(h0, 1)));
    } else {
      const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v(4), v(5)), _mm256_hadd_epi32(v(6), v(7)));
      return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
    }
  }
}

// ---- GEMV path -------------------------------------------------------------------------------
// A super-block's qs as two registers whose dwords each hold 4 bytes of one sub-block, lane l
// (128 bits) = [sub-block l, l, 4+l, 4+l] by dword, so that all four vpdpbusd of a token go to
// one accumulator that a single vpmulld scales (gemv_split):
//   p0 lane l = [bytes 0..7 of sub-block l | bytes 8..15 of sub-block 4+l]
//   p1 lane l = [bytes 8..15 of sub-block l | bytes 0..7 of sub-block 4+l]
// (byte k of a sub-block holds weight k in its low nibble and weight k + 16 in its high one).
inline void gemv_split(const uint8_t* blk, __m512i* p0, __m512i* p1) {
  const __m512i q0 = _mm512_loadu_si512(blk + kQsOffset);
  const __m512i q1 = _mm512_loadu_si512(blk + kQsOffset + 64);
  *p0 = _mm512_mask_blend_epi64(0xaa, q0, q1);
  *p1 = _mm512_shuffle_epi32(_mm512_mask_blend_epi64(0xaa, q1, q0), _MM_PERM_BADC);
}

// Activations of one token, per super-block 384 bytes: the signed qs in the order of the four
// lookups of gemv_split's registers (lo p0, hi p0, lo p1, hi p1: 64 bytes each), then the start
// vector of the vpdpbusd sums (which take the weights as unsigned v + 128): dword 4l =
// -128 · Σ a.qs of sub-block l, dword 4l + 2 = the same of sub-block 4 + l, other dwords 0; then
// the IQ4_KS shift vector, the same dwords holding +4 · Σ a.qs (a shifted sub-block's values are
// the first half's + 4: Σ a (v + 4) = Σ a v + 4 Σ a).
constexpr size_t kGemvActBytes = 320;

// Qword permutations of prep_gemv_act: part m, qword 2l + h = qword kOct[m][h] (8 weights) of
// sub-block l (h = 0, from a.qs[0..127]) or 4 + l (h = 1, from a.qs[128..255]).
constexpr int kOct[4][2] = {{0, 1}, {2, 3}, {1, 0}, {3, 2}};
struct PrepIdx {
  alignas(64) int64_t lo[4][8];  // vpermt2q indices into a.qs[0..127] (even qwords used)
  alignas(64) int64_t hi[4][8];  // into a.qs[128..255] (odd qwords used)
};
constexpr PrepIdx make_prep_idx() {
  PrepIdx p{};
  for (int m = 0; m < 4; ++m) {
    for (int q = 0; q < 8; ++q) {
      p.lo[m][q] = 4 * (q / 2) + kOct[m][0];
      p.hi[m][q] = 4 * (q / 2) + kOct[m][1];
    }
  }
  return p;
}
constexpr PrepIdx kPrepIdx = make_prep_idx();

void prep_gemv_act(const uint8_t* a_row, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kGemvActBytes) {
    const auto* a = reinterpret_cast<const BlockQ8K*>(a_row + b * sizeof(BlockQ8K));
    const __m512i x0 = _mm512_loadu_si512(a->qs), x1 = _mm512_loadu_si512(a->qs + 64);
    const __m512i x2 = _mm512_loadu_si512(a->qs + 128), x3 = _mm512_loadu_si512(a->qs + 192);
    for (int m = 0; m < 4; ++m) {
      const __m512i lo = _mm512_permutex2var_epi64(x0, _mm512_load_si512(kPrepIdx.lo[m]), x1);
      const __m512i hi = _mm512_permutex2var_epi64(x2, _mm512_load_si512(kPrepIdx.hi[m]), x3);
      _mm512_store_si512(out + 64 * m, _mm512_mask_blend_epi64(0xaa, lo, hi));
    }
    alignas(64) int32_t init[16];
    for (int j = 0; j < 8; ++j) {
      const int32_t sum = a->bsums[2 * j] + a->bsums[2 * j + 1];
      const int pos = 4 * (j % 4) + 2 * (j / 4);
      init[pos] = -128 * sum;
      init[pos + 1] = (iquants::kShiftDelta - 128) * sum;
    }
    _mm512_store_si512(out + 256, _mm512_load_si512(init));
  }
}

// The dwords of the start vector a row-block uses (prep_gemv_act): dword 4l (sub-block l
// unshifted) or 4l + 1 (shifted), and dword 4l + 2 or 4l + 3 for sub-block 4 + l.
template <Iq4Kind K>
inline __mmask16 init_dwords(const uint8_t* blk) {
  if constexpr (K == Iq4Kind::kXs) {
    return 0x5555;
  } else {
    const uint32_t bits = uint32_t(_pext_u64(iquants::load_u64(blk), 0x0101010101010101ull));
    return __mmask16(0x5555 + (_pdep_u32(bits & 15, 0x1111) | _pdep_u32(bits >> 4, 0x4444)));
  }
}

// The GEMV path reads kGemvRows rows per pass, each row's next gemv_chunk(T) super-blocks in one
// contiguous run (rows one after the other, so the weights stream in address order, which the
// hardware prefetchers follow: visiting the rows block by block, interleaved, ran 3x slower
// from DRAM). Each (row, super-block, token) leaves one 8-lane int32 vector in a chunk buffer on
// the stack (<= 16 KiB); then, block by block in column order, the 8 rows' vectors of a token are
// reduced into one vector (lane r = row r's exact sum S) and the token's float chain takes its
// canonical fma; the T tokens' chains are independent (ILP).
constexpr int kGemvRows = 8;
constexpr int gemv_chunk(int t) { return std::min(16, 16384 / (kGemvRows * t * 32)); }

// y for T tokens (prepared in act, act_stride bytes apart; ad[b * kMaxTokens + t] = token t's
// a.d) × all rows, kGemvRows rows at a time (a tail group repeats the last row and drops its
// results).
template <Iq4Kind K, int T>
void gemv_rows(const GemmArgs& g, const uint8_t* act, size_t act_stride, const float* ad, float* y) {
  constexpr int R = kGemvRows;
  constexpr int C = gemv_chunk(T);
  const int64_t nb = g.n / kSuperBlock;
  const __m512i base = table_u8();
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int64_t r0 = 0; r0 < g.nr; r0 += R) {
    const uint8_t* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = g.w + std::min<int64_t>(r0 + r, g.nr - 1) * g.w_stride;
    __m256 facc[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) facc[t] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += C) {
      const int nc = int(std::min<int64_t>(C, nb - b0));
      __m256i z[C][T][R];              // z[c][t][r]: lanes summing to S of row r, block b0 + c
      alignas(16) uint16_t d16[C][R];  // IQ4_XS: fp16 d of row r, block b0 + c
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + iquants::row_meta_bytes(K) + b0 * kBlockBytes;
        for (int c = 0; c < nc; ++c, blk += kBlockBytes) {
          const uint8_t* at = act + (b0 + c) * kGemvActBytes;
          prefetch_lines(blk + kGemvPrefetchAhead, kBlockBytes);
          __m512i p0, p1;
          gemv_split(blk, &p0, &p1);
          const __m512i w0 = _mm512_shuffle_epi8(base, _mm512_and_si512(p0, m4));
          const __m512i w1 = _mm512_shuffle_epi8(base, _mm512_and_si512(_mm512_srli_epi16(p0, 4), m4));
          const __m512i w2 = _mm512_shuffle_epi8(base, _mm512_and_si512(p1, m4));
          const __m512i w3 = _mm512_shuffle_epi8(base, _mm512_and_si512(_mm512_srli_epi16(p1, 4), m4));
          const __m512i ls = pair_scales<K>(scale_bytes<K>(blk));
          const __mmask16 kinit = init_dwords<K>(blk);
          if constexpr (K == Iq4Kind::kXs) d16[c][r] = iquants::load_u16(blk);
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            __m512i acc = _mm512_maskz_loadu_epi32(kinit, at + t * act_stride + 256);
            acc = _mm512_dpbusd_epi32(acc, w0, _mm512_load_si512(at + t * act_stride));
            acc = _mm512_dpbusd_epi32(acc, w1, _mm512_load_si512(at + t * act_stride + 64));
            acc = _mm512_dpbusd_epi32(acc, w2, _mm512_load_si512(at + t * act_stride + 128));
            acc = _mm512_dpbusd_epi32(acc, w3, _mm512_load_si512(at + t * act_stride + 192));
            const __m512i x = _mm512_mullo_epi32(acc, ls);
            z[c][t][r] = _mm256_add_epi32(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
          }
        }
      }
      for (int c = 0; c < nc; ++c) {
        __m256 dv = _mm256_setzero_ps();
        if constexpr (K == Iq4Kind::kXs) {
          dv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d16[c])));
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m256 sums = _mm256_cvtepi32_ps(hsum_lanes<R>(z[c][t]));
          __m256 s = _mm256_set1_ps(ad[(b0 + c) * kMaxTokens + t]);
          if constexpr (K == Iq4Kind::kXs) s = _mm256_mul_ps(dv, s);
          facc[t] = _mm256_fmadd_ps(s, sums, facc[t]);
        }
      }
    }
    if constexpr (K == Iq4Kind::kKs) {
      alignas(32) float d_row[8] = {};
      for (int r = 0; r < R; ++r) d_row[r] = iquants::load_f32(rows[r]);
      const __m256 dr = _mm256_load_ps(d_row);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) facc[t] = _mm256_mul_ps(dr, facc[t]);
    }
    const int rows_out = int(std::min<int64_t>(R, g.nr - r0));
    for (int t = 0; t < T; ++t) {
      alignas(32) float out[8];
      _mm256_store_ps(out, facc[t]);
      for (int r = 0; r < rows_out; ++r) y[t * g.ldy + r0 + r] = out[r];
    }
  }
}

template <Iq4Kind K, int T>
void gemv_pass(const GemmArgs& g, int64_t t0) {
  const int64_t nb = g.n / kSuperBlock;
  const size_t act_stride = size_t(nb) * kGemvActBytes;
  uint8_t* act = g.scratch;
  auto* ad = reinterpret_cast<float*>(act + kMaxTokens * act_stride);
  for (int t = 0; t < T; ++t) {
    const uint8_t* a_row = g.a + (t0 + t) * g.a_stride;
    prep_gemv_act(a_row, nb, act + t * act_stride);
    for (int64_t b = 0; b < nb; ++b) {
      ad[b * kMaxTokens + t] = reinterpret_cast<const BlockQ8K*>(a_row + b * sizeof(BlockQ8K))->d;
    }
  }
  gemv_rows<K, T>(g, act, act_stride, ad, g.y + t0 * g.ldy);
}

// ---- GEMM path -------------------------------------------------------------------------------
// Unpacked tile, per group of 16 rows (rows past nr are zero) and super-block (kSbBytes):
//   vals[64][16][4] int8: dword column c (weights 4c..4c+3 of the super-block) of rows 0..15,
//                   the signed table values v;
//   ls[8][16]       int32: ls_j of the 16 rows;
//   negk[16]        int32: -128 * Σ_j ls_j Σ_{32 of j} v (the activations enter as a.qs + 128);
//   d[16]           float: fp16(d) (IQ4_XS; unused for IQ4_KS).
// After the group's super-blocks: d_row[16] float (IQ4_KS).
constexpr int kGroupRows = 16;
constexpr size_t kValsBytes = 64 * 64;
constexpr size_t kLsOffset = kValsBytes;
constexpr size_t kNegkOffset = kLsOffset + 8 * 64;
constexpr size_t kDOffset = kNegkOffset + 64;
constexpr size_t kSbBytes = kDOffset + 64;

size_t group_bytes(int64_t nb) { return size_t(nb) * kSbBytes + 64; }

// Activations of a GEMM pass: per (super-block, sub-block) the 32 qs ^ 0x80 of kMaxTokens tokens.
constexpr size_t kActSubBytes = 32 * kMaxTokens;

// In-register transpose of 16 rows × 16 dwords: out[i] = dword i of in[0..15].
inline void transpose16(const __m512i* in, __m512i* out) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // u[4q + k]: lane l = rows 4q..4q+3 of dword 4l + k
    u[4 * q + 0] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
    u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
    u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
    u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xee);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xee);
    out[k] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    out[4 + k] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    out[8 + k] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    out[12 + k] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
}

// Unpacks rows r0 .. r0+rows-1 (rows <= 16) into one group. The 16 rows' qs are transposed as
// dwords first (qs dword e = bytes 4e..4e+3 = weights 4(e%4).. of sub-block e/4, low nibbles, and
// the same + 16, high nibbles), so each table lookup writes one dword column of 16 rows. Rows past
// `rows` repeat row r0 with all scales 0, which makes their sums (and K) 0.
template <Iq4Kind K>
void unpack_group(const GemmArgs& g, int64_t r0, int rows, uint8_t* dst) {
  const int64_t nb = g.n / kSuperBlock;
  const __m512i base = table_s8();
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i delta = _mm512_set1_epi8(iquants::kShiftDelta);
  const __m512i bias = _mm512_set1_epi32(iquants::scale_bias(K));
  const __m512i byte_mask = _mm512_set1_epi64(0xff);
  const uint8_t* row[kGroupRows];
  for (int r = 0; r < kGroupRows; ++r) {
    row[r] = g.w + (r0 + (r < rows ? r : 0)) * g.w_stride + iquants::row_meta_bytes(K);
  }
  constexpr uint64_t kNeutral = 0x0101010101010101ull * uint64_t(iquants::scale_bias(K));  // ls = 0
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* sb = dst + b * kSbBytes;
    alignas(64) uint64_t sbytes[kGroupRows];
    alignas(16) uint8_t shifts[kGroupRows];
    alignas(32) uint16_t d16[kGroupRows];
    __m512i q0[kGroupRows], q1[kGroupRows], c0[kGroupRows], c1[kGroupRows];
    for (int r = 0; r < kGroupRows; ++r) {
      const uint8_t* blk = row[r] + b * kBlockBytes;
      q0[r] = _mm512_loadu_si512(blk + kQsOffset);
      q1[r] = _mm512_loadu_si512(blk + kQsOffset + 64);
      sbytes[r] = r < rows ? scale_bytes<K>(blk) : kNeutral;
      if constexpr (K == Iq4Kind::kKs) {
        shifts[r] = uint8_t(_pext_u64(iquants::load_u64(blk), 0x0101010101010101ull));
      } else {
        d16[r] = iquants::load_u16(blk);
      }
    }
    transpose16(q0, c0);
    transpose16(q1, c1);
    // ls_j of the 16 rows: byte j of each row's scale bytes.
    __m512i ls[8];
    const __m512i s_lo = _mm512_load_si512(sbytes), s_hi = _mm512_load_si512(sbytes + 8);
    for (int j = 0; j < 8; ++j) {
      const __m256i lo = _mm512_cvtepi64_epi32(_mm512_and_si512(_mm512_srli_epi64(s_lo, 8 * j), byte_mask));
      const __m256i hi = _mm512_cvtepi64_epi32(_mm512_and_si512(_mm512_srli_epi64(s_hi, 8 * j), byte_mask));
      ls[j] = _mm512_sub_epi32(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), bias);
      _mm512_store_si512(sb + kLsOffset + 64 * j, ls[j]);
    }
    __m512i k_sum = _mm512_setzero_si512();
    for (int ib = 0; ib < 8; ++ib) {
      __mmask64 shifted = 0;
      if constexpr (K == Iq4Kind::kKs) {
        const __m128i shift_bits = _mm_load_si128(reinterpret_cast<const __m128i*>(shifts));
        const uint32_t rows_shifted = _mm_test_epi8_mask(shift_bits, _mm_set1_epi8(char(1 << ib)));
        const uint64_t m = _pdep_u64(rows_shifted, 0x1111111111111111ull);
        shifted = (m << 4) - m;  // the 4 bytes of each such row
      }
      __m512i vsum = _mm512_setzero_si512();
      for (int e = 4 * ib; e < 4 * ib + 4; ++e) {
        const __m512i x = e < 16 ? c0[e] : c1[e - 16];
        __m512i lo = _mm512_shuffle_epi8(base, _mm512_and_si512(x, m4));
        __m512i hi = _mm512_shuffle_epi8(base, _mm512_and_si512(_mm512_srli_epi16(x, 4), m4));
        if constexpr (K == Iq4Kind::kKs) {
          lo = _mm512_mask_add_epi8(lo, shifted, lo, delta);
          hi = _mm512_mask_add_epi8(hi, shifted, hi, delta);
        }
        _mm512_store_si512(sb + 64 * (8 * ib + e % 4), lo);
        _mm512_store_si512(sb + 64 * (8 * ib + 4 + e % 4), hi);
        vsum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(vsum, ones, lo), ones, hi);
      }
      k_sum = _mm512_add_epi32(k_sum, _mm512_mullo_epi32(vsum, ls[ib]));
    }
    _mm512_store_si512(sb + kNegkOffset, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(k_sum, 7)));
    if constexpr (K == Iq4Kind::kXs) {
      _mm512_store_ps(sb + kDOffset, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d16))));
    }
  }
  auto* d_row = reinterpret_cast<float*>(dst + nb * kSbBytes);
  for (int r = 0; r < kGroupRows; ++r) {
    d_row[r] = K == Iq4Kind::kKs && r < rows ? iquants::load_f32(g.w + (r0 + r) * g.w_stride) : 0.0f;
  }
}

// One group (16 rows, `rows` of them real) × T tokens: act = the tokens' a.qs ^ 0x80 as
// [super-block b][sub-block j][token t < kMaxTokens][32] (kActSubBytes per (b, j)), ad[b * 8 + t]
// = a.d. Writes y[t * ldy + r] for r < rows.
template <Iq4Kind K, int T>
void gemm_tile(const uint8_t* grp, int64_t nb, const uint8_t* act, const float* ad, float* y, int64_t ldy, int rows) {
  __m512 facc[T];
  for (int t = 0; t < T; ++t) facc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* sb = grp + b * kSbBytes;
    __m512i sacc[T];
    const __m512i negk = _mm512_load_si512(sb + kNegkOffset);
    for (int t = 0; t < T; ++t) sacc[t] = negk;
    for (int j = 0; j < 8; ++j) {
      __m512i sub[T];
      const uint8_t* aj = act + (b * 8 + j) * kActSubBytes;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i w = _mm512_load_si512(sb + 64 * (8 * j + k));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m512i a = _mm512_set1_epi32(int32_t(iquants::load_u32(aj + 32 * t + 4 * k)));
          sub[t] = _mm512_dpbusd_epi32(k == 0 ? _mm512_setzero_si512() : sub[t], a, w);
        }
      }
      const __m512i ls = _mm512_load_si512(sb + kLsOffset + 64 * j);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sacc[t] = _mm512_add_epi32(sacc[t], _mm512_mullo_epi32(sub[t], ls));
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m512 s = _mm512_set1_ps(ad[b * kMaxTokens + t]);
      if constexpr (K == Iq4Kind::kXs) s = _mm512_mul_ps(_mm512_load_ps(sb + kDOffset), s);
      facc[t] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(sacc[t]), facc[t]);
    }
  }
  const __mmask16 mask = __mmask16((1u << rows) - 1);
  for (int t = 0; t < T; ++t) {
    __m512 v = facc[t];
    if constexpr (K == Iq4Kind::kKs) v = _mm512_mul_ps(_mm512_load_ps(grp + nb * kSbBytes), v);
    _mm512_mask_storeu_ps(y + t * ldy, mask, v);
  }
}

template <Iq4Kind K, int T>
void gemm_groups(const GemmArgs& g, const uint8_t* tile, int64_t ngroups, const uint8_t* act, const float* ad,
                 int64_t t0) {
  const int64_t nb = g.n / kSuperBlock;
  for (int64_t gi = 0; gi < ngroups; ++gi) {
    const int rows = int(std::min<int64_t>(kGroupRows, g.nr - gi * kGroupRows));
    gemm_tile<K, T>(tile + gi * group_bytes(nb), nb, act, ad, g.y + t0 * g.ldy + gi * kGroupRows, g.ldy, rows);
  }
}

// Scratch: ngroups × group_bytes(nb) (<= 74 n + 256 bytes) + kMaxTokens × (n + n / 64) (activations)
// <= gemm_scratch_bytes(n) = 64 × (1.5 n + 64).
template <Iq4Kind K>
void gemm_unpacked(const GemmArgs& g) {
  const int64_t nb = g.n / kSuperBlock;
  const int64_t ngroups = (g.nr + kGroupRows - 1) / kGroupRows;
  uint8_t* tile = g.scratch;
  for (int64_t gi = 0; gi < ngroups; ++gi) {
    const int rows = int(std::min<int64_t>(kGroupRows, g.nr - gi * kGroupRows));
    unpack_group<K>(g, gi * kGroupRows, rows, tile + gi * group_bytes(nb));
  }
  uint8_t* act = tile + ngroups * group_bytes(nb);
  auto* ad = reinterpret_cast<float*>(act + nb * 8 * kActSubBytes);
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  for (int64_t t0 = 0; t0 < g.nt;) {
    const int nt = pass_tokens(g.nt, t0);
    for (int t = 0; t < nt; ++t) {
      const auto* a = reinterpret_cast<const BlockQ8K*>(g.a + (t0 + t) * g.a_stride);
      for (int64_t b = 0; b < nb; ++b) {
        for (int j = 0; j < 8; ++j) {
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 32 * j));
          _mm256_store_si256(reinterpret_cast<__m256i*>(act + (b * 8 + j) * kActSubBytes + 32 * t),
                             _mm256_xor_si256(q, flip));
        }
        ad[b * kMaxTokens + t] = a[b].d;
      }
    }
    switch (nt) {
      case 1:
        gemm_groups<K, 1>(g, tile, ngroups, act, ad, t0);
        break;
      case 2:
        gemm_groups<K, 2>(g, tile, ngroups, act, ad, t0);
        break;
      case 3:
        gemm_groups<K, 3>(g, tile, ngroups, act, ad, t0);
        break;
      case 4:
        gemm_groups<K, 4>(g, tile, ngroups, act, ad, t0);
        break;
      case 5:
        gemm_groups<K, 5>(g, tile, ngroups, act, ad, t0);
        break;
      case 6:
        gemm_groups<K, 6>(g, tile, ngroups, act, ad, t0);
        break;
      case 7:
        gemm_groups<K, 7>(g, tile, ngroups, act, ad, t0);
        break;
      default:
        gemm_groups<K, 8>(g, tile, ngroups, act, ad, t0);
        break;
    }
    t0 += nt;
  }
}

// Scratch of the GEMV path: kMaxTokens × 1.25 n + 32 nb bytes (the prepared activations, a.d).
template <Iq4Kind K>
void gemv(const GemmArgs& g) {
  for (int64_t t0 = 0; t0 < g.nt; t0 += pass_tokens(g.nt, t0)) {
    switch (pass_tokens(g.nt, t0)) {
      case 1:
        gemv_pass<K, 1>(g, t0);
        break;
      case 2:
        gemv_pass<K, 2>(g, t0);
        break;
      case 3:
        gemv_pass<K, 3>(g, t0);
        break;
      case 4:
        gemv_pass<K, 4>(g, t0);
        break;
      case 5:
        gemv_pass<K, 5>(g, t0);
        break;
      case 6:
        gemv_pass<K, 6>(g, t0);
        break;
      case 7:
        gemv_pass<K, 7>(g, t0);
        break;
      default:
        gemv_pass<K, 8>(g, t0);
        break;
    }
  }
}

template <Iq4Kind K>
void gemm_iq4(const GemmArgs& g) {
  if (g.nt < kGemmMinTokens) {
    gemv<K>(g);
  } else {
    gemm_unpacked<K>(g);
  }
}

}  // namespace

void register_gemm_iquants_avx512(GemmTable& t) {
  t[size_t(GgmlType::IQ4_XS)] = {ActType::kQ8K, gemm_iq4<Iq4Kind::kXs>};
  t[size_t(GgmlType::IQ4_KS)] = {ActType::kQ8K, gemm_iq4<Iq4Kind::kKs>};
}

}  // namespace expertmesh::cpu
