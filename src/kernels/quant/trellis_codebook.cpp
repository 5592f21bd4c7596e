// Codebooks of the trellis quantizers and their nearest-seed search: a port of ik's QuantizerIQKT
// (iqk_quantize.cpp) that reproduces its choices exactly, including the float summation order of
// its AVX2 code (whose horizontal sums are written out below) and its tie-breaking.
//
// A codebook holds every seed's group of trellis values. To keep the search affordable the seeds
// are partitioned into clusters: a point (a group of x/d) is binned into one cluster by comparing
// each coordinate with fixed thresholds, and only that cluster's seeds are scored. A seed belongs
// to the clusters of its `num_neighbours` nearest centroids, and every cluster is padded with the
// nearest outside seeds to a multiple of 8 (the AVX2 search scores 8 candidates at a time).
#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <utility>

#include "kernels/quant/trellis_internal.h"

// No implicit fusions: every FMA of ik's build is spelled out with std::fma (see iqk_k_common.h).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// Hot loops get a second copy for newer x86-64 hardware, picked at run time: AVX2 (8-wide) for the
// search, FMA instructions for the loops full of std::fma. The results are identical: contraction
// is off, so the copies differ only in vector width and in std::fma being an instruction instead
// of a (correctly rounded) libm call.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EM_TRELLIS_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#define EM_TRELLIS_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define EM_TRELLIS_AVX2_CLONES
#define EM_TRELLIS_FMA_CLONES
#endif

