// Resource errors: an allocation that cannot be satisfied is a clean
// kfuse::Error (category backend, naming the bytes and the shape), never
// std::bad_alloc or an abort, and a run that fails leaves the caller's
// output exactly as it was.
//
// The sizes asked for are 2^60 bytes: no overflow anywhere (so the overflow
// checks do not catch them first), and no machine has that much memory, so
// the allocator refuses at once (under AddressSanitizer too, with
// ASAN_OPTIONS=allocator_may_return_null=1 as .ci/run sets it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kfuse/kfuse.h"
#include "kfuse/ops.hpp"
#include "kfuse/plan.hpp"
#include "reference.hpp"

namespace kfuse_test {
namespace {

using namespace kfuse;

constexpr int64_t kHuge = int64_t(1) << 29;  // a stride whose conv output has 2^58 elements

void expect_allocation_error(const Error& e, const std::string& what) {
  EXPECT_EQ(e.category(), ErrorCategory::backend) << what << ": " << e.what();
  EXPECT_NE(std::string(e.what()).find("cannot allocate"), std::string::npos) << what << ": " << e.what();
}

// In host memory, and in the Kokkos backend's memory when that is CUDA memory.
TEST(Resources, AllocationFailureIsACleanError) {
  for (Memory m : {Memory::host, kokkos_memory()}) {
    for (const Shape& s : {Shape{int64_t(1) << 58}, Shape{int64_t(1) << 28, int64_t(1) << 30}}) {
      try {
        const Tensor t = Tensor::empty(s, DType::f32, m);
        FAIL() << "allocated 2^60 bytes of " << to_string(m) << " memory?";
      } catch (const Error& e) {
        expect_allocation_error(e, "Tensor::empty");
        EXPECT_NE(std::string(e.what()).find("1152921504606846976 bytes"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(to_string(s)), std::string::npos) << e.what();
      } catch (const std::exception& e) {
        FAIL() << "not a kfuse::Error: " << e.what();
      }
    }
    // The allocator still works afterwards.
    EXPECT_EQ(Tensor::empty({1024}, DType::f64, m).numel(), 1024);
  }
}

// x [1, 1, 2, 2] through a 1x1 conv with stride 2^29: the conv output has
// 2^58 elements. The fused epilogue and the reference materialise it and
// fail; the output the caller passed keeps its contents. The fold never
// builds it and gives the sum: (x . w) summed, from 4 elements.
TEST(Resources, FailedRunLeavesTheOutputUntouched) {
  const HostTensor<float> x({1, 1, 2, 2}, {1, 2, 3, 4}, Layout::contiguous);
  const HostTensor<float> w({1, 2, 1, 1}, {2, -1}, Layout::contiguous);
  const ConvTranspose2dParams p = ConvTranspose2dParams{}.with_stride(kHuge);
  Pipeline pipe({1, 1, 2, 2});
  pipe.conv_transpose2d(w.host_tensor(), std::nullopt, p).sum({2, 3});
  EXPECT_EQ(pipe.stages()[0].out_shape, (Shape{1, 2, kHuge + 1, kHuge + 1}));

  const double poison = -12345.5;
  for (Strategy s : {Strategy::fused, Strategy::reference}) {
    const Plan plan(pipe, {s});
    const HostTensor<float> out(plan.output_shape(), {poison, poison}, Layout::contiguous);
    try {
      plan.run(x, out);
      FAIL() << to_string(s) << " ran with a 2^60-byte intermediate?";
    } catch (const Error& e) {
      expect_allocation_error(e, to_string(s));
    }
    EXPECT_EQ(read_values<float>(out), (std::vector<double>{poison, poison})) << to_string(s);
  }
  const Plan fold(pipe);
  ASSERT_EQ(fold.strategy(), Strategy::fold);
  // (1 + 2 + 3 + 4) * 2 and * -1.
  EXPECT_EQ(read_values<float>(fold.run(x).view()), (std::vector<double>{20.0, -10.0}));

  // The allocating overload: the output itself cannot be allocated.
  Pipeline map({1, 1, 2, 2});
  map.conv_transpose2d(w.host_tensor(), std::nullopt, p).relu();
  try {
    (void)Plan(map).run(x);
    FAIL();
  } catch (const Error& e) {
    expect_allocation_error(e, "Plan::run(x)");
  }
  // The eager ops.
  try {
    (void)conv_transpose2d(x, w, std::nullopt, p);
    FAIL();
  } catch (const Error& e) {
    expect_allocation_error(e, "conv_transpose2d");
  }
}

// The C API maps it to KFUSE_BACKEND with the message, and leaves out alone.
// The plan and its buffers are in the Kokkos backend's memory (on_device when
// Kokkos runs on CUDA).
TEST(Resources, CApiReportsAllocationFailure) {
  ASSERT_EQ(kfuse_init(), KFUSE_OK);
  const std::string spec = R"({"input": {"shape": [1, 1, 2, 2], "init": {"kind": "uniform", "seed": 0}},
    "ops": [{"op": "conv_transpose2d", "weight": {"shape": [1, 2, 1, 1], "init": {"kind": "constant", "value": 1}},
             "stride": )" + std::to_string(kHuge) + R"(}, {"op": "relu"}, {"op": "sum", "axes": [2, 3]}]})";
  kfuse_plan plan = nullptr;
  const int on_device = kokkos_memory() == Memory::cuda;
  ASSERT_EQ(kfuse_plan_create(spec.c_str(), "fused", on_device, &plan), KFUSE_OK) << kfuse_last_error();
  const HostTensor<float> x({4}, {1, 2, 3, 4}, Layout::contiguous);
  const HostTensor<float> out({2}, {7, 7}, Layout::contiguous);
  EXPECT_EQ(kfuse_plan_run(plan, x.view().data, 4 * sizeof(float), out.view().data, 2 * sizeof(float)), KFUSE_BACKEND);
  EXPECT_NE(std::string(kfuse_last_error()).find("cannot allocate"), std::string::npos) << kfuse_last_error();
  EXPECT_EQ(read_values<float>(out), (std::vector<double>{7, 7}));
  EXPECT_EQ(kfuse_plan_destroy(plan), KFUSE_OK);
}

}  // namespace
}  // namespace kfuse_test
