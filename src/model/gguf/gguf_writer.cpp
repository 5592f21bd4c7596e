// GGUF writer: header serialisation in ggml's exact layout (gguf_write_to_buf), tensor data with
// zero padding to the alignment after every tensor, gguf-split's sharding and split.* keys, and
// write-to-temporary + rename.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "model/gguf/gguf.h"
#include "model/gguf/gguf_internal.h"

namespace expertmesh::gguf {
namespace {

// ---- serialisation ------------------------------------------------------------------------------

template <typename T>
void put(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof(T));
  std::memcpy(out->data() + at, &v, sizeof(T));
}

void put_string(std::vector<uint8_t>* out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out->insert(out->end(), s.begin(), s.end());
}

// Writes the payload of `v` as type `as` (the declared type: the KV's type, or the element type
// of the enclosing array). validate() guarantees they agree; if not, the declared type wins so the
// bytes stay well-formed.
void put_value(std::vector<uint8_t>* out, const Value& v, ValueType as) {
  switch (as) {
    case ValueType::STRING:
      put_string(out, v.str);
      return;
    case ValueType::ARRAY:
      put<uint32_t>(out, static_cast<uint32_t>(v.elem_type));
      put<uint64_t>(out, v.array.size());
      for (const Value& e : v.array) put_value(out, e, v.elem_type);
      return;
    default: {
      const size_t n = value_scalar_size(as);
      const size_t at = out->size();
      out->resize(at + n);
      std::memcpy(out->data() + at, &v.bits, n);  // little-endian host: low bytes first
      return;
    }
  }
}

Status validate_value(const Value& v, int depth) {
  if (!internal::valid_value_type(static_cast<uint32_t>(v.type)))
    return Status::InvalidArgument(fmt::format("unknown value type id {}", static_cast<uint32_t>(v.type)));
  if (v.type != ValueType::ARRAY) return Status::Ok();
  if (!internal::valid_value_type(static_cast<uint32_t>(v.elem_type)))
    return Status::InvalidArgument(fmt::format("unknown array element type id {}", static_cast<uint32_t>(v.elem_type)));
  if (v.elem_type == ValueType::ARRAY && depth + 2 > kMaxArrayDepth)
    return Status::InvalidArgument(fmt::format("arrays nested more than {} levels deep", kMaxArrayDepth));
  for (size_t i = 0; i < v.array.size(); ++i) {
    const Value& e = v.array[i];
    if (e.type != v.elem_type)
      return Status::InvalidArgument(fmt::format("array element {} has type {} but the array holds {}", i,
                                                 value_type_name(e.type), value_type_name(v.elem_type)));
    Status s = validate_value(e, depth + 1);
    if (!s.ok()) return s.with_context(fmt::format("array element {}", i));
  }
  return Status::Ok();
}

uint64_t padded(int64_t nbytes, uint64_t alignment) {
  uint64_t out = 0;
  internal::align_up(static_cast<uint64_t>(nbytes), alignment, &out);  // nbytes < 2^63: cannot overflow
  return out;
}

// KVs + tensor infos of tensors[begin, end) + optional padding, as gguf_write_to_buf lays them out.
std::vector<uint8_t> serialize_header(uint32_t version, const std::vector<KeyValue>& kvs,
                                      const std::vector<WriteTensor>& tensors, size_t begin, size_t end,
                                      uint64_t alignment, bool pad) {
  std::vector<uint8_t> out;
  size_t estimate = 24 + (end - begin) * 64;
  for (const auto& kv : kvs) estimate += kv.key.size() + 16 + kv.value.str.size() + kv.value.array.size() * 12;
  out.reserve(estimate);
  out.insert(out.end(), internal::kMagic, internal::kMagic + 4);
  put<uint32_t>(&out, version);
  put<uint64_t>(&out, end - begin);
  put<uint64_t>(&out, kvs.size());
  for (const auto& kv : kvs) {
    put_string(&out, kv.key);
    put<uint32_t>(&out, static_cast<uint32_t>(kv.value.type));
    put_value(&out, kv.value, kv.value.type);
  }
  uint64_t offset = 0;
  for (size_t i = begin; i < end; ++i) {
    const WriteTensor& t = tensors[i];
    put_string(&out, t.name);
    put<uint32_t>(&out, t.n_dims);
    for (uint32_t d = 0; d < t.n_dims; ++d) put<int64_t>(&out, t.ne[d]);
    put<int32_t>(&out, static_cast<int32_t>(t.type));
    put<uint64_t>(&out, offset);
    offset += padded(t.nbytes, alignment);
  }
  if (pad) {
    uint64_t end_pad = 0;
    internal::align_up(out.size(), alignment, &end_pad);
    out.resize(end_pad, 0);
  }
  return out;
}

// Sets `key` in `kvs` in place or appends it (Writer::set's rule, on a plain vector).
void set_kv(std::vector<KeyValue>* kvs, std::string_view key, Value v) {
  for (auto& kv : *kvs)
    if (kv.key == key) {
      kv.value = std::move(v);
      return;
    }
  kvs->push_back(KeyValue{std::string(key), std::move(v)});
}

bool is_split_key(std::string_view key) {
  return key == kKeySplitNo || key == kKeySplitCount || key == kKeySplitTensorsCount;
}

// ---- output file --------------------------------------------------------------------------------

// Buffered writer over a POSIX fd. Errors name the file.
class OutFile {
 public:
  explicit OutFile(std::string path) : path_(std::move(path)) {}
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  Status open() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return Status::IoError(fmt::format("{}: cannot create: {}", path_, std::strerror(errno)));
    buf_.reserve(kBufSize);
    return Status::Ok();
  }

