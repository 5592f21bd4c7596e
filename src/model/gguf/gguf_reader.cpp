// GGUF reader: MappedFile (read-only mmap), the bounds-checked header parser, and the merge of
// split shards into one File. See gguf.h for the format and the validation contract.
//
// Every read goes through Cursor, which checks the bytes left before touching them; counts read
// from the file are bounded by the bytes left (each element needs a minimum number of bytes) before
// anything is allocated, so a hostile header can neither read outside the buffer nor make us
// allocate more than a small multiple of the file size.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "model/gguf/gguf.h"
#include "model/gguf/gguf_internal.h"

namespace expertmesh::gguf {

// ---- MappedFile ---------------------------------------------------------------------------------

// Read-only private mapping of a whole file. An empty file maps to (nullptr, 0).
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile() {
    if (addr_ != nullptr) ::munmap(addr_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  void* addr_ = nullptr;
  size_t size_ = 0;
};

Result<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(fmt::format("{}: no such file", path));
    return Status::IoError(fmt::format("{}: cannot open: {}", path, std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::IoError(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::IoError(fmt::format("{}: not a regular file", path));
  }
  std::unique_ptr<MappedFile> m(new MappedFile());
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status::IoError(fmt::format("{}: mmap of {} bytes failed: {}", path, m->size_, std::strerror(err)));
    }
    m->addr_ = p;
  }
  ::close(fd);  // the mapping stays valid
  return m;
}

// ---- Cursor -------------------------------------------------------------------------------------

namespace {

// Fewest bytes a key-value pair (empty key, u8 value) and a tensor info (empty name, one dim)
// occupy: bounds for n_kv and n_tensors before anything is reserved.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// Bounds-checked little-endian reader over [base, base + size).
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size) : base_(base), size_(size) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  Status truncated(const char* what, size_t need) const {
    return Status::Corruption(
        fmt::format("truncated: {} at offset {} needs {} bytes, the file has {} left", what, pos_, need, left()));
  }

