// Per-tensor quantization decisions, made from metadata only (no tensor data is read), so every
// output offset is known before any work starts (ARCHITECTURE.md §4): the same plan drives
// `--dry-run`, the single-rank job and, later, tensors dealt to ranks.
//
// Rules follow ik_llama.cpp's llama-quantize (inventory §4): which tensors are quantized, the
// preset's default type, --token-embedding-type / --output-tensor-type overrides, interleaved
// types falling back to their base type where rows do not divide, and the row-size fallback for
// 256-wide blocks. Where the peer writes a corrupt file (a 32-block type on rows that are not a
// multiple of 32, e.g. stories260K's 172-wide ffn_down), we fall back to F16 and say so.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/quantize/presets.h"
#include "model/gguf/gguf.h"
#include "model/imatrix_dat.h"
#include "model/types.h"

namespace expertmesh {

struct QuantizeOptions {
  QuantPreset preset{};                          // from the TYPE argument
  bool pure = false;                             // --pure: one type everywhere (fallbacks still apply)
  bool allow_requantize = false;                 // --allow-requantize: input may be quantized
  bool leave_output_tensor = false;              // --leave-output-tensor
  bool ignore_imatrix_rules = false;             // --ignore-imatrix-rules
  std::optional<GgmlType> token_embedding_type;  // --token-embedding-type
  std::optional<GgmlType> output_tensor_type;    // --output-tensor-type
  std::optional<GgmlType> ffn_gate_inp_type;     // --ffn-gate-inp-type (routers are otherwise kept)
};

enum class TensorAction { kCopy, kQuantize };

struct TensorPlan {
  std::string name;
  GgmlType src_type = GgmlType::F32;
  GgmlType dst_type = GgmlType::F32;
  TensorAction action = TensorAction::kCopy;
  int64_t src_bytes = 0;
  int64_t dst_bytes = 0;
  bool fallback = false;            // dst_type differs from the rule's choice because of the row size
  std::string note;                 // why a fallback happened, for the log
  const ImatrixEntry* imatrix = nullptr;  // entry used (after name fallbacks), or null
};

struct QuantPlan {
  std::vector<TensorPlan> tensors;  // input order
  int n_fallback = 0;
  int64_t src_bytes = 0, dst_bytes = 0, n_params = 0;
};

// Decides every tensor's output type. Errors name the tensor: an already-quantized input without
// --allow-requantize, an imatrix entry of the wrong length, a type that needs an imatrix and has
// none, a type we cannot quantize to. `imatrix` may be null.
Result<QuantPlan> plan_quantization(const gguf::File& in, const QuantizeOptions& opt, const Imatrix* imatrix);

// The type used when `type` cannot hold rows of ne0 elements: the peer's table for 256-wide
// types (IQ4_NL / Q5_0 / Q6_0 / Q8_0), then F16 whenever even that does not divide ne0.
// Returns `type` itself when it fits.
GgmlType row_size_fallback(GgmlType type, int64_t ne0);

}  // namespace expertmesh
