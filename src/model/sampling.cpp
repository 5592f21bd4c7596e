#include "model/sampling.h"

#include <algorithm>
#include <cmath>

namespace expertmesh {
namespace sampling {

namespace {
bool by_logit_desc(const Candidate& a, const Candidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}
bool is_sorted_desc(const std::vector<Candidate>& c) { return std::is_sorted(c.begin(), c.end(), by_logit_desc); }
void sort_desc(std::vector<Candidate>& c) {
  if (!is_sorted_desc(c)) std::sort(c.begin(), c.end(), by_logit_desc);
}
size_t keep_at_least(size_t min_keep) { return std::max<size_t>(min_keep, 1); }
}  // namespace

int32_t greedy(std::span<const float> logits) {
  // std::max_element returns the first maximum: the lowest id among ties, like the peer.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<Candidate> candidates(std::span<const float> logits) {
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  return c;
}

void softmax(std::vector<Candidate>& c) {
  if (c.empty()) return;
  sort_desc(c);
  const float max_l = c[0].logit;
  double sum = 0;
  for (auto& x : c) {
    x.p = std::exp(x.logit - max_l);
    sum += x.p;
  }
  for (auto& x : c) x.p = static_cast<float>(x.p / sum);
}

void top_k(std::vector<Candidate>& c, int32_t k, size_t min_keep) {
  if (c.empty()) return;
  size_t n = k <= 0 ? c.size() : static_cast<size_t>(k);
  n = std::min(std::max(n, keep_at_least(min_keep)), c.size());
  if (n < c.size()) {
    std::partial_sort(c.begin(), c.begin() + static_cast<long>(n), c.end(), by_logit_desc);
    c.resize(n);
  } else {
    sort_desc(c);
  }
}

void top_p(std::vector<Candidate>& c, float p, size_t min_keep) {
  if (p >= 1.0f || c.empty()) return;
  softmax(c);
  float cum = 0.0f;
  size_t last = c.size();
  for (size_t i = 0; i < c.size(); ++i) {
    cum += c[i].p;
    if (cum >= p && i + 1 >= keep_at_least(min_keep)) {
      last = i + 1;
      break;
    }
  }
  c.resize(last);
}

void min_p(std::vector<Candidate>& c, float p, size_t min_keep) {
  if (p <= 0.0f || c.empty()) return;
  sort_desc(c);
  const float min_logit = c[0].logit + std::log(p);  // p_i >= p * p_max
  size_t i = 1;                                      // the top token always stays
  for (; i < c.size(); ++i)
    if (c[i].logit < min_logit && i >= keep_at_least(min_keep)) break;
  c.resize(i);
}

void temperature(std::vector<Candidate>& c, float t) {
  for (auto& x : c) x.logit /= t;
}

int32_t draw(const std::vector<Candidate>& c, std::mt19937& rng) {
  if (c.size() == 1) return c[0].id;
  float max_l = c[0].logit;
  for (const auto& x : c) max_l = std::max(max_l, x.logit);
  std::vector<double> cum(c.size());
  double sum = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    sum += std::exp(static_cast<double>(c[i].logit - max_l));
    cum[i] = sum;
  }
  // 53-bit uniform in [0, 1) from two 32-bit draws: portable, unlike std::uniform_real_distribution.
  const uint64_t a = rng() >> 5, b = rng() >> 6;
  const double u = (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) * (1.0 / 9007199254740992.0);
  const double target = u * sum;
  size_t i = static_cast<size_t>(std::upper_bound(cum.begin(), cum.end(), target) - cum.begin());
  return c[std::min(i, c.size() - 1)].id;
}

void apply_logit_bias(std::span<float> logits, std::span<const std::pair<int32_t, float>> bias) {
  for (const auto& [id, b] : bias)
    if (id >= 0 && static_cast<size_t>(id) < logits.size()) logits[static_cast<size_t>(id)] += b;
}

void apply_penalties(std::span<float> logits, std::span<const int32_t> last, const SamplingParams& p) {
  if (last.empty() || !p.penalties_on()) return;
  // Distinct tokens with their counts: sorting a copy of the window is cheaper than a map here.
  std::vector<int32_t> seen(last.begin(), last.end());
  std::sort(seen.begin(), seen.end());
  for (size_t i = 0; i < seen.size();) {
    size_t j = i;
    while (j < seen.size() && seen[j] == seen[i]) ++j;
    const int32_t id = seen[i];
    const int count = static_cast<int>(j - i);
    i = j;
    if (id < 0 || static_cast<size_t>(id) >= logits.size() || id == p.penalty_exempt) continue;
    float& l = logits[static_cast<size_t>(id)];
    l = l <= 0.0f ? l * p.repeat_penalty : l / p.repeat_penalty;
    l -= static_cast<float>(count) * p.frequency_penalty + p.presence_penalty;
  }
}

}  // namespace sampling

void Sampler::accept(int32_t id) {
  if (p_.repeat_last_n == 0) return;
  last_.push_back(id);
  // The window is small (64 by default) next to a forward pass: shifting it costs nothing, and
  // a contiguous window goes to apply_penalties without a copy.
  if (p_.repeat_last_n > 0 && last_.size() > static_cast<size_t>(p_.repeat_last_n)) last_.erase(last_.begin());
}

int32_t Sampler::sample(std::span<const float> raw) {
  std::span<const float> logits = raw;
  if (!p_.logit_bias.empty() || (p_.penalties_on() && !last_.empty())) {
    adjusted_.assign(raw.begin(), raw.end());
    sampling::apply_logit_bias(adjusted_, p_.logit_bias);
    sampling::apply_penalties(adjusted_, last_, p_);
    logits = adjusted_;
  }
  if (p_.temp <= 0.0f) return sampling::greedy(logits);
  const size_t min_keep = static_cast<size_t>(std::max(p_.min_keep, 1));
  cand_ = sampling::candidates(logits);
  sampling::top_k(cand_, p_.top_k, min_keep);
  sampling::top_p(cand_, p_.top_p, min_keep);
  sampling::min_p(cand_, p_.min_p, min_keep);
  sampling::temperature(cand_, p_.temp);
  return sampling::draw(cand_, rng_);
}

}  // namespace expertmesh
