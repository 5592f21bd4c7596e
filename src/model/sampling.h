// Token sampling from a row of logits, following the peer's (ik_llama.cpp common/sampling.cpp,
// src/llama-sampling.cpp) semantics for the samplers we support.
//
// Chain (the peer's default samplers_sequence restricted to what we implement; tfs_z and
// typical_p are disabled at their defaults there, so skipping them changes nothing):
//     top_k -> top_p -> min_p -> temperature -> draw
// i.e. the truncations see the *untempered* distribution and temperature only reshapes what
// survives, exactly as in the peer. temp == 0 (or < 0) is greedy: argmax of the raw logits,
// ties to the lowest token id (std::max_element over ids in order, as the peer does).
//
// Each truncation keeps at least min_keep (>= 1) candidates. Parameters at their "off" values:
// top_k <= 0, top_p >= 1, min_p <= 0.
//
// Determinism: a Sampler owns a std::mt19937 seeded once from SamplingParams::seed; the same
// seed, parameters and logits give the same sequence of choices on any machine (the draw uses
// our own uniform mapping of the engine output, not std::uniform_*_distribution, whose
// results are implementation-defined).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace expertmesh {

struct SamplingParams {
  float temp = 0.8f;     // <= 0: greedy
  int32_t top_k = 40;    // <= 0: off (whole vocabulary)
  float top_p = 0.95f;   // >= 1: off
  float min_p = 0.05f;   // <= 0: off
  uint32_t seed = 0;
  int32_t min_keep = 1;  // every truncation keeps at least this many (values < 1 act as 1)
};

// One candidate token. `p` is valid only after softmax().
struct Candidate {
  int32_t id;
  float logit;
  float p;
};

namespace sampling {

// Argmax of `logits`, lowest index among equal maxima. Requires a non-empty span.
int32_t greedy(std::span<const float> logits);

// All ids 0..n-1 with their logits, in id order (unsorted).
std::vector<Candidate> candidates(std::span<const float> logits);

// Sorts by logit descending (stable: equal logits keep ascending id) and sets p to the
// normalised softmax of the logits.
void softmax(std::vector<Candidate>& c);
// Keeps the k largest logits (k <= 0: all), sorted descending.
void top_k(std::vector<Candidate>& c, int32_t k, size_t min_keep);
// Keeps the shortest descending prefix whose probability mass (softmax over the current
// candidates) reaches p; p >= 1 leaves c unchanged.
void top_p(std::vector<Candidate>& c, float p, size_t min_keep);
// Keeps candidates with p_i >= p * p_max (i.e. logit_i >= logit_max + ln p); p <= 0 leaves c
// unchanged. Output sorted descending.
void min_p(std::vector<Candidate>& c, float p, size_t min_keep);
// Divides every logit by t (t > 0).
void temperature(std::vector<Candidate>& c, float t);
// Draws one id with probability proportional to exp(logit - max) using `rng`. Non-empty c.
int32_t draw(const std::vector<Candidate>& c, std::mt19937& rng);

}  // namespace sampling

// The sampler chain with its RNG. Not thread-safe (owns mutable RNG state).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  const SamplingParams& params() const { return p_; }
  // One token id from a row of n_vocab logits (non-empty).
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams p_;
  std::mt19937 rng_;
  std::vector<Candidate> cand_;
};

}  // namespace expertmesh
