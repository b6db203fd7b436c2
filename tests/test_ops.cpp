// Every kfuse op against the independent fp64 reference (reference.hpp), in
// fp32 and fp64, on seeded random inputs, odd shapes, strided views and the
// NaN/inf cases whose semantics PyTorch fixes.
//
// Tolerances. Inputs are generated in fp64 and rounded to T; the reference
// computes on exactly those rounded values in fp64, so the only differences
// are kfuse's rounding errors in T (plus the reference's own, ~1e-16, which
// matters only for T = fp64). Each reference element carries an error scale
// s[i] derived from a standard forward error bound (details at each reference
// function): an fp sum of K terms is within gamma_K * sum|terms| ~ K*u*sum|terms|
// of the exact sum (u = eps/2: kfuse accumulates fp32 inputs in fp32 and fp64
// in fp64), one libm call is within a few ulp, and cancellation in
// 1 + erf(x) is covered by an absolute |x| term. A finite element passes when
//     |out - ref| <= kFactor * eps(T) * s[i] + 1e4 * min_normal(T)
// with kFactor = 4 (2 from u -> eps, 2 of slack for libm ulp errors and the
// reference's own rounding at fp64); the absolute term only matters for
// subnormal results (e.g. sigmoid(-100) in fp32). The worst-case bounds grow
// like K, while rounding errors of a sum grow like sqrt(K) in practice, so in
// addition the norm-wise error ||out - ref||_2 / ||mag||_2 must stay below
// 64 * eps(T) (7.6e-6 fp32, 1.4e-14 fp64), where mag[i] is the natural
// magnitude of the result (|ref| for elementwise ops, sum|terms| for sums, so
// cancellation does not count against kfuse): this catches a small systematic
// error, e.g. a mean divided by K - 1 or a gelu constant off in the 4th digit,
// that hides inside the worst-case bounds. Sums of 4000+ terms get 256 * eps
// (a random walk of 4000 roundings is ~u * sqrt(4000) ~ 4e-6 in fp32).
// Sums of dyadic values (k / 64) are exact in fp32 in any order: those are
// checked against the final rounding only (err = |ref|).
// NaN must match NaN and +-inf must match exactly, always.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kfuse/detail/math.hpp"
#include "kfuse/ops.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using kfuse::BinaryKind;
using kfuse::ConvTranspose2dParams;
using kfuse::ReduceKind;
using kfuse::Tensor;
using kfuse::Unary;
using kfuse::UnaryKind;

constexpr double kFactor = 4.0;

template <class T>
class Ops : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Ops, Types);

// ---------------------------------------------------------------------------
// reduce_push_n (four values pushed as one block; logsumexp merges the block
// by its max) against four pushes one by one, from fresh and running states,
// with NaN and infinities among the values: the same result, NaN where NaN.

TEST(ReduceMath, BlockPushesMatchOneByOne) {
  using kfuse::detail::ReduceAcc;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-30.0f, 30.0f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const auto value = [&]() {
    const int pick = int(rng() % 16);
    return pick == 0 ? nan : pick == 1 ? inf : pick == 2 ? -inf : u(rng);
  };
  for (kfuse::ReduceKind k : {kfuse::ReduceKind::sum, kfuse::ReduceKind::mean, kfuse::ReduceKind::max,
                              kfuse::ReduceKind::min, kfuse::ReduceKind::logsumexp})
    for (int trial = 0; trial < 2000; ++trial) {
      ReduceAcc<float> one = kfuse::detail::reduce_init<float>(k);
      for (int i = 0, before = trial % 3; i < before; ++i) kfuse::detail::reduce_push(k, one, value());
      ReduceAcc<float> block = one;
      float v[4];
      for (float& x : v) x = value();
      for (float x : v) kfuse::detail::reduce_push(k, one, x);
      kfuse::detail::reduce_push_n(k, block, v);
      const float a = kfuse::detail::reduce_finish(k, one, 7), b = kfuse::detail::reduce_finish(k, block, 7);
      const std::string what = kfuse::detail::cat(kfuse::to_string(k), " values ", v[0], " ", v[1], " ", v[2], " ",
                                                  v[3], ": ", a, " one by one, ", b, " as a block");
      ASSERT_EQ(std::isnan(a), std::isnan(b)) << what;
      if (std::isnan(a) || std::isinf(a)) {
        EXPECT_TRUE(std::isnan(a) || a == b) << what;
      } else {
        EXPECT_NEAR(a, b, 2e-6f * std::max(1.0f, std::fabs(a))) << what;
      }
    }
}

// ---------------------------------------------------------------------------
// Indexer: the squeezed, merged axes and the reciprocal division give the
// offsets of the plain row-major walk, below and above 2^32, with broadcast
// (zero) strides, extents of 1, extents up to 2^31 and negative strides.

int64_t plain_offset(const kfuse::Shape& size, const kfuse::Shape& stride, int64_t linear) {
  int64_t off = 0;
  for (int d = int(size.size()) - 1; d >= 0; --d) {
    off += (linear % size[std::size_t(d)]) * stride[std::size_t(d)];
    linear /= size[std::size_t(d)];
  }
  return off;
}

