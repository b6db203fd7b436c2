// JSON pipeline specs and the deterministic generators: every error path
// (category spec, the JSON pointer of the bad field first in the message), the
// shipped spec files, the dtype override, and the generators' determinism,
// slicing and bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include <pthread.h>
#include <unistd.h>

#include "kfuse/npy.hpp"
#include "kfuse/spec.hpp"

#ifndef KFUSE_SPECS_DIR
#define KFUSE_SPECS_DIR "specs"
#endif

namespace kfuse_test {
namespace {

namespace fs = std::filesystem;
using kfuse::DType;
using kfuse::ErrorCategory;
using kfuse::InitKind;
using kfuse::InitSpec;
using kfuse::Shape;
using kfuse::Tensor;

// A small valid spec; tests replace parts of it.
const char* kValid = R"({
  "name": "tiny",
  "input": {"shape": [2, 4, 5, 5], "init": {"kind": "uniform", "seed": 0}},
  "ops": [
    {"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}},
     "bias": {"shape": [6], "init": {"kind": "conv_default", "seed": 2}}, "stride": 1},
    {"op": "mean", "axes": [2, 3], "keepdim": true},
    {"op": "add", "tensor": {"shape": [6, 1, 1], "init": {"kind": "randn", "seed": 3}}},
    {"op": "logsumexp", "axes": [1], "keepdim": true},
    {"op": "sum", "axes": [2, 3]},
    {"op": "mul", "scalar": 10.0}
  ]
})";

// A spec with the input above and `ops` (a JSON array body).
std::string with_ops(const std::string& ops) {
  return R"({"input": {"shape": [2, 4, 5, 5], "init": {"kind": "uniform", "seed": 0}}, "ops": [)" + ops + "]}";
}
const std::string kConv =
    R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}})";

