// IQ4_XS / IQ4_KS × Q8K matmul kernels (kernels/cpu/ref|x86/gemm_iquants_*.cpp):
//   - the reference kernel computes the dot products of the dequantized weights (quant to_float)
//     and the dequantized activations (double-precision check within a float-accumulation bound);
//   - every SIMD kernel equals the reference bit for bit, on tails of rows / tokens / blocks,
//     padded strides, ldy > nr, on both sides of the AVX512 GEMV / GEMM switch, and on adversarial
//     blocks (random bytes, extreme indices and scales, -128 / 127 activations);
//   - a (row, token) value does not depend on the tile it is computed in;
//   - y entries outside the tile are left untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_iquants_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/iqk_tables.h"
#include "kernels/quant/quant.h"
#include "model/types.h"

namespace expertmesh::testing {
namespace {

using cpu::ActType;
using cpu::BlockQ8K;
using cpu::GemmArgs;
using cpu::GemmFn;
using cpu::GemmTable;
namespace iquants = cpu::iquants;

constexpr GgmlType kTypes[] = {GgmlType::IQ4_XS, GgmlType::IQ4_KS};
constexpr uint32_t kSentinelBits = 0x7fc0beefu;  // a NaN no kernel produces

size_t row_meta(GgmlType t) { return t == GgmlType::IQ4_KS ? 4 : 0; }
size_t row_bytes(GgmlType t, int64_t n) { return row_meta(t) + size_t(n / 256) * iquants::kBlockBytes; }

struct Isa {
  const char* name;
  GemmTable table;
};

// The SIMD tables this CPU runs, built from the register functions (not through select.cpp).
std::vector<Isa> simd_tables() {
  std::vector<Isa> out;
  if (cpu::cpu_supports(cpu::Isa::kAvx2)) {
    Isa i{"avx2", {}};
    cpu::register_gemm_iquants_avx2(i.table);
    out.push_back(i);
  }
  if (cpu::cpu_supports(cpu::Isa::kAvx512)) {
    Isa i{"avx512", {}};
    cpu::register_gemm_iquants_avx512(i.table);
    out.push_back(i);
  }
  return out;
}

GemmFn ref_fn(GgmlType t) {
  GemmTable table{};
  cpu::register_gemm_iquants_ref(table);
  EXPECT_EQ(table[size_t(t)].act, ActType::kQ8K);
  return table[size_t(t)].gemm;
}

// nr weight rows of n columns, stride bytes apart (padding bytes are garbage).
struct Weights {
  GgmlType type = GgmlType::IQ4_XS;
  int64_t nr = 0, n = 0;
  size_t stride = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // dequantized, nr × n
};

void dequantize(Weights& w) {
  const size_t row = row_bytes(w.type, w.n);
  std::vector<uint8_t> packed(row * size_t(w.nr));
  for (int64_t r = 0; r < w.nr; ++r) std::memcpy(packed.data() + r * row, w.bytes.data() + r * w.stride, row);
  w.deq.resize(size_t(w.nr * w.n));
  quant::quant_fns(w.type).to_float(packed.data(), w.deq.data(), w.nr, w.n);
}

Weights make_weights(GgmlType type, int64_t nr, int64_t n, size_t pad, std::mt19937& rng) {
  Weights w;
  w.type = type;
  w.nr = nr;
  w.n = n;
  const size_t row = row_bytes(type, n);
  w.stride = row + pad;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.2f, 3.0f);
  std::vector<float> x(size_t(nr * n));
  for (int64_t r = 0; r < nr; ++r) {
    const float s = scale(rng), off = 0.3f * normal(rng);
    for (int64_t c = 0; c < n; ++c) {
      // Sub-blocks of very different magnitude, so the sub-block scales spread out.
      const float sub = (c / 32) % 3 == 0 ? 0.1f : 1.0f;
      x[size_t(r * n + c)] = sub * (off + s * normal(rng));
    }
  }
  std::vector<uint8_t> packed(row * size_t(nr));
  EXPECT_TRUE(quant::quantize_rows(type, x.data(), packed.data(), nr, n, nullptr, 1).ok());
  w.bytes.assign(w.stride * size_t(nr) + 64, 0xA5);
  for (int64_t r = 0; r < nr; ++r) std::memcpy(w.bytes.data() + r * w.stride, packed.data() + r * row, row);
  dequantize(w);
  // Not degenerate: the values vary, and for IQ4_KS both table halves occur.
  double s1 = 0, s2 = 0;
  for (float v : w.deq) s1 += v, s2 += double(v) * v;
  const double mean = s1 / double(w.deq.size());
  EXPECT_GT(s2 / double(w.deq.size()) - mean * mean, 0.05);
  if (type == GgmlType::IQ4_KS) {
    int shifted = 0, total = 0;
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t b = 0; b < n / 256; ++b) {
        const uint8_t* blk = w.bytes.data() + r * w.stride + 4 + b * iquants::kBlockBytes;
        for (int j = 0; j < 8; ++j) shifted += blk[j] & 1, ++total;
      }
    }
    if (total >= 64) {
      EXPECT_GT(shifted, 0);
      EXPECT_LT(shifted, total);
    }
  }
  return w;
}

