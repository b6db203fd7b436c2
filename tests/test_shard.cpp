// What batch sharding (kfuse::mpi, tests/mpi) rests on, without MPI:
// Pipeline::with_batch and its rejections, every strategy's rows of a batch
// equal to the same rows run alone (bit for bit), and the input slices
// (read_npy_rows, make_input_slice) equal to the rows of the whole input.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include <unistd.h>

#include "kfuse/npy.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/spec.hpp"
#include "reference.hpp"

using namespace kfuse;

namespace {

Tensor uniform(const Shape& shape, DType dtype, uint64_t seed) {
  InitSpec init;
  init.seed = seed;
  init.low = -1.0;
  return generate(shape, dtype, init);
}

// Rows [begin, end) of a row-major tensor, as a view.
TensorView rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t row = s[0] > 0 ? t.numel() / s[0] : 0;
  s[0] = end - begin;
  return TensorView(static_cast<char*>(t.view().data) + begin * row * int64_t(size_of(t.dtype())), t.dtype(), s,
                    t.memory());
}

// Contiguous views in either memory.
bool same_bits(const TensorView& a, const TensorView& b) {
  const Tensor ha = Tensor::copy_of(a, Memory::host), hb = Tensor::copy_of(b, Memory::host);
  return a.shape == b.shape && a.dtype == b.dtype && std::memcmp(ha.view().data, hb.view().data, a.bytes()) == 0;
}

// conv_transpose2d, then a chain whose strategy is picked by `tail`.
Pipeline conv_pipeline(int64_t n, DType dtype, int tail) {
  const DType wd = dtype == DType::f64 ? DType::f64 : DType::f32;
  ConvTranspose2dParams p;
  p.stride = {2, 2};
  p.padding = {1, 1};
  p.output_padding = {1, 1};
  Pipeline pl({n, 3, 7, 6}, dtype);
  pl.conv_transpose2d(uniform({3, 4, 3, 3}, wd, 11), uniform({4}, wd, 12), p);
  if (tail == 0) pl.mul(0.5).mean({2, 3}, true).add(uniform({4, 1, 1}, wd, 13)).logsumexp({1}, true).sum({2, 3});  // fold
  else if (tail == 1) pl.relu().mean({2, 3}).softmax(1);                                                  // fused reduce
  else pl.gelu().mul(uniform({1, 4, 1, 1}, wd, 14));                                                    // fused map
  return pl;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::unsupported) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

class ShardFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kfuse_shard_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

}  // namespace

TEST(WithBatch, ReplaysTheStagesOnTheNewBatch) {
  const Pipeline p = conv_pipeline(7, DType::f32, 0);
  for (int64_t n : {0, 1, 3, 7, 20}) {
    const Pipeline q = p.with_batch(n);
    ASSERT_EQ(q.stages().size(), p.stages().size());
    EXPECT_EQ(q.dtype(), p.dtype());
    for (std::size_t k = 0; k < p.stages().size(); ++k) {
      Shape in = p.stages()[k].in_shape, out = p.stages()[k].out_shape;
      in[0] = n;
      out[0] = n;
      EXPECT_EQ(q.stages()[k].in_shape, in) << k;
      EXPECT_EQ(q.stages()[k].out_shape, out) << k;
      EXPECT_EQ(op_name(q.stages()[k].op), op_name(p.stages()[k].op));
    }
  }
}

TEST(WithBatch, RejectsOpsThatMixSamples) {
  const Pipeline base({6, 4, 5}, DType::f32);
  EXPECT_NE(message_of([&] { Pipeline(base).sum({0}).with_batch(3); }).find("reduces over axis 0"), std::string::npos);
  EXPECT_NE(message_of([&] { Pipeline(base).mean({0, 2}, true).with_batch(3); }).find("cross-rank reduction"),
            std::string::npos);
  EXPECT_NE(message_of([&] { Pipeline(base).relu().logsumexp({-3}).with_batch(3); }).find("op #2 (logsumexp)"),
            std::string::npos);
  EXPECT_NE(message_of([&] { Pipeline(base).softmax(0).with_batch(3); }).find("axis 0"), std::string::npos);
  EXPECT_NE(message_of([&] { Pipeline(base).add(uniform({6, 1, 1}, DType::f32, 1)).with_batch(3); }).find("varies along axis 0"),
            std::string::npos);
  EXPECT_NE(message_of([&] { Pipeline(base).mul(uniform({2, 6, 4, 5}, DType::f32, 1)).with_batch(3); }).find("more axes"),
            std::string::npos);
  // Reductions over other axes (keepdim or not) keep the batch on axis 0.
  EXPECT_EQ(Pipeline(base).sum({1}).softmax(1).max({-1}).with_batch(2).output_shape(), Shape({2}));
  // Operands that do not vary along the batch.
  EXPECT_EQ(Pipeline(base).add(uniform({1, 4, 5}, DType::f32, 1)).sub(uniform({5}, DType::f32, 2)).with_batch(2).output_shape(),
            Shape({2, 4, 5}));
  try {
    base.with_batch(-1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::invalid_argument);
  }
}

