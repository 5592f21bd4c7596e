#include "coordinator/quantize/plan.h"

#include <fmt/format.h>

#include "kernels/quant/quant.h"

namespace expertmesh {
namespace {

using T = GgmlType;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// The peer's change_type_if_necessary for 256-wide block types (llama-quantize.cpp).
T peer_256_fallback(T t) {
  switch (t) {
    case T::IQ4_K: case T::IQ4_K_R4: case T::Q4_K_R4: case T::IQ5_KS: case T::IQ5_KS_R4: case T::Q4_K:
      return T::Q5_0;
    case T::IQ5_K: case T::IQ5_K_R4: case T::Q5_K_R4: case T::Q5_K:
      return T::Q6_0;
    case T::IQ6_K: case T::Q6_K_R4: case T::Q8_K_R8: case T::Q6_K:
      return T::Q8_0;
    default:
      return T::IQ4_NL;
  }
}

// Types llama-quantize refuses to use without imatrix data for a tensor (very low bpw).
bool needs_imatrix_by_rule(T t) {
  switch (t) {
    case T::IQ2_XXS: case T::IQ2_XXS_R4: case T::IQ2_XS: case T::IQ2_XS_R4: case T::IQ2_S: case T::IQ2_S_R4:
    case T::IQ1_S: case T::IQ1_S_R4: case T::IQ1_M: case T::IQ1_M_R4: case T::IQ1_KT: case T::IQ2_KT:
      return true;
    default:
      return false;
  }
}

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

}  // namespace

GgmlType row_size_fallback(GgmlType type, int64_t ne0) {
  const TypeTraits* tt = type_traits(type);
  if (!tt || ne0 % tt->block_size == 0) return type;
  GgmlType fb = tt->block_size == 256 ? peer_256_fallback(type) : T::F16;
  const TypeTraits* ft = type_traits(fb);
  return ne0 % ft->block_size == 0 ? fb : T::F16;
}

Result<QuantPlan> plan_quantization(const gguf::File& in, const QuantizeOptions& opt, const Imatrix* imatrix) {
  QuantPlan plan;
  // The peer's per-tensor preset heuristics (llama_tensor_get_type: attn_v / ffn_down / output
  // upgrades by layer and architecture) arrive with the recipe work; until then a quantized
  // preset without --pure would silently differ from the peer, so it is refused.
  if (!opt.pure && !opt.preset.copy_only && type_traits(opt.preset.default_type)->quantized)
    return Status::Unsupported(fmt::format(
        "preset {} without --pure needs the per-tensor preset rules, which are not available yet; pass --pure "
        "(with --token-embedding-type / --output-tensor-type for those tensors)",
        opt.preset.name));
  for (const gguf::TensorInfo& t : in.tensors()) {
    TensorPlan tp;
    tp.name = t.name;
    tp.src_type = t.type;
    tp.dst_type = t.type;
    tp.src_bytes = t.nbytes;
    bool quantize = !opt.preset.copy_only && quantizable(t, opt);
    if (quantize) {
      GgmlType want = opt.preset.default_type;
      if (opt.token_embedding_type && t.name == "token_embd.weight") want = *opt.token_embedding_type;
      if (opt.output_tensor_type && t.name == "output.weight") want = *opt.output_tensor_type;
      if (opt.ffn_gate_inp_type && contains(t.name, "ffn_gate_inp.weight")) want = *opt.ffn_gate_inp_type;
      const TypeTraits* wt = type_traits(want);
      // Token embeddings are looked up by row: never interleaved. Interleaved types also need
      // whole row groups.
      if (wt->interleave > 1 && (t.name == "token_embd.weight" || t.ne[1] % wt->interleave != 0)) {
        tp.note = fmt::format("{} needs rows in groups of {}: using {}", wt->name, wt->interleave,
                              type_name(wt->base));
        want = wt->base;
        tp.fallback = true;
      }
      GgmlType fitted = row_size_fallback(want, t.ne[0]);
      if (fitted != want) {
        tp.note = fmt::format("rows of {} are not a multiple of {}'s {}-element blocks: using {}", t.ne[0],
                              type_name(want), type_traits(want)->block_size, type_name(fitted));
        tp.fallback = true;
      }
      tp.dst_type = fitted;
      quantize = tp.dst_type != t.type;
    }
    if (quantize) {
      tp.action = TensorAction::kQuantize;
      if (!is_float_type(t.type) && !opt.allow_requantize)
        return Status::InvalidArgument(fmt::format(
            "tensor '{}' is already quantized ({}); pass --allow-requantize to requantize it", t.name, type_name(t.type)));
      if (!quant::quant_fns(t.type).to_float)
        return Status::Unsupported(fmt::format("tensor '{}': cannot read type {}", t.name, type_name(t.type)));
      if (!quant::quant_fns(tp.dst_type).quantize)
        return Status::Unsupported(fmt::format("tensor '{}': quantizing to {} is not supported", t.name,
                                               type_name(tp.dst_type)));
      if (imatrix && type_traits(tp.dst_type)->quantized) {
        tp.imatrix = imatrix->find_for_tensor(t.name);
        const int64_t want_len = t.ne[0] * t.ne[2] * t.ne[3];
        if (tp.imatrix && static_cast<int64_t>(tp.imatrix->values.size()) != want_len) {
          if (t.name == "token_embd.weight") {
            tp.imatrix = nullptr;  // the peer ignores a mismatching entry for the embedding table
          } else {
            return Status::InvalidArgument(fmt::format("tensor '{}': imatrix entry '{}' has {} values, expected {}",
                                                       t.name, tp.imatrix->name, tp.imatrix->values.size(), want_len));
          }
        }
      }
      const bool exempt = t.name == "token_embd.weight" || t.name == "output.weight";
      if (!tp.imatrix && !exempt && !opt.ignore_imatrix_rules &&
          (needs_imatrix_by_rule(tp.dst_type) || quant::quant_fns(tp.dst_type).needs_imatrix))
        return Status::InvalidArgument(fmt::format(
            "tensor '{}': type {} needs importance-matrix data (--imatrix) for this tensor{}", t.name,
            type_name(tp.dst_type), imatrix ? ", and the imatrix has no entry for it" : ""));
      if (!tp.imatrix && quant::quant_fns(tp.dst_type).needs_imatrix)
        return Status::InvalidArgument(
            fmt::format("tensor '{}': type {} cannot be quantized without an importance matrix", t.name,
                        type_name(tp.dst_type)));
    }
    EM_ASSIGN_OR_RETURN(tp.dst_bytes, tensor_nbytes(tp.dst_type, t.ne));
    if (tp.fallback) ++plan.n_fallback;
    plan.src_bytes += tp.src_bytes;
    plan.dst_bytes += tp.dst_bytes;
    plan.n_params += t.n_elements();
    plan.tensors.push_back(std::move(tp));
  }
  return plan;
}

}  // namespace expertmesh
