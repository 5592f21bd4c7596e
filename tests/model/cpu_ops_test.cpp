// Every SIMD kernel against the scalar reference (STYLE.md R9), and the generic matmul for
// several weight types against dequantize + a naive dot product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/quant/quant.h"
#include "worker/blocks.h"
#include "worker/matmul.h"

namespace expertmesh {
namespace {

std::vector<float> random_vec(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<const cpu::Kernels*> simd_variants() {
  std::vector<const cpu::Kernels*> v;
  if (cpu::cpu_supports(cpu::Isa::kAvx2) && cpu::avx2_kernels()) v.push_back(cpu::avx2_kernels());
  if (cpu::cpu_supports(cpu::Isa::kAvx512) && cpu::avx512_kernels()) v.push_back(cpu::avx512_kernels());
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float rel, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], rel * (1.0f + std::fabs(b[i]))) << what << " at " << i;
}

TEST(CpuOps, SimdMatchesScalar) {
  const cpu::Kernels& ref = cpu::ref_kernels();
  if (simd_variants().empty()) GTEST_SKIP() << "no SIMD variant on this CPU";
  for (const cpu::Kernels* k : simd_variants()) {
    SCOPED_TRACE(k->name);
    for (int64_t n : {1, 7, 8, 31, 64, 172, 257}) {
      auto a = random_vec(n, 1), b = random_vec(n, 2), w = random_vec(n, 3);
      EXPECT_NEAR(k->dot_f32(a.data(), b.data(), n), ref.dot_f32(a.data(), b.data(), n), 1e-4f * float(n));
      auto y1 = b, y2 = b;
      k->axpy_f32(0.37f, a.data(), y1.data(), n);
      ref.axpy_f32(0.37f, a.data(), y2.data(), n);
      expect_close(y1, y2, 1e-6f, "axpy");
      std::vector<float> r1(a.size()), r2(a.size());
      k->rmsnorm_f32(a.data(), w.data(), r1.data(), n, 1e-5f);
      ref.rmsnorm_f32(a.data(), w.data(), r2.data(), n, 1e-5f);
      expect_close(r1, r2, 1e-6f, "rmsnorm");
      auto s1 = a, s2 = a;
      k->softmax_f32(s1.data(), n);
      ref.softmax_f32(s2.data(), n);
      expect_close(s1, s2, 1e-6f, "softmax");
      k->swiglu_f32(a.data(), b.data(), r1.data(), n);
      ref.swiglu_f32(a.data(), b.data(), r2.data(), n);
      expect_close(r1, r2, 1e-6f, "swiglu");
      // An element's value does not depend on where it sits in the call (the MoE FFN applies
      // swiglu to tiles at varying offsets): a sub-range gives the whole call's bits.
      if (n > 3) {
        std::vector<float> part(size_t(n - 3));
        k->swiglu_f32(a.data() + 3, b.data() + 3, part.data(), n - 3);
        EXPECT_EQ(std::memcmp(part.data(), r1.data() + 3, part.size() * sizeof(float)), 0) << "swiglu offset, n " << n;
      }
    }
    // Saturation: large |g| gives g*u (or 0), never NaN; NaN in, NaN out.
    const std::vector<float> g = {-200.0f, -90.0f, -87.5f, 0.0f, 87.5f, 90.0f, 200.0f, std::nanf("")};
    const std::vector<float> u(g.size(), 2.0f);
    std::vector<float> o(g.size());
    k->swiglu_f32(g.data(), u.data(), o.data(), int64_t(g.size()));
    for (size_t i = 0; i + 1 < g.size(); ++i) {
      EXPECT_FALSE(std::isnan(o[i])) << g[i];
      EXPECT_NEAR(o[i], g[i] > 0 ? 2.0f * g[i] : 0.0f, 1e-3f * (1.0f + std::fabs(g[i]))) << g[i];
    }
    EXPECT_TRUE(std::isnan(o.back()));
    for (auto mode : {cpu::RopeMode::kNormal, cpu::RopeMode::kNeox}) {
      for (int64_t hd : {8, 64, 128}) {
        const int64_t n_rot = hd == 128 ? 64 : hd;
        std::vector<float> cs(static_cast<size_t>(n_rot));
        cpu::rope_cache(37, n_rot, 10000.0f, 1.0f, cs.data());
        auto x1 = random_vec(4 * hd, 5), x2 = x1;
        k->rope_f32(x1.data(), 4, hd, n_rot, cs.data(), mode);
        ref.rope_f32(x2.data(), 4, hd, n_rot, cs.data(), mode);
        expect_close(x1, x2, 1e-6f, "rope");
      }
    }
  }
}

TEST(CpuOps, SoftmaxOfFullyMaskedRowIsZeroNotNaN) {
  std::vector<const cpu::Kernels*> all = simd_variants();
  all.push_back(&cpu::ref_kernels());
  for (const cpu::Kernels* k : all) {
    std::vector<float> row(19, -std::numeric_limits<float>::infinity());
    k->softmax_f32(row.data(), int64_t(row.size()));
    for (float v : row) EXPECT_EQ(v, 0.0f) << k->name;
  }
}

TEST(CpuOps, RopeNormalRotatesAdjacentPairsNeoxRotatesHalves) {
  std::vector<float> cs(4);
  cpu::rope_cache(1, 4, 10000.0f, 1.0f, cs.data());
  std::vector<float> x = {1, 0, 0, 0}, y = x;
  cpu::ref_kernels().rope_f32(x.data(), 1, 4, 4, cs.data(), cpu::RopeMode::kNormal);
  cpu::ref_kernels().rope_f32(y.data(), 1, 4, 4, cs.data(), cpu::RopeMode::kNeox);
  EXPECT_NEAR(x[1], std::sin(1.0f), 1e-6f);  // pair (0, 1)
  EXPECT_NEAR(y[2], std::sin(1.0f), 1e-6f);  // pair (0, 2)
}

TEST(CpuOps, AttentionSimdMatchesScalarAndNaive) {
  const int64_t n_kv = 23, d = 64;
  auto q = random_vec(d, 7), K = random_vec(n_kv * d, 8), V = random_vec(n_kv * d, 9);
  const float scale = 1.0f / std::sqrt(float(d));
  for (int64_t q_pos : {0, 5, 22}) {
    // naive
    std::vector<double> p(static_cast<size_t>(q_pos + 1));
    double mx = -1e30, sum = 0;
    for (int64_t j = 0; j <= q_pos; ++j) {
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += double(q[size_t(i)]) * K[size_t(j * d + i)];
      p[size_t(j)] = s * scale;
      mx = std::max(mx, p[size_t(j)]);
    }
    for (auto& v : p) sum += (v = std::exp(v - mx));
    std::vector<float> want(static_cast<size_t>(d), 0.0f);
    for (int64_t j = 0; j <= q_pos; ++j)
      for (int64_t i = 0; i < d; ++i) want[size_t(i)] += float(p[size_t(j)] / sum) * V[size_t(j * d + i)];
    std::vector<const cpu::Kernels*> all = simd_variants();
    all.push_back(&cpu::ref_kernels());
    for (const cpu::Kernels* k : all) {
      std::vector<float> scores(static_cast<size_t>(n_kv)), out(static_cast<size_t>(d));
      worker::attend_row(*k, q.data(), K.data(), V.data(), n_kv, d, q_pos, scale, scores.data(), out.data());
      expect_close(out, want, 1e-5f, k->name);
    }
    std::vector<uint16_t> acc16(static_cast<size_t>(d));
    std::vector<float> out16(static_cast<size_t>(d));
    worker::attend_row_f16acc(q.data(), K.data(), V.data(), n_kv, d, q_pos, scale, acc16.data(), out16.data());
    expect_close(out16, want, 5e-3f, "f16 accumulator");
  }
}

TEST(Matmul, EveryTestedTypeMatchesDequantizeAndNaiveDot) {
  worker::ThreadPool pool(2);
  const cpu::Kernels& k = cpu::select_kernels();
  struct Case {
    GgmlType type;
    int64_t ne0;
  };
  const Case cases[] = {{GgmlType::F32, 172},  {GgmlType::F16, 172},  {GgmlType::BF16, 64},    {GgmlType::Q8_0, 256},
                        {GgmlType::Q4_0, 256}, {GgmlType::Q6_K, 256}, {GgmlType::IQ4_KS, 256}, {GgmlType::IQ4_NL, 64}};
  for (const Case& c : cases) {
    SCOPED_TRACE(type_name(c.type));
    const int64_t nrows = 24, n_tok = 5;
    auto src = random_vec(nrows * c.ne0, 11, 0.1f);
    Weight w;
    w.name = "w";
    w.type = c.type;
    w.ne[0] = c.ne0;
    w.ne[1] = nrows;
    w.row_bytes = row_size(c.type, c.ne0);
    std::vector<uint8_t> bytes(static_cast<size_t>(w.row_bytes * nrows));
    if (c.type == GgmlType::F32) {
      std::memcpy(bytes.data(), src.data(), bytes.size());
    } else {
      ASSERT_TRUE(quant::quantize_rows(c.type, src.data(), bytes.data(), nrows, c.ne0, nullptr, 1).ok());
    }
    w.data = bytes.data();
    std::vector<float> deq(static_cast<size_t>(nrows * c.ne0));
    ASSERT_TRUE(quant::dequantize_rows(c.type, bytes.data(), deq.data(), nrows, c.ne0, 1).ok());
    auto x = random_vec(n_tok * c.ne0, 12);
    std::vector<float> y(static_cast<size_t>(n_tok * nrows));
    ASSERT_TRUE(worker::matmul(w, 0, nrows, x.data(), c.ne0, n_tok, y.data(), nrows, pool, k).ok());
    // Quantized types see 8-bit activations (Q8_2 values or Q8_K blocks) and F16 sees F16 ones
    // (the peer's vec_dot_type).
    const float tol = c.type == GgmlType::F16 ? 2e-3f : worker::activations_quantized(c.type, k) ? 2e-2f : 1e-4f;
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t r = 0; r < nrows; ++r) {
        double want = 0;
        for (int64_t i = 0; i < c.ne0; ++i) want += double(deq[size_t(r * c.ne0 + i)]) * x[size_t(t * c.ne0 + i)];
        ASSERT_NEAR(y[size_t(t * nrows + r)], want, tol * (1.0 + std::fabs(want))) << "row " << r << " token " << t;
      }
  }
}

}  // namespace
}  // namespace expertmesh
