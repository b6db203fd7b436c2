#include "core/env.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kfuse/error.hpp"

namespace kfuse::detail {

namespace {
const char* value_of(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

[[noreturn]] void refuse(const char* name, const char* value, const std::string& takes) {
  fail(ErrorCategory::invalid_argument, "environment", name, " is '", value, "'; expected ", takes);
}
}  // namespace

std::optional<bool> env_flag(const char* name) {
  const char* v = value_of(name);
  if (!v) return std::nullopt;
  if (std::strcmp(v, "0") != 0 && std::strcmp(v, "1") != 0) refuse(name, v, "0 or 1");
  return v[0] == '1';
}

std::optional<int64_t> env_count(const char* name) {
  const char* v = value_of(name);
  if (!v) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long k = std::strtoll(v, &end, 10);
  if (*end != '\0' || k < 0 || errno == ERANGE || v[0] == '+' || v[0] == ' ')
    refuse(name, v, "a whole number >= 0");
  return int64_t(k);
}

std::optional<std::size_t> env_choice(const char* name, std::initializer_list<const char*> choices) {
  const char* v = value_of(name);
  if (!v) return std::nullopt;
  std::size_t i = 0;
  std::string takes;
  for (const char* c : choices) {
    if (std::strcmp(v, c) == 0) return i;
    takes += cat(i++ == 0 ? "" : ", ", c);
  }
  refuse(name, v, cat("one of ", takes));
}

}  // namespace kfuse::detail
