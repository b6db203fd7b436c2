// The tuner's kernel-facing side (the public side is include/kfuse/tuning.hpp).
// A kernel describes itself in a Request and hands a Measure callback that runs
// it once with a given configuration; tuner() returns the configuration to
// launch with. No CUDA here: backends read the attributes and time the runs.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "kfuse/tuning.hpp"
#include "launch.hpp"

namespace kfuse::tuning {

struct Request {
  std::string kernel;       // "cuda::fold_plane_sums", "kokkos::fold_plane_sums", ...
  std::string shape_class;  // shape_class(): the sizes that change the best launch, bucketed
  std::string device;       // the device's name (cudaDeviceProp::name)
  int arch = 0;             // compute capability, major * 10 + minor (89, 90)
  KernelResources resources;
  DeviceLimits limits;
  int distinct_inputs = 1;  // distinct inputs loaded per iteration
  Bound bound = Bound::memory;
  std::vector<int> warps = {4, 8};   // the warps the kernel can run with
  std::vector<int> depths = {2, 3};  // its pipelining depths ({2} when it has none)
};

// Sizes bucketed to powers of two, as "name=2^k,...": runs of nearby sizes share an entry.
std::string shape_class(const std::vector<std::pair<std::string, long long>>& sizes);

// Runs the kernel once with `c` (complete: fenced or synchronized) and returns
// its time in ms; the tuner calls it several times per candidate and keeps the median.
using Measure = std::function<double(const LaunchConfig& c)>;

// The configuration to launch `r` with (include/kfuse/tuning.hpp's order).
// `measure` is called only in autotune mode, for a key without a cache entry
// (or with one, under set_tuning_retune): once to warm up, then five times per
// candidate. An empty `measure` says the kernel cannot be re-run on these
// arguments (it would overwrite its own input): the decision is then made as in
// cached mode and not remembered, so a later call with a measure still measures.
// Thread-safe; a decision is made once per (device, kernel, shape class) and
// process, then returned from memory. The tuner's lock is held while measuring,
// so measurements never overlap; a Measure must launch its kernel directly:
// tune() called from inside one throws instead of deadlocking.
LaunchConfig tune(const Request& r, const Measure& measure);

// The configuration tune() decided for this key and remembers (without its
// `why`), if any: a launch path asks this first, so that a kernel already
// decided costs no Request to build, nor any allocation.
std::optional<LaunchConfig> remembered(std::string_view device, std::string_view kernel, std::string_view shape_class);

// The candidates autotune measures for `r`: autotune_candidates() restricted
// to the kernel's warps and depths (baseline first, at most three). When that
// leaves the baseline alone and the kernel can run more warps, the next larger
// warp count joins it, so that something is compared.
std::vector<LaunchConfig> candidates(const Request& r);

// `c` moved into r's space: for warps and depth each, the largest allowed value
// not above c's (the smallest allowed when none is), and no more threads than
// r.resources.max_threads_per_block. Applied to forced and starting configurations.
LaunchConfig clamp(const Request& r, LaunchConfig c);

// KFUSE_TUNING_FORCE's syntax, "kernel=WxD,..." ("*" for every kernel). Items
// that do not parse are left out and named in `warning` (empty when all parse).
std::map<std::string, LaunchChoice> parse_forces(const std::string& text, std::string* warning);

// Back to the environment's settings (KFUSE_TUNING, KFUSE_TUNING_FORCE, the
// default cache path), retune off, nothing decided or remembered: tests.
void reset();

// Starting configurations per architecture (DESIGN.md section 8): used when
// there is no cache entry. nullopt: no entry for this arch and kernel.
std::optional<LaunchConfig> arch_default(int arch, const std::string& kernel);
// The documented limits of an architecture (sm_89: 128 SMs, 1536 threads and
// 48 warps per SM, 100 KB shared memory per SM); the tuner always reads the
// real device at run time, these are for tests and `kfuse tune --help`.
std::optional<DeviceLimits> arch_limits(int arch);

// ---- The cache file (tests use these directly) --------------------------------

struct CacheKey {
  std::string device, kernel, shape_class;
  bool operator<(const CacheKey& o) const {
    return std::tie(device, kernel, shape_class) < std::tie(o.device, o.kernel, o.shape_class);
  }
};
struct CacheEntry {
  LaunchConfig config;
  double ms = 0.0;           // the winner's time
  double baseline_ms = 0.0;  // the baseline's time in the same measurement
  std::string date;          // when it was measured, UTC "YYYY-MM-DDTHH:MM:SSZ"; write_cache fills an empty one
};
using CacheTable = std::map<CacheKey, CacheEntry>;

// kfuse's cache folder: $XDG_CACHE_HOME/kfuse (an absolute one), else
// $HOME/.cache/kfuse; "" when neither is set. The tuning file lives there,
// and the CUDA backend's compiled kernels (backends/cuda/jit.cpp).
std::string cache_home();

// Writes `contents` to `path` whole or not at all: a temporary file in the
// same folder (a name no other thread or process uses), then rename(), so a
// reader sees the old file or the new one, never a partial one. Creates the
// folder. Throws Error(backend) naming the path when it cannot write. (The
// tuning file, and the CUDA backend's compiled kernels.)
void write_file_atomically(const std::string& path, const std::string& contents);

// The file is {"format": "kfuse-tuning", "version": 1, "entries": [{"device",
// "kernel", "shape_class", "warps", "depth", "ms", "baseline_ms", "date"}, ...]}.
// An entry of another device is kept but never matches (the key holds the device).

// Reads `path`: an absent file is an empty table; a corrupt or foreign file
// (not JSON, another format or version, an entry of the wrong types) is an
// empty table and `warning` says why (it is cleared otherwise).
CacheTable read_cache(const std::string& path, std::string* warning);
// Merges `entries` into the file's current contents (a corrupt file counts as
// empty) and replaces it atomically: a temporary file in the same folder, then
// rename(), so a reader sees the old file or the new one, never a partial one.
// Creates the folder. Read-merge-rename runs under an exclusive flock() of
// `<path>.lock` (left in place), so concurrent writers, threads or processes,
// never lose each other's entries; on a file system without flock() the
// write stays atomic but a concurrent writer's entry may be lost (measured
// again later). Throws Error(backend) naming the path when it cannot write.
void write_cache(const std::string& path, const CacheTable& entries);

}  // namespace kfuse::tuning
