// The tuner: modes, forced configurations, the decision of include/kfuse/tuning.hpp's
// order remembered per (device, kernel, shape class), and autotuning.
#include "tuning/tuner.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "core/device_runtime.hpp"
#include "kfuse/error.hpp"

namespace kfuse {

namespace tuning {

std::string cache_home() {
  // (A relative XDG_CACHE_HOME is invalid by the XDG spec and ignored.)
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x == '/') return std::string(x) + "/kfuse";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/kfuse";
  return "";
}

namespace {

void warn(const std::string& message) { std::fprintf(stderr, "kfuse: warning: %s\n", message.c_str()); }

std::string wxd(int warps, int depth) { return detail::cat(warps, "x", depth); }

LaunchChoice choice_of(const LaunchConfig& c) { return LaunchChoice{c.warps, c.depth}; }

std::string default_cache_path() {
  if (const char* p = std::getenv("KFUSE_TUNING_CACHE"); p && *p) return p;
  const std::string home = cache_home();
  return home.empty() ? home : home + "/tuning.json";
}

// The memory's order, also between a CacheKey and string views of one (no copies on lookup).
struct KeyLess {
  using is_transparent = void;
  using View = std::tuple<std::string_view, std::string_view, std::string_view>;
  static View view(const CacheKey& k) { return {k.device, k.kernel, k.shape_class}; }
  static View view(const View& v) { return v; }
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    return view(a) < view(b);
  }
};

struct State {
  std::mutex mutex;
  TuningMode mode = TuningMode::cached;
  bool retune = false;
  std::string cache_path;  // set_tuning_cache_path; empty: default_cache_path()
  std::map<std::string, LaunchChoice> forces;
  std::map<CacheKey, LaunchConfig, KeyLess> memo;
  std::vector<TuningDecision> decisions;
  std::optional<CacheTable> table;  // the cache file, read at the first lookup after the memo was cleared

  State() { load_environment(); }

  void load_environment() {
    mode = TuningMode::cached;
    if (const char* v = std::getenv("KFUSE_TUNING"); v && *v) {
      try {
        mode = tuning_mode_from(v);
      } catch (const Error&) {
        warn(detail::cat("KFUSE_TUNING=", v, " is not one of off, cached, auto; using cached"));
      }
    }
    forces.clear();
    if (const char* v = std::getenv("KFUSE_TUNING_FORCE"); v && *v) {
      std::string bad;
      forces = parse_forces(v, &bad);
      if (!bad.empty()) warn(detail::cat("KFUSE_TUNING_FORCE=", v, ": ", bad));
    }
    retune = false;
    cache_path.clear();
    forget();
  }

  void forget() {
    memo.clear();
    table.reset();
    device::invalidate_launch_graphs();  // a graph holds the launches the old decisions chose
  }

  std::string path() const { return cache_path.empty() ? default_cache_path() : cache_path; }

  const CacheTable& cache() {
    if (!table) {
      const std::string p = path();
      std::string why;
      table = p.empty() ? CacheTable{} : read_cache(p, &why);
      if (!why.empty()) warn(detail::cat("tuning cache ", p, ": ", why, " (ignored)"));
    }
    return *table;
  }

