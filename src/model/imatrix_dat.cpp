#include "model/imatrix_dat.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>

#include <fmt/format.h>

namespace expertmesh {

std::vector<float> ImatrixEntry::mean() const {
  std::vector<float> m(values.size());
  const float n = ncall > 0 ? static_cast<float>(ncall) : 1.0f;
  for (size_t i = 0; i < values.size(); ++i) m[i] = values[i] / n;
  return m;
}

const ImatrixEntry* Imatrix::find(const std::string& name) const {
  for (const auto& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

const ImatrixEntry* Imatrix::find_for_tensor(const std::string& name) const {
  if (const ImatrixEntry* e = find(name)) return e;
  auto replaced = [&](const std::string& from, const std::string& to) -> const ImatrixEntry* {
    size_t p = name.find(from);
    if (p == std::string::npos) return nullptr;
    std::string n = name;
    n.replace(p, from.size(), to);
    return find(n);
  };
  if (name.find("ffn_gate_exps") != std::string::npos || name.find("ffn_up_exps") != std::string::npos) {
    const std::string key = name.find("ffn_gate_exps") != std::string::npos ? "ffn_gate_exps" : "ffn_up_exps";
    if (const ImatrixEntry* e = replaced(key, "ffn_gate_up_exps")) return e;
    if (const ImatrixEntry* e = replaced(key, "ffn_up_exps")) return e;
    return nullptr;
  }
  if (name.find("ffn_gate_up_exps") != std::string::npos) return replaced("ffn_gate_up_exps", "ffn_up_exps");
  if (name.find("ffn_gate.weight") != std::string::npos) return replaced("ffn_gate.weight", "ffn_up.weight");
  if (name.find("attn_v_b") != std::string::npos) return replaced("attn_v_b", "attn_kv_b");
  if (name.find("attn_kv_b") != std::string::npos) return replaced("attn_kv_b", "attn_v_b");
  return nullptr;
}

namespace {

class Cursor {
 public:
  Cursor(const std::vector<char>& b, const std::string& path) : b_(b), path_(path) {}
  bool at_end() const { return off_ >= b_.size(); }
  Status i32(int32_t* v, const char* what) {
    if (b_.size() - off_ < 4) return truncated(what);
    std::memcpy(v, b_.data() + off_, 4);
    off_ += 4;
    return Status::Ok();
  }
  Status bytes(void* dst, size_t n, const char* what) {
    if (b_.size() - off_ < n) return truncated(what);
    std::memcpy(dst, b_.data() + off_, n);
    off_ += n;
    return Status::Ok();
  }
  size_t remaining() const { return b_.size() - off_; }

 private:
  Status truncated(const char* what) const {
    return Status::Corruption(fmt::format("{}: truncated imatrix file while reading {} at byte {}", path_, what, off_));
  }
  const std::vector<char>& b_;
  const std::string& path_;
  size_t off_ = 0;
};

}  // namespace

Result<Imatrix> Imatrix::read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound(fmt::format("{}: cannot open imatrix file", path));
  std::vector<char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Cursor c(buf, path);
  int32_t n = 0;
  EM_RETURN_IF_ERROR(c.i32(&n, "entry count"));
  // Each entry needs at least 12 bytes; reject counts the file cannot hold before allocating.
  if (n < 0 || static_cast<size_t>(n) > c.remaining() / 12)
    return Status::Corruption(fmt::format("{}: invalid imatrix entry count {}", path, n));
  Imatrix im;
  im.entries.reserve(static_cast<size_t>(n));
  std::set<std::string> seen;
  for (int32_t i = 0; i < n; ++i) {
    ImatrixEntry e;
    int32_t len = 0, nval = 0;
    EM_RETURN_IF_ERROR(c.i32(&len, "name length"));
    if (len <= 0 || static_cast<size_t>(len) > c.remaining())
      return Status::Corruption(fmt::format("{}: entry {}: invalid name length {}", path, i, len));
    e.name.resize(static_cast<size_t>(len));
    EM_RETURN_IF_ERROR(c.bytes(e.name.data(), e.name.size(), "name"));
    EM_RETURN_IF_ERROR(c.i32(&e.ncall, "ncall"));
    EM_RETURN_IF_ERROR(c.i32(&nval, "value count"));
    if (nval < 0 || static_cast<size_t>(nval) > c.remaining() / 4)
      return Status::Corruption(fmt::format("{}: entry '{}': invalid value count {}", path, e.name, nval));
    e.values.resize(static_cast<size_t>(nval));
    EM_RETURN_IF_ERROR(c.bytes(e.values.data(), e.values.size() * 4, "values"));
    for (size_t j = 0; j < e.values.size(); ++j)
      if (!std::isfinite(e.values[j]))
        return Status::Corruption(fmt::format("{}: entry '{}': non-finite value at index {}", path, e.name, j));
    if (!seen.insert(e.name).second)
      return Status::Corruption(fmt::format("{}: duplicate entry '{}'", path, e.name));
    im.entries.push_back(std::move(e));
  }
  if (!c.at_end()) {
    int32_t last = 0, dlen = 0;
    EM_RETURN_IF_ERROR(c.i32(&last, "last_call trailer"));
    im.last_call = last;
    if (!c.at_end()) {
      EM_RETURN_IF_ERROR(c.i32(&dlen, "dataset name length"));
      if (dlen < 0 || static_cast<size_t>(dlen) > c.remaining())
        return Status::Corruption(fmt::format("{}: invalid dataset name length {}", path, dlen));
      im.dataset.resize(static_cast<size_t>(dlen));
      EM_RETURN_IF_ERROR(c.bytes(im.dataset.data(), im.dataset.size(), "dataset name"));
    }
  }
  return im;
}

Status Imatrix::write(const std::string& path) const {
  std::string tmp = path + ".tmp";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (!f) return Status::IoError(fmt::format("{}: cannot create imatrix file", tmp));
  auto put_i32 = [&](int32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  put_i32(static_cast<int32_t>(entries.size()));
  for (const auto& e : entries) {
    put_i32(static_cast<int32_t>(e.name.size()));
    f.write(e.name.data(), static_cast<std::streamsize>(e.name.size()));
    put_i32(e.ncall);
    put_i32(static_cast<int32_t>(e.values.size()));
    f.write(reinterpret_cast<const char*>(e.values.data()), static_cast<std::streamsize>(e.values.size() * 4));
  }
  if (last_call) {
    put_i32(*last_call);
    put_i32(static_cast<int32_t>(dataset.size()));
    f.write(dataset.data(), static_cast<std::streamsize>(dataset.size()));
  }
  f.close();
  if (!f) return Status::IoError(fmt::format("{}: write failed", tmp));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::IoError(fmt::format("{}: cannot rename to {}", tmp, path));
  return Status::Ok();
}

}  // namespace expertmesh
