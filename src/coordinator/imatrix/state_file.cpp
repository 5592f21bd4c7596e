#include "coordinator/imatrix/state_file.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace expertmesh::coordinator::imatrix {

namespace {

constexpr char kMagic[8] = {'E', 'M', 'I', 'M', 'A', 'T', 'S', 'T'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kMaxElements = int64_t(1) << 34;

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    const size_t o = buf_.size();
    buf_.resize(o + sizeof(T));
    std::memcpy(buf_.data() + o, &v, sizeof(T));
  }
  template <typename T>
  void put_array(const std::vector<T>& v) {
    const size_t o = buf_.size();
    buf_.resize(o + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(buf_.data() + o, v.data(), v.size() * sizeof(T));
  }
  void put_str(const std::string& s) {
    put(int32_t(s.size()));
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  const std::vector<char>& bytes() const { return buf_; }

 private:
  std::vector<char> buf_;
};

class Reader {
 public:
  Reader(std::string path, std::vector<char> data) : path_(std::move(path)), d_(std::move(data)) {}
  template <typename T>
  Status get(T* v, const char* what) {
    if (d_.size() - o_ < sizeof(T)) return truncated(what);
    std::memcpy(v, d_.data() + o_, sizeof(T));
    o_ += sizeof(T);
    return Status::Ok();
  }
  template <typename T>
  Status get_array(std::vector<T>* v, int64_t n, const char* what) {
    if (n < 0 || n > kMaxElements || uint64_t(d_.size() - o_) < uint64_t(n) * sizeof(T)) return truncated(what);
    v->resize(size_t(n));
    if (n > 0) std::memcpy(v->data(), d_.data() + o_, size_t(n) * sizeof(T));
    o_ += size_t(n) * sizeof(T);
    return Status::Ok();
  }
  Status get_str(std::string* s, const char* what) {
    int32_t n = 0;
    EM_RETURN_IF_ERROR(get(&n, what));
    if (n < 0 || size_t(n) > d_.size() - o_) return truncated(what);
    s->assign(d_.data() + o_, size_t(n));
    o_ += size_t(n);
    return Status::Ok();
  }
  Status truncated(const char* what) const {
    return Status::Corruption(fmt::format("{}: truncated or malformed imatrix state at {} (byte {})", path_, what, o_));
  }
  bool at_end() const { return o_ == d_.size(); }

 private:
  std::string path_;
  std::vector<char> d_;
  size_t o_ = 0;
};

}  // namespace

std::string state_path(const std::string& dat_path) { return dat_path + ".state"; }

Status write_state(const std::string& path, const ImatrixState& s) {
  Writer w;
  for (char c : kMagic) w.put(c);
  w.put(kVersion);
  for (int64_t v : {s.first_chunk, s.chunks_done, s.bad_chunks, s.n_ctx, s.n_batch, s.n_ubatch}) w.put(v);
  w.put_str(s.text_file);
  w.put(s.ppl_count);
  w.put(s.nll);
  w.put(s.nll2);
  w.put(s.last_call);
  w.put(int64_t(s.counts.size()));
  for (const auto& [name, c] : s.counts) {
    w.put_str(name);
    w.put(int64_t(c.size()));
    w.put_array(c);
  }
  w.put(int64_t(s.unstored.size()));
  for (const auto& [name, e] : s.unstored) {
    w.put_str(name);
    w.put(e.n_cols);
    w.put(e.n_seg);
    w.put(e.ncall);
    w.put_array(e.sums);
    w.put_array(e.counts);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return Status::IoError(fmt::format("{}: cannot create imatrix state file", tmp));
    f.write(w.bytes().data(), std::streamsize(w.bytes().size()));
    if (!f) return Status::IoError(fmt::format("{}: write failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IoError(fmt::format("{}: cannot rename to {}: {}", tmp, path, ec.message()));
  return Status::Ok();
}

Result<ImatrixState> read_state(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound(fmt::format("{}: cannot open imatrix state file", path));
  Reader r(path, std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()));
  char magic[8];
  for (char& c : magic) EM_RETURN_IF_ERROR(r.get(&c, "magic"));
  uint32_t version = 0;
  EM_RETURN_IF_ERROR(r.get(&version, "version"));
  if (std::memcmp(magic, kMagic, 8) != 0 || version != kVersion)
    return Status::Corruption(fmt::format("{}: not an expertmesh imatrix state file (version 1)", path));
  ImatrixState s;
  for (int64_t* v : {&s.first_chunk, &s.chunks_done, &s.bad_chunks, &s.n_ctx, &s.n_batch, &s.n_ubatch})
    EM_RETURN_IF_ERROR(r.get(v, "header"));
  EM_RETURN_IF_ERROR(r.get_str(&s.text_file, "text file name"));
  EM_RETURN_IF_ERROR(r.get(&s.ppl_count, "ppl count"));
  EM_RETURN_IF_ERROR(r.get(&s.nll, "nll"));
  EM_RETURN_IF_ERROR(r.get(&s.nll2, "nll2"));
  EM_RETURN_IF_ERROR(r.get(&s.last_call, "last_call"));
  int64_t n = 0;
  EM_RETURN_IF_ERROR(r.get(&n, "entry count"));
  for (int64_t i = 0; i < n; ++i) {
    std::string name;
    int64_t n_seg = 0;
    std::vector<int64_t> c;
    EM_RETURN_IF_ERROR(r.get_str(&name, "entry name"));
    EM_RETURN_IF_ERROR(r.get(&n_seg, "segment count"));
    EM_RETURN_IF_ERROR(r.get_array(&c, n_seg, "segment counts"));
    s.counts.emplace(std::move(name), std::move(c));
  }
  EM_RETURN_IF_ERROR(r.get(&n, "unstored entry count"));
  for (int64_t i = 0; i < n; ++i) {
    std::string name;
    StatsEntry e;
    EM_RETURN_IF_ERROR(r.get_str(&name, "entry name"));
    EM_RETURN_IF_ERROR(r.get(&e.n_cols, "n_cols"));
    EM_RETURN_IF_ERROR(r.get(&e.n_seg, "n_seg"));
    EM_RETURN_IF_ERROR(r.get(&e.ncall, "ncall"));
    if (e.n_cols <= 0 || e.n_seg <= 0 || e.n_cols > kMaxElements / e.n_seg) return r.truncated("entry shape");
    EM_RETURN_IF_ERROR(r.get_array(&e.sums, e.n_cols * e.n_seg, "sums"));
    EM_RETURN_IF_ERROR(r.get_array(&e.counts, e.n_cols * e.n_seg, "counts"));
    s.unstored.emplace(std::move(name), std::move(e));
  }
  if (!r.at_end()) return r.truncated("end (trailing bytes)");
  return s;
}

Status merge_unstored(const ImatrixState& s, ImatrixStats& stats, const std::string& path) {
  auto& entries = stats.mutable_entries();
  for (const auto& [name, in] : s.unstored) {
    auto it = entries.find(name);
    if (it == entries.end()) {
      StatsEntry e = in;
      e.last_ubatch = e.last_chunk = 0;
      entries.emplace(name, std::move(e));
      continue;
    }
    StatsEntry& e = it->second;
    if (e.sums.size() != in.sums.size())
      return Status::InvalidArgument(fmt::format("{}: entry '{}' has {} values, but {} were loaded before", path, name,
                                                 in.sums.size(), e.sums.size()));
    if (!e.shape_known) {
      e.n_cols = in.n_cols;
      e.n_seg = in.n_seg;
      e.shape_known = true;
    }
    for (size_t i = 0; i < e.sums.size(); ++i) {
      e.sums[i] += in.sums[i];
      e.counts[i] += in.counts[i];
    }
    e.ncall += in.ncall;
  }
  return Status::Ok();
}

}  // namespace expertmesh::coordinator::imatrix
