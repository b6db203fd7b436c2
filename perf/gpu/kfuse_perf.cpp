// kfuse_perf: times kfuse's plans on the GPU against a device-to-device copy
// measured in the same process (DESIGN.md section 9). Built with the CUDA
// backend (its kernels run the plans) or against a Kokkos with CUDA (the Kokkos
// kernels run them: device time is then the wall time of Plan::run, which
// ends with a fence).
//
// For each problem: random inputs (never zeros), a warm-up, then >= 50 timed
// runs of each kind below, each after flushing L2 (a read of twice the L2
// size), medians and minima of
//   device time  events recorded by the CUDA backend around its own launches
//                (the first kernel's start to the last one's end, the gaps
//                between kernels included), with the launches queued behind a
//                hold of the stream so that the host's enqueue latency is not
//                in it (the GPU's time, as ncu sees it);
//   wall time    Plan::run on the host (checks, launches, the final synchronize),
//                from runs without the hold;
//   host time    Plan::run's launches (or its CUDA graph's replay) up to the wait.
// floor = floor_bytes / copy bandwidth, copy bandwidth = (read + written bytes)
// / time of a large cudaMemcpy device to device; and the device time of a
// cudaMemcpy moving the floor's bytes, timed the same way (what a copy pays at
// that size: at a few MB, its launch and ramp-up exceed the floor). The output of each seed
// problem is checked against kfuse's float64 host plan on the same values.
//
// Writes <out>/<gpu>-<date>.json and .md; with --export DIR, the seed
// problems' inputs, weights and kfuse outputs as .npy for torch_compare.py.
//
// With --tuning, the spec problems and the spatial mean again three times:
// untuned (every kernel forced to the baseline, 4 warps and depth 2), the
// rules (KFUSE_TUNING=off: section 7 and the architecture table) and tuned
// (autotune into a fresh cache); the JSON and the Markdown list each kernel's
// measured candidates.
//
//   kfuse_perf --specs specs --out perf/results [--reps 50] [--export DIR]
//              [--only NAME] [--no-weak] [--tuning] [--ncu-mode] [--general DIR] [--y-layout L]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>  // getpid

#include "kfuse/device.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/npy.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/runtime.hpp"
#include "kfuse/spec.hpp"
#include "kfuse/tuning.hpp"
#include "kfuse_commit.h"  // KFUSE_GIT_COMMIT, written at build time (perf/gpu/CMakeLists.txt)

using namespace kfuse;
using json = nlohmann::json;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "kfuse_perf: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

struct Options {
  std::string specs = "specs";
  std::string out = "perf/results";
  std::string export_dir;
  std::string only;     // --only: run the cases whose name (in the set: "<case>-<precision>") contains it
  std::string general;  // --general DIR: the benchmark set that general.py prepared
  YLayout y_layout = YLayout::automatic;  // --y-layout: the conv output's layout in the set's plans
  int reps = 50;
  int warmup = 5;
  bool weak = true;
  bool tuning = false;
  bool ncu = false;  // one run per case, no flush, no copy benchmark (under ncu)

  bool wants(const std::string& name) const { return name.find(only) != std::string::npos; }
};

struct Stats {
  double median = 0, min = 0;
};
Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

cudaStream_t stream() { return cudaStreamPerThread; }

#ifdef KFUSE_HAVE_CUDA
constexpr bool kCudaBackend = true;
#else
constexpr bool kCudaBackend = false;  // the Kokkos kernels: float32 and float64, no cuDNN
#endif

// L2 flush before each timed run: a read-only pass (a kfuse sum) over a
// random buffer of twice the L2 size, so that the L2 holds only clean lines of
// that buffer. (A flush that *writes* 2 x L2 leaves up to an L2 of dirty
// lines whose write-back then lands inside the next timed run: up to ~17 us
// on an H100, more than half the floor of the second seed problem. Run 2 and
// run 3 of 2026-11-23 were timed with such a write flush.)
struct Flusher {
  Tensor buf, out;
  std::unique_ptr<Plan> plan;
  explicit Flusher(std::size_t l2) {
    const int64_t n = int64_t(std::max<std::size_t>(2 * l2, 1 << 20) / sizeof(float));
    buf = Tensor::empty({n}, DType::f32, Memory::cuda);
    ck(cudaMemset(buf.view().data, 0x3c, buf.view().bytes()), "flush buffer");  // never zeros
    PlanOptions po;
    po.memory = Memory::cuda;
    plan = std::make_unique<Plan>(Pipeline({n}, DType::f32).sum({0}), po);
    out = Tensor::empty(plan->output_shape(), DType::f32, Memory::cuda);
  }
  void flush() {
    plan->run(buf.view(), out.view());  // returns with the pass complete
    ck(cudaStreamSynchronize(stream()), "flush sync");
  }
};

