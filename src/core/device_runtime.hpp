// The few CUDA runtime services the core needs (allocation and copies), so
// that core code never includes CUDA headers. Implemented by the CUDA backend;
// without it every call throws `unsupported`.
#pragma once

#include <cstddef>
#include <functional>

#include "kfuse/device.hpp"

namespace kfuse::device {

void* allocate(std::size_t bytes);
void release(void* p) noexcept;
enum class CopyKind { host_to_device, device_to_host, device_to_device };
void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind);
void fill_bytes(void* dst, int value, std::size_t bytes);  // cudaMemset

// The device time of the work `f` launches on the calling thread's stream
// (CUDA events around it; waits for it). NaN without CUDA.
double time_ms(const std::function<void()>& f);

// Around the steps of one Plan::run on CUDA memory: the run's device time when
// run timing is on, and finish() waits for the calling thread's stream (the
// steps are stream-ordered; the result is complete when Plan::run returns).
// step_done() between two steps marks where the first one's time ends (the
// last step ends with the run: a one-step plan records no extra event).
class RunTimer {
 public:
  explicit RunTimer(bool on_device);
  void step_done();
  void finish();

 private:
  bool on_device_, timed_;
  int steps_ = 0;
};

}  // namespace kfuse::device
