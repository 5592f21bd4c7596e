// AVX2 IQ4_XS and IQ4_KS × Q8K matmul kernels (compiled with -mavx2 -mfma -mf16c -mbmi2).
// Bit-identical with the reference (gemm_iquants_ref.cpp): exact int32 super-block sums S, then
// s = fp16(d) * a.d (IQ4_XS) or a.d (IQ4_KS), acc = fma(s, float(S), acc) per super-block in
// column order, y = acc (IQ4_KS: d_row * acc).
//
// GEMV and small passes (nt < kR8MinTokens, or a call holding a -128 activation): tokens go in
// passes of up to 8, whose activations are permuted once into g.scratch to match the lanes of the
// decoded weights (16-entry table lookups with vpshufb, one 128-bit lane per sub-block). Passes
// of up to 4 tokens (memory bound) take 8 rows at a time, each read in one contiguous run of up
// to 16 super-blocks so the weights stream in address order, and reduce the 8 rows' vectors
// together before the canonical fma per super-block (dot_rows); larger passes visit R rows block
// by block, R·T <= 8 sharing one reduction (dot_rows_interleaved). GEMM (nt >= kR8MinTokens):
// each group of 8 rows decoded once per call, row-interleaved (gemm_r8, details there).
// Products of the passes: vpmaddubsw(|a|, sign(v, a)) (|a| <= 128 unsigned, |v| <= 127: pair
// sums <= 32512, no int16 saturation, exact for a = -128 too), then vpmaddwd with the sub-block
// scale, which widens to int32 and applies ls_j in one step.
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
#include "kernels/cpu/x86/avx2_common.h"
#include "kernels/quant/iqk_tables.h"

namespace expertmesh::cpu {
namespace {

using iquants::Iq4Kind;
using iquants::kBlockBytes;
using iquants::kQsOffset;
using iquants::kSuperBlock;

constexpr int kMaxTokens = 8;

// Tokens of the pass starting at token t0 of nt: the passes of at most kMaxTokens are balanced
// (9 tokens: 5 + 4, not 8 + 1), since a pass of few tokens amortizes the decoding less.
inline int pass_tokens(int64_t nt, int64_t t0) {
  const int64_t passes = (nt + kMaxTokens - 1) / kMaxTokens;
  const int64_t base = nt / passes, extra = nt % passes;  // the first `extra` passes get base + 1
  const int64_t i = t0 < extra * (base + 1) ? t0 / (base + 1) : extra + (t0 - extra * (base + 1)) / base;
  return int(i < extra ? base + 1 : base);
}

// Lookup tables for a register holding sub-blocks 2i (lane 0) and 2i+1 (lane 1):
// index = shift flag of 2i | shift flag of 2i+1 << 1; IQ4_XS uses entry 0.
struct LaneTables {
  alignas(32) int8_t v[4][32];
};
constexpr LaneTables make_lane_tables() {
  LaneTables t{};
  for (int s = 0; s < 4; ++s) {
    for (int i = 0; i < 16; ++i) {
      t.v[s][i] = quant::kIq4kValues[16 * (s & 1) + i];
      t.v[s][16 + i] = quant::kIq4kValues[16 * (s >> 1) + i];
    }
  }
  return t;
}
constexpr LaneTables kLaneTables = make_lane_tables();

// Register i (qs bytes 32i..32i+31: sub-blocks 2i, 2i+1) of super-block blk decoded to signed
// values: v_lo = [weights 0..15 of 2i | of 2i+1], v_hi = [weights 16..31 of 2i | of 2i+1].
// shifts: the block's shift_bits (IQ4_KS; 0 for IQ4_XS).
[[gnu::always_inline]] inline void decode_register(const uint8_t* blk, uint32_t shifts, int i, __m256i m4,
                                                   __m256i& v_lo, __m256i& v_hi) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQsOffset + 32 * i));
  const __m256i tbl = _mm256_load_si256(reinterpret_cast<const __m256i*>(kLaneTables.v[(shifts >> (2 * i)) & 3]));
  v_lo = _mm256_shuffle_epi8(tbl, _mm256_and_si256(q, m4));
  v_hi = _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
}

