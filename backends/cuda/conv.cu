// conv_transpose2d on CUDA: cuDNN's backward-data convolution (a transposed
// convolution is the data gradient of the forward convolution from y to x),
// fp32 math unless the plan asks for TF32; else a plain gather kernel
// (detail::ConvTransposeGather, the Kokkos kernel's arithmetic).
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/convt_igemm.cuh"
#include "kfuse/detail/conv.hpp"

#ifdef KFUSE_HAVE_CUDNN
#include <cudnn.h>
#endif

namespace kfuse::detail::cuda {

namespace {

thread_local const char* t_conv_path = "none";

// ---- The gather kernel ------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(256, 1)
    conv_transpose_gather(const ConvTransposeGather g, const T* x, const T* w, const T* b, T* y, int64_t total) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += nthreads)
    y[i] = T(g.at<acc_t<T>>(x, w, b, i));
}

template <class T>
void gather(const ConvStep& s, const TensorView& x, const TensorView& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const ConvTransposeGather g(x, s.weight, s.bias ? &s.bias->view() : nullptr, s.params, y.shape);
  const int64_t resident = int64_t(occupancy(conv_transpose_gather<T>, 256, 0)) * device_info().limits.sm_count;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, resident * 8);
  launch("kfuse::cuda::conv_transpose_gather", conv_transpose_gather<T>, dim3(grid_of(blocks)), dim3(256), 0, false, g,
         static_cast<const T*>(x.data), static_cast<const T*>(s.weight.view().data),
         s.bias ? static_cast<const T*>(s.bias->view().data) : nullptr, static_cast<T*>(y.data), total);
  t_conv_path = "gather";
}

// ---- cuDNN ------------------------------------------------------------------------------

#ifdef KFUSE_HAVE_CUDNN

void cudnn_check(cudnnStatus_t st, const char* call, const std::string& context = std::string()) {
  if (st != CUDNN_STATUS_SUCCESS)
    fail(ErrorCategory::backend, call, cudnnGetErrorString(st), " (cuDNN status ", int(st), ")",
         context.empty() ? std::string() : ", " + context);
}
#define KFUSE_CUDNN_CHECK(call, ...) cudnn_check((call), #call, ::kfuse::detail::cat("" __VA_ARGS__))

struct Handle {
  cudnnHandle_t h = nullptr;
  ~Handle() {
    if (h) (void)cudnnDestroy(h);  // at thread exit; nothing to report to
  }
};

cudnnHandle_t handle() {
  thread_local std::map<int, Handle> per_device;
  Handle& hd = per_device[device_info().id];
  if (!hd.h) KFUSE_CUDNN_CHECK(cudnnCreate(&hd.h));
  KFUSE_CUDNN_CHECK(cudnnSetStream(hd.h, stream()));
  return hd.h;
}

// Descriptors and the algorithm for one configuration, built once.
struct CudnnConv {
  bool usable = false;
  std::string why_not;
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr, bd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  cudnnConvolutionBwdDataAlgo_t algo{};
  cudnnMathType_t math{};
  std::size_t ws_bytes = 0;

  CudnnConv() = default;
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;
  ~CudnnConv() {  // nothing to report to: destroying a descriptor only frees host memory
    if (xd) (void)cudnnDestroyTensorDescriptor(xd);
    if (yd) (void)cudnnDestroyTensorDescriptor(yd);
    if (bd) (void)cudnnDestroyTensorDescriptor(bd);
    if (wd) (void)cudnnDestroyFilterDescriptor(wd);
    if (cd) (void)cudnnDestroyConvolutionDescriptor(cd);
  }
};

