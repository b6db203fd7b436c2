// The GPU as kfuse sees it: whether one is present and which, the device of
// the calling thread, and device timing of plan runs for benchmarks.
#pragma once

#include <string>
#include <vector>

namespace kfuse::device {

// Built with CUDA and a device is present.
bool available();
// The current device's name ("" when none is available).
std::string device_name();
// Makes device `local_rank % device count` current on the calling thread
// (cudaSetDevice): one GPU per MPI rank of a node. Throws when no device is
// available.
void select_device(int local_rank);

// Device timing of Plan::run, for benchmarks: while on, each run of a plan on
// CUDA memory records CUDA events on the calling thread's stream around its
// steps, and last_run_ms() is the calling thread's last such time (NaN before
// the first), and last_step_ms() the device time of each of its steps, in
// plan order (events between the steps; they add up to last_run_ms()).
// A run replayed from a CUDA graph has no events between its steps: its one
// entry is the whole run. last_run_host_ms() is the host time of that run
// from its first launch to its wait for the device (the launches, or the
// replay of its graph).
void set_run_timing(bool on);
double last_run_ms();
double last_run_host_ms();
std::vector<double> last_step_ms();

}  // namespace kfuse::device
