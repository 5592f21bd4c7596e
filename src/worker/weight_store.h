// A rank's share of the model weights in private memory (ARCHITECTURE.md §3: each rank holds
// only the bytes of the tensors, expert slices, head slices and vocabulary rows it owns, so the
// resident memory summed over ranks is about one copy of the model).
//
// rows_needed() derives from a RankPlan exactly which rows of which tensors the engine's layer
// steps read (the contract with blocks.cpp and engine.cpp); WeightStore::load reads those rows
// with pread (chunks of a few MiB, on the engine's threads) into one anonymous mapping and
// returns ModelWeights whose views point there. The file mapping of the Model is never touched,
// so no page of tensor data is mapped into the process: the only file pages resident are the
// header's (metadata). The reading threads first-touch the pages, so they are allocated under
// the process's memory policy — on the rank's NUMA node when main() bound it
// (topology::bind_if_launched_bound, inherited by the engine's threads).
//
// Page cache: pread leaves the file's pages in the kernel's page cache (shared, reclaimable,
// not part of any process's RSS); the private copy is what the rank holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "model/model.h"
#include "worker/plan.h"
#include "worker/thread_pool.h"

namespace expertmesh::worker {

// Where an engine's weights come from.
enum class WeightSource {
  kAuto,  // kMap when the plan needs every byte of every tensor (one rank), else kRead
  kMap,   // the Model's read-only file mapping: pages fault in on first use (shared page cache)
  kRead,  // the rows the plan needs, read into private memory (a WeightStore)
};

// The rows of one tensor a plan reads: ascending, disjoint, non-adjacent spans of rows (rows
// counted over ne[1]·ne[2]·ne[3]), widened to whole interleave groups of the type.
struct TensorRows {
  const Weight* w = nullptr;  // a tensor of the Model's weights
  std::vector<Span> rows;
  int64_t bytes() const;
};

// Every tensor whose rows `plan` reads, in a fixed order (globals, then layers); tensors it reads
// nothing of are absent; a tied output head is folded into token_embd. Per tensor:
//   token_embd      all rows on the first stage (any token may come), plus the plan's vocabulary
//                   rows when it is also the (tied) output head
//   output          the plan's vocabulary rows [vocab_begin, vocab_end) on the last stage
//   norms, router   whole, in the plan's layers (and output_norm on the last stage)
//   attn_q          rows of the plan's query heads; attn_k / attn_v rows of their KV heads
//   attn_output     one-rank stage: whole when the rank has heads; stage of several ranks: its
//                   output rows (LayerPlan::attn_out)
//   ffn_gate/up     the plan's FFN rows; ffn_down like attn_output (LayerPlan::ffn_out)
//   *_exps          the slabs (ne[1] rows each) of the plan's experts
std::vector<TensorRows> rows_needed(const HParams& hp, const ModelWeights& w, const RankPlan& plan);

// True when `needs` covers every row of every tensor of `w` (the plan holds the whole model).
bool needs_whole_model(const ModelWeights& w, const std::vector<TensorRows>& needs);

class WeightStore {
 public:
  // Reads `needs` (from rows_needed on model.weights()) from the model's GGUF file(s) with
  // pool's threads. Errors name the file and the tensor: a file that ends (or fails to read)
  // before a tensor's rows.
  static Result<std::unique_ptr<WeightStore>> load(const Model& model, const std::vector<TensorRows>& needs,
                                                   ThreadPool& pool);
  ~WeightStore();
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;

  // Views of the held rows: every tensor of the model with its name, type and shape; rows not
  // held are absent (Weight::holds is false for them).
  const ModelWeights& weights() const { return w_; }
  // Tensor bytes held.
  int64_t bytes() const { return bytes_; }
  // Bytes of the store's memory resident now (mincore over its pages).
  int64_t resident_bytes() const;

 private:
  WeightStore() = default;
  ModelWeights w_;
  void* region_ = nullptr;
  size_t region_size_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace expertmesh::worker
