// kfuse::mpi under mpirun (any number of ranks; CI runs 1, 2 and 3): the
// gathered output of a sharded plan equals the single-process output bit for
// bit (host backend) for every strategy, batch size and root, empty slices
// included (a batch of 2 on 3 ranks); distributed outputs keep each rank's
// rows; inputs from a spec's generator or .npy are the same global tensor
// whatever the split; errors are agreed by every rank; the tuning hook runs
// its producer once per node and every rank gets its result.
//
// Every rank runs every test in the same order, and the tests never leave a
// collective early (EXPECT, not ASSERT, around collectives).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "kfuse/mpi.hpp"
#include "kfuse/npy.hpp"
#include "kfuse/spec.hpp"

using namespace kfuse;
namespace kmpi = kfuse::mpi;

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

InitSpec uniform_init(uint64_t seed) {
  InitSpec init;
  init.seed = seed;
  init.low = -1.0;
  return init;
}

Tensor uniform(const Shape& shape, DType dtype, uint64_t seed) { return generate(shape, dtype, uniform_init(seed)); }

// Rows [begin, end) of the global tensor generated from `seed`: generate_slice
// over the flat range, viewed with the local shape.
Tensor uniform_rows(const Shape& global, DType dtype, uint64_t seed, int64_t begin, int64_t end) {
  const int64_t row = global[0] > 0 ? checked_numel(global, "test", "x") / global[0] : 0;
  const Tensor flat = generate_slice(global, dtype, uniform_init(seed), begin * row, end * row);
  Shape s = global;
  s[0] = end - begin;
  Tensor t = Tensor::empty(s, dtype);
  if (flat.numel() > 0) std::memcpy(t.view().data, flat.view().data, flat.view().bytes());
  return t;
}

TensorView rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t row = s[0] > 0 ? t.numel() / s[0] : 0;
  s[0] = end - begin;
  return TensorView(static_cast<char*>(t.view().data) + begin * row * int64_t(size_of(t.dtype())), t.dtype(), s);
}

::testing::AssertionResult same_bits(const TensorView& a, const TensorView& b) {
  if (a.shape != b.shape || a.dtype != b.dtype)
    return ::testing::AssertionFailure() << to_string(a.shape) << " " << to_string(a.dtype) << " vs " << to_string(b.shape)
                                         << " " << to_string(b.dtype);
  const std::size_t es = size_of(a.dtype);
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(static_cast<const char*>(a.data) + i * es, static_cast<const char*>(b.data) + i * es, es) != 0)
      return ::testing::AssertionFailure() << "element " << i << " of " << a.numel() << " differs";
  return ::testing::AssertionSuccess();
}

struct Case {
  std::string name;
  Pipeline pipeline;
};

// Pipelines on a batch of n: the fold, the fused epilogue (reduce, map) and
// op chains without a conv.
std::vector<Case> cases(int64_t n, DType dtype) {
  const DType wd = dtype == DType::f64 ? DType::f64 : DType::f32;
  ConvTranspose2dParams p;
  p.stride = {2, 2};
  p.padding = {1, 1};
  p.output_padding = {1, 1};
  std::vector<Case> out;
  {
    Pipeline pl({n, 3, 7, 6}, dtype);
    pl.conv_transpose2d(uniform({3, 4, 3, 3}, wd, 11), uniform({4}, wd, 12), p)
        .mul(0.5).mean({2, 3}, true).add(uniform({4, 1, 1}, wd, 13)).logsumexp({1}, true).sum({2, 3}).mul(10.0);
    out.push_back({"fold", pl});
  }
  {
    Pipeline pl({n, 3, 7, 6}, dtype);
    pl.conv_transpose2d(uniform({3, 4, 3, 3}, wd, 11), uniform({4}, wd, 12), p).relu().mean({2, 3}).softmax(1);
    out.push_back({"fused_reduce", pl});
  }
  {
    Pipeline pl({n, 2, 5, 5}, dtype);
    pl.conv_transpose2d(uniform({2, 3, 3, 3}, wd, 14), std::nullopt, ConvTranspose2dParams{}).gelu().mul(uniform({1, 3, 1, 1}, wd, 15));
    out.push_back({"fused_map", pl});
  }
  {
    Pipeline pl({n, 6}, dtype);
    pl.tanh().softmax(1).mul(uniform({6}, wd, 16)).logsumexp({1}, true);
    out.push_back({"no_conv", pl});
  }
  return out;
}

}  // namespace

