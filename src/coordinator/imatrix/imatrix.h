// `expertmesh imatrix`: llama-imatrix (inventory §3), computed the way the peer does it.
//
// The text is tokenized once (BOS added as the vocabulary says, a trailing newline of the file
// dropped as the peer's -f does). The peer pads the context to a multiple of 256 (flash
// attention's KV padding) and cuts chunks of the *padded* size, so `-c 128` evaluates chunks of
// 256 tokens; we do the same so that the statistics, the chunk count and the running PPL agree.
// Each chunk starts from an empty cache with its first token replaced by BOS, and is decoded in
// batches of min(-b, -c) tokens, each split into forward calls (ubatches) of at most -ub
// tokens; every token of the chunk feeds the statistics, and the PPL (unless --no-ppl) scores
// positions n_ctx/2 .. n_ctx-2 of each chunk like perplexity.
//
// Saving (every -ofreq forward calls, snapshots `<out>.at_<ncall>` every --save-frequency
// calls, and at the end) happens only between chunks (under MPI: every rank's statistics are
// gathered to rank 0 then) and writes the .dat plus its state sidecar (state_file.h). Data
// loaded with --in-file (or --resume) is kept apart from what this run computes and added at
// each save, so the distributed gather (gather.h) merges only computed statistics.
//
// A non-finite activation stops the run after saving everything up to the last good chunk,
// with a message naming the tensor, layer and chunk; --skip-bad-chunks drops that chunk
// instead and goes on. --resume continues the run saved in -o (the same as --from-chunk plus
// --in-file, but exact).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/rank_context.h"
#include "common/status.h"
#include "model/tokenizer/tokenizer.h"
#include "worker/engine.h"

namespace expertmesh::coordinator::imatrix {

struct ImatrixOptions {
  std::string text_file;                             // -f; stored verbatim as the dataset name
  std::string out_file = "imatrix.dat";              // -o
  std::vector<std::string> in_files;                 // --in-file (repeatable)
  std::string output_tensor_name = "output.weight";  // --output-tensor-name
  int64_t n_ctx = 512;                               // -c (before the peer's padding)
  int64_t n_batch = 2048;                            // -b
  int64_t n_ubatch = 512;                            // -ub
  int64_t n_chunks = -1;                             // --chunks (-1: all)
  int64_t from_chunk = 0;                            // --from-chunk / --chunk
  int64_t out_freq = 10;                             // -ofreq
  int64_t save_freq = 0;                             // --save-frequency
  bool process_output = false;                       // --process-output
  bool compute_ppl = true;                           // --no-ppl clears it
  bool layer_similarity = false;                     // -lsim
  bool skip_bad_chunks = false;                      // --skip-bad-chunks
  bool resume = false;                               // --resume
  int verbosity = 1;                                 // --verbosity
};

// The sizes the peer really uses for -c/-b/-ub.
struct ChunkGeometry {
  int64_t n_ctx = 0;     // tokens per chunk: -c rounded up to a multiple of 256
  int64_t n_batch = 0;   // tokens per decode: min(-b, -c)
  int64_t n_ubatch = 0;  // tokens per forward call: min(n_batch, -ub)
};
Result<ChunkGeometry> chunk_geometry(const ImatrixOptions& opt);

struct ImatrixResult {
  int64_t chunks_done = 0;  // chunks of this run finished (skipped ones included)
  int64_t bad_chunks = 0;
  int32_t last_call = 0;
  double ppl = 0, ppl_err = 0;
  std::vector<double> running_ppl;
};

// Runs llama-imatrix. `engine` and `tok` may be null only when opt.text_file is empty (merge the
// --in-file list into -o). Collective over ctx.comm: every rank's engine is one rank of the
// same distributed engine (cli/engine_setup.h); rank 0 drives it, loads inputs, scores the PPL,
// gathers and writes; each rank accumulates the inputs its share of the model reads (see
// ImatrixRun::compute for the lockstep, gather.h for the merge, similarity_feed.h for -lsim).
// The files written are byte-identical for any rank count and placement. On an error that is
// not Aborted the caller tells the other ranks (comm::Cluster::notify_failure), which may be
// waiting inside the engine. Progress and PPL go to `out` (rank 0), logs to stderr.
Result<ImatrixResult> run_imatrix(const RankContext& ctx, worker::Engine* engine, const Tokenizer* tok,
                                  const ImatrixOptions& opt, FILE* out);

}  // namespace expertmesh::coordinator::imatrix