// Shuffle controls: int16 lanes of LS vector i = byte 2i (lane 0) / 2i+1 (lane 1) of the scale
// bytes, zero-extended.
struct ScaleCtrl {
  alignas(32) uint8_t v[4][32];
};
constexpr ScaleCtrl make_scale_ctrl() {
  ScaleCtrl c{};
  for (int i = 0; i < 4; ++i) {
    for (int k = 0; k < 32; ++k) c.v[i][k] = k % 2 ? 0x80 : uint8_t(2 * i + k / 16);
  }
  return c;
}
constexpr ScaleCtrl kScaleCtrl = make_scale_ctrl();

template <Iq4Kind K>
inline uint64_t scale_bytes(const uint8_t* blk) {
  if constexpr (K == Iq4Kind::kXs) {
    return _pdep_u64(iquants::load_u32(blk + 4), 0x0f0f0f0f0f0f0f0full) |
           _pdep_u64(iquants::load_u16(blk + 2), 0x3030303030303030ull);
  } else {
    return iquants::iq4ks_scale_bytes(blk);
  }
}

template <Iq4Kind K>
inline uint32_t shift_bits(const uint8_t* blk) {
  if constexpr (K == Iq4Kind::kXs) {
    return 0;
  } else {
    return uint32_t(_pext_u64(iquants::load_u64(blk), 0x0101010101010101ull));
  }
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

// Activations of one token, per super-block 512 bytes: for each register pair i (sub-blocks 2i,
// 2i+1), 128 bytes: a_lo = [a of weights 0..15 of 2i | of 2i+1], a_hi = [weights 16..31 of 2i |
// of 2i+1], then |a_lo|, |a_hi| (vpabsb: -128 becomes the unsigned byte 128).
constexpr size_t kActBytes = 512;

void prep_act(const uint8_t* a_row, int64_t nb, uint8_t* out) {
  for (int64_t b = 0; b < nb; ++b, out += kActBytes) {
    const auto* a = reinterpret_cast<const BlockQ8K*>(a_row + b * sizeof(BlockQ8K));
    for (int i = 0; i < 4; ++i) {
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a->qs + 64 * i));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a->qs + 64 * i + 32));
      const __m256i lo = _mm256_permute2x128_si256(x0, x1, 0x20);
      const __m256i hi = _mm256_permute2x128_si256(x0, x1, 0x31);
      auto* o = reinterpret_cast<__m256i*>(out + 128 * i);
      _mm256_store_si256(o + 0, lo);
      _mm256_store_si256(o + 1, hi);
      _mm256_store_si256(o + 2, _mm256_abs_epi8(lo));
      _mm256_store_si256(o + 3, _mm256_abs_epi8(hi));
    }
  }
}

// Rows per pass, each read in one contiguous run of chunk(T) super-blocks (rows one after the
// other, so the weights stream in address order, which the hardware prefetchers follow: visiting
// the rows block by block, interleaved, ran 3x slower from DRAM). Each (row, super-block, token)
// leaves one 8-lane int32 vector in a chunk buffer on the stack (<= 16 KiB); then, block by
// block in column order, the 8 rows' vectors of a token are reduced into one vector (lane r =
// row r's exact sum S) and the token's float chain takes its canonical fma (T independent chains).
constexpr int kRows = 8;
constexpr int kContiguousMaxTokens = 4;  // passes of more tokens use dot_rows_interleaved
constexpr int chunk(int t) { return std::min(16, 16384 / (kRows * t * 32)); }