// Holds the stream for `us` microseconds (a host callback that sleeps): what
// is launched meanwhile queues behind it, so a run's start event fires when the
// hold ends with its kernels already queued, and the event interval is the
// GPU's time alone. (An idle GPU otherwise starts the clock at the start event
// and waits for the host to launch: 1-5 us of the small folds' 20-40 us on the
// H200, 2026-12-05.) Plans are held on the CUDA backend only (Kokkos launches
// on its own stream); the reference copies run on this stream in either build.
void hold_stream(int us) {
  ck(cudaLaunchHostFunc(
         stream(),
         [](void* p) { std::this_thread::sleep_for(std::chrono::microseconds(reinterpret_cast<std::uintptr_t>(p))); },
         reinterpret_cast<void*>(std::uintptr_t(us))),
     "hold the stream");
}

// Median device time (ms) of a device-to-device cudaMemcpyAsync moving
// `moved` bytes (read + written: a copy of moved / 2), timed as a plan's
// device time is: L2 flushed, the copy queued behind a hold of the stream.
// At a large size it gives the copy bandwidth of the floor; at a plan's
// floor bytes, what the runtime's own copy kernel takes to move them (launch,
// ramp-up and drain in: the floor's bandwidth is not reached by a copy of a
// few MB either).
double copy_ms(std::size_t moved, Flusher& fl, int reps) {
  const std::size_t bytes = std::max<std::size_t>(moved / 2, 16);
  void *a = nullptr, *b = nullptr;
  ck(cudaMalloc(&a, bytes), "copy src");
  ck(cudaMalloc(&b, bytes), "copy dst");
  ck(cudaMemset(a, 0x3c, bytes), "copy init");
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  std::vector<double> ms;
  for (int i = 0; i < reps + 3; ++i) {
    fl.flush();
    hold_stream(1000);
    ck(cudaEventRecord(e0, stream()), "record");
    ck(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream()), "copy");
    ck(cudaEventRecord(e1, stream()), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float t = 0;
    ck(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    if (i >= 3) ms.push_back(t);
  }
  ck(cudaFree(a), "copy free");
  ck(cudaFree(b), "copy free");
  ck(cudaEventDestroy(e0), "event");
  ck(cudaEventDestroy(e1), "event");
  return stats(ms).median;
}

// Fills `t` (device) with random values in [lo, hi): a 64 MB random block
// from the host, repeated.
void fill_random(const TensorView& t, uint64_t seed, double lo = 0.0, double hi = 1.0) {
  const std::size_t bytes = t.bytes();
  const std::size_t es = size_of(t.dtype);
  const std::size_t block_elems = std::min<std::size_t>(bytes / es, (64u << 20) / es);
  Tensor d = Tensor::empty({int64_t(block_elems)}, DType::f64, Memory::host);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (std::size_t i = 0; i < block_elems; ++i) d.data<double>()[i] = u(rng);
  const Tensor h = t.dtype == DType::f64 ? d : cast(d.view(), t.dtype);
  const std::size_t chunk = block_elems * es;
  for (std::size_t off = 0; off < bytes; off += chunk)
    ck(cudaMemcpy(static_cast<char*>(t.data) + off, h.view().data, std::min(chunk, bytes - off), cudaMemcpyHostToDevice),
       "fill");
}

std::vector<double> host_values(const TensorView& dev) {
  const Tensor h = Tensor::copy_of(dev, Memory::host);
  const Tensor d = cast(h.view(), DType::f64);
  return std::vector<double>(d.data<double>(), d.data<double>() + d.numel());
}

double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i]) != std::isnan(ref[i])) return std::nan("");
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Timing {
  Stats device, wall, host;
  std::vector<double> step_ms;  // each step's median device time
};