TEST(Indexer, OffsetsMatchThePlainWalk) {
  std::mt19937_64 rng(5);
  const std::vector<std::pair<kfuse::Shape, kfuse::Shape>> cases = {
      {{2, 3, 1, 5}, {15, 5, 5, 1}},                 // contiguous: one axis
      {{4, 1, 7, 9}, {0, 0, 1, 0}},                   // a per-row operand broadcast over 4 x 9
      {{3, 64, 256, 256}, {0, 1, 0, 0}},              // a per-channel operand
      {{5, 6, 7}, {-42, 7, -1}},                      // negative strides
      {{1, 1, 1}, {3, 2, 1}},                         // one element
      {{3, 1 << 16, 1 << 15}, {int64_t(1) << 31, 1 << 15, 1}},  // 2^32 and more elements
      {{1 << 16, 1 << 16}, {1, 1 << 16}},             // 2^32 elements: the last index is 2^32 - 1
      {{(1 << 16) + 1, 1 << 16}, {1, (1 << 16) + 1}},  // just past 2^32
      {{int64_t(1) << 31, 3}, {1, int64_t(1) << 31}},  // an extent of 2^31
      {{int64_t(1) << 31 | 1, 2}, {2, 1}},           // past 2^31: the 64-bit division only
      {{7, 11, 13, 17, 19, 23, 29, 31}, {0, 1, 0, 0, 3, 0, 0, 1}},
  };
  for (const auto& [size, stride] : cases) {
    const kfuse::Indexer ix = kfuse::make_indexer(size, stride);
    int64_t n = 1;
    for (int64_t s : size) n *= s;
    std::vector<int64_t> probes = {0, 1, n - 1, n / 2, std::min<int64_t>(n - 1, (int64_t(1) << 32) - 1),
                                   std::min<int64_t>(n - 1, int64_t(1) << 32)};
    for (int k = 0; k < 2000; ++k) probes.push_back(int64_t(rng() % uint64_t(n)));
    for (int64_t i : probes) {
      ASSERT_EQ(ix.offset(i), plain_offset(size, stride, i)) << kfuse::to_string(size) << " at " << i;
      // run: when it answers true, every offset of the run is first + k * step;
      // at the step of each axis (the product of the extents inside it: 1 for
      // the innermost) and at a step of 2.
      std::vector<int64_t> steps = {2};
      for (std::size_t a = 0; a < size.size(); ++a) {
        int64_t inner = 1;
        for (std::size_t e = a + 1; e < size.size(); ++e) inner *= size[e];
        steps.push_back(inner);
      }
      int64_t first = -1, step = -1;
      for (int64_t di : steps) {
        const int64_t count = 1 + std::min<int64_t>(int64_t(rng() % 8), (n - 1 - i) / di);
        if (ix.run(i, di, count, first, step)) {
          for (int64_t k = 0; k < count; ++k)
            ASSERT_EQ(plain_offset(size, stride, i + k * di), first + k * step)
                << kfuse::to_string(size) << " at " << i << " + " << k << " x " << di << " of " << count;
        }
      }
      ASSERT_TRUE(ix.run(i, 1, 1, first, step));
      ASSERT_EQ(first, plain_offset(size, stride, i));
      // At step 0 one index count times: always a run (a reduction's operand along its row).
      first = step = -1;
      ASSERT_TRUE(ix.run(i, 0, 7, first, step));
      ASSERT_EQ(first, plain_offset(size, stride, i));
      ASSERT_EQ(step, 0);
    }
    EXPECT_LE(ix.rank, int(size.size()));
  }
  // Squeezed and merged: a per-channel operand over NCHW walks 3 axes; contiguous data 1.
  const kfuse::Indexer per_channel = kfuse::make_indexer({3, 64, 256, 256}, {0, 1, 0, 0});
  EXPECT_EQ(per_channel.rank, 3);
  int64_t first = 0, step = 0;
  EXPECT_TRUE(per_channel.run(65536 * 5 + 100, 1, 8, first, step));  // 8 values inside one channel's plane
  EXPECT_EQ(first, 5);
  EXPECT_EQ(step, 0);
  EXPECT_FALSE(per_channel.run(65536 * 5 + 65530, 1, 8, first, step));  // across two channels
  // Across channels at the step H x W (one pixel, 4 channels), until the run leaves the sample.
  EXPECT_TRUE(per_channel.run(65536 * (64 + 5) + 100, 65536, 4, first, step));
  EXPECT_EQ(first, 5);
  EXPECT_EQ(step, 1);
  EXPECT_TRUE(per_channel.run(65536 * 60 + 100, 65536, 4, first, step));
  EXPECT_FALSE(per_channel.run(65536 * 61 + 100, 65536, 4, first, step));
  // Along the innermost walked axis: a unit step, until the run leaves it.
  const kfuse::Indexer per_row = kfuse::make_indexer({4, 9}, {0, 1});
  EXPECT_TRUE(per_row.run(9 * 2 + 1, 1, 8, first, step));
  EXPECT_EQ(first, 1);
  EXPECT_EQ(step, 1);
  EXPECT_FALSE(per_row.run(9 * 2 + 1, 1, 9, first, step));
  EXPECT_TRUE(per_row.run(9 * 2 + 1, 2, 4, first, step));  // a step of 2 inside the row
  EXPECT_EQ(step, 2);
  EXPECT_EQ(kfuse::make_indexer({2, 3, 1, 5}, {15, 5, 5, 1}).rank, 1);
  EXPECT_TRUE(kfuse::make_indexer({2, 3, 1, 5}, {15, 5, 5, 1}).is_dense());
  EXPECT_FALSE(kfuse::make_indexer({2, 3}, {0, 1}).is_dense());
  // Extents of 0: nothing is walked; the axes are kept as they are.
  EXPECT_EQ(kfuse::make_indexer({2, 0, 1}, {0, 1, 1}).rank, 3);
  // The 32-bit path exactly where every index fits 32 bits.
  EXPECT_TRUE(kfuse::make_indexer({1 << 16, 1 << 16}, {1, 1 << 16}).fast);
  EXPECT_FALSE(kfuse::make_indexer({(1 << 16) + 1, 1 << 16}, {1, (1 << 16) + 1}).fast);
  EXPECT_FALSE(kfuse::make_indexer({2, int64_t(1) << 31, 2}, {0, 1, 0}).fast);  // broadcast axes count too
  EXPECT_TRUE(per_channel.fast);
}

// ---------------------------------------------------------------------------
// The reference itself, on cases small enough to check by hand.

TEST(Reference, ConvTransposeByHand) {
  // x = [[1, 2], [3, 4]], w = [[1, 10], [100, 1000]], stride 1: each input
  // pixel stamps w at its position.
  const Ref x = make_ref({1, 1, 2, 2}, {1, 2, 3, 4});
  const Ref w = make_ref({1, 1, 2, 2}, {1, 10, 100, 1000});
  const Ref y = conv_transpose2d_ref(x, w, nullptr, ConvTranspose2dParams{});
  ASSERT_EQ(y.shape, (Shape{1, 1, 3, 3}));
  const std::vector<double> want{1, 12, 20, 103, 1234, 2040, 300, 3400, 4000};
  EXPECT_EQ(y.v, want);
  // stride 2, padding 1, output_padding 1, bias 0.5: Hout = 1*2 - 2 + 1 + 1 + 1 = 3.
  const Ref b = make_ref({1}, {0.5});
  ConvTranspose2dParams p;
  p.with_stride(2).with_padding(1).with_output_padding(1);
  const Ref y2 = conv_transpose2d_ref(x, w, &b, p);
  ASSERT_EQ(y2.shape, (Shape{1, 1, 3, 3}));
  // Uncropped 4x4 output is [[1,10,2,20],[100,1000,200,2000],[3,30,4,40],[300,3000,400,4000]];
  // padding 1 drops row/col 0, output_padding adds one row/col at the end (beyond: zero).
  const std::vector<double> want2{1000.5, 200.5, 2000.5, 30.5, 4.5, 40.5, 3000.5, 400.5, 4000.5};
  EXPECT_EQ(y2.v, want2);
}

