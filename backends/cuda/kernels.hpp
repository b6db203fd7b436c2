// Host entry points of the CUDA backend's kernels (one .cu file each), called
// by backends/cuda/backend.cu. Arguments are already checked by Plan::run and
// accepted by the backend (CUDA memory, supported dtypes).
#pragma once

#include "plan/plan_impl.hpp"

namespace kfuse::detail::cuda {

// The fold (DESIGN.md section 4): x [N, C, H, W] of dtype f32/f16/bf16 (A =
// float) or f64 (A = double); `out` contiguous, of x's dtype. Two launches:
// the plane sums, then the contraction fused with the tail.
void run_fold(const FoldStep<float>& step, const TensorView& x, const TensorView& out);
void run_fold(const FoldStep<double>& step, const TensorView& x, const TensorView& out);

// The fused epilogue over Y (f32 or f64, any strides); `out` contiguous.
void run_epilogue(const EpilogueStep<float>& step, const TensorView& y, const TensorView& out);
void run_epilogue(const EpilogueStep<double>& step, const TensorView& y, const TensorView& out);

// conv_transpose2d into the contiguous y: cuDNN's backward-data convolution
// when built with cuDNN and it accepts the configuration, else a plain CUDA
// gather kernel. Stream-ordered: does not wait for the result.
void run_conv(const ConvStep& step, const TensorView& x, const TensorView& y);

// Which path the last run_conv of the calling thread took ("cudnn" or "gather").
const char* last_conv_path();

}  // namespace kfuse::detail::cuda
