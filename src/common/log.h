// Leveled logger. One line per event, prefixed "[rank r/host] LEVEL", so logs of many ranks can be
// merged with sort/grep. The Logger is owned by the RankContext (no global logger state); free
// functions below take it explicitly.
//
// Thread-safety: Logger::write is safe to call from any thread: each line is formatted first and
// written with one fwrite, which stdio performs under the stream's own lock.
#pragma once

#include <cstdio>
#include <string>

#include <fmt/format.h>

namespace expertmesh {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kQuiet = 4 };

// Parses "debug|info|warn|error|quiet" (case-insensitive). Returns false on an unknown name.
bool parse_log_level(const std::string& s, LogLevel* out);

class Logger {
 public:
  Logger() = default;
  Logger(int rank, int world, std::string host, LogLevel level);

  void set_level(LogLevel l) { level_ = l; }
  LogLevel level() const { return level_; }
  bool enabled(LogLevel l) const { return l >= level_; }
  // Writes one line to stderr: "[rank 0/host] I message".
  void write(LogLevel l, const std::string& msg) const;

  template <typename... Args>
  void debug(fmt::format_string<Args...> f, Args&&... a) const { log(LogLevel::kDebug, f, std::forward<Args>(a)...); }
  template <typename... Args>
  void info(fmt::format_string<Args...> f, Args&&... a) const { log(LogLevel::kInfo, f, std::forward<Args>(a)...); }
  template <typename... Args>
  void warn(fmt::format_string<Args...> f, Args&&... a) const { log(LogLevel::kWarn, f, std::forward<Args>(a)...); }
  template <typename... Args>
  void error(fmt::format_string<Args...> f, Args&&... a) const { log(LogLevel::kError, f, std::forward<Args>(a)...); }

 private:
  template <typename... Args>
  void log(LogLevel l, fmt::format_string<Args...> f, Args&&... a) const {
    if (enabled(l)) write(l, fmt::format(f, std::forward<Args>(a)...));
  }
  std::string prefix_ = "[rank 0/localhost]";
  LogLevel level_ = LogLevel::kInfo;
};

}  // namespace expertmesh