TEST(Reference, ReductionsAndSoftmaxByHand) {
  const Ref x = make_ref({2, 3}, {1, -2, 3, kNaN, 0, -kInf});
  EXPECT_EQ(reduce_ref(x, ReduceKind::sum, {1}, false).v[0], 2.0);
  EXPECT_TRUE(std::isnan(reduce_ref(x, ReduceKind::max, {1}, false).v[1]));
  EXPECT_EQ(reduce_ref(x, ReduceKind::min, {0}, true).shape, (Shape{1, 3}));
  const Ref lse = reduce_ref(make_ref({1, 3}, {-kInf, -kInf, -kInf}), ReduceKind::logsumexp, {1}, false);
  EXPECT_EQ(lse.v[0], -kInf);
  const Ref lse2 = reduce_ref(make_ref({1, 2}, {std::log(2.0), std::log(6.0)}), ReduceKind::logsumexp, {-1}, false);
  EXPECT_NEAR(lse2.v[0], std::log(8.0), 1e-15);
  const Ref sm = softmax_ref(make_ref({2}, {0.0, std::log(3.0)}), 0);
  EXPECT_NEAR(sm.v[0], 0.25, 1e-15);
  EXPECT_NEAR(sm.v[1], 0.75, 1e-15);
  Shape s;
  EXPECT_TRUE(broadcast_ref_shape({4, 1, 5}, {3, 1}, s));
  EXPECT_EQ(s, (Shape{4, 3, 5}));
  EXPECT_FALSE(broadcast_ref_shape({2, 3}, {4}, s));
  EXPECT_EQ(unary_value(Unary{UnaryKind::clamp, 2.0, 1.0}, 0.0), 1.0);  // torch.clamp: max wins
  EXPECT_NEAR(unary_value(Unary{UnaryKind::gelu}, 1.0), 0.8413447460685429, 1e-15);
  EXPECT_NEAR(unary_value(Unary{UnaryKind::gelu_tanh}, 1.0), 0.8411919906082768, 1e-15);
  EXPECT_NEAR(unary_value(Unary{UnaryKind::mish}, 1.0), 0.8650983882673103, 1e-15);
}

// ---------------------------------------------------------------------------
// conv_transpose2d

struct ConvCase {
  std::string name;
  int64_t N, Cin, H, W, Cout, kH, kW;
  ConvTranspose2dParams p;
  bool bias = true;
  Layout x_layout = Layout::contiguous;
  Layout w_layout = Layout::contiguous;
  Layout b_layout = Layout::contiguous;
};

std::string describe(const ConvCase& c) {
  std::ostringstream os;
  os << c.name << ": x [" << c.N << ", " << c.Cin << ", " << c.H << ", " << c.W << "] (" << layout_name(c.x_layout)
     << "), w [" << c.Cin << ", " << c.Cout / c.p.groups << ", " << c.kH << ", " << c.kW << "] ("
     << layout_name(c.w_layout) << "), stride (" << c.p.stride[0] << ", " << c.p.stride[1] << "), padding ("
     << c.p.padding[0] << ", " << c.p.padding[1] << "), output_padding (" << c.p.output_padding[0] << ", "
     << c.p.output_padding[1] << "), dilation (" << c.p.dilation[0] << ", " << c.p.dilation[1] << "), groups "
     << c.p.groups << (c.bias ? std::string(", bias (") + layout_name(c.b_layout) + ")" : ", no bias");
  return os.str();
}

ConvTranspose2dParams params(std::array<int64_t, 2> s, std::array<int64_t, 2> pad, std::array<int64_t, 2> op,
                             std::array<int64_t, 2> d, int64_t g) {
  ConvTranspose2dParams p;
  p.stride = s;
  p.padding = pad;
  p.output_padding = op;
  p.dilation = d;
  p.groups = g;
  return p;
}

template <class T>
void check_conv(const ConvCase& c, Rng& rng) {
  SCOPED_TRACE(describe(c));
  const HostTensor<T> x = random_tensor<T>({c.N, c.Cin, c.H, c.W}, rng, c.x_layout, 0.0, 1.0);  // torch.rand-like
  const HostTensor<T> w = random_tensor<T>({c.Cin, c.Cout / c.p.groups, c.kH, c.kW}, rng, c.w_layout, -1.0, 1.0);
  const HostTensor<T> b = random_tensor<T>({c.Cout}, rng, c.b_layout, -1.0, 1.0);
  const Ref want = conv_transpose2d_ref(x.ref(), w.ref(), c.bias ? &b.ref() : nullptr, c.p);
  try {
    const Tensor y = kfuse::conv_transpose2d(x, w, c.bias ? std::optional<kfuse::TensorView>(b.view()) : std::nullopt, c.p);
    EXPECT_TRUE(matches<T>(y, want, "conv_transpose2d", kFactor));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "conv_transpose2d threw on a valid configuration: " << e.what();
  }
}

std::vector<ConvCase> fixed_conv_cases() {
  using L = Layout;
  return {
      {"seed 1 shape (small)", 2, 4, 6, 6, 8, 3, 3, params({1, 1}, {0, 0}, {0, 0}, {1, 1}, 1)},
      {"seed 2 shape (small)", 2, 4, 5, 5, 8, 3, 3, params({2, 2}, {1, 1}, {1, 1}, {1, 1}, 1)},
      {"stride > kernel", 1, 3, 4, 5, 2, 2, 2, params({3, 4}, {0, 0}, {0, 0}, {1, 1}, 1)},
      {"stride > kernel, output_padding", 2, 2, 3, 3, 3, 1, 2, params({3, 3}, {0, 1}, {2, 1}, {1, 1}, 1)},
      {"groups 2", 2, 4, 5, 4, 6, 3, 3, params({1, 1}, {1, 1}, {0, 0}, {1, 1}, 2)},
      {"groups 3, stride 2", 1, 6, 4, 4, 9, 3, 2, params({2, 2}, {0, 1}, {1, 0}, {1, 1}, 3)},
      {"depthwise (groups = Cin = Cout)", 2, 5, 4, 4, 5, 3, 3, params({1, 1}, {0, 0}, {0, 0}, {1, 1}, 5)},
      {"dilation 2", 1, 3, 5, 5, 4, 3, 3, params({1, 1}, {0, 0}, {0, 0}, {2, 2}, 1)},
      {"dilation 3 with output_padding 2 (op < dilation)", 1, 2, 4, 3, 3, 2, 3, params({1, 1}, {1, 2}, {2, 1}, {3, 3}, 1)},
      {"dilation and stride", 2, 3, 3, 4, 2, 3, 3, params({2, 3}, {2, 1}, {1, 2}, {2, 2}, 1)},
      {"1x1 input", 1, 3, 1, 1, 4, 3, 3, params({1, 1}, {0, 0}, {0, 0}, {1, 1}, 1)},
      {"1x1 input, stride 2, padding 1", 2, 2, 1, 1, 2, 4, 4, params({2, 2}, {1, 1}, {1, 0}, {1, 1}, 1)},
      {"1x1 kernel", 2, 3, 4, 5, 4, 1, 1, params({1, 1}, {0, 0}, {0, 0}, {1, 1}, 1)},
      {"1x1 kernel, stride 2", 1, 3, 3, 3, 2, 1, 1, params({2, 2}, {0, 0}, {1, 1}, {1, 1}, 1)},
      {"padding crops to 1x1 output", 1, 2, 2, 2, 3, 2, 2, params({1, 1}, {1, 1}, {0, 0}, {1, 1}, 1)},
      {"padding crops a 1x1 input to 1x1", 2, 2, 1, 1, 3, 3, 3, params({1, 1}, {1, 1}, {0, 0}, {1, 1}, 1)},
      {"non-square kernel 1x4", 2, 3, 4, 4, 2, 1, 4, params({1, 2}, {0, 1}, {0, 1}, {1, 1}, 1)},
      {"non-square kernel 5x2", 1, 2, 3, 6, 3, 5, 2, params({2, 1}, {2, 0}, {1, 0}, {1, 2}, 1)},
      {"per-axis everything different", 2, 4, 3, 5, 6, 2, 4, params({3, 1}, {1, 2}, {2, 0}, {1, 3}, 2)},
      {"N = 1, Cin = Cout = 1", 1, 1, 7, 3, 1, 3, 3, params({1, 1}, {1, 1}, {0, 0}, {1, 1}, 1)},
      {"no bias", 2, 3, 4, 4, 5, 3, 3, params({2, 2}, {1, 1}, {1, 1}, {1, 1}, 1), false},
      {"strided input (every other)", 2, 3, 4, 5, 4, 3, 3, params({2, 2}, {1, 1}, {1, 1}, {1, 1}, 1), true,
       L::every_other, L::contiguous, L::every_other},
      {"permuted input and weight", 2, 4, 5, 3, 6, 3, 2, params({1, 2}, {1, 0}, {0, 1}, {1, 1}, 2), true, L::permuted,
       L::permuted},
      {"permuted every-other input and weight", 1, 4, 3, 4, 4, 2, 3, params({2, 1}, {0, 1}, {1, 0}, {1, 2}, 2), true,
       L::permuted_every_other, L::permuted_every_other, L::every_other},
      {"broadcast batch (stride 0 on N)", 3, 2, 3, 3, 3, 3, 3, params({1, 1}, {0, 0}, {0, 0}, {1, 1}, 1), true,
       L::broadcast_leading},
  };
}