// Times plan.run(x, out): warm-up, then reps runs after an L2 flush each, held
// (device time, each step's) on the CUDA backend, and reps more unheld (wall and
// host time; on Kokkos, device time too).
Timing time_plan(const Plan& plan, const TensorView& x, const TensorView& out, const Options& o, Flusher& fl) {
  device::set_run_timing(true);
  for (int i = 0; i < (o.ncu ? 1 : o.warmup); ++i) plan.run(x, out);
  std::vector<double> dev, wall, host;
  std::vector<std::vector<double>> steps;
  const int reps = o.ncu ? 1 : o.reps;
  const bool held = kCudaBackend && !o.ncu;
  bool warned = false;
  const auto timed_run = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    plan.run(x, out);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < reps; ++i) {
    if (!o.ncu) fl.flush();
    if (held) hold_stream(1000);  // far above Plan::run's enqueue time (host time: tens of us at most)
    double wall_ms = timed_run();
    if (held && device::last_run_host_ms() > 0.5 && !warned) {
      warned = true;  // the run's launches outlasted the hold: its device time has host latency in it
      std::fprintf(stderr, "kfuse_perf: warning: Plan::run took %.3f ms to launch, near the 1 ms hold\n",
                   device::last_run_host_ms());
    }
    dev.push_back(device::last_run_ms());
    const std::vector<double> s = device::last_step_ms();
    steps.resize(s.size());
    for (std::size_t k = 0; k < s.size(); ++k) steps[k].push_back(s[k]);
    if (held) {
      fl.flush();
      wall_ms = timed_run();
    }
    wall.push_back(wall_ms);
    host.push_back(device::last_run_host_ms());
  }
  device::set_run_timing(false);
  std::vector<double> step_ms;
  for (const std::vector<double>& s : steps) step_ms.push_back(stats(s).median);
  return Timing{stats(dev), stats(wall), stats(host), step_ms};
}

struct Context {
  Options opt;
  cudaDeviceProp prop{};
  double copy_gbps = 0;
  std::map<std::size_t, double> copy_ms_of;  // a copy's device time by the bytes it moves

  // The device time of a copy moving `moved` bytes (measured once a size; 0 under ncu).
  double same_bytes_copy_ms(std::size_t moved) {
    if (opt.ncu) return 0;
    auto it = copy_ms_of.find(moved);
    if (it == copy_ms_of.end()) it = copy_ms_of.emplace(moved, copy_ms(moved, *flusher, opt.reps)).first;
    return it->second;
  }
  json cases = json::array();
  std::unique_ptr<Flusher> flusher;
};

json& record(Context& c, const std::string& name, const std::string& group, const Plan& plan, const Timing& t,
            double rel_err = std::nan("")) {
  const double floor_ms = c.copy_gbps > 0 ? double(plan.floor_bytes()) / (c.copy_gbps * 1e9) * 1e3 : 0;
  json j;
  j["name"] = name;
  j["group"] = group;
  j["dtype"] = to_string(plan.dtype());
  j["strategy"] = to_string(plan.strategy());
  j["input_shape"] = plan.input_shape();
  j["floor_bytes"] = plan.floor_bytes();
  j["floor_ms"] = floor_ms;
  j["device_ms_median"] = t.device.median;
  j["device_ms_min"] = t.device.min;
  j["wall_ms_median"] = t.wall.median;
  j["wall_ms_min"] = t.wall.min;
  j["host_ms_median"] = t.host.median;
  j["GBps"] = double(plan.floor_bytes()) / (t.device.median * 1e-3) / 1e9;
  j["fraction_of_copy_bw"] = c.copy_gbps > 0 ? j["GBps"].get<double>() / c.copy_gbps : 0.0;
  j["time_over_floor"] = floor_ms > 0 ? t.device.median / floor_ms : 0.0;
  j["wall_over_floor"] = floor_ms > 0 ? t.wall.median / floor_ms : 0.0;
  const double copy_same = c.same_bytes_copy_ms(plan.floor_bytes());
  j["copy_same_bytes_ms"] = copy_same;
  j["time_over_copy_same_bytes"] = copy_same > 0 ? t.device.median / copy_same : 0.0;
  if (!std::isnan(rel_err)) j["rel_err_vs_fp64_host"] = rel_err;
  j["describe"] = plan.describe();
  j["step_device_ms_median"] = t.step_ms;
  std::string steps;
  for (double s : t.step_ms) steps += detail::cat(steps.empty() ? "  steps " : " + ", s);
  std::printf("%-34s %-8s %-9s device %9.4f ms (min %9.4f)  wall %9.4f ms  host %7.4f ms  floor %9.4f ms  x%5.2f  "
              "copy %9.4f ms  x%5.2f  %7.1f GB/s%s\n",
              name.c_str(), to_string(plan.dtype()), to_string(plan.strategy()), t.device.median, t.device.min,
              t.wall.median, t.host.median, floor_ms, floor_ms > 0 ? t.device.median / floor_ms : 0.0, copy_same,
              j["time_over_copy_same_bytes"].get<double>(), j["GBps"].get<double>(),
              std::isnan(rel_err) ? "" : detail::cat("  rel err ", rel_err).c_str());
  if (t.step_ms.size() > 1) std::printf("%36s%s ms\n", "", steps.c_str());
  std::fflush(stdout);
  c.cases.push_back(j);
  return c.cases.back();
}


