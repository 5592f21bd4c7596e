// Mainline i-quants (IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ4_XS): dequantization
// bit-exact with the peer on the golden files, quantization identical to (or within 1.02 x the
// error of) the peer's, round-trip error budgets on random data, determinism across thread
// counts, and edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/quant/quant.h"
#include "model/types.h"
#include "tests/common/golden.h"
#include "tests/quant/golden_quant.h"

namespace expertmesh::testing {
namespace {

const char* const kTypes[] = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_XS"};
// The peer's golden files: every type with an imatrix; without one only the types that do not
// require it for every tensor (golden README).
const char* const kPlainTypes[] = {"IQ3_XXS", "IQ3_S", "IQ4_XS"};

GgmlType type_of(const std::string& name) { return parse_type_name(name).value(); }

bool has_plain(const std::string& t) {
  for (const char* p : kPlainTypes)
    if (t == p) return true;
  return false;
}

TEST(IquantsGolden, DequantizeBitExact) {
  EM_REQUIRE_GOLDEN();
  for (const char* t : kTypes) {
    for (const char* variant : {"plain", "imat"}) {
      if (std::string(variant) == "plain" && !has_plain(t)) continue;
      SCOPED_TRACE(std::string(t) + " " + variant);
      EXPECT_GT(check_dequant(t, variant), 0);
    }
  }
}

class IquantsQuantize : public ::testing::TestWithParam<const char*> {};

TEST_P(IquantsQuantize, MatchesPeer) {
  EM_REQUIRE_GOLDEN();
  for (const char* variant : {"plain", "imat"}) {
    if (std::string(variant) == "plain" && !has_plain(GetParam())) continue;
    QuantizeReport r = check_quantize(GetParam(), variant);
    EXPECT_GT(r.tensors, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, IquantsQuantize, ::testing::ValuesIn(kTypes),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ---- random data -------------------------------------------------------------------------

struct Budget {
  const char* type;
  double max_nmse;  // sum (x - y)^2 / sum x^2 over Gaussian rows, with and without imatrix
};
// Measured on the seeded data below (worst of with / without imatrix: IQ1_S 0.258, IQ1_M 0.316,
// IQ2_XXS 0.128, IQ2_XS 0.102, IQ2_S 0.072, IQ3_XXS 0.045, IQ3_S 0.026, IQ4_XS 0.0059) with
// ~25% headroom; a broken quantizer is far off.
const Budget kBudgets[] = {
    {"IQ1_S", 0.32},  {"IQ1_M", 0.40},    {"IQ2_XXS", 0.16}, {"IQ2_XS", 0.128},
    {"IQ2_S", 0.090}, {"IQ3_XXS", 0.057}, {"IQ3_S", 0.033},  {"IQ4_XS", 0.0075},
};

std::vector<float> gaussian_rows(int64_t nrows, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(nrows * n));
  for (int64_t r = 0; r < nrows; ++r) {
    const float row_scale = std::exp(dist(rng) * 0.5f) * 0.02f;  // rows of different magnitude
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(r * n + j)] = dist(rng) * row_scale;
  }
  return x;
}

double nmse(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(x[i]) * x[i];
  }
  return num / den;
}

bool all_finite(const std::vector<float>& y) {
  for (float v : y)
    if (!std::isfinite(v)) return false;
  return true;
}

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                              int threads) {
  std::vector<uint8_t> q(static_cast<size_t>(row_size(t, n) * nrows));
  Status s = quant::quantize_rows(t, x.data(), q.data(), nrows, n, imatrix, threads);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return q;
}

std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& q, int64_t nrows, int64_t n) {
  std::vector<float> y(static_cast<size_t>(nrows * n));
  Status s = quant::dequantize_rows(t, q.data(), y.data(), nrows, n, 1);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return y;
}

std::vector<float> uneven_imatrix(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.1f, 3.f);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = u(rng);
  return w;
}

