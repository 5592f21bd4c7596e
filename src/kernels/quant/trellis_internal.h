// The "integer trellis" family IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT (ik_llama.cpp iqk_quantize.cpp,
// QuantizerIQKT and {de,}quantize_row_iq*_kt): block layouts, the value generator, and the
// codebook search shared by the quantizers. Internal to kernels/quant.
//
// Every row starts with an f32 row scale d (4 bytes of row meta), then 256-weight blocks. Weights
// come in groups of 8 (IQ1/IQ2/IQ3_KT) or 4 (IQ4_KT), each group generated from an integer seed:
//   x = seed + offset;  repeat per weight: x *= 0xCBAC1FED (mod 2^32),
//   value = sum of the 4 bytes of (x & 0x3F3F3F3F) - 126        (range -126..126, ~Gaussian)
// IQ3_KT uses |value| and stores signs separately. offset is 4096 (IQ4_KT: 4096 + 32768 when its
// block's flag bit is set).
//
// Reference dequantization (what llama-quantize --allow-requantize ... F32 writes, and what the
// golden dequant hashes are) is d * block_scale * value. NOTE for the future matmul kernels: ik's
// CPU/CUDA kernels scale the row scale by 1.05 for IQ2_KT and by 1.01 for IQ3_KT (1.00 for IQ1_KT
// and IQ4_KT); the reference dequantizer here deliberately does not.
#pragma once

#include <cstdint>
#include <vector>

namespace expertmesh::quant::trellis {

inline constexpr int kQK = 256;         // weights per block
inline constexpr int kSubBlock = 32;    // weights per block scale
inline constexpr int kNumSub = kQK / kSubBlock;
inline constexpr uint32_t kMultiplier = 0xCBAC1FEDu;
inline constexpr uint32_t kOffset = 4096;
inline constexpr uint32_t kIq4AltOffset = 4096 + 32768;

struct BlockIq1Kt {
  uint8_t sh[8];    // block b: low nibble = index into kIq4kValues (scale), bit 4+g = seed bit 12 of group g
  uint8_t ql[32];   // group jj = 4b+g: seed bits 0-7
  uint8_t qh[16];   // group jj: bits 8-11 in qh[jj % 16], low nibble for jj < 16, high for jj >= 16
};
struct BlockIq2Kt {
  uint8_t scales[4];  // block b (0-3): low nibble, block b+4: high nibble; index into kIq4kValues
  uint8_t ql[64];     // 32 little-endian u16 seeds, group jj = 4b+g (weights 8jj..8jj+7)
};
struct BlockIq3Kt {
  uint8_t scales[4];  // as IQ2_KT but the nibble is the (unsigned) scale itself
  uint8_t ql[64];     // 32 u16 seeds of |value|
  uint8_t qh[32];     // sign of weight 32b + j: bit b of qh[j]
};
struct BlockIq4Kt {
  uint32_t qs[32];  // shb[8] then ql[64] bytes then qh[32] bytes (see trellis.cpp)
};
static_assert(sizeof(BlockIq1Kt) == 56 && sizeof(BlockIq2Kt) == 68);
static_assert(sizeof(BlockIq3Kt) == 100 && sizeof(BlockIq4Kt) == 128);

// The n trellis values of `seed` (before |.| for IQ3_KT).
inline void trellis_values(uint32_t seed, uint32_t offset, int n, int* out) {
  uint32_t x = seed + offset;
  for (int k = 0; k < n; ++k) {
    x *= kMultiplier;
    const uint32_t s = x & 0x3F3F3F3Fu;
    out[k] = int(s & 0xFF) + int((s >> 8) & 0xFF) + int((s >> 16) & 0xFF) + int(s >> 24) - 126;
  }
}

// One codebook: every seed's group of values, and a partition of the seeds into clusters so that
// the nearest-group search only visits the seeds near the point (ik's QuantizerIQKT). Built once
// per (type, offset) and immutable afterwards.
struct Codebook {
  int group = 8;                 // values per seed (8 or 4)
  int num_seeds = 0;
  bool is_abs = false;           // IQ3_KT: the values are |trellis|
  std::vector<float> values;     // num_seeds * group
  float mid[8] = {};             // per dimension: the split of the 256-cluster (group 8) binning
  int num_clusters = 0;          // 256 (group 8: one bit per dimension) or 625 (group 4: 5 bins per dimension)
  // Seeds of each cluster (a multiple of 8, or empty: then the whole codebook is searched), and
  // their values in lane-major order: for each run of 8 candidates, value k of candidate c is at
  // lanes[(run * group + k) * 8 + lane] (lane -> candidate: kCandOfLane* in trellis_codebook.cpp).
  std::vector<std::vector<int>> in_cluster;
  std::vector<std::vector<float>> lanes;
  std::vector<float> all_lanes;  // the same for the whole codebook

  // Best seed for each group of xb (kSubBlock weights): the group minimising
  // sum w * (q - x/d)^2 over the seeds of x's cluster, with ik's exact float ordering and ties.
  void find_best_match(float d, const float* xb, const float* w, int* best_idx) const;
  // (sum w q x / sum w q^2, (sum w q x)^2 / sum w q^2) for the chosen seeds, or (0, 0).
  void find_best_scale(const float* xb, const float* w, const int* idx, float* scale, float* score) const;
  const float* seed_values(int seed) const { return values.data() + static_cast<size_t>(seed) * group; }
};

const Codebook& codebook_iq1kt();
const Codebook& codebook_iq2kt();
const Codebook& codebook_iq3kt();
const Codebook& codebook_iq4kt(bool alt_offset);

// ik's per-weight importance for the trellis quantizers (QuantizerIQKT::set_weights) of one row.
// ik's build compiles the imatrix branch differently per quantizer (it is inlined into each):
// `vectorized` selects the variant without fused multiply-adds.
void set_weights(int nblock, const float* x, const float* imatrix, float* weights, bool vectorized);

// Row quantizers (trellis_quantize.cpp); same contract as QuantizeFn.
void quantize_iq1_kt(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq2_kt(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq3_kt(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq4_kt(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);

}  // namespace expertmesh::quant::trellis