  // One decision per key, in the order first made; a later one replaces it.
  void record(const TuningDecision& d) {
    for (TuningDecision& o : decisions)
      if (o.device == d.device && o.kernel == d.kernel && o.shape_class == d.shape_class) {
        o = d;
        return;
      }
    decisions.push_back(d);
  }
};

State& state() {
  static State s;
  return s;
}

thread_local bool t_measuring = false;

// The largest of `allowed` that is at most `v` and `cap`; else the smallest at
// most `cap`; else the smallest. `v` itself when nothing is allowed.
int pick(const std::vector<int>& allowed, int v, int cap) {
  if (allowed.empty()) return v;
  int best = INT_MIN, smallest_fit = INT_MAX;
  for (int a : allowed) {
    if (a <= cap) smallest_fit = std::min(smallest_fit, a);
    if (a <= cap && a <= v) best = std::max(best, a);
  }
  if (best != INT_MIN) return best;
  if (smallest_fit != INT_MAX) return smallest_fit;
  return *std::min_element(allowed.begin(), allowed.end());
}

int max_warps(const Request& r) {
  const int warp = r.limits.warp_size > 0 ? r.limits.warp_size : 32;
  return r.resources.max_threads_per_block > 0 ? r.resources.max_threads_per_block / warp : INT_MAX;
}

bool runnable(const Request& r, const LaunchConfig& c) {
  const auto in = [](const std::vector<int>& v, int x) { return v.empty() || std::count(v.begin(), v.end(), x) > 0; };
  return in(r.warps, c.warps) && in(r.depths, c.depth) && c.warps <= max_warps(r);
}

double median_of_five(const Measure& measure, const LaunchConfig& c) {
  measure(c);  // warm-up
  double t[5];
  for (double& x : t) x = measure(c);
  std::sort(t, t + 5);
  return t[2];
}

// Step 3: measures the candidates, keeps a winner by the 2% rule, writes the cache.
LaunchConfig autotune(State& s, const Request& r, const Measure& measure, TuningDecision& d) {
  const std::vector<LaunchConfig> cands = candidates(r);
  std::vector<double> ms;
  {
    t_measuring = true;
    struct Done {
      ~Done() { t_measuring = false; }
    } done;
    for (const LaunchConfig& c : cands) {
      ms.push_back(median_of_five(measure, c));
      d.candidates.push_back({choice_of(c), ms.back()});
    }
  }
  std::size_t best = 0;
  for (std::size_t i = 1; i < cands.size(); ++i)
    if (ms[i] < ms[best]) best = i;
  if (best != 0 && !keeps_winner(ms[0], ms[best])) best = 0;
  LaunchConfig c = cands[best];
  c.why = best == 0 ? detail::cat("measured: the baseline ", wxd(c.warps, c.depth), " (", ms[0], " ms)",
                                  cands.size() > 1 ? ", no candidate 2% faster" : ", the only candidate")
                    : detail::cat("measured: ", wxd(c.warps, c.depth), " ", ms[best], " ms, ",
                                  100.0 * (1.0 - ms[best] / ms[0]), "% faster than the baseline (", ms[0], " ms)");
  d.source = "measured";

  CacheEntry e;
  e.config = c;
  e.ms = ms[best];
  e.baseline_ms = ms[0];
  const CacheKey key{r.device, r.kernel, r.shape_class};
  const std::string path = s.path();
  if (path.empty()) {
    c.why += "; not cached: no cache path (set KFUSE_TUNING_CACHE)";
  } else {
    try {
      write_cache(path, CacheTable{{key, e}});
    } catch (const Error& err) {
      // A read-only home must not stop the run: the choice stands for this process.
      warn(err.what());
      c.why += detail::cat("; not cached: ", err.what());
    }
  }
  if (s.table) (*s.table)[key] = e;
  return c;
}

LaunchConfig decide(State& s, const Request& r, const Measure& measure, TuningDecision& d) {
  // 1. Forced.
  auto f = s.forces.find(r.kernel);
  if (f == s.forces.end()) f = s.forces.find("*");
  if (f != s.forces.end()) {
    LaunchConfig c = clamp(r, LaunchConfig{f->second.warps, f->second.depth, ""});
    const std::string asked = wxd(f->second.warps, f->second.depth);
    c.why = detail::cat("forced ", asked, f->first == "*" ? " (every kernel)" : "");
    if (c.warps != f->second.warps || c.depth != f->second.depth)
      c.why += detail::cat(", clamped to ", wxd(c.warps, c.depth), " (what the kernel can run)");
    d.source = "forced";
    return c;
  }
  // 2. The cache (not while re-measuring).
  const bool measuring = s.mode == TuningMode::autotune && measure;
  if (s.mode != TuningMode::off && !(measuring && s.retune)) {
    const CacheTable& t = s.cache();
    const auto it = t.find(CacheKey{r.device, r.kernel, r.shape_class});
    // (An entry the kernel can no longer run, from another build, is stale: passed over.)
    if (it != t.end() && runnable(r, it->second.config)) {
      LaunchConfig c = it->second.config;
      c.why = detail::cat("cache ", s.path(), ": ", it->second.ms, " ms, baseline ", it->second.baseline_ms, " ms",
                          it->second.date.empty() ? "" : ", measured " + it->second.date);
      d.source = "cache";
      return c;
    }
  }
  // 3. Measured.
  if (measuring) return autotune(s, r, measure, d);
  // 4. The architecture's starting configuration, else 5. the rule.
  const std::optional<LaunchConfig> a = arch_default(r.arch, r.kernel);
  const LaunchConfig start = a ? *a : choose_launch(r.resources, r.limits, r.distinct_inputs, r.bound);
  LaunchConfig c = clamp(r, start);
  if (!(c == start)) c.why += detail::cat(", clamped to ", wxd(c.warps, c.depth), " (what the kernel can run)");
  d.source = a ? "arch default" : "rule";
  return c;
}

}  // namespace

std::string shape_class(const std::vector<std::pair<std::string, long long>>& sizes) {
  std::string out;
  for (const auto& [name, size] : sizes) {
    if (!out.empty()) out += ",";
    if (size <= 0) {
      out += name + "=0";
      continue;
    }
    int k = 0;
    while ((1ull << k) < static_cast<unsigned long long>(size)) ++k;
    out += name + "=2^" + std::to_string(k);  // (no ostringstream: this runs at every launch)
  }
  return out;
}

LaunchConfig clamp(const Request& r, LaunchConfig c) {
  c.warps = pick(r.warps, c.warps, max_warps(r));
  c.depth = pick(r.depths, c.depth, INT_MAX);
  return c;
}

