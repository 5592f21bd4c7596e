// Keeps a forward's working memory resident (issue 13).
//
// A forward allocates its activation buffers (Buf, gathered inputs, quantized copies) per op from
// malloc. The first batch of a given size touches fresh pages, and on a virtual machine each 4 KiB
// page fault costs 10-20 µs: the first 512-token prompt of the bench model took 1.4 s against
// 0.46 s for the next one (71,000 faults, most of them in the memsets of zero-initialized
// buffers). prime_heap grows the calling thread's malloc arena by about the bytes the batch will
// use, asks for transparent huge pages over that span (MADV_HUGEPAGE: 512 times fewer faults
// where THP is "madvise" or "always"), touches it and frees it again; with the trim threshold
// raised, glibc keeps the freed top of the heap, so the forward's buffers reuse resident pages.
//
// forward_bytes_per_token is a deliberately generous estimate (about twice the largest set of
// buffers one layer step holds at once); priming more than is used only costs resident memory
// the process would reach anyway on a larger batch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/hparams.h"

namespace expertmesh::worker {

// Bytes of malloc'd working memory a forward step uses per batch token (an upper estimate).
size_t forward_bytes_per_token(const HParams& hp);

// glibc keeps freed memory for reuse: allocations up to its 32 MiB maximum mmap threshold come
// from the arena, and the arena's free top is trimmed only beyond max(1 GiB, trim_at_least).
// The forward allocates buffers of up to tens of MB per op; without this, every op paid mmap,
// munmap and the faults of fresh pages. Process-wide libc settings: main() calls it at start.
void keep_freed_memory(size_t trim_at_least = 0);

// Makes at least `bytes` of the calling thread's malloc arena free and resident (see above),
// after keep_freed_memory(2 * bytes).
// Best effort: a refused allocation or madvise just primes less. Not thread-safe with respect to
// other threads' malloc patterns (it only affects performance, never correctness).
void prime_heap(size_t bytes);

// Maps the page tables of [addr, addr + bytes) of a read-only file mapping in one kernel call
// (MADV_POPULATE_READ, Linux 5.14+; reading the file where it is not cached yet), so the forward
// does not take one minor fault per 4 KiB page on its first pass over the weights: the first
// 512-token prompt of the BF16 bench model (1.27 GB, 330,000 pages) otherwise ran at about half
// the speed of the next. Best effort: false when the kernel refuses (older kernels: nothing
// done, the forward faults the pages in as before). Thread-safe; callers split big ranges over
// threads.
bool populate_mapping(const void* addr, size_t bytes);

}  // namespace expertmesh::worker
