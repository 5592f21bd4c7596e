#include "worker/engine.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "model/archs/arch.h"
#include "worker/matmul.h"

namespace expertmesh::worker {

Result<std::unique_ptr<Engine>> Engine::create(const Model& model, RankPlan plan, const EngineOptions& opt) {
  const HParams& hp = model.hparams();
  if (opt.n_ctx <= 0) return Status::InvalidArgument(fmt::format("context size {} must be positive", opt.n_ctx));
  int64_t kvb = hp.n_head_kv, kve = 0;
  for (const LayerPlan& lp : plan.layers) {
    if (lp.layer < 0 || lp.layer >= hp.n_layer || lp.head_begin < 0 || lp.head_end > hp.n_head ||
        lp.head_begin >= lp.head_end || lp.head_begin % hp.n_gqa() != 0 || lp.head_end % hp.n_gqa() != 0)
      return Status::InvalidArgument(fmt::format("plan: layer {} heads [{}, {}) do not cover whole GQA groups of {}",
                                                 lp.layer, lp.head_begin, lp.head_end, hp.n_gqa()));
    kvb = std::min(kvb, lp.kv_head_begin(hp.n_gqa()));
    kve = std::max(kve, lp.kv_head_end(hp.n_gqa()));
  }
  if (plan.layers.empty()) kvb = kve = 0;
  const int64_t n_kv_heads = std::max<int64_t>(kve - kvb, 1);
  EM_ASSIGN_OR_RETURN(KvCache kv, KvCache::create(opt.type_k, opt.type_v, int64_t(plan.layers.size()), n_kv_heads,
                                                  hp.head_dim, opt.n_ctx));
  std::unique_ptr<Engine> e(new Engine(model, std::move(plan), opt, std::move(kv)));
  e->kv_head0_ = kvb;
  return e;
}

Engine::Engine(const Model& m, RankPlan plan, const EngineOptions& opt, KvCache kv)
    : model_(m), plan_(std::move(plan)), opt_(opt), k_(cpu::select_kernels()), pool_(opt.n_threads), kv_(std::move(kv)) {}

Status Engine::embed(std::span<const int32_t> tokens, float* x) {
  const Weight& te = model_.weights().token_embd;
  const int64_t n_embd = model_.hparams().n_embd;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= te.ne[1])
      return Status::OutOfRange(fmt::format("token id {} outside the vocabulary of {}", tokens[t], te.ne[1]));
    EM_RETURN_IF_ERROR(dequantize_row(te, tokens[t], x + int64_t(t) * n_embd));
  }
  return Status::Ok();
}

Status Engine::output(const Buf& x, int64_t n_tok, std::span<const int64_t> out_rows, float* logits) {
  const HParams& hp = model_.hparams();
  const ModelWeights& w = model_.weights();
  Buf sel(out_rows.size() * size_t(hp.n_embd));
  for (size_t i = 0; i < out_rows.size(); ++i) {
    if (out_rows[i] < 0 || out_rows[i] >= n_tok) return Status::Internal("decode: output row out of range");
    std::copy_n(x.data() + out_rows[i] * hp.n_embd, hp.n_embd, sel.data() + i * size_t(hp.n_embd));
  }
  const int64_t n_out = int64_t(out_rows.size());
  StepContext c{hp, k_, pool_, kv_};
  c.n_tok = n_out;
  c.dump = &dump_;
  c.layer = -1;
  Buf normed = rms_norm(c, sel.data(), w.output_norm);
  c.trace("result_norm", normed, hp.n_embd);
  EM_RETURN_IF_ERROR(matmul(w.output, 0, w.output.ne[1], normed.data(), hp.n_embd, n_out, logits, w.output.ne[1], pool_, k_));
  if (dump_) dump_("result_output", -1, logits, n_out, w.output.ne[1]);
  return Status::Ok();
}

Status Engine::decode(std::span<const int32_t> tokens, std::span<const int64_t> out_rows, float* logits) {
  const HParams& hp = model_.hparams();
  const int64_t n_tok = int64_t(tokens.size());
  const int64_t pos0 = kv_.used();
  if (pos0 + n_tok > kv_.n_ctx())
    return Status::OutOfRange(fmt::format("context full: {} + {} tokens exceed n_ctx {}", pos0, n_tok, kv_.n_ctx()));
  std::vector<int32_t> pos(static_cast<size_t>(n_tok));
  std::iota(pos.begin(), pos.end(), int32_t(pos0));

  Buf x(size_t(n_tok * hp.n_embd));
  if (plan_.embed) EM_RETURN_IF_ERROR(embed(tokens, x.data()));
  StepContext c{hp, k_, pool_, kv_};
  c.pos = pos.data();
  c.n_tok = n_tok;
  c.kv_head0 = kv_head0_;
  c.reduce = &reduce_;
  c.dump = &dump_;
  const ArchSpec& arch = model_.arch();
  for (size_t i = 0; i < plan_.layers.size(); ++i) {
    const LayerPlan& lp = plan_.layers[i];
    c.kv_layer = int64_t(i);
    c.layer = lp.layer;
    if (dump_) dump_("inp", lp.layer, x.data(), n_tok, hp.n_embd);
    EM_RETURN_IF_ERROR(arch.layer(c, model_.weights().layers[size_t(lp.layer)], lp, x.data()));
  }
  kv_.set_used(pos0 + n_tok);
  if (plan_.output && !out_rows.empty()) EM_RETURN_IF_ERROR(output(x, n_tok, out_rows, logits));
  return Status::Ok();
}

}  // namespace expertmesh::worker
