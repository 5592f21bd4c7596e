// F32 / F16 / BF16 (and the integer / F64 types, dequantize only): exact conversions.
#include <cstring>

#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"

namespace expertmesh::quant {
namespace {

void f32_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(nrows * n) * sizeof(float));
}
void f32_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  std::memcpy(dst, src, static_cast<size_t>(nrows * n) * sizeof(float));
}
void f16_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < nrows * n; ++i) dst[i] = fp16_to_f32(s[i]);
}
void f16_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < nrows * n; ++i) d[i] = f32_to_fp16(src[i]);
}
void bf16_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < nrows * n; ++i) dst[i] = bf16_to_f32(s[i]);
}
void bf16_quantize(const float* src, void* dst, int64_t nrows, int64_t n, const float*) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < nrows * n; ++i) d[i] = f32_to_bf16(src[i]);
}
template <typename I>
void int_to_float(const void* src, float* dst, int64_t nrows, int64_t n) {
  for (int64_t i = 0; i < nrows * n; ++i) {
    I v;
    std::memcpy(&v, static_cast<const uint8_t*>(src) + i * sizeof(I), sizeof(I));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

void register_float(QuantTable& t) {
  auto set = [&](GgmlType ty, ToFloatFn tf, QuantizeFn q) {
    t[static_cast<size_t>(ty)].to_float = tf;
    t[static_cast<size_t>(ty)].quantize = q;
  };
  set(GgmlType::F32, f32_to_float, f32_quantize);
  set(GgmlType::F16, f16_to_float, f16_quantize);
  set(GgmlType::BF16, bf16_to_float, bf16_quantize);
  set(GgmlType::F64, int_to_float<double>, nullptr);
  set(GgmlType::I8, int_to_float<int8_t>, nullptr);
  set(GgmlType::I16, int_to_float<int16_t>, nullptr);
  set(GgmlType::I32, int_to_float<int32_t>, nullptr);
  set(GgmlType::I64, int_to_float<int64_t>, nullptr);
}

}  // namespace expertmesh::quant
