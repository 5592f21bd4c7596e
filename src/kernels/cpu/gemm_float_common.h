// Shared tiling of the float matmul kernels (F32, F16, BF16 weights; gemm.h), ISA-agnostic:
// each ISA file supplies a Lanes class with its intrinsics, this header supplies the loops.
//
// Per-output instruction sequence (the batch-invariance contract, gemm.h): output (r, t) owns
// one vector accumulator acc (L::kStep columns per madd, zero-initialised). For c = 0, kStep,
// ... while c + kStep <= n: acc = madd(acc, W[r][c..], A[t][c..]); then, if n % kStep != 0,
// one more madd of the zero-padded remainder; y = hsum(acc) with a fixed reduction tree. The
// register blocks (R rows × T tokens sharing each load) only decide which outputs run side by
// side, never the order of any output's operations, and the activation copy below is
// bit-exact, so y[t][r] is the same bits whatever nr, nt or the position of (r, t) in the tile.
//
// Blocking: tokens are split into groups of at most L::kMaxTok (sizes balanced within one),
// rows into groups of at most L::kMaxRow. The token group is the OUTER loop: its activation
// rows stay in L1/L2 while the tile's weight rows (nr × n) stream from L2 (L3 for wide rows)
// once per group. When several row groups will read a token group, its activation rows are
// first copied to g.scratch at a stride of an odd number of cache lines: rows 2^k bytes apart
// (the usual case: n a power of two) all map to the same L1 sets, and T of them plus the R
// weight rows (which alias likewise) overflow the 8 ways, so every row group would otherwise
// reload the activations from L2 (measured: 82 -> 89 G MAC/s at n = 2048, 74 -> 98 at 4096).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/cpu/gemm.h"

namespace expertmesh::cpu::float_gemm {

// Every function here is a template over L, and each ISA file defines its Lanes classes in an
// unnamed namespace, so no instantiation compiled with one ISA's flags can be shared with (and
// picked by the linker for) another ISA's file.
//
// Lanes interface (all static):
//   using Acc, W, X;  kStep (columns per madd), kMaxRow, kMaxTok (register block limits),
//   kActBytes (bytes per activation value), kWBytes (bytes per weight value)
//   Acc zero();  W load_w(const uint8_t* row, int64_t c);  X load_x(const uint8_t* row, int64_t c)
//   W load_w_tail(row, c, rem) / X load_x_tail(row, c, rem): columns c..c+rem-1, rest zero
//   Acc madd(Acc acc, W w, X x);  float hsum(Acc acc)
//   optional: void hsum16x16(const Acc* acc, float* out) = 16 hsum calls, batched

// Outputs rows [r0, r0+R) × tokens [t0, t0+T) over columns [c_begin, c_end) (multiples of
// kStep, except c_end == n); token t0+t's activations at x + t * x_stride. A column range that
// starts past 0 resumes the accumulators from `save` (R × T of them), one that ends before n
// stores them there; the range that ends at n writes y. Splitting the columns so only moves
// accumulators through memory (exact): each output's sequence of madds is the same.
template <class L, int R, int T>
inline void block(const GemmArgs& g, int64_t r0, int64_t t0, const uint8_t* x, size_t x_stride, int64_t c_begin,
                  int64_t c_end, typename L::Acc* save) {
  using Acc = typename L::Acc;
  using W = typename L::W;
  using X = typename L::X;
  const uint8_t* wr[R];
  const uint8_t* xt[T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) wr[r] = g.w + size_t(r0 + r) * g.w_stride;
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) xt[t] = x + size_t(t) * x_stride;
  Acc acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = c_begin == 0 ? L::zero() : save[r * T + t];
  const int64_t n = g.n;
  int64_t c = c_begin;
  for (; c + L::kStep <= c_end; c += L::kStep) {
    if constexpr (T <= 2) {
      // Generation (few tokens: memory-bound): prefetch the same columns of the next row group
      // (R rows on, 4-16 KiB ahead), once per cache line; 4 interleaved row streams alone ran
      // at 17 GB/s per thread from DRAM where the quantized GEMVs with prefetch reach 23.
      if ((c * L::kWBytes) % 64 == 0 || L::kStep * L::kWBytes >= 64) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) __builtin_prefetch(wr[r] + size_t(R) * g.w_stride + size_t(c) * L::kWBytes, 0, 3);
      }
    }
    W w[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) w[r] = L::load_w(wr[r], c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const X xv = L::load_x(xt[t], c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = L::madd(acc[r][t], w[r], xv);
    }
  }
  if (c_end < n) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) save[r * T + t] = acc[r][t];
    return;
  }
  if (c < n) {
    const int rem = int(n - c);
    W w[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) w[r] = L::load_w_tail(wr[r], c, rem);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const X xv = L::load_x_tail(xt[t], c, rem);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = L::madd(acc[r][t], w[r], xv);
    }
  }
  if constexpr (requires(const Acc* a, float* o) { L::hsum16x16(a, o); }) {
    // 16 outputs per batched reduction (the same tree per output; padding sums are dropped).
    constexpr int kN = R * T, kBatches = (kN + 15) / 16;
    Acc flat[16 * kBatches];
    float sums[16 * kBatches];
#pragma GCC unroll 32
    for (int i = 0; i < 16 * kBatches; ++i) flat[i] = i < kN ? acc[i / T][i % T] : L::zero();
#pragma GCC unroll 2
    for (int b = 0; b < kBatches; ++b) L::hsum16x16(flat + 16 * b, sums + 16 * b);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float* y = g.y + size_t(t0 + t) * size_t(g.ldy) + r0;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) y[r] = sums[r * T + t];
    }
  } else {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float* y = g.y + size_t(t0 + t) * size_t(g.ldy) + r0;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) y[r] = L::hsum(acc[r][t]);
    }
  }
}

