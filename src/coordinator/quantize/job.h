// The quantize job: read the input model, plan every tensor's type (plan.h), lay out the output
// (layout.h), then produce each tensor — convert to F32, refuse non-finite values (naming the
// tensor and row), quantize expert by expert with the expert's imatrix row — and write it at its
// offset in a resumable partial output (manifest.h). The metadata follows the peer's conventions:
// input KVs copied in order, general.quantization_version = 2, split.* removed, --override-kv
// values, then quantize.imatrix.{file,dataset,entries_count,chunks_count} when an imatrix is used,
// then general.file_type.
//
// Distributed: with world > 1 every rank runs the same job; tensors are dealt by cost
// (distribute.h), each rank writes its own with pwrite, rank 0 writes the headers and renames the
// finished files, and every step that can fail goes through `agree` so all ranks stop together
// with one message. The bytes are identical for any world size and any thread count.
//
// Resume: a run that dies (kill -9, node loss) leaves OUT.partial and its manifests; rerunning the
// same command skips every tensor recorded there whose bytes still match, and ends with the same
// file as an uninterrupted run.
//
// Test hook (documented here, used only by tests/quant/quantize_resume_test.cpp): when the
// environment variable EXPERTMESH_QUANTIZE_TEST_KILL_AFTER=K is set, a rank that has written and
// recorded K tensors in this run kills itself with SIGKILL — a crash at a known point.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "coordinator/quantize/layout.h"
#include "coordinator/quantize/options.h"
#include "coordinator/quantize/plan.h"
#include "model/gguf/gguf.h"

namespace expertmesh {

struct QuantizeJob {
  std::string input_path;
  std::string output_path;
  std::string imatrix_path;                  // empty: none
  std::vector<std::string> include_weights;  // --include-weights (substrings of imatrix entry names)
  std::vector<std::string> exclude_weights;  // --exclude-weights
  bool hide_imatrix = false;                 // --hide-imatrix: record "top_secret" / 0 instead of the file's details
  std::vector<KvOverride> kv_overrides;      // --override-kv, in order
  QuantizeOptions options;
  LayoutOptions layout;       // --keep-split, --split-max-size, --split-max-tensors
  bool dry_run = false;       // --dry-run: print the plan and sizes, read no tensor data, write nothing
  bool progress_bar = false;  // draw a progress bar (a TTY); plain log lines otherwise
  int n_threads = 1;
};

// This rank's place in the job. `agree` is RankContext::agree (collective); for one rank, identity.
struct QuantizeRanks {
  int rank = 0;
  int world = 1;
  std::function<Status(const Status&)> agree;
};

// Converts one planned tensor to its output bytes. `t` is the input tensor, `out` is resized to
// tp.dst_bytes. Errors name the tensor.
Status quantize_tensor(const gguf::TensorInfo& t, const TensorPlan& tp, int n_threads, std::vector<uint8_t>* out);

// Sets the output's KVs from the input's and the job (see the header comment). `imatrix` is the
// imatrix in use after --include/--exclude-weights, or null.
void output_metadata(const gguf::File& in, const QuantizeJob& job, const Imatrix* imatrix, int32_t ftype,
                     gguf::Writer* w);

// Runs the whole job on one rank; logs one line per tensor and a summary.
Status run_quantize_job(const QuantizeJob& job, const Logger& log);
// The same on `ranks.world` ranks (collective: every rank calls it with the same job).
Status run_quantize_job(const QuantizeJob& job, const Logger& log, const QuantizeRanks& ranks);

}  // namespace expertmesh
