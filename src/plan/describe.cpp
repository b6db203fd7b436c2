// The text of describe() and of the planner's reasons.
#include <sstream>

#include "plan/describe.hpp"
#include "plan/lower.hpp"

namespace kfuse::detail {

namespace {

std::string axes_string(const std::vector<int>& axes) {
  std::string s = "[";
  for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
  return s + "]";
}

std::string mb(int64_t bytes) {
  std::ostringstream os;
  os.precision(bytes < 100000 ? 3 : 4);
  if (bytes < 10000) os << bytes << " B";
  else os << double(bytes) / 1e6 << " MB";
  return os.str();
}

template <class A>
std::string fold_text(const FoldStep<A>& f) {
  return cat("fold: plane sums over ", f.geom.row_segments, "x", f.geom.col_segments,
             " segment blocks per plane, contraction and a ", f.tail.n, "-op tail on ", f.tail.R, " rows of ", f.tail.K);
}

template <class A>
std::string epilogue_text(const EpilogueStep<A>& e) {
  const char* m = e.main == MainKind::map ? "map" : e.main == MainKind::reduce ? "reduce" : "softmax";
  return cat("epilogue stage (", m, ") over ", to_string(e.y_shape), ": ", e.body.n, " point ops",
             e.main == MainKind::reduce
                 ? cat(", ", to_string(e.reduce),
                       e.after.n ? cat(", ", e.after.n, " point ops on each output as it is stored")
                                 : cat(", ", e.tail.n, "-op tail on ", e.tail.R, " rows of ", e.tail.K))
             : e.main == MainKind::softmax ? cat(", softmax, ", e.after.n, " point ops")
                                           : std::string());
}

}  // namespace

std::string op_text(const Op& op) {
  if (auto* r = std::get_if<ReduceOp>(&op)) return op_name(op) + " over " + axes_string(r->axes);
  if (auto* b = std::get_if<BinaryOp>(&op))
    return op_name(op) + (b->operand ? "(tensor " + to_string(b->operand->shape()) + ")" : "(" + cat(b->scalar) + ")");
  if (auto* s = std::get_if<SoftmaxOp>(&op)) return "softmax over " + std::to_string(s->axis);
  return op_name(op);
}

std::string step_text(const Step& s) {
  return std::visit([](const auto& f) -> std::string {
    using S = std::decay_t<decltype(f)>;
    if constexpr (std::is_same_v<S, ConvStep>)
      return cat("conv_transpose2d materialising Y ", to_string(f.out_shape), f.channels_last ? " channels-last (NHWC)" : "");
    else if constexpr (std::is_same_v<S, ReferenceStep>) return cat("reference: ", f.ops.size(), " eager ops");
    else if constexpr (std::is_same_v<S, ConvEpilogueStep>)
      return cat("conv_transpose2d ", to_string(f.conv.in_shape), " -> ", to_string(f.conv.out_shape),
                 " with its epilogue inside: ", f.epilogue.body.n, " point ops",
                 f.epilogue.main == MainKind::map      ? std::string()
                 : f.epilogue.main == MainKind::reduce ? cat(", ", to_string(f.epilogue.reduce),
                                                             f.epilogue.mask == kSpatialAxes ? " over H and W" : " over C")
                                                       : std::string(", softmax over C"),
                 f.epilogue.main == MainKind::map ? std::string() : cat(", ", f.epilogue.after.n, " point ops"));
    else if constexpr (std::is_same_v<S, FoldStep<float>> || std::is_same_v<S, FoldStep<double>>) return fold_text(f);
    else return epilogue_text(f);
  }, s);
}

std::string describe_plan(const PlanImpl& impl, const Description& d) {
  const PlanOptions& opt = impl.options;
  std::ostringstream os;
  os << "plan: " << to_string(impl.input_shape) << " " << to_string(impl.dtype) << " -> "
     << to_string(impl.output_shape) << ", strategy " << to_string(impl.strategy)
     << (opt.strategy == Strategy::automatic ? " (auto)" : " (forced)") << ", " << to_string(opt.memory)
     << " memory, precision " << to_string(opt.precision) << "\n";
  os << "  why: " << d.why << "\n";
  for (const std::string& r : d.rejected) os << "  not " << r << "\n";
  for (const std::string& n : d.notes) os << "  rewrite: " << n << "\n";
  // Y and every intermediate are written once and read once.
  int64_t moved = impl.floor_bytes;
  for (const Buffer& b : impl.buffers)
    moved += 2 * checked_numel(b.shape, "plan", "intermediate") * int64_t(size_of(impl.dtype));
  for (std::size_t k = 0; k < impl.steps.size(); ++k)
    os << "  step " << k + 1 << ": " << step_text(impl.steps[k]) << " [" << impl.backends[k]->name() << ": "
       << impl.prepared[k]->describe() << "]\n";
  os << "  bytes: floor " << mb(impl.floor_bytes) << " (each input, weight and operand read once, the output written once)";
  if (impl.strategy != Strategy::reference) os << "; this plan moves about " << mb(moved);
  os << "\n";
  return os.str();
}

}  // namespace kfuse::detail
