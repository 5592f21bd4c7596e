// The per-rank engine (ARCHITECTURE.md §2–3): owns the thread pool, the KV cache of the heads
// and layers its plan gives it, and the selected CPU kernels; runs the arch's layer steps over
// the plan for a batch of tokens of one sequence.
//
// One forward: embed (if plan.embed) -> for each LayerPlan: arch.layer(step, weights, plan, x)
// -> output norm + head for the requested rows (if plan.output).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/model.h"
#include "worker/blocks.h"
#include "worker/kv_cache.h"
#include "worker/plan.h"
#include "worker/thread_pool.h"

namespace expertmesh::worker {

struct EngineOptions {
  int n_threads = 1;
  int64_t n_ctx = 512;
  GgmlType type_k = GgmlType::F16;  // -ctk
  GgmlType type_v = GgmlType::F16;  // -ctv
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(const Model& model, RankPlan plan, const EngineOptions& opt);

  const Model& model() const { return model_; }
  const cpu::Kernels& kernels() const { return k_; }
  int64_t n_ctx() const { return kv_.n_ctx(); }
  int64_t n_past() const { return kv_.used(); }
  // Starts a new sequence (clears the KV cache).
  void clear() { kv_.clear(); }
  void set_dump(DumpFn fn) { dump_ = std::move(fn); }
  void set_reduce(ReduceFn fn) { reduce_ = std::move(fn); }

  // Evaluates `tokens` at positions n_past() .. n_past()+n-1 and appends them to the cache.
  // Writes the logits of the rows listed in `out_rows` (indices into tokens, ascending) to
  // `logits` (out_rows.size() × n_vocab). Errors: token id out of range, context full.
  Status decode(std::span<const int32_t> tokens, std::span<const int64_t> out_rows, float* logits);

 private:
  Engine(const Model& m, RankPlan plan, const EngineOptions& opt, KvCache kv);
  Status embed(std::span<const int32_t> tokens, float* x);
  Status output(const Buf& x, int64_t n_tok, std::span<const int64_t> out_rows, float* logits);

  const Model& model_;
  RankPlan plan_;
  EngineOptions opt_;
  const cpu::Kernels& k_;
  ThreadPool pool_;
  KvCache kv_;
  int64_t kv_head0_ = 0;
  DumpFn dump_;
  ReduceFn reduce_;
};

}  // namespace expertmesh::worker