  Status write(const uint8_t* p, size_t n) {
    if (buf_.size() + n <= kBufSize) {
      buf_.insert(buf_.end(), p, p + n);
      return Status::Ok();
    }
    EM_RETURN_IF_ERROR(flush());
    if (n < kBufSize) {
      buf_.insert(buf_.end(), p, p + n);
      return Status::Ok();
    }
    return write_direct(p, n);
  }

  Status write_zeros(size_t n) {
    static const uint8_t kZeros[256] = {};
    while (n > 0) {
      const size_t k = std::min(n, sizeof(kZeros));
      EM_RETURN_IF_ERROR(write(kZeros, k));
      n -= k;
    }
    return Status::Ok();
  }

  Status close() {
    EM_RETURN_IF_ERROR(flush());
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return Status::IoError(fmt::format("{}: close failed: {}", path_, std::strerror(errno)));
    return Status::Ok();
  }

 private:
  static constexpr size_t kBufSize = size_t{4} << 20;

  Status flush() {
    if (buf_.empty()) return Status::Ok();
    Status s = write_direct(buf_.data(), buf_.size());
    buf_.clear();
    return s;
  }

  Status write_direct(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status::IoError(fmt::format("{}: write failed: {}", path_, std::strerror(errno)));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return Status::Ok();
  }

  std::string path_;
  int fd_ = -1;
  std::vector<uint8_t> buf_;
};

// Removes the temporaries on scope exit unless released.
struct TempFiles {
  std::vector<std::string> paths;
  ~TempFiles() {
    for (const auto& p : paths) std::remove(p.c_str());
  }
};

}  // namespace

// ---- Writer -------------------------------------------------------------------------------------

void Writer::set(std::string key, Value v) {
  for (auto& kv : kvs_)
    if (kv.key == key) {
      kv.value = std::move(v);
      return;
    }
  kvs_.push_back(KeyValue{std::move(key), std::move(v)});
}

void Writer::remove(std::string_view key) {
  for (auto it = kvs_.begin(); it != kvs_.end(); ++it)
    if (it->key == key) {
      kvs_.erase(it);
      return;
    }
}