// Random-byte blocks: every index / scale pattern is valid; the fp16 (IQ4_XS) or float (IQ4_KS)
// scale is set to a finite value. extreme: bytes only 0x00 or 0xFF (indices 0 / 15, scales at
// their minimum / maximum, all or no IQ4_KS shift flags).
Weights random_byte_weights(GgmlType type, int64_t nr, int64_t n, bool extreme, std::mt19937& rng) {
  Weights w;
  w.type = type;
  w.nr = nr;
  w.n = n;
  w.stride = row_bytes(type, n);
  w.bytes.resize(w.stride * size_t(nr));
  for (auto& b : w.bytes) b = extreme ? uint8_t(rng() % 2 ? 0xFF : 0x00) : uint8_t(rng());
  std::uniform_real_distribution<float> u(0.001f, 0.01f);
  for (int64_t r = 0; r < nr; ++r) {
    uint8_t* row = w.bytes.data() + r * w.stride;
    if (type == GgmlType::IQ4_KS) {
      const float d = rng() % 2 ? u(rng) : -u(rng);
      std::memcpy(row, &d, 4);
    } else {
      for (int64_t b = 0; b < n / 256; ++b) {
        const uint16_t d = quant::f32_to_fp16(rng() % 2 ? u(rng) : -u(rng));
        std::memcpy(row + b * iquants::kBlockBytes, &d, 2);
      }
    }
  }
  dequantize(w);
  return w;
}

struct Acts {
  int64_t nt = 0, n = 0;
  size_t stride = 0;
  std::vector<uint8_t> bytes;
};

const BlockQ8K* act_block(const Acts& a, int64_t t, int64_t b) {
  return reinterpret_cast<const BlockQ8K*>(a.bytes.data() + size_t(t) * a.stride) + b;
}

Acts make_acts(int64_t nt, int64_t n, size_t pad, std::mt19937& rng) {
  Acts a;
  a.nt = nt;
  a.n = n;
  a.stride = cpu::act_row_bytes(ActType::kQ8K, n) + pad;
  a.bytes.assign(a.stride * size_t(nt) + 64, 0x5A);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t t = 0; t < nt; ++t) {
    const float s = std::exp(2.0f * normal(rng));
    for (auto& v : x) v = s * normal(rng);
    if (t % 5 == 4) std::fill(x.begin(), x.begin() + 256, 0.0f);  // an all-zero block
    cpu::quantize_act_ref(ActType::kQ8K, x.data(), a.bytes.data() + size_t(t) * a.stride, n);
  }
  // Not degenerate: the quants spread over most of the int8 range.
  int lo = 0, hi = 0;
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t b = 0; b < n / 256; ++b) {
      for (int8_t q : act_block(a, t, b)->qs) lo = std::min<int>(lo, q), hi = std::max<int>(hi, q);
    }
  }
  EXPECT_LE(lo, -100);
  EXPECT_GE(hi, 100);
  return a;
}

// Activation blocks no quantizer produces but the format allows, bsums consistent. qs:
//   kAny: anywhere in [-128, 127] (nearly every call holds a -128);
//   kExtreme: only -128 and 127;
//   kNoMin: in [-127, 127] (the AVX2 sign-trick GEMM's fast path on raw bits);
//   kOneMin: as kNoMin, but the last byte of the last row is -128 (kernels that must treat a -128
//   activation apart have to notice it there).
enum class ActBits { kAny, kExtreme, kNoMin, kOneMin };