// Writes the spec's tensors (weights, operands), the input and kfuse's output as .npy.
void export_problem(const std::string& dir, const std::string& name, const Spec& spec, const Tensor& host_x,
                    const TensorView& dev_out) {
  const std::string p = dir + "/" + name + "_";
  const auto f32 = [](const TensorView& v) { return v.dtype == DType::f32 || v.dtype == DType::f64 ? Tensor::copy_of(v, Memory::host) : cast(v, DType::f32); };
  write_npy(p + "x.npy", f32(host_x.view()).view());
  int k = 0;
  for (const PipelineStage& st : spec.pipeline.stages()) {
    if (auto* c = std::get_if<ConvTranspose2dOp>(&st.op)) {
      write_npy(p + "op" + std::to_string(k) + "_weight.npy", c->weight.view());
      if (c->bias) write_npy(p + "op" + std::to_string(k) + "_bias.npy", c->bias->view());
    } else if (auto* b = std::get_if<BinaryOp>(&st.op)) {
      if (b->operand) write_npy(p + "op" + std::to_string(k) + "_operand.npy", b->operand->view());
    }
    ++k;
  }
  const Tensor out = Tensor::copy_of(dev_out, Memory::host);
  write_npy(p + "kfuse_out.npy", f32(out.view()).view());
}

// This process's tuning decisions: per kernel and shape class, the choice, why,
// and the measured candidates.
json decisions_json() {
  json out = json::array();
  for (const TuningDecision& d : tuning_decisions()) {
    json j{{"kernel", d.kernel}, {"shape_class", d.shape_class}, {"source", d.source}, {"why", d.why},
           {"chosen", detail::cat(d.chosen.warps, "x", d.chosen.depth)}};
    j["candidates"] = json::array();
    for (const TuningDecision::Candidate& k : d.candidates)
      j["candidates"].push_back({{"config", detail::cat(k.config.warps, "x", k.config.depth)}, {"ms", k.ms}});
    out.push_back(j);
  }
  return out;
}

