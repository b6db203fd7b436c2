// kfuse: plan and run a JSON pipeline spec, time it, and check it against a
// float64 reference.
//
//   kfuse run specs/small/convt_gap_bias_lse.json --check
//   kfuse run SPEC [--input x.npy] [--output out.npy] [--strategy auto|fold|fused|reference]
//                  [--y-layout auto|nchw|nhwc]
//                  [--backend auto|kokkos|cuda] [--dtype float32|float64|float16|bfloat16]
//                  [--check] [--check-samples K] [--tolerance T] [--repeat N] [--warmup N]
//                  [--tuning off|cached|auto] [--progress S] [--dry-run]
//   mpirun -np P kfuse run SPEC --distributed ...   (built with KFUSE_ENABLE_MPI)
//   kfuse tune SPEC [--backend ...] [--dtype ...] [--cache PATH]
//
// Exit codes: 0 success, 1 the check failed, 2 an error (bad arguments, a bad
// spec, a planning or runtime error).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "kfuse/cost.hpp"
#include "kfuse/device.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/npy.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/runtime.hpp"
#include "kfuse/spec.hpp"
#include "kfuse/tuning.hpp"
#include "kfuse/version.hpp"


#ifdef KFUSE_HAVE_MPI
#include <mpi.h>

#include "kfuse/mpi.hpp"
#endif

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// `kfuse --version`: the version, the backends compiled in and, when a GPU is
// visible, the device kfuse would run on.
std::string version_text() {
  std::string s = std::string("kfuse ") + KFUSE_VERSION_STRING + "\n";
  s += std::string("backends: kokkos (") + kfuse::ExecSpace::name() + ")";
#ifdef KFUSE_HAVE_CUDA
  s += ", cuda";
#ifdef KFUSE_HAVE_CUDNN
  s += " (cuDNN)";
#endif
#endif
  if (kfuse::device::available()) {
    const std::string name = kfuse::device::device_name();
    s += "\ndevice: " + (name.empty() ? std::string("CUDA device") : name);
  }
  return s;
}

struct RunArgs {
  std::string spec;
  std::string input;
  std::string output;
  std::string strategy = "auto";
  std::string y_layout = "auto";
  std::string backend = "auto";
  std::string dtype;
  std::string precision;  // --precision (empty: the spec's)
  std::string tuning;  // --tuning (empty: KFUSE_TUNING's mode)
  std::string cache;   // tune --cache (empty: the default tuning cache)
  bool check = false;
  bool distributed = false;  // --distributed (MPI builds): the batch split across MPI_COMM_WORLD
  bool dry_run = false;      // --dry-run: the plan and its cost only
  double tolerance = -1.0;  // < 0: the dtype's default
  int64_t check_samples = 0;  // --check-samples (0: as many as fit in kCheckSeconds)
  double progress = 2.0;      // --progress: seconds between progress lines (0: none)
  int repeat = 10;
  int warmup = 2;
};

// A run expected to take longer than this (all repeats) is announced with a
// warning before it starts.
constexpr double kWarnSeconds = 5.0;
// --check checks as many samples as the float64 reference runs in about this long.
constexpr double kCheckSeconds = 10.0;

