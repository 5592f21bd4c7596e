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
// Before the chain (and before greedy, as in the peer) the raw logits are adjusted:
//   1. logit_bias: bias added to the token's logit (-inf bans it);
//   2. penalties over the last repeat_last_n tokens passed to Sampler::accept() (the server
//      passes the prompt and every generated token, as llama-server does): for each distinct
//      token seen c times, logit /= repeat_penalty when positive (*= when not), then
//      logit -= c * frequency_penalty + presence_penalty. penalty_exempt (the newline token when
//      penalize_nl is off, the peer's default) keeps its biased logit.
// Off values: no biases; repeat_penalty 1 and both other penalties 0, or repeat_last_n 0. With
// everything off the result is bit-identical to the plain chain.
//
// Where we differ from the peer on purpose: its history after a reset keeps only the last token
// (common_sampler_accept erases one before pushing into an empty-then-size-1 vector, unless a
// grammar resized it), so its penalties see one token; ours see the whole window asked for.
//
// Determinism: a Sampler owns a std::mt19937 seeded once from SamplingParams::seed; the same
// seed, parameters and logits give the same sequence of choices on any machine (the draw uses
// our own uniform mapping of the engine output, not std::uniform_*_distribution, whose
// results are implementation-defined).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace expertmesh {

struct SamplingParams {
  float temp = 0.8f;    // <= 0: greedy
  int32_t top_k = 40;   // <= 0: off (whole vocabulary)
  float top_p = 0.95f;  // >= 1: off
  float min_p = 0.05f;  // <= 0: off
  uint32_t seed = 0;
  int32_t min_keep = 1;  // every truncation keeps at least this many (values < 1 act as 1)

  int32_t repeat_last_n = 64;   // penalty window in tokens; 0: off; -1: every token accepted
  float repeat_penalty = 1.0f;  // > 0; 1: off
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t penalty_exempt = -1;                        // token id the penalties leave alone; -1: none
  std::vector<std::pair<int32_t, float>> logit_bias;  // (id, bias) added in order; ids in [0, n_vocab)

  bool penalties_on() const {
    return repeat_last_n != 0 && (repeat_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f);
  }
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
// Adds each (id, bias) to logits[id]; ids outside the row are ignored.
void apply_logit_bias(std::span<float> logits, std::span<const std::pair<int32_t, float>> bias);
// The repetition, frequency and presence penalties for the tokens in `last` (see above).
void apply_penalties(std::span<float> logits, std::span<const int32_t> last, const SamplingParams& p);

}  // namespace sampling

// The sampler chain with its RNG. Not thread-safe (owns mutable RNG state).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  const SamplingParams& params() const { return p_; }
  // One token id from a row of n_vocab logits (non-empty). Does not accept() it.
  int32_t sample(std::span<const float> logits);
  // Records a token the penalties should see (a prompt token or the sampled one).
  void accept(int32_t id);

 private:
  SamplingParams p_;
  std::mt19937 rng_;
  std::vector<Candidate> cand_;
  std::vector<float> adjusted_;  // the logits after bias and penalties
  std::vector<int32_t> last_;    // the penalty window, oldest first (at most repeat_last_n when > 0)
};

}  // namespace expertmesh
