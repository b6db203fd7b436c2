// Host-side launch helpers shared by the backend's .cu files: cached kernel
// attributes per (kernel, device) and the tuner's requests built from them,
// checked launches with optional programmatic dependent launch, timing of
// tuning candidates, and the device timing hook.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "core/cuda_check.hpp"
#include "backends/cuda/context.hpp"
#include "tuning/tuner.hpp"

namespace kfuse::detail::cuda {

// cudaFuncGetAttributes once per (kernel, device).
template <class Kernel>
tuning::KernelResources kernel_resources(Kernel kernel) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, tuning::KernelResources> cache;  // per (kernel, device)
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device_info().id);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  cudaFuncAttributes fa{};
  KFUSE_CUDA_CHECK(cudaFuncGetAttributes(&fa, reinterpret_cast<const void*>(kernel)), "kernel attributes");
  tuning::KernelResources res;
  res.num_regs = fa.numRegs;
  res.local_bytes = static_cast<int64_t>(fa.localSizeBytes);
  res.static_shared_bytes = static_cast<int64_t>(fa.sharedSizeBytes);
  res.max_threads_per_block = fa.maxThreadsPerBlock;
  return cache.emplace(key, res).first->second;
}

// The tuner's configuration for `kernel` (named "cuda::<kernel>") on the
// current device, for sizes of `shape_class`: a memory-bound kernel of one
// input whose only knob is 4 or 8 warps per block (none of the backend's
// kernels has a pipelining depth to choose). `measure(config)` runs it once and
// returns its time (time_launches); with `measurable` false it cannot be re-run
// on these arguments and is not measured. Every launch asks: a decided kernel
// costs a lookup only, no Request.
template <class Kernel, class MeasureFn>
tuning::LaunchConfig tuned(Kernel kernel, const char* name, std::string shape_class, bool measurable,
                           const MeasureFn& measure) {
  const DeviceInfo& dev = device_info();
  if (std::optional<tuning::LaunchConfig> c = tuning::remembered(dev.name, name, shape_class)) return *c;
  tuning::Request r;
  r.kernel = name;
  r.shape_class = std::move(shape_class);
  r.device = dev.name;
  r.arch = dev.major * 10 + dev.minor;
  r.resources = kernel_resources(kernel);
  r.limits = dev.limits;
  r.distinct_inputs = 1;
  r.bound = tuning::Bound::memory;
  r.warps = {4, 8};
  r.depths = {2};
  return tuning::tune(r, measurable ? tuning::Measure(measure) : tuning::Measure());
}

// The time of `launches` (kernels on stream()) in ms, by CUDA events; waits
// for them. A tuning::Measure's body.
template <class Launches>
double time_launches(Launches&& launches) {
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) (void)cudaEventDestroy(start);
      if (stop) (void)cudaEventDestroy(stop);
    }
  } e;
  KFUSE_CUDA_CHECK(cudaEventCreate(&e.start));
  KFUSE_CUDA_CHECK(cudaEventCreate(&e.stop));
  KFUSE_CUDA_CHECK(cudaEventRecord(e.start, stream()));
  launches();
  KFUSE_CUDA_CHECK(cudaEventRecord(e.stop, stream()));
  KFUSE_CUDA_CHECK(cudaEventSynchronize(e.stop), "timing a tuning candidate");
  float ms = 0.0f;
  KFUSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e.start, e.stop));
  return ms;
}

// Resident blocks per SM for `threads` and `dynamic_smem` (the occupancy API,
// cached per (kernel, device, threads, smem)).
template <class Kernel>
int occupancy(Kernel kernel, int threads, std::size_t dynamic_smem) {
  static std::mutex mutex;
  static std::map<std::pair<std::pair<const void*, int>, std::pair<int, std::size_t>>, int> cache;
  const DeviceInfo& dev = device_info();
  const auto key = std::make_pair(std::make_pair(reinterpret_cast<const void*>(kernel), dev.id),
                                  std::make_pair(threads, dynamic_smem));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int blocks = 0;
  KFUSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, dynamic_smem),
                   "threads ", threads, ", dynamic shared memory ", dynamic_smem);
  blocks = blocks > 0 ? blocks : 1;
  cache.emplace(key, blocks);
  return blocks;
}

// A launch's configuration on the backend's stream; with `pdl` (sm_90+) the
// kernel may start while the previous one drains and must call pdl_wait()
// before reading its results.
struct LaunchSetup {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1];
  LaunchSetup(const char* name, dim3 grid, dim3 block, std::size_t smem, bool pdl) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail(ErrorCategory::backend, name, "empty grid");
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
  LaunchSetup(const LaunchSetup&) = delete;  // cfg points into it
  std::string text() const {
    return cat("grid ", cfg.gridDim.x, "x", cfg.gridDim.y, ", block ", cfg.blockDim.x, ", dynamic shared memory ",
               cfg.dynamicSmemBytes);
  }
};

// A checked launch (LaunchSetup).
template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, bool pdl,
            Args&&... args) {
  const LaunchSetup c(name, grid, block, smem, pdl);
  check(cudaLaunchKernelEx(&c.cfg, kernel, std::forward<Args>(args)...), name, c.text());
  check_launch(name);
}

// The same for a kernel known by its handle (a built-in kernel's address, or
// one compiled at plan time: jit.hpp) whose one parameter is `args`.
template <class Args>
void launch(const char* name, const void* kernel, dim3 grid, dim3 block, std::size_t smem, bool pdl,
            const Args& args) {
  const LaunchSetup c(name, grid, block, smem, pdl);
  void* params[] = {const_cast<Args*>(&args)};
  check(cudaLaunchKernelExC(&c.cfg, kernel, params), name, c.text());
  check_launch(name);
}

// Whether this device runs programmatic dependent launch.
inline bool pdl_enabled() { return overrides().pdl && device_info().major >= 9; }

inline unsigned grid_of(int64_t blocks) {
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks > 0x7fffffff ? 0x7fffffff : blocks);
}

}  // namespace kfuse::detail::cuda
