// Error checking for every CUDA runtime call of kfuse (the device runtime and the CUDA backend):
// a failure throws kfuse::Error(ErrorCategory::backend) naming the call, the
// CUDA error string and the context (sizes, kernel name).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "kfuse/error.hpp"

namespace kfuse::detail::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const std::string& context) {
  fail(ErrorCategory::backend, call, cudaGetErrorString(e), " (", cudaGetErrorName(e), ")",
       context.empty() ? std::string() : ", " + context);
}

inline void check(cudaError_t e, const char* call, const std::string& context = std::string()) {
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear a sticky-free error so later calls start clean
    throw_cuda(e, call, context);
  }
}

// After every kernel launch: the launch error (bad configuration, too much
// shared memory, no kernel image for the device).
inline void check_launch(const char* kernel, const std::string& context = std::string()) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda(e, kernel, "kernel launch" + (context.empty() ? std::string() : ": " + context));
}

}  // namespace kfuse::detail::cuda

// CUDA_CHECK(cudaMalloc(&p, n), "bytes ", n): throws on failure, the call's text as its name.
#define KFUSE_CUDA_CHECK(call, ...) ::kfuse::detail::cuda::check((call), #call, ::kfuse::detail::cat("" __VA_ARGS__))
