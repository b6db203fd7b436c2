#include "kfuse/plan.hpp"

#include "core/device_runtime.hpp"
#include "core/trace.hpp"
#include "plan/planner.hpp"

namespace kfuse {

const char* to_string(Strategy s) noexcept {
  switch (s) {
    case Strategy::automatic: return "auto";
    case Strategy::fold: return "fold";
    case Strategy::fused_conv: return "fused_conv";
    case Strategy::fused: return "fused";
    case Strategy::reference: return "reference";
  }
  return "unknown";
}

const char* to_string(Precision p) noexcept {
  switch (p) {
    case Precision::strict: return "strict";
    case Precision::tf32: return "tf32";
  }
  return "unknown";
}

const char* to_string(YLayout l) noexcept {
  switch (l) {
    case YLayout::automatic: return "auto";
    case YLayout::nchw: return "nchw";
    case YLayout::nhwc: return "nhwc";
  }
  return "unknown";
}

const char* to_string(BackendChoice b) noexcept {
  switch (b) {
    case BackendChoice::automatic: return "auto";
    case BackendChoice::kokkos: return "kokkos";
    case BackendChoice::cuda: return "cuda";
  }
  return "unknown";
}

Strategy strategy_from(const std::string& n) {
  for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused_conv, Strategy::fused, Strategy::reference})
    if (n == to_string(s)) return s;
  fail(ErrorCategory::invalid_argument, "plan", "unknown strategy '", n,
       "' (valid: auto, fold, fused_conv, fused, reference)");
}

BackendChoice backend_from(const std::string& n) {
  for (BackendChoice b : {BackendChoice::automatic, BackendChoice::kokkos, BackendChoice::cuda})
    if (n == to_string(b)) return b;
  fail(ErrorCategory::invalid_argument, "plan", "unknown backend '", n, "' (valid: auto, kokkos, cuda)");
}

Precision precision_from(const std::string& n) {
  for (Precision p : {Precision::strict, Precision::tf32})
    if (n == to_string(p)) return p;
  fail(ErrorCategory::invalid_argument, "plan", "unknown precision '", n, "' (valid: strict, tf32)");
}

YLayout y_layout_from(const std::string& n) {
  for (YLayout l : {YLayout::automatic, YLayout::nchw, YLayout::nhwc})
    if (n == to_string(l)) return l;
  fail(ErrorCategory::invalid_argument, "plan", "unknown Y layout '", n, "' (valid: auto, nchw, nhwc)");
}

namespace detail {

Tensor BufferPool::take(const Shape& shape, DType dtype, Memory memory) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->shape() == shape && it->dtype() == dtype && it->memory() == memory) {
        Tensor t = std::move(*it);
        free_.erase(it);
        return t;
      }
  }
  return Tensor::empty(shape, dtype, memory);
}

void BufferPool::give_back(Tensor t) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.push_back(std::move(t));
}

}  // namespace detail

namespace {
// The planner allocates in proportion to the pipeline's channels (the fold's
// weights): a failed allocation is Error(backend), as in Tensor::empty.
std::shared_ptr<const detail::PlanImpl> plan_impl(const Pipeline& pipeline, const PlanOptions& options) {
  try {
    return std::make_shared<const detail::PlanImpl>(detail::make_plan(pipeline, options));
  } catch (const std::bad_alloc& e) {
    fail(ErrorCategory::backend, "plan", "cannot allocate the plan's host memory (", e.what(), ")");
  } catch (const std::length_error& e) {
    fail(ErrorCategory::backend, "plan", "cannot allocate the plan's host memory (", e.what(), ")");
  }
}
}  // namespace

Plan::Plan(const Pipeline& pipeline, PlanOptions options) : impl_(plan_impl(pipeline, options)) {}

Strategy Plan::strategy() const { return impl_->strategy; }
const Shape& Plan::input_shape() const { return impl_->input_shape; }
const Shape& Plan::output_shape() const { return impl_->output_shape; }
DType Plan::dtype() const { return impl_->dtype; }
Memory Plan::memory() const { return impl_->options.memory; }
std::string Plan::describe() const {
  return impl_->graph ? impl_->description + "  runs: " + impl_->graph->state() + "\n" : impl_->description;
}
int64_t Plan::floor_bytes() const { return impl_->floor_bytes; }