// A spec problem in `dtype` (the spec's own when nullopt): time, check against
// the float64 host plan, export.
void run_spec(Context& c, const std::string& path, const std::string& name, std::optional<DType> dtype,
              Strategy strategy = Strategy::automatic) {
  const Spec spec = load_spec(path, dtype);
  PlanOptions po;
  po.memory = Memory::cuda;
  po.strategy = strategy;
  const Plan plan(spec.pipeline, po);
  const Tensor hx = make_input(spec);
  const Tensor dx = Tensor::copy_of(hx.view(), Memory::cuda);
  Tensor out = Tensor::empty(plan.output_shape(), plan.dtype(), Memory::cuda);
  ck(cudaMemset(out.view().data, 0xFF, out.view().bytes()), "poison");
  const Timing t = time_plan(plan, dx.view(), out.view(), c.opt, *c.flusher);
  double err = std::nan("");
  std::vector<double> ref_values;
  if (!c.opt.ncu) {
    // float64 host reference on the same values (the fold on the host: one pass over x).
    const Spec ref = load_spec(path, DType::f64);
    PlanOptions host;
    host.memory = Memory::host;
    const Plan hp(ref.pipeline, host);
    const Tensor hx64 = cast(hx.view(), DType::f64);
    const Tensor r = hp.run(hx64.view());
    ref_values.assign(r.data<double>(), r.data<double>() + r.numel());
    err = rel_error(host_values(out.view()), ref_values);
    if (!c.opt.export_dir.empty() && strategy == Strategy::automatic) export_problem(c.opt.export_dir, name, spec, hx, out.view());
  }
  record(c, name, "spec", plan, t, err);
  if (!c.opt.tuning || c.opt.ncu) return;
  // Untuned, rules, tuned (the header); the tuner's decisions of the tuned run kept per kernel.
  const std::string cache = c.opt.out + "/.tuning-cache-" + std::to_string(::getpid()) + ".json";
  const std::pair<const char*, std::function<void()>> variants[] = {
      {"untuned", [] { set_tuning_mode(TuningMode::off), force_launch("*", LaunchChoice{4, 2}); }},
      {"rules", [] { force_launch("*", std::nullopt), set_tuning_mode(TuningMode::off); }},
      {"tuned", [&] { set_tuning_cache_path(cache), set_tuning_mode(TuningMode::autotune); }},
  };
  for (const auto& [variant, apply] : variants) {
    clear_tuning_decisions();
    apply();
    ck(cudaMemset(out.view().data, 0xFF, out.view().bytes()), "poison");
    const Timing tv = time_plan(plan, dx.view(), out.view(), c.opt, *c.flusher);
    json& j = record(c, name + "_" + variant, "tuning", plan, tv, rel_error(host_values(out.view()), ref_values));
    j["tuning"] = decisions_json();
  }
  std::remove(cache.c_str());
  set_tuning_mode(TuningMode::cached);
}

// A pipeline without a front op over a large random x: the epilogue kernels alone.
void run_epilogue(Context& c, const std::string& name, const Shape& xs, const std::function<void(Pipeline&)>& ops) {
  Pipeline p(xs, DType::f32);
  ops(p);
  PlanOptions po;
  po.memory = Memory::cuda;
  po.strategy = Strategy::fused;
  const Plan plan(p, po);
  Tensor x = Tensor::empty(xs, DType::f32, Memory::cuda);
  fill_random(x.view(), 17, -2.0, 2.0);
  Tensor out = Tensor::empty(plan.output_shape(), DType::f32, Memory::cuda);
  const Timing t = time_plan(plan, x.view(), out.view(), c.opt, *c.flusher);
  record(c, name, "epilogue", plan, t);
}

// The first seed problem's pipeline at x [N, 64, H, W] (the fold's weak
// scaling): N = 16 in float32 and 32 in bfloat16, so both dtypes read the same
// bytes at each size.
void run_weak(Context& c, int64_t hw, DType dtype) {
  const Shape xs{dtype == DType::f32 ? 16 : 32, 64, hw, hw};
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-1.0 / 24, 1.0 / 24);
  Tensor w = Tensor::empty({64, 128, 3, 3}, DType::f32, Memory::host), b = Tensor::empty({128}, DType::f32, Memory::host),
         b2 = Tensor::empty({128, 1, 1}, DType::f32, Memory::host);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = float(u(rng));
  for (int64_t i = 0; i < 128; ++i) b.data<float>()[i] = float(u(rng)), b2.data<float>()[i] = float(u(rng) * 24);
  Pipeline p(xs, dtype);
  p.conv_transpose2d(w, b).mean({2, 3}, true).add(b2).logsumexp({1}, true).sum({2, 3}).mul(10.0);
  PlanOptions po;
  po.memory = Memory::cuda;
  const Plan plan(p, po);
  Tensor x = Tensor::empty(xs, dtype, Memory::cuda);
  fill_random(x.view(), 23);
  Tensor out = Tensor::empty(plan.output_shape(), dtype, Memory::cuda);
  const Timing t = time_plan(plan, x.view(), out.view(), c.opt, *c.flusher);
  record(c, detail::cat("fold_weak_", dtype == DType::f32 ? "" : "bf16_", double(x.view().bytes()) / (1 << 20), "MiB"),
         "weak_scaling", plan, t);
}

