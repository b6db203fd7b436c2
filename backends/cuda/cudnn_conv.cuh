// conv_transpose2d through cuDNN's graph API: the transposed convolution is
// the data gradient of the forward convolution from Y to x, one
// backward-data operation. The engine is chosen at plan time the way
// PyTorch's cudnn.benchmark does, over more candidates: cuDNN's heuristics
// (modes A and B, then the fallback list) rank engine configurations, every
// other engine follows with its default knobs, those whose numerical notes
// the plan's precision forbids are dropped (describe() lists them), and the
// first twelve that build within the workspace cap are each timed on the
// step's shapes; the fastest is kept with its execution plan and workspace.
#pragma once

#include <memory>
#include <string>

#include "plan/steps.hpp"

namespace kfuse::detail::cuda {

// What the engine may do, from the plan's dtype and precision:
//   float32 strict: fp32 FMA only (no tensor cores, no down-converted inputs)
//   float32 tf32:   TF32 tensor cores allowed (PyTorch's default for convolutions)
//   bfloat16/float16: tensor cores with fp32 accumulation (no reduced-precision reduction)
//   float64:        anything exact in float64
// Non-deterministic engines are never taken: a plan's results are the same run to run.
class CudnnConv {
 public:
  // Builds the graph for x with `x_strides` and Y in the step's layout, both of
  // `dtype` and with pointers aligned to `align` bytes; the weight is
  // [Cin, Cout/G, kH, kW] with `w_strides` in `dtype` at `weight` (device
  // memory, used for the timing runs). With `time_candidates` false (a graph built
  // during a run: no scratch tensors then) the heuristics' first allowed
  // engine is kept. Returns null with the reason in `why_not` when cuDNN has
  // no engine for it.
  static std::unique_ptr<CudnnConv> make(const ConvStep& step, DType dtype, const Shape& x_strides,
                                         const Shape& w_strides, int align, const void* weight, bool time_candidates,
                                         std::string& why_not);
  ~CudnnConv();
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  // y = conv_transpose2d(x, weight) without bias, on stream(), with
  // workspace_bytes() of device memory at `workspace` (256-byte aligned).
  void run(const void* x, const void* weight, void* y, void* workspace) const;
  int64_t workspace_bytes() const;

  // The engine, its notes, its workspace and the timed candidates.
  const std::string& describe() const { return description_; }

 private:
  struct Impl;
  explicit CudnnConv(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string description_;
};

// The largest power of two (at most 16) that divides the address: the
// alignment a graph is built for.
int pointer_alignment(const void* p);

}  // namespace kfuse::detail::cuda
