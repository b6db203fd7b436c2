// One Plan (and the eager ops) run from several host threads at once, each
// thread with its own input and output, must give what serial runs give: bit
// for bit on the host; on a GPU to float32's last bits (the fold's border sums
// use shared-memory atomics, whose order varies from run to run). Kokkos's default execution-space instance (Serial in Kokkos 3.4:
// one team scratch and reduction buffer, resized on demand) is not safe for
// concurrent dispatch; kfuse serialises its Kokkos kernels (include/kfuse/plan.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "kfuse/ops.hpp"
#include "kfuse/plan.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using kfuse::DType;
using kfuse::Memory;
using kfuse::Pipeline;
using kfuse::Plan;
using kfuse::ReduceKind;
using kfuse::Strategy;
using kfuse::Tensor;

constexpr int kThreads = 4;
constexpr int kRounds = 12;

// Random weights and operands (host tensors, as kfuse::Pipeline takes them).
Tensor host_random(const Shape& s, Rng& rng, double lo, double hi) {
  return host_tensor(s, random_values(numel_of(s), lo, hi, rng));
}

std::vector<double> contents(const Tensor& t) { return read_values<float>(t.view()); }

// Whether a concurrent run's output differs from the serial run's (see the top).
bool differs(const std::vector<double>& got, const std::vector<double>& want) {
  if (kfuse::kokkos_memory() == Memory::host || got.size() != want.size()) return got != want;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 1e-6 * std::fabs(want[i])) && !(std::isnan(got[i]) && std::isnan(want[i])))
      return true;
  return false;
}

// Plans of every strategy, with different team scratch needs (the fold's
// plane blocks, the epilogue's rows), so that concurrent runs would resize
// and share Kokkos's buffers.
std::vector<Plan> plans() {
  Rng rng(11);
  const Shape xs{3, 6, 13, 11};
  const Tensor w = host_random({6, 5, 3, 3}, rng, -0.5, 0.5), b = host_random({5}, rng, -0.5, 0.5);
  const Tensor e = host_random({5, 1, 1}, rng, -1, 1);
  std::vector<Plan> out;
  Pipeline fold(xs);
  fold.conv_transpose2d(w, b, kfuse::ConvTranspose2dParams{}.with_stride(2).with_padding(1)).mean({2, 3}, true).add(e)
      .logsumexp({1}, true).sum({2, 3}).mul(10.0);
  Pipeline fused(xs);
  fused.conv_transpose2d(w, b).relu().mean({2, 3}).softmax(1);
  Pipeline wide(xs);
  wide.gelu().logsumexp({3}).softmax(2);
  for (const Pipeline& p : {fold, fused, wide})
    for (Strategy s : {Strategy::automatic, Strategy::reference}) out.emplace_back(p, kfuse::PlanOptions{s});
  EXPECT_EQ(out[0].strategy(), Strategy::fold);
  EXPECT_EQ(out[2].strategy(), Strategy::fused);
  return out;
}

TEST(Concurrency, OnePlanFromSeveralThreadsMatchesSerialRuns) {
  const std::vector<Plan> ps = plans();
  Rng rng(5);
  std::vector<HostTensor<float>> xs;
  for (int t = 0; t < kThreads; ++t)
    xs.push_back(random_tensor<float>(ps[0].input_shape(), rng, Layout::contiguous, -1, 1));
  // Serial: what every (plan, input) must give.
  std::vector<std::vector<std::vector<double>>> want(ps.size());
  for (std::size_t k = 0; k < ps.size(); ++k)
    for (int t = 0; t < kThreads; ++t) want[k].push_back(contents(ps[k].run(xs[t])));

  for (std::size_t k = 0; k < ps.size(); ++k) {  // one plan shared by every thread
    std::atomic<int> wrong{0}, errors{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t)
      pool.emplace_back([&, t] {
        Tensor out = Tensor::empty(ps[k].output_shape(), DType::f32);
        for (int r = 0; r < kRounds; ++r) {
          try {
            ps[k].run(xs[t], out);
            if (differs(contents(out), want[k][t])) ++wrong;
          } catch (...) {
            ++errors;
          }
        }
      });
    for (auto& th : pool) th.join();
    EXPECT_EQ(wrong.load(), 0) << ps[k].describe();
    EXPECT_EQ(errors.load(), 0) << ps[k].describe();
  }
}

// Different plans and the eager ops at the same time, from several threads.
TEST(Concurrency, DifferentPlansAndEagerOpsAtOnce) {
  const std::vector<Plan> ps = plans();
  Rng rng(6);
  const HostTensor<float> x = random_tensor<float>(ps[0].input_shape(), rng, Layout::contiguous, -1, 1);
  std::vector<std::vector<double>> want;
  for (const Plan& p : ps) want.push_back(contents(p.run(x)));
  const std::vector<double> want_lse = contents(kfuse::reduce(x, ReduceKind::logsumexp, {1, 3}, true));
  const std::vector<double> want_sm = contents(kfuse::softmax(x, 2));

  std::atomic<int> wrong{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 2 * kThreads; ++t)
    pool.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        try {
          const std::size_t k = static_cast<std::size_t>(t + r) % (ps.size() + 2);
          if (k < ps.size()) wrong += differs(contents(ps[k].run(x)), want[k]);
          else if (k == ps.size()) wrong += differs(contents(kfuse::reduce(x, ReduceKind::logsumexp, {1, 3}, true)), want_lse);
          else wrong += differs(contents(kfuse::softmax(x, 2)), want_sm);
        } catch (...) {
          ++errors;
        }
      }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(errors.load(), 0);
}

// Plans on separate CUDA streams: the CUDA backend runs every kernel on the
// calling thread's default stream (cudaStreamPerThread) and exposes no stream
// in its API, so "separate streams" are separate host threads; that case
// runs in tests/cuda (the CUDA suite), not here.

}  // namespace
}  // namespace kfuse_test