// While alive, says on stderr every `interval` seconds what is still running
// (`what()`, called on the reporting thread) and for how long; silent for
// work shorter than that. Long runs, input generation and the check would
// otherwise print nothing for minutes.
class Progress {
 public:
  Progress(double interval, std::function<std::string()> what) : what_(std::move(what)) {
    if (interval > 0) thread_ = std::thread([this, interval] { report(interval); });
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void report(double interval) {
    const auto t0 = Clock::now();
    std::unique_lock<std::mutex> lock(mutex_);
    while (!cv_.wait_for(lock, std::chrono::duration<double>(interval), [this] { return done_; }))
      std::fprintf(stderr, "kfuse: %s: %.1f s elapsed\n", what_().c_str(), seconds_since(t0));
  }

  std::function<std::string()> what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// f(), with progress lines saying `what`.
template <class F>
auto with_progress(double interval, const std::string& what, F&& f) -> decltype(f()) {
  const Progress p(interval, [&what] { return what; });
  return f();
}

// Where the tensors live: CUDA memory for the CUDA backend, and for auto when
// it is built in and a GPU is present; else the Kokkos backend's memory.
kfuse::Memory memory_for(kfuse::BackendChoice b) {
  if (b == kfuse::BackendChoice::cuda) return kfuse::Memory::cuda;
#ifdef KFUSE_HAVE_CUDA
  if (b == kfuse::BackendChoice::automatic && kfuse::device::available()) return kfuse::Memory::cuda;
#endif
  return kfuse::kokkos_memory();
}

// --backend cuda where it cannot run: say why, and what runs instead.
void check_backend(const RunArgs& a) {
  if (a.backend != "cuda") return;
#ifdef KFUSE_HAVE_CUDA
  if (kfuse::device::available()) return;
  kfuse::fail(kfuse::ErrorCategory::unsupported, "--backend cuda",
              "no CUDA GPU is visible (none present, or a driver older than the CUDA runtime kfuse was built "
              "with: nvidia-smi shows both); --backend kokkos or auto runs the portable Kokkos kernels instead");
#else
  kfuse::fail(kfuse::ErrorCategory::unsupported, "--backend cuda",
              "this kfuse was built without the CUDA backend (configure with -DKFUSE_ENABLE_CUDA=ON where the CUDA "
              "toolkit is installed); --backend kokkos or auto runs the portable Kokkos kernels instead");
#endif
}

kfuse::PlanOptions plan_options(const RunArgs& a, const kfuse::Spec& spec) {
  check_backend(a);
  kfuse::PlanOptions opt;
  opt.precision = a.precision.empty() ? spec.precision : kfuse::precision_from(a.precision);
  opt.strategy = kfuse::strategy_from(a.strategy);
  opt.y_layout = kfuse::y_layout_from(a.y_layout);
  opt.backend = kfuse::backend_from(a.backend);
  opt.memory = memory_for(opt.backend);
  return opt;
}

// Waits for the plan's work to finish, for honest timings.
void synchronize() {
  if (Kokkos::is_initialized()) Kokkos::fence();
}

// `t` in `mem`: itself when it is there already, else a copy.
kfuse::Tensor in_memory(const kfuse::Tensor& t, kfuse::Memory mem) {
  return t.memory() == mem ? t : kfuse::Tensor::copy_of(t, mem);
}

// Warm-up, then timed repeats; at least one run (none asked: once for the
// output). run() runs once and returns its seconds. With `progress`, progress
// lines on stderr (which run, and the estimate per run when there is one).
template <class Run>
std::vector<double> timed_runs(const RunArgs& a, bool progress, double estimate_s, const Run& run) {
  const int total = std::max(a.warmup + a.repeat, 1);
  std::vector<double> times;
  std::atomic<int> current{0};
  const Progress p(progress ? a.progress : 0.0, [&] {
    const int i = current.load();
    return kfuse::detail::cat("run ", i + 1, " of ", total, i < a.warmup ? " (warm-up)" : "",
                              estimate_s >= 0 ? ", about " + kfuse::duration_text(estimate_s) + " each" : std::string());
  });
  for (int i = 0; i < total; ++i) {
    current = i;
    const double dt = run();
    if (i >= a.warmup && i < a.warmup + a.repeat) times.push_back(dt);
  }
  return times;
}

// The median and the minimum of `times` (`what` says what a time covers) and
// the bandwidth the median gives on the plan's floor bytes.
void report_times(const std::vector<double>& times, int64_t floor_bytes, const RunArgs& a, const std::string& what) {
  if (times.empty()) {
    std::printf("time: not measured (--repeat 0)\n");
    std::printf("floor: %lld bytes\n", static_cast<long long>(floor_bytes));
    return;
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const std::size_t m = sorted.size();
  const double median = m % 2 ? sorted[m / 2] : 0.5 * (sorted[m / 2 - 1] + sorted[m / 2]);
  std::printf("time: median %.4f ms, min %.4f ms (%d repeats after %d warmup%s)\n", median * 1e3, sorted[0] * 1e3,
              a.repeat, a.warmup, what.c_str());
  std::printf("floor: %lld bytes; achieved %.2f GB/s (floor bytes / median time)\n", static_cast<long long>(floor_bytes),
              median > 0 ? static_cast<double>(floor_bytes) / median / 1e9 : 0.0);
}

std::string describe_input(const kfuse::InputSource& in) {
  if (in.npy) return "from " + *in.npy;
  const kfuse::InitSpec& i = in.init;
  std::string s = std::string("generated: ") + kfuse::to_string(i.kind);
  if (i.kind != kfuse::InitKind::constant) s += " seed " + std::to_string(i.seed);
  return s;
}

std::vector<double> to_doubles(const kfuse::TensorView& host) {
  const kfuse::Tensor d = kfuse::cast(host, kfuse::DType::f64);
  const double* p = d.data<double>();
  return std::vector<double>(p, p + d.numel());
}

void print_values(const std::vector<double>& v, const kfuse::Shape& shape, kfuse::DType dtype) {
  const std::size_t n = std::min<std::size_t>(v.size(), 8);
  std::printf("output %s %s:", kfuse::to_string(shape).c_str(), kfuse::to_string(dtype));
  for (std::size_t i = 0; i < n; ++i) std::printf(" %.9g", v[i]);
  if (v.size() > n) std::printf(" ... (%zu values)", v.size());
  std::printf("\n");
}

struct Comparison {
  double rel = 0.0, max_abs = 0.0;
  int64_t nonfinite_mismatch = 0;
};

Comparison compare(const std::vector<double>& out, const std::vector<double>& ref) {
  Comparison c;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double a = out[i], b = ref[i];
    if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) {
      const bool same = (std::isnan(a) && std::isnan(b)) || (std::isinf(a) && std::isinf(b) && (a > 0) == (b > 0));
      if (!same) ++c.nonfinite_mismatch;
      continue;
    }
    const double d = a - b;
    num += d * d;
    den += b * b;
    c.max_abs = std::max(c.max_abs, std::abs(d));
  }
  c.rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return c;
}

// --check's tolerance: --tolerance, else the default for the pipeline's dtype
// against a float64 reference. A float32 pipeline whose convolution may run on
// TF32 tensor cores (10-bit mantissas, fp32 accumulation) is held to 1e-3:
// 5.5e-5 measured on the mish set case, where 1e-5 failed correct runs.
double check_tolerance(const RunArgs& a, kfuse::DType d, kfuse::Precision p) {
  if (a.tolerance >= 0) return a.tolerance;
  switch (d) {
    case kfuse::DType::f32: return p == kfuse::Precision::tf32 ? 1e-3 : 1e-5;
    case kfuse::DType::f64: return 1e-9;
    case kfuse::DType::f16:
    case kfuse::DType::bf16: return 1e-2;
  }
  return 1e-4;
}

// The samples --check takes from a batch of n: k of them evenly spread, the
// first and the last included.
std::vector<int64_t> spread_samples(int64_t n, int64_t k) {
  std::vector<int64_t> idx;
  for (int64_t j = 0; j < k; ++j) idx.push_back(k == 1 ? 0 : j * (n - 1) / (k - 1));
  return idx;
}

std::string samples_text(const std::vector<int64_t>& idx, int64_t n) {
  std::string s = idx.size() == 1 ? "sample " : "samples ";
  for (std::size_t j = 0; j < idx.size(); ++j) {
    if (idx.size() > 8 && j == 4) {  // the first and last few of a long list
      s += ", ...";
      j = idx.size() - 3;
    }
    s += kfuse::detail::cat(j ? ", " : "", idx[j]);
  }
  return kfuse::detail::cat(s, " (", idx.size(), " of ", n, ")");
}

// Rows `idx` along axis 0 of the contiguous host tensor `t`, in float64.
kfuse::Tensor rows_f64(const kfuse::Tensor& t, const std::vector<int64_t>& idx) {
  kfuse::Shape shape = t.shape();
  const int64_t row = shape[0] > 0 ? t.numel() / shape[0] : 0;
  shape[0] = static_cast<int64_t>(idx.size());
  kfuse::Tensor picked = kfuse::Tensor::empty(shape, t.dtype(), kfuse::Memory::host);
  const std::size_t bytes = static_cast<std::size_t>(row) * kfuse::size_of(t.dtype());
  for (std::size_t j = 0; j < idx.size(); ++j)
    std::memcpy(static_cast<char*>(picked.view().data) + j * bytes,
                static_cast<const char*>(t.view().data) + static_cast<std::size_t>(idx[j]) * bytes, bytes);
  return kfuse::cast(picked.view(), kfuse::DType::f64);
}

// --check: the reference strategy (every op its own kernel, none of the fold's
// or the fused epilogue's code) on the same problem in float64 (the same
// rounded weights and input), so that it is independent of the strategy it
// checks. Samples along axis 0 are independent: when the whole batch would
// take the reference longer than kCheckSeconds (or --check-samples says so),
// it checks evenly spread samples and says which. Prints the check line and
// says whether the output is within the tolerance.
bool check_float64(const RunArgs& a, const kfuse::Tensor& x_host, const std::vector<double>& values, double tol) {
  const kfuse::Spec ref_spec = kfuse::load_spec(a.spec, kfuse::DType::f64);
  const kfuse::Pipeline& full = ref_spec.pipeline;
  kfuse::PlanOptions ref_opt;
  ref_opt.memory = kfuse::Memory::host;  // x_host and the values are on the host
  ref_opt.strategy = kfuse::Strategy::reference;
  const int64_t n = full.input_shape().empty() ? 1 : full.input_shape()[0];
  const double whole_s = kfuse::plan_cost(full, kfuse::Plan(full, ref_opt)).estimate_s;
  int64_t k = n;
  if (a.check_samples > 0) k = std::min(n, a.check_samples);
  else if (whole_s > kCheckSeconds) k = std::max<int64_t>(1, static_cast<int64_t>(n * (kCheckSeconds / whole_s)));
  std::optional<kfuse::Pipeline> slice;
  if (k < n) {
    try {
      slice.emplace(full.with_batch(k));
    } catch (const kfuse::Error& e) {
      std::fprintf(stderr, "kfuse: note: the check runs the whole batch: %s\n", e.what());
      k = n;
    }
  }
  const std::vector<int64_t> idx = slice ? spread_samples(n, k) : std::vector<int64_t>();
  const kfuse::Pipeline& ref_pipeline = slice ? *slice : full;
  const kfuse::Plan ref_plan(ref_pipeline, ref_opt);
  const kfuse::PlanCost cost = kfuse::plan_cost(ref_pipeline, ref_plan);
  const std::string which = slice ? samples_text(idx, n) : kfuse::detail::cat("all ", n, " samples");
  std::printf("check: reference strategy in float64 on %s (%.3g multiply-adds%s)\n", which.c_str(), cost.conv_macs,
              cost.estimate_s >= 0 ? (", about " + kfuse::duration_text(cost.estimate_s)).c_str() : "");
  std::fflush(stdout);

  const kfuse::Tensor x_ref = slice ? rows_f64(x_host, idx) : kfuse::cast(x_host, kfuse::DType::f64);
  const kfuse::Tensor ref = with_progress(a.progress, "checking against the float64 reference", [&] {
    kfuse::Tensor r = ref_plan.run(x_ref);
    synchronize();
    return r;
  });
  const std::vector<double> ref_values = to_doubles(ref);
  std::vector<double> checked;
  if (slice) {  // the run's output rows of the checked samples
    const std::size_t row = values.size() / static_cast<std::size_t>(n);
    for (int64_t i : idx) checked.insert(checked.end(), values.begin() + i * row, values.begin() + (i + 1) * row);
  }
  const Comparison c = compare(slice ? checked : values, ref_values);
  const bool ok = c.rel <= tol && c.nonfinite_mismatch == 0;
  std::printf("check: relative error %.3e, max abs error %.3e", c.rel, c.max_abs);
  if (c.nonfinite_mismatch) std::printf(", %lld NaN/inf mismatches", static_cast<long long>(c.nonfinite_mismatch));
  std::printf(", tolerance %.1e: %s\n", tol, ok ? "PASS" : "FAIL");
  return ok;
}

kfuse::Spec load(const RunArgs& a) {
  std::optional<kfuse::DType> dtype;
  if (!a.dtype.empty()) dtype = kfuse::dtype_from(a.dtype);
  return kfuse::load_spec(a.spec, dtype);
}

// The input, on the host: --input, else the spec's.
kfuse::Tensor host_input(const RunArgs& a, const kfuse::Spec& spec) {
  const kfuse::Pipeline& pipeline = spec.pipeline;
  kfuse::Tensor x_host;
  if (!a.input.empty()) {
    x_host = kfuse::read_npy(a.input);
    if (x_host.shape() != pipeline.input_shape())
      kfuse::fail(kfuse::ErrorCategory::shape_mismatch, "--input", a.input, " has shape ",
                  kfuse::to_string(x_host.shape()), "; the spec's input is ", kfuse::to_string(pipeline.input_shape()));
    if (x_host.dtype() != pipeline.dtype()) {
      std::fprintf(stderr, "kfuse: note: converting %s from %s to %s\n", a.input.c_str(),
                   kfuse::to_string(x_host.dtype()), kfuse::to_string(pipeline.dtype()));
      x_host = kfuse::cast(x_host, pipeline.dtype());
    }
  } else {
    x_host = kfuse::make_input(spec);
  }
  return x_host;
}

// Prints the output (host memory) and writes it to --output; returns its values.
std::vector<double> emit_output(const kfuse::Tensor& out_host, const kfuse::Shape& shape, const RunArgs& a) {
  const std::vector<double> values = to_doubles(out_host);
  print_values(values, shape, out_host.dtype());
  std::fflush(stdout);
  if (!a.output.empty()) {
    const bool writable = out_host.dtype() == kfuse::DType::f32 || out_host.dtype() == kfuse::DType::f64;
    kfuse::write_npy(a.output, writable ? out_host : kfuse::cast(out_host, kfuse::DType::f32));
    std::printf("wrote %s\n", a.output.c_str());
  }
  return values;
}

// --output, before any work (the spec's weights are all that is made before
// it): a path write_npy can create, and none of the files the run reads (the
// spec, --input, the spec's input), which an output written over them would
// destroy.
void check_output(const RunArgs& a, const kfuse::Spec& spec) {
  if (a.output.empty()) return;
  kfuse::check_output_path(a.output);
  const std::pair<const char*, std::string> inputs[] = {
      {"the spec", a.spec}, {"--input", a.input}, {"the spec's input", spec.input.npy.value_or("")}};
  for (const auto& [what, in] : inputs) {
    std::error_code ec;
    if (!in.empty() && std::filesystem::equivalent(a.output, in, ec))
      kfuse::fail(kfuse::ErrorCategory::invalid_argument, "--output", a.output, " is ", what, " (", in,
                  "), an input of this run: kfuse never writes over its inputs");
  }
}

// Prints the plan and its cost; warns when the runs are expected to be long.
// Returns the estimate per run (< 0: none).
double announce(const RunArgs& a, const kfuse::Spec& spec, const kfuse::Plan& plan) {
  const kfuse::Pipeline& pipeline = spec.pipeline;
  std::printf("spec: %s (%s)\n", spec.name.c_str(), a.spec.c_str());
  std::printf("input: %s %s (%s)\n", kfuse::to_string(pipeline.input_shape()).c_str(),
              kfuse::to_string(pipeline.dtype()),
              a.input.empty() ? describe_input(spec.input).c_str() : ("from " + a.input).c_str());
  std::printf("%s", plan.describe().c_str());
  if (!plan.describe().empty() && plan.describe().back() != '\n') std::printf("\n");
  const kfuse::PlanCost cost = kfuse::plan_cost(pipeline, plan);
  std::printf("%s\n", cost.text().c_str());
  std::fflush(stdout);
  const int runs = std::max(a.warmup + a.repeat, 1);
  if (cost.estimate_s * runs > kWarnSeconds)
    std::fprintf(stderr,
                 "kfuse: warning: expected to take about %s: %d run%s of about %s (--warmup %d, --repeat %d; "
                 "--warmup 0 --repeat 1 runs once)\n",
                 kfuse::duration_text(cost.estimate_s * runs).c_str(), runs, runs == 1 ? "" : "s",
                 kfuse::duration_text(cost.estimate_s).c_str(), a.warmup, a.repeat);
  return cost.estimate_s;
}

int run_command(const RunArgs& a) {
  if (!a.tuning.empty()) kfuse::set_tuning_mode(kfuse::tuning_mode_from(a.tuning));
  const kfuse::Spec spec = load(a);
  check_output(a, spec);
  const kfuse::Pipeline& pipeline = spec.pipeline;
  const kfuse::PlanOptions opt = plan_options(a, spec);
  const kfuse::Plan plan(pipeline, opt);
  const double estimate_s = announce(a, spec, plan);
  if (a.dry_run) return 0;
  const kfuse::Tensor x_host = with_progress(a.progress, "generating the input", [&] { return host_input(a, spec); });

  const kfuse::Memory mem = plan.memory();
  const kfuse::Tensor x = in_memory(x_host, mem);
  const kfuse::Tensor out = kfuse::Tensor::empty(plan.output_shape(), plan.dtype(), mem);
  report_times(timed_runs(a, true, estimate_s,
                          [&] {
                            const auto t0 = Clock::now();
                            plan.run(x, out);
                            synchronize();
                            return seconds_since(t0);
                          }),
               plan.floor_bytes(), a, "");
  const std::vector<double> values = emit_output(in_memory(out, kfuse::Memory::host), plan.output_shape(), a);
  if (!a.check) return 0;
  return check_float64(a, x_host, values, check_tolerance(a, plan.dtype(), opt.precision)) ? 0 : 1;
}

// `kfuse tune SPEC`: the plan of `run`, once to warm up with the cache left
// alone, then once measuring every kernel's candidates (autotune, retune);
// prints what each kernel measured and chose, and where it was written.
int tune_command(const RunArgs& a) {
  if (!a.cache.empty()) kfuse::set_tuning_cache_path(a.cache);
  const kfuse::Spec spec = load(a);
  const kfuse::Plan plan(spec.pipeline, plan_options(a, spec));
  const kfuse::Tensor x_host = host_input(a, spec);
  const kfuse::Memory mem = plan.memory();
  const kfuse::Tensor x = in_memory(x_host, mem);
  const kfuse::Tensor out = kfuse::Tensor::empty(plan.output_shape(), plan.dtype(), mem);
  std::printf("spec: %s (%s)\n%s", spec.name.c_str(), a.spec.c_str(), plan.describe().c_str());
  if (!plan.describe().empty() && plan.describe().back() != '\n') std::printf("\n");
  std::fflush(stdout);

  kfuse::set_tuning_mode(kfuse::TuningMode::off);
  plan.run(x, out);
  synchronize();
  kfuse::set_tuning_mode(kfuse::TuningMode::autotune);
  kfuse::set_tuning_retune(true);
  kfuse::clear_tuning_decisions();
  plan.run(x, out);
  synchronize();

  const std::vector<kfuse::TuningDecision> decisions = kfuse::tuning_decisions();
  if (decisions.empty()) {
    std::printf("no kernel of this plan takes its launch configuration from the tuner (memory %s)\n",
                kfuse::to_string(mem));
    return 0;
  }
  struct Row {
    std::string kernel, shape, config, ms, chosen, source;
  };
  std::vector<Row> rows{{"kernel", "shape class", "candidate", "ms", "chosen", "source"}};
  const auto wxd = [](const kfuse::LaunchChoice& c) { return std::to_string(c.warps) + "x" + std::to_string(c.depth); };
  for (const kfuse::TuningDecision& d : decisions) {
    if (d.candidates.empty()) {
      rows.push_back({d.kernel, d.shape_class, wxd(d.chosen), "-", "*", d.source});
      continue;
    }
    for (std::size_t i = 0; i < d.candidates.size(); ++i) {
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.4f", d.candidates[i].ms);
      rows.push_back({i == 0 ? d.kernel : "", i == 0 ? d.shape_class : "", wxd(d.candidates[i].config), ms,
                      d.candidates[i].config == d.chosen ? "*" : "", i == 0 ? d.source : ""});
    }
  }
  std::size_t w[5] = {0, 0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.kernel.size());
    w[1] = std::max(w[1], r.shape.size());
    w[2] = std::max(w[2], r.config.size());
    w[3] = std::max(w[3], r.ms.size());
    w[4] = std::max(w[4], r.chosen.size());
  }
  std::printf("device: %s\n", decisions.front().device.c_str());
  for (const Row& r : rows)
    std::printf("%-*s  %-*s  %-*s  %*s  %-*s  %s\n", int(w[0]), r.kernel.c_str(), int(w[1]), r.shape.c_str(), int(w[2]),
                r.config.c_str(), int(w[3]), r.ms.c_str(), int(w[4]), r.chosen.c_str(), r.source.c_str());

