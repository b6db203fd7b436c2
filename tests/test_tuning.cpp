// The tuner (src/tuning/tuner.hpp, include/kfuse/tuning.hpp) without a GPU:
// candidates and rules through Requests of synthetic attributes, the cache file
// (round trip, corruption, another device, concurrent writers), the 2% rule
// inside tune() with a fake Measure, the modes and the forces. The rules
// themselves (choose_launch, autotune_candidates) are in test_launch.cpp.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "../src/tuning/tuner.hpp"
#include "kfuse/error.hpp"
#include "reference.hpp"

using namespace kfuse;
using namespace kfuse::tuning;

namespace {

namespace fs = std::filesystem;
using kfuse_test::EnvVar;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A memory-bound kernel of 40 registers on an H100-like device, no starting
// configuration (arch 0): the rule gives the baseline, candidates 4x2, 8x2, 4x3.
Request request(const std::string& kernel = "test::kernel", const std::string& shape = "n=2^10") {
  Request r;
  r.kernel = kernel;
  r.shape_class = shape;
  r.device = "Test GPU";
  r.arch = 0;
  r.limits = *arch_limits(90);
  r.resources.num_regs = 40;
  r.bound = Bound::memory;
  return r;
}

// A fake Measure: a time per configuration (1 ms by default) and a call count.
struct Timer {
  std::map<std::pair<int, int>, double> ms;
  int calls = 0;
  Measure measure() {
    return [this](const LaunchConfig& c) {
      ++calls;
      const auto it = ms.find({c.warps, c.depth});
      return it == ms.end() ? 1.0 : it->second;
    };
  }
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

std::optional<TuningDecision> decision(const std::string& kernel, const std::string& shape = "n=2^10") {
  for (const TuningDecision& d : tuning_decisions())
    if (d.kernel == kernel && d.shape_class == shape) return d;
  return std::nullopt;
}

// Every test starts from the environment's settings with a cache file of its
// own, and leaves them so.
class Tuning : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("kfuse_tuning_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    tuning::reset();
    set_tuning_cache_path(cache().string());
  }
  void TearDown() override {
    tuning::reset();
    fs::remove_all(dir_);
  }
  fs::path cache() const { return dir_ / "tuning.json"; }
  fs::path dir_;
};

// ---- Candidates and the rule, through Requests ---------------------------------

TEST_F(Tuning, CandidatesAreTheBaselineFirstAndAtMostThree) {
  const auto c = candidates(request());
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0], (LaunchConfig{4, 2, ""}));
  EXPECT_EQ(c[1], (LaunchConfig{8, 2, ""}));
  EXPECT_EQ(c[2], (LaunchConfig{4, 3, ""}));
}

TEST_F(Tuning, CandidatesStayInTheKernelsSpace) {
  Request r = request();
  r.depths = {2};  // no pipelining knob (the CUDA fold's plane sums)
  auto c = candidates(r);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1], (LaunchConfig{8, 2, ""}));
  r.resources.max_threads_per_block = 128;  // __launch_bounds__(128): nothing else to compare
  EXPECT_EQ(candidates(r).size(), 1u);
}

TEST_F(Tuning, SpillsOrHighPressureStillCompareTheNextWarps) {
  // The rule keeps these at the baseline and autotune_candidates() adds
  // nothing; the tuner adds the next larger warps so a measurement decides.
  for (auto [regs, local] : {std::pair<int, int64_t>{40, 16}, {168, 0}}) {
    Request r = request();
    r.resources.num_regs = regs;
    r.resources.local_bytes = local;
    const auto c = candidates(r);
    ASSERT_EQ(c.size(), 2u) << regs << " registers, " << local << " bytes of local memory";
    EXPECT_EQ(c[0], (LaunchConfig{4, 2, ""}));
    EXPECT_EQ(c[1], (LaunchConfig{8, 2, ""}));
  }
  Request r = request();
  r.resources.local_bytes = 8;
  r.warps = {4, 16, 32};  // the next larger is 16
  EXPECT_EQ(candidates(r).at(1).warps, 16);
}

