// The `kfuse` command-line tool, run as a separate process: the small specs
// with --check under every strategy that applies, --input/--output, and bad
// arguments (exit code 2 and a "kfuse: error:" message).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "kfuse/npy.hpp"
#include "kfuse/spec.hpp"

#ifndef KFUSE_CLI_PATH
#error "KFUSE_CLI_PATH must name the kfuse executable"
#endif
#ifndef KFUSE_SPECS_DIR
#define KFUSE_SPECS_DIR "specs"
#endif

namespace kfuse_test {
namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string output;  // stdout and stderr
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Result kfuse_cli(const std::string& args) {
  const std::string cmd = quote(KFUSE_CLI_PATH) + " " + args + " 2>&1";
  Result r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string spec(const std::string& name) { return quote(std::string(KFUSE_SPECS_DIR) + "/" + name); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kfuse_test_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(Cli, Version) {
  const Result r = kfuse_cli("--version");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "kfuse ")) << r.output;
  EXPECT_TRUE(contains(r.output, ".")) << r.output;
}

TEST_F(Cli, Help) {
  const Result r = kfuse_cli("run --help");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--strategy")) << r.output;
}

TEST_F(Cli, SmallSpecsPassTheirCheck) {
  for (const char* name : {"small/convt_gap_bias_lse.json", "small/convt_mul_gap.json", "small/convt_relu_gap_softmax.json"}) {
    SCOPED_TRACE(name);
    const Result r = kfuse_cli("run " + spec(name) + " --check --repeat 3 --warmup 1");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "check: ")) << r.output;
    EXPECT_TRUE(contains(r.output, "PASS")) << r.output;
    EXPECT_TRUE(contains(r.output, "median")) << r.output;
    EXPECT_TRUE(contains(r.output, "GB/s")) << r.output;
    EXPECT_TRUE(contains(r.output, "output [")) << r.output;
  }
}

TEST_F(Cli, EveryApplicableStrategyPassesItsCheck) {
  for (const char* s : {"fold", "fused", "reference"}) {
    for (const char* name : {"small/convt_gap_bias_lse.json", "small/convt_mul_gap.json"}) {
      SCOPED_TRACE(std::string(s) + " " + name);
      const Result r = kfuse_cli("run " + spec(name) + " --check --repeat 1 --warmup 0 --strategy " + s);
      EXPECT_EQ(r.code, 0) << r.output;
      EXPECT_TRUE(contains(r.output, std::string("strategy ") + s)) << r.output;
    }
  }
  const Result r = kfuse_cli("run " + spec("small/convt_relu_gap_softmax.json") + " --check --strategy fused --repeat 1");
  EXPECT_EQ(r.code, 0) << r.output;
  // A float64 run checks against float64 with a tight tolerance.
  const Result d = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --check --dtype float64 --repeat 1");
  EXPECT_EQ(d.code, 0) << d.output;
  EXPECT_TRUE(contains(d.output, "float64")) << d.output;
}

TEST_F(Cli, OutputAndInputFiles) {
  // The spec's own input, written by hand, must give the same output.
  const kfuse::Spec s = kfuse::load_spec(std::string(KFUSE_SPECS_DIR) + "/small/convt_mul_gap.json");
  kfuse::write_npy(path("x.npy"), kfuse::make_input(s));
  const Result a = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --repeat 1 --output " + quote(path("a.npy")));
  ASSERT_EQ(a.code, 0) << a.output;
  const Result b = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --repeat 1 --input " + quote(path("x.npy")) +
                             " --output " + quote(path("b.npy")) + " --check");
  ASSERT_EQ(b.code, 0) << b.output;
  const kfuse::Tensor ta = kfuse::read_npy(path("a.npy")), tb = kfuse::read_npy(path("b.npy"));
  ASSERT_EQ(ta.shape(), (kfuse::Shape{2, 16, 1, 1}));
  ASSERT_EQ(tb.shape(), ta.shape());
  // Equal up to the order of float additions: on a GPU the fold's border
  // blocks are summed with shared-memory atomics, whose order varies by run.
  for (int64_t i = 0; i < ta.numel(); ++i)
    EXPECT_NEAR(ta.data<float>()[i], tb.data<float>()[i], 1e-6 * std::fabs(tb.data<float>()[i]));
}

