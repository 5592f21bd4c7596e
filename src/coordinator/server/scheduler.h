// Continuous batching for `expertmesh serve` (ARCHITECTURE.md §5): a fixed set of slots, each
// with its own sequence in the engine's KV cache; every step gathers one decode row from each
// generating slot plus chunks of waiting prompts (up to n_batch rows) into ONE batch, so a long
// prompt never stalls the others and every active request advances once per step.
//
// Threads: HTTP handler threads call submit()/cancel()/snapshot() (thread-safe); exactly one
// thread — rank 0's main thread, the one that drives the engine — calls run(). Events for a
// request are delivered on the run() thread, in order, through the request's sink; a sink that
// returns false (client gone) frees the slot before the next step.
//
// Results do not depend on batching: a row's logits depend only on its own token, position and
// sequence (per-row matmuls, per-sequence attention over exactly the keys at or before it), and
// each request samples with its own RNG seeded from its seed, so a request gives the same tokens
// alone and among 8 concurrent ones (tests/server/scheduler_test.cpp checks this).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/http/openai_response.h"
#include "model/sampling.h"
#include "model/tokenizer/tokenizer.h"

namespace expertmesh::coordinator::server {

// One forward of a multi-sequence batch (worker::Engine::decode_batch on rank 0): row i is
// token[i] at position pos[i] of sequence seq[i]; writes out_rows.size() × n_vocab logits.
using DecodeFn = std::function<Status(std::span<const int32_t> tokens, std::span<const int32_t> pos,
                                      std::span<const int32_t> seq, std::span<const int64_t> out_rows, float* logits)>;

struct SchedulerOptions {
  int32_t n_slots = 1;        // --parallel: concurrent sequences (engine sequences 0..n_slots-1)
  int64_t n_ctx_slot = 4096;  // positions per slot (the peer: -c / --parallel)
  int64_t n_batch = 512;      // most rows in one step (-b); decode rows first, then prompt chunks
  size_t max_queued = 256;    // waiting requests beyond this: submit() fails (HTTP 503)
  bool cache_prompt = true;   // reuse the longest common prefix a free slot still holds
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, non-empty (BOS already added as the endpoint wants)
  int32_t n_predict = -1;       // -1: until end-of-generation or the slot's context is full
  SamplingParams sampling;      // seed already resolved (no "random" here)
  std::vector<std::string> stop;
  int32_t n_probs = 0;      // > 0: each token event carries log-probabilities and this many alternatives
  bool ignore_eos = false;  // keep generating through end-of-generation tokens
  int32_t id_slot = -1;     // the peer's id_slot: a specific slot, -1 any
};

struct GenerationEvent {
  enum class Kind { kToken, kDone, kError };
  Kind kind = Kind::kToken;
  // kToken: text that is final (never a prefix of a stop string, never a partial UTF-8
  // character); may be empty when held back. `probs`: one entry per token consumed since the
  // previous event's (n_probs > 0 only), with logprob of the chosen token and `top` sorted.
  std::string text;
  std::vector<http::TokenLogprob> probs;
  // kDone: why it ended and the counts (also set on kError where known).
  http::FinishReason finish = http::FinishReason::kStop;
  bool stopped_eos = false, stopped_word = false, stopped_limit = false;
  std::string stopping_word;
  int32_t slot = -1;
  int64_t n_prompt = 0;     // prompt tokens of the request
  int64_t n_cached = 0;     // of which reused from the slot's cache
  int64_t n_predicted = 0;  // generated tokens (EOG and stop-string tokens included)
  http::Timings timings;
  Status error;  // kError: why (the request failed; the server goes on unless decode failed)
};

// Called on the run() thread; must not block for long. Returns false when the client is gone.
using EventSink = std::function<bool(const GenerationEvent&)>;

// Read-only view for /slots, /metrics and /health.
struct SlotInfo {
  int32_t id = 0;
  bool busy = false;
  uint64_t request = 0;  // current request id (busy only)
  int64_t n_prompt = 0, n_past = 0, n_predicted = 0;
  int64_t n_cached_tokens = 0;  // tokens this slot's cache holds (reusable prefix)
};
struct SchedulerStats {
  std::vector<SlotInfo> slots;
  size_t queued = 0;
  uint64_t requests_total = 0, requests_failed = 0, requests_cancelled = 0;
  uint64_t prompt_tokens_total = 0, predicted_tokens_total = 0, cached_tokens_total = 0;
  uint64_t decode_steps = 0;
  double prompt_seconds_total = 0, predicted_seconds_total = 0;  // time in steps, split by rows
  int64_t n_ctx_slot = 0, n_batch = 0;
};

class Scheduler {
 public:
  // `tok` (not owned) outlives the scheduler. n_vocab: the engine's logit row width.
  Scheduler(DecodeFn decode, const Tokenizer& tok, int64_t n_vocab, SchedulerOptions opt);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Thread-safe. Queues a request and returns its id. Errors: kInvalidArgument (empty prompt,
  // prompt longer than the slot context, id_slot out of range: HTTP 400), kUnsupported when the
  // queue is full (HTTP 503), kAborted after shutdown().
  Result<uint64_t> submit(GenerationRequest req, EventSink sink);
  // Thread-safe. Drops a queued or running request (its sink gets no more events).
  void cancel(uint64_t id);
  // The compute loop: waits for work, runs steps, delivers events; returns Ok after
  // shutdown() once the running requests got kError(kAborted), or the decode error that
  // stopped it (every pending request gets kError with it first).
  Status run();
  // Thread-safe. Makes run() return.
  void shutdown();
  SchedulerStats stats() const;  // thread-safe snapshot

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace expertmesh::coordinator::server