TYPED_TEST(Ops, ConvTranspose2dFixedCases) {
  Rng rng(0xC0417);
  for (const ConvCase& c : fixed_conv_cases()) check_conv<TypeParam>(c, rng);
}

// A random valid configuration: every parameter drawn independently per axis.
ConvCase random_conv_case(Rng& rng, int i) {
  ConvCase c;
  c.name = "random #" + std::to_string(i);
  const int64_t G = rng.pick(std::vector<int64_t>{1, 1, 1, 2, 3});
  c.N = rng.integer(1, 3);
  c.Cin = G * rng.integer(1, 4);
  c.Cout = G * rng.integer(1, 4);
  c.H = rng.coin(0.15) ? 1 : rng.integer(1, 7);
  c.W = rng.coin(0.15) ? 1 : rng.integer(1, 7);
  c.kH = rng.integer(1, 5);
  c.kW = rng.integer(1, 5);
  c.p.groups = G;
  const int64_t in[2] = {c.H, c.W}, k[2] = {c.kH, c.kW};
  for (int a = 0; a < 2; ++a) {
    c.p.stride[a] = rng.integer(1, 4);
    c.p.dilation[a] = rng.coin(0.6) ? 1 : rng.integer(2, 3);
    c.p.output_padding[a] = rng.integer(0, std::max(c.p.stride[a], c.p.dilation[a]) - 1);
    // Hout >= 1 <=> 2p <= (in-1)s + d(k-1) + op.
    const int64_t pmax = ((in[a] - 1) * c.p.stride[a] + c.p.dilation[a] * (k[a] - 1) + c.p.output_padding[a]) / 2;
    c.p.padding[a] = rng.coin(0.4) ? 0 : rng.integer(0, pmax);
  }
  c.bias = rng.coin(0.7);
  c.x_layout = rng.pick(strided_layouts());
  c.w_layout = rng.pick(strided_layouts());
  c.b_layout = rng.coin() ? Layout::contiguous : Layout::every_other;
  return c;
}

TYPED_TEST(Ops, ConvTranspose2dRandomSweep) {
  Rng rng(20261123);
  constexpr int kConfigs = 300;
  // How many configurations exercise each feature: the sweep must not
  // degenerate into easy cases.
  std::map<std::string, int> seen;
  for (int i = 0; i < kConfigs; ++i) {
    const ConvCase c = random_conv_case(rng, i);
    const auto& p = c.p;
    for (int a = 0; a < 2; ++a) {
      const int64_t k = a == 0 ? c.kH : c.kW;
      seen["stride > kernel"] += p.stride[a] > k;
      seen["dilation > 1"] += p.dilation[a] > 1;
      seen["output_padding > 0"] += p.output_padding[a] > 0;
      seen["padding > 0"] += p.padding[a] > 0;
    }
    seen["groups > 1"] += p.groups > 1;
    seen["1x1 input"] += c.H == 1 && c.W == 1;
    seen["N = 1"] += c.N == 1;
    seen["non-square kernel"] += c.kH != c.kW;
    seen["per-axis different stride/padding/dilation"] +=
        p.stride[0] != p.stride[1] || p.padding[0] != p.padding[1] || p.dilation[0] != p.dilation[1];
    seen["strided input"] += c.x_layout != Layout::contiguous;
    seen["no bias"] += !c.bias;
    check_conv<TypeParam>(c, rng);
    if (::testing::Test::HasFailure()) return;  // one failing config is enough to read
  }
  for (const auto& [feature, count] : seen) EXPECT_GE(count, 10) << feature;
}

TYPED_TEST(Ops, ConvTranspose2dAccumulatesManyTerms) {
  // 32 input channels x 5x5 taps = 800 terms per output: exercises the
  // K*eps accumulation bound rather than a handful of products.
  using T = TypeParam;
  Rng rng(77);
  check_conv<T>({"K = 800", 1, 32, 6, 6, 3, 5, 5, params({1, 1}, {2, 2}, {0, 0}, {1, 1}, 1)}, rng);
}

// ---------------------------------------------------------------------------
// unary

std::vector<Unary> all_unary_ops() {
  using K = UnaryKind;
  return {
      {K::relu},
      {K::leaky_relu, 0.01},
      {K::leaky_relu, 0.2},
      {K::leaky_relu, 1.7},
      {K::leaky_relu, -0.5},
      {K::tanh},
      {K::sigmoid},
      {K::gelu},
      {K::gelu_tanh},
      {K::silu},
      {K::mish},
      {K::hardtanh, -1.0, 1.0},
      {K::hardtanh, -0.3, 2.5},
      {K::hardswish},
      {K::clamp, 0.0, 6.0},
      {K::clamp, -2.5, -0.5},
      {K::clamp, 0.1, 0.1},
      {K::exp},
      {K::log},
      {K::neg},
      {K::abs},
  };
}

