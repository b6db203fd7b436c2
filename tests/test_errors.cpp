// kfuse's error contract: every invalid call throws kfuse::Error with the
// right category and a message that names the op, the argument and the
// offending values.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../src/core/env.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/ops.hpp"
#include "kfuse/shape.hpp"
#include "kfuse/tensor.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using kfuse::ConvTranspose2dParams;
using kfuse::DType;
using kfuse::ErrorCategory;
using kfuse::Memory;
using kfuse::Tensor;
using kfuse::TensorView;

// Runs `f`; passes when it throws kfuse::Error of `category` whose message
// contains every one of `parts`.
::testing::AssertionResult throws(const std::function<void()>& f, ErrorCategory category,
                                  const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const kfuse::Error& e) {
    const std::string msg = e.what();
    if (e.category() != category)
      return ::testing::AssertionFailure() << "category " << kfuse::to_string(e.category()) << ", expected "
                                           << kfuse::to_string(category) << " (message: \"" << msg << "\")";
    for (const std::string& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not contain \"" << p << "\"";
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-kfuse exception: " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not a std::exception";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// Buffers in the Kokkos backend's memory, big enough for every shape used
// below; the contents do not matter, the calls must fail before reading them.
struct Buffers {
  Tensor f32 = Tensor::empty({4096}, DType::f32);
  Tensor f64 = Tensor::empty({4096}, DType::f64);
  Tensor f16 = Tensor::empty({4096}, DType::f16);

  TensorView f(Shape s) const { return over(f32, DType::f32, std::move(s)); }
  TensorView d(Shape s) const { return over(f64, DType::f64, std::move(s)); }
  TensorView h(Shape s) const { return over(f16, DType::f16, std::move(s)); }
  TensorView bf(Shape s) const { return over(f16, DType::bf16, std::move(s)); }
  // Claims the memory the Kokkos backend cannot access (never read).
  TensorView foreign(Shape s) const {
    TensorView v = f(std::move(s));
    v.memory = kfuse::kokkos_memory() == Memory::host ? Memory::cuda : Memory::host;
    return v;
  }

 private:
  static TensorView over(const Tensor& t, DType d, Shape s) {
    return TensorView(t.view().data, d, std::move(s), t.memory());
  }
};

ConvTranspose2dParams conv_params(int64_t s, int64_t p, int64_t op, int64_t d, int64_t g = 1) {
  ConvTranspose2dParams c;
  c.with_stride(s).with_padding(p).with_output_padding(op).with_dilation(d).with_groups(g);
  return c;
}

const std::string kConv = "conv_transpose2d";

TEST(Errors, ConvWrongRank) {
  Buffers b;
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({2, 3, 4}), b.f({3, 2, 3, 3}), std::nullopt, {}); },
                     ErrorCategory::shape_mismatch, {kConv, "input", "rank 4", "rank 3", "[2, 3, 4]"}));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 2, 3, 4, 5}), b.f({2, 2, 3, 3}), std::nullopt, {}); },
                     ErrorCategory::shape_mismatch, {kConv, "input", "rank 5"}));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 3, 4, 4}), b.f({3, 2, 3}), std::nullopt, {}); },
                     ErrorCategory::shape_mismatch, {kConv, "weight", "rank 3", "[3, 2, 3]"}));
  // The shape function alone says the same.
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d_shape({1, 3, 4, 4}, {3, 2}, std::nullopt, {}); },
                     ErrorCategory::shape_mismatch, {kConv, "weight", "rank 2"}));
}

TEST(Errors, ConvChannelMismatch) {
  Buffers b;
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 4, 5, 5}), b.f({3, 2, 3, 3}), std::nullopt, {}); },
                     ErrorCategory::shape_mismatch, {kConv, "weight", "(3)", "input channels (4)"}));
}

TEST(Errors, ConvGroups) {
  Buffers b;
  EXPECT_TRUE(throws(
      [&] { kfuse::conv_transpose2d(b.f({1, 4, 5, 5}), b.f({4, 2, 3, 3}), std::nullopt, conv_params(1, 0, 0, 1, 3)); },
      ErrorCategory::invalid_argument, {kConv, "groups (3) must divide in_channels (4)"}));
  EXPECT_TRUE(throws(
      [&] { kfuse::conv_transpose2d(b.f({1, 4, 5, 5}), b.f({4, 2, 3, 3}), std::nullopt, conv_params(1, 0, 0, 1, 0)); },
      ErrorCategory::invalid_argument, {kConv, "groups (0)"}));
  EXPECT_TRUE(throws(
      [&] { kfuse::conv_transpose2d(b.f({1, 4, 5, 5}), b.f({4, 2, 3, 3}), std::nullopt, conv_params(1, 0, 0, 1, -2)); },
      ErrorCategory::invalid_argument, {kConv, "groups (-2)"}));
}

