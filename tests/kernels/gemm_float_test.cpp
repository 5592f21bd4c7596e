// Float matmul kernels (gemm.h, family "float": F32 × F32, F16 × F16, BF16 × F32, and
// BF16 × BF16 for --bf16-activations): the reference against a double-precision dot product of
// the dequantized operands; every SIMD kernel against the reference within a relative
// tolerance of Σ|w·a|; each kernel's value for (r, t) bit-identical whatever the tile's nr, nt
// and the position of (r, t) in it; y entries outside the tile untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/gemm.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"

namespace expertmesh {
namespace {

using cpu::ActType;
using cpu::GemmArgs;
using cpu::GemmFn;

// The CPU checks of select.cpp (cpu_supports / cpu_supports_bf16), made here directly so the
// test does not depend on the kernel selection.
bool have_avx2() { return cpu::cpu_supports(cpu::Isa::kAvx2); }
bool have_avx512() { return cpu::cpu_supports(cpu::Isa::kAvx512); }
bool have_avx512bf16() { return cpu::cpu_supports_bf16(); }

// One weight × activation combination of the family.
struct Combo {
  const char* name;
  GgmlType wtype;
  ActType act;
  bool bf16act;  // the gemm_bf16_bf16act_* entry rather than the table's
};
constexpr Combo kCombos[] = {
    {"F32xF32", GgmlType::F32, ActType::kF32, false},
    {"F16xF16", GgmlType::F16, ActType::kF16, false},
    {"BF16xF32", GgmlType::BF16, ActType::kF32, false},
    {"BF16xBF16", GgmlType::BF16, ActType::kBF16, true},
};

struct Kernel {
  std::string name;
  GemmFn fn;
};

cpu::GemmTable table_of(void (*reg)(cpu::GemmTable&)) {
  cpu::GemmTable t{};
  reg(t);
  return t;
}

GemmFn ref_kernel(const Combo& c) {
  if (c.bf16act) return cpu::gemm_bf16_bf16act_ref();
  const cpu::TypeGemm e = table_of(cpu::register_gemm_float_ref)[size_t(c.wtype)];
  EXPECT_EQ(int(e.act), int(c.act)) << c.name;
  return e.gemm;
}

// Every SIMD kernel of the combination that this CPU runs.
std::vector<Kernel> simd_kernels(const Combo& c) {
  std::vector<Kernel> v;
  auto from_table = [&](const char* isa, void (*reg)(cpu::GemmTable&)) {
    const cpu::TypeGemm e = table_of(reg)[size_t(c.wtype)];
    EXPECT_EQ(int(e.act), int(c.act)) << isa << " " << c.name;
    if (e.gemm) v.push_back({isa, e.gemm});
  };
  if (c.bf16act) {
    if (have_avx2()) v.push_back({"avx2", cpu::gemm_bf16_bf16act_avx2()});
    if (have_avx512bf16()) v.push_back({"avx512bf16", cpu::gemm_bf16_bf16act_avx512bf16()});
  } else {
    if (have_avx2()) from_table("avx2", cpu::register_gemm_float_avx2);
    if (have_avx512()) from_table("avx512", cpu::register_gemm_float_avx512);
  }
  return v;
}

float act_value(ActType a, const uint8_t* row, int64_t c) {
  if (a == ActType::kF32) {
    float f;
    std::memcpy(&f, row + 4 * c, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, row + 2 * c, 2);
  return a == ActType::kF16 ? quant::fp16_to_f32(h) : quant::bf16_to_f32(h);
}

constexpr int64_t kRows = 72;  // a 64-row tile fits at an offset
constexpr int64_t kToks = 40;

// Weight rows and activation rows of one combination, in padded (strided) buffers, with the
// exact values their bits stand for.
struct Data {
  int64_t n = 0;
  size_t w_stride = 0, a_stride = 0;
  std::vector<uint8_t> w, a;
  std::vector<float> wf, af;  // dequantized: kRows × n, kToks × n

  Data(const Combo& c, int64_t n_cols, uint32_t seed) : n(n_cols) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ex(-3.0f, 3.0f);
    std::vector<float> src(size_t(kRows * n));
    for (int64_t r = 0; r < kRows; ++r) {
      const float scale = std::exp2(ex(rng));  // rows of different magnitudes
      for (int64_t i = 0; i < n; ++i) src[size_t(r * n + i)] = scale * nd(rng);
    }
    const size_t row_bytes = size_t(n) * (c.wtype == GgmlType::F32 ? 4 : 2);
    std::vector<uint8_t> packed(row_bytes * kRows);
    const Status s = quant::quantize_rows(c.wtype, src.data(), packed.data(), kRows, n, nullptr, 1);
    EXPECT_TRUE(s.ok()) << s.message();
    wf.resize(src.size());
    quant::quant_fns(c.wtype).to_float(packed.data(), wf.data(), kRows, n);
    w_stride = row_bytes + 20;  // padded rows
    // The last row ends the buffer, so a sanitizer sees any read past a row's end.
    w.assign(w_stride * (kRows - 1) + row_bytes, 0xA5);
    for (int64_t r = 0; r < kRows; ++r)
      std::memcpy(&w[size_t(r) * w_stride], &packed[size_t(r) * row_bytes], row_bytes);

    const size_t act_bytes = cpu::act_row_bytes(c.act, n);
    a_stride = act_bytes + 36;
    a.assign(a_stride * (kToks - 1) + act_bytes, 0x5A);
    af.resize(size_t(kToks * n));
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t t = 0; t < kToks; ++t) {
      const float scale = std::exp2(ex(rng));
      for (auto& v : x) v = scale * nd(rng);
      cpu::quantize_act_ref(c.act, x.data(), &a[size_t(t) * a_stride], n);
      for (int64_t i = 0; i < n; ++i) af[size_t(t * n + i)] = act_value(c.act, &a[size_t(t) * a_stride], i);
    }
  }

