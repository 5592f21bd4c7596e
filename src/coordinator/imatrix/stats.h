// The importance-matrix accumulator (inventory §3.1): for every weight whose inputs the peer
// collects, per column (and per expert for 3-D expert weights) the sum of x² over the rows
// that multiplied it and how many rows that were. llama-quantize uses mean(x²) = sum / count.
//
// Rules kept from the peer's collect_imatrix:
//   * `blk.*` weights and, with process_output (or layer similarity), the output tensor;
//   * a 2-D weight's input is collected only when the forward call has at least 16 rows (the
//     peer skips smaller MUL_MATs); expert inputs always;
//   * `ncall` counts forward calls (ubatches) that read the weight, once per call. observe()
//     counts the calls this rank saw; what a run saves comes from the driver's CallCounts
//     (set_ncalls), which equal those on one rank and stay right when ranks share the work.
// Differences, on purpose: sums are double; `ffn_gate_exps` is kept as its own entry (the
// peer's fused up/gate op files it under `ffn_up_exps` only); any non-finite input (NaN or Inf,
// not only NaN) stops the chunk; an expert without data is never given fake counts in memory.
//
// Chunks are transactions: begin_chunk() ... commit_chunk() or rollback_chunk(), so a chunk
// with a bad activation leaves no trace. Not thread-safe (the engine calls its observer from
// the thread that runs decode()).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/imatrix_dat.h"
#include "worker/blocks.h"

namespace expertmesh::coordinator::imatrix {

// Statistics of one weight. Element i = seg * n_cols + column.
struct StatsEntry {
  int64_t n_cols = 0;           // the weight's ne0
  int64_t n_seg = 1;            // experts of a 3-D expert weight, else 1
  bool shape_known = true;      // false for an entry loaded from a .dat without state (n_seg unknown)
  bool expert = false;          // computed from per-expert inputs (a 3-D expert weight)
  int32_t ncall = 0;            // forward calls that read the weight
  std::vector<double> sums;     // n_seg × n_cols, Σ x²
  std::vector<int64_t> counts;  // n_seg × n_cols, rows added
  uint64_t last_ubatch = 0;     // bookkeeping: the call that last counted in ncall
  uint64_t last_chunk = 0;      // bookkeeping: the chunk that last backed this entry up
};

// The first non-finite activation seen, and where in the forward it was (see forward_key()).
struct BadActivation {
  std::string tensor;
  int64_t layer = -1;
  int32_t expert = -1;
  float value = 0;
  int64_t pos = 0;  // the `pos` passed to observe()
};

// The order in which one rank's forward reads its weights' inputs, comparable across ranks:
// (pos, layer, expert, op). `pos` is the KV position at the time of the read: a call's layers
// read at its first position, the output head at its end (its `layer` is -1), so the head of a
// call sorts before the next call's layers. Within a layer the non-expert matmuls (expert -1)
// come first in block order (attention q, k, v, output, router, dense gate, up, down), then the
// experts in ascending order, each gate, up, down. The one-rank forward reads in increasing key
// order, and so does every rank of a distributed one; the smallest key over the ranks is the
// read the one-rank run meets first.
struct ForwardKey {
  int64_t pos = 0, layer = 0, expert = 0, op = 0;
  auto operator<=>(const ForwardKey&) const = default;
};
// Position of a weight's matmul in its layer's block order (unknown names after the known ones).
int64_t op_order(const std::string& weight_name);
ForwardKey forward_key(const worker::MatmulInput& in, int64_t pos);
ForwardKey forward_key(const BadActivation& b);

// The forward calls of a run, counted by the driver, from which each computed entry's ncall
// follows (an entry counts the calls that read it, once per call, as the peer does):
//   * an expert weight is read in every call (every token is routed to some expert);
//   * a 2-D weight only in calls of at least kMinRows rows: every token of the call for the
//     blocks' weights, the rows whose logits are wanted for the output head.
// Under MPI no single rank reads every expert, so per-rank counting cannot give the one-rank
// figure; the driver's counts can, for any placement.
inline constexpr int64_t kMinRows = 16;
struct CallCounts {
  int32_t all = 0, dense = 0, output = 0;
  void add(int64_t n_tok, int64_t n_out);
  void add(const CallCounts& c);
};

// Per-segment row counts saved beside a .dat (see state_file.h): -1 where unknown.
using SegmentCounts = std::map<std::string, std::vector<int64_t>>;

struct CollectRules {
  bool process_output = false;                       // --process-output
  bool layer_similarity = false;                     // -lsim also collects the output tensor
  std::string output_tensor_name = "output.weight";  // --output-tensor-name
};

class ImatrixStats {
 public:
  explicit ImatrixStats(CollectRules rules = {}) : rules_(std::move(rules)) {}

