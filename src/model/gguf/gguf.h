// GGUF v2/v3 reader and writer, byte-compatible with ik_llama.cpp / ggml.
//
// File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
// (string key, u32 type, value), then n_tensors (string name, u32 n_dims, u64 ne[n_dims],
// u32 type, u64 offset), padding to `general.alignment` (default 32), then tensor data; every
// offset is relative to the start of the data section and a multiple of the alignment.
// Strings are u64 length + bytes (no terminator). v1 (u32 counts) is rejected as unsupported.
// An ARRAY value is u32 element type, u64 count, then the elements; an element may itself be an
// ARRAY (its own element type and count follow), nested at most kMaxArrayDepth deep.
//
// The reader never asserts and never reads outside the mapping: every malformed input yields a
// Status whose message names the file and what is wrong ("<file>: tensor 'x': ..."). Opening a
// file maps it and parses the header only; tensor data is never read (pages fault in on use).
//
// Thread-safety: a File is immutable after open() and may be read from any thread. A Writer is
// a plain value; use one per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/types.h"

namespace expertmesh::gguf {

inline constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
inline constexpr int kMaxArrayDepth = 8;           // deepest ARRAY-of-ARRAY nesting the reader accepts
inline constexpr int kMaxDims = 4;                 // GGML_MAX_DIMS
// Most array elements (all arrays of one file together) the reader accepts: a bound on memory
// (~80 bytes per element) far above real vocabularies (~300k tokens and merges).
inline constexpr uint64_t kMaxMetadataElements = uint64_t{1} << 24;

// Well-known keys (llama.cpp spelling). Their on-disk types: general.alignment u32,
// split.no u16, split.count u16, split.tensors.count i32 (gguf-split).
inline constexpr std::string_view kKeyAlignment = "general.alignment";
inline constexpr std::string_view kKeySplitNo = "split.no";
inline constexpr std::string_view kKeySplitCount = "split.count";
inline constexpr std::string_view kKeySplitTensorsCount = "split.tensors.count";

// On-disk value type ids (gguf_type).
// clang-format off
enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
// clang-format on
inline constexpr uint32_t kValueTypeCount = 13;
// ggml's short names: "u8", "i8", ..., "str", "arr"; "unknown" for ids >= kValueTypeCount.
const char* value_type_name(ValueType t);
// Bytes of a scalar of type t on disk (1..8); 0 for STRING, ARRAY and unknown ids.
size_t value_scalar_size(ValueType t);

// One metadata value. Scalars keep their exact on-disk bits so a write reproduces the file.
// Memory: every array element is a full Value (~80 bytes), so a 150k-token vocabulary costs
// ~12 MB plus its strings; fine for metadata, not meant for bulk data (see kMaxMetadataElements).
struct Value {
  ValueType type = ValueType::UINT32;
  uint64_t bits = 0;                       // scalar payload, zero-extended raw little-endian bits
  std::string str;                         // STRING
  ValueType elem_type = ValueType::UINT8;  // ARRAY: element type (may itself be ARRAY)
  std::vector<Value> array;                // ARRAY elements; each has type == elem_type

  static Value u8(uint8_t v), i8(int8_t v), u16(uint16_t v), i16(int16_t v), u32(uint32_t v), i32(int32_t v);
  static Value u64(uint64_t v), i64(int64_t v), f32(float v), f64(double v), boolean(bool v);
  static Value string(std::string v);
  // elems must all have type `elem`; the Writer refuses the value otherwise.
  static Value array_of(ValueType elem, std::vector<Value> elems);
  static Value string_array(const std::vector<std::string>& v);

  bool is_integer() const;   // any of the 8 integer types (not BOOL)
  bool is_float() const;     // FLOAT32 / FLOAT64
  int64_t as_int() const;    // integer types (sign-correct; u64 above INT64_MAX wraps) and BOOL; 0 otherwise
  uint64_t as_uint() const;  // integer types (signed ones converted, negative values wrap) and BOOL; 0 otherwise
  double as_double() const;  // float and integer types; 0 otherwise
  bool as_bool() const;      // BOOL (any non-zero byte is true) and integer types (!= 0); false otherwise
  float as_f32() const;      // FLOAT32 bits as float (as_double() for other types)
  // Human-readable rendering, arrays abbreviated after `max_elems` elements (gguf-dump style):
  // strings inside arrays are quoted and escaped, "[1, 2, 3, ... (150000 elements)]". Nested
  // arrays share one budget of 4 * max_elems rendered elements, so the output stays short.
  std::string to_display(size_t max_elems = 16) const;

