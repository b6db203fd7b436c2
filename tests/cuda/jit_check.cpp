// Every kernel of the fused epilogue, compiled by NVRTC as plan time would
// compile it (backends/cuda/jit.hpp), for each architecture the library is
// built for: the device headers must stay NVRTC-clean (no C++ library, no
// host-only code); likewise the tensor-core conv kernel. Needs no GPU: NVRTC
// only compiles.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backends/cuda/jit.hpp"
#include "backends/cuda/kernels.hpp"

namespace kfuse {
namespace {

using detail::PointKind;
using detail::PointOp;

PointOp<float> unary(UnaryKind k, double a = 0.0, double b = 0.0) {
  PointOp<float> op{};
  op.kind = PointKind::unary;
  op.unary = Unary{k, a, b};
  return op;
}
PointOp<float> scalar(BinaryKind k, float s) {
  PointOp<float> op{};
  op.kind = PointKind::scalar;
  op.binary = k;
  op.scalar = s;
  return op;
}
// A per-channel operand of Y [4, 6, 9, 11] (as [6, 1, 1]).
PointOp<float> per_channel(BinaryKind k) {
  PointOp<float> op{};
  op.kind = PointKind::tensor;
  op.binary = k;
  op.outer = make_indexer({4, 6, 9, 11}, {0, 1, 0, 0});
  op.inner = make_indexer({}, {});
  return op;
}

std::vector<int> architectures() { return {KFUSE_JIT_CHECK_ARCHS}; }

// Every kernel of `p`, for each architecture, compiled with ptxas's report
// (NoDiskCache): no object may live in local memory (a stack frame beyond
// the spills), which goes through L2 to DRAM on every use (a compiled softmax
// kernel storing about 720 bytes a lane there per row moved 3.4 GB of DRAM
// for 134 MB of data; H100, 2026-12-06), and at most `max_spill` bytes of
// registers may be spilled: none in the epilogue kernels. The conv kernel runs
// at two blocks an SM (128 registers), where its run-time-geometry path spills
// a few registers with some chains (16-24 bytes: sm_89 in TF32 and bfloat16,
// sm_90 in 3xTF32, with mish, + per-channel, hardtanh; 2026-12-06); without the
// cap it takes 140-154 registers, one block an SM. The planner keeps that
// kernel only where it measures faster than writing Y.
void compile_all(const detail::cuda::JitProgram& p, const std::string& what, int max_spill = 0) {
  for (int arch : architectures())
    for (const std::string& name : p.kernels) {
      const auto t0 = std::chrono::steady_clock::now();
      detail::cuda::jit::Cubin c;
      ASSERT_NO_THROW(c = detail::cuda::jit::compile(p.source, name, arch)) << what << ": " << name;
      EXPECT_GT(c.image.size(), 0u) << name;
      EXPECT_FALSE(c.lowered_name.empty()) << name;
      std::istringstream log(c.log);
      int reports = 0;
      for (std::string line; std::getline(log, line);) {
        // "ptxas . F bytes stack frame, S bytes spill stores, L bytes spill loads"
        const std::size_t at = line.find("bytes stack frame");
        if (at == std::string::npos) continue;
        ++reports;
        long frame = -1, stores = -1, loads = -1;
        std::sscanf(line.c_str() + line.rfind(' ', at - 2) + 1,
                    "%ld bytes stack frame, %ld bytes spill stores, %ld bytes spill loads", &frame, &stores, &loads);
        ASSERT_GE(loads, 0) << "unread ptxas report: " << line;
        EXPECT_TRUE(frame <= stores && stores <= max_spill)
            << "local memory: sm_" << arch << " " << name << " (" << what << "): " << line;
      }
      EXPECT_GT(reports, 0) << "no ptxas report for " << name << ":\n" << c.log;
      std::printf("sm_%d %s: %.1f s\n", arch, name.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

// These tests compile (no cubin from the disk cache), with ptxas's report in the log.
struct NoDiskCache : ::testing::Test {
  void SetUp() override {
    setenv("KFUSE_CUDA_JIT_CACHE", "0", 1);
    setenv("KFUSE_CUDA_JIT_OPTIONS", "-Xptxas=-v", 1);
  }
  void TearDown() override {
    unsetenv("KFUSE_CUDA_JIT_CACHE");
    unsetenv("KFUSE_CUDA_JIT_OPTIONS");
  }
};

// Every op of the vocabulary in one chain, through the map kernel.
TEST_F(NoDiskCache, EveryOpCompiles) {
  std::vector<PointOp<float>> body;
  for (UnaryKind k : {UnaryKind::relu, UnaryKind::leaky_relu, UnaryKind::tanh, UnaryKind::sigmoid, UnaryKind::gelu,
                      UnaryKind::gelu_tanh, UnaryKind::silu, UnaryKind::mish, UnaryKind::hardtanh,
                      UnaryKind::hardswish, UnaryKind::clamp, UnaryKind::exp, UnaryKind::log, UnaryKind::neg,
                      UnaryKind::abs})
    body.push_back(unary(k, -0.5, 0.75));
  for (BinaryKind k : {BinaryKind::add, BinaryKind::sub, BinaryKind::mul, BinaryKind::div, BinaryKind::min,
                       BinaryKind::max}) {
    body.push_back(scalar(k, 1.25f));
    body.push_back(per_channel(k));
  }
  detail::cuda::JitProgram p = detail::cuda::epilogue_program(body, {}, ReduceKind::sum, DType::f32);
  p.kernels.resize(1);  // epi_map
  compile_all(p, "every op");
}

// Every kernel a stage may launch, in each dtype they read (each with another
// reduction kind, a constant in the program).
TEST_F(NoDiskCache, EveryKernelCompiles) {
  const std::vector<PointOp<float>> body = {unary(UnaryKind::gelu), per_channel(BinaryKind::mul)};
  const std::vector<PointOp<float>> after = {scalar(BinaryKind::mul, 2.0f)};
  for (auto [dt, kind] : {std::pair(DType::f32, ReduceKind::logsumexp), std::pair(DType::bf16, ReduceKind::max),
                          std::pair(DType::f16, ReduceKind::mean)})
    compile_all(detail::cuda::epilogue_program(body, after, kind, dt), detail::cat(to_string(dt), ", ", to_string(kind)));
}

// The implicit-GEMM conv kernel with its epilogue's chains (convt_igemm.cuh),
// every tile path, in TF32, 3xTF32 and bfloat16.
TEST_F(NoDiskCache, ConvKernelCompiles) {
  const std::vector<PointOp<float>> body = {unary(UnaryKind::mish), per_channel(BinaryKind::add),
                                            unary(UnaryKind::hardtanh, -1.0, 1.0)};
  const std::vector<PointOp<float>> after = {scalar(BinaryKind::mul, 2.0f)};
  using detail::cuda::igemm_precision;
  constexpr int kCapSpill = 32;  // bytes; compile_all
  for (Precision precision : {Precision::tf32, Precision::strict})
    compile_all(detail::cuda::igemm_program(igemm_precision(DType::f32, precision), body, {}, ReduceKind::sum),
                detail::cat(to_string(precision), " map"), kCapSpill);
  compile_all(detail::cuda::igemm_program(igemm_precision(DType::bf16, Precision::strict), body, after,
                                          ReduceKind::logsumexp),
              "bf16 logsumexp over C", kCapSpill);
}

// A compiled program is kept on disk and read back whole; a damaged file is
// compiled again and replaced.
TEST(Nvrtc, CubinsAreCachedOnDisk) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / detail::cat("kfuse-jit-cache-", ::getpid());
  fs::remove_all(dir);
  setenv("KFUSE_CUDA_JIT_CACHE", dir.c_str(), 1);
  const detail::cuda::JitProgram p =
      detail::cuda::epilogue_program({unary(UnaryKind::tanh), per_channel(BinaryKind::add)}, {}, ReduceKind::sum,
                                      DType::f32);
  const int arch = architectures().front();
  const detail::cuda::jit::Cubin first = detail::cuda::jit::compile(p.source, p.kernels[0], arch);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  const detail::cuda::jit::Cubin again = detail::cuda::jit::compile(p.source, p.kernels[0], arch);
  EXPECT_TRUE(again.image == first.image) << "the cached cubin differs from the compiled one";
  EXPECT_EQ(again.lowered_name, first.lowered_name);
  // Another kernel of the same program: another file.
  (void)detail::cuda::jit::compile(p.source, p.kernels[1], arch);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 2);
  // A truncated file is not used: compiled again (NVRTC's internal names
  // differ from one compilation to the next, not the size), the file whole again.
  const auto whole = fs::file_size(files[0]);
  for (uintmax_t cut : {uintmax_t(20), whole - 100}) {
    fs::resize_file(files[0], cut);
    const detail::cuda::jit::Cubin rebuilt = detail::cuda::jit::compile(p.source, p.kernels[0], arch);
    EXPECT_EQ(rebuilt.image.size(), first.image.size());
    EXPECT_EQ(fs::file_size(files[0]), whole);
    const detail::cuda::jit::Cubin reread = detail::cuda::jit::compile(p.source, p.kernels[0], arch);
    EXPECT_TRUE(reread.image == rebuilt.image) << "the file holds another cubin than the one compiled";
  }
  unsetenv("KFUSE_CUDA_JIT_CACHE");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kfuse