TEST_F(Tuning, RuleThroughTheTuner) {
  set_tuning_mode(TuningMode::off);
  Request low = request("test::low");
  low.bound = Bound::compute;  // < 96 registers, no spill, compute-bound: 8 warps, depth 3
  EXPECT_EQ(tune(low, {}), (LaunchConfig{8, 3, ""}));
  EXPECT_EQ(decision("test::low")->source, "rule");
  Request spill = request("test::spill");
  spill.bound = Bound::compute;
  spill.resources.local_bytes = 32;
  EXPECT_EQ(tune(spill, {}), (LaunchConfig{4, 2, ""}));
  Request high = request("test::high");
  high.bound = Bound::compute;
  high.resources.num_regs = 200;
  EXPECT_EQ(tune(high, {}), (LaunchConfig{4, 2, ""}));
  Request three = request("test::three");
  three.bound = Bound::compute;
  three.distinct_inputs = 3;
  EXPECT_EQ(tune(three, {}), (LaunchConfig{4, 2, ""}));
  // The rule's 8x3 on a kernel without a depth knob: 8x2.
  Request nodepth = request("test::nodepth");
  nodepth.bound = Bound::compute;
  nodepth.depths = {2};
  const LaunchConfig c = tune(nodepth, {});
  EXPECT_EQ(c, (LaunchConfig{8, 2, ""}));
  EXPECT_TRUE(contains(c.why, "clamped to 8x2")) << c.why;
}

TEST_F(Tuning, ShapeClass) {
  EXPECT_EQ(shape_class({{"n", 1}}), "n=2^0");
  EXPECT_EQ(shape_class({{"n", 3}, {"hw", 4}, {"c", 5}}), "n=2^2,hw=2^2,c=2^3");
  EXPECT_EQ(shape_class({{"n", 0}, {"m", -7}}), "n=0,m=0");
  EXPECT_EQ(shape_class({{"n", (1LL << 62) + 1}}), "n=2^63");
  EXPECT_EQ(shape_class({{"n", 0x7fffffffffffffffLL}}), "n=2^63");
  EXPECT_EQ(shape_class({}), "");
}

TEST_F(Tuning, ArchitectureTables) {
  const auto ada = arch_limits(89);
  ASSERT_TRUE(ada);
  EXPECT_EQ(ada->sm_count, 128);
  EXPECT_EQ(ada->max_threads_per_sm, 1536);
  EXPECT_EQ(ada->max_threads_per_sm / ada->warp_size, 48);
  EXPECT_EQ(ada->max_blocks_per_sm, 24);
  EXPECT_EQ(ada->shared_per_sm, 100 * 1024);
  EXPECT_EQ(ada->shared_per_block_optin, 99 * 1024);
  EXPECT_EQ(ada->l2_bytes, 72LL << 20);
  const auto hopper = arch_limits(90);
  ASSERT_TRUE(hopper);
  EXPECT_EQ(hopper->sm_count, 132);
  EXPECT_EQ(hopper->max_threads_per_sm, 2048);
  EXPECT_FALSE(arch_limits(75));

  for (int arch : {89, 90}) {
    for (const char* k : {"cuda::fold_plane_sums", "kokkos::fold_plane_sums"}) EXPECT_EQ(arch_default(arch, k)->warps, 4);
    EXPECT_EQ(arch_default(arch, "kokkos::reduce_rows")->warps, 8);
  }
  EXPECT_TRUE(contains(arch_default(89, "kokkos::reduce_rows")->why, "sm_89"));
  EXPECT_FALSE(arch_default(90, "test::kernel"));
  EXPECT_FALSE(arch_default(80, "cuda::fold_plane_sums"));

  // Through the tuner: the starting configuration, clamped to the kernel.
  set_tuning_mode(TuningMode::off);
  Request r = request("kokkos::reduce_rows");
  r.arch = 89;
  EXPECT_EQ(tune(r, {}).warps, 8);
  EXPECT_EQ(decision("kokkos::reduce_rows")->source, "arch default");
  r.shape_class = "n=2^11";
  r.resources.max_threads_per_block = 128;
  EXPECT_EQ(tune(r, {}).warps, 4);
}