// Expects parse_spec(text) to fail with category `cat` and a message that starts with `prefix` and contains `also`.
void expect_spec_error(const std::string& text, const std::string& prefix, const std::string& also = "",
                       ErrorCategory cat = ErrorCategory::spec) {
  try {
    kfuse::parse_spec(text);
    FAIL() << "no error for: " << text;
  } catch (const kfuse::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(e.category(), cat) << m;
    EXPECT_EQ(m.rfind(prefix, 0), 0u) << "message does not start with '" << prefix << "': " << m;
    if (!also.empty()) {
      EXPECT_NE(m.find(also), std::string::npos) << "'" << also << "' not in: " << m;
    }
  }
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kfuse_test_spec_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

// ---------------------------------------------------------------------------
// Generators

TEST(Generate, Splitmix64KnownValues) {
  // The first outputs of the reference splitmix64 stream seeded with 0.
  EXPECT_EQ(kfuse::splitmix64(0), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(kfuse::splitmix64(0x9E3779B97F4A7C15ull), 0x6E789E6AA1B965F4ull);
  // uniform01 is (bits >> 11) * 2^-53 of splitmix64(seed * golden + i).
  const uint64_t bits = kfuse::splitmix64(7 * 0x9E3779B97F4A7C15ull + 11);
  EXPECT_EQ(kfuse::uniform01(7, 11), static_cast<double>(bits >> 11) * 0x1.0p-53);
}

TEST(Generate, DeterministicAndSeedDependent) {
  for (InitKind k : {InitKind::uniform, InitKind::randn, InitKind::conv_default}) {
    InitSpec init;
    init.kind = k;
    init.seed = 42;
    const Tensor a = kfuse::generate({3, 5, 7}, DType::f64, init);
    const Tensor b = kfuse::generate({3, 5, 7}, DType::f64, init);
    init.seed = 43;
    const Tensor c = kfuse::generate({3, 5, 7}, DType::f64, init);
    int differ = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      EXPECT_EQ(a.data<double>()[i], b.data<double>()[i]);
      differ += a.data<double>()[i] != c.data<double>()[i];
    }
    EXPECT_EQ(differ, a.numel()) << kfuse::to_string(k);
  }
}

TEST(Generate, SliceEqualsTheSameRangeOfTheFullTensor) {
  const Shape shape{3, 7, 11, 13};  // 3003 elements
  for (InitKind k : {InitKind::uniform, InitKind::randn, InitKind::conv_default, InitKind::constant}) {
    for (DType d : {DType::f32, DType::f64}) {
      InitSpec init;
      init.kind = k;
      init.seed = 5;
      init.value = 1.5;
      const Tensor full = kfuse::generate(shape, d, init);
      for (auto [b, e] : std::vector<std::pair<int64_t, int64_t>>{{0, 3003}, {0, 1}, {1, 2}, {1000, 2001}, {3002, 3003}, {17, 17}}) {
        const Tensor s = kfuse::generate_slice(shape, d, init, b, e);
        ASSERT_EQ(s.numel(), e - b);
        const std::size_t es = kfuse::size_of(d);
        EXPECT_EQ(0, std::memcmp(static_cast<const char*>(full.view().data) + b * es, s.view().data, (e - b) * es))
            << kfuse::to_string(k) << " " << kfuse::to_string(d) << " [" << b << ", " << e << ")";
      }
    }
  }
  // A slice of a large tensor (the threaded path) matches a single element.
  InitSpec init;
  const Shape big{1 << 22};
  const Tensor all = kfuse::generate(big, DType::f32, init);
  for (int64_t i : {int64_t(0), int64_t(1) << 20, (int64_t(1) << 22) - 1})
    EXPECT_EQ(all.data<float>()[i], static_cast<float>(kfuse::generated_value(big, init, i)));
  std::vector<double> into(10);
  kfuse::generate_into(big, DType::f64, init, 2000000, 2000010, into.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(static_cast<float>(into[i]), all.data<float>()[2000000 + i]);
}

TEST(Generate, SliceOutOfRangeIsAnError) {
  EXPECT_THROW(kfuse::generate_slice({10}, DType::f32, {}, 5, 11), kfuse::Error);
  EXPECT_THROW(kfuse::generate_slice({10}, DType::f32, {}, 6, 5), kfuse::Error);
  EXPECT_THROW(kfuse::generate_slice({10}, DType::f32, {}, -1, 5), kfuse::Error);
}

TEST(Generate, UniformRangeAndMoments) {
  InitSpec init;
  init.seed = 9;
  const Tensor u = kfuse::generate({100000}, DType::f64, init);
  double sum = 0, lo = 1, hi = 0;
  for (int64_t i = 0; i < u.numel(); ++i) {
    const double v = u.data<double>()[i];
    sum += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
  init.low = -3;
  init.high = 5;
  const Tensor w = kfuse::generate({1000}, DType::f64, init);
  for (int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_GE(w.data<double>()[i], -3.0);
    EXPECT_LT(w.data<double>()[i], 5.0);
    // low + (high - low) * u of the same counter.
    EXPECT_DOUBLE_EQ(w.data<double>()[i], -3.0 + 8.0 * u.data<double>()[i]);
  }
}

TEST(Generate, RandnMoments) {
  InitSpec init;
  init.kind = InitKind::randn;
  init.seed = 3;
  const Tensor r = kfuse::generate({200000}, DType::f64, init);
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < r.numel(); ++i) {
    const double v = r.data<double>()[i];
    ASSERT_TRUE(std::isfinite(v));
    s += v;
    s2 += v * v;
  }
  const double mean = s / r.numel(), var = s2 / r.numel() - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
  init.mean = 2;
  init.stddev = 0.5;
  const Tensor t = kfuse::generate({10}, DType::f64, init);
  for (int i = 0; i < 10; ++i) EXPECT_DOUBLE_EQ(t.data<double>()[i], 2.0 + 0.5 * r.data<double>()[i]);
}

TEST(Generate, ConvDefaultBoundsArePyTorchs) {
  // ConvTranspose2d weight [Cin, Cout/g, kH, kW]: fan_in = (Cout/g) * kH * kW.
  InitSpec init;
  init.kind = InitKind::conv_default;
  init.seed = 1;
  const Shape w{64, 128, 3, 3};
  EXPECT_EQ(kfuse::conv_default_fan_in(w, init), 128 * 9);
  const double bound = 1.0 / std::sqrt(128.0 * 9.0);
  const Tensor t = kfuse::generate(w, DType::f64, init);
  double lo = 0, hi = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    lo = std::min(lo, t.data<double>()[i]);
    hi = std::max(hi, t.data<double>()[i]);
  }
  EXPECT_GE(lo, -bound);
  EXPECT_LT(hi, bound);
  EXPECT_LT(lo, -0.99 * bound);
  EXPECT_GT(hi, 0.99 * bound);
  // A bias takes the weight's fan_in explicitly; without it a rank-1 shape is an error.
  init.fan_in = 1152;
  const Tensor b = kfuse::generate({128}, DType::f64, init);
  for (int64_t i = 0; i < b.numel(); ++i) EXPECT_LT(std::abs(b.data<double>()[i]), bound);
  init.fan_in.reset();
  EXPECT_THROW(kfuse::generate({128}, DType::f64, init), kfuse::Error);
}

TEST(Generate, Float32IsTheRoundedFloat64) {
  InitSpec init;
  init.kind = InitKind::randn;
  const Tensor d = kfuse::generate({1000}, DType::f64, init);
  const Tensor f = kfuse::generate({1000}, DType::f32, init);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(f.data<float>()[i], static_cast<float>(d.data<double>()[i]));
}

TEST(Cast, HalfAndBfloat16RoundToNearestEven) {
  const Tensor src = Tensor::empty({8}, DType::f32, kfuse::Memory::host);
  const float vals[8] = {1.0f, -2.5f, 65504.0f, 1e6f, 5.96046448e-08f, 1.0009765625f, 0.0f, 3.0f};
  for (int i = 0; i < 8; ++i) src.data<float>()[i] = vals[i];
  const Tensor h = kfuse::cast(kfuse::cast(src, DType::f16), DType::f32);
  EXPECT_EQ(h.data<float>()[0], 1.0f);
  EXPECT_EQ(h.data<float>()[1], -2.5f);
  EXPECT_EQ(h.data<float>()[2], 65504.0f);
  EXPECT_TRUE(std::isinf(h.data<float>()[3]));
  EXPECT_EQ(h.data<float>()[4], 5.96046448e-08f);  // the smallest subnormal
  EXPECT_EQ(h.data<float>()[5], 1.0009765625f);    // 1 + 2^-10
  const Tensor b = kfuse::cast(kfuse::cast(src, DType::bf16), DType::f64);
  EXPECT_EQ(b.data<double>()[0], 1.0);
  EXPECT_EQ(b.data<double>()[5], 1.0);  // 1 + 2^-10 rounds to 1 in bfloat16
  EXPECT_EQ(b.data<double>()[7], 3.0);
}

// ---------------------------------------------------------------------------
// Valid specs

TEST(Spec, ParsesAValidSpec) {
  const kfuse::Spec s = kfuse::parse_spec(kValid);
  EXPECT_EQ(s.name, "tiny");
  EXPECT_EQ(s.pipeline.input_shape(), (Shape{2, 4, 5, 5}));
  EXPECT_EQ(s.pipeline.output_shape(), (Shape{2, 1}));
  EXPECT_EQ(s.pipeline.dtype(), DType::f32);
  ASSERT_EQ(s.pipeline.stages().size(), 6u);
  const auto& conv = std::get<kfuse::ConvTranspose2dOp>(s.pipeline.stages()[0].op);
  EXPECT_EQ(conv.weight.shape(), (Shape{4, 6, 3, 3}));
  ASSERT_TRUE(conv.bias.has_value());
  EXPECT_EQ(s.input.init.kind, InitKind::uniform);
  EXPECT_FALSE(s.input.npy.has_value());
  EXPECT_DOUBLE_EQ(kfuse::conv_macs(s.pipeline), 2.0 * 6 * 7 * 7 * 4 * 9);

  // The bias's conv_default uses the weight's fan_in, 6 * 3 * 3.
  InitSpec bias_init;
  bias_init.kind = InitKind::conv_default;
  bias_init.seed = 2;
  bias_init.fan_in = 54;
  const Tensor expect = kfuse::generate({6}, DType::f32, bias_init);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(conv.bias->data<float>()[i], expect.data<float>()[i]);

  // The input is the generator's.
  const Tensor x = kfuse::make_input(s);
  const Tensor g = kfuse::generate({2, 4, 5, 5}, DType::f32, s.input.init);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(x.data<float>()[i], g.data<float>()[i]);
}

// "precision": the convolution's arithmetic, strict unless the spec says tf32;
// the plan's describe() names it.
TEST(Spec, PrecisionIsStrictUnlessTheSpecSaysTf32) {
  EXPECT_EQ(kfuse::parse_spec(kValid).precision, kfuse::Precision::strict);
  std::string tf32 = kValid;
  tf32.insert(tf32.find('{') + 1, "\"precision\": \"tf32\", ");
  const kfuse::Spec s = kfuse::parse_spec(tf32);
  EXPECT_EQ(s.precision, kfuse::Precision::tf32);
  kfuse::PlanOptions o;
  o.memory = kfuse::Memory::host;
  o.precision = s.precision;
  EXPECT_NE(kfuse::Plan(s.pipeline, o).describe().find("precision tf32"), std::string::npos);
  std::string bad = kValid;
  bad.insert(bad.find('{') + 1, "\"precision\": \"fp16\", ");
  expect_spec_error(bad, "spec: /precision: ", "expected \"strict\" or \"tf32\"");
}

TEST(Spec, Float64OverrideKeepsTheSameValues) {
  const kfuse::Spec f = kfuse::parse_spec(kValid);
  const kfuse::Spec d = kfuse::parse_spec(kValid, ".", DType::f64);
  EXPECT_EQ(d.pipeline.dtype(), DType::f64);
  EXPECT_EQ(d.spec_dtype, DType::f32);
  const auto& wf = std::get<kfuse::ConvTranspose2dOp>(f.pipeline.stages()[0].op).weight;
  const auto& wd = std::get<kfuse::ConvTranspose2dOp>(d.pipeline.stages()[0].op).weight;
  ASSERT_EQ(wd.dtype(), DType::f64);
  for (int64_t i = 0; i < wf.numel(); ++i) ASSERT_EQ(static_cast<double>(wf.data<float>()[i]), wd.data<double>()[i]);
  const auto& af = *std::get<kfuse::BinaryOp>(f.pipeline.stages()[2].op).operand;
  const auto& ad = *std::get<kfuse::BinaryOp>(d.pipeline.stages()[2].op).operand;
  for (int64_t i = 0; i < af.numel(); ++i) ASSERT_EQ(static_cast<double>(af.data<float>()[i]), ad.data<double>()[i]);
  const Tensor xf = kfuse::make_input(f), xd = kfuse::make_input(d);
  ASSERT_EQ(xd.dtype(), DType::f64);
  for (int64_t i = 0; i < xf.numel(); ++i) ASSERT_EQ(static_cast<double>(xf.data<float>()[i]), xd.data<double>()[i]);
}

TEST(Spec, OpVariants) {
  const kfuse::Spec s = kfuse::parse_spec(with_ops(kConv + R"(,
    {"op": "leaky_relu", "slope": 0.2}, {"op": "gelu", "approximate": "tanh"}, {"op": "gelu"},
    {"op": "hardtanh"}, {"op": "clamp", "min": "-inf", "max": 3}, {"op": "relu"}, {"op": "tanh"},
    {"op": "sigmoid"}, {"op": "silu"}, {"op": "mish"}, {"op": "hardswish"}, {"op": "exp"}, {"op": "log"},
    {"op": "neg"}, {"op": "abs"},
    {"op": "max", "scalar": 0}, {"op": "minimum", "scalar": 1}, {"op": "sub", "tensor": {"shape": [6, 1, 1], "data": [1, 2, 3, 4, 5, 6]}},
    {"op": "div", "scalar": 2}, {"op": "softmax", "axis": -3}, {"op": "max", "axes": 1}, {"op": "min", "axes": [-1], "keepdim": true})"));
  const auto& st = s.pipeline.stages();
  ASSERT_EQ(st.size(), 23u);
  EXPECT_DOUBLE_EQ(std::get<kfuse::UnaryOp>(st[1].op).op.a, 0.2);
  EXPECT_EQ(std::get<kfuse::UnaryOp>(st[2].op).op.kind, kfuse::UnaryKind::gelu_tanh);
  EXPECT_EQ(std::get<kfuse::UnaryOp>(st[3].op).op.kind, kfuse::UnaryKind::gelu);
  EXPECT_DOUBLE_EQ(std::get<kfuse::UnaryOp>(st[4].op).op.a, -1.0);
  EXPECT_DOUBLE_EQ(std::get<kfuse::UnaryOp>(st[4].op).op.b, 1.0);
  EXPECT_TRUE(std::isinf(std::get<kfuse::UnaryOp>(st[5].op).op.a));
  EXPECT_DOUBLE_EQ(std::get<kfuse::UnaryOp>(st[5].op).op.b, 3.0);
  EXPECT_EQ(std::get<kfuse::BinaryOp>(st[16].op).kind, kfuse::BinaryKind::max);
  EXPECT_EQ(std::get<kfuse::BinaryOp>(st[17].op).kind, kfuse::BinaryKind::min);
  const auto& sub = std::get<kfuse::BinaryOp>(st[18].op);
  EXPECT_EQ(sub.operand->data<float>()[5], 6.0f);
  EXPECT_EQ(std::get<kfuse::SoftmaxOp>(st[20].op).axis, 1);
  EXPECT_EQ(std::get<kfuse::ReduceOp>(st[21].op).kind, kfuse::ReduceKind::max);
  EXPECT_EQ(s.pipeline.output_shape(), (Shape{2, 7, 1}));
  // Pairs and explicit defaults.
  const kfuse::Spec c = kfuse::parse_spec(with_ops(
      R"({"op": "conv_transpose2d", "weight": {"shape": [4, 3, 2, 3], "init": {"kind": "randn", "seed": 1, "std": 0.1}},
          "bias": null, "stride": [2, 1], "padding": [0, 1], "output_padding": [1, 0], "dilation": [1, 2], "groups": 2})"));
  const auto& conv = std::get<kfuse::ConvTranspose2dOp>(c.pipeline.stages()[0].op);
  EXPECT_FALSE(conv.bias.has_value());
  EXPECT_EQ(conv.params.stride, (kfuse::Pair{2, 1}));
  EXPECT_EQ(conv.params.dilation, (kfuse::Pair{1, 2}));
  EXPECT_EQ(c.pipeline.output_shape(), (Shape{2, 6, 11, 7}));
}

TEST(Spec, ShippedSpecsLoad) {
  const std::string dir = KFUSE_SPECS_DIR;
  const kfuse::Spec a = kfuse::load_spec(dir + "/small/convt_gap_bias_lse.json");
  EXPECT_EQ(a.name, "convt_gap_bias_lse");
  EXPECT_EQ(a.pipeline.output_shape(), (Shape{2, 1}));
  const kfuse::Spec b = kfuse::load_spec(dir + "/small/convt_mul_gap.json");
  EXPECT_EQ(b.pipeline.output_shape(), (Shape{2, 16, 1, 1}));
  const kfuse::Spec c = kfuse::load_spec(dir + "/small/convt_relu_gap_softmax.json");
  EXPECT_EQ(c.pipeline.output_shape(), (Shape{2, 16}));
  // The full-size specs only build weights; their inputs are generated on demand.
  const kfuse::Spec d = kfuse::load_spec(dir + "/convt_gap_bias_lse.json");
  EXPECT_EQ(d.pipeline.input_shape(), (Shape{16, 64, 512, 512}));
  EXPECT_EQ(d.pipeline.output_shape(), (Shape{16, 1}));
  const kfuse::Spec e = kfuse::load_spec(dir + "/convt_mul_gap.json");
  EXPECT_EQ(e.pipeline.stages()[0].out_shape, (Shape{16, 128, 256, 256}));
  EXPECT_EQ(e.pipeline.output_shape(), (Shape{16, 128, 1, 1}));
}

TEST_F(TempDir, NpyTensorsResolveAgainstTheSpecsDirectory) {
  fs::create_directories(dir_ / "data");
  InitSpec init;
  init.kind = InitKind::randn;
  const Tensor w = kfuse::generate({4, 6, 3, 3}, DType::f64, init);
  kfuse::write_npy((dir_ / "data" / "w.npy").string(), w);
  const Tensor x = kfuse::generate({2, 4, 5, 5}, DType::f32, {});
  kfuse::write_npy((dir_ / "data" / "x.npy").string(), x);
  const std::string p = write("s.json", R"({"input": {"npy": "data/x.npy"},
      "ops": [{"op": "conv_transpose2d", "weight": {"npy": "data/w.npy"}}, {"op": "sum", "axes": [2, 3]}]})");
  const kfuse::Spec s = kfuse::load_spec(p);
  EXPECT_EQ(s.name, "s");
  EXPECT_EQ(s.pipeline.dtype(), DType::f32);  // the input file's dtype
  ASSERT_TRUE(s.input.npy.has_value());
  const auto& wt = std::get<kfuse::ConvTranspose2dOp>(s.pipeline.stages()[0].op).weight;
  ASSERT_EQ(wt.dtype(), DType::f32);  // converted to the pipeline's operand dtype
  for (int64_t i = 0; i < w.numel(); ++i) ASSERT_EQ(wt.data<float>()[i], static_cast<float>(w.data<double>()[i]));
  const Tensor xi = kfuse::make_input(s);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(xi.data<float>()[i], x.data<float>()[i]);
  // The same spec from a string resolves against base_dir.
  const std::string text = R"({"input": {"npy": "data/x.npy", "dtype": "float64"}, "ops": [{"op": "relu"}]})";
  const kfuse::Spec t = kfuse::parse_spec(text, dir_.string());
  EXPECT_EQ(t.pipeline.dtype(), DType::f64);
  EXPECT_EQ(kfuse::make_input(t).data<double>()[3], static_cast<double>(x.data<float>()[3]));
  // Missing file: io, with the JSON path and the file.
  expect_spec_error(R"({"input": {"npy": "data/none.npy"}, "ops": [{"op": "relu"}]})", "spec: /input/npy: ",
                    "none.npy", ErrorCategory::io);
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"npy": "missing_w.npy"}})"),
                    "spec: /ops/0/weight/npy: ", "missing_w.npy", ErrorCategory::io);
}

