// Eager ops: each runs as its own kernel on the backend that owns the data's
// memory and returns a new row-major tensor. The pipeline's reference
// strategy is a chain of these.
#pragma once

#include <optional>
#include <vector>

#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse {

// Launch shape for the team kernels (reductions, softmax): a team of
// team_size * vector_length threads. 0: the tuner's choice (include/kfuse/tuning.hpp).
struct TeamLaunch {
  int team_size = 0;
  int vector_length = 0;
};

// Validates every argument of conv_transpose2d (ranks, channels, groups,
// stride/dilation >= 1, padding >= 0, output_padding < max(stride, dilation),
// output >= 1) and returns the output shape. Errors name the argument and values.
Shape conv_transpose2d_shape(const Shape& x, const Shape& w, const std::optional<Shape>& bias,
                             const ConvTranspose2dParams& p);

Tensor conv_transpose2d(const TensorView& x, const TensorView& w,
                        const std::optional<TensorView>& bias, const ConvTranspose2dParams& p);

Tensor unary(const TensorView& x, const Unary& op);
Tensor binary(const TensorView& a, const TensorView& b, BinaryKind kind);  // NumPy broadcasting
Tensor binary(const TensorView& a, double scalar, BinaryKind kind);       // a (op) scalar

Tensor reduce(const TensorView& x, ReduceKind kind, const std::vector<int>& axes, bool keepdim,
              TeamLaunch launch = {});
Tensor softmax(const TensorView& x, int axis, TeamLaunch launch = {});

}  // namespace kfuse
