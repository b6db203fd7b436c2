// Numerical edge cases against the independent fp64 reference (reference.hpp):
//  - NaN and +-inf in inputs, weights, biases and operands, through every
//    strategy (fold, fused, reference) of the seed-like pipelines;
//  - very large and very small magnitudes in logsumexp and softmax (eager,
//    fused, and the fold's tail);
//  - empty batches and other zero-size axes (PyTorch's results; max/min of
//    nothing is an error; an empty plan touches no memory);
//  - indexing past 2^31: offsets past 2^32 elements (a sparse mapping that
//    owns memory only where touched) and element counts past 2^32 (a
//    broadcast view over a small buffer);
//  - the planner's rewrites at the edges of the float range.
//
// Semantics (PyTorch's, DESIGN.md section 2): a NaN reaches every conv
// output whose window holds it, and every reduction over one of those;
// +inf * w is +-inf by the sign of w and NaN for w = 0; sums holding both
// infinities are NaN. The fold computes sums over rectangles of x instead of
// the conv outputs: for NaN/+-inf in x the set of infinite terms, and so
// the result's class (NaN, +inf, -inf), is the same (a sum of extended reals
// is NaN exactly when it holds a NaN or both infinities, however it is
// grouped). It differs only where finite values overflow: rectangle sums and
// conv outputs overflow at different points (README, "Guarantees"). NaN/inf
// in weights, biases or per-channel affine operands make the planner skip the
// fold (cheap: it sees them when it folds them).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "kfuse/ops.hpp"
#include "kfuse/plan.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using kfuse::BinaryKind;
using kfuse::ConvTranspose2dParams;
using kfuse::DType;
using kfuse::ErrorCategory;
using kfuse::Memory;
using kfuse::Pipeline;
using kfuse::Plan;
using kfuse::PlanOptions;
using kfuse::ReduceKind;
using kfuse::Strategy;
using kfuse::Tensor;
using kfuse::TensorView;

template <class T>
class EdgeCases : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(EdgeCases, Types);

template <class T>
constexpr double tolerance() { return std::is_same_v<T, float> ? 2e-5 : 1e-12; }

std::string cls(double v) { return std::isnan(v) ? "NaN" : v == kInf ? "+inf" : v == -kInf ? "-inf" : "finite"; }

// out must match ref: the same class everywhere (NaN, +inf, -inf, finite),
// finite values within tol * (1 + |ref|).
::testing::AssertionResult agrees(const std::vector<double>& out, const std::vector<double>& ref, double tol,
                                  const std::string& what) {
  if (out.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": " << out.size() << " elements, expected " << ref.size();
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (cls(out[i]) != cls(ref[i]))
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << out[i] << ", expected " << ref[i];
    if (std::isfinite(ref[i]) && std::fabs(out[i] - ref[i]) > tol * (1.0 + std::fabs(ref[i])))
      return ::testing::AssertionFailure() << what << ": element " << i << " is " << out[i] << ", expected " << ref[i];
  }
  return ::testing::AssertionSuccess();
}

// Runs into a new output (NaN until written: main.cpp poisons new tensors).
template <class T>
std::vector<double> run_plan(const Plan& plan, const TensorView& x) {
  Tensor out = Tensor::empty(plan.output_shape(), plan.dtype());
  plan.run(x, out.view());
  return read_values<T>(out.view());
}

// ---- NaN and +-inf through every strategy ------------------------------------

enum class Chain { gap_bias_lse, mul_gap, relu_gap_softmax, sum_chw, zero_mul_gap, div_gap };

const char* chain_name(Chain c) {
  switch (c) {
    case Chain::gap_bias_lse: return "conv-mean-add-logsumexp-sum-mul";
    case Chain::mul_gap: return "conv-mul-mean";
    case Chain::relu_gap_softmax: return "conv-relu-mean-softmax";
    case Chain::sum_chw: return "conv-sum[1,2,3]";
    case Chain::zero_mul_gap: return "conv-mul(0)-mean";
    case Chain::div_gap: return "conv-div(per-channel)-mean";
  }
  return "?";
}

// x [2, 4, 5, 6], w [4, 3/groups*... , 3, 3]: stride 2, padding 1, output_padding 1.
template <class T>
struct Problem {
  ConvTranspose2dParams p;
  HostTensor<T> x, w, b, e, d;  // input, weight, conv bias, add operand [C, 1, 1], divisor [C, 1, 1]
};

struct Edit {
  char tensor;  // 'x', 'w', 'b', 'd'
  std::vector<int64_t> at;
  double value;
};

