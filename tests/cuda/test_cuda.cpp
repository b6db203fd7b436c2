// The CUDA backend against the host Kokkos plans, on a GPU.
//
// Every case builds one pipeline twice from the same double values: once in
// the dtype under test, planned for CUDA memory (the CUDA backend), once in
// float64 with the reference strategy on the host (every op its own Kokkos
// kernel). Inputs are random (never zeros), sizes odd; the CUDA output is
// poisoned (all bytes 0xFF: NaN in every float format) before each run, so an
// element left unwritten fails.
//
// Tolerances, norm-wise relative error ||out - ref|| / ||ref||: fp32 1e-5
// (the fold sums a plane in fp32 register accumulators with a tree across
// threads, then contracts <= a few thousand products; cuDNN's fp32 FMA
// convolution and the epilogues sum in fp32); fp64 1e-11; float16/bfloat16
// inputs against the fp64 reference on the same rounded inputs: the output is
// rounded to the input's format, so 2e-3 (float16) and 1e-2 (bfloat16).
//
// Without a GPU every test is skipped (GTEST_SKIP), and main() returns 77,
// which ctest reports as skipped.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cuda/context.hpp"
#include "backends/cuda/kernels.hpp"
#include "core/device_runtime.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/spec.hpp"
#include "kfuse/tuning.hpp"
#include "tuning/tuner.hpp"

using namespace kfuse;

namespace {

using Rng = std::mt19937_64;
using Maker = std::function<Pipeline(DType)>;

// Iterations of the random sweeps: `n`, or KFUSE_CUDA_TEST_ITERS (fewer under compute-sanitizer).
int iters(int n) {
  const char* v = std::getenv("KFUSE_CUDA_TEST_ITERS");
  return v && std::atoi(v) > 0 ? std::min(n, std::atoi(v)) : n;
}

bool have_gpu() {
  static const bool yes = device::available();
  return yes;
}

#define REQUIRE_GPU()                                                                                      \
  do {                                                                                                     \
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine: the CUDA backend tests need a GPU"; \
  } while (0)

std::vector<double> uniform(int64_t n, Rng& rng, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& e : v) e = u(rng);
  return v;
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t e : s) n *= e;
  return n;
}

// A host tensor of `dtype` holding `v` (rounded once to the dtype).
Tensor host(const Shape& shape, const std::vector<double>& v, DType dtype) {
  Tensor d = Tensor::empty(shape, DType::f64);
  if (int64_t(v.size()) != d.numel())  // a test's own mistake: it would write past the tensor
    throw std::invalid_argument(detail::cat("host(): ", v.size(), " values for a tensor of ", d.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) d.data<double>()[i] = v[i];
  return dtype == DType::f64 ? d : cast(d.view(), dtype);
}

// The values of a host view, as doubles (any dtype).
std::vector<double> values(const TensorView& v) {
  const Tensor d = cast(v, DType::f64);
  const double* p = d.data<double>();
  return std::vector<double>(p, p + d.numel());
}

// `v` rounded through `dtype` (the values a pipeline of that dtype really holds).
std::vector<double> rounded(const std::vector<double>& v, DType dtype) {
  if (dtype == DType::f64) return v;
  return values(host({int64_t(v.size())}, v, dtype).view());
}

DType param_dtype(DType d) { return d == DType::f64 ? DType::f64 : DType::f32; }

struct Result {
  std::vector<double> out, ref;
  std::string describe;
};

double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i]) != std::isnan(ref[i])) return std::nan("");
    if (std::isnan(ref[i]) || (std::isinf(ref[i]) && out[i] == ref[i])) continue;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Optional layout of x on the device: row padding and a misaligned start.
struct Layout {
  int64_t pad_w = 0;     // extra elements after each row
  int64_t offset = 0;    // elements before the first
};

// Runs `make(dtype)` planned for CUDA (strategy `s`, Y's layout `y`) and
// `make(f64)` with the reference strategy on the host, on input values `x` of
// shape `xs`.
Result run_both(const Maker& make, DType dtype, Strategy s, const Shape& xs, const std::vector<double>& x,
                Layout layout = {}, bool tf32 = false, YLayout y = YLayout::automatic) {
  Result r;
  // Reference: float64 on the host, on x as the dtype under test holds it.
  const std::vector<double> xr = rounded(x, dtype);
  {
    PlanOptions o;
    o.strategy = Strategy::reference;
    Plan ref(make(DType::f64), o);
    const Tensor out = ref.run(host(xs, xr, DType::f64).view());
    r.ref = values(out.view());
  }
  PlanOptions o;
  o.strategy = s;
  o.memory = Memory::cuda;
  o.backend = BackendChoice::cuda;
  o.precision = tf32 ? Precision::tf32 : Precision::strict;
  o.y_layout = y;
  Plan plan(make(dtype), o);
  r.describe = plan.describe();
  const Tensor hx = host(xs, x, dtype);
  const std::size_t es = size_of(dtype);
  Tensor out = Tensor::empty(plan.output_shape(), dtype, Memory::cuda);
  EXPECT_EQ(cudaMemset(out.view().data, 0xFF, out.view().bytes()), cudaSuccess);
  if (layout.pad_w == 0 && layout.offset == 0) {
    const Tensor dx = Tensor::copy_of(hx.view(), Memory::cuda);
    plan.run(dx.view(), out.view());
  } else {
    // A strided / misaligned copy of x on the device: rows of W + pad_w, NaN in the gaps.
    const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], Wp = W + layout.pad_w;
    const int64_t total = layout.offset + N * C * H * Wp;
    Tensor buf = Tensor::empty({total}, dtype, Memory::cuda);
    EXPECT_EQ(cudaMemset(buf.view().data, 0xFF, buf.view().bytes()), cudaSuccess);
    char* base = static_cast<char*>(buf.view().data) + layout.offset * es;
    const char* src = static_cast<const char*>(hx.view().data);
    EXPECT_EQ(cudaMemcpy2D(base, Wp * es, src, W * es, W * es, N * C * H, cudaMemcpyHostToDevice), cudaSuccess);
    const TensorView dx(base, dtype, xs, {C * H * Wp, H * Wp, Wp, 1}, Memory::cuda);
    plan.run(dx, out.view());
  }
  const Tensor back = Tensor::copy_of(out.view(), Memory::host);
  r.out = values(back.view());
  return r;
}

double tolerance(DType d) {
  switch (d) {
    case DType::f64: return 1e-11;
    case DType::f16: return 2e-3;
    case DType::bf16: return 1e-2;
    default: return 1e-5;
  }
}

void expect_close(const Result& r, double tol, const std::string& what) {
  ASSERT_EQ(r.out.size(), r.ref.size()) << what;
  int64_t unwritten = 0;
  for (std::size_t i = 0; i < r.out.size(); ++i)
    if (std::isnan(r.out[i]) && !std::isnan(r.ref[i])) ++unwritten;
  EXPECT_EQ(unwritten, 0) << what << ": elements left NaN (unwritten or wrong)\n" << r.describe;
  const double err = rel_error(r.out, r.ref);
  EXPECT_LT(err, tol) << what << "\n" << r.describe;
}

