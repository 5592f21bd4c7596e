#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <set>

#include "kernels/quant/quant.h"
#include "model/archs/arch.h"

namespace expertmesh {

std::string format_shape(const int64_t* ne, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += fmt::format("{}{}", i ? ", " : "", ne[i]);
  return s + "]";
}

bool Weight::holds(int64_t r0, int64_t n) const {
  if (n <= 0 || r0 < 0 || r0 + n > n_rows()) return false;
  if (data) return true;
  const auto it =
      std::upper_bound(blocks.begin(), blocks.end(), r0, [](int64_t r, const RowBlock& b) { return r < b.begin; });
  return it != blocks.begin() && r0 + n <= std::prev(it)->end;
}

const uint8_t* Weight::held_row(int64_t r) const {
  const auto it =
      std::upper_bound(blocks.begin(), blocks.end(), r, [](int64_t x, const RowBlock& b) { return x < b.begin; });
  if (it == blocks.begin()) return nullptr;
  const RowBlock& b = *std::prev(it);
  return r < b.end ? b.data + (r - b.begin) * row_bytes : nullptr;
}

Status TensorBinder::take(const std::string& name, std::vector<int64_t> ne, TypeRule rule, Weight* out, bool optional) {
  const gguf::TensorInfo* t = file_.find_tensor(name);
  if (!t) {
    if (!optional) {
      missing_.push_back(name);
      ++n_expected_;
    }
    return Status::Ok();
  }
  ++n_expected_;
  taken_.push_back(name);
  int64_t want[4] = {1, 1, 1, 1};
  for (size_t i = 0; i < ne.size() && i < 4; ++i) want[i] = ne[i];
  if (!std::equal(want, want + 4, t->ne))
    return Status::InvalidArgument(fmt::format("{}: tensor '{}' has shape {}, expected {}", file_.path(), name,
                                               format_shape(t->ne, int(t->n_dims)),
                                               format_shape(want, int(std::max<size_t>(ne.size(), 1)))));
  if (rule == TypeRule::kFloat32 && t->type != GgmlType::F32)
    return Status::InvalidArgument(
        fmt::format("{}: tensor '{}' has type {}, expected f32", file_.path(), name, type_name(t->type)));
  if (rule == TypeRule::kAny && t->type != GgmlType::F32 && !quant::quant_fns(t->type).to_float)
    return Status::Unsupported(
        fmt::format("{}: tensor '{}' has type {}, which has no dequantizer", file_.path(), name, type_name(t->type)));
  auto rs = row_size_checked(t->type, t->ne[0]);
  if (!rs.ok())
    return Status::Corruption(fmt::format("{}: tensor '{}': {}", file_.path(), name, rs.status().message()));
  if (!t->data)
    return Status::InvalidArgument(fmt::format("{}: tensor '{}' has no data (vocab-only file)", file_.path(), name));
  out->name = name;
  out->type = t->type;
  std::copy(t->ne, t->ne + 4, out->ne);
  out->row_bytes = *rs;
  out->data = t->data;
  return Status::Ok();
}

Status TensorBinder::finish() const {
  const size_t found = file_.tensors().size();
  if (!missing_.empty())
    return Status::NotFound(fmt::format("{}: expected {} tensors, found {}; first missing: {}", file_.path(),
                                        n_expected_, found, missing_.front()));
  if (taken_.size() != found) {
    std::set<std::string> taken(taken_.begin(), taken_.end());
    for (const auto& t : file_.tensors())
      if (!taken.count(t.name))
        return Status::InvalidArgument(
            fmt::format("{}: expected {} tensors, found {}; unexpected: {}", file_.path(), n_expected_, found, t.name));
  }
  return Status::Ok();
}

const ArchSpec& arch_spec(Arch a) {
  switch (a) {
    case Arch::kLlama:
      return llama_arch();
    case Arch::kQwen3:
      return qwen3_arch();
    case Arch::kQwen3Moe:
      return qwen3moe_arch();
  }
  return llama_arch();
}

Status bind_globals(TensorBinder& b, const HParams& hp, ModelWeights* w) {
  EM_RETURN_IF_ERROR(
      b.take("token_embd.weight", {hp.n_embd, hp.n_vocab}, TypeRule::kAny, &w->token_embd));  // [n_embd, n_vocab]
  EM_RETURN_IF_ERROR(b.take("output_norm.weight", {hp.n_embd}, TypeRule::kFloat32, &w->output_norm));  // [n_embd]
  EM_RETURN_IF_ERROR(b.take("output.weight", {hp.n_embd, hp.n_vocab}, TypeRule::kAny, &w->output,
                            true));                     // [n_embd, n_vocab], optional
  if (!w->output.present()) w->output = w->token_embd;  // tied embeddings
  return Status::Ok();
}

Result<std::unique_ptr<Model>> Model::load(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  EM_ASSIGN_OR_RETURN(m->file_, gguf::File::open(path));
  EM_ASSIGN_OR_RETURN(m->hp_, load_hparams(*m->file_));
  if (m->hp_.n_vocab <= 0) {
    const gguf::TensorInfo* te = m->file_->find_tensor("token_embd.weight");
    if (!te) return Status::NotFound(fmt::format("{}: no vocabulary size and no token_embd.weight", path));
    m->hp_.n_vocab = te->ne[1];
  }
  m->arch_ = &arch_spec(m->hp_.arch);
  TensorBinder b(*m->file_);
  EM_RETURN_IF_ERROR(m->arch_->bind(b, m->hp_, &m->w_));
  EM_RETURN_IF_ERROR(b.finish());
  return m;
}

}  // namespace expertmesh
