// llama-imatrix -lsim / --layer-similarity (inventory §3.4): mean cosine similarity, per token
// row, between
//   * layer:     the input of layer i-1's first matmul and of layer i's (the output head's input
//                counts as layer n_layer's),
//   * attention: layer i's first matmul input and its first FFN matmul input,
//   * ffn:       layer i-1's first FFN matmul input and layer i's first matmul input.
// A lower |cos| means the block changes the residual stream more. print() writes the peer's
// three sorted tables. Fed the same matmul inputs the imatrix collects (2-D weights with at
// least 16 rows, the output head included).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/blocks.h"

namespace expertmesh::coordinator::imatrix {

class LayerSimilarity {
 public:
  explicit LayerSimilarity(std::string output_tensor_name) : output_name_(std::move(output_tensor_name)) {}
  // Feeds one collected dense matmul input (expert inputs are ignored).
  void observe(const worker::MatmulInput& in);
  // The same for the input of weight `name`: rows x cols floats, row stride ldx.
  void observe(const std::string& name, const float* x, int64_t rows, int64_t cols, int64_t ldx);
  void print(FILE* out) const;

 private:
  using Sim = std::pair<double, int64_t>;  // sum of cosines, rows
  static void add_rows(const std::vector<float>& a, const float* b, int64_t ldb, int64_t rows, int64_t cols, Sim& s);
  static void copy_rows(const float* x, int64_t rows, int64_t cols, int64_t ldx, std::vector<float>& dst);
  static void print_table(FILE* out, const char* title, const std::vector<Sim>& sim);

  std::string output_name_;
  int64_t last_layer_ = -1;  // layer of the last first-matmul input seen (-1: none yet)
  int64_t last_ffn_ = -1;
  std::vector<float> last_input_, ffn_input_;
  std::vector<Sim> layer_sim_, attn_sim_, ffn_sim_;
};

}  // namespace expertmesh::coordinator::imatrix
