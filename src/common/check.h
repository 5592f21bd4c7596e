// Checked calls around foreign APIs (MPI, CUDA, NCCL) and always-on invariants.
//
// EM_CHECK_CALL(expr, ok_value, to_string) evaluates `expr` once; if the result differs from
// ok_value it returns Status::Internal from the enclosing function (which must return Status or
// Result<T>) with host, rank, the expression text, function and file:line, like nccl-tests'
// CUDACHECK. Use RAII for cleanup; these macros return early.
//
// EM_ASSERT(cond, msg...) is for invariants that only a bug can break: it prints and aborts in
// every build type (never compiled out, never used for user input).
#pragma once

#include <string>

#include <fmt/format.h>

#include "common/status.h"

namespace expertmesh {

// "host 'h' rank r" of the calling process (rank from MPI when initialised, else 0).
std::string call_site_identity();

[[noreturn]] void assert_fail(const char* cond, const char* file, int line, const char* func, const std::string& msg);

std::string mpi_error_string(int code);

}  // namespace expertmesh

#define EM_CHECK_CALL(expr, ok_value, to_string)                                                  \
  do {                                                                                           \
    auto em_rc_ = (expr);                                                                        \
    if (em_rc_ != (ok_value)) {                                                                  \
      return ::expertmesh::Status::Internal(fmt::format("{}: {} failed: {} (in {} at {}:{})",      \
                                                        ::expertmesh::call_site_identity(), #expr, \
                                                        to_string(em_rc_), __func__, __FILE__,   \
                                                        __LINE__));                              \
    }                                                                                            \
  } while (0)

#define EM_MPI_CHECK(expr) EM_CHECK_CALL(expr, MPI_SUCCESS, ::expertmesh::mpi_error_string)
#define EM_CUDA_CHECK(expr) EM_CHECK_CALL(expr, cudaSuccess, cudaGetErrorString)
#define EM_NCCL_CHECK(expr) EM_CHECK_CALL(expr, ncclSuccess, ncclGetErrorString)

#define EM_ASSERT(cond, ...)                                                                    \
  do {                                                                                          \
    if (!(cond)) ::expertmesh::assert_fail(#cond, __FILE__, __LINE__, __func__, fmt::format("" __VA_ARGS__)); \
  } while (0)
