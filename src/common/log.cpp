#include "common/log.h"

#include <algorithm>
#include <cctype>

namespace expertmesh {

bool parse_log_level(const std::string& s, LogLevel* out) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  if (l == "debug") *out = LogLevel::kDebug;
  else if (l == "info") *out = LogLevel::kInfo;
  else if (l == "warn" || l == "warning") *out = LogLevel::kWarn;
  else if (l == "error") *out = LogLevel::kError;
  else if (l == "quiet") *out = LogLevel::kQuiet;
  else return false;
  return true;
}

Logger::Logger(int rank, int world, std::string host, LogLevel level)
    : prefix_(fmt::format("[rank {}/{}]", rank, host)), level_(level) {
  (void)world;
}

void Logger::write(LogLevel l, const std::string& msg) const {
  static constexpr char kTag[] = {'D', 'I', 'W', 'E', 'Q'};
  std::string line = fmt::format("{} {} {}\n", prefix_, kTag[static_cast<int>(l)], msg);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace expertmesh
