// The launch rules of DESIGN.md section 7 (src/tuning/launch.hpp): plain
// functions of a kernel's resources and a device's limits, so they are tested
// here without a GPU, with the numbers of the RTX 4090 (sm_89) and the H100.
#include <gtest/gtest.h>

#include "../src/tuning/launch.hpp"

using namespace kfuse::tuning;

namespace {

DeviceLimits ada() {  // RTX 4090
  DeviceLimits d;
  d.sm_count = 128;
  d.max_threads_per_sm = 1536;
  d.max_blocks_per_sm = 24;
  d.regs_per_sm = 65536;
  d.shared_per_sm = 102400;
  d.shared_per_block = 49152;
  d.shared_per_block_optin = 101376;
  d.reserved_shared_per_block = 1024;
  d.l2_bytes = 72 << 20;
  return d;
}

DeviceLimits h100() {
  DeviceLimits d = ada();
  d.sm_count = 132;
  d.max_threads_per_sm = 2048;
  d.max_blocks_per_sm = 32;
  d.shared_per_sm = 233472;
  d.shared_per_block_optin = 232448;
  d.l2_bytes = 50 << 20;
  return d;
}

KernelResources kernel(int regs, int64_t local = 0, int64_t smem = 0) {
  KernelResources k;
  k.num_regs = regs;
  k.local_bytes = local;
  k.static_shared_bytes = smem;
  return k;
}

TEST(LaunchRules, FewRegistersNoSpillComputeBoundGivesEightWarps) {
  // Memory-bound streams keep the baseline (measured faster on the H100).
  const LaunchConfig m = choose_launch(kernel(40), h100(), 1, Bound::memory);
  EXPECT_EQ(m.warps, 4);
  EXPECT_EQ(m.depth, 2);
  EXPECT_EQ(autotune_candidates(kernel(40), h100(), 1, Bound::memory)[1].warps, 8);
  const LaunchConfig c = choose_launch(kernel(64), ada(), 2, Bound::compute);
  EXPECT_EQ(c.warps, 8);
  EXPECT_EQ(c.depth, 3);
  EXPECT_EQ(c.threads(), 256);
}

TEST(LaunchRules, SpillsOrManyRegistersGiveTheBaseline) {
  for (const KernelResources& k : {kernel(40, 16), kernel(168), kernel(255, 64)}) {
    const LaunchConfig c = choose_launch(k, ada(), 1, Bound::compute);
    EXPECT_EQ(c.warps, 4) << c.why;
    EXPECT_EQ(c.depth, 2) << c.why;
  }
}

TEST(LaunchRules, ThreeInputsGiveFourWarpsDepthTwo) {
  const LaunchConfig c = choose_launch(kernel(48), h100(), 3, Bound::compute);
  EXPECT_EQ(c.warps, 4);
  EXPECT_EQ(c.depth, 2);
}

TEST(LaunchRules, RegisterLimitedOccupancy) {
  // 120 registers: 3840 per warp, 8 warps 30720: 2 blocks (16 warps), a third
  // of Ada's 48; 40 registers on the H100: 6 blocks, 48 of 64 warps, fine.
  EXPECT_TRUE(register_limited(kernel(120), ada(), 256));
  EXPECT_FALSE(register_limited(kernel(32), ada(), 256));
  EXPECT_FALSE(register_limited(kernel(40), h100(), 256));
  EXPECT_TRUE(register_limited(kernel(72), h100(), 256));  // 3 blocks: 24 of 64 warps
  EXPECT_EQ(choose_launch(kernel(120), ada(), 1, Bound::compute).warps, 4);
  // 96..128 registers without a register limit at 8 warps cannot happen on
  // these devices; on a roomier one the baseline stays.
  DeviceLimits big = h100();
  big.regs_per_sm = 1 << 20;
  EXPECT_EQ(choose_launch(kernel(100), big, 1, Bound::compute).warps, 4);
}

TEST(LaunchRules, NeverMoreThreadsThanTheKernelAllows) {
  KernelResources k = kernel(32);
  k.max_threads_per_block = 128;
  EXPECT_EQ(choose_launch(k, h100(), 1, Bound::memory).warps, 4);
}

TEST(LaunchRules, BlocksPerSm) {
  EXPECT_EQ(registers_per_warp(58), 2048);  // 58*32 = 1856 -> 2048 (8 registers a thread)
  EXPECT_EQ(blocks_per_sm(kernel(32), h100(), 256), 8);   // threads
  EXPECT_EQ(blocks_per_sm(kernel(32), ada(), 256), 6);    // threads (1536)
  EXPECT_EQ(blocks_per_sm(kernel(72), h100(), 256), 3);   // registers: 65536 / (2304*8)
  EXPECT_EQ(blocks_per_sm(kernel(32, 0, 40000), ada(), 128), 2);  // shared memory
  EXPECT_EQ(blocks_per_sm(kernel(32), ada(), 2048), 0);   // over the kernel's limit
}

TEST(LaunchRules, AutotuneCandidates) {
  const auto c = autotune_candidates(kernel(40), h100(), 1, Bound::compute);
  ASSERT_FALSE(c.empty());
  ASSERT_LE(c.size(), 3u);
  EXPECT_EQ(c[0], baseline_launch());
  EXPECT_EQ(c[1].warps, 8);
  // A spilling kernel is only run at the baseline.
  EXPECT_EQ(autotune_candidates(kernel(40, 8), h100(), 1, Bound::compute).size(), 1u);
  EXPECT_TRUE(keeps_winner(1.0, 0.97));
  EXPECT_FALSE(keeps_winner(1.0, 0.99));
}

TEST(LaunchRules, WaveEfficiency) {
  EXPECT_DOUBLE_EQ(wave_efficiency(1056, 1056), 1.0);
  EXPECT_DOUBLE_EQ(wave_efficiency(528, 1056), 0.5);
  EXPECT_NEAR(wave_efficiency(1057, 1056), 1057.0 / 2112.0, 1e-12);
  EXPECT_EQ(wave_efficiency(0, 10), 0.0);
}

TEST(LaunchRules, FoldChunks) {
  // The seed problems with 528 slots (4 blocks of 256 per SM on an H100):
  // 1024 planes are 1.94 waves, splitting only adds waves: one chunk.
  EXPECT_EQ(fold_chunks(1024, 512, 1 << 20, 528), 1);
  EXPECT_EQ(fold_chunks(1024, 128, 1 << 16, 528), 1);
  // 396 slots (3 blocks per SM): 1 MB planes in 2.6 uneven waves; 3 chunks make
  // 7.76 of 8 waves of a third of the bytes.
  EXPECT_EQ(fold_chunks(1024, 512, 1 << 20, 396), 3);
  // Small planes are never split into units smaller than the overhead pays for.
  EXPECT_EQ(fold_chunks(1024, 128, 1 << 16, 396), 1);
  // Few planes: split until the device is full, chunks of >= 8 KB and >= 1 row.
  const int64_t c = fold_chunks(16, 512, 1 << 20, 1056);
  EXPECT_GE(wave_efficiency(16 * c, 1056), 0.9);
  EXPECT_LE(c, 128);
  EXPECT_EQ(fold_chunks(4, 1, 4096, 1056), 1);   // one row
  EXPECT_EQ(fold_chunks(4, 64, 16384, 1056), 2);  // 8 KB chunks at most
  EXPECT_EQ(fold_chunks(0, 64, 16384, 1056), 1);
}

TEST(LaunchRules, ContractionTile) {
  EXPECT_EQ(contraction_tile(2048, 132), 16);   // 128 blocks of 16
  EXPECT_EQ(contraction_tile(1 << 20, 132), 128);
  EXPECT_EQ(contraction_tile(1, 132), 16);
  EXPECT_EQ(contraction_tile(8448, 132), 64);   // 132 blocks of 64
}

}  // namespace
