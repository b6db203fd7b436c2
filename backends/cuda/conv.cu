// conv_transpose2d into Y on CUDA, any dtype: the tensor-core kernel, or
// cuDNN's backward-data convolution (cudnn_conv.cuh), or a plain gather
// kernel (detail::ConvTransposeGather, the Kokkos kernel's arithmetic).
#include <algorithm>
#include <functional>
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

// [N, C, P] -> [N, P, C] (P = H x W) for elements of E's size (an unsigned
// type): 32 x 32 tiles through shared memory, so that the loads (along P) and
// the stores (along C) are both coalesced.
template <class E>
__global__ void __launch_bounds__(256) to_channels_last(const E* __restrict__ x, E* __restrict__ xt, int64_t C,
                                                        int64_t P, int64_t tiles_c, int64_t tiles_p, int64_t tiles) {
  __shared__ E tile[32][33];
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t n = t / (tiles_c * tiles_p), r = t % (tiles_c * tiles_p);
    const int64_t c0 = r / tiles_p * 32, p0 = r % tiles_p * 32;
    const E* xs = x + n * C * P;
    E* ts = xt + n * C * P;
    for (int i = threadIdx.y; i < 32; i += 8)
      if (c0 + i < C && p0 + threadIdx.x < P) tile[i][threadIdx.x] = xs[(c0 + i) * P + p0 + threadIdx.x];
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8)
      if (p0 + i < P && c0 + threadIdx.x < C) ts[(p0 + i) * C + c0 + threadIdx.x] = tile[threadIdx.x][i];
    __syncthreads();
  }
}

void to_channels_last(const void* x, void* xt, int64_t N, int64_t C, int64_t P, int64_t elem_bytes) {
  const int64_t tiles_c = (C + 31) / 32, tiles_p = (P + 31) / 32, tiles = N * tiles_c * tiles_p;
  if (tiles == 0) return;
  const auto go = [&](auto e) {
    using E = decltype(e);
    launch("kfuse::cuda::to_channels_last", to_channels_last<E>, dim3(grid_of(tiles)), dim3(32, 8), 0, false,
           static_cast<const E*>(x), static_cast<E*>(xt), C, P, tiles_c, tiles_p, tiles);
  };
  if (elem_bytes == 2) go(uint16_t());
  else if (elem_bytes == 8) go(uint64_t());
  else go(uint32_t());
}

// How the conv runs. Prepared once per plan; the candidates are timed on the
// step's shapes (the second of two runs each) and a later one is kept only
// when it is 2% faster than the best before it (the tuner's rule):
//   cudnn            cuDNN's backward-data convolution on x as it comes (NCHW)
//   cudnn_x_nhwc     x transposed to channels-last first (and the weight to
//                    [Cin, kH, kW, Cout/G]): cuDNN's Hopper kernels work on
//                    channels-last data; the transpose costs one read and one
//                    write of x (Inductor does the same before cuDNN)
//   igemm            the implicit-GEMM tensor-core kernel with no epilogue
//                    (float32: 3xTF32 strict, TF32 when asked; the half
//                    types; contiguous x, NCHW Y)
// and the gather kernel where cuDNN is absent or refuses. A run with a
// strided x takes cuDNN on x's own strides (its graph built on first use).
enum class Route { gather, cudnn, cudnn_x_nhwc, igemm };

class PreparedConv final : public PreparedStep {
 public:
  PreparedConv(const ConvStep& step, DType dtype)
      : step_(step),
        dtype_(dtype),
        weight_(in_dtype(step.weight, dtype)),
        bias_(step.bias ? in_dtype(*step.bias, dtype) : Tensor()) {
    const ConvPath path = overrides().conv;
#ifdef KFUSE_HAVE_CUDNN
    if (path != ConvPath::gather) {
      const Shape& w = weight_.shape();
      weight_nhwc_ = Tensor::empty(w, dtype, Memory::cuda);
      to_channels_last(weight_.view().data, weight_nhwc_.view().data, w[0], w[1], w[2] * w[3], int64_t(size_of(dtype)));
      // (A plan may run on another thread, so on another stream.)
      KFUSE_CUDA_CHECK(cudaStreamSynchronize(stream()), "the weight as [Cin, kH, kW, Cout/G]");
      if (cudnn_for(contiguous_strides(step.in_shape), 16, true).conv) route_ = Route::cudnn;
    }
#endif
    if (path == ConvPath::automatic && dtype != DType::f64 && !step.channels_last) {
      const IgemmProblem p = igemm_problem(step);
      const IgemmPrecision prec = igemm_precision(dtype, step.precision);
      if (igemm_why_not(p, prec).empty())
        igemm_ = std::make_unique<IgemmConv>(p, prec, weight_.view().data, bias_.defined() ? bias_.view().data : nullptr);
    }
    choose_route(path);
  }