Acts random_acts(int64_t nt, int64_t n, ActBits bits, std::mt19937& rng) {
  const bool extreme = bits == ActBits::kExtreme;
  Acts a;
  a.nt = nt;
  a.n = n;
  a.stride = cpu::act_row_bytes(ActType::kQ8K, n);
  a.bytes.resize(a.stride * size_t(nt));
  auto* blocks = reinterpret_cast<BlockQ8K*>(a.bytes.data());
  for (int64_t i = 0; i < nt * n / 256; ++i) {
    BlockQ8K& b = blocks[i];
    b.d = 0.01f + 0.001f * float(rng() % 100);
    int total = 0;
    for (int gi = 0; gi < 16; ++gi) {
      int s = 0;
      for (int l = 0; l < 16; ++l) {
        int8_t q = extreme ? (rng() % 2 ? int8_t(-128) : int8_t(127)) : int8_t(rng());
        if ((bits == ActBits::kNoMin || bits == ActBits::kOneMin) && q == -128) q = -127;
        if (bits == ActBits::kOneMin && i == nt * n / 256 - 1 && gi == 15 && l == 15) q = -128;
        b.qs[16 * gi + l] = q;
        s += q;
      }
      b.bsums[gi] = int16_t(s);
      total += s;
    }
    b.sum = b.d * float(total);
  }
  return a;
}

struct Out {
  std::vector<float> y;
  int64_t ldy = 0;
};

Out fresh_out(int64_t nr, int64_t nt, int64_t extra) {
  Out o;
  o.ldy = nr + extra;
  o.y.resize(size_t(o.ldy * nt));
  for (auto& v : o.y) std::memcpy(&v, &kSentinelBits, 4);
  return o;
}

struct Scratch {
  explicit Scratch(int64_t n) : bytes(cpu::gemm_scratch_bytes(n) + 64) {}
  uint8_t* ptr() {
    const auto p = reinterpret_cast<uintptr_t>(bytes.data());
    return bytes.data() + ((64 - p % 64) % 64);
  }
  std::vector<uint8_t> bytes;
};

// Runs fn on rows r0..r0+nr-1 × tokens t0..t0+nt-1 into out.
void run(GemmFn fn, const Weights& w, int64_t r0, int64_t nr, const Acts& a, int64_t t0, int64_t nt, Out& out,
         Scratch& scratch) {
  GemmArgs g;
  g.n = w.n;
  g.w = w.bytes.data() + size_t(r0) * w.stride;
  g.w_stride = w.stride;
  g.nr = nr;
  g.a = a.bytes.data() + size_t(t0) * a.stride;
  g.a_stride = a.stride;
  g.nt = nt;
  g.y = out.y.data();
  g.ldy = out.ldy;
  g.scratch = scratch.ptr();
  fn(g);
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// y outside [0, nr) of each ldy row keeps the sentinel; inside it is finite.
void expect_tile_written(const Out& o, int64_t nr, int64_t nt) {
  float sentinel;
  std::memcpy(&sentinel, &kSentinelBits, 4);
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t r = 0; r < o.ldy; ++r) {
      const float v = o.y[size_t(t * o.ldy + r)];
      if (r < nr) {
        ASSERT_TRUE(std::isfinite(v)) << "t=" << t << " r=" << r;
      } else {
        ASSERT_TRUE(same_bits(v, sentinel)) << "y written outside the tile: t=" << t << " r=" << r;
      }
    }
  }
}

// y[t][r] of two runs, bit for bit.
void expect_same(const Out& a, const Out& b, int64_t nr, int64_t nt, const std::string& what) {
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t r = 0; r < nr; ++r) {
      const float x = a.y[size_t(t * a.ldy + r)], y = b.y[size_t(t * b.ldy + r)];
      ASSERT_TRUE(same_bits(x, y)) << what << ": t=" << t << " r=" << r << " " << x << " vs " << y;
    }
  }
}

std::string shape(GgmlType type, int64_t nr, int64_t nt, int64_t n) {
  return std::string(type_name(type)) + " nr=" + std::to_string(nr) + " nt=" + std::to_string(nt) +
         " n=" + std::to_string(n);
}

// ---- the reference against double precision ---------------------------------------------------

TEST(GemmIquantsRef, MatchesDequantizedDot) {
  std::mt19937 rng(1234);
  for (GgmlType type : kTypes) {
    for (int64_t n : {256, 1024, 2304, 256 * 40}) {
      for (int adversarial = 0; adversarial < 2; ++adversarial) {
        const Weights w = adversarial ? random_byte_weights(type, 7, n, false, rng) : make_weights(type, 9, n, 4, rng);
        const Acts a = adversarial ? random_acts(4, n, ActBits::kAny, rng) : make_acts(5, n, 8, rng);
        Out o = fresh_out(w.nr, a.nt, 3);
        Scratch scratch(n);
        run(ref_fn(type), w, 0, w.nr, a, 0, a.nt, o, scratch);
        expect_tile_written(o, w.nr, a.nt);
        for (int64_t t = 0; t < a.nt; ++t) {
          for (int64_t r = 0; r < w.nr; ++r) {
            // Σ |w·a| bounds the float rounding of both the dequantized weights and the kernel.
            double dot = 0, mag = 0;
            for (int64_t c = 0; c < n; ++c) {
              const BlockQ8K& ab = *act_block(a, t, c / 256);
              const double p = double(w.deq[size_t(r * n + c)]) * (double(ab.d) * ab.qs[c % 256]);
              dot += p;
              mag += std::fabs(p);
            }
            const double got = o.y[size_t(t * o.ldy + r)];
            EXPECT_NEAR(got, dot, 2e-6 * mag) << shape(type, w.nr, a.nt, n) << " r=" << r << " t=" << t;
          }
        }
      }
    }
  }
}