// Sets an override for the duration of a scope.
// (The variable's previous value comes back after, e.g. a KFUSE_CUDA_JIT=0
// that the whole run was started with; also when the value is refused.)
struct EnvOverride {
  std::string name;
  std::optional<std::string> before;
  EnvOverride(const char* n, const char* v) : name(n) {
    if (const char* old = std::getenv(n)) before = old;
    setenv(n, v, 1);
    try {
      detail::cuda::reload_overrides();
    } catch (...) {
      restore();
      throw;
    }
  }
  ~EnvOverride() {
    restore();
    detail::cuda::reload_overrides();
  }
  void restore() const {
    if (before) setenv(name.c_str(), before->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

// Forces a kernel's warps per block (depth 2) for the duration of a scope.
struct ForcedLaunch {
  std::string kernel;
  ForcedLaunch(const char* k, int warps) : kernel(k) { force_launch(kernel, LaunchChoice{warps, 2}); }
  ~ForcedLaunch() { force_launch(kernel, std::nullopt); }
};

// ---- Random conv_transpose2d configurations -------------------------------------

struct Conv {
  int64_t N, Cin, Cout, H, W, kH, kW, G;
  ConvTranspose2dParams p;
  std::vector<double> w, b, x;
  bool bias = true;

  Shape x_shape() const { return {N, Cin, H, W}; }
  Shape w_shape() const { return {Cin, Cout / G, kH, kW}; }
  int64_t Hout() const { return conv_transpose_out_extent(H, kH, p.stride[0], p.padding[0], p.output_padding[0], p.dilation[0]); }
  int64_t Wout() const { return conv_transpose_out_extent(W, kW, p.stride[1], p.padding[1], p.output_padding[1], p.dilation[1]); }
  // Weights and bias uniform in [-wb, wb], x in [xlo, xhi].
  void fill(Rng& rng, double wb, double xlo, double xhi) {
    w = uniform(numel(w_shape()), rng, -wb, wb);
    b = uniform(Cout, rng, -wb, wb);
    x = uniform(numel(x_shape()), rng, xlo, xhi);
  }
  void add_to(Pipeline& pl, DType dt) const {
    pl.conv_transpose2d(host(w_shape(), w, param_dtype(dt)),
                        bias ? std::optional<Tensor>(host({Cout}, b, param_dtype(dt))) : std::nullopt, p);
  }
};

int64_t pick(Rng& rng, int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

Conv random_conv(Rng& rng, int64_t max_hw = 37) {
  for (;;) {
    Conv c;
    c.G = pick(rng, 1, 3);
    c.N = pick(rng, 1, 3);
    c.Cin = c.G * pick(rng, 1, 4);
    c.Cout = c.G * pick(rng, 1, 5);
    c.H = pick(rng, 1, max_hw) | 1;
    c.W = pick(rng, 1, max_hw) | 1;
    c.kH = pick(rng, 1, 5);
    c.kW = pick(rng, 1, 5);
    c.p.stride = {pick(rng, 1, 3), pick(rng, 1, 3)};
    c.p.dilation = {pick(rng, 1, 3), pick(rng, 1, 3)};
    c.p.padding = {pick(rng, 0, 3), pick(rng, 0, 3)};
    c.p.output_padding = {pick(rng, 0, std::max(c.p.stride[0], c.p.dilation[0]) - 1),
                          pick(rng, 0, std::max(c.p.stride[1], c.p.dilation[1]) - 1)};
    c.p.groups = c.G;
    if (c.Hout() < 1 || c.Wout() < 1) continue;
    c.bias = pick(rng, 0, 3) != 0;
    const double bound = 1.0 / std::sqrt(double(c.Cout / c.G * c.kH * c.kW));
    c.w = uniform(numel(c.w_shape()), rng, -bound, bound);
    c.b = uniform(c.Cout, rng, -bound, bound);
    c.x = uniform(numel(c.x_shape()), rng, 0.0, 1.0);
    return c;
  }
}

std::string text(const Conv& c) {
  return detail::cat("x [", c.N, ",", c.Cin, ",", c.H, ",", c.W, "] k ", c.kH, "x", c.kW, " Cout ", c.Cout, " s ", c.p.stride[0],
                     ",", c.p.stride[1], " p ", c.p.padding[0], ",", c.p.padding[1], " op ", c.p.output_padding[0], ",",
                     c.p.output_padding[1], " d ", c.p.dilation[0], ",", c.p.dilation[1], " g ", c.G, c.bias ? "" : " no bias");
}

// ---- The fold -----------------------------------------------------------------------

// A chain of per-channel affine ops, the spatial mean/sum, and one of several tails.
Maker fold_pipeline(const Conv& c, int chain, int tail, Rng& rng) {
  const std::vector<double> scale = uniform(c.Cout, rng, 0.5, 1.5), shift = uniform(c.Cout, rng, -1.0, 1.0),
                            tb = uniform(c.Cout, rng, -1.0, 1.0);
  return [=](DType dt) {
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    const DType pd = param_dtype(dt);
    if (chain & 1) p.mul(0.5);
    if (chain & 2) p.add(host({c.Cout, 1, 1}, shift, pd));
    if (chain & 4) p.mul(host({c.Cout, 1, 1}, scale, pd));
    if (chain & 8) p.neg().sub(0.25);
    if (chain & 16) p.div(host({1, c.Cout, 1, 1}, scale, pd));
    const bool keep = tail % 2 == 0;
    if (tail == 5) p.mean({1, 2, 3}, true);  // split into the spatial mean and a tail reduction
    else if (chain & 32) p.sum({2, 3}, keep);
    else p.mean({2, 3}, keep);
    switch (tail) {
      case 0: break;  // [N, C, 1, 1]: no tail ops
      case 1: p.relu().mul(3.0); break;
      case 2: p.add(host({c.Cout, 1, 1}, tb, pd)).logsumexp({1}, true).sum({2, 3}).mul(10.0); break;
      case 3: p.softmax(1); break;
      case 4: p.max({1}, true).tanh(); break;
      default: break;
    }
    return p;
  };
}

class CudaFold : public ::testing::Test {
 protected:
  void SetUp() override { REQUIRE_GPU(); }
};

TEST_F(CudaFold, RandomConfigsFp32AndFp64) {
  Rng rng(1234);
  for (int iter = 0; iter < iters(60); ++iter) {
    const Conv c = random_conv(rng);
    const int chain = int(pick(rng, 0, 63)), tail = int(pick(rng, 0, 5));
    const Maker make = fold_pipeline(c, chain, tail, rng);
    const std::string what = text(c) + detail::cat(" chain ", chain, " tail ", tail);
    for (DType dt : {DType::f32, DType::f64}) {
      const Result r = run_both(make, dt, Strategy::fold, c.x_shape(), c.x);
      expect_close(r, tolerance(dt), what + " " + to_string(dt));
    }
  }
}

TEST_F(CudaFold, HalfInputsAgainstFp64OnRoundedInputs) {
  Rng rng(99);
  for (int iter = 0; iter < iters(16); ++iter) {
    const Conv c = random_conv(rng, 61);
    const Maker make = fold_pipeline(c, int(pick(rng, 0, 63)), int(pick(rng, 0, 4)), rng);
    for (DType dt : {DType::f16, DType::bf16}) {
      const Result r = run_both(make, dt, Strategy::fold, c.x_shape(), c.x);
      expect_close(r, tolerance(dt), text(c) + " " + to_string(dt));
    }
  }
}

// The seed shapes, scaled down: kernel 3, stride 1 / stride 2 with padding and
// output padding; larger planes exercise the vector loop and its borders.
TEST_F(CudaFold, SeedLikeShapes) {
  Rng rng(7);
  for (int seed = 0; seed < 2; ++seed) {
    Conv c;
    c.N = 3, c.Cin = 8, c.Cout = 16, c.G = 1, c.kH = c.kW = 3;
    c.H = seed == 0 ? 96 : 130, c.W = seed == 0 ? 100 : 131;
    if (seed == 1) c.p.stride = {2, 2}, c.p.padding = {1, 1}, c.p.output_padding = {1, 1};
    c.fill(rng, 0.1, 0.0, 1.0);
    const Maker make = fold_pipeline(c, seed == 0 ? 0 : 1, seed == 0 ? 2 : 0, rng);
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x), tolerance(dt), text(c) + " " + to_string(dt));
    }
  }
}

// Strided rows (the scalar path), a misaligned start (the vector loop's head),
// and several row chunks per plane (the last chunk adds the partial sums).
TEST_F(CudaFold, LayoutsAndChunks) {
  Rng rng(55);
  for (int iter = 0; iter < iters(12); ++iter) {
    const Conv c = random_conv(rng, 45);
    const Maker make = fold_pipeline(c, int(pick(rng, 0, 63)), int(pick(rng, 0, 4)), rng);
    const DType dt = iter % 3 == 0 ? DType::f16 : DType::f32;
    expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x, Layout{3, 0}), tolerance(dt), text(c) + " padded rows");
    expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x, Layout{0, 1}), tolerance(dt), text(c) + " offset 1");
    for (const char* chunks : {"2", "7"}) {
      EnvOverride ov("KFUSE_CUDA_FOLD_CHUNKS", chunks);
      expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x), tolerance(dt), text(c) + " chunks " + chunks);
      // Twice: the counters must be back to zero after a run.
      expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x), tolerance(dt), text(c) + " chunks again");
    }
    for (int warps : {4, 8}) {
      ForcedLaunch f("cuda::fold_plane_sums", warps);
      expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x), tolerance(dt),
                   text(c) + detail::cat(" ", warps, " warps"));
    }
  }
}

// A tail row longer than shared memory holds (K = N * Cout > 8192 floats): the
// row stays in global memory.
TEST_F(CudaFold, LongTailRow) {
  Rng rng(3);
  Conv c;
  c.N = 2, c.Cin = 2, c.Cout = 4500, c.G = 1, c.kH = 1, c.kW = 2, c.H = 5, c.W = 7;
  c.fill(rng, 0.5, 0.0, 1.0);
  const Maker make = [c](DType dt) {
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    p.mean({2, 3}, true).logsumexp({0, 1}, true).mul(2.0);
    return p;
  };
  expect_close(run_both(make, DType::f32, Strategy::fold, c.x_shape(), c.x), 1e-5, "K = 9000");
}

// Tail rows of K = Cout values: several rows a tile (K = 2, 3), one row a tile
// (127 up to 512: a warp runs each row's tail from shared memory), and rows
// spanning tiles (513, 1500, and every K with whole rows off: the block that
// completes a row runs its tail).
TEST_F(CudaFold, TailRowsInOneTileAndAcrossTiles) {
  Rng rng(8);
  for (int64_t cout : {2, 3, 127, 300, 512, 513, 1500}) {
    Conv c;
    c.N = 5, c.Cin = 3, c.Cout = cout, c.G = 1, c.kH = 2, c.kW = 3, c.H = 9, c.W = 11;
    c.fill(rng, 0.5, 0.0, 1.0);
    for (int softmax : {0, 1}) {
      const Maker make = [c, softmax](DType dt) {
        Pipeline p(c.x_shape(), dt);
        c.add_to(p, dt);
        p.mean({2, 3}, true);
        if (softmax) p.softmax(1).mul(3.0);
        else p.logsumexp({1}, true).mul(2.0);
        return p;
      };
      for (const char* whole : {"1", "0"}) {
        EnvOverride ov("KFUSE_CUDA_FOLD_WHOLE_ROWS", whole);
        for (DType dt : {DType::f32, DType::f64})
          expect_close(run_both(make, dt, Strategy::fold, c.x_shape(), c.x), tolerance(dt),
                       detail::cat("Cout ", cout, softmax ? " softmax" : " logsumexp", " ", to_string(dt), " whole rows ", whole));
      }
    }
  }
}

