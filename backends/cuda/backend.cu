// The hand-written CUDA backend: runs plan steps whose data live in CUDA
// device memory. Registered before the Kokkos backend (backends/registry.cpp).
//
//   fold steps      x float32/float16/bfloat16 (fp32 accumulation, output in
//                   x's dtype) or float64 (fp64 throughout)   -> fold.cu
//   epilogue steps  float32, float64                           -> epilogue.cu
//   conv steps      float32, float64 (cuDNN, else a gather)    -> conv.cu
//
// Everything runs on the calling thread's default stream; fused() returns
// with its result complete (it synchronizes that stream), conv_transpose2d()
// is stream-ordered before the epilogue that follows it.
#include "backends/backend.hpp"
#include "backends/cuda/kernels.hpp"

namespace kfuse::detail {

namespace {

struct CudaBackend final : Backend {
  const char* name() const override { return "cuda"; }

  bool accepts(const Step& step, Memory memory, DType dtype) const override {
    if (memory != Memory::cuda) return false;
    if (std::holds_alternative<OpStep>(step)) return false;
    const bool full = dtype == DType::f32 || dtype == DType::f64;
    if (std::holds_alternative<ConvStep>(step)) return full;
    return std::visit([&](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<S, FoldStep<float>>)
        return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
      else if constexpr (std::is_same_v<S, FoldStep<double>> || std::is_same_v<S, EpilogueStep<double>>)
        return dtype == DType::f64;
      else
        return dtype == DType::f32;
    }, std::get<FusedStep>(step));
  }

  void conv_transpose2d(const ConvStep& s, const TensorView& x, const TensorView& y) const override {
    cuda::run_conv(s, x, y);
  }

  void fused(const FusedStep& step, const TensorView& in, const TensorView& out) const override {
    std::visit([&](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<S, FoldStep<float>> || std::is_same_v<S, FoldStep<double>>)
        cuda::run_fold(s, in, out);
      else
        cuda::run_epilogue(s, in, out);
    }, step);
  }
};

}  // namespace

const Backend& cuda_backend() {
  static const CudaBackend backend;
  return backend;
}

}  // namespace kfuse::detail
