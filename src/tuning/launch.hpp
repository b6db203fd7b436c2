// Launch rules (DESIGN.md section 7) as plain functions of numbers: the
// kernel's resources (cudaFuncGetAttributes: numRegs, localSizeBytes, static
// shared memory) and the device's limits (cudaGetDeviceProperties). No CUDA
// here, so the rules are unit-tested on machines without a GPU.
//
// They pick 4 or 8 warps and a pipelining depth of 2 or 3 from registers,
// spills and the number of distinct inputs, size the fold's row chunks and the
// contraction's tiles, and name at most three autotuning candidates (the
// conservative baseline always among them); src/tuning/tuner.cpp measures the
// candidates on the device and keeps a winner.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kfuse::tuning {

// Per-device limits (cudaDeviceProp fields of the same meaning).
struct DeviceLimits {
  int sm_count = 0;                    // multiProcessorCount
  int max_threads_per_sm = 0;          // maxThreadsPerMultiProcessor
  int max_blocks_per_sm = 0;           // maxBlocksPerMultiProcessor
  int regs_per_sm = 0;                 // regsPerMultiprocessor
  int64_t shared_per_sm = 0;           // sharedMemPerMultiprocessor
  int64_t shared_per_block = 0;        // sharedMemPerBlock (without opt-in)
  int64_t shared_per_block_optin = 0;  // sharedMemPerBlockOptin
  int64_t reserved_shared_per_block = 0;  // reservedSharedMemPerBlock
  int64_t l2_bytes = 0;                // l2CacheSize
  int warp_size = 32;
};

// One kernel's resources (cudaFuncAttributes of the same meaning).
struct KernelResources {
  int num_regs = 0;                  // numRegs
  int64_t local_bytes = 0;           // localSizeBytes: > 0 means spills or a stack frame
  int64_t static_shared_bytes = 0;   // sharedSizeBytes
  int max_threads_per_block = 1024;  // maxThreadsPerBlock (after __launch_bounds__)
};

enum class Bound { memory, compute };

struct LaunchConfig {
  int warps = 4;  // 4 or 8
  int depth = 2;  // pipelining depth (loads in flight per thread): 2 or 3
  std::string why;

  int threads() const { return warps * 32; }
  bool operator==(const LaunchConfig& o) const { return warps == o.warps && depth == o.depth; }
};

// The conservative baseline: 4 warps, depth 2.
LaunchConfig baseline_launch();

// Section 7:
//  - a stack frame / spills, more than 128 registers, or occupancy at 8 warps
//    limited by registers: 4 warps, depth 2;
//  - 3 or more distinct inputs loaded per iteration: 4 warps, depth 2;
//  - fewer than 96 registers, no spill, compute-bound: 8 warps, depth 3;
//  - otherwise the baseline (memory-bound streams included: on the H100 the
//    fold's plane sums ran 1-12% faster at 4 warps than at 8, 2026-11-23).
// The autotuning candidates still include 8 warps.
// Never more warps than the kernel's maxThreadsPerBlock allows.
LaunchConfig choose_launch(const KernelResources& k, const DeviceLimits& d, int distinct_inputs, Bound bound);

// Registers one warp holds on the SM (allocated per warp in units of 256).
int registers_per_warp(int num_regs);

// Resident blocks of `threads` threads per SM (threads, blocks, registers and
// shared memory limits; the smallest wins). 0 when one block does not fit.
int blocks_per_sm(const KernelResources& k, const DeviceLimits& d, int threads, int64_t dynamic_shared = 0);

// Whether registers keep the resident warps at `threads` per block under half
// of the SM's maximum ("occupancy limited by registers").
bool register_limited(const KernelResources& k, const DeviceLimits& d, int threads);

// At most three configurations to autotune, the baseline first.
std::vector<LaunchConfig> autotune_candidates(const KernelResources& k, const DeviceLimits& d, int distinct_inputs,
                                              Bound bound);

// A candidate replaces the baseline only if it is at least 2% faster.
bool keeps_winner(double baseline_ms, double candidate_ms);

// Fraction of the block slots used when `units` equal work units run on
// `resident` slots in waves (1 when the last wave is full).
double wave_efficiency(int64_t units, int64_t resident);

// Row chunks per (n, c) plane for the fold's plane sums: the count that
// minimises waves x (chunk bytes + a fixed per-unit overhead of 16 KB of
// streaming), with chunks of at least 8 KB and one row. Splitting pays when
// the planes fill the resident blocks in few, uneven waves; it costs when the
// units get small (every unit reduces and writes its tap sums).
int64_t fold_chunks(int64_t planes, int64_t rows, int64_t plane_bytes, int64_t resident_blocks);

// Z values per block in the fold's contraction: a power of two in [16, 128],
// the largest that still gives every SM a block.
int contraction_tile(int64_t z_count, int sm_count);

}  // namespace kfuse::tuning
