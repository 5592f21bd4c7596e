// Trellis types (IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT): dequantization bit-exact with the peer on the
// golden files, quantization identical to (or within 1.02 x the error of) the peer's, round-trip
// error budgets on random data, determinism across thread counts, and edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/quant/quant.h"
#include "model/types.h"
#include "tests/common/golden.h"
#include "tests/quant/golden_quant.h"

namespace expertmesh::testing {
namespace {

GgmlType type_of(const std::string& name) { return parse_type_name(name).value(); }

TEST(TrellisGolden, DequantizeBitExact) {
  EM_REQUIRE_GOLDEN();
  // IQ1_KT and IQ2_KT exist only as imatrix quantizations (llama-quantize requires one).
  const std::pair<const char*, const char*> files[] = {{"IQ1_KT", "imat"},  {"IQ2_KT", "imat"}, {"IQ3_KT", "plain"},
                                                       {"IQ3_KT", "imat"},  {"IQ4_KT", "plain"}, {"IQ4_KT", "imat"}};
  for (const auto& [t, variant] : files) {
    SCOPED_TRACE(std::string(t) + " " + variant);
    EXPECT_GT(check_dequant(t, variant), 0);
  }
}

// Quantizing the zoo model is the expensive part of this suite (a nearest-seed search over the
// trellis codebooks for every 32 weights): one test per type and variant.
class TrellisQuantize : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(TrellisQuantize, MatchesPeer) {
  EM_REQUIRE_GOLDEN();
  QuantizeReport r = check_quantize(GetParam().first, GetParam().second);
  EXPECT_GT(r.tensors, 0);
}

INSTANTIATE_TEST_SUITE_P(Types, TrellisQuantize,
                         ::testing::Values(std::make_pair("IQ1_KT", "imat"), std::make_pair("IQ2_KT", "imat"),
                                           std::make_pair("IQ3_KT", "plain"), std::make_pair("IQ3_KT", "imat"),
                                           std::make_pair("IQ4_KT", "plain"), std::make_pair("IQ4_KT", "imat")),
                         [](const auto& i) { return std::string(i.param.first) + "_" + i.param.second; });

// ---- random data -------------------------------------------------------------------------

const char* const kTypes[] = {"IQ1_KT", "IQ2_KT", "IQ3_KT", "IQ4_KT"};

struct Budget {
  const char* type;
  double max_nmse;  // sum (x - y)^2 / sum x^2 over Gaussian rows
};
// Measured on the seeded data below (plain / imatrix): IQ1_KT 0.199 / 0.195, IQ2_KT 0.112 / 0.115,
// IQ3_KT 0.029 / 0.031, IQ4_KT 0.0099 / 0.0103;
// budgets leave ~20% headroom for a future (SIMD) quantizer with slightly different choices.
const Budget kBudgets[] = {
    {"IQ1_KT", 0.24}, {"IQ2_KT", 0.14}, {"IQ3_KT", 0.038}, {"IQ4_KT", 0.0125},
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

TEST(TrellisRandom, RoundTripWithinBudget) {
  constexpr int64_t kRows = 8, kN = 1024;
  const std::vector<float> x = gaussian_rows(kRows, kN, 1234);
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  for (float v : x) var += (v - mean) * (v - mean);
  ASSERT_GT(var, 0.0) << "random input has no variance";
  // An imatrix-like weight vector (mean of x^2 per column): positive, uneven.
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(0.1f, 3.f);
  std::vector<float> imatrix(kN);
  for (auto& w : imatrix) w = u(rng);

  for (const Budget& b : kBudgets) {
    SCOPED_TRACE(b.type);
    const GgmlType t = type_of(b.type);
    // The quantizer must work without an imatrix even for the types llama-quantize demands one for.
    for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(imatrix.data())}) {
      const auto q = quantize(t, x, kRows, kN, im, 1);
      const auto y = dequantize(t, q, kRows, kN);
      ASSERT_TRUE(all_finite(y));
      const double e = nmse(x, y);
      std::printf("[roundtrip %-8s %s] nmse %.5f (budget %.4f)\n", b.type, im ? "imat " : "plain", e, b.max_nmse);
      EXPECT_LE(e, b.max_nmse);
    }
  }
}

TEST(TrellisRandom, DeterministicAcrossThreads) {
  constexpr int64_t kRows = 6, kN = 512;
  const std::vector<float> x = gaussian_rows(kRows, kN, 77);
  std::vector<float> imatrix(kN, 1.f);
  for (int64_t j = 0; j < kN; ++j) imatrix[j] = 0.5f + float(j % 7);
  for (const char* name : kTypes) {
    SCOPED_TRACE(name);
    const GgmlType t = type_of(name);
    for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(imatrix.data())}) {
      EXPECT_EQ(quantize(t, x, kRows, kN, im, 1), quantize(t, x, kRows, kN, im, 3));
    }
  }
}

TEST(TrellisRandom, EdgeCasesStayFinite) {
  constexpr int64_t kN = 512;
  std::vector<std::vector<float>> rows;
  rows.push_back(std::vector<float>(kN, 0.f));  // all zeros
  std::vector<float> g = gaussian_rows(1, kN, 5);
  for (float scale : {1e-30f, 1e-20f, 1e-12f, 1e12f, 1e20f, 1e30f}) {  // tiny and huge magnitudes
    std::vector<float> r(g);
    for (auto& v : r) v *= scale / 0.02f;
    rows.push_back(r);
  }
  std::vector<float> spike(kN, 0.f);  // one huge outlier among zeros
  spike[100] = 1e36f;
  rows.push_back(spike);
  std::vector<float> mixed(g);  // one sub-block of zeros, one of constants
  for (int j = 0; j < 32; ++j) mixed[j] = 0.f;
  for (int j = 32; j < 64; ++j) mixed[j] = 0.5f;
  rows.push_back(mixed);
  std::vector<float> zero_imatrix(kN, 0.f);
  for (const char* name : kTypes) {
    SCOPED_TRACE(name);
    const GgmlType t = type_of(name);
    for (size_t i = 0; i < rows.size(); ++i) {
      for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(zero_imatrix.data())}) {
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
