// Shared random-data machinery of the quant family tests: seeded row generators, quantize /
// dequantize wrappers, round-trip error statistics, the 1-vs-3-thread determinism check and the
// degenerate-row finiteness check. Each family keeps its own budgets, type lists, row sets and
// imatrices; these functions only run them.
//
// Helpers that may fail fatally (ASSERT) are void: call them inside ASSERT_NO_FATAL_FAILURE so the
// calling test stops where it would have stopped with the checks written inline.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "model/types.h"

namespace expertmesh::testing {

GgmlType type_of(const std::string& name);  // upper-case ggml name → type (must exist)

// How random_rows draws rows: x = row_scale · N(0, 1), with one row_scale per row.
enum class RowDist {
  kSmallLogNormal,  // row_scale = 0.02 · exp(0.5 · N(0, 1)) (one normal distribution for both)
  kLogNormal,       // row_scale = exp(N(0, 1))
  kUniformScale,    // row_scale = U(0.2, 5)
};
std::vector<float> random_rows(int64_t nrows, int64_t n, uint32_t seed, RowDist dist);

// An imatrix-like weight vector: U(0.1, 3) per column (positive, uneven).
std::vector<float> uniform_imatrix(int64_t n, uint32_t seed);

// Appends to rows one copy of g per scale, multiplied by scale / unit (g's typical magnitude).
void append_scaled(std::vector<std::vector<float>>* rows, const std::vector<float>& g,
                   std::initializer_list<float> scales, float unit);

// Σ (x - mean)² over x (tests assert random input has variance).
double sum_sq_dev(const std::vector<float>& x);

bool all_finite(const std::vector<float>& y);

// quantize_rows / dequantize_rows into fresh buffers; a failure is reported with EXPECT.
std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                              int threads);
std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& q, int64_t nrows, int64_t n, int threads = 1);

struct RoundTrip {
  bool ok = false;  // quantize and dequantize succeeded (failures are reported with EXPECT)
  std::vector<float> y;
};
RoundTrip round_trip(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                     int quantize_threads = 1, int dequantize_threads = 1);

struct RoundTripStats {
  double nmse = 0;         // Σ (y - x)² / Σ x²
  double max_rel_row = 0;  // max |y - x| / max |x| of the element's row
  double max_rel_all = 0;  // max |y - x| / max |x| over all the data
};
RoundTripStats round_trip_stats(const std::vector<float>& x, const std::vector<float>& y, int64_t nrows, int64_t n);

// Round-trips x (one thread) and expects every value finite (ASSERT) and the NMSE within max_nmse
// (printing "[roundtrip TYPE plain|imat ] nmse ... (budget ...)").
void expect_nmse_within(const std::string& type, const std::vector<float>& x, int64_t nrows, int64_t n,
                        const float* imatrix, double max_nmse);

// Expects quantizing x with 1 and with 3 threads to give identical bytes. fatal_quantize: a
// refused quantization is an ASSERT (else EXPECT).
void expect_deterministic(GgmlType t, const std::vector<float>& x, int64_t nrows, int64_t n, const float* imatrix,
                          bool fatal_quantize = false);

struct EdgeRowOptions {
  bool skip_missing_imatrix = false;  // skip imatrix == nullptr for types that need one
  bool fatal_quantize = false;        // ASSERT (else EXPECT) that quantize / dequantize succeed
  bool fatal_finite = false;          // ASSERT each decoded value finite (else EXPECT all finite)
  bool fatal_zero = true;             // ASSERT (else EXPECT) that all-zero input rows decode to zeros
};
// Quantizes each row alone (one thread) with each of `imatrices` (nullptr: none), dequantizes it
// and expects finite values, and zeros for an all-zero input row.
void expect_finite_on_rows(GgmlType t, const std::vector<std::vector<float>>& rows,
                           const std::vector<const float*>& imatrices, const EdgeRowOptions& opt = {});

}  // namespace expertmesh::testing