namespace {

// The slot `v` as the step reads it: itself, a reshape of its contiguous
// elements, or broadcast to `shape` (NumPy rules: stride 0 on the new axes).
TensorView as_shape(const TensorView& v, const Shape& shape) {
  if (v.shape == shape) return v;
  if (v.is_contiguous() && v.numel() == checked_numel(shape, "Plan::run", "step input"))
    return TensorView(v.data, v.dtype, shape, v.memory);
  Shape strides(shape.size(), 0);
  for (int d = int(shape.size()) - 1, e = v.rank() - 1; d >= 0 && e >= 0; --d, --e)
    strides[d] = v.shape[e] == shape[d] ? v.strides[e] : 0;
  return TensorView(v.data, v.dtype, shape, strides, v.memory);
}

const char* trace_name(const detail::Step& s) {
  return std::visit([](const auto& f) {
    using S = std::decay_t<decltype(f)>;
    if constexpr (std::is_same_v<S, detail::ConvStep>) return "kfuse::conv_transpose2d";
    else if constexpr (std::is_same_v<S, detail::ConvEpilogueStep>) return "kfuse::fused_conv";
    else if constexpr (std::is_same_v<S, detail::ReferenceStep>) return "kfuse::reference";
    else if constexpr (std::is_same_v<S, detail::FoldStep<float>> || std::is_same_v<S, detail::FoldStep<double>>)
      return "kfuse::fold";
    else return "kfuse::epilogue";
  }, s);
}

}  // namespace

void Plan::run(const TensorView& x, const TensorView& out) const {
  const detail::PlanImpl& p = *impl_;
  check_view(x, "Plan::run", "input");
  check_view(out, "Plan::run", "output");
  if (x.shape != p.input_shape || x.dtype != p.dtype)
    fail(ErrorCategory::shape_mismatch, "Plan::run", "input is ", to_string(x.shape), " ", to_string(x.dtype),
         ", the plan expects ", to_string(p.input_shape), " ", to_string(p.dtype));
  if (out.numel() != checked_numel(p.output_shape, "Plan::run", "output") || out.dtype != p.dtype || !out.is_contiguous())
    fail(ErrorCategory::shape_mismatch, "Plan::run", "output is ", to_string(out.shape), " ", to_string(out.dtype),
         out.is_contiguous() ? "" : " (strided)", ", the plan writes a contiguous ", to_string(p.output_shape), " ",
         to_string(p.dtype));
  for (const TensorView* v : {&x, &out})
    if (v->memory != p.options.memory)
      fail(ErrorCategory::invalid_argument, "Plan::run", v == &x ? "input" : "output", " is in ", to_string(v->memory),
           " memory, the plan was built for ", to_string(p.options.memory), " memory");

  device::RunTimer timer(p.options.memory == Memory::cuda);
  detail::run_steps(p, x, out, &timer);
  timer.finish();
}

namespace detail {

void run_steps(const PlanImpl& p, const TensorView& x, const TensorView& out, device::RunTimer* timer) {
  std::vector<std::unique_ptr<BufferPool::Lease>> leases;
  std::vector<TensorView> buffers;
  for (const Buffer& b : p.buffers) {
    leases.push_back(std::make_unique<BufferPool::Lease>(p.pool, b.shape, p.dtype, p.options.memory));
    const TensorView& v = leases.back()->view();
    buffers.push_back(b.strides.empty() ? v : TensorView(v.data, v.dtype, v.shape, b.strides, v.memory));
  }
  const TensorView output(out.data, out.dtype, p.output_shape, out.memory);
  const auto slot = [&](int k) -> const TensorView& {
    return k == 0 ? x : k == kOutput ? output : buffers[std::size_t(k - 1)];
  };
  const auto launches = [&](bool capturing) {
    for (std::size_t k = 0; k < p.steps.size(); ++k) {
      const TraceRange range(trace_name(p.steps[k]));
      p.prepared[k]->run(as_shape(slot(p.io[k].in), p.io[k].in_shape), slot(p.io[k].out));
      // The last step ends at the run's stop event; a graph has no events between its steps.
      if (timer && !capturing && k + 1 < p.steps.size()) timer->step_done();
    }
  };
  if (!p.graph || !timer) return launches(false);  // (the planner's measurements run directly)
  // What the launches depend on that may change between runs.
  std::vector<uint64_t> key{reinterpret_cast<uintptr_t>(x.data), reinterpret_cast<uintptr_t>(out.data)};
  for (int64_t s : x.strides) key.push_back(uint64_t(s));
  for (const TensorView& b : buffers) key.push_back(reinterpret_cast<uintptr_t>(b.data));
  p.graph->run(std::move(key), launches);
}

}  // namespace detail

Tensor Plan::run(const TensorView& x) const {
  Tensor out = Tensor::empty(impl_->output_shape, impl_->dtype, impl_->options.memory);
  run(x, out.view());
  return out;
}

}  // namespace kfuse
