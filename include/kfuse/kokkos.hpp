// The one place kfuse includes Kokkos. Works with Kokkos 3.4 (Debian, C++14
// config) and Kokkos 4.x.
#pragma once

#include <Kokkos_Macros.hpp>  // KOKKOS_VERSION and the enabled backends, before Kokkos_Core.hpp

#if defined(KOKKOS_ENABLE_CUDA) && KOKKOS_VERSION < 40700
#include <cuda_runtime_api.h>
#if CUDART_VERSION >= 13000
// CUDA 13 changed two runtime signatures that Kokkos < 4.7 calls with the
// CUDA 12 arguments; these overloads restore the old ones. They must be
// declared before Kokkos's headers use them.
inline cudaError_t cudaGraphAddDependencies(cudaGraph_t graph, const cudaGraphNode_t* from,
                                            const cudaGraphNode_t* to, size_t n) {
  return cudaGraphAddDependencies(graph, from, to, nullptr, n);
}
inline cudaError_t cudaMemPrefetchAsync(const void* ptr, size_t bytes, int device,
                                        cudaStream_t stream = 0) {
  cudaMemLocation loc{};
  loc.type = device == cudaCpuDeviceId ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
  loc.id = device == cudaCpuDeviceId ? 0 : device;
  return cudaMemPrefetchAsync(ptr, bytes, loc, 0, stream);
}
#endif
#endif

#include <Kokkos_Core.hpp>

namespace kfuse {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using DeviceMemSpace = ExecSpace::memory_space;
using TeamPolicy = Kokkos::TeamPolicy<ExecSpace>;
using Team = TeamPolicy::member_type;

// The kfuse memory tag of the Kokkos default execution space's memory.
#if defined(KOKKOS_ENABLE_CUDA)
inline constexpr bool kKokkosOnCuda = true;
#else
inline constexpr bool kKokkosOnCuda = false;
#endif

// Team policy for `league` teams: team_size/vector_length of 0 mean AUTO.
inline TeamPolicy team_policy(int64_t league, int team_size, int vector_length) {
  const int vl = vector_length > 0 ? vector_length : 1;
  if (team_size > 0) return TeamPolicy(league, team_size, vl);
  return TeamPolicy(league, Kokkos::AUTO, vl);
}

}  // namespace kfuse