TEST(Errors, ConvStrideDilationPadding) {
  Buffers b;
  const TensorView x = b.f({1, 2, 4, 4}), w = b.f({2, 3, 3, 3});
  auto conv = [&](ConvTranspose2dParams p) { return [=] { kfuse::conv_transpose2d(x, w, std::nullopt, p); }; };
  EXPECT_TRUE(throws(conv(conv_params(0, 0, 0, 1)), ErrorCategory::invalid_argument, {kConv, "stride (0)", "height"}));
  ConvTranspose2dParams p = conv_params(1, 0, 0, 1);
  p.stride = {1, -3};
  EXPECT_TRUE(throws(conv(p), ErrorCategory::invalid_argument, {kConv, "stride (-3)", "width"}));
  EXPECT_TRUE(throws(conv(conv_params(1, 0, 0, 0)), ErrorCategory::invalid_argument, {kConv, "dilation (0)", "height"}));
  p = conv_params(1, 0, 0, 1);
  p.dilation = {2, -1};
  EXPECT_TRUE(throws(conv(p), ErrorCategory::invalid_argument, {kConv, "dilation (-1)", "width"}));
  EXPECT_TRUE(throws(conv(conv_params(1, -1, 0, 1)), ErrorCategory::invalid_argument, {kConv, "padding (-1)", ">= 0"}));
  p = conv_params(1, 0, 0, 1);
  p.padding = {0, -2};
  EXPECT_TRUE(throws(conv(p), ErrorCategory::invalid_argument, {kConv, "padding (-2)", "width"}));
}

TEST(Errors, ConvOutputPadding) {
  Buffers b;
  const TensorView x = b.f({1, 2, 4, 4}), w = b.f({2, 3, 3, 3});
  auto conv = [&](ConvTranspose2dParams p) { return [=] { kfuse::conv_transpose2d(x, w, std::nullopt, p); }; };
  EXPECT_TRUE(throws(conv(conv_params(2, 0, 2, 1)), ErrorCategory::invalid_argument,
                     {"conv_transpose2d: output_padding (2) must be smaller than stride (2) or dilation (1)"}));
  // output_padding 0 with stride 1 and dilation 1 is fine; 1 is not.
  EXPECT_TRUE(throws(conv(conv_params(1, 0, 1, 1)), ErrorCategory::invalid_argument,
                     {kConv, "output_padding (1)", "stride (1)", "dilation (1)"}));
  // Dilation alone allows output_padding < dilation: 2 < 3 passes, 3 does not.
  EXPECT_NO_THROW(kfuse::conv_transpose2d_shape(x.shape, w.shape, std::nullopt, conv_params(1, 0, 2, 3)));
  EXPECT_TRUE(throws(conv(conv_params(1, 0, 3, 3)), ErrorCategory::invalid_argument,
                     {kConv, "output_padding (3)", "stride (1)", "dilation (3)"}));
  ConvTranspose2dParams p = conv_params(2, 0, 0, 1);
  p.output_padding = {0, -1};
  EXPECT_TRUE(throws(conv(p), ErrorCategory::invalid_argument, {kConv, "output_padding (-1)", "width"}));
}

TEST(Errors, ConvOutputTooSmall) {
  Buffers b;
  // H = 1, k = 1, padding 1: Hout = 0 - 2 + 0 + 0 + 1 = -1.
  EXPECT_TRUE(throws(
      [&] { kfuse::conv_transpose2d(b.f({1, 2, 1, 1}), b.f({2, 2, 1, 1}), std::nullopt, conv_params(1, 1, 0, 1)); },
      ErrorCategory::invalid_argument, {kConv, "output height (-1) must be >= 1", "padding 1"}));
  // Hout exactly 0: H = 2, k = 3, stride 1, padding 2 -> 1 - 4 + 2 + 1 = 0.
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d_shape({1, 2, 2, 2}, {2, 2, 3, 3}, std::nullopt, conv_params(1, 2, 0, 1)); },
                     ErrorCategory::invalid_argument, {kConv, "output height (0)"}));
  ConvTranspose2dParams p = conv_params(1, 0, 0, 1);
  p.padding = {0, 3};
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d_shape({1, 2, 2, 2}, {2, 2, 3, 3}, std::nullopt, p); },
                     ErrorCategory::invalid_argument, {kConv, "output width (-2)"}));
}

