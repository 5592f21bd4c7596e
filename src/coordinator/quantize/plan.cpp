#include "coordinator/quantize/plan.h"

#include <fmt/format.h>

#include "coordinator/quantize/rules.h"
#include "kernels/quant/quant.h"

namespace expertmesh {
namespace {

using T = GgmlType;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

bool is_float_type(T t) { return t == T::F32 || t == T::F16 || t == T::BF16; }

// llama-quantize's "is this tensor quantizable at all" test.
bool quantizable(const gguf::TensorInfo& t, const QuantizeOptions& opt) {
  if (t.type == T::I8 || t.type == T::I16 || t.type == T::I32 || t.type == T::I64) return false;
  const std::string& n = t.name;
  if (!ends_with(n, "weight")) return false;
  if (t.n_dims < 2) return false;
  if (contains(n, "_norm.weight")) return false;
  if (opt.leave_output_tensor && n == "output.weight") return false;
  if (contains(n, "ffn_gate_inp.weight") && (!opt.ffn_gate_inp_type || *opt.ffn_gate_inp_type == t.type)) return false;
  if (n == "position_embd.weight" || n == "token_types.weight") return false;
  if (contains(n, "ssm_conv1d") || contains(n, "ssm_x.weight") || contains(n, "ssm_dt.weight")) return false;
  if (contains(n, "attn_rel_b.weight")) return false;
  return true;
}

// The peer's --repack table (iqk_quantize.cpp get_repack_info): type -> interleaved type. F16 /
// BF16 -> BF16_R16 is left out: the peer offers it only when built with AVX512-BF16.
T repacked_type(T t) {
  switch (t) {
    case T::IQ2_K:
      return T::IQ2_K_R4;
    case T::IQ3_K:
      return T::IQ3_K_R4;
    case T::IQ4_K:
      return T::IQ4_K_R4;
    case T::IQ5_K:
      return T::IQ5_K_R4;
    case T::IQ4_XS:
      return T::IQ4_XS_R8;
    case T::IQ4_KS:
      return T::IQ4_KS_R4;
    case T::IQ5_KS:
      return T::IQ5_KS_R4;
    case T::IQ4_NL:
      return T::IQ4_NL_R4;
    case T::IQ2_BN:
      return T::IQ2_BN_R4;
    case T::IQ2_XXS:
      return T::IQ2_XXS_R4;
    case T::IQ2_XS:
      return T::IQ2_XS_R4;
    case T::IQ2_S:
      return T::IQ2_S_R4;
    case T::IQ3_XXS:
      return T::IQ3_XXS_R4;
    case T::IQ3_S:
      return T::IQ3_S_R4;
    case T::Q2_K:
      return T::Q2_K_R4;
    case T::Q3_K:
      return T::Q3_K_R4;
    case T::Q4_K:
      return T::Q4_K_R4;
    case T::Q5_K:
      return T::Q5_K_R4;
    case T::Q6_K:
      return T::Q6_K_R4;
    case T::Q4_0:
      return T::Q4_0_R8;
    case T::Q5_0:
      return T::Q5_0_R4;
    case T::Q6_0:
      return T::Q6_0_R4;
    case T::Q8_0:
      return T::Q8_0_R8;
    case T::Q8_K:
      return T::Q8_K_R8;
    case T::Q8_KV:
      return T::Q8_KV_R8;
    case T::MXFP4:
      return T::MXFP4_R8;
    default:
      return t;
  }
}

// The peer's repacked_ftype: the llama_ftype of a repacked model.
int32_t repacked_ftype(int32_t ft) {
  static constexpr std::pair<int32_t, int32_t> kMap[] = {
      {2, 202},   {7, 207},   {8, 208},   {10, 210},  {11, 211},  {12, 211},  {13, 211},  {14, 214},
      {15, 214},  {16, 216},  {17, 216},  {18, 218},  {19, 219},  {20, 220},  {23, 223},  {24, 224},
      {25, 225},  {26, 226},  {29, 229},  {30, 230},  {31, 231},  {135, 335}, {32, 232},  {137, 337},
      {138, 338}, {139, 339}, {140, 340}, {141, 341}, {145, 345}, {150, 350}, {149, 398},
  };
  for (const auto& [from, to] : kMap)
    if (from == ft) return to;
  return ft;
}

int32_t input_ftype(const gguf::File& in, int32_t dflt) {
  auto v = in.get_int("general.file_type");
  return v.ok() ? static_cast<int32_t>(*v) : dflt;
}

Result<QuantPlan> plan_repack(const gguf::File& in, const QuantizeOptions& opt) {
  QuantPlan plan;
  plan.ftype = repacked_ftype(input_ftype(in, opt.preset.ftype));
  std::vector<std::regex> patterns;
  for (const auto& p : opt.repack_patterns) {
    try {
      patterns.emplace_back(p);
    } catch (const std::regex_error& e) {
      return Status::InvalidArgument(fmt::format("--repack-pattern: bad regex '{}': {}", p, e.what()));
    }
  }
  for (const gguf::TensorInfo& t : in.tensors()) {
    TensorPlan tp;
    tp.name = t.name;
    tp.src_type = tp.dst_type = t.type;
    tp.n_elements = t.n_elements();
    tp.src_bytes = tp.dst_bytes = t.nbytes;
    const T rt = repacked_type(t.type);
    bool repack = rt != t.type && t.name != "token_embd.weight" && t.name != "per_layer_token_embd.weight" &&
                  t.ne[1] % type_traits(rt)->interleave == 0 && quant::quant_fns(rt).repack != nullptr;
    if (repack && !patterns.empty()) {
      bool found = false;
      for (const auto& re : patterns) found = found || std::regex_search(t.name, re);
      repack = found;
    }
    if (repack) {
      tp.action = TensorAction::kRepack;
      tp.dst_type = rt;
      EM_ASSIGN_OR_RETURN(tp.dst_bytes, tensor_nbytes(rt, t.ne));
      ++plan.n_quantized;
    }
    plan.src_bytes += tp.src_bytes;
    plan.dst_bytes += tp.dst_bytes;
    plan.n_params += tp.n_elements;
    plan.tensors.push_back(std::move(tp));
  }
  return plan;
}

// The type llama-quantize's main loop settles on before the imatrix and interleave steps.
Result<T> chosen_type(const gguf::TensorInfo& t, const QuantizeOptions& opt, const RuleModel& model, bool has_imatrix,
                      RuleState* state, TensorPlan* tp) {
  T type = opt.preset.default_type;
  if (opt.pure) {
    const T fitted = peer_row_fallback(type, t.ne[0]);
    if (fitted != type) {
      ++state->n_fallback;
      tp->note = fmt::format("rows of {} are not a multiple of 256 ({}): using {}", t.ne[0], type_name(type),
                             type_name(fitted));
      type = fitted;
    }
  } else if (type_traits(type)->quantized) {
    EM_ASSIGN_OR_RETURN(type, preset_tensor_type(model, opt, has_imatrix, t, state, &tp->note));
  }
  if (opt.token_embedding_type && t.name == "token_embd.weight") type = *opt.token_embedding_type;
  if (opt.per_layer_token_embedding_type && t.name == "per_layer_token_embd.weight")
    type = *opt.per_layer_token_embedding_type;
  if (opt.output_tensor_type && t.name == "output.weight") type = *opt.output_tensor_type;
  if (opt.ffn_gate_inp_type && contains(t.name, "ffn_gate_inp.weight")) type = *opt.ffn_gate_inp_type;
  // The peer also applies the class flags here on exact names ("attn_q.weight", "ffn_gate", ...),
  // which real layer tensors never have; they act through the preset rules instead.
  const TensorClassTypes& c = opt.class_types;
  const std::pair<const char*, const std::optional<GgmlType>*> exact[] = {{"attn_q.weight", &c.attn_q},
                                                                          {"attn_k.weight", &c.attn_k},
                                                                          {"attn_v.weight", &c.attn_v},
                                                                          {"attn_qkv.weight", &c.attn_qkv},
                                                                          {"attn_output.weight", &c.attn_output},
                                                                          {"ffn_gate", &c.ffn_gate},
                                                                          {"ffn_down", &c.ffn_down},
                                                                          {"ffn_up", &c.ffn_up}};
  for (const auto& [name, flag] : exact)
    if (*flag && t.name == name) type = **flag;
  if (t.name == "token_embd.weight") type = interleave_info(type).base;
  return type;
}

// Imatrix lookup and the rules that depend on it, then the layout fallbacks.
Status finish_quantized_tensor(const gguf::TensorInfo& t, const QuantizeOptions& opt, const Imatrix* imatrix,
                               RuleState* state, TensorPlan* tp) {
  if (!is_float_type(t.type) && !opt.allow_requantize)
    return Status::InvalidArgument(fmt::format(
        "tensor '{}' is already quantized ({}); pass --allow-requantize to requantize it", t.name, type_name(t.type)));
  if (!quant::quant_fns(t.type).to_float)
    return Status::Unsupported(fmt::format("tensor '{}': cannot read type {}", t.name, type_name(t.type)));
  if (imatrix && type_traits(tp->dst_type)->quantized) {
    tp->imatrix = imatrix->find_for_tensor(t.name);
    const int64_t want_len = t.ne[0] * t.ne[2] * t.ne[3];
    if (tp->imatrix && static_cast<int64_t>(tp->imatrix->values.size()) != want_len) {
      if (t.name != "token_embd.weight")
        return Status::InvalidArgument(fmt::format("tensor '{}': imatrix entry '{}' has {} values, expected {}", t.name,
                                                   tp->imatrix->name, tp->imatrix->values.size(), want_len));
      tp->imatrix = nullptr;  // the peer ignores a mismatching entry for the embedding table
    }
  }
  const bool exempt = t.name == "token_embd.weight" || t.name == "output.weight";
  if (!tp->imatrix && !exempt && !opt.ignore_imatrix_rules && very_low_bpw_type(tp->dst_type, opt.preset.ftype))
    return Status::InvalidArgument(fmt::format(
        "tensor '{}': type {} is a very low bit quantization and needs importance-matrix data (--imatrix){}; "
        "--ignore-imatrix-rules overrides this",
        t.name, type_name(tp->dst_type), imatrix ? ", but the imatrix has no entry for it" : ""));
  const InterleaveInfo il = interleave_info(tp->dst_type);
  if (il.rows > 1 && t.ne[1] % il.rows != 0) {
    tp->note =
        fmt::format("{} needs rows in groups of {}: using {}", type_name(tp->dst_type), il.rows, type_name(il.base));
    tp->dst_type = il.base;
  }
  // Where the peer would corrupt the file (or abort), fall back to F16 instead.
  const T fitted = row_size_fallback(tp->dst_type, t.ne[0]);
  if (fitted != tp->dst_type) {
    tp->note = fmt::format("rows of {} are not a multiple of {}'s {}-element blocks: using {}", t.ne[0],
                           type_name(tp->dst_type), type_traits(tp->dst_type)->block_size, type_name(fitted));
    tp->dst_type = fitted;
    ++state->n_fallback;
    tp->fallback = true;
  }
  if (!tp->imatrix && quant::quant_fns(tp->dst_type).needs_imatrix)
    return Status::InvalidArgument(fmt::format("tensor '{}': type {} cannot be quantized without an importance matrix",
                                               t.name, type_name(tp->dst_type)));
  if (tp->dst_type != t.type && !quant::quant_fns(tp->dst_type).quantize)
    return Status::Unsupported(
        fmt::format("tensor '{}': quantizing to {} is not supported", t.name, type_name(tp->dst_type)));
  return Status::Ok();
}

}  // namespace

GgmlType row_size_fallback(GgmlType type, int64_t ne0) {
  const TypeTraits* tt = type_traits(type);
  if (!tt || ne0 % tt->block_size == 0) return type;
  GgmlType fb = tt->block_size == 256 ? peer_row_fallback(type, ne0) : T::F16;
  if (fb == type) fb = T::F16;
  const TypeTraits* ft = type_traits(fb);
  return ne0 % ft->block_size == 0 ? fb : T::F16;
}

Imatrix filter_imatrix(const Imatrix& im, const std::vector<std::string>& include,
                       const std::vector<std::string>& exclude) {
  Imatrix out;
  out.last_call = im.last_call;
  out.dataset = im.dataset;
  for (const auto& e : im.entries) {
    bool keep = include.empty();
    for (const auto& s : include) keep = keep || e.name.find(s) != std::string::npos;
    for (const auto& s : exclude) keep = keep && e.name.find(s) == std::string::npos;
    if (keep) out.entries.push_back(e);
  }
  return out;
}

Result<QuantPlan> plan_quantization(const gguf::File& in, const QuantizeOptions& opt, const Imatrix* imatrix) {
  if (opt.repack) return plan_repack(in, opt);
  if (imatrix && imatrix->entries.empty()) imatrix = nullptr;
  if (!imatrix && !opt.ignore_imatrix_rules && preset_needs_imatrix(opt.preset.ftype))
    return Status::InvalidArgument(fmt::format(
        "preset {} needs an importance matrix (--imatrix); the peer refuses IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS "
        "and Q2_K_S without one (--ignore-imatrix-rules overrides this)",
        opt.preset.name));
  QuantPlan plan;
  plan.ftype = opt.preset.copy_only ? input_ftype(in, opt.preset.ftype) : opt.preset.ftype;
  const RuleModel model = read_rule_model(in);
  RuleState state;
  for (const gguf::TensorInfo& t : in.tensors()) {
    TensorPlan tp;
    tp.name = t.name;
    tp.src_type = tp.dst_type = t.type;
    tp.n_elements = t.n_elements();
    tp.src_bytes = t.nbytes;
    if (!opt.preset.copy_only && quantizable(t, opt)) {
      const int before = state.n_fallback;
      EM_ASSIGN_OR_RETURN(tp.dst_type, chosen_type(t, opt, model, imatrix != nullptr, &state, &tp));
      tp.fallback = state.n_fallback != before;
      if (tp.dst_type != t.type) {
        tp.action = TensorAction::kQuantize;
        EM_RETURN_IF_ERROR(finish_quantized_tensor(t, opt, imatrix, &state, &tp));
        if (tp.dst_type == t.type)
          tp.action = TensorAction::kCopy;  // a fallback landed on the input's type
        else
          ++plan.n_quantized;
      } else {
        tp.note.clear();
      }
    }
    EM_ASSIGN_OR_RETURN(tp.dst_bytes, tensor_nbytes(tp.dst_type, t.ne));
    plan.src_bytes += tp.src_bytes;
    plan.dst_bytes += tp.dst_bytes;
    plan.n_params += tp.n_elements;
    plan.tensors.push_back(std::move(tp));
  }
  plan.n_fallback = state.n_fallback;
  return plan;
}

}  // namespace expertmesh
