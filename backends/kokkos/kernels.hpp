// Kokkos kernels shared between the eager ops and the Kokkos backend's steps.
#pragma once

#include <optional>
#include <string>

#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::kokkos {

// Writes conv_transpose2d(x, w, bias) into `y`, any strides (arguments already checked).
void conv_transpose2d_into(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                           const ConvTranspose2dParams& p, const TensorView& y);

// The same as a GEMM over the input channels (Kokkos Kernels) and a
// column-to-image gather (conv_gemm.cpp, built with KFUSE_HAVE_KOKKOS_KERNELS),
// where gemm_conv_refusal is empty; else that says why it does not apply.
std::string gemm_conv_refusal(const TensorView& x, const TensorView& w, const ConvTranspose2dParams& p);
void conv_transpose2d_gemm_into(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                                const ConvTranspose2dParams& p, const TensorView& y);

}  // namespace kfuse::kokkos
