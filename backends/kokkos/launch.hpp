// Launch configurations of the Kokkos kernels, from the tuner (src/tuning).
// On a GPU a team of team_size threads (vector_length 1) is a block of
// team_size / 32 warps (DESIGN.md section 7); the pipelining depth is the
// loads in flight per thread of stream_contiguous. On the host a team is one
// thread: nothing to tune.
#pragma once

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

// The tuner's request for a team kernel: the device, and the kernel's block
// size limit from Kokkos (team_size_max); with Kokkos 4.6+ on CUDA also its
// registers and local memory (cudaFuncGetAttributes on Kokkos's kernel).
template <class Body>
tuning::Request team_request(const char* kernel, std::string shape_class, const TeamPolicy& policy, const Body& body) {
  tuning::Request r;
  r.kernel = kernel;
  r.shape_class = std::move(shape_class);
  const DeviceFacts& dev = device_facts();
  r.device = dev.name;
  r.arch = dev.arch;
  r.limits = dev.limits;
  r.warps = {4, 8, 16};  // DESIGN.md section 9: Kokkos streams want 256+ threads per team
  r.depths = {2, 3};
  r.resources.max_threads_per_block = policy.team_size_max(body, Kokkos::ParallelForTag()) * policy.impl_vector_length();
#if defined(KOKKOS_ENABLE_CUDA) && KOKKOS_VERSION >= 40600
  using Closure = Kokkos::Impl::ParallelFor<Body, TeamPolicy>;
  const cudaFuncAttributes a =
      Kokkos::Impl::CudaParallelLaunch<Closure, typename TeamPolicy::traits::launch_bounds>::get_cuda_func_attributes(
          ExecSpace().impl_internal_space_instance());
  r.resources.num_regs = a.numRegs;
  r.resources.local_bytes = static_cast<int64_t>(a.localSizeBytes);
  r.resources.static_shared_bytes = static_cast<int64_t>(a.sharedSizeBytes);
#endif
  return r;
}

// The configuration to run a team kernel with: on the host one thread and
// depth 2; on a device the tuner's choice for make_request(), measured
// (autotune mode) by running `run(TeamConfig)` and fencing.
template <class MakeRequest, class Run>
TeamConfig team_config(const MakeRequest& make_request, const Run& run) {
  if (!kOnDevice) return TeamConfig{1, 2};
  const tuning::Request r = make_request();
  const auto to_team = [&](const tuning::LaunchConfig& c) {
    const int warp = r.limits.warp_size > 0 ? r.limits.warp_size : 32;
    return TeamConfig{c.warps * warp, c.depth};
  };
  const tuning::LaunchConfig c = tuning::tune(r, [&](const tuning::LaunchConfig& cand) {
    Kokkos::fence();
    Kokkos::Timer timer;
    run(to_team(cand));
    Kokkos::fence();
    return timer.seconds() * 1e3;
  });
  return to_team(c);
}

// Calls f(std::integral_constant<int, D>{}) for the depth D of `depth` (2 or 3).
template <class F>
void with_depth(int depth, const F& f) {
  if (depth >= 3) f(std::integral_constant<int, 3>{});
  else f(std::integral_constant<int, 2>{});
}

}  // namespace kfuse::kokkos
