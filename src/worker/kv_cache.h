// KV cache of n_seq sequences (serve's slots; one everywhere else) for the layers and KV heads a
// rank owns, n_ctx positions each. Rows are stored in the cache type (F16 by default, like the
// peer; Q8_0 / BF16 / F32 on request) one row of head_dim per (sequence, position, kv head), so
// K and V are rounded exactly as the peer rounds them.
//
// Which positions hold valid rows is the engine's business (Engine tracks each sequence's length).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "model/types.h"

namespace expertmesh::worker {

class KvCache {
 public:
  // Validates that head_dim rows are whole blocks of the types (Q8_0: multiple of 32).
  static Result<KvCache> create(GgmlType type_k, GgmlType type_v, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim,
                                int64_t n_ctx, int64_t n_seq = 1);
  int64_t n_ctx() const { return n_ctx_; }  // positions per sequence
  int64_t n_seq() const { return n_seq_; }
  int64_t head_dim() const { return head_dim_; }
  GgmlType type_k() const { return type_k_; }
  GgmlType type_v() const { return type_v_; }

  // Stores K and V (n_heads × head_dim floats each) of the cache's heads [h0, h0 + n_heads) of
  // local layer `l` at position `pos` of sequence `seq` (a layer may use fewer heads than the
  // cache holds).
  Status store(int64_t seq, int64_t l, int64_t pos, int64_t h0, int64_t n_heads, const float* k, const float* v);
  // Dequantizes positions [0, n) of kv head `h` of layer `l` of sequence `seq` to n × head_dim floats.
  Status load_k(int64_t seq, int64_t l, int64_t h, int64_t n, float* out) const;
  Status load_v(int64_t seq, int64_t l, int64_t h, int64_t n, float* out) const;
  // The stored rows of kv head `h` of local layer `l` of sequence `seq` (for kernels that read
  // the cache type directly): the row of position p starts at k_rows(seq, l, h) + p *
  // k_row_bytes() (n_ctx() rows; v likewise). Preconditions: seq < n_seq(), l and h in range.
  const uint8_t* k_rows(int64_t seq, int64_t l, int64_t h) const {
    return k_.data() + row_index(seq, l, h, 0) * k_row_;
  }
  const uint8_t* v_rows(int64_t seq, int64_t l, int64_t h) const {
    return v_.data() + row_index(seq, l, h, 0) * v_row_;
  }
  int64_t k_row_bytes() const { return k_row_; }
  int64_t v_row_bytes() const { return v_row_; }

 private:
  int64_t row_index(int64_t seq, int64_t l, int64_t h, int64_t pos) const {
    return ((seq * n_layer_ + l) * n_kv_heads_ + h) * n_ctx_ + pos;
  }
  GgmlType type_k_ = GgmlType::F16, type_v_ = GgmlType::F16;
  int64_t n_layer_ = 0, n_kv_heads_ = 0, head_dim_ = 0, n_ctx_ = 0, n_seq_ = 1;
  int64_t k_row_ = 0, v_row_ = 0;
  std::vector<uint8_t> k_, v_;  // [seq][layer][kv head][pos] rows
};

}  // namespace expertmesh::worker