// The public benchmark set (specs/general, real sizes), as perf/gpu/general.py
// prepared it in `dir`: cases.json lists each case's resolved spec (input and
// weights as .npy, shared with PyTorch) and the precisions to time. Each
// output goes to <dir>/<case>-<precision>-kfuse.npy for general.py to check
// against a float64 PyTorch reference; a pipeline no backend runs is recorded
// with the planner's reason.
void run_general(Context& c, const std::string& dir) {
  json cases;
  std::ifstream(dir + "/cases.json") >> cases;
  for (const json& k : cases) {
    const std::string name = k["name"].get<std::string>();
    // "strict" and "tf32": the float32 spec; "bf16": the spec in bfloat16 (fp32 accumulation).
    // Each dtype's spec and input on the device are made once.
    std::map<bool, std::pair<Spec, Tensor>> loaded;
    const auto in_dtype = [&](bool bf16) -> const std::pair<Spec, Tensor>& {
      auto it = loaded.find(bf16);
      if (it == loaded.end()) {
        Spec spec = load_spec(dir + "/" + k["spec"].get<std::string>(),
                              bf16 ? std::optional<DType>(DType::bf16) : std::nullopt);
        Tensor dx = Tensor::copy_of(make_input(spec).view(), Memory::cuda);
        it = loaded.emplace(bf16, std::make_pair(std::move(spec), std::move(dx))).first;
      }
      return it->second;
    };
    for (const json& pj : k["precisions"]) {
      const std::string prec = pj.get<std::string>();
      const std::string label = name + "-" + prec;
      if (!c.opt.wants(label)) continue;
      const bool bf16 = prec == "bf16";
      const auto& [spec, dx] = in_dtype(bf16);
      PlanOptions po;
      po.memory = Memory::cuda;
      po.precision = bf16 ? Precision::strict : precision_from(prec);
      po.y_layout = c.opt.y_layout;
      std::unique_ptr<Plan> plan;
      try {
        plan = std::make_unique<Plan>(spec.pipeline, po);
      } catch (const Error& e) {
        std::printf("%-34s refused: %s\n", label.c_str(), e.what());
        c.cases.push_back({{"name", label}, {"group", "general"}, {"refused", e.what()}});
        continue;
      }
      Tensor out = Tensor::empty(plan->output_shape(), plan->dtype(), Memory::cuda);
      ck(cudaMemset(out.view().data, 0xFF, out.view().bytes()), "poison");
      const Timing t = time_plan(*plan, dx.view(), out.view(), c.opt, *c.flusher);
      json& j = record(c, label, "general", *plan, t);
      j["precision"] = prec;
      const Tensor h = Tensor::copy_of(out.view(), Memory::host);
      write_npy(dir + "/" + label + "-kfuse.npy", (h.dtype() == DType::f32 ? h : cast(h.view(), DType::f32)).view());
    }
  }
}

std::string today() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&now));
  return buf;
}

std::string slug(std::string s) {
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '-';
  return s;
}

