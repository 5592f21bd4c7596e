#include "coordinator/quantize/manifest.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/sha256.h"

namespace expertmesh {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMagic = "expertmesh-quantize-manifest 1";

std::string manifest_stem(const OutputLayout& layout) {
  return fs::path(layout.files[0].path).filename().string() + ".partial.manifest.";
}

fs::path manifest_dir(const OutputLayout& layout) {
  fs::path p = fs::path(layout.files[0].path).parent_path();
  return p.empty() ? fs::path(".") : p;
}

std::vector<fs::path> manifest_files(const OutputLayout& layout) {
  std::vector<fs::path> out;
  std::error_code ec;
  const std::string stem = manifest_stem(layout);
  for (const auto& e : fs::directory_iterator(manifest_dir(layout), ec)) {
    const std::string n = e.path().filename().string();
    if (n.compare(0, stem.size(), stem) == 0) out.push_back(e.path());
  }
  return out;
}

Status io_error(const std::string& path, const char* what) {
  return Status::IoError(fmt::format("{}: {} failed: {}", path, what, std::strerror(errno)));
}

Status pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return io_error(path, "write");
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

bool read_first_line(const fs::path& p, std::string* line) {
  std::ifstream f(p);
  return static_cast<bool>(std::getline(f, *line));
}

}  // namespace

std::string partial_path(const std::string& final_path) { return final_path + ".partial"; }

Result<std::string> layout_fingerprint(const OutputLayout& layout, const std::vector<std::string>& input_paths) {
  Sha256 h;
  for (const auto& f : layout.files) {
    h.update(f.path.data(), f.path.size());
    h.update(f.header.data(), f.header.size());
    h.update(&f.size, sizeof(f.size));
  }
  for (const auto& p : input_paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return io_error(p, "stat");
    const int64_t facts[3] = {static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec),
                              static_cast<int64_t>(st.st_mtim.tv_nsec)};
    h.update(p.data(), p.size());
    h.update(facts, sizeof(facts));
  }
  return h.hex_digest();
}

Result<bool> prepare_partial_outputs(const OutputLayout& layout, const std::string& fingerprint) {
  const std::string want = fmt::format("{} {}", kMagic, fingerprint);
  // Like the peer's ensure_output_directory: the output folder is created when missing.
  for (const auto& f : layout.files) {
    std::error_code ec;
    const fs::path parent = fs::path(f.path).parent_path();
    if (!parent.empty() && !fs::create_directories(parent, ec) && ec)
      return Status::IoError(fmt::format("{}: cannot create the folder: {}", parent.string(), ec.message()));
  }
  bool resume = false;
  for (const auto& m : manifest_files(layout)) {
    std::string line;
    if (read_first_line(m, &line) && line == want) resume = true;
  }
  for (const auto& f : layout.files) {
    std::error_code ec;
    const auto sz = fs::file_size(partial_path(f.path), ec);
    if (ec || sz != f.size) resume = false;
  }
  if (!resume) {
    for (const auto& m : manifest_files(layout)) fs::remove(m);
  }
  for (const auto& f : layout.files) {
    const std::string p = partial_path(f.path);
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | (resume ? 0 : O_TRUNC), 0644);
    if (fd < 0) return io_error(p, "open");
    Status s = Status::Ok();
    // A fresh file is sized first: the gaps read as zeros, which is the padding between tensors.
    if (!resume && ::ftruncate(fd, static_cast<off_t>(f.size)) != 0) s = io_error(p, "ftruncate");
    if (s.ok()) s = pwrite_all(fd, f.header.data(), f.header.size(), 0, p);
    ::close(fd);
    EM_RETURN_IF_ERROR(s);
  }
  return resume;
}

std::map<size_t, ManifestEntry> read_manifests(const OutputLayout& layout, const std::string& fingerprint) {
  std::map<size_t, ManifestEntry> out;
  const std::string want = fmt::format("{} {}", kMagic, fingerprint);
  for (const auto& m : manifest_files(layout)) {
    std::ifstream f(m);
    std::string line;
    if (!std::getline(f, line) || line != want) continue;
    while (std::getline(f, line)) {
      std::istringstream ls(line);
      ManifestEntry e;
      if (!(ls >> e.index >> e.slot.file >> e.slot.offset >> e.slot.nbytes >> e.sha256)) continue;
      std::getline(ls >> std::ws, e.name);
      if (e.sha256.size() != 64 || e.name.empty() || e.index >= layout.slots.size()) continue;
      out[e.index] = e;
    }
  }
  return out;
}