// The reference against a hand-computed block: one IQ4_KS super-block with a shifted and an
// unshifted sub-block, one IQ4_XS super-block; everything else zero.
TEST(GemmIquantsRef, HandComputedBlock) {
  for (GgmlType type : kTypes) {
    Weights w;
    w.type = type;
    w.nr = 1;
    w.n = 256;
    w.stride = row_bytes(type, 256);
    w.bytes.assign(w.stride, 0);
    uint8_t* blk = w.bytes.data() + row_meta(type);
    int ls0, ls1;
    const int8_t* values1;
    if (type == GgmlType::IQ4_KS) {
      const float d_row = 0.5f;
      std::memcpy(w.bytes.data(), &d_row, 4);
      blk[0] = 2 * 70;                           // ls = 140 - 127 = 13, not shifted
      blk[1] = 2 * 50 + 1;                       // ls = -27, shifted
      for (int j = 2; j < 8; ++j) blk[j] = 127;  // ls = 126 - 127 = -1, shifted
      ls0 = 13;
      ls1 = -27;
      values1 = quant::kIq4kValues + 16;
    } else {
      const uint16_t d = quant::f32_to_fp16(0.25f);
      std::memcpy(blk, &d, 2);
      // ls+32 of sub-block 0 = 45 (low 13, high 2), sub-block 1 = 7; the rest 32 (ls = 0).
      const uint16_t scales_h = 0xAAA2;  // high bits: 2, 0, then 2 for sub-blocks 2..7
      std::memcpy(blk + 2, &scales_h, 2);
      blk[4] = uint8_t(13 | (7 << 4));
      for (int j = 5; j < 8; ++j) blk[j] = 0;
      ls0 = 45 - 32;
      ls1 = 7 - 32;
      values1 = quant::kIq4kValues;
    }
    for (int j = 0; j < 16; ++j) {
      blk[8 + j] = uint8_t(j | ((15 - j) << 4));             // sub-block 0
      blk[8 + 16 + j] = uint8_t(((j * 7) % 16) | (3 << 4));  // sub-block 1
    }
    Acts a;
    a.nt = 1;
    a.n = 256;
    a.stride = sizeof(BlockQ8K);
    a.bytes.assign(a.stride, 0);
    auto* ab = reinterpret_cast<BlockQ8K*>(a.bytes.data());
    ab->d = 0.125f;
    for (int i = 0; i < 64; ++i) ab->qs[i] = int8_t(i % 2 ? -(i + 1) : i);
    for (int gi = 0; gi < 16; ++gi) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += ab->qs[16 * gi + l];
      ab->bsums[gi] = int16_t(s);
    }
    int64_t want_int = 0;
    for (int j = 0; j < 16; ++j) {
      const int64_t d0 = quant::kIq4kValues[j] * ab->qs[j] + quant::kIq4kValues[15 - j] * ab->qs[16 + j];
      const int64_t d1 = values1[(j * 7) % 16] * ab->qs[32 + j] + values1[3] * ab->qs[48 + j];
      want_int += ls0 * d0 + ls1 * d1;
    }
    const float scale = type == GgmlType::IQ4_KS ? 0.125f : 0.25f * 0.125f;
    float want = std::fma(scale, float(want_int), 0.0f);
    if (type == GgmlType::IQ4_KS) want *= 0.5f;
    Out o = fresh_out(1, 1, 0);
    Scratch scratch(256);
    run(ref_fn(type), w, 0, 1, a, 0, 1, o, scratch);
    EXPECT_TRUE(same_bits(o.y[0], want)) << type_name(type) << ": " << o.y[0] << " vs " << want;
    for (const Isa& isa : simd_tables()) {
      Out s = fresh_out(1, 1, 0);
      run(isa.table[size_t(type)].gemm, w, 0, 1, a, 0, 1, s, scratch);
      EXPECT_TRUE(same_bits(s.y[0], want)) << isa.name << " " << type_name(type);
    }
  }
}