// Whether the file was written.
bool write_markdown(const json& j, const std::string& path) {
  std::ofstream md(path);
  md << "# kfuse perf: " << j["device"]["name"].get<std::string>() << ", " << j["date"].get<std::string>() << ", commit "
     << j["commit"].get<std::string>() << "\n\n";
  md << "Build: " << j["build"].get<std::string>() << "; timing: " << j["timing"].get<std::string>() << ".\n\n";
  md << "Device-to-device copy: " << j["copy_GBps"].get<double>() << " GB/s (read + write). Wall: Plan::run on the "
        "host, with its wait; host: its launches (or its CUDA graph's replay) up to the wait. Copy: the device time of a "
        "cudaMemcpyAsync moving the floor's bytes (read + written), timed as the device time is. Medians of "
     << j["reps"].get<int>() << " runs, L2 flushed before each.\n\n";
  md << "| problem | group | dtype | strategy | device ms (median / min) | wall ms | host ms | floor ms | time/floor | wall/floor | copy ms | time/copy | GB/s | of copy BW | rel err vs fp64 |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const json& c : j["cases"]) {
    if (c.contains("refused")) {
      md << "| " << c["name"].get<std::string>() << " | " << c["group"].get<std::string>() << " | refused: "
         << c["refused"].get<std::string>() << " |||||||||||||\n";
      continue;
    }
    char line[640];
    std::snprintf(line, sizeof line, "| %s | %s | %s | %s | %.4f / %.4f | %.4f | %.4f | %.4f | %.2f | %.2f | %.4f | %.2f | %.0f | %.0f%% | %s |\n",
                  c["name"].get<std::string>().c_str(), c["group"].get<std::string>().c_str(),
                  c["dtype"].get<std::string>().c_str(), c["strategy"].get<std::string>().c_str(),
                  c["device_ms_median"].get<double>(), c["device_ms_min"].get<double>(), c["wall_ms_median"].get<double>(),
                  c.value("host_ms_median", 0.0), c["floor_ms"].get<double>(), c["time_over_floor"].get<double>(),
                  c["wall_over_floor"].get<double>(), c.value("copy_same_bytes_ms", 0.0),
                  c.value("time_over_copy_same_bytes", 0.0), c["GBps"].get<double>(),
                  100 * c["fraction_of_copy_bw"].get<double>(),
                  c.contains("rel_err_vs_fp64_host") ? detail::cat(c["rel_err_vs_fp64_host"].get<double>()).c_str() : "");
    md << line;
  }
  // The tuned runs' decisions: each kernel's measured candidates (baseline first).
  bool header = false;
  for (const json& c : j["cases"]) {
    if (!c.contains("tuning") || c["name"].get<std::string>().find("_tuned") == std::string::npos) continue;
    for (const json& d : c["tuning"]) {
      if (!header) {
        md << "\nTuned runs, per kernel: the candidates measured by the tuner (median of 5 runs of the kernel alone, "
              "baseline 4x2 first; a winner must beat it by 2%).\n\n| problem | kernel | shape class | candidates (ms) | "
              "chosen | source |\n|---|---|---|---|---|---|\n";
        header = true;
      }
      std::string cands;
      for (const json& k : d["candidates"]) cands += detail::cat(cands.empty() ? "" : ", ", k["config"].get<std::string>(), ": ", k["ms"].get<double>());
      md << "| " << c["name"].get<std::string>() << " | " << d["kernel"].get<std::string>() << " | "
         << d["shape_class"].get<std::string>() << " | " << cands << " | " << d["chosen"].get<std::string>() << " | "
         << d["source"].get<std::string>() << " |\n";
    }
  }
  md.close();
  return bool(md);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kfuse_perf: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--specs") o.specs = next();
    else if (a == "--out") o.out = next();
    else if (a == "--export") o.export_dir = next();
    else if (a == "--only") o.only = next();
    else if (a == "--general") o.general = next();
    else if (a == "--y-layout") o.y_layout = y_layout_from(next());
    else if (a == "--reps") o.reps = std::max(50, std::atoi(next().c_str()));
    else if (a == "--no-weak") o.weak = false;
    else if (a == "--tuning") o.tuning = true;
    else if (a == "--ncu-mode") o.ncu = true, o.weak = false;
    else {
      std::fprintf(stderr, "usage: kfuse_perf [--specs DIR] [--out DIR] [--export DIR] [--only NAME] [--reps N>=50] "
                           "[--no-weak] [--tuning] [--ncu-mode] [--general DIR] [--y-layout auto|nchw|nhwc]\n");
      return 2;
    }
  }
  // The results' folder, made now: a run must not end with nowhere to write.
  std::error_code made;
  std::filesystem::create_directories(o.out, made);
  if (made) {
    std::fprintf(stderr, "kfuse_perf: cannot make --out %s: %s\n", o.out.c_str(), made.message().c_str());
    return 2;
  }
  ScopeGuard guard;
  Context c;
  c.opt = o;
  int dev = 0;
  ck(cudaGetDevice(&dev), "device");
  ck(cudaGetDeviceProperties(&c.prop, dev), "properties");
  c.flusher = std::make_unique<Flusher>(std::size_t(c.prop.l2CacheSize));
  std::printf("device %s, %d SMs, L2 %d MB\n", c.prop.name, c.prop.multiProcessorCount, c.prop.l2CacheSize >> 20);
  if (!o.ncu) {
    const std::size_t moved = std::size_t(2) << 30;  // a copy of 1 GiB
    c.copy_gbps = double(moved) / (copy_ms(moved, *c.flusher, 20) * 1e-3) / 1e9;
  }
  std::printf("device-to-device copy: %.1f GB/s (read + write)\n", c.copy_gbps);

  const std::string s1 = o.specs + "/convt_gap_bias_lse.json", s2 = o.specs + "/convt_mul_gap.json";
  try {
    if (!o.general.empty()) {
      run_general(c, o.general);
    } else {
      if (o.wants("convt_gap_bias_lse")) run_spec(c, s1, "convt_gap_bias_lse", std::nullopt);
      if (o.wants("convt_mul_gap")) run_spec(c, s2, "convt_mul_gap", std::nullopt);
      if (o.wants("spatial_mean")) run_spec(c, o.specs + "/spatial_mean.json", "spatial_mean", std::nullopt);
      if (kCudaBackend && o.wants("convt_gap_bias_lse_bf16")) run_spec(c, s1, "convt_gap_bias_lse_bf16", DType::bf16);
      if (kCudaBackend && o.wants("convt_mul_gap_bf16")) run_spec(c, s2, "convt_mul_gap_bf16", DType::bf16);
      if (kCudaBackend && o.wants("convt_mul_gap_fused"))
        run_spec(c, s2, "convt_mul_gap_fused_cudnn", std::nullopt, Strategy::fused);
      const Shape big{16, 128, 256, 256};
      if (o.wants("epi_mean_hw")) run_epilogue(c, "epi_mean_hw", big, [](Pipeline& p) { p.mean({2, 3}); });
      if (o.wants("epi_lse_c")) run_epilogue(c, "epi_lse_c", big, [](Pipeline& p) { p.logsumexp({1}, true); });
      if (o.wants("epi_relu_map")) run_epilogue(c, "epi_relu_mul_map", big, [](Pipeline& p) { p.relu().mul(2.0); });
      if (o.wants("epi_softmax_w")) run_epilogue(c, "epi_softmax_w", big, [](Pipeline& p) { p.softmax(3); });
      if (o.wants("epi_softmax_c")) run_epilogue(c, "epi_softmax_c", big, [](Pipeline& p) { p.softmax(1); });
      if (o.wants("epi_gap_tail")) run_epilogue(c, "epi_mean_bias_lse_tail", big, [](Pipeline& p) {
        Tensor b = Tensor::empty({128, 1, 1}, DType::f32, Memory::host);
        for (int64_t i = 0; i < 128; ++i) b.data<float>()[i] = float(0.01 * i);
        p.mean({2, 3}, true).add(b).logsumexp({1}, true).mul(10.0);
      });
      if (o.weak && o.wants("fold_weak"))
        for (DType dt : {DType::f32, DType::bf16})
          if (kCudaBackend || dt == DType::f32)  // (the Kokkos kernels take no bfloat16)
            for (int64_t hw : {32, 64, 128, 256, 512, 1024}) run_weak(c, hw, dt);  // 4 MiB to 4 GiB
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kfuse_perf: %s\n", e.what());
    return 1;
  }

  json j;
  j["device"] = {{"name", c.prop.name},
                 {"sm_count", c.prop.multiProcessorCount},
                 {"l2_bytes", c.prop.l2CacheSize},
                 {"compute_capability", detail::cat(c.prop.major, ".", c.prop.minor)}};
  j["date"] = today();
  const char* commit = std::getenv("KFUSE_GIT_COMMIT");
  j["commit"] = commit && *commit ? std::string(commit) : std::string(KFUSE_GIT_COMMIT);
  j["build"] = kCudaBackend ? "hand-written CUDA backend" : std::string("Kokkos ") + ExecSpace::name() + " (no hand-written CUDA backend)";
  j["timing"] = kCudaBackend ? "device: CUDA events around a plan's steps (kfuse::device::set_run_timing), its launches queued behind a hold of the stream (the GPU's time: the gaps between kernels in, the host's enqueue latency out); wall and host: runs without the hold"
                             : "device: CUDA events around a plan's steps, which each end with a Kokkos fence (about the wall time)";
  j["copy_GBps"] = c.copy_gbps;
  j["reps"] = o.ncu ? 1 : o.reps;
  j["cases"] = c.cases;
  const std::string base = o.out + "/" + slug(c.prop.name) + "-" + j["date"].get<std::string>() + (o.ncu ? "-ncu" : "") +
                           (o.general.empty() ? "" : "-general");
  std::ofstream js(base + ".json");
  js << j.dump(2) << "\n";
  js.close();
  if (!js || !write_markdown(j, base + ".md")) {
    std::fprintf(stderr, "kfuse_perf: could not write %s.json and .md\n", base.c_str());
    return 1;
  }
  std::printf("wrote %s.json and %s.md\n", base.c_str(), base.c_str());
  return 0;
}
