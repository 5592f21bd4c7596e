// A one-producer one-consumer queue of GenerationEvents: the scheduler's run() thread pushes
// (through the request's EventSink), the HTTP handler thread pops. Closing it tells the
// producer the client is gone (push() returns false, which the Scheduler takes as "free the
// slot"). Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "coordinator/server/scheduler.h"

namespace expertmesh::coordinator::server {

class EventChannel {
 public:
  // False (and the event dropped) once close() was called.
  bool push(const GenerationEvent& ev) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return false;
      q_.push_back(ev);
    }
    cv_.notify_one();
    return true;
  }
  // The next event, or nullopt when none arrived within `timeout`.
  std::optional<GenerationEvent> pop(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !q_.empty(); })) return std::nullopt;
    GenerationEvent ev = std::move(q_.front());
    q_.pop_front();
    return ev;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    q_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> q_;
  bool closed_ = false;
};

}  // namespace expertmesh::coordinator::server