TEST(Errors, ConvBiasShape) {
  Buffers b;
  const TensorView x = b.f({1, 2, 4, 4}), w = b.f({2, 2, 3, 3});  // Cout = 4 with groups 2
  const ConvTranspose2dParams p = conv_params(1, 0, 0, 1, 2);
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(x, w, b.f({2}), p); }, ErrorCategory::shape_mismatch,
                     {kConv, "bias", "[4]", "[2]"}));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(x, w, b.f({1, 4}), p); }, ErrorCategory::shape_mismatch,
                     {kConv, "bias", "[4]", "[1, 4]"}));
  EXPECT_NO_THROW(kfuse::conv_transpose2d(x, w, b.f({4}), p));
}

TEST(Errors, ConvDtypeMismatch) {
  Buffers b;
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 2, 3, 3}), b.d({2, 2, 3, 3}), std::nullopt, {}); },
                     ErrorCategory::invalid_argument, {kConv, "dtype", "input float32", "weight float64"}));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 2, 3, 3}), b.f({2, 2, 3, 3}), b.d({2}), {}); },
                     ErrorCategory::invalid_argument, {kConv, "dtype", "bias float64"}));
}

TEST(Errors, ReductionAxes) {
  Buffers b;
  const TensorView x = b.f({2, 3, 4, 5});
  EXPECT_TRUE(throws([&] { kfuse::reduce(x, kfuse::ReduceKind::sum, {4}, false); }, ErrorCategory::invalid_argument,
                     {"sum", "axis 4", "out of range", "rank 4", "-4 to 3"}));
  EXPECT_TRUE(throws([&] { kfuse::reduce(x, kfuse::ReduceKind::mean, {0, -5}, true); }, ErrorCategory::invalid_argument,
                     {"mean", "axis -5", "rank 4"}));
  EXPECT_TRUE(throws([&] { kfuse::reduce(x, kfuse::ReduceKind::logsumexp, {1, 1}, false); },
                     ErrorCategory::invalid_argument, {"logsumexp", "axis 1", "twice"}));
  // Duplicates spelled differently: -3 is axis 1 of a rank-4 tensor.
  EXPECT_TRUE(throws([&] { kfuse::reduce(x, kfuse::ReduceKind::max, {1, -3}, false); }, ErrorCategory::invalid_argument,
                     {"max", "axis 1", "twice"}));
  EXPECT_TRUE(throws([&] { kfuse::axes_mask({2, 2}, 3, "myop"); }, ErrorCategory::invalid_argument, {"myop", "axis 2"}));
}

TEST(Errors, SoftmaxAxis) {
  Buffers b;
  const TensorView x = b.f({2, 3, 4});
  EXPECT_TRUE(throws([&] { kfuse::softmax(x, 3); }, ErrorCategory::invalid_argument,
                     {"softmax", "axis 3", "out of range", "rank 3"}));
  EXPECT_TRUE(throws([&] { kfuse::softmax(x, -4); }, ErrorCategory::invalid_argument, {"softmax", "axis -4", "rank 3"}));
}

TEST(Errors, BroadcastMismatch) {
  Buffers b;
  EXPECT_TRUE(throws([&] { kfuse::binary(b.f({2, 3}), b.f({4}), kfuse::BinaryKind::add); }, ErrorCategory::shape_mismatch,
                     {"add", "[2, 3]", "[4]", "do not broadcast", "3 vs 4"}));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.f({2, 3, 4, 5}), b.f({2, 1, 1}), kfuse::BinaryKind::mul); },
                     ErrorCategory::shape_mismatch, {"mul", "[2, 3, 4, 5]", "[2, 1, 1]", "3 vs 2"}));
  EXPECT_TRUE(throws([&] { kfuse::broadcast_shapes({5, 1}, {3, 4}, "myop"); }, ErrorCategory::shape_mismatch,
                     {"myop", "[5, 1]", "[3, 4]"}));
}

