// kfuse: plan and run a JSON pipeline spec, time it, and check it against a
// float64 reference.
//
//   kfuse run specs/small/convt_gap_bias_lse.json --check
//   kfuse run SPEC [--input x.npy] [--output out.npy] [--strategy auto|fold|fused|reference]
//                  [--backend auto|kokkos|cuda] [--dtype float32|float64] [--check]
//                  [--tolerance T] [--repeat N] [--warmup N] [--tuning off|cached|auto]
//   mpirun -np P kfuse run SPEC --distributed ...   (built with KFUSE_ENABLE_MPI)
//   kfuse tune SPEC [--backend ...] [--dtype ...] [--cache PATH]
//
// Exit codes: 0 success, 1 the check failed, 2 an error (bad arguments, a bad
// spec, a planning or runtime error).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kfuse/kokkos.hpp"
#include "kfuse/npy.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/runtime.hpp"
#include "kfuse/spec.hpp"
#include "kfuse/tuning.hpp"
#include "kfuse/version.hpp"

#include "core/device_runtime.hpp"
#include "tuning/tuner.hpp"

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
  std::string backend = "auto";
  std::string dtype;
  std::string tuning;  // --tuning (empty: KFUSE_TUNING's mode)
  std::string cache;   // tune --cache (empty: the default tuning cache)
  bool check = false;
  bool distributed = false;  // --distributed (MPI builds): the batch split across MPI_COMM_WORLD
  double tolerance = -1.0;  // < 0: the dtype's default
  int repeat = 10;
  int warmup = 2;
};

// Where the tensors live: CUDA memory for the CUDA backend, and for auto when
// it is built in and a GPU is present; else the Kokkos backend's memory.
kfuse::Memory memory_for(kfuse::BackendChoice b) {
  if (b == kfuse::BackendChoice::cuda) return kfuse::Memory::cuda;
#ifdef KFUSE_HAVE_CUDA
  if (b == kfuse::BackendChoice::automatic && kfuse::device::available()) return kfuse::Memory::cuda;
#endif
  return kfuse::kokkos_memory();
}