// Builds the descriptors and picks the algorithm (cuDNN's heuristics, the
// first that succeeds and respects the math mode). Any refusal leaves
// usable = false with the reason.
void setup(CudnnConv& c, const ConvStep& s, const TensorView& x, const TensorView& y) {
  const bool f64 = x.dtype == DType::f64;
  const cudnnDataType_t dt = f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  const TensorView& w = s.weight.view();
  const auto& p = s.params;
  const auto fits = [](int64_t v) { return v >= 0 && v <= 0x7fffffff; };
  for (int64_t v : x.shape) if (!fits(v)) { c.why_not = "input extent past 2^31"; return; }
  for (int64_t v : x.strides) if (!fits(v)) { c.why_not = "input stride past 2^31"; return; }
  for (int64_t v : y.shape) if (!fits(v)) { c.why_not = "output extent past 2^31"; return; }
  if (y.numel() > 0x7fffffff || x.numel() > 0x7fffffff) { c.why_not = "tensor of more than 2^31 elements"; return; }
  // The forward convolution of y must give back x's extent: output_padding < stride.
  if (p.output_padding[0] >= p.stride[0] || p.output_padding[1] >= p.stride[1]) {
    c.why_not = "output_padding >= stride";
    return;
  }
  const auto ok = [&](cudnnStatus_t st, const char* what) {
    if (st != CUDNN_STATUS_SUCCESS) c.why_not = std::string(what) + ": " + cudnnGetErrorString(st);
    return st == CUDNN_STATUS_SUCCESS;
  };
  if (!ok(cudnnCreateTensorDescriptor(&c.xd), "cudnnCreateTensorDescriptor") ||
      !ok(cudnnCreateTensorDescriptor(&c.yd), "cudnnCreateTensorDescriptor") ||
      !ok(cudnnCreateTensorDescriptor(&c.bd), "cudnnCreateTensorDescriptor") ||
      !ok(cudnnCreateFilterDescriptor(&c.wd), "cudnnCreateFilterDescriptor") ||
      !ok(cudnnCreateConvolutionDescriptor(&c.cd), "cudnnCreateConvolutionDescriptor"))
    return;
  // dy = x [N, Cin, H, W] (any strides); dx = y [N, Cout, Ho, Wo]; filter [Cin, Cout/G, kH, kW].
  if (!ok(cudnnSetTensor4dDescriptorEx(c.xd, dt, int(x.shape[0]), int(x.shape[1]), int(x.shape[2]), int(x.shape[3]),
                                       int(x.strides[0]), int(x.strides[1]), int(x.strides[2]), int(x.strides[3])),
          "input descriptor") ||
      !ok(cudnnSetTensor4dDescriptor(c.yd, CUDNN_TENSOR_NCHW, dt, int(y.shape[0]), int(y.shape[1]), int(y.shape[2]),
                                     int(y.shape[3])),
          "output descriptor") ||
      !ok(cudnnSetTensor4dDescriptor(c.bd, CUDNN_TENSOR_NCHW, dt, 1, int(y.shape[1]), 1, 1), "bias descriptor") ||
      !ok(cudnnSetFilter4dDescriptor(c.wd, dt, CUDNN_TENSOR_NCHW, int(w.shape[0]), int(w.shape[1]), int(w.shape[2]),
                                     int(w.shape[3])),
          "filter descriptor") ||
      !ok(cudnnSetConvolution2dDescriptor(c.cd, int(p.padding[0]), int(p.padding[1]), int(p.stride[0]), int(p.stride[1]),
                                          int(p.dilation[0]), int(p.dilation[1]), CUDNN_CROSS_CORRELATION, dt),
          "convolution descriptor") ||
      !ok(cudnnSetConvolutionGroupCount(c.cd, int(p.groups)), "group count"))
    return;
  const bool tf32 = s.precision == Precision::tf32 && !f64;
  if (!ok(cudnnSetConvolutionMathType(c.cd, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH), "math type")) return;
  int n = 0, ch = 0, h = 0, wd = 0;
  if (!ok(cudnnGetConvolution2dForwardOutputDim(c.cd, c.yd, c.wd, &n, &ch, &h, &wd), "forward output dim")) return;
  if (n != x.shape[0] || ch != x.shape[1] || h != x.shape[2] || wd != x.shape[3]) {
    c.why_not = "cuDNN's forward convolution of the output does not give back the input's shape";
    return;
  }
  // The algorithm by measurement (as torch.backends.cudnn.benchmark): cuDNN
  // runs each candidate once on buffers of its own, at plan time; its
  // heuristics when measuring fails (no memory for the trial buffers).
  // Workspaces are capped at a quarter of the free device memory.
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int returned = 0;
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
  const std::size_t ws_cap = free_bytes / 4;
  if (cudnnFindConvolutionBackwardDataAlgorithm(handle(), c.wd, c.xd, c.cd, c.yd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                &returned, perf) != CUDNN_STATUS_SUCCESS) {
    (void)cudaGetLastError();
    if (!ok(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle(), c.wd, c.xd, c.cd, c.yd,
                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf),
            "algorithm heuristics"))
      return;
  }
  for (int i = 0; i < returned; ++i) {  // fastest first
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (!tf32 && perf[i].mathType == CUDNN_TENSOR_OP_MATH) continue;  // would use TF32 tensor cores
    const cudnnMathType_t math = tf32 ? perf[i].mathType : CUDNN_FMA_MATH;
    if (cudnnSetConvolutionMathType(c.cd, math) != CUDNN_STATUS_SUCCESS) continue;
    std::size_t bytes = 0;
    if (cudnnGetConvolutionBackwardDataWorkspaceSize(handle(), c.wd, c.xd, c.cd, c.yd, perf[i].algo, &bytes) !=
            CUDNN_STATUS_SUCCESS ||
        bytes > ws_cap)
      continue;
    c.algo = perf[i].algo;
    c.math = math;
    c.ws_bytes = bytes;
    c.usable = true;
    return;
  }
  c.why_not = "no backward-data algorithm for this configuration";
}