TEST_F(Cli, CheckFailureExitsWithOne) {
  // Nothing computed in float32 matches float64 to a relative error of 0.
  const Result r = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --check --tolerance 0 --repeat 1");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "FAIL")) << r.output;
}

// kfuse tune: with Kokkos on a GPU (or the CUDA backend) a table of measured
// candidates and a cache written at --cache; on the host, where a team is one
// thread, it says that nothing is tuned and writes nothing.
TEST_F(Cli, TuneMeasuresOrSaysWhyNot) {
  const Result r = kfuse_cli("tune " + spec("small/convt_gap_bias_lse.json") + " --cache " + quote(path("tuning.json")));
  ASSERT_EQ(r.code, 0) << r.output;
  if (contains(r.output, "no kernel of this plan takes its launch configuration from the tuner")) {
    EXPECT_FALSE(fs::exists(path("tuning.json"))) << r.output;
  } else {
    EXPECT_TRUE(contains(r.output, "candidate")) << r.output;
    EXPECT_TRUE(contains(r.output, "4x2")) << r.output;  // the baseline is always measured
    EXPECT_TRUE(fs::exists(path("tuning.json"))) << r.output;
  }
}

void expect_usage_error(const Result& r, const std::string& fragment) {
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "kfuse: error: ")) << r.output;
  EXPECT_TRUE(contains(r.output, fragment)) << "'" << fragment << "' not in: " << r.output;
}

TEST_F(Cli, BadArgumentsExitWithTwo) {
  expect_usage_error(kfuse_cli(""), "subcommand");
  expect_usage_error(kfuse_cli("frobnicate"), "subcommand");
  expect_usage_error(kfuse_cli("run"), "spec");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --strategy bogus"), "bogus");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --backend tpu"), "tpu");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --repeat many"), "many");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --repeat -3"), "-3");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --no-such-flag"), "--no-such-flag");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --tuning sometimes"), "sometimes");
  expect_usage_error(kfuse_cli("tune"), "spec");
}

TEST_F(Cli, BadSpecsAndFilesExitWithTwo) {
  expect_usage_error(kfuse_cli("run " + quote(path("absent.json"))), "absent.json");
  std::ofstream(path("bad.json")) << R"({"input": {"shape": [2, 3], "init": {"kind": "uniform", "seed": 0}},
                                         "ops": [{"op": "sum", "axes": [2]}]})";
  expect_usage_error(kfuse_cli("run " + quote(path("bad.json"))), "spec: /ops/0: ");
  std::ofstream(path("junk.json")) << "{not json";
  expect_usage_error(kfuse_cli("run " + quote(path("junk.json"))), "invalid JSON");
  // An input of the wrong shape, an input that is not a .npy file.
  kfuse::Tensor t = kfuse::Tensor::empty({3}, kfuse::DType::f32, kfuse::Memory::host);
  kfuse::write_npy(path("wrong.npy"), t);
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --input " + quote(path("wrong.npy"))),
                     "wrong.npy");
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --input " + quote(path("bad.json"))),
                     "not a .npy file");
  // A strategy that does not apply: the fold needs a spatial mean after affine ops.
  expect_usage_error(kfuse_cli("run " + spec("small/convt_relu_gap_softmax.json") + " --strategy fold"), "fold");
  // An output path that cannot be written.
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --repeat 1 --output " +
                               quote(path("no/such/dir/out.npy"))),
                     "out.npy");
}

}  // namespace
}  // namespace kfuse_test
