// Pipelines and plans: the fold and the fused epilogue against the reference
// strategy over random configurations, the seed pipelines against a float64
// reference written here, describe(), and the planner's errors.
//
// Tolerances. fp64: every path sums at most a few thousand terms in double,
// so 1e-12 relative (norm-wise over the output) leaves a wide margin over
// ~1e-15 * terms. fp32 against the float64 reference on the same inputs: the
// fold sums each plane in double on the host and contracts <= 900 products
// in float (~900 * 6e-8 worst case, ~sqrt(900) * 6e-8 typical), so 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kfuse/plan.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using namespace kfuse;

// Random weights and operands (host tensors, as kfuse::Pipeline takes them).
Tensor host_random(const Shape& shape, DType dtype, Rng& rng, double lo, double hi) {
  return host_tensor(shape, random_values(numel_of(shape), lo, hi, rng), dtype);
}

// Runs a plan into a caller-owned output (NaN until written: main.cpp poisons new tensors).
std::vector<double> run_poisoned(const Plan& plan, const TensorView& x) {
  Tensor out = Tensor::empty(plan.output_shape(), plan.dtype());
  plan.run(x, out.view());
  return values_of(out.view());
}

// A random valid conv_transpose2d configuration with odd sizes.
struct ConvConfig {
  Shape x, w;
  ConvTranspose2dParams p;
};

ConvConfig random_conv(Rng& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng.engine()); };
  for (;;) {
    ConvConfig c;
    c.p.groups = pick(1, 3);
    const int64_t cin = c.p.groups * pick(1, 3), cout_g = pick(1, 4);
    c.x = {pick(1, 3), cin, pick(1, 13), pick(1, 13)};
    c.w = {cin, cout_g, pick(1, 5), pick(1, 5)};
    for (int a = 0; a < 2; ++a) {
      c.p.stride[a] = pick(1, 4);
      c.p.dilation[a] = pick(1, 3);
      c.p.padding[a] = pick(0, 3);
      c.p.output_padding[a] = pick(0, int(std::max(c.p.stride[a], c.p.dilation[a])) - 1);
    }
    bool ok = true;
    for (int a = 0; a < 2; ++a)
      ok = ok && conv_transpose_out_extent(c.x[2 + a], c.w[2 + a], c.p.stride[a], c.p.padding[a],
                                           c.p.output_padding[a], c.p.dilation[a]) >= 1;
    if (ok) return c;
  }
}

// Builds conv -> random per-channel affine chain -> spatial sum/mean -> one of
// several tails, in `dtype`, with weights drawn from `seed`.
Pipeline fold_pipeline(const ConvConfig& c, DType dtype, uint64_t seed) {
  Rng rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng.engine()); };
  const DType wd = dtype == DType::f64 ? DType::f64 : DType::f32;
  const int64_t C = c.w[1] * c.p.groups;
  // Positive weights and operands (subtrahends small, neg last) keep the
  // results well conditioned, so the tolerances measure arithmetic error.
  Tensor w = host_random(c.w, wd, rng, 0.1, 1);
  std::optional<Tensor> b;
  if (pick(0, 1)) b = host_random({C}, wd, rng, 0, 1);
  Pipeline p(c.x, dtype);
  p.conv_transpose2d(w, b, c.p);
  bool negate = false;
  for (int i = pick(0, 3); i > 0; --i) {
    const BinaryKind k = std::array<BinaryKind, 4>{BinaryKind::add, BinaryKind::sub, BinaryKind::mul, BinaryKind::div}[pick(0, 3)];
    const double lo = k == BinaryKind::sub ? 0.01 : 0.5, hi = k == BinaryKind::sub ? 0.1 : 2.0;
    switch (pick(0, 3)) {
      case 0: p.binary(k, rng.uniform(lo, hi)); break;
      case 1: p.binary(k, host_random({C, 1, 1}, wd, rng, lo, hi)); break;
      case 2: p.binary(k, host_random({1, C, 1, 1}, wd, rng, lo, hi)); break;
      default: negate = true; break;
    }
  }
  if (negate) p.neg();
  const bool keep = pick(0, 1);
  const int spatial = pick(0, 3);
  if (spatial == 3) {
    p.reduce(pick(0, 1) ? ReduceKind::mean : ReduceKind::sum, {1, 2, 3}, keep);  // split by the planner
    return p;
  }
  p.reduce(spatial ? ReduceKind::mean : ReduceKind::sum, {2, 3}, keep);
  switch (pick(0, 4)) {
    case 0: break;
    case 1:  // the first seed problem's tail
      p.add(host_random(keep ? Shape{C, 1, 1} : Shape{C}, wd, rng, -1, 1)).logsumexp({1}, keep);
      if (keep) p.sum({2, 3});
      p.mul(10.0);
      break;
    case 2: p.relu().softmax(1); break;
    case 3: p.max({1}, keep).tanh(); break;
    default:
      if (keep) p.mean({2, 3}, true);  // size-1: a reshape
      p.mul(0.5).mul(3.0).abs().gelu();  // abs: gelu is ill-conditioned for x << 0
      break;
  }
  return p;
}