template <class L>
using BlockFn = void (*)(const GemmArgs&, int64_t, int64_t, const uint8_t*, size_t, int64_t, int64_t, typename L::Acc*);

// fn[R-1][T-1] = block<L, R, T>.
template <class L>
struct BlockTable {
  BlockFn<L> fn[L::kMaxRow][L::kMaxTok] = {};
  constexpr BlockTable() { fill(std::make_integer_sequence<int, L::kMaxRow>{}); }

 private:
  template <int... Rs>
  constexpr void fill(std::integer_sequence<int, Rs...>) {
    (fill_row<Rs + 1>(fn[Rs], std::make_integer_sequence<int, L::kMaxTok>{}), ...);
  }
  template <int R, int... Ts>
  static constexpr void fill_row(BlockFn<L>* row, std::integer_sequence<int, Ts...>) {
    ((row[Ts] = &block<L, R, Ts + 1>), ...);
  }
};

// Row stride of the activation copy: whole cache lines, an odd number of them.
template <class L>
constexpr size_t copy_stride(size_t row_bytes) {
  const size_t lines = (row_bytes + 63) / 64;
  return 64 * (lines % 2 == 0 ? lines + 1 : lines);
}

// Activation bytes of one token group that the column split keeps within L1 beside the weight
// rows: wider rows are processed in column chunks, each over all row groups, so the chunk of
// the token group's activations stays in L1 (with whole rows of 6 × 8 KiB, BF16 × BF16 at
// n = 4096 ran at 118 G MAC/s per Zen 5 core against 173 at n = 2048).
inline constexpr size_t kActChunkBytes = 24 << 10;

// The GemmFn body: token groups outer, row groups inner, both balanced (k groups of at most m
// over n items: group i spans [i*n/k, (i+1)*n/k)). Scratch: kMaxTok activation rows of
// copy_stride bytes (<= 6 × (4n + 128) bytes, within gemm_scratch_bytes(n) for every n), then
// the saved accumulators of the column split (rg × R × T vectors).
template <class L>
inline void gemm(const GemmArgs& g) {
  using Acc = typename L::Acc;
  static constexpr BlockTable<L> kTable{};
  if (g.nr <= 0 || g.nt <= 0) return;
  const int64_t tg = (g.nt + L::kMaxTok - 1) / L::kMaxTok, rg = (g.nr + L::kMaxRow - 1) / L::kMaxRow;
  const size_t row_bytes = size_t(g.n) * L::kActBytes, stride = copy_stride<L>(row_bytes);
  // Rows already an odd number of cache lines apart (the worker's Activations lays out the
  // float formats so) are read in place.
  const bool odd_stride = g.a_stride % 128 == 64;
  const bool copy = rg > 1 && !odd_stride && L::kMaxTok * stride <= gemm_scratch_bytes(g.n);
  // Column chunk (a multiple of kStep; n: no split). The split needs several row groups to pay
  // and room for the saved accumulators after the activation copy.
  int64_t chunk = g.n;
  Acc* save = nullptr;
  if (rg > 1 && L::kMaxTok * row_bytes > kActChunkBytes) {
    const size_t save_off = (L::kMaxTok * stride + 63) / 64 * 64;
    const size_t save_bytes = size_t(rg) * L::kMaxRow * L::kMaxTok * sizeof(Acc);
    if (save_off + save_bytes <= gemm_scratch_bytes(g.n)) {
      chunk = std::max<int64_t>(L::kStep, int64_t(kActChunkBytes / (L::kMaxTok * L::kActBytes)) / L::kStep * L::kStep);
      save = reinterpret_cast<Acc*>(g.scratch + save_off);
    }
  }
  for (int64_t i = 0; i < tg; ++i) {
    const int64_t t0 = i * g.nt / tg, t1 = (i + 1) * g.nt / tg;
    const uint8_t* x = g.a + size_t(t0) * g.a_stride;
    size_t x_stride = g.a_stride;
    if (copy && t1 - t0 > 1) {
      for (int64_t t = t0; t < t1; ++t)
        std::memcpy(g.scratch + size_t(t - t0) * stride, g.a + size_t(t) * g.a_stride, row_bytes);
      x = g.scratch;
      x_stride = stride;
    }
    for (int64_t c0 = 0; c0 < g.n; c0 += chunk) {
      // The last chunk takes the remainder (and the n % kStep tail).
      const int64_t c1 = c0 + chunk >= g.n ? g.n : c0 + chunk;
      for (int64_t j = 0; j < rg; ++j) {
        const int64_t r0 = j * g.nr / rg, r1 = (j + 1) * g.nr / rg;
        kTable.fn[r1 - r0 - 1][t1 - t0 - 1](g, r0, t0, x, x_stride, c0, c1,
                                            save ? save + j * L::kMaxRow * L::kMaxTok : nullptr);
      }
      if (c1 == g.n) break;
    }
  }
}

}  // namespace expertmesh::cpu::float_gemm