// ---- The cache file --------------------------------------------------------------

CacheTable two_entries() {
  CacheTable t;
  t[CacheKey{"Test GPU", "test::a", "n=2^10"}] = CacheEntry{LaunchConfig{8, 2, ""}, 0.5, 0.6, ""};
  t[CacheKey{"Other GPU", "test::b", "n=2^3,m=0"}] =
      CacheEntry{LaunchConfig{4, 3, ""}, 1.25, 1.3, "2026-11-23T10:00:00Z"};
  return t;
}

TEST_F(Tuning, CacheRoundTrip) {
  std::string warning = "stale";
  EXPECT_TRUE(read_cache(cache().string(), &warning).empty());  // absent: empty, no warning
  EXPECT_EQ(warning, "");

  const fs::path nested = dir_ / "a" / "b" / "tuning.json";  // the folder is created
  write_cache(nested.string(), two_entries());
  const CacheTable t = read_cache(nested.string(), &warning);
  EXPECT_EQ(warning, "");
  ASSERT_EQ(t.size(), 2u);
  const CacheEntry& a = t.at(CacheKey{"Test GPU", "test::a", "n=2^10"});
  EXPECT_EQ(a.config, (LaunchConfig{8, 2, ""}));
  EXPECT_DOUBLE_EQ(a.ms, 0.5);
  EXPECT_DOUBLE_EQ(a.baseline_ms, 0.6);
  EXPECT_EQ(a.date.size(), 20u) << a.date;  // filled in: YYYY-MM-DDTHH:MM:SSZ
  EXPECT_EQ(t.at(CacheKey{"Other GPU", "test::b", "n=2^3,m=0"}).date, "2026-11-23T10:00:00Z");
  const std::string text = read_file(nested);
  EXPECT_TRUE(contains(text, "\"format\": \"kfuse-tuning\"")) << text;
  EXPECT_TRUE(contains(text, "\"version\": 1")) << text;
  for (const auto& entry : fs::directory_iterator(nested.parent_path()))  // no temporary file left
    EXPECT_TRUE(entry.path().filename() == "tuning.json" || entry.path().filename() == "tuning.json.lock")
        << entry.path();

  // A write merges: the old entries stay, the same key is replaced.
  CacheTable more;
  more[CacheKey{"Test GPU", "test::a", "n=2^10"}] = CacheEntry{LaunchConfig{4, 2, ""}, 0.7, 0.7, ""};
  more[CacheKey{"Test GPU", "test::c", "n=2^1"}] = CacheEntry{LaunchConfig{8, 3, ""}, 0.1, 0.2, ""};
  write_cache(nested.string(), more);
  const CacheTable m = read_cache(nested.string(), &warning);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.at(CacheKey{"Test GPU", "test::a", "n=2^10"}).config.warps, 4);
}