  template <typename T>
  Status read(T* out, const char* what) {
    if (sizeof(T) > left()) return truncated(what, sizeof(T));
    std::memcpy(out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }

  // Reads `n` (1..8) bytes into the low bytes of *bits (zero-extended).
  Status read_bits(size_t n, uint64_t* bits, const char* what) {
    if (n > left()) return truncated(what, n);
    *bits = 0;
    std::memcpy(bits, base_ + pos_, n);
    pos_ += n;
    return Status::Ok();
  }

  // u64 length + bytes.
  Status read_string(std::string* out, const char* what) {
    uint64_t n = 0;
    const size_t at = pos_;
    EM_RETURN_IF_ERROR(read(&n, what));
    if (n > left())
      return Status::Corruption(
          fmt::format("{} at offset {} has length {}, more than the {} bytes left in the file", what, at, n, left()));
    out->assign(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return Status::Ok();
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
};

const Value* find_kv(const std::vector<KeyValue>& kvs, std::string_view key) {
  for (const auto& kv : kvs)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

uint32_t byteswap32(uint32_t v) {
  return ((v & 0xffu) << 24) | ((v & 0xff00u) << 8) | ((v >> 8) & 0xff00u) | (v >> 24);
}

// Reads one value of type `type` (already validated). `depth` counts the arrays enclosing it;
// `*budget` is the number of array elements the file may still create (kMaxMetadataElements).
Status read_value(Cursor& c, ValueType type, int depth, uint64_t* budget, Value* out) {
  out->type = type;
  if (type == ValueType::STRING) return c.read_string(&out->str, "string");
  if (type != ValueType::ARRAY) return c.read_bits(value_scalar_size(type), &out->bits, value_type_name(type));

  uint32_t et = 0;
  EM_RETURN_IF_ERROR(c.read(&et, "array element type"));
  if (!internal::valid_value_type(et)) return Status::Corruption(fmt::format("unknown array element type id {}", et));
  const ValueType elem = static_cast<ValueType>(et);
  // This array is nesting level depth + 1; its elements would be level depth + 2.
  if (elem == ValueType::ARRAY && depth + 2 > kMaxArrayDepth)
    return Status::Corruption(fmt::format("arrays nested more than {} levels deep", kMaxArrayDepth));
  uint64_t n = 0;
  const size_t at = c.pos();
  EM_RETURN_IF_ERROR(c.read(&n, "array length"));
  const uint64_t min = internal::min_encoded_size(elem);
  if (n > c.left() / min)
    return Status::Corruption(
        fmt::format("array at offset {} claims {} {} elements (at least {} bytes each), more than "
                    "the {} bytes left in the file could hold",
                    at, n, value_type_name(elem), min, c.left()));
  if (n > *budget)
    return Status::Corruption(
        fmt::format("array at offset {} with {} elements exceeds the limit of {} metadata array "
                    "elements per file",
                    at, n, kMaxMetadataElements));
  *budget -= n;
  out->elem_type = elem;
  out->array.resize(static_cast<size_t>(n));
  if (elem != ValueType::STRING && elem != ValueType::ARRAY) {
    // Scalar array: bounded above, so one check covers every element.
    const size_t sz = value_scalar_size(elem);
    for (auto& v : out->array) {
      v.type = elem;
      (void)c.read_bits(sz, &v.bits, "array element");
    }
    return Status::Ok();
  }
  if (elem == ValueType::STRING) {  // vocabularies: the hot path
    for (size_t i = 0; i < out->array.size(); ++i) {
      Value& v = out->array[i];
      v.type = ValueType::STRING;
      Status s = c.read_string(&v.str, "string");
      if (!s.ok()) return s.with_context(fmt::format("array element {}", i));
    }
    return Status::Ok();
  }
  for (size_t i = 0; i < out->array.size(); ++i) {
    Status s = read_value(c, elem, depth + 1, budget, &out->array[i]);
    if (!s.ok()) return s.with_context(fmt::format("array element {}", i));
  }
  return Status::Ok();
}

}  // namespace

// ---- Parser -------------------------------------------------------------------------------------

// Parses shards and assembles Files (friend of File).
class Parser {
 public:
  // One parsed file. Messages carry no file name; callers add it.
  struct Shard {
    uint32_t version = 3;
    uint64_t alignment = kDefaultAlignment;
    std::vector<KeyValue> kvs;
    std::vector<TensorInfo> tensors;  // data set unless data_absent
    uint64_t header_end = 0;          // end of the tensor infos
    uint64_t data_offset = 0;         // header_end rounded up to the alignment
    bool data_absent = false;         // file ends at header_end (vocab-only layout)
  };

  static Status parse_shard(const uint8_t* base, size_t size, int split_index, Shard* out);
  static Status check_layout(const uint8_t* base, size_t size, Shard* out);

  // Appends shard i's tensors to f (checking names are unique across shards).
  static Status add_shard(File* f, Shard&& shard, const std::string& path, const uint8_t* base, size_t size,
                          std::unique_ptr<MappedFile> map);

  static Result<std::unique_ptr<File>> single(const std::string& path, const uint8_t* base, size_t size,
                                              std::unique_ptr<MappedFile> map, Shard&& shard);
  static Result<std::unique_ptr<File>> open(const std::string& path, bool find_shards);
};

Status Parser::parse_shard(const uint8_t* base, size_t size, int split_index, Shard* out) {
  if (size < 4) return Status::Corruption(fmt::format("file is {} bytes, too short for the GGUF magic", size));
  if (std::memcmp(base, internal::kMagic, 4) != 0)
    return Status::Corruption(fmt::format("bad magic {:02x} {:02x} {:02x} {:02x} (expected \"GGUF\"): not a GGUF file",
                                          base[0], base[1], base[2], base[3]));
  Cursor c(base, size);  // offsets in messages are file offsets
  uint32_t magic = 0;
  EM_RETURN_IF_ERROR(c.read(&magic, "magic"));
  EM_RETURN_IF_ERROR(c.read(&out->version, "header version"));
  if (out->version == 1) return Status::Unsupported("GGUF v1 is not supported (only v2 and v3 are)");
  if (out->version != 2 && out->version != 3) {
    const uint32_t swapped = byteswap32(out->version);
    if (swapped >= 1 && swapped <= 3)
      return Status::Unsupported(fmt::format("big-endian GGUF (version {}) is not supported", swapped));
    return Status::Unsupported(fmt::format("unsupported GGUF version {} (only v2 and v3 are)", out->version));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  EM_RETURN_IF_ERROR(c.read(&n_tensors, "header tensor count"));
  EM_RETURN_IF_ERROR(c.read(&n_kv, "header key-value count"));
  if (n_kv > c.left() / kMinKvBytes)
    return Status::Corruption(
        fmt::format("n_kv = {} is more than the {} bytes after the header could hold", n_kv, c.left()));
  if (n_tensors > c.left() / kMinTensorInfoBytes || n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > c.left())
    return Status::Corruption(
        fmt::format("n_tensors = {} is more than the {} bytes after the header could hold", n_tensors, c.left()));

  // Key-value pairs.
  out->kvs.reserve(static_cast<size_t>(n_kv));
  std::unordered_set<std::string> seen;
  seen.reserve(static_cast<size_t>(n_kv));
  uint64_t budget = kMaxMetadataElements;
  for (uint64_t i = 0; i < n_kv; ++i) {
    KeyValue kv;
    Status s = c.read_string(&kv.key, "key");
    if (!s.ok()) return s.with_context(fmt::format("key-value pair {}", i));
    uint32_t type = 0;
    s = c.read(&type, "value type");
    if (!s.ok()) return s.with_context(fmt::format("key '{}'", kv.key));
    if (!internal::valid_value_type(type))
      return Status::Corruption(fmt::format("key '{}': unknown value type id {}", kv.key, type));
    s = read_value(c, static_cast<ValueType>(type), 0, &budget, &kv.value);
    if (!s.ok()) return s.with_context(fmt::format("key '{}'", kv.key));
    if (!seen.insert(kv.key).second) return Status::Corruption(fmt::format("duplicate key '{}'", kv.key));
    out->kvs.push_back(std::move(kv));
  }
  EM_ASSIGN_OR_RETURN(out->alignment, internal::alignment_from_value(find_kv(out->kvs, kKeyAlignment)));

  // Tensor infos.
  out->tensors.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.split_index = split_index;
    Status s = c.read_string(&t.name, "tensor name");
    if (!s.ok()) return s.with_context(fmt::format("tensor info {}", i));
    const auto ctx = [&t] { return fmt::format("tensor '{}'", t.name); };
    s = c.read(&t.n_dims, "tensor n_dims");
    if (!s.ok()) return s.with_context(ctx());
    if (t.n_dims == 0 || t.n_dims > static_cast<uint32_t>(kMaxDims))
      return Status::Corruption(fmt::format("tensor '{}': n_dims = {} (must be 1..{})", t.name, t.n_dims, kMaxDims));
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      uint64_t ne = 0;
      s = c.read(&ne, "tensor dimension");
      if (!s.ok()) return s.with_context(ctx());
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Status::Corruption(fmt::format("tensor '{}': ne[{}] = {} (dimensions must be positive)", t.name, d, ne));
      t.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t type = 0;
    s = c.read(&type, "tensor type");
    if (!s.ok()) return s.with_context(ctx());
    if (type >= static_cast<uint32_t>(GgmlType::kCount) || type_traits(static_cast<int32_t>(type)) == nullptr)
      return Status::Unsupported(fmt::format("tensor '{}': unknown ggml type id {}", t.name, type));
    t.type = static_cast<GgmlType>(type);
    s = c.read(&t.offset, "tensor offset");
    if (!s.ok()) return s.with_context(ctx());
    EM_ASSIGN_OR_RETURN(t.nbytes, internal::validate_tensor_shape(t.name, t.n_dims, t.ne, t.type));
    if (t.offset % out->alignment != 0)
      return Status::Corruption(fmt::format("tensor '{}': offset {} is not a multiple of the alignment {}", t.name,
                                            t.offset, out->alignment));
    out->tensors.push_back(std::move(t));
  }
  out->header_end = c.pos();
  return check_layout(base, size, out);
}

// Places the data section and checks every tensor's range: inside the file, no overlaps.
Status Parser::check_layout(const uint8_t* base, size_t size, Shard* out) {
  if (!internal::align_up(out->header_end, out->alignment, &out->data_offset))
    return Status::Corruption(fmt::format("data section offset overflows (alignment {})", out->alignment));
  // A file that ends right after the tensor infos has no data section (vocab-only layout). When
  // the header happens to end aligned and there are no tensors, the two layouts are the same
  // bytes; call it a normal file then.
  out->data_absent = size == out->header_end && (out->header_end != out->data_offset || !out->tensors.empty());
  if (!out->data_absent && size < out->data_offset)
    return Status::Corruption(
        fmt::format("file ends at {} inside the padding before the data section at {}", size, out->data_offset));
  const uint64_t data_size = out->data_absent ? 0 : size - out->data_offset;
  for (auto& t : out->tensors) {
    const uint64_t nb = static_cast<uint64_t>(t.nbytes);
    if (out->data_absent) {
      if (t.offset > std::numeric_limits<uint64_t>::max() - nb)
        return Status::Corruption(fmt::format("tensor '{}': offset {} + {} bytes overflows", t.name, t.offset, nb));
      continue;
    }
    if (t.offset > data_size || nb > data_size - t.offset)
      return Status::Corruption(fmt::format(
          "tensor '{}': data [{}, {}) of the data section lies outside the file ({} data bytes from offset {})", t.name,
          t.offset, t.offset + std::min(nb, std::numeric_limits<uint64_t>::max() - t.offset), data_size,
          out->data_offset));
    t.data = base + out->data_offset + t.offset;
  }
  if (out->tensors.size() > 1) {
    std::vector<size_t> order(out->tensors.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return out->tensors[a].offset < out->tensors[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& p = out->tensors[order[k - 1]];
      const TensorInfo& q = out->tensors[order[k]];
      if (p.offset + static_cast<uint64_t>(p.nbytes) > q.offset)
        return Status::Corruption(fmt::format("tensors '{}' (offset {}, {} bytes) and '{}' (offset {}) overlap", p.name,
                                              p.offset, p.nbytes, q.name, q.offset));
    }
  }
  return Status::Ok();
}

Status Parser::add_shard(File* f, Shard&& shard, const std::string& path, const uint8_t* base, size_t size,
                         std::unique_ptr<MappedFile> map) {
  const int index = static_cast<int>(f->shard_paths_.size());
  f->tensors_.reserve(f->tensors_.size() + shard.tensors.size());
  for (auto& t : shard.tensors) {
    auto [it, inserted] = f->tensor_index_.emplace(t.name, f->tensors_.size());
    if (!inserted) {
      const int other = f->tensors_[it->second].split_index;
      if (other == index) return Status::Corruption(fmt::format("{}: duplicate tensor name '{}'", path, t.name));
      return Status::Corruption(fmt::format("{}: tensor '{}' is also in shard '{}'", path, t.name,
                                            f->shard_paths_[static_cast<size_t>(other)]));
    }
    t.split_index = index;
    f->tensors_.push_back(std::move(t));
  }
  f->shard_paths_.push_back(path);
  f->maps_.push_back(std::move(map));
  f->shard_base_.push_back(base);
  f->shard_size_.push_back(size);
  f->data_offsets_.push_back(shard.data_offset);
  return Status::Ok();
}

Result<std::unique_ptr<File>> Parser::single(const std::string& path, const uint8_t* base, size_t size,
                                             std::unique_ptr<MappedFile> map, Shard&& shard) {
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->version_ = shard.version;
  f->alignment_ = shard.alignment;
  f->vocab_only_ = shard.data_absent;
  f->kvs_ = std::move(shard.kvs);
  EM_RETURN_IF_ERROR(add_shard(f.get(), std::move(shard), path, base, size, std::move(map)));
  return f;
}

namespace {

// Reads an integer split.* key; `required` makes absence an error. Returns -1 when absent.
Result<int64_t> split_key(const std::vector<KeyValue>& kvs, std::string_view key, bool required) {
  const Value* v = find_kv(kvs, key);
  if (v == nullptr) {
    if (required) return Status::Corruption(fmt::format("split model lacks key '{}'", key));
    return int64_t{-1};
  }
  if (!v->is_integer())
    return Status::Corruption(fmt::format("key '{}' has type {}, expected an integer", key, value_type_name(v->type)));
  return v->as_int();
}

}  // namespace

Result<std::unique_ptr<File>> Parser::open(const std::string& path, bool find_shards) {
  EM_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> map, MappedFile::open(path));
  Shard first;
  Status s = parse_shard(map->data(), map->size(), 0, &first);
  if (!s.ok()) return s.with_context(path);

  const auto fail = [&](const std::string& what) -> Status {
    return Status::Corruption(fmt::format("{}: {}", path, what));
  };
  Result<int64_t> count_r = split_key(first.kvs, kKeySplitCount, false);
  if (!count_r.ok()) return count_r.status().with_context(path);
  const int64_t count = count_r.value();
  if (!find_shards || count == -1 || count == 1) {
    const uint8_t* base = map->data();
    const size_t size = map->size();
    return single(path, base, size, std::move(map), std::move(first));
  }
  if (count < 1 || count > 99999) return fail(fmt::format("split.count = {} is out of range", count));
  Result<int64_t> no_r = split_key(first.kvs, kKeySplitNo, true);
  if (!no_r.ok()) return no_r.status().with_context(path);
  const int64_t no = no_r.value();
  if (no < 0 || no >= count) return fail(fmt::format("split.no = {} is outside 0..{}", no, count - 1));
  std::string prefix;
  int name_index = 0, name_count = 0;
  if (!parse_split_path(path, &prefix, &name_index, &name_count))
    return fail(
        fmt::format("split.count = {} but the name does not follow <prefix>-%05d-of-%05d.gguf, so the other "
                    "shards cannot be found",
                    count));
  if (name_count != count || name_index != no + 1)
    return fail(fmt::format("split.no = {} / split.count = {} disagree with the file name (shard {} of {})", no, count,
                            name_index, name_count));

  // Parse every shard (the opened one already is), then assemble in order.
  std::vector<Shard> shards(static_cast<size_t>(count));
  std::vector<std::unique_ptr<MappedFile>> maps(static_cast<size_t>(count));
  std::vector<std::string> paths(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    paths[i] = i == no ? path : split_path(prefix, static_cast<int>(i + 1), static_cast<int>(count));
    if (i == no) {
      shards[i] = std::move(first);
      maps[i] = std::move(map);
      continue;
    }
    Result<std::unique_ptr<MappedFile>> m = MappedFile::open(paths[i]);
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kNotFound)
        return Status::NotFound(
            fmt::format("{}: missing split shard '{}' (shard {} of {})", path, paths[i], i + 1, count));
      return m.status().with_context(path);
    }
    maps[i] = std::move(m).value();
    s = parse_shard(maps[i]->data(), maps[i]->size(), static_cast<int>(i), &shards[i]);
    if (!s.ok()) return s.with_context(paths[i]);
    Result<int64_t> c2 = split_key(shards[i].kvs, kKeySplitCount, true);
    if (!c2.ok()) return c2.status().with_context(paths[i]);
    Result<int64_t> n2 = split_key(shards[i].kvs, kKeySplitNo, true);
    if (!n2.ok()) return n2.status().with_context(paths[i]);
    if (c2.value() != count || n2.value() != i)
      return Status::Corruption(fmt::format("{}: split.no = {} / split.count = {}, expected {} / {}", paths[i],
                                            n2.value(), c2.value(), i, count));
  }
  Result<int64_t> total_r = split_key(shards[0].kvs, kKeySplitTensorsCount, true);
  if (!total_r.ok()) return total_r.status().with_context(paths[0]);
  int64_t total = 0;
  bool all_absent = true;
  for (int64_t i = 0; i < count; ++i) {
    total += static_cast<int64_t>(shards[i].tensors.size());
    all_absent = all_absent && shards[i].data_absent;
  }
  if (total != total_r.value())
    return Status::Corruption(fmt::format("{}: split.tensors.count = {} but the {} shards hold {} tensors", paths[0],
                                          total_r.value(), count, total));
  if (!all_absent)
    for (int64_t i = 0; i < count; ++i)
      if (shards[i].data_absent && !shards[i].tensors.empty())
        return Status::Corruption(fmt::format("{}: file ends after the header; its tensor data is missing", paths[i]));

  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->version_ = shards[0].version;
  f->alignment_ = shards[0].alignment;
  f->vocab_only_ = all_absent;
  f->kvs_ = std::move(shards[0].kvs);
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* base = maps[i]->data();
    const size_t size = maps[i]->size();
    EM_RETURN_IF_ERROR(add_shard(f.get(), std::move(shards[i]), paths[i], base, size, std::move(maps[i])));
  }
  return f;
}

