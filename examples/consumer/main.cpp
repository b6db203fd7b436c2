// Uses an installed kfuse from an application that owns its data in Kokkos
// Views: the convt_mul_gap seed pipeline (ConvTranspose2d, * 0.5, two global
// average pools) at a small size, checked against a direct float64
// computation. Exit 0 when they agree, 1 when they do not, 2 on an error.
#include <cmath>
#include <cstdio>
#include <vector>

#include <kfuse/kokkos.hpp>  // Kokkos, as kfuse includes it
#include <kfuse/plan.hpp>
#include <kfuse/runtime.hpp>
#include <kfuse/version.hpp>

namespace {

constexpr int N = 2, Cin = 4, Cout = 8, H = 9, W = 9, K = 3;
constexpr int stride = 2, padding = 1, output_padding = 1;
constexpr int Ho = (H - 1) * stride - 2 * padding + (K - 1) + output_padding + 1;  // 18
constexpr int Wo = (W - 1) * stride - 2 * padding + (K - 1) + output_padding + 1;

// Deterministic values in [-1, 1).
double value(int seed, int i) { return std::sin(0.37 * i + 1.3 * seed) * std::cos(0.11 * i * seed + 0.5); }

using HostView4 = Kokkos::View<float****, Kokkos::LayoutRight, Kokkos::HostSpace>;
using HostView1 = Kokkos::View<float*, Kokkos::HostSpace>;

// The pipeline in float64, straight from the definition of ConvTranspose2d:
// y[n, co, i*s - p + kh, j*s - p + kw] += x[n, ci, i, j] * w[ci, co, kh, kw].
std::vector<double> reference(const HostView4& x, const HostView4& w, const HostView1& b) {
  std::vector<double> y(static_cast<size_t>(N) * Cout * Ho * Wo, 0.0);
  for (int n = 0; n < N; ++n)
    for (int co = 0; co < Cout; ++co) {
      double* yp = &y[(static_cast<size_t>(n) * Cout + co) * Ho * Wo];
      for (int k = 0; k < Ho * Wo; ++k) yp[k] = b(co);
      for (int ci = 0; ci < Cin; ++ci)
        for (int i = 0; i < H; ++i)
          for (int j = 0; j < W; ++j)
            for (int kh = 0; kh < K; ++kh)
              for (int kw = 0; kw < K; ++kw) {
                const int oh = i * stride - padding + kh, ow = j * stride - padding + kw;
                if (oh < 0 || oh >= Ho || ow < 0 || ow >= Wo) continue;
                yp[oh * Wo + ow] += double(x(n, ci, i, j)) * double(w(ci, co, kh, kw));
              }
    }
  std::vector<double> out(static_cast<size_t>(N) * Cout);
  for (size_t p = 0; p < out.size(); ++p) {
    double s = 0.0;
    for (int k = 0; k < Ho * Wo; ++k) s += 0.5 * y[p * Ho * Wo + k];
    out[p] = s / (Ho * Wo);  // the second mean is over a 1x1 plane
  }
  return out;
}

int run() {
  // The application's data: weights and bias on the host, the input and the
  // output in the default execution space's memory (host, or CUDA with a
  // CUDA Kokkos).
  HostView4 w("w", Cin, Cout, K, K);
  HostView1 b("b", Cout);
  for (int i = 0; i < Cin * Cout * K * K; ++i) w.data()[i] = float(value(1, i) / std::sqrt(Cout * K * K));
  for (int i = 0; i < Cout; ++i) b.data()[i] = float(value(2, i) / std::sqrt(Cout * K * K));

  using DeviceView4 = Kokkos::View<float****, Kokkos::LayoutRight, kfuse::DeviceMemSpace>;
  DeviceView4 x("x", N, Cin, H, W);
  DeviceView4 out("out", N, Cout, 1, 1);
  auto x_host = Kokkos::create_mirror_view(x);
  for (int i = 0; i < N * Cin * H * W; ++i) x_host.data()[i] = float(value(3, i));
  Kokkos::deep_copy(x, x_host);

  const kfuse::Memory memory = kfuse::kKokkosOnCuda ? kfuse::Memory::cuda : kfuse::Memory::host;
  // Weights go to the pipeline as host tensors (copied; the plan keeps its own).
  const kfuse::Tensor weight = kfuse::Tensor::copy_of(kfuse::TensorView::of(w.data(), {Cin, Cout, K, K}), kfuse::Memory::host);
  const kfuse::Tensor bias = kfuse::Tensor::copy_of(kfuse::TensorView::of(b.data(), {Cout}), kfuse::Memory::host);
  kfuse::Pipeline pipeline({N, Cin, H, W});
  pipeline
      .conv_transpose2d(weight, bias,
                        kfuse::ConvTranspose2dParams().with_stride(stride).with_padding(padding).with_output_padding(
                            output_padding))
      .mul(0.5)
      .mean({2, 3}, true)
      .mean({2, 3}, true);
  kfuse::PlanOptions options;
  options.memory = memory;
  const kfuse::Plan plan(pipeline, options);
  std::printf("kfuse %s, Kokkos %s\n%s", KFUSE_VERSION_STRING, Kokkos::DefaultExecutionSpace::name(),
              plan.describe().c_str());

  // Run on the Views' memory, wrapped (not copied) as kfuse tensor views.
  plan.run(kfuse::TensorView::of(x.data(), {N, Cin, H, W}, memory),
           kfuse::TensorView::of(out.data(), {N, Cout, 1, 1}, memory));
  Kokkos::fence();

  auto out_host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), out);
  auto x_check = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x);
  const std::vector<double> ref = reference(x_check, w, b);
  double num = 0.0, den = 0.0;
  std::printf("out[n, c]   kfuse            float64\n");
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < Cout; ++c) {
      const double got = out_host(n, c, 0, 0), want = ref[n * Cout + c];
      std::printf("out[%d, %d]  % .9f  % .9f\n", n, c, got, want);
      num += (got - want) * (got - want);
      den += want * want;
    }
  const double rel = std::sqrt(num / den);
  const bool ok = std::isfinite(rel) && rel <= 1e-5;
  std::printf("relative error %.3e (tolerance 1e-5): %s\n", rel, ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  try {
    kfuse::ScopeGuard guard;  // initialises Kokkos; every View is gone before it finalises
    return run();
  } catch (const kfuse::Error& e) {
    std::fprintf(stderr, "kfuse_consumer: %s\n", e.what());
    return 2;
  }
}
