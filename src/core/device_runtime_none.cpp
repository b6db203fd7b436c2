// Built when kfuse has no CUDA backend: device memory is not available.
#include "core/device_runtime.hpp"

#include <cmath>

#include "kfuse/error.hpp"

namespace kfuse::device {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  fail(ErrorCategory::unsupported, what, "kfuse was built without CUDA (configure with -DKFUSE_ENABLE_CUDA=ON)");
}
}  // namespace

bool available() { return false; }
std::string device_name() { return std::string(); }
void* allocate(std::size_t) { no_cuda("device::allocate"); }
void release(void*) noexcept {}
void copy(void*, const void*, std::size_t, CopyKind) { no_cuda("device::copy"); }
void fill_bytes(void*, int, std::size_t) { no_cuda("device::fill_bytes"); }
void select_device(int) { no_cuda("device::select_device"); }
void set_run_timing(bool) {}
double time_ms(const std::function<void()>&) { return std::nan(""); }
double last_run_ms() { return std::nan(""); }
double last_run_host_ms() { return std::nan(""); }
std::vector<double> last_step_ms() { return {}; }
RunTimer::RunTimer(bool) : on_device_(false), timed_(false) {}
void RunTimer::step_done() {}
void RunTimer::finish() {}
struct LaunchGraph::Impl {};
LaunchGraph::LaunchGraph() = default;
LaunchGraph::~LaunchGraph() = default;
void LaunchGraph::run(std::vector<uint64_t>, const std::function<void(bool)>& launches) { launches(false); }
std::string LaunchGraph::state() const { return "launched directly"; }
void invalidate_launch_graphs() {}

}  // namespace kfuse::device
