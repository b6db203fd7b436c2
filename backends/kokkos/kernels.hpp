// Kokkos kernels shared between the eager ops and the Kokkos backend's steps.
#pragma once

#include <optional>

#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::kokkos {

// Writes conv_transpose2d(x, w, bias) into `y`, any strides (arguments already checked).
void conv_transpose2d_into(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                           const ConvTranspose2dParams& p, const TensorView& y);

}  // namespace kfuse::kokkos
