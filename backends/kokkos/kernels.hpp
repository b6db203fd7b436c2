// Kokkos kernels shared between the eager ops and the Kokkos backend's steps.
#pragma once

#include <optional>
#include <string>

#include "kfuse/kokkos.hpp"
#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::kokkos {

// Writes conv_transpose2d(x, w, bias) into `y`, any strides (arguments already checked).
void conv_transpose2d_into(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                           const ConvTranspose2dParams& p, const TensorView& y);

// The same as a GEMM over the input channels (Kokkos Kernels) and a
// column-to-image gather (conv_gemm.cpp, built with KFUSE_HAVE_KOKKOS_KERNELS),
// prepared for one geometry (the gather's tap tables, in device memory).
class GemmConv {
 public:
  // Why the GEMM does not take this geometry ("" when it does): constructible then.
  static std::string refusal(const Shape& x, const Shape& w, const ConvTranspose2dParams& p, const Shape& y);
  GemmConv(const Shape& x, const Shape& w, const ConvTranspose2dParams& p, const Shape& y);
  // Why it does not take these views of that geometry ("" when it does).
  static std::string refusal(const TensorView& x, const TensorView& w);
  void run(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
           const ConvTranspose2dParams& p, const TensorView& y) const;

 private:
  Kokkos::View<int*, DeviceMemSpace> tap_rows_, tap_cols_;  // [Ho, kH] / [Wo, kW]: each tap's input row / column
};

}  // namespace kfuse::kokkos
