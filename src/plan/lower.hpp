// Lowering a pipeline to steps, one strategy at a time (DESIGN.md section 5):
// each lower_* either returns the steps with where they read and write, or
// why the strategy does not apply. Shared by src/plan/lower_*.cpp.
#pragma once

#include <string>
#include <vector>

#include "plan/plan_impl.hpp"

namespace kfuse::detail {

using Stages = std::vector<PipelineStage>;

// A strategy's steps, or why it does not apply.
struct Lowering {
  bool ok = false;
  std::string why;  // why it applies, or why not
  std::vector<Step> steps;
  std::vector<StepIO> io;
  std::vector<Buffer> buffers;
};

// Copies of operands and op arrays in the memory the plan runs on, owned by the plan.
template <class A>
class Store {
 public:
  Store(std::vector<Tensor>& storage, Memory memory) : storage_(storage), memory_(memory) {}

  // A contiguous copy of `t` converted to A.
  const A* operand(const Tensor& t);
  // A tensor's copy in the plan's memory, its dtype and strides kept.
  Tensor tensor(const Tensor& t);

  template <class U>
  const U* upload(const std::vector<U>& values) {
    return static_cast<const U*>(upload_bytes(values.data(), values.size() * sizeof(U)));
  }

 private:
  const void* upload_bytes(const void* data, std::size_t bytes);
  std::vector<Tensor>& storage_;
  Memory memory_;
};

// The rewrites: reductions over size-1 axes become reshapes; consecutive
// scalar multiplies merge. Each rewrite is noted for describe().
Stages rewrite(const Pipeline& p, std::vector<std::string>& notes);

template <class A>
Lowering lower_fold(const Pipeline& p, const Stages& st, Store<A>& store, std::vector<std::string>& notes);
template <class A>
Lowering lower_fused_conv(const Pipeline& p, const Stages& st, Store<A>& store, const PlanOptions& opt);
// With y_channels_last the conv writes Y channels-last and the first stage
// reads it so (refused when that stage does not read Y as it is).
template <class A>
Lowering lower_fused(const Pipeline& p, const Stages& st, Store<A>& store, const PlanOptions& opt,
                     bool y_channels_last);
Lowering lower_reference(const Pipeline& p);

// Shared pieces of the lowerings.
bool is_point(const Op& op);
bool expands(const PipelineStage& s);  // a point op whose operand broadcasts the running value to a larger shape
template <class A>
PointOp<A> point_op(const PipelineStage& st, Store<A>& store, uint32_t inner_mask);
// The row program on the rows of `z` (the result of the first reduction);
// false with the reason when `rest` does not fit one.
template <class A>
bool build_tail(const Stages& rest, const Shape& z, int64_t out_numel, Store<A>& store, Tail<A>& tail, std::string& why);

// Text for describe() and the reasons.
std::string op_text(const Op& op);
std::string step_text(const Step& s);
double host_value(const TensorView& v, int64_t offset);

}  // namespace kfuse::detail
