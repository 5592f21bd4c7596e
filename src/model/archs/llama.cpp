// llama (LLaMA-1/2 style, e.g. stories260K): pre-norm blocks, GQA attention with RoPE in the
// NORMAL layout (adjacent pairs), SwiGLU FFN. Peer: llm_build_llama.
// Shapes in GGML order [ne0, ne1]: ne0 is the input width of a matmul weight.
#include <fmt/format.h>

#include "model/archs/arch.h"
#include "worker/blocks.h"

namespace expertmesh {
namespace {

Status bind(TensorBinder& b, const HParams& hp, ModelWeights* w) {
  EM_RETURN_IF_ERROR(bind_globals(b, hp, w));
  const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_head_kv * hp.head_dim;
  w->layers.resize(size_t(hp.n_layer));
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& L = w->layers[size_t(il)];
    auto n = [&](const char* s) { return fmt::format("blk.{}.{}.weight", il, s); };
    EM_RETURN_IF_ERROR(b.take(n("attn_norm"), {hp.n_embd}, TypeRule::kFloat32, &L.attn_norm));       // [n_embd]
    EM_RETURN_IF_ERROR(b.take(n("attn_q"), {hp.n_embd, q_dim}, TypeRule::kAny, &L.wq));              // [n_embd, n_head*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_k"), {hp.n_embd, kv_dim}, TypeRule::kAny, &L.wk));             // [n_embd, n_head_kv*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_v"), {hp.n_embd, kv_dim}, TypeRule::kAny, &L.wv));             // [n_embd, n_head_kv*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_output"), {q_dim, hp.n_embd}, TypeRule::kAny, &L.wo));         // [n_head*hd, n_embd]
    EM_RETURN_IF_ERROR(b.take(n("ffn_norm"), {hp.n_embd}, TypeRule::kFloat32, &L.ffn_norm));         // [n_embd]
    EM_RETURN_IF_ERROR(b.take(n("ffn_gate"), {hp.n_embd, hp.n_ff}, TypeRule::kAny, &L.ffn_gate));    // [n_embd, n_ff]
    EM_RETURN_IF_ERROR(b.take(n("ffn_up"), {hp.n_embd, hp.n_ff}, TypeRule::kAny, &L.ffn_up));        // [n_embd, n_ff]
    EM_RETURN_IF_ERROR(b.take(n("ffn_down"), {hp.n_ff, hp.n_embd}, TypeRule::kAny, &L.ffn_down));    // [n_ff, n_embd]
  }
  return Status::Ok();
}

Status layer(worker::StepContext& c, const LayerWeights& w, const worker::LayerPlan& p, float* x) {
  return worker::residual_block(c, w, p, x, {.qk_norm = false}, worker::FfnKind::kDense);
}

}  // namespace

const ArchSpec& llama_arch() {
  static const ArchSpec spec{Arch::kLlama, bind, layer};
  return spec;
}

}  // namespace expertmesh