std::string describe(const Unary& u) {
  std::ostringstream os;
  os << kfuse::to_string(u.kind);
  if (u.kind == UnaryKind::leaky_relu) os << "(" << u.a << ")";
  if (u.kind == UnaryKind::hardtanh || u.kind == UnaryKind::clamp) os << "(" << u.a << ", " << u.b << ")";
  return os.str();
}

// Values around every op's interesting points: 0 and signed zeros, tiny,
// the hardswish knees +-3, the mish/softplus threshold 20, large magnitudes,
// and a grid.
std::vector<double> unary_probe_values() {
  std::vector<double> v{0.0,   -0.0,   1e-30, -1e-30, 1e-7,  -1e-7,  1e-3,   -1e-3,  0.5,    -0.5,  1.0,
                        -1.0,  2.999, 3.0,   3.001,  -2.999, -3.0,   -3.001, 5.0,    -5.0,   6.0,   19.5,
                        19.99, 20.0,  20.01, 20.5,   21.0,   -19.99, -20.0,  -20.01, 30.0,   -30.0, 50.0,
                        -50.0, 87.0,  -87.0, 100.0,  -100.0, 1e4,    -1e4,   0.3,    -0.3,   2.5,   -2.5};
  for (double x = -25.0; x <= 25.0; x += 0.37) v.push_back(x);
  return v;
}

TYPED_TEST(Ops, UnaryProbeValues) {
  using T = TypeParam;
  const std::vector<double> vals = unary_probe_values();
  for (const Unary& u : all_unary_ops()) {
    SCOPED_TRACE(describe(u));
    for (Layout layout : {Layout::contiguous, Layout::every_other}) {
      const HostTensor<T> x({static_cast<int64_t>(vals.size())}, vals, layout);
      const Ref want = unary_ref(x.ref(), u);
      EXPECT_TRUE(matches<T>(kfuse::unary(x, u), want, describe(u) + " " + layout_name(layout), kFactor));
    }
  }
}

TYPED_TEST(Ops, UnaryRandomStrided4D) {
  using T = TypeParam;
  Rng rng(4242);
  for (const Unary& u : all_unary_ops()) {
    for (Layout layout : {Layout::contiguous, Layout::every_other, Layout::permuted, Layout::permuted_every_other,
                          Layout::broadcast_leading}) {
      const double lo = u.kind == UnaryKind::log ? 1e-3 : -8.0;
      const HostTensor<T> x = random_tensor<T>({2, 3, 5, 7}, rng, layout, lo, 8.0);
      const Ref want = unary_ref(x.ref(), u);
      EXPECT_TRUE(matches<T>(kfuse::unary(x, u), want, describe(u) + " " + layout_name(layout), kFactor));
    }
  }
}

TYPED_TEST(Ops, UnaryNaNAndInf) {
  // NaN propagates through every op (relu(NaN) = NaN, clamp(NaN) = NaN, as
  // PyTorch). +inf has a defined limit for every op; -inf only for the ops
  // that do not compute -inf * 0 (gelu, silu, mish, hardswish do: their
  // value there is implementation-defined, so it is not checked).
  using T = TypeParam;
  using K = UnaryKind;
  for (const Unary& u : all_unary_ops()) {
    std::vector<double> vals{kNaN, 1.0, kInf, -2.0, kNaN};
    const bool minus_inf_defined = u.kind != K::gelu && u.kind != K::gelu_tanh && u.kind != K::silu &&
                                   u.kind != K::mish && u.kind != K::hardswish;
    if (minus_inf_defined) vals.push_back(-kInf);
    const HostTensor<T> x({static_cast<int64_t>(vals.size())}, vals, Layout::contiguous);
    EXPECT_TRUE(matches<T>(kfuse::unary(x, u), unary_ref(x.ref(), u), describe(u), kFactor));
  }
  // Spelled out for relu: PyTorch keeps NaN, maps -inf to 0.
  const HostTensor<T> x({4}, {kNaN, -kInf, kInf, -0.5}, Layout::contiguous);
  const std::vector<double> y = read_values<T>(kfuse::unary(x, Unary{K::relu}).view());
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.0);
  EXPECT_EQ(y[2], kInf);
  EXPECT_EQ(y[3], 0.0);
}

TYPED_TEST(Ops, ClampWithMinAboveMaxGivesMax) {
  // torch.clamp: "If min is greater than max, all elements are set to max".
  using T = TypeParam;
  const HostTensor<T> x({5}, {-3.0, 0.5, 1.5, 2.5, 10.0}, Layout::contiguous);
  const Unary u{UnaryKind::clamp, 2.0, 1.0};
  EXPECT_TRUE(matches<T>(kfuse::unary(x, u), unary_ref(x.ref(), u), "clamp(2, 1)", kFactor));
}

TYPED_TEST(Ops, GeluExactAndTanhDiffer) {
  // The two gelu forms differ by up to ~5e-4 near |x| ~ 2: each must match
  // its own formula, so swapping them (or a wrong constant) fails.
  using T = TypeParam;
  const HostTensor<T> x({3}, {-2.0, 1.5, 2.2}, Layout::contiguous);
  const std::vector<double> exact = read_values<T>(kfuse::unary(x, Unary{UnaryKind::gelu}).view());
  const std::vector<double> approx = read_values<T>(kfuse::unary(x, Unary{UnaryKind::gelu_tanh}).view());
  for (std::size_t i = 0; i < exact.size(); ++i) EXPECT_GT(std::fabs(exact[i] - approx[i]), 1e-5) << i;
}

// ---------------------------------------------------------------------------
// binary

constexpr BinaryKind kAllBinary[] = {BinaryKind::add, BinaryKind::sub, BinaryKind::mul,
                                     BinaryKind::div, BinaryKind::min, BinaryKind::max};

struct ShapePair {
  Shape a, b;
};

std::vector<ShapePair> broadcast_cases() {
  return {
      {{2, 3, 4, 5}, {2, 3, 4, 5}},  // same shape
      {{2, 3, 4, 5}, {3, 1, 1}},     // per-channel constant, rank-different
      {{2, 3, 1, 1}, {3, 1, 1}},     // [N,C,1,1] with [C,1,1]
      {{3, 1, 1}, {2, 3, 4, 5}},     // lower rank on the left
      {{2, 3, 4, 5}, {5}},           // trailing axis
      {{2, 3, 4, 5}, {1}},           // one element
      {{2, 3, 4, 5}, {}},            // rank 0
      {{4, 1, 5}, {3, 1}},           // both broadcast: [4, 3, 5]
      {{2, 1, 4, 1}, {1, 3, 1, 5}},  // both broadcast, same rank
      {{1, 1, 1, 1}, {2, 3, 4, 5}},  // all ones on the left
      {{7}, {7}},                    // 1-D
  };
}

