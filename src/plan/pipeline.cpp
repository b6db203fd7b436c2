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
  checked_numel(input_shape_, "Pipeline", "input shape");
}

std::string Pipeline::where(const std::string& name) const {
  return detail::cat("op #", stages_.size() + 1, " (", name, ")");
}

DType Pipeline::operand_dtype() const {
  return dtype_ == DType::f64 ? DType::f64 : DType::f32;
}

void Pipeline::push(Op op, Shape out_shape) {
  stages_.push_back({std::move(op), output_shape(), std::move(out_shape)});
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
  std::vector<int> norm;
  for (int d = 0; d < rank; ++d)
    if (mask >> d & 1u) norm.push_back(d);
  Shape out = reduced_shape(output_shape(), mask, keepdim);
  push(ReduceOp{kind, std::move(norm), keepdim}, std::move(out));
  return *this;
}

Pipeline& Pipeline::softmax(int axis) {
  const std::string w = where("softmax");
  const int rank = static_cast<int>(output_shape().size());
  at(w, [&] { return axes_mask({axis}, rank, "softmax"); });
  push(SoftmaxOp{axis < 0 ? axis + rank : axis}, output_shape());
  return *this;
}

}  // namespace kfuse