template <class T>
Problem<T> make_problem(int64_t groups, const std::vector<Edit>& edits, bool mixed_signs) {
  Rng rng(42 + groups);
  Problem<T> pr;
  pr.p.with_stride(2).with_padding(1).with_output_padding(1).with_groups(groups);
  const int64_t C = 3 * groups;
  auto vals = [&](const Shape& s, double lo, double hi) { return random_values(numel_of(s), lo, hi, rng); };
  const Shape xs{2, 4, 5, 6}, ws{4, 3, 3, 3}, bs{C}, es{C, 1, 1};
  std::vector<double> xv = vals(xs, 0.0, 1.0), wv = vals(ws, mixed_signs ? -1.0 : 0.1, 1.0), bv = vals(bs, -0.5, 0.5),
                      ev = vals(es, -1.0, 1.0), dv = vals(es, 0.5, 2.0);
  for (const Edit& e : edits) {
    std::vector<double>& v = e.tensor == 'x' ? xv : e.tensor == 'w' ? wv : e.tensor == 'b' ? bv : dv;
    const Shape& s = e.tensor == 'x' ? xs : e.tensor == 'w' ? ws : e.tensor == 'b' ? bs : es;
    v[static_cast<std::size_t>(ravel(e.at, s))] = e.value;
  }
  pr.x = HostTensor<T>(xs, xv, Layout::contiguous);
  pr.w = HostTensor<T>(ws, wv, Layout::contiguous);
  pr.b = HostTensor<T>(bs, bv, Layout::contiguous);
  pr.e = HostTensor<T>(es, ev, Layout::contiguous);
  pr.d = HostTensor<T>(es, dv, Layout::contiguous);
  return pr;
}

template <class T>
Pipeline make_pipeline(Chain c, const Problem<T>& pr) {
  Pipeline p(pr.x.view().shape, kfuse::dtype_of<T>());
  p.conv_transpose2d(pr.w.host_tensor(), pr.b.host_tensor(), pr.p);
  switch (c) {
    case Chain::gap_bias_lse:
      p.mean({2, 3}, true).add(pr.e.host_tensor()).logsumexp({1}, true).sum({2, 3}).mul(10.0);
      break;
    case Chain::mul_gap: p.mul(0.5).mean({2, 3}, true); break;
    case Chain::relu_gap_softmax: p.relu().mean({2, 3}).softmax(1); break;
    case Chain::sum_chw: p.sum({1, 2, 3}); break;
    case Chain::zero_mul_gap: p.mul(0.0).mean({2, 3}); break;
    case Chain::div_gap: p.div(pr.d.host_tensor()).mean({2, 3}); break;
  }
  return p;
}

template <class T>
Ref expected(Chain c, const Problem<T>& pr) {
  const Ref y = conv_transpose2d_ref(pr.x.ref(), pr.w.ref(), &pr.b.ref(), pr.p);
  switch (c) {
    case Chain::gap_bias_lse: {
      const Ref m = binary_ref(reduce_ref(y, ReduceKind::mean, {2, 3}, true), pr.e.ref(), BinaryKind::add);
      return binary_scalar_ref(reduce_ref(reduce_ref(m, ReduceKind::logsumexp, {1}, true), ReduceKind::sum, {2, 3}, false),
                               10.0, BinaryKind::mul);
    }
    case Chain::mul_gap: return reduce_ref(binary_scalar_ref(y, 0.5, BinaryKind::mul), ReduceKind::mean, {2, 3}, true);
    case Chain::relu_gap_softmax:
      return softmax_ref(reduce_ref(unary_ref(y, kfuse::Unary{kfuse::UnaryKind::relu}), ReduceKind::mean, {2, 3}, false), 1);
    case Chain::sum_chw: return reduce_ref(y, ReduceKind::sum, {1, 2, 3}, false);
    case Chain::zero_mul_gap: return reduce_ref(binary_scalar_ref(y, 0.0, BinaryKind::mul), ReduceKind::mean, {2, 3}, false);
    case Chain::div_gap: return reduce_ref(binary_ref(y, pr.d.ref(), BinaryKind::div), ReduceKind::mean, {2, 3}, false);
  }
  return y;
}

struct SpecialCase {
  const char* name;
  std::vector<Edit> edits;
  bool weights_finite;  // false: the planner must not fold
  bool mixed_signs = false;
};

std::vector<SpecialCase> special_cases() {
  return {
      {"NaN in x", {{'x', {1, 2, 3, 4}, kNaN}}, true},
      {"+inf in x (corner, partly cropped)", {{'x', {0, 1, 0, 0}, kInf}}, true},
      {"-inf in x", {{'x', {1, 3, 4, 5}, -kInf}}, true},
      {"+inf and -inf in one batch", {{'x', {0, 0, 2, 2}, kInf}, {'x', {0, 3, 1, 4}, -kInf}}, true},
      {"+inf and NaN in different batches", {{'x', {0, 1, 2, 3}, kInf}, {'x', {1, 0, 0, 5}, kNaN}}, true},
      {"+inf in x, weights of both signs", {{'x', {1, 2, 2, 2}, kInf}}, true, true},
      {"NaN weight", {{'w', {1, 0, 1, 1}, kNaN}}, false},
      {"+inf weight", {{'w', {2, 1, 0, 2}, kInf}}, false},
      {"-inf weight, inf in x", {{'w', {0, 2, 2, 2}, -kInf}, {'x', {0, 0, 1, 1}, kInf}}, false},
      {"+inf bias", {{'b', {1}, kInf}}, false},
      {"NaN bias", {{'b', {0}, kNaN}}, false},
  };
}

