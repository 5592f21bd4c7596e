// model_shape(): the model facts the planner needs, from GGUF metadata and tensor infos only.
#include <fmt/format.h>

#include <algorithm>
#include <string_view>

#include "coordinator/placement/planner.h"
#include "model/gguf/gguf.h"
#include "model/hparams.h"

namespace expertmesh::placement {

const char* tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::kEmbedding:
      return "embedding";
    case TensorKind::kAttention:
      return "attention";
    case TensorKind::kFfn:
      return "ffn";
    case TensorKind::kSharedExperts:
      return "shexp";
    case TensorKind::kExperts:
      return "experts";
    case TensorKind::kRouter:
      return "router";
    case TensorKind::kNorm:
      return "norm";
    case TensorKind::kOutput:
      return "output";
    case TensorKind::kOther:
      return "other";
  }
  return "?";
}

namespace {

// Classifies a tensor by its GGUF name. `base` is the part after "blk.N." (per-layer) or the whole
// name (global), without the ".weight"/".bias" suffix.
void classify(std::string_view base, bool per_layer, TensorShape* t) {
  auto is = [&](std::string_view s) { return base == s; };
  if (!per_layer) {
    if (is("token_embd")) {
      t->kind = TensorKind::kEmbedding, t->split = Split::kEmbedding;
    } else if (is("output")) {
      t->kind = TensorKind::kOutput, t->split = Split::kVocabRows;
    } else if (is("output_norm")) {
      t->kind = TensorKind::kNorm;
    }
    return;
  }
  if (base.find("norm") != std::string_view::npos) {
    t->kind = TensorKind::kNorm;
  } else if (is("attn_q") || is("attn_k") || is("attn_v")) {
    t->kind = TensorKind::kAttention, t->split = Split::kHeadRows;
  } else if (is("attn_output")) {
    t->kind = TensorKind::kAttention, t->split = Split::kAttnOutRows;
  } else if (is("ffn_up") || is("ffn_gate")) {
    t->kind = TensorKind::kFfn, t->split = Split::kFfnRows;
  } else if (is("ffn_down")) {
    t->kind = TensorKind::kFfn, t->split = Split::kFfnOutRows;
  } else if (is("ffn_up_shexp") || is("ffn_gate_shexp")) {
    t->kind = TensorKind::kSharedExperts, t->split = Split::kFfnRows;
  } else if (is("ffn_down_shexp")) {
    t->kind = TensorKind::kSharedExperts, t->split = Split::kFfnOutRows;
  } else if (is("ffn_up_exps") || is("ffn_gate_exps") || is("ffn_down_exps")) {
    t->kind = TensorKind::kExperts, t->split = Split::kExperts;
  } else if (base.rfind("ffn_gate_inp", 0) == 0 || base.rfind("exp_probs", 0) == 0) {
    t->kind = TensorKind::kRouter;
  }
}

const TypeTraits& traits(GgmlType t) {
  const TypeTraits* tr = type_traits(t);
  static const TypeTraits kF32 = *type_traits(GgmlType::F32);
  return tr ? *tr : kF32;
}

// Smallest multiple of `step` in (0, limit] for which ok(k) holds; `limit` when none does.
template <typename F>
int64_t smallest_multiple(int64_t step, int64_t limit, F ok) {
  for (int64_t k = step; k < limit; k += step)
    if (ok(k)) return k;
  return limit;
}

// Alignments of the head and FFN-row splits of one layer (see planner.h): row slices of whole
// interleave groups. attn_output and ffn_down are split by output rows, independently of the
// heads and FFN rows, so they add no constraint.
void compute_alignment(const ModelShape& m, LayerShape* l) {
  const int64_t gqa = m.n_gqa();
  l->head_align = smallest_multiple(gqa, m.n_head, [&](int64_t k) {
    for (int i : l->tensors) {
      const TensorShape& t = m.tensors[static_cast<size_t>(i)];
      const TypeTraits& tr = traits(t.type);
      if (t.split == Split::kHeadRows) {
        const bool q = t.name.find("attn_q.") != std::string::npos;
        const bool v = t.name.find("attn_v.") != std::string::npos;
        const int64_t heads = q ? k : k / gqa;  // K/V rows follow the query heads' KV groups
        if ((heads * (v ? m.head_dim_v : m.head_dim)) % tr.interleave != 0) return false;
      }
    }
    return true;
  });
  if (l->n_ff > 0) {
    l->ffn_row_align = smallest_multiple(1, l->n_ff, [&](int64_t k) {
      for (int i : l->tensors) {
        const TensorShape& t = m.tensors[static_cast<size_t>(i)];
        const TypeTraits& tr = traits(t.type);
        if (t.split == Split::kFfnRows && k % tr.interleave != 0) return false;
      }
      return true;
    });
  }
}

// Per-layer facts (n_ff, n_expert, expert bytes) from the layer's tensors; errors name the tensor.
Status fill_layer(ModelShape* m, int il) {
  LayerShape& l = m->layers[static_cast<size_t>(il)];
  bool has_q = false;
  for (int i : l.tensors) {
    const TensorShape& t = m->tensors[static_cast<size_t>(i)];
    l.bytes += t.bytes;
    if (t.name.find("attn_q.") != std::string::npos) has_q = true;
    if (t.split == Split::kExperts) {
      if (t.ne[2] <= 0 || (l.n_expert != 0 && t.ne[2] != l.n_expert))
        return Status::InvalidArgument(fmt::format(
            "tensor '{}': {} experts, but the layer's other expert tensors have {}", t.name, t.ne[2], l.n_expert));
      l.n_expert = t.ne[2];
      l.expert_bytes += t.bytes / t.ne[2];
    } else if (t.split == Split::kFfnRows || t.split == Split::kFfnOutRows) {
      const int64_t rows = t.split == Split::kFfnRows ? t.ne[1] : t.ne[0];  // ffn_down: n_ff columns
      if (l.n_ff != 0 && rows != l.n_ff)
        return Status::Unsupported(fmt::format(
            "tensor '{}': FFN width {} differs from the layer's other FFN tensors ({}); dense and shared-expert FFNs "
            "of different widths in one layer are not supported",
            t.name, rows, l.n_ff));
      l.n_ff = rows;
    } else if (t.split == Split::kHeadRows) {
      const bool q = t.name.find("attn_q.") != std::string::npos;
      const bool v = t.name.find("attn_v.") != std::string::npos;
      const int64_t want = (q ? m->n_head : m->n_head_kv) * (v ? m->head_dim_v : m->head_dim);
      if (t.ne[1] != want)
        return Status::InvalidArgument(
            fmt::format("tensor '{}': {} rows, expected {} (heads x head_dim)", t.name, t.ne[1], want));
    } else if (t.split == Split::kAttnOutRows && t.ne[0] != m->n_head * m->head_dim_v) {
      return Status::InvalidArgument(fmt::format("tensor '{}': {} columns, expected {} (n_head x head_dim)", t.name,
                                                 t.ne[0], m->n_head * m->head_dim_v));
    }
  }
  if (!has_q) return Status::NotFound(fmt::format("layer {}: no blk.{}.attn_q.weight", il, il));
  if (m->n_expert > 0 && l.n_expert > m->n_expert)
    return Status::InvalidArgument(
        fmt::format("layer {}: {} experts, expert_count is {}", il, l.n_expert, m->n_expert));
  compute_alignment(*m, &l);
  return Status::Ok();
}

}  // namespace

