#include "kfuse/pipeline.hpp"

#include <algorithm>

#include "kfuse/ops.hpp"

namespace kfuse {

std::string op_name(const Op& op) {
  struct Namer {
    std::string operator()(const ConvTranspose2dOp&) const { return "conv_transpose2d"; }
    std::string operator()(const UnaryOp& o) const { return to_string(o.op.kind); }
    std::string operator()(const BinaryOp& o) const { return to_string(o.kind); }
    std::string operator()(const ReduceOp& o) const { return to_string(o.kind); }
    std::string operator()(const SoftmaxOp&) const { return "softmax"; }
  };
  return std::visit(Namer{}, op);
}

Pipeline::Pipeline(Shape input_shape, DType dtype) : input_shape_(std::move(input_shape)), dtype_(dtype) {
  if (input_shape_.empty() || input_shape_.size() > static_cast<std::size_t>(kMaxRank))
    fail(ErrorCategory::shape_mismatch, "Pipeline", "input rank must be 1 to ", kMaxRank, ", got ",
         input_shape_.size(), " ", to_string(input_shape_));
  checked_extents(input_shape_, "Pipeline", "input shape");
  (void)floor_bytes();  // its bytes must fit 64 bits too
}

std::string Pipeline::where(const std::string& name) const {
  return detail::cat("op #", stages_.size() + 1, " (", name, ")");
}

DType Pipeline::operand_dtype() const {
  return dtype_ == DType::f64 ? DType::f64 : DType::f32;
}

void Pipeline::push(Op op, Shape out_shape) {
  const std::string w = where(op_name(op));
  stages_.push_back({std::move(op), output_shape(), std::move(out_shape)});
  try {
    checked_extents(output_shape(), "pipeline", "output");  // a reduction of an empty axis, a broadcast
    (void)floor_bytes();  // the bytes the pipeline moves must fit 64 bits, as its element counts do
  } catch (const Error& e) {
    stages_.pop_back();
    fail(e.category(), w, e.what());
  }
}

namespace {
// Rethrows an op's error with the op's position in the pipeline in front.
template <class F>
auto at(const std::string& where, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(e.category(), where + ": " + e.what());
  }
}

void check_operand(const Tensor& t, DType want, const std::string& where, const char* arg) {
  if (!t.defined()) fail(ErrorCategory::invalid_argument, where, arg, " is an empty tensor handle");
  if (t.memory() != Memory::host) fail(ErrorCategory::invalid_argument, where, arg, " must be a host tensor");
  if (t.dtype() != want)
    fail(ErrorCategory::invalid_argument, where, arg, " must have dtype ", to_string(want), ", got ", to_string(t.dtype()));
}
}  // namespace

Pipeline& Pipeline::conv_transpose2d(Tensor weight, std::optional<Tensor> bias, ConvTranspose2dParams params) {
  const std::string w = where("conv_transpose2d");
  if (!stages_.empty()) fail(ErrorCategory::invalid_argument, w, "conv_transpose2d is a front op: it must come first");
  check_operand(weight, operand_dtype(), w, "weight");
  if (bias) check_operand(*bias, operand_dtype(), w, "bias");
  Shape out = at(w, [&] {
    return conv_transpose2d_shape(output_shape(), weight.shape(),
                                  bias ? std::optional<Shape>(bias->shape()) : std::nullopt, params);
  });
  push(ConvTranspose2dOp{std::move(weight), std::move(bias), params}, std::move(out));
  return *this;
}

Pipeline& Pipeline::unary(Unary op) {
  const std::string w = where(to_string(op.kind));
  if ((op.kind == UnaryKind::hardtanh || op.kind == UnaryKind::clamp) && !(op.a <= op.b))
    fail(ErrorCategory::invalid_argument, w, "min (", op.a, ") must not exceed max (", op.b, ")");
  push(UnaryOp{op}, output_shape());
  return *this;
}

Pipeline& Pipeline::binary(BinaryKind kind, double scalar) {
  push(BinaryOp{kind, std::nullopt, scalar}, output_shape());
  return *this;
}

Pipeline& Pipeline::binary(BinaryKind kind, Tensor operand) {
  const std::string w = where(to_string(kind));
  check_operand(operand, operand_dtype(), w, "operand");
  Shape out = at(w, [&] { return broadcast_shapes(output_shape(), operand.shape(), to_string(kind)); });
  push(BinaryOp{kind, std::move(operand), 0.0}, std::move(out));
  return *this;
}

