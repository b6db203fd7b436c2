// The contract between plans and backends (DESIGN.md section 10).
//
// At plan time the planner offers each step to the registered backends in
// order; the first that *prepares* it owns it. Preparing is where a backend
// decides everything it can before the data arrive: whether it runs the step
// at all (else it says why), its typed entry point, the launch geometry, the
// scratch it needs and any library plan (cuDNN's descriptors and algorithm).
// Accepting and running are one decision, made once. Plan::run then only
// calls PreparedStep::run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "plan/steps.hpp"

namespace kfuse::detail {

class PreparedStep {
 public:
  virtual ~PreparedStep() = default;
  // `in` is the step's input viewed with the step's input shape (x may be
  // strided); `out` is contiguous. Returns with `out` complete and visible
  // to the next step (stream-ordered on a GPU; Plan::run synchronizes last).
  virtual void run(const TensorView& in, const TensorView& out) const = 0;
  // What runs, for describe(): kernel names, launch shape, library algorithm.
  virtual std::string describe() const = 0;
};

// A backend's answer: the prepared step, or why it does not run this step.
struct Preparation {
  std::unique_ptr<const PreparedStep> step;
  std::string why_not;

  static Preparation refuse(std::string why) { return {nullptr, std::move(why)}; }
  template <class P, class... Args>
  static Preparation of(Args&&... args) {
    return {std::make_unique<const P>(std::forward<Args>(args)...), std::string()};
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Preparation prepare(const Step& step, const StepContext& ctx) const = 0;
};

// Registered backends, most specialised first: the hand-written CUDA kernels
// (when built), the portable Kokkos kernels, and last the reference (every op
// an eager op of the Kokkos backend, staged through Kokkos's memory when the
// data live elsewhere), which prepares every ReferenceStep.
const std::vector<const Backend*>& backends();

}  // namespace kfuse::detail
