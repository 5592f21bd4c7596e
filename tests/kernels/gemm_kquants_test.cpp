// Q4_K / Q6_K × Q8K matmul kernels (kernels/cpu/ref|x86/gemm_kquants_*.cpp) and the SIMD Q8K
// activation quantizers:
//   - the reference kernel computes the dot products of the dequantized weights and activations
//     (double-precision check within a float-accumulation bound);
//   - every SIMD kernel equals the reference bit for bit, on tails of rows / tokens / blocks,
//     padded strides, ldy > nr, and on adversarial blocks (random bytes, extreme quants,
//     -128 activations) that exercise the int16 bounds;
//   - a (row, token) value does not depend on the tile it is computed in;
//   - y entries outside the tile are left untouched;
//   - quantize_act_q8k_{avx2,avx512} equal quantize_act_ref(kQ8K) bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kquants_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kquants.h"
#include "kernels/quant/quant.h"
#include "model/types.h"

namespace expertmesh::testing {
namespace {

using cpu::ActType;
using cpu::BlockQ8K;
using cpu::GemmArgs;
using cpu::GemmFn;
using cpu::GemmTable;

constexpr GgmlType kTypes[] = {GgmlType::Q4_K, GgmlType::Q6_K};
constexpr uint32_t kSentinelBits = 0x7fc0beefu;  // a NaN no kernel produces

size_t block_bytes(GgmlType t) { return t == GgmlType::Q4_K ? 144 : 210; }

struct Isa {
  const char* name;
  GemmTable table;
};

// The tables to compare: the reference, then each SIMD variant this CPU runs (built here from
// the register functions, not through select.cpp).
std::vector<Isa> simd_tables() {
  std::vector<Isa> out;
  if (cpu::cpu_supports(cpu::Isa::kAvx2)) {
    Isa i{"avx2", {}};
    cpu::register_gemm_kquants_avx2(i.table);
    out.push_back(i);
  }
  if (cpu::cpu_supports(cpu::Isa::kAvx512)) {
    Isa i{"avx512", {}};
    cpu::register_gemm_kquants_avx512(i.table);
    out.push_back(i);
  }
  return out;
}

GemmFn ref_fn(GgmlType t) {
  GemmTable table{};
  cpu::register_gemm_kquants_ref(table);
  EXPECT_EQ(table[size_t(t)].act, ActType::kQ8K);
  return table[size_t(t)].gemm;
}

// nr weight rows of n columns, w_stride bytes apart (padding bytes are garbage).
struct Weights {
  int64_t nr = 0, n = 0;
  size_t stride = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> deq;  // dequantized, nr × n
};

Weights make_weights(GgmlType type, int64_t nr, int64_t n, size_t pad, std::mt19937& rng) {
  Weights w;
  w.nr = nr;
  w.n = n;
  const size_t row = size_t(n / 256) * block_bytes(type);
  w.stride = row + pad;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.2f, 3.0f);
  std::vector<float> x(size_t(nr * n));
  for (int64_t r = 0; r < nr; ++r) {
    const float s = scale(rng), off = 0.3f * normal(rng);
    for (int64_t c = 0; c < n; ++c) x[size_t(r * n + c)] = off + s * normal(rng);
  }
  std::vector<uint8_t> packed(row * size_t(nr));
  EXPECT_TRUE(quant::quantize_rows(type, x.data(), packed.data(), nr, n, nullptr, 1).ok());
  w.bytes.assign(w.stride * size_t(nr) + 64, 0xA5);
  for (int64_t r = 0; r < nr; ++r)
    std::memcpy(w.bytes.data() + size_t(r) * w.stride, packed.data() + size_t(r) * row, row);
  w.deq.resize(x.size());
  quant::quant_fns(type).to_float(packed.data(), w.deq.data(), nr, n);
  // Not degenerate: the rows vary.
  double s1 = 0, s2 = 0;
  for (float v : w.deq) s1 += v, s2 += double(v) * v;
  EXPECT_GT(s2 / double(w.deq.size()) - (s1 / double(w.deq.size())) * (s1 / double(w.deq.size())), 0.1);
  return w;
}

// Random-byte blocks (every Q4_K / Q6_K bit pattern is valid apart from non-finite fp16 scales):
// quants and 6/8-bit scales hit their extremes, which the int16 bounds of the SIMD code assume.
Weights random_byte_weights(GgmlType type, int64_t nr, int64_t n, bool extreme, std::mt19937& rng) {
  Weights w;
  w.nr = nr;
  w.n = n;
  const size_t bb = block_bytes(type);
  w.stride = size_t(n / 256) * bb;
  w.bytes.resize(w.stride * size_t(nr));
  for (auto& b : w.bytes) b = extreme ? uint8_t(rng() % 2 ? 0xFF : 0x00) : uint8_t(rng());
  std::uniform_real_distribution<float> u(0.001f, 0.01f);
  for (size_t blk = 0; blk < w.bytes.size() / bb; ++blk) {
    uint8_t* p = w.bytes.data() + blk * bb;
    const uint16_t d = quant::f32_to_fp16(u(rng)), dmin = quant::f32_to_fp16(u(rng));
    if (type == GgmlType::Q4_K) {
      std::memcpy(p, &d, 2);
      std::memcpy(p + 2, &dmin, 2);
    } else {
      if (extreme) {  // scales all -128 or all 127 in a block
        std::memset(p + 192, rng() % 2 ? 0x80 : 0x7F, 16);
      }
      std::memcpy(p + 208, &d, 2);
    }
  }
  w.deq.resize(size_t(nr * n));
  quant::quant_fns(type).to_float(w.bytes.data(), w.deq.data(), nr, n);
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
  return a;
}

// Activation blocks no quantizer produces but the format allows: qs anywhere in [-128, 127]
// (extreme: only -128 and 127), bsums consistent.
Acts random_acts(int64_t nt, int64_t n, bool extreme, std::mt19937& rng) {
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
        const int8_t q = extreme ? (rng() % 2 ? int8_t(-128) : int8_t(127)) : int8_t(rng());
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

// gemm_scratch_bytes(n), 64-byte aligned, followed by guard bytes no kernel may touch.
struct Scratch {
  static constexpr size_t kGuard = 256;
  explicit Scratch(int64_t n) : size(cpu::gemm_scratch_bytes(n)), bytes(size + 64 + kGuard) {
    std::memset(ptr() + size, 0xE7, kGuard);
  }
  uint8_t* ptr() {
    const auto p = reinterpret_cast<uintptr_t>(bytes.data());
    return bytes.data() + ((64 - p % 64) % 64);
  }
  bool guard_intact() {
    for (size_t i = 0; i < kGuard; ++i) {
      if (ptr()[size + i] != 0xE7) return false;
    }
    return true;
  }
  size_t size;
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
  return std::string(type == GgmlType::Q4_K ? "Q4_K" : "Q6_K") + " nr=" + std::to_string(nr) +
         " nt=" + std::to_string(nt) + " n=" + std::to_string(n);
}

// Σ_i |terms| of the canonical formula for (r, t): the scale of the float rounding error.
double error_scale(GgmlType type, const Weights& w, int64_t r, const Acts& a, int64_t t) {
  double mag = 0;
  for (int64_t b = 0; b < w.n / 256; ++b) {
    const BlockQ8K& ab = *act_block(a, t, b);
    const uint8_t* blk = w.bytes.data() + size_t(r) * w.stride + size_t(b) * block_bytes(type);
    if (type == GgmlType::Q4_K) {
      quant::kq::BlockQ4K x;
      std::memcpy(&x, blk, sizeof(x));
      const double d = quant::fp16_to_f32(x.d), dmin = quant::fp16_to_f32(x.dmin);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        quant::kq::scale_min_k4(j, x.scales, &sc, &m);
        for (int i = 0; i < 32; ++i)
          mag += (std::fabs(d) * sc * 15 + std::fabs(dmin) * m) * std::fabs(ab.d * ab.qs[32 * j + i]);
      }
    } else {
      quant::kq::BlockQ6K x;
      std::memcpy(&x, blk, sizeof(x));
      const double d = quant::fp16_to_f32(x.d);
      for (int i = 0; i < 256; ++i) mag += std::fabs(d * x.scales[i / 16]) * 32 * std::fabs(ab.d * ab.qs[i]);
    }
  }
  return mag;
}

// ---- the reference against double precision ---------------------------------------------------

TEST(GemmKquantsRef, MatchesDequantizedDot) {
  std::mt19937 rng(1234);
  for (GgmlType type : kTypes) {
    for (int64_t n : {256, 1024, 2304}) {
      const Weights w = make_weights(type, 9, n, 4, rng);
      const Acts a = make_acts(5, n, 8, rng);
      Out o = fresh_out(w.nr, a.nt, 3);
      Scratch scratch(n);
      run(ref_fn(type), w, 0, w.nr, a, 0, a.nt, o, scratch);
      expect_tile_written(o, w.nr, a.nt);
      for (int64_t t = 0; t < a.nt; ++t) {
        for (int64_t r = 0; r < w.nr; ++r) {
          double dot = 0;
          for (int64_t c = 0; c < n; ++c) {
            const BlockQ8K& ab = *act_block(a, t, c / 256);
            dot += double(w.deq[size_t(r * n + c)]) * (double(ab.d) * ab.qs[c % 256]);
          }
          const double got = o.y[size_t(t * o.ldy + r)];
          const double tol = 1e-6 * error_scale(type, w, r, a, t) + 1e-30;
          EXPECT_NEAR(got, dot, tol) << shape(type, w.nr, a.nt, n) << " r=" << r << " t=" << t;
        }
      }
    }
  }
}

// ---- SIMD == reference ----------------------------------------------------------------------------

TEST(GemmKquantsSimd, BitIdenticalToRef) {
  const auto isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(42);
  for (GgmlType type : kTypes) {
    for (int64_t n : {256, 768, 2048}) {
      const Weights w = make_weights(type, 64 + 3, n, 12, rng);
      const Acts a = make_acts(33 + 2, n, 20, rng);
      Scratch scratch(n);
      for (int64_t nr : {1, 3, 7, 8, 9, 16, 17, 64}) {
        for (int64_t nt : {1, 2, 3, 4, 5, 8, 9, 33}) {
          const int64_t r0 = nr == 64 ? 3 : 1, t0 = nt == 33 ? 2 : 1;  // tiles away from row/token 0
          Out ref = fresh_out(nr, nt, 5);
          run(ref_fn(type), w, r0, nr, a, t0, nt, ref, scratch);
          expect_tile_written(ref, nr, nt);
          for (const Isa& isa : isas) {
            Out o = fresh_out(nr, nt, 5);
            run(isa.table[size_t(type)].gemm, w, r0, nr, a, t0, nt, o, scratch);
            ASSERT_TRUE(scratch.guard_intact()) << isa.name << " wrote past gemm_scratch_bytes";
            expect_tile_written(o, nr, nt);
            expect_same(ref, o, nr, nt, std::string(isa.name) + " " + shape(type, nr, nt, n));
          }
        }
      }
    }
  }
}

TEST(GemmKquantsSimd, AdversarialBlocksBitIdentical) {
  const auto isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(7);
  for (GgmlType type : kTypes) {
    for (bool extreme : {false, true}) {
      const int64_t n = 512;
      const Weights w = random_byte_weights(type, 17, n, extreme, rng);
      for (bool act_extreme : {false, true}) {
        const Acts a = random_acts(9, n, act_extreme, rng);
        Scratch scratch(n);
        for (int64_t nt : {1, 3, 9}) {
          Out ref = fresh_out(w.nr, nt, 1);
          run(ref_fn(type), w, 0, w.nr, a, 0, nt, ref, scratch);
          for (const Isa& isa : isas) {
            Out o = fresh_out(w.nr, nt, 1);
            run(isa.table[size_t(type)].gemm, w, 0, w.nr, a, 0, nt, o, scratch);
            expect_tile_written(o, w.nr, nt);
            expect_same(ref, o, w.nr, nt,
                        std::string(isa.name) + " " + shape(type, w.nr, nt, n) +
                            (extreme ? " extreme-w" : " random-w") + (act_extreme ? " extreme-a" : " random-a"));
          }
        }
      }
    }
  }
}

// ---- batch invariance: a value does not depend on its tile ---------------------------------------

TEST(GemmKquantsSimd, BatchInvariant) {
  std::vector<Isa> isas = simd_tables();
  Isa ref{"ref", {}};
  cpu::register_gemm_kquants_ref(ref.table);
  isas.insert(isas.begin(), ref);
  std::mt19937 rng(99);
  for (GgmlType type : kTypes) {
    const int64_t n = 1024;
    const Weights w = make_weights(type, 17, n, 0, rng);
    const Acts a = make_acts(9, n, 0, rng);
    Scratch scratch(n);
    for (const Isa& isa : isas) {
      const GemmFn fn = isa.table[size_t(type)].gemm;
      Out big = fresh_out(w.nr, a.nt, 0);
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

// ---- Q8K activation quantizers ------------------------------------------------------------------

TEST(GemmKquantsActQuant, SimdBitIdenticalToRef) {
  using QuantFn = void (*)(const float*, void*, int64_t);
  std::vector<std::pair<const char*, QuantFn>> fns;
  if (cpu::cpu_supports(cpu::Isa::kAvx2)) fns.emplace_back("avx2", cpu::quantize_act_q8k_avx2);
  if (cpu::cpu_supports(cpu::Isa::kAvx512)) fns.emplace_back("avx512", cpu::quantize_act_q8k_avx512);
  if (fns.empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t nblocks = 40, n = 256 * nblocks;
  for (int rep = 0; rep < 20; ++rep) {
    std::vector<float> x(size_t(n) + 1);  // +1: an unaligned start
    float* xs = x.data() + 1;
    for (int64_t b = 0; b < nblocks; ++b) {
      float* p = xs + 256 * b;
      const float s = std::exp(6.0f * normal(rng));
      switch ((b + rep) % 8) {
        case 0:
          std::fill(p, p + 256, 0.0f);
          break;  // all zero
        case 1:
          std::fill(p, p + 256, -0.0f);
          p[17] = 1e-30f;
          break;  // one tiny value
        case 2:   // ties: id == 1
          for (int i = 0; i < 256; ++i) p[i] = float(int(rng() % 255) - 127) + 0.5f * float(rng() % 2);
          p[3] = 127.0f;
          p[200] = -127.0f;
          break;
        case 3:
          for (int i = 0; i < 256; ++i) p[i] = s * normal(rng);
          p[rng() % 256] = -100 * s;  // a dominant negative value
          break;
        case 4:
          for (int i = 0; i < 256; ++i) p[i] = float(rng() % 2 ? 1 : -1) * s;  // all at ±amax
          break;
        default:
          for (int i = 0; i < 256; ++i) p[i] = s * normal(rng);
          break;
      }
    }
    std::vector<uint8_t> want(cpu::act_row_bytes(ActType::kQ8K, n));
    cpu::quantize_act_ref(ActType::kQ8K, xs, want.data(), n);
    // Not degenerate: some nonzero blocks, some zero ones.
    int zero_blocks = 0;
    for (int64_t b = 0; b < nblocks; ++b) zero_blocks += reinterpret_cast<const BlockQ8K*>(want.data())[b].d == 0;
    ASSERT_GT(zero_blocks, 0);
    ASSERT_LT(zero_blocks, nblocks / 2);
    for (const auto& [name, fn] : fns) {
      std::vector<uint8_t> got(want.size() + 5, 0xCC);
      fn(xs, got.data() + 4, n);  // 4-byte aligned output
      for (int64_t b = 0; b < nblocks; ++b) {
        ASSERT_EQ(
            0, std::memcmp(want.data() + b * sizeof(BlockQ8K), got.data() + 4 + b * sizeof(BlockQ8K), sizeof(BlockQ8K)))
            << name << " rep " << rep << " block " << b;
      }
      EXPECT_EQ(got[4 + want.size()], 0xCC) << name << " wrote past the row";
    }
  }
}

}  // namespace
}  // namespace expertmesh::testing
