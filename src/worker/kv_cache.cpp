#include "worker/kv_cache.h"

#include <fmt/format.h>

#include "kernels/quant/quant.h"

namespace expertmesh::worker {

Result<KvCache> KvCache::create(GgmlType type_k, GgmlType type_v, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim,
                                int64_t n_ctx, int64_t n_seq) {
  if (n_seq < 1) return Status::InvalidArgument(fmt::format("KV cache: {} sequences (need at least 1)", n_seq));
  KvCache c;
  c.n_seq_ = n_seq;
  c.type_k_ = type_k;
  c.type_v_ = type_v;
  c.n_layer_ = n_layer;
  c.n_kv_heads_ = n_kv_heads;
  c.head_dim_ = head_dim;
  c.n_ctx_ = n_ctx;
  for (auto [t, which, dst] : {std::tuple{type_k, "-ctk", &c.k_row_}, std::tuple{type_v, "-ctv", &c.v_row_}}) {
    const auto& fns = quant::quant_fns(t);
    if (!fns.to_float || !fns.quantize || type_traits(t)->interleave != 1)
      return Status::InvalidArgument(fmt::format("{} {}: not usable as a KV cache type", which, type_name(t)));
    auto rs = row_size_checked(t, head_dim);
    if (!rs.ok())
      return Status::InvalidArgument(fmt::format("{} {}: head_dim {} is not a whole number of blocks ({})", which,
                                                 type_name(t), head_dim, rs.status().message()));
    *dst = *rs;
  }
  const int64_t rows = n_seq * n_layer * n_kv_heads * n_ctx;
  c.k_.assign(size_t(rows * c.k_row_), 0);
  c.v_.assign(size_t(rows * c.v_row_), 0);
  return c;
}

Status KvCache::store(int64_t seq, int64_t l, int64_t pos, int64_t h0, int64_t n_heads, const float* k,
                      const float* v) {
  if (pos < 0 || pos >= n_ctx_ || l < 0 || l >= n_layer_)
    return Status::OutOfRange(fmt::format("KV cache: position {} outside the context of {}", pos, n_ctx_));
  if (seq < 0 || seq >= n_seq_)
    return Status::OutOfRange(fmt::format("KV cache: sequence {} outside the {} it holds", seq, n_seq_));
  if (h0 < 0 || n_heads < 0 || h0 + n_heads > n_kv_heads_)
    return Status::Internal(
        fmt::format("KV cache: heads [{}, {}) outside the {} it holds", h0, h0 + n_heads, n_kv_heads_));
  for (int64_t i = 0; i < n_heads; ++i) {
    const int64_t h = h0 + i;
    EM_RETURN_IF_ERROR(quant::quantize_rows(type_k_, k + i * head_dim_, k_.data() + row_index(seq, l, h, pos) * k_row_,
                                            1, head_dim_, nullptr, 1));
    EM_RETURN_IF_ERROR(quant::quantize_rows(type_v_, v + i * head_dim_, v_.data() + row_index(seq, l, h, pos) * v_row_,
                                            1, head_dim_, nullptr, 1));
  }
  return Status::Ok();
}

Status KvCache::load_k(int64_t seq, int64_t l, int64_t h, int64_t n, float* out) const {
  if (seq < 0 || seq >= n_seq_ || n < 0 || n > n_ctx_) return Status::Internal("KV cache: load outside the cache");
  const uint8_t* src = k_.data() + row_index(seq, l, h, 0) * k_row_;
  return quant::dequantize_rows(type_k_, src, out, n, head_dim_, 1);
}

Status KvCache::load_v(int64_t seq, int64_t l, int64_t h, int64_t n, float* out) const {
  if (seq < 0 || seq >= n_seq_ || n < 0 || n > n_ctx_) return Status::Internal("KV cache: load outside the cache");
  const uint8_t* src = v_.data() + row_index(seq, l, h, 0) * v_row_;
  return quant::dequantize_rows(type_v_, src, out, n, head_dim_, 1);
}

}  // namespace expertmesh::worker
