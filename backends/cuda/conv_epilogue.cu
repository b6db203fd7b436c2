// The conv with its epilogue inside, prepared: the implicit-GEMM tensor-core
// kernel (convt_igemm.cuh) with the plan's point chain, or its reduction or
// softmax over C, or its reduction over H and W, applied to the accumulators
// before the one store.
//   float32 strict -> 3xTF32 (fp32 accuracy), float32 tf32 -> TF32,
//   bfloat16 / float16 -> their m16n8k16 products, fp32 accumulation.
#include "backends/cuda/context.hpp"
#include "backends/cuda/convt_igemm.cuh"
#include "backends/cuda/kernels.hpp"
#include "kfuse/spec.hpp"

namespace kfuse::detail::cuda {

namespace {

// The epilogue step's chains as the kernel's epilogue (the plan's memory
// holds them as long as the step).
IgemmEpilogue igemm_epilogue(const EpilogueStep<float>& e) {
  IgemmEpilogue ep;
  ep.body = e.body;
  ep.mode = e.main == MainKind::map ? 0 : e.main == MainKind::softmax ? 2 : e.mask == kSpatialAxes ? 3 : 1;
  ep.kind = e.reduce;
  ep.after = e.after;
  return ep;
}

class PreparedConvEpilogue final : public PreparedStep {
 public:
  PreparedConvEpilogue(const ConvEpilogueStep& step, DType dtype, IgemmPrecision precision)
      : step_(step),
        weight_(in_dtype(step.conv.weight, dtype)),
        bias_(step.conv.bias ? in_dtype(*step.conv.bias, dtype) : Tensor()),
        conv_(igemm_problem(step.conv), precision, weight_.view().data, bias_.defined() ? bias_.view().data : nullptr,
              igemm_epilogue(step_.epilogue)) {}

  void run(const TensorView& x, const TensorView& out) const override {
    // The kernel reads x as contiguous NCHW: a strided x is copied once first.
    const Tensor packed = x.is_contiguous() ? Tensor() : Tensor::copy_of(x, Memory::cuda);
    conv_.run(packed.defined() ? packed.view().data : x.data, out.data, stream());
  }

  std::string describe() const override { return conv_.describe(); }

 private:
  ConvEpilogueStep step_;
  Tensor weight_, bias_;
  IgemmConv conv_;
};

}  // namespace

Tensor in_dtype(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype && t.memory() == Memory::cuda) return t;
  return Tensor::copy_of(cast(Tensor::copy_of(t, Memory::host).view(), dtype).view(), Memory::cuda);
}

IgemmPrecision igemm_precision(DType dtype, Precision precision) {
  switch (dtype) {
    case DType::bf16: return IgemmPrecision::bf16;
    case DType::f16: return IgemmPrecision::f16;
    default: return precision == Precision::tf32 ? IgemmPrecision::tf32 : IgemmPrecision::tf32x3;
  }
}

IgemmProblem igemm_problem(const ConvStep& c) {
  IgemmProblem p;
  p.N = c.in_shape[0], p.Cin = c.in_shape[1], p.H = c.in_shape[2], p.W = c.in_shape[3];
  p.Cout = c.out_shape[1], p.kH = c.weight.shape()[2], p.kW = c.weight.shape()[3];
  for (int a = 0; a < 2; ++a) {
    p.stride[a] = c.params.stride[a], p.padding[a] = c.params.padding[a];
    p.output_padding[a] = c.params.output_padding[a], p.dilation[a] = c.params.dilation[a];
  }
  p.groups = c.params.groups;
  p.Hout = c.out_shape[2], p.Wout = c.out_shape[3];
  return p;
}

Preparation prepare_conv_epilogue(const ConvEpilogueStep& step, DType dtype) {
  if (dtype == DType::f64)
    return Preparation::refuse("the tensor-core conv takes float32, float16 and bfloat16, not float64");
  const IgemmPrecision precision = igemm_precision(dtype, step.conv.precision);
  const IgemmProblem p = igemm_problem(step.conv);
  const EpilogueStep<float>& e = step.epilogue;
  const std::string why = e.main == MainKind::softmax ? igemm_why_not_softmax_c(p, precision)
                          : e.main == MainKind::reduce && e.mask == kSpatialAxes
                              ? igemm_why_not_reduce_hw(p, precision, e.reduce)
                              : igemm_why_not(p, precision);
  if (!why.empty()) return Preparation::refuse(why);
  return Preparation::of<PreparedConvEpilogue>(step, dtype, precision);
}

}  // namespace kfuse::detail::cuda
