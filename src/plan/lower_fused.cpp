// The fused strategy: the conv output Y materialised once, then the rest of
// the pipeline as a short sequence of epilogue stages, each reading its input
// once and writing only its result: point ops, at most one reduction or
// softmax over any axes, and the row program that fits after it. A chain that
// does not fit one stage (a second reduction over other axes, a softmax
// before a reduction, an operand that broadcasts the running value to a
// larger shape) continues in the next stage, from the small intermediate.
// The fused_conv strategy: the same epilogue inside the conv (one step).
// And the reference strategy: every op its own eager op.
#include <algorithm>

#include "plan/lower.hpp"

namespace kfuse::detail {

namespace {

template <class A>
Chain<A> build_chain(const Stages& st, std::size_t begin, std::size_t end, Store<A>& store, uint32_t inner_mask) {
  std::vector<PointOp<A>> ops;
  for (std::size_t k = begin; k < end; ++k) ops.push_back(point_op<A>(st[k], store, inner_mask));
  return {store.upload(ops), static_cast<int>(ops.size())};
}

int64_t numel_of(const Shape& s) { return checked_numel(s, "plan", "intermediate"); }

// The last two axes (H and W) of a shape of rank 3 or 4: the conv kernel's
// chains index (row n*C + c, pixel oh*W + ow), so that an operand broadcast
// over the pixels is found with one division per call, not a walk of Y's
// flat index.
uint32_t pixel_mask(const Shape& s) { return (1u << (s.size() - 1)) | (1u << (s.size() - 2)); }

// y + bias[c] on Y [N, C, H, W], as a pipeline stage (the bias as [C, 1, 1]).
PipelineStage bias_stage(const Tensor& bias, const Shape& y) {
  const int64_t C = bias.numel();
  Tensor b = Tensor::empty({C, 1, 1}, bias.dtype(), Memory::host);
  copy(Tensor::copy_of(bias, Memory::host).view(), TensorView(b.view().data, b.dtype(), {C}, Memory::host));
  return PipelineStage{BinaryOp{BinaryKind::add, b, 0.0}, y, y};
}

// One stage from st[i]: its step, its input shape, and the index after its last op.
template <class A>
struct Stage {
  EpilogueStep<A> step;
  std::size_t end;
};

template <class A>
Stage<A> next_stage(const Stages& st, std::size_t i, Store<A>& store) {
  const std::size_t n = st.size();
  // An operand that expands the running value opens a stage that reads its
  // input broadcast to the larger shape.
  const Shape y = expands(st[i]) ? st[i].out_shape : st[i].in_shape;
  std::size_t j = expands(st[i]) ? i + 1 : i;
  while (j < n && is_point(st[j].op) && !expands(st[j])) ++j;
  EpilogueStep<A> e{};
  e.y_shape = y;
  const auto map_until = [&](std::size_t end) {
    e.main = MainKind::map;  // a flat walk: the point ops may see reshapes of Y
    e.body = build_chain(st, i, end, store, 0);
    return Stage<A>{e, end};
  };
  if (j == n || is_point(st[j].op)) return map_until(j);
  // The main reduction's or softmax's axes, and the split of the point ops'
  // operands around it, are Y's: a reshape on the way ends the stage before it.
  for (std::size_t k = i + 1; k <= j; ++k)
    if (st[k].in_shape != y) return map_until(k);

  std::vector<int> axes;
  if (auto* r = std::get_if<ReduceOp>(&st[j].op)) axes = r->axes;
  else axes = {std::get<SoftmaxOp>(st[j].op).axis};
  uint32_t mask = 0;
  e.count = 1;
  for (int a : axes) mask |= 1u << a, e.count *= y[a];
  e.mask = mask;
  e.body = build_chain(st, i, j, store, mask);
  if (auto* r = std::get_if<ReduceOp>(&st[j].op)) {
    e.main = MainKind::reduce;
    e.reduce = r->kind;
    // The point ops right after the reduction, and the longest run of ops
    // past them that fits its row program (a reduction or softmax over the
    // outputs' trailing axes: the tail, its own launch on the intermediate).
    std::size_t p = j + 1;
    while (p < n && is_point(st[p].op) && !expands(st[p])) ++p;
    for (std::size_t end = n; end > p; --end) {
      const Stages rest(st.begin() + j + 1, st.begin() + end);
      std::string why;
      if (build_tail(rest, st[j].out_shape, numel_of(rest.back().out_shape), store, e.tail, why)) return Stage<A>{e, end};
    }
    // Only point ops fit: they run on each output as it is stored (`after`,
    // indexed by the output's flat index: reshapes on the way change nothing).
    e.after = build_chain(st, j + 1, p, store, 0u);
    e.tail = Tail<A>{nullptr, 0, numel_of(st[j].out_shape), 1, 1};
    return Stage<A>{e, p};
  }
  e.main = MainKind::softmax;
  std::size_t end = j + 1;
  while (end < n && is_point(st[end].op) && !expands(st[end]) && st[end].in_shape == y) ++end;
  e.after = build_chain(st, j + 1, end, store, mask);
  return Stage<A>{e, end};
}

// Where a step's result goes: the output after the pipeline's last op,
// otherwise a new buffer of its shape.
int next_slot(Lowering& at, const Stages& ops, std::size_t end, const Shape& shape) {
  if (end == ops.size()) return kOutput;
  at.buffers.push_back(Buffer{shape, {}});
  return static_cast<int>(at.buffers.size());
}

// Epilogue stages for ops[i..], the running value in `slot`, appended to at;
// `adjust` sees each stage first and may refuse it (at.why says why; without
// it every stage is taken). The number of stages, or -1 when refused.
template <class A, class Adjust>
int append_stages(const Stages& ops, std::size_t i, int slot, Lowering& at, Store<A>& store, Adjust&& adjust) {
  int stages = 0;
  while (i < ops.size()) {
    Stage<A> s = next_stage(ops, i, store);
    if (!adjust(s.step, i, stages)) return -1;
    const int out = next_slot(at, ops, s.end, ops[s.end - 1].out_shape);
    at.io.push_back(StepIO{slot, out, s.step.y_shape});
    at.steps.push_back(s.step);
    slot = out;
    i = s.end;
    ++stages;
  }
  return stages;
}
template <class A>
int append_stages(const Stages& ops, std::size_t i, int slot, Lowering& at, Store<A>& store) {
  return append_stages(ops, i, slot, at, store, [](EpilogueStep<A>&, std::size_t, int) { return true; });
}

}  // namespace

template <class A>
Lowering lower_fused(const Pipeline& p, const Stages& st, Store<A>& store, const PlanOptions& opt,
                     bool y_channels_last) {
  Lowering at;
  std::size_t i = 0;
  int slot = 0;  // where the running value is
  Stages ops = st;  // with the conv bias moved into the first epilogue stage
  if (!ops.empty()) {
    if (const auto* conv = std::get_if<ConvTranspose2dOp>(&ops[0].op)) {
      ConvStep c{conv->params, store.tensor(conv->weight), std::nullopt, ops[0].in_shape, ops[0].out_shape, opt.precision};
      const std::optional<Tensor> bias = conv->bias;
      // The conv bias joins the first epilogue stage as a per-channel add: in
      // registers there, where the conv would read and write Y once more.
      if (bias && ops.size() > 1) ops.insert(ops.begin() + 1, bias_stage(*bias, ops[0].out_shape));
      else if (bias) c.bias = store.tensor(*bias);
      at.steps.push_back(c);
      const int out = next_slot(at, ops, 1, ops[0].out_shape);
      at.io.push_back(StepIO{0, out, ops[0].in_shape});
      slot = out;
      i = 1;
    }
  }
  if (st.empty()) {  // no ops: the output is a copy of the input
    EpilogueStep<A> e{};
    e.main = MainKind::map;
    e.y_shape = p.input_shape();
    at.steps.push_back(e);
    at.io.push_back(StepIO{0, kOutput, p.input_shape()});
  }
  const char* const no_stage_reads_y = "channels-last Y: the pipeline has no conv_transpose2d followed by another op";
  const int stages = append_stages(ops, i, slot, at, store, [&](EpilogueStep<A>& e, std::size_t at_op, int k) {
    if (!y_channels_last || k > 0) return true;
    // Y channels-last: the first stage reads it through its strides, as it is.
    if (at_op != 1 || e.y_shape != ops[0].out_shape) {
      at.why = at_op != 1 ? no_stage_reads_y : cat("channels-last Y: the first stage reads Y as ", to_string(e.y_shape));
      return false;
    }
    e.y_strides = channels_last_strides(e.y_shape);
    at.buffers[0].strides = e.y_strides;
    std::get<ConvStep>(at.steps[0]).channels_last = true;
    return true;
  });
  if (stages < 0) return at;
  if (y_channels_last && stages == 0) {
    at.why = no_stage_reads_y;
    return at;
  }
  at.ok = true;
  const bool conv = !ops.empty() && std::holds_alternative<ConvTranspose2dOp>(ops[0].op);
  at.why = cat(conv ? cat("the conv output Y is written once", y_channels_last ? " (channels-last)" : "", "; ") : "",
               stages <= 1 ? "one epilogue stage reads it once and writes only the output"
                           : cat(stages, " epilogue stages, each reading its input once (the ops do not fit one row program)"));
  return at;
}
template Lowering lower_fused(const Pipeline&, const Stages&, Store<float>&, const PlanOptions&, bool);
template Lowering lower_fused(const Pipeline&, const Stages&, Store<double>&, const PlanOptions&, bool);

template <class A>
Lowering lower_fused_conv(const Pipeline& p, const Stages& st, Store<A>& store, const PlanOptions& opt) {
  Lowering at;
  if constexpr (std::is_same_v<A, double>) {
    at.why = "float64: the tensor-core conv takes float32, float16 and bfloat16";
    return at;
  } else {
    const auto* conv = st.empty() ? nullptr : std::get_if<ConvTranspose2dOp>(&st[0].op);
    if (!conv) {
      at.why = "the pipeline does not start with conv_transpose2d";
      return at;
    }
    // The kernel's epilogue: the point ops on Y, then a reduction or softmax
    // over C, or a reduction over H and W (not a logsumexp), with the point
    // ops after it; the rest of the pipeline runs as the fused strategy's
    // epilogue stages on what the kernel writes.
    const Shape& y = st[0].out_shape;
    const std::size_t n = st.size();
    std::size_t j = 1;
    while (j < n && is_point(st[j].op) && !expands(st[j]) && st[j].in_shape == y) ++j;
    const auto* r = j < n && st[j].in_shape == y ? std::get_if<ReduceOp>(&st[j].op) : nullptr;
    const auto* sm = j < n && st[j].in_shape == y ? std::get_if<SoftmaxOp>(&st[j].op) : nullptr;
    uint32_t axes = 0;
    if (r)
      for (int a : r->axes) axes |= 1u << a;
    const bool over_hw = r && axes == kSpatialAxes && r->kind != ReduceKind::logsumexp;
    const bool inside = over_hw || (r && axes == 1u << 1) || (sm && sm->axis == 1);
    std::size_t end = j;  // after the kernel's last op
    if (inside)
      for (end = j + 1; end < n && is_point(st[end].op) && !expands(st[end]) && st[end].in_shape == st[j].out_shape;)
        ++end;
    if (r && axes == kSpatialAxes && !over_hw) {
      at.why = "a logsumexp over H and W stays out of the conv's epilogue (its parts over tiles would be (max, sum) "
               "pairs: not built)";
      return at;
    }
    // A Y-sized result (a map, a softmax) read again by later stages saves no
    // bytes over the fused plan, which can write Y with this kernel too.
    if (end < n && !(inside && r)) {
      at.why = cat(op_text(st[end].op), " follows ", inside ? op_text(st[j].op) : j == 1 ? "the conv" : "the point ops on Y",
                   ": the conv's epilogue hands later stages a reduction over C or over H and W only (a Y-sized "
                   "result ends the pipeline)");
      return at;
    }
    EpilogueStep<float> e{};
    e.y_shape = y;
    e.main = !inside ? MainKind::map : r ? MainKind::reduce : MainKind::softmax;
    if (r) e.reduce = r->kind;
    if (inside) {
      e.mask = over_hw ? kSpatialAxes : 1u << 1;
      e.count = over_hw ? y[2] * y[3] : y[1];
      e.after = build_chain(st, j + 1, end, store, over_hw ? 0u : pixel_mask(st[j].out_shape));
    }
    e.body = build_chain(st, 1, j, store, pixel_mask(y));
    ConvStep c{conv->params, store.tensor(conv->weight), std::nullopt, st[0].in_shape, y, opt.precision};
    if (conv->bias) c.bias = store.tensor(*conv->bias);
    at.steps.push_back(ConvEpilogueStep{c, e});
    const int slot = next_slot(at, st, end, st[end - 1].out_shape);
    at.io.push_back(StepIO{0, slot, st[0].in_shape});
    const int stages = append_stages(st, end, slot, at, store);
    at.ok = true;
    at.why = cat("the conv's accumulators go through the epilogue before the one store: Y is never written",
                 end == n ? "" : cat("; only its reduction over ", over_hw ? "H and W" : "C", " is, and ", stages,
                                     " epilogue stage(s) take it from there"));
    return at;
  }
}
template Lowering lower_fused_conv(const Pipeline&, const Stages&, Store<float>&, const PlanOptions&);
template Lowering lower_fused_conv(const Pipeline&, const Stages&, Store<double>&, const PlanOptions&);

Lowering lower_reference(const Pipeline& p) {
  Lowering at;
  at.ok = true;
  at.why = "every op its own kernel";
  ReferenceStep r;
  for (const PipelineStage& s : p.stages()) r.ops.push_back(s.op);
  at.steps.push_back(std::move(r));
  at.io.push_back(StepIO{0, kOutput, p.input_shape()});
  return at;
}

}  // namespace kfuse::detail