TEST(BatchSlice, ContiguousAndTheFirstRanksGetOneMore) {
  for (int64_t n = 0; n <= 12; ++n) {
    for (int size = 1; size <= 5; ++size) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        const kmpi::BatchSlice s = kmpi::batch_slice(n, r, size);
        EXPECT_EQ(s.begin, next) << n << " " << size << " " << r;
        EXPECT_EQ(s.count, n / size + (r < n % size ? 1 : 0)) << n << " " << size << " " << r;
        next = s.end();
      }
      EXPECT_EQ(next, n);
    }
  }
  EXPECT_THROW(kmpi::batch_slice(4, 2, 2), Error);
  EXPECT_THROW(kmpi::batch_slice(-1, 0, 2), Error);
}

// The heart of it: for every pipeline, dtype, strategy, batch (smaller than,
// equal to and larger than the number of ranks) and root, the gathered output
// is the single-process output, bit for bit.
TEST(Sharded, GatheredOutputEqualsOneProcessBitForBit) {
  const int size = world_size();
  for (DType dtype : {DType::f32, DType::f64}) {
    for (int64_t n : {1, 2, 3, 5, 8}) {
      for (const Case& c : cases(n, dtype)) {
        for (Strategy strategy : {Strategy::automatic, Strategy::reference}) {
          for (int root : {0, size - 1}) {
            kmpi::ShardOptions opt;
            opt.plan.strategy = strategy;
            opt.root = root;
            const kmpi::ShardedPlan plan(c.pipeline, MPI_COMM_WORLD, opt);
            const kmpi::BatchSlice s = plan.slice();
            EXPECT_EQ(plan.local_input_shape()[0], s.count);
            EXPECT_EQ(plan.local_plan() != nullptr, s.count > 0);
            const Tensor x = uniform_rows(c.pipeline.input_shape(), dtype, 7, s.begin, s.end());
            const Tensor out = plan.run(x.view());
            EXPECT_EQ(out.defined(), world_rank() == root);
            if (world_rank() == root) {
              const Tensor one = Plan(c.pipeline, opt.plan).run(uniform(c.pipeline.input_shape(), dtype, 7).view());
              EXPECT_TRUE(same_bits(out.view(), one.view()))
                  << c.name << " " << to_string(dtype) << " N=" << n << " strategy " << to_string(strategy) << " root "
                  << root << " on " << size << " ranks";
            }
          }
        }
      }
    }
  }
}

TEST(Sharded, DistributedOutputKeepsEachRanksRows) {
  for (int64_t n : {2, 7}) {
    for (const Case& c : cases(n, DType::f32)) {
      kmpi::ShardOptions opt;
      opt.output = kmpi::Output::distributed;
      const kmpi::ShardedPlan plan(c.pipeline, MPI_COMM_WORLD, opt);
      const kmpi::BatchSlice s = plan.slice();
      const Tensor x = uniform_rows(c.pipeline.input_shape(), DType::f32, 3, s.begin, s.end());
      Tensor mine = Tensor::empty(plan.local_output_shape(), DType::f32);
      plan.run(x.view(), mine.view());
      const Tensor one = Plan(c.pipeline).run(uniform(c.pipeline.input_shape(), DType::f32, 3).view());
      EXPECT_TRUE(same_bits(mine.view(), rows(one, s.begin, s.end()))) << c.name << " N=" << n << " rank " << world_rank();
      // The tensor-returning run gives the same rows.
      EXPECT_TRUE(same_bits(plan.run(x.view()).view(), mine.view()));
    }
  }
}

// The seed specs, each rank making its rows of the input from the spec.
TEST(Sharded, SmallSpecsEqualOneProcess) {
  for (const char* name : {"convt_gap_bias_lse", "convt_mul_gap", "convt_relu_gap_softmax"}) {
    const Spec spec = load_spec(std::string(KFUSE_SPECS_DIR) + "/small/" + name + ".json");
    const kmpi::ShardedPlan plan(spec.pipeline, MPI_COMM_WORLD);
    const kmpi::BatchSlice s = plan.slice();
    const Tensor out = plan.run(make_input_slice(spec, s.begin, s.end()).view());
    if (world_rank() == 0) {
      EXPECT_TRUE(same_bits(out.view(), Plan(spec.pipeline).run(make_input(spec).view()).view())) << name;
    }
  }
}

