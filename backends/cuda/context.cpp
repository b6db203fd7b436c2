#include "backends/cuda/context.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "core/cuda_check.hpp"
#include "core/env.hpp"
#include "core/device_runtime.hpp"
#include "tuning/device_limits.hpp"

namespace kfuse::detail::cuda {

const DeviceInfo& device_info() {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<DeviceInfo>> cache;
  int dev = 0;
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev));
  // Each thread keeps a pointer to the last device it asked about: no lock on the hot path.
  thread_local const DeviceInfo* last = nullptr;
  if (last && last->id == dev) return *last;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[dev];
  if (!slot) {
    cudaDeviceProp p{};
    KFUSE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev), "device ", dev);
    auto info = std::make_unique<DeviceInfo>();
    info->id = dev;
    info->major = p.major;
    info->minor = p.minor;
    info->name = p.name;
    info->limits = tuning::limits_of(p);
    slot = std::move(info);
  }
  last = slot.get();
  return *last;
}

// ---- Workspace ------------------------------------------------------------

namespace {
constexpr std::size_t kAlign = 256;
std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }
}  // namespace

void* Workspace::scratch(std::size_t bytes) {
  bytes = round_up(bytes > 0 ? bytes : 1, kAlign);
  if (bytes > scratch_bytes_) {
    // cudaFree waits for work in flight that may still use the old buffer;
    // graphs captured with it must capture again.
    if (scratch_) {
      device::invalidate_launch_graphs();
      KFUSE_CUDA_CHECK(cudaFree(scratch_), "workspace of ", scratch_bytes_, " bytes");
    }
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    const std::size_t grown = std::max(bytes, round_up(bytes + bytes / 2, 1 << 20));
    void* p = nullptr;
    KFUSE_CUDA_CHECK(cudaMalloc(&p, grown), "workspace of ", grown, " bytes");
    scratch_ = p;
    scratch_bytes_ = grown;
  }
  return scratch_;
}

unsigned* Workspace::counters(std::size_t count) {
  count = std::max<std::size_t>(count, 1);
  if (count > counter_count_) {
    if (counters_) {
      device::invalidate_launch_graphs();
      KFUSE_CUDA_CHECK(cudaFree(counters_), "counters of ", counter_count_ * sizeof(unsigned), " bytes");
    }
    counters_ = nullptr;
    counter_count_ = 0;
    const std::size_t grown = round_up(std::max<std::size_t>(count, 1024), 1024);
    void* p = nullptr;
    KFUSE_CUDA_CHECK(cudaMalloc(&p, grown * sizeof(unsigned)), "counters of ", grown * sizeof(unsigned), " bytes");
    counters_ = static_cast<unsigned*>(p);
    counter_count_ = grown;
    dirty_ = true;
  }
  if (dirty_) {
    KFUSE_CUDA_CHECK(cudaMemsetAsync(counters_, 0, counter_count_ * sizeof(unsigned), stream()), "counters of ",
                     counter_count_ * sizeof(unsigned), " bytes");
    dirty_ = false;
  }
  return counters_;
}

Workspace::~Workspace() {
  // At thread or process exit the CUDA context may already be gone: nothing to report to.
  if (scratch_ || counters_) device::invalidate_launch_graphs();
  if (scratch_) (void)cudaFree(scratch_);
  if (counters_) (void)cudaFree(counters_);
  (void)cudaGetLastError();
}

Workspace& workspace() {
  thread_local std::map<int, Workspace> per_device;
  return per_device[device_info().id];
}

// ---- Overrides ----------------------------------------------------------------

namespace {
Overrides read_overrides() {
  Overrides o;
  o.fold_chunks = env_count("KFUSE_CUDA_FOLD_CHUNKS").value_or(0);
  o.fold_whole_rows = env_flag("KFUSE_CUDA_FOLD_WHOLE_ROWS").value_or(true);
  o.pdl = env_flag("KFUSE_CUDA_PDL").value_or(true);
  o.jit = env_flag("KFUSE_CUDA_JIT").value_or(true);
  constexpr ConvPath paths[] = {ConvPath::automatic, ConvPath::cudnn, ConvPath::cudnn_x_nhwc, ConvPath::gather};
  o.conv = paths[env_choice("KFUSE_CUDA_CONV", {"auto", "cudnn", "cudnn_nhwc", "gather"}).value_or(0)];
  return o;
}
}  // namespace

// Read at the first use, not at load: a bad value is an error the caller sees.
Overrides& overrides() {
  static Overrides o = read_overrides();
  return o;
}
void reload_overrides() {
  overrides() = read_overrides();
  device::invalidate_launch_graphs();  // a graph holds the launches the old settings chose
}

}  // namespace kfuse::detail::cuda