TEST(Errors, BinaryDtypeMismatch) {
  Buffers b;
  EXPECT_TRUE(throws([&] { kfuse::binary(b.f({2, 3}), b.d({2, 3}), kfuse::BinaryKind::sub); },
                     ErrorCategory::invalid_argument, {"sub", "dtype", "float32", "float64"}));
  // A typed pointer of the wrong type.
  EXPECT_TRUE(throws([&] { b.f({2}).ptr<double>("myop"); }, ErrorCategory::unsupported, {"myop", "float64", "float32"}));
}

TEST(Errors, ElementCountOverflow) {
  const int64_t big = int64_t(1) << 32;
  EXPECT_TRUE(throws([&] { kfuse::checked_numel({big, big}, "myop", "myarg"); }, ErrorCategory::overflow,
                     {"myop", "myarg", "[4294967296, 4294967296]", "2^63-1"}));
  EXPECT_TRUE(throws([&] { kfuse::checked_numel({3, std::numeric_limits<int64_t>::max()}, "myop", "x"); },
                     ErrorCategory::overflow, {"myop", "x"}));
  EXPECT_EQ(kfuse::checked_numel({big, big / 2 - 1}, "myop", "x"), big * (big / 2 - 1));  // just below: fine
  EXPECT_EQ(kfuse::checked_numel({big, 0, big, big}, "myop", "x"), 0);                  // a zero extent: no overflow
  // ... but a pipeline's shapes must keep every product of extents in 64 bits (its rows, its strides).
  EXPECT_TRUE(throws([&] { kfuse::checked_extents({big, 0, big, big}, "myop", "x"); }, ErrorCategory::overflow,
                     {"myop", "x", "empty", "nonzero extents", "2^63-1"}));
  EXPECT_EQ(kfuse::checked_extents({big, 0, big / 2 - 1}, "myop", "x"), 0);
  EXPECT_EQ(kfuse::checked_extents({3, 5}, "myop", "x"), 15);
  EXPECT_TRUE(throws([&] { kfuse::checked_numel({2, -1}, "myop", "x"); }, ErrorCategory::invalid_argument,
                     {"myop", "x", "negative"}));

  // A view whose shape overflows, given to every op: the op and the argument are named.
  Buffers b;
  const TensorView huge = b.f({big, big, 4});
  EXPECT_TRUE(throws([&] { kfuse::unary(huge, kfuse::Unary{kfuse::UnaryKind::relu}); }, ErrorCategory::overflow,
                     {"relu", "input", "2^63-1"}));
  EXPECT_TRUE(throws([&] { kfuse::reduce(huge, kfuse::ReduceKind::sum, {0}, false); }, ErrorCategory::overflow,
                     {"sum", "input"}));
  EXPECT_TRUE(throws([&] { kfuse::softmax(huge, 0); }, ErrorCategory::overflow, {"softmax", "input"}));
  EXPECT_TRUE(throws([&] { kfuse::binary(huge, 1.0, kfuse::BinaryKind::add); }, ErrorCategory::overflow, {"add", "lhs"}));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.f({1}), huge, kfuse::BinaryKind::max); }, ErrorCategory::overflow,
                     {"max", "rhs"}));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({big, big, 2, 2}), b.f({big, 1, 1, 1}), std::nullopt, {}); },
                     ErrorCategory::overflow, {kConv, "input"}));
  // Shape fine, but the strides reach past 2^63-1 elements.
  TensorView far = b.f({4, 2});
  far.strides = {int64_t(1) << 62, 1};
  EXPECT_TRUE(throws([&] { kfuse::unary(far, kfuse::Unary{kfuse::UnaryKind::neg}); }, ErrorCategory::overflow,
                     {"neg", "input", "strides", "2^63-1"}));
  // The conv's output element count overflows although its inputs do not.
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d_shape({big, 1, 1, 1}, {1, big, 1, 1}, std::nullopt, {}); },
                     ErrorCategory::overflow, {kConv, "output"}));
  // Tensor::empty: element count, then bytes past size_t.
  EXPECT_TRUE(throws([&] { Tensor::empty({big, big}, DType::f32); }, ErrorCategory::overflow, {"Tensor::empty", "shape"}));
  EXPECT_TRUE(throws([&] { Tensor::empty({int64_t(1) << 62, 4}, DType::f64); }, ErrorCategory::overflow,
                     {"Tensor::empty", "2^63-1"}));
  EXPECT_TRUE(throws([&] { Tensor::empty({int64_t(1) << 61}, DType::f64); }, ErrorCategory::overflow,
                     {"Tensor::empty", "[2305843009213693952]", "bytes"}));
}

