// Shared definitions of the mainline i-quant family (IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS
// IQ3_S IQ4_XS): block layouts (ggml-common.h), the rounding helper the peer's quantizers use,
// the quantizers' lattice tables and the per-type quantize entry points.
//
// All types use 256-element super-blocks and have no row meta. Blocks are copied in and out of
// the byte buffers with memcpy (no aliasing casts); multi-byte fields are little-endian, as on
// every platform the peer writes files on.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/quant/fp16.h"
#include "kernels/quant/iquants_tables.h"

namespace expertmesh::quant::iq {

inline constexpr int kSuperBlock = 256;  // QK_K

// IQ2_XXS, 2.0625 bpw. qs: per 32 weights two u32: bytes 0..3 of the first are 4 grid indices
// (kIq2xxsGrid); the second holds 4 x 7 sign bits (kSignsIq2xs) and the 4-bit scale in bits 28..31.
struct BlockIq2xxs {
  uint16_t d;  // fp16 super-block scale
  uint16_t qs[kSuperBlock / 8];
};
static_assert(sizeof(BlockIq2xxs) == 66);

// IQ2_XS, 2.3125 bpw. qs: per 8 weights 9-bit grid index | 7 sign bits << 9; scales: two 4-bit
// scales per 32 weights (low nibble: first 16).
struct BlockIq2xs {
  uint16_t d;
  uint16_t qs[kSuperBlock / 8];
  uint8_t scales[kSuperBlock / 32];
};
static_assert(sizeof(BlockIq2xs) == 74);

// IQ2_S, 2.5625 bpw. qs[0..31]: low 8 bits of the 10-bit grid index per 8 weights,
// qs[32..63]: 8 explicit sign bits per 8 weights; qh: 2 high index bits per group (4 per byte);
// scales as IQ2_XS.
struct BlockIq2s {
  uint16_t d;
  uint8_t qs[kSuperBlock / 4];
  uint8_t qh[kSuperBlock / 32];
  uint8_t scales[kSuperBlock / 32];
};
static_assert(sizeof(BlockIq2s) == 82);

// IQ3_XXS, 3.0625 bpw. qs[0..63]: one kIq3xxsGrid index per 4 weights; qs[64..95]: per 32
// weights a u32 with 4 x 7 sign bits and the 4-bit scale in bits 28..31.
struct BlockIq3xxs {
  uint16_t d;
  uint8_t qs[3 * kSuperBlock / 8];
};
static_assert(sizeof(BlockIq3xxs) == 98);

// IQ3_S, 3.4375 bpw. qs: low 8 bits of the 9-bit index per 4 weights; qh: the 9th bits (8 groups
// per byte); signs: 8 explicit sign bits per 8 weights; scales: one 4-bit scale per 32 weights.
struct BlockIq3s {
  uint16_t d;
  uint8_t qs[kSuperBlock / 4];
  uint8_t qh[kSuperBlock / 32];
  uint8_t signs[kSuperBlock / 8];
  uint8_t scales[kSuperBlock / 64];
};
static_assert(sizeof(BlockIq3s) == 110);

// IQ1_S, 1.5625 bpw. qs: low 8 bits of the 11-bit kIq1sGrid index per 8 weights; qh per 32
// weights: 3 high index bits per group (bits 0..11), 3-bit scale (12..14), delta sign (15).
struct BlockIq1s {
  uint16_t d;
  uint8_t qs[kSuperBlock / 8];
  uint16_t qh[kSuperBlock / 32];
};
static_assert(sizeof(BlockIq1s) == 50);

// IQ1_M, 1.75 bpw. qs: low index bits per 8 weights; qh per 16 weights: high index bits of two
// groups in nibbles (bits 0..2 / 4..6) with their delta signs (bit 3 / bit 7); scales: 3-bit
// scales per 16 weights (4 per u16) and the fp16 super-block scale spread over the top nibbles
// of the four u16.
struct BlockIq1m {
  uint8_t qs[kSuperBlock / 8];
  uint8_t qh[kSuperBlock / 16];
  uint8_t scales[kSuperBlock / 32];
};
static_assert(sizeof(BlockIq1m) == 56);

// IQ4_XS, 4.25 bpw. 6-bit scales per 32 weights (low 4 bits in scales_l nibbles, high 2 bits in
// scales_h, stored +32); qs: 4-bit indices into kIq4kValues[0..15], 16 bytes per 32 weights
// (low nibbles: first 16 weights).
struct BlockIq4xs {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kSuperBlock / 64];
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockIq4xs) == 136);