TEST(Plan, FoldAndFusedMatchReferenceOver200RandomConfigs) {
  Rng rng(20261123);
  int folded = 0;
  for (int trial = 0; trial < 220; ++trial) {
    const ConvConfig c = random_conv(rng);
    const uint64_t seed = rng.engine()();
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " x " << to_string(c.x) << " w " << to_string(c.w)
                                      << " stride " << c.p.stride[0] << "," << c.p.stride[1] << " pad " << c.p.padding[0]
                                      << "," << c.p.padding[1] << " opad " << c.p.output_padding[0] << ","
                                      << c.p.output_padding[1] << " dil " << c.p.dilation[0] << "," << c.p.dilation[1]
                                      << " groups " << c.p.groups);
    const Pipeline p32 = fold_pipeline(c, DType::f32, seed), p64 = fold_pipeline(c, DType::f64, seed);
    // Strided input (every other element, padded) in every other trial.
    const Layout layout = trial % 2 ? Layout::every_other : Layout::contiguous;
    const std::vector<double> v = random_values(numel_of(c.x), 0, 1, rng);
    const HostTensor<double> x64(c.x, v, layout), x32as64(c.x, rounded<float>(v), layout);
    const HostTensor<float> x32(c.x, v, layout);
    const std::vector<double> ref = run_poisoned(Plan(p64, {Strategy::reference}), x32as64);
    const std::vector<double> ref32 = run_poisoned(Plan(p64, {Strategy::reference}), x64);

    const Plan fold64(p64, {Strategy::fold}), fold32(p32, {Strategy::fold});
    ASSERT_EQ(fold64.strategy(), Strategy::fold);
    EXPECT_LE(rel_error(run_poisoned(fold64, x64), ref32), 1e-12) << fold64.describe();
    EXPECT_LE(rel_error(run_poisoned(fold32, x32), ref), 1e-5) << fold32.describe();
    EXPECT_LE(rel_error(run_poisoned(Plan(p64, {Strategy::fused}), x64), ref32), 1e-12);
    EXPECT_EQ(Plan(p64).strategy(), Strategy::fold);
    ++folded;
  }
  EXPECT_GE(folded, 200);
}

// conv -> per-channel scale -> mean over (H, W) -> logsumexp over every
// sample and channel -> tanh: a tail whose one row spans the samples.
Pipeline fold_pipeline_across_samples(const ConvConfig& c, DType dtype, uint64_t seed) {
  Rng rng(seed);
  const DType wd = dtype == DType::f64 ? DType::f64 : DType::f32;
  const int64_t C = c.w[1] * c.p.groups;
  Pipeline p(c.x, dtype);
  p.conv_transpose2d(host_random(c.w, wd, rng, 0.1, 1), host_random({C}, wd, rng, 0, 1), c.p);
  p.mul(host_random({C, 1, 1}, wd, rng, 0.5, 2)).mean({2, 3}).logsumexp({0, 1}, true).tanh();
  return p;
}

