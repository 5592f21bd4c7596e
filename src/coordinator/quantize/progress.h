// Progress of a quantize run on one rank. On a terminal (stderr is a TTY) a one-line bar is
// redrawn in place — tensor i/N, input bytes done, MB/s, ETA — with the per-tensor log lines
// printed above it; otherwise each finished tensor is one plain log line (no carriage returns),
// suitable for files and batch logs. Not thread-safe: called from the rank's main thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/log.h"

namespace expertmesh {

// The bar's text for `done` of `total` tensors and `bytes_done` of `bytes_total` input bytes after
// `seconds`: "[#####-----] 12/39 tensors  3.20/10.66 MiB  45.1 MB/s  ETA 0:07". Pure.
std::string format_progress(int done, int total, int64_t bytes_done, int64_t bytes_total, double seconds, int width);

class QuantizeProgress {
 public:
  // `tty`: draw the bar (callers pass isatty(stderr) unless told otherwise).
  QuantizeProgress(const Logger& log, int total, int64_t bytes_total, bool tty);
  // One tensor finished (or skipped on resume): logs `line` and advances by `bytes` input bytes.
  void tensor_done(const std::string& line, int64_t bytes);
  // Clears the bar (before the summary lines).
  void finish();

 private:
  void draw();
  const Logger& log_;
  int total_;
  int64_t bytes_total_;
  bool tty_;
  int done_ = 0;
  int64_t bytes_done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace expertmesh
