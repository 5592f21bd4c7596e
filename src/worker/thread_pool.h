// The engine's fork-join thread pool (no globals). run(n_tasks, fn) calls fn(task, thread) for
// every task in [0, n_tasks) across the pool's threads plus the caller (thread 0), and returns
// when all are done. Thread t starts on the t-th contiguous share of the tasks and runs it in
// ascending order; a thread whose share is done steals from the back of another's. So a
// matmul's row tiles stream through memory in address order per thread (dealing tiles round
// robin broke each thread's read stream every tile: 10-20% of the GEMV rate from DRAM), and a
// slow or late thread still gets balanced. Which thread runs a task varies; callers make
// results independent of that (tasks write disjoint outputs).
//
// Hot-path design (issue 13): no std::function and no allocation per run (the callable is
// passed by pointer and called through a plain function pointer); workers spin on a generation
// counter for a short while after each run (a forward issues hundreds of runs per token) and
// only then sleep on it (futex via std::atomic::wait), so an idle engine costs no CPU.
// Not reentrant: fn must not call run(). One caller thread at a time.
//
// Per-thread scratch: scratch(thread, bytes) returns a 64-byte aligned buffer private to that
// thread, grown (never shrunk) on demand, so kernels reuse it across runs.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

namespace expertmesh::worker {

class ThreadPool {
 public:
  // n_threads >= 1 (the caller counts as one). `pin`: when it lists at least n_threads CPU
  // sets, worker thread t (t >= 1) is pinned to pin[t] (the caller, thread 0, is not touched:
  // its affinity is process-wide state that is not the pool's; it takes the core left over).
  explicit ThreadPool(int n_threads, const std::vector<std::vector<int>>& pin = {});
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  template <typename F>
  void run(int64_t n_tasks, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    run_impl(
        n_tasks, [](void* ctx, int64_t task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

  // A buffer of at least `bytes` for `thread` (< size()), valid until the next scratch() call
  // of that thread with a larger size.
  uint8_t* scratch(int thread, size_t bytes);

 private:
  using TaskFn = void (*)(void* ctx, int64_t task, int thread);
  void run_impl(int64_t n_tasks, TaskFn fn, void* ctx);
  void worker_loop(int thread);
  void drain(int thread);
  bool claim_own(int thread, int64_t& task);
  bool steal(int thread, int64_t& task);

  struct Scratch {
    std::unique_ptr<uint8_t[]> raw;
    uint8_t* aligned = nullptr;
    size_t size = 0;
  };

  int n_threads_;
  std::vector<std::thread> threads_;
  std::vector<Scratch> scratch_;
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_tasks_ = 0;
  alignas(64) std::atomic<int64_t> next_{0};  // the shared counter when n_tasks >= 2^32
  // Per thread, its unclaimed tasks [begin, end) as begin | end << 32; the owner takes from
  // begin, thieves from end, both by compare-exchange (one cache line each).
  struct alignas(64) Range {
    std::atomic<uint64_t> v{0};
  };
  std::unique_ptr<Range[]> ranges_;
  alignas(64) std::atomic<uint64_t> generation_{0};
  alignas(64) std::atomic<int> done_{0};
  // Threads sleeping in generation_.wait() / the caller sleeping in done_.wait(): a notify (a
  // futex syscall) is only issued when somebody sleeps. Both sides use seq_cst (store the
  // value, then read the other's flag), so either the sleeper sees the new value or the
  // notifier sees the sleeper.
  std::atomic<int> sleepers_{0};
  std::atomic<int> caller_sleeping_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace expertmesh::worker