// The Kokkos fold's last teams go on with the work: the last chunk of a
// plane joins its chunks (forced here, on any device) and takes the plane's
// share of the contraction, and in the second launch the team that completes
// a row of the tail runs it (rows of one value, of a sample's channels, of
// every sample). Each plan runs twice: a counter left non-zero would leave
// the second run's output unwritten (NaN).
TEST(Plan, FoldJoinsChunksSamplesAndRows) {
  Rng rng(20261205);
  for (const int chunks : {1, 3, 7}) {
    const EnvVar forced("KFUSE_KOKKOS_FOLD_CHUNKS", std::to_string(chunks).c_str());
    for (int trial = 0; trial < 45; ++trial) {
      const ConvConfig c = random_conv(rng);
      const uint64_t seed = rng.engine()();
      SCOPED_TRACE(::testing::Message() << "chunks " << chunks << " trial " << trial << " x " << to_string(c.x)
                                        << " w " << to_string(c.w));
      const bool across = trial % 3 == 0;
      const Pipeline p32 = across ? fold_pipeline_across_samples(c, DType::f32, seed) : fold_pipeline(c, DType::f32, seed);
      const Pipeline p64 = across ? fold_pipeline_across_samples(c, DType::f64, seed) : fold_pipeline(c, DType::f64, seed);
      const std::vector<double> v = random_values(numel_of(c.x), 0, 1, rng);
      const HostTensor<double> x64(c.x, v, Layout::contiguous), x32as64(c.x, rounded<float>(v), Layout::contiguous);
      const HostTensor<float> x32(c.x, v, Layout::contiguous);
      const Plan fold64(p64, {Strategy::fold}), fold32(p32, {Strategy::fold});
      const int64_t rows = (c.x[2] + chunks - 1) / chunks, used = (c.x[2] + rows - 1) / rows;
      EXPECT_NE(fold32.describe().find("plane sums by " + std::to_string(used) + (used == 1 ? " team" : " teams") + " a plane"),
                std::string::npos)
          << fold32.describe();
      const std::vector<double> ref = run_poisoned(Plan(p64, {Strategy::reference}), x32as64);
      const std::vector<double> ref64 = run_poisoned(Plan(p64, {Strategy::reference}), x64);
      const std::vector<double> first32 = run_poisoned(fold32, x32), first64 = run_poisoned(fold64, x64);
      EXPECT_LE(rel_error(first32, ref), 1e-5) << fold32.describe();
      EXPECT_LE(rel_error(first64, ref64), 1e-12) << fold64.describe();
      EXPECT_EQ(run_poisoned(fold32, x32), first32);
      EXPECT_EQ(run_poisoned(fold64, x64), first64);
    }
  }
}

TEST(Plan, FoldChunksOverrideIsChecked) {
  Pipeline p({2, 3, 5, 4}, DType::f32);
  Rng rng(5);
  p.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f32, rng, -1, 1)).mean({2, 3});
  for (const char* bad : {"-1", "3x", "many"}) {
    const EnvVar forced("KFUSE_KOKKOS_FOLD_CHUNKS", bad);
    try {
      const Plan plan(p, {Strategy::fold});
      ADD_FAILURE() << "KFUSE_KOKKOS_FOLD_CHUNKS=" << bad << " accepted: " << plan.describe();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("KFUSE_KOKKOS_FOLD_CHUNKS is '") + bad + "'; expected a whole number >= 0"),
                std::string::npos)
          << e.what();
    }
  }
}

// ---- The seed pipelines against a float64 reference written here ----------

// y = conv_transpose2d(x, w, b) in double, scatter form.
std::vector<double> conv_ref(const std::vector<double>& x, const Shape& xs, const std::vector<double>& w,
                             const Shape& ws, const std::vector<double>& b, int64_t s, int64_t pad, int64_t opad,
                             Shape& ys) {
  const int64_t N = xs[0], Cin = xs[1], H = xs[2], W = xs[3], Cout = ws[1], k = ws[2];
  const int64_t Ho = (H - 1) * s - 2 * pad + (k - 1) + opad + 1, Wo = (W - 1) * s - 2 * pad + (k - 1) + opad + 1;
  ys = {N, Cout, Ho, Wo};
  std::vector<double> y(static_cast<std::size_t>(N * Cout * Ho * Wo));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t i = 0; i < Ho * Wo; ++i) y[(n * Cout + co) * Ho * Wo + i] = b[co];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < Cin; ++ci)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t co = 0; co < Cout; ++co)
            for (int64_t kh = 0; kh < k; ++kh)
              for (int64_t kw = 0; kw < k; ++kw) {
                const int64_t oh = ih * s - pad + kh, ow = iw * s - pad + kw;
                if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                y[((n * Cout + co) * Ho + oh) * Wo + ow] +=
                    x[((n * Cin + ci) * H + ih) * W + iw] * w[((ci * Cout + co) * k + kh) * k + kw];
              }
  return y;
}

struct Seed {
  Shape x;
  int64_t cout, k, stride, pad, opad;
};