TEST_F(TempDir, LoadSpecFileErrors) {
  try {
    kfuse::load_spec((dir_ / "absent.json").string());
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::io);
    EXPECT_NE(std::string(e.what()).find("absent.json"), std::string::npos) << e.what();
  }
  const std::string p = write("bad.json", with_ops(R"({"op": "sum", "axes": ["x"]})"));
  try {
    kfuse::load_spec(p);
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::spec);
    EXPECT_EQ(std::string(e.what()), "spec: /ops/0/axes/0: expected an integer, got \"x\"");
  }
}

// ---------------------------------------------------------------------------
// Malformed specs: every one names the JSON path of the bad field first.

TEST(SpecErrors, InvalidJson) { expect_spec_error("{\"input\": ", "spec: invalid JSON: ", "parse error"); }
TEST(SpecErrors, RootNotAnObject) { expect_spec_error("[1, 2]", "spec: /: expected an object, got [1,2]"); }
TEST(SpecErrors, UnknownTopLevelKeyListsValidKeys) {
  expect_spec_error(R"({"input": {}, "ops": [], "extra": 1})",
                    "spec: /extra: unknown key 'extra' (valid keys: name, description, precision, input, ops)");
}
TEST(SpecErrors, MissingInput) { expect_spec_error(R"({"ops": []})", "spec: /: missing required key 'input'"); }
TEST(SpecErrors, MissingOps) {
  expect_spec_error(R"({"input": {"shape": [2], "init": {"kind": "uniform", "seed": 0}}})",
                    "spec: /: missing required key 'ops'");
}
TEST(SpecErrors, OpsNotAnArrayOrEmpty) {
  expect_spec_error(R"({"input": {"shape": [2], "init": {"kind": "uniform", "seed": 0}}, "ops": {}})",
                    "spec: /ops: expected an array of ops");
  expect_spec_error(with_ops(""), "spec: /ops: expected at least one op");
}
TEST(SpecErrors, NameNotAString) {
  expect_spec_error(R"({"name": 3, "input": {"shape": [2], "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /name: expected a string, got 3");
}
TEST(SpecErrors, AxisNotAnInteger) {
  expect_spec_error(with_ops(R"({"op": "relu"}, {"op": "sum", "axes": ["x"]})"),
                    "spec: /ops/1/axes/0: expected an integer, got \"x\"");
  expect_spec_error(with_ops(R"({"op": "sum", "axes": [1.5]})"), "spec: /ops/0/axes/0: expected an integer, got 1.5");
  expect_spec_error(with_ops(R"({"op": "sum", "axes": "all"})"), "spec: /ops/0/axes: expected an axis or an array");
}
TEST(SpecErrors, KeepdimNotABool) {
  expect_spec_error(with_ops(R"({"op": "mean", "axes": [1], "keepdim": 1})"),
                    "spec: /ops/0/keepdim: expected true or false, got 1");
}
TEST(SpecErrors, UnknownOpKeyListsValidKeys) {
  expect_spec_error(with_ops(R"({"op": "mean", "axes": [1], "keep_dim": true})"),
                    "spec: /ops/0/keep_dim: unknown key 'keep_dim' (valid keys: op, axes, keepdim)");
  expect_spec_error(with_ops(R"({"op": "relu", "slope": 0.1})"), "spec: /ops/0/slope: unknown key 'slope' (valid keys: op)");
}
TEST(SpecErrors, UnknownOpListsValidOps) {
  expect_spec_error(with_ops(R"({"op": "relu"}, {"op": "swish"})"), "spec: /ops/1/op: unknown op \"swish\"",
                    "conv_transpose2d, relu");
}
TEST(SpecErrors, OpWithoutName) {
  expect_spec_error(with_ops(R"({"axes": [1]})"), "spec: /ops/0: missing required key 'op'");
  expect_spec_error(with_ops(R"({"op": 5})"), "spec: /ops/0/op: expected a string, got 5");
  expect_spec_error(with_ops(R"("relu")"), "spec: /ops/0: expected an op object");
}
TEST(SpecErrors, StrideWrongTypeOrLength) {
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}, "stride": [1, 2, 3]})"),
                    "spec: /ops/0/stride: expected an integer or an array of 2 integers, got [1,2,3]");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}, "padding": [1, 1.5]})"),
                    "spec: /ops/0/padding/1: expected an integer, got 1.5");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}, "groups": "2"})"),
                    "spec: /ops/0/groups: expected an integer, got \"2\"");
}
TEST(SpecErrors, TensorWithoutShapeOrInit) {
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"init": {"kind": "conv_default", "seed": 1}}})"),
                    "spec: /ops/0/weight: missing required key 'shape'");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3]}})"),
                    "spec: /ops/0/weight: missing required key 'init'");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": [4, 6, 3, 3]})"),
                    "spec: /ops/0/weight: expected a tensor");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d"})"), "spec: /ops/0: missing required key 'weight'");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"npy": "w.npy", "shape": [1]}})"),
                    "spec: /ops/0/weight/shape: unknown key 'shape' (valid keys: npy)");
}
TEST(SpecErrors, BadInit) {
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "xavier", "seed": 1}}})"),
                    "spec: /ops/0/weight/init/kind: unknown init kind \"xavier\"");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "randn"}}})"),
                    "spec: /ops/0/weight/init: missing required key 'seed'");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "randn", "seed": -1}}})"),
                    "spec: /ops/0/weight/init/seed: a seed must be a non-negative integer, got -1");
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "randn", "seed": 1, "low": 0}}})"),
                    "spec: /ops/0/weight/init/low: unknown key 'low' (valid keys: kind, seed, mean, std)");
  expect_spec_error(R"({"input": {"shape": [2], "init": {"kind": "uniform", "seed": 0, "low": 2, "high": 1}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/init: uniform needs finite low <= high");
  expect_spec_error(R"({"input": {"shape": [2], "init": "uniform"}, "ops": [{"op": "relu"}]})",
                    "spec: /input/init: expected an init object");
  // conv_default outside a conv needs a fan_in for a rank-1 tensor.
  expect_spec_error(with_ops(kConv + R"(, {"op": "add", "tensor": {"shape": [6, 1, 1], "init": {"kind": "constant", "value": 1}}},
                    {"op": "add", "tensor": {"shape": [7], "init": {"kind": "conv_default", "seed": 4}}})"),
                    "spec: /ops/2/tensor/init: conv_default: fan_in cannot be derived");
}
TEST(SpecErrors, BadShape) {
  expect_spec_error(R"({"input": {"shape": [2, -4], "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/shape/1: an extent must be non-negative, got -4");
  expect_spec_error(R"({"input": {"shape": 7, "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/shape: expected a shape");
  expect_spec_error(R"({"input": {"shape": [1,1,1,1,1,1,1,1,1], "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/shape: rank 9 exceeds the maximum 8");
  expect_spec_error(R"({"input": {"shape": [4294967296, 4294967296], "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/shape: ", "2^63-1");
}
TEST(SpecErrors, BadDtype) {
  expect_spec_error(R"({"input": {"shape": [2], "dtype": "int32", "init": {"kind": "uniform", "seed": 0}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/dtype: unknown dtype \"int32\" (valid: float32, float64, float16, bfloat16)");
}
TEST(SpecErrors, InputWithoutInit) {
  expect_spec_error(R"({"input": {"shape": [2]}, "ops": [{"op": "relu"}]})", "spec: /input: missing required key 'init'");
  expect_spec_error(R"({"input": {"shape": [2], "init": {"kind": "uniform", "seed": 0}, "data": [1, 2]}, "ops": [{"op": "relu"}]})",
                    "spec: /input/data: unknown key 'data' (valid keys: shape, dtype, init)");
}
TEST(SpecErrors, PipelineShapeErrorsArePrefixedWithTheOpsPath) {
  // An operand that does not broadcast.
  expect_spec_error(with_ops(kConv + R"(, {"op": "relu"}, {"op": "add", "tensor": {"shape": [5, 1, 1], "init": {"kind": "randn", "seed": 3}}})"),
                    "spec: /ops/2: op #3 (add)");
  // An axis out of range.
  expect_spec_error(with_ops(R"({"op": "relu"}, {"op": "sum", "axes": [4]})"), "spec: /ops/1: op #2 (sum)");
  // Groups that do not divide the channels.
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}, "groups": 3})"),
                    "spec: /ops/0: ", "groups");
  // The conv's weight channels against the input's.
  expect_spec_error(with_ops(R"({"op": "conv_transpose2d", "weight": {"shape": [3, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}})"),
                    "spec: /ops/0: ");
  // conv_transpose2d is a front op.
  expect_spec_error(with_ops(R"({"op": "relu"}, )" + kConv), "spec: /ops/1: ", "front op");
  // Duplicate reduction axes; softmax axis out of range; hardtanh min > max.
  expect_spec_error(with_ops(R"({"op": "sum", "axes": [1, 1]})"), "spec: /ops/0: ");
  expect_spec_error(with_ops(R"({"op": "softmax", "axis": 7})"), "spec: /ops/0: ");
  expect_spec_error(with_ops(R"({"op": "hardtanh", "min": 2, "max": 1})"), "spec: /ops/0: ", "must not exceed");
}
TEST(SpecErrors, BinaryNeedsExactlyOneOperand) {
  expect_spec_error(with_ops(R"({"op": "add"})"), "spec: /ops/0: missing required key 'scalar' (or 'tensor')");
  expect_spec_error(with_ops(R"({"op": "mul", "scalar": 2, "tensor": {"shape": [1], "data": [2]}})"),
                    "spec: /ops/0: give either 'scalar' or 'tensor', not both");
  expect_spec_error(with_ops(R"({"op": "mul", "scalar": "two"})"), "spec: /ops/0/scalar: expected a number, got \"two\"");
  expect_spec_error(with_ops(R"({"op": "max"})"), "spec: /ops/0: 'max' needs \"axes\" (a reduction) or \"scalar\"/\"tensor\"");
  expect_spec_error(with_ops(R"({"op": "max", "axes": [1], "scalar": 0})"),
                    "spec: /ops/0/scalar: unknown key 'scalar' (valid keys: op, axes, keepdim)");
}
TEST(SpecErrors, DataLengthMismatch) {
  expect_spec_error(with_ops(R"({"op": "add", "tensor": {"shape": [5], "data": [1, 2, 3]}})"),
                    "spec: /ops/0/tensor/data: has 3 values; shape [5] needs 5");
  expect_spec_error(with_ops(R"({"op": "add", "tensor": {"shape": [2], "data": [1, null]}})"),
                    "spec: /ops/0/tensor/data/1: expected a number, got null");
  expect_spec_error(with_ops(R"({"op": "add", "tensor": {"shape": [2], "data": [1, 2], "init": {"kind": "constant", "value": 0}}})"),
                    "spec: /ops/0/tensor: give either 'init' or 'data', not both");
}
TEST(SpecErrors, UnaryParameters) {
  expect_spec_error(with_ops(R"({"op": "gelu", "approximate": "erf"})"),
                    "spec: /ops/0/approximate: expected \"none\" or \"tanh\", got \"erf\"");
  expect_spec_error(with_ops(R"({"op": "clamp"})"), "spec: /ops/0: clamp needs 'min', 'max' or both");
  expect_spec_error(with_ops(R"({"op": "leaky_relu", "slope": true})"), "spec: /ops/0/slope: expected a number, got true");
  expect_spec_error(with_ops(R"({"op": "softmax"})"), "spec: /ops/0: missing required key 'axis'");
}
TEST(SpecErrors, DuplicateKey) {
  expect_spec_error(with_ops(R"({"op": "relu"}, {"op": "sum", "axes": [1], "axes": [2]})"),
                    "spec: /ops/1/axes: duplicate key 'axes'");
  expect_spec_error(R"({"input": {"shape": [2], "init": {"kind": "uniform", "seed": 0, "seed": 1}}, "ops": [{"op": "relu"}]})",
                    "spec: /input/init/seed: duplicate key 'seed'");
}

