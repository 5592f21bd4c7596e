// Picks the kernel table once from cpuid (STYLE.md R6). No state is kept here: the engine
// calls select_kernels() at start and keeps the reference it gets.
#include <cstdlib>
#include <string_view>

#include "kernels/cpu/cpu_kernels.h"

namespace expertmesh::cpu {

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return cpu_supports(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

bool cpu_supports_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  return cpu_supports(Isa::kAvx512) && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

namespace {

// Each ISA's table starts from the reference entries, so a family without a SIMD variant still
// has its exact integer kernel; the SIMD registrations then replace what they cover. Each table
// is built on first use of ITS ISA only: the registration functions of a variant are compiled
// with that ISA's flags and may not even run on a CPU without it.
const GemmTable& ref_gemm_table() {
  static const GemmTable t = [] {
    GemmTable r{};
    register_gemm_legacy_ref(r);
    register_gemm_kquants_ref(r);
    register_gemm_iquants_ref(r);
    register_gemm_float_ref(r);
    return r;
  }();
  return t;
}

const GemmTable& avx2_gemm_table() {
  static const GemmTable t = [] {
    GemmTable r = ref_gemm_table();
    register_gemm_legacy_avx2(r);
    register_gemm_kquants_avx2(r);
    register_gemm_iquants_avx2(r);
    register_gemm_float_avx2(r);
    return r;
  }();
  return t;
}

const GemmTable& avx512_gemm_table() {
  static const GemmTable t = [] {
    GemmTable r = avx2_gemm_table();
    register_gemm_legacy_avx512(r);
    register_gemm_kquants_avx512(r);
    register_gemm_iquants_avx512(r);
    register_gemm_float_avx512(r);
    return r;
  }();
  return t;
}

}  // namespace

const GemmTable& gemm_table(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return ref_gemm_table();
    case Isa::kAvx2:
      return avx2_gemm_table();
    case Isa::kAvx512:
      return avx512_gemm_table();
  }
  return ref_gemm_table();
}

GemmFn bf16_activation_kernel(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return gemm_bf16_bf16act_ref();
    case Isa::kAvx2:
      return gemm_bf16_bf16act_avx2();
    case Isa::kAvx512:
      return cpu_supports_bf16() ? gemm_bf16_bf16act_avx512bf16() : gemm_bf16_bf16act_avx2();
  }
  return gemm_bf16_bf16act_ref();
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
