// Reference quantizers of the IQK "_K" family (QuantizeFn contract, quant.h), ports of ik's
// quantize_iq{2,3,4,5,6}_k / quantize_iq2_kl that reproduce its bytes exactly.
#pragma once

#include <cstdint>

namespace expertmesh::quant::iqk_k {

void quantize_iq2_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq3_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq4_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq5_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq6_k(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);
void quantize_iq2_kl(const float* src, void* dst, int64_t nrows, int64_t n_per_row, const float* imatrix);

}  // namespace expertmesh::quant::iqk_k