void check_seed(const Seed& s, bool gap_bias_lse) {
  Rng rng(7);
  const HostTensor<float> x = random_tensor<float>(s.x, rng, Layout::contiguous, 0, 1);
  const double bound = 1.0 / std::sqrt(double(s.cout * s.k * s.k));
  const Tensor w = host_random({s.x[1], s.cout, s.k, s.k}, DType::f32, rng, -bound, bound);
  const Tensor b = host_random({s.cout}, DType::f32, rng, -bound, bound);
  const Tensor extra = host_random({s.cout, 1, 1}, DType::f32, rng, -2, 2);
  ConvTranspose2dParams p;
  p.stride = {s.stride, s.stride};
  p.padding = {s.pad, s.pad};
  p.output_padding = {s.opad, s.opad};
  Pipeline pipe(s.x);
  pipe.conv_transpose2d(w, b, p);
  if (gap_bias_lse) pipe.mean({2, 3}, true).add(extra).logsumexp({1}, true).sum({2, 3}).mul(10.0);
  else pipe.mul(0.5).mean({2, 3}, true).mean({2, 3}, true);

  Shape ys;
  const std::vector<double> y =
      conv_ref(x.ref().v, s.x, values_of(w), w.shape(), values_of(b), s.stride, s.pad, s.opad, ys);
  const int64_t N = ys[0], C = ys[1], HW = ys[2] * ys[3];
  const std::vector<double> e = values_of(extra);
  std::vector<double> ref;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> m(C);
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < HW; ++i) acc += y[(n * C + c) * HW + i];
      m[c] = acc / double(HW);
    }
    if (gap_bias_lse) {
      double mx = -INFINITY, se = 0;
      for (int64_t c = 0; c < C; ++c) mx = std::max(mx, m[c] + e[c]);
      for (int64_t c = 0; c < C; ++c) se += std::exp(m[c] + e[c] - mx);
      ref.push_back(10.0 * (mx + std::log(se)));
    } else {
      for (int64_t c = 0; c < C; ++c) ref.push_back(0.5 * m[c]);
    }
  }
  for (Strategy st : {Strategy::automatic, Strategy::fused, Strategy::reference}) {
    const Plan plan(pipe, {st});
    EXPECT_EQ(plan.output_shape(), gap_bias_lse ? Shape({N, 1}) : Shape({N, C, 1, 1}));
    const double err = rel_error(run_poisoned(plan, x), ref);
    EXPECT_LE(err, 1e-5) << plan.describe();
    if (st == Strategy::automatic) {
      EXPECT_EQ(plan.strategy(), Strategy::fold);
    }
  }
}

TEST(Plan, SeedConvtGapBiasLseMatchesFloat64Reference) { check_seed({{2, 8, 33, 31}, 16, 3, 1, 0, 0}, true); }
TEST(Plan, SeedConvtMulGapMatchesFloat64Reference) { check_seed({{2, 8, 17, 19}, 16, 3, 2, 1, 1}, false); }

// ---- The conv of a plan on the Kokkos path ----------------------------------------
// A GEMM over the input channels (Kokkos Kernels) and a column-to-image gather
// (backends/kokkos/conv_gemm.cpp; the direct gather in a build without Kokkos
// Kernels), against the direct gather run in float64 by
// the reference strategy: random geometries (strides, dilations, paddings,
// output paddings, groups, kernels 1-5, odd sizes), float32 and float64, with
// and without a bias; an input that is not dense takes the direct gather.
TEST(KokkosConv, GemmMatchesFloat64GatherOverRandomGeometries) {
  Rng rng(20261201);
  [[maybe_unused]] int gemm_trials = 0;  // counted where Kokkos Kernels is built in
  for (int trial = 0; trial < 120; ++trial) {
    const ConvConfig c = random_conv(rng);
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " x " << to_string(c.x) << " w " << to_string(c.w)
                                      << " stride " << c.p.stride[0] << "," << c.p.stride[1] << " pad " << c.p.padding[0]
                                      << "," << c.p.padding[1] << " opad " << c.p.output_padding[0] << ","
                                      << c.p.output_padding[1] << " dil " << c.p.dilation[0] << "," << c.p.dilation[1]
                                      << " groups " << c.p.groups);
    const std::vector<double> w = rounded<float>(random_values(numel_of(c.w), -1, 1, rng));
    const std::vector<double> b = rounded<float>(random_values(c.w[1] * c.p.groups, -1, 1, rng));
    const auto pipeline = [&](DType dt) {
      Pipeline p(c.x, dt);
      std::optional<Tensor> bias;
      if (trial % 3) bias = host_tensor({c.w[1] * c.p.groups}, b, dt);
      p.conv_transpose2d(host_tensor(c.w, w, dt), bias, c.p).add(0.25);
      return p;
    };
    const Layout layout = trial % 4 == 3 ? Layout::every_other : Layout::contiguous;
    const std::vector<double> v = rounded<float>(random_values(numel_of(c.x), -1, 1, rng));
    const HostTensor<double> x64(c.x, v, layout);
    const HostTensor<float> x32(c.x, v, layout);
    const std::vector<double> ref = run_poisoned(Plan(pipeline(DType::f64), {Strategy::reference}), x64);
    const Plan p64(pipeline(DType::f64), {Strategy::fused}), p32(pipeline(DType::f32), {Strategy::fused});
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
    // The GEMM, or the gather where the padding crops most of the GEMM's products.
    const std::string d = p32.describe();
    const bool gemm = d.find("GEMM over the input channels") != std::string::npos;
    EXPECT_TRUE(gemm || d.find("(the padding crops ") != std::string::npos) << d;
    gemm_trials += gemm;
#else
    EXPECT_NE(p32.describe().find("built without Kokkos Kernels"), std::string::npos) << p32.describe();
#endif
    EXPECT_LE(rel_error(run_poisoned(p64, x64), ref), 1e-12) << p64.describe();
    EXPECT_LE(rel_error(run_poisoned(p32, x32), ref), 1e-6) << p32.describe();
  }
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
  EXPECT_GE(gemm_trials, 90);  // 100 of these 120 geometries