TEST(IquantsRandom, RoundTripWithinBudget) {
  constexpr int64_t kRows = 16, kN = 1024;
  const std::vector<float> x = gaussian_rows(kRows, kN, 1234);
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  for (float v : x) var += (v - mean) * (v - mean);
  ASSERT_GT(var, 0.0) << "random input has no variance";
  const std::vector<float> imatrix = uneven_imatrix(kN, 99);

  for (const Budget& b : kBudgets) {
    SCOPED_TRACE(b.type);
    const GgmlType t = type_of(b.type);
    for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(imatrix.data())}) {
      if (!im && quant::quant_fns(t).needs_imatrix) continue;
      const auto q = quantize(t, x, kRows, kN, im, 1);
      const auto y = dequantize(t, q, kRows, kN);
      ASSERT_TRUE(all_finite(y));
      const double e = nmse(x, y);
      std::printf("[roundtrip %-8s %s] nmse %.5f (budget %.4f)\n", b.type, im ? "imat " : "plain", e, b.max_nmse);
      EXPECT_LE(e, b.max_nmse);
    }
  }
}

TEST(IquantsRandom, NeedsImatrixIsRefusedWithoutOne) {
  constexpr int64_t kN = 256;
  const std::vector<float> x = gaussian_rows(1, kN, 3);
  for (const char* name : {"IQ2_XXS", "IQ2_XS", "IQ1_S"}) {
    const GgmlType t = type_of(name);
    EXPECT_TRUE(quant::quant_fns(t).needs_imatrix) << name;
    std::vector<uint8_t> q(static_cast<size_t>(row_size(t, kN)));
    EXPECT_FALSE(quant::quantize_rows(t, x.data(), q.data(), 1, kN, nullptr, 1).ok()) << name;
  }
}

TEST(IquantsRandom, DeterministicAcrossThreads) {
  constexpr int64_t kRows = 12, kN = 512;
  const std::vector<float> x = gaussian_rows(kRows, kN, 77);
  std::vector<float> imatrix(kN, 1.f);
  for (int64_t j = 0; j < kN; ++j) imatrix[j] = 0.5f + float(j % 7);
  for (const char* name : kTypes) {
    SCOPED_TRACE(name);
    const GgmlType t = type_of(name);
    for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(imatrix.data())}) {
      if (!im && quant::quant_fns(t).needs_imatrix) continue;
      EXPECT_EQ(quantize(t, x, kRows, kN, im, 1), quantize(t, x, kRows, kN, im, 3));
    }
  }
}

TEST(IquantsRandom, EdgeCasesStayFinite) {
  constexpr int64_t kN = 512;
  std::vector<std::vector<float>> rows;
  rows.push_back(std::vector<float>(kN, 0.f));  // all zeros
  std::vector<float> g = gaussian_rows(1, kN, 5);
  for (float scale : {1e-30f, 1e-20f, 1e-12f, 1e12f, 1e18f}) {  // tiny and huge magnitudes
    std::vector<float> r(g);
    for (auto& v : r) v *= scale / 0.02f;
    rows.push_back(r);
  }
  std::vector<float> spike(kN, 0.f);  // one large outlier among zeros
  spike[100] = 6e4f;
  rows.push_back(spike);
  std::vector<float> mixed(g);  // one block of zeros, one of constants, one of a single value
  for (int j = 0; j < 32; ++j) mixed[j] = 0.f;
  for (int j = 32; j < 64; ++j) mixed[j] = 0.5f;
  for (int j = 64; j < 96; ++j) mixed[j] = j == 70 ? -1.f : 0.f;
  rows.push_back(mixed);
  const std::vector<float> ones(kN, 1.f);
  std::vector<float> sparse_imatrix(kN, 0.f);  // zero weights on most columns
  for (int64_t j = 0; j < kN; j += 37) sparse_imatrix[j] = 1.f;
  for (const char* name : kTypes) {
    SCOPED_TRACE(name);
    const GgmlType t = type_of(name);
    for (size_t i = 0; i < rows.size(); ++i) {
      for (const float* im :
           {static_cast<const float*>(nullptr), ones.data(), static_cast<const float*>(sparse_imatrix.data())}) {
        if (!im && quant::quant_fns(t).needs_imatrix) continue;
        SCOPED_TRACE("row kind " + std::to_string(i));
        const auto q = quantize(t, rows[i], 1, kN, im, 1);
        const auto y = dequantize(t, q, 1, kN);
        EXPECT_TRUE(all_finite(y));
        if (i == 0) {
          for (float v : y) ASSERT_EQ(v, 0.f);
        }
      }
    }
  }
}

}  // namespace
}  // namespace expertmesh::testing
