// The few CUDA runtime services the core needs (allocation and copies), so
// that core code never includes CUDA headers. Implemented by the CUDA backend;
// without it every call throws `unsupported`.
#pragma once

#include <cstddef>
#include <string>

namespace kfuse::device {

bool available();  // built with CUDA and a device is present
std::string device_name();  // the current device's name ("" when none is available)
void* allocate(std::size_t bytes);
void release(void* p) noexcept;
enum class CopyKind { host_to_device, device_to_host, device_to_device };
void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind);
void fill_bytes(void* dst, int value, std::size_t bytes);  // cudaMemset
// Makes device `local_rank % device count` current on the calling thread
// (cudaSetDevice): one GPU per MPI rank of a node (kfuse::mpi). Throws when
// no device is available.
void select_device(int local_rank);

}  // namespace kfuse::device
