// The fuzz targets' seed corpora and every input that made a fuzzer fail,
// replayed through the same harnesses (fuzz/harness_*.cpp) under this build's
// compiler and sanitizers; then each failure found by fuzzing, written out as
// a readable test of the behaviour that was fixed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "harness.hpp"
#include "harness_util.hpp"
#include "kfuse/npy.hpp"
#include "kfuse/ops.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/spec.hpp"

#ifndef KFUSE_FUZZ_DIR
#error "KFUSE_FUZZ_DIR must name the fuzz/ directory"
#endif

namespace kfuse_test {
namespace {

namespace fs = std::filesystem;
using namespace kfuse;
using kfuse_fuzz::Mirror;
using kfuse_fuzz::values_of;

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs every corpus and regression input of `target` through `check`.
void replay(const std::string& target, std::string (*check)(const uint8_t*, std::size_t), int min_files) {
  kfuse_fuzz::init();
  int n = 0;
  for (const char* kind : {"corpus", "regressions"})
    for (const fs::path& f : files_in(fs::path(KFUSE_FUZZ_DIR) / kind / target)) {
      const std::string b = bytes_of(f);
      EXPECT_EQ(check(reinterpret_cast<const uint8_t*>(b.data()), b.size()), "") << f;
      ++n;
    }
  EXPECT_GE(n, min_files) << "the corpus of " << target << " is missing";
}

TEST(FuzzCorpus, SpecParser) { replay("spec", kfuse_fuzz::check_spec, 10); }
TEST(FuzzCorpus, NpyReader) { replay("npy", kfuse_fuzz::check_npy, 10); }
TEST(FuzzCorpus, PipelineBuilder) { replay("pipeline", kfuse_fuzz::check_pipeline, 40); }

// ---- Each fuzzing failure as a readable test ---------------------------------

// A host tensor (weights and operands: kfuse::Pipeline takes them on the host).
Tensor filled(const Shape& s, DType d, double scale, double shift = 0.0) {
  Tensor t = Tensor::empty(s, d, Memory::host);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = scale * double((i * 7) % 11) + shift;
    if (d == DType::f64) t.data<double>()[i] = v;
    else t.data<float>()[i] = float(v);
  }
  return t;
}

// The same as an input, in the memory the plans run on.
Tensor input(const Shape& s, DType d, double scale, double shift = 0.0) {
  return Tensor::copy_of(filled(s, d, scale, shift), kokkos_memory());
}

// Every strategy that plans gives the reference strategy's values (NaN where NaN).
void expect_strategies_agree(const Pipeline& p, const TensorView& x, double tol) {
  const std::vector<double> ref = values_of(Plan(p, {Strategy::reference}).run(x));
  for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused}) {
    std::optional<Plan> plan;
    try {
      plan.emplace(p, PlanOptions{s});
    } catch (const Error&) {
      continue;
    }
    const std::vector<double> out = values_of(plan->run(x));
    ASSERT_EQ(out.size(), ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) {
      if (std::isnan(ref[i])) EXPECT_TRUE(std::isnan(out[i])) << to_string(s) << " element " << i;
      else EXPECT_NEAR(out[i], ref[i], tol * (1 + std::fabs(ref[i]))) << to_string(s) << " element " << i << "\n" << plan->describe();
    }
  }
}

// fuzz/regressions/pipeline/empty_output_not_contiguous: Tensor::empty of a
// shape with a zero extent was not "contiguous", so Plan::run refused it.
TEST(FuzzRegressions, EmptyOutputIsContiguous) {
  const Tensor out = Tensor::empty({0, 3, 0, 2}, DType::f32);
  EXPECT_TRUE(out.view().is_contiguous());
  Pipeline p({0, 3, 0, 2});
  p.relu();
  const Tensor x = Tensor::empty({0, 3, 0, 2}, DType::f32);
  EXPECT_NO_THROW(Plan(p).run(x, out));
}

// copy_negative_stride_pointer_overflow: a host copy of a view with a
// negative stride formed its byte offset in size_t (UBSan: pointer overflow).
TEST(FuzzRegressions, CopyOfNegativelyStridedView) {
  std::vector<float> buf{1, 2, 3, 4, 5, 6};
  const TensorView rev(buf.data() + 2, DType::f32, {2, 3}, {3, -1}, Memory::host);  // rows reversed
  const Tensor c = Tensor::copy_of(rev, Memory::host);
  EXPECT_EQ(values_of(c.view()), (std::vector<double>{3, 2, 1, 6, 5, 4}));
}