  void run(const TensorView& x, const TensorView& y) const override {
    if (route_ == Route::igemm && x.is_contiguous()) {
      igemm_->run(x.data, y.data, stream());
      t_conv_path = "igemm";
      return;
    }
#ifdef KFUSE_HAVE_CUDNN
    if (route_ == Route::cudnn_x_nhwc && x.is_contiguous()) {
      run_x_nhwc(x.data, y);
      t_conv_path = "cudnn";
      return;
    }
    if (route_ != Route::gather) {
      const int align = std::min(pointer_alignment(x.data), pointer_alignment(y.data));
      const CudnnEntry& c = cudnn_for(x.strides, align, false);
      if (c.conv) {
        run_cudnn(c, x.data, y, workspace().scratch(std::size_t(c.conv->workspace_bytes())));
        t_conv_path = "cudnn";
        return;
      }
    }
#endif
    by_dtype(dtype_, [&](auto t) { gather<decltype(t)>(x, y); });
  }

  std::string describe() const override {
    switch (route_) {
      case Route::igemm: return igemm_->describe() + timing_ + " (cuDNN for a strided input)";
#ifdef KFUSE_HAVE_CUDNN
      case Route::cudnn_x_nhwc:
        return cat("x to channels-last (", xt_bytes(), " bytes of workspace), then ",
                   cudnn_for(nhwc_strides(), 16, false).conv->describe(), bias_.defined() ? ", then the bias" : "",
                   timing_);
      case Route::cudnn:
        return cudnn_for(contiguous_strides(step_.in_shape), 16, false).conv->describe() +
               (bias_.defined() ? ", then the bias" : "") + timing_;
      case Route::gather:
        if (overrides().conv != ConvPath::gather)
          return "gather kernel (cuDNN: " + cudnn_for(contiguous_strides(step_.in_shape), 16, false).why_not + ")";
#else
      case Route::cudnn:
      case Route::cudnn_x_nhwc:
      case Route::gather:
#endif
        return "gather kernel";
    }
    return "gather kernel";
  }

 private:
#ifdef KFUSE_HAVE_CUDNN
  struct CudnnEntry {
    std::unique_ptr<CudnnConv> conv;
    std::string why_not;
    bool weight_nhwc = false;  // the graph reads the weight as [Cin, kH, kW, Cout/G]
  };
#endif

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

  // The candidates that apply, each timed on scratch tensors of the step's
  // shapes (the second of two runs), in the order of the comment above.
  void choose_route(ConvPath path) {
    std::vector<std::pair<Route, std::function<void(const TensorView&, const TensorView&)>>> candidates;
#ifdef KFUSE_HAVE_CUDNN
    if (route_ == Route::cudnn) {
      const CudnnEntry& c = cudnn_for(contiguous_strides(step_.in_shape), 16, false);
      if (path != ConvPath::cudnn_x_nhwc)
        candidates.emplace_back(Route::cudnn, [&](const TensorView& x, const TensorView& y) {
          run_cudnn(c, x.data, y, workspace().scratch(std::size_t(c.conv->workspace_bytes())));
        });
      // (Where C or H x W is 1 the two layouts are one.)
      const Shape& in = step_.in_shape;
      if ((path == ConvPath::automatic || path == ConvPath::cudnn_x_nhwc) && in[1] > 1 && in[2] * in[3] > 1 &&
          cudnn_for(nhwc_strides(), 16, true).conv)
        candidates.emplace_back(Route::cudnn_x_nhwc,
                                [&](const TensorView& x, const TensorView& y) { run_x_nhwc(x.data, y); });
    }
#endif
    if (igemm_)
      candidates.emplace_back(Route::igemm, [&](const TensorView& x, const TensorView& y) {
        igemm_->run(x.data, y.data, stream());
      });
    if (candidates.size() == 1) route_ = candidates[0].first;
    if (candidates.size() <= 1) return;
    const Tensor x = Tensor::empty(step_.in_shape, dtype_, Memory::cuda);
    const Tensor y = Tensor::empty(step_.out_shape, dtype_, Memory::cuda);
    const TensorView yv = step_.channels_last
                              ? TensorView(y.view().data, dtype_, step_.out_shape,
                                           channels_last_strides(step_.out_shape), Memory::cuda)
                              : y.view();
    KFUSE_CUDA_CHECK(cudaMemsetAsync(x.view().data, 0x3c, x.view().bytes(), stream()), "conv timing input");
    double best = 0.0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const auto once = [&] { return time_launches([&] { candidates[i].second(x.view(), yv); }); };
      once();
      const double ms = once();
      timing_ += cat(i ? ", " : " (measured: ", route_name(candidates[i].first), " ", ms, " ms");
      if (i == 0 || ms < 0.98 * best) {
        best = ms;
        route_ = candidates[i].first;
      }
    }
    timing_ += ")";
    if (route_ != Route::igemm) igemm_.reset();
  }

  static const char* route_name(Route r) {
    switch (r) {
      case Route::cudnn: return "cuDNN on NCHW x";
      case Route::cudnn_x_nhwc: return "x to channels-last then cuDNN";
      case Route::igemm: return "tensor-core kernel";
      case Route::gather: break;
    }
    return "gather kernel";
  }