// Runs the prepared convolution; false when cuDNN refuses at run time (the reason in `why`).
bool run_cudnn(const CudnnConv& c, const ConvStep& s, const TensorView& x, const TensorView& y, std::string& why) {
  void* ws = c.ws_bytes ? workspace().scratch(c.ws_bytes) : nullptr;
  const cudnnHandle_t h = handle();
  const bool f64 = x.dtype == DType::f64;
  const double one_d = 1.0, zero_d = 0.0;
  const float one_f = 1.0f, zero_f = 0.0f;
  const void* one = f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
  const void* zero = f64 ? static_cast<const void*>(&zero_d) : static_cast<const void*>(&zero_f);
  const cudnnStatus_t st = cudnnConvolutionBackwardData(h, one, c.wd, s.weight.view().data, c.xd, x.data, c.cd, c.algo,
                                                        ws, c.ws_bytes, zero, c.yd, y.data);
  if (st == CUDNN_STATUS_NOT_SUPPORTED || st == CUDNN_STATUS_BAD_PARAM) {
    why = std::string("cudnnConvolutionBackwardData: ") + cudnnGetErrorString(st);
    return false;
  }
  cudnn_check(st, "cudnnConvolutionBackwardData", cat("algorithm ", int(c.algo), ", workspace ", c.ws_bytes, " bytes"));
  if (s.bias) KFUSE_CUDNN_CHECK(cudnnAddTensor(h, one, c.bd, s.bias->view().data, one, c.yd, y.data), "conv bias");
  return true;
}

#endif  // KFUSE_HAVE_CUDNN

// Prepared once per plan, in order of preference: the implicit-GEMM
// tensor-core kernel with no epilogue (float32: 3xTF32 for strict precision,
// TF32 when the plan asks; contiguous x), cuDNN's backward-data convolution
// (descriptors, algorithm and workspace size for the contiguous input, other
// input strides set up on their first run), the gather kernel.
class PreparedConv final : public PreparedStep {
 public:
  explicit PreparedConv(const ConvStep& step) : step_(step) {
    const ConvPath path = overrides().conv;
    if (path == ConvPath::automatic && step.weight.dtype() == DType::f32) {
      const IgemmProblem p = igemm_problem(step);
      const IgemmPrecision prec = step.precision == Precision::tf32 ? IgemmPrecision::tf32 : IgemmPrecision::tf32x3;
      if (igemm_why_not(p, prec).empty())
        igemm_ = std::make_unique<IgemmConv>(p, prec, step.weight.view().data,
                                             step.bias ? step.bias->view().data : nullptr);
    }
#ifdef KFUSE_HAVE_CUDNN
    if (path != ConvPath::gather) {
      const CudnnConv& c = cudnn_for(contiguous_strides(step.in_shape));
      if (igemm_ && c.usable) keep_the_faster(c);
    }
#endif
  }

