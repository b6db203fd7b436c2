// Launch tuning (DESIGN.md section 7): every kernel, portable or hand-written,
// takes its launch configuration (warps per block, pipelining depth) from one
// tuner. The choice, first that applies:
//   1. a forced configuration (force_launch, or KFUSE_TUNING_FORCE);
//   2. the cache's entry for (device, kernel, shape class), unless the mode is off;
//   3. in autotune mode, a measurement of at most three candidates (the
//      baseline of 4 warps and depth 2 always among them), kept in the cache;
//      a candidate replaces the baseline only when it is at least 2% faster;
//   4. the architecture's starting configuration (sm_89 first), else the
//      section 7 rule on the kernel's registers and spills.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace kfuse {

// KFUSE_TUNING=off|cached|auto (unset: cached; another value: a warning, then cached).
//   off:      no cache, no measuring: steps 1 and 4 only.
//   cached:   the cache is read, never written; nothing is measured.
//   autotune: a (device, kernel, shape class) without a cache entry is
//             measured on first use and the winner written to the cache.
enum class TuningMode { off, cached, autotune };
const char* to_string(TuningMode m) noexcept;
TuningMode tuning_mode_from(const std::string& name);  // "off", "cached", "auto"; else Error(invalid_argument)

void set_tuning_mode(TuningMode m);
TuningMode tuning_mode();

// The cache file: KFUSE_TUNING_CACHE, else $XDG_CACHE_HOME/kfuse/tuning.json,
// else $HOME/.cache/kfuse/tuning.json. Written atomically (a temporary file in
// the same folder, then rename): concurrent processes never corrupt it. A file
// that is not a kfuse tuning cache, or is corrupt, is ignored with a warning
// (and replaced by the next write). An empty path restores the default.
void set_tuning_cache_path(const std::string& path);
std::string tuning_cache_path();

// A launch configuration: warps per block (a Kokkos team's
// team_size * vector_length / 32) and loads in flight per thread.
struct LaunchChoice {
  int warps = 4;
  int depth = 2;
  bool operator==(const LaunchChoice& o) const { return warps == o.warps && depth == o.depth; }
};

// Forces `kernel` ("*" for every kernel) to `choice`; std::nullopt removes the
// force. KFUSE_TUNING_FORCE="kernel=WxD,..." does the same at start-up, e.g.
// KFUSE_TUNING_FORCE="*=8x2" or "kokkos::fold_plane_sums=16x3" (an item that
// does not parse is ignored with a warning). A kernel takes the largest warps
// and depth it can run that are not above the forced ones.
void force_launch(const std::string& kernel, std::optional<LaunchChoice> choice);

// Re-measure (autotune mode) even when the cache has an entry: `kfuse tune`.
void set_tuning_retune(bool on);
// Each setter above makes every kernel decide again at its next launch (the
// cache file is read again too).

// One decision of this process: which configuration a kernel launched with
// and why, and the candidates' times when it was measured.
struct TuningDecision {
  std::string device, kernel, shape_class;
  LaunchChoice chosen;
  std::string source;  // "forced", "cache", "measured", "arch default", "rule"
  std::string why;
  struct Candidate {
    LaunchChoice config;
    double ms;
  };
  std::vector<Candidate> candidates;  // measured: baseline first
};
// Decisions in the order they were first made (one per device, kernel and shape class).
std::vector<TuningDecision> tuning_decisions();
void clear_tuning_decisions();

// Whether the cache file at `path` holds an entry for the decision's device,
// kernel and shape class (what `kfuse tune` checks after measuring).
bool in_tuning_cache(const TuningDecision& d, const std::string& path);
// The architectures with a built-in starting configuration and their limits,
// as one line of text: "sm_89 (128 SMs, 1536 threads and 100 KB shared memory per SM), ...".
std::string tuning_architectures();

}  // namespace kfuse