std::vector<LaunchConfig> candidates(const Request& r) {
  std::vector<LaunchConfig> out;
  const auto add = [&](const LaunchConfig& c) {
    if (out.size() < 3 && std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  };
  add(clamp(r, baseline_launch()));
  for (const LaunchConfig& c : autotune_candidates(r.resources, r.limits, r.distinct_inputs, r.bound))
    if (runnable(r, c)) add(c);
  if (out.size() == 1) {
    int next = INT_MAX;
    for (int w : r.warps)
      if (w > out[0].warps && w <= max_warps(r)) next = std::min(next, w);
    if (next != INT_MAX) add(LaunchConfig{next, out[0].depth, detail::cat(next, " warps, depth ", out[0].depth)});
  }
  return out;
}

std::map<std::string, LaunchChoice> parse_forces(const std::string& text, std::string* warning) {
  std::map<std::string, LaunchChoice> out;
  std::string bad;
  const auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  const auto count = [](const std::string& s, int& v) {
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size() && v > 0 && v <= 1024;
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = trim(text.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    const std::string kernel = eq == std::string::npos ? "" : trim(item.substr(0, eq));
    const std::string value = eq == std::string::npos ? "" : trim(item.substr(eq + 1));
    const std::size_t x = value.find('x');
    LaunchChoice c;
    if (kernel.empty() || x == std::string::npos || !count(value.substr(0, x), c.warps) ||
        !count(value.substr(x + 1), c.depth)) {
      bad += detail::cat(bad.empty() ? "" : "; ", "'", item, "' is not kernel=WxD (ignored)");
      continue;
    }
    out[kernel] = c;
  }
  if (warning) *warning = bad;
  return out;
}

LaunchConfig tune(const Request& r, const Measure& measure) {
  if (t_measuring)
    fail(ErrorCategory::invalid_argument, "tuning::tune", r.kernel,
         ": called from inside a Measure (a Measure launches its kernel directly)");
  State& s = state();
  // Held while measuring too: a Measure never calls tune() (checked above), and
  // two kernels measured at once would disturb each other's times.
  std::lock_guard<std::mutex> lock(s.mutex);
  const CacheKey key{r.device, r.kernel, r.shape_class};
  if (const auto it = s.memo.find(key); it != s.memo.end()) return it->second;
  TuningDecision d{r.device, r.kernel, r.shape_class, {}, "", "", {}};
  const LaunchConfig c = decide(s, r, measure, d);
  d.chosen = choice_of(c);
  d.why = c.why;
  s.record(d);
  // Without a measure an autotune decision is provisional: the next call with one measures.
  if (s.mode != TuningMode::autotune || measure || d.source == "forced" || d.source == "cache") s.memo[key] = c;
  return c;
}

std::optional<LaunchConfig> remembered(std::string_view device, std::string_view kernel, std::string_view shape_class) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const auto it = s.memo.find(KeyLess::View{device, kernel, shape_class});
  if (it == s.memo.end()) return std::nullopt;
  return LaunchConfig{it->second.warps, it->second.depth, ""};
}

void reset() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.load_environment();
  s.decisions.clear();
}

}  // namespace tuning

const char* to_string(TuningMode m) noexcept {
  switch (m) {
    case TuningMode::off: return "off";
    case TuningMode::cached: return "cached";
    case TuningMode::autotune: return "auto";
  }
  return "?";
}

TuningMode tuning_mode_from(const std::string& name) {
  if (name == "off") return TuningMode::off;
  if (name == "cached") return TuningMode::cached;
  if (name == "auto") return TuningMode::autotune;
  fail(ErrorCategory::invalid_argument, "tuning mode", "'", name, "' is not one of off, cached, auto");
}

void set_tuning_mode(TuningMode m) {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.mode = m;
  s.forget();
}

TuningMode tuning_mode() {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.mode;
}

void set_tuning_cache_path(const std::string& path) {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.cache_path = path;
  s.forget();
}

std::string tuning_cache_path() {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.path();
}

void force_launch(const std::string& kernel, std::optional<LaunchChoice> choice) {
  tuning::State& s = tuning::state();
  if (choice && (choice->warps <= 0 || choice->depth <= 0))
    fail(ErrorCategory::invalid_argument, "force_launch", kernel, ": ", choice->warps, " warps, depth ", choice->depth,
         " (both must be positive)");
  std::lock_guard<std::mutex> lock(s.mutex);
  if (choice) s.forces[kernel] = *choice;
  else s.forces.erase(kernel);
  s.forget();
}

void set_tuning_retune(bool on) {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.retune = on;
  s.forget();
}

std::vector<TuningDecision> tuning_decisions() {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.decisions;
}

void clear_tuning_decisions() {
  tuning::State& s = tuning::state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.decisions.clear();
}

bool in_tuning_cache(const TuningDecision& d, const std::string& path) {
  return tuning::read_cache(path, nullptr).count(tuning::CacheKey{d.device, d.kernel, d.shape_class}) > 0;
}

std::string tuning_architectures() {
  std::string text;
  for (int arch : {89, 90})
    if (const auto l = tuning::arch_limits(arch))
      text += detail::cat(text.empty() ? "" : ", ", "sm_", arch, " (", l->sm_count, " SMs, ", l->max_threads_per_sm,
                          " threads and ", l->shared_per_sm >> 10, " KB shared memory per SM)");
  return text;
}

}  // namespace kfuse
