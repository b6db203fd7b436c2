// The fused epilogue's Kokkos kernels on the host, on a conv-output-sized
// tensor Y = [8, 64, 128, 128] float32 (32 MiB) given as the plan's input (a
// pipeline with no conv runs its ops as the epilogue over it), against a
// memcpy of Y in the same process (the floor a one-pass map can reach here).
// The op chains are those of the public benchmark set (specs/general).
//
//   bench_host_epilogue [--benchmark_filter=...]
//
// bytes/second counts the plan's floor bytes (Y and the operands read once,
// the output written once).
#include <cstring>
#include <memory>

#include "bench_common.hpp"
#include "kfuse/plan.hpp"

namespace {

using namespace kfuse;
using kfuse_bench::uniform;

const Shape kY{8, 64, 128, 128};

// Built on first use, released in main() before Kokkos is finalised.
std::unique_ptr<Tensor> g_y;
const Tensor& y() {
  if (!g_y) g_y = std::make_unique<Tensor>(uniform(kY, 1, -1, 1));
  return *g_y;
}

Pipeline pipeline(int which) {
  Pipeline p(kY);
  switch (which) {
    case 0:  // convt_k4s2_chan_affine_relu's chain: a map with per-channel operands
      p.add(uniform({64, 1, 1}, 2, -1, 1)).relu().mul(uniform({1, 64, 1, 1}, 3, -1, 1)).clamp(0.0, 6.0);
      break;
    case 1:  // convt_k2s2_lse_c_relu's: the conv bias, logsumexp over C, relu
      p.add(uniform({64, 1, 1}, 4, -1, 1)).logsumexp({1}).relu();
      break;
    case 2:  // convt_gelu_sum_h_tanh's: gelu, a sum over H, tanh
      p.gelu().sum({2}).tanh();
      break;
    default:  // convt_softmax_c_scale's: softmax over C, times a scalar
      p.softmax(1).mul(0.5);
      break;
  }
  return p;
}

const char* const kNames[] = {"map_chan_affine", "lse_c_relu", "gelu_sum_h_tanh", "softmax_c_scale"};

void BM_Memcpy(benchmark::State& state) {
  Tensor out = Tensor::empty(kY, DType::f32);
  for (auto _ : state) {
    std::memcpy(out.data<float>(), y().data<float>(), y().view().bytes());
    benchmark::DoNotOptimize(out.view().data);
  }
  state.SetBytesProcessed(state.iterations() * int64_t(y().view().bytes()) * 2);
}

void BM_Epilogue(benchmark::State& state) {
  const Plan plan(pipeline(int(state.range(0))));
  Tensor out = Tensor::empty(plan.output_shape(), DType::f32);
  for (auto _ : state) {
    plan.run(y().view(), out.view());
    benchmark::DoNotOptimize(out.view().data);
  }
  state.SetBytesProcessed(state.iterations() * plan.floor_bytes());
  state.SetLabel(kNames[state.range(0)]);
}

BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Epilogue)->DenseRange(0, 3)->ArgName("chain")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  return kfuse_bench::run(argc, argv, "chains",
                          "0 = map (chan_affine), 1 = lse over C, 2 = gelu, sum over H, 3 = softmax over C; "
                          "Y = [8,64,128,128] float32",
                          [] { g_y.reset(); });
}