TEST_F(Tuning, CorruptCachesAreIgnoredWithAWarningAndRepaired) {
  write_cache(cache().string(), two_entries());
  const std::string good = read_file(cache());
  const std::map<std::string, std::string> bad = {
      {"garbage", "\x01\x02 not json {"},
      {"empty", ""},
      {"truncated", good.substr(0, good.size() / 2)},
      {"wrong format", R"({"format": "something-else", "version": 1, "entries": []})"},
      {"no format", R"({"version": 1, "entries": []})"},
      {"wrong version", R"({"format": "kfuse-tuning", "version": 2, "entries": []})"},
      {"entries not an array", R"({"format": "kfuse-tuning", "version": 1, "entries": {}})"},
      {"warps a string",
       R"({"format": "kfuse-tuning", "version": 1, "entries": [{"device": "Test GPU", "kernel": "test::kernel",
           "shape_class": "n=2^10", "warps": "8", "depth": 2, "ms": 1, "baseline_ms": 1, "date": ""}]})"},
      {"missing ms",
       R"({"format": "kfuse-tuning", "version": 1, "entries": [{"device": "Test GPU", "kernel": "test::kernel",
           "shape_class": "n=2^10", "warps": 8, "depth": 2, "baseline_ms": 1}]})"},
      {"zero warps",
       R"({"format": "kfuse-tuning", "version": 1, "entries": [{"device": "Test GPU", "kernel": "test::kernel",
           "shape_class": "n=2^10", "warps": 0, "depth": 2, "ms": 1, "baseline_ms": 1}]})"},
  };
  for (const auto& [what, text] : bad) {
    SCOPED_TRACE(what);
    write_file(cache(), text);
    std::string warning;
    EXPECT_TRUE(read_cache(cache().string(), &warning).empty());
    EXPECT_FALSE(warning.empty());

    // The tuner prints it once, with the path, and does not trust the file.
    set_tuning_cache_path(cache().string());  // read again
    set_tuning_mode(TuningMode::cached);
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(tune(request(), {}), (LaunchConfig{4, 2, ""}));
    EXPECT_EQ(tune(request("test::other"), {}), (LaunchConfig{4, 2, ""}));
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(contains(err, "kfuse: warning: tuning cache " + cache().string() + ": ")) << err;
    EXPECT_TRUE(contains(err, "(ignored)")) << err;
    EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "printed more than once: " << err;
    EXPECT_EQ(decision("test::kernel")->source, "rule");

    // Autotune's write replaces it with a valid file.
    set_tuning_mode(TuningMode::autotune);
    Timer t;
    ::testing::internal::CaptureStderr();
    tune(request(), t.measure());
    ::testing::internal::GetCapturedStderr();
    const CacheTable repaired = read_cache(cache().string(), &warning);
    EXPECT_EQ(warning, "");
    EXPECT_EQ(repaired.size(), 1u);
    EXPECT_TRUE(repaired.count(CacheKey{"Test GPU", "test::kernel", "n=2^10"}));
  }
}

// A cache file nested deeply where the version goes is a corrupt cache, not a
// stack overflow (its message used to quote the value through dump()).
TEST_F(Tuning, DeeplyNestedCacheIsCorruptNotACrash) {
  write_file(cache(), R"({"format": "kfuse-tuning", "version": )" + std::string(100000, '[') +
                          std::string(100000, ']') + "}");
  std::string warning;
  EXPECT_TRUE(read_cache(cache().string(), &warning).empty());
  EXPECT_EQ(warning, "version of type array, this kfuse reads version 1");
}

TEST_F(Tuning, AnotherDevicesCacheIsNotUsed) {
  CacheTable t;
  t[CacheKey{"NVIDIA GeForce RTX 4090", "test::kernel", "n=2^10"}] = CacheEntry{LaunchConfig{8, 3, ""}, 0.5, 0.6, ""};
  write_cache(cache().string(), t);
  EXPECT_EQ(tune(request(), {}), (LaunchConfig{4, 2, ""}));  // cached mode: the rule, not 8x3
  EXPECT_EQ(decision("test::kernel")->source, "rule");
  // Measured here and written: the other device's entry stays.
  set_tuning_mode(TuningMode::autotune);
  Timer timer;
  tune(request(), timer.measure());
  EXPECT_GT(timer.calls, 0);
  const CacheTable after = read_cache(cache().string(), nullptr);
  EXPECT_EQ(after.size(), 2u);
  EXPECT_EQ(after.at(CacheKey{"NVIDIA GeForce RTX 4090", "test::kernel", "n=2^10"}).config.depth, 3);
}

TEST_F(Tuning, StaleEntriesOutsideTheKernelsSpaceArePassedOver) {
  CacheTable t;
  t[CacheKey{"Test GPU", "test::kernel", "n=2^10"}] = CacheEntry{LaunchConfig{16, 2, ""}, 0.5, 0.6, ""};
  write_cache(cache().string(), t);
  EXPECT_EQ(tune(request(), {}).warps, 4);
  EXPECT_EQ(decision("test::kernel")->source, "rule");
}

