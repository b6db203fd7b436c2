// conv_transpose2d into Y on CUDA, any dtype: the tensor-core kernel, or
// cuDNN's backward-data convolution (cudnn_conv.cuh), or a plain gather
// kernel (detail::ConvTransposeGather, the Kokkos kernel's arithmetic).
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/convt_igemm.cuh"
#include "kfuse/detail/conv.hpp"

#ifdef KFUSE_HAVE_CUDNN
#include "backends/cuda/cudnn_conv.cuh"
#endif

namespace kfuse::detail::cuda {

namespace {

thread_local const char* t_conv_path = "none";

// Blocks of 256 for a grid-stride loop over `total` elements: up to 8 waves of
// the resident blocks.
template <class Kernel>
int64_t grid_stride_blocks(Kernel kernel, int64_t total) {
  const int64_t resident = int64_t(occupancy(kernel, 256, 0)) * device_info().limits.sm_count;
  return std::min<int64_t>((total + 255) / 256, resident * 8);
}

// ---- The gather kernel ------------------------------------------------------------

// Y element i (row-major over [N, C, H, W]) at y[yix.offset(i)]: any layout of Y.
template <class T>
__global__ void __launch_bounds__(256, 1) conv_transpose_gather(const ConvTransposeGather g, const T* x, const T* w,
                                                                const T* b, T* y, const Indexer yix, int64_t total) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += nthreads)
    y[yix.offset(i)] = to_elem<T>(g.at<acc_t<T>>(x, w, b, i));
}

// ---- The conv bias after cuDNN --------------------------------------------------------

// Element i of Y in memory order has channel (i / plane) % channels: plane is
// H x W for NCHW, 1 for channels-last.
template <class T>
__global__ void __launch_bounds__(256, 1)
    add_channel_bias(T* y, const T* b, int64_t plane, int64_t channels, int64_t total) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += nthreads)
    y[i] = to_elem<T>(to_acc<acc_t<T>>(y[i]) + to_acc<acc_t<T>>(b[(i / plane) % channels]));
}

template <class T>
void add_bias(const TensorView& b, const TensorView& y, bool channels_last) {
  const int64_t total = y.numel();
  if (total == 0) return;
  launch("kfuse::cuda::add_channel_bias", add_channel_bias<T>,
         dim3(grid_of(grid_stride_blocks(add_channel_bias<T>, total))), dim3(256), 0, false, static_cast<T*>(y.data),
         static_cast<const T*>(b.data), channels_last ? int64_t(1) : y.shape[2] * y.shape[3], y.shape[1], total);
}

template <class F>
void by_dtype(DType t, const F& f) {
  switch (t) {
    case DType::f64: f(double()); break;
    case DType::f16: f(__half()); break;
    case DType::bf16: f(__nv_bfloat16()); break;
    default: f(float());
  }
}

// Prepared once per plan, in order of preference: the implicit-GEMM
// tensor-core kernel with no epilogue (float32: 3xTF32 for strict precision,
// TF32 when the plan asks; the half types; contiguous x, NCHW Y), cuDNN's
// backward-data convolution (its engine chosen and timed for the contiguous
// input, other input strides and alignments set up on their first run), the
// gather kernel. The weight and bias in the pipeline's dtype, once.
class PreparedConv final : public PreparedStep {
 public:
  PreparedConv(const ConvStep& step, DType dtype)
      : step_(step),
        dtype_(dtype),
        weight_(in_dtype(step.weight, dtype)),
        bias_(step.bias ? in_dtype(*step.bias, dtype) : Tensor()) {
    const ConvPath path = overrides().conv;
    if (path == ConvPath::automatic && dtype != DType::f64 && !step.channels_last) {
      const IgemmProblem p = igemm_problem(step);
      const IgemmPrecision prec = igemm_precision(dtype, step.precision);
      if (igemm_why_not(p, prec).empty())
        igemm_ = std::make_unique<IgemmConv>(p, prec, weight_.view().data, bias_.defined() ? bias_.view().data : nullptr);
    }
#ifdef KFUSE_HAVE_CUDNN
    if (path != ConvPath::gather) {
      const CudnnEntry& c = cudnn_for(contiguous_strides(step.in_shape), 16, true);
      if (igemm_ && c.conv) keep_the_faster(*c.conv);
    }
#endif
  }

