// Status / Result<T>: the error currency for everything a user can cause (bad files, bad flags,
// bad requests). LevelDB style: a value type, no exceptions across module boundaries.
//
// Contract: a Status is either ok() or carries a code and a one-line message that names the
// offending file / tensor / flag. Messages are meant to be printed to the user as they are.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace expertmesh {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,  // bad flag, bad request, unsupported option combination
  kNotFound,         // missing file, tensor, key
  kCorruption,       // malformed file contents
  kIoError,          // OS-level failure (open, read, write, mmap)
  kUnsupported,      // valid input we do not handle (unknown type id, arch)
  kOutOfRange,       // value outside its domain (NaN, overflow, index)
  kInternal,         // a bug; should never reach a user
  kAborted,          // another rank failed; this rank stopped in agreement
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return Status(StatusCode::kInvalidArgument, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(StatusCode::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(StatusCode::kCorruption, std::move(msg)); }
  static Status IoError(std::string msg) { return Status(StatusCode::kIoError, std::move(msg)); }
  static Status Unsupported(std::string msg) { return Status(StatusCode::kUnsupported, std::move(msg)); }
  static Status OutOfRange(std::string msg) { return Status(StatusCode::kOutOfRange, std::move(msg)); }
  static Status Internal(std::string msg) { return Status(StatusCode::kInternal, std::move(msg)); }
  static Status Aborted(std::string msg) { return Status(StatusCode::kAborted, std::move(msg)); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return msg_; }
  // "Corruption: gguf: tensor 'x' data out of bounds (model.gguf)"
  std::string to_string() const;

  // Prefix the message with context (e.g. the file name) while keeping the code.
  Status with_context(const std::string& ctx) const {
    if (ok()) return *this;
    return Status(code_, ctx + ": " + msg_);
  }

 private:
  Status(StatusCode c, std::string m) : code_(c), msg_(std::move(m)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string msg_;
};

// Result<T>: a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT(implicit)
  Result(Status status) : v_(std::move(status)) {     // NOLINT(implicit)
    if (std::get<Status>(v_).ok()) v_ = Status::Internal("Result constructed from an ok Status without a value");
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace expertmesh

#define EM_CONCAT_INNER_(a, b) a##b
#define EM_CONCAT_(a, b) EM_CONCAT_INNER_(a, b)

// Return the Status from the enclosing function if `expr` is not ok.
#define EM_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::expertmesh::Status em_status_ = (expr);     \
    if (!em_status_.ok()) return em_status_;      \
  } while (0)

// `EM_ASSIGN_OR_RETURN(auto x, f());` — unwraps a Result or returns its Status.
#define EM_ASSIGN_OR_RETURN(lhs, rexpr) EM_ASSIGN_OR_RETURN_IMPL_(EM_CONCAT_(em_result_, __LINE__), lhs, rexpr)
#define EM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                              \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