Result<ModelShape> model_shape_from(const ModelDims& d, const std::vector<TensorDesc>& tensors) {
  if (d.n_layer <= 0 || d.n_head <= 0 || d.n_head_kv <= 0 || d.n_head % d.n_head_kv != 0 || d.n_embd <= 0)
    return Status::InvalidArgument(fmt::format("model shape: invalid dimensions (n_layer {}, n_head {}, n_head_kv {})",
                                               d.n_layer, d.n_head, d.n_head_kv));
  ModelShape m;
  m.arch = d.arch;
  m.n_layer = d.n_layer, m.n_embd = d.n_embd, m.n_head = d.n_head, m.n_head_kv = d.n_head_kv;
  m.head_dim = d.head_dim > 0 ? d.head_dim : d.n_embd / d.n_head;
  m.head_dim_v = d.head_dim_v > 0 ? d.head_dim_v : m.head_dim;
  m.n_vocab = d.n_vocab, m.n_expert = d.n_expert, m.n_expert_used = d.n_expert_used;
  m.layers.resize(static_cast<size_t>(d.n_layer));
  bool has_output = false;
  for (const TensorDesc& td : tensors) {
    TensorShape t;
    t.name = td.name, t.type = td.type, t.bytes = td.bytes;
    std::copy(td.ne, td.ne + 4, t.ne);
    std::string_view base = t.name;
    for (std::string_view suffix : {".weight", ".bias"})
      if (base.size() > suffix.size() && base.substr(base.size() - suffix.size()) == suffix) {
        base.remove_suffix(suffix.size());
        break;
      }
    if (base.rfind("blk.", 0) == 0) {
      const size_t dot = base.find('.', 4);
      int il = -1;
      const std::string_view num = base.substr(4, dot == std::string_view::npos ? 0 : dot - 4);
      if (!num.empty() && num.size() < 7 && num.find_first_not_of("0123456789") == std::string_view::npos)
        il = std::stoi(std::string(num));
      if (il < 0 || il >= d.n_layer)
        return Status::InvalidArgument(fmt::format("tensor '{}': layer index outside 0..{}", t.name, d.n_layer - 1));
      t.layer = il;
      classify(base.substr(dot + 1), true, &t);
      m.layers[static_cast<size_t>(il)].tensors.push_back(static_cast<int>(m.tensors.size()));
    } else {
      classify(base, false, &t);
      if (t.split == Split::kVocabRows) has_output = true;
    }
    if (t.split == Split::kVocabRows || t.split == Split::kEmbedding) {
      if (m.n_vocab == 0) m.n_vocab = t.ne[1];
      if (t.ne[1] != m.n_vocab)
        return Status::InvalidArgument(
            fmt::format("tensor '{}': {} rows, vocabulary has {}", t.name, t.ne[1], m.n_vocab));
    }
    m.total_bytes += t.bytes;
    m.tensors.push_back(std::move(t));
  }
  m.tied_output = !has_output;
  for (const TensorShape& t : m.tensors)  // vocab slices of interleaved types keep whole row groups
    if ((t.split == Split::kVocabRows || (m.tied_output && t.split == Split::kEmbedding)))
      m.vocab_align = std::max<int64_t>(m.vocab_align, traits(t.type).interleave);
  if (m.n_vocab <= 0)
    return Status::NotFound("model shape: no vocabulary size and no token_embd.weight / output.weight");
  for (int il = 0; il < d.n_layer; ++il) EM_RETURN_IF_ERROR(fill_layer(&m, il));
  return m;
}

Result<ModelShape> model_shape(const gguf::File& f) {
  EM_ASSIGN_OR_RETURN(HParams hp, load_hparams(f));
  ModelDims d;
  d.arch = hp.arch_str;
  d.n_layer = hp.n_layer, d.n_embd = hp.n_embd, d.n_head = hp.n_head, d.n_head_kv = hp.n_head_kv;
  d.head_dim = hp.head_dim, d.head_dim_v = hp.head_dim_v;
  d.n_vocab = hp.n_vocab, d.n_expert = hp.n_expert, d.n_expert_used = hp.n_expert_used;
  std::vector<TensorDesc> descs;
  descs.reserve(f.tensors().size());
  for (const gguf::TensorInfo& ti : f.tensors()) {
    TensorDesc td;
    td.name = ti.name, td.type = ti.type, td.bytes = ti.nbytes;
    std::copy(ti.ne, ti.ne + 4, td.ne);
    descs.push_back(std::move(td));
  }
  auto shape = model_shape_from(d, descs);
  if (!shape.ok()) return shape.status().with_context(f.path());
  return shape;
}

}  // namespace expertmesh::placement
