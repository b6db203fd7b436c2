// The few CUDA runtime services the core needs (allocation and copies), so
// that core code never includes CUDA headers. Implemented by the CUDA backend;
// without it every call throws `unsupported`.
#pragma once

#include <cstddef>

namespace kfuse::device {

bool available();  // built with CUDA and a device is present
void* allocate(std::size_t bytes);
void release(void* p) noexcept;
enum class CopyKind { host_to_device, device_to_host, device_to_device };
void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind);

}  // namespace kfuse::device