template <class T>
void check_specials(int64_t groups) {
  for (const SpecialCase& sc : special_cases())
    for (Chain c : {Chain::gap_bias_lse, Chain::mul_gap, Chain::relu_gap_softmax, Chain::sum_chw, Chain::zero_mul_gap}) {
      const Problem<T> pr = make_problem<T>(groups, sc.edits, sc.mixed_signs);
      const std::string what = std::string(sc.name) + ", " + chain_name(c) + ", groups " + std::to_string(groups);
      const Pipeline p = make_pipeline<T>(c, pr);
      const Ref want = expected<T>(c, pr);
      std::vector<double> ref(want.v.size());
      for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = representable<T>(want.v[i]);
      const Plan automatic(p);
      const bool foldable = c != Chain::relu_gap_softmax;
      if (foldable) {
        EXPECT_EQ(automatic.strategy(), sc.weights_finite ? Strategy::fold : Strategy::fused) << what << "\n" << automatic.describe();
      }
      if (!sc.weights_finite) {
        EXPECT_THROW(Plan(p, {Strategy::fold}), kfuse::Error) << what;
      }
      for (Strategy s : {Strategy::automatic, Strategy::fused, Strategy::reference})
        EXPECT_TRUE(agrees(run_plan<T>(Plan(p, {s}), pr.x.view()), ref, tolerance<T>(), what + ", " + kfuse::to_string(s)));
    }
}

TYPED_TEST(EdgeCases, NaNAndInfinityThroughEveryStrategy) {
  check_specials<TypeParam>(1);
  check_specials<TypeParam>(2);  // a NaN/inf reaches only its group's channels
}

// Pinned down: NaN in batch 1 makes batch 1 NaN and leaves batch 0 finite;
// -inf in x with positive weights reaches every channel as -inf, so the
// logsumexp over channels is -inf; with groups 2 only half the channels.
TYPED_TEST(EdgeCases, NaNAndInfinityLandWherePyTorchPutsThem) {
  using T = TypeParam;
  {
    const Problem<T> pr = make_problem<T>(1, {{'x', {1, 2, 3, 4}, kNaN}}, false);
    const std::vector<double> out = run_plan<T>(Plan(make_pipeline<T>(Chain::gap_bias_lse, pr)), pr.x.view());
    EXPECT_TRUE(std::isfinite(out[0]));
    EXPECT_TRUE(std::isnan(out[1]));
  }
  for (int64_t groups : {1, 2}) {
    const Problem<T> pr = make_problem<T>(groups, {{'x', {1, 0, 2, 2}, -kInf}}, false);
    const Plan plan(make_pipeline<T>(Chain::gap_bias_lse, pr));
    EXPECT_EQ(plan.strategy(), Strategy::fold);
    const std::vector<double> out = run_plan<T>(plan, pr.x.view());
    EXPECT_TRUE(std::isfinite(out[0]));
    if (groups == 1) EXPECT_EQ(out[1], -kInf);
    else EXPECT_TRUE(std::isfinite(out[1]));  // the other group's channels hold the logsumexp up
  }
  {  // +inf into mean over channels with a zero multiplier: inf * 0 = NaN, in the fold too
    const Problem<T> pr = make_problem<T>(1, {{'x', {0, 1, 2, 2}, kInf}}, false);
    const Plan plan(make_pipeline<T>(Chain::zero_mul_gap, pr));
    EXPECT_EQ(plan.strategy(), Strategy::fold);
    const std::vector<double> out = run_plan<T>(plan, pr.x.view());
    for (int c = 0; c < 3; ++c) EXPECT_TRUE(std::isnan(out[c])) << c;
    for (int c = 3; c < 6; ++c) EXPECT_EQ(out[c], 0.0) << c;
  }
}

// A per-channel divisor of 0 before the mean: y / 0 is +-inf (NaN for y = 0)
// at every pixel; the fold would fold 1/0 into its weights, so it is skipped.
TYPED_TEST(EdgeCases, DivisionByZeroBeforeTheMeanIsNotFolded) {
  using T = TypeParam;
  const Problem<T> pr = make_problem<T>(1, {{'d', {1, 0, 0}, 0.0}}, false);
  const Pipeline p = make_pipeline<T>(Chain::div_gap, pr);
  const Plan plan(p);
  EXPECT_EQ(plan.strategy(), Strategy::fused) << plan.describe();
  EXPECT_NE(plan.describe().find("not finite"), std::string::npos) << plan.describe();
  const Ref want = expected<T>(Chain::div_gap, pr);
  for (Strategy s : {Strategy::automatic, Strategy::reference})
    EXPECT_TRUE(agrees(run_plan<T>(Plan(p, {s}), pr.x.view()), want.v, tolerance<T>(), kfuse::to_string(s)));
  const std::vector<double> out = run_plan<T>(plan, pr.x.view());
  EXPECT_EQ(out[1], kInf);  // positive conv outputs / +0
  EXPECT_EQ(out[4], kInf);
}

// ---- Magnitudes in logsumexp and softmax -------------------------------------

template <class T>
std::vector<std::vector<double>> magnitude_rows() {
  const double big = std::is_same_v<T, float> ? 3.0e38 : 1.7e308;   // near the top of T
  const double edge = std::is_same_v<T, float> ? 88.75 : 709.8;     // exp overflows just above
  return {
      {1e30, 1e30, -1e30, 0.0},    {-1e30, -1e30, -1e30, -1e30}, {1e-30, -1e-30, 0.0, 1e-30},
      {big, big, 1.0, -big},       {big, -big, 0.0, 0.0},        {edge, edge - 0.1, -edge, 0.0},
      {-1e30, 0.0, 1e-30, -kInf},  {1e30, -kInf, 5.0, -1e30},    {-big, -big, -big, -big},
      {1e-38, 1e-38, 1e-38, 1e-38}, {-edge - 20, -edge - 30, -edge - 40, -edge - 50},
  };
}