  void run(const TensorView& x, const TensorView& y) const override {
    if (igemm_ && x.is_contiguous()) {
      igemm_->run(x.data, y.data, stream());
      t_conv_path = "igemm";
      return;
    }
#ifdef KFUSE_HAVE_CUDNN
    if (overrides().conv != ConvPath::gather) {
      const int align = std::min(pointer_alignment(x.data), pointer_alignment(y.data));
      const CudnnEntry& c = cudnn_for(x.strides, align, false);
      if (c.conv) {
        run_cudnn(*c.conv, x, y);
        t_conv_path = "cudnn";
        return;
      }
    }
#endif
    by_dtype(dtype_, [&](auto t) { gather<decltype(t)>(x, y); });
  }

  std::string describe() const override {
    if (igemm_) return igemm_->describe() + timing_ + " (cuDNN for a strided input)";
#ifdef KFUSE_HAVE_CUDNN
    if (overrides().conv != ConvPath::gather) {
      const CudnnEntry& c = cudnn_for(contiguous_strides(step_.in_shape), 16, false);
      if (c.conv) return c.conv->describe() + (bias_.defined() ? ", then the bias" : "") + timing_;
      return "gather kernel (cuDNN: " + c.why_not + ")";
    }
#endif
    return "gather kernel";
  }

 private:
  template <class T>
  void gather(const TensorView& x, const TensorView& y) const {
    const int64_t total = y.numel();
    if (total == 0) return;
    const ConvTransposeGather g(x, weight_.view(), bias_.defined() ? &bias_.view() : nullptr, step_.params, y.shape);
    launch("kfuse::cuda::conv_transpose_gather", conv_transpose_gather<T>,
           dim3(grid_of(grid_stride_blocks(conv_transpose_gather<T>, total))), dim3(256), 0, false, g,
           static_cast<const T*>(x.data), static_cast<const T*>(weight_.view().data),
           bias_.defined() ? static_cast<const T*>(bias_.view().data) : nullptr, static_cast<T*>(y.data),
           make_indexer(y.shape, y.strides), total);
    t_conv_path = "gather";
  }

#ifdef KFUSE_HAVE_CUDNN
  // The conv, then the bias when the step has one.
  void run_cudnn(const CudnnConv& c, const TensorView& x, const TensorView& y) const {
    c.run(x.data, weight_.view().data, y.data);
    if (bias_.defined()) by_dtype(dtype_, [&](auto t) { add_bias<decltype(t)>(bias_.view(), y, step_.channels_last); });
  }

  // Both timed once on scratch tensors of the step's shapes (the second of
  // two runs each); the tensor-core kernel is kept only when it is at least
  // 2% faster (the tuner's rule), with the times in describe().
  void keep_the_faster(const CudnnConv& c) {
    const Tensor x = Tensor::empty(step_.in_shape, dtype_, Memory::cuda);
    const Tensor y = Tensor::empty(step_.out_shape, dtype_, Memory::cuda);
    KFUSE_CUDA_CHECK(cudaMemsetAsync(x.view().data, 0x3c, x.view().bytes(), stream()), "conv timing input");
    const auto twice = [](const auto& f) {
      f();
      return f();
    };
    const double t_igemm =
        twice([&] { return time_launches([&] { igemm_->run(x.view().data, y.view().data, stream()); }); });
    const double t_cudnn = twice([&] { return time_launches([&] { run_cudnn(c, x.view(), y.view()); }); });
    timing_ = cat(" (measured: tensor-core kernel ", t_igemm, " ms, cuDNN ", t_cudnn, " ms)");
    if (!(t_igemm < 0.98 * t_cudnn)) igemm_.reset();
  }

  struct CudnnEntry {
    std::unique_ptr<CudnnConv> conv;
    std::string why_not;
  };
  // The graph for x's strides and the pointers' alignment, built on first use
  // (at plan time for the contiguous x, its engines timed; a run that brings
  // other strides or alignments takes the heuristics' first engine for them).
  const CudnnEntry& cudnn_for(const Shape& x_strides, int align, bool time_candidates) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<CudnnEntry>& c = by_layout_[{x_strides, align}];
    if (!c) {
      c = std::make_unique<CudnnEntry>();
      c->conv = CudnnConv::make(step_, dtype_, x_strides, align, weight_.view().data, time_candidates, c->why_not);
    }
    return *c;
  }
  mutable std::mutex mutex_;
  mutable std::map<std::pair<Shape, int>, std::unique_ptr<CudnnEntry>> by_layout_;
#endif
  ConvStep step_;
  DType dtype_;
  Tensor weight_, bias_;
  std::unique_ptr<IgemmConv> igemm_;
  std::string timing_;  // the measured choice, for describe()
};

}  // namespace

Preparation prepare_conv(const ConvStep& step, DType dtype) { return Preparation::of<PreparedConv>(step, dtype); }

const char* last_conv_path() { return t_conv_path; }

}  // namespace kfuse::detail::cuda
