// conv_transpose2d through cuDNN's graph API (cudnn_conv.cuh).
#include <cudnn.h>

#include <algorithm>
#include <map>
#include <vector>

#include "backends/cuda/context.hpp"
#include "backends/cuda/cudnn_conv.cuh"
#include "backends/cuda/launch.cuh"

namespace kfuse::detail::cuda {

namespace {

void cudnn_check(cudnnStatus_t st, const char* call, const std::string& context = std::string()) {
  if (st != CUDNN_STATUS_SUCCESS)
    fail(ErrorCategory::backend, call, cudnnGetErrorString(st), " (cuDNN status ", int(st), ")",
         context.empty() ? std::string() : ", " + context);
}
#define KFUSE_CUDNN_CHECK(call, ...) cudnn_check((call), #call, ::kfuse::detail::cat("" __VA_ARGS__))

// One cuDNN handle per thread and device, on the backend's stream.
cudnnHandle_t handle() {
  struct Handle {
    cudnnHandle_t h = nullptr;
    ~Handle() {
      if (h) (void)cudnnDestroy(h);  // at thread exit; nothing to report to
    }
  };
  thread_local std::map<int, Handle> per_device;
  Handle& hd = per_device[device_info().id];
  if (!hd.h) KFUSE_CUDNN_CHECK(cudnnCreate(&hd.h));
  KFUSE_CUDNN_CHECK(cudnnSetStream(hd.h, stream()));
  return hd.h;
}

// A backend descriptor, destroyed with its owner.
class Desc {
 public:
  Desc() = default;
  explicit Desc(cudnnBackendDescriptorType_t type) { KFUSE_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  Desc(Desc&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  ~Desc() {
    if (d_) (void)cudnnBackendDestroyDescriptor(d_);  // frees host memory only
  }
  cudnnBackendDescriptor_t get() const { return d_; }

  template <class V>
  Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, const V* values, int64_t n = 1) {
    cudnn_check(cudnnBackendSetAttribute(d_, name, type, n, values), "cudnnBackendSetAttribute",
                cat("attribute ", int(name)));
    return *this;
  }
  Desc& set(cudnnBackendAttributeName_t name, const Desc& other) {
    const cudnnBackendDescriptor_t d = other.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &d);
  }
  Desc& finalize(const char* what) {
    cudnn_check(cudnnBackendFinalize(d_), "cudnnBackendFinalize", what);
    return *this;
  }
  // Finalizing an execution plan fails for engines that do not run here: not an error.
  bool try_finalize() { return cudnnBackendFinalize(d_) == CUDNN_STATUS_SUCCESS; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

enum Uid : int64_t { kX = 1, kW = 2, kY = 3 };

cudnnDataType_t cudnn_type(DType t) {
  switch (t) {
    case DType::f64: return CUDNN_DATA_DOUBLE;
    case DType::f16: return CUDNN_DATA_HALF;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
  }
}

Desc tensor(int64_t uid, DType dtype, const Shape& shape, const Shape& strides, int64_t align) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const cudnnDataType_t dt = cudnn_type(dtype);
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &dt)
      .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, shape.data(), int64_t(shape.size()))
      .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.data(), int64_t(strides.size()))
      .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &uid)
      .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &align)
      .finalize("tensor descriptor");
  return t;
}

// The engine of an engine configuration.
Desc engine_of(const Desc& cfg) {
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t got = 0;
  KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                             &got, &e));
  return engine;
}

std::vector<cudnnBackendNumericalNote_t> notes_of(const Desc& engine) {
  std::vector<cudnnBackendNumericalNote_t> notes(CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  int64_t got = 0;
  KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                             int64_t(notes.size()), &got, notes.data()));
  notes.resize(std::size_t(got));
  return notes;
}

int64_t engine_index(const Desc& engine) {
  int64_t got = 0, index = -1;
  KFUSE_CUDNN_CHECK(
      cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, &index));
  return index;
}

// Why the plan's precision forbids an engine with these notes (empty: allowed).
const char* forbidden(const std::vector<cudnnBackendNumericalNote_t>& notes, DType dtype, Precision precision) {
  for (cudnnBackendNumericalNote_t n : notes) {
    if (n == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return "non-deterministic";
    if (n == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return "down-converts its inputs";
    if (n == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION && dtype != DType::f64)
      return "reduced-precision accumulation";
    if (n == CUDNN_NUMERICAL_NOTE_TENSOR_CORE && dtype == DType::f32 && precision == Precision::strict)
      return "TF32 tensor cores under strict fp32";
  }
  return nullptr;
}

std::string notes_text(const std::vector<cudnnBackendNumericalNote_t>& notes) {
  static const char* names[] = {"tensor_core", "down_convert", "reduced_precision", "fft", "nondeterministic",
                                "winograd", "winograd_4x4", "winograd_6x6", "winograd_13x13", "strict_nan"};
  std::string s;
  for (cudnnBackendNumericalNote_t n : notes)
    if (int(n) >= 0 && int(n) < int(sizeof(names) / sizeof(names[0]))) s += (s.empty() ? "" : ",") + std::string(names[n]);
  return s.empty() ? "fp32/fp64 FMA" : s;
}

// One run of an execution plan on stream().
void execute(const Desc& plan, int64_t ws_bytes, void* ws, const void* x, const void* weight, void* y) {
  const int64_t uids[3] = {kX, kW, kY};
  void* ptrs[3] = {const_cast<void*>(x), const_cast<void*>(weight), y};
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, uids, 3)
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs, 3)
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &ws)
      .finalize("variant pack");
  cudnn_check(cudnnBackendExecute(handle(), plan.get(), pack.get()), "cudnnBackendExecute",
              cat("workspace ", ws_bytes, " bytes"));
}