TEST(Errors, UnsupportedDtypeOnKokkos) {
  Buffers b;
  const std::vector<std::string> f16 = {"float16", "Kokkos"};
  auto with = [](std::string op, std::vector<std::string> parts) {
    parts.insert(parts.begin(), std::move(op));
    return parts;
  };
  EXPECT_TRUE(throws([&] { kfuse::unary(b.h({2, 3}), kfuse::Unary{kfuse::UnaryKind::tanh}); }, ErrorCategory::unsupported,
                     with("tanh", f16)));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.h({2, 3}), b.h({3}), kfuse::BinaryKind::div); }, ErrorCategory::unsupported,
                     with("div", f16)));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.h({2, 3}), 2.0, kfuse::BinaryKind::mul); }, ErrorCategory::unsupported,
                     with("mul", f16)));
  EXPECT_TRUE(throws([&] { kfuse::reduce(b.h({2, 3}), kfuse::ReduceKind::min, {1}, false); }, ErrorCategory::unsupported,
                     with("min", f16)));
  EXPECT_TRUE(throws([&] { kfuse::softmax(b.h({2, 3}), 1); }, ErrorCategory::unsupported, with("softmax", f16)));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.h({1, 2, 3, 3}), b.h({2, 1, 2, 2}), std::nullopt, {}); },
                     ErrorCategory::unsupported, with(kConv, f16)));
  EXPECT_TRUE(throws([&] { kfuse::unary(b.bf({4}), kfuse::Unary{}); }, ErrorCategory::unsupported,
                     {"relu", "bfloat16"}));
}

