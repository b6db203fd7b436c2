// The `kfuse` command-line tool, run as a separate process: the small specs
// with --check under every strategy that applies, --input/--output, and bad
// arguments (exit code 2 and a "kfuse: error:" message).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

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

// `prefix` goes before the command in the shell: environment variables, or
// shell commands ending in "exec ".
Result kfuse_cli(const std::string& args, const std::string& prefix = "") {
  const std::string cmd = prefix + quote(KFUSE_CLI_PATH) + " " + args + " 2>&1";
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
  // Y written channels-last, read so by the epilogue.
  const Result cl = kfuse_cli("run " + spec("small/convt_relu_gap_softmax.json") +
                              " --check --strategy fused --y-layout nhwc --repeat 1");
  EXPECT_EQ(cl.code, 0) << cl.output;
  EXPECT_TRUE(contains(cl.output, "channels-last (NHWC)")) << cl.output;
  // A float64 run checks against float64 with a tight tolerance.
  const Result d = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --check --dtype float64 --repeat 1");
  EXPECT_EQ(d.code, 0) << d.output;
  EXPECT_TRUE(contains(d.output, "float64")) << d.output;
  // TF32 is held to its own default tolerance, strict float32 to 1e-5.
  const Result t = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --check --precision tf32 --repeat 1");
  EXPECT_EQ(t.code, 0) << t.output;
  EXPECT_TRUE(contains(t.output, "tolerance 1.0e-03: PASS")) << t.output;
  const Result f = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --check --repeat 1");
  EXPECT_TRUE(contains(f.output, "tolerance 1.0e-05: PASS")) << f.output;
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
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --y-layout nchwc"), "nchwc");
  expect_usage_error(kfuse_cli("tune"), "spec");
}

TEST_F(Cli, BadSpecsAndFilesExitWithTwo) {
  expect_usage_error(kfuse_cli("run " + quote(path("absent.json"))), "absent.json");
  std::ofstream(path("bad.json")) << R"({"input": {"shape": [2, 3], "init": {"kind": "uniform", "seed": 0}},
                                         "ops": [{"op": "sum", "axes": [2]}]})";
  expect_usage_error(kfuse_cli("run " + quote(path("bad.json"))), "spec: /ops/0: ");
  std::ofstream(path("junk.json")) << "{not json";
  expect_usage_error(kfuse_cli("run " + quote(path("junk.json"))), path("junk.json") + ": invalid JSON");
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

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Whether a GPU is visible, and whether this kfuse has the CUDA backend to run
// on it (`kfuse --version`).
bool gpu_visible() { return contains(kfuse_cli("--version").output, "device:"); }
bool cuda_gpu() { return gpu_visible() && contains(kfuse_cli("--version").output, ", cuda"); }

// A spec with a deterministic input of `shape` and `ops` (a JSON array body).
std::string spec_text(const std::string& shape, const std::string& ops) {
  return R"({"input": {"shape": )" + shape + R"(, "init": {"kind": "uniform", "seed": 0}}, "ops": [)" + ops + "]}";
}
const std::string kConvGap =
    R"({"op": "conv_transpose2d", "weight": {"shape": [4, 6, 3, 3], "init": {"kind": "conv_default", "seed": 1}}},
       {"op": "mean", "axes": [2, 3]}, {"op": "mul", "scalar": 2.0})";

TEST_F(Cli, DeepJsonIsASpecError) {
  std::ofstream(path("deep.json")) << "{\"name\": " << std::string(80000, '[') << std::string(80000, ']') << "}";
  const Result r = kfuse_cli("run " + quote(path("deep.json")));
  expect_usage_error(r, "nested more than 32 levels deep");
  EXPECT_LT(r.output.size(), 2000u) << "the message quotes the whole value";
}

// float16/bfloat16 run as the fold on the CUDA backend; elsewhere they are
// refused before anything runs, naming the backend that runs them.
TEST_F(Cli, HalfPrecisionRunsOnTheCudaBackendOrIsRefusedBeforeRunning) {
  for (const char* dtype : {"bfloat16", "float16"}) {
    SCOPED_TRACE(dtype);
    const Result r = kfuse_cli("run " + spec("small/convt_gap_bias_lse.json") + " --repeat 1 --dtype " + dtype);
    if (cuda_gpu()) {
      EXPECT_EQ(r.code, 0) << r.output;
      continue;
    }
    expect_usage_error(r, std::string("dtype ") + dtype);
    EXPECT_TRUE(contains(r.output, "run on the CUDA backend")) << r.output;
    EXPECT_FALSE(contains(r.output, "time:")) << r.output;
  }
}

