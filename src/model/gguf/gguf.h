// GGUF v2/v3 reader and writer, byte-compatible with ik_llama.cpp / ggml.
//
// File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
// (string key, u32 type, value), then n_tensors (string name, u32 n_dims, u64 ne[n_dims],
// u32 type, u64 offset), padding to `general.alignment` (default 32), then tensor data; every
// offset is relative to the start of the data section and a multiple of the alignment.
// Strings are u64 length + bytes (no terminator). v1 (u32 counts) is rejected as unsupported.
//
// The reader never asserts and never reads outside the mapping: every malformed input yields a
// Status whose message names the file and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/types.h"

namespace expertmesh::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Scalars keep their exact on-disk bits so a write reproduces the file.
struct Value {
  ValueType type = ValueType::UINT32;
  uint64_t bits = 0;                // scalar payload, zero-extended raw little-endian bits
  std::string str;                  // STRING
  ValueType elem_type = ValueType::UINT8;  // ARRAY: element type (may itself be ARRAY)
  std::vector<Value> array;         // ARRAY elements

  static Value u8(uint8_t v), i8(int8_t v), u16(uint16_t v), i16(int16_t v), u32(uint32_t v), i32(int32_t v);
  static Value u64(uint64_t v), i64(int64_t v), f32(float v), f64(double v), boolean(bool v);
  static Value string(std::string v);
  static Value array_of(ValueType elem, std::vector<Value> elems);
  static Value string_array(const std::vector<std::string>& v);

  bool is_integer() const;  // any of the 8 integer types (not BOOL)
  bool is_float() const;    // FLOAT32 / FLOAT64
  int64_t as_int() const;   // integer types (sign-correct) and BOOL; 0 otherwise
  uint64_t as_uint() const;
  double as_double() const; // float and integer types
  bool as_bool() const;
  // Human-readable rendering, arrays abbreviated after `max_elems` elements (gguf-dump style).
  std::string to_display(size_t max_elems = 16) const;
};

struct KeyValue {
  std::string key;
  Value value;
};

// Tensor as described in the header. `offset` is relative to the data section; `data` points
// into the mapping (nullptr for vocab-only files that end after the header).
struct TensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;
  int64_t nbytes = 0;         // tensor_nbytes(type, ne): includes row meta, honours interleave
  const uint8_t* data = nullptr;
  int split_index = 0;        // which shard of a multi-file model holds the data
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class MappedFile;  // read-only mmap of one file (gguf_reader.cpp)

// A GGUF model: one file, or all shards of `name-0000i-of-0000N.gguf` merged into one view
// (metadata from shard 1, tensors from all shards in order).
class File {
 public:
  // Opens `path`. For a split shard (any of them), finds and opens all shards and checks the
  // split.* keys (split.no, split.count, split.tensors.count). Missing shards are an error
  // naming the missing file.
  static Result<std::unique_ptr<File>> open(const std::string& path);
  // Parses an in-memory buffer (fuzzing, tests). `name` is used in error messages. The buffer
  // must outlive the File.
  static Result<std::unique_ptr<File>> parse(const uint8_t* data, size_t size, const std::string& name);
  ~File();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  int n_splits() const { return static_cast<int>(shard_paths_.size()); }
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  bool vocab_only() const { return vocab_only_; }  // file ends at the data section (no tensor data)

  const std::vector<KeyValue>& kvs() const { return kvs_; }
  const Value* find(std::string_view key) const;  // nullptr if absent
  Result<std::string> get_string(std::string_view key) const;
  Result<int64_t> get_int(std::string_view key) const;
  Result<double> get_float(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // Raw bytes of shard i, for byte-exact comparisons (size of the mapping).
  const uint8_t* shard_data(int i) const;
  size_t shard_size(int i) const;
  // Offset of the data section inside shard i.
  uint64_t data_offset(int i) const;

 private:
  File() = default;
  friend class Parser;
  std::string path_;
  uint32_t version_ = 3;
  uint64_t alignment_ = 32;
  bool vocab_only_ = false;
  std::vector<std::string> shard_paths_;
  std::vector<std::unique_ptr<MappedFile>> maps_;
  std::vector<const uint8_t*> shard_base_;
  std::vector<size_t> shard_size_;
  std::vector<uint64_t> data_offsets_;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Writer. Collect KVs and tensors, then write. Tensor data is laid out in the order added, each
// at the next multiple of the alignment, padding zero-filled: the same layout ggml writes, so
// read(f) -> write gives f's bytes back.
struct WriteTensor {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;  // nbytes bytes, owned by the caller until write() returns
  int64_t nbytes = 0;
};

struct SplitOptions {
  int64_t max_tensors = 0;  // --split-max-tensors: at most this many tensors per shard (0 = no limit)
  int64_t max_bytes = 0;    // --split-max-size: at most this many tensor bytes per shard (0 = no limit)
};

class Writer {
 public:
  explicit Writer(uint32_t version = 3) : version_(version) {}
  // Replaces an existing key in place (keeping its position) or appends.
  void set(std::string key, Value v);
  void remove(std::string_view key);
  const std::vector<KeyValue>& kvs() const { return kvs_; }
  // Validates the name is unique and the byte count matches the shape and type.
  Status add_tensor(const WriteTensor& t);
  const std::vector<WriteTensor>& tensors() const { return tensors_; }

  // Writes one file, or shards `<stem>-00001-of-0000N.gguf` when split limits apply (with split.no,
  // split.count, split.tensors.count in every shard; metadata in the first). `path` for a split
  // write is the first shard's name or a stem ending in .gguf. Writes to `path.tmp` and renames,
  // so a crash never leaves a half-written file under the final name. Returns written paths.
  Result<std::vector<std::string>> write(const std::string& path, const SplitOptions& split = {}) const;
  // Serialises the header (KVs + tensor infos + padding) to bytes; tensor offsets computed.
  std::vector<uint8_t> header_bytes() const;

  // Copies every KV and tensor of `f` (data pointing into f's mapping). For round trips.
  static Result<Writer> from_file(const File& f);

 private:
  uint32_t version_;
  std::vector<KeyValue> kvs_;
  std::vector<WriteTensor> tensors_;
};

// The split file name llama.cpp uses: "<prefix>-%05d-of-%05d.gguf" (index 1-based).
std::string split_path(const std::string& prefix, int index, int count);

}  // namespace expertmesh::gguf