  // What reached the cache file (a write failure was a warning on stderr).
  const std::string path = kfuse::tuning_cache_path();
  int measured = 0, written = 0;
  for (const kfuse::TuningDecision& d : decisions) {
    if (d.source != "measured") continue;
    ++measured;
    written += kfuse::in_tuning_cache(d, path);
  }
  std::printf("cache: %s (%d of %d measured configurations written)\n", path.empty() ? "(none)" : path.c_str(),
              written, measured);
  if (written == measured) return 0;
  std::fprintf(stderr, "kfuse: error: the tuning cache %s was not written (the warning above says why)\n",
               path.c_str());
  return 2;
}

#ifdef KFUSE_HAVE_MPI
// --distributed: rows [begin, end) of the input, alone: read at their offset
// from --input, else from the spec (generated from the global seed and
// counter, or read at their offset from the spec's .npy), so that they are the
// same rows of the same global tensor whatever the number of ranks.
kfuse::Tensor input_rows(const RunArgs& a, const kfuse::Spec& spec, int64_t begin, int64_t end, bool note) {
  const kfuse::Pipeline& pipeline = spec.pipeline;
  if (a.input.empty()) return kfuse::make_input_slice(spec, begin, end);
  const kfuse::NpyInfo info = kfuse::read_npy_info(a.input);
  if (info.shape != pipeline.input_shape())
    kfuse::fail(kfuse::ErrorCategory::shape_mismatch, "--input", a.input, " has shape ", kfuse::to_string(info.shape),
                "; the spec's input is ", kfuse::to_string(pipeline.input_shape()));
  kfuse::Tensor x = kfuse::read_npy_rows(a.input, begin, end);
  if (x.dtype() == pipeline.dtype()) return x;
  if (note)
    std::fprintf(stderr, "kfuse: note: converting %s from %s to %s\n", a.input.c_str(), kfuse::to_string(x.dtype()),
                 kfuse::to_string(pipeline.dtype()));
  return kfuse::cast(x, pipeline.dtype());
}