// y for T tokens (prepared in act, act_stride bytes apart; ad[b * kMaxTokens + t] = token t's
// a.d) × all rows, kRows rows at a time (a tail group repeats the last row and drops its results).
template <Iq4Kind K, int T>
void dot_rows(const GemmArgs& g, const uint8_t* act, size_t act_stride, const float* ad, float* y) {
  constexpr int R = kRows;
  constexpr int C = chunk(T);
  const int64_t nb = g.n / kSuperBlock;
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i bias = _mm256_set1_epi16(int16_t(iquants::scale_bias(K)));
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
          prefetch_lines(blk + kGemvPrefetchAhead, kBlockBytes);
          const __m256i sb = _mm256_set1_epi64x(int64_t(scale_bytes<K>(blk)));
          const uint32_t shifts = shift_bits<K>(blk);
          if constexpr (K == Iq4Kind::kXs) d16[c][r] = iquants::load_u16(blk);
          const uint8_t* ab = act + (b0 + c) * kActBytes;
          __m256i acc[T];
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {
            __m256i v_lo, v_hi;
            decode_register(blk, shifts, i, m4, v_lo, v_hi);
            const __m256i ls = _mm256_sub_epi16(
                _mm256_shuffle_epi8(sb, _mm256_load_si256(reinterpret_cast<const __m256i*>(kScaleCtrl.v[i]))), bias);
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
              const auto* at = reinterpret_cast<const __m256i*>(ab + t * act_stride + 128 * i);
              const __m256i p_lo = _mm256_maddubs_epi16(_mm256_load_si256(at + 2), _mm256_sign_epi8(v_lo, at[0]));
              const __m256i p_hi = _mm256_maddubs_epi16(_mm256_load_si256(at + 3), _mm256_sign_epi8(v_hi, at[1]));
              acc[t] =
                  _mm256_add_epi32(acc[t], _mm256_add_epi32(_mm256_madd_epi16(p_lo, ls), _mm256_madd_epi16(p_hi, ls)));
            }
          }
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) z[c][t][r] = acc[t];
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
      alignas(32) float d_row[R];
      for (int r = 0; r < R; ++r) d_row[r] = iquants::load_f32(rows[r]);
      const __m256 dr = _mm256_load_ps(d_row);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) facc[t] = _mm256_mul_ps(dr, facc[t]);
    }
    const int rows_out = int(std::min<int64_t>(R, g.nr - r0));
    for (int t = 0; t < T; ++t) {
      alignas(32) float out[R];
      _mm256_store_ps(out, facc[t]);
      for (int r = 0; r < rows_out; ++r) y[t * g.ldy + r0 + r] = out[r];
    }
  }
}

// Passes of 5..8 tokens (compute bound, where the reduction of the contiguous dot_rows costs
// ~15% more): R rows × T tokens share one 8-lane reduction (lane r*T + t), the rows visited
// block by block.
constexpr int rows_per_pass(int t) { return t == 1 ? 8 : t == 2 ? 4 : t <= 4 ? 2 : 1; }

// y for T tokens (prepared in act, act_stride bytes apart; ad[b * 8 + r * T + t] = token t's a.d,
// lanes >= R * T zero)
// × all rows, R rows at a time (a tail group repeats the last row and drops its results).
template <Iq4Kind K, int T>
void dot_rows_interleaved(const GemmArgs& g, const uint8_t* act, size_t act_stride, const float* ad, float* y) {
  constexpr int R = rows_per_pass(T);
  const int64_t nb = g.n / kSuperBlock;
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i bias = _mm256_set1_epi16(int16_t(iquants::scale_bias(K)));
  for (int64_t r0 = 0; r0 < g.nr; r0 += R) {
    const uint8_t* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = g.w + std::min<int64_t>(r0 + r, g.nr - 1) * g.w_stride;
    __m256 facc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i acc[R * T];
      uint64_t d16[2] = {0, 0};  // IQ4_XS: fp16 d of lane i in bits 16 (i % 4) of d16[i / 4]
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = rows[r] + iquants::row_meta_bytes(K) + b * kBlockBytes;
        const __m256i sb = _mm256_set1_epi64x(int64_t(scale_bytes<K>(blk)));
        const uint32_t shifts = shift_bits<K>(blk);
        if constexpr (K == Iq4Kind::kXs) {
          for (int t = 0; t < T; ++t)
            d16[(r * T + t) / 4] |= uint64_t(iquants::load_u16(blk)) << (16 * ((r * T + t) % 4));
        }
        for (int t = 0; t < T; ++t) acc[r * T + t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          __m256i v_lo, v_hi;
          decode_register(blk, shifts, i, m4, v_lo, v_hi);
          const __m256i ls = _mm256_sub_epi16(
              _mm256_shuffle_epi8(sb, _mm256_load_si256(reinterpret_cast<const __m256i*>(kScaleCtrl.v[i]))), bias);
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            const auto* at = reinterpret_cast<const __m256i*>(act + t * act_stride + b * kActBytes + 128 * i);
            const __m256i p_lo = _mm256_maddubs_epi16(_mm256_load_si256(at + 2), _mm256_sign_epi8(v_lo, at[0]));
            const __m256i p_hi = _mm256_maddubs_epi16(_mm256_load_si256(at + 3), _mm256_sign_epi8(v_hi, at[1]));
            __m256i& a = acc[r * T + t];
            a = _mm256_add_epi32(a, _mm256_add_epi32(_mm256_madd_epi16(p_lo, ls), _mm256_madd_epi16(p_hi, ls)));
          }
        }
      }
      const __m256 sums = _mm256_cvtepi32_ps(hsum_lanes<R * T>(acc));
      __m256 s = _mm256_load_ps(ad + b * kMaxTokens);
      if constexpr (K == Iq4Kind::kXs) {
        s = _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x(int64_t(d16[1]), int64_t(d16[0]))), s);
      }
      facc = _mm256_fmadd_ps(s, sums, facc);
    }
    if constexpr (K == Iq4Kind::kKs) {
      alignas(32) float d_row[8] = {};
      for (int r = 0; r < R; ++r) {
        for (int t = 0; t < T; ++t) d_row[r * T + t] = iquants::load_f32(rows[r]);
      }
      facc = _mm256_mul_ps(_mm256_load_ps(d_row), facc);
    }
    alignas(32) float out[8];
    _mm256_store_ps(out, facc);
    for (int r = 0; r < R && r0 + r < g.nr; ++r) {
      for (int t = 0; t < T; ++t) y[t * g.ldy + r0 + r] = out[r * T + t];
    }
  }
}