Pipeline& Pipeline::reduce(ReduceKind kind, std::vector<int> axes, bool keepdim) {
  const std::string w = where(to_string(kind));
  const int rank = static_cast<int>(output_shape().size());
  const uint32_t mask = at(w, [&] { return axes_mask(axes, rank, to_string(kind)); });
  if (mask == 0)
    fail(ErrorCategory::invalid_argument, w, "needs at least one axis (PyTorch's dim=[] reduces every axis: list them)");
  if (kind == ReduceKind::max || kind == ReduceKind::min)  // sum/mean/logsumexp of nothing: 0, NaN, -inf
    for (int d = 0; d < rank; ++d)
      if ((mask >> d & 1u) && output_shape()[d] == 0)
        fail(ErrorCategory::invalid_argument, w, "axis ", d, " of ", to_string(output_shape()),
             " is empty: the ", to_string(kind), " of no elements is undefined (PyTorch raises too)");
  std::vector<int> norm;
  for (int d = 0; d < rank; ++d)
    if (mask >> d & 1u) norm.push_back(d);
  push(ReduceOp{kind, std::move(norm), keepdim}, reduced_shape(output_shape(), mask, keepdim));
  return *this;
}

Pipeline& Pipeline::softmax(int axis) {
  const std::string w = where("softmax");
  const int rank = static_cast<int>(output_shape().size());
  at(w, [&] { return axes_mask({axis}, rank, "softmax"); });
  push(SoftmaxOp{axis < 0 ? axis + rank : axis}, output_shape());
  return *this;
}

Pipeline Pipeline::with_batch(int64_t n) const {
  const char* w = "Pipeline::with_batch";
  if (n < 0) fail(ErrorCategory::invalid_argument, w, "the batch size must be non-negative, got ", n);
  // Every stage must keep the samples along axis 0 independent of each other.
  for (std::size_t k = 0; k < stages_.size(); ++k) {
    const PipelineStage& s = stages_[k];
    const std::string op = detail::cat("op #", k + 1, " (", op_name(s.op), ")");
    const char* why = ": a batch split across ranks would need a cross-rank reduction, which batch sharding does not do";
    if (const auto* r = std::get_if<ReduceOp>(&s.op)) {
      if (!r->axes.empty() && r->axes.front() == 0)
        fail(ErrorCategory::unsupported, w, op, " reduces over axis 0, the batch axis", why);
    } else if (const auto* m = std::get_if<SoftmaxOp>(&s.op)) {
      if (m->axis == 0) fail(ErrorCategory::unsupported, w, op, " normalises along axis 0, the batch axis", why);
    } else if (const auto* b = std::get_if<BinaryOp>(&s.op); b && b->operand) {
      const Shape& o = b->operand->shape();
      if (o.size() > s.in_shape.size())
        fail(ErrorCategory::unsupported, w, op, ": operand ", to_string(o), " has more axes than ", to_string(s.in_shape),
             ": it broadcasts the batch into a new axis 0, so the batch cannot be split along axis 0");
      if (o.size() == s.in_shape.size() && o[0] != 1)
        fail(ErrorCategory::unsupported, w, op, ": operand ", to_string(o), " varies along axis 0, the batch axis",
             " (extent ", o[0], ", not 1): each rank would need its own rows of it");
    }
  }
  Shape in = input_shape_;
  in[0] = n;
  Pipeline p(std::move(in), dtype_);
  for (const PipelineStage& s : stages_) {
    if (const auto* c = std::get_if<ConvTranspose2dOp>(&s.op)) p.conv_transpose2d(c->weight, c->bias, c->params);
    else if (const auto* u = std::get_if<UnaryOp>(&s.op)) p.unary(u->op);
    else if (const auto* b = std::get_if<BinaryOp>(&s.op)) b->operand ? p.binary(b->kind, *b->operand) : p.binary(b->kind, b->scalar);
    else if (const auto* r = std::get_if<ReduceOp>(&s.op)) p.reduce(r->kind, r->axes, r->keepdim);
    else p.softmax(std::get<SoftmaxOp>(s.op).axis);
  }
  return p;
}

int64_t Pipeline::floor_bytes() const {
  // Element counts fit 64 bits (checked_numel); their bytes and the sum may not.
  int64_t total = 0;
  const auto add = [&](int64_t numel, DType dtype, const char* what) {
    int64_t bytes = 0;
    if (__builtin_mul_overflow(numel, int64_t(size_of(dtype)), &bytes) || __builtin_add_overflow(total, bytes, &total))
      fail(ErrorCategory::overflow, "pipeline", "the bytes it must move exceed 2^63 (at its ", what, ")");
  };
  add(checked_numel(input_shape_, "pipeline", "input"), dtype_, "input");
  add(checked_numel(output_shape(), "pipeline", "output"), dtype_, "output");
  for (const PipelineStage& s : stages_) {
    if (const auto* c = std::get_if<ConvTranspose2dOp>(&s.op)) {
      add(c->weight.numel(), c->weight.dtype(), "conv weight");
      if (c->bias) add(c->bias->numel(), c->bias->dtype(), "conv bias");
    } else if (const auto* b = std::get_if<BinaryOp>(&s.op); b && b->operand) {
      add(b->operand->numel(), b->operand->dtype(), "operand");
    }
  }
  return total;
}

}  // namespace kfuse
