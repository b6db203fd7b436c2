#include "kfuse/plan.hpp"

#include "backends/backend.hpp"
#include "backends/kokkos/dispatch.hpp"
#include "core/trace.hpp"
#include "kfuse/ops.hpp"
#include "plan/planner.hpp"

namespace kfuse {

const char* to_string(Strategy s) noexcept {
  switch (s) {
    case Strategy::automatic: return "auto";
    case Strategy::fold: return "fold";
    case Strategy::fused: return "fused";
    case Strategy::reference: return "reference";
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
  for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused, Strategy::reference})
    if (n == to_string(s)) return s;
  fail(ErrorCategory::invalid_argument, "plan", "unknown strategy '", n, "' (valid: auto, fold, fused, reference)");
}

BackendChoice backend_from(const std::string& n) {
  for (BackendChoice b : {BackendChoice::automatic, BackendChoice::kokkos, BackendChoice::cuda})
    if (n == to_string(b)) return b;
  fail(ErrorCategory::invalid_argument, "plan", "unknown backend '", n, "' (valid: auto, kokkos, cuda)");
}

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
std::string Plan::describe() const { return impl_->description; }
int64_t Plan::floor_bytes() const { return impl_->floor_bytes; }

namespace {

// The reference strategy: the pipeline's ops one by one, as eager ops.
Tensor run_reference(const std::vector<detail::Step>& steps, const TensorView& x) {
  if (steps.empty()) return Tensor::copy_of(x, x.memory);
  // The first op reads x in place, whatever its strides; each result feeds the next.
  Tensor cur;
  TensorView in = x;
  for (const detail::Step& s : steps) {
    const Op& op = std::get<detail::OpStep>(s).op;
    if (auto* c = std::get_if<ConvTranspose2dOp>(&op)) {
      cur = conv_transpose2d(in, Tensor::copy_of(c->weight, x.memory),
                             c->bias ? std::optional<TensorView>(Tensor::copy_of(*c->bias, x.memory).view()) : std::nullopt,
                             c->params);
    } else if (auto* u = std::get_if<UnaryOp>(&op)) {
      cur = unary(in, u->op);
    } else if (auto* b = std::get_if<BinaryOp>(&op)) {
      cur = b->operand ? binary(in, Tensor::copy_of(*b->operand, x.memory), b->kind) : binary(in, b->scalar, b->kind);
    } else if (auto* r = std::get_if<ReduceOp>(&op)) {
      cur = reduce(in, r->kind, r->axes, r->keepdim);
    } else {
      cur = softmax(in, std::get<SoftmaxOp>(op).axis);
    }
    in = cur.view();
  }
  return cur;
}

// The profiler range of a fused step: the fold or the fused epilogue.
const char* trace_name(const detail::FusedStep& s) {
  const bool fold = std::holds_alternative<detail::FoldStep<float>>(s) || std::holds_alternative<detail::FoldStep<double>>(s);
  return fold ? "kfuse::fold" : "kfuse::epilogue";
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

  if (p.strategy == Strategy::reference) {
    const detail::TraceRange range("kfuse::reference");
    // The eager ops run where Kokkos runs: data in other memory is staged there and back.
    const bool staged = !kokkos::accepts(p.options.memory);
    const Tensor staged_x = staged ? Tensor::copy_of(x, kokkos_memory()) : Tensor();
    const Tensor r = run_reference(p.steps, staged ? staged_x.view() : x);
    copy(TensorView(r.view().data, r.dtype(), out.shape, r.memory()), out);
    return;
  }
  TensorView in = x;
  std::optional<detail::BufferPool::Lease> y;
  for (std::size_t k = 0; k < p.steps.size(); ++k) {
    if (auto* c = std::get_if<detail::ConvStep>(&p.steps[k])) {
      const detail::TraceRange range("kfuse::conv_transpose2d");
      y.emplace(p.y_buffers, c->out_shape, p.dtype, p.options.memory);
      p.backends[k]->conv_transpose2d(*c, in, y->view());
      in = y->view();
    } else {
      const detail::FusedStep& f = std::get<detail::FusedStep>(p.steps[k]);
      const detail::TraceRange range(trace_name(f));
      p.backends[k]->fused(f, in, out);
    }
  }
}

Tensor Plan::run(const TensorView& x) const {
  Tensor out = Tensor::empty(impl_->output_shape, impl_->dtype, impl_->options.memory);
  run(x, out.view());
  return out;
}

}  // namespace kfuse