// CUDA memory when Kokkos runs on the host, host memory when it runs on CUDA.
TEST(Errors, MemoryTheKokkosBackendCannotAccess) {
  Buffers b;
  const std::string memory = std::string(kfuse::to_string(b.foreign({1}).memory)) + " memory";
  const std::vector<std::string> parts = {memory, "Kokkos backend"};
  auto with = [](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  EXPECT_TRUE(throws([&] { kfuse::unary(b.foreign({2, 3}), kfuse::Unary{kfuse::UnaryKind::exp}); },
                     ErrorCategory::unsupported, with({"exp", "input"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.f({2, 3}), b.foreign({3}), kfuse::BinaryKind::add); },
                     ErrorCategory::unsupported, with({"add", "rhs"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::binary(b.foreign({2, 3}), 1.0, kfuse::BinaryKind::add); }, ErrorCategory::unsupported,
                     with({"add", "lhs"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::reduce(b.foreign({2, 3}), kfuse::ReduceKind::sum, {1}, false); },
                     ErrorCategory::unsupported, with({"sum", "input"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::softmax(b.foreign({2, 3}), 0); }, ErrorCategory::unsupported,
                     with({"softmax", "input"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 2, 3, 3}), b.foreign({2, 1, 2, 2}), std::nullopt, {}); },
                     ErrorCategory::unsupported, with({kConv, "weight"}, parts)));
  EXPECT_TRUE(throws([&] { kfuse::conv_transpose2d(b.f({1, 2, 3, 3}), b.f({2, 1, 2, 2}), b.foreign({1}), {}); },
                     ErrorCategory::unsupported, with({kConv, "bias"}, parts)));
}

TEST(Errors, CudaTensorWithoutCudaOrWithoutGpu) {
  float x[3] = {1, 2, 3};
#ifdef KFUSE_HAVE_CUDA
  constexpr bool cuda_runtime = true;
#else
  constexpr bool cuda_runtime = kfuse::kKokkosOnCuda;  // kfuse then allocates through the CUDA runtime too
#endif
  if (cuda_runtime) {
    // Built with CUDA: on a machine with a GPU the round trip works; without
    // one, the allocation is a clean backend error naming what failed.
    try {
      Tensor d = Tensor::copy_of(TensorView::of(x, {3}), Memory::cuda);
      Tensor back = Tensor::copy_of(d.view(), Memory::host);
      EXPECT_EQ(back.data<float>()[2], 3.0f);
    } catch (const kfuse::Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::backend) << e.what();
      EXPECT_NE(std::string(e.what()).find("allocating 12 bytes of device memory"), std::string::npos) << e.what();
    }
  } else {
    // Without CUDA device memory cannot be allocated.
    EXPECT_TRUE(throws([&] { Tensor::empty({2, 3}, DType::f32, Memory::cuda); }, ErrorCategory::unsupported,
                       {"without CUDA"}));
    EXPECT_TRUE(throws([&] { Tensor::copy_of(TensorView::of(x, {3}), Memory::cuda); }, ErrorCategory::unsupported,
                       {"without CUDA"}));
  }
}

TEST(Errors, MalformedViews) {
  Buffers b;
  TensorView bad_strides = b.f({2, 2});
  bad_strides.strides = {1};
  EXPECT_TRUE(throws([&] { kfuse::unary(bad_strides, kfuse::Unary{}); }, ErrorCategory::invalid_argument,
                     {"relu", "input", "1 strides", "rank 2"}));
  const TensorView null_data(nullptr, DType::f32, Shape{2}, kfuse::kokkos_memory());
  EXPECT_TRUE(throws([&] { kfuse::softmax(null_data, 0); }, ErrorCategory::invalid_argument, {"softmax", "input", "null"}));
  const TensorView negative = b.f({2, -1});
  EXPECT_TRUE(throws([&] { kfuse::reduce(negative, kfuse::ReduceKind::sum, {0}, false); }, ErrorCategory::invalid_argument,
                     {"sum", "input", "negative", "[2, -1]"}));
  const TensorView rank9 = b.f(Shape(9, 1));
  EXPECT_TRUE(throws([&] { kfuse::unary(rank9, kfuse::Unary{}); }, ErrorCategory::unsupported, {"relu", "rank 9", "8"}));
}

TEST(Errors, UnknownOpNames) {
  EXPECT_TRUE(throws([&] { kfuse::unary_kind_from("swish", "spec"); }, ErrorCategory::invalid_argument,
                     {"spec", "unknown unary op 'swish'", "silu"}));
  EXPECT_TRUE(throws([&] { kfuse::binary_kind_from("pow", "spec"); }, ErrorCategory::invalid_argument,
                     {"spec", "'pow'", "add"}));
  EXPECT_TRUE(throws([&] { kfuse::reduce_kind_from("prod", "spec"); }, ErrorCategory::invalid_argument,
                     {"spec", "'prod'", "logsumexp"}));
  EXPECT_EQ(kfuse::unary_kind_from("gelu_tanh", "spec"), kfuse::UnaryKind::gelu_tanh);
}

// kfuse's environment switches are read strictly: a value the variable does
// not take names the variable, the value and what it takes.
TEST(Errors, EnvironmentSwitchesAreReadStrictly) {
  const char* name = "KFUSE_TEST_SWITCH";
  const auto refused = [&](const char* value, const std::function<void()>& read, const std::string& takes) {
    const EnvVar v(name, value);
    try {
      read();
      ADD_FAILURE() << name << "=" << value << " accepted";
    } catch (const kfuse::Error& e) {
      EXPECT_EQ(e.category(), kfuse::ErrorCategory::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(std::string(name) + " is '" + value + "'; expected " + takes),
                std::string::npos)
          << e.what();
    }
  };
  using kfuse::detail::env_choice;
  using kfuse::detail::env_count;
  using kfuse::detail::env_flag;
  {
    const EnvVar unset(name, nullptr);
    EXPECT_FALSE(env_flag(name).has_value());
    EXPECT_FALSE(env_count(name).has_value());
    EXPECT_FALSE(env_choice(name, {"a", "b"}).has_value());
  }
  {
    const EnvVar empty(name, "");
    EXPECT_FALSE(env_count(name).has_value());
  }
  {
    const EnvVar one(name, "1");
    EXPECT_EQ(env_flag(name), std::optional<bool>(true));
    EXPECT_EQ(env_count(name), std::optional<int64_t>(1));
  }
  {
    const EnvVar zero(name, "0");
    EXPECT_EQ(env_flag(name), std::optional<bool>(false));
  }
  {
    const EnvVar big(name, "4096");
    EXPECT_EQ(env_count(name), std::optional<int64_t>(4096));
  }
  {
    const EnvVar b(name, "b");
    EXPECT_EQ(env_choice(name, {"a", "b"}), std::optional<std::size_t>(1));
  }
  for (const char* bad : {"yes", "2", "01", " 1"}) refused(bad, [&] { env_flag(name); }, "0 or 1");
  for (const char* bad : {"-1", "3x", "+3", " 3", "many", "99999999999999999999"})
    refused(bad, [&] { env_count(name); }, "a whole number >= 0");
  refused("B", [&] { env_choice(name, {"a", "b"}); }, "one of a, b");
}

}  // namespace
}  // namespace kfuse_test