kfuse::PlanOptions plan_options(const RunArgs& a) {
  kfuse::PlanOptions opt;
  opt.strategy = kfuse::strategy_from(a.strategy);
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
// output). run() runs once and returns its seconds. With `progress`, a line on
// stderr once the runs get long.
template <class Run>
std::vector<double> timed_runs(const RunArgs& a, bool progress, const Run& run) {
  const int total = a.warmup + a.repeat;
  std::vector<double> times;
  const auto t_start = Clock::now();
  double last_report = 0.0;
  for (int i = 0; i < std::max(total, 1); ++i) {
    const double dt = run();
    if (i >= a.warmup && i < total) times.push_back(dt);
    const double elapsed = seconds_since(t_start);
    if (progress && elapsed > 1.0 && elapsed - last_report >= 1.0 && i + 1 < total) {
      const bool warm = i < a.warmup;
      std::fprintf(stderr, "%s %d/%d, %.1f s\n", warm ? "warmup" : "repeat", warm ? i + 1 : i + 1 - a.warmup,
                   warm ? a.warmup : a.repeat, elapsed);
      last_report = elapsed;
    }
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

// Default check tolerance: the pipeline's dtype against a float64 reference.
double default_tolerance(kfuse::DType d) {
  switch (d) {
    case kfuse::DType::f32: return 1e-5;
    case kfuse::DType::f64: return 1e-9;
    case kfuse::DType::f16:
    case kfuse::DType::bf16: return 1e-2;
  }
  return 1e-4;
}

// --check: the same problem (same rounded weights and input) in float64;
// prints the check line and says whether the output is within the tolerance.
bool check_float64(const RunArgs& a, const kfuse::Pipeline& pipeline, const kfuse::Tensor& x_host,
                   const std::vector<double>& values, kfuse::DType dtype) {
  // The reference: the same problem (same rounded weights and input) in
  // float64, by the reference strategy when the conv is small enough to run op
  // by op, else by the fold.
  const double macs = kfuse::conv_macs(pipeline);
  const kfuse::Spec ref_spec = kfuse::load_spec(a.spec, kfuse::DType::f64);
  kfuse::PlanOptions ref_opt;
  ref_opt.memory = kfuse::Memory::host;  // x_host and the values are on the host
  ref_opt.strategy = macs < 2e9 ? kfuse::Strategy::reference : kfuse::Strategy::fold;
  std::optional<kfuse::Plan> ref_plan;
  try {
    ref_plan.emplace(ref_spec.pipeline, ref_opt);
  } catch (const kfuse::Error& e) {
    if (ref_opt.strategy != kfuse::Strategy::fold) throw;
    std::fprintf(stderr, "kfuse: note: the fold does not apply (%s); the float64 reference runs op by op (%.3g MACs)\n",
                 e.what(), macs);
    ref_opt.strategy = kfuse::Strategy::reference;
    ref_plan.emplace(ref_spec.pipeline, ref_opt);
  }
  const kfuse::Tensor x_ref = kfuse::cast(x_host, kfuse::DType::f64);
  const auto t_ref = Clock::now();
  const kfuse::Tensor ref = ref_plan->run(x_ref);
  synchronize();
  const double ref_s = seconds_since(t_ref);
  if (ref_s > 1.0) std::fprintf(stderr, "reference done, %.1f s\n", ref_s);

  const std::vector<double> ref_values = to_doubles(ref);
  const Comparison c = compare(values, ref_values);
  const double tol = a.tolerance >= 0 ? a.tolerance : default_tolerance(dtype);
  const bool ok = c.rel <= tol && c.nonfinite_mismatch == 0;
  std::printf("check: reference float64 strategy %s (%.3g MACs): relative error %.3e, max abs error %.3e",
              kfuse::to_string(ref_opt.strategy), macs, c.rel, c.max_abs);
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

int run_command(const RunArgs& a) {
  if (!a.tuning.empty()) kfuse::set_tuning_mode(kfuse::tuning_mode_from(a.tuning));
  const kfuse::Spec spec = load(a);
  const kfuse::Pipeline& pipeline = spec.pipeline;
  const kfuse::Plan plan(pipeline, plan_options(a));
  const kfuse::Tensor x_host = host_input(a, spec);

  std::printf("spec: %s (%s)\n", spec.name.c_str(), a.spec.c_str());
  std::printf("input: %s %s (%s)\n", kfuse::to_string(pipeline.input_shape()).c_str(),
              kfuse::to_string(pipeline.dtype()),
              a.input.empty() ? describe_input(spec.input).c_str() : ("from " + a.input).c_str());
  std::printf("%s", plan.describe().c_str());
  if (!plan.describe().empty() && plan.describe().back() != '\n') std::printf("\n");
  std::fflush(stdout);

  const kfuse::Memory mem = plan.memory();
  const kfuse::Tensor x = in_memory(x_host, mem);
  const kfuse::Tensor out = kfuse::Tensor::empty(plan.output_shape(), plan.dtype(), mem);
  report_times(timed_runs(a, true,
                          [&] {
                            const auto t0 = Clock::now();
                            plan.run(x, out);
                            synchronize();
                            return seconds_since(t0);
                          }),
               plan.floor_bytes(), a, "");
  const std::vector<double> values = emit_output(in_memory(out, kfuse::Memory::host), plan.output_shape(), a);
  if (!a.check) return 0;
  return check_float64(a, pipeline, x_host, values, plan.dtype()) ? 0 : 1;
}

// `kfuse tune SPEC`: the plan of `run`, once to warm up with the cache left
// alone, then once measuring every kernel's candidates (autotune, retune);
// prints what each kernel measured and chose, and where it was written.
int tune_command(const RunArgs& a) {
  if (!a.cache.empty()) kfuse::set_tuning_cache_path(a.cache);
  const kfuse::Spec spec = load(a);
  const kfuse::Plan plan(spec.pipeline, plan_options(a));
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
  const kfuse::tuning::CacheTable table = kfuse::tuning::read_cache(path, nullptr);
  int measured = 0, written = 0;
  for (const kfuse::TuningDecision& d : decisions) {
    if (d.source != "measured") continue;
    ++measured;
    written += table.count(kfuse::tuning::CacheKey{d.device, d.kernel, d.shape_class}) > 0;
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
  kfuse::mpi::agree(comm, [&] { spec.emplace(load(a)); });
  const kfuse::Pipeline& pipeline = spec->pipeline;

  const kfuse::PlanOptions opt = plan_options(a);
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
  const std::vector<double> times = timed_runs(a, rank == 0, [&] {
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
    const double tol = a.tolerance >= 0 ? a.tolerance : default_tolerance(plan.dtype());
    ok = mem != kfuse::Memory::host && c.rel <= tol && c.nonfinite_mismatch == 0;
    std::printf("%lld of %lld values differ, relative error %.3e, max abs error %.3e: %s\n",
                static_cast<long long>(differ), static_cast<long long>(one_host.numel()), c.rel, c.max_abs,
                ok ? "PASS (within the tolerance; bit-identity is required in host memory only)" : "FAIL");
  }
  const bool ref_ok = check_float64(a, pipeline, x_host, values, plan.dtype());
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
  RunArgs a;
  CLI::App* run = app.add_subcommand("run", "Plan a JSON pipeline spec, run and time it, optionally check it");
  run->add_option("spec", a.spec, "The JSON pipeline spec")->required();
  run->add_option("--input", a.input, "Input .npy (default: the spec's input)");
  run->add_option("--output", a.output, "Write the output to this .npy file");
  run->add_option("--strategy", a.strategy, "auto, fold, fused or reference")
      ->check(CLI::IsMember({"auto", "fold", "fused", "reference"}))
      ->capture_default_str();
  run->add_option("--backend", a.backend, backend_help)
      ->check(CLI::IsMember({"auto", "kokkos", "cuda"}))
      ->capture_default_str();
  run->add_option("--dtype", a.dtype, "Build the pipeline in this dtype instead of the spec's")
      ->check(CLI::IsMember({"float32", "float64", "float16", "bfloat16"}));
  run->add_flag("--check", a.check, "Compare with a float64 reference; exit 1 past the tolerance");
  run->add_option("--tolerance", a.tolerance,
                  "Relative error allowed by --check (default 1e-5 for float32, 1e-9 for float64)")
      ->check(CLI::Range(0.0, 1.0));
  run->add_option("--repeat", a.repeat, "Timed runs")->check(CLI::Range(0, 1000000))->capture_default_str();
  run->add_option("--warmup", a.warmup, "Untimed runs first")->check(CLI::Range(0, 1000000))->capture_default_str();
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
  tune->add_option("--strategy", t.strategy, "auto, fold, fused or reference")
      ->check(CLI::IsMember({"auto", "fold", "fused", "reference"}))
      ->capture_default_str();
  tune->add_option("--backend", t.backend, backend_help)
      ->check(CLI::IsMember({"auto", "kokkos", "cuda"}))
      ->capture_default_str();
  tune->add_option("--dtype", t.dtype, "Build the pipeline in this dtype instead of the spec's")
      ->check(CLI::IsMember({"float32", "float64", "float16", "bfloat16"}));
  tune->add_option("--cache", t.cache,
                   "The tuning cache to write (default: KFUSE_TUNING_CACHE, else $XDG_CACHE_HOME/kfuse/tuning.json, "
                   "else $HOME/.cache/kfuse/tuning.json)");
  std::string arch_text;
  for (int arch : {89, 90})
    if (const auto l = kfuse::tuning::arch_limits(arch))
      arch_text += kfuse::detail::cat(arch_text.empty() ? "" : ", ", "sm_", arch, " (", l->sm_count, " SMs, ",
                                      l->max_threads_per_sm, " threads and ", l->shared_per_sm >> 10,
                                      " KB shared memory per SM)");
  tune->footer(
      "Every kernel with a launch choice measures at most 3 configurations (warps x pipelining depth, the baseline "
      "4x2 first; a warm-up, then the median of 5 runs) and keeps another only when it is at least 2% faster than the "
      "baseline. Without a cache entry a kernel starts from its architecture's configuration (tables for " +
      arch_text + "; the device itself is always read at run time), else the rules on its registers. "
      "KFUSE_TUNING_FORCE=\"kernel=WxD,...\" (\"*\" for every kernel) forces a configuration.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kfuse: error: %s\nRun 'kfuse --help' or 'kfuse run --help' for usage.\n", e.what());
    return 2;
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