// `{"name": [[...]]}` with the array nested `depth` levels.
std::string nested_name(int depth) {
  return "{\"name\": " + std::string(static_cast<std::size_t>(depth), '[') +
         std::string(static_cast<std::size_t>(depth), ']') + "}";
}

// f() on a thread with a 256 KB stack (a worker thread of an application),
// its exception rethrown here.
void on_small_stack(const std::function<void()>& f) {
  struct Call {
    const std::function<void()>* f;
    std::exception_ptr error;
  } call{&f, nullptr};
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
  pthread_t t;
  const auto body = [](void* p) -> void* {
    auto* c = static_cast<Call*>(p);
    try {
      (*c->f)();
    } catch (...) {
      c->error = std::current_exception();
    }
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&t, &attr, body, &call), 0);
  pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
  if (call.error) std::rethrow_exception(call.error);
}

// Nesting is bounded where the spec is parsed, so nothing that walks the
// value afterwards (messages quoting it, the library's own dump()) recurses
// deeply: a 4 KB spec used to overflow a 256 KB stack, and 80000 levels the
// main thread's.
TEST(SpecErrors, DeepNestingIsASpecErrorOnASmallStack) {
  for (int depth : {2000, 100000}) {
    SCOPED_TRACE(depth);
    on_small_stack([&] { expect_spec_error(nested_name(depth), "spec: /name/0/0/0/", "nested more than 32 levels deep"); });
  }
  // Just inside the limit: the message quotes a bounded excerpt of the value.
  on_small_stack([] { expect_spec_error(nested_name(31), "spec: /name: expected a string, got [[[[...]]]]"); });
}

