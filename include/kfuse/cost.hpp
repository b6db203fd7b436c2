// What a plan costs, known before it runs: the conv's multiply-adds, the
// bytes, where it runs and on how many threads, and, when the conv is
// computed on the host (the fused and reference strategies), an estimate of
// the time per run. Computed from the pipeline and the plan's public face.
//
//   const kfuse::Plan plan(pipeline);           // refuses what no backend runs
//   std::cout << kfuse::plan_cost(pipeline, plan).text();
#pragma once

#include <cstdint>
#include <string>

#include "kfuse/plan.hpp"

namespace kfuse {

struct PlanCost {
  double conv_macs = 0.0;   // N * Cout * Hout * Wout * (Cin / groups) * kH * kW (0 without a conv)
  bool computes_conv = false;  // false for the fold, which never computes the conv
  int64_t floor_bytes = 0;  // Plan::floor_bytes()
  std::string runs_on;      // "the host (Kokkos Serial, 1 thread)", "GPU NVIDIA H100 ..."
  int host_threads = 0;     // the host threads that run it; 0 on a GPU
  double estimate_s = -1.0; // seconds per run, < 0 when not estimated (the fold; a GPU)
  std::string text() const; // one line: "cost: ..."
};

PlanCost plan_cost(const Pipeline& pipeline, const Plan& plan);

// "0.24 s", "17 s", "6.6 min".
std::string duration_text(double seconds);

}  // namespace kfuse
