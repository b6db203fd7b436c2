// kfuse::device:: on the CUDA runtime (built with the CUDA backend, or a Kokkos
// on CUDA): the allocations and copies that core code (Tensor, copy) needs,
// and the end of a plan run. Every call is checked; failures throw
// Error(backend) naming the call, the CUDA error and the size.
#include "core/device_runtime.hpp"

#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/cuda_check.hpp"
#include "core/env.hpp"

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
thread_local double t_last_run_host_ms = std::nan("");
std::atomic<uint64_t> g_graph_epoch{0};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
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
double last_run_host_ms() { return t_last_run_host_ms; }
std::vector<double> last_step_ms() { return t_last_step_ms; }

RunTimer::RunTimer(bool on_device) : on_device_(on_device), timed_(on_device && g_run_timing.load()) {
  if (timed_) {
    host_start_ = now_ms();
    KFUSE_CUDA_CHECK(cudaEventRecord(events().start, cudaStreamPerThread));
  }
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
  if (timed_) {
    KFUSE_CUDA_CHECK(cudaEventRecord(events().stop, cudaStreamPerThread));
    t_last_run_host_ms = now_ms() - host_start_;
  }
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

// ---- Graph replay ----------------------------------------------------------------

void invalidate_launch_graphs() { ++g_graph_epoch; }

struct LaunchGraph::Impl {
  std::mutex mutex;
  bool enabled = true;
  std::string failure;         // why capture failed (then the plan launches directly)
  std::vector<uint64_t> seen;  // the key of the last direct run
  std::vector<uint64_t> key;   // the key `exec` was captured with
  cudaGraphExec_t exec = nullptr;
  int device = -1;             // where `exec` lives
  uint64_t replays = 0;
};

LaunchGraph::LaunchGraph() : impl_(std::make_unique<Impl>()) {
  impl_->enabled = detail::env_flag("KFUSE_CUDA_GRAPHS").value_or(true);
}

LaunchGraph::~LaunchGraph() {
  if (impl_->exec) (void)cudaGraphExecDestroy(impl_->exec);
}

void LaunchGraph::run(std::vector<uint64_t> key, const std::function<void(bool)>& launches) {
  Impl& g = *impl_;
  cudaStream_t s = cudaStreamPerThread;
  int dev = 0;
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev), "querying the current device");
  key.push_back(uint64_t(dev));
  key.push_back(uint64_t(std::hash<std::thread::id>()(std::this_thread::get_id())));
  key.push_back(g_graph_epoch.load());
  std::unique_lock<std::mutex> lock(g.mutex);
  if (!g.enabled || !g.failure.empty()) {
    lock.unlock();
    launches(false);
    return;
  }
  if (g.exec && key == g.key) {
    KFUSE_CUDA_CHECK(cudaGraphLaunch(g.exec, s), "replaying the plan's CUDA graph");
    ++g.replays;
    return;
  }
  if (key != g.seen) {  // a first run with these pointers: directly
    lock.unlock();
    launches(false);
    // Compared with the epoch the run leaves: a first run that grows the
    // workspace or settles a tuning decision starts the graphs over itself.
    key.back() = g_graph_epoch.load();
    lock.lock();
    g.seen = std::move(key);
    return;
  }
  // The second run with the same key: capture, then launch the graph.
  cudaGraph_t graph = nullptr;
  KFUSE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capturing the plan's launches");
  std::string failed;
  try {
    launches(true);
  } catch (const std::exception& e) {
    failed = e.what();
  }
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  if (failed.empty() && ended != cudaSuccess) failed = cudaGetErrorString(ended);
  if (!failed.empty()) {
    (void)cudaGetLastError();  // capture errors are not sticky; clear them
    if (graph) (void)cudaGraphDestroy(graph);
    g.failure = failed;
    lock.unlock();
    launches(false);  // nothing ran during the capture: run directly (a real error throws again here)
    return;
  }
  struct Destroy {
    cudaGraph_t g;
    ~Destroy() { (void)cudaGraphDestroy(g); }
  } destroy{graph};
  if (g.exec && g.device == dev) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(g.exec, graph, &info) != cudaSuccess) {
      (void)cudaGetLastError();
      (void)cudaGraphExecDestroy(g.exec);
      g.exec = nullptr;
    }
  } else if (g.exec) {
    (void)cudaGraphExecDestroy(g.exec);
    g.exec = nullptr;
  }
  if (!g.exec) KFUSE_CUDA_CHECK(cudaGraphInstantiate(&g.exec, graph, 0), "instantiating the plan's CUDA graph");
  g.key = key;
  g.device = dev;
  KFUSE_CUDA_CHECK(cudaGraphLaunch(g.exec, s), "launching the plan's CUDA graph");
}

std::string LaunchGraph::state() const {
  Impl& g = *impl_;
  std::lock_guard<std::mutex> lock(g.mutex);
  if (!g.enabled) return "launched directly (KFUSE_CUDA_GRAPHS=0)";
  if (!g.failure.empty()) return "launched directly: capturing its launches as a CUDA graph failed (" + g.failure + ")";
  return "a CUDA graph from the second run with the same data pointers and strides (" + std::to_string(g.replays) +
         " replays so far)";
}

}  // namespace kfuse::device