#endif
}

// KFUSE_KOKKOS_CONV=gather keeps the direct gather (describe() says so); any
// other value than gemm or gather is an error that names it; TF32 asked for
// is strict fp32 on this path, and describe() says that too.
TEST(KokkosConv, DescribeSaysWhichConvAndWhy) {
  Rng rng(11);
  Pipeline p({2, 3, 5, 4}, DType::f64);
  p.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f64, rng, -1, 1), std::nullopt,
                     ConvTranspose2dParams{}.with_stride(2)).relu();
  const HostTensor<double> x = random_tensor<double>(p.input_shape(), rng, Layout::contiguous, -1, 1);
  const std::vector<double> ref = run_poisoned(Plan(p, {Strategy::reference}), x);
  std::optional<EnvVar> conv_env(std::in_place, "KFUSE_KOKKOS_CONV", "gather");
  const Plan gather(p, {Strategy::fused});
  EXPECT_NE(gather.describe().find("direct gather, a thread per output element (KFUSE_KOKKOS_CONV=gather)"),
            std::string::npos) << gather.describe();
  EXPECT_LE(rel_error(run_poisoned(gather, x), ref), 1e-12);
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
  // A geometry the GEMM does not take: the gather, and describe() says why.
  Pipeline empty({0, 3, 5, 4}, DType::f64);
  empty.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f64, rng, -1, 1)).relu();
  conv_env.emplace("KFUSE_KOKKOS_CONV", nullptr);
  EXPECT_NE(Plan(empty, {Strategy::fused}).describe().find("direct gather, a thread per output element (there is "
                                                            "nothing to multiply)"),
            std::string::npos)
      << Plan(empty, {Strategy::fused}).describe();
#endif
  // Asked for TF32, the Kokkos conv multiplies in strict fp32 and says so.
  PlanOptions tf32{Strategy::fused};
  tf32.precision = Precision::tf32;
  const Plan rounded_allowed(p, tf32);
  EXPECT_NE(rounded_allowed.describe().find("strict fp32: the Kokkos path has no TF32 conv"), std::string::npos)
      << rounded_allowed.describe();
  EXPECT_LE(rel_error(run_poisoned(rounded_allowed, x), ref), 1e-12);
  conv_env.emplace("KFUSE_KOKKOS_CONV", "blas");
  try {
    const Plan bad(p, {Strategy::fused});
    ADD_FAILURE() << "KFUSE_KOKKOS_CONV=blas accepted: " << bad.describe();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KFUSE_KOKKOS_CONV is 'blas'; expected one of gemm, gather"), std::string::npos)
        << e.what();
  }
}

// ---- Non-fold pipelines: the fused epilogue ------------------------------------

Pipeline epilogue_pipeline(int which, Rng& rng, DType dt) {
  const Shape xs{2, 3, 7, 6};
  Tensor w = host_random({3, 4, 3, 2}, dt, rng, -1, 1);
  Pipeline p(xs, dt);
  p.conv_transpose2d(w, host_random({4}, dt, rng, -1, 1), ConvTranspose2dParams{}.with_stride(2));
  switch (which) {
    case 0: p.relu().mean({2, 3}, true).add(host_random({4, 1, 1}, dt, rng, -1, 1)).logsumexp({1}, true).sum({2, 3}).mul(10.0); break;
    case 1: p.gelu().mul(host_random({1, 4, 1, 1}, dt, rng, -1, 1)).max({1}).sigmoid(); break;  // over C: K = 1
    case 2: p.tanh().softmax(1).mul(2.0); break;
    case 3: p.mish().hardswish().sub(host_random({4, 1, 1}, dt, rng, -1, 1)); break;  // map
    case 4: p.silu().logsumexp({2, 3}).softmax(1); break;
    case 5: p.leaky_relu(0.1).min({0}, true).abs(); break;
    case 6: p.relu().softmax(1).mean({2, 3}); break;  // softmax then a reduction: two stages
    case 7: p.relu().mean({1}).softmax(2).mul(3.0); break;  // a tail on rows of W = 12 values
    case 8: p.clamp(-0.5, 0.5).sum({1, 3}, true).exp(); break;  // non-trailing pair: reduce then point ops
    default:  // point ops on each output with operands along C and W, then along N (a reshape on the way)
      p.gelu().sum({2}).add(host_random({4, 12}, dt, rng, -1, 1)).tanh().mul(host_random({2, 1, 1}, dt, rng, -1, 1));
      break;
  }
  return p;
}

