// llama-quantize's TYPE argument: preset names (case-insensitive) or their numeric llama_ftype,
// mapped to the llama_ftype written to `general.file_type` and the preset's default tensor type
// (examples/quantize/quantize.cpp QUANT_OPTIONS and llama_model_quantize_impl in ik_llama.cpp).
// Note llama_ftype numbers differ from ggml type ids (e.g. IQ4_KS is ftype 145, type 144).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.h"
#include "model/types.h"

namespace expertmesh {

struct QuantPreset {
  const char* name;        // as users type it: "IQ4_KS", "Q4_K_M", "F32", "COPY"
  int32_t ftype;           // llama_ftype
  GgmlType default_type;   // type of every quantizable tensor before per-tensor rules
  bool copy_only = false;  // COPY: copy tensors, quantize nothing
};

std::span<const QuantPreset> quant_presets();

// Parses a preset name or a numeric llama_ftype. The error lists how to see valid names.
Result<QuantPreset> parse_quant_preset(std::string_view s);

}  // namespace expertmesh
