// The peer's per-tensor type choice for quantization presets (ik_llama.cpp src/llama-quantize.cpp
// `llama_tensor_get_type` and `change_type_if_necessary`, inventory §4.2-4.3): which type each
// weight gets for a preset such as IQ4_KS or Q4_K_M from its name, layer, shape and the model's
// shape (experts, GQA, size class), then the --custom-q rules, then the 256-wide row-size
// fallback, then the rule that token embeddings are never row-interleaved.
//
// The rules look at tensor names the way the peer does — substring tests, in the peer's order —
// so names of llama, qwen3, qwen3moe and deepseek2 models get the peer's types (e.g. every name
// containing "attn_k", including deepseek2's attn_kv_a_mqa / attn_kv_b / attn_k_b, gets Q8_0 in a
// model with 4 or more experts; "attn_qkv" tensors fall under the attn_q rule, so --attn-qkv-type
// has no effect, exactly as in the peer).
//
// Some rules count tensors (the i-th attn_v, the i-th ffn_down of a dense model): tensors must be
// passed in file order, each once, with one RuleState per run.
#pragma once

#include <string>

#include "common/status.h"
#include "coordinator/quantize/options.h"
#include "model/gguf/gguf.h"
#include "model/types.h"

namespace expertmesh {

// The model facts the rules read (the peer gets them from llm_load_hparams). Missing keys read as
// 0, as the peer's loader tolerates them for quantization.
struct RuleModel {
  std::string arch;         // general.architecture
  int n_layer = 0;          // <arch>.block_count
  int n_head = 0;           // <arch>.attention.head_count (layer 0 when an array)
  int n_head_kv = 0;        // <arch>.attention.head_count_kv, default n_head
  int n_expert = 0;         // <arch>.expert_count
  int64_t n_vocab = 0;      // <arch>.vocab_size, else the tokenizer's token count
  bool is_8b = false;       // the peer's MODEL_8B (llama/qwen3 by layer count and vocab)
  bool is_70b = false;      // the peer's MODEL_70B (80-layer llama with GQA)
  bool has_output = false;  // an output.weight tensor exists (else token_embd is the tied output)
  int n_attention_wv = 0;   // tensors whose name contains attn_v.weight or attn_qkv.weight

  int n_gqa() const { return n_head_kv > 0 ? n_head / n_head_kv : 0; }
};

RuleModel read_rule_model(const gguf::File& in);

// The peer's counters (quantize_state_internal) and the number of row-size fallbacks so far.
struct RuleState {
  int i_attention_wv = 0;
  int i_ffn_down = 0;
  int i_ffn_gate = 0;
  int i_ffn_up = 0;
  int n_fallback = 0;
};

// `change_type_if_necessary`: for 256-wide block types on rows that are not a multiple of 256, the
// peer's replacement (IQ4_NL, Q5_0, Q6_0 or Q8_0). Returns `type` when no rule applies (including
// 32-block types on rows they do not divide: see row_size_fallback in plan.h for those).
GgmlType peer_row_fallback(GgmlType type, int64_t ne0);

// The interleaved type's base type and row-group size ({type, 1} for other types).
struct InterleaveInfo {
  GgmlType base;
  int rows;
};
InterleaveInfo interleave_info(GgmlType type);

// llama_tensor_get_type for one quantizable tensor of a quantized preset (not called with --pure
// or for F16/BF16/F32 presets, as in the peer). `has_imatrix`: an imatrix with at least one entry
// is in use. Counts a row-size fallback in state->n_fallback and describes it in *note. Errors
// (naming the tensor): a MoE tensor whose layer cannot be read from its name or is out of range.
Result<GgmlType> preset_tensor_type(const RuleModel& model, const QuantizeOptions& opt, bool has_imatrix,
                                    const gguf::TensorInfo& t, RuleState* state, std::string* note);

// True where the peer refuses to quantize a tensor (other than token_embd / output) to `type`
// without imatrix data unless --ignore-imatrix-rules ("very low bpw" types, and Q2_K in Q2_K_S).
bool very_low_bpw_type(GgmlType type, int32_t ftype);

// Presets the peer refuses outright without an imatrix (main(): IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
// IQ2_S, Q2_K_S and their _R4).
bool preset_needs_imatrix(int32_t ftype);

}  // namespace expertmesh
