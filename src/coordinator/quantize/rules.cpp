#include "coordinator/quantize/rules.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>

namespace expertmesh {
namespace {

using T = GgmlType;

// llama_ftype numbers (include/llama.h of the peer); presets.cpp maps names to these.
// clang-format off
enum Ft : int32_t {
  kQ4_0 = 2, kQ5_0 = 8, kQ2_K = 10, kQ3_K_S = 11, kQ3_K_M = 12, kQ3_K_L = 13, kQ4_K_S = 14, kQ4_K_M = 15,
  kQ5_K_S = 16, kQ5_K_M = 17, kIQ2_XXS = 19, kIQ2_XS = 20, kQ2_K_S = 21, kIQ3_XS = 22, kIQ3_XXS = 23, kIQ1_S = 24,
  kIQ4_NL = 25, kIQ3_S = 26, kIQ3_M = 27, kIQ2_S = 28, kIQ2_M = 29, kIQ4_XS = 30, kIQ1_M = 31, kIQ1_BN = 136,
  kIQ2_BN = 137, kIQ2_K = 138, kIQ3_K = 139, kIQ4_K = 140, kIQ5_K = 141, kIQ4_KS = 145, kIQ3_KL = 146, kIQ2_KS = 147,
  kIQ4_KSS = 148, kIQ5_KS = 150, kIQ2_KT = 151, kIQ3_KT = 152, kIQ4_KT = 153, kIQ3_KS = 154, kIQ2_KL = 155,
  kIQ1_KT = 156, kQ4_0_R8 = 202, kQ2_K_R4 = 210, kQ3_K_R4 = 211, kQ4_K_R4 = 214, kIQ2_XXS_R4 = 219, kIQ2_XS_R4 = 220,
  kIQ3_XXS_R4 = 223, kIQ1_S_R4 = 224, kIQ4_NL_R4 = 225, kIQ3_S_R4 = 226, kIQ2_M_R4 = 229, kIQ4_XS_R8 = 230,
  kIQ1_M_R4 = 231, kIQ2_BN_R4 = 337, kIQ2_K_R4 = 338, kIQ3_K_R4 = 339, kIQ4_K_R4 = 340, kIQ4_KS_R4 = 345,
  kIQ5_KS_R4 = 350,
};
// clang-format on

bool in(int32_t ft, std::initializer_list<int32_t> set) { return std::find(set.begin(), set.end(), ft) != set.end(); }
bool in(T t, std::initializer_list<T> set) { return std::find(set.begin(), set.end(), t) != set.end(); }
bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// use_more_bits: the first and last eighth of the layers and every third in between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// The layer of a tensor: parsed from "blk.N." for MoE models (expert tensors are not in layer
// order in every model), else the running counter of tensors of that class.
Result<std::pair<int, int>> layer_of(const RuleModel& m, const std::string& name, int counter) {
  int il = counter;
  if (std::max(1, m.n_expert) > 1) {
    if (std::sscanf(name.c_str(), "blk.%d.", &il) != 1)
      return Status::InvalidArgument(fmt::format("tensor '{}': cannot determine its layer from the name", name));
    if (il < 0 || il >= m.n_layer)
      return Status::InvalidArgument(
          fmt::format("tensor '{}': layer {} is outside [0, {}) (block_count)", name, il, m.n_layer));
  }
  return std::make_pair(il, m.n_layer);
}

// The output tensor (or the tied token_embd when there is no output.weight).
T output_type(const RuleModel& m, const QuantizeOptions& opt, const gguf::TensorInfo& t, T type) {
  const int32_t ft = opt.preset.ftype;
  if (opt.output_tensor_type) return *opt.output_tensor_type;
  if (m.arch == "falcon" || t.ne[0] % 256 != 0) return T::Q8_0;
  if (in(ft, {kIQ2_XXS, kIQ2_XS,   kIQ3_XXS,  kIQ1_S,    kIQ2_S,  kIQ2_M,    kIQ1_M,
              kIQ2_K,   kIQ3_K,    kIQ2_KS,   kIQ3_K_R4, kIQ3_KS, kIQ2_K_R4, kIQ3_XXS_R4,
              kIQ2_KL,  kIQ2_M_R4, kIQ1_S_R4, kIQ1_M_R4, kIQ2_KT, kIQ3_KT,   kIQ1_KT}))
    return m.has_output ? T::Q5_K : T::IQ4_K;
  if (in(ft, {kIQ2_XXS_R4, kIQ2_XS_R4})) return m.has_output ? T::Q5_K_R4 : T::IQ4_K_R4;
  if (in(ft, {kIQ3_S, kIQ3_M, kIQ3_KL, kIQ4_XS, kIQ3_S_R4, kIQ4_KS, kIQ4_KSS, kIQ4_KS_R4}) && !m.has_output)
    return T::IQ5_K;
  if (!in(type, {T::Q8_0, T::Q8_0_R8, T::IQ6_K, T::Q6_K_R4, T::Q8_K_R8, T::Q8_KV, T::Q8_KV_R8})) return T::Q6_K;
  return type;
}

// token_embd.weight / per_layer_token_embd.weight when untied.
T embedding_type(int32_t ft, std::optional<GgmlType> flag, T type) {
  if (flag) return *flag;
  if (in(ft, {kIQ2_XXS, kIQ2_XS, kIQ1_S, kIQ1_M, kIQ2_XXS_R4, kIQ2_XS_R4, kIQ1_S_R4, kIQ1_M_R4})) return T::Q2_K;
  if (in(ft, {kIQ2_S, kIQ2_M, kIQ2_M_R4, kIQ3_XXS, kIQ3_KT})) return T::IQ3_S;
  if (ft == kIQ3_XXS_R4) return T::IQ3_K;
  if (in(ft, {kIQ1_BN, kIQ2_BN, kIQ2_BN_R4})) return T::IQ4_NL;
  return type;
}

// Presets IQ1_S_R4 / IQ1_M_R4 (r4 = true) and IQ2_KT (r4 = false): one table, two type sets.
Result<T> kt_or_iq1_r4_type(const RuleModel& m, const QuantizeOptions& opt, const std::string& name, RuleState* st,
                            T type, bool r4) {
  const int ne = m.n_expert, gqa = m.n_gqa();
  if (has(name, "attn_v.weight")) {
    ++st->i_attention_wv;
    if (ne >= 4 || gqa >= 4) return r4 ? T::IQ4_K_R4 : T::IQ4_K;
    if (gqa >= 2) return r4 ? T::IQ3_K_R4 : T::IQ3_K;
    return r4 ? T::Q2_K_R4 : T::Q2_K;
  }
  if (ne >= 8 && has(name, "attn_k")) return r4 ? T::Q4_K_R4 : T::Q4_K;
  if (ne >= 8 && (has(name, "blk.0.ffn_down") || has(name, "blk.0.ffn_gate") || has(name, "blk.0.ffn_up")))
    return r4 ? T::IQ3_K_R4 : T::IQ3_K;
  if (ne >= 8 && has(name, "attn_q")) return r4 ? T::Q4_K_R4 : T::Q4_K;
  if (has(name, "attn_qkv.weight")) return r4 ? T::IQ2_K_R4 : T::IQ3_K;
  if (has(name, "_shexp.weight")) return r4 ? T::IQ4_K_R4 : T::IQ4_K;
  if (has(name, "ffn_down")) {
    EM_ASSIGN_OR_RETURN(auto layer, layer_of(m, name, st->i_ffn_down));
    ++st->i_ffn_down;
    if (opt.class_types.ffn_down) return *opt.class_types.ffn_down;
    if (layer.first < layer.second / 8) return r4 ? T::Q2_K_R4 : T::IQ3_K;
    return type;
  }
  if (has(name, "attn_output.weight")) {
    if (ne >= 4) return r4 ? T::Q5_K_R4 : T::Q5_K;
    return r4 ? T::IQ2_K_R4 : T::IQ3_K;
  }
  return type;
}

// The "very low bpw" presets: IQ1_S/M, IQ2_XXS/XS/S/M, IQ2_KS (+_R4).
T very_low_preset_type(const RuleModel& m, const QuantizeOptions& opt, const std::string& name, RuleState* st, T type) {
  const int32_t ft = opt.preset.ftype;
  const int ne = m.n_expert, gqa = m.n_gqa();
  const bool iq2_s_or_m = ft == kIQ2_S || ft == kIQ2_M || ft == kIQ2_M_R4;
  if (has(name, "attn_v.weight")) {
    ++st->i_attention_wv;
    if (gqa >= 4 || ne >= 4) return T::IQ4_K;
    if (gqa >= 2 || ne >= 2) return T::IQ3_K;
    return iq2_s_or_m ? T::IQ3_S : T::Q2_K;
  }
  if (ne >= 8 && has(name, "attn_k")) return T::Q4_K;
  if (ne >= 8 && has(name, "attn_q")) return T::Q4_K;
  if (has(name, "attn_qkv.weight")) return iq2_s_or_m ? T::IQ3_XXS : T::IQ2_K;
  if (has(name, "ffn_down")) {
    // The peer uses the running counter here even for MoE models.
    const bool first_eighth = st->i_ffn_down < m.n_layer / 8;
    ++st->i_ffn_down;
    if (first_eighth) return iq2_s_or_m ? T::IQ3_S : T::Q2_K;
    return type;
  }
  if (has(name, "attn_output.weight")) {
    if (opt.class_types.attn_output) return *opt.class_types.attn_output;
    if (ne >= 4) return T::Q5_K;
    if (ft == kIQ1_S || ft == kIQ1_M) return T::IQ2_K;
    if (iq2_s_or_m) return T::IQ3_S;
  }
  return type;
}

// attn_v.weight for every other preset.
T attn_v_type(const RuleModel& m, const QuantizeOptions& opt, bool imat, RuleState* st, T type) {
  const int32_t ft = opt.preset.ftype;
  const int gqa = m.n_gqa();
  const bool big_vocab_8b_70b = m.n_vocab >= 127999 && (m.is_8b || m.is_70b);
  T t = type;
  if (opt.class_types.attn_v) {
    t = *opt.class_types.attn_v;
  } else if (m.n_expert >= 4) {
    t = T::Q8_0;  // for MoE models attn_v is small: spend the bits
  } else if (m.is_70b) {
    if (t == T::Q3_K || t == T::Q4_K) t = T::Q5_K;
    if (t == T::IQ3_K) t = T::IQ5_K;
  } else if (ft == kQ2_K) {
    t = gqa >= 4 ? T::Q4_K : T::Q3_K;
  } else if (ft == kIQ2_K) {
    t = gqa >= 2 ? T::IQ4_K : T::IQ3_K;
  } else if (ft == kIQ2_K_R4) {
    t = gqa >= 2 ? T::IQ4_K_R4 : T::IQ3_K_R4;
  } else if (ft == kQ2_K_S && gqa >= 4) {
    t = T::Q4_K;
  } else if (ft == kQ2_K_R4 && gqa >= 4) {
    t = T::Q4_K_R4;
  } else if (ft == kIQ3_XXS) {
    t = gqa >= 4 ? T::Q4_K : gqa >= 2 ? T::IQ3_K : !imat ? T::IQ3_S : T::IQ3_XXS;
  } else if (ft == kIQ3_KT) {
    t = gqa >= 4 ? T::IQ4_K : T::IQ3_K;
  } else if (ft == kIQ4_KT) {
    t = gqa >= 4 ? T::IQ5_K : T::IQ4_K;
  } else if (ft == kIQ3_XXS_R4) {
    t = gqa >= 4 ? T::Q4_K_R4 : gqa >= 2 ? T::IQ3_K_R4 : !imat ? T::IQ3_K_R4 : T::IQ3_XXS_R4;
  } else if (in(ft, {kIQ3_XS, kIQ3_S}) && gqa >= 2) {
    t = T::IQ4_K;
  } else if (ft == kIQ3_S_R4 && gqa >= 2) {
    t = T::IQ4_K_R4;
  } else if (ft == kIQ3_K && gqa >= 2) {
    t = T::IQ4_K;
  } else if (in(ft, {kIQ3_KS, kIQ2_KL}) && gqa >= 2) {
    t = T::IQ4_KS;
  } else if (ft == kIQ3_K_R4 && gqa >= 2) {
    t = T::IQ4_K_R4;
  } else if (in(ft, {kIQ3_KL, kIQ3_M})) {
    t = gqa >= 2 ? T::IQ5_K : T::IQ4_K;
  } else if (ft == kQ3_K_M) {
    t = st->i_attention_wv < 2 ? T::Q5_K : T::Q4_K;
  } else if (ft == kQ3_K_L) {
    t = T::Q5_K;
  } else if (in(ft, {kIQ4_NL, kIQ4_XS, kIQ4_NL_R4, kIQ4_XS_R8, kIQ4_KS, kIQ4_KSS}) && gqa >= 2) {
    t = T::IQ5_K;
  } else if (ft == kIQ4_KS_R4 && gqa >= 2) {
    t = T::IQ5_K_R4;
  } else if (in(ft, {kIQ4_K, kIQ4_K_R4}) && gqa >= 2) {
    t = T::IQ5_K;
  } else if (in(ft, {kQ4_K_M, kQ5_K_M}) && use_more_bits(st->i_attention_wv, m.n_attention_wv)) {
    t = T::Q6_K;
  } else if (in(ft, {kQ4_K_S, kQ4_K_R4}) && st->i_attention_wv < 4) {
    t = T::Q5_K;
  } else if (ft == kQ5_K_S) {
    if (big_vocab_8b_70b) t = T::Q6_K;
  } else if (in(ft, {kIQ5_K, kIQ5_KS})) {
    if (big_vocab_8b_70b) t = T::IQ6_K;
  } else if (gqa >= 4) {
    // One step up for GQA >= 4 models.
    if (in(t, {T::Q2_K, T::IQ3_XXS}))
      t = T::IQ3_S;
    else if (in(t, {T::Q2_K_R4, T::IQ3_XXS_R4}))
      t = T::IQ3_K_R4;
    else if (in(t, {T::Q3_K, T::IQ3_S}))
      t = T::Q4_K;
    else if (t == T::IQ3_K)
      t = T::IQ4_K;
    else if (in(t, {T::IQ3_KS, T::IQ2_KL}))
      t = T::IQ4_KS;
    else if (in(t, {T::IQ3_S_R4, T::Q3_K_R4}))
      t = T::Q4_K_R4;
    else if (in(t, {T::Q4_K, T::IQ4_XS, T::IQ4_NL, T::IQ4_NL_R4, T::IQ4_XS_R8}))
      t = T::Q5_K;
    else if (in(t, {T::IQ4_K, T::IQ4_KS}))
      t = T::IQ5_K;
    else if (t == T::Q5_K)
      t = T::Q6_K;
    else if (in(t, {T::IQ5_K, T::IQ5_KS}))
      t = T::IQ6_K;
  }
  ++st->i_attention_wv;
  return t;
}

// ffn_down (dense, _exps and _shexp) for every other preset.
Result<T> ffn_down_type(const RuleModel& m, const QuantizeOptions& opt, bool imat, const std::string& name,
                        RuleState* st, T type) {
  const int32_t ft = opt.preset.ftype;
  const bool falcon = m.arch == "falcon";
  EM_ASSIGN_OR_RETURN(auto layer, layer_of(m, name, st->i_ffn_down));
  const auto [i, n] = layer;
  ++st->i_ffn_down;
  if (opt.class_types.ffn_down) return *opt.class_types.ffn_down;
  if (ft == kQ2_K) return T::Q3_K;
  if (ft == kQ2_K_S) return i < n / 8 ? T::Q4_K : type;
  if (ft == kQ2_K_R4) return i < n / 8 ? T::Q4_K_R4 : type;
  if (ft == kIQ3_XXS && !imat) return i < n / 8 ? T::Q4_K : T::Q3_K;
  if (ft == kIQ3_KT && !imat) return i < n / 8 ? T::IQ4_K : T::IQ3_K;
  if (ft == kIQ3_XXS_R4 && !imat) return i < n / 8 ? T::Q4_K_R4 : T::IQ3_K_R4;
  if (ft == kQ3_K_M) return i < n / 16 ? T::Q5_K : (!falcon || use_more_bits(i, n)) ? T::Q4_K : T::Q3_K;
  if (ft == kIQ3_M && (i < n / 8 || (m.n_expert >= 4 && use_more_bits(i, n)))) return T::IQ4_K;
  if (ft == kQ3_K_L) return falcon ? T::Q4_K : T::Q5_K;
  if (ft == kIQ3_KL) return use_more_bits(i, n) ? T::IQ4_KS : T::IQ3_K;
  if (ft == kQ4_K_M) {
    if (falcon) return i < n / 16 ? T::Q6_K : use_more_bits(i, n) ? T::Q5_K : T::Q4_K;
    return use_more_bits(i, n) ? T::Q6_K : type;
  }
  if (i < n / 8 && !imat && in(ft, {kIQ4_NL, kIQ4_XS, kIQ4_KS, kIQ4_KSS, kIQ4_NL_R4, kIQ4_XS_R8})) return T::Q5_K;
  if (ft == kIQ4_KS_R4 && i < n / 8 && !imat) return T::Q5_K_R4;
  if (ft == kQ5_K_M && use_more_bits(i, n)) return T::Q6_K;
  if (in(ft, {kQ4_K_S, kQ4_K_R4}) && !falcon && i < n / 8) return T::Q5_K;
  // With an imatrix, Q4_0/Q5_0 get one more bit of offset in the first layers.
  if (in(ft, {kQ4_0, kQ5_0}) && imat && i < n / 8) return ft == kQ4_0 ? T::Q4_1 : T::Q5_1;
  if (ft == kQ4_0_R8 && imat && i < n / 8) return T::IQ4_NL_R4;
  return type;
}

T attn_output_type(const RuleModel& m, const QuantizeOptions& opt, T type) {
  const int32_t ft = opt.preset.ftype;
  if (opt.class_types.attn_output) return *opt.class_types.attn_output;
  if (m.arch == "falcon") return ft == kQ3_K_L ? T::Q4_K : type;
  if (m.n_expert >= 4) {
    if (in(ft, {kQ2_K,      kIQ3_XS, kIQ3_XXS, kQ3_K_S,   kQ3_K_M,   kIQ4_NL,    kQ4_K_S,     kQ4_K_M,
                kIQ3_S,     kIQ3_M,  kIQ4_XS,  kIQ4_K,    kIQ4_KSS,  kIQ4_KS,    kIQ4_KS_R4,  kIQ5_KS,
                kIQ5_KS_R4, kIQ2_K,  kIQ3_K,   kIQ3_KL,   kQ4_K_R4,  kIQ4_NL_R4, kIQ4_XS_R8,  kQ3_K_R4,
                kIQ3_KT,    kIQ3_KS, kQ2_K_R4, kIQ4_K_R4, kIQ3_K_R4, kIQ2_K_R4,  kIQ3_XXS_R4, kIQ3_S_R4}))
      return T::Q5_K;
    if (ft == kIQ2_KL) return T::IQ4_KS;
    return type;
  }
  switch (ft) {
    case kQ2_K:
      return T::Q3_K;
    case kIQ3_XXS:
      return T::IQ3_S;
    case kIQ3_KT:
      return m.n_gqa() >= 4 ? T::IQ3_K : type;
    case kIQ3_XXS_R4:
      return T::IQ3_K_R4;
    case kQ3_K_M:
      return T::Q4_K;
    case kQ3_K_L:
      return T::Q5_K;
    case kIQ3_M:
      return T::IQ4_K;
    case kIQ2_K:
      return T::IQ3_K;
    case kIQ2_K_R4:
      return T::IQ3_K_R4;
    case kIQ3_KL:
      return T::IQ4_KS;
    default:
      return type;
  }
}

// ffn_gate / ffn_up (all variants) for every other preset.
Result<T> ffn_gate_up_type(const RuleModel& m, const QuantizeOptions& opt, const std::string& name, int* counter,
                           std::optional<GgmlType> flag, T type) {
  const int32_t ft = opt.preset.ftype;
  EM_ASSIGN_OR_RETURN(auto layer, layer_of(m, name, *counter));
  const auto [i, n] = layer;
  ++*counter;
  if (flag) return *flag;
  if (ft == kIQ3_XS && i >= n / 8 && i < 7 * n / 8) return T::IQ3_XXS;
  if (ft == kIQ3_KL && use_more_bits(i, n)) return T::IQ4_KS;
  return type;
}

// The heuristics before --custom-q (the body of llama_tensor_get_type).
Result<T> heuristic_type(const RuleModel& m, const QuantizeOptions& opt, bool imat, const gguf::TensorInfo& t,
                         RuleState* st, T type) {
  const std::string& name = t.name;
  const int32_t ft = opt.preset.ftype;
  const QuantizeOptions& o = opt;
  if (name == "output.weight" || (!m.has_output && name == "token_embd.weight")) return output_type(m, opt, t, type);
  if (name == "token_embd.weight") return embedding_type(ft, o.token_embedding_type, type);
  if (name == "per_layer_token_embd.weight") return embedding_type(ft, o.per_layer_token_embedding_type, type);
  if (ft == kIQ1_S_R4 || ft == kIQ1_M_R4) return kt_or_iq1_r4_type(m, opt, name, st, type, true);
  if (ft == kIQ2_KT) return kt_or_iq1_r4_type(m, opt, name, st, type, false);
  if (in(ft, {kIQ2_XXS, kIQ2_XS, kIQ1_S, kIQ2_S, kIQ2_M, kIQ1_M, kIQ2_KS, kIQ2_XXS_R4, kIQ2_XS_R4, kIQ2_M_R4}))
    return very_low_preset_type(m, opt, name, st, type);
  if (has(name, "attn_v.weight")) return attn_v_type(m, opt, imat, st, type);
  if (has(name, "attn_k")) {
    if (o.class_types.attn_k) return *o.class_types.attn_k;
    if (m.n_expert >= 4) return T::Q8_0;
    if (ft == kIQ3_XS) return T::IQ3_XXS;
    if (ft == kIQ3_XXS || ft == kIQ3_XXS_R4) return T::IQ2_S;
    return type;
  }
  if (has(name, "attn_q")) {  // also attn_qkv, attn_q_a, attn_q_b
    const bool big = m.n_vocab >= 127999 && (m.is_8b || m.is_70b);
    if (o.class_types.attn_q) return *o.class_types.attn_q;
    if (ft == kIQ3_XS) return T::IQ3_XXS;
    if (ft == kIQ3_XXS || ft == kIQ3_XXS_R4) return T::IQ2_S;
    if (ft == kQ5_K_S && big) return T::Q4_K;
    if (ft == kIQ5_K && big) return T::IQ4_K;
    if (ft == kIQ5_KS && big) return T::IQ4_KS;
    return type;
  }
  if (has(name, "ffn_down")) return ffn_down_type(m, opt, imat, name, st, type);
  if (has(name, "attn_output.weight")) return attn_output_type(m, opt, type);
  // (The peer's attn_qkv.weight rule comes here and is unreachable: the attn_q test above matches.)
  if (has(name, "ffn_gate")) return ffn_gate_up_type(m, opt, name, &st->i_ffn_gate, o.class_types.ffn_gate, type);
  if (has(name, "ffn_up")) return ffn_gate_up_type(m, opt, name, &st->i_ffn_up, o.class_types.ffn_up, type);
  return type;
}

int64_t get_int_or(const gguf::File& f, const std::string& key, int64_t dflt) {
  const gguf::Value* v = f.find(key);
  if (!v) return dflt;
  if (v->is_integer()) return v->as_int();
  if (v->type == gguf::ValueType::ARRAY && !v->array.empty() && v->array.front().is_integer())
    return v->array.front().as_int();
  return dflt;
}

}  // namespace

RuleModel read_rule_model(const gguf::File& in) {
  RuleModel m;
  auto arch = in.get_string("general.architecture");
  m.arch = arch.ok() ? *arch : "";
  const std::string p = m.arch + ".";
  m.n_layer = static_cast<int>(get_int_or(in, p + "block_count", 0));
  m.n_head = static_cast<int>(get_int_or(in, p + "attention.head_count", 0));
  m.n_head_kv = static_cast<int>(get_int_or(in, p + "attention.head_count_kv", m.n_head));
  m.n_expert = static_cast<int>(get_int_or(in, p + "expert_count", 0));
  m.n_vocab = get_int_or(in, p + "vocab_size", 0);
  if (m.n_vocab == 0)
    if (const gguf::Value* tok = in.find("tokenizer.ggml.tokens"); tok && tok->type == gguf::ValueType::ARRAY)
      m.n_vocab = static_cast<int64_t>(tok->array.size());
  const int64_t n_embd = get_int_or(in, p + "embedding_length", 0);
  if (m.arch == "llama" && m.n_expert != 8) {
    m.is_8b = (m.n_layer == 32 && m.n_vocab != 49152 && m.n_vocab >= 40000) || m.n_layer == 36;
    m.is_70b = m.n_layer == 80 && m.n_head != m.n_head_kv;
  } else if (m.arch == "qwen3") {
    m.is_8b = m.n_layer == 36 && n_embd != 2560;
  }
  for (const auto& t : in.tensors()) {
    if (has(t.name, "attn_v.weight") || has(t.name, "attn_qkv.weight"))
      ++m.n_attention_wv;
    else if (t.name == "output.weight")
      m.has_output = true;
  }
  return m;
}

GgmlType peer_row_fallback(GgmlType type, int64_t ne0) {
  const bool k256 =
      in(type,
         {T::Q2_K,      T::Q3_K,       T::Q4_K,       T::Q5_K,      T::Q6_K,      T::IQ4_XS,   T::IQ2_XS,   T::IQ2_XXS,
          T::IQ2_S,     T::IQ3_XXS,    T::IQ1_S,      T::IQ3_S,     T::IQ1_M,     T::IQ4_K,    T::IQ2_K,    T::IQ5_K,
          T::IQ3_K,     T::Q4_K_R4,    T::IQ6_K,      T::IQ4_KS,    T::IQ4_XS_R8, T::IQ2_KS,   T::IQ4_KSS,  T::Q6_K_R4,
          T::Q5_K_R4,   T::Q3_K_R4,    T::Q2_K_R4,    T::IQ4_K_R4,  T::Q8_K_R8,   T::IQ3_K_R4, T::IQ2_K_R4, T::IQ5_K_R4,
          T::IQ4_KS_R4, T::IQ3_XXS_R4, T::IQ2_XXS_R4, T::IQ2_XS_R4, T::IQ2_S_R4,  T::IQ3_S_R4, T::IQ3_KS,   T::IQ2_KT,
          T::IQ3_KT,    T::IQ4_KT,     T::IQ5_KS,     T::IQ5_KS_R4, T::IQ2_KL,    T::IQ1_KT});
  if (!k256 || ne0 % 256 == 0) return type;
  if (in(type, {T::IQ4_K, T::IQ4_K_R4, T::Q4_K_R4, T::IQ5_KS, T::IQ5_KS_R4, T::Q4_K})) return T::Q5_0;
  if (in(type, {T::IQ5_K, T::IQ5_K_R4, T::Q5_K_R4, T::Q5_K})) return T::Q6_0;
  if (in(type, {T::IQ6_K, T::Q6_K_R4, T::Q8_K_R8, T::Q6_K})) return T::Q8_0;
  // Every other listed type (IQ2_*, IQ3_*, IQ1_*, Q2_K, Q3_K, IQ4_XS, IQ4_KS, IQ4_KSS, KT, ...).
  return T::IQ4_NL;
}

InterleaveInfo interleave_info(GgmlType type) {
  // Q8_K_R8 de-interleaves to Q8_0 in the peer's table (Q8_K is an activation type).
  if (type == T::Q8_K_R8) return {T::Q8_0, 8};
  // The ARM Q4_0 layouts are not row-interleaved in our registry but are in the peer's table.
  if (type == T::Q4_0_4_4 || type == T::Q4_0_4_8) return {T::Q4_0, 4};
  if (type == T::Q4_0_8_8) return {T::Q4_0, 8};
  const TypeTraits* tt = type_traits(type);
  if (!tt || tt->interleave <= 1) return {type, 1};
  return {tt->base, tt->interleave};
}

Result<GgmlType> preset_tensor_type(const RuleModel& model, const QuantizeOptions& opt, bool has_imatrix,
                                    const gguf::TensorInfo& t, RuleState* state, std::string* note) {
  EM_ASSIGN_OR_RETURN(GgmlType type, heuristic_type(model, opt, has_imatrix, t, state, opt.preset.default_type));
  for (const CustomQuantRule& r : opt.custom_quants) {
    if (std::regex_search(t.name, r.regex)) {
      type = r.type;
      break;
    }
  }
  const GgmlType fitted = peer_row_fallback(type, t.ne[0]);
  if (fitted != type) {
    ++state->n_fallback;
    *note =
        fmt::format("rows of {} are not a multiple of 256 ({}): using {}", t.ne[0], type_name(type), type_name(fitted));
    type = fitted;
  }
  if (t.name == "token_embd.weight" || t.name == "per_layer_token_embd.weight") type = interleave_info(type).base;
  return type;
}

bool very_low_bpw_type(GgmlType type, int32_t ftype) {
  return in(type, {T::IQ2_XXS, T::IQ2_XXS_R4, T::IQ2_XS, T::IQ2_XS_R4, T::IQ2_S, T::IQ2_S_R4, T::IQ1_S, T::IQ1_S_R4,
                   T::IQ1_M, T::IQ1_M_R4, T::IQ1_KT, T::IQ2_KT}) ||
         (type == T::Q2_K && ftype == kQ2_K_S);
}

bool preset_needs_imatrix(int32_t ftype) {
  return in(ftype, {kIQ2_XS, kIQ2_XXS, kIQ2_S, kIQ2_XXS_R4, kQ2_K_S, kIQ2_XS_R4, kIQ1_S, kIQ1_S_R4, kIQ1_M_R4, kIQ1_M});
}

}  // namespace expertmesh