// fold_rank5_operand_length_error: the fold's per-channel test built a
// vector of 4 - rank elements before checking the rank (std::length_error).
TEST(FuzzRegressions, FoldWithAHigherRankOperand) {
  Pipeline p({1, 3, 3, 4}, DType::f64);
  ConvTranspose2dParams prm;
  prm.stride = {2, 3};
  prm.padding = {1, 1};
  prm.output_padding = {1, 1};
  prm.dilation = {1, 3};
  p.conv_transpose2d(filled({3, 2, 4, 1}, DType::f64, 0.125, -0.5), std::nullopt, prm)
      .add(filled({2, 1, 1}, DType::f64, 0.25))
      .sub(filled({2, 1, 2, 7, 9}, DType::f64, 0.5))
      .add(-1.0)
      .mean({3, 4});
  EXPECT_NO_THROW(Plan(p, {Strategy::automatic}));
  expect_strategies_agree(p, input({1, 3, 3, 4}, DType::f64, 0.1), 1e-12);
}

// fused_empty_operand_rank_broadcast: a point op whose operand raises the
// rank without adding elements ([3, 4] + [1, 1, 4], or any empty tensor) was
// not seen as broadcasting: the fused epilogue indexed the operand with a
// negative rank difference (UBSan: out-of-bounds vector access).
TEST(FuzzRegressions, OperandThatRaisesTheRank) {
  Pipeline p({3, 4}, DType::f64);
  p.sub(filled({1, 1, 4}, DType::f64, 0.5)).softmax(2);
  expect_strategies_agree(p, input({3, 4}, DType::f64, 0.3), 1e-12);
  Pipeline e({5, 0, 4, 2, 4}, DType::f64);
  e.relu().sub(filled({2, 5, 0, 4, 2, 4}, DType::f64, 1)).sum({3, 4}).softmax(0);
  EXPECT_EQ(Plan(e).run(Tensor::empty({5, 0, 4, 2, 4}, DType::f64)).numel(), 0);
}

// tail_softmax_over_size1_axis: a softmax over a size-1 axis inside the row
// program of a later softmax ran over the whole row: 0.13 instead of 0.2.
TEST(FuzzRegressions, SoftmaxOverASizeOneAxisInTheTail) {
  Pipeline p({5, 1}, DType::f64);
  p.min({-1}, true).softmax(-1).div(4.0).softmax(-2);
  const Tensor x = input({5, 1}, DType::f64, 0.1);
  expect_strategies_agree(p, x, 1e-12);
  for (double v : values_of(Plan(p, {Strategy::automatic}).run(x))) EXPECT_NEAR(v, 0.2, 1e-15);
}

// fused_softmax_axis_after_reshape: a size-1 reduction without keepdim is
// rewritten into a reshape; the fused softmax then read its axis in the
// shape before the reshape (the wrong axis).
TEST(FuzzRegressions, SoftmaxAxisAfterASizeOneReduction) {
  Pipeline p({3, 1, 2, 2}, DType::f32);
  p.maximum(filled({1, 1, 1}, DType::f32, 0.25)).div(filled({1}, DType::f32, 0, 3)).sum({-3}, true).sum({-3}).softmax(2);
  expect_strategies_agree(p, input({3, 1, 2, 2}, DType::f32, 0.3, -1), 1e-6);
}

// fused_softmax_after_ops_reshaped: likewise for the point ops after a fused
// softmax: their operand ([2, 1, 1], per batch) was indexed in the reshaped
// shape [2, 7, 22] with Y's row numbers (2 instead of 3).
TEST(FuzzRegressions, OperandAfterASoftmaxAndASizeOneReduction) {
  ConvTranspose2dParams prm;
  prm.stride = {1, 4};
  prm.padding = {2, 0};
  prm.output_padding = {2, 1};
  prm.dilation = {3, 3};
  Pipeline p({2, 1, 6, 6});
  p.conv_transpose2d(filled({1, 1, 2, 1}, DType::f32, 0.25, 0.5), filled({1}, DType::f32, 0, 0.5), prm)
      .softmax(-3)
      .sum({-3})
      .sub(filled({2, 1, 1}, DType::f32, 1));
  expect_strategies_agree(p, input({2, 1, 6, 6}, DType::f32, 0.2), 1e-6);
}

// fold_2e32_channels_from_empty_weight: with no input channels, any groups
// divides them, so an empty weight [0, 2, 1, 1] with groups 2^31 - 1 claimed
// 2^32 - 2 output channels and the fold's planner asked for 34 GB.
TEST(FuzzRegressions, GroupsBeyondZeroInputChannels) {
  ConvTranspose2dParams prm;
  prm.groups = 2147483647;
  try {
    Pipeline({1, 0, 4, 4}, DType::f64).conv_transpose2d(filled({0, 2, 1, 1}, DType::f64, 1), std::nullopt, prm);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("groups (2147483647) must not exceed in_channels (0)"), std::string::npos) << e.what();
  }
  // No input channels and one group: the output is the bias.
  Pipeline p({2, 0, 3, 3}, DType::f64);
  p.conv_transpose2d(filled({0, 2, 1, 1}, DType::f64, 1), filled({2}, DType::f64, 1, 0.5)).mean({2, 3});
  for (Strategy s : {Strategy::automatic, Strategy::fused, Strategy::reference})
    EXPECT_EQ(values_of(Plan(p, {s}).run(input({2, 0, 3, 3}, DType::f64, 1))), (std::vector<double>{0.5, 7.5, 0.5, 7.5}))
        << to_string(s);
}

