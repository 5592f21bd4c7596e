#include "coordinator/server/auth.h"

#include <fstream>

namespace expertmesh::coordinator::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Walk the longer length; bytes past the end of the shorter string compare against 0 and the
  // length difference is folded in, so neither the length nor the first mismatch ends the loop.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned diff = static_cast<unsigned>(a.size() ^ b.size()) | static_cast<unsigned>((a.size() ^ b.size()) >> 32);
  volatile unsigned acc = diff;
  for (size_t i = 0; i < n; ++i) {
    const unsigned ca = i < a.size() ? static_cast<unsigned char>(a[i]) : 0u;
    const unsigned cb = i < b.size() ? static_cast<unsigned char>(b[i]) : 0u;
    acc = acc | (ca ^ cb);
  }
  return acc == 0;
}

bool api_key_accepted(const std::vector<std::string>& keys, std::string_view authorization,
                      std::string_view x_api_key) {
  if (keys.empty()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  const bool has_bearer = authorization.size() > kBearer.size() && authorization.substr(0, kBearer.size()) == kBearer;
  const std::string_view bearer = has_bearer ? authorization.substr(kBearer.size()) : std::string_view();
  bool ok = false;
  for (const std::string& k : keys) {
    // Both candidates are compared against every key; `|` (not `||`) keeps the work constant.
    const bool m1 = has_bearer && constant_time_equal(bearer, k);
    const bool m2 = !x_api_key.empty() && constant_time_equal(x_api_key, k);
    ok = ok | m1 | m2;
  }
  return ok;
}

Result<std::vector<std::string>> read_api_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("--api-key-file: cannot open " + path);
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    const size_t e = line.find_last_not_of(" \t\r\n");
    keys.push_back(line.substr(b, e - b + 1));
  }
  if (in.bad()) return Status::IoError("--api-key-file: error reading " + path);
  if (keys.empty()) return Status::InvalidArgument("--api-key-file: " + path + " holds no key");
  return keys;
}

}  // namespace expertmesh::coordinator::server
