// The planner: rewrites the pipeline, lowers it with the first strategy that
// applies (fold, fused_conv, fused, reference: DESIGN.md section 5) and has each step
// prepared by the first registered backend that runs it.
#include "plan/planner.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "core/device_runtime.hpp"
#include "kfuse/tuning.hpp"
#include "plan/describe.hpp"
#include "plan/lower.hpp"

namespace kfuse::detail {

namespace {

// Each step prepared by the first allowed backend that runs it; false with
// every backend's reason when one step finds none.
bool prepare_steps(const Lowering& at, const PlanOptions& opt, DType dtype, PlanImpl& impl, std::string& why) {
  const StepContext ctx{opt.memory, dtype};
  std::vector<const Backend*> picks;
  std::vector<std::unique_ptr<const PreparedStep>> prepared;
  for (const Step& step : at.steps) {
    std::string reasons;
    bool found = false;
    for (const Backend* b : backends()) {
      // The reference runs whatever backend was asked for: it is the check.
      const bool allowed = opt.backend == BackendChoice::automatic || std::string(b->name()) == to_string(opt.backend) ||
                           std::holds_alternative<ReferenceStep>(step);
      if (!allowed) continue;
      Preparation pr = b->prepare(step, ctx);
      if (pr.step) {
        picks.push_back(b);
        prepared.push_back(std::move(pr.step));
        found = true;
        break;
      }
      reasons += cat(reasons.empty() ? "" : "; ", b->name(), ": ", pr.why_not);
    }
    if (!found) {
      why = cat("no ", opt.backend == BackendChoice::automatic ? "" : cat(to_string(opt.backend), " "), "backend runs '",
                step_text(step), "' on ", to_string(opt.memory), " memory with dtype ", to_string(dtype), " (", reasons,
                ")");
      return false;
    }
  }
  impl.backends = std::move(picks);
  impl.prepared = std::move(prepared);
  return true;
}

// The device time of a prepared plan on scratch data (the median of three
// runs after a warm-up): the planner's measurement between two plans. Where
// the device cannot run it here (its buffers do not fit in memory: a backend
// error), nullopt and the reason: the planner keeps its unmeasured choice, and
// the run reports the error if it meets it too.
std::optional<double> measure(const PlanImpl& impl, std::string& why_not) {
  try {
    const Tensor x = Tensor::empty(impl.input_shape, impl.dtype, impl.options.memory);
    const Tensor out = Tensor::empty(impl.output_shape, impl.dtype, impl.options.memory);
    device::fill_bytes(x.view().data, 0x3c, x.view().bytes());  // finite, nonzero values in every float format
    run_steps(impl, x, out);
    std::vector<double> ms;
    for (int r = 0; r < 3; ++r) ms.push_back(device::time_ms([&] { run_steps(impl, x, out); }));
    std::sort(ms.begin(), ms.end());
    return ms[1];
  } catch (const Error& e) {
    if (e.category() != ErrorCategory::backend) throw;
    why_not = e.what();
    return std::nullopt;
  }
}

// Two plans' device times (b's given when already measured), or nullopt and
// the reason where the device cannot run either here.
std::optional<std::pair<double, double>> measure_pair(const PlanImpl& a, const PlanImpl& b, std::optional<double> b_ms,
                                                      std::string& why_not) {
  const std::optional<double> a_ms = measure(a, why_not);
  if (a_ms && !b_ms) b_ms = measure(b, why_not);
  if (!a_ms || !b_ms) return std::nullopt;
  return std::pair(*a_ms, *b_ms);
}

template <class A>
class Planner {
 public:
  Planner(const Pipeline& p, const PlanOptions& opt) : p_(p), opt_(opt), st_(rewrite(p, notes_)) {}

  PlanImpl plan() {
    const std::vector<Strategy> order = opt_.strategy == Strategy::automatic
                                            ? std::vector<Strategy>{Strategy::fold, Strategy::fused_conv,
                                                                    Strategy::fused, Strategy::reference}
                                            : std::vector<Strategy>{opt_.strategy};
    for (Strategy s : order) {
      std::optional<PlanImpl> impl = s == Strategy::fused ? build_fused() : build(s);
      if (!impl) continue;
      std::string why = last_why_;
      // The conv with its epilogue inside moves the fewest bytes, but the
      // tensor-core kernel is not always the fastest conv: on a GPU, with
      // tuning on, it must beat the fused strategy by 2% (the tuner's rule).
      if (s == Strategy::fused_conv && opt_.strategy == Strategy::automatic && measured_choices()) {
        std::optional<double> measured_fused;
        if (std::optional<PlanImpl> fused = build_fused(&measured_fused)) {
          const std::string fused_why = last_why_;
          std::string why_not;
          if (const auto t = measure_pair(*impl, *fused, measured_fused, why_not); !t) {
            notes_.push_back(cat("fused_conv against fused not measured (", why_not, "): fused_conv kept"));
          } else {
            const auto [t_conv, t_fused] = *t;
            notes_.push_back(cat("measured on the device: fused_conv ", t_conv, " ms, fused ", t_fused, " ms"));
            if (!(t_conv < 0.98 * t_fused)) {
              rejected_.push_back(cat("fused_conv: not 2% faster than fused (measured ", t_conv, " ms against ",
                                      t_fused, " ms)"));
              impl.emplace(std::move(*fused));
              why = fused_why;
            }
          }
        }
      }
      // Replayed as a CUDA graph when every step launches the CUDA backend's
      // kernels on the thread's stream (Kokkos kernels run on Kokkos's own).
      if (opt_.memory == Memory::cuda &&
          std::all_of(impl->backends.begin(), impl->backends.end(),
                      [](const Backend* b) { return std::string(b->name()) == "cuda"; }))
        impl->graph = std::make_unique<device::LaunchGraph>();
      Description d{why, rejected_, notes_};
      impl->description = describe_plan(*impl, d);
      return std::move(*impl);
    }
    if (order.size() == 1) fail(ErrorCategory::unsupported, "plan", "strategy ", rejected_.back());
    std::string all;
    for (const std::string& r : rejected_) all += (all.empty() ? "" : "; ") + r;
    fail(ErrorCategory::unsupported, "plan", "no strategy runs this ", to_string(p_.dtype()), " pipeline on ",
         to_string(opt_.memory), " memory: ", all);
  }

