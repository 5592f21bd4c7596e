// Picks the kernel table once from cpuid (STYLE.md R6). No state is kept here: the engine
// calls select_kernels() at start and keeps the reference it gets.
#include <cstdlib>
#include <string_view>

#include "kernels/cpu/cpu_kernels.h"

namespace expertmesh::cpu {

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

const Kernels& select_kernels() {
  const char* cap_env = std::getenv("EXPERTMESH_ISA");
  const std::string_view cap = cap_env ? cap_env : "";
  if (cap == "scalar") return ref_kernels();
  if (cap != "avx2" && cpu_supports(Isa::kAvx512) && avx512_kernels()) return *avx512_kernels();
  if (cpu_supports(Isa::kAvx2) && avx2_kernels()) return *avx2_kernels();
  return ref_kernels();
}

}  // namespace expertmesh::cpu