// A spec whose input is an .npy: every rank reads its rows at their offset.
TEST(Sharded, NpyInputReadAtEachRanksOffset) {
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("kfuse_mpi_test_" + std::to_string(pid));
  if (world_rank() == 0) {
    std::filesystem::create_directories(dir);
    write_npy((dir / "x.npy").string(), uniform({7, 2, 6, 5}, DType::f32, 31));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string text = R"({"input": {"npy": "x.npy"}, "ops": [
      {"op": "conv_transpose2d", "weight": {"shape": [2, 3, 2, 2], "init": {"kind": "conv_default", "seed": 1}}, "stride": 2},
      {"op": "sigmoid"}, {"op": "max", "axes": [2, 3]}]})";
  for (std::optional<DType> over : {std::optional<DType>(), std::optional<DType>(DType::f64)}) {
    const Spec spec = parse_spec(text, dir.string(), over);
    const kmpi::ShardedPlan plan(spec.pipeline, MPI_COMM_WORLD);
    const kmpi::BatchSlice s = plan.slice();
    const Tensor out = plan.run(make_input_slice(spec, s.begin, s.end()).view());
    if (world_rank() == 0) {
      EXPECT_TRUE(same_bits(out.view(), Plan(spec.pipeline).run(make_input(spec).view()).view()));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::filesystem::remove_all(dir);
}

TEST(Errors, ShardingAPipelineThatMixesSamplesFailsOnEveryRank) {
  Pipeline p({4, 3}, DType::f32);
  p.relu().sum({0});
  try {
    kmpi::ShardedPlan plan(p, MPI_COMM_WORLD);
    ADD_FAILURE() << "no error";
  } catch (const kmpi::CollectiveError& e) {
    EXPECT_EQ(e.category(), ErrorCategory::unsupported);
    EXPECT_NE(std::string(e.what()).find("reduces over axis 0"), std::string::npos) << e.what();
    EXPECT_EQ(e.failed_rank(), 0);
  }
  kmpi::ShardOptions opt;
  opt.root = world_size();  // not a rank
  EXPECT_THROW(kmpi::ShardedPlan(cases(3, DType::f32)[0].pipeline, MPI_COMM_WORLD, opt), kmpi::CollectiveError);
}

// A bad input on the last rank only: every rank throws its error (none is
// left waiting in the gather), and the plan runs fine afterwards.
TEST(Errors, OneRanksBadInputFailsEveryRank) {
  const int size = world_size(), last = size - 1;
  const Case c = cases(2 * size + 1, DType::f32)[1];
  const kmpi::ShardedPlan plan(c.pipeline, MPI_COMM_WORLD);
  const kmpi::BatchSlice s = plan.slice();
  const Tensor good = uniform_rows(c.pipeline.input_shape(), DType::f32, 2, s.begin, s.end());
  Shape bad_shape = plan.local_input_shape();
  bad_shape[0] += 1;
  const Tensor bad = Tensor::empty(bad_shape, DType::f32);  // never read: the shape check fails first
  try {
    plan.run(world_rank() == last ? bad.view() : good.view());
    ADD_FAILURE() << "no error";
  } catch (const kmpi::CollectiveError& e) {
    EXPECT_EQ(e.failed_rank(), last);
    EXPECT_EQ(e.category(), ErrorCategory::shape_mismatch);
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(last) + "'s input"), std::string::npos) << e.what();
  }
  const Tensor out = plan.run(good.view());
  if (world_rank() == 0) {
    EXPECT_TRUE(same_bits(out.view(), Plan(c.pipeline).run(uniform(c.pipeline.input_shape(), DType::f32, 2).view()).view()));
  }
  // The root's output of the wrong shape: every rank learns it.
  if (world_rank() == 0) {
    Tensor wrong = Tensor::empty({1}, DType::f32);
    EXPECT_THROW(plan.run(good.view(), wrong.view()), kmpi::CollectiveError);
  } else {
    EXPECT_THROW(plan.run(good.view(), TensorView()), kmpi::CollectiveError);
  }
}

