#include "launch.hpp"

#include <algorithm>

namespace kfuse::tuning {

LaunchConfig baseline_launch() { return LaunchConfig{4, 2, "baseline: 4 warps, depth 2"}; }

int registers_per_warp(int num_regs) {
  const int per_warp = std::max(1, num_regs) * 32;
  return (per_warp + 255) / 256 * 256;
}

int blocks_per_sm(const KernelResources& k, const DeviceLimits& d, int threads, int64_t dynamic_shared) {
  if (threads <= 0 || threads > k.max_threads_per_block) return 0;
  const int warps = (threads + d.warp_size - 1) / d.warp_size;
  int blocks = d.max_threads_per_sm > 0 ? d.max_threads_per_sm / (warps * d.warp_size) : 0;
  if (d.max_blocks_per_sm > 0) blocks = std::min(blocks, d.max_blocks_per_sm);
  if (d.regs_per_sm > 0 && k.num_regs > 0) blocks = std::min(blocks, d.regs_per_sm / (registers_per_warp(k.num_regs) * warps));
  const int64_t shared = k.static_shared_bytes + dynamic_shared;
  if (shared > 0 && d.shared_per_sm > 0) {
    const int64_t limit = d.shared_per_block_optin > 0 ? d.shared_per_block_optin : d.shared_per_block;
    if (limit > 0 && shared > limit) return 0;
    blocks = std::min<int64_t>(blocks, d.shared_per_sm / (shared + d.reserved_shared_per_block));
  }
  return std::max(0, blocks);
}

bool register_limited(const KernelResources& k, const DeviceLimits& d, int threads) {
  if (d.regs_per_sm <= 0 || k.num_regs <= 0 || d.max_threads_per_sm <= 0) return false;
  const int warps = (threads + d.warp_size - 1) / d.warp_size;
  const int max_warps = d.max_threads_per_sm / d.warp_size;
  const int by_regs = d.regs_per_sm / (registers_per_warp(k.num_regs) * warps) * warps;
  return by_regs < max_warps / 2;
}

LaunchConfig choose_launch(const KernelResources& k, const DeviceLimits& d, int distinct_inputs, Bound bound) {
  LaunchConfig c = baseline_launch();
  if (k.local_bytes > 0) {
    c.why = "stack frame or spills (" + std::to_string(k.local_bytes) + " bytes of local memory): 4 warps, depth 2";
  } else if (k.num_regs > 128) {
    c.why = std::to_string(k.num_regs) + " registers (> 128): 4 warps, depth 2";
  } else if (register_limited(k, d, 256)) {
    c.why = std::to_string(k.num_regs) + " registers limit occupancy at 8 warps: 4 warps, depth 2";
  } else if (distinct_inputs >= 3) {
    c.why = std::to_string(distinct_inputs) + " distinct inputs per iteration: 4 warps, depth 2";
  } else if (k.num_regs < 96 && bound == Bound::compute) {
    c.warps = 8;
    c.depth = 3;
    c.why = std::to_string(k.num_regs) + " registers (< 96), no spill, compute-bound: 8 warps, depth 3";
  } else if (k.num_regs < 96) {
    c.why = std::to_string(k.num_regs) + " registers (< 96), memory-bound: baseline, 4 warps, depth 2";
  } else {
    c.why = std::to_string(k.num_regs) + " registers (96..128): baseline, 4 warps, depth 2";
  }
  while (c.warps > 1 && c.warps * d.warp_size > k.max_threads_per_block) c.warps /= 2;
  return c;
}

std::vector<LaunchConfig> autotune_candidates(const KernelResources& k, const DeviceLimits& d, int distinct_inputs,
                                              Bound bound) {
  std::vector<LaunchConfig> out{baseline_launch()};
  const auto add = [&](LaunchConfig c) {
    if (out.size() < 3 && c.warps * d.warp_size <= k.max_threads_per_block &&
        std::find(out.begin(), out.end(), c) == out.end())
      out.push_back(c);
  };
  add(choose_launch(k, d, distinct_inputs, bound));
  if (k.local_bytes == 0 && k.num_regs <= 128) {
    add(LaunchConfig{8, 2, "8 warps, depth 2"});
    add(LaunchConfig{4, 3, "4 warps, depth 3"});
  }
  return out;
}

bool keeps_winner(double baseline_ms, double candidate_ms) {
  return candidate_ms > 0.0 && candidate_ms <= 0.98 * baseline_ms;
}

double wave_efficiency(int64_t units, int64_t resident) {
  if (units <= 0 || resident <= 0) return 0.0;
  if (units <= resident) return double(units) / double(resident);
  const int64_t waves = (units + resident - 1) / resident;
  return double(units) / double(waves * resident);
}

int64_t fold_chunks(int64_t planes, int64_t rows, int64_t plane_bytes, int64_t resident_blocks) {
  if (planes <= 0 || rows <= 1 || resident_blocks <= 0) return 1;
  // Cost of c chunks per plane: waves of units times a unit's time, a unit
  // being its bytes plus a fixed overhead (block start, reduction, tap sums,
  // the chunk counter) worth about kUnitOverheadBytes of streaming per slot.
  constexpr int64_t kMinChunkBytes = 8192, kUnitOverheadBytes = 16384;
  const int64_t max_chunks = std::min<int64_t>({rows, std::max<int64_t>(1, plane_bytes / kMinChunkBytes), 1024});
  int64_t best = 1;
  double best_cost = -1.0;
  for (int64_t c = 1; c <= max_chunks; ++c) {
    const int64_t per = (rows + c - 1) / c;
    const int64_t chunks = (rows + per - 1) / per;  // the chunks that rows_per_chunk really gives
    const int64_t units = planes * chunks;
    const double waves = double((units + resident_blocks - 1) / resident_blocks);
    const double cost = waves * (double(plane_bytes) / double(chunks) + double(kUnitOverheadBytes));
    if (best_cost < 0 || cost < best_cost * (1 - 1e-9)) best_cost = cost, best = chunks;
  }
  return best;
}

int contraction_tile(int64_t z_count, int sm_count) {
  int tile = 128;
  while (tile > 16 && (z_count + tile - 1) / tile < sm_count) tile /= 2;
  return tile;
}

}  // namespace kfuse::tuning
