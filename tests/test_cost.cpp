// What a plan costs before it runs (include/kfuse/cost.hpp), and plans that no
// backend can run refused before they run.
#include <gtest/gtest.h>

#include <string>

#include "kfuse/cost.hpp"
#include "kfuse/spec.hpp"

namespace kfuse_test {
namespace {

using namespace kfuse;

// N=2, Cin=4, Cout=6, 5x5 -> 7x7, 3x3 kernel: 2 * 6 * 7 * 7 * 4 * 9 multiply-adds.
Spec gap_spec(const std::string& dtype) {
  return parse_spec(R"({"input": {"shape": [2, 4, 5, 5], "dtype": ")" + dtype +
                    R"(", "init": {"kind": "uniform", "seed": 0}},
    "ops": [{"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}},
            {"op": "mean", "axes": [2, 3]}]})");
}

PlanOptions host(Strategy s) {
  PlanOptions o;
  o.strategy = s;
  o.memory = kokkos_memory();
  return o;
}

TEST(Cost, StatesMultiplyAddsBytesWhereAndAnEstimate) {
  const Spec spec = gap_spec("float32");
  const Plan fold(spec.pipeline, host(Strategy::fold));
  const PlanCost f = plan_cost(spec.pipeline, fold);
  EXPECT_EQ(f.conv_macs, 2.0 * 6 * 7 * 7 * 4 * 9);
  EXPECT_FALSE(f.computes_conv);
  EXPECT_EQ(f.floor_bytes, fold.floor_bytes());
  EXPECT_LT(f.estimate_s, 0);  // the fold reads x once: not estimated
  EXPECT_NE(f.text().find("not computed: the fold"), std::string::npos) << f.text();

  const Plan ref(spec.pipeline, host(Strategy::reference));
  const PlanCost r = plan_cost(spec.pipeline, ref);
  EXPECT_TRUE(r.computes_conv);
  if (kokkos_memory() == Memory::host) {  // the Kokkos kernels run on the host
    EXPECT_GE(r.host_threads, 1);
    EXPECT_NE(r.runs_on.find("thread"), std::string::npos) << r.runs_on;
    EXPECT_GT(r.estimate_s, 0);
    EXPECT_LT(r.estimate_s, 0.01);  // 21168 multiply-adds
    EXPECT_NE(r.text().find("estimate about"), std::string::npos) << r.text();
  }
  EXPECT_NE(r.text().find("2.12e+04 multiply-adds in the conv"), std::string::npos) << r.text();
}

TEST(Cost, DurationsReadAsSecondsOrMinutes) {
  EXPECT_EQ(duration_text(0.24), "0.24 s");
  EXPECT_EQ(duration_text(16.6), "17 s");
  EXPECT_EQ(duration_text(390), "6.5 min");
}

// float16/bfloat16 run only as the fold on the CUDA backend: the reference
// strategy's per-op kernels take float32 and float64. Refused before running,
// naming the backend that can.
TEST(Cost, HalfPrecisionPlansNoBackendRunsAreRefused) {
  for (const char* dtype : {"float16", "bfloat16"}) {
    SCOPED_TRACE(dtype);
    const Spec spec = gap_spec(dtype);
    for (Strategy s : {Strategy::automatic, Strategy::reference}) {
      try {
        const Plan plan(spec.pipeline, host(s));
        FAIL() << "no error: " << plan.describe();
      } catch (const Error& e) {
        EXPECT_EQ(e.category(), ErrorCategory::unsupported);
        EXPECT_NE(std::string(e.what()).find(std::string("dtype ") + dtype), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("take float32 and float64"), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_NO_THROW(Plan(gap_spec("float32").pipeline, host(Strategy::reference)));
}

}  // namespace
}  // namespace kfuse_test