// reduce_empty_axis_output_overflows: an empty batch let the conv output be
// [0, 1, 4611686018427387915, 8]; a mean over the empty axis with keepdim
// then counted 2^65 elements, and the builder accepted it (the planner threw).
// tail_row_of_empty_shape_overflows: an empty shape whose trailing extents
// multiply past 2^63 made the planner's row length a signed overflow. Shapes
// are now rejected when their nonzero extents overflow, empty or not.
TEST(FuzzRegressions, EmptyShapesWhoseExtentsOverflow) {
  try {
    Pipeline p({0, 3, (int64_t(1) << 62), 8}, DType::f64);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::overflow);
    EXPECT_NE(std::string(e.what()).find("is empty but its nonzero extents multiply past 2^63-1"), std::string::npos)
        << e.what();
  }
  // Fits: every row and stride fits, and the mean's 2^58 values fit in bytes.
  const Shape fits = {0, 3, int64_t(1) << 58};
  EXPECT_NO_THROW(Pipeline(fits, DType::f64).mean({0}, true));
  EXPECT_NO_THROW(Plan(Pipeline(fits, DType::f64).sum({1, 2}), {Strategy::fused}));
  // A broadcast that would make such a shape is refused where it happens.
  try {
    Pipeline({0, int64_t(1) << 42, 1}, DType::f32).add(filled({1, 1, int64_t(1) << 22}, DType::f32, 0));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::overflow);
    EXPECT_NE(std::string(e.what()).find("op #1 (add)"), std::string::npos) << e.what();
  }
}

// floor_bytes_overflow: a conv output of valid element count but more than
// 2^63 bytes made the planner's bytes floor a signed overflow; the builder
// now rejects such a pipeline, as it rejects element counts past 2^63.
TEST(FuzzRegressions, BytesThatOverflow) {
  try {
    Pipeline p({1, 1, 2, int64_t(1) << 60}, DType::f64);  // 2^61 elements, 2^64 bytes
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::overflow);
    EXPECT_NE(std::string(e.what()).find("exceed 2^63 (at its input)"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Pipeline({1, 1, 1, int64_t(1) << 58}, DType::f64));  // 2^61 bytes in and out
}

// softmax_empty_axis_80M_empty_rows: a softmax over an empty axis launched a
// team per row of the other axes (80 million) to write nothing.
TEST(FuzzRegressions, SoftmaxOverAnEmptyAxisDoesNoWork) {
  const std::vector<float> one{0.0f};
  const Mirror mirror(one);
  const TensorView x = mirror.view({0, 2, 10, 4000001}, {0, 0, 0, 0});
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(kfuse::softmax(x, 0).numel(), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
}

// json_number_overflow_out_of_range: a number past double's range made
// nlohmann::json throw out_of_range, which escaped parse_spec.
TEST(FuzzRegressions, JsonNumberOverflowIsASpecError) {
  for (const char* text : {"111111111e1111111111e1pdytpy\"pdytpy\"}", "{\"input\": 1e999999}", "[-1e400]"}) {
    try {
      parse_spec(text);
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::spec) << e.what();
      EXPECT_NE(std::string(e.what()).find("spec: invalid JSON"), std::string::npos) << e.what();
    }
  }
}

class NpyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kfuse_fuzz_regressions_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  fs::path dir_;
};

std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string b = "\x93NUMPY\x01";
  b += '\0';
  b += static_cast<char>(h.size() & 0xff);
  b += static_cast<char>(h.size() >> 8);
  return b + h + data;
}

// rank9_reads_but_unusable: a rank-9 array read fine, then every op (and
// write_npy) rejected the tensor: now the reader says so.
TEST_F(NpyFiles, RankAboveTheMaximumIsAnIoError) {
  const std::string p = write("r9.npy", npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }",
                                                        std::string("\0\0\x80\xbf", 4)));
  for (auto f : {+[](const std::string& q) { (void)read_npy(q); }, +[](const std::string& q) { (void)read_npy_info(q); }}) {
    try {
      f(p);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::io);
      EXPECT_NE(std::string(e.what()).find("rank 9 exceeds kfuse's maximum rank 8"), std::string::npos) << e.what();
    }
  }
}

// empty_array_with_huge_extents_unwritable: check_view measured the span of
// an empty view's strides and called [8000, 0, 312000105175660, 4] an overflow.
TEST_F(NpyFiles, EmptyArrayWithHugeExtentsRoundTrips) {
  const std::string p = write("e.npy", npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (8000, 0, 312000105175660, 4), }", ""));
  const Tensor t = read_npy(p);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_NO_THROW(check_view(t.view(), "test", "t"));
  write_npy((dir_ / "back.npy").string(), t.view());
  EXPECT_EQ(read_npy((dir_ / "back.npy").string()).shape(), t.shape());
}

}  // namespace
}  // namespace kfuse_test