TYPED_TEST(EdgeCases, LogsumexpAndSoftmaxAtExtremeMagnitudes) {
  using T = TypeParam;
  const std::vector<std::vector<double>> rows = magnitude_rows<T>();
  std::vector<double> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const Shape s{static_cast<int64_t>(rows.size()), 4};
  for (Layout layout : {Layout::contiguous, Layout::permuted}) {
    const HostTensor<T> x(s, flat, layout);
    const Ref lse = reduce_ref(x.ref(), ReduceKind::logsumexp, {1}, false);
    const Ref sm = softmax_ref(x.ref(), 1);
    EXPECT_TRUE(matches<T>(kfuse::reduce(x, ReduceKind::logsumexp, {1}, false), lse, "logsumexp", 4.0));
    EXPECT_TRUE(matches<T>(kfuse::softmax(x, 1), sm, "softmax", 4.0));
    // The fused epilogue's reduction and softmax, and the plans' outputs.
    for (int which = 0; which < 2; ++which) {
      Pipeline p(s, kfuse::dtype_of<T>());
      if (which == 0) p.logsumexp({1});
      else p.softmax(1);
      const Ref& want = which == 0 ? lse : sm;
      for (Strategy st : {Strategy::fused, Strategy::reference}) {
        const Plan plan(p, {st});
        Tensor out = Tensor::empty(plan.output_shape(), plan.dtype());
        plan.run(x, out.view());
        EXPECT_TRUE(matches<T>(out, want, std::string(which ? "softmax " : "logsumexp ") + kfuse::to_string(st), 4.0));
      }
    }
  }
  // Spelled out: no overflow at the top of the range, no underflow to -inf at the bottom.
  const HostTensor<T> x(s, flat, Layout::contiguous);
  const std::vector<double> l = read_values<T>(kfuse::reduce(x, ReduceKind::logsumexp, {1}, false).view());
  EXPECT_TRUE(std::isfinite(l[3])) << l[3];          // big + log(2)
  EXPECT_NEAR(l[0] / 1e30, 1.0, 1e-6);
  EXPECT_NEAR(l[2], std::log(4.0), 1e-6);
  EXPECT_TRUE(std::isfinite(l[8]));                  // -big + log(4)
  const std::vector<double> y = read_values<T>(kfuse::softmax(x, 1).view());
  EXPECT_NEAR(y[3 * 4 + 0], 0.5, 1e-6);
  EXPECT_EQ(y[3 * 4 + 3], 0.0);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(y[9 * 4 + j], 0.25, 1e-6);   // 1e-38 (subnormal in f32) rows: uniform
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(y[2 * 4 + j], 0.25, 1e-6);
}

// The fused softmax over contiguous rows at lengths on both sides of each
// kernel's limits: rows held in registers (on a GPU up to 512 float32 or 256
// float64 values a warp; 16 or 8 on the host's one lane) and rows streamed
// twice beyond; odd lengths put rows off 16-byte alignment. Point ops before
// and after it; rows holding a NaN, a +inf, only -inf, and a -inf among numbers.
TYPED_TEST(EdgeCases, FusedSoftmaxAtRowLengthsAroundTheHeldLimits) {
  using T = TypeParam;
  Rng rng(41);
  for (int64_t w : {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 127, 255, 256, 257, 511, 512, 513, 1025, 2049}) {
    SCOPED_TRACE(w);
    const Shape s{6, w};
    std::vector<double> v = rounded<T>(random_values(numel_of(s), -4, 4, rng));
    v[static_cast<std::size_t>(w / 2)] = kNaN;                              // row 0
    v[static_cast<std::size_t>(w + w - 1)] = kInf;                          // row 1
    for (int64_t k = 0; k < w; ++k) v[static_cast<std::size_t>(2 * w + k)] = -kInf;  // row 2
    v[static_cast<std::size_t>(3 * w + w / 3)] = -kInf;                     // row 3
    const HostTensor<T> x(s, v, Layout::contiguous);
    const Ref want = binary_scalar_ref(softmax_ref(binary_scalar_ref(x.ref(), 1.5, BinaryKind::mul), 1), 0.125,
                                       BinaryKind::sub);
    Pipeline p(s, kfuse::dtype_of<T>());
    p.mul(1.5).softmax(1).sub(0.125);
    const Plan plan(p, {Strategy::fused});
    Tensor out = Tensor::empty(plan.output_shape(), plan.dtype());
    plan.run(x, out.view());
    EXPECT_TRUE(matches<T>(out, want, "softmax over rows of " + std::to_string(w), 4.0));
    // Without point ops (the kernels without the chain interpreter).
    Pipeline bare(s, kfuse::dtype_of<T>());
    bare.softmax(1);
    const Plan bare_plan(bare, {Strategy::fused});
    Tensor bare_out = Tensor::empty(bare_plan.output_shape(), bare_plan.dtype());
    bare_plan.run(x, bare_out.view());
    EXPECT_TRUE(matches<T>(bare_out, softmax_ref(x.ref(), 1), "bare softmax over rows of " + std::to_string(w), 4.0));
  }
}

