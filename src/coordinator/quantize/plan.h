// Per-tensor quantization decisions, made from metadata only (no tensor data is read), so every
// output offset is known before any work starts (ARCHITECTURE.md §4): the same plan drives
// `--dry-run`, the single-rank job and the tensors dealt to ranks.
//
// Rules follow ik_llama.cpp's llama-quantize (inventory §4): which tensors are quantized, the
// preset's per-tensor type choice (rules.h), --custom-q, the CLI type overrides, the imatrix name
// fallbacks and rules, interleaved types falling back to their base type where rows do not
// divide, and the row-size fallback for 256-wide blocks. Where the peer writes a corrupt file or
// aborts (a type whose blocks do not divide the row, e.g. Q8_0 on stories260K's 172-wide
// ffn_down), we fall back to F16 and count it as a fallback.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/quantize/options.h"
#include "coordinator/quantize/presets.h"
#include "model/gguf/gguf.h"
#include "model/imatrix_dat.h"
#include "model/types.h"

namespace expertmesh {

enum class TensorAction {
  kCopy,      // bytes as in the input
  kQuantize,  // dequantize to F32, quantize to dst_type
  kRepack,    // --repack: re-lay the input's blocks as the interleaved dst_type (no requantization)
};

struct TensorPlan {
  std::string name;
  GgmlType src_type = GgmlType::F32;
  GgmlType dst_type = GgmlType::F32;
  TensorAction action = TensorAction::kCopy;
  int64_t n_elements = 0;
  int64_t src_bytes = 0;
  int64_t dst_bytes = 0;
  bool fallback = false;                  // a row-size fallback changed the type
  std::string note;                       // why the type differs from the rule's choice, for the log
  const ImatrixEntry* imatrix = nullptr;  // entry used (after name fallbacks), or null
};

struct QuantPlan {
  std::vector<TensorPlan> tensors;  // input order
  int32_t ftype = 0;                // general.file_type of the output
  int n_fallback = 0;               // tensors whose type a row-size fallback changed
  int n_quantized = 0;              // tensors quantized or repacked
  int64_t src_bytes = 0, dst_bytes = 0, n_params = 0;
};

// Decides every tensor's output type. `imatrix` is the importance matrix after
// --include-weights / --exclude-weights (null or empty: none). Errors name the tensor (or the
// preset): an already-quantized input without --allow-requantize, an imatrix entry of the wrong
// length, a type that needs an imatrix and has none, a type we cannot quantize to, a MoE tensor
// without a readable layer number.
Result<QuantPlan> plan_quantization(const gguf::File& in, const QuantizeOptions& opt, const Imatrix* imatrix);

// The type used when `type` cannot hold rows of ne0 elements: the peer's table for 256-wide
// types (IQ4_NL / Q5_0 / Q6_0 / Q8_0), then F16 whenever even that does not divide ne0.
// Returns `type` itself when it fits.
GgmlType row_size_fallback(GgmlType type, int64_t ne0);

// Keeps the entries whose names contain one of `include` (when non-empty) and none of `exclude`
// (substring match, as the peer's --include-weights / --exclude-weights).
Imatrix filter_imatrix(const Imatrix& im, const std::vector<std::string>& include,
                       const std::vector<std::string>& exclude);

}  // namespace expertmesh
