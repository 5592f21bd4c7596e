// The sidecar `<imatrix>.state` written beside every .dat we save. The .dat (the peer's format)
// keeps only mean × ncall per column, which is enough for llama-quantize but not to continue a
// run exactly: it loses how many rows each expert saw and drops entries that lack data. The
// state keeps those, plus where the run stopped, so that
//   * `--in-file F` with F.state present merges exactly (two halves == one full run), and
//   * `--resume` continues at the next chunk with the same statistics and running PPL.
// Peer files have no state; they merge with the peer's rule (stats.h).
//
// Binary, little-endian: "EMIMATST", u32 version 1, then the fields of ImatrixState in order
// (strings as i32 length + bytes). Written to a temporary name and renamed.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "coordinator/imatrix/stats.h"

namespace expertmesh::coordinator::imatrix {

struct ImatrixState {
  // Where the run stands: chunks [first_chunk, first_chunk + chunks_done) of the tokenized
  // text (in chunks of n_ctx tokens) are done, `bad_chunks` of them skipped.
  int64_t first_chunk = 0;
  int64_t chunks_done = 0;
  int64_t bad_chunks = 0;
  int64_t n_ctx = 0, n_batch = 0, n_ubatch = 0;
  std::string text_file;
  // Running perplexity sums (--no-ppl: zero).
  int64_t ppl_count = 0;
  double nll = 0, nll2 = 0;
  // Must equal the .dat's trailer: detects a state that belongs to another save.
  int32_t last_call = 0;
  // Per-segment row counts of every entry stored in the .dat (-1: unknown).
  SegmentCounts counts;
  // Entries the .dat does not store (no or partial data), in full.
  std::map<std::string, StatsEntry> unstored;
};

std::string state_path(const std::string& dat_path);

Status write_state(const std::string& path, const ImatrixState& s);
// NotFound when the file does not exist; Corruption naming the file when it is malformed.
Result<ImatrixState> read_state(const std::string& path);

// Restores `s.unstored` into `stats` (after merging the .dat with s.counts).
Status merge_unstored(const ImatrixState& s, ImatrixStats& stats, const std::string& path);

}  // namespace expertmesh::coordinator::imatrix
