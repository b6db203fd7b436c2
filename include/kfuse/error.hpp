// kfuse's one error type. Every message names the op, the argument and the
// offending values: "conv_transpose2d: groups (3) must divide in_channels (64)".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kfuse {

enum class ErrorCategory {
  invalid_argument,  // a parameter outside its domain
  shape_mismatch,    // shapes that do not fit together
  unsupported,       // valid, but not handled by the chosen strategy/backend/dtype
  overflow,          // element counts or byte sizes past 64 bits
  io,                // files: .npy, specs
  spec,              // malformed JSON pipeline specs
  backend,           // a device runtime call failed
};

const char* to_string(ErrorCategory c) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCategory category, const std::string& message)
      : std::runtime_error(message), category_(category) {}
  ErrorCategory category() const noexcept { return category_; }

 private:
  ErrorCategory category_;
};

namespace detail {
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Throws Error(category, "<op>: <parts...>").
template <class... Args>
[[noreturn]] void fail(ErrorCategory category, const std::string& op, Args&&... parts) {
  throw Error(category, detail::cat(op, ": ", std::forward<Args>(parts)...));
}

}  // namespace kfuse
