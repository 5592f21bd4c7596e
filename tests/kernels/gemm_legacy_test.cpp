// Legacy-family matmul kernels (Q8_0, Q4_0, IQ4_NL × Q8a32; gemm.h, gemm_legacy_common.h):
//  - the reference kernel against a double-precision dot product of the dequantized weights
//    (quant to_float) and the dequantized activations;
//  - every SIMD kernel this CPU runs equals the reference bit for bit, over shapes with tails,
//    padded strides and ldy > nr; entries of y past nr stay untouched;
//  - batch invariance: (r, t) computed in a tile equals the value computed alone (nr = nt = 1);
//  - the SIMD Q8a32 activation quantizers equal quantize_act_ref bit for bit on random rows,
//    zero blocks and extreme magnitudes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_legacy_common.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"
#include "model/types.h"

namespace expertmesh::testing {
namespace {

using cpu::ActType;
using cpu::BlockQ8a32;
using cpu::GemmArgs;
using cpu::GemmFn;
using cpu::GemmTable;

const GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::IQ4_NL};

struct IsaTable {
  const char* name;
  GemmTable table;
};

// The reference table plus every SIMD table this CPU supports, built from the register
// functions directly (not through select.cpp).
std::vector<IsaTable> simd_tables() {
  std::vector<IsaTable> out;
  if (cpu::cpu_supports(cpu::Isa::kAvx2)) {
    IsaTable t{"avx2", {}};
    cpu::register_gemm_legacy_avx2(t.table);
    out.push_back(t);
  }
  if (cpu::cpu_supports(cpu::Isa::kAvx512)) {
    IsaTable t{"avx512", {}};
    cpu::register_gemm_legacy_avx512(t.table);
    out.push_back(t);
  }
  return out;
}

GemmFn ref_fn(GgmlType type) {
  GemmTable t{};
  cpu::register_gemm_legacy_ref(t);
  EXPECT_EQ(t[size_t(type)].act, ActType::kQ8a32);
  return t[size_t(type)].gemm;
}

// 64-byte aligned scratch of gemm_scratch_bytes(n) bytes.
struct Scratch {
  explicit Scratch(int64_t n) : buf(cpu::gemm_scratch_bytes(n) + 64) {}
  uint8_t* get() {
    const auto p = reinterpret_cast<uintptr_t>(buf.data());
    return buf.data() + ((64 - p % 64) % 64);
  }
  std::vector<uint8_t> buf;
};

// nr quantized weight rows of n columns, w_stride bytes apart (padding filled with junk), and
// the same rows dequantized.
struct Weights {
  int64_t nr = 0, n = 0;
  size_t stride = 0;
  std::vector<uint8_t> q;
  std::vector<float> deq;
};

Weights make_weights(GgmlType type, int64_t nr, int64_t n, size_t pad, std::mt19937& rng) {
  Weights w;
  w.nr = nr;
  w.n = n;
  const size_t row_bytes = size_t(row_size(type, n));
  w.stride = row_bytes + pad;
  w.q.assign(size_t(nr) * w.stride + 8, 0xA5);
  w.deq.resize(size_t(nr * n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.01f, 4.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t r = 0; r < nr; ++r) {
    const float s = scale(rng);
    for (auto& v : x) v = s * nd(rng);
    EXPECT_TRUE(quant::quantize_rows(type, x.data(), w.q.data() + size_t(r) * w.stride, 1, n, nullptr, 1).ok());
    quant::quant_fns(type).to_float(w.q.data() + size_t(r) * w.stride, w.deq.data() + size_t(r * n), 1, n);
  }
  return w;
}

// nt activation rows quantized with the reference quantizer, a_stride bytes apart.
struct Acts {
  int64_t nt = 0, n = 0;
  size_t stride = 0;
  std::vector<uint8_t> q;
  std::vector<double> deq;
};

Acts make_acts(int64_t nt, int64_t n, size_t pad, std::mt19937& rng) {
  Acts a;
  a.nt = nt;
  a.n = n;
  a.stride = cpu::act_row_bytes(ActType::kQ8a32, n) + pad;
  a.q.assign(size_t(nt) * a.stride + 8, 0x5A);
  a.deq.resize(size_t(nt * n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.001f, 10.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t t = 0; t < nt; ++t) {
    const float s = scale(rng);
    for (auto& v : x) v = s * nd(rng);
    uint8_t* row = a.q.data() + size_t(t) * a.stride;
    cpu::quantize_act_ref(ActType::kQ8a32, x.data(), row, n);
    for (int64_t b = 0; b < n / 32; ++b) {
      BlockQ8a32 blk;
      std::memcpy(&blk, row + size_t(b) * sizeof(BlockQ8a32), sizeof(blk));
      for (int i = 0; i < 32; ++i) a.deq[size_t(t * n + b * 32 + i)] = double(blk.d) * blk.qs[i];
    }
  }
  return a;
}

// Runs fn on the (nr, nt) tile; y has nt rows of ldy floats prefilled with a sentinel.
std::vector<float> run(GemmFn fn, const Weights& w, const Acts& a, int64_t nr, int64_t nt, int64_t ldy,
                       Scratch& scratch) {
  std::vector<float> y(size_t(nt * ldy), std::numeric_limits<float>::quiet_NaN());
  GemmArgs g;
  g.n = w.n;
  g.w = w.q.data();
  g.w_stride = w.stride;
  g.nr = nr;
  g.a = a.q.data();
  g.a_stride = a.stride;
  g.nt = nt;
  g.y = y.data();
  g.ldy = ldy;
  g.scratch = scratch.get();
  fn(g);
  return y;
}

bool bits_equal(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

const int64_t kNr[] = {1, 3, 7, 8, 9, 16, 17, 64};
const int64_t kNt[] = {1, 2, 3, 5, 8, 9, 33};
const int64_t kN[] = {32, 160, 768, 800, 2080};  // GEMV sub-chunk tails of 1, 5, 8, 9 blocks

TEST(GemmLegacy, InputsAreNotDegenerate) {
  std::mt19937 rng(7);
  for (GgmlType type : kTypes) {
    const Weights w = make_weights(type, 4, 256, 0, rng);
    std::set<float> distinct(w.deq.begin(), w.deq.end());
    EXPECT_GT(distinct.size(), 100u) << type_name(type);
  }
  const Acts a = make_acts(4, 256, 0, rng);
  std::set<double> distinct(a.deq.begin(), a.deq.end());
  EXPECT_GT(distinct.size(), 200u);
}

TEST(GemmLegacy, RefMatchesDoubleDot) {
  std::mt19937 rng(1234);
  for (GgmlType type : kTypes) {
    const GemmFn ref = ref_fn(type);
    ASSERT_NE(ref, nullptr);
    for (int64_t n : kN) {
      SCOPED_TRACE(std::string(type_name(type)) + " n=" + std::to_string(n));
      const Weights w = make_weights(type, 17, n, 6, rng);
      const Acts a = make_acts(9, n, 12, rng);
      Scratch scratch(n);
      const int64_t ldy = 17 + 5;
      const std::vector<float> y = run(ref, w, a, 17, 9, ldy, scratch);
      const double nb = double(n / 32);
      for (int64_t t = 0; t < 9; ++t) {
        for (int64_t r = 0; r < 17; ++r) {
          double exact = 0, mag = 0;
          for (int64_t i = 0; i < n; ++i) {
            const double p = double(w.deq[size_t(r * n + i)]) * a.deq[size_t(t * n + i)];
            exact += p;
            mag += std::fabs(p);
          }
          // One rounding of each block scale product, one per fma: <= (nb + 1) ulps of Σ|w a|.
          const double tol = (nb + 2) * 6e-8 * mag + 1e-30;
          EXPECT_NEAR(y[size_t(t * ldy + r)], exact, tol) << "r=" << r << " t=" << t;
          EXPECT_GT(mag, 0.0);
        }
      }
    }
  }
}

TEST(GemmLegacy, SimdMatchesRefBitExactAndLeavesPaddingAlone) {
  const std::vector<IsaTable> isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no SIMD variant runs on this CPU";
  std::mt19937 rng(99);
  for (GgmlType type : kTypes) {
    const GemmFn ref = ref_fn(type);
    for (int64_t n : kN) {
      const Weights w = make_weights(type, 64, n, 10, rng);
      const Acts a = make_acts(33, n, 24, rng);
      Scratch scratch(n);
      for (int64_t nr : kNr) {
        for (int64_t nt : kNt) {
          const int64_t ldy = nr + 3;
          const std::vector<float> want = run(ref, w, a, nr, nt, ldy, scratch);
          for (const IsaTable& isa : isas) {
            SCOPED_TRACE(std::string(type_name(type)) + " " + isa.name + " n=" + std::to_string(n) +
                         " nr=" + std::to_string(nr) + " nt=" + std::to_string(nt));
            const GemmFn fn = isa.table[size_t(type)].gemm;
            ASSERT_NE(fn, nullptr);
            ASSERT_EQ(isa.table[size_t(type)].act, ActType::kQ8a32);
            const std::vector<float> got = run(fn, w, a, nr, nt, ldy, scratch);
            int bad = 0;
            for (int64_t t = 0; t < nt; ++t) {
              for (int64_t r = 0; r < ldy; ++r) {
                const size_t i = size_t(t * ldy + r);
                if (r < nr) {
                  if (!bits_equal(got[i], want[i]) && bad++ < 5) {
                    ADD_FAILURE() << "r=" << r << " t=" << t << " got " << got[i] << " want " << want[i];
                  }
                } else {
                  EXPECT_TRUE(std::isnan(got[i])) << "y past nr written at r=" << r << " t=" << t;
                }
              }
            }
            EXPECT_EQ(bad, 0);
          }
        }
      }
    }
  }
}

TEST(GemmLegacy, BatchInvariance) {
  std::vector<IsaTable> isas = simd_tables();
  IsaTable ref{"ref", {}};
  cpu::register_gemm_legacy_ref(ref.table);
  isas.insert(isas.begin(), ref);
  std::mt19937 rng(5);
  const int64_t n = 2080, nr = 64, nt = 33;
  for (GgmlType type : kTypes) {
    const Weights w = make_weights(type, nr, n, 2, rng);
    const Acts a = make_acts(nt, n, 4, rng);
    Scratch scratch(n);
    for (const IsaTable& isa : isas) {
      SCOPED_TRACE(std::string(type_name(type)) + " " + isa.name);
      const GemmFn fn = isa.table[size_t(type)].gemm;
      const std::vector<float> tile = run(fn, w, a, nr, nt, nr, scratch);
      int bad = 0;
      for (int64_t t = 0; t < nt; ++t) {
        for (int64_t r = 0; r < nr; ++r) {
          float y = 0;
          GemmArgs g;
          g.n = n;
          g.w = w.q.data() + size_t(r) * w.stride;
          g.w_stride = w.stride;
          g.nr = 1;
          g.a = a.q.data() + size_t(t) * a.stride;
          g.a_stride = a.stride;
          g.nt = 1;
          g.y = &y;
          g.ldy = 1;
          g.scratch = scratch.get();
          fn(g);
          if (!bits_equal(y, tile[size_t(t * nr + r)]) && bad++ < 5) {
            ADD_FAILURE() << "r=" << r << " t=" << t << " alone " << y << " in tile " << tile[size_t(t * nr + r)];
          }
        }
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

// Arbitrary block bits (not only what the quantizers emit): every weight byte value, Q8_0's -128,
// activations of ±127/-128 everywhere; finite fp16 / f32 scales and s = Σ qs as the format says.
// Three activation sets: -128 in whole rows, -128 in one byte of the last row only (kernels that
// must treat a -128 activation apart, e.g. the AVX2 sign trick, have to notice it there), and no
// -128 at all (those kernels' fast path on raw bits).
TEST(GemmLegacy, SimdMatchesRefOnRawBlocks) {
  const std::vector<IsaTable> isas = simd_tables();
  if (isas.empty()) GTEST_SKIP() << "no SIMD variant runs on this CPU";
  std::mt19937 rng(2024);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-3.0f, 3.0f);
  const int64_t n = 320, nr = 19, nt = 11;
  for (GgmlType type : kTypes) {
    Weights w;
    w.nr = nr;
    w.n = n;
    w.stride = size_t(row_size(type, n)) + 4;
    w.q.resize(size_t(nr) * w.stride + 8);
    for (auto& v : w.q) v = uint8_t(byte(rng));
    const size_t bs = size_t(row_size(type, 32));
    for (int64_t r = 0; r < nr; ++r) {
      for (int64_t b = 0; b < n / 32; ++b) {
        uint8_t* blk = w.q.data() + size_t(r) * w.stride + size_t(b) * bs;
        const uint16_t d = quant::f32_to_fp16(r == 0 ? 65504.0f : scale(rng));
        std::memcpy(blk, &d, 2);
        if (type == GgmlType::Q8_0 && r == 1) std::memset(blk + 2, 0x80, 32);  // all -128
      }
    }
    for (const char* acts : {"min rows", "one min", "no min"}) {
      const bool rows_min = acts[0] == 'm', one_min = acts[0] == 'o';
      const int lo = rows_min ? -128 : -127;
      Acts a;
      a.nt = nt;
      a.n = n;
      a.stride = cpu::act_row_bytes(ActType::kQ8a32, n) + 8;
      a.q.assign(size_t(nt) * a.stride + 8, 0);
      for (int64_t t = 0; t < nt; ++t) {
        for (int64_t b = 0; b < n / 32; ++b) {
          BlockQ8a32 blk;
          blk.d = t == 0 ? 1e20f : scale(rng);  // large, but no product overflows
          blk.s = 0;
          for (int i = 0; i < 32; ++i) {
            blk.qs[i] = int8_t(t == 1 ? lo : (t == 2 ? 127 : std::max(lo, byte(rng) - 128)));
            if (one_min && t == nt - 1 && b == n / 32 - 1 && i == 31) blk.qs[i] = -128;
            blk.s += blk.qs[i];
          }
          std::memcpy(a.q.data() + size_t(t) * a.stride + size_t(b) * sizeof(BlockQ8a32), &blk, sizeof(blk));
        }
      }
      Scratch scratch(n);
      const GemmFn ref = ref_fn(type);
      for (int64_t tile_nt : {int64_t(1), int64_t(2), int64_t(3), nt}) {
        const std::vector<float> want = run(ref, w, a, nr, tile_nt, nr, scratch);
        for (const IsaTable& isa : isas) {
          SCOPED_TRACE(std::string(type_name(type)) + " " + isa.name + " " + acts + " nt=" + std::to_string(tile_nt));
          const std::vector<float> got = run(isa.table[size_t(type)].gemm, w, a, nr, tile_nt, nr, scratch);
          EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
        }
      }
    }
  }
}

// ---- activation quantizer --------------------------------------------------------------------------

using QuantizeFn = void (*)(const float*, void*, int64_t);

struct Quantizer {
  const char* name;
  QuantizeFn fn;
};

std::vector<Quantizer> simd_quantizers() {
  std::vector<Quantizer> out;
  if (cpu::cpu_supports(cpu::Isa::kAvx2)) out.push_back({"avx2", cpu::quantize_act_q8a32_avx2});
  if (cpu::cpu_supports(cpu::Isa::kAvx512)) out.push_back({"avx512", cpu::quantize_act_q8a32_avx512});
  return out;
}

void expect_quantizers_match(const std::vector<float>& x, const std::string& what) {
  const int64_t n = int64_t(x.size());
  const size_t bytes = cpu::act_row_bytes(ActType::kQ8a32, n);
  std::vector<uint8_t> want(bytes + 16, 0xCC);
  cpu::quantize_act_ref(ActType::kQ8a32, x.data(), want.data(), n);
  for (const Quantizer& q : simd_quantizers()) {
    std::vector<uint8_t> got(bytes + 16, 0xCC);
    q.fn(x.data(), got.data(), n);
    for (size_t b = 0; b < bytes / sizeof(BlockQ8a32); ++b) {
      const size_t o = b * sizeof(BlockQ8a32);
      if (std::memcmp(got.data() + o, want.data() + o, sizeof(BlockQ8a32)) != 0) {
        BlockQ8a32 g, w;
        std::memcpy(&g, got.data() + o, sizeof(g));
        std::memcpy(&w, want.data() + o, sizeof(w));
        ADD_FAILURE() << what << " " << q.name << " n=" << n << " block " << b << ": d " << g.d << " vs " << w.d
                      << ", s " << g.s << " vs " << w.s;
        return;
      }
    }
    EXPECT_EQ(std::memcmp(got.data() + bytes, want.data() + bytes, 16), 0) << q.name << " wrote past the row";
  }
}

TEST(QuantizeActQ8a32, SimdMatchesRefOnRandomRows) {
  if (simd_quantizers().empty()) GTEST_SKIP() << "no SIMD variant runs on this CPU";
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exp10(-30, 30);
  for (int64_t n : {32, 64, 96, 224, 256, 288, 512, 2048, 2080, 4096 + 160}) {
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<float> x(static_cast<size_t>(n));
      for (int64_t b = 0; b < n / 32; ++b) {
        const float s = std::pow(10.0f, float(exp10(rng)) / 3.0f);
        for (int i = 0; i < 32; ++i) x[size_t(b * 32 + i)] = s * (rep % 2 ? uni(rng) : nd(rng));
      }
      std::set<float> distinct(x.begin(), x.end());
      ASSERT_GT(distinct.size(), size_t(n) / 2);
      expect_quantizers_match(x, "random rep " + std::to_string(rep));
    }
  }
}

TEST(QuantizeActQ8a32, SimdMatchesRefOnZerosAndExtremes) {
  if (simd_quantizers().empty()) GTEST_SKIP() << "no SIMD variant runs on this CPU";
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const float kMax = std::numeric_limits<float>::max();
  const float kMinNormal = std::numeric_limits<float>::min();
  const float kDenormMin = std::numeric_limits<float>::denorm_min();
  // Per block: a magnitude (0 = all zeros) and a pattern. kMinNormal gives a subnormal d whose
  // 1 / d overflows (id = inf: zeros become NaN products, quantized to 0 like the reference);
  // 5e-37 and 2e-37 give subnormal d with a finite id; the smallest give d = 0.
  const float mags[] = {0.0f,       kMax,   kMax / 2,         1e30f,      1e-30f, 5e-37f, 2e-37f,
                        kMinNormal, 1e-39f, kDenormMin * 127, kDenormMin, 127.0f, 1.0f,   65504.0f};
  std::vector<float> x;
  for (float m : mags) {
    for (int pattern = 0; pattern < 4; ++pattern) {
      for (int i = 0; i < 32; ++i) {
        float v = m * uni(rng);
        if (pattern == 1) v = (i % 3 == 0) ? m : -m * 0.5f;  // exact ±amax and halves
        if (pattern == 2) v = (i == 7) ? -m : 0.0f;          // one value, rest zeros
        if (pattern == 3) v = m * float(i - 16) / 16.0f;     // ramp incl. -m and exact ties
        x.push_back(v);
      }
    }
  }
  // Ties of x * id at .5 exactly: amax 127 gives d = 1, id = 1.
  for (int i = 0; i < 32; ++i) x.push_back(i == 0 ? 127.0f : float(i) - 16.5f);
  for (int i = 0; i < 32; ++i) x.push_back(-0.0f);
  while (x.size() % 256 != 96) x.insert(x.end(), 32, 0.0f);  // whole groups of 8 and a tail
  expect_quantizers_match(x, "extremes");
  // The same blocks rotated so that every block meets every position in a group of 8.
  for (int rot = 1; rot < 8; ++rot) {
    std::vector<float> y(x.begin() + 32 * rot, x.end());
    y.insert(y.end(), x.begin(), x.begin() + 32 * rot);
    expect_quantizers_match(y, "extremes rotated " + std::to_string(rot));
  }
}

}  // namespace
}  // namespace expertmesh::testing