TEST(Plan, FusedEpilogueMatchesReference) {
  for (int which = 0; which < 10; ++which) {
    SCOPED_TRACE(which);
    Rng rng(100 + which);
    const Pipeline p = epilogue_pipeline(which, rng, DType::f64);
    const HostTensor<double> x = random_tensor<double>(p.input_shape(), rng, Layout::contiguous, 0, 1);
    const std::vector<double> ref = run_poisoned(Plan(p, {Strategy::reference}), x);
    const Plan plan(p);
    EXPECT_NE(plan.strategy(), Strategy::fold);
    EXPECT_EQ(plan.strategy(), Strategy::fused) << plan.describe();
    if (which == 6) {
      EXPECT_NE(plan.describe().find("2 epilogue stages"), std::string::npos) << plan.describe();
    }
    if (which == 9) {  // no tail: the point ops run as each output is stored
      EXPECT_NE(plan.describe().find("sum, 3 point ops on each output as it is stored"), std::string::npos)
          << plan.describe();
    }
    EXPECT_LE(rel_error(run_poisoned(plan, x), ref), 1e-12) << plan.describe();
  }
}

// Chains that do not fit one row program: reductions over leading, middle and
// trailing axes in any order, softmax before a reduction, operands that
// broadcast the running value to a larger shape, reshapes from size-1
// reductions. Each runs as several epilogue stages, never the reference.
Pipeline staged_pipeline(int which, Rng& rng, DType dt) {
  const Shape xs{3, 4, 5, 7};
  // Float32-representable values: the float32 plan and the float64 reference see the same numbers.
  const auto r = [&](Shape s) { return host_tensor(s, rounded<float>(random_values(numel_of(s), -1, 1, rng)), dt); };
  Pipeline p(xs, dt);
  p.conv_transpose2d(r({4, 6, 3, 2}), r({6}), ConvTranspose2dParams{}.with_stride(2).with_padding(1));
  switch (which) {
    case 0: p.min({1}, true).sum({2}, true).gelu().add(r({1, 1, 1, 1})); break;  // the general-path issue's example
    case 1: p.sum({0}).max({1}).tanh(); break;                                    // leading, then middle
    case 2: p.softmax(2).mean({1, 3}).neg(); break;
    case 3: p.relu().logsumexp({1}).softmax(0).mul(r({9, 1})); break;
    case 4: p.mean({2, 3}, true).add(r({2, 1, 6, 1, 1})).relu().sum({1}); break;  // operand expands the rank
    case 5: p.max({1}, true).mul(r({1, 6, 1, 1})).softmax(1).min({3}); break;   // [N,1,..] * [1,C,..] expands
    case 6: p.sigmoid().sum({0, 2}).softmax(1).logsumexp({0}, true).exp(); break;
    default: p.softmax(3).softmax(1).mean({0, 1}).hardtanh(-0.2, 0.2).sum({0}); break;
  }
  return p;
}

TEST(Plan, MultiStageEpiloguesMatchReference) {
  for (int which = 0; which < 8; ++which) {
    SCOPED_TRACE(which);
    for (DType dt : {DType::f64, DType::f32}) {
      Rng rng(300 + which);
      const Pipeline p = staged_pipeline(which, rng, dt);
      Rng xr(7 + which);
      const Plan plan(p);
      EXPECT_EQ(plan.strategy(), Strategy::fused) << plan.describe();
      EXPECT_NE(plan.describe().find("epilogue stages"), std::string::npos) << plan.describe();
      // The float64 reference on the same (float32-representable) inputs.
      Rng r64(300 + which);
      const Pipeline p64 = staged_pipeline(which, r64, DType::f64);
      const std::vector<double> v = rounded<float>(random_values(numel_of(p.input_shape()), 0, 1, xr));
      const HostTensor<double> x64(p.input_shape(), v, Layout::contiguous);
      const std::vector<double> ref = run_poisoned(Plan(p64, {Strategy::reference}), x64);
      if (dt == DType::f64) {
        EXPECT_LE(rel_error(run_poisoned(plan, x64), ref), 1e-12) << plan.describe();
      } else {
        const HostTensor<float> x32(p.input_shape(), v, Layout::contiguous);
        EXPECT_LE(rel_error(run_poisoned(plan, x32), ref), 1e-5) << plan.describe();
      }
    }
  }
}