// ---- SIMD == reference ----------------------------------------------------------------------------

TEST(GemmIquantsSimd, BitIdenticalToRef) {
  const auto isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(42);
  for (GgmlType type : kTypes) {
    for (int64_t n : {256, 768, 2048, 256 * 40}) {
      const Weights w = make_weights(type, 64 + 3, n, 12, rng);
      const Acts a = make_acts(33 + 2, n, 20, rng);
      Scratch scratch(n);
      for (int64_t nr : {1, 3, 7, 8, 9, 16, 17, 64}) {
        for (int64_t nt : {1, 2, 3, 4, 5, 6, 7, 8, 9, 33}) {
          const int64_t r0 = nr == 64 ? 3 : 1, t0 = nt == 33 ? 2 : 1;  // tiles away from row/token 0
          Out ref = fresh_out(nr, nt, 5);
          run(ref_fn(type), w, r0, nr, a, t0, nt, ref, scratch);
          expect_tile_written(ref, nr, nt);
          for (const Isa& isa : isas) {
            Out o = fresh_out(nr, nt, 5);
            run(isa.table[size_t(type)].gemm, w, r0, nr, a, t0, nt, o, scratch);
            expect_tile_written(o, nr, nt);
            expect_same(ref, o, nr, nt, std::string(isa.name) + " " + shape(type, nr, nt, n));
          }
        }
      }
    }
  }
}

TEST(GemmIquantsSimd, AdversarialBlocksBitIdentical) {
  const auto isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(7);
  for (GgmlType type : kTypes) {
    for (bool extreme : {false, true}) {
      const int64_t n = 512;
      const Weights w = random_byte_weights(type, 17, n, extreme, rng);
      for (ActBits bits : {ActBits::kAny, ActBits::kExtreme, ActBits::kNoMin, ActBits::kOneMin}) {
        const Acts a = random_acts(9, n, bits, rng);
        Scratch scratch(n);
        for (int64_t nt : {1, 3, 9}) {
          if (bits == ActBits::kOneMin && nt != 9) continue;  // the -128 sits in row 8
          Out ref = fresh_out(w.nr, nt, 1);
          run(ref_fn(type), w, 0, w.nr, a, 0, nt, ref, scratch);
          for (const Isa& isa : isas) {
            Out o = fresh_out(w.nr, nt, 1);
            run(isa.table[size_t(type)].gemm, w, 0, w.nr, a, 0, nt, o, scratch);
            expect_tile_written(o, w.nr, nt);
            expect_same(ref, o, w.nr, nt,
                        std::string(isa.name) + " " + shape(type, w.nr, nt, n) +
                            (extreme ? " extreme-w" : " random-w") + " acts " + std::to_string(int(bits)));
          }
        }
      }
    }
  }
}

// ---- batch invariance: a value does not depend on its tile ---------------------------------------

TEST(GemmIquantsSimd, BatchInvariant) {
  std::vector<Isa> isas = simd_tables();
  Isa ref{"ref", {}};
  cpu::register_gemm_iquants_ref(ref.table);
  isas.insert(isas.begin(), ref);
  std::mt19937 rng(99);
  for (GgmlType type : kTypes) {
    const int64_t n = 1024;
    const Weights w = make_weights(type, 17, n, 0, rng);
    const Acts a = make_acts(9, n, 0, rng);
    Scratch scratch(n);
    for (const Isa& isa : isas) {
      const GemmFn fn = isa.table[size_t(type)].gemm;
      Out big = fresh_out(w.nr, a.nt, 0);  // the GEMM path
      run(fn, w, 0, w.nr, a, 0, a.nt, big, scratch);
      Out few = fresh_out(w.nr, 3, 0);  // the GEMV path
      run(fn, w, 0, w.nr, a, 4, 3, few, scratch);
      for (int64_t t = 0; t < a.nt; ++t) {
        for (int64_t r = 0; r < w.nr; ++r) {
          Out one = fresh_out(1, 1, 0);
          run(fn, w, r, 1, a, t, 1, one, scratch);
          const std::string what = std::string(isa.name) + " " + shape(type, 1, 1, n) + " r=" + std::to_string(r) +
                                   " t=" + std::to_string(t);
          ASSERT_TRUE(same_bits(one.y[0], big.y[size_t(t * big.ldy + r)])) << what;
          if (t >= 4 && t < 7) {
            ASSERT_TRUE(same_bits(one.y[0], few.y[size_t((t - 4) * few.ldy + r)])) << what;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace expertmesh::testing