// `mpirun -np P kfuse run SPEC --distributed`: every rank runs its slice of the
// batch (kfuse::mpi::ShardedPlan); rank 0 gathers the output, prints it, writes
// --output and, with --check, compares it with a single-process run of the
// same plan (bit for bit in host memory) and with the float64 reference.
int run_distributed(const RunArgs& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (!a.tuning.empty()) kfuse::set_tuning_mode(kfuse::tuning_mode_from(a.tuning));  // checked by the parser
  std::optional<kfuse::Spec> spec;  // every rank loads the spec and makes the weights itself
  kfuse::mpi::agree(comm, [&] {
    spec.emplace(load(a));
    if (rank == 0) check_output(a, *spec);  // the rank that writes it
  });
  const kfuse::Pipeline& pipeline = spec->pipeline;

  const kfuse::PlanOptions opt = plan_options(a, *spec);
  kfuse::mpi::ShardOptions sopt;
  sopt.plan = opt;
  sopt.select_device = false;  // done before Kokkos started (distributed_main)
  const kfuse::mpi::ShardedPlan plan(pipeline, comm, sopt);
  const kfuse::mpi::BatchSlice slice = plan.slice();
  const kfuse::Memory mem = plan.memory();

  kfuse::Tensor x, out;
  kfuse::mpi::agree(comm, [&] {
    const kfuse::Tensor rows = input_rows(a, *spec, slice.begin, slice.end(), rank == 0);
    x = in_memory(rows, mem);
    if (rank == 0) out = kfuse::Tensor::empty(plan.global_output_shape(), plan.dtype(), mem);
  });

  if (rank == 0) {
    std::printf("spec: %s (%s)\n", spec->name.c_str(), a.spec.c_str());
    const std::string from = a.input.empty() ? describe_input(spec->input) : "from " + a.input;
    std::printf("input: %s %s (%s; each rank %s its rows)\n", kfuse::to_string(pipeline.input_shape()).c_str(),
                kfuse::to_string(pipeline.dtype()), from.c_str(),
                a.input.empty() && !spec->input.npy ? "generates" : "reads");
    std::printf("%s", plan.describe().c_str());
    std::fflush(stdout);
  }

  // Each time is the slowest rank's, the gather included.
  const std::vector<double> times = timed_runs(a, rank == 0, -1.0, [&] {
    MPI_Barrier(comm);
    const auto t0 = Clock::now();
    plan.run(x, out.defined() ? out.view() : kfuse::TensorView());
    synchronize();
    double dt = seconds_since(t0), slowest = dt;
    MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
    return slowest;
  });
  if (rank != 0) return 0;
  report_times(times, plan.floor_bytes(), a,
               kfuse::detail::cat("; the slowest of ", size, " rank", size == 1 ? "" : "s", ", gather included"));
  const kfuse::Tensor out_host = in_memory(out, kfuse::Memory::host);
  const std::vector<double> values = emit_output(out_host, plan.global_output_shape(), a);
  if (!a.check) return 0;
  const double tol = check_tolerance(a, plan.dtype(), opt.precision);

  // The single-process run: the same plan options on the whole batch, here.
  const kfuse::Tensor x_host = input_rows(a, *spec, 0, pipeline.input_shape()[0], false);
  const kfuse::Plan single(pipeline, opt);
  const kfuse::Tensor one = single.run(in_memory(x_host, mem));
  synchronize();
  const kfuse::Tensor one_host = in_memory(one, kfuse::Memory::host);
  const std::size_t es = kfuse::size_of(plan.dtype());
  int64_t differ = 0;
  for (int64_t i = 0; i < one_host.numel(); ++i)
    differ += std::memcmp(static_cast<const char*>(out_host.view().data) + i * es,
                          static_cast<const char*>(one_host.view().data) + i * es, es) != 0;
  // Bit for bit in host memory (each sample is computed exactly as by one
  // process); on a GPU a library may pick batch-dependent algorithms.
  bool ok = differ == 0;
  std::printf("check: single-process run (strategy %s): ", kfuse::to_string(single.strategy()));
  if (differ == 0) {
    std::printf("bit-identical (%lld values): PASS\n", static_cast<long long>(one_host.numel()));
  } else {
    const Comparison c = compare(values, to_doubles(one_host));
    ok = mem != kfuse::Memory::host && c.rel <= tol && c.nonfinite_mismatch == 0;
    std::printf("%lld of %lld values differ, relative error %.3e, max abs error %.3e: %s\n",
                static_cast<long long>(differ), static_cast<long long>(one_host.numel()), c.rel, c.max_abs,
                ok ? "PASS (within the tolerance; bit-identity is required in host memory only)" : "FAIL");
  }
  const bool ref_ok = check_float64(a, x_host, values, tol);
  return ok && ref_ok ? 0 : 1;
}

