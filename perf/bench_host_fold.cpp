// The fold on the host at the seed problems' real sizes (DESIGN.md section 1),
// against a plain read of the same x in the same process: the fold should
// cost about one read of x.
//
//   bench_host_fold [--benchmark_filter=...]
//
// bytes/second counts the plan's floor bytes (x, weights and operands read
// once, the output written once).
#include <memory>

#include "bench_common.hpp"
#include "kfuse/plan.hpp"

namespace {

using namespace kfuse;
using kfuse_bench::uniform;

struct Problem {
  Pipeline pipeline;
  Tensor x;
};

// Built on first use, released in main() before Kokkos is finalised.
std::unique_ptr<Problem> g_problems[2];

// convt_gap_bias_lse: ConvTranspose2d(64, 128, 3) on [16, 64, 512, 512] -> mean
// -> + bias -> logsumexp over C -> sum -> * 10.
Problem gap_bias_lse() {
  {
    const double bound = 1.0 / std::sqrt(128.0 * 9.0);
    Pipeline pl({16, 64, 512, 512});
    pl.conv_transpose2d(uniform({64, 128, 3, 3}, 1, -bound, bound), uniform({128}, 2, -bound, bound))
        .mean({2, 3}, true).add(uniform({128, 1, 1}, 3, -2, 2)).logsumexp({1}, true).sum({2, 3}).mul(10.0);
    return Problem{pl, uniform({16, 64, 512, 512}, 4, 0, 1)};
  }
}

// convt_mul_gap: ConvTranspose2d(64, 128, 3, stride 2, padding 1, output_padding 1)
// on [16, 64, 128, 128] -> * 0.5 -> mean -> mean.
Problem mul_gap() {
  {
    const double bound = 1.0 / std::sqrt(128.0 * 9.0);
    Pipeline pl({16, 64, 128, 128});
    pl.conv_transpose2d(uniform({64, 128, 3, 3}, 5, -bound, bound), uniform({128}, 6, -bound, bound),
                        ConvTranspose2dParams{}.with_stride(2).with_padding(1).with_output_padding(1))
        .mul(0.5).mean({2, 3}, true).mean({2, 3}, true);
    return Problem{pl, uniform({16, 64, 128, 128}, 7, 0, 1)};
  }
}

const Problem& problem(int64_t which) {
  if (!g_problems[which]) g_problems[which] = std::make_unique<Problem>(which == 0 ? gap_bias_lse() : mul_gap());
  return *g_problems[which];
}

// One read of x: eight independent accumulators (what the fold's plane pass does).
void BM_PlainReadX(benchmark::State& state) {
  const Tensor& x = problem(state.range(0)).x;
  const float* p = x.data<float>();
  const int64_t n = x.numel();
  for (auto _ : state) {
    double acc[8] = {};
    for (int64_t i = 0; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += p[i + k];
    benchmark::DoNotOptimize(acc);
  }
  state.SetBytesProcessed(state.iterations() * x.numel() * 4);
}

void BM_Fold(benchmark::State& state) {
  const Problem& pr = problem(state.range(0));
  const Plan plan(pr.pipeline);
  if (plan.strategy() != Strategy::fold) state.SkipWithError("the planner did not choose the fold");
  Tensor out = Tensor::empty(plan.output_shape(), DType::f32);
  for (auto _ : state) {
    plan.run(pr.x.view(), out.view());
    benchmark::DoNotOptimize(out.view().data);
  }
  state.SetBytesProcessed(state.iterations() * plan.floor_bytes());
}

BENCHMARK(BM_PlainReadX)->Arg(0)->Arg(1)->ArgName("problem")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Fold)->Arg(0)->Arg(1)->ArgName("problem")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  return kfuse_bench::run(argc, argv, "problems", "0 = convt_gap_bias_lse [16,64,512,512], 1 = convt_mul_gap [16,64,128,128]",
                          [] {
                            for (auto& p : g_problems) p.reset();
                          });
}
