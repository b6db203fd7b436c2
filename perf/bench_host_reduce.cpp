// Host throughput of kfuse's Kokkos reductions on a ~64 MB fp32 tensor,
// against a plain read of the same buffer in the same binary (the ceiling a
// one-pass reduction can reach on this machine).
//
//   bench_host_reduce [--benchmark_filter=...] [--benchmark_min_time=...]
//
// Every benchmark reports bytes/second through SetBytesProcessed: the bytes
// the op must move at least (its input read once, its output written once).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kfuse/kokkos.hpp"
#include "kfuse/ops.hpp"
#include "kfuse/tensor.hpp"

namespace {

// [N, C, H, W] = [16, 64, 128, 128]: 16 Mi floats = 64 MiB, the second seed
// problem's conv-output shape at H = W = 128 with Cout = 64.
const kfuse::Shape kShape{16, 64, 128, 128};

struct Input {
  std::vector<float> data;
  kfuse::TensorView view;
  int64_t bytes = 0;
};

// Uniform [0, 1) (torch.rand-like), built once and shared by every benchmark.
const Input& input() {
  static const Input in = [] {
    Input i;
    int64_t n = 1;
    for (int64_t e : kShape) n *= e;
    i.data.resize(static_cast<std::size_t>(n));
    std::mt19937_64 gen(12345);
    std::uniform_real_distribution<float> dist(0.0f, 1.0f);
    for (float& v : i.data) v = dist(gen);
    i.view = kfuse::TensorView::of(i.data.data(), kShape);
    i.bytes = n * static_cast<int64_t>(sizeof(float));
    return i;
  }();
  return in;
}

// The baseline: read every element once and sum. Eight independent
// accumulators let the compiler keep several loads in flight (a single
// accumulator measures the add latency chain, not memory).
void BM_PlainRead(benchmark::State& state) {
  const Input& in = input();
  const float* p = in.data.data();
  const std::size_t n = in.data.size();
  for (auto _ : state) {
    float acc[8] = {};
    for (std::size_t i = 0; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += p[i + k];
    float total = 0.0f;
    for (float a : acc) total += a;
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(state.iterations() * in.bytes);
}

// Bytes an op moves: its input once plus its output once.
int64_t op_bytes(const kfuse::Tensor& out) {
  return input().bytes + out.numel() * static_cast<int64_t>(sizeof(float));
}

void BM_ReduceSumHW(benchmark::State& state) {
  const Input& in = input();
  int64_t bytes = 0;
  for (auto _ : state) {
    kfuse::Tensor out = kfuse::reduce(in.view, kfuse::ReduceKind::sum, {2, 3}, true);
    benchmark::DoNotOptimize(out.view().data);
    bytes = op_bytes(out);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

void BM_LogsumexpC(benchmark::State& state) {
  const Input& in = input();
  int64_t bytes = 0;
  for (auto _ : state) {
    kfuse::Tensor out = kfuse::reduce(in.view, kfuse::ReduceKind::logsumexp, {1}, true);
    benchmark::DoNotOptimize(out.view().data);
    bytes = op_bytes(out);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

// Softmax along `axis` (range(0)): 3 = contiguous rows of 128, 1 = rows of
// 64 with stride H*W.
void BM_Softmax(benchmark::State& state) {
  const Input& in = input();
  const int axis = static_cast<int>(state.range(0));
  int64_t bytes = 0;
  for (auto _ : state) {
    kfuse::Tensor out = kfuse::softmax(in.view, axis);
    benchmark::DoNotOptimize(out.view().data);
    bytes = op_bytes(out);
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

BENCHMARK(BM_PlainRead)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ReduceSumHW)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LogsumexpC)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Softmax)->Arg(3)->Arg(1)->ArgName("axis")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kokkos_execution_space", kfuse::ExecSpace::name());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
