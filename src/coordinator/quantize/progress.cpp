#include "coordinator/quantize/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace expertmesh {

std::string format_progress(int done, int total, int64_t bytes_done, int64_t bytes_total, double seconds, int width) {
  const double frac = bytes_total > 0 ? static_cast<double>(bytes_done) / static_cast<double>(bytes_total)
                                      : (total > 0 ? static_cast<double>(done) / total : 1.0);
  const int filled = std::clamp(static_cast<int>(frac * width + 0.5), 0, width);
  const double mbps = seconds > 0 ? static_cast<double>(bytes_done) / 1e6 / seconds : 0.0;
  std::string eta = "--:--";
  if (bytes_done > 0 && seconds > 0) {
    const auto left = static_cast<int64_t>(
        seconds * static_cast<double>(bytes_total - bytes_done) / static_cast<double>(bytes_done) + 0.5);
    eta = left >= 3600 ? fmt::format("{}:{:02d}:{:02d}", left / 3600, left / 60 % 60, left % 60)
                       : fmt::format("{}:{:02d}", left / 60, left % 60);
  }
  return fmt::format("[{}{}] {}/{} tensors  {:.2f}/{:.2f} MiB  {:.1f} MB/s  ETA {}", std::string(filled, '#'),
                     std::string(width - filled, '-'), done, total, bytes_done / 1048576.0, bytes_total / 1048576.0,
                     mbps, eta);
}

QuantizeProgress::QuantizeProgress(const Logger& log, int total, int64_t bytes_total, bool tty)
    : log_(log), total_(total), bytes_total_(bytes_total), tty_(tty && log.enabled(LogLevel::kInfo)) {
  if (tty_) draw();
}

void QuantizeProgress::tensor_done(const std::string& line, int64_t bytes) {
  ++done_;
  bytes_done_ += bytes;
  if (tty_) std::fputs("\r\033[K", stderr);  // the log line replaces the bar, which is redrawn below it
  log_.info("{}", line);
  if (tty_) draw();
}

void QuantizeProgress::finish() {
  if (tty_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
}

void QuantizeProgress::draw() {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fputs(format_progress(done_, total_, bytes_done_, bytes_total_, secs, 30).c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace expertmesh