// ---- The fused epilogue (cuDNN or the gather kernel for the conv) -----------------------

Maker epilogue_pipeline(const Conv& c, int kind, Rng& rng) {
  const std::vector<double> t = uniform(c.Cout, rng, 0.5, 1.5);
  return [=](DType dt) {
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    const DType pd = param_dtype(dt);
    switch (kind) {
      case 0: p.gelu().mul(host({c.Cout, 1, 1}, t, pd)); break;                     // map
      case 1: p.relu().mean({2, 3}); break;                                         // rows
      case 2: p.logsumexp({1}, true); break;                                        // over C
      case 3: p.softmax(1); break;                                                  // softmax over C
      case 4: p.softmax(3).mul(2.0); break;                                         // softmax over W
      case 5: p.max({1, 3}, true).sub(0.5); break;                                  // mixed axes
      case 6: p.tanh().mean({2, 3}, true).add(host({c.Cout, 1, 1}, t, pd)).logsumexp({1}).mul(10.0); break;  // tail
      case 7: p.sum({0, 1, 2, 3}); break;                                           // one output
      case 8: p.silu().min({2, 3}).softmax(1); break;                               // tail softmax
      default: p.mean({2, 3}).relu(); break;                                        // K = 1 tail
    }
    return p;
  };
}

class CudaEpilogue : public ::testing::Test {
 protected:
  void SetUp() override { REQUIRE_GPU(); }
};

TEST_F(CudaEpilogue, RandomConfigsCudnnAndGather) {
  Rng rng(4321);
  int cudnn_runs = 0;
  for (int iter = 0; iter < iters(40); ++iter) {
    const Conv c = random_conv(rng, 29);
    const int kind = iter % 10;
    const Maker make = epilogue_pipeline(c, kind, rng);
    const std::string what = text(c) + detail::cat(" epilogue ", kind);
    // The default path (the tensor-core kernel where it applies), cuDNN, the
    // gather kernel; the half types materialise Y in their dtype and compute
    // each epilogue stage in float (Y rounded once more: a looser bound).
    const DType half = iter % 2 ? DType::bf16 : DType::f16;
    const double half_tol = half == DType::bf16 ? 3e-2 : 5e-3;
    for (DType dt : {DType::f32, DType::f64})
      expect_close(run_both(make, dt, Strategy::fused, c.x_shape(), c.x), tolerance(dt), what + " " + to_string(dt));
    expect_close(run_both(make, half, Strategy::fused, c.x_shape(), c.x), half_tol, what + " " + to_string(half));
    {
      EnvOverride cudnn("KFUSE_CUDA_CONV", "cudnn");
      expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x), 1e-5, what + " cuDNN");
      cudnn_runs += std::string(detail::cuda::last_conv_path()) == "cudnn";
      expect_close(run_both(make, DType::f64, Strategy::fused, c.x_shape(), c.x), 1e-11, what + " cuDNN float64");
      expect_close(run_both(make, half, Strategy::fused, c.x_shape(), c.x), half_tol, what + " cuDNN " + to_string(half));
    }
    EnvOverride ov("KFUSE_CUDA_CONV", "gather");
    expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x), 1e-5, what + " gather");
    EXPECT_STREQ(detail::cuda::last_conv_path(), "gather");
    expect_close(run_both(make, half, Strategy::fused, c.x_shape(), c.x), half_tol, what + " gather " + to_string(half));
  }
#ifdef KFUSE_HAVE_CUDNN
  if (iters(40) == 40) {
    EXPECT_GT(cudnn_runs, 10) << "cuDNN ran " << cudnn_runs << " of 40 convolutions";
  }
#endif
  std::printf("cuDNN ran %d of 40 convolutions asked of it (the rest: the gather kernel)\n", cudnn_runs);
}

// x transposed to channels-last before cuDNN (forced; by default the plan
// measures it against cuDNN on NCHW x): random geometries with groups, in
// every dtype, Y in both layouts, and a strided x (cuDNN on x's own strides).
TEST_F(CudaEpilogue, XTransposedForCudnnMatchesReference) {
#ifndef KFUSE_HAVE_CUDNN
  GTEST_SKIP() << "built without cuDNN";
#endif
  Rng rng(2024);
  int transposed = 0, eligible = 0;
  for (int iter = 0; iter < iters(12); ++iter) {
    const Conv c = random_conv(rng, 23);
    const int kind = (3 * iter) % 10;
    const Maker make = epilogue_pipeline(c, kind, rng);
    const std::string what = text(c) + detail::cat(" epilogue ", kind, " x channels-last");
    const EnvOverride route("KFUSE_CUDA_CONV", "cudnn_nhwc");
    const Result r = run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x);
    expect_close(r, 1e-5, what);
    // cuDNN applies when output_padding < stride; the layouts differ when C and H x W exceed 1.
    if (c.p.output_padding[0] < c.p.stride[0] && c.p.output_padding[1] < c.p.stride[1] && c.Cin > 1 && c.H * c.W > 1) {
      ++eligible;
      transposed += r.describe.find("x to channels-last (") != std::string::npos;
    }
    expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x, {}, true, YLayout::nhwc), 5e-3,
                 what + " tf32, Y channels-last");
    expect_close(run_both(make, DType::f64, Strategy::fused, c.x_shape(), c.x), 1e-11, what + " float64");
    const DType half = iter % 2 ? DType::bf16 : DType::f16;
    expect_close(run_both(make, half, Strategy::fused, c.x_shape(), c.x), half == DType::bf16 ? 3e-2 : 5e-3,
                 what + " " + to_string(half));
    expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x, Layout{3, 1}), 1e-5, what + " strided x");
  }
  std::printf("x transposed for cuDNN in %d of %d geometries where it applies\n", transposed, eligible);
  EXPECT_GT(transposed, eligible / 2) << "cuDNN built a graph for channels-last x in " << transposed << " of "
                                      << eligible;
}

// Sizes that take the other kernels: a thread per output / row over C
// (outputs >= 1024 per SM), a block per output with several blocks per output,
// block-wide softmax rows (> 1024), strided input without a front op.
TEST_F(CudaEpilogue, LargeShapesTakeTheOtherPaths) {
  Rng rng(11);
  Conv c;
  c.N = 2, c.Cin = 3, c.Cout = 4, c.G = 1, c.kH = c.kW = 3, c.H = 301, c.W = 299;
  c.fill(rng, 0.3, 0.0, 1.0);
  for (int kind : {1, 2, 3, 4, 7}) {
    const Maker make = epilogue_pipeline(c, kind, rng);
    expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x), 1e-5, detail::cat("large epilogue ", kind));
  }
  // No front op: reductions straight over x (contiguous and padded rows).
  const Shape xs{1, 2, 3, 5003};
  const std::vector<double> x = uniform(numel(xs), rng, -2.0, 2.0);
  const Maker sum_w = [xs](DType dt) { return std::move(Pipeline(xs, dt).sum({3}).exp()); };
  const Maker soft_w = [xs](DType dt) { return std::move(Pipeline(xs, dt).softmax(3)); };
  const Maker lse_c = [xs](DType dt) { return std::move(Pipeline(xs, dt).logsumexp({1, 2})); };
  // exp of a sum of 5003 fp32 values: its relative error is the sum's absolute
  // error, which follows the summation order and so the block size the tuner
  // picks (1.3e-5 at 4 warps on the H100): 5e-5 there, 1e-5 for the others.
  for (const Maker* m : {&sum_w, &soft_w, &lse_c})
    for (Layout l : {Layout{}, Layout{5, 0}, Layout{0, 1}}) {
      expect_close(run_both(*m, DType::f32, Strategy::fused, xs, x, l), m == &sum_w ? 5e-5 : 1e-5,
                   detail::cat("no front op, pad ", l.pad_w, " off ", l.offset));
      expect_close(run_both(*m, DType::f64, Strategy::fused, xs, x, l), 1e-11, "no front op f64");
    }
}

// Every epilogue kind with its point chains compiled at plan time (NVRTC,
// the default) and interpreted by the built-in kernels (KFUSE_CUDA_JIT=0),
// in each dtype and over strided x; describe() says which ran.
TEST_F(CudaEpilogue, CompiledAndInterpretedChainsAgree) {
  Rng rng(77);
  Conv c;
  c.N = 2, c.Cin = 3, c.Cout = 5, c.G = 1, c.kH = 3, c.kW = 2, c.H = 13, c.W = 11;
  c.fill(rng, 0.3, -1.0, 1.0);
  const auto compiled = [](const std::string& d) { return d.find("compiled at plan time (NVRTC)") != std::string::npos; };
  for (int kind = 0; kind < 10; ++kind) {
    const Maker make = epilogue_pipeline(c, kind, rng);
    for (bool jit : {true, false}) {
      const EnvOverride mode("KFUSE_CUDA_JIT", jit ? "1" : "0");
      const std::string what = detail::cat("epilogue ", kind, jit ? " compiled" : " interpreted");
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        const Result r = run_both(make, dt, Strategy::fused, c.x_shape(), c.x);
        expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), what + " " + to_string(dt));
        EXPECT_EQ(compiled(r.describe), jit) << what << "\n" << r.describe;  // the conv bias is a point op
      }
      expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x, Layout{3, 1}), 1e-5, what + " strided x");
    }
  }
  // A pipeline without a conv reads strided x directly: the map stage's
  // strided path, compiled.
  const EnvOverride on("KFUSE_CUDA_JIT", "1");
  const Shape xs{2, 3, 5, 9};
  const std::vector<double> x = uniform(numel(xs), rng, -2.0, 2.0);
  const std::vector<double> t = uniform(3, rng, 0.5, 1.5);
  const Maker chain = [xs, t](DType dt) {
    return std::move(Pipeline(xs, dt).mish().mul(host({3, 1, 1}, t, param_dtype(dt))).clamp(-0.5, 0.75).sub(0.25));
  };
  for (Layout l : {Layout{}, Layout{2, 0}, Layout{0, 1}}) {
    const Result r = run_both(chain, DType::f32, Strategy::fused, xs, x, l);
    expect_close(r, 1e-5, detail::cat("map chain, pad ", l.pad_w, " off ", l.offset));
    EXPECT_TRUE(compiled(r.describe)) << r.describe;
  }
}