// The fold's tail sees the extreme values: x [4, 1, 1, 1] through a 1x1
// conv with weights (1, 1, -1) gives rows (v, v, -v), then logsumexp or
// softmax over the channels.
TYPED_TEST(EdgeCases, FoldTailAtExtremeMagnitudes) {
  using T = TypeParam;
  const double big = std::is_same_v<T, float> ? 3.0e38 : 1.7e308;
  const HostTensor<T> x({5, 1, 1, 1}, {1e30, -1e30, big, 1e-30, -big}, Layout::contiguous);
  const HostTensor<T> w({1, 3, 1, 1}, {1.0, 1.0, -1.0}, Layout::contiguous);
  const Ref y = conv_transpose2d_ref(x.ref(), w.ref(), nullptr, ConvTranspose2dParams{});
  const Ref m = reduce_ref(y, ReduceKind::mean, {2, 3}, false);
  for (int which = 0; which < 2; ++which) {
    Pipeline p({5, 1, 1, 1}, kfuse::dtype_of<T>());
    p.conv_transpose2d(w.host_tensor()).mean({2, 3});
    if (which == 0) p.logsumexp({1});
    else p.softmax(1);
    const Ref want = which == 0 ? reduce_ref(m, ReduceKind::logsumexp, {1}, false) : softmax_ref(m, 1);
    std::vector<double> ref(want.v.size());
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = representable<T>(want.v[i]);
    EXPECT_EQ(Plan(p).strategy(), Strategy::fold);
    for (Strategy st : {Strategy::fold, Strategy::fused, Strategy::reference})
      EXPECT_TRUE(agrees(run_plan<T>(Plan(p, {st}), x.view()), ref, 1e-6,
                         std::string(which ? "softmax " : "logsumexp ") + kfuse::to_string(st)));
  }
}

// ---- Zero-size axes ------------------------------------------------------------

// A page that faults on any access: the data pointer of views that must not
// be touched. The views claim the Kokkos backend's memory; a GPU kernel
// faults on this host page too.
struct NoAccessPage {
  void* p = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ~NoAccessPage() {
    if (p != MAP_FAILED) ::munmap(p, 4096);
  }
  TensorView view(DType dtype, Shape shape) const {
    return TensorView(p, dtype, std::move(shape), kfuse::kokkos_memory());
  }
};

TYPED_TEST(EdgeCases, EmptyAxesGivePyTorchsResults) {
  using T = TypeParam;
  const NoAccessPage page;
  ASSERT_NE(page.p, MAP_FAILED);
  const TensorView x = page.view(kfuse::dtype_of<T>(), {2, 0, 3});
  // Reductions over the empty axis: sum 0, mean NaN, logsumexp -inf; max/min raise (as torch.amax).
  const auto over_empty = [&](ReduceKind k) { return read_values<T>(kfuse::reduce(x, k, {1}, false).view()); };
  EXPECT_EQ(over_empty(ReduceKind::sum), std::vector<double>(6, 0.0));
  for (double v : over_empty(ReduceKind::mean)) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(over_empty(ReduceKind::logsumexp), std::vector<double>(6, -kInf));
  for (ReduceKind k : {ReduceKind::max, ReduceKind::min}) {
    try {
      kfuse::reduce(x, k, {0, 1}, true);
      ADD_FAILURE() << "no error for " << kfuse::to_string(k) << " over an empty axis";
    } catch (const kfuse::Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("axis 1 of the input [2, 0, 3] is empty"), std::string::npos) << e.what();
    }
  }
  // Other ops: empty outputs of the right shapes.
  EXPECT_EQ(kfuse::reduce(x, ReduceKind::max, {0, 2}, true).shape(), Shape({1, 0, 1}));
  EXPECT_EQ(kfuse::softmax(x, 1).shape(), Shape({2, 0, 3}));
  EXPECT_EQ(kfuse::softmax(x, 2).shape(), Shape({2, 0, 3}));
  EXPECT_EQ(kfuse::unary(x, kfuse::Unary{kfuse::UnaryKind::gelu}).shape(), Shape({2, 0, 3}));
  EXPECT_EQ(kfuse::binary(x, page.view(kfuse::dtype_of<T>(), {1, 3}), BinaryKind::add).shape(), Shape({2, 0, 3}));
  EXPECT_EQ(kfuse::binary(x, 2.0, BinaryKind::div).shape(), Shape({2, 0, 3}));
  // conv_transpose2d of an empty batch: an empty output.
  Rng rng(1);
  const HostTensor<T> w = random_tensor<T>({4, 3, 3, 3}, rng);
  EXPECT_EQ(kfuse::conv_transpose2d(page.view(kfuse::dtype_of<T>(), {0, 4, 5, 6}), w, std::nullopt,
                                    ConvTranspose2dParams{}.with_stride(2))
                .shape(),
            Shape({0, 3, 11, 13}));
  // The builder rejects max/min over an empty axis when the pipeline is built.
  EXPECT_THROW(Pipeline({0, 3}, kfuse::dtype_of<T>()).max({0}), kfuse::Error);
  EXPECT_NO_THROW(Pipeline({0, 3}, kfuse::dtype_of<T>()).max({1}).logsumexp({0}));
}

