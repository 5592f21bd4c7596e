#include "common/status.h"

namespace expertmesh {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "Invalid argument";
    case StatusCode::kNotFound: return "Not found";
    case StatusCode::kCorruption: return "Corruption";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kUnsupported: return "Unsupported";
    case StatusCode::kOutOfRange: return "Out of range";
    case StatusCode::kInternal: return "Internal error";
    case StatusCode::kAborted: return "Aborted";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return std::string(status_code_name(code_)) + ": " + msg_;
}

}  // namespace expertmesh
