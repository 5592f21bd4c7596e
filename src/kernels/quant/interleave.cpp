// Row-interleaved types: registration of every _R4 / _R8 / _R16 type (the per-family repack
// layouts are in interleave_legacy / _kquants / _iquants / _iqk / _iq1.cpp, the generic
// machinery in interleave_internal.h) and the imatrix sanitising of the peer's QHelper.
#include "kernels/quant/interleave_internal.h"

namespace expertmesh::quant {
namespace interleave {

void sanitise_weights(const float* imatrix, const float* x, int64_t n, int block, float* out) {
  constexpr float kEps = 1e-9f;
  constexpr float kEps2 = kEps * kEps;
  for (int64_t ib = 0; ib < n / block; ++ib) {
    const float* w = imatrix + ib * block;
    const float* xb = x + ib * block;
    float* wb = out + ib * block;
    float sumw2 = 0, sumx2 = 0, sumwx = 0;
    for (int j = 0; j < block; ++j) {
      wb[j] = w[j];
      sumw2 += w[j] * w[j];
      sumx2 += xb[j] * xb[j];
      sumwx += w[j] * std::fabs(xb[j]);
    }
    const float limit = static_cast<float>(block) * kEps2;
    if (sumw2 > limit && sumx2 > limit && sumwx > limit) continue;
    for (int j = 0; j < block; ++j) wb[j] = kEps;
  }
}

}  // namespace interleave

// Runs after every base family: an interleaved type gets to_float / quantize only where its base
// type has them (register_spec reads the base entries from t).
void register_interleaved(QuantTable& t) {
  interleave::register_interleaved_legacy(t);
  interleave::register_interleaved_kquants(t);
  interleave::register_interleaved_iquants(t);
  interleave::register_interleaved_iqk(t);
  interleave::register_interleaved_iq1(t);
}

}  // namespace expertmesh::quant
