#include "kfuse/error.hpp"

namespace kfuse {

const char* to_string(ErrorCategory c) noexcept {
  switch (c) {
    case ErrorCategory::invalid_argument: return "invalid_argument";
    case ErrorCategory::shape_mismatch: return "shape_mismatch";
    case ErrorCategory::unsupported: return "unsupported";
    case ErrorCategory::overflow: return "overflow";
    case ErrorCategory::io: return "io";
    case ErrorCategory::spec: return "spec";
    case ErrorCategory::backend: return "backend";
  }
  return "unknown";
}

}  // namespace kfuse
