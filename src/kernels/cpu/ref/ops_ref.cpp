// Scalar reference kernels: the specification every SIMD variant is tested against.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"

namespace expertmesh::cpu {
namespace {

float dot_ref(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_ref(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void rmsnorm_ref(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);  // float square, double sum (ggml)
  const float mean = float(sum / double(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w ? (scale * w[i]) * x[i] : x[i] * scale;  // ggml fused_rms_norm order
}

void softmax_ref(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (!(mx > -std::numeric_limits<float>::infinity())) {  // fully masked (or empty / NaN max)
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - mx);
    x[i] = e;
    sum += e;
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu_ref(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void rope_ref(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs, RopeMode mode) {
  const int64_t half = n_rot / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const int64_t a = mode == RopeMode::kNormal ? 2 * i : i;
      const int64_t b = mode == RopeMode::kNormal ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

}  // namespace

void rope_cache(int64_t pos, int64_t n_rot, float freq_base, float freq_scale, float* cs) {
  const float theta_scale = std::pow(freq_base, -2.0f / float(n_rot));
  float theta_extrap = float(pos);  // ggml: theta_interp = freq_scale * theta_extrap (no YaRN)
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const float theta = freq_scale * theta_extrap;
    cs[2 * i] = std::cos(theta);
    cs[2 * i + 1] = std::sin(theta);
    theta_extrap *= theta_scale;
  }
}

const Kernels& ref_kernels() {
  static const Kernels k = [] {
    Kernels r{Isa::kScalar, "scalar", dot_ref, axpy_ref, rmsnorm_ref, softmax_ref, swiglu_ref, rope_ref};
    r.gemm = &gemm_table(Isa::kScalar);
    return r;
  }();
  return k;
}

}  // namespace expertmesh::cpu