// Y written channels-last (forced): every epilogue kind with the conv
// through cuDNN and through the gather kernel, in float32, float64 and
// bfloat16; channels and pixels not multiples of the transposing map's 32 x
// 32 tiles; a reduction over H with a thread per output (the walk along C).
// Automatic: both layouts measured, the choice in describe().
TEST_F(CudaEpilogue, ChannelsLastYMatchesReference) {
  Rng rng(91);
  const auto nhwc = [](const Result& r) { return r.describe.find("channels-last (NHWC)") != std::string::npos; };
  // 37 channels: element by element; 48 channels of 19 x 16 pixels: the map's
  // 16-byte vectors in every dtype, a partial channel tile and a partial pixel tile.
  for (const int64_t cout : {37, 48}) {
    Conv c;
    c.N = 2, c.Cin = 3, c.Cout = cout, c.G = 1, c.kH = 3, c.kW = cout == 37 ? 2 : 3;
    c.H = cout == 37 ? 13 : 17, c.W = cout == 37 ? 11 : 14;
    c.fill(rng, 0.3, -1.0, 1.0);
    for (int kind = 0; kind < 10; ++kind) {
      const Maker make = epilogue_pipeline(c, kind, rng);
      const std::string what = detail::cat("channels-last epilogue ", kind, ", ", cout, " channels");
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        const Result r = run_both(make, dt, Strategy::fused, c.x_shape(), c.x, {}, false, YLayout::nhwc);
        expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), what + " " + to_string(dt));
        EXPECT_TRUE(nhwc(r)) << r.describe;
      }
      EnvOverride gather("KFUSE_CUDA_CONV", "gather");
      expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x, {}, false, YLayout::nhwc), 1e-5,
                   what + " gather");
    }
  }
  // 72 channels: two channel tiles of the map, the second partial; 16-byte vectors in every dtype.
  {
    Conv c;
    c.N = 2, c.Cin = 3, c.Cout = 72, c.G = 1, c.kH = c.kW = 3, c.H = 14, c.W = 12;  // 16 x 14 pixels
    c.fill(rng, 0.3, -1.0, 1.0);
    const Maker make = epilogue_pipeline(c, 0, rng);
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      const Result r = run_both(make, dt, Strategy::fused, c.x_shape(), c.x, {}, false, YLayout::nhwc);
      expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), detail::cat("channels-last map, 72 channels ", to_string(dt)));
      EXPECT_TRUE(nhwc(r)) << r.describe;
    }
  }
  Conv wide;  // sum over H: N x C x Wout = 154K outputs, a thread each
  wide.N = 4, wide.Cin = 5, wide.Cout = 64, wide.G = 1, wide.kH = wide.kW = 3, wide.H = 4, wide.W = 300;
  wide.p = ConvTranspose2dParams{}.with_stride(2);
  wide.fill(rng, 0.3, -1.0, 1.0);
  const Maker sum_h = [&wide](DType dt) {
    Pipeline p(wide.x_shape(), dt);
    wide.add_to(p, dt);
    return std::move(p.gelu().sum({2}).tanh());
  };
  for (YLayout y : {YLayout::nhwc, YLayout::nchw, YLayout::automatic}) {
    const Result r = run_both(sum_h, DType::f32, Strategy::fused, wide.x_shape(), wide.x, {}, false, y);
    expect_close(r, 1e-5, detail::cat("sum over H, Y ", to_string(y)));
    if (y != YLayout::automatic) EXPECT_EQ(nhwc(r), y == YLayout::nhwc) << r.describe;
    else EXPECT_NE(r.describe.find("measured on the device: Y NCHW"), std::string::npos) << r.describe;
  }
  // Over H and W: 256 outputs of 5409 elements, a thread per part of an
  // output reading along C (channels-last) or along W (the sum over H).
  const Maker gap = [&wide](DType dt) {
    Pipeline p(wide.x_shape(), dt);
    wide.add_to(p, dt);
    return std::move(p.silu().mean({2, 3}).softmax(1));
  };
  const Maker sum_h_only = [&wide](DType dt) {
    Pipeline p(wide.x_shape(), dt);
    wide.add_to(p, dt);
    return std::move(p.sum({2}, true).mish());
  };
  for (YLayout y : {YLayout::nhwc, YLayout::nchw})
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      const double tol = dt == DType::bf16 ? 3e-2 : tolerance(dt);
      expect_close(run_both(gap, dt, Strategy::fused, wide.x_shape(), wide.x, {}, false, y), tol,
                   detail::cat("mean over HW, Y ", to_string(y), " ", to_string(dt)));
      expect_close(run_both(sum_h_only, dt, Strategy::fused, wide.x_shape(), wide.x, {}, false, y), tol,
                   detail::cat("sum over H, Y ", to_string(y), " ", to_string(dt)));
    }
  // Softmax over W and over H of a channels-last Y: its rows walked along C
  // (Y's memory order), 37 channels (a block's 32 rows cross from one pixel
  // to the next), per-channel operands on both sides. Over W (23 and 150
  // values: the held kernels, the rows contiguous in the output through
  // shared memory), over H (23: held, stored along the walk; 300: a warp a row).
  {
    const std::vector<double> t1 = uniform(37, rng, -1.0, 1.0), t2 = uniform(37, rng, 0.5, 1.5);
    struct Case {
      int64_t h, w;
      int axis;
    };
    for (const Case& c : {Case{9, 21, 3}, Case{5, 148, 3}, Case{21, 4, 2}, Case{298, 3, 2}}) {
      const int axis = c.axis;
      Conv k;
      k.N = 2, k.Cin = 3, k.Cout = 37, k.G = 1, k.kH = k.kW = 3, k.H = c.h, k.W = c.w;  // Y [2, 37, h + 2, w + 2]
      k.fill(rng, 0.3, -1.0, 1.0);
      const Maker make = [k, axis, t1, t2](DType dt) {
        Pipeline p(k.x_shape(), dt);
        k.add_to(p, dt);
        const DType pd = param_dtype(dt);
        return std::move(p.add(host({37, 1, 1}, t1, pd)).softmax(axis).mul(host({37, 1, 1}, t2, pd)).sigmoid());
      };
      const int64_t count = axis == 3 ? c.w + 2 : c.h + 2;
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        const Result r = run_both(make, dt, Strategy::fused, k.x_shape(), k.x, {}, false, YLayout::nhwc);
        const std::string what = detail::cat("channels-last softmax over axis ", axis, " of ", count, ", ", to_string(dt));
        expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), what);
        EXPECT_TRUE(nhwc(r)) << r.describe;
        const bool held = dt != DType::f64 && count <= 256;
        EXPECT_EQ(r.describe.find("epilogue_softmax_cols_held") != std::string::npos, held) << what << "\n" << r.describe;
      }
    }
  }
  // Reductions over C with 181K outputs (a thread per row of C when Y is
  // channels-last), softmax over 150 channels (8 values a lane, element by
  // element), over 160 (16-byte vectors: two a lane in float32, four in
  // float64, one in bfloat16), over 100 (vectors in float32 and float64,
  // element by element in bfloat16) with per-channel operands on both sides,
  // and over 24 (a value a lane, 529 pixels: the last tile's warps run out).
  const auto over_c = [&rng](int64_t n, int64_t cout, int64_t hw) {
    Conv k;
    k.N = n, k.Cin = 3, k.Cout = cout, k.G = 1, k.kH = k.kW = 3, k.H = k.W = hw;
    k.p = ConvTranspose2dParams{}.with_stride(2);
    k.fill(rng, 0.3, -1.0, 1.0);
    return k;
  };
  const Conv many = over_c(2, 20, 150), wide_c = over_c(1, 150, 10), vec_c = over_c(1, 160, 9), vec_c4 = over_c(2, 100, 7),
             narrow_c = over_c(2, 24, 11);
  const std::vector<double> t1 = uniform(160, rng, -1.0, 1.0), t2 = uniform(160, rng, 0.5, 1.5);
  const auto chain = [&t1, &t2](const Conv& k, int which) -> Maker {
    return [k, which, t1, t2](DType dt) {
      Pipeline p(k.x_shape(), dt);
      k.add_to(p, dt);
      if (which == 0) return std::move(p.logsumexp({1}));
      if (which == 1) return std::move(p.gelu().max({1}, true).tanh());
      if (which == 2 || which == 5) return std::move(p.softmax(1).mul(3.0).sigmoid());
      const DType pd = param_dtype(dt);
      const auto first = [&k](const std::vector<double>& t) { return std::vector<double>(t.begin(), t.begin() + k.Cout); };
      return std::move(
          p.add(host({k.Cout, 1, 1}, first(t1), pd)).softmax(1).mul(host({k.Cout, 1, 1}, first(t2), pd)).sigmoid());
    };
  };
  const Conv* conv_of[] = {&many, &many, &wide_c, &vec_c, &vec_c4, &narrow_c};  // by `which`
  for (int which = 0; which < 6; ++which) {
    const Conv& k = *conv_of[which];
    for (YLayout y : {YLayout::nhwc, YLayout::nchw})
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        if (dt == DType::f64 && which < 3) continue;
        const Result r = run_both(chain(k, which), dt, Strategy::fused, k.x_shape(), k.x, {}, false, y);
        expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), detail::cat("over C ", which, " Y ", to_string(y), " ", to_string(dt)));
        // NCHW: the rows across held by a block's warps (float64 keeps the two-read kernel).
        if (which >= 2 && (y == YLayout::nhwc || dt != DType::f64)) {
          const char* kernel = y == YLayout::nhwc ? "epilogue_softmax_nhwc" : "epilogue_softmax_cols_held";
          EXPECT_NE(r.describe.find(kernel), std::string::npos) << r.describe;
        }
      }
  }
}

