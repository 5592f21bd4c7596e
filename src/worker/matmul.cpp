#include "worker/matmul.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "kernels/quant/fp16.h"
#include "kernels/quant/quant.h"

namespace expertmesh::worker {
namespace {

constexpr int64_t kTileRows = 16;

int64_t interleave_of(GgmlType t) { return type_traits(t)->interleave; }

}  // namespace

ActivationRounding activation_rounding(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q6_0:
    case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
      return ActivationRounding::kQ8_2;
    default:
      return ActivationRounding::kNone;
  }
}

void round_activations_q8_2(const float* x, float* out, int64_t n) {
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0.0f;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = quant::bf16_to_f32(quant::f32_to_bf16(amax / 127.f));
    const float id = d > 0 ? 1 / d : 0.f;
    for (int64_t i = 0; i < 32; ++i) out[b + i] = d * std::clamp(std::nearbyint(x[b + i] * id), -128.0f, 127.0f);
  }
}

Status dequantize_row(const Weight& w, int64_t r, float* out) {
  const int64_t il = interleave_of(w.type);
  if (!w.holds(r / il * il, il)) return Status::Internal(fmt::format("{}: row {} is not held by this rank", w.name, r));
  if (il == 1) return quant::dequantize_rows(w.type, w.row(r), out, 1, w.ne[0], 1);
  std::vector<float> group(size_t(il * w.ne[0]));
  const int64_t g0 = r / il * il;
  EM_RETURN_IF_ERROR(quant::dequantize_rows(w.type, w.row(g0), group.data(), il, w.ne[0], 1));
  std::memcpy(out, group.data() + (r - g0) * w.ne[0], size_t(w.ne[0]) * sizeof(float));
  return Status::Ok();
}

Status matmul(const Weight& w, int64_t row0, int64_t nrows, const float* x, int64_t ldx, int64_t n_tok, float* y,
              int64_t ldy, ThreadPool& pool, const cpu::Kernels& k, ColRange cols) {
  const int64_t ne0 = w.ne[0];
  const int64_t c0 = cols.begin, c1 = cols.end < 0 ? ne0 : cols.end;
  if (c0 < 0 || c1 > ne0 || c0 >= c1) return Status::Internal(fmt::format("matmul {}: bad column range", w.name));
  if (row0 < 0 || row0 + nrows > w.n_rows())
    return Status::Internal(fmt::format("matmul {}: rows out of range", w.name));
  if (nrows > 0 && !w.holds(row0, nrows))  // a plan/store mismatch, never user input
    return Status::Internal(
        fmt::format("matmul {}: rows [{}, {}) are not held by this rank", w.name, row0, row0 + nrows));
  const bool is_f32 = w.type == GgmlType::F32;
  if (!is_f32 && !quant::quant_fns(w.type).to_float)
    return Status::Unsupported(fmt::format("{}: no dequantizer for type {}", w.name, type_name(w.type)));
  const int64_t il = interleave_of(w.type);
  if (row0 % il != 0 || nrows % il != 0)
    return Status::Internal(fmt::format("matmul {}: rows not aligned to the interleave of {}", w.name, il));
  // Activations rounded as the peer's vec_dot_type rounds them (when the columns are whole blocks).
  std::vector<float> xq;
  if (activation_rounding(w.type) == ActivationRounding::kQ8_2 && c0 % 32 == 0 && (c1 - c0) % 32 == 0) {
    xq.resize(size_t(n_tok * (c1 - c0)));
    for (int64_t t = 0; t < n_tok; ++t) round_activations_q8_2(x + t * ldx, xq.data() + t * (c1 - c0), c1 - c0);
    x = xq.data();
    ldx = c1 - c0;
  } else if (w.type == GgmlType::F16) {  // vec_dot_type F16: activations rounded to F16
    xq.resize(size_t(n_tok * (c1 - c0)));
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t i = 0; i < c1 - c0; ++i)
        xq[size_t(t * (c1 - c0) + i)] = quant::fp16_to_f32(quant::f32_to_fp16(x[t * ldx + i]));
    x = xq.data();
    ldx = c1 - c0;
  }
  const int64_t tile = std::max<int64_t>(kTileRows / il, 1) * il;
  const int64_t n_tiles = (nrows + tile - 1) / tile;
  std::vector<std::vector<float>> scratch(size_t(pool.size()));
  std::mutex mu;
  Status first_error;
  pool.run(n_tiles, [&](int64_t ti, int thread) {
    const int64_t r0 = ti * tile, nr = std::min(tile, nrows - r0);
    const float* rows;
    int64_t ld = ne0;
    if (is_f32) {
      rows = reinterpret_cast<const float*>(w.row(row0 + r0));
      ld = w.row_bytes / int64_t(sizeof(float));
    } else {
      auto& buf = scratch[size_t(thread)];
      buf.resize(size_t(tile * ne0));
      Status s = quant::dequantize_rows(w.type, w.row(row0 + r0), buf.data(), nr, ne0, 1);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lk(mu);
        if (first_error.ok()) first_error = s.with_context(w.name);
        return;
      }
      rows = buf.data();
    }
    for (int64_t t = 0; t < n_tok; ++t) {
      const float* xt = x + t * ldx;
      float* yt = y + t * ldy + r0;
      for (int64_t r = 0; r < nr; ++r) yt[r] = k.dot_f32(rows + r * ld + c0, xt, c1 - c0);
    }
  });
  return first_error;
}

}  // namespace expertmesh::worker