// Configurations timed at plan time, in the order of the candidates. The
// heuristics list an engine several times with other knobs (tile shapes), and
// its first is often not its fastest: engine 73's second took 0.113 ms where
// its first took 0.158 (bfloat16 convT 32->48 k4 s2 on [32, 32, 96, 96], H100,
// 2026-12-06); so up to kConfigsPerEngine of each.
constexpr std::size_t kTimedCandidates = 24;
constexpr int kConfigsPerEngine = 4;

}  // namespace

struct CudnnConv::Impl {
  std::vector<Desc> keep;  // descriptors the plan refers to
  Desc plan;
  int64_t ws_bytes = 0;
};

CudnnConv::CudnnConv(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudnnConv::~CudnnConv() = default;

int pointer_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 16;
  while (align > 1 && (a & uintptr_t(align - 1))) align /= 2;
  return align;
}

std::unique_ptr<CudnnConv> CudnnConv::make(const ConvStep& step, DType dtype, const Shape& x_strides,
                                           const Shape& w_strides, int align, const void* weight,
                                           bool time_candidates, std::string& why_not) {
  const auto& p = step.params;
  // The forward convolution of Y must give back x's extent: output_padding < stride.
  if (p.output_padding[0] >= p.stride[0] || p.output_padding[1] >= p.stride[1]) {
    why_not = "output_padding >= stride (the forward convolution of Y does not give back x's extent)";
    return nullptr;
  }
  try {
    const cudnnHandle_t h = handle();
    auto impl = std::make_unique<Impl>();
    const Shape& w_shape = step.weight.shape();
    impl->keep.push_back(tensor(kX, dtype, step.in_shape, x_strides, align));
    impl->keep.push_back(tensor(kW, dtype, w_shape, w_strides, 16));
    const Shape y_strides = step.channels_last ? channels_last_strides(step.out_shape) : contiguous_strides(step.out_shape);
    impl->keep.push_back(tensor(kY, dtype, step.out_shape, y_strides, align));
    const Desc &xd = impl->keep[0], &wd = impl->keep[1], &yd = impl->keep[2];

    Desc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    const cudnnDataType_t comp = dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t dims = 2;
    const int64_t dil[2] = {p.dilation[0], p.dilation[1]}, str[2] = {p.stride[0], p.stride[1]},
                  pad[2] = {p.padding[0], p.padding[1]};
    conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &comp)
        .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, &mode)
        .set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, &dims)
        .set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, dil, 2)
        .set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, str, 2)
        .set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, pad, 2)
        .set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, pad, 2)
        .finalize("convolution descriptor");

    Desc op(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
    const float one_f = 1.0f, zero_f = 0.0f;
    const double one_d = 1.0, zero_d = 0.0;
    if (dtype == DType::f64)
      op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_DOUBLE, &one_d)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_DOUBLE, &zero_d);
    else
      op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, &one_f)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, &zero_f);
    op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, wd)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, yd)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, xd)
        .finalize("backward-data operation");

    Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, op).set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &h);
    if (!graph.try_finalize()) {
      why_not = "cuDNN does not support this backward-data convolution";
      return nullptr;
    }

    // Candidates: heuristics modes A and B, the fallback list (up to
    // kConfigsPerEngine configurations of an engine), then every engine they
    // did not list, by its global index with its default knobs (the
    // heuristics do not list all engines for every layout); allowed ones only.
    std::size_t free_bytes = 0, total_bytes = 0;
    KFUSE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int64_t ws_cap = int64_t(free_bytes / 4);
    const std::size_t most = time_candidates ? kTimedCandidates : 1;
    std::vector<Desc> plans;
    std::vector<int64_t> plan_ws;
    std::vector<std::string> plan_text;
    std::map<int64_t, int> seen;  // configurations of each engine considered (refused engines included)
    std::string refused;
    const auto consider = [&](const Desc& cfg, const char* source, bool heuristics) {
      const Desc engine = engine_of(cfg);
      const int64_t index = engine_index(engine);
      int& n = seen[index];
      if (plans.size() >= most || n >= (heuristics ? kConfigsPerEngine : 1)) return;
      const int config = ++n;
      const std::vector<cudnnBackendNumericalNote_t> notes = notes_of(engine);
      if (const char* why = forbidden(notes, dtype, step.precision)) {
        refused += cat(refused.empty() ? "" : ", ", "engine ", index, " (", why, ")");
        n = kConfigsPerEngine;  // its other configurations are not considered
        return;
      }
      Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg).set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &h);
      if (!plan.try_finalize()) return;
      int64_t got = 0, ws_bytes = 0;
      KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                                 1, &got, &ws_bytes));
      if (ws_bytes > ws_cap) return;
      plans.push_back(std::move(plan));
      plan_ws.push_back(ws_bytes);
      plan_text.push_back(cat("engine ", index, config > 1 ? cat(" #", config) : std::string(), " (", source, ", ",
                              notes_text(notes), ")"));
    };
    for (cudnnBackendHeurMode_t heur_mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_B, CUDNN_HEUR_MODE_FALLBACK}) {
      if (plans.size() >= most) break;
      Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph).set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &heur_mode);
      if (!heur.try_finalize()) continue;
      int64_t count = 0;
      KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
      std::vector<Desc> cfgs;
      std::vector<cudnnBackendDescriptor_t> raw;
      for (int64_t i = 0; i < count; ++i) {
        cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        raw.push_back(cfgs.back().get());
      }
      int64_t got = 0;
      KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()));
      const char* source = heur_mode == CUDNN_HEUR_MODE_A ? "heuristics A" : heur_mode == CUDNN_HEUR_MODE_B ? "heuristics B" : "fallback";
      for (int64_t i = 0; i < got; ++i) consider(cfgs[std::size_t(i)], source, true);
    }
    if (time_candidates) {
      int64_t engines = 0, got = 0;
      KFUSE_CUDNN_CHECK(cudnnBackendGetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT,
                                                 CUDNN_TYPE_INT64, 1, &got, &engines));
      for (int64_t e = 0; e < engines && plans.size() < most; ++e) {
        Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
        engine.set(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph).set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, &e);
        if (!engine.try_finalize()) continue;
        Desc cfg(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
        cfg.set(CUDNN_ATTR_ENGINECFG_ENGINE, engine);
        if (cfg.try_finalize()) consider(cfg, "default knobs", false);
      }
    }
    if (plans.empty()) {
      why_not = refused.empty() ? "no cuDNN engine builds for this configuration within a quarter of free memory"
                                : cat("no cuDNN engine the precision allows (refused: ", refused, ")");
      return nullptr;
    }
    impl->keep.push_back(std::move(conv));
    impl->keep.push_back(std::move(op));
    impl->keep.push_back(std::move(graph));

    // Each candidate timed on scratch tensors of the step's shapes (the
    // second of two runs); the fastest kept.
    std::size_t best = 0;
    std::string timings;
    if (plans.size() > 1) {
      const Tensor x = Tensor::empty(step.in_shape, dtype, Memory::cuda);
      const Tensor y = Tensor::empty(step.out_shape, dtype, Memory::cuda);
      KFUSE_CUDA_CHECK(cudaMemsetAsync(x.view().data, 0x3c, x.view().bytes(), stream()), "conv timing input");
      std::vector<double> ms(plans.size());
      for (std::size_t i = 0; i < plans.size(); ++i) {
        // The workspace grows before the timed runs: its allocation inside the first run (2 GB for a
        // winograd engine) made the fastest engine of a strict conv look 10x slower than it runs
        // (22.96 ms, 2.17 run again; H200, 2026-12-04) and the 4x rule below dropped it.
        void* ws = workspace().scratch(std::size_t(plan_ws[i]));
        const auto once = [&] { execute(plans[i], plan_ws[i], ws, x.view().data, weight, y.view().data); };
        // The first run warms up; one over 4x the best so far is not run again.
        ms[i] = time_launches(once);
        const bool again = i == 0 || ms[i] < 4 * ms[best];
        if (again) ms[i] = time_launches(once);
        timings += cat(timings.empty() ? "" : ", ", plan_text[i], " ", ms[i], again ? " ms" : " ms (one run)");
        if (ms[i] < ms[best]) best = i;
      }
    }
    impl->plan = std::move(plans[best]);
    impl->ws_bytes = plan_ws[best];
    std::unique_ptr<CudnnConv> c(new CudnnConv(std::move(impl)));
    c->description_ = cat("cuDNN backward-data ", plan_text[best], ", workspace ", plan_ws[best], " bytes",
                          timings.empty() ? std::string() : cat(" (measured: ", timings, ")"),
                          refused.empty() ? std::string() : cat(" (refused: ", refused, ")"));
    return c;
  } catch (const Error& e) {  // no handle (cuDNN's libraries missing), or a descriptor cuDNN refuses
    why_not = e.what();
    return nullptr;
  }
}

void CudnnConv::run(const void* x, const void* weight, void* y, void* workspace) const {
  execute(impl_->plan, impl_->ws_bytes, workspace, x, weight, y);
}

int64_t CudnnConv::workspace_bytes() const { return impl_->ws_bytes; }

}  // namespace kfuse::detail::cuda