template <typename Block>
inline Block load_block(const void* row, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(row) + i * sizeof(Block), sizeof(Block));
  return b;
}

// Byte j of a packed grid entry.
inline int grid_byte(uint64_t entry, int j) { return static_cast<int>((entry >> (8 * j)) & 0xff); }

// The peer's nearest_int: round to nearest, ties to even, via the 1.5 * 2^23 magic number.
// Valid for |x| <= 2^22 (the peer asserts it); kept bit-for-bit so ties round the same way.
inline int nearest_int(float x) {
  float v = x + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// Sum of x^2 accumulated in index order. Not fused: the peer's build vectorizes the squares and
// adds them in order (a fold-left reduction), so each square is rounded before the add.
inline float sum_squares(const float* x, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

// The peer's MAX(a, b) macro: differs from std::max when b is NaN (returns b).
inline float peer_max(float a, float b) { return a > b ? a : b; }

// Runs `fn(x_row, blocks, n_blocks)` on every row and copies the blocks out (rows are
// independent: the result does not depend on how rows are split across threads).
template <typename Block, typename RowFn>
void for_each_row(const float* src, void* dst, int64_t nrows, int64_t n_per_row, RowFn&& fn) {
  const int64_t nb = n_per_row / kSuperBlock;
  std::vector<Block> blocks(static_cast<size_t>(nb));
  for (int64_t r = 0; r < nrows; ++r) {
    fn(src + r * n_per_row, blocks.data(), nb);
    std::memcpy(static_cast<uint8_t*>(dst) + r * nb * static_cast<int64_t>(sizeof(Block)), blocks.data(),
                blocks.size() * sizeof(Block));
  }
}

// The peer's build (GCC, -march=native with FMA, C in gnu11 mode: -ffp-contract=fast) fuses a
// product feeding an addition into one FMA. Where that changes the rounding of its quantizers
// we spell the fusion out with std::fma (exact on every platform), so our bytes do not depend
// on our own compiler flags: a * b + c rounded once.
inline float fmadd(float a, float b, float c) { return std::fma(a, b, c); }

// nearest_int(a * b) as the peer's build computes it: the product fused into the magic add.
inline int nearest_int_fma(float a, float b) {
  float v = std::fma(a, b, 12582912.f);
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// fp16 of a super-block scale. Where the peer's conversion overflows to +-inf (|d| > 65504,
// i.e. weights beyond what the format can represent) or yields NaN, we saturate / write 0
// instead, so the file never holds non-finite scales. Identical to the peer otherwise.
inline uint16_t iq_scale_to_fp16(float d) {
  if (std::isnan(d)) return 0;
  constexpr float kMaxHalf = 65504.f;
  return f32_to_fp16(d > kMaxHalf ? kMaxHalf : d < -kMaxHalf ? -kMaxHalf : d);
}

// Scale-search tables of one grid (ggml's iq2xs_init_impl / iq3xs_init_impl): each point is
// `dim` coordinates 2l+1 (l = the value's rank in the grid's value set). A candidate group is
// encoded as u = sum l_k << (bits*k); `map[u]` is its grid index when u is a grid point,
// otherwise -(offset+1) where neighbours[offset] = n is followed by the n grid indices of the
// nearest points: every point at the `nwant` smallest squared distances, ordered by
// (distance, index).
struct Lattice {
  int dim = 0;
  int bits = 0;
  std::vector<int8_t> points;        // grid_size * dim coordinates (2l+1)
  std::vector<int32_t> map;          // see above
  std::vector<uint16_t> neighbours;  // [n, idx_1 .. idx_n] per off-grid u

  const int8_t* point(int index) const { return points.data() + index * dim; }
  bool on_grid(int u) const { return map[u] >= 0; }
  const uint16_t* neighbours_of(int u) const { return neighbours.data() + (-map[u] - 1); }
};

// IQ2_XXS / IQ2_XS / IQ3_XXS store 7 sign bits per 8 weights, so the number of negative signs
// must be even. Sets xval = |xb|; when the count is odd, the element with the smallest
// weight * x^2 keeps its sign flipped (its xval becomes -|xb|). Returns the 7 stored bits.
inline uint8_t abs_with_even_signs(const float* xb, const float* weight, float* xval) {
  int nflip = 0;
  unsigned s = 0;
  for (int i = 0; i < 8; ++i) {
    if (xb[i] >= 0) {
      xval[i] = xb[i];
    } else {
      xval[i] = -xb[i];
      ++nflip;
      s |= 1u << i;
    }
  }
  if (nflip % 2) {
    int imin = 0;
    float min = weight[0] * xb[0] * xb[0];
    for (int i = 1; i < 8; ++i) {
      const float ax = weight[i] * xb[i] * xb[i];
      if (ax < min) {
        min = ax;
        imin = i;
      }
    }
    xval[imin] = -xval[imin];
    s ^= 1u << imin;
  }
  return static_cast<uint8_t>(s & 127);
}

// Best grid point among the neighbours of off-grid u for the values xval under `scale`
// (weighted squared error, first minimum wins); writes its coordinates' l to L[0..dim) and
// returns its index. The peer's iq2_find_best_neighbour / iq3_find_best_neighbour.
inline int best_neighbour(const Lattice& lat, int u, const float* xval, const float* weight, float scale, int8_t* L) {
  const uint16_t* nb = lat.neighbours_of(u);
  float best_d2 = FLT_MAX;
  int grid_index = nb[1];  // the peer asserts a winner; only NaN distances (non-finite input) lack one
  for (int j = 1; j <= nb[0]; ++j) {
    const int8_t* pg = lat.point(nb[j]);
    float d2 = 0;
    for (int i = 0; i < lat.dim; ++i) {
      const float diff = fmadd(scale, static_cast<float>(pg[i]), -xval[i]);
      d2 = fmadd(weight[i] * diff, diff, d2);
    }
    if (d2 < best_d2) {
      best_d2 = d2;
      grid_index = nb[j];
    }
  }
  const int8_t* pg = lat.point(grid_index);
  for (int i = 0; i < lat.dim; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
  return grid_index;
}

// Lazily built, immutable (function-local statics: thread-safe initialisation).
const Lattice& iq2xxs_lattice();
const Lattice& iq2xs_lattice();
const Lattice& iq2s_lattice();
const Lattice& iq1s_lattice();  // shared by IQ1_S and IQ1_M
const Lattice& iq3xxs_lattice();
const Lattice& iq3s_lattice();

// The IQ1 block searches (iquants_quantize_iq1.cpp), shared with IQ1_S_R4 / IQ1_M_R4.
// process_block_iq1_s: the peer's iq1s_process_1block for one 32-weight block: writes 4 grid
// indices, returns the block scale (>= 0) and sets *shift to +1 / -1 (sign of the 1/8 shift).
// process_block_iq1_m: the peer's iq1m_process_1block for one 16-weight block: writes 2 grid
// indices, returns the scale and sets *best_k (bit 1: first 8 shifted down, bit 0: second 8).
float process_block_iq1_s(const Lattice& lat, const float* xb, const float* weight, uint16_t* index, int* shift);
float process_block_iq1_m(const Lattice& lat, const float* xb, const float* weight, uint16_t* index, int* best_k_out);

// Quantizers (QuantizeFn contract, quant.h). needs_imatrix types assert a non-null imatrix.
void quantize_iq2_xxs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq2_xs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq2_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq3_xxs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq3_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq1_s(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq1_m(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq4_xs(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);

}  // namespace expertmesh::quant::iq
