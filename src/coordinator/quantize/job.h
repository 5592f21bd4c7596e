// The quantize job on one rank: read the input model, convert each planned tensor to F32,
// refuse non-finite values (naming the tensor and row), quantize it (expert by expert, with the
// expert's imatrix row), and write a complete GGUF with the peer's metadata conventions:
// input KVs copied in order, general.quantization_version = 2, split.* removed,
// quantize.imatrix.{file,dataset,entries_count,chunks_count} when an imatrix is used,
// general.file_type = the preset's llama_ftype.
//
// Distribution, manifests and resume come with the cluster quantize issue; this is the unit of
// work they deal out (quantize_tensor) and the metadata step they share (output_metadata).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "coordinator/quantize/plan.h"
#include "model/gguf/gguf.h"

namespace expertmesh {

struct QuantizeJob {
  std::string input_path;
  std::string output_path;
  std::string imatrix_path;  // empty: none
  bool hide_imatrix = false;  // --hide-imatrix: record "top_secret" / 0 instead of the file's details
  QuantizeOptions options;
  int n_threads = 1;
};

// Converts one planned tensor to its output bytes. `t` is the input tensor, `out` is resized to
// tp.dst_bytes. Errors name the tensor.
Status quantize_tensor(const gguf::TensorInfo& t, const TensorPlan& tp, int n_threads, std::vector<uint8_t>* out);

// Sets the output's KVs from the input's and the job (see the header comment).
void output_metadata(const gguf::File& in, const QuantizeJob& job, const Imatrix* imatrix, gguf::Writer* w);

// Runs the whole job; logs one line per tensor and a summary.
Status run_quantize_job(const QuantizeJob& job, const Logger& log);

}  // namespace expertmesh