TEST(SpecErrors, MessagesQuoteABoundedExcerpt) {
  std::string zeros = "[0";
  for (int i = 0; i < 100000; ++i) zeros += ",0";
  try {
    kfuse::parse_spec("{\"name\": " + zeros + "]}");
    FAIL();
  } catch (const kfuse::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m, "spec: /name: expected a string, got [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,...");
  }
  // A long string cut inside a UTF-8 sequence (the 2-byte "é" across the cut):
  // replaced, where dump() would throw a JSON library exception.
  expect_spec_error(with_ops(R"({"op": "leaky_relu", "slope": ")" + std::string(60, 'a') + R"(\u00e9\u00e9"})"),
                    "spec: /ops/0/slope: expected a number, got \"" + std::string(56, 'a') + "...");
  expect_spec_error(R"({"name": {"a": {"b": {"c": {"d": 1}}}}})", R"(spec: /name: expected a string, got {"a":{"b":{"c":{...}}}})");
}

TEST_F(TempDir, JsonSyntaxErrorsNameTheFile) {
  const std::string p = write("broken.json", "{\"input\": ");
  try {
    kfuse::load_spec(p);
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::spec);
    EXPECT_EQ(std::string(e.what()).rfind("spec: " + p + ": invalid JSON: ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace kfuse_test
