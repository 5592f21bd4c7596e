#include "tests/quant/quant_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "kernels/quant/quant.h"

namespace expertmesh::testing {

GgmlType type_of(const std::string& name) { return parse_type_name(name).value(); }

std::vector<float> random_rows(int64_t nrows, int64_t n, uint32_t seed, RowDist dist) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> scale(0.2f, 5.f);
  std::vector<float> x(static_cast<size_t>(nrows * n));
  for (int64_t r = 0; r < nrows; ++r) {
    float row_scale = 0;  // rows of different magnitude, like real weights
    switch (dist) {
      case RowDist::kSmallLogNormal: row_scale = std::exp(nd(rng) * 0.5f) * 0.02f; break;
      case RowDist::kLogNormal: row_scale = std::exp(nd(rng)); break;
      case RowDist::kUniformScale: row_scale = scale(rng); break;
    }
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(r * n + j)] = row_scale * nd(rng);
  }
  return x;
}

std::vector<float> uniform_imatrix(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.1f, 3.f);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = u(rng);
  return w;
}

void append_scaled(std::vector<std::vector<float>>* rows, const std::vector<float>& g,
                   std::initializer_list<float> scales, float unit) {
  for (float scale : scales) {
    std::vector<float> r(g);
    for (auto& v : r) v *= scale / unit;
    rows->push_back(r);
  }
}

double sum_sq_dev(const std::vector<float>& x) {
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  for (float v : x) var += (v - mean) * (v - mean);
  return var;
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

std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& q, int64_t nrows, int64_t n, int threads) {
  std::vector<float> y(static_cast<size_t>(nrows * n));
  Status s = quant::dequantize_rows(t, q.data(), y.data(), nrows, n, threads);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return y;
}

RoundTrip round_trip(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                     int quantize_threads, int dequantize_threads) {
  RoundTrip rt;
  std::vector<uint8_t> q(static_cast<size_t>(row_size(t, n) * nrows));
  Status s = quant::quantize_rows(t, x.data(), q.data(), nrows, n, imatrix, quantize_threads);
  EXPECT_TRUE(s.ok()) << s.to_string();
  rt.y.resize(static_cast<size_t>(nrows * n));
  Status d = quant::dequantize_rows(t, q.data(), rt.y.data(), nrows, n, dequantize_threads);
  EXPECT_TRUE(d.ok()) << d.to_string();
  rt.ok = s.ok() && d.ok();
  return rt;
}

RoundTripStats round_trip_stats(const std::vector<float>& x, const std::vector<float>& y, int64_t nrows, int64_t n) {
  double err2 = 0, sig2 = 0, max_err = 0, amax_all = 0;
  RoundTripStats st;
  for (int64_t r = 0; r < nrows; ++r) {
    double amax = 0;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, double(std::fabs(x[size_t(r * n + j)])));
    amax_all = std::max(amax_all, amax);
    for (int64_t j = 0; j < n; ++j) {
      const size_t i = size_t(r * n + j);
      const double d = double(y[i]) - double(x[i]);
      err2 += d * d;
      sig2 += double(x[i]) * double(x[i]);
      st.max_rel_row = std::max(st.max_rel_row, std::fabs(d) / amax);
      max_err = std::max(max_err, std::fabs(d));
    }
  }
  st.nmse = err2 / sig2;
  st.max_rel_all = max_err / amax_all;
  return st;
}

void expect_nmse_within(const std::string& type, const std::vector<float>& x, int64_t nrows, int64_t n,
                        const float* imatrix, double max_nmse) {
  const GgmlType t = type_of(type);
  const auto y = dequantize(t, quantize(t, x, nrows, n, imatrix, 1), nrows, n);
  ASSERT_TRUE(all_finite(y));
  const double e = round_trip_stats(x, y, nrows, n).nmse;
  std::printf("[roundtrip %-8s %s] nmse %.5f (budget %.4f)\n", type.c_str(), imatrix ? "imat " : "plain", e, max_nmse);
  EXPECT_LE(e, max_nmse);
}

void expect_deterministic(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                          bool fatal_quantize) {
  const size_t bytes = static_cast<size_t>(row_size(t, n) * nrows);
  std::vector<uint8_t> q1(bytes), q3(bytes);
  const Status s1 = quant::quantize_rows(t, x.data(), q1.data(), nrows, n, imatrix, 1);
  const Status s3 = quant::quantize_rows(t, x.data(), q3.data(), nrows, n, imatrix, 3);
  if (fatal_quantize) {
    ASSERT_TRUE(s1.ok()) << s1.to_string();
    ASSERT_TRUE(s3.ok()) << s3.to_string();
  } else {
    EXPECT_TRUE(s1.ok()) << s1.to_string();
    EXPECT_TRUE(s3.ok()) << s3.to_string();
  }
  EXPECT_EQ(q1, q3) << type_name(t) << (imatrix ? " with imatrix" : "") << ": bytes depend on the thread count";
}

void expect_finite_on_rows(GgmlType t, const std::vector<std::vector<float>>& rows,
                           const std::vector<const float*>& imatrices, const EdgeRowOptions& opt) {
  SCOPED_TRACE(type_name(t));
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<float>& x = rows[i];
    const int64_t n = static_cast<int64_t>(x.size());
    bool all_zero_in = true;
    for (float v : x) all_zero_in = all_zero_in && v == 0.f;
    for (size_t k = 0; k < imatrices.size(); ++k) {
      const float* im = imatrices[k];
      if (!im && opt.skip_missing_imatrix && quant::quant_fns(t).needs_imatrix) continue;
      SCOPED_TRACE("row kind " + std::to_string(i) + ", imatrix #" + std::to_string(k) + (im ? "" : " (none)"));
      std::vector<uint8_t> q(static_cast<size_t>(row_size(t, n)));
      const Status s = quant::quantize_rows(t, x.data(), q.data(), 1, n, im, 1);
      std::vector<float> y(static_cast<size_t>(n));
      if (opt.fatal_quantize) {
        ASSERT_TRUE(s.ok()) << s.to_string();
      } else {
        EXPECT_TRUE(s.ok()) << s.to_string();
      }
      const Status d = quant::dequantize_rows(t, q.data(), y.data(), 1, n, 1);
      if (opt.fatal_quantize) {
        ASSERT_TRUE(d.ok()) << d.to_string();
      } else {
        EXPECT_TRUE(d.ok()) << d.to_string();
      }
      if (opt.fatal_finite) {
        for (int64_t j = 0; j < n; ++j) ASSERT_TRUE(std::isfinite(y[size_t(j)])) << "element " << j << " = " << y[size_t(j)];
      } else {
        EXPECT_TRUE(all_finite(y));
      }
      if (all_zero_in) {
        for (int64_t j = 0; j < n; ++j) {
          if (opt.fatal_zero) {
            ASSERT_EQ(y[size_t(j)], 0.f) << "zero row decoded non-zero at " << j;
          } else {
            EXPECT_EQ(y[size_t(j)], 0.f) << "zero row decoded non-zero at " << j;
          }
        }
      }
    }
  }
}

}  // namespace expertmesh::testing
