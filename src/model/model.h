// A loaded model: hparams, the GGUF mapping, and every weight bound by name with its shape and
// type checked (ARCHITECTURE.md §2). Binding is arch-specific (src/model/archs/<arch>.cpp); a
// model with a missing, extra, mis-shaped or wrongly typed tensor fails here, at load, with one
// message naming the tensor and what was expected — never later in the forward.
//
// Weights point into the read-only mapping (no tensor data is read at load: pages fault in on
// first use). A rank that holds only part of the model copies its rows into private memory
// instead (worker::WeightStore) and never touches these pointers. A Model is immutable after
// load() and may be read by any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/gguf/gguf.h"
#include "model/hparams.h"
#include "model/types.h"

namespace expertmesh {

// A run of consecutive rows of a tensor held in memory (rows counted over ne[1]·ne[2]·ne[3]).
struct RowBlock {
  int64_t begin = 0, end = 0;     // rows [begin, end)
  const uint8_t* data = nullptr;  // row `begin`; the following rows at row_bytes strides
};

// One bound tensor (or an absent optional one: present() false).
//
// Its rows live either all at `data` (the whole tensor: the file mapping after Model::load) or,
// in a rank's share of the model (worker::WeightStore), only the rows of `blocks` (ascending,
// disjoint; `data` is then nullptr). row() of a row this copy does not hold is nullptr; callers
// that take row ranges check holds() first.
struct Weight {
  std::string name;
  GgmlType type = GgmlType::F32;
  int64_t ne[4] = {1, 1, 1, 1};
  int64_t row_bytes = 0;  // bytes of one row of ne[0] elements
  const uint8_t* data = nullptr;
  std::vector<RowBlock> blocks;
  bool present() const { return data != nullptr || !blocks.empty(); }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  const uint8_t* row(int64_t r) const { return data ? data + r * row_bytes : held_row(r); }
  // True when rows [r0, r0 + n) are all held in one contiguous run (n > 0).
  bool holds(int64_t r0, int64_t n) const;

 private:
  const uint8_t* held_row(int64_t r) const;
};

struct LayerWeights {
  Weight attn_norm, wq, wk, wv, wo;
  Weight attn_q_norm, attn_k_norm;  // qwen3, qwen3moe
  Weight ffn_norm;
  Weight ffn_gate, ffn_up, ffn_down;                 // dense FFN
  Weight ffn_gate_inp;                               // MoE router
  Weight ffn_gate_exps, ffn_up_exps, ffn_down_exps;  // MoE experts [.., .., n_expert]
};

struct ModelWeights {
  Weight token_embd, output_norm, output;  // output == token_embd when tied
  std::vector<LayerWeights> layers;
};

// Which element types a tensor may hold.
enum class TypeRule {
  kFloat32,  // norms and other 1-D vectors: F32 only (the peer keeps them F32)
  kAny,      // matmul weights and embeddings: any type with a dequantizer
};

// Collects expectations for named tensors and checks them against the file. Arch binders call
// take() for each tensor; finish() reports tensors the file holds that nobody took.
class TensorBinder {
 public:
  explicit TensorBinder(const gguf::File& f) : file_(f) {}
  // Binds `name` with exactly the shape `ne` (trailing 1s may be omitted). Missing tensors are
  // recorded (the first one named in finish()'s error) unless `optional`.
  Status take(const std::string& name, std::vector<int64_t> ne, TypeRule rule, Weight* out, bool optional = false);
  // Ok when every tensor was found and the file has no other tensors.
  Status finish() const;

 private:
  const gguf::File& file_;
  std::vector<std::string> missing_;
  std::vector<std::string> taken_;
  size_t n_expected_ = 0;
};

struct ArchSpec;

class Model {
 public:
  static Result<std::unique_ptr<Model>> load(const std::string& path);
  const HParams& hparams() const { return hp_; }
  const ModelWeights& weights() const { return w_; }
  const gguf::File& file() const { return *file_; }
  const ArchSpec& arch() const { return *arch_; }

 private:
  Model() = default;
  std::unique_ptr<gguf::File> file_;
  HParams hp_;
  ModelWeights w_;
  const ArchSpec* arch_ = nullptr;
};

std::string format_shape(const int64_t* ne, int n);

}  // namespace expertmesh