TEST(Errors, AgreeThrowsTheLowestFailingRanksError) {
  const int rank = world_rank(), size = world_size();
  kmpi::agree(MPI_COMM_WORLD, [] {});  // nobody fails: nothing thrown
  if (size < 2) return;
  try {
    kmpi::agree(MPI_COMM_WORLD, [&] {
      if (rank >= 1) fail(ErrorCategory::io, "test", "rank ", rank, " failed");
    });
    ADD_FAILURE() << "no error";
  } catch (const kmpi::CollectiveError& e) {
    EXPECT_EQ(e.failed_rank(), 1);
    EXPECT_EQ(e.category(), ErrorCategory::io);
    EXPECT_STREQ(e.what(), "test: rank 1 failed");
  }
}

#ifdef KFUSE_TEST_NO_CUDA
TEST(Errors, CudaMemoryWithoutCudaFailsOnEveryRank) {
  kmpi::ShardOptions opt;
  opt.plan.memory = Memory::cuda;
  try {
    kmpi::ShardedPlan plan(cases(3, DType::f32)[0].pipeline, MPI_COMM_WORLD, opt);
    ADD_FAILURE() << "no error";
  } catch (const kmpi::CollectiveError& e) {
    EXPECT_EQ(e.category(), ErrorCategory::unsupported);
    EXPECT_NE(std::string(e.what()).find("select_device"), std::string::npos) << e.what();
  }
}
#endif

TEST(CudaAware, TheEnvironmentOverrides) {
  ::setenv("KFUSE_MPI_CUDA_AWARE", "1", 1);
  EXPECT_TRUE(kmpi::cuda_aware());
  ::setenv("KFUSE_MPI_CUDA_AWARE", "0", 1);
  EXPECT_FALSE(kmpi::cuda_aware());
  ::unsetenv("KFUSE_MPI_CUDA_AWARE");
  std::printf("this MPI library is %sCUDA-aware\n", kmpi::cuda_aware() ? "" : "not ");
}

// The tuning hook: `produce` runs on node-local rank 0 only (once per node),
// and every rank gets its string, whatever its size.
TEST(Tuning, BroadcastNodeConfigProducesOncePerNode) {
  const int rank = world_rank();
  const int local = kmpi::node_local_rank(MPI_COMM_WORLD);
  int nodes = local == 0 ? 1 : 0, total_nodes = 0;
  MPI_Allreduce(&nodes, &total_nodes, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  for (std::size_t bytes : {std::size_t(0), std::size_t(100), std::size_t(3) << 20}) {
    int calls = 0;
    const std::string got = kmpi::broadcast_node_config(MPI_COMM_WORLD, [&] {
      ++calls;
      std::string blob = "{\"tuned_by\": " + std::to_string(rank) + "}";
      blob.resize(std::max(bytes, blob.size()), ' ');
      return bytes == 0 ? std::string() : blob;
    });
    int all_calls = 0;
    MPI_Allreduce(&calls, &all_calls, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    EXPECT_EQ(all_calls, total_nodes);
    EXPECT_EQ(calls, local == 0 ? 1 : 0);
    // Every rank holds rank 0's string (one node here).
    std::string zero = got;
    uint64_t n = zero.size();
    MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    zero.resize(n);
    MPI_Bcast(zero.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
    if (total_nodes == 1) {
      EXPECT_EQ(got, zero);
    }
    if (bytes == 0) {
      EXPECT_TRUE(got.empty());
    } else {
      EXPECT_GE(got.size(), bytes);
    }
  }
  // One root for the whole communicator, and a producer that throws.
  const int root = world_size() - 1;
  EXPECT_EQ(kmpi::broadcast_config(MPI_COMM_WORLD, [&] { return "from " + std::to_string(rank); }, root),
            "from " + std::to_string(root));
  try {
    kmpi::broadcast_node_config(MPI_COMM_WORLD, []() -> std::string { fail(ErrorCategory::io, "tuner", "cache unreadable"); });
    ADD_FAILURE() << "no error";
  } catch (const kmpi::CollectiveError& e) {
    EXPECT_STREQ(e.what(), "tuner: cache unreadable");
  }
}
