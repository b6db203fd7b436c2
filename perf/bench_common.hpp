// What the host benchmarks built on kfuse's plans share: random inputs and a
// main that runs Google Benchmark inside kfuse's runtime.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>

#include "kfuse/runtime.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse_bench {

// A float32 host tensor of uniform values in [lo, hi), from `seed`.
inline kfuse::Tensor uniform(const kfuse::Shape& s, uint64_t seed, double lo, double hi) {
  kfuse::Tensor t = kfuse::Tensor::empty(s, kfuse::DType::f32);
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  float* p = t.data<float>();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(dist(gen));
  return t;
}

// Runs the registered benchmarks with one line of context (what the
// arguments mean); `release` frees what they built before Kokkos finalizes.
template <class Release>
int run(int argc, char** argv, const char* context_key, const char* context, Release release) {
  kfuse::ScopeGuard guard;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext(context_key, context);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  release();
  return 0;
}

}  // namespace kfuse_bench
