// The building blocks layer steps are written in (src/model/archs/*.cpp): RMSNorm over rows,
// GQA attention with the KV cache, SwiGLU FFN, and the routed MoE FFN. Blocks that a plan can
// split (attention heads, experts) produce this rank's partial sum and pass it to the context's
// reduce hook before returning, so a layer step reads the same on one rank and on many.
//
// Activations are row-major [n_tok × width] float buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/cpu/cpu_kernels.h"
#include "model/hparams.h"
#include "model/model.h"
#include "worker/kv_cache.h"
#include "worker/plan.h"
#include "worker/thread_pool.h"

namespace expertmesh::worker {

using Buf = std::vector<float>;
// Sums a partial result across the ranks that share a layer (no-op on one rank).
using ReduceFn = std::function<Status(float* data, int64_t n)>;
// Receives named intermediates (--dump-activations): name, layer (-1 for global), rows × cols.
using DumpFn = std::function<void(const std::string& name, int64_t layer, const float* data, int64_t rows, int64_t cols)>;

struct StepContext {
  const HParams& hp;
  const cpu::Kernels& k;
  ThreadPool& pool;
  KvCache& kv;
  const int32_t* pos = nullptr;  // n_tok positions (one sequence, ascending)
  int64_t n_tok = 0;
  int64_t kv_layer = 0;          // index of the current layer in the KV cache
  int64_t kv_head0 = 0;          // first KV head the cache holds
  const ReduceFn* reduce = nullptr;
  const DumpFn* dump = nullptr;
  int64_t layer = 0;

  void trace(const char* name, const Buf& b, int64_t cols) const {
    if (dump && *dump) (*dump)(name, layer, b.data(), n_tok, cols);
  }
  Status combine(Buf& partial) const { return reduce && *reduce ? (*reduce)(partial.data(), int64_t(partial.size())) : Status::Ok(); }
};

// y = rmsnorm(x) * w, row by row (width = w.ne[0]).
Buf rms_norm(const StepContext& c, const float* x, const Weight& w);

// x += y (n_tok × n_embd)
void add_in_place(float* x, const Buf& y);

struct AttentionOptions {
  bool qk_norm = false;  // per-head RMSNorm of q and k (qwen3, qwen3moe)
};

// Self-attention of this rank's heads: projections, optional q/k norm, RoPE, KV store, causal
// softmax(QK^T/sqrt(d))V, output projection (partial over the heads), combined via reduce.
Result<Buf> attention(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h,
                      AttentionOptions opt);

// Dense SwiGLU FFN: down(silu(gate h) * up h).
Result<Buf> ffn_swiglu(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h);

// Routed MoE FFN: softmax router over all experts, top-k, optional renormalisation, weighted sum
// of this rank's experts (partial over experts), combined via reduce.
Result<Buf> moe_ffn(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h);

// One query row of causal attention over n_kv cached rows: scores = K q * scale, entries with
// key position > q_pos set to -inf, softmax, out = sum p_j V_j. K, V are n_kv × d. `scores`
// is scratch of n_kv floats. Exposed for the kernel tests.
void attend_row(const cpu::Kernels& k, const float* q, const float* K, const float* V, int64_t n_kv, int64_t d,
                int64_t q_pos, float scale, float* scores, float* out);

// The same row as ggml's generic flash-attention kernel computes it with an F16 cache: q
// rounded to F16, Q·K summed in double, online softmax, the V accumulator rounded to F16 after
// every key. `acc16` is scratch of d halves.
void attend_row_f16acc(const float* q, const float* K, const float* V, int64_t n_kv, int64_t d, int64_t q_pos,
                       float scale, uint16_t* acc16, float* out);

}  // namespace expertmesh::worker
