// The planner: rewrites a pipeline, picks a strategy, lowers it to steps.
#pragma once

#include "plan/plan_impl.hpp"

namespace kfuse::detail {

PlanImpl make_plan(const Pipeline& pipeline, const PlanOptions& options);

}  // namespace kfuse::detail
