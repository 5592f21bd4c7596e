#include "worker/heap_prime.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace expertmesh::worker {
namespace {

constexpr size_t kChunk = size_t{16} << 20;  // below the 32 MiB mmap threshold: from the arena
constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kMaxPrime = size_t{4} << 30;

}  // namespace

size_t forward_bytes_per_token(const HParams& hp) {
  const int64_t hd_v = hp.head_dim_v > 0 ? hp.head_dim_v : hp.head_dim;
  // Residual stream, norms, attention input/output and the dense FFN (gate, up, act).
  int64_t floats =
      6 * hp.n_embd + hp.n_head * (hp.head_dim + hd_v) + 2 * hp.n_head_kv * (hp.head_dim + hd_v) + 3 * hp.n_ff;
  if (hp.is_moe()) {
    // Router logits; per slot the gathered input, gate, up, act and the expert's output row.
    floats += hp.n_expert + hp.n_expert_used * (2 * hp.n_embd + 3 * hp.n_ff_exp);
  }
  floats += hp.n_vocab;  // logits of every row (perplexity, imatrix)
  // Quantized activation copies (about a byte per value) of the matmul inputs.
  const int64_t bytes = 4 * floats + (hp.n_expert_used + 3) * hp.n_embd + hp.n_expert_used * hp.n_ff_exp;
  return size_t(std::max<int64_t>(bytes, 0)) * 2;
}

void keep_freed_memory(size_t trim_at_least) {
  mallopt(M_MMAP_THRESHOLD, int(size_t{32} << 20));
  const size_t trim = std::min<size_t>(std::max<size_t>(size_t{1} << 30, trim_at_least), (size_t{1} << 31) - 1);
  mallopt(M_TRIM_THRESHOLD, int(trim));
}

void prime_heap(size_t bytes) {
  bytes = std::min(bytes, kMaxPrime);
  keep_freed_memory(2 * bytes);
  std::vector<void*> blocks;
  blocks.reserve(bytes / kChunk + 1);
  for (size_t done = 0; done < bytes; done += kChunk) {
    void* p = std::malloc(kChunk);
    if (p == nullptr) break;
    blocks.push_back(p);
  }
  // One madvise over the span of the chunks (adjacent in the arena): per chunk, the partial huge
  // pages at its ends would fault in 4 KiB pages. The span may take in a little of the heap's
  // memory around it, where the flag is harmless.
  if (!blocks.empty()) {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (void* p : blocks) {
      lo = std::min(lo, reinterpret_cast<uintptr_t>(p));
      hi = std::max(hi, reinterpret_cast<uintptr_t>(p) + kChunk);
    }
    lo &= ~(kHuge - 1);
    hi = (hi + kHuge - 1) & ~(kHuge - 1);
    if (hi - lo <= 2 * blocks.size() * kChunk) (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
  for (void* p : blocks) {
    std::memset(p, 0, kChunk);
    // Keep the compiler from treating the memset of memory freed below as dead.
    __asm__ volatile("" : : "r"(p) : "memory");
  }
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) std::free(*it);
}

bool populate_mapping(const void* addr, size_t bytes) {
#ifdef MADV_POPULATE_READ
  if (bytes == 0) return true;
  const auto page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(addr) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(addr) + bytes;
  return ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0;
#else
  (void)addr;
  (void)bytes;
  return false;
#endif
}

}  // namespace expertmesh::worker