// Writers that each add their own entries many times, while a reader checks
// that the file always parses: at the end every entry is there (the lock file
// makes read-merge-rename exact).
constexpr int kWriters = 8, kWrites = 20;

CacheTable writer_entry(int writer, int i) {
  CacheTable t;
  t[CacheKey{"Test GPU", "test::w" + std::to_string(writer), "n=2^" + std::to_string(i)}] =
      CacheEntry{LaunchConfig{4 << (i % 2), 2, ""}, 0.001 * i, 0.002 * i, ""};
  return t;
}

void expect_every_entry(const fs::path& path, int writers) {
  std::string warning;
  const CacheTable t = read_cache(path.string(), &warning);
  EXPECT_EQ(warning, "");
  EXPECT_EQ(t.size(), std::size_t(writers * kWrites));
  for (int w = 0; w < writers; ++w)
    for (int i = 0; i < kWrites; ++i) EXPECT_TRUE(t.count(writer_entry(w, i).begin()->first)) << w << " " << i;
}

TEST_F(Tuning, ConcurrentWriterThreads) {
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, bad_reads{0};
  std::thread reader([&] {
    while (!done) {
      std::string warning;
      read_cache(cache().string(), &warning);
      ++reads;
      if (!warning.empty()) ++bad_reads;
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; i < kWrites; ++i) write_cache(cache().string(), writer_entry(w, i));
    });
  for (std::thread& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(bad_reads, 0) << "of " << reads << " reads";
  expect_every_entry(cache(), kWriters);
}

TEST_F(Tuning, ConcurrentWriterProcesses) {
  constexpr int kProcs = 4;
  std::vector<pid_t> pids;
  for (int w = 0; w < kProcs; ++w) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        for (int i = 0; i < kWrites; ++i) write_cache(cache().string(), writer_entry(w, i));
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  int bad_reads = 0;
  for (int k = 0; k < 200; ++k) {
    std::string warning;
    read_cache(cache().string(), &warning);
    bad_reads += !warning.empty();
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(bad_reads, 0);
  expect_every_entry(cache(), kProcs);
}

TEST_F(Tuning, UnwritableCacheThrowsButTuneOnlyWarns) {
  write_file(dir_ / "file", "x");
  const std::string path = (dir_ / "file" / "tuning.json").string();  // a folder that cannot exist
  try {
    write_cache(path, two_entries());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::backend);
    EXPECT_TRUE(contains(e.what(), "tuning cache")) << e.what();
    EXPECT_TRUE(contains(e.what(), (dir_ / "file").string())) << e.what();
  }
  set_tuning_cache_path(path);
  set_tuning_mode(TuningMode::autotune);
  Timer timer;
  timer.ms[{8, 2}] = 0.5;
  ::testing::internal::CaptureStderr();
  const LaunchConfig c = tune(request(), timer.measure());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(c.warps, 8);
  EXPECT_TRUE(contains(err, "kfuse: warning: tuning cache")) << err;
  EXPECT_TRUE(contains(c.why, "not cached")) << c.why;
}

// ---- The 2% rule inside tune() ---------------------------------------------------

TEST_F(Tuning, TwoPercentRule) {
  set_tuning_mode(TuningMode::autotune);
  Timer slight;  // 8x2 1.5% faster: the baseline stays
  slight.ms[{8, 2}] = 0.985;
  EXPECT_EQ(tune(request("test::slight"), slight.measure()), (LaunchConfig{4, 2, ""}));
  EXPECT_EQ(slight.calls, 3 * 6);  // three candidates, a warm-up and five runs each
  Timer clear;  // 3% faster: kept
  clear.ms[{8, 2}] = 0.97;
  EXPECT_EQ(tune(request("test::clear"), clear.measure()), (LaunchConfig{8, 2, ""}));

  const CacheTable t = read_cache(cache().string(), nullptr);
  const CacheEntry& s = t.at(CacheKey{"Test GPU", "test::slight", "n=2^10"});
  EXPECT_EQ(s.config, (LaunchConfig{4, 2, ""}));
  EXPECT_DOUBLE_EQ(s.ms, 1.0);
  const CacheEntry& c = t.at(CacheKey{"Test GPU", "test::clear", "n=2^10"});
  EXPECT_EQ(c.config, (LaunchConfig{8, 2, ""}));
  EXPECT_DOUBLE_EQ(c.ms, 0.97);
  EXPECT_DOUBLE_EQ(c.baseline_ms, 1.0);

  const TuningDecision d = *decision("test::clear");
  EXPECT_EQ(d.source, "measured");
  ASSERT_EQ(d.candidates.size(), 3u);
  EXPECT_EQ(d.candidates[0].config, (LaunchChoice{4, 2}));
  EXPECT_DOUBLE_EQ(d.candidates[1].ms, 0.97);
}

TEST_F(Tuning, MedianOfFiveAfterAWarmUp) {
  set_tuning_mode(TuningMode::autotune);
  // Per candidate: warm-up 100 ms (ignored), then 5, 1, 9, 1, 1 (median 1) for
  // the baseline and 0.9 throughout for 8x2 (10% faster).
  std::map<int, std::vector<double>> script = {{4, {100, 5, 1, 9, 1, 1}}, {8, {100, 0.9, 0.9, 0.9, 0.9, 0.9}}};
  std::map<int, std::size_t> next;
  Request r = request();
  r.depths = {2};
  const LaunchConfig c = tune(r, [&](const LaunchConfig& k) { return script.at(k.warps).at(next[k.warps]++); });
  EXPECT_EQ(c.warps, 8);
  EXPECT_DOUBLE_EQ(decision("test::kernel")->candidates[0].ms, 1.0);
}

// ---- Modes --------------------------------------------------------------------------

TEST_F(Tuning, ModeFromTheEnvironment) {
  EXPECT_STREQ(to_string(TuningMode::autotune), "auto");
  EXPECT_EQ(tuning_mode_from("auto"), TuningMode::autotune);
  EXPECT_EQ(tuning_mode_from(to_string(TuningMode::off)), TuningMode::off);
  try {
    tuning_mode_from("fast");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::invalid_argument);
    EXPECT_TRUE(contains(e.what(), "off, cached, auto")) << e.what();
  }
  {
    EnvVar v("KFUSE_TUNING", nullptr);
    tuning::reset();
    EXPECT_EQ(tuning_mode(), TuningMode::cached);
  }
  {
    EnvVar v("KFUSE_TUNING", "auto");
    tuning::reset();
    EXPECT_EQ(tuning_mode(), TuningMode::autotune);
  }
  {
    EnvVar v("KFUSE_TUNING", "fast");
    ::testing::internal::CaptureStderr();
    tuning::reset();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(tuning_mode(), TuningMode::cached);
    EXPECT_TRUE(contains(err, "kfuse: warning: KFUSE_TUNING=fast")) << err;
  }
}

