#include "model/hparams.h"

#include <fmt/format.h>

#include "model/gguf/gguf.h"

namespace expertmesh {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::kLlama: return "llama";
    case Arch::kQwen3: return "qwen3";
    case Arch::kQwen3Moe: return "qwen3moe";
  }
  return "?";
}

namespace {

Result<Arch> parse_arch(const gguf::File& f, const std::string& s) {
  if (s == "llama") return Arch::kLlama;
  if (s == "qwen3") return Arch::kQwen3;
  if (s == "qwen3moe") return Arch::kQwen3Moe;
  return Status::Unsupported(fmt::format("{}: architecture '{}' is not supported (llama, qwen3, qwen3moe)", f.path(), s));
}

// Integer key, or `def` when absent. An array value (per-layer) gives its first element.
Result<int64_t> int_or(const gguf::File& f, const std::string& key, int64_t def) {
  const gguf::Value* v = f.find(key);
  if (!v) return def;
  if (v->type == gguf::ValueType::ARRAY) {
    if (v->array.empty() || !v->array[0].is_integer())
      return Status::InvalidArgument(fmt::format("{}: {}: expected an integer array", f.path(), key));
    return v->array[0].as_int();
  }
  return f.get_int(key);
}

Result<double> float_or(const gguf::File& f, const std::string& key, double def) {
  if (!f.find(key)) return def;
  return f.get_float(key);
}

Status check_positive(const gguf::File& f, const std::string& key, int64_t v) {
  if (v <= 0 || v > (int64_t{1} << 31))
    return Status::InvalidArgument(fmt::format("{}: {} = {} is out of range", f.path(), key, v));
  return Status::Ok();
}

}  // namespace

Result<HParams> load_hparams(const gguf::File& f) {
  HParams hp;
  EM_ASSIGN_OR_RETURN(hp.arch_str, f.get_string("general.architecture"));
  EM_ASSIGN_OR_RETURN(hp.arch, parse_arch(f, hp.arch_str));
  const std::string p = hp.arch_str + ".";
  EM_ASSIGN_OR_RETURN(hp.n_embd, f.get_int(p + "embedding_length"));
  EM_ASSIGN_OR_RETURN(hp.n_layer, f.get_int(p + "block_count"));
  EM_ASSIGN_OR_RETURN(hp.n_head, int_or(f, p + "attention.head_count", 0));
  EM_ASSIGN_OR_RETURN(hp.n_ctx_train, int_or(f, p + "context_length", 2048));
  EM_RETURN_IF_ERROR(check_positive(f, p + "embedding_length", hp.n_embd));
  EM_RETURN_IF_ERROR(check_positive(f, p + "block_count", hp.n_layer));
  EM_RETURN_IF_ERROR(check_positive(f, p + "attention.head_count", hp.n_head));
  EM_ASSIGN_OR_RETURN(hp.n_head_kv, int_or(f, p + "attention.head_count_kv", hp.n_head));
  EM_RETURN_IF_ERROR(check_positive(f, p + "attention.head_count_kv", hp.n_head_kv));
  if (hp.n_head % hp.n_head_kv != 0)
    return Status::InvalidArgument(fmt::format("{}: head_count {} is not a multiple of head_count_kv {}", f.path(),
                                               hp.n_head, hp.n_head_kv));
  EM_ASSIGN_OR_RETURN(hp.head_dim, int_or(f, p + "attention.key_length", hp.n_embd / hp.n_head));
  EM_ASSIGN_OR_RETURN(hp.head_dim_v, int_or(f, p + "attention.value_length", hp.n_embd / hp.n_head));
  EM_RETURN_IF_ERROR(check_positive(f, p + "attention.key_length", hp.head_dim));
  if (hp.head_dim_v != hp.head_dim)
    return Status::Unsupported(fmt::format("{}: value_length {} != key_length {}", f.path(), hp.head_dim_v, hp.head_dim));
  EM_ASSIGN_OR_RETURN(hp.n_rot, int_or(f, p + "rope.dimension_count", hp.head_dim));
  if (hp.n_rot <= 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0)
    return Status::InvalidArgument(fmt::format("{}: rope.dimension_count {} is invalid for head_dim {}", f.path(),
                                               hp.n_rot, hp.head_dim));
  EM_ASSIGN_OR_RETURN(hp.n_ff, int_or(f, p + "feed_forward_length", 0));
  EM_ASSIGN_OR_RETURN(hp.n_expert, int_or(f, p + "expert_count", 0));
  EM_ASSIGN_OR_RETURN(hp.n_expert_used, int_or(f, p + "expert_used_count", 0));
  EM_ASSIGN_OR_RETURN(double eps, f.get_float(p + "attention.layer_norm_rms_epsilon"));
  hp.rms_eps = float(eps);
  EM_ASSIGN_OR_RETURN(double base, float_or(f, p + "rope.freq_base", 10000.0));
  hp.rope_freq_base = float(base);
  EM_ASSIGN_OR_RETURN(double factor, float_or(f, p + "rope.scaling.factor", 0.0));
  hp.rope_freq_scale = factor == 0.0 ? 1.0f : float(1.0 / factor);
  hp.rope_mode = hp.arch == Arch::kLlama ? cpu::RopeMode::kNormal : cpu::RopeMode::kNeox;

  if (hp.arch == Arch::kQwen3Moe) {
    if (hp.n_expert <= 0 || hp.n_expert_used <= 0 || hp.n_expert_used > hp.n_expert)
      return Status::InvalidArgument(fmt::format("{}: expert_count {} / expert_used_count {} are invalid", f.path(),
                                                 hp.n_expert, hp.n_expert_used));
    EM_ASSIGN_OR_RETURN(hp.n_ff_exp, int_or(f, p + "expert_feed_forward_length", hp.n_ff / hp.n_expert_used));
    EM_RETURN_IF_ERROR(check_positive(f, p + "expert_feed_forward_length", hp.n_ff_exp));
    hp.expert_weights_norm = true;  // llm_build_qwen3moe passes norm_w = true
  } else {
    if (hp.n_expert > 0)
      return Status::Unsupported(fmt::format("{}: {} with experts (expert_count {}) is not supported", f.path(),
                                             hp.arch_str, hp.n_expert));
    EM_RETURN_IF_ERROR(check_positive(f, p + "feed_forward_length", hp.n_ff));
  }
  // n_vocab: <arch>.vocab_size, else the tokenizer list length, else token_embd's rows (binding checks it).
  const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
  EM_ASSIGN_OR_RETURN(hp.n_vocab, int_or(f, p + "vocab_size", tokens ? int64_t(tokens->array.size()) : 0));
  return hp;
}

}  // namespace expertmesh
