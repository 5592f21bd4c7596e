// ik_llama.cpp's legacy importance-matrix file (`.dat`), read and written byte-compatibly
// (inventory §3.2). All integers are little-endian int32, values f32:
//   n_entries; per entry: name_len, name, ncall, nval, values[nval] (= sum(x²)/count * ncall);
//   optional trailer: last_call, dataset_len, dataset.
// For 3-D (MoE) weights nval = ne0 * n_expert: one row of column statistics per expert.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace expertmesh {

struct ImatrixEntry {
  std::string name;
  int32_t ncall = 0;
  std::vector<float> values;  // as stored: mean(x²) * ncall
  // Mean of x² per column (what llama-quantize uses): values / ncall (ncall 0 treated as 1).
  std::vector<float> mean() const;
};

struct Imatrix {
  std::vector<ImatrixEntry> entries;  // file order
  std::optional<int32_t> last_call;   // trailer, when present
  std::string dataset;                // trailer, when present

  const ImatrixEntry* find(const std::string& name) const;
  // The entry llama-quantize would use for tensor `name`: the exact name, else for
  // ffn_gate_exps / ffn_up_exps the merged `ffn_gate_up_exps` then `ffn_up_exps`; for
  // ffn_gate.weight → ffn_up.weight; attn_v_b ↔ attn_kv_b (inventory §4.1).
  const ImatrixEntry* find_for_tensor(const std::string& name) const;

  // Reads a .dat file. Errors name the file and what is wrong (truncated, negative sizes,
  // non-finite values, duplicate names).
  static Result<Imatrix> read(const std::string& path);
  Status write(const std::string& path) const;
};

}  // namespace expertmesh