// Y written channels-last (forced; on a GPU the plan measures both layouts):
// the conv writes through Y's strides and the first stage reads through
// them, for every stage kind, against the reference in float64.
TEST(Plan, ChannelsLastYMatchesReference) {
  PlanOptions nhwc;
  nhwc.strategy = Strategy::fused;
  nhwc.y_layout = YLayout::nhwc;
  for (int which = 0; which < 18; ++which) {
    SCOPED_TRACE(which);
    Rng rng(500 + which);
    const Pipeline p = which < 10 ? epilogue_pipeline(which, rng, DType::f64) : staged_pipeline(which - 10, rng, DType::f64);
    const HostTensor<double> x = random_tensor<double>(p.input_shape(), rng, Layout::contiguous, 0, 1);
    const Plan plan(p, nhwc);
    EXPECT_NE(plan.describe().find("channels-last (NHWC)"), std::string::npos) << plan.describe();
    EXPECT_LE(rel_error(run_poisoned(plan, x), run_poisoned(Plan(p, {Strategy::reference}), x)), 1e-12)
        << plan.describe();
  }
}

// Channels-last Y needs a first stage that reads Y as it is. Forced, the
// fused strategy does not apply without one (an error when it is forced too,
// one of the reasons when the planner goes on to the reference); automatic,
// the plan keeps NCHW. Where the plan writes no Y (the fold), the layout does
// not apply.
TEST(Plan, ChannelsLastYRefusedWhereNoStageReadsY) {
  Rng rng(9);
  PlanOptions nhwc, fused_nhwc;
  nhwc.y_layout = fused_nhwc.y_layout = YLayout::nhwc;
  fused_nhwc.strategy = Strategy::fused;
  Pipeline expands({2, 3, 5, 4}, DType::f64);  // the first op after the conv broadcasts Y to rank 5
  expands.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f64, rng, -1, 1))
      .add(host_random({2, 1, 1, 1, 1}, DType::f64, rng, -1, 1))
      .sum({1});
  const std::string why = "channels-last Y: the first stage reads Y as [2, 2, 4, 7, 6]";
  try {
    Plan plan(expands, fused_nhwc);
    ADD_FAILURE() << plan.describe();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
  const Plan fallback(expands, nhwc);
  EXPECT_EQ(fallback.strategy(), Strategy::reference);
  EXPECT_NE(fallback.describe().find("not fused: " + why), std::string::npos) << fallback.describe();
  const Plan automatic(expands);
  EXPECT_EQ(automatic.strategy(), Strategy::fused);
  // (On a GPU, describe() notes why channels-last was not a candidate.)
  EXPECT_EQ(automatic.describe().find("channels-last (NHWC)"), std::string::npos) << automatic.describe();
  EXPECT_EQ(automatic.describe().find("written once (channels-last)"), std::string::npos) << automatic.describe();

  Pipeline conv_only({2, 3, 5, 4}, DType::f64);
  conv_only.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f64, rng, -1, 1));
  EXPECT_THROW(Plan(conv_only, fused_nhwc), Error);

  Pipeline fold({2, 3, 5, 4}, DType::f64);
  fold.conv_transpose2d(host_random({3, 4, 3, 3}, DType::f64, rng, -1, 1)).mean({2, 3});
  EXPECT_EQ(Plan(fold, nhwc).strategy(), Strategy::fold);
  EXPECT_THROW(y_layout_from("nchwc"), Error);
  EXPECT_EQ(y_layout_from(to_string(YLayout::nhwc)), YLayout::nhwc);
}

TEST(Plan, PipelineWithoutFrontOpRunsFused) {
  Rng rng(3);
  Pipeline p({3, 5, 4, 7}, DType::f64);
  p.mul(host_random({5, 1, 1}, DType::f64, rng, -1, 1)).mean({2, 3}).logsumexp({1}, true);
  const HostTensor<double> x = random_tensor<double>(p.input_shape(), rng, Layout::contiguous, -1, 1);
  const Plan plan(p);
  EXPECT_EQ(plan.strategy(), Strategy::fused);
  EXPECT_LE(rel_error(run_poisoned(plan, x), run_poisoned(Plan(p, {Strategy::reference}), x)), 1e-12);
}

