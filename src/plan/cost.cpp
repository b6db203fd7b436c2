// Plan costs from the public Pipeline and Plan (include/kfuse/cost.hpp).
#include "kfuse/cost.hpp"

#include <cstdio>

#include "kfuse/device.hpp"
#include "kfuse/error.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/spec.hpp"

namespace kfuse {

namespace {

// Rates of the host kernels per thread, measured on one core of a 2-core
// x86 build machine (Kokkos Serial, -O2): the gather conv at 0.8e9
// multiply-adds/s (float32 and float64 alike), point ops, reductions and
// softmaxes at about 1e8 elements/s per op. A rough guide, not a promise.
constexpr double kHostMacsPerSecond = 0.8e9;
constexpr double kHostElementsPerSecond = 1e8;

}  // namespace

PlanCost plan_cost(const Pipeline& pipeline, const Plan& plan) {
  PlanCost c;
  c.conv_macs = conv_macs(pipeline);
  c.computes_conv = c.conv_macs > 0 && plan.strategy() != Strategy::fold;
  c.floor_bytes = plan.floor_bytes();
  // On a GPU when the data are there or the Kokkos kernels run there.
  if (plan.memory() != Memory::cuda && kokkos_memory() != Memory::cuda) {
    c.host_threads = ExecSpace().concurrency();
    c.runs_on = detail::cat("the host (Kokkos ", ExecSpace::name(), ", ", c.host_threads,
                            c.host_threads == 1 ? " thread)" : " threads)");
    if (c.computes_conv) {
      double elements = 0.0;  // every op after the conv reads its input once
      for (std::size_t k = 1; k < pipeline.stages().size(); ++k) {
        double n = 1.0;
        for (int64_t e : pipeline.stages()[k].in_shape) n *= static_cast<double>(e);
        elements += n;
      }
      c.estimate_s = (c.conv_macs / kHostMacsPerSecond + elements / kHostElementsPerSecond) / c.host_threads;
    }
  } else {
    const std::string name = device::device_name();
    c.runs_on = "GPU " + (name.empty() ? std::string("(CUDA device)") : name);
  }
  return c;
}

std::string duration_text(double seconds) {
  char buf[32];
  if (seconds < 10) std::snprintf(buf, sizeof buf, "%.2g s", seconds);
  else if (seconds < 120) std::snprintf(buf, sizeof buf, "%.0f s", seconds);
  else std::snprintf(buf, sizeof buf, "%.1f min", seconds / 60);
  return buf;
}

std::string PlanCost::text() const {
  char macs[32];
  std::snprintf(macs, sizeof macs, "%.3g", conv_macs);
  std::string s = "cost: ";
  if (conv_macs > 0)
    s += detail::cat(macs, " multiply-adds in the conv", computes_conv ? "" : " (not computed: the fold)", ", ");
  s += detail::cat(floor_bytes, " bytes at the floor; runs on ", runs_on);
  if (estimate_s >= 0) s += "; estimate about " + duration_text(estimate_s) + " per run";
  return s;
}

}  // namespace kfuse