// Reductions whose walk takes 16-byte vectors (epilogue_reduce_cols_vec: the
// walk's fastest axis contiguous, extents multiples of the vector): over H,
// over C, over H and W (several parts an output), with a per-channel operand
// in the chain, in both Y layouts and every dtype; describe() names the
// kernel, or epilogue_reduce_cols_warp where the reduced axis and the walk's
// fastest one are a contiguous block of at most 16 vectors across (over H and
// W of a channels-last Y; over H of NCHW, 72 columns, in bfloat16). Then
// over W and over H and W of a channels-last Y of 48 channels (6 vectors of
// bfloat16 across C, 5 lanes each, and 2 lanes idle; 12 of float32, 2 lanes
// each; float64's 24 take epilogue_reduce_cols_vec), then straight over x,
// aligned (the vectors) and misaligned (the run takes a thread an output
// instead).
TEST_F(CudaEpilogue, ColumnReductionsTakeSixteenByteLoads) {
  Rng rng(404);
  Conv c;
  c.N = 2, c.Cin = 3, c.Cout = 32, c.G = 1, c.kH = c.kW = 4, c.H = 20, c.W = 36;
  c.p = ConvTranspose2dParams{}.with_stride(2).with_padding(1);  // Y [2, 32, 40, 72]
  c.fill(rng, 0.3, -1.0, 1.0);
  const std::vector<double> t = uniform(c.Cout, rng, 0.5, 1.5);
  struct Case {
    const char* what;
    bool nhwc_vec, nchw_vec;  // whether each layout's walk takes the vectors
    bool nhwc_warp;           // as a contiguous block (epilogue_reduce_cols_warp), Y channels-last
    bool nchw_warp16;         // the same for NCHW in bfloat16 (9 vectors across W)
  };
  const Case cases[] = {{"gelu, x operand, sum over H, tanh, x operand", true, true, false, true},
                        {"logsumexp over C", false, true, false, false},
                        {"silu, mean over H and W, x operand", true, false, true, false},
                        {"max over H, - 0.5", true, true, false, true},
                        {"x operand, min over C", false, true, false, false}};
  for (int which = 0; which < 5; ++which) {
    const Maker make = [&, which](DType dt) {
      Pipeline p(c.x_shape(), dt);
      c.add_to(p, dt);
      const Tensor op = host({c.Cout, 1, 1}, t, param_dtype(dt));
      switch (which) {
        // (The point ops after a reduction run on each output as it is stored: operands along C here.)
        case 0: return std::move(p.gelu().mul(op).sum({2}, true).tanh().mul(op));
        case 1: return std::move(p.logsumexp({1}, true));
        case 2: return std::move(p.silu().mean({2, 3}).mul(host({c.Cout}, t, param_dtype(dt))));
        case 3: return std::move(p.max({2}, true).sub(0.5));
        default: return std::move(p.mul(op).min({1}));
      }
    };
    for (YLayout y : {YLayout::nhwc, YLayout::nchw})
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        const Result r = run_both(make, dt, Strategy::fused, c.x_shape(), c.x, {}, false, y);
        const std::string what = detail::cat(cases[which].what, ", Y ", to_string(y), ", ", to_string(dt));
        expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), what);
        const bool warp = y == YLayout::nhwc ? cases[which].nhwc_warp : cases[which].nchw_warp16 && dt == DType::bf16;
        const bool vec = (y == YLayout::nhwc ? cases[which].nhwc_vec : cases[which].nchw_vec) && !warp;
        EXPECT_EQ(r.describe.find("epilogue_reduce_cols_vec") != std::string::npos, vec) << what << "\n" << r.describe;
        EXPECT_EQ(r.describe.find("epilogue_reduce_cols_warp") != std::string::npos, warp) << what << "\n" << r.describe;
      }
  }
  Conv c48 = c;
  c48.Cout = 48, c48.H = 13, c48.W = 30;  // Y [2, 48, 26, 60]
  c48.fill(rng, 0.3, -1.0, 1.0);
  const std::vector<double> t48 = uniform(c48.Cout, rng, 0.5, 1.5);
  for (int which = 0; which < 2; ++which) {
    const Maker make = [&, which](DType dt) {
      Pipeline p(c48.x_shape(), dt);
      c48.add_to(p, dt);
      const Tensor op = host({c48.Cout, 1, 1}, t48, param_dtype(dt));
      if (which == 0) return std::move(p.add(op).hardswish().mean({3}, true).sigmoid().sub(op));
      return std::move(p.mul(op).logsumexp({2, 3}));
    };
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      const Result r = run_both(make, dt, Strategy::fused, c48.x_shape(), c48.x, {}, false, YLayout::nhwc);
      const std::string what = detail::cat(which == 0 ? "hardswish, mean over W, sigmoid, - operand" : "logsumexp over H and W",
                                           ", 48 channels, Y nhwc, ", to_string(dt));
      expect_close(r, dt == DType::bf16 ? 3e-2 : tolerance(dt), what);
      const char* kernel = dt == DType::f64 ? "epilogue_reduce_cols_vec" : "epilogue_reduce_cols_warp";
      EXPECT_NE(r.describe.find(kernel), std::string::npos) << what << "\n" << r.describe;
    }
  }
  const Shape xs{2, 5, 6, 32};
  const std::vector<double> x = uniform(numel(xs), rng, -2.0, 2.0);
  const Maker sum_h = [xs](DType dt) { return std::move(Pipeline(xs, dt).exp().sum({2})); };
  for (Layout l : {Layout{}, Layout{0, 1}})
    for (DType dt : {DType::f32, DType::f64}) {
      const Result r = run_both(sum_h, dt, Strategy::fused, xs, x, l);
      expect_close(r, tolerance(dt), detail::cat("exp, sum over H of x, offset ", l.offset, " ", to_string(dt)));
      EXPECT_NE(r.describe.find("epilogue_reduce_cols_warp"), std::string::npos) << r.describe;  // as planned (32 columns)
    }
}

TEST_F(CudaEpilogue, Tf32ConvolutionIsClose) {
  Rng rng(8);
  Conv c;
  c.N = 2, c.Cin = 16, c.Cout = 8, c.G = 1, c.kH = c.kW = 3, c.H = 33, c.W = 35;
  c.fill(rng, 0.3, 0.0, 1.0);
  const Maker make = epilogue_pipeline(c, 0, rng);
  expect_close(run_both(make, DType::f32, Strategy::fused, c.x_shape(), c.x, {}, true), 5e-3, "tf32");
}

// ---- Autotuning: candidates timed on the run's own arguments -------------------------------

// Autotune mode (re-measuring) with a cache file of its own; the global tuning
// state is the environment's again afterwards.
class CudaTuning : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_GPU();
    path_ = ::testing::TempDir() + "kfuse_cuda_tuning_" + std::to_string(::getpid()) + ".json";
    std::remove(path_.c_str());
    tuning::reset();
    set_tuning_cache_path(path_);
    set_tuning_mode(TuningMode::autotune);
    set_tuning_retune(true);
  }
  void TearDown() override {
    tuning::reset();
    std::remove(path_.c_str());
    std::remove((path_ + ".lock").c_str());
  }
  std::string path_;
};

// The decision of `kernel` (the first of its shape classes), if it was made.
std::optional<TuningDecision> decision_of(const std::string& kernel) {
  for (const TuningDecision& d : tuning_decisions())
    if (d.kernel == kernel) return d;
  return std::nullopt;
}