namespace expertmesh::quant::trellis {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Candidate (within a run of 8) scored in SIMD lane l. ik's group-8 search loads 8 candidates'
// groups and sums each one per lane; its group-4 search packs two candidates per register, so its
// lanes hold candidates 0,2,4,6,1,3,5,7.
constexpr int kCandOfLane8[8] = {0, 1, 2, 3, 4, 5, 6, 7};
constexpr int kCandOfLane4[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// ik's 625-cluster binning of a group-4 coordinate (QuantizerIQKT::bin5, non-abs).
inline int bin5(float x) { return x < -48.f ? 0 : x < -16.f ? 1 : x < 16.f ? 2 : x < 48.f ? 3 : 4; }

// Squared distance with ik's build's roundings (each step fused into the running sum).
inline float dist2(const float* a, const float* b, int n) {
  float s = 0;
  for (int k = 0; k < n; ++k) {
    const float d = a[k] - b[k];
    s = std::fma(d, d, s);
  }
  return s;
}

// Lays out `points` (indices into values, or all seeds when null) lane-major, see Codebook::lanes.
std::vector<float> to_lanes(const Codebook& cb, const std::vector<int>* points, int npoint) {
  const int* lane_cand = cb.group == 8 ? kCandOfLane8 : kCandOfLane4;
  std::vector<float> out(static_cast<size_t>(npoint) * cb.group);
  for (int run = 0; run < npoint / 8; ++run) {
    for (int lane = 0; lane < 8; ++lane) {
      const int c = 8 * run + lane_cand[lane];
      const float* v = cb.seed_values(points ? (*points)[c] : c);
      for (int k = 0; k < cb.group; ++k) out[(static_cast<size_t>(run) * cb.group + k) * 8 + lane] = v[k];
    }
  }
  return out;
}

// Cluster of a point already divided by d.
inline int cluster_of(const Codebook& cb, const float* xs) {
  int u = 0;
  if (cb.group == 8) {
    for (int k = 0; k < 8; ++k)
      if (xs[k] > cb.mid[k]) u |= 1 << k;
  } else {
    for (int k = 0, s = 1; k < 4; ++k, s *= 5) u += s * bin5(xs[k]);
  }
  return u;
}

// ik's QuantizerIQKT constructor: values, centroids (cluster_points) and memberships
// (finalize_clusters), for the two binnings the KT types use.
EM_TRELLIS_FMA_CLONES Codebook build(int group, int num_bits, bool is_abs, uint32_t offset, int num_neighbours) {
  Codebook cb;
  cb.group = group;
  cb.num_seeds = 1 << num_bits;
  cb.is_abs = is_abs;
  cb.num_clusters = group == 8 ? 256 : 625;
  const int n = cb.num_seeds;
  cb.values.resize(static_cast<size_t>(n) * group);
  for (int i = 0; i < n; ++i) {
    int v[8];
    trellis_values(static_cast<uint32_t>(i), offset, group, v);
    for (int k = 0; k < group; ++k) cb.values[static_cast<size_t>(i) * group + k] = float(is_abs ? std::abs(v[k]) : v[k]);
  }

  // Split points of the group-8 binning: the median of each coordinate (abs) or the middle of
  // its range. (ik computes them for group 4 too, where the fixed bin5 thresholds are used.)
  for (int k = 0; k < group; ++k) {
    if (is_abs) {
      std::vector<int> p(n);
      for (int i = 0; i < n; ++i) p[i] = static_cast<int>(cb.values[static_cast<size_t>(i) * group + k]);
      std::sort(p.begin(), p.end());
      cb.mid[k] = n % 2 == 0 ? 0.5f * float(p[n / 2] + p[n / 2 - 1]) : float(p[n / 2]);
    } else {
      float lo = kInf, hi = -kInf;
      for (int i = 0; i < n; ++i) {
        lo = std::min(lo, cb.values[static_cast<size_t>(i) * group + k]);
        hi = std::max(hi, cb.values[static_cast<size_t>(i) * group + k]);
      }
      cb.mid[k] = 0.5f * (lo + hi);
    }
  }

  // Centroids: the mean of each bin's points (summed in seed order); empty bins stay at 0.
  const int nc = cb.num_clusters;
  std::vector<float> sump(static_cast<size_t>(nc) * group, 0.f), centroids(static_cast<size_t>(nc) * group, 0.f);
  std::vector<int> counts(nc, 0);
  for (int i = 0; i < n; ++i) {
    const float* v = cb.seed_values(i);
    const int u = cluster_of(cb, v);
    ++counts[u];
    for (int k = 0; k < group; ++k) sump[static_cast<size_t>(u) * group + k] += v[k];
  }
  for (int c = 0; c < nc; ++c)
    if (counts[c])
      for (int k = 0; k < group; ++k)
        centroids[static_cast<size_t>(c) * group + k] = sump[static_cast<size_t>(c) * group + k] / float(counts[c]);

  // Memberships: each seed joins its num_neighbours nearest centroids (ties: the lower cluster).
  cb.in_cluster.assign(nc, {});
  std::vector<int> which(static_cast<size_t>(n) * num_neighbours);
  std::vector<float> best(num_neighbours);
  std::vector<int> ibest(num_neighbours);
  for (int i = 0; i < n; ++i) {
    const float* v = cb.seed_values(i);
    std::fill(best.begin(), best.end(), kInf);
    std::fill(ibest.begin(), ibest.end(), -1);
    for (int c = 0; c < nc; ++c) {
      const float d2 = dist2(v, centroids.data() + static_cast<size_t>(c) * group, group);
      for (int j = 0; j < num_neighbours; ++j) {
        if (d2 < best[j]) {
          for (int m = num_neighbours - 1; m > j; --m) {
            best[m] = best[m - 1];
            ibest[m] = ibest[m - 1];
          }
          best[j] = d2;
          ibest[j] = c;
          break;
        }
      }
    }
    for (int j = 0; j < num_neighbours; ++j) {
      cb.in_cluster[ibest[j]].push_back(i);
      which[static_cast<size_t>(i) * num_neighbours + j] = ibest[j];
    }
  }
  // Pad every non-empty cluster to a multiple of 8 with the nearest seeds not yet in it.
  std::vector<std::pair<float, int>> extra;
  for (int c = 0; c < nc; ++c) {
    auto& points = cb.in_cluster[c];
    if (points.empty() || points.size() % 8 == 0) continue;
    extra.clear();
    const float* vc = centroids.data() + static_cast<size_t>(c) * group;
    for (int i = 0; i < n; ++i) {
      const int* w = which.data() + static_cast<size_t>(i) * num_neighbours;
      if (std::find(w, w + num_neighbours, c) != w + num_neighbours) continue;
      extra.emplace_back(dist2(cb.seed_values(i), vc, group), i);
    }
    // The (distance, seed) pairs are totally ordered: the nadd smallest are those of a full sort.
    const size_t nadd = 8 * ((points.size() + 7) / 8) - points.size();
    std::partial_sort(extra.begin(), extra.begin() + static_cast<std::ptrdiff_t>(nadd), extra.end());
    for (size_t i = 0; i < nadd; ++i) points.push_back(extra[i].second);
  }
  cb.lanes.resize(nc);
  for (int c = 0; c < nc; ++c)
    cb.lanes[c] = to_lanes(cb, &cb.in_cluster[c], static_cast<int>(cb.in_cluster[c].size()));
  cb.all_lanes = to_lanes(cb, nullptr, n);
  return cb;
}

// 8 lanes, one candidate each (GCC/clang vector extension: element-wise IEEE arithmetic, two SSE
// registers by default, one AVX2 register in the AVX2 copy).
typedef float V8f __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

// (Helpers take the vector by reference: returning one by value changes the ABI per target.)
[[gnu::always_inline]] inline void load8(V8f& v, const float* p) { std::memcpy(&v, p, sizeof(v)); }
[[gnu::always_inline]] inline void splat(V8f& v, float x) { v = V8f{x, x, x, x, x, x, x, x}; }

// Index (into the candidate list) of the best-scoring candidate. A candidate's score is
// sum over its group of w * (q - xs)^2, added in the order of ik's horizontal sums
// (hsum_float_8x8: ((0+4)+(2+6))+((1+5)+(3+7)); hsum_float_4x8: (0+2)+(1+3)). As in ik, each lane
// keeps its first strict minimum (the minimum itself with _mm256_min_ps semantics), then the lanes
// are compared in order. -1 if every score is NaN or +inf.
template <int G>
[[gnu::always_inline]] inline int search(const float* lanes, int ncand, const float* xs, const float* w) {
  const int* lane_cand = G == 8 ? kCandOfLane8 : kCandOfLane4;
  V8f vx[G], vw[G];
  for (int k = 0; k < G; ++k) {
    splat(vx[k], xs[k]);
    splat(vw[k], w[k]);
  }
  V8f best;
  splat(best, kInf);
  V8i index = {-1, -1, -1, -1, -1, -1, -1, -1};
  V8i cand = {lane_cand[0], lane_cand[1], lane_cand[2], lane_cand[3],
              lane_cand[4], lane_cand[5], lane_cand[6], lane_cand[7]};
  const V8i step = {8, 8, 8, 8, 8, 8, 8, 8};
  for (int run = 0; run < ncand / 8; ++run, cand += step) {
    const float* r = lanes + static_cast<size_t>(run) * G * 8;
    V8f v[G];
    for (int k = 0; k < G; ++k) {
      V8f q;
      load8(q, r + 8 * k);
      const V8f diff = q - vx[k];
      v[k] = vw[k] * (diff * diff);
    }
    V8f score;
    if constexpr (G == 8) {
      score = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    } else {
      score = (v[0] + v[2]) + (v[1] + v[3]);
    }
    const V8i better = score < best;  // all ones where the lane improves
    index = (better & cand) | (~better & index);
    const V8i keep = best < score;  // _mm256_min_ps(best, score)
    V8i bb, sb;
    std::memcpy(&bb, &best, sizeof(bb));
    std::memcpy(&sb, &score, sizeof(sb));
    const V8i mb = (keep & bb) | (~keep & sb);
    std::memcpy(&best, &mb, sizeof(best));
  }
  float b = kInf;
  int jbest = -1;
  for (int l = 0; l < 8; ++l) {
    if (best[l] < b) {
      b = best[l];
      jbest = index[l];
    }
  }
  return jbest;
}

template <int G>
[[gnu::always_inline]] inline void find_best_match_impl(const Codebook& cb, float d, const float* xb, const float* w, int* best_idx) {
  constexpr int kNg = kSubBlock / G;
  if (d == 0) {
    std::fill(best_idx, best_idx + kNg, 0);
    return;
  }
  const float id = 1 / d;
  for (int l = 0; l < kNg; ++l) {
    float xs[G];
    for (int k = 0; k < G; ++k) xs[k] = id * xb[G * l + k];
    const int c = cluster_of(cb, xs);
    const auto& points = cb.in_cluster[c];
    int j;
    if (points.empty()) {
      j = search<G>(cb.all_lanes.data(), cb.num_seeds, xs, w + G * l);
    } else {
      j = search<G>(cb.lanes[c].data(), static_cast<int>(points.size()), xs, w + G * l);
      if (j >= 0) j = points[j];
    }
    best_idx[l] = j < 0 ? 0 : j;  // ik asserts here; only non-finite weights can get here
  }
}

}  // namespace

EM_TRELLIS_AVX2_CLONES void Codebook::find_best_match(float d, const float* xb, const float* w, int* best_idx) const {
  if (group == 8) {
    find_best_match_impl<8>(*this, d, xb, w, best_idx);
  } else {
    find_best_match_impl<4>(*this, d, xb, w, best_idx);
  }
}

EM_TRELLIS_FMA_CLONES void Codebook::find_best_scale(const float* xb, const float* w, const int* idx, float* scale,
                                                 float* score) const {
  // ik: 8 lanes, position p = 8t + l accumulates into lane l with fused multiply-adds of q*w.
  float qx[8] = {}, q2[8] = {};
  for (int t = 0; t < kSubBlock / 8; ++t) {
    for (int l = 0; l < 8; ++l) {
      const int p = 8 * t + l;
      const float q = seed_values(idx[p / group])[p % group];
      const float qw = q * w[p];
      qx[l] = std::fma(qw, xb[p], qx[l]);
      q2[l] = std::fma(qw, q, q2[l]);
    }
  }
  auto hsum = [](const float* v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); };
  const float sumqx = hsum(qx), sumq2 = hsum(q2);
  if (sumq2 > 0) {
    *scale = sumqx / sumq2;
    *score = sumqx * sumqx / sumq2;
  } else {
    *scale = 0;
    *score = 0;
  }
}

