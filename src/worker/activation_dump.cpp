#include "worker/activation_dump.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace expertmesh::worker {

Result<std::unique_ptr<ActivationDump>> ActivationDump::create(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError(fmt::format("--dump-activations {}: {}", dir, ec.message()));
  auto d = std::make_unique<ActivationDump>();
  d->dir_ = dir;
  return d;
}

DumpFn ActivationDump::sink() {
  return [this](const std::string& name, int64_t layer, const float* data, int64_t rows, int64_t cols) {
    if (!seen_.insert({name, layer}).second || !error_.ok()) return;
    const std::string file = layer < 0 ? fmt::format("{}-g.f32", name) : fmt::format("{}-{}.f32", name, layer);
    std::ofstream out(dir_ + "/" + file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data), std::streamsize(rows * cols * int64_t(sizeof(float))));
    if (!out) error_ = Status::IoError(fmt::format("{}/{}: write failed", dir_, file));
    index_.push_back({{"name", name}, {"layer", layer}, {"rows", rows}, {"cols", cols}, {"file", file}});
  };
}

Status ActivationDump::finish() {
  EM_RETURN_IF_ERROR(error_);
  std::ofstream out(dir_ + "/index.json");
  out << index_.dump(1) << "\n";
  if (!out) return Status::IoError(fmt::format("{}/index.json: write failed", dir_));
  return Status::Ok();
}

}  // namespace expertmesh::worker