// Every candidate run rewrites the kernel's outputs and puts its counters back:
// the measured run's result is still right, with one row chunk or several.
TEST_F(CudaTuning, MeasuredRunsStayCorrect) {
  Rng rng(77);
  for (int iter = 0; iter < iters(6); ++iter) {
    const Conv c = random_conv(rng, 45);
    const Maker make = fold_pipeline(c, int(pick(rng, 0, 63)), int(pick(rng, 0, 4)), rng);
    expect_close(run_both(make, DType::f32, Strategy::fold, c.x_shape(), c.x), tolerance(DType::f32), text(c));
    EnvOverride ov("KFUSE_CUDA_FOLD_CHUNKS", "7");
    expect_close(run_both(make, DType::f32, Strategy::fold, c.x_shape(), c.x), tolerance(DType::f32),
                 text(c) + " chunks 7");
  }
  const auto fold = decision_of("cuda::fold_plane_sums");
  ASSERT_TRUE(fold);
  EXPECT_EQ(fold->source, "measured") << fold->why;
  EXPECT_EQ(fold->candidates.size(), 2u);  // 4 and 8 warps

  Conv c;  // the epilogue kernels of LargeShapesTakeTheOtherPaths
  c.N = 2, c.Cin = 3, c.Cout = 4, c.G = 1, c.kH = c.kW = 3, c.H = 301, c.W = 299;
  c.fill(rng, 0.3, 0.0, 1.0);
  for (int kind = 0; kind < 10; ++kind)
    expect_close(run_both(epilogue_pipeline(c, kind, rng), DType::f32, Strategy::fused, c.x_shape(), c.x), 1e-5,
                 detail::cat("tuned epilogue ", kind));
  for (const char* k : {"cuda::epilogue_map", "cuda::epilogue_reduce_rows", "cuda::epilogue_reduce_cols"}) {
    const auto d = decision_of(k);
    EXPECT_TRUE(d && d->source == "measured") << k << (d ? ": " + d->source : std::string(": not launched"));
  }
  std::string warning;
  const tuning::CacheTable t = tuning::read_cache(path_, &warning);
  EXPECT_EQ(warning, "");
  for (const TuningDecision& d : tuning_decisions()) {
    if (d.source == "measured") {
      EXPECT_TRUE(t.count({d.device, d.kernel, d.shape_class})) << d.kernel << " " << d.shape_class;
    }
  }
}

// In place (the output is the input), a re-run would apply the chain twice:
// the map is not measured, and its result is right.
TEST_F(CudaTuning, InPlaceEpiloguesAreNotMeasured) {
  Rng rng(5);
  const Shape xs{3, 5, 67, 129};
  const std::vector<double> x = uniform(numel(xs), rng, -2.0, 2.0);
  PlanOptions o;
  o.strategy = Strategy::fused;
  o.memory = Memory::cuda;
  o.backend = BackendChoice::cuda;
  const Plan plan(Pipeline(xs, DType::f32).relu().mul(2.0), o);
  const Tensor dx = Tensor::copy_of(host(xs, x, DType::f32).view(), Memory::cuda);
  plan.run(dx.view(), dx.view());
  const std::vector<double> got = values(Tensor::copy_of(dx.view(), Memory::host).view());
  const std::vector<double> xr = rounded(x, DType::f32);
  int64_t wrong = 0;
  for (std::size_t i = 0; i < x.size(); ++i) wrong += got[i] != 2.0 * std::max(xr[i], 0.0);
  EXPECT_EQ(wrong, 0);
  const auto d = decision_of("cuda::epilogue_map");
  ASSERT_TRUE(d);
  EXPECT_NE(d->source, "measured");
  const Tensor out = plan.run(dx.view());  // out of place: measured now
  EXPECT_EQ(decision_of("cuda::epilogue_map")->source, "measured");
}

// ---- The conv with its epilogue inside (fused_conv) ---------------------------------------

// Every step line of describe() names the CUDA backend.
void expect_all_on_cuda(const std::string& describe) {
  std::size_t at = 0, steps = 0;
  while ((at = describe.find("  step ", at)) != std::string::npos) {
    const std::size_t end = describe.find('\n', at);
    const std::string line = describe.substr(at, end - at);
    EXPECT_NE(line.find("[cuda: "), std::string::npos) << line << "\n" << describe;
    ++steps;
    at = end;
  }
  EXPECT_GT(steps, 0u) << describe;
}

// conv -> a point chain (Y-sized output), or a reduction / softmax over C with
// point ops after it, or a reduction over C and then more ops (epilogue
// stages on the reduced tensor): the implicit-GEMM tensor-core kernel in
// 3xTF32 (strict float32), TF32 and bfloat16, against the float64 host
// reference. Operands broadcast every way the kernel's (row, pixel) indexing
// splits: per channel, per pixel, per sample, Y-sized, before and after the
// reduction.
Maker conv_epilogue_pipeline(const Conv& c, int kind, Rng& rng) {
  const int64_t N = c.N, C = c.Cout, H = c.Hout(), W = c.Wout();
  const std::vector<double> t = uniform(C, rng, -1.0, 1.0), hw = uniform(H * W, rng, 0.5, 1.5),
                            ny = uniform(N * C * H * W, rng, -1.0, 1.0), n1 = uniform(N, rng, -1.0, 1.0),
                            w1 = uniform(W, rng, -1.0, 1.0), nc = uniform(N * C, rng, -1.0, 1.0);
  return [=](DType dt) {
    const DType pd = param_dtype(dt);
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    switch (kind) {
      case 0: p.mish().add(0.5).hardtanh(-1.0, 1.0).mul(2.0); break;
      case 1: p.add(host({C, 1, 1}, t, pd)).relu().mul(host({H, W}, hw, pd)).add(host({N, C, H, W}, ny, pd)).gelu(); break;
      case 2: p.logsumexp({1}, true).add(host({N, 1, 1, 1}, n1, pd)).relu(); break;
      case 3: p.softmax(1).mul(host({1, C, 1, 1}, t, pd)).mul(2.0); break;
      case 4: p.max({1}).add(host({H, W}, hw, pd)).tanh(); break;
      case 5: p.sigmoid().mul(host({C, 1, 1}, t, pd)).mean({1}, true); break;
      case 6: p.max({1}, true).sum({2}, true).gelu().add(host({W}, w1, pd)); break;
      case 7: p.relu().logsumexp({1}).mul(host({H, W}, hw, pd)).softmax(1).mean({2}).neg(); break;
      // Over H and W (partials a tile, then the second pass), with any channels and groups:
      case 8: p.silu().mean({2, 3}).softmax(1); break;
      case 9: p.add(host({C, 1, 1}, t, pd)).gelu().max({2, 3}, true).mul(host({N, C, 1, 1}, nc, pd)).tanh(); break;
      case 10: p.tanh().min({2, 3}, true).neg(); break;
      default: p.sum({2, 3}).mul(host({C}, t, pd)).add(0.25); break;
    }
    return p;
  };
}

TEST_F(CudaEpilogue, ConvWithItsEpilogueInside) {
  Rng rng(2024);
  for (int iter = 0; iter < iters(36); ++iter) {
    Conv c = random_conv(rng, 33);
    const int kind = iter % 12;
    if (kind == 3 && c.G != 1) {  // a softmax over C: the tile holds every channel (groups 1)
      c.G = 1, c.p.groups = 1;
      c.w = uniform(numel(c.w_shape()), rng, -0.3, 0.3);
    }
    const Maker make = conv_epilogue_pipeline(c, kind, rng);
    const std::string what = text(c) + detail::cat(" conv epilogue ", kind);
    const Result strict = run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), c.x);
    expect_close(strict, 1e-5, what + " 3xTF32");
    EXPECT_NE(strict.describe.find("strategy fused_conv"), std::string::npos) << strict.describe;
    expect_all_on_cuda(strict.describe);
    expect_close(run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), c.x, {}, true), 5e-3, what + " TF32");
    expect_close(run_both(make, DType::bf16, Strategy::automatic, c.x_shape(), c.x), 2e-2, what + " bfloat16");
  }
}

// The parts of a reduction that spans tiles live in the calling thread's
// workspace: NaN there before each run (64 MiB, more than these parts take),
// so that a part no block writes shows in the output.
void poison_workspace() {
  const std::size_t bytes = std::size_t(64) << 20;
  ASSERT_EQ(cudaMemset(detail::cuda::workspace().scratch(bytes), 0xFF, bytes), cudaSuccess);
}

// Reductions inside the conv on a geometry, each epilogue kind in every
// precision, the workspace poisoned before each run; `spans`: whether the
// reduction spans tiles (its parts and the second pass), as describe() says;
// `strict_says`: text the strict plan's describe() must hold, if any.
struct ConvGeometry {
  int64_t N, Cin, Cout, H, W, k, s, pad, G;
};
void check_conv_reductions(const ConvGeometry& gm, std::initializer_list<int> kinds, bool spans, Rng& rng,
                           const std::string& strict_says = "") {
  Conv c{};
  c.N = gm.N, c.Cin = gm.Cin, c.Cout = gm.Cout, c.H = gm.H, c.W = gm.W, c.kH = gm.k, c.kW = gm.k, c.G = gm.G;
  c.p.stride = {gm.s, gm.s};
  c.p.padding = {gm.pad, gm.pad};
  c.p.groups = gm.G;
  c.fill(rng, 0.3, -1.0, 1.0);
  for (int kind : kinds) {
    const Maker make = conv_epilogue_pipeline(c, kind, rng);
    const std::string what = text(c) + detail::cat(" conv epilogue ", kind);
    poison_workspace();
    const Result strict = run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), c.x);
    expect_close(strict, 1e-5, what + " 3xTF32");
    EXPECT_NE(strict.describe.find("strategy fused_conv"), std::string::npos) << strict.describe;
    EXPECT_EQ(strict.describe.find("spans tiles") != std::string::npos, spans) << strict.describe;
    EXPECT_NE(strict.describe.find(strict_says), std::string::npos) << strict_says << "\n" << strict.describe;
    poison_workspace();
    expect_close(run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), c.x, {}, true), 5e-3, what + " TF32");
    poison_workspace();
    expect_close(run_both(make, DType::bf16, Strategy::fused_conv, c.x_shape(), c.x), 2e-2, what + " bfloat16");
  }
}