// Operand values: b stays away from 0 (for div), with both signs.
template <class T>
HostTensor<T> binary_operand(const Shape& s, Rng& rng, Layout layout, bool divisor) {
  std::vector<double> v = random_values(numel_of(s), divisor ? 0.5 : -4.0, 4.0, rng);
  if (divisor)
    for (double& e : v) e = rng.coin() ? e : -e;
  return HostTensor<T>(s, std::move(v), layout);
}

TYPED_TEST(Ops, BinaryBroadcast) {
  using T = TypeParam;
  Rng rng(31337);
  const std::vector<Layout> layouts = strided_layouts();
  int li = 0;
  for (const ShapePair& sp : broadcast_cases()) {
    for (BinaryKind k : kAllBinary) {
      const Layout la = layouts[li++ % layouts.size()], lb = layouts[li++ % layouts.size()];
      const HostTensor<T> a = binary_operand<T>(sp.a, rng, la, false);
      const HostTensor<T> b = binary_operand<T>(sp.b, rng, lb, k == BinaryKind::div);
      const Ref want = binary_ref(a.ref(), b.ref(), k);
      EXPECT_TRUE(matches<T>(kfuse::binary(a, b, k), want,
                             std::string(kfuse::to_string(k)) + " " + shape_str(sp.a) + " (" + layout_name(la) +
                                 ") with " + shape_str(sp.b) + " (" + layout_name(lb) + ")",
                             kFactor));
    }
  }
}

TYPED_TEST(Ops, BinaryScalar) {
  using T = TypeParam;
  Rng rng(99);
  for (BinaryKind k : kAllBinary) {
    for (double s : {0.5, -2.25, 0.1, 3.7, 1e-3, -0.0}) {
      if (k == BinaryKind::div && s == -0.0) continue;  // division by zero: below
      for (Layout layout : strided_layouts()) {
        const HostTensor<T> a = random_tensor<T>({3, 4, 5}, rng, layout, -4.0, 4.0);
        const Ref want = binary_scalar_ref(a.ref(), s, k);
        std::ostringstream what;
        what << kfuse::to_string(k) << " scalar " << s << " " << layout_name(layout);
        EXPECT_TRUE(matches<T>(kfuse::binary(a, s, k), want, what.str(), kFactor));
      }
    }
  }
  // x / 0 is +-inf, 0 / 0 is NaN.
  const HostTensor<T> a({3}, {2.0, -3.0, 0.0}, Layout::contiguous);
  EXPECT_TRUE(matches<T>(kfuse::binary(a, 0.0, BinaryKind::div), binary_scalar_ref(a.ref(), 0.0, BinaryKind::div),
                         "div by zero", kFactor));
}

TYPED_TEST(Ops, BinaryNaNAndInf) {
  // torch.minimum/maximum propagate NaN from either side; add of +inf and
  // -inf is NaN.
  using T = TypeParam;
  const HostTensor<T> a({6}, {kNaN, 1.0, kInf, -kInf, kNaN, 2.0}, Layout::contiguous);
  const HostTensor<T> b({6}, {1.0, kNaN, -kInf, 5.0, kNaN, kInf}, Layout::every_other);
  for (BinaryKind k : kAllBinary)
    EXPECT_TRUE(matches<T>(kfuse::binary(a, b, k), binary_ref(a.ref(), b.ref(), k), kfuse::to_string(k), kFactor));
  const std::vector<double> mx = read_values<T>(kfuse::binary(a, b, BinaryKind::max).view());
  EXPECT_TRUE(std::isnan(mx[0]));
  EXPECT_TRUE(std::isnan(mx[1]));
  EXPECT_EQ(mx[2], kInf);
  for (BinaryKind k : {BinaryKind::min, BinaryKind::max}) {
    const std::vector<double> y = read_values<T>(kfuse::binary(a, kNaN, k).view());
    for (double e : y) EXPECT_TRUE(std::isnan(e)) << kfuse::to_string(k) << " with scalar NaN";
  }
}

// ---------------------------------------------------------------------------
// reductions

constexpr ReduceKind kAllReduce[] = {ReduceKind::sum, ReduceKind::mean, ReduceKind::max, ReduceKind::min,
                                     ReduceKind::logsumexp};

std::string axes_str(const std::vector<int>& axes) {
  std::string s = "{";
  for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
  return s + "}";
}

TYPED_TEST(Ops, ReduceEverySubsetOfAxes) {
  // All 15 non-empty subsets of the axes of a 4-D tensor, keepdim on and
  // off, every reduction, every layout; every other subset spelled with
  // negative axes.
  using T = TypeParam;
  Rng rng(5150);
  const Shape shape{3, 4, 5, 6};
  int count = 0;
  for (unsigned mask = 1; mask < 16; ++mask) {
    std::vector<int> axes;
    for (int d = 0; d < 4; ++d)
      if (mask & (1u << d)) axes.push_back(mask % 2 ? d - 4 : d);
    for (bool keepdim : {false, true})
      for (ReduceKind k : kAllReduce)
        for (Layout layout : strided_layouts()) {
          // Dyadic inputs: sum/mean/max/min are exact up to the last rounding.
          const HostTensor<T> x(shape, dyadic_values(numel_of(shape), -3.0, 3.0, rng), layout);
          const Ref want = k == ReduceKind::logsumexp ? reduce_ref(x.ref(), k, axes, keepdim)
                                                      : tightened(reduce_ref(x.ref(), k, axes, keepdim));
          EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, axes, keepdim), want,
                                 std::string(kfuse::to_string(k)) + " over " + axes_str(axes) +
                                     (keepdim ? " keepdim " : " ") + layout_name(layout),
                                 kFactor));
          ++count;
        }
  }
  EXPECT_EQ(count, 15 * 2 * 5 * 4);
}

TYPED_TEST(Ops, ReduceLongRowsAndLaunchShapes) {
  // General (non-dyadic) values: 2000 to 12000 terms per output (the K*eps
  // bound), all-axes reductions to a single value, and explicit team sizes.
  using T = TypeParam;
  Rng rng(8);
  for (double lo : {0.0, -1.0}) {
    const HostTensor<T> x = random_tensor<T>({2, 3, 40, 50}, rng, Layout::permuted, lo, 1.0);
    for (ReduceKind k : kAllReduce)
      for (const std::vector<int>& axes : {std::vector<int>{2, 3}, std::vector<int>{0, 1, 2, 3}, std::vector<int>{1}})
        for (kfuse::TeamLaunch launch : {kfuse::TeamLaunch{}, kfuse::TeamLaunch{1, 1}}) {
          const Ref want = reduce_ref(x.ref(), k, axes, true);
          EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, axes, true, launch), want,
                                 std::string(kfuse::to_string(k)) + " over " + axes_str(axes), kFactor,
                                 256 * eps_of<T>()));
        }
  }
}