  // Deep equality (type, bits/str, elem_type, elements).
  bool operator==(const Value& o) const;
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
  int64_t nbytes = 0;  // tensor_nbytes(type, ne): includes row meta, honours interleave
  const uint8_t* data = nullptr;
  int split_index = 0;  // which shard of a multi-file model holds the data
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }  // never overflows (checked at open)
};

class MappedFile;  // read-only mmap of one file (gguf_reader.cpp)

// A GGUF model: one file, or all shards of `name-0000i-of-0000N.gguf` merged into one view
// (metadata from shard 1, tensors from all shards in order).
//
// Every tensor is validated at open: n_dims in 1..4, every ne > 0 and the element count fits in
// int64, a type id ik_llama.cpp defines, ne0 a whole number of blocks (tensor_nbytes succeeds;
// ggml only checks the total element count, which is how the peer wrote corrupt Q8_0 files),
// offset a multiple of the alignment, data inside the file, no two tensors overlapping, names
// unique across all shards.
class File {
 public:
  // Opens `path`. For a split shard (any of them), finds and opens all shards and checks the
  // split.* keys (split.no, split.count, split.tensors.count). Missing shards are an error
  // naming the missing file. A file is a shard when it has split.count > 1; its name must then
  // be `<prefix>-%05d-of-%05d.gguf` (llama.cpp's split naming) so the others can be found.
  static Result<std::unique_ptr<File>> open(const std::string& path);
  // Opens exactly `path` as one file, without looking for other shards (its split.* keys are
  // kept as metadata, not checked). For tools that inspect one shard.
  static Result<std::unique_ptr<File>> open_single(const std::string& path);
  // Parses an in-memory buffer (fuzzing, tests) as a single file. `name` is used in error
  // messages. The buffer must outlive the File.
  static Result<std::unique_ptr<File>> parse(const uint8_t* data, size_t size, const std::string& name);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  int n_splits() const { return static_cast<int>(shard_paths_.size()); }
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  // True when the file has no data section: it ends exactly where the tensor infos end, without
  // the padding to the alignment (llama.cpp's vocab-only files, written by gguf-py). Tensor
  // infos may still be present; their `data` is then nullptr. A file with zero tensors that
  // does carry the padding is not vocab_only() (the Writer reproduces either form).
  bool vocab_only() const { return vocab_only_; }

  const std::vector<KeyValue>& kvs() const { return kvs_; }
  const Value* find(std::string_view key) const;  // nullptr if absent
  // Typed getters. NotFound (naming key and file) when absent, InvalidArgument on a type
  // mismatch. get_int accepts the integer types and BOOL; get_float the float and integer types.
  Result<std::string> get_string(std::string_view key) const;
  Result<int64_t> get_int(std::string_view key) const;
  Result<double> get_float(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // Raw bytes of shard i, for byte-exact comparisons (size of the mapping).
  const uint8_t* shard_data(int i) const;
  size_t shard_size(int i) const;
  // Offset of the data section inside shard i (the aligned end of its header).
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
                                  // (may be nullptr for write_streaming and vocab-only writes)
  int64_t nbytes = 0;
};

struct SplitOptions {
  int64_t max_tensors = 0;  // --split-max-tensors: at most this many tensors per shard (0 = no limit)
  int64_t max_bytes = 0;    // --split-max-size: at most this many tensor bytes per shard (0 = no limit)
  bool enabled() const { return max_tensors > 0 || max_bytes > 0; }
};

class Writer {
 public:
  explicit Writer(uint32_t version = 3) : version_(version) {}
  uint32_t version() const { return version_; }
  // Replaces an existing key in place (keeping its position) or appends.
  void set(std::string key, Value v);
  void remove(std::string_view key);
  const Value* find(std::string_view key) const;  // nullptr if absent
  const std::vector<KeyValue>& kvs() const { return kvs_; }
  // Validates the name is unique, n_dims in 1..4, every ne > 0, and the byte count matches the
  // shape and type (tensor_nbytes), the same rules File::open applies. The error names the tensor.
  Status add_tensor(const WriteTensor& t);
  const std::vector<WriteTensor>& tensors() const { return tensors_; }

