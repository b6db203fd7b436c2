// Every kernel of the fused epilogue, compiled by NVRTC as plan time would
// compile it (backends/cuda/jit.hpp), for each architecture the library is
// built for: the device headers must stay NVRTC-clean (no C++ library, no
// host-only code). Needs no GPU: NVRTC only compiles.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

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

void compile_all(const detail::cuda::JitProgram& p, const std::string& what) {
  for (int arch : architectures())
    for (const std::string& name : p.kernels) {
      const auto t0 = std::chrono::steady_clock::now();
      detail::cuda::jit::Cubin c;
      ASSERT_NO_THROW(c = detail::cuda::jit::compile(p.source, name, arch)) << what << ": " << name;
      EXPECT_GT(c.image.size(), 0u) << name;
      EXPECT_FALSE(c.lowered_name.empty()) << name;
      std::printf("sm_%d %s: %.1f s\n", arch, name.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

// Every op of the vocabulary in one chain, through the map kernel.
TEST(Nvrtc, EveryOpCompiles) {
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
  detail::cuda::JitProgram p = detail::cuda::epilogue_program(body, {}, DType::f32);
  p.kernels.resize(1);  // epi_map
  compile_all(p, "every op");
}

// Every kernel a stage may launch, in each dtype they read.
TEST(Nvrtc, EveryKernelCompiles) {
  const std::vector<PointOp<float>> body = {unary(UnaryKind::gelu), per_channel(BinaryKind::mul)};
  const std::vector<PointOp<float>> after = {scalar(BinaryKind::mul, 2.0f)};
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    compile_all(detail::cuda::epilogue_program(body, after, dt), to_string(dt));
}

}  // namespace
}  // namespace kfuse