// ---- File ---------------------------------------------------------------------------------------

File::~File() = default;

Result<std::unique_ptr<File>> File::open(const std::string& path) { return Parser::open(path, true); }

Result<std::unique_ptr<File>> File::open_single(const std::string& path) { return Parser::open(path, false); }

Result<std::unique_ptr<File>> File::parse(const uint8_t* data, size_t size, const std::string& name) {
  if (data == nullptr && size > 0) return Status::InvalidArgument(fmt::format("{}: null buffer", name));
  Parser::Shard shard;
  Status s = Parser::parse_shard(data, size, 0, &shard);
  if (!s.ok()) return s.with_context(name);
  return Parser::single(name, data, size, nullptr, std::move(shard));
}

const Value* File::find(std::string_view key) const { return find_kv(kvs_, key); }

Result<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return Status::NotFound(fmt::format("{}: key '{}' not found", path_, key));
  if (v->type != ValueType::STRING)
    return Status::InvalidArgument(
        fmt::format("{}: key '{}' has type {}, expected str", path_, key, value_type_name(v->type)));
  return v->str;
}

Result<int64_t> File::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return Status::NotFound(fmt::format("{}: key '{}' not found", path_, key));
  if (!v->is_integer() && v->type != ValueType::BOOL)
    return Status::InvalidArgument(
        fmt::format("{}: key '{}' has type {}, expected an integer", path_, key, value_type_name(v->type)));
  return v->as_int();
}

