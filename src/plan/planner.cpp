// The planner: rewrites the pipeline, lowers it with the first strategy that
// applies (fold, fused_conv, fused, reference: DESIGN.md section 5) and has each step
// prepared by the first registered backend that runs it.
#include "plan/planner.hpp"

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

template <class A>
PlanImpl make_typed(const Pipeline& p, const PlanOptions& opt) {
  PlanImpl impl;
  impl.options = opt;
  impl.dtype = p.dtype();
  impl.input_shape = p.input_shape();
  impl.output_shape = p.output_shape();
  impl.floor_bytes = p.floor_bytes();
  Description d;
  const Stages st = rewrite(p, d.notes);

  const std::vector<Strategy> order = opt.strategy == Strategy::automatic
                                          ? std::vector<Strategy>{Strategy::fold, Strategy::fused_conv, Strategy::fused,
                                                                  Strategy::reference}
                                          : std::vector<Strategy>{opt.strategy};
  for (Strategy s : order) {
    std::vector<Tensor> storage;
    Store<A> store(storage, opt.memory);
    std::vector<std::string> notes;
    Lowering at = s == Strategy::fold         ? lower_fold(p, st, store, notes)
                  : s == Strategy::fused_conv ? lower_fused_conv(p, st, store, opt)
                  : s == Strategy::fused      ? lower_fused(p, st, store, opt)
                                              : lower_reference(p);
    if (at.ok && !prepare_steps(at, opt, p.dtype(), impl, at.why)) at.ok = false;
    if (!at.ok) {
      d.rejected.push_back(std::string(to_string(s)) + ": " + at.why);
      continue;
    }
    impl.strategy = s;
    impl.steps = std::move(at.steps);
    impl.io = std::move(at.io);
    impl.buffers = std::move(at.buffers);
    impl.storage = std::move(storage);
    d.why = at.why;
    d.notes.insert(d.notes.end(), notes.begin(), notes.end());
    impl.description = describe_plan(impl, d);
    return impl;
  }
  if (order.size() == 1) fail(ErrorCategory::unsupported, "plan", "strategy ", d.rejected.back());
  std::string all;
  for (const std::string& r : d.rejected) all += (all.empty() ? "" : "; ") + r;
  fail(ErrorCategory::unsupported, "plan", "no strategy runs this ", to_string(p.dtype()), " pipeline on ",
       to_string(opt.memory), " memory: ", all);
}

}  // namespace

PlanImpl make_plan(const Pipeline& p, const PlanOptions& opt) {
  if (p.dtype() == DType::f64) return make_typed<double>(p, opt);
  return make_typed<float>(p, opt);
}

}  // namespace kfuse::detail
