// Per-device facts (read once and cached), the stream the backend runs on,
// a per-thread cached workspace (no allocation on the hot path) and the
// overrides for experiments.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "tuning/launch.hpp"

namespace kfuse::detail::cuda {

// What the launch rules need from one device, read once per device.
struct DeviceInfo {
  int id = 0;
  int major = 0, minor = 0;
  std::string name;
  tuning::DeviceLimits limits;
};

// The current device's facts (cudaGetDevice + a cached cudaGetDeviceProperties).
const DeviceInfo& device_info();

// Every kernel of the backend runs on the calling thread's default stream, so
// plans may run from several host threads at once; Plan::run synchronizes it
// before returning.
inline cudaStream_t stream() { return cudaStreamPerThread; }

// Scratch memory of the calling thread on the current device, grown on demand
// (cudaMalloc only when a larger size is first needed, never on a warm run).
// `counters` are zero when handed out; kernels that use them put them back to
// zero (a run that failed midway makes the next call zero them again).
struct Workspace {
  void* scratch(std::size_t bytes);            // contents undefined
  unsigned* counters(std::size_t count);       // all zero
  void mark_dirty() { dirty_ = true; }         // counters may be non-zero

  ~Workspace();
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
  unsigned* counters_ = nullptr;
  std::size_t counter_count_ = 0;
  bool dirty_ = false;
};
Workspace& workspace();

// Overrides for experiments (environment variables, read at the first use and
// strictly: core/env.hpp; the warps of every kernel come from the tuner:
// KFUSE_TUNING_FORCE="cuda::fold_plane_sums=8x2"):
//   KFUSE_CUDA_FOLD_CHUNKS   row chunks per plane in the fold (0: the rule in src/tuning)
//   KFUSE_CUDA_FOLD_WHOLE_ROWS  0: the fold's tail rows always span contraction tiles (a row counter each),
//                            also those that one block could hold
//   KFUSE_CUDA_PDL           0 disables programmatic dependent launch (sm_90+)
//   (KFUSE_CUDA_GRAPHS=0, plans launching directly instead of replaying a CUDA graph: core/device_runtime.hpp)
//   KFUSE_CUDA_CONV          the conv that materialises Y: "auto", "cudnn", "cudnn_nhwc" (x transposed to
//                            channels-last, then cuDNN) or "gather" (the plain CUDA kernel); by default the
//                            fastest of cuDNN on x, cuDNN on x transposed and the tensor-core kernel, measured
//   KFUSE_CUDA_JIT           0: no kernels compiled at plan time (NVRTC, jit.hpp); the built-in ones interpret
//                            the point chains
//   KFUSE_CUDA_JIT_OPTIONS   further NVRTC options, e.g. "-DKFUSE_EPI_MIN_BLOCKS=2"; KFUSE_CUDA_JIT_CACHE,
//                            KFUSE_CUDA_JIT_HEADERS (the device headers read from a folder) and
//                            KFUSE_CUDA_JIT_LOG (NVRTC's logs appended to a file): jit.cpp
enum class ConvPath { automatic, cudnn, cudnn_x_nhwc, gather };
struct Overrides {
  int64_t fold_chunks = 0;
  bool fold_whole_rows = true;
  bool pdl = true;
  ConvPath conv = ConvPath::automatic;
  bool jit = true;
};
Overrides& overrides();
void reload_overrides();  // re-reads the environment (tests and the perf suite)


}  // namespace kfuse::detail::cuda
