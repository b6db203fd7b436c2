// DeviceLimits from a cudaDeviceProp, for both CUDA users (the hand-written
// backend and Kokkos on CUDA). A template, so this header needs no CUDA.
#pragma once

#include <cstdint>

#include "tuning/launch.hpp"

namespace kfuse::tuning {

template <class CudaDeviceProp>
DeviceLimits limits_of(const CudaDeviceProp& p) {
  DeviceLimits l;
  l.sm_count = p.multiProcessorCount;
  l.max_threads_per_sm = p.maxThreadsPerMultiProcessor;
  l.max_blocks_per_sm = p.maxBlocksPerMultiProcessor;
  l.regs_per_sm = p.regsPerMultiprocessor;
  l.shared_per_sm = static_cast<int64_t>(p.sharedMemPerMultiprocessor);
  l.shared_per_block = static_cast<int64_t>(p.sharedMemPerBlock);
  l.shared_per_block_optin = static_cast<int64_t>(p.sharedMemPerBlockOptin);
  l.reserved_shared_per_block = static_cast<int64_t>(p.reservedSharedMemPerBlock);
  l.l2_bytes = p.l2CacheSize;
  l.warp_size = p.warpSize;
  return l;
}

}  // namespace kfuse::tuning