TYPED_TEST(Ops, LogsumexpIsMaxShifted) {
  // Values whose exp overflows (fp32: > 88.7, fp64: > 709.8) or underflows:
  // only a max-shifted logsumexp gets these right.
  using T = TypeParam;
  const HostTensor<T> x({3, 4}, {1000.0, 999.0, 998.5, 1000.0,     //
                                 -1000.0, -1001.0, -999.5, -1e4,   //
                                 88.0, 89.0, 90.0, -5.0},
                        Layout::contiguous);
  const Ref want = reduce_ref(x.ref(), ReduceKind::logsumexp, {1}, false);
  EXPECT_TRUE(matches<T>(kfuse::reduce(x, ReduceKind::logsumexp, {1}, false), want, "logsumexp", kFactor));
  EXPECT_NEAR(want.v[0], 1000.0 + std::log(2.0 + std::exp(-1.0) + std::exp(-1.5)), 1e-12);
}

// Rows chosen for PyTorch's NaN/inf rules.
template <class T>
HostTensor<T> special_rows(Layout layout) {
  return HostTensor<T>({9, 4},
                       {
                           kNaN, 1.0, 2.0, 3.0,        // NaN first
                           1.0, 2.0, 3.0, kNaN,        // NaN last
                           1.0, kInf, 2.0, 3.0,        // one +inf
                           -kInf, -kInf, -kInf, -kInf, // all -inf
                           -kInf, 1.0, -kInf, 2.0,     // -inf among finite
                           kInf, -kInf, 0.0, 1.0,      // +inf and -inf
                           kNaN, kInf, -kInf, 1.0,     // NaN with both infinities
                           kInf, kInf, 0.0, 1.0,       // two +inf
                           0.5, -0.25, 1.5, -2.0,      // finite control row
                       },
                       layout);
}

TYPED_TEST(Ops, ReduceNaNAndInf) {
  using T = TypeParam;
  for (Layout layout : {Layout::contiguous, Layout::permuted}) {
    const HostTensor<T> x = special_rows<T>(layout);
    for (ReduceKind k : kAllReduce) {
      EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, {1}, false), reduce_ref(x.ref(), k, {1}, false),
                             std::string(kfuse::to_string(k)) + " rows " + layout_name(layout), kFactor));
    }
    // Spelled out, so that the reference's own rules are pinned down too.
    const std::vector<double> mx = read_values<T>(kfuse::reduce(x, ReduceKind::max, {1}, false).view());
    const std::vector<double> mn = read_values<T>(kfuse::reduce(x, ReduceKind::min, {-1}, false).view());
    const std::vector<double> lse = read_values<T>(kfuse::reduce(x, ReduceKind::logsumexp, {1}, false).view());
    EXPECT_TRUE(std::isnan(mx[0]) && std::isnan(mx[1]) && std::isnan(mn[0]) && std::isnan(mn[1]));
    EXPECT_EQ(mx[2], kInf);
    EXPECT_EQ(mx[3], -kInf);
    EXPECT_EQ(mn[4], -kInf);
    EXPECT_TRUE(std::isnan(lse[0]) && std::isnan(lse[1]) && std::isnan(lse[6]));
    EXPECT_EQ(lse[2], kInf);   // any +inf -> +inf
    EXPECT_EQ(lse[3], -kInf);  // all -inf -> -inf
    EXPECT_EQ(lse[5], kInf);
    EXPECT_EQ(lse[7], kInf);
    EXPECT_NEAR(lse[4], std::log(std::exp(1.0) + std::exp(2.0)), 1e-6);
    // The same rows reduced along axis 0 of the transposed view.
    const HostTensor<T> xt = special_rows<T>(layout);
    kfuse::TensorView t = xt.view();
    std::swap(t.shape[0], t.shape[1]);
    std::swap(t.strides[0], t.strides[1]);
    const std::vector<double> lse_t = read_values<T>(kfuse::reduce(t, ReduceKind::logsumexp, {0}, false).view());
    for (std::size_t i = 0; i < lse.size(); ++i)
      EXPECT_TRUE((std::isnan(lse[i]) && std::isnan(lse_t[i])) || lse[i] == lse_t[i]) << "row " << i;
  }
}

// ---------------------------------------------------------------------------
// softmax

TYPED_TEST(Ops, SoftmaxEveryAxis) {
  using T = TypeParam;
  Rng rng(1701);
  for (int axis : {0, 1, 2, 3, -1, -2, -3, -4})
    for (Layout layout : strided_layouts()) {
      const HostTensor<T> x = random_tensor<T>({3, 4, 5, 6}, rng, layout, -6.0, 6.0);
      const Ref want = softmax_ref(x.ref(), axis);
      EXPECT_TRUE(matches<T>(kfuse::softmax(x, axis), want,
                             "softmax axis " + std::to_string(axis) + " " + layout_name(layout), kFactor));
    }
  // Rank 1 and length-1 axes.
  const HostTensor<T> v = random_tensor<T>({17}, rng, Layout::every_other, -2.0, 2.0);
  EXPECT_TRUE(matches<T>(kfuse::softmax(v, 0), softmax_ref(v.ref(), 0), "softmax rank 1", kFactor));
  const HostTensor<T> one = random_tensor<T>({4, 1, 3}, rng, Layout::permuted, -2.0, 2.0);
  EXPECT_TRUE(matches<T>(kfuse::softmax(one, 1), softmax_ref(one.ref(), 1), "softmax length-1 axis", kFactor));
  // A long row with explicit team sizes.
  const HostTensor<T> row = random_tensor<T>({2, 3000}, rng, Layout::contiguous, -10.0, 10.0);
  for (kfuse::TeamLaunch launch : {kfuse::TeamLaunch{}, kfuse::TeamLaunch{1, 1}})
    EXPECT_TRUE(matches<T>(kfuse::softmax(row, 1, launch), softmax_ref(row.ref(), 1), "softmax long rows", kFactor));
}

// Rows walked across (a reduction or softmax over C of NCHW: a thread an
// output, runs of columns loaded at once on a GPU; backends/kokkos/rows.hpp,
// kAhead) with whole runs and a partial one, in each layout.
TYPED_TEST(Ops, ColumnsOfWholeAndPartialRuns) {
  using T = TypeParam;
  Rng rng(2112);
  for (int64_t c : {8, 21})
    for (Layout layout : strided_layouts()) {
      const HostTensor<T> x = random_tensor<T>({2, c, 3, 5}, rng, layout, -6.0, 6.0);
      const std::string what = " over " + std::to_string(c) + " channels " + layout_name(layout);
      EXPECT_TRUE(matches<T>(kfuse::softmax(x, 1), softmax_ref(x.ref(), 1), "softmax" + what, kFactor));
      for (ReduceKind k : kAllReduce)
        EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, {1}, true), reduce_ref(x.ref(), k, {1}, true),
                               std::string(kfuse::to_string(k)) + what, kFactor));
    }
}