TEST_F(Tuning, OffNeverReadsNorMeasures) {
  write_file(cache(), "garbage");  // read, it would warn
  set_tuning_mode(TuningMode::off);
  Timer timer;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 2, ""}));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(timer.calls, 0);
  EXPECT_EQ(read_file(cache()), "garbage");
}

TEST_F(Tuning, CachedReadsButNeverMeasuresNorWrites) {
  CacheTable t;
  t[CacheKey{"Test GPU", "test::kernel", "n=2^10"}] = CacheEntry{LaunchConfig{8, 3, ""}, 0.5, 0.6, ""};
  write_cache(cache().string(), t);
  const std::string before = read_file(cache());
  set_tuning_mode(TuningMode::cached);
  Timer timer;
  const LaunchConfig hit = tune(request(), timer.measure());
  EXPECT_EQ(hit, (LaunchConfig{8, 3, ""}));
  EXPECT_TRUE(contains(hit.why, cache().string())) << hit.why;
  EXPECT_EQ(decision("test::kernel")->source, "cache");
  EXPECT_EQ(tune(request("test::kernel", "n=2^20"), timer.measure()), (LaunchConfig{4, 2, ""}));  // a miss: the rule
  EXPECT_EQ(timer.calls, 0);
  EXPECT_EQ(read_file(cache()), before);
}

