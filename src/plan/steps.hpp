// The steps a plan is lowered to: what each kernel computes, as plain data
// built once on the host by the planner. The planner and the backends see
// these types and nothing else of each other (backends/backend.hpp).
#pragma once

#include <optional>
#include <variant>
#include <vector>

#include "kfuse/detail/program.hpp"
#include "kfuse/pipeline.hpp"
#include "kfuse/plan.hpp"

namespace kfuse::detail {

// conv_transpose2d materialising Y: NCHW, or channels-last (Y's strides
// channels_last_strides(out_shape), the order cuDNN computes in).
struct ConvStep {
  ConvTranspose2dParams params;
  Tensor weight;  // plan memory, the pipeline's dtype
  std::optional<Tensor> bias;
  Shape in_shape, out_shape;
  Precision precision = Precision::strict;
  bool channels_last = false;
};

// The fold (DESIGN.md section 4): one pass over x for the segment-block sums
// of every plane, then the contraction fused with the tail. The geometry's
// strides and row chunks are the backend's to fill in when it prepares.
template <class A>
struct FoldStep {
  FoldGeometry geom;
  FoldContraction<A> contraction;
  Tail<A> tail;
};

// One stage of the fused epilogue over its input Y (the conv output, the
// input, or the previous stage's result): body point ops, then the main
// stage, then the tail; one read of Y, one write of the stage's output.
enum class MainKind { map, reduce, softmax };
template <class A>
struct EpilogueStep {
  MainKind main;
  Chain<A> body;
  ReduceKind reduce = ReduceKind::sum;  // main == reduce
  uint32_t mask = 0;                    // the main stage's axes of Y
  int64_t count = 1;                    // elements per main reduction / softmax row
  Tail<A> tail;                         // main == reduce
  Chain<A> after;                       // point ops after the main softmax, or on each output of the
                                        // main reduction (flat index; then the tail has no ops)
  Shape y_shape;
  Shape y_strides;                      // the layout the plan gives Y (empty: contiguous)
};

// The conv with its epilogue inside (DESIGN.md section 11): the conv's
// accumulators go through `epilogue` before the one store. Its main stage is
// a map (the output is Y-sized), a reduction or softmax over C (mask 1 << 1),
// or a reduction over H and W (mask kSpatialAxes); body runs on each conv
// value (after the bias), `after` on each value the main stage produces, both
// indexed by (i, j) = (n * C + c, oh * W + ow) of what they act on (C = 1
// after a reduction over C, operands split at H and W; after one over H and
// W, (n * C + c, 0), operands not split).
inline constexpr uint32_t kSpatialAxes = (1u << 2) | (1u << 3);
struct ConvEpilogueStep {
  ConvStep conv;
  EpilogueStep<float> epilogue;
};

// The reference strategy: the pipeline's ops one by one, as eager ops.
struct ReferenceStep {
  std::vector<Op> ops;
};

using Step = std::variant<ConvStep, FoldStep<float>, FoldStep<double>, EpilogueStep<float>, EpilogueStep<double>,
                          ConvEpilogueStep, ReferenceStep>;

// What a backend is told besides the step: where the data live and their dtype.
struct StepContext {
  Memory memory;
  DType dtype;
};

}  // namespace kfuse::detail