  // Whether `in` contributes to the statistics (the peer's rules above).
  bool wants(const worker::MatmulInput& in) const;
  // Checks `in` for non-finite values (every input, collected or not), then adds it if wanted.
  // The first non-finite value sets bad(); from then on nothing is added until the chunk is
  // rolled back. The forward is not stopped (under MPI every rank must finish its collectives);
  // the driver checks bad() after the chunk. `pos` (the KV position, see ForwardKey) is kept
  // with a bad activation. Errors: an input that does not fit its entry.
  Status observe(const worker::MatmulInput& in, int64_t pos = 0);

  // The next forward call (ubatch) starts: entries read in it count one more ncall.
  void begin_ubatch() { ++ubatch_; }
  // Sets every entry's ncall from the driver's call counts (see CallCounts).
  void set_ncalls(const CallCounts& calls);
  void begin_chunk();
  void commit_chunk();
  // Undoes everything added since begin_chunk() and clears bad().
  void rollback_chunk();
  const std::optional<BadActivation>& bad() const { return bad_; }

  // Adds a .dat file's entries (llama-imatrix --in-file). With `counts` (our state sidecar) the
  // exact per-expert row counts are restored, so merging equals having run the chunks here;
  // without, the peer's rule: values add to the sums and ncall to every count.
  Status merge(const Imatrix& dat, const SegmentCounts* counts, const std::string& path);

  // The .dat the peer's save_imatrix would write: entries without data skipped; an expert
  // weight with experts lacking data stored only when fewer than round(5% of experts) lack it
  // (those experts get mean 1), else skipped; value = mean * ncall. Entries are ordered by
  // layer then name (deterministic; the peer's order is its hash map's). Warnings go to `log`.
  Imatrix to_dat(const std::string& dataset, FILE* log) const;
  // Per-segment counts of the entries to_dat() stores (-1 where a segment's columns differ).
  SegmentCounts segment_counts() const;

  // max ncall over the entries: the peer's `last_call` (it calls it chunks).
  int32_t last_call() const;
  const std::map<std::string, StatsEntry>& entries() const { return entries_; }
  std::map<std::string, StatsEntry>& mutable_entries() { return entries_; }
  const CollectRules& rules() const { return rules_; }

 private:
  Result<StatsEntry*> entry_for(const worker::MatmulInput& in);
  void back_up(const std::string& name, StatsEntry* e);

  CollectRules rules_;
  std::map<std::string, StatsEntry> entries_;
  uint64_t ubatch_ = 0;
  uint64_t chunk_ = 0;
  // Entries as they were before the current chunk touched them (nullopt: created in it).
  std::map<std::string, std::optional<StatsEntry>> backup_;
  std::optional<BadActivation> bad_;
};

// Adds `from` into `into` entry by entry (sums, counts and ncall add): loaded data plus what
// this run computed. Errors: an entry whose sizes differ.
Status add_stats(ImatrixStats& into, const ImatrixStats& from);

// "blk.12.attn_q.weight" -> 12; -1 for names outside a block.
int64_t block_index(const std::string& name);

}  // namespace expertmesh::coordinator::imatrix