// ---- describe(), rewrites, errors ----------------------------------------------------

TEST(Plan, DescribeNamesStrategyRewritesAndBytes) {
  Rng rng(1);
  Pipeline p({2, 4, 9, 9});
  p.conv_transpose2d(host_random({4, 6, 3, 3}, DType::f32, rng, -1, 1)).mul(0.5).mul(4.0).mean({2, 3}, true).mean({2, 3}, true);
  const std::string d = Plan(p).describe();
  EXPECT_NE(d.find("strategy fold"), std::string::npos) << d;
  EXPECT_NE(d.find("merged mul(0.5) and mul(4) into mul(2)"), std::string::npos) << d;
  EXPECT_NE(d.find("reduces only size-1 axes"), std::string::npos) << d;
  EXPECT_NE(d.find("bytes: floor"), std::string::npos) << d;
  const int64_t floor = (2 * 4 * 81 + 4 * 6 * 9 + 2 * 6) * 4;
  EXPECT_EQ(Plan(p).floor_bytes(), floor);
}

// The conv-with-epilogue step names the axes its reduction runs over (on
// host memory no backend takes the step, and the refusal quotes it).
TEST(Plan, ConvEpilogueStepNamesItsReductionAxes) {
  Rng rng(3);
  for (const bool over_hw : {true, false}) {
    Pipeline p({1, 2, 5, 5});
    p.conv_transpose2d(host_random({2, 3, 3, 3}, DType::f32, rng, -1, 1)).relu();
    if (over_hw) p.sum({2, 3});
    else p.sum({1});
    const std::string want = over_hw ? "sum over H and W" : "sum over C";
    std::string text;
    try {
      text = Plan(p, {Strategy::fused_conv}).describe();
    } catch (const Error& e) {
      text = e.what();
    }
    EXPECT_NE(text.find("with its epilogue inside: 1 point ops, " + want), std::string::npos) << text;
  }
}

TEST(Plan, ForcedFoldThatCannotApplyIsAnError) {
  Rng rng(2);
  Pipeline p({1, 2, 5, 5});
  p.conv_transpose2d(host_random({2, 3, 3, 3}, DType::f32, rng, -1, 1)).relu().mean({2, 3});
  try {
    Plan plan(p, {Strategy::fold});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::unsupported);
    EXPECT_NE(std::string(e.what()).find("fold: relu follows the conv"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Plan(p).strategy(), Strategy::fused);
}

TEST(Plan, RunChecksItsArguments) {
  Rng rng(4);
  Pipeline p({1, 2, 5, 5});
  p.conv_transpose2d(host_random({2, 3, 3, 3}, DType::f32, rng, -1, 1)).mean({2, 3});
  const Plan plan(p);
  Tensor wrong = Tensor::empty({1, 2, 5, 4}, DType::f32), out = Tensor::empty({1, 3}, DType::f32);
  EXPECT_THROW(plan.run(wrong.view(), out.view()), Error);
  const HostTensor<float> x = random_tensor<float>({1, 2, 5, 5}, rng, Layout::contiguous, 0, 1);
  const Tensor small = Tensor::empty({1, 2}, DType::f32);
  try {
    plan.run(x, small.view());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Plan::run: output is [1, 2] float32"), std::string::npos) << e.what();
  }
}

TEST(Pipeline, BuilderErrorsNameThePosition) {
  Rng rng(5);
  Pipeline p({2, 4, 6, 6});
  p.conv_transpose2d(host_random({4, 3, 3, 3}, DType::f32, rng, -1, 1));
  try {
    p.mean({2, 3}).add(host_random({5}, DType::f32, rng, 0, 1));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::shape_mismatch);
    EXPECT_NE(std::string(e.what()).find("op #3 (add)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 3] and [5]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Pipeline({2, 4}).conv_transpose2d(host_random({4, 3, 3, 3}, DType::f32, rng, -1, 1)), Error);
  EXPECT_THROW(Pipeline({2, 4, 6, 6}).relu().conv_transpose2d(host_random({4, 3, 3, 3}, DType::f32, rng, -1, 1)), Error);
  EXPECT_THROW(Pipeline({2, 4, 6, 6}).sum({4}), Error);
  EXPECT_THROW(Pipeline({2, 4, 6, 6}).softmax(-5), Error);
  EXPECT_THROW(Pipeline({2, 4, 6, 6}).clamp(1.0, -1.0), Error);
}

}  // namespace
}  // namespace kfuse_test