// An empty batch through every plan: it runs, writes an empty output and
// touches neither x nor out (both point at a page that faults on access).
TYPED_TEST(EdgeCases, EmptyBatchPlansTouchNoMemory) {
  using T = TypeParam;
  const NoAccessPage page;
  ASSERT_NE(page.p, MAP_FAILED);
  const Problem<T> pr = make_problem<T>(1, {}, false);
  for (Chain c : {Chain::gap_bias_lse, Chain::mul_gap, Chain::relu_gap_softmax, Chain::sum_chw}) {
    Pipeline p({0, 4, 5, 6}, kfuse::dtype_of<T>());
    p.conv_transpose2d(pr.w.host_tensor(), pr.b.host_tensor(), pr.p);
    if (c == Chain::gap_bias_lse)
      p.mean({2, 3}, true).add(pr.e.host_tensor()).logsumexp({1}, true).sum({2, 3}).mul(10.0);
    if (c == Chain::mul_gap) p.mul(0.5).mean({2, 3}, true);
    if (c == Chain::relu_gap_softmax) p.relu().mean({2, 3}).softmax(1);
    if (c == Chain::sum_chw) p.sum({1, 2, 3});
    for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused, Strategy::reference}) {
      std::optional<Plan> plan;
      try {
        plan.emplace(p, PlanOptions{s});
      } catch (const kfuse::Error&) {
        continue;  // relu: no fold
      }
      EXPECT_EQ(kfuse::checked_numel(plan->output_shape(), "test", "out"), 0);
      const TensorView x = page.view(kfuse::dtype_of<T>(), {0, 4, 5, 6});
      const TensorView out = page.view(kfuse::dtype_of<T>(), plan->output_shape());
      EXPECT_NO_THROW(plan->run(x, out)) << chain_name(c) << " " << kfuse::to_string(s);
      EXPECT_EQ(plan->run(x).numel(), 0);
    }
  }
  // Reductions over the empty batch axis itself: sum of nothing is 0, mean NaN.
  for (ReduceKind k : {ReduceKind::sum, ReduceKind::mean, ReduceKind::logsumexp}) {
    Pipeline p({0, 4, 5, 6}, kfuse::dtype_of<T>());
    p.conv_transpose2d(pr.w.host_tensor(), pr.b.host_tensor(), pr.p).reduce(k, {0, 2, 3});
    const double want = k == ReduceKind::sum ? 0.0 : k == ReduceKind::mean ? kNaN : -kInf;
    for (Strategy s : {Strategy::automatic, Strategy::fused, Strategy::reference}) {
      const std::vector<double> out = run_plan<T>(Plan(p, {s}), page.view(kfuse::dtype_of<T>(), {0, 4, 5, 6}));
      ASSERT_EQ(out.size(), 3u);
      for (double v : out) EXPECT_EQ(cls(v), cls(want)) << kfuse::to_string(k) << " " << kfuse::to_string(s);
      if (std::isfinite(want)) {
        for (double v : out) EXPECT_EQ(v, want);
      }
    }
  }
}

// ---- Indexing past 2^31 ----------------------------------------------------------

// A sparse anonymous mapping: address space only; pages exist where written.
struct Sparse {
  std::size_t bytes;
  void* p;
  explicit Sparse(std::size_t n) : bytes(n), p(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)) {}
  ~Sparse() {
    if (p != MAP_FAILED) ::munmap(p, bytes);
  }
};

