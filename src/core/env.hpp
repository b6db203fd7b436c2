// kfuse's environment switches (experiments, comparisons, debugging), read
// strictly: a value the variable does not take is an invalid_argument error
// that names the variable, the value and what it takes, where a typo used to
// fall back to the default without a word. Unset or empty: nullopt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>

namespace kfuse::detail {

std::optional<bool> env_flag(const char* name);      // "0" or "1"
std::optional<int64_t> env_count(const char* name);  // a whole number >= 0
// The index of the variable's value in `choices`.
std::optional<std::size_t> env_choice(const char* name, std::initializer_list<const char*> choices);

}  // namespace kfuse::detail
