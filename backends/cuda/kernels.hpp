// The CUDA backend's steps, prepared (backends/backend.hpp): one .cu file
// each decides which dtypes it runs and fixes what it can at plan time.
#pragma once

#include "backends/backend.hpp"

namespace kfuse::detail::cuda {

enum class IgemmPrecision;

// The fold (DESIGN.md section 4): x of dtype f32/f16/bf16 (A = float, output
// in x's dtype) or f64; two launches, the plane sums, then the contraction
// fused with the tail.
Preparation prepare_fold(const FoldStep<float>& step, DType dtype);
Preparation prepare_fold(const FoldStep<double>& step, DType dtype);

// One epilogue stage over Y (f32 or f64, any strides).
Preparation prepare_epilogue(const EpilogueStep<float>& step, DType dtype);
Preparation prepare_epilogue(const EpilogueStep<double>& step, DType dtype);

// The NVRTC program of a float32-accumulating epilogue stage with these
// chains (ops in host memory) and reduction over Y of `dtype`, and the name of every kernel
// it may launch: what prepare_epilogue compiles, for the check that each
// compiles (tests/cuda/jit_check.cpp, which needs no GPU).
struct JitProgram {
  std::string source;
  std::vector<std::string> kernels;
};
JitProgram epilogue_program(const std::vector<PointOp<float>>& body, const std::vector<PointOp<float>>& after,
                            ReduceKind reduce, DType dtype);

// The NVRTC program of the implicit-GEMM conv kernel (convt_igemm.cuh) of a
// precision with these chains (host memory) and reduction kind: its generic
// and its fast-path kernel, in that order. What IgemmConv compiles, for the
// same check.
JitProgram igemm_program(IgemmPrecision precision, const std::vector<PointOp<float>>& body,
                         const std::vector<PointOp<float>>& after, ReduceKind reduce);

// conv_transpose2d into Y (NCHW or channels-last), any dtype (conv.cu): the
// tensor-core kernel or cuDNN's backward-data convolution, whichever
// measures faster, else a plain CUDA gather kernel.
Preparation prepare_conv(const ConvStep& step, DType dtype);

// conv_transpose2d with its epilogue inside: the implicit-GEMM tensor-core
// kernel (convt_igemm.cuh), 3xTF32 for strict float32, TF32 when the plan
// asks, bf16/f16 inputs with fp32 accumulation; refused where the kernel
// does not cover the geometry or the epilogue.
Preparation prepare_conv_epilogue(const ConvEpilogueStep& step, DType dtype);

// The implicit-GEMM kernel's description of a conv step's geometry, and its
// product for a dtype and precision (float32: 3xTF32 strict, or TF32).
struct IgemmProblem;
IgemmProblem igemm_problem(const ConvStep& step);
IgemmPrecision igemm_precision(DType dtype, Precision precision);

// A weight or bias in the dtype the kernels multiply (a half pipeline's
// float32 parameters rounded to its dtype), in CUDA memory, once.
Tensor in_dtype(const Tensor& t, DType dtype);

// Which path the last conv of the calling thread took ("cudnn" or "gather").
const char* last_conv_path();

}  // namespace kfuse::detail::cuda