// Scratch: kMaxTokens × 2 n + 32 nb bytes.
template <Iq4Kind K, int T>
void pass(const GemmArgs& g, int64_t t0) {
  const int64_t nb = g.n / kSuperBlock;
  const size_t act_stride = size_t(nb) * kActBytes;
  uint8_t* act = g.scratch;
  auto* ad = reinterpret_cast<float*>(act + kMaxTokens * act_stride);
  for (int t = 0; t < T; ++t) prep_act(g.a + (t0 + t) * g.a_stride, nb, act + t * act_stride);
  if constexpr (T <= kContiguousMaxTokens) {
    for (int64_t b = 0; b < nb; ++b) {
      for (int t = 0; t < T; ++t) {
        ad[b * kMaxTokens + t] = reinterpret_cast<const BlockQ8K*>(g.a + (t0 + t) * g.a_stride)[b].d;
      }
    }
    dot_rows<K, T>(g, act, act_stride, ad, g.y + t0 * g.ldy);
  } else {
    constexpr int R = rows_per_pass(T);
    for (int64_t b = 0; b < nb; ++b) {
      for (int i = 0; i < kMaxTokens; ++i) {
        const auto* a_row = reinterpret_cast<const BlockQ8K*>(g.a + (t0 + i % T) * g.a_stride);
        ad[b * kMaxTokens + i] = i < R * T ? a_row[b].d : 0.0f;
      }
    }
    dot_rows_interleaved<K, T>(g, act, act_stride, ad, g.y + t0 * g.ldy);
  }
}

// ---- GEMM: nt >= kR8MinTokens, weight rows interleaved by 8 ----------------------------------------
//
// Each group of 8 weight rows is decoded once per call into scratch, row-interleaved: per
// super-block, vector 8j + k holds the signed values of columns 32j + 4k .. 32j + 4k + 3 of the 8
// rows (lane = row), then per sub-block j the rows' ls_j as an int16 pair per lane, then (IQ4_XS)
// the rows' fp16 d as f32. A token's 4 activations of those columns, broadcast to every lane, give
// per-lane products whose sum over the super-block is the exact S of each row: no table lookups
// and no horizontal reductions per token (the passes above spend ~20% of their operations there).
// Products: vpmaddubsw(|v|, sign(a, v)), exact while a != -128 (|v| <= 127, |sign(a, v)| <= 127:
// |pair| <= 32258), then vpmaddwd with ls_j; |S| < 2^31 (64 vectors × 2 pairs × 32258 × 127).
// The Q8K quantizer never emits -128 for finite inputs (q = round(x * 127 / amax), |q| <= 127),
// but arbitrary blocks may hold it: such a call takes the passes above, which are exact for it.
// The decoded group (9.1 bytes per column) stays in L1 while all the call's tokens pass over it,
// 4 at a time, their activations read in place (dword broadcasts of the qs). Then
// acc = fma(s, float(S), acc) per super-block in column order, as in the reference.
constexpr int kR8Rows = 8;                   // tokens go 4 at a time (token_passes4)
constexpr int kR8MinTokens = 6;              // below, the passes are as fast (Zen 5, in cache)
constexpr size_t kR8Values = 64 * 32;        // 64 vectors of 8 rows × 4 columns
constexpr size_t kR8Scales = kR8Values;      // 8 vectors of int16 pairs
constexpr size_t kR8D = kR8Scales + 8 * 32;  // IQ4_XS: 8 f32
constexpr size_t kR8BlockBytes = kR8D + 32;  // 2336 per super-block of 256 columns
constexpr size_t kQ8KQs = offsetof(BlockQ8K, qs);

