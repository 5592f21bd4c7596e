#include "tests/common/golden.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <regex>

namespace expertmesh::testing {
namespace fs = std::filesystem;

fs::path golden_dir() {
  std::vector<fs::path> candidates;
  if (const char* s = std::getenv("EXPERTMESH_SHARED_DIR")) candidates.emplace_back(fs::path(s) / "golden");
  if (const char* s = std::getenv("EXPERTMESH_SOURCE_DIR")) candidates.emplace_back(fs::path(s) / ".." / "shared" / "golden");
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) return fs::weakly_canonical(c, ec);
  }
  return {};
}

bool golden_required() {
  const char* s = std::getenv("EXPERTMESH_REQUIRE_GOLDEN");
  return s && std::string(s) == "1";
}

std::vector<fs::path> golden_files(const std::string& sub, const std::string& pattern) {
  std::vector<fs::path> out;
  fs::path dir = golden_dir();
  if (dir.empty()) return out;
  std::regex re(pattern);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir / sub, ec))
    if (e.is_regular_file() && std::regex_match(e.path().filename().string(), re)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

fs::path expertmesh_binary() {
  if (const char* s = std::getenv("EXPERTMESH_BIN")) return fs::path(s) / "expertmesh";
  return fs::path("expertmesh");
}

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("expertmesh-test-" + tag + "-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(p, ec);
  fs::create_directories(p);
  return p;
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  if (output) output->clear();
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    if (output) output->append(buf.data(), n);
  int st = ::pclose(p);
  if (st == -1) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace expertmesh::testing
