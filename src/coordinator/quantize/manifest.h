// Crash-safe, resumable output. Each output file F is written as `F.partial` (created at its final
// size, header first, tensors at their layout offsets with pwrite) and renamed to F only when every
// tensor is in place. Each rank records the tensors it finished in its own manifest,
// `<files[0]>.partial.manifest.<rank>`: a first line naming the plan's fingerprint, then one line
// per tensor: plan index, file, offset, size, sha256 of its bytes, name. A line is appended only
// after the tensor's bytes were written, with one write() call, so a process killed at any point
// (kill -9) leaves a manifest whose lines describe bytes that are in the partial file — and a
// rerun verifies each line's bytes against its sha256 anyway before skipping the tensor.
//
// The fingerprint covers everything that determines the output bytes we can see without reading
// tensor data (every file's header, so names, types, shapes, offsets and metadata; the input
// files' sizes and modification times): a rerun with other options or another input starts over.
//
// Files are not fsync'd per tensor (a process crash does not lose written pages); the partial
// files are fsync'd once before the rename. The output folder must be shared by all ranks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "coordinator/quantize/layout.h"

namespace expertmesh {

struct ManifestEntry {
  size_t index = 0;
  TensorSlot slot;
  std::string sha256;
  std::string name;
};

std::string partial_path(const std::string& final_path);

// The fingerprint (hex sha256) of a layout and its input files.
Result<std::string> layout_fingerprint(const OutputLayout& layout, const std::vector<std::string>& input_paths);

// Rank 0, before any rank writes: keeps the partial files and manifests when they belong to this
// fingerprint (returns true: resuming), else removes stale manifests and creates fresh partial
// files of the final sizes (returns false). Writes every file's header in both cases.
Result<bool> prepare_partial_outputs(const OutputLayout& layout, const std::string& fingerprint);

// Every manifest line of this fingerprint, by plan index (later lines win). Malformed lines (a
// line cut by a crash) are skipped.
std::map<size_t, ManifestEntry> read_manifests(const OutputLayout& layout, const std::string& fingerprint);

// One rank's writer: pwrite into the partial files, append to its manifest.
class PartialWriter {
 public:
  static Result<PartialWriter> open(const OutputLayout& layout, const std::string& fingerprint, int rank);
  PartialWriter(PartialWriter&& o) noexcept;
  PartialWriter& operator=(PartialWriter&&) = delete;
  PartialWriter(const PartialWriter&) = delete;
  ~PartialWriter();

  // Writes tensor `index`'s bytes at its slot and records it. bytes.size() must equal the slot's.
  Status write_tensor(size_t index, const std::string& name, const std::vector<uint8_t>& bytes);
  // True when the partial file holds bytes matching `e` at the layout's slot for e.index.
  Result<bool> verify(const ManifestEntry& e, std::vector<uint8_t>* scratch) const;

 private:
  PartialWriter(const OutputLayout* layout) : layout_(layout) {}
  const OutputLayout* layout_;
  std::vector<int> fds_;
  int manifest_fd_ = -1;
};

// Rank 0, after every rank finished: fsync, rename each F.partial to F, remove the manifests.
Status finalize_outputs(const OutputLayout& layout);

}  // namespace expertmesh
