// The per-rank engine (ARCHITECTURE.md §2–3): owns the thread pool, the KV cache of the heads
// and layers its plan gives it, and the selected CPU kernels; runs the arch's layer steps over
// the plan for a batch of tokens of one sequence.
//
// One forward: embed (if plan.embed) -> for each LayerPlan: arch.layer(step, weights, plan, x)
// -> output norm + head for the requested rows (if plan.output).
//
// Distributed (set_cluster, ARCHITECTURE.md §3): all ranks run in lockstep. Rank 0 drives: its
// decode() broadcasts the batch as a proto::TokenBatch, the other ranks sit in follow() and run
// the same batch. Within a pipeline stage, attention and dense-FFN activations and output rows
// are gathered and MoE per-slot outputs exchanged (all exact: bit-identical to one rank); the
// first stage embeds, hidden states go from each stage's first rank to the next stage's, and
// the last stage's ranks compute their vocabulary rows, gathered to rank 0.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <thread>

#include "comm/cluster.h"
#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/model.h"
#include "worker/blocks.h"
#include "worker/kv_cache.h"
#include "worker/plan.h"
#include "worker/thread_pool.h"
#include "worker/weight_store.h"

namespace expertmesh::worker {

struct EngineOptions {
  int n_threads = 1;
  int64_t n_ctx = 512;              // positions per sequence
  int64_t n_seq = 1;                // KV-cache sequences (serve's --parallel slots)
  GgmlType type_k = GgmlType::F16;  // -ctk
  GgmlType type_v = GgmlType::F16;  // -ctv
  // kAuto: a rank that holds the whole model uses the file mapping (nothing read at load, the
  // page cache shared); a rank with a share of it reads exactly its rows into private memory.
  WeightSource weights = WeightSource::kAuto;
  // --bf16-activations: BF16 weights multiply BF16-rounded activations (the peer's arithmetic,
  // AVX512-BF16 dot products) instead of F32 ones.
  bool bf16_activations = false;
  // Pin the pool's worker threads one per core of the cores this rank may use (hwloc), when
  // there are at least n_threads of them.
  bool pin_threads = true;
  // Largest batch (tokens) the caller will decode, when known (bench's -ub, perplexity's -b,
  // serve's -b): the engine makes that batch's working memory resident when it is created
  // (heap_prime.h), so the first prompt does not pay its page faults. 0: on the first batch.
  int64_t n_batch_max = 0;
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(const Model& model, RankPlan plan, const EngineOptions& opt);

  const Model& model() const { return model_; }
  const cpu::Kernels& kernels() const { return k_; }
  int64_t n_ctx() const { return kv_.n_ctx(); }  // positions per sequence
  int64_t n_seq() const { return kv_.n_seq(); }
  int64_t n_past() const { return seq_len_[0]; }  // sequence 0
  int64_t n_vocab() const { return weights().output.ne[1]; }
  // The weights the engine computes with: the model's mapping, or this rank's private share.
  const ModelWeights& weights() const { return *w_; }
  // The private share (nullptr when the engine uses the file mapping).
  const WeightStore* weight_store() const { return store_.get(); }
  const RankPlan& plan() const { return plan_; }
  // Starts sequence 0 anew (its next decode() is at position 0). Followers need no call: a
  // batch's positions say where each sequence continues.
  void clear() { seq_len_[0] = 0; }
  // Makes this engine one rank of a distributed job; `c` (not owned) outlives the engine and
  // matches the plan's stage. Without a cluster the plan must be complete (one rank).
  void set_cluster(comm::Cluster* c);
  void set_dump(DumpFn fn) { dump_ = std::move(fn); }
  void set_reduce(ReduceFn fn) { reduce_ = std::move(fn); }
  // Sees every weight matmul's input before it runs (imatrix statistics); empty: none.
  void set_observer(MatmulObserver fn) { observe_ = std::move(fn); }

  // Evaluates `tokens` at positions n_past() .. n_past()+n-1 and appends them to the cache.
  // Writes the logits of the rows listed in `out_rows` (indices into tokens, ascending) to
  // `logits` (out_rows.size() × n_vocab). Errors: token id out of range, context full.
  // Distributed: call on rank 0 only (the others are in follow()); logits arrive on rank 0.
  Status decode(std::span<const int32_t> tokens, std::span<const int64_t> out_rows, float* logits);
  // A batch over several sequences: row i is tokens[i] at position pos[i] of sequence seq[i].
  // REQUIRES (checked, InvalidArgument): equal lengths; 0 <= seq < n_seq(); the rows of one
  // sequence are consecutive positions, the first at most that sequence's current length
  // (starting lower rewinds it: later positions are forgotten). Each row's logits depend only
  // on its own sequence, so any mix of sequences gives every row the same values as running its
  // sequence alone. Distributed: rank 0 only, like decode(). Does not touch n_past() unless the
  // batch has rows of sequence 0.
  Status decode_batch(std::span<const int32_t> tokens, std::span<const int32_t> pos, std::span<const int32_t> seq,
                      std::span<const int64_t> out_rows, float* logits);
  // Ranks other than 0: run the batches rank 0 broadcasts until it calls finish(). Every rank
  // checks each batch alike, so bad input fails on every rank at the same step; a failure on
  // one rank only reaches the others through the cluster's failure channel.
  Status follow();
  // Rank 0: releases the followers (a shutdown batch). No-op on one rank.
  Status finish();

 private:
  Engine(const Model& m, RankPlan plan, const EngineOptions& opt, KvCache kv);
  Status embed(std::span<const int32_t> tokens, float* x);
  Status output(const Buf& x, int64_t n_tok, std::span<const int64_t> out_rows, float* logits);
  // Every rank checks the batch alike (token ids, sequences, positions, rows) and runs it.
  Status step(std::span<const int32_t> tokens, std::span<const int32_t> pos, std::span<const int32_t> seq,
              std::span<const int64_t> out_rows, float* logits);
  Status hidden_in(std::span<const int32_t> tokens, float* x);
  // Primes the calling thread's heap for a batch of n_tok tokens unless a batch at least that
  // large was primed on this thread (small batches are never primed).
  void prime_for(int64_t n_tok);
  Status gather_slots(float* y, const std::vector<int32_t>& owner, int64_t width);
  Status gather_cols(const float* local, int64_t n_tok, const std::vector<Span>& spans, int64_t width, float* full);
  bool distributed() const { return cluster_ && cluster_->world() > 1; }

  const Model& model_;
  RankPlan plan_;
  EngineOptions opt_;
  cpu::Kernels k_;  // the selected ISA's table, with this engine's options applied
  ThreadPool pool_;
  KvCache kv_;
  int64_t kv_head0_ = 0;
  std::vector<int64_t> seq_len_;   // filled positions of each sequence
  int64_t primed_tok_ = 0;         // batch size (a power of two) the heap was last primed for
  std::thread::id primed_thread_;  // the thread whose malloc arena that was
  DumpFn dump_;
  ReduceFn reduce_;
  MatmulObserver observe_;
  SlotGatherFn gather_slots_;
  GatherColsFn gather_cols_;
  comm::Cluster* cluster_ = nullptr;
  std::unique_ptr<WeightStore> store_;
  const ModelWeights* w_ = nullptr;
};

}  // namespace expertmesh::worker