  // Neither operand is degenerate: many distinct values of both signs.
  void expect_not_degenerate() const {
    for (const std::vector<float>* v : {&wf, &af}) {
      const std::set<float> distinct(v->begin(), v->end());
      EXPECT_GT(distinct.size(), std::min<size_t>(v->size() / 4, 1000));
      EXPECT_TRUE(std::any_of(v->begin(), v->end(), [](float f) { return f > 0; }));
      EXPECT_TRUE(std::any_of(v->begin(), v->end(), [](float f) { return f < 0; }));
    }
  }

  double dot(int64_t r, int64_t t, double* abs_sum) const {
    double s = 0, sa = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double p = double(wf[size_t(r * n + i)]) * double(af[size_t(t * n + i)]);
      s += p;
      sa += std::fabs(p);
    }
    *abs_sum = sa;
    return s;
  }
};

constexpr uint32_t kSentinel = 0x7fc0dead;  // a NaN no kernel produces

struct TileOut {
  int64_t ldy = 0;
  std::vector<float> y;  // (nt + 1) rows of ldy
};

// Runs fn on rows [r0, r0+nr) × tokens [t0, t0+nt) with ldy = nr + 3; every y entry outside
// the tile is checked to still hold the sentinel.
TileOut run_tile(GemmFn fn, const Data& d, int64_t r0, int64_t nr, int64_t t0, int64_t nt, uint8_t* scratch) {
  TileOut o;
  o.ldy = nr + 3;
  o.y.resize(size_t((nt + 1) * o.ldy));
  for (auto& v : o.y) std::memcpy(&v, &kSentinel, 4);
  GemmArgs g;
  g.n = d.n;
  g.w = d.w.data() + size_t(r0) * d.w_stride;
  g.w_stride = d.w_stride;
  g.nr = nr;
  g.a = d.a.data() + size_t(t0) * d.a_stride;
  g.a_stride = d.a_stride;
  g.nt = nt;
  g.y = o.y.data();
  g.ldy = o.ldy;
  g.scratch = scratch;
  fn(g);
  int64_t touched = 0;
  for (int64_t t = 0; t <= nt; ++t)
    for (int64_t r = 0; r < o.ldy; ++r) {
      uint32_t bits;
      std::memcpy(&bits, &o.y[size_t(t * o.ldy + r)], 4);
      if (t < nt && r < nr)
        continue;
      else if (bits != kSentinel)
        ++touched;
    }
  EXPECT_EQ(touched, 0) << "y entries outside the " << nr << "x" << nt << " tile were written";
  return o;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

constexpr int64_t kNs[] = {1, 5, 8, 16, 31, 32, 33, 100, 2048, 2053};
constexpr int64_t kNrs[] = {1, 3, 7, 8, 9, 16, 17, 64};
constexpr int64_t kNts[] = {1, 2, 3, 5, 8, 9, 33};

class GemmFloat : public ::testing::TestWithParam<int> {
 protected:
  const Combo& combo() const { return kCombos[GetParam()]; }
  uint8_t* scratch(int64_t n) {
    scratch_.assign(cpu::gemm_scratch_bytes(n) + 64, 0);
    return reinterpret_cast<uint8_t*>((uintptr_t(scratch_.data()) + 63) & ~uintptr_t(63));
  }

 private:
  std::vector<uint8_t> scratch_;
};

// The reference computes the dot product of exactly the dequantized values: its only error is
// the final rounding to float (and a double-precision summation error far below it).
TEST_P(GemmFloat, RefMatchesDoubleDot) {
  const Combo& c = combo();
  const GemmFn ref = ref_kernel(c);
  ASSERT_NE(ref, nullptr);
  for (int64_t n : kNs) {
    SCOPED_TRACE(::testing::Message() << c.name << " n=" << n);
    const Data d(c, n, uint32_t(1000 + n));
    d.expect_not_degenerate();
    const TileOut o = run_tile(ref, d, 0, 64, 0, 33, scratch(n));
    for (int64_t t = 0; t < 33; ++t)
      for (int64_t r = 0; r < 64; ++r) {
        double abs_sum;
        const double e = d.dot(r, t, &abs_sum);
        const double y = o.y[size_t(t * o.ldy + r)];
        ASSERT_LE(std::fabs(y - e), 6.0e-8 * std::fabs(e) + 1e-12 * abs_sum) << "r=" << r << " t=" << t;
      }
  }
}

// Every SIMD kernel agrees with the reference within 1e-5 of Σ|w·a| (float accumulation),
// for every tile shape, and leaves y outside the tile alone.
TEST_P(GemmFloat, SimdMatchesRef) {
  const Combo& c = combo();
  const std::vector<Kernel> ks = simd_kernels(c);
  if (ks.empty()) GTEST_SKIP() << "no SIMD kernel for " << c.name << " on this CPU";
  const GemmFn ref = ref_kernel(c);
  for (int64_t n : kNs) {
    const Data d(c, n, uint32_t(2000 + n));
    d.expect_not_degenerate();
    std::vector<double> abs_sum(size_t(kRows * kToks));
    for (int64_t t = 0; t < kToks; ++t)
      for (int64_t r = 0; r < kRows; ++r) d.dot(r, t, &abs_sum[size_t(t * kRows + r)]);
    for (const Kernel& k : ks)
      for (int64_t nr : kNrs)
        for (int64_t nt : kNts) {
          SCOPED_TRACE(::testing::Message() << k.name << " " << c.name << " n=" << n << " nr=" << nr << " nt=" << nt);
          const int64_t r0 = nr < 64 ? 5 : 0, t0 = 2;
          const TileOut want = run_tile(ref, d, r0, nr, t0, nt, scratch(n));
          const TileOut got = run_tile(k.fn, d, r0, nr, t0, nt, scratch(n));
          for (int64_t t = 0; t < nt; ++t)
            for (int64_t r = 0; r < nr; ++r) {
              const float y = got.y[size_t(t * got.ldy + r)], e = want.y[size_t(t * want.ldy + r)];
              const double tol = 1e-5 * abs_sum[size_t((t0 + t) * kRows + r0 + r)] + 1e-30;
              ASSERT_LE(std::fabs(double(y) - double(e)), tol) << "r=" << r << " t=" << t << " y=" << y << " ref=" << e;
            }
        }
  }
}

// Batch invariance: each kernel's value for (row, token) is the same bits in every tile shape
// and position as when computed alone (nr = nt = 1).
TEST_P(GemmFloat, TileInvariant) {
  const Combo& c = combo();
  std::vector<Kernel> ks = simd_kernels(c);
  ks.push_back({"ref", ref_kernel(c)});
  for (int64_t n : kNs) {
    const Data d(c, n, uint32_t(3000 + n));
    for (const Kernel& k : ks) {
      std::vector<uint32_t> alone(size_t(kRows * kToks));
      for (int64_t t = 0; t < kToks; ++t)
        for (int64_t r = 0; r < kRows; ++r)
          alone[size_t(t * kRows + r)] = bits_of(run_tile(k.fn, d, r, 1, t, 1, scratch(n)).y[0]);
      for (int64_t nr : kNrs)
        for (int64_t nt : kNts)
          for (int64_t r0 : {int64_t(0), int64_t(3), kRows - nr})
            for (int64_t t0 : {int64_t(0), int64_t(1), kToks - nt}) {
              SCOPED_TRACE(::testing::Message() << k.name << " " << c.name << " n=" << n << " nr=" << nr << " nt=" << nt
                                                << " r0=" << r0 << " t0=" << t0);
              const TileOut o = run_tile(k.fn, d, r0, nr, t0, nt, scratch(n));
              for (int64_t t = 0; t < nt; ++t)
                for (int64_t r = 0; r < nr; ++r)
                  ASSERT_EQ(bits_of(o.y[size_t(t * o.ldy + r)]), alone[size_t((t0 + t) * kRows + r0 + r)])
                      << "r=" << r << " t=" << t;
            }
    }
  }
}

// Wide rows and many tokens (the activation copy in scratch at its largest, hundreds of token
// groups): the values still match the reference and are the bits of the same output computed
// alone.
TEST_P(GemmFloat, WideRowsManyTokensMatchAlone) {
  const Combo& c = combo();
  const std::vector<Kernel> ks = simd_kernels(c);
  if (ks.empty()) GTEST_SKIP() << "no SIMD kernel for " << c.name << " on this CPU";
  const GemmFn ref = ref_kernel(c);
  constexpr int64_t kBigToks = 400;
  for (int64_t n : {int64_t(4099), int64_t(8200)}) {
    // Activation rows beyond kToks repeat the first ones (only the values matter here).
    const Data d(c, n, uint32_t(4000 + n));
    const size_t act_bytes = cpu::act_row_bytes(c.act, n);
    std::vector<uint8_t> a_big(d.a_stride * (kBigToks - 1) + act_bytes);
    for (int64_t t = 0; t < kBigToks; ++t)
      std::memcpy(&a_big[size_t(t) * d.a_stride], &d.a[size_t(t % kToks) * d.a_stride], act_bytes);
    std::vector<double> abs_sum(size_t(kRows * kToks));
    for (int64_t t = 0; t < kToks; ++t)
      for (int64_t r = 0; r < kRows; ++r) d.dot(r, t, &abs_sum[size_t(t * kRows + r)]);
    for (const Kernel& k : ks) {
      std::vector<uint32_t> alone(size_t(kRows * kToks));
      for (int64_t t = 0; t < kToks; ++t)
        for (int64_t r = 0; r < kRows; ++r)
          alone[size_t(t * kRows + r)] = bits_of(run_tile(k.fn, d, r, 1, t, 1, scratch(n)).y[0]);
      for (int64_t nr : {int64_t(16), int64_t(37), int64_t(64)})
        for (int64_t nt : {int64_t(7), int64_t(33), kBigToks}) {
          SCOPED_TRACE(::testing::Message() << k.name << " " << c.name << " n=" << n << " nr=" << nr << " nt=" << nt);
          std::vector<float> y(size_t(nt * nr));
          GemmArgs g;
          g.n = n;
          g.w = d.w.data() + 3 * d.w_stride;
          g.w_stride = d.w_stride;
          g.nr = nr;
          g.a = a_big.data();
          g.a_stride = d.a_stride;
          g.nt = nt;
          g.y = y.data();
          g.ldy = nr;
          g.scratch = scratch(n);
          k.fn(g);
          const int64_t check_t = std::min(nt, kToks);
          const TileOut want = run_tile(ref, d, 3, nr, 0, check_t, scratch(n));
          for (int64_t t = 0; t < nt; ++t)
            for (int64_t r = 0; r < nr; ++r) {
              const int64_t tt = t % kToks;
              const float v = y[size_t(t * nr + r)];
              ASSERT_EQ(bits_of(v), alone[size_t(tt * kRows + 3 + r)]) << "r=" << r << " t=" << t;
              if (t < check_t) {
                ASSERT_LE(std::fabs(double(v) - double(want.y[size_t(t * want.ldy + r)])),
                          1e-5 * abs_sum[size_t(tt * kRows + 3 + r)] + 1e-30)
                    << "r=" << r << " t=" << t;
              }
            }
        }
    }
  }
}

// Every ISA's activation quantizer for the float formats equals quantize_act_ref bit for bit,
// on values that exercise the rounding: ties (to even), carries into the exponent, denormals,
// infinities, NaNs (quieted), and a row length with a tail (n % 16 != 0).
TEST(FloatActivations, SimdRoundingEqualsReference) {
  std::vector<const cpu::Kernels*> isas;
  if (have_avx2()) isas.push_back(cpu::avx2_kernels());
  if (have_avx512()) isas.push_back(cpu::avx512_kernels());
  if (isas.empty()) GTEST_SKIP() << "no SIMD variant on this CPU";
  std::mt19937 rng(7);
  std::vector<float> x;
  const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x3f808000u, 0x3f818000u,
                               0x3f80ffffu, 0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00001u, 0x7f800001u,
                               0xffa00000u, 0x477fe000u, 0x477ff000u, 0x33000001u};
  for (uint32_t u : specials) x.push_back(quant::bits_to_f32(u));
  std::uniform_int_distribution<uint32_t> any;
  while (x.size() < 1000) x.push_back(quant::bits_to_f32(any(rng)));  // every exponent, NaNs included
  std::normal_distribution<float> normal;
  while (x.size() < 1037) x.push_back(normal(rng));
  const int64_t n = int64_t(x.size());
  for (const cpu::Kernels* k : isas)
    for (ActType a : {ActType::kF32, ActType::kF16, ActType::kBF16}) {
      const size_t bytes = cpu::act_row_bytes(a, n);
      std::vector<uint8_t> want(bytes, 0x5A), got(bytes, 0xA5);
      cpu::quantize_act_ref(a, x.data(), want.data(), n);
      k->quantize_act(a, x.data(), got.data(), n);
      for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(got[i], want[i]) << k->name << " format " << int(a) << " byte " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Combos, GemmFloat, ::testing::Range(0, int(std::size(kCombos))),
                         [](const ::testing::TestParamInfo<int>& i) { return std::string(kCombos[i.param].name); });

}  // namespace
}  // namespace expertmesh
