// kfuse::device:: on the CUDA runtime (built with the CUDA backend, or a Kokkos
// on CUDA): the allocations and copies that core code (Tensor, copy) needs,
// and the end of a plan run. Every call is checked; failures throw
// Error(backend) naming the call, the CUDA error and the size.
#include "core/device_runtime.hpp"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cmath>
#include <map>
#include <vector>

#include "core/cuda_check.hpp"

namespace kfuse::device {

bool available() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error here, just "not available"
    return false;
  }
  return count > 0;
}

std::string device_name() {
  if (!available()) return "";
  int dev = 0;
  cudaDeviceProp prop{};
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev), "querying the current device");
  KFUSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev), "reading the properties of device ", dev);
  return prop.name;
}

void select_device(int local_rank) {
  int count = 0;
  KFUSE_CUDA_CHECK(cudaGetDeviceCount(&count), "counting CUDA devices");
  if (count == 0) fail(ErrorCategory::unsupported, "device::select_device", "no CUDA device is visible");
  KFUSE_CUDA_CHECK(cudaSetDevice(local_rank % count), "selecting device ", local_rank % count);
}

void* allocate(std::size_t bytes) {
  void* p = nullptr;
  KFUSE_CUDA_CHECK(cudaMalloc(&p, bytes), "allocating ", bytes, " bytes of device memory");
  return p;
}

void release(void* p) noexcept {
  if (!p) return;
  // noexcept: a failure here (typically the runtime already unloading at
  // process exit) cannot be reported by throwing; clear it so that the next
  // checked call does not see it.
  if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  if (bytes == 0) return;
  const cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                              : cudaMemcpyDeviceToDevice;
  const char* what = kind == CopyKind::host_to_device   ? "host to device"
                     : kind == CopyKind::device_to_host ? "device to host"
                                                        : "device to device";
  KFUSE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, k), "copying ", bytes, " bytes ", what);
}

void fill_bytes(void* dst, int value, std::size_t bytes) {
  if (bytes == 0) return;
  KFUSE_CUDA_CHECK(cudaMemset(dst, value, bytes), "filling ", bytes, " bytes of device memory");
}

namespace {
std::atomic<bool> g_run_timing{false};
thread_local double t_last_run_ms = std::nan("");
thread_local std::vector<double> t_last_step_ms;

// The calling thread's events on the current device: the run's start and
// stop, and one between each two steps (created as plans with more steps come).
struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  std::vector<cudaEvent_t> steps;
};
Events& events() {
  // (Events are kept for the thread's life: destroying them needs their device current.)
  thread_local std::map<int, Events> per_device;
  int dev = 0;
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev), "querying the current device");
  Events& e = per_device[dev];
  if (!e.start) {
    KFUSE_CUDA_CHECK(cudaEventCreate(&e.start));
    KFUSE_CUDA_CHECK(cudaEventCreate(&e.stop));
  }
  return e;
}
}  // namespace

void set_run_timing(bool on) { g_run_timing = on; }

double time_ms(const std::function<void()>& f) {
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  KFUSE_CUDA_CHECK(cudaEventCreate(&e0));
  KFUSE_CUDA_CHECK(cudaEventCreate(&e1));
  struct Release {
    cudaEvent_t a, b;
    ~Release() { (void)cudaEventDestroy(a), (void)cudaEventDestroy(b); }
  } release{e0, e1};
  KFUSE_CUDA_CHECK(cudaEventRecord(e0, cudaStreamPerThread));
  f();
  KFUSE_CUDA_CHECK(cudaEventRecord(e1, cudaStreamPerThread));
  KFUSE_CUDA_CHECK(cudaEventSynchronize(e1), "timing");
  float ms = 0.0f;
  KFUSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return ms;
}
double last_run_ms() { return t_last_run_ms; }
std::vector<double> last_step_ms() { return t_last_step_ms; }

RunTimer::RunTimer(bool on_device) : on_device_(on_device), timed_(on_device && g_run_timing.load()) {
  if (timed_) KFUSE_CUDA_CHECK(cudaEventRecord(events().start, cudaStreamPerThread));
}

void RunTimer::step_done() {
  if (!timed_) return;
  Events& e = events();
  if (std::size_t(steps_) == e.steps.size()) {
    e.steps.push_back(nullptr);
    KFUSE_CUDA_CHECK(cudaEventCreate(&e.steps.back()));
  }
  KFUSE_CUDA_CHECK(cudaEventRecord(e.steps[std::size_t(steps_++)], cudaStreamPerThread));
}

void RunTimer::finish() {
  if (!on_device_) return;
  if (timed_) KFUSE_CUDA_CHECK(cudaEventRecord(events().stop, cudaStreamPerThread));
  KFUSE_CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread), "waiting for the plan's kernels");
  if (timed_) {
    const Events& e = events();
    const auto elapsed = [](cudaEvent_t a, cudaEvent_t b) {
      float ms = 0.0f;
      KFUSE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      return double(ms);
    };
    t_last_run_ms = elapsed(e.start, e.stop);
    t_last_step_ms.clear();
    for (int k = 0; k <= steps_; ++k)
      t_last_step_ms.push_back(elapsed(k == 0 ? e.start : e.steps[std::size_t(k - 1)],
                                       k == steps_ ? e.stop : e.steps[std::size_t(k)]));
  }
}

}  // namespace kfuse::device