// ik's quantizers: IQ1_KT 256 clusters x 32 neighbours, IQ2_KT / IQ3_KT 256 x 8, IQ4_KT 625 x 6
// (one codebook per offset). Function-local statics: built on first use, thread-safe.
const Codebook& codebook_iq1kt() {
  static const Codebook cb = build(8, 13, false, kOffset, 32);
  return cb;
}
const Codebook& codebook_iq2kt() {
  static const Codebook cb = build(8, 16, false, kOffset, 8);
  return cb;
}
const Codebook& codebook_iq3kt() {
  static const Codebook cb = build(8, 16, true, kOffset, 8);
  return cb;
}
const Codebook& codebook_iq4kt(bool alt_offset) {
  static const Codebook cb1 = build(4, 15, false, kOffset, 6);
  static const Codebook cb2 = build(4, 15, false, kIq4AltOffset, 6);
  return alt_offset ? cb2 : cb1;
}

void set_weights(int nblock, const float* x, const float* imatrix, float* weights, bool vectorized) {
  constexpr float kSigmaScale = 2.0f;
  constexpr float kEps2 = 1e-14f;
  constexpr float kTinyWeight = 1e-4f;
  for (int ibl = 0; ibl < nblock; ++ibl) {
    const float* xbl = x + ibl * kQK;
    float* wbl = weights + ibl * kQK;
    // ik's build vectorizes this sum as an in-order reduction: the squares are rounded, not fused.
    float sumx2 = 0;
    for (int j = 0; j < kQK; ++j) sumx2 += xbl[j] * xbl[j];
    if (sumx2 < kEps2 * kQK) {  // the whole block is (almost) zero
      std::fill(wbl, wbl + kQK, kTinyWeight);
      continue;
    }
    const float sigma2 = kSigmaScale * sumx2 / kQK;
    if (imatrix) {
      for (int ib = 0; ib < kNumSub; ++ib) {
        const float* qw = imatrix + ibl * kQK + ib * kSubBlock;
        const float* xb = xbl + ib * kSubBlock;
        float* wb = wbl + ib * kSubBlock;
        float sumwx = 0, sumw2 = 0, sumx2b = 0;
        if (vectorized) {
          // Vectorized in ik's build of this quantizer: nothing is fused, the sums are in order.
          for (int j = 0; j < kSubBlock; ++j) {
            wb[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
            sumwx += wb[j] * std::abs(xb[j]);
            sumw2 += wb[j] * wb[j];
            sumx2b += xb[j] * xb[j];
          }
        } else {
          for (int j = 0; j < kSubBlock; ++j) {
            wb[j] = qw[j] * std::sqrt(std::fma(xb[j], xb[j], sigma2));
            sumwx = std::fma(wb[j], std::abs(xb[j]), sumwx);
            sumw2 = std::fma(wb[j], wb[j], sumw2);
            sumx2b = std::fma(xb[j], xb[j], sumx2b);
          }
        }
        if (sumx2b < kEps2 || sumw2 < kEps2 || sumwx < kEps2) std::fill(wb, wb + kSubBlock, kTinyWeight);
      }
    } else {
      for (int j = 0; j < kQK; ++j) wbl[j] = std::fma(xbl[j], xbl[j], 0.25f * sigma2);
    }
  }
}

}  // namespace expertmesh::quant::trellis
