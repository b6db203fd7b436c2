// The hand-written CUDA backend: prepares plan steps whose data live in CUDA
// device memory (each kernel file decides its dtypes: fold.cu, epilogue.cu,
// conv.cu). Registered before the Kokkos backend (backends/registry.cpp).
// Every kernel runs on the calling thread's default stream
// (cudaStreamPerThread), in step order; Plan::run synchronizes it last.
#include "backends/cuda/kernels.hpp"

namespace kfuse::detail {

namespace {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }

  Preparation prepare(const Step& step, const StepContext& ctx) const override {
    if (ctx.memory != Memory::cuda)
      return Preparation::refuse(cat("the data are in ", to_string(ctx.memory), " memory, not CUDA memory"));
    return std::visit([&](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<S, ConvStep>) return cuda::prepare_conv(s, ctx.dtype);
      else if constexpr (std::is_same_v<S, ConvEpilogueStep>) return cuda::prepare_conv_epilogue(s, ctx.dtype);
      else if constexpr (std::is_same_v<S, ReferenceStep>) return Preparation::refuse("the reference runs eager ops");
      else if constexpr (std::is_same_v<S, FoldStep<float>> || std::is_same_v<S, FoldStep<double>>)
        return cuda::prepare_fold(s, ctx.dtype);
      else return cuda::prepare_epilogue(s, ctx.dtype);
    }, step);
  }
};

}  // namespace

const Backend& cuda_backend() {
  static const CudaBackend backend;
  return backend;
}

}  // namespace kfuse::detail
