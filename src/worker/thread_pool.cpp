#include "worker/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace expertmesh::worker {
namespace {

// About 50-100 µs of polling on current x86 parts: longer than the gap between two ops of one
// forward, far shorter than the gap between two tokens of an idle server.
constexpr int kSpinIterations = 20000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads, const std::vector<std::vector<int>>& pin)
    : n_threads_(n_threads < 1 ? 1 : n_threads),
      scratch_(size_t(n_threads_)),
      ranges_(std::make_unique<Range[]>(size_t(n_threads_))) {
  for (int t = 1; t < n_threads_; ++t) {
    threads_.emplace_back([this, t] { worker_loop(t); });
    if (int(pin.size()) >= n_threads_) {
      cpu_set_t set;
      CPU_ZERO(&set);
      for (int c : pin[size_t(t)])
        if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
      // Best effort: a refused affinity (a container's cpuset) leaves the thread unpinned.
      (void)pthread_setaffinity_np(threads_.back().native_handle(), sizeof(set), &set);
    }
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

uint8_t* ThreadPool::scratch(int thread, size_t bytes) {
  Scratch& s = scratch_[size_t(thread)];
  if (s.size < bytes) {
    s.raw = std::make_unique<uint8_t[]>(bytes + 64);
    const auto p = reinterpret_cast<uintptr_t>(s.raw.get());
    s.aligned = reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t{63});
    s.size = bytes;
  }
  return s.aligned;
}

namespace {
constexpr int64_t kRangeLimit = int64_t{1} << 32;
inline uint64_t pack(uint64_t b, uint64_t e) { return b | e << 32; }
}  // namespace

bool ThreadPool::claim_own(int thread, int64_t& task) {
  std::atomic<uint64_t>& r = ranges_[size_t(thread)].v;
  uint64_t v = r.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t b = v & 0xFFFFFFFFu, e = v >> 32;
    if (b >= e) return false;
    if (r.compare_exchange_weak(v, pack(b + 1, e), std::memory_order_relaxed)) {
      task = int64_t(b);
      return true;
    }
  }
}

bool ThreadPool::steal(int thread, int64_t& task) {
  for (int k = 1; k < n_threads_; ++k) {
    std::atomic<uint64_t>& r = ranges_[size_t((thread + k) % n_threads_)].v;
    uint64_t v = r.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t b = v & 0xFFFFFFFFu, e = v >> 32;
      if (b >= e) break;
      if (r.compare_exchange_weak(v, pack(b, e - 1), std::memory_order_relaxed)) {
        task = int64_t(e - 1);
        return true;
      }
    }
  }
  return false;
}

void ThreadPool::drain(int thread) {
  if (n_tasks_ >= kRangeLimit) {
    for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < n_tasks_;
         i = next_.fetch_add(1, std::memory_order_relaxed))
      fn_(ctx_, i, thread);
    return;
  }
  int64_t task = 0;
  while (claim_own(thread, task)) fn_(ctx_, task, thread);
  while (steal(thread, task)) fn_(ctx_, task, thread);
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpinIterations; ++i) {
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    while (g == seen) {
      sleepers_.fetch_add(1);
      generation_.wait(seen);
      sleepers_.fetch_sub(1);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    drain(thread);
    if (done_.fetch_add(1) + 1 == n_threads_ - 1 && caller_sleeping_.load()) done_.notify_one();
  }
}

void ThreadPool::run_impl(int64_t n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(ctx, i, 0);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  done_.store(0, std::memory_order_relaxed);
  next_.store(0, std::memory_order_relaxed);
  if (n_tasks < kRangeLimit) {
    for (int t = 0; t < n_threads_; ++t) {
      const auto b = uint64_t(n_tasks * t / n_threads_), e = uint64_t(n_tasks * (t + 1) / n_threads_);
      ranges_[size_t(t)].v.store(pack(b, e), std::memory_order_relaxed);
    }
  }
  generation_.fetch_add(1);  // publishes fn_/ctx_/n_tasks_
  if (sleepers_.load()) generation_.notify_all();
  drain(0);
  int d = done_.load(std::memory_order_acquire);
  for (int i = 0; d != n_threads_ - 1 && i < kSpinIterations; ++i) {
    cpu_relax();
    d = done_.load(std::memory_order_acquire);
  }
  while (d != n_threads_ - 1) {
    caller_sleeping_.store(1);
    done_.wait(d);
    caller_sleeping_.store(0);
    d = done_.load(std::memory_order_acquire);
  }
}

}  // namespace expertmesh::worker