TEST_F(Cli, OutputIsCheckedFirstAndNeverAnInput) {
  // A missing directory: reported before the plan, let alone the runs.
  const Result missing = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --output " + quote(path("no/out.npy")));
  expect_usage_error(missing, "the directory " + path("no") + " does not exist");
  EXPECT_FALSE(contains(missing.output, "plan:")) << missing.output;
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --output " + quote(dir_.string())),
                     "is a directory");
  // The input and the spec itself: refused, and left as they were.
  const kfuse::Spec s = kfuse::load_spec(std::string(KFUSE_SPECS_DIR) + "/small/convt_mul_gap.json");
  kfuse::write_npy(path("x.npy"), kfuse::make_input(s));
  const std::string x_bytes = read_file(path("x.npy"));
  expect_usage_error(kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --input " + quote(path("x.npy")) +
                               " --output " + quote(dir_.string() + "/./x.npy")),
                     "an input of this run: kfuse never writes over its inputs");
  EXPECT_EQ(read_file(path("x.npy")), x_bytes);
  fs::copy_file(std::string(KFUSE_SPECS_DIR) + "/small/convt_mul_gap.json", path("s.json"));
  const std::string s_text = read_file(path("s.json"));
  expect_usage_error(kfuse_cli("run " + quote(path("s.json")) + " --output " + quote(path("s.json"))),
                     "kfuse never writes over its inputs");
  EXPECT_EQ(read_file(path("s.json")), s_text);
}

// A write that fails part-way (past a file-size limit, as on a full disk)
// leaves the previous output as it was and no partial file.
TEST_F(Cli, FailedOutputWriteKeepsThePreviousFile) {
  std::ofstream(path("relu.json")) << spec_text("[1, 1, 64, 64]", R"({"op": "relu"})");  // a 16 KB output
  kfuse::Tensor previous = kfuse::Tensor::empty({2}, kfuse::DType::f32, kfuse::Memory::host);
  previous.data<float>()[0] = 1.0f;
  previous.data<float>()[1] = 2.0f;
  kfuse::write_npy(path("out.npy"), previous);
  const std::string before = read_file(path("out.npy"));
  const Result r = kfuse_cli("run " + quote(path("relu.json")) + " --repeat 1 --output " + quote(path("out.npy")),
                             "trap '' XFSZ; ulimit -f 8; exec ");
  expect_usage_error(r, "write error");
  EXPECT_EQ(read_file(path("out.npy")), before);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files.size(), 2u) << "a temporary file was left beside out.npy";
}

// The plan states its cost before anything runs; a long run is announced.
TEST_F(Cli, CostIsStatedBeforeRunning) {
  const Result r = kfuse_cli("run " + spec("convt_gap_bias_lse.json") + " --strategy reference --dry-run");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "cost: 3.12e+11 multiply-adds in the conv")) << r.output;
  EXPECT_TRUE(contains(r.output, "bytes at the floor; runs on ")) << r.output;
  EXPECT_FALSE(contains(r.output, "time:")) << r.output;  // --dry-run: nothing generated or run
  if (!gpu_visible()) {
    EXPECT_TRUE(contains(r.output, " thread")) << r.output;
    EXPECT_TRUE(contains(r.output, "estimate about ")) << r.output;
    EXPECT_TRUE(contains(r.output, "kfuse: warning: expected to take about ")) << r.output;
  }
  // The fold computes none of the conv's multiply-adds: no estimate, no warning.
  const Result f = kfuse_cli("run " + spec("convt_gap_bias_lse.json") + " --dry-run");
  EXPECT_EQ(f.code, 0) << f.output;
  EXPECT_TRUE(contains(f.output, "(not computed: the fold)")) << f.output;
  EXPECT_FALSE(contains(f.output, "warning")) << f.output;
}

TEST_F(Cli, ProgressIsReportedDuringLongRunsAndTheCheck) {
  if (gpu_visible()) GTEST_SKIP() << "on a GPU the runs are too short to report progress";
  std::ofstream(path("conv.json")) << spec_text(
      "[2, 16, 96, 96]",
      R"({"op": "conv_transpose2d", "weight": {"shape": [16, 16, 3, 3], "init": {"kind": "conv_default", "seed": 1}}},
         {"op": "relu"}, {"op": "sum", "axes": [2, 3]})");
  const Result r = kfuse_cli("run " + quote(path("conv.json")) +
                             " --strategy reference --repeat 1 --warmup 0 --check --progress 0.01");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("kfuse: run 1 of 1, about [0-9.]+ s each: [0-9.]+ s elapsed")))
      << r.output;
  EXPECT_TRUE(contains(r.output, "kfuse: checking against the float64 reference: ")) << r.output;
  const Result quiet = kfuse_cli("run " + quote(path("conv.json")) + " --strategy reference --repeat 1 --progress 0");
  EXPECT_FALSE(contains(quiet.output, "elapsed")) << quiet.output;
}