Result<PartialWriter> PartialWriter::open(const OutputLayout& layout, const std::string& fingerprint, int rank) {
  PartialWriter w(&layout);
  for (const auto& f : layout.files) {
    const std::string p = partial_path(f.path);
    const int fd = ::open(p.c_str(), O_RDWR);
    if (fd < 0) return io_error(p, "open");
    w.fds_.push_back(fd);
  }
  const std::string mp = (manifest_dir(layout) / (manifest_stem(layout) + std::to_string(rank))).string();
  w.manifest_fd_ = ::open(mp.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (w.manifest_fd_ < 0) return io_error(mp, "open");
  struct stat st {};
  if (::fstat(w.manifest_fd_, &st) != 0) return io_error(mp, "stat");
  std::string first;
  if (st.st_size > 0 && (!read_first_line(mp, &first) || first != fmt::format("{} {}", kMagic, fingerprint))) {
    // A manifest of another plan (prepare removes those; this is a stale file from a rank that
    // was not running then): start it over.
    if (::ftruncate(w.manifest_fd_, 0) != 0) return io_error(mp, "ftruncate");
    st.st_size = 0;
  }
  if (st.st_size == 0) {
    const std::string head = fmt::format("{} {}\n", kMagic, fingerprint);
    if (::write(w.manifest_fd_, head.data(), head.size()) != static_cast<ssize_t>(head.size()))
      return io_error(mp, "write");
  }
  return w;
}

PartialWriter::PartialWriter(PartialWriter&& o) noexcept
    : layout_(o.layout_), fds_(std::move(o.fds_)), manifest_fd_(o.manifest_fd_) {
  o.fds_.clear();
  o.manifest_fd_ = -1;
}

PartialWriter::~PartialWriter() {
  for (int fd : fds_) ::close(fd);
  if (manifest_fd_ >= 0) ::close(manifest_fd_);
}

Status PartialWriter::write_tensor(size_t index, const std::string& name, const std::vector<uint8_t>& bytes) {
  const TensorSlot& s = layout_->slots[index];
  const std::string p = partial_path(layout_->files[static_cast<size_t>(s.file)].path);
  if (static_cast<int64_t>(bytes.size()) != s.nbytes)
    return Status::Internal(
        fmt::format("{}: tensor '{}' has {} bytes, the layout expects {}", p, name, bytes.size(), s.nbytes));
  EM_RETURN_IF_ERROR(pwrite_all(fds_[static_cast<size_t>(s.file)], bytes.data(), bytes.size(), s.offset, p));
  const std::string line = fmt::format("{} {} {} {} {} {}\n", index, s.file, s.offset, s.nbytes,
                                       sha256_hex(bytes.data(), bytes.size()), name);
  if (::write(manifest_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return io_error(p + " manifest", "write");
  return Status::Ok();
}

Result<bool> PartialWriter::verify(const ManifestEntry& e, std::vector<uint8_t>* scratch) const {
  const TensorSlot& s = layout_->slots[e.index];
  if (e.slot.file != s.file || e.slot.offset != s.offset || e.slot.nbytes != s.nbytes) return false;
  scratch->resize(static_cast<size_t>(s.nbytes));
  size_t done = 0;
  const int fd = fds_[static_cast<size_t>(s.file)];
  while (done < scratch->size()) {
    const ssize_t r = ::pread(fd, scratch->data() + done, scratch->size() - done, static_cast<off_t>(s.offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return sha256_hex(scratch->data(), scratch->size()) == e.sha256;
}

Status finalize_outputs(const OutputLayout& layout) {
  for (const auto& f : layout.files) {
    const std::string p = partial_path(f.path);
    const int fd = ::open(p.c_str(), O_RDONLY);
    if (fd < 0) return io_error(p, "open");
    const int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) return io_error(p, "fsync");
  }
  for (const auto& f : layout.files)
    if (std::rename(partial_path(f.path).c_str(), f.path.c_str()) != 0) return io_error(f.path, "rename from .partial");
  for (const auto& m : manifest_files(layout)) fs::remove(m);
  return Status::Ok();
}

}  // namespace expertmesh