// MPI around the run: MPI starts before Kokkos and ends after it. Errors every
// rank agreed on are printed once, by rank 0.
int distributed_main(const RunArgs& a, int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int code = 0;
  try {
    // One GPU per rank of a node, chosen before Kokkos binds its device.
    const int local = kfuse::mpi::node_local_rank(MPI_COMM_WORLD);
    if (kfuse::device::available()) kfuse::device::select_device(local);
    kfuse::ScopeGuard guard;
    code = run_distributed(a);  // every tensor and plan is gone before the guard finalizes
  } catch (const kfuse::mpi::CollectiveError& e) {
    if (rank == 0) {
      if (size > 1) std::fprintf(stderr, "kfuse: error: rank %d: %s\n", e.failed_rank(), e.what());
      else std::fprintf(stderr, "kfuse: error: %s\n", e.what());
    }
    code = 2;
  } catch (const kfuse::Error& e) {
    std::fprintf(stderr, "kfuse: error: rank %d: %s\n", rank, e.what());
    code = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kfuse: error: rank %d: internal: %s\n", rank, e.what());
    code = 2;
  }
  MPI_Finalize();
  return code;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kfuse: conv-transpose pipelines with fused reductions and epilogues"};
  app.set_version_flag("--version", version_text);
  app.require_subcommand(1);

  const std::string backend_help =
      "auto, kokkos or cuda. cuda: the CUDA kernels on data in CUDA memory; kokkos: the Kokkos kernels on data in "
      "Kokkos's memory (CUDA memory when Kokkos runs on CUDA); auto: CUDA memory when the CUDA backend is built in "
      "and a GPU is present, else Kokkos's. Input and output go through host memory";
  // CLI11's Range lets NaN through (every comparison with it is false).
  const CLI::Validator fraction(
      [](std::string& v) -> std::string {
        char* end = nullptr;
        const double d = std::strtod(v.c_str(), &end);
        return end != v.c_str() && *end == '\0' && d >= 0.0 && d <= 1.0 ? "" : "must be a number in [0, 1], got " + v;
      },
      "in [0, 1]");
  const CLI::Validator not_empty([](std::string& v) { return v.empty() ? std::string("an empty path") : std::string(); },
                                 "FILE");
  RunArgs a;
  CLI::App* run = app.add_subcommand("run", "Plan a JSON pipeline spec, run and time it, optionally check it");
  run->add_option("spec", a.spec, "The JSON pipeline spec")->required();
  run->add_option("--input", a.input, "Input .npy (default: the spec's input)");
  run->add_option("--output", a.output,
                  "Write the output to this .npy file (checked before any work; written to a temporary file "
                  "beside it, then renamed; never one of the run's inputs)")
      ->check(not_empty);
  run->add_option("--strategy", a.strategy, "auto, fold, fused_conv, fused or reference")
      ->check(CLI::IsMember({"auto", "fold", "fused_conv", "fused", "reference"}))
      ->capture_default_str();
  run->add_option("--y-layout", a.y_layout,
                  "Where the fused strategy writes the conv output Y: nchw, nhwc (channels-last, cuDNN's own "
                  "order) or auto (both measured at plan time on a GPU with tuning on, else nchw)")
      ->check(CLI::IsMember({"auto", "nchw", "nhwc"}))
      ->capture_default_str();
  run->add_option("--backend", a.backend, backend_help)
      ->check(CLI::IsMember({"auto", "kokkos", "cuda"}))
      ->capture_default_str();
  run->add_option("--precision", a.precision,
                   "The convolution's arithmetic: strict (fp32 multiply-adds) or tf32 (TF32 tensor cores, fp32 "
                   "accumulation, as PyTorch's default for cuDNN convolutions); default: the spec's, else strict")
      ->check(CLI::IsMember({"strict", "tf32"}));
  run->add_option("--dtype", a.dtype, "Build the pipeline in this dtype instead of the spec's")
      ->check(CLI::IsMember({"float32", "float64", "float16", "bfloat16"}));
  run->add_flag("--check", a.check,
                "Compare with the reference strategy (every op its own kernel) in float64 on the same values, on "
                "as many samples of the batch as it runs in about 10 s; exit 1 past the tolerance");
  run->add_option("--check-samples", a.check_samples,
                  "Check this many samples of the batch (evenly spread, the first and last included)")
      ->check(CLI::Range(int64_t(1), std::numeric_limits<int64_t>::max()));
  run->add_option("--tolerance", a.tolerance,
                  "Relative error allowed by --check (default 1e-5 for float32, 1e-3 for float32 with --precision "
                  "tf32, 1e-9 for float64, 1e-2 for float16 and bfloat16)")
      ->check(fraction);
  run->add_option("--repeat", a.repeat, "Timed runs")->check(CLI::Range(0, 1000000))->capture_default_str();
  run->add_option("--warmup", a.warmup, "Untimed runs first")->check(CLI::Range(0, 1000000))->capture_default_str();
  run->add_option("--progress", a.progress,
                  "Seconds between progress lines on stderr during long runs, input generation and the check (0: "
                  "none)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  run->add_flag("--dry-run", a.dry_run, "Print the plan and its cost, then stop: nothing is generated, run or written");
  run->add_option("--tuning", a.tuning,
                  "Launch tuning: off (rules only), cached (read the tuning cache) or auto (measure what the cache "
                  "lacks, write it); default KFUSE_TUNING, else cached")
      ->check(CLI::IsMember({"off", "cached", "auto"}));
#ifdef KFUSE_HAVE_MPI
  run->add_flag("--distributed", a.distributed,
                "Split the batch across the ranks of MPI_COMM_WORLD (mpirun -np P kfuse run ...); rank 0 gathers "
                "the output, prints it and, with --check, also compares it with a single-process run");
#endif

  RunArgs t;
  CLI::App* tune = app.add_subcommand(
      "tune", "Measure the launch configurations of a spec's kernels and write the winners to the tuning cache");
  tune->add_option("spec", t.spec, "The JSON pipeline spec")->required();
  tune->add_option("--strategy", t.strategy, "auto, fold, fused_conv, fused or reference")
      ->check(CLI::IsMember({"auto", "fold", "fused_conv", "fused", "reference"}))
      ->capture_default_str();
  tune->add_option("--y-layout", t.y_layout,
                  "Where the fused strategy writes the conv output Y: nchw, nhwc (channels-last, cuDNN's own "
                  "order) or auto (both measured at plan time on a GPU with tuning on, else nchw)")
      ->check(CLI::IsMember({"auto", "nchw", "nhwc"}))
      ->capture_default_str();
  tune->add_option("--backend", t.backend, backend_help)
      ->check(CLI::IsMember({"auto", "kokkos", "cuda"}))
      ->capture_default_str();
  tune->add_option("--precision", t.precision,
                   "The convolution's arithmetic: strict (fp32 multiply-adds) or tf32 (TF32 tensor cores, fp32 "
                   "accumulation, as PyTorch's default for cuDNN convolutions); default: the spec's, else strict")
      ->check(CLI::IsMember({"strict", "tf32"}));
  tune->add_option("--dtype", t.dtype, "Build the pipeline in this dtype instead of the spec's")
      ->check(CLI::IsMember({"float32", "float64", "float16", "bfloat16"}));
  tune->add_option("--cache", t.cache,
                   "The tuning cache to write (default: KFUSE_TUNING_CACHE, else $XDG_CACHE_HOME/kfuse/tuning.json, "
                   "else $HOME/.cache/kfuse/tuning.json)");
  tune->footer(
      "Every kernel with a launch choice measures at most 3 configurations (warps x pipelining depth, the baseline "
      "4x2 first; a warm-up, then the median of 5 runs) and keeps another only when it is at least 2% faster than the "
      "baseline. Without a cache entry a kernel starts from its architecture's configuration (tables for " +
      kfuse::tuning_architectures() + "; the device itself is always read at run time), else the rules on its registers. "
      "KFUSE_TUNING_FORCE=\"kernel=WxD,...\" (\"*\" for every kernel) forces a configuration.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kfuse: error: %s\nRun 'kfuse --help' or 'kfuse run --help' for usage.\n", e.what());
    return 2;
  }

  // The library reads KFUSE_TUNING only when a kernel first asks the tuner,
  // and then only warns (an application keeps running); a command rejects it.
  if (const char* v = std::getenv("KFUSE_TUNING"); v && *v) {
    try {
      kfuse::tuning_mode_from(v);
    } catch (const kfuse::Error& e) {
      std::fprintf(stderr, "kfuse: error: KFUSE_TUNING=%s: %s\n", v, e.what());
      return 2;
    }
  }
#ifdef KFUSE_HAVE_MPI
  if (a.distributed) return distributed_main(a, argc, argv);
#endif
  try {
    kfuse::ScopeGuard guard;
    // Every tensor and plan is gone before the guard finalizes.
    return tune->parsed() ? tune_command(t) : run_command(a);
  } catch (const kfuse::Error& e) {
    std::fprintf(stderr, "kfuse: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kfuse: error: internal: %s\n", e.what());
    return 2;
  }
}