 private:
  // Choices between plans measured on the device: a GPU, with tuning on.
  bool measured_choices() const { return opt_.memory == Memory::cuda && tuning_mode() != TuningMode::off; }

  // The fused strategy with Y in the layout asked for. Automatic, where
  // choices are measured: both layouts, channels-last kept when 2% faster
  // (the tuner's rule; the kept plan's time into *ms when it was measured);
  // otherwise NCHW.
  std::optional<PlanImpl> build_fused(std::optional<double>* ms = nullptr) {
    if (opt_.y_layout == YLayout::nhwc) return build(Strategy::fused, true);
    std::optional<PlanImpl> nchw = build(Strategy::fused, false);
    if (!nchw || opt_.y_layout == YLayout::nchw || !measured_choices()) return nchw;
    const std::string why = last_why_;
    std::optional<PlanImpl> nhwc = build(Strategy::fused, true);
    if (!nhwc) {  // not a strategy rejected: a layout the fused plan cannot take
      notes_.push_back(rejected_.back());
      rejected_.pop_back();
      last_why_ = why;
      return nchw;
    }
    const std::string nhwc_why = last_why_;
    std::string why_not;
    const auto t = measure_pair(*nchw, *nhwc, std::nullopt, why_not);
    last_why_ = why;
    if (!t) {
      notes_.push_back(cat("Y's layout not measured (", why_not, "): NCHW kept"));
      return nchw;
    }
    const auto [t_nchw, t_nhwc] = *t;
    notes_.push_back(cat("measured on the device: Y NCHW ", t_nchw, " ms, channels-last ", t_nhwc, " ms"));
    if (t_nhwc < 0.98 * t_nchw) {
      if (ms) *ms = t_nhwc;
      last_why_ = nhwc_why;
      return nhwc;
    }
    if (ms) *ms = t_nchw;
    return nchw;
  }

  // The plan of strategy `s`, lowered and prepared; nullopt with the reason noted.
  std::optional<PlanImpl> build(Strategy s, bool y_channels_last = false) {
    std::optional<PlanImpl> impl(std::in_place);
    impl->options = opt_;
    impl->dtype = p_.dtype();
    impl->input_shape = p_.input_shape();
    impl->output_shape = p_.output_shape();
    impl->floor_bytes = p_.floor_bytes();
    Store<A> store(impl->storage, opt_.memory);
    std::vector<std::string> notes;
    Lowering at = s == Strategy::fold         ? lower_fold(p_, st_, store, notes)
                  : s == Strategy::fused_conv ? lower_fused_conv(p_, st_, store, opt_)
                  : s == Strategy::fused      ? lower_fused(p_, st_, store, opt_, y_channels_last)
                                              : lower_reference(p_);
    if (at.ok && !prepare_steps(at, opt_, p_.dtype(), *impl, at.why)) at.ok = false;
    if (!at.ok) {
      rejected_.push_back(std::string(to_string(s)) + ": " + at.why);
      return std::nullopt;
    }
    impl->strategy = s;
    impl->steps = std::move(at.steps);
    impl->io = std::move(at.io);
    impl->buffers = std::move(at.buffers);
    last_why_ = at.why;
    notes_.insert(notes_.end(), notes.begin(), notes.end());
    return impl;
  }

  const Pipeline& p_;
  const PlanOptions& opt_;
  std::vector<std::string> notes_;
  Stages st_;
  std::vector<std::string> rejected_;
  std::string last_why_;  // why the last strategy built applies
};

}  // namespace

PlanImpl make_plan(const Pipeline& p, const PlanOptions& opt) {
  if (p.dtype() == DType::f64) return Planner<double>(p, opt).plan();
  return Planner<float>(p, opt).plan();
}

}  // namespace kfuse::detail