  // Vocab-only mode: write the header only, without the padding to the alignment and without
  // tensor data (llama.cpp's vocab-only layout). Tensor infos are still written.
  void set_vocab_only(bool v) { vocab_only_ = v; }
  bool vocab_only() const { return vocab_only_; }

  // Alignment the layout uses: general.alignment if set (validated by validate()), else 32.
  uint64_t alignment() const;
  // Checks everything write() needs: version 2 or 3, general.alignment a u32 power of two,
  // array elements matching their declared element type, nesting within kMaxArrayDepth.
  Status validate() const;

  // Writes one file, or shards `<stem>-00001-of-0000N.gguf` when split limits apply (with split.no,
  // split.count, split.tensors.count in every shard; metadata in the first). `path` for a split
  // write is the first shard's name or a stem ending in .gguf. Writes to `path.tmp` and renames,
  // so a crash never leaves a half-written file under the final name. Returns written paths.
  //
  // Splitting follows gguf-split: a new shard starts when the tensor count reaches max_tensors
  // or the padded tensor bytes would exceed max_bytes; a shard always holds at least one tensor
  // (a tensor larger than max_bytes gets a shard of its own). Any split option writes the
  // `-of-` naming, even for a single shard. Shards after the first hold only general.alignment
  // (when it is not 32) and the split.* keys. The files are renamed only after every shard was
  // written; on error the temporaries are removed. Not fsync'd: atomic against process crashes.
  Result<std::vector<std::string>> write(const std::string& path, const SplitOptions& split = {}) const;

  // Like write(), but tensor bytes come from `source` instead of WriteTensor::data, one tensor at
  // a time in the order added (so a quantizer can stream a model larger than memory). `source`
  // must fill `out` with exactly tensors()[index].nbytes bytes; anything else aborts the write.
  using TensorSource = std::function<Status(size_t index, std::vector<uint8_t>* out)>;
  Result<std::vector<std::string>> write_streaming(const std::string& path, const SplitOptions& split,
                                                   const TensorSource& source) const;

  // Serialises the header (KVs + tensor infos + padding) to bytes; tensor offsets computed.
  // Single-file layout. Requires validate() to pass (invalid array elements are written as
  // their declared element type).
  std::vector<uint8_t> header_bytes() const;
  // The whole single file in memory (header + data); for tests and fuzzing.
  Result<std::vector<uint8_t>> to_bytes() const;

  // Copies every KV and tensor of `f` (data pointing into f's mapping) and its vocab_only form.
  // For a multi-shard File the split.* keys are dropped (write() adds them again when asked to
  // split), so from_file + write(path, same limits) reproduces gguf-split's shards.
  static Result<Writer> from_file(const File& f);

 private:
  // Shared body of write() and write_streaming(); `source` may be null (use WriteTensor::data).
  Result<std::vector<std::string>> write_impl(const std::string& path, const SplitOptions& split,
                                              const TensorSource* source) const;

  uint32_t version_;
  bool vocab_only_ = false;
  std::vector<KeyValue> kvs_;
  std::vector<WriteTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;  // name -> index in tensors_
};

// The split file name llama.cpp uses: "<prefix>-%05d-of-%05d.gguf" (index 1-based).
std::string split_path(const std::string& prefix, int index, int count);

// Parses a split file name: for ".../x-00002-of-00005.gguf" sets *prefix = ".../x", *index = 2,
// *count = 5 and returns true; false if the name does not follow split_path's pattern.
bool parse_split_path(const std::string& path, std::string* prefix, int* index, int* count);

}  // namespace expertmesh::gguf