TEST_F(Tuning, AutoMeasuresOncePerKeyThenRemembers) {
  set_tuning_mode(TuningMode::autotune);
  Timer timer;
  timer.ms[{4, 3}] = 0.5;
  EXPECT_FALSE(remembered("Test GPU", "test::kernel", "n=2^10"));
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 3, ""}));
  const std::optional<LaunchConfig> r = remembered("Test GPU", "test::kernel", "n=2^10");  // the launch paths' shortcut
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (LaunchConfig{4, 3, ""}));
  EXPECT_EQ(r->why, "");
  const int once = timer.calls;
  EXPECT_EQ(once, 18);
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 3, ""}));  // from memory
  EXPECT_EQ(timer.calls, once);
  tune(request("test::kernel", "n=2^11"), timer.measure());  // another shape class: measured
  EXPECT_EQ(timer.calls, 2 * once);
  EXPECT_EQ(tuning_decisions().size(), 2u);

  // Decided again (a setter clears the memory): now from the cache, not measured.
  set_tuning_mode(TuningMode::autotune);
  EXPECT_FALSE(remembered("Test GPU", "test::kernel", "n=2^10"));
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 3, ""}));
  EXPECT_EQ(timer.calls, 2 * once);
  EXPECT_EQ(decision("test::kernel")->source, "cache");

  // Retune: measured again despite the entry, and the new winner written.
  set_tuning_retune(true);
  timer.ms[{4, 3}] = 1.0;
  timer.ms[{8, 2}] = 0.5;
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{8, 2, ""}));
  EXPECT_EQ(timer.calls, 3 * once);
  EXPECT_EQ(read_cache(cache().string(), nullptr).at(CacheKey{"Test GPU", "test::kernel", "n=2^10"}).config.warps, 8);
  clear_tuning_decisions();
  EXPECT_TRUE(tuning_decisions().empty());
}

TEST_F(Tuning, AutoWithoutAMeasureDecidesProvisionally) {
  set_tuning_mode(TuningMode::autotune);
  EXPECT_EQ(tune(request(), {}), (LaunchConfig{4, 2, ""}));
  EXPECT_EQ(decision("test::kernel")->source, "rule");
  EXPECT_FALSE(remembered("Test GPU", "test::kernel", "n=2^10"));
  EXPECT_FALSE(fs::exists(cache()));
  Timer timer;
  timer.ms[{8, 2}] = 0.5;
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{8, 2, ""}));  // measured now
  EXPECT_GT(timer.calls, 0);
  EXPECT_EQ(tuning_decisions().size(), 1u);
  EXPECT_EQ(decision("test::kernel")->source, "measured");
}

TEST_F(Tuning, AMeasureThatCallsTuneThrows) {
  set_tuning_mode(TuningMode::autotune);
  const Measure nested = [](const LaunchConfig&) {
    tune(request("test::inner"), [](const LaunchConfig&) { return 1.0; });
    return 1.0;
  };
  EXPECT_THROW(tune(request(), nested), Error);
  Timer timer;  // the tuner is usable afterwards
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 2, ""}));
}

