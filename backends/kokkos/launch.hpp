// Launch configurations of the Kokkos kernels, from the tuner (src/tuning).
// On a GPU a team of team_size threads (vector_length 1) is a block of
// team_size / 32 warps (DESIGN.md section 7); the pipelining depth is the
// loads in flight per thread of stream_contiguous. On the host a team is one
// thread: nothing to tune.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "backends/kokkos/dispatch.hpp"
#include "tuning/device_limits.hpp"
#include "tuning/tuner.hpp"

namespace kfuse::kokkos {


struct TeamConfig {
  int team_size = 1;
  int depth = 2;
};

// The device's name, compute capability and limits, read once (Kokkos on CUDA;
// other device backends give their name only, and the tuner's rules see no limits).
struct DeviceFacts {
  std::string name;
  int arch = 0;
  tuning::DeviceLimits limits;
};
inline const DeviceFacts& device_facts() {
  static const DeviceFacts facts = [] {
    DeviceFacts f;
    f.name = ExecSpace::name();
#if defined(KOKKOS_ENABLE_CUDA)
    const cudaDeviceProp& p = ExecSpace().cuda_device_prop();
    f.name = p.name;
    f.arch = p.major * 10 + p.minor;
    f.limits = tuning::limits_of(p);
#endif
    return f;
  }();
  return facts;
}

// A team kernel's resources: its block size limit from Kokkos (team_size_max)
// and, with Kokkos 4.6+ on CUDA, its registers and local memory
// (cudaFuncGetAttributes on Kokkos's kernel). Read once per functor type: they
// do not change (team_size_max would only with far more team scratch than
// kfuse's kernels ask for).
template <class Policy, class Body>
const tuning::KernelResources& team_resources(const Policy& policy, const Body& body) {
  static const tuning::KernelResources resources = [&] {
    tuning::KernelResources k;
    k.max_threads_per_block = policy.team_size_max(body, Kokkos::ParallelForTag()) * policy.impl_vector_length();
#if defined(KOKKOS_ENABLE_CUDA) && KOKKOS_VERSION >= 40600
    using Closure = Kokkos::Impl::ParallelFor<Body, Policy>;
    const cudaFuncAttributes a =
        Kokkos::Impl::CudaParallelLaunch<Closure, typename Policy::traits::launch_bounds>::get_cuda_func_attributes(
            ExecSpace().impl_internal_space_instance());
    k.num_regs = a.numRegs;
    k.local_bytes = static_cast<int64_t>(a.localSizeBytes);
    k.static_shared_bytes = static_cast<int64_t>(a.sharedSizeBytes);
#endif
    return k;
  }();
  return resources;
}

// The configuration to run a team kernel with: on the host one thread and
// depth 2; on a device the tuner's choice for (kernel, shape class), measured
// (autotune mode) by running `run(TeamConfig)` and fencing. A decided kernel
// costs a lookup: the resources are read only for a new decision.
template <class Policy, class Body, class Run>
TeamConfig team_config(const char* kernel, const std::string& shape_class, const Policy& policy, const Body& body,
                       const Run& run) {
  if (!kOnDevice) return TeamConfig{1, 2};
  const DeviceFacts& dev = device_facts();
  const auto to_team = [&](const tuning::LaunchConfig& c) {
    return TeamConfig{c.warps * (dev.limits.warp_size > 0 ? dev.limits.warp_size : 32), c.depth};
  };
  if (std::optional<tuning::LaunchConfig> c = tuning::remembered(dev.name, kernel, shape_class)) return to_team(*c);
  tuning::Request r;
  r.kernel = kernel;
  r.shape_class = shape_class;
  r.device = dev.name;
  r.arch = dev.arch;
  r.limits = dev.limits;
  r.warps = {4, 8, 16};  // DESIGN.md section 9: Kokkos streams want 256+ threads per team
  r.depths = {2, 3};
  r.resources = team_resources(policy, body);
  return to_team(tuning::tune(r, [&](const tuning::LaunchConfig& cand) {
    Kokkos::fence();
    Kokkos::Timer timer;
    run(to_team(cand));
    Kokkos::fence();
    return timer.seconds() * 1e3;
  }));
}

// Calls f(std::integral_constant<int, D>{}) for the depth D of `depth` (2 or 3).
template <class F>
void with_depth(int depth, const F& f) {
  if (depth >= 3) f(std::integral_constant<int, 3>{});
  else f(std::integral_constant<int, 2>{});
}

// Calls f(std::bool_constant<chain>{}): kernels without point ops are
// instantiated without the chain interpreter, whose code and registers they
// would carry for nothing (the softmax by lanes: 88 registers with it).
template <class F>
void with_chain(bool chain, const F& f) {
  if (chain) f(std::true_type{});
  else f(std::false_type{});
}

}  // namespace kfuse::kokkos