// Each sample is computed by the same arithmetic whatever the batch around
// it: any rows run alone equal the same rows of the whole batch, bit for bit,
// under every strategy (the ground for kfuse::mpi's bit-identity).
TEST(WithBatch, RowsRunAloneEqualTheWholeBatchBitForBit) {
  const int64_t n = 7;
  for (DType dtype : {DType::f32, DType::f64}) {
    for (int tail = 0; tail < 3; ++tail) {
      const Pipeline whole = conv_pipeline(n, dtype, tail);
      const Tensor x = Tensor::copy_of(uniform(whole.input_shape(), dtype, 5), kokkos_memory());
      for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused, Strategy::reference}) {
        if (s == Strategy::fold && tail != 0) continue;
        PlanOptions opt;
        opt.strategy = s;
        const Tensor all = Plan(whole, opt).run(x);
        for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 1}, {0, 3}, {3, 7}, {5, 7}, {2, 3}}) {
          const Plan part(whole.with_batch(e - b), opt);
          Tensor y = part.run(rows(x, b, e));
          EXPECT_TRUE(same_bits(y.view(), rows(all, b, e)))
              << to_string(dtype) << " tail " << tail << " strategy " << to_string(s) << " rows [" << b << ", " << e << ")";
        }
      }
    }
  }
}

TEST_F(ShardFiles, NpyRowsReadOnlyTheirRows) {
  const Tensor t = uniform({5, 3, 2}, DType::f64, 3);
  write_npy(path("t.npy"), t);
  for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 5}, {1, 4}, {4, 5}, {2, 2}, {5, 5}}) {
    const Tensor r = read_npy_rows(path("t.npy"), b, e);
    EXPECT_EQ(r.shape(), Shape({e - b, 3, 2}));
    EXPECT_TRUE(same_bits(r.view(), rows(t, b, e))) << b << " " << e;
  }
  for (auto [b, e] : {std::pair<int64_t, int64_t>{-1, 2}, {3, 2}, {0, 6}}) {
    try {
      read_npy_rows(path("t.npy"), b, e);
      ADD_FAILURE() << "no error for [" << b << ", " << e << ")";
    } catch (const Error& err) {
      EXPECT_EQ(err.category(), ErrorCategory::io);
      EXPECT_NE(std::string(err.what()).find("outside [0, 5)"), std::string::npos) << err.what();
    }
  }
  const Tensor scalar = Tensor::empty({}, DType::f32, Memory::host);
  scalar.data<float>()[0] = 1.0f;
  write_npy(path("s.npy"), scalar);
  EXPECT_THROW(read_npy_rows(path("s.npy"), 0, 0), Error);
}

TEST_F(ShardFiles, InputSlicesEqualTheRowsOfTheWholeInput) {
  const Tensor x = uniform({5, 2, 3, 3}, DType::f32, 9);
  write_npy(path("x.npy"), x);
  const std::string ops = R"("ops": [{"op": "relu"}, {"op": "mean", "axes": [2, 3]}])";
  const std::vector<std::string> inputs = {
      R"({"shape": [5, 2, 3, 3], "init": {"kind": "uniform", "seed": 4, "low": -2, "high": 3}})",
      R"({"shape": [5, 2, 3, 3], "init": {"kind": "randn", "seed": 8}})",
      R"({"shape": [5, 2, 3, 3], "dtype": "float64", "init": {"kind": "randn", "seed": 8}})",
      R"({"npy": "x.npy"})",
      R"({"npy": "x.npy", "dtype": "float64"})",
  };
  for (const std::string& in : inputs) {
    for (std::optional<DType> over : {std::optional<DType>(), std::optional<DType>(DType::f64)}) {
      const Spec spec = parse_spec(R"({"input": )" + in + ", " + ops + "}", dir_.string(), over);
      const Tensor whole = make_input(spec);
      for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 5}, {0, 2}, {2, 4}, {4, 5}, {3, 3}}) {
        const Tensor r = make_input_slice(spec, b, e);
        EXPECT_TRUE(same_bits(r.view(), rows(whole, b, e))) << in << " rows [" << b << ", " << e << ")";
      }
      EXPECT_THROW(make_input_slice(spec, 4, 6), Error);
    }
  }
}