TEST_F(Tuning, DefaultCachePath) {
  tuning::reset();  // the fixture's path set aside
  {
    EnvVar a("KFUSE_TUNING_CACHE", "/tmp/somewhere/t.json");
    EXPECT_EQ(tuning_cache_path(), "/tmp/somewhere/t.json");
  }
  EnvVar a("KFUSE_TUNING_CACHE", nullptr);
  {
    EnvVar x("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(tuning_cache_path(), "/xdg/kfuse/tuning.json");
  }
  EnvVar x("XDG_CACHE_HOME", nullptr);
  EnvVar h("HOME", "/home/someone");
  EXPECT_EQ(tuning_cache_path(), "/home/someone/.cache/kfuse/tuning.json");
  set_tuning_cache_path("/elsewhere.json");
  EXPECT_EQ(tuning_cache_path(), "/elsewhere.json");
  set_tuning_cache_path("");
  EXPECT_EQ(tuning_cache_path(), "/home/someone/.cache/kfuse/tuning.json");
}

// ---- Forces --------------------------------------------------------------------------

TEST_F(Tuning, ForceSyntax) {
  std::string warning;
  auto f = parse_forces(" cuda::fold_plane_sums=8x2 , *=4x3,,", &warning);
  EXPECT_EQ(warning, "");
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f.at("cuda::fold_plane_sums"), (LaunchChoice{8, 2}));
  EXPECT_EQ(f.at("*"), (LaunchChoice{4, 3}));
  for (const char* bad :
       {"k", "k=8", "k=x2", "k=8x", "=8x2", "k=0x2", "k=8x2x3", "k=-8x2", "k=8 x 2", "k=99999999999x2"}) {
    f = parse_forces(std::string(bad) + ",good=16x3", &warning);
    EXPECT_TRUE(contains(warning, std::string("'") + bad + "'")) << bad << ": " << warning;
    ASSERT_EQ(f.size(), 1u) << bad;
    EXPECT_EQ(f.at("good"), (LaunchChoice{16, 3}));
  }
}

TEST_F(Tuning, ForcesFromTheEnvironmentAreClamped) {
  EnvVar v("KFUSE_TUNING_FORCE", "test::kernel=16x3,test::small=2x1,junk");
  ::testing::internal::CaptureStderr();
  tuning::reset();
  set_tuning_cache_path(cache().string());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(err, "kfuse: warning: KFUSE_TUNING_FORCE=")) << err;
  EXPECT_TRUE(contains(err, "'junk'")) << err;

  set_tuning_mode(TuningMode::autotune);
  Timer timer;
  const LaunchConfig c = tune(request(), timer.measure());  // 16 warps -> 8, depth 3 allowed
  EXPECT_EQ(c, (LaunchConfig{8, 3, ""}));
  EXPECT_TRUE(contains(c.why, "forced 16x3")) << c.why;
  EXPECT_EQ(timer.calls, 0);
  EXPECT_EQ(decision("test::kernel")->source, "forced");
  Request narrow = request("test::kernel", "n=2^5");
  narrow.resources.max_threads_per_block = 128;
  EXPECT_EQ(tune(narrow, {}), (LaunchConfig{4, 3, ""}));
  EXPECT_EQ(tune(request("test::small"), {}), (LaunchConfig{4, 2, ""}));  // below every allowed value: the smallest
}

TEST_F(Tuning, ForceLaunchOverridesCacheAndMeasuring) {
  CacheTable t;
  t[CacheKey{"Test GPU", "test::kernel", "n=2^10"}] = CacheEntry{LaunchConfig{4, 3, ""}, 0.5, 0.6, ""};
  write_cache(cache().string(), t);
  set_tuning_mode(TuningMode::autotune);
  EXPECT_EQ(tune(request(), {}), (LaunchConfig{4, 3, ""}));  // the cache
  force_launch("*", LaunchChoice{8, 2});                     // decided again
  Timer timer;
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{8, 2, ""}));
  EXPECT_EQ(tune(request("test::other"), timer.measure()), (LaunchConfig{8, 2, ""}));
  force_launch("test::other", LaunchChoice{4, 3});  // a kernel's own force wins over "*"
  EXPECT_EQ(tune(request("test::other"), timer.measure()), (LaunchConfig{4, 3, ""}));
  EXPECT_EQ(timer.calls, 0);
  force_launch("*", std::nullopt);
  force_launch("test::other", std::nullopt);
  EXPECT_EQ(tune(request(), timer.measure()), (LaunchConfig{4, 3, ""}));  // the cache again
  EXPECT_THROW(force_launch("test::kernel", LaunchChoice{0, 2}), Error);
}

}  // namespace
