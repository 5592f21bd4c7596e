// Where every output byte goes, decided before any tensor is quantized: the output file(s), each
// file's header (KVs + tensor infos + padding, exactly as gguf::Writer serialises it) and each
// tensor's absolute offset and size in its file. Because the layout is a pure function of the
// plan, every rank computes the same one and can write its tensors with pwrite at their offsets.
//
// Files: one OUT, or with --keep-split one per input shard (`<OUT less .gguf>-%05d-of-%05d.gguf`,
// the peer's naming; split.* keys in the first when there is more than one), or with
// --split-max-size / --split-max-tensors gguf-split's sharding (the same rule and keys as
// gguf::Writer::write). Tensor data is padded to the file's alignment with zeros.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/quantize/plan.h"
#include "model/gguf/gguf.h"

namespace expertmesh {

struct OutputFile {
  std::string path;             // final name
  std::vector<uint8_t> header;  // bytes [0, header.size())
  uint64_t size = 0;            // whole file
};

struct TensorSlot {
  int file = 0;
  uint64_t offset = 0;  // absolute, in files[file]
  int64_t nbytes = 0;   // without padding
};

struct OutputLayout {
  std::vector<OutputFile> files;
  std::vector<TensorSlot> slots;  // one per plan tensor, plan order
};

struct LayoutOptions {
  bool keep_split = false;   // --keep-split
  gguf::SplitOptions split;  // --split-max-size / --split-max-tensors
};

// `meta` holds the output KVs (no tensors). Errors: both split modes at once, limits out of range,
// anything gguf::Writer refuses (named by file).
Result<OutputLayout> make_output_layout(const gguf::Writer& meta, const gguf::File& in, const QuantPlan& plan,
                                        const std::string& path, const LayoutOptions& opt);

// llama.cpp's split file name: "<prefix>-%05d-of-%05d.gguf", index 1-based.
std::string split_file_name(const std::string& prefix, int index1, int count);

}  // namespace expertmesh
