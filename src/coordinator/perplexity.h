// `expertmesh perplexity`: the peer's llama-perplexity, computed the same way (inventory §5.1):
// tokenize the whole file once (with BOS as the vocabulary says), cut non-overlapping windows of
// n_ctx tokens, overwrite each window's first token with BOS, evaluate it from an empty cache,
// score positions n_ctx/2 .. n_ctx-2 against the next token (NLL in double with max
// subtraction), print `[i]ppl,` per chunk and `Final estimate: PPL over N chunks for n_ctx=C =
// X +/- Y`. With kld_base_file set it also writes the peer's `_logits_` file (§5.2);
// kl_divergence() in kld.h reads one back and compares.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine.h"

namespace expertmesh::coordinator {

struct PerplexityOptions {
  std::string text_file;      // -f
  int64_t n_ctx = 512;        // -c
  int64_t n_batch = 2048;     // -b
  int64_t n_chunks = -1;      // --chunks (-1: all)
  std::string kld_base_file;  // --kl-divergence-base: written by perplexity, read by kl_divergence
};

struct PerplexityResult {
  int64_t n_chunk = 0;
  int64_t n_ctx = 0;
  double ppl = 0;
  double ppl_err = 0;
  std::vector<double> running_ppl;
};

// Evaluates one window of n_ctx tokens from an empty cache (first token replaced by `bos` when
// bos >= 0), in batches of n_batch, and returns the logits of positions first .. n_ctx-1
// ((n_ctx - first) × n_vocab).
Result<std::vector<float>> eval_window(worker::Engine& e, std::span<const int32_t> window, int32_t bos, int64_t n_batch,
                                       int64_t first);

Result<PerplexityResult> perplexity(worker::Engine& e, const Tokenizer& tok, const PerplexityOptions& opt, FILE* out);

}  // namespace expertmesh::coordinator
