// Software prefetch for the x86 GEMV weight streams (issue 13).
//
// A GEMV decodes each weight byte with several instructions, so the out-of-order window covers
// only about a kilobyte of the stream, while DRAM needs several kilobytes in flight per core to
// run at its rate; the hardware prefetchers alone left the Q8_0 GEMV at about 60% of a plain read
// loop's rate. Prefetching a few KiB ahead closes part of that gap. Prefetches never fault, so a
// range reaching past the tile (or the mapping) is harmless.
#pragma once

#include <cstddef>
#include <cstdint>

namespace expertmesh::cpu {

// Bytes ahead of the block being decoded that the GEMVs prefetch: the best of 0..16 KiB for the
// 2-thread DRAM rate on Zen 4 (Q8_0 and Q4_K, bench model).
inline constexpr size_t kGemvPrefetchAhead = 4096;

// prefetcht0 of every 64-byte line starting in [p, p + bytes). Written as asm: GCC deletes loops
// of _mm_prefetch whose results nothing reads.
[[gnu::always_inline]] inline void prefetch_lines(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) __asm__ volatile("prefetcht0 %0" : : "m"(p[o]));
}

}  // namespace expertmesh::cpu