// Rows r0..r0+7 (past nr: row nr - 1, never stored) into dst (nb × kR8BlockBytes); IQ4_KS: the
// rows' scales to d_row.
template <Iq4Kind K>
void unpack_r8(const GemmArgs& g, int64_t r0, uint8_t* dst, float* d_row) {
  const int64_t nb = g.n / kSuperBlock;
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i bias = _mm256_set1_epi32(iquants::scale_bias(K));
  const __m256i lo16 = _mm256_set1_epi32(0xffff);
  const uint8_t* rows[kR8Rows];
  for (int r = 0; r < kR8Rows; ++r) {
    rows[r] = g.w + size_t(std::min<int64_t>(r0 + r, g.nr - 1)) * g.w_stride;
    if constexpr (K == Iq4Kind::kKs) d_row[r] = iquants::load_f32(rows[r]);
    rows[r] += iquants::row_meta_bytes(K);
  }
  for (int64_t b = 0; b < nb; ++b, dst += kR8BlockBytes) {
    const size_t off = size_t(b) * kBlockBytes;
    __m256 v[kR8Rows], o[kR8Rows];
    // Scales: lane j of v[r] = ls_j of row r; transposed, lane r of o[j]; then doubled to int16 pairs.
#pragma GCC unroll 8
    for (int r = 0; r < kR8Rows; ++r) {
      const __m256i sb = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(scale_bytes<K>(rows[r] + off))));
      v[r] = _mm256_castsi256_ps(_mm256_sub_epi32(sb, bias));
    }
    transpose8x8(v, o);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i x = _mm256_castps_si256(o[j]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + kR8Scales + 32 * j),
                         _mm256_or_si256(_mm256_and_si256(x, lo16), _mm256_slli_epi32(x, 16)));
    }
    if constexpr (K == Iq4Kind::kXs) {
      alignas(16) uint16_t dh[kR8Rows];
      for (int r = 0; r < kR8Rows; ++r) dh[r] = iquants::load_u16(rows[r] + off);
      _mm256_store_ps(reinterpret_cast<float*>(dst + kR8D),
                      _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh))));
    }
    // Values: register i of a row decodes sub-blocks 2i and 2i+1 (as in dot_rows); v[r] (w1[r])
    // = row r's 32 values of sub-block 2i (2i+1) in column order, so after the transpose lane r of
    // o[k] holds row r's columns 4k..4k+3 of that sub-block.
    uint32_t shifts[kR8Rows];
    for (int r = 0; r < kR8Rows; ++r) shifts[r] = shift_bits<K>(rows[r] + off);
#pragma GCC unroll 1
    for (int i = 0; i < 4; ++i) {
      __m256 w1[kR8Rows];
#pragma GCC unroll 8
      for (int r = 0; r < kR8Rows; ++r) {
        __m256i v_lo, v_hi;
        decode_register(rows[r] + off, shifts[r], i, m4, v_lo, v_hi);
        v[r] = _mm256_castsi256_ps(_mm256_permute2x128_si256(v_lo, v_hi, 0x20));
        w1[r] = _mm256_castsi256_ps(_mm256_permute2x128_si256(v_lo, v_hi, 0x31));
      }
      transpose8x8(v, o);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) _mm256_store_ps(reinterpret_cast<float*>(dst + 32 * (8 * (2 * i) + k)), o[k]);
      transpose8x8(w1, o);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) _mm256_store_ps(reinterpret_cast<float*>(dst + 32 * (8 * (2 * i + 1) + k)), o[k]);
    }
  }
}