const Value* Writer::find(std::string_view key) const {
  for (const auto& kv : kvs_)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

Status Writer::add_tensor(const WriteTensor& t) {
  EM_ASSIGN_OR_RETURN(int64_t nbytes, internal::validate_tensor_shape(t.name, t.n_dims, t.ne, t.type));
  if (nbytes != t.nbytes)
    return Status::InvalidArgument(
        fmt::format("tensor '{}': {} bytes given, a {} tensor of shape [{}, {}, {}, {}] "
                    "has {}",
                    t.name, t.nbytes, type_name(t.type), t.ne[0], t.ne[1], t.ne[2], t.ne[3], nbytes));
  if (tensor_index_.count(t.name) != 0) return Status::InvalidArgument(fmt::format("tensor '{}' added twice", t.name));
  tensor_index_.emplace(t.name, tensors_.size());
  tensors_.push_back(t);
  return Status::Ok();
}

uint64_t Writer::alignment() const {
  Result<uint64_t> a = internal::alignment_from_value(find(kKeyAlignment));
  return a.ok() ? a.value() : kDefaultAlignment;
}

Status Writer::validate() const {
  if (version_ != 2 && version_ != 3)
    return Status::InvalidArgument(fmt::format("cannot write GGUF version {} (only 2 and 3)", version_));
  Result<uint64_t> a = internal::alignment_from_value(find(kKeyAlignment));
  if (!a.ok()) return Status::InvalidArgument(a.status().message());
  for (const auto& kv : kvs_) {
    Status s = validate_value(kv.value, 0);
    if (!s.ok()) return s.with_context(fmt::format("key '{}'", kv.key));
  }
  return Status::Ok();
}

std::vector<uint8_t> Writer::header_bytes() const {
  return serialize_header(version_, kvs_, tensors_, 0, tensors_.size(), alignment(), !vocab_only_);
}

Result<std::vector<uint8_t>> Writer::to_bytes() const {
  EM_RETURN_IF_ERROR(validate());
  std::vector<uint8_t> out = header_bytes();
  if (vocab_only_) return out;
  const uint64_t align = alignment();
  for (const auto& t : tensors_) {
    if (t.data == nullptr) return Status::InvalidArgument(fmt::format("tensor '{}' has no data", t.name));
    out.insert(out.end(), t.data, t.data + t.nbytes);
    out.resize(out.size() + (padded(t.nbytes, align) - static_cast<uint64_t>(t.nbytes)), 0);
  }
  return out;
}

Result<std::vector<std::string>> Writer::write(const std::string& path, const SplitOptions& split) const {
  return write_impl(path, split, nullptr);
}

Result<std::vector<std::string>> Writer::write_streaming(const std::string& path, const SplitOptions& split,
                                                         const TensorSource& source) const {
  if (!source) return Status::InvalidArgument(fmt::format("{}: write_streaming without a tensor source", path));
  return write_impl(path, split, &source);
}

Result<std::vector<std::string>> Writer::write_impl(const std::string& path, const SplitOptions& split,
                                                    const TensorSource* source) const {
  Status valid = validate();
  if (!valid.ok()) return valid.with_context(path);
  if (split.max_tensors < 0 || split.max_bytes < 0)
    return Status::InvalidArgument(fmt::format("{}: negative split limit", path));
  if (!vocab_only_ && source == nullptr)
    for (const auto& t : tensors_)
      if (t.data == nullptr) return Status::InvalidArgument(fmt::format("{}: tensor '{}' has no data", path, t.name));
  const uint64_t align = alignment();

  // Shard plan: [begin, end) tensor ranges, gguf-split's rule (see gguf.h).
  std::vector<std::pair<size_t, size_t>> ranges;
  if (!split.enabled()) {
    ranges.emplace_back(0, tensors_.size());
  } else {
    size_t begin = 0;
    uint64_t cur_bytes = 0;
    int64_t cur_n = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const uint64_t nb = padded(tensors_[i].nbytes, align);
      const bool by_count = split.max_tensors > 0 && cur_n >= split.max_tensors;
      const bool by_size = split.max_bytes > 0 && cur_bytes + nb > static_cast<uint64_t>(split.max_bytes);
      if (cur_n > 0 && (by_count || by_size)) {
        ranges.emplace_back(begin, i);
        begin = i;
        cur_bytes = 0;
        cur_n = 0;
      }
      cur_bytes += nb;
      ++cur_n;
    }
    ranges.emplace_back(begin, tensors_.size());
    if (ranges.size() > std::numeric_limits<uint16_t>::max())
      return Status::InvalidArgument(
          fmt::format("{}: {} shards exceed split.count's u16 range; raise the split limits", path, ranges.size()));
    if (tensors_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      return Status::InvalidArgument(fmt::format("{}: too many tensors for split.tensors.count", path));
  }

  // Output names.
  std::vector<std::string> finals;
  if (!split.enabled()) {
    finals.push_back(path);
  } else {
    std::string prefix;
    int idx = 0, cnt = 0;
    if (!parse_split_path(path, &prefix, &idx, &cnt)) {
      prefix = path;
      if (prefix.size() > 5 && prefix.compare(prefix.size() - 5, 5, ".gguf") == 0) prefix.resize(prefix.size() - 5);
    }
    for (size_t i = 0; i < ranges.size(); ++i)
      finals.push_back(split_path(prefix, static_cast<int>(i + 1), static_cast<int>(ranges.size())));
  }

  TempFiles temps;
  std::vector<uint8_t> scratch;
  for (size_t si = 0; si < ranges.size(); ++si) {
    std::vector<KeyValue> shard_kvs;
    const std::vector<KeyValue>* kvs = &kvs_;
    if (split.enabled()) {
      if (si == 0) {
        shard_kvs = kvs_;
      } else if (align != kDefaultAlignment) {
        shard_kvs.push_back(KeyValue{std::string(kKeyAlignment), Value::u32(static_cast<uint32_t>(align))});
      }
      set_kv(&shard_kvs, kKeySplitNo, Value::u16(static_cast<uint16_t>(si)));
      set_kv(&shard_kvs, kKeySplitCount, Value::u16(static_cast<uint16_t>(ranges.size())));
      set_kv(&shard_kvs, kKeySplitTensorsCount, Value::i32(static_cast<int32_t>(tensors_.size())));
      kvs = &shard_kvs;
    }
    const auto [begin, end] = ranges[si];
    const std::string tmp = finals[si] + ".tmp";
    temps.paths.push_back(tmp);
    OutFile out(tmp);
    EM_RETURN_IF_ERROR(out.open());
    const std::vector<uint8_t> header = serialize_header(version_, *kvs, tensors_, begin, end, align, !vocab_only_);
    EM_RETURN_IF_ERROR(out.write(header.data(), header.size()));
    if (!vocab_only_) {
      for (size_t i = begin; i < end; ++i) {
        const WriteTensor& t = tensors_[i];
        const uint8_t* data = t.data;
        if (source != nullptr) {
          scratch.clear();
          Status s = (*source)(i, &scratch);
          if (!s.ok()) return s.with_context(fmt::format("{}: tensor '{}'", finals[si], t.name));
          if (scratch.size() != static_cast<size_t>(t.nbytes))
            return Status::Internal(fmt::format("{}: tensor '{}': source produced {} bytes, expected {}", finals[si],
                                                t.name, scratch.size(), t.nbytes));
          data = scratch.data();
        }
        EM_RETURN_IF_ERROR(out.write(data, static_cast<size_t>(t.nbytes)));
        EM_RETURN_IF_ERROR(out.write_zeros(padded(t.nbytes, align) - static_cast<uint64_t>(t.nbytes)));
      }
    }
    EM_RETURN_IF_ERROR(out.close());
  }
  for (size_t si = 0; si < finals.size(); ++si) {
    if (std::rename(temps.paths[si].c_str(), finals[si].c_str()) != 0)
      return Status::IoError(
          fmt::format("{}: rename from {} failed: {}", finals[si], temps.paths[si], std::strerror(errno)));
  }
  temps.paths.clear();
  return finals;
}

Result<Writer> Writer::from_file(const File& f) {
  Writer w(f.version());
  w.vocab_only_ = f.vocab_only();
  w.kvs_.reserve(f.kvs().size());
  for (const auto& kv : f.kvs()) {
    if (f.n_splits() > 1 && is_split_key(kv.key)) continue;
    w.kvs_.push_back(kv);
  }
  w.tensors_.reserve(f.tensors().size());
  for (const auto& t : f.tensors()) {
    WriteTensor wt;
    wt.name = t.name;
    wt.n_dims = t.n_dims;
    for (int d = 0; d < 4; ++d) wt.ne[d] = t.ne[d];
    wt.type = t.type;
    wt.data = t.data;
    wt.nbytes = t.nbytes;
    Status s = w.add_tensor(wt);
    if (!s.ok()) return s.with_context(f.path());
  }
  return w;
}

}  // namespace expertmesh::gguf