// x [3, 2, 3, 4] whose batch stride is 2^31 + 7 elements: offsets reach past
// 2^32 elements (17 GB). Every op and plan on it must give exactly what it
// gives on a compact copy with a batch stride of 25, which no kernel reads as
// one dense block either (same kernels, same order: a GPU reads dense rows
// in another order). On the host the buffer is a sparse mapping; in CUDA
// memory it is allocated in full.
TEST(EdgeCasesBigIndex, OffsetsPastTwoToTheThirtyTwo) {
  const int64_t big = (int64_t(1) << 31) + 7;
  const Shape s{3, 2, 3, 4};
  const Memory mem = kfuse::kokkos_memory();
  std::optional<Sparse> map;
  Tensor device;
  float* base = nullptr;
  if (mem == Memory::host) {
    map.emplace(static_cast<std::size_t>(2 * big + 48) * sizeof(float));
    if (map->p == MAP_FAILED) GTEST_SKIP() << "cannot map 17 GB of address space";
    base = static_cast<float*>(map->p);
  } else {
    try {
      device = Tensor::empty({2 * big + 48}, DType::f32);
    } catch (const kfuse::Error& e) {
      GTEST_SKIP() << "cannot allocate 17 GB of device memory: " << e.what();
    }
    base = device.data<float>();
  }
  Rng rng(31);
  const std::vector<double> v = random_values(72, -1.0, 1.0, rng);
  const std::vector<float> rows(v.begin(), v.end());
  for (int64_t n = 0; n < 3; ++n)
    kfuse::copy(TensorView::of(rows.data() + n * 24, {24}), TensorView(base + n * big, DType::f32, {24}, mem));
  const TensorView far(base, DType::f32, s, {big, 12, 4, 1}, mem);
  std::vector<float> compact(75);
  for (int64_t n = 0; n < 3; ++n) std::copy(rows.begin() + n * 24, rows.begin() + (n + 1) * 24, compact.begin() + n * 25);
  const Mirror mirror(compact);
  const TensorView near = mirror.view(s, {25, 12, 4, 1});
  const auto same = [](const Tensor& a, const Tensor& b) { return read_values<float>(a.view()) == read_values<float>(b.view()); };

  EXPECT_TRUE(same(kfuse::unary(far, kfuse::Unary{kfuse::UnaryKind::silu}), kfuse::unary(near, kfuse::Unary{kfuse::UnaryKind::silu})));
  EXPECT_TRUE(same(kfuse::binary(far, near, BinaryKind::mul), kfuse::binary(near, near, BinaryKind::mul)));
  for (ReduceKind k : {ReduceKind::sum, ReduceKind::max, ReduceKind::logsumexp})
    for (const std::vector<int>& axes : std::vector<std::vector<int>>{{0}, {0, 1, 2, 3}, {1, 3}})
      EXPECT_TRUE(same(kfuse::reduce(far, k, axes, false), kfuse::reduce(near, k, axes, false))) << kfuse::to_string(k);
  EXPECT_TRUE(same(kfuse::softmax(far, 0), kfuse::softmax(near, 0)));
  const HostTensor<float> w = random_tensor<float>({2, 3, 2, 2}, rng);
  EXPECT_TRUE(same(kfuse::conv_transpose2d(far, w, std::nullopt, ConvTranspose2dParams{}.with_stride(2)),
                   kfuse::conv_transpose2d(near, w, std::nullopt, ConvTranspose2dParams{}.with_stride(2))));
  for (int which = 0; which < 2; ++which) {
    Pipeline p(s);
    p.conv_transpose2d(w.host_tensor(), std::nullopt, ConvTranspose2dParams{}.with_stride(2));
    if (which == 0) p.mean({2, 3}).logsumexp({1});  // the fold
    else p.gelu().mean({2, 3}).softmax(1);          // the fused epilogue
    for (Strategy st : {Strategy::automatic, Strategy::reference}) {
      const Plan plan(p, {st});
      EXPECT_TRUE(same(plan.run(far), plan.run(near))) << plan.describe();
    }
  }
  // A copy into a far destination and back (on the host only: in CUDA memory
  // kfuse::copy stages the 17 GB the far view spans through the host).
  if (mem == Memory::host) {
    const TensorView far_out(base + 24, DType::f32, s, {big, 12, 4, 1}, Memory::host);
    kfuse::copy(near, far_out);
    EXPECT_TRUE(same(Tensor::copy_of(far_out, Memory::host), Tensor::copy_of(near, Memory::host)));
  }
}

// kfuse::copy between strided and contiguous views in the memory the Kokkos
// backend runs on (a strided CUDA view is staged through the host), every layout.
TEST(EdgeCasesCopy, StridedViewsInEitherMemory) {
  Rng rng(29);
  for (Layout layout : strided_layouts()) {
    const HostTensor<float> src = random_tensor<float>({3, 4, 5, 2}, rng, layout);
    const Tensor dense = Tensor::copy_of(src.view(), kfuse::kokkos_memory());
    EXPECT_EQ(read_values<float>(dense.view()), src.ref().v) << layout_name(layout);
    const HostTensor<float> dst = random_tensor<float>({3, 4, 5, 2}, rng, layout);
    kfuse::copy(dense.view(), dst.view());
    EXPECT_EQ(read_values<float>(dst.view()), src.ref().v) << layout_name(layout);
  }
}

// More than 2^31 elements in a view over 2^16 floats: rows of ones repeated
// with stride 0. The fold reads every element once (2^31 + 2^16 of them) and
// its sums are exact: the sum is 2^31 + 2^16. (A reduction over a
// single row of 2^31 elements takes the eager and fused kernels ~15 ns per
// element under the sanitizers, too slow for CI: their 64-bit offsets are
// tested past 2^32 above.)
TEST(EdgeCasesBigIndex, FoldSumsMoreThanTwoToTheThirtyOneElementsExactly) {
  const int64_t rows = (int64_t(1) << 15) + 1, cols = int64_t(1) << 16;
  const std::vector<float> ones(static_cast<std::size_t>(cols), 1.0f);
  const Mirror mirror(ones);
  const TensorView x = mirror.view({1, 1, rows, cols}, {0, 0, 0, 1});
  ASSERT_GT(x.numel(), int64_t(1) << 31);
  Pipeline p({1, 1, rows, cols});
  p.conv_transpose2d(host_tensor({1, 2, 1, 1}, {1.0, 0.5})).sum({2, 3});
  const Plan plan(p);
  ASSERT_EQ(plan.strategy(), Strategy::fold);
  const double n = double(rows) * double(cols);
  EXPECT_EQ(read_values<float>(plan.run(x).view()), (std::vector<double>{n, 0.5 * n}));
}