  void run(const TensorView& x, const TensorView& y) const override {
    if (igemm_ && x.is_contiguous()) {
      igemm_->run(x.data, y.data, nullptr, 0, stream());
      t_conv_path = "igemm";
      return;
    }
#ifdef KFUSE_HAVE_CUDNN
    if (overrides().conv != ConvPath::gather) {
      const CudnnConv& c = cudnn_for(x.strides);
      std::string why;
      if (c.usable && run_cudnn(c, step_, x, y, why)) {
        t_conv_path = "cudnn";
        return;
      }
    }
#endif
    if (x.dtype == DType::f64) gather<double>(step_, x, y);
    else gather<float>(step_, x, y);
  }

  std::string describe() const override {
    if (igemm_) return igemm_->describe() + timing_ + " (cuDNN for a strided input)";
#ifdef KFUSE_HAVE_CUDNN
    if (overrides().conv != ConvPath::gather) {
      const CudnnConv& c = cudnn_for(contiguous_strides(step_.in_shape));
      if (c.usable)
        return cat("cuDNN backward-data algorithm ", int(c.algo), ", ",
                   c.math == CUDNN_FMA_MATH ? "fp32 FMA" : "tensor-op (TF32)", " math, workspace ", c.ws_bytes, " bytes",
                   timing_);
      return "gather kernel (cuDNN: " + c.why_not + ")";
    }
#endif
    return "gather kernel";
  }

 private:
#ifdef KFUSE_HAVE_CUDNN
  // Both kernels timed once on scratch tensors of the step's shapes (the
  // second of two runs each); the tensor-core kernel is kept only when it is
  // at least 2% faster (the tuner's rule), with the times in describe().
  void keep_the_faster(const CudnnConv& c) {
    const DType dt = step_.weight.dtype();
    const Tensor x = Tensor::empty(step_.in_shape, dt, Memory::cuda), y = Tensor::empty(step_.out_shape, dt, Memory::cuda);
    KFUSE_CUDA_CHECK(cudaMemsetAsync(x.view().data, 0x3c, x.view().bytes(), stream()), "conv timing input");
    const auto twice = [](const auto& f) {
      f();
      return f();
    };
    std::string why;
    const double t_igemm =
        twice([&] { return time_launches([&] { igemm_->run(x.view().data, y.view().data, nullptr, 0, stream()); }); });
    const double t_cudnn = twice([&] { return time_launches([&] { run_cudnn(c, step_, x.view(), y.view(), why); }); });
    timing_ = cat(" (measured: tensor-core kernel ", t_igemm, " ms, cuDNN ", t_cudnn, " ms)");
    if (!(t_igemm < 0.98 * t_cudnn)) igemm_.reset();
  }

  const CudnnConv& cudnn_for(const Shape& x_strides) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<CudnnConv>& c = by_strides_[x_strides];
    if (!c) {
      c = std::make_unique<CudnnConv>();
      const DType dt = step_.weight.dtype();
      try {
        setup(*c, step_, TensorView(nullptr, dt, step_.in_shape, x_strides, Memory::cuda),
              TensorView(nullptr, dt, step_.out_shape, Memory::cuda));
      } catch (const Error& e) {  // no handle (e.g. cuDNN's libraries missing)
        c->usable = false;
        c->why_not = e.what();
      }
    }
    return *c;
  }
  mutable std::mutex mutex_;
  mutable std::map<Shape, std::unique_ptr<CudnnConv>> by_strides_;
#endif
  ConvStep step_;
  std::unique_ptr<IgemmConv> igemm_;
  std::string timing_;  // the measured choice, for describe()
};

}  // namespace

Preparation prepare_conv(const ConvStep& step, DType dtype) {
  if (dtype != DType::f32 && dtype != DType::f64)
    return Preparation::refuse(cat("conv_transpose2d materialising Y runs in float32 or float64, not ", to_string(dtype)));
  return Preparation::of<PreparedConv>(step);
}

const char* last_conv_path() { return t_conv_path; }

}  // namespace kfuse::detail::cuda
