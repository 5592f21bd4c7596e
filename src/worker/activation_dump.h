// --dump-activations DIR: writes the first occurrence of each named intermediate (per layer) as
// raw little-endian f32 (`<name>-<layer>.f32`, layer "g" for global ones) and, on finish(),
// DIR/index.json: [{"name", "layer", "rows", "cols", "file"}...] in the order they were produced.
// Names follow the peer's graph callbacks: attn_norm, Qcur, Kcur, Vcur, kqv_out, attn_out,
// ffn_inp, ffn_norm, ffn_out / ffn_moe_logits / ffn_moe_out, l_out, result_norm, result_output.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/blocks.h"

namespace expertmesh::worker {

class ActivationDump {
 public:
  static Result<std::unique_ptr<ActivationDump>> create(const std::string& dir);
  DumpFn sink();
  Status finish();

 private:
  std::string dir_;
  std::set<std::pair<std::string, int64_t>> seen_;
  nlohmann::json index_ = nlohmann::json::array();
  Status error_;
};

}  // namespace expertmesh::worker