// One decoded row group × T tokens (activation rows a[t], Q8K) -> y[t * ldy + 0..valid-1].
template <Iq4Kind K, int T>
void r8_tokens(const uint8_t* wq, int64_t nb, const uint8_t* const a[T], const float* d_row, float* y, int64_t ldy,
               int64_t valid) {
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, wq += kR8BlockBytes) {
    const size_t ao = size_t(b) * sizeof(BlockQ8K);
    __m256i sum[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) sum[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int j = 0; j < 8; ++j) {
      const __m256i ls = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + kR8Scales + 32 * j));
#pragma GCC unroll 2
      for (int k = 0; k < 8; ++k) {
        const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + 32 * (8 * j + k)));
        const __m256i u = _mm256_abs_epi8(w);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m256i x = _mm256_set1_epi32(int32_t(iquants::load_u32(a[t] + ao + kQ8KQs + 32 * j + 4 * k)));
          sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(x, w)), ls));
        }
      }
    }
    __m256 wd = _mm256_setzero_ps();
    if constexpr (K == Iq4Kind::kXs) wd = _mm256_load_ps(reinterpret_cast<const float*>(wq + kR8D));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m256 s = _mm256_set1_ps(iquants::load_f32(a[t] + ao));  // a.d
      if constexpr (K == Iq4Kind::kXs) s = _mm256_mul_ps(wd, s);
      acc[t] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(sum[t]), acc[t]);
    }
  }
  if constexpr (K == Iq4Kind::kKs) {
    const __m256 dr = _mm256_load_ps(d_row);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[t] = _mm256_mul_ps(dr, acc[t]);
  }
  store_rows8<T>(acc, y, ldy, valid);
}

// Scratch: nb × kR8BlockBytes (9.1 n) bytes.
template <Iq4Kind K>
void gemm_r8(const GemmArgs& g) {
  const int64_t nb = g.n / kSuperBlock;
  uint8_t* const wq = g.scratch;
  alignas(32) float d_row[kR8Rows] = {};
  for (int64_t r0 = 0; r0 < g.nr; r0 += kR8Rows) {
    unpack_r8<K>(g, r0, wq, d_row);
    const int64_t valid = std::min<int64_t>(kR8Rows, g.nr - r0);
    token_passes4(g.nt, [&](int64_t t0, auto tokens) {
      constexpr int T = decltype(tokens)::value;
      const uint8_t* a[T];
      for (int t = 0; t < T; ++t) a[t] = g.a + size_t(t0 + t) * g.a_stride;
      r8_tokens<K, T>(wq, nb, a, d_row, g.y + t0 * g.ldy + r0, g.ldy, valid);
    });
  }
}

template <Iq4Kind K>
void gemm_iq4(const GemmArgs& g) {
  if (g.nr <= 0 || g.nt <= 0) return;
  if (g.nt >= kR8MinTokens && !acts_hold_min(g.a, g.a_stride, g.nt, g.n / kSuperBlock, sizeof(BlockQ8K), kQ8KQs, 256))
    return gemm_r8<K>(g);
  for (int64_t t0 = 0; t0 < g.nt; t0 += pass_tokens(g.nt, t0)) {
    switch (pass_tokens(g.nt, t0)) {
      case 1:
        pass<K, 1>(g, t0);
        break;
      case 2:
        pass<K, 2>(g, t0);
        break;
      case 3:
        pass<K, 3>(g, t0);
        break;
      case 4:
        pass<K, 4>(g, t0);
        break;
      case 5:
        pass<K, 5>(g, t0);
        break;
      case 6:
        pass<K, 6>(g, t0);
        break;
      case 7:
        pass<K, 7>(g, t0);
        break;
      default:
        pass<K, 8>(g, t0);
        break;
    }
  }
}

}  // namespace

void register_gemm_iquants_avx2(GemmTable& t) {
  t[size_t(GgmlType::IQ4_XS)] = {ActType::kQ8K, gemm_iq4<Iq4Kind::kXs>};
  t[size_t(GgmlType::IQ4_KS)] = {ActType::kQ8K, gemm_iq4<Iq4Kind::kKs>};
}

}  // namespace expertmesh::cpu
