// The engine's thread pool and its working-memory priming (issue 13): every task runs exactly
// once per run, each thread runs its own contiguous share in ascending order (what keeps a
// GEMV's weight stream sequential per thread) while a late thread's share is stolen, and a
// primed heap serves the next buffers without page faults.
#include "worker/thread_pool.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "worker/heap_prime.h"

namespace expertmesh {
namespace {

TEST(ThreadPool, EveryTaskOncePerRunOwnSharesAscendingAndStolenWhenLate) {
  constexpr int kThreads = 3;
  worker::ThreadPool pool(kThreads);
  for (int rep = 0; rep < 300; ++rep) {
    const int64_t n = 1 + (rep * 37) % 500;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::vector<std::vector<int64_t>> order(kThreads);
    pool.run(n, [&](int64_t task, int thread) {
      ASSERT_LT(thread, kThreads);
      hits[size_t(task)].fetch_add(1, std::memory_order_relaxed);
      order[size_t(thread)].push_back(task);  // each thread appends only to its own list
      // Uneven work, and thread 2 late on every tenth run, so shares get stolen.
      if (thread == 2 && rep % 10 == 0 && order[2].size() == 1)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "rep " << rep << " task " << i;
    for (int t = 0; t < kThreads; ++t) {
      // The tasks of thread t's own share that t ran: a prefix of the share, in order.
      const int64_t b = n * t / kThreads, e = n * (t + 1) / kThreads;
      int64_t next = b;
      for (int64_t task : order[size_t(t)]) {
        if (task < b || task >= e) continue;
        ASSERT_EQ(task, next) << "rep " << rep << " thread " << t;
        ++next;
      }
    }
    if (rep % 10 == 0 && n >= 200) {
      // Thread 2 slept in its first task: the others must have taken some of its share.
      const int64_t b = n * 2 / kThreads, e = n;
      int64_t stolen = 0;
      for (int t = 0; t < 2; ++t)
        for (int64_t task : order[size_t(t)]) stolen += task >= b && task < e;
      EXPECT_GT(stolen, 0) << "rep " << rep;
    }
  }
  uint8_t* s = pool.scratch(1, 100);  // scratch is per thread, aligned and kept
  EXPECT_EQ(reinterpret_cast<uintptr_t>(s) % 64, 0u);
  EXPECT_EQ(pool.scratch(1, 50), s);
}

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

TEST(HeapPrime, PrimedHeapServesTheNextBuffersWithoutPageFaults) {
  constexpr size_t kBytes = size_t{96} << 20;
  worker::prime_heap(kBytes);
  // Buffers of a forward's sizes (below the 32 MiB mmap threshold), written in full.
  const long before = minor_faults();
  std::vector<void*> bufs;
  for (size_t done = 0; done + (size_t{12} << 20) <= kBytes / 2; done += size_t{12} << 20) {
    void* p = std::malloc(size_t{12} << 20);
    ASSERT_NE(p, nullptr);
    std::memset(p, 1, size_t{12} << 20);
    __asm__ volatile("" : : "r"(p) : "memory");
    bufs.push_back(p);
  }
  const long faults = minor_faults() - before;
  for (void* p : bufs) std::free(p);
  // Unprimed, the 48 MiB would take 12,288 faults of 4 KiB pages.
  EXPECT_LT(faults, 200) << "a primed heap should already hold these pages";
}

TEST(HeapPrime, EstimateCoversTheMoeBuffersOfABatch) {
  HParams hp;
  hp.n_vocab = 512;
  hp.n_embd = 2048;
  hp.n_head = 32;
  hp.n_head_kv = 4;
  hp.head_dim = hp.head_dim_v = 128;
  hp.n_expert = 32;
  hp.n_expert_used = 8;
  hp.n_ff_exp = 768;
  // At least the per-slot gate, up and act floats and the slots' input and output rows.
  const size_t floor = 4 * size_t(hp.n_expert_used) * (3 * hp.n_ff_exp + 2 * hp.n_embd);
  EXPECT_GE(worker::forward_bytes_per_token(hp), floor);
  hp.n_expert = hp.n_expert_used = 0;
  hp.n_ff = 8192;
  EXPECT_GE(worker::forward_bytes_per_token(hp), 4 * size_t(3 * hp.n_ff));
}

}  // namespace
}  // namespace expertmesh
