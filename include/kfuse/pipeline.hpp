// A pipeline: an input shape and dtype, then a chain of ops from the
// vocabulary, shapes inferred and checked as each op is added.
//
//   auto p = kfuse::Pipeline({16, 64, 512, 512})
//                .conv_transpose2d(w, b)
//                .mean({2, 3}, true).add(bias).logsumexp({1}, true).sum({2, 3}).mul(10.0);
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse {

struct ConvTranspose2dOp {
  Tensor weight;               // [Cin, Cout/groups, kH, kW]
  std::optional<Tensor> bias;  // [Cout]
  ConvTranspose2dParams params;
};
struct UnaryOp {
  Unary op;
};
struct BinaryOp {
  BinaryKind kind;
  std::optional<Tensor> operand;  // broadcast against the running value; else `scalar`
  double scalar = 0.0;
};
struct ReduceOp {
  ReduceKind kind;
  std::vector<int> axes;  // normalised: non-negative, ascending
  bool keepdim = false;
};
struct SoftmaxOp {
  int axis;  // normalised
};
using Op = std::variant<ConvTranspose2dOp, UnaryOp, BinaryOp, ReduceOp, SoftmaxOp>;

std::string op_name(const Op& op);  // "conv_transpose2d", "relu", "add", "mean", "softmax", ...

struct PipelineStage {
  Op op;
  Shape in_shape;
  Shape out_shape;
};

class Pipeline {
 public:
  explicit Pipeline(Shape input_shape, DType dtype = DType::f32);

  // Front op; only as the first op. Weight and bias are host tensors of the
  // pipeline's dtype (float32 for float16/bfloat16 pipelines).
  Pipeline& conv_transpose2d(Tensor weight, std::optional<Tensor> bias = std::nullopt,
                             ConvTranspose2dParams params = {});

  Pipeline& unary(Unary op);
  Pipeline& relu() { return unary({UnaryKind::relu}); }
  Pipeline& leaky_relu(double slope = 0.01) { return unary({UnaryKind::leaky_relu, slope}); }
  Pipeline& tanh() { return unary({UnaryKind::tanh}); }
  Pipeline& sigmoid() { return unary({UnaryKind::sigmoid}); }
  Pipeline& gelu(bool tanh_approximation = false) {
    return unary({tanh_approximation ? UnaryKind::gelu_tanh : UnaryKind::gelu});
  }
  Pipeline& silu() { return unary({UnaryKind::silu}); }
  Pipeline& mish() { return unary({UnaryKind::mish}); }
  Pipeline& hardtanh(double lo = -1.0, double hi = 1.0) { return unary({UnaryKind::hardtanh, lo, hi}); }
  Pipeline& hardswish() { return unary({UnaryKind::hardswish}); }
  Pipeline& clamp(double lo, double hi) { return unary({UnaryKind::clamp, lo, hi}); }
  Pipeline& exp() { return unary({UnaryKind::exp}); }
  Pipeline& log() { return unary({UnaryKind::log}); }
  Pipeline& neg() { return unary({UnaryKind::neg}); }
  Pipeline& abs() { return unary({UnaryKind::abs}); }

  Pipeline& binary(BinaryKind kind, double scalar);
  Pipeline& binary(BinaryKind kind, Tensor operand);  // host tensor, NumPy broadcasting
  Pipeline& add(double s) { return binary(BinaryKind::add, s); }
  Pipeline& add(Tensor t) { return binary(BinaryKind::add, std::move(t)); }
  Pipeline& sub(double s) { return binary(BinaryKind::sub, s); }
  Pipeline& sub(Tensor t) { return binary(BinaryKind::sub, std::move(t)); }
  Pipeline& mul(double s) { return binary(BinaryKind::mul, s); }
  Pipeline& mul(Tensor t) { return binary(BinaryKind::mul, std::move(t)); }
  Pipeline& div(double s) { return binary(BinaryKind::div, s); }
  Pipeline& div(Tensor t) { return binary(BinaryKind::div, std::move(t)); }
  Pipeline& minimum(double s) { return binary(BinaryKind::min, s); }
  Pipeline& minimum(Tensor t) { return binary(BinaryKind::min, std::move(t)); }
  Pipeline& maximum(double s) { return binary(BinaryKind::max, s); }
  Pipeline& maximum(Tensor t) { return binary(BinaryKind::max, std::move(t)); }

  Pipeline& reduce(ReduceKind kind, std::vector<int> axes, bool keepdim = false);
  Pipeline& sum(std::vector<int> axes, bool keepdim = false) { return reduce(ReduceKind::sum, std::move(axes), keepdim); }
  Pipeline& mean(std::vector<int> axes, bool keepdim = false) { return reduce(ReduceKind::mean, std::move(axes), keepdim); }
  Pipeline& max(std::vector<int> axes, bool keepdim = false) { return reduce(ReduceKind::max, std::move(axes), keepdim); }
  Pipeline& min(std::vector<int> axes, bool keepdim = false) { return reduce(ReduceKind::min, std::move(axes), keepdim); }
  Pipeline& logsumexp(std::vector<int> axes, bool keepdim = false) {
    return reduce(ReduceKind::logsumexp, std::move(axes), keepdim);
  }
  Pipeline& softmax(int axis);

  const Shape& input_shape() const { return input_shape_; }
  DType dtype() const { return dtype_; }
  const Shape& output_shape() const { return stages_.empty() ? input_shape_ : stages_.back().out_shape; }
  const std::vector<PipelineStage>& stages() const { return stages_; }
  // Fewest bytes the pipeline must move: the input, each weight and operand
  // read once, the output written once.
  int64_t floor_bytes() const;

  // The same ops on a batch of `n` along axis 0 (the stages replayed on the
  // new input shape): how kfuse::mpi gives each rank its local pipeline. Throws
  // unsupported when an op mixes samples, so that a batch split would change
  // the result: a reduction over axis 0 or a softmax along it (they would need
  // a cross-rank reduction), or an operand that varies along axis 0 (extent
  // != 1 there) or adds leading axes (the batch would no longer be axis 0).
  Pipeline with_batch(int64_t n) const;

 private:
  void push(Op op, Shape out_shape);
  std::string where(const std::string& name) const;  // "op #3 (add)"
  DType operand_dtype() const;

  Shape input_shape_;
  DType dtype_;
  std::vector<PipelineStage> stages_;
};

}  // namespace kfuse