// Long float32 rows: a host reduction is one sequential sum, and summed in
// float it stops growing at 2^24 (PyTorch sums these exactly). 2^25 + 3 ones:
// sum 2^25 + 3 (rounded once, to float), mean 1, logsumexp of zeros log(2^25 + 3).
TEST(EdgeCasesBigIndex, LongFloat32RowsAreSummedAccurately) {
  const int64_t n = (int64_t(1) << 25) + 3;
  const std::vector<float> one_zero{1.0f, 0.0f};
  const Mirror mirror(one_zero);
  const TensorView ones = mirror.view({1, n}, {0, 0}, 0), zeros = mirror.view({1, n}, {0, 0}, 1);
  const double sum = static_cast<float>(n);
  EXPECT_EQ(read_values<float>(kfuse::reduce(ones, ReduceKind::sum, {1}, false).view())[0], sum);
  EXPECT_NEAR(read_values<float>(kfuse::reduce(zeros, ReduceKind::logsumexp, {1}, false).view())[0], std::log(double(n)), 1e-5);
  for (ReduceKind k : {ReduceKind::sum, ReduceKind::mean}) {
    Pipeline p({1, n});
    p.reduce(k, {1});
    const Plan plan(p);
    ASSERT_EQ(plan.strategy(), Strategy::fused);
    EXPECT_EQ(read_values<float>(plan.run(ones).view())[0], k == ReduceKind::sum ? sum : 1.0) << kfuse::to_string(k);
  }
}

// ---- The planner's rewrites at the edges of the float range ------------------

// mul(1e30).mul(1e30) is not merged into mul(1e60) in float32: 1e60 is inf
// there, and 0 * inf would turn zeros into NaN.
TEST(EdgeCasesRewrites, ScalarMultipliesAreNotMergedPastTheFloatRange) {
  const HostTensor<float> x({4}, {0.0, 1.0, -1.0, 1e-30}, Layout::contiguous);
  Pipeline p({4});
  p.mul(1e30).mul(1e30);
  for (Strategy s : {Strategy::automatic, Strategy::fused, Strategy::reference}) {
    const std::vector<double> out = run_plan<float>(Plan(p, {s}), x.view());
    EXPECT_EQ(out[0], 0.0) << kfuse::to_string(s);
    EXPECT_EQ(out[1], kInf);
    EXPECT_EQ(out[2], -kInf);
    EXPECT_NEAR(out[3], 1e30, 1e24);
  }
  Pipeline q({4});
  q.mul(1e-30).mul(1e-30);  // 1e-60 is 0 in float32: not merged either
  EXPECT_EQ(Plan(q).describe().find("merged"), std::string::npos);
  Pipeline r({4});
  r.mul(3.0).mul(0.5);  // an ordinary merge still happens
  EXPECT_NE(Plan(r).describe().find("merged mul(3) and mul(0.5) into mul(1.5)"), std::string::npos);
}

// A division by a scalar is a multiply by its reciprocal in the compute type
// (as PyTorch), except where that reciprocal is not a normal number: 1 / 1e-39
// overflows float, and x * inf is not x / 1e-39.
TEST(EdgeCasesRewrites, ScalarDivisionIsAMultiplyByTheReciprocal) {
  const HostTensor<float> x({4}, {0.0, 3.0, -1.5, 1e-30}, Layout::contiguous);
  Pipeline p({4});
  p.div(3.0);
  EXPECT_NE(Plan(p).describe().find("div(3) as mul(0.333333"), std::string::npos) << Plan(p).describe();
  Pipeline q({4});
  q.div(1e-39);
  EXPECT_EQ(Plan(q).describe().find(" as mul("), std::string::npos) << Plan(q).describe();
  for (Strategy s : {Strategy::automatic, Strategy::fused, Strategy::reference}) {
    const std::vector<double> out = run_plan<float>(Plan(p, {s}), x.view());
    EXPECT_EQ(out[0], 0.0) << kfuse::to_string(s);
    EXPECT_EQ(out[1], 1.0);
    EXPECT_NEAR(out[2], -0.5, 1e-7);
    EXPECT_NEAR(out[3], 1e-30 / 3.0, 1e-37);
    const std::vector<double> tiny = run_plan<float>(Plan(q, {s}), x.view());
    EXPECT_EQ(tiny[0], 0.0);
    EXPECT_EQ(tiny[1], kInf);  // 3e39 overflows float either way
    EXPECT_NEAR(tiny[3], 1e-30 / static_cast<double>(1e-39f), 1e3) << kfuse::to_string(s);
  }
}

// Hostile conv parameters: the output extent is computed without overflow
// (previously (in-1)*stride etc. overflowed int64: undefined behaviour).
TEST(EdgeCasesRewrites, ConvExtentOverflowIsAnError) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  const auto shape = [](int64_t h, int64_t k, ConvTranspose2dParams p) {
    return kfuse::conv_transpose2d_shape({1, 1, h, 1}, {1, 1, k, 1}, std::nullopt, p);
  };
  for (const ConvTranspose2dParams& p : {ConvTranspose2dParams{}.with_stride(max), ConvTranspose2dParams{}.with_dilation(max),
                                         ConvTranspose2dParams{}.with_dilation(int64_t(1) << 62)}) {
    try {
      shape(3, 5, p);
      ADD_FAILURE() << "no error";
    } catch (const kfuse::Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::overflow) << e.what();
      EXPECT_NE(std::string(e.what()).find("overflows 64 bits"), std::string::npos) << e.what();
    }
  }
  // Huge padding that makes the output negative: a clean invalid_argument.
  ConvTranspose2dParams pad;
  pad.padding = {max, 0};
  EXPECT_THROW(shape(3, 3, pad), kfuse::Error);
  // The largest extent that fits is fine.
  ConvTranspose2dParams ok;
  ok.stride = {max / 2, 1};
  EXPECT_EQ(shape(3, 1, ok)[2], 2 * (max / 2) + 1);
}

}  // namespace
}  // namespace kfuse_test