// Reductions over C, and over C and H, walked across (rows.hpp, by_columns)
// with a NaN in one output's column and infinities in others: channel counts
// around a block of columns in flight (kAhead on a GPU), planes whose extents
// are multiples of a 16-byte vector, in every strided layout.
TYPED_TEST(Ops, ColumnsWithNaNAndInfinities) {
  using T = TypeParam;
  Rng rng(909);
  for (int64_t c : {1, 4, 7, 13})
    for (Layout layout : strided_layouts()) {
      const Shape shape{2, c, 3, 8};
      std::vector<double> v = random_values(numel_of(shape), -6.0, 6.0, rng);
      const auto at = [&](int64_t n, int64_t ch, int64_t h, int64_t w) -> double& {
        return v[std::size_t(((n * c + ch) * 3 + h) * 8 + w)];
      };
      at(0, c - 1, 1, 2) = kNaN;
      at(1, 0, 2, 5) = kInf;
      at(1, c / 2, 0, 7) = -kInf;
      at(0, 0, 0, 0) = -kInf;
      if (c > 1) at(0, 1, 0, 0) = -kInf;  // -inf in channels 0 and 1 of one column (the whole column where c is 1)
      const HostTensor<T> x(shape, v, layout);
      const std::string what = " over " + std::to_string(c) + " channels " + layout_name(layout);
      for (ReduceKind k : kAllReduce) {
        EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, {1}, true), reduce_ref(x.ref(), k, {1}, true),
                               std::string(kfuse::to_string(k)) + what, kFactor));
        EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, {1, 2}, false), reduce_ref(x.ref(), k, {1, 2}, false),
                               std::string(kfuse::to_string(k)) + " and H" + what, kFactor));
      }
    }
}

// Dense rows starting at every alignment of a 16-byte vector, where the
// output's rows start elsewhere: short rows (a row the vector lanes of one
// team thread), long ones (a team a row) and the lengths around the boundary
// (backends/kokkos/rows.hpp, kWarpRow).
TYPED_TEST(Ops, DenseRowsAtEveryAlignment) {
  using T = TypeParam;
  Rng rng(4242);
  const int64_t rows = 3;
  for (int64_t n : {1, 3, 5, 33, 2047, 2048, 2053})
    for (int64_t off : {0, 1, 2, 3}) {
      const HostTensor<T> buf = random_tensor<T>({rows * n + off}, rng, Layout::contiguous, -8.0, 8.0);
      kfuse::TensorView x = buf.view();
      x.data = static_cast<T*>(x.data) + off;
      x.shape = {rows, n};
      x.strides = {n, 1};
      const Ref ref = make_ref(x.shape, read_values<T>(x));
      const std::string what = " of rows of " + std::to_string(n) + " at element " + std::to_string(off);
      EXPECT_TRUE(matches<T>(kfuse::softmax(x, 1), softmax_ref(ref, 1), "softmax" + what, kFactor));
      for (ReduceKind k : kAllReduce)
        EXPECT_TRUE(matches<T>(kfuse::reduce(x, k, {1}, false), reduce_ref(ref, k, {1}, false),
                               std::string(kfuse::to_string(k)) + what, kFactor));
    }
}

TYPED_TEST(Ops, SoftmaxLargeValuesAreShifted) {
  using T = TypeParam;
  const HostTensor<T> x({2, 3}, {1000.0, 1001.0, 999.0, -1000.0, -1e4, -1001.0}, Layout::contiguous);
  EXPECT_TRUE(matches<T>(kfuse::softmax(x, 1), softmax_ref(x.ref(), 1), "softmax large values", kFactor));
}

TYPED_TEST(Ops, SoftmaxNaNAndInf) {
  // PyTorch: a row with NaN, with +inf, or of only -inf is NaN throughout
  // (exp(x - max) meets inf - inf); -inf among finite values gives 0.
  using T = TypeParam;
  for (Layout layout : {Layout::contiguous, Layout::permuted}) {
    const HostTensor<T> x = special_rows<T>(layout);
    EXPECT_TRUE(matches<T>(kfuse::softmax(x, 1), softmax_ref(x.ref(), 1),
                           std::string("softmax special rows ") + layout_name(layout), kFactor));
    const std::vector<double> y = read_values<T>(kfuse::softmax(x, -1).view());
    for (int row : {0, 1, 2, 3, 5, 6, 7})
      for (int j = 0; j < 4; ++j) EXPECT_TRUE(std::isnan(y[row * 4 + j])) << "row " << row << " col " << j;
    EXPECT_EQ(y[4 * 4 + 0], 0.0);
    EXPECT_EQ(y[4 * 4 + 2], 0.0);
    EXPECT_NEAR(y[4 * 4 + 3], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  }
}

// ---------------------------------------------------------------------------
// Coverage: kfuse's outputs come from Tensor::empty, which main.cpp makes fill
// every new tensor with NaN (kfuse::set_poison_new_tensors), so each matches()
// above also fails on an element a kernel skipped. Pinned down here: new
// tensors of every dtype, in host memory and (when this build and machine have
// it) CUDA memory, hold only all-ones bytes, a NaN in every float format.

TEST(Poison, NewTensorsHoldNaN) {
  for (kfuse::Memory m : {kfuse::Memory::host, kfuse::Memory::cuda}) {
    for (kfuse::DType d : {kfuse::DType::f32, kfuse::DType::f64, kfuse::DType::f16, kfuse::DType::bf16}) {
      Tensor t;
      try {
        t = Tensor::empty({3, 5}, d, m);
      } catch (const kfuse::Error& e) {
        // Without CUDA memory only the host is checked; the Kokkos backend's memory must always work.
        ASSERT_NE(m, kfuse::kokkos_memory()) << e.what();
        std::cout << "[   NOTE   ] no CUDA memory here, poisoning checked on the host only: " << e.what() << "\n";
        break;
      }
      const Tensor h = Tensor::copy_of(t.view(), kfuse::Memory::host);
      const auto* bytes = static_cast<const unsigned char*>(h.view().data);
      EXPECT_TRUE(std::all_of(bytes, bytes + t.view().bytes(), [](unsigned char b) { return b == 0xFF; }))
          << kfuse::to_string(d) << " in " << kfuse::to_string(m) << " memory";
      if (d == kfuse::DType::f32 || d == kfuse::DType::f64) {
        for (double v : values_of(t.view())) EXPECT_TRUE(std::isnan(v)) << kfuse::to_string(d);
      }
    }
  }
}

}  // namespace
}  // namespace kfuse_test