// Reductions inside the conv that span tiles: over C where a sample's
// channels fill several channel tiles (Cout 72; 130 in groups 2), and over H
// and W (always), with many spatial tiles of unequal phases (stride 3, odd
// sizes: the generic tile path; stride 2 on 72 columns: a fast path).
TEST_F(CudaEpilogue, ConvReductionsSpanningTilesInside) {
  Rng rng(77);
  for (const ConvGeometry& gm : {ConvGeometry{2, 24, 72, 21, 23, 3, 3, 0, 1}, ConvGeometry{3, 10, 130, 17, 72, 4, 2, 1, 2}})
    check_conv_reductions(gm, {2, 4, 5, 6, 8, 9, 10, 11}, true, rng);  // over C: logsumexp, max, mean, max; over H and W
}

// Reductions over C that one channel tile completes, with more than 32
// channels (from the accumulators in registers; fewer take the tile path):
// a generic tile (stride 3, odd sizes) and a fast one (stride 2, 72 input
// columns: 144 output columns, two column phases of 72 in a 128-column tile).
TEST_F(CudaEpilogue, ConvReductionsOverCInOneTile) {
  Rng rng(78);
  for (const ConvGeometry& gm : {ConvGeometry{2, 20, 48, 13, 15, 3, 3, 1, 1}, ConvGeometry{2, 12, 64, 9, 72, 2, 2, 0, 1}})
    check_conv_reductions(gm, {2, 4, 5, 6, 7}, false, rng);  // logsumexp, max, mean, max then a stage, logsumexp then stages
}

// The TMA pipeline with more than two stage buffers, wrapping: stride 3 on
// 100 input columns takes the fast tile of 2 rows x 128 columns, and 80 input
// channels make five stages of 16 (strict float32), 23.5 KB each, three of
// which fit the epilogue's 73 KB tile. A map, a reduction over C (the tile
// path: 16 channels) and one over H and W (from the registers).
TEST_F(CudaEpilogue, ConvDeepTmaPipeline) {
  Rng rng(79);
  const ConvGeometry gm{1, 80, 16, 5, 100, 3, 3, 0, 1};
  const std::string says = detail::cuda::device_info().major >= 9 ? "3 stages (TMA copies)" : "fast path";
  check_conv_reductions(gm, {0, 4}, false, rng, says);  // mish chain; max over C
  check_conv_reductions(gm, {8}, true, rng, says);      // silu, mean over H and W, softmax over C
}

// ---- Multi-stage epilogues: every pipeline on the device ---------------------------------

// Chains that do not fit one row program (tests/test_plan.cpp's set, on the
// GPU): several epilogue stages, every step on the CUDA backend.
Maker staged_pipeline(int which, Rng& rng) {
  const Shape xs{3, 4, 5, 7};
  const std::vector<double> w = uniform(4 * 6 * 3 * 2, rng, -0.5, 0.5), b = uniform(6, rng, -0.5, 0.5),
                            o1 = uniform(256, rng, -1, 1), o2 = uniform(256, rng, -1, 1);
  return [=](DType dt) {
    const DType pd = param_dtype(dt);
    const auto r = [&](Shape s, const std::vector<double>& v) {
      return host(s, std::vector<double>(v.begin(), v.begin() + numel(s)), pd);
    };
    Pipeline p(xs, dt);
    p.conv_transpose2d(r({4, 6, 3, 2}, w), r({6}, b), ConvTranspose2dParams{}.with_stride(2).with_padding(1));
    switch (which) {
      case 0: p.min({1}, true).sum({2}, true).gelu().add(r({1, 1, 1, 1}, o1)); break;
      case 1: p.sum({0}).max({1}).tanh(); break;
      case 2: p.softmax(2).mean({1, 3}).neg(); break;
      case 3: p.relu().logsumexp({1}).softmax(0).mul(r({9, 1}, o1)); break;
      case 4: p.mean({2, 3}, true).add(r({2, 1, 6, 1, 1}, o1)).relu().sum({1}); break;
      case 5: p.max({1}, true).mul(r({1, 6, 1, 1}, o2)).softmax(1).min({3}); break;
      case 6: p.sigmoid().sum({0, 2}).softmax(1).logsumexp({0}, true).exp(); break;
      default: p.softmax(3).softmax(1).mean({0, 1}).hardtanh(-0.2, 0.2).sum({0}); break;
    }
    return p;
  };
}

TEST_F(CudaEpilogue, MultiStageChainsRunOnTheDevice) {
  for (int which = 0; which < 8; ++which) {
    Rng rng(500 + which);
    const Maker make = staged_pipeline(which, rng);
    const Shape xs{3, 4, 5, 7};
    const std::vector<double> x = uniform(numel(xs), rng, 0.0, 1.0);
    for (DType dt : {DType::f32, DType::f64}) {
      const Result r = run_both(make, dt, Strategy::automatic, xs, x);
      expect_close(r, tolerance(dt), detail::cat("staged ", which, " ", to_string(dt)));
      expect_all_on_cuda(r.describe);
    }
    expect_close(run_both(make, DType::f32, Strategy::automatic, xs, x, {}, true), 5e-3, detail::cat("staged tf32 ", which));
    const Result bf = run_both(make, DType::bf16, Strategy::automatic, xs, x);
    expect_close(bf, 3e-2, detail::cat("staged bfloat16 ", which));
    expect_all_on_cuda(bf.describe);
  }
}

// NaN and infinities through every epilogue kind, as PyTorch: max/min
// propagate NaN, logsumexp of a row holding +inf is +inf, a softmax row
// holding +inf is NaN throughout (exp(inf - inf)). The CUDA softmax once
// returned 0 for the finite elements of such a row.
TEST_F(CudaEpilogue, NanAndInfinitiesAsPyTorch) {
  const Shape xs{2, 3, 4, 37};
  Rng rng(99);
  std::vector<double> x = uniform(numel(xs), rng, -2.0, 2.0);
  const double inf = std::numeric_limits<double>::infinity();
  x[5] = inf;        // row (0, 0, 0) of W; column (0, :, 0, 5) of C
  x[40] = -inf;      // row (0, 0, 1)
  x[200] = std::nan("");
  x[37 * 4 + 9] = inf, x[37 * 4 * 2 + 9] = inf;  // two +inf in one C column
  for (int j = 0; j < 37; ++j) x[37 * 7 + j] = -inf;  // a row of -inf only
  const std::vector<std::pair<const char*, std::function<void(Pipeline&)>>> ops = {
      {"softmax over W", [](Pipeline& p) { p.softmax(3); }},
      {"softmax over C", [](Pipeline& p) { p.softmax(1).mul(2.0); }},
      {"logsumexp over W", [](Pipeline& p) { p.logsumexp({3}); }},
      {"logsumexp over C", [](Pipeline& p) { p.logsumexp({1}, true); }},
      {"max over W", [](Pipeline& p) { p.max({3}); }},
      {"min over C", [](Pipeline& p) { p.min({1}); }},
      {"sum over H, W", [](Pipeline& p) { p.sum({2, 3}); }},
      {"relu, mean over C", [](Pipeline& p) { p.relu().mean({1}); }},
      {"exp map", [](Pipeline& p) { p.exp().mul(0.5); }},
  };
  for (const auto& [what, op] : ops) {
    const Maker make = [xs, op = op](DType dt) {
      Pipeline p(xs, dt);
      op(p);
      return p;
    };
    for (DType dt : {DType::f32, DType::f64}) {
      const Result r = run_both(make, dt, Strategy::automatic, xs, x);
      ASSERT_EQ(r.out.size(), r.ref.size());
      int64_t differ = 0;
      for (std::size_t i = 0; i < r.out.size(); ++i) {
        const bool both_nan = std::isnan(r.out[i]) && std::isnan(r.ref[i]);
        const bool close = std::abs(r.out[i] - r.ref[i]) <= 1e-5 * (1 + std::abs(r.ref[i])) || r.out[i] == r.ref[i];
        differ += !(both_nan || close);
      }
      EXPECT_EQ(differ, 0) << what << " " << to_string(dt) << "\n" << r.describe;
    }
  }
}

