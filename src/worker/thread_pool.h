// A small fork-join thread pool owned by the engine (no globals). run(n_tasks, fn) calls
// fn(task, thread) for every task in [0, n_tasks) across the pool's threads plus the caller,
// and returns when all are done. Tasks are claimed from an atomic counter. Not reentrant:
// fn must not call run().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace expertmesh::worker {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1 (the caller counts as one)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  void run(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void worker_loop(int thread);
  void drain(int thread);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int64_t generation_ = 0;
  int active_ = 0;
  bool stop_ = false;
};

}  // namespace expertmesh::worker
