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
using DumpFn =
    std::function<void(const std::string& name, int64_t layer, const float* data, int64_t rows, int64_t cols)>;
// The activations one weight matmul is about to read (statistics such as the imatrix): row t of
// x (n_rows rows of n_cols floats, stride ldx) multiplies columns [col_begin, col_begin + n_cols)
// of `w`; for a 3-D expert weight only the slice `expert` (-1 for 2-D weights). `layer` is -1
// for the output head. For experts, the rows are exactly the tokens routed to that expert.
struct MatmulInput {
  const Weight* w = nullptr;
  int32_t expert = -1;
  int64_t layer = -1;
  const float* x = nullptr;
  int64_t n_rows = 0, n_cols = 0, ldx = 0, col_begin = 0;
};
// Called right before the matmul; a non-OK status aborts the forward with that status.
using MatmulObserver = std::function<Status(const MatmulInput& in)>;
// Completes per-slot MoE outputs across the stage: y holds n_slots rows of `width` floats (slot
// = token*k + j); on entry this rank filled the rows of the slots whose owner (stage index in
// `owner`) is this rank; on return every row is filled, bit-identical to what its owner computed.
using SlotGatherFn = std::function<Status(float* y, const std::vector<int32_t>& owner, int64_t width)>;
// Assembles column blocks across the stage: stage rank i holds n_tok rows of spans[i].size()
// floats (`local` on this rank); on return `full` (n_tok × width) has block i at columns spans[i].
using GatherColsFn = std::function<Status(const float* local, int64_t n_tok, const std::vector<Span>& spans,
                                          int64_t width, float* full)>;

struct StepContext {
  const HParams& hp;
  const cpu::Kernels& k;
  ThreadPool& pool;
  KvCache& kv;
  const int32_t* pos = nullptr;  // n_tok positions; the rows of one sequence are consecutive positions
  const int32_t* seq = nullptr;  // n_tok KV-cache sequences (null: every row is sequence 0)
  int64_t n_tok = 0;
  int64_t kv_layer = 0;  // index of the current layer in the KV cache
  int64_t kv_head0 = 0;  // first KV head the cache holds
  const ReduceFn* reduce = nullptr;
  const DumpFn* dump = nullptr;
  const MatmulObserver* observe = nullptr;
  const SlotGatherFn* gather_slots = nullptr;  // null or empty: every expert is local
  const GatherColsFn* gather_cols = nullptr;   // used when a LayerPlan has stage spans
  int64_t layer = 0;

  Status observe_input(const Weight& w, int32_t expert, const float* x, int64_t rows, int64_t cols,
                       int64_t col_begin = 0) const {
    if (!observe || !*observe) return Status::Ok();
    return (*observe)(MatmulInput{&w, expert, layer, x, rows, cols, cols, col_begin});
  }
  void trace(const char* name, const Buf& b, int64_t cols) const {
    if (dump && *dump) (*dump)(name, layer, b.data(), n_tok, cols);
  }
  Status combine(Buf& partial) const {
    return reduce && *reduce ? (*reduce)(partial.data(), int64_t(partial.size())) : Status::Ok();
  }
};

// y = rmsnorm(x) * w, row by row (width = w.ne[0]).
Buf rms_norm(const StepContext& c, const float* x, const Weight& w);

// x += y (n_tok × n_embd)
void add_in_place(float* x, const Buf& y);

struct AttentionOptions {
  bool qk_norm = false;  // per-head RMSNorm of q and k (qwen3, qwen3moe)
};

// Self-attention of this rank's heads: projections, optional q/k norm, RoPE, KV store, causal
// softmax(QK^T/sqrt(d))V, then the output projection. Each row attends over its own sequence's
// keys at positions <= its own (rows of several sequences may share a batch; a row's result
// does not depend on the other rows). One rank: over all heads. A stage of
// several ranks (p.stage_heads set): the heads' outputs are gathered (gather_cols), each rank
// computes its share of the output rows (p.attn_out) with whole dot products and those are gathered,
// so the result is bit-identical to one rank's. A rank may own no heads.
Result<Buf> attention(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h,
                      AttentionOptions opt);

// Dense SwiGLU FFN: down(silu(gate h) * up h); this rank's rows [ffn_begin, ffn_end) of gate/up.
// Over a stage of several ranks (p.stage_ffn set) the activations are gathered and each rank
// computes its rows of down, gathered like attention's output (exact).
Result<Buf> ffn_swiglu(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h);

// Routed MoE FFN: softmax router over all experts, top-k, optional renormalisation; this rank
// runs its experts for the slots routed to them, the per-slot outputs are completed with
// gather_slots (exact: each slot is computed by exactly one rank), and the weighted sum is taken
// in slot order on every rank, so the result does not depend on the expert placement.
Result<Buf> moe_ffn(const StepContext& c, const LayerWeights& w, const LayerPlan& p, const Buf& h);

// The exact tensor-parallel output projection of a split layer (attention output, dense FFN
// down): gathers every stage rank's activation columns (`local`: n_tok × its span of
// `in_spans`, in units of `unit` columns) into n_tok × in_width, computes this rank's output rows
// `mine` of `w` with whole dot products, and gathers every rank's rows (`out_spans`, by stage
// index) into n_tok × n_embd on every rank of the stage (bit-identical to one rank's result).
Result<Buf> project_out(const StepContext& c, const Weight& w, const Buf& local, int64_t in_width,
                        const std::vector<Span>& in_spans, int64_t unit, const std::vector<Span>& out_spans, Span mine,
                        const char* trace_name);

// The pre-norm residual block llama, qwen3 and qwen3moe share (the peer's llm_build_* layer):
//   x += attention(rms_norm(x) * attn_norm);  x += ffn(rms_norm(x) * ffn_norm)
// with the dense SwiGLU FFN or the routed MoE FFN. x is n_tok × n_embd, updated in place; the
// ffn_inp / l_out intermediates go to the dump hook like the peer's names.
enum class FfnKind { kDense, kMoe };
Status residual_block(const StepContext& c, const LayerWeights& w, const LayerPlan& p, float* x, AttentionOptions attn,
                      FfnKind ffn);

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