// --check runs the reference strategy in float64 whatever the run's strategy,
// on spread samples of the batch when asked (or when the batch is slow).
TEST_F(Cli, CheckIsTheReferenceInFloat64OnSamplesItNames) {
  std::ofstream(path("gap.json")) << spec_text("[5, 4, 5, 5]", kConvGap);
  const Result all = kfuse_cli("run " + quote(path("gap.json")) + " --strategy fold --repeat 1 --check");
  EXPECT_EQ(all.code, 0) << all.output;
  EXPECT_TRUE(contains(all.output, "check: reference strategy in float64 on all 5 samples")) << all.output;
  const Result some =
      kfuse_cli("run " + quote(path("gap.json")) + " --strategy fold --repeat 1 --check --check-samples 3");
  EXPECT_EQ(some.code, 0) << some.output;
  EXPECT_TRUE(contains(some.output, "check: reference strategy in float64 on samples 0, 2, 4 (3 of 5)")) << some.output;
  EXPECT_TRUE(contains(some.output, "PASS")) << some.output;
  // A softmax over the batch mixes samples: the whole batch is checked.
  std::ofstream(path("mix.json")) << spec_text("[5, 4, 5, 5]", kConvGap + R"(, {"op": "softmax", "axis": 0})");
  const Result mix = kfuse_cli("run " + quote(path("mix.json")) + " --repeat 1 --check --check-samples 2");
  EXPECT_EQ(mix.code, 0) << mix.output;
  EXPECT_TRUE(contains(mix.output, "kfuse: note: the check runs the whole batch")) << mix.output;
  EXPECT_TRUE(contains(mix.output, "on all 5 samples")) << mix.output;
}

TEST_F(Cli, BackendCudaWithoutAGpuGivesAHint) {
  if (cuda_gpu()) GTEST_SKIP() << "a GPU runs --backend cuda";
  const Result r = kfuse_cli("run " + spec("small/convt_mul_gap.json") + " --backend cuda");
  expect_usage_error(r, "--backend cuda: ");
  EXPECT_TRUE(contains(r.output, "--backend kokkos or auto runs the portable Kokkos kernels instead")) << r.output;
}

TEST_F(Cli, BadValuesAreRejected) {
  const std::string run = "run " + spec("small/convt_mul_gap.json") + " --repeat 1";
  expect_usage_error(kfuse_cli(run + " --check --tolerance nan"), "must be a number in [0, 1], got nan");
  expect_usage_error(kfuse_cli(run + " --check --tolerance 2"), "must be a number in [0, 1], got 2");
  expect_usage_error(kfuse_cli(run + " --output ''"), "an empty path");
  expect_usage_error(kfuse_cli(run, "KFUSE_TUNING=bogus "), "KFUSE_TUNING=bogus: ");
  expect_usage_error(kfuse_cli(run + " --input " + quote(dir_.string())), "is a directory, not a .npy file");
}

// The README's set-up: exactly two commands, the first installing what the
// build needs on a fresh Debian machine (scripts/setup), the second building
// and running the tests; .ci/run runs them as written there.
TEST(Readme, SetUpIsTwoCommandsThatCiRuns) {
  const std::string root = std::string(KFUSE_SPECS_DIR) + "/..";
  std::ifstream readme(root + "/README.md");
  std::vector<std::string> commands;
  bool in_setup = false;
  for (std::string line; std::getline(readme, line);) {
    if (line.rfind("## ", 0) == 0) in_setup = line == "## Set up";
    else if (in_setup && line.rfind("    ", 0) == 0 && line.size() > 4 && line[4] != ' ') commands.push_back(line.substr(4));
  }
  ASSERT_EQ(commands.size(), 2u);
  EXPECT_EQ(commands[0].rfind("scripts/setup && ", 0), 0u) << commands[0];
  EXPECT_TRUE(contains(commands[0], "./build/kfuse run ")) << commands[0];
  EXPECT_TRUE(contains(commands[1], "ctest --test-dir build")) << commands[1];
  const std::string setup = read_file(root + "/scripts/setup");
  EXPECT_TRUE(contains(setup, "apt-get update")) << setup;
  EXPECT_TRUE(contains(setup, "apt-get install")) << setup;
  EXPECT_TRUE(fs::status(root + "/scripts/setup").permissions() != fs::perms::none &&
              (fs::status(root + "/scripts/setup").permissions() & fs::perms::owner_exec) != fs::perms::none);
  EXPECT_TRUE(contains(read_file(root + "/.ci/run"), "README.md")) << "CI does not run the README's commands";
}

}  // namespace
}  // namespace kfuse_test
