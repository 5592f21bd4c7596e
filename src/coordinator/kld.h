// KL-divergence against a base model, in the peer's `_logits_` file format (inventory §5.2):
//   "_logits_" | u32 n_ctx | i32 n_vocab | i32 n_chunk | i32 tokens[n_chunk*n_ctx] |
//   per chunk, per scored position (n_ctx-1-n_ctx/2 rows): nv = 2*((n_vocab+1)/2)+4 u16 words,
//   the first 4 holding f32 scale and f32 min_log_prob, then n_vocab u16 q_i with
//   log p_i ≈ scale*q_i + min_log_prob (logits more than 24 below the max clamp to q = 0).
// kl_divergence() re-evaluates the file's tokens and prints the peer's per-chunk table and its
// Perplexity / KL divergence / Token probability statistics blocks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/perplexity.h"

namespace expertmesh::coordinator {

class LogitsWriter {
 public:
  static Result<std::unique_ptr<LogitsWriter>> create(const std::string& path, int64_t n_ctx, int64_t n_vocab,
                                                      int64_t n_chunk, const std::vector<int32_t>& tokens);
  // logits: n_token rows (+1 unused) of n_vocab; next: the tokens each row predicts is next[i+1].
  Status write_chunk(const float* logits, const int32_t* cur, int64_t n_token);
  Status close();

 private:
  std::string path_;
  std::ofstream out_;
  int64_t n_vocab_ = 0;
};

// Quantizes one row of logits to the file's u16 log-prob form (nv words). Returns the NLL of tok.
double encode_log_probs(const float* logits, int64_t n_vocab, int32_t tok, uint16_t* out);

struct KldSummary {
  double ppl = 0, ppl_base = 0;
  double ppl_err = 0, ppl_base_err = 0;  // the ± of the Mean PPL(Q) / PPL(base) lines
  double kld_mean = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double same_top_p = 0;  // percent
  double rms_dp = 0;      // percent
  int64_t count = 0;
};

Result<KldSummary> kl_divergence(worker::Engine& e, const Tokenizer& tok, const PerplexityOptions& opt, FILE* out);

}  // namespace expertmesh::coordinator