#ifdef KFUSE_HAVE_CUDNN
  Shape nhwc_strides() const { return channels_last_strides(step_.in_shape); }
  int64_t xt_bytes() const {
    const Shape& in = step_.in_shape;
    const int64_t b = in[0] * in[1] * in[2] * in[3] * int64_t(size_of(dtype_));
    return (b + 255) / 256 * 256;
  }

  // The conv on x at `x` as the entry's graph describes it, then the bias
  // when the step has one.
  void run_cudnn(const CudnnEntry& c, const void* x, const TensorView& y, void* ws) const {
    c.conv->run(x, (c.weight_nhwc ? weight_nhwc_ : weight_).view().data, y.data, ws);
    if (bias_.defined()) by_dtype(dtype_, [&](auto t) { add_bias<decltype(t)>(bias_.view(), y, step_.channels_last); });
  }

  // x (contiguous NCHW) transposed into the workspace, cuDNN's workspace after it.
  void run_x_nhwc(const void* x, const TensorView& y) const {
    const CudnnEntry& c = cudnn_for(nhwc_strides(), std::min(16, pointer_alignment(y.data)), false);
    if (!c.conv) fail(ErrorCategory::backend, "conv_transpose2d (cuda)", "cuDNN has no graph for channels-last x and Y at ",
                      y.data, ": ", c.why_not);
    const Shape& in = step_.in_shape;
    char* xt = static_cast<char*>(workspace().scratch(std::size_t(xt_bytes() + c.conv->workspace_bytes())));
    to_channels_last(x, xt, in[0], in[1], in[2] * in[3], int64_t(size_of(dtype_)));
    run_cudnn(c, xt, y, xt + xt_bytes());
  }

  // The graph for x's strides and the pointers' alignment, built on first use
  // (at plan time for the candidates, their engines timed; a run that brings
  // other strides or alignments takes the heuristics' first engine for them).
  // A channels-last x goes with the channels-last weight.
  const CudnnEntry& cudnn_for(const Shape& x_strides, int align, bool time_candidates) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<CudnnEntry>& c = by_layout_[{x_strides, align}];
    if (!c) {
      c = std::make_unique<CudnnEntry>();
      c->weight_nhwc = x_strides == nhwc_strides();
      const Shape& w = weight_.shape();
      c->conv = CudnnConv::make(step_, dtype_, x_strides, c->weight_nhwc ? channels_last_strides(w) : contiguous_strides(w),
                                align, (c->weight_nhwc ? weight_nhwc_ : weight_).view().data, time_candidates,
                                c->why_not);
    }
    return *c;
  }
  mutable std::mutex mutex_;
  mutable std::map<std::pair<Shape, int>, std::unique_ptr<CudnnEntry>> by_layout_;
  Tensor weight_nhwc_;
#endif
  ConvStep step_;
  DType dtype_;
  Tensor weight_, bias_;
  std::unique_ptr<IgemmConv> igemm_;
  Route route_ = Route::gather;
  std::string timing_;  // the measured choice, for describe()
};

}  // namespace

Preparation prepare_conv(const ConvStep& step, DType dtype) { return Preparation::of<PreparedConv>(step, dtype); }

const char* last_conv_path() { return t_conv_path; }

}  // namespace kfuse::detail::cuda
