#include "coordinator/imatrix/similarity.h"

#include <algorithm>
#include <cmath>

#include "coordinator/imatrix/stats.h"

namespace expertmesh::coordinator::imatrix {

void LayerSimilarity::copy_rows(const float* x, int64_t rows, int64_t cols, int64_t ldx, std::vector<float>& dst) {
  dst.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) std::copy_n(x + r * ldx, cols, dst.data() + r * cols);
}

void LayerSimilarity::add_rows(const std::vector<float>& a, const float* b, int64_t ldb, int64_t rows, int64_t cols,
                               Sim& s) {
  if (int64_t(a.size()) != rows * cols) return;  // a different batch shape: nothing comparable
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a.data() + r * cols;
    const float* y = b + r * ldb;
    double xy = 0, xx = 0, yy = 0;
    for (int64_t j = 0; j < cols; ++j) {
      xy += x[j] * y[j];
      xx += x[j] * x[j];
      yy += y[j] * y[j];
    }
    s.first += xx > 0 && yy > 0 ? xy / std::sqrt(xx * yy) : 0.0;
    s.second += 1;
  }
}

void LayerSimilarity::observe(const worker::MatmulInput& in) {
  if (in.expert >= 0) return;
  observe(in.w->name, in.x, in.n_rows, in.n_cols, in.ldx);
}

void LayerSimilarity::observe(const std::string& name, const float* x, int64_t rows, int64_t cols, int64_t ldx) {
  int64_t idx = block_index(name);
  if (name == output_name_ && last_layer_ >= 0) idx = last_layer_ + 1;
  if (idx < 0) return;
  auto slot = [](std::vector<Sim>& v, int64_t i) -> Sim& {
    if (int64_t(v.size()) <= i) v.resize(size_t(i + 1));
    return v[size_t(i)];
  };
  // The first FFN matmul of the current layer: its input against the layer's input.
  if (name.find(".ffn_") != std::string::npos && idx == last_layer_ && idx != last_ffn_) {
    copy_rows(x, rows, cols, ldx, ffn_input_);
    add_rows(last_input_, ffn_input_.data(), cols, rows, cols, slot(attn_sim_, idx));
    last_ffn_ = idx;
  }
  if (idx == last_layer_) return;
  // The first matmul of a new layer (or the output head).
  if (idx > 0) {
    add_rows(last_input_, x, ldx, rows, cols, slot(layer_sim_, idx - 1));
    if (idx == last_ffn_ + 1) add_rows(ffn_input_, x, ldx, rows, cols, slot(ffn_sim_, idx - 1));
  }
  last_layer_ = idx;
  copy_rows(x, rows, cols, ldx, last_input_);
}

void LayerSimilarity::print_table(FILE* out, const char* title, const std::vector<Sim>& sim) {
  std::vector<std::pair<float, int>> order;
  for (size_t i = 0; i < sim.size(); ++i)
    if (sim[i].second > 0) order.emplace_back(float(std::abs(sim[i].first / double(sim[i].second))), int(i));
  if (order.empty()) return;
  std::sort(order.begin(), order.end());
  std::fprintf(out, "\n======================== sorted %s importances\n", title);
  int j = 0;
  for (const auto& [v, i] : order)
    std::fprintf(out, "%3d: Layer %3d, <cos_sim> = %g\n", j++, i, sim[size_t(i)].first / double(sim[size_t(i)].second));
}

void LayerSimilarity::print(FILE* out) const {
  print_table(out, "layer", layer_sim_);
  print_table(out, "attention", attn_sim_);
  print_table(out, "ffn", ffn_sim_);
}

}  // namespace expertmesh::coordinator::imatrix