// NaN and infinities in x through the conv kernel with its epilogue inside
// (fused_conv), in each precision. The NaNs include the GPU's canonical
// 0x7fffffff and its negative, whose all-ones mantissa a bit-level TF32
// rounding would carry into the sign (a NaN turned into -0; sixteenth session).
// Infinities: TF32 and bfloat16 as PyTorch; 3xTF32 (strict) gives NaN where an
// infinity reaches the sum (inf - tf32(inf) is NaN, as in any 3xTF32 split).
TEST_F(CudaEpilogue, ConvKernelKeepsNanAndInfinities) {
  Rng rng(4242);
  Conv c;
  c.N = 2, c.Cin = 5, c.Cout = 6, c.H = 9, c.W = 11, c.kH = 3, c.kW = 3, c.G = 1;
  c.p = ConvTranspose2dParams{}.with_stride(2).with_padding(1).with_output_padding(1);
  c.fill(rng, 0.5, -1.0, 1.0);
  const auto bits = [](uint64_t b) {
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  };
  const int64_t hw = c.H * c.W, plane = c.Cin * hw;
  std::vector<double> nan_x = c.x, inf_x = c.x;
  nan_x[2 * c.W + 3] = bits(0x7fffffffffffffffull);                   // float 0x7fffffff
  nan_x[plane + 3 * hw + 5 * c.W + 10] = bits(0xffffffffffffffffull);  // float 0xffffffff
  nan_x[4 * hw + 8 * c.W] = std::nan("");
  inf_x[2 * c.W + 3] = std::numeric_limits<double>::infinity();
  inf_x[plane + 3 * hw + 5 * c.W + 10] = -std::numeric_limits<double>::infinity();
  {
    const Tensor hx = host(c.x_shape(), nan_x, DType::f32);
    uint32_t b = 0;
    std::memcpy(&b, static_cast<const float*>(hx.view().data) + 2 * c.W + 3, 4);
    ASSERT_EQ(b, 0x7fffffffu) << "the host's double-to-float conversion did not keep the NaN's payload";
  }
  // A point chain (the Y-sized store) and a reduction over C.
  const Maker map = [c](DType dt) {
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    p.mul(2.0).add(0.5);
    return p;
  };
  const Maker lse = [c](DType dt) {
    Pipeline p(c.x_shape(), dt);
    c.add_to(p, dt);
    p.logsumexp({1}, true);
    return p;
  };
  // Where the reference is not finite, the output is NaN (strict) or the same.
  const auto expect_specials = [](const Result& r, bool strict, const std::string& what) {
    ASSERT_EQ(r.out.size(), r.ref.size()) << what;
    int64_t specials = 0, wrong = 0;
    for (std::size_t i = 0; i < r.out.size(); ++i) {
      if (std::isfinite(r.ref[i])) continue;
      ++specials;
      wrong += !(std::isnan(r.out[i]) || (!strict && r.out[i] == r.ref[i]));
      wrong += !strict && std::isnan(r.out[i]) != std::isnan(r.ref[i]);
    }
    EXPECT_GT(specials, 0) << what;
    EXPECT_EQ(wrong, 0) << what << "\n" << r.describe;
  };
  for (const auto& [make, what] : {std::pair{map, "conv, mul, add"}, std::pair{lse, "conv, logsumexp over C"}}) {
    for (const auto& [x, name] : {std::pair{nan_x, "NaN"}, std::pair{inf_x, "infinities"}}) {
      const std::string w = std::string(what) + " with " + name;
      const Result strict = run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), x);
      ASSERT_NE(strict.describe.find("strategy fused_conv"), std::string::npos) << strict.describe;
      expect_specials(strict, true, w + " 3xTF32");
      const Result tf32 = run_both(make, DType::f32, Strategy::fused_conv, c.x_shape(), x, {}, true);
      expect_specials(tf32, false, w + " TF32");
      expect_close(tf32, 5e-3, w + " TF32");
      const Result bf16 = run_both(make, DType::bf16, Strategy::fused_conv, c.x_shape(), x);
      expect_specials(bf16, false, w + " bfloat16");
      expect_close(bf16, 2e-2, w + " bfloat16");
      if (std::string(name) == "NaN") expect_close(strict, 1e-5, w + " 3xTF32");
    }
  }
}

// ---- Errors and edges ------------------------------------------------------------------

// Plans replay their launches as a CUDA graph: the third run with the same
// pointers is a replay, new values in the same input go through it, other
// pointers capture again, and every run writes its whole output (poisoned
// before each run). One plan of each device strategy with several steps.
TEST(CudaGraph, PlansReplayTheirLaunches) {
  REQUIRE_GPU();
  Rng rng(808);
  Conv c;
  c.N = 3, c.Cin = 5, c.Cout = 6, c.G = 1, c.kH = c.kW = 3, c.H = 37, c.W = 41;
  c.p.stride = {2, 2}, c.p.padding = {1, 1}, c.p.output_padding = {1, 1};
  c.fill(rng, 0.2, 0.0, 1.0);
  struct Case {
    const char* name;
    Maker make;
    Shape xs;
  };
  const Case cases[] = {{"fold", fold_pipeline(c, 1, 2, rng), c.x_shape()},
                        {"staged softmax", staged_pipeline(3, rng), Shape{3, 4, 5, 7}},
                        {"staged min over C", staged_pipeline(0, rng), Shape{3, 4, 5, 7}}};
  for (const Case& k : cases) {
    PlanOptions o;
    o.memory = Memory::cuda;
    o.backend = BackendChoice::cuda;
    const Plan plan(k.make(DType::f32), o);
    PlanOptions ro;
    ro.strategy = Strategy::reference;
    const Plan ref(k.make(DType::f64), ro);
    const auto reference = [&](const std::vector<double>& x) {
      return values(ref.run(host(k.xs, rounded(x, DType::f32), DType::f64).view()).view());
    };
    const std::vector<double> x1 = uniform(numel(k.xs), rng, 0.0, 1.0), x2 = uniform(numel(k.xs), rng, -1.0, 1.0);
    const std::vector<double> ref1 = reference(x1), ref2 = reference(x2);
    Tensor dx1 = Tensor::copy_of(host(k.xs, x1, DType::f32).view(), Memory::cuda);
    const Tensor dx2 = Tensor::copy_of(host(k.xs, x2, DType::f32).view(), Memory::cuda);
    Tensor o1 = Tensor::empty(plan.output_shape(), DType::f32, Memory::cuda);
    const Tensor o2 = Tensor::empty(plan.output_shape(), DType::f32, Memory::cuda);
    const auto check = [&](const TensorView& x, const Tensor& out, const std::vector<double>& want, const char* what) {
      ASSERT_EQ(cudaMemset(out.view().data, 0xFF, out.view().bytes()), cudaSuccess);
      plan.run(x, out.view());
      const Result r{values(Tensor::copy_of(out.view(), Memory::host).view()), want, plan.describe()};
      expect_close(r, tolerance(DType::f32), detail::cat(k.name, ": ", what));
    };
    for (int r = 0; r < 3; ++r) check(dx1.view(), o1, ref1, "the same pointers");
    EXPECT_NE(plan.describe().find("(1 replays so far)"), std::string::npos) << plan.describe();
    for (int r = 0; r < 3; ++r) check(dx1.view(), o2, ref1, "another output");
    ASSERT_EQ(cudaMemcpy(dx1.view().data, dx2.view().data, dx1.view().bytes(), cudaMemcpyDeviceToDevice), cudaSuccess);
    check(dx1.view(), o2, ref2, "new values in the input");
    for (int r = 0; r < 2; ++r) check(dx2.view(), o1, ref2, "another input");
    EXPECT_NE(plan.describe().find("(3 replays so far)"), std::string::npos) << plan.describe();
  }
  EnvOverride off("KFUSE_CUDA_GRAPHS", "0");
  PlanOptions o;
  o.memory = Memory::cuda;
  const Plan direct(cases[0].make(DType::f32), o);
  EXPECT_NE(direct.describe().find("launched directly (KFUSE_CUDA_GRAPHS=0)"), std::string::npos) << direct.describe();
}

// Half precision runs every strategy but the host reference: the conv with
// its epilogue inside, or Y materialised in the half type and the epilogue
// stages after it.
TEST(CudaBackend, HalfPipelinesRunEveryDeviceStrategy) {
  REQUIRE_GPU();
  Rng rng(1);
  const Conv c = random_conv(rng);
  PlanOptions o;
  o.memory = Memory::cuda;
  Pipeline p(c.x_shape(), DType::f16);
  c.add_to(p, DType::f16);
  p.relu();
  EXPECT_EQ(Plan(p, o).strategy(), Strategy::fused_conv);
  o.strategy = Strategy::fused;
  const Plan fused(p, o);
  expect_all_on_cuda(fused.describe());
  o.strategy = Strategy::reference;
  EXPECT_THROW(Plan(p, o), Error);
}

TEST(CudaBackend, DeviceErrorsNameTheCall) {
  REQUIRE_GPU();
  try {
    device::allocate(std::size_t(1) << 62);
    FAIL() << "allocating 4 EiB succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::backend);
    EXPECT_NE(std::string(e.what()).find("cudaMalloc"), std::string::npos) << e.what();
  }
}

// A value an override does not take is an error naming the variable, the
// value and what it takes (it used to fall back to the default silently), and
// the overrides in force stay those read before.
TEST(CudaBackend, BadOverridesAreErrorsThatNameThem) {
  const struct {
    const char *name, *bad, *takes;
  } cases[] = {{"KFUSE_CUDA_CONV", "cudnn_nchw", "one of auto, cudnn, cudnn_nhwc, gather"},
               {"KFUSE_CUDA_FOLD_CHUNKS", "4x", "a whole number >= 0"},
               {"KFUSE_CUDA_PDL", "off", "0 or 1"}};
  const detail::cuda::Overrides before = detail::cuda::overrides();
  for (const auto& c : cases) {
    try {
      const EnvOverride o(c.name, c.bad);
      ADD_FAILURE() << c.name << "=" << c.bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(detail::cat(c.name, " is '", c.bad, "'; expected ", c.takes)),
                std::string::npos)
          << e.what();
    }
    EXPECT_EQ(detail::cuda::overrides().conv, before.conv);
    EXPECT_EQ(detail::cuda::overrides().fold_chunks, before.fold_chunks);
    EXPECT_EQ(detail::cuda::overrides().pdl, before.pdl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Kokkos::ScopeGuard kokkos(argc, argv);
  const int rc = RUN_ALL_TESTS();
  if (!have_gpu()) {
    std::fprintf(stderr, "kfuse_cuda_tests: no CUDA device, every test was skipped\n");
    return 77;
  }
  return rc;
}
