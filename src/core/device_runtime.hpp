// The few CUDA runtime services the core needs (allocation and copies), so
// that core code never includes CUDA headers. Implemented by the CUDA backend;
// without it every call throws `unsupported`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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
  double host_start_ = 0.0;  // steady clock, ms: when the run began (its host time ends at finish())
};

// A plan's launches replayed as one CUDA graph (the CUDA backend's steps).
// The first run with a key launches directly (first runs are where the tuner
// measures and kernels are compiled); the next run with the same key captures
// the launches into a graph, and every later one replays it: one
// cudaGraphLaunch on the host, no per-step host work. A new key captures again
// and updates the graph in place (cudaGraphExecUpdate) when only parameters
// changed. The key names what the launches depend on that may change between
// runs (the data pointers, the input's strides); the device, the calling
// thread and invalidate_launch_graphs() are part of it here. A capture that
// fails (a step that synchronizes, say) leaves the plan launching directly,
// and state() says why. KFUSE_CUDA_GRAPHS=0 turns replay off.
class LaunchGraph {
 public:
  LaunchGraph();
  ~LaunchGraph();
  LaunchGraph(const LaunchGraph&) = delete;
  LaunchGraph& operator=(const LaunchGraph&) = delete;
  // `launches(capturing)`: the work, stream-ordered on the calling thread's stream.
  void run(std::vector<uint64_t> key, const std::function<void(bool capturing)>& launches);
  std::string state() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every graph captures again on its next run: called when scratch memory a
// graph may point into is freed, and when run-time settings change (tuning).
void invalidate_launch_graphs();

}  // namespace kfuse::device
