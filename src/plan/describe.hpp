// describe(): the strategy and why, the strategies not taken and why, the
// rewrites, each step with its backend's preparation, and the bytes moved.
#pragma once

#include <string>
#include <vector>

#include "plan/plan_impl.hpp"

namespace kfuse::detail {

struct Description {
  std::string why;
  std::vector<std::string> rejected, notes;
};

std::string describe_plan(const PlanImpl& impl, const Description& d);

}  // namespace kfuse::detail
