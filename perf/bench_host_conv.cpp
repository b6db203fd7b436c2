// The Kokkos path's conv_transpose2d on the host: the GEMM over the input
// channels (Kokkos Kernels, a BLAS underneath) and its column-to-image gather,
// against the direct gather, on one sample of three geometries of the public
// benchmark set (specs/general; one sample keeps a run within seconds).
//
//   bench_host_conv [--benchmark_filter=...]
//
// items/second counts the input-tap products (neither form multiplies an
// inserted zero; padding 1 or 2 crops a few of the GEMM's). The conv is timed
// through a plan of conv -> relu (the fused strategy: the conv step, then a
// map over Y, the same in both).
#include <cstdlib>

#include "bench_common.hpp"
#include "kfuse/plan.hpp"

namespace {

using namespace kfuse;
using kfuse_bench::uniform;

struct Geometry {
  const char* name;
  Shape x, w;
  int64_t stride, padding, output_padding;
};

// One sample of: convt_max_c_sum_h_gelu (k3 s2, 64 -> 64), convt_k5_min_c_mean_w_tanh
// (k5 s1, 32 -> 96), convt_k2s2_lse_c_relu (k2 s2, 128 -> 64).
const Geometry kGeometries[] = {
    {"k3s2_64to64_128px", {1, 64, 128, 128}, {64, 64, 3, 3}, 2, 1, 1},
    {"k5s1_32to96_160px", {1, 32, 160, 160}, {32, 96, 5, 5}, 1, 2, 0},
    {"k2s2_128to64_128px", {1, 128, 128, 128}, {128, 64, 2, 2}, 2, 0, 0},
};

void BM_KokkosConv(benchmark::State& state, const char* algorithm) {
  const Geometry& g = kGeometries[state.range(0)];
  setenv("KFUSE_KOKKOS_CONV", algorithm, 1);
  Pipeline pl(g.x);
  pl.conv_transpose2d(uniform(g.w, 1, -0.1, 0.1), uniform({g.w[1]}, 2, -0.1, 0.1),
                      ConvTranspose2dParams{}.with_stride(g.stride).with_padding(g.padding).with_output_padding(
                          g.output_padding))
      .relu();
  const Plan plan(pl, {Strategy::fused});
  unsetenv("KFUSE_KOKKOS_CONV");
  const Tensor x = uniform(g.x, 3, 0, 1);
  Tensor out = Tensor::empty(plan.output_shape(), DType::f32);
  for (auto _ : state) {
    plan.run(x.view(), out.view());
    benchmark::DoNotOptimize(out.view().data);
  }
  const int64_t macs = g.x[0] * g.x[1] * g.x[2] * g.x[3] * g.w[1] * g.w[2] * g.w[3];
  state.SetItemsProcessed(state.iterations() * macs);
  state.SetLabel(g.name);
}

BENCHMARK_CAPTURE(BM_KokkosConv, gemm, "gemm")->DenseRange(0, 2)->ArgName("geometry")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_KokkosConv, gather, "gather")->DenseRange(0, 2)->ArgName("geometry")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  return kfuse_bench::run(argc, argv, "geometries",
                          "0 = k3 s2 64->64 on [1,64,128,128], 1 = k5 s1 32->96 on [1,32,160,160], "
                          "2 = k2 s2 128->64 on [1,128,128,128]",
                          [] {});
}