Result<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return Status::NotFound(fmt::format("{}: key '{}' not found", path_, key));
  if (!v->is_float() && !v->is_integer())
    return Status::InvalidArgument(
        fmt::format("{}: key '{}' has type {}, expected a number", path_, key, value_type_name(v->type)));
  return v->as_double();
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* File::shard_data(int i) const {
  return i >= 0 && i < n_splits() ? shard_base_[static_cast<size_t>(i)] : nullptr;
}

size_t File::shard_size(int i) const { return i >= 0 && i < n_splits() ? shard_size_[static_cast<size_t>(i)] : 0; }

uint64_t File::data_offset(int i) const { return i >= 0 && i < n_splits() ? data_offsets_[static_cast<size_t>(i)] : 0; }

// ---- split names --------------------------------------------------------------------------------

std::string split_path(const std::string& prefix, int index, int count) {
  return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, index, count);
}

bool parse_split_path(const std::string& path, std::string* prefix, int* index, int* count) {
  // "<prefix>-NNNNN-of-MMMMM.gguf": both numbers exactly 5 digits (counts are u16, so %05d never
  // widens), prefix non-empty.
  constexpr std::string_view kSuffix = ".gguf";
  constexpr size_t kTail = 1 + 5 + 4 + 5 + 5;  // "-NNNNN-of-MMMMM.gguf"
  if (path.size() <= kTail) return false;
  const std::string_view tail = std::string_view(path).substr(path.size() - kTail);
  if (tail[0] != '-' || tail.substr(6, 4) != "-of-" || tail.substr(15) != kSuffix) return false;
  int a = 0, b = 0;
  for (size_t i = 1; i < 6; ++i) {
    if (tail[i] < '0' || tail[i] > '9') return false;
    a = a * 10 + (tail[i] - '0');
  }
  for (size_t i = 10; i < 15; ++i) {
    if (tail[i] < '0' || tail[i] > '9') return false;
    b = b * 10 + (tail[i] - '0');
  }
  if (a < 1 || b < 1 || a > b) return false;
  const size_t plen = path.size() - kTail;
  if (path[plen - 1] == '/') return false;
  *prefix = path.substr(0, plen);
  *index = a;
  *count = b;
  return true;
}

}  // namespace expertmesh::gguf
