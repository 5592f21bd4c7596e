// qwen3moe: qwen3 attention (q/k norm, NEOX RoPE) with a routed MoE FFN: softmax router over
// all experts, top-k, weights renormalised to sum 1 (norm_w = true), no shared expert.
// Peer: llm_build_qwen3moe + llm_build_moe_ffn. Inventory §6.2.
// Shapes in GGML order [ne0, ne1, ne2]: ne0 is the input width of a matmul weight.
#include <fmt/format.h>

#include "model/archs/arch.h"
#include "worker/blocks.h"

namespace expertmesh {
namespace {

Status bind(TensorBinder& b, const HParams& hp, ModelWeights* w) {
  EM_RETURN_IF_ERROR(bind_globals(b, hp, w));
  const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_head_kv * hp.head_dim;
  const int64_t ne = hp.n_expert, ff = hp.n_ff_exp;
  w->layers.resize(size_t(hp.n_layer));
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& L = w->layers[size_t(il)];
    auto n = [&](const char* s) { return fmt::format("blk.{}.{}.weight", il, s); };
    EM_RETURN_IF_ERROR(b.take(n("attn_norm"), {hp.n_embd}, TypeRule::kFloat32, &L.attn_norm));              // [n_embd]
    EM_RETURN_IF_ERROR(b.take(n("attn_q"), {hp.n_embd, q_dim}, TypeRule::kAny, &L.wq));                     // [n_embd, n_head*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_k"), {hp.n_embd, kv_dim}, TypeRule::kAny, &L.wk));                    // [n_embd, n_head_kv*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_v"), {hp.n_embd, kv_dim}, TypeRule::kAny, &L.wv));                    // [n_embd, n_head_kv*hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_q_norm"), {hp.head_dim}, TypeRule::kFloat32, &L.attn_q_norm));        // [hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_k_norm"), {hp.head_dim}, TypeRule::kFloat32, &L.attn_k_norm));        // [hd]
    EM_RETURN_IF_ERROR(b.take(n("attn_output"), {q_dim, hp.n_embd}, TypeRule::kAny, &L.wo));                // [n_head*hd, n_embd]
    EM_RETURN_IF_ERROR(b.take(n("ffn_norm"), {hp.n_embd}, TypeRule::kFloat32, &L.ffn_norm));                // [n_embd]
    EM_RETURN_IF_ERROR(b.take(n("ffn_gate_inp"), {hp.n_embd, ne}, TypeRule::kAny, &L.ffn_gate_inp));        // [n_embd, n_expert]
    EM_RETURN_IF_ERROR(b.take(n("ffn_gate_exps"), {hp.n_embd, ff, ne}, TypeRule::kAny, &L.ffn_gate_exps));  // [n_embd, n_ff_exp, n_expert]
    EM_RETURN_IF_ERROR(b.take(n("ffn_up_exps"), {hp.n_embd, ff, ne}, TypeRule::kAny, &L.ffn_up_exps));      // [n_embd, n_ff_exp, n_expert]
    EM_RETURN_IF_ERROR(b.take(n("ffn_down_exps"), {ff, hp.n_embd, ne}, TypeRule::kAny, &L.ffn_down_exps));  // [n_ff_exp, n_embd, n_expert]
  }
  return Status::Ok();
}

Status layer(worker::StepContext& c, const LayerWeights& w, const worker::LayerPlan& p, float* x) {
  return worker::residual_block(c, w, p, x, {.qk_norm = true}, worker::FfnKind::kMoe);
}

}  // namespace

const ArchSpec& qwen3moe_arch() {
  static const ArchSpec spec{Arch::kQwen3Moe, bind, layer};
  return spec;
}

}  // namespace expertmesh
