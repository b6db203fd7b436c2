#include "plan/planner.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "backends/backend.hpp"
#include "plan/fold.hpp"

namespace kfuse::detail {

namespace {

using Stages = std::vector<PipelineStage>;

bool is_point(const Op& op) { return std::holds_alternative<UnaryOp>(op) || std::holds_alternative<BinaryOp>(op); }

// A point op whose operand broadcasts the running value to another shape
// (more elements, or a higher rank: compared by shape, not by element count,
// which misses [3, 4] + [1, 1, 4] and every empty tensor). in_shape, not
// out_shape: the reshape rewrite changes the latter.
bool expands(const PipelineStage& s) {
  const auto* b = std::get_if<BinaryOp>(&s.op);
  return b && b->operand && broadcast_shapes(s.in_shape, b->operand->shape(), "plan") != s.in_shape;
}

std::string axes_string(const std::vector<int>& axes) {
  std::string s = "[";
  for (std::size_t i = 0; i < axes.size(); ++i) s += (i ? ", " : "") + std::to_string(axes[i]);
  return s + "]";
}

std::string op_text(const Op& op) {
  if (auto* r = std::get_if<ReduceOp>(&op)) return op_name(op) + " over " + axes_string(r->axes);
  if (auto* b = std::get_if<BinaryOp>(&op))
    return op_name(op) + (b->operand ? "(tensor " + to_string(b->operand->shape()) + ")" : "(" + detail::cat(b->scalar) + ")");
  if (auto* s = std::get_if<SoftmaxOp>(&op)) return "softmax over " + std::to_string(s->axis);
  return op_name(op);
}

double host_value(const TensorView& v, int64_t offset) {
  return v.dtype == DType::f64 ? static_cast<const double*>(v.data)[offset] : static_cast<const float*>(v.data)[offset];
}

// ---- Rewrites ---------------------------------------------------------------

// Reductions over size-1 axes are reshapes; consecutive scalar multiplies merge.
Stages rewrite(const Pipeline& p, std::vector<std::string>& notes) {
  Stages out;
  for (const PipelineStage& st : p.stages()) {
    if (auto* r = std::get_if<ReduceOp>(&st.op)) {
      const bool all_one = std::all_of(r->axes.begin(), r->axes.end(), [&](int a) { return st.in_shape[a] == 1; });
      // (Not folded into a conv: the conv's own output shape must stay intact.)
      if (all_one && !out.empty() && !std::holds_alternative<ConvTranspose2dOp>(out.back().op)) {
        notes.push_back(op_text(st.op) + " reduces only size-1 axes: a reshape to " + to_string(st.out_shape));
        out.back().out_shape = st.out_shape;
        continue;
      }
    }
    auto* b = std::get_if<BinaryOp>(&st.op);
    if (b && b->kind == BinaryKind::mul && !b->operand && !out.empty()) {
      auto* prev = std::get_if<BinaryOp>(&out.back().op);
      // Merged only when the product, in the pipeline's compute type, is what
      // the two multiplies give: finite, and zero only with a zero factor
      // (mul(1e30).mul(1e30) in float32 must not turn 0 into 0 * inf = NaN).
      const double prod = prev ? prev->scalar * b->scalar : 0.0;
      const double in_type = p.dtype() == DType::f64 ? prod : static_cast<double>(static_cast<float>(prod));
      if (prev && prev->kind == BinaryKind::mul && !prev->operand && std::isfinite(in_type) &&
          (in_type != 0.0 || prev->scalar == 0.0 || b->scalar == 0.0)) {
        notes.push_back(detail::cat("merged mul(", prev->scalar, ") and mul(", b->scalar, ") into mul(",
                                    prev->scalar * b->scalar, ")"));
        prev->scalar *= b->scalar;
        out.back().out_shape = st.out_shape;
        continue;
      }
    }
    out.push_back(st);
  }
  return out;
}

// ---- Storage of operands in the plan's memory ---------------------------------

template <class A>
class Store {
 public:
  Store(PlanImpl& impl) : impl_(impl) {}

  // A contiguous copy of `t` converted to A, in the plan's memory.
  const A* operand(const Tensor& t) {
    const TensorView& v = t.view();
    std::vector<A> host(static_cast<std::size_t>(v.numel()));
    const Indexer ix = make_indexer(v.shape, v.strides);
    for (std::size_t i = 0; i < host.size(); ++i) host[i] = A(host_value(v, ix.offset(int64_t(i))));
    return upload(host);
  }

  template <class U>
  const U* upload(const std::vector<U>& values) {
    if (values.empty()) return nullptr;
    const std::size_t bytes = values.size() * sizeof(U);
    Tensor host = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::f64, Memory::host);
    std::memcpy(host.view().data, values.data(), bytes);
    impl_.storage.push_back(impl_.options.memory == Memory::host ? host : Tensor::copy_of(host, impl_.options.memory));
    return static_cast<const U*>(impl_.storage.back().view().data);
  }

 private:
  PlanImpl& impl_;
};

// A point op at running shape `shape`, its operand indexed over the split
// (outer = axes before `split_at`, inner = the rest) or by `mask` (inner = masked axes).
template <class A>
PointOp<A> point_op(const PipelineStage& st, Store<A>& store, uint32_t inner_mask) {
  PointOp<A> p{};
  if (auto* u = std::get_if<UnaryOp>(&st.op)) {
    p.kind = PointKind::unary;
    p.unary = u->op;
    return p;
  }
  const auto& b = std::get<BinaryOp>(st.op);
  p.binary = b.kind;
  if (!b.operand) {
    p.kind = PointKind::scalar;
    p.scalar = A(b.scalar);
    return p;
  }
  p.kind = PointKind::tensor;
  p.operand = store.operand(*b.operand);
  const Shape& os = b.operand->shape();
  const Indexer full = broadcast_indexer(st.in_shape, os, contiguous_strides(os));
  Shape stride(full.stride, full.stride + full.rank);
  split_axes(st.in_shape, stride, inner_mask, p.outer, p.inner);
  return p;
}

// The mask of the trailing axes of `shape` that hold the last K elements.
uint32_t trailing_mask(const Shape& shape, int64_t K) {
  uint32_t mask = 0;
  int64_t prod = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0 && prod < K; --d) {
    prod *= shape[d];
    mask |= 1u << d;
  }
  return mask;
}

// ---- The tail: the row program after the first reduction ------------------

template <class A>
bool build_tail(const Stages& rest, const Shape& z, int64_t out_numel, Store<A>& store, Tail<A>& tail,
                std::string& why) {
  int64_t K = 0;
  bool reduced = false;
  std::string size_one;  // a softmax/reduction over size-1 axes: the row program runs it over the whole row
  for (const PipelineStage& st : rest) {
    if (is_point(st.op)) {
      if (expands(st)) {
        why = op_text(st.op) + " broadcasts the running value to a larger shape " + to_string(st.out_shape);
        return false;
      }
      continue;
    }
    std::vector<int> axes;
    if (auto* r = std::get_if<ReduceOp>(&st.op)) axes = r->axes;
    else axes = {std::get<SoftmaxOp>(st.op).axis};
    int64_t prod = 1;
    for (int a : axes) prod *= st.in_shape[a];
    if (prod == 1) {
      if (size_one.empty()) size_one = op_text(st.op);
      continue;
    }
    if (reduced) {
      why = op_text(st.op) + " reduces again after the row reduction";
      return false;
    }
    for (int d = axes.front() + 1; d < static_cast<int>(st.in_shape.size()); ++d)
      if (std::find(axes.begin(), axes.end(), d) == axes.end() && st.in_shape[d] != 1) {
        why = op_text(st.op) + " does not act on the trailing axes of " + to_string(st.in_shape);
        return false;
      }
    if (K != 0 && K != prod) {
      why = op_text(st.op) + " acts on other axes than the tail's earlier reductions";
      return false;
    }
    K = prod;
    reduced = reduced || std::holds_alternative<ReduceOp>(st.op);
  }
  if (K == 0) K = 1;
  if (!size_one.empty() && K > 1) {  // it would act on all K columns instead of one
    why = size_one + " acts on size-1 axes inside rows of " + std::to_string(K);
    return false;
  }
  tail.K = K;
  tail.R = checked_numel(z, "plan", "intermediate") / K;
  tail.K_out = reduced ? 1 : K;
  if (tail.R * tail.K_out != out_numel) {
    why = "the tail's rows do not map onto the output";
    return false;
  }
  std::vector<TailOp<A>> ops;
  int64_t cols = K;
  for (const PipelineStage& st : rest) {
    TailOp<A> t{};
    if (is_point(st.op)) {
      t.kind = TailKind::point;
      t.point = point_op<A>(st, store, trailing_mask(st.in_shape, cols));
    } else if (auto* r = std::get_if<ReduceOp>(&st.op)) {
      t.kind = TailKind::reduce;
      t.reduce = r->kind;
      cols = 1;
    } else {
      t.kind = TailKind::softmax;
    }
    ops.push_back(t);
  }
  tail.ops = store.upload(ops);
  tail.n = static_cast<int>(ops.size());
  return true;
}

template <class A>
Chain<A> build_chain(Stages::const_iterator begin, Stages::const_iterator end, Store<A>& store, uint32_t inner_mask) {
  std::vector<PointOp<A>> ops;
  for (auto it = begin; it != end; ++it) ops.push_back(point_op<A>(*it, store, inner_mask));
  return {store.upload(ops), static_cast<int>(ops.size())};
}

// ---- Strategies ----------------------------------------------------------------

struct Attempt {
  bool ok = false;
  std::string why;  // why it applies, or why not
  std::vector<Step> steps;
};

// The fold: conv -> per-channel affine ops -> sum/mean over [2, 3] (or a
// superset, split) -> tail.
template <class A>
Attempt try_fold(const Pipeline& p, Stages st, Store<A>& store, std::vector<std::string>& notes) {
  Attempt at;
  if (st.empty() || !std::holds_alternative<ConvTranspose2dOp>(st[0].op)) {
    at.why = "the pipeline does not start with conv_transpose2d";
    return at;
  }
  const auto& conv = std::get<ConvTranspose2dOp>(st[0].op);
  const Shape& y = st[0].out_shape;
  const int64_t C = y[1];
  if (p.input_shape()[1] == 0) {  // the contraction would divide by cin_g = 0
    at.why = "the conv has no input channels (its output is its bias): nothing to fold";
    return at;
  }
  if (conv.weight.shape()[2] > kFoldMaxTaps || conv.weight.shape()[3] > kFoldMaxTaps) {
    at.why = detail::cat("kernel ", conv.weight.shape()[2], "x", conv.weight.shape()[3], " exceeds the fold's ",
                         kFoldMaxTaps, " taps per axis");
    return at;
  }
  std::vector<double> a(C, 1.0), b(C, 0.0);
  std::size_t i = 1;
  for (; i < st.size(); ++i) {
    const Op& op = st[i].op;
    if (auto* u = std::get_if<UnaryOp>(&op)) {
      if (u->op.kind != UnaryKind::neg) break;
      for (int64_t c = 0; c < C; ++c) a[c] = -a[c], b[c] = -b[c];
      continue;
    }
    auto* bin = std::get_if<BinaryOp>(&op);
    if (!bin || bin->kind == BinaryKind::min || bin->kind == BinaryKind::max) break;
    std::vector<double> v(C, bin->scalar);
    if (bin->operand) {
      const Shape& os = bin->operand->shape();
      if (os.size() > 4) break;  // broadcasts the conv output to a higher rank: not per-channel
      Shape padded(4 - os.size(), 1);
      padded.insert(padded.end(), os.begin(), os.end());
      if (padded[0] != 1 || padded[2] != 1 || padded[3] != 1) break;  // not per-channel
      const TensorView& ov = bin->operand->view();
      for (int64_t c = 0; c < C; ++c) v[c] = host_value(ov, padded[1] == 1 ? 0 : c * ov.strides[ov.rank() - 3]);
    }
    for (int64_t c = 0; c < C; ++c) {
      switch (bin->kind) {
        case BinaryKind::add: b[c] += v[c]; break;
        case BinaryKind::sub: b[c] -= v[c]; break;
        case BinaryKind::mul: a[c] *= v[c], b[c] *= v[c]; break;
        default: a[c] /= v[c], b[c] /= v[c]; break;
      }
    }
  }
  auto* red = i < st.size() ? std::get_if<ReduceOp>(&st[i].op) : nullptr;
  const auto has = [&](int ax) { return red && std::find(red->axes.begin(), red->axes.end(), ax) != red->axes.end(); };
  if (!red || (red->kind != ReduceKind::sum && red->kind != ReduceKind::mean) || !has(2) || !has(3)) {
    at.why = i < st.size() ? op_text(st[i].op) + " follows the conv before any spatial sum/mean, and is not a per-channel affine op"
                           : "no spatial sum/mean follows the conv";
    return at;
  }
  const bool mean = red->kind == ReduceKind::mean;
  PipelineStage spatial = st[i];
  std::get<ReduceOp>(spatial.op).axes = {2, 3};
  spatial.out_shape = reduced_shape(spatial.in_shape, 0b1100, red->keepdim);
  Stages rest;
  if (red->axes.size() > 2) {  // sum/mean over {2,3} and more: the rest is a reduction of Z
    PipelineStage more = st[i];
    auto& ax = std::get<ReduceOp>(more.op).axes;
    ax.erase(std::remove_if(ax.begin(), ax.end(), [](int d) { return d >= 2; }), ax.end());
    more.in_shape = spatial.out_shape;
    notes.push_back(op_text(st[i].op) + " split into " + op_text(spatial.op) + " then " + op_text(more.op));
    rest.push_back(more);
  }
  rest.insert(rest.end(), st.begin() + i + 1, st.end());

  FoldStep<A> f{};
  f.geom = fold_geometry(p.input_shape(), conv, y);
  const FoldWeights fw = fold_weights(conv, y, a, b, mean);
  // A non-finite folded weight or bias (a NaN/inf conv weight, bias or affine
  // operand, a division by zero, an overflow in the dtype) would meet the
  // rectangle sums instead of each conv output: inf*0 and inf - inf land
  // elsewhere than in PyTorch's conv. Cheap to see here; the fused epilogue
  // then runs the conv as it is.
  const auto finite = [](double v) { return std::isfinite(static_cast<A>(v)); };
  if (!std::all_of(fw.weight.begin(), fw.weight.end(), finite) || !std::all_of(fw.bias.begin(), fw.bias.end(), finite)) {
    at.why = "a folded weight or bias is not finite (a NaN/inf weight, bias or affine operand, a division by zero, "
             "or an overflow): only the conv itself propagates it as PyTorch does";
    return at;
  }
  f.contraction.Cout = C;
  f.contraction.cin_g = p.input_shape()[1] / conv.params.groups;
  f.contraction.cout_g = conv.weight.shape()[1];
  f.contraction.weight = store.upload(std::vector<A>(fw.weight.begin(), fw.weight.end()));
  f.contraction.bias = store.upload(std::vector<A>(fw.bias.begin(), fw.bias.end()));
  if (!build_tail(rest, spatial.out_shape, checked_numel(p.output_shape(), "plan", "output"), store, f.tail, at.why)) {
    at.why = "the ops after the spatial reduction do not fit one row program: " + at.why;
    return at;
  }
  std::string chain;
  for (std::size_t k = 1; k < i; ++k) chain += " -> " + op_text(st[k].op);
  at.ok = true;
  at.why = "conv_transpose2d" + chain + " -> " + op_text(st[i].op) +
           ": the ops before the spatial reduction are per-channel affine, so it is computed from "
           "rectangle sums of x (one read of x) and a " +
           detail::cat(f.contraction.cin_g * f.geom.taps(), " x ", C) + " contraction";
  at.steps.push_back(FusedStep(f));
  return at;
}

// The fused epilogue: [conv materialised] -> point ops -> one reduction or
// softmax (or none) -> tail.
template <class A>
Attempt try_fused(const Pipeline& p, const Stages& st, Store<A>& store, const PlanOptions& opt) {
  Attempt at;
  std::size_t i = 0;
  if (!st.empty()) {
    if (auto* conv = std::get_if<ConvTranspose2dOp>(&st[0].op)) {
      ConvStep c{conv->params, Tensor::copy_of(conv->weight, opt.memory), std::nullopt, st[0].out_shape};
      if (conv->bias) c.bias = Tensor::copy_of(*conv->bias, opt.memory);
      c.allow_tf32 = opt.allow_tf32;
      at.steps.push_back(c);
      i = 1;
    }
  }
  const Shape y = i < st.size() ? st[i].in_shape : p.output_shape();
  std::size_t j = i;
  while (j < st.size() && is_point(st[j].op)) {
    if (expands(st[j])) {
      at.why = op_text(st[j].op) + " broadcasts the running value to a larger shape " + to_string(st[j].out_shape);
      return at;
    }
    ++j;
  }
  // The main reduction's or softmax's axes, and the operand split of the point
  // ops around it, are taken in Y's shape: a size-1 reduction rewritten into a
  // reshape on the way (keepdim false) would shift them.
  if (j < st.size())
    for (std::size_t k = i; k < (std::holds_alternative<SoftmaxOp>(st[j].op) ? st.size() : j + 1); ++k)
      if (st[k].in_shape != y) {
        at.why = op_text(st[j].op) + " acts on " + to_string(st[k].in_shape) + ", a reshape of Y " + to_string(y) +
                 ": its axes are not Y's";
        return at;
      }
  EpilogueStep<A> e{};
  e.y_shape = y;
  const int64_t out_numel = checked_numel(p.output_shape(), "plan", "output");
  if (j == st.size()) {
    e.main = MainKind::map;
    e.body = build_chain(st.begin() + i, st.begin() + j, store, 0);
    at.why = "a chain of point ops: one read of Y, one write of the output";
  } else if (auto* r = std::get_if<ReduceOp>(&st[j].op)) {
    uint32_t mask = 0;
    for (int a : r->axes) mask |= 1u << a;
    e.main = MainKind::reduce;
    e.mask = mask;
    e.reduce = r->kind;
    e.count = 1;
    for (int a : r->axes) e.count *= y[a];
    e.body = build_chain(st.begin() + i, st.begin() + j, store, mask);
    Stages rest(st.begin() + j + 1, st.end());
    if (!build_tail(rest, st[j].out_shape, out_numel, store, e.tail, at.why)) {
      at.why = "the ops after " + op_text(st[j].op) + " do not fit one row program: " + at.why;
      return at;
    }
    const std::size_t after = st.size() - j - 1;
    at.why = op_text(st[j].op) + " reads Y once" +
             (after ? detail::cat("; the ", after, after == 1 ? " op" : " ops", " after it run on its result in one row program")
                    : std::string());
  } else {
    const int axis = std::get<SoftmaxOp>(st[j].op).axis;
    e.main = MainKind::softmax;
    e.mask = 1u << axis;
    e.count = y[axis];
    e.body = build_chain(st.begin() + i, st.begin() + j, store, 1u << axis);
    for (std::size_t k = j + 1; k < st.size(); ++k)
      if (!is_point(st[k].op) || expands(st[k])) {
        at.why = op_text(st[k].op) + " follows a softmax over the full tensor";
        return at;
      }
    e.after = build_chain(st.begin() + j + 1, st.end(), store, 1u << axis);
    at.why = "softmax over axis " + std::to_string(axis) + " with the point ops around it in one kernel";
  }
  at.ok = true;
  at.steps.push_back(FusedStep(e));
  return at;
}

Attempt reference_steps(const Pipeline& p) {
  Attempt at;
  at.ok = true;
  at.why = "every op its own kernel";
  for (const PipelineStage& s : p.stages()) at.steps.push_back(OpStep{s.op});
  return at;
}

int64_t tensor_bytes(const Tensor& t) { return t.numel() * int64_t(size_of(t.dtype())); }

int64_t floor_bytes(const Pipeline& p) {
  int64_t bytes = checked_numel(p.input_shape(), "plan", "input") * int64_t(size_of(p.dtype())) +
                  checked_numel(p.output_shape(), "plan", "output") * int64_t(size_of(p.dtype()));
  for (const PipelineStage& s : p.stages()) {
    if (auto* c = std::get_if<ConvTranspose2dOp>(&s.op)) {
      bytes += tensor_bytes(c->weight) + (c->bias ? tensor_bytes(*c->bias) : 0);
    } else if (auto* b = std::get_if<BinaryOp>(&s.op)) {
      if (b->operand) bytes += tensor_bytes(*b->operand);
    }
  }
  return bytes;
}

std::string step_text(const Step& s) {
  if (auto* c = std::get_if<ConvStep>(&s))
    return "conv_transpose2d materialising Y " + to_string(c->out_shape);
  if (auto* o = std::get_if<OpStep>(&s)) return op_text(o->op);
  return std::visit([](const auto& f) -> std::string {
    using S = std::decay_t<decltype(f)>;
    if constexpr (std::is_same_v<S, FoldStep<float>> || std::is_same_v<S, FoldStep<double>>) {
      return detail::cat("fold: plane sums over ", f.geom.row_segments, "x", f.geom.col_segments,
                         " segment blocks per plane, contraction and a ", f.tail.n, "-op tail on ", f.tail.R,
                         " rows of ", f.tail.K);
    } else {
      const char* m = f.main == MainKind::map ? "map" : f.main == MainKind::reduce ? "reduce" : "softmax";
      return detail::cat("fused epilogue (", m, ") over Y ", to_string(f.y_shape), ": ", f.body.n, " point ops",
                         f.main == MainKind::reduce ? detail::cat(", ", f.tail.n, "-op tail on ", f.tail.R, " rows of ", f.tail.K)
                                                    : std::string());
    }
  }, std::get<FusedStep>(s));
}

std::string mb(int64_t bytes) {
  std::ostringstream os;
  os.precision(bytes < 100000 ? 3 : 4);
  if (bytes < 10000) os << bytes << " B";
  else os << double(bytes) / 1e6 << " MB";
  return os.str();
}

template <class A>
PlanImpl make_typed(const Pipeline& p, const PlanOptions& opt) {
  PlanImpl impl;
  impl.options = opt;
  impl.dtype = p.dtype();
  impl.input_shape = p.input_shape();
  impl.output_shape = p.output_shape();
  impl.floor_bytes = floor_bytes(p);
  std::vector<std::string> notes;
  const Stages st = rewrite(p, notes);
  Store<A> store(impl);

  std::vector<std::string> rejected;
  Attempt chosen;
  const auto consider = [&](Strategy s) {
    if (chosen.ok) return;
    Attempt at = s == Strategy::fold ? try_fold(p, st, store, notes)
                 : s == Strategy::fused ? try_fused(p, st, store, opt)
                                        : reference_steps(p);
    if (at.ok) {
      // Each step runs on the first backend that accepts it. With the backend
      // left to kfuse, a strategy whose step no backend runs (the data where no
      // backend's kernels reach) gives way to the next; the reference stages.
      std::vector<const Backend*> picks;
      for (const Step& step : at.steps) {
        const Backend* pick = nullptr;
        if (!std::holds_alternative<OpStep>(step)) {
          for (const Backend* b : backends()) {
            const bool allowed = opt.backend == BackendChoice::automatic || std::string(b->name()) == to_string(opt.backend);
            if (allowed && b->accepts(step, opt.memory, p.dtype())) {
              pick = b;
              break;
            }
          }
          if (!pick && opt.backend != BackendChoice::automatic)
            fail(ErrorCategory::unsupported, "plan", "no ", to_string(opt.backend), " backend runs '", step_text(step),
                 "' on ", to_string(opt.memory), " memory with dtype ", to_string(p.dtype()));
          if (!pick) {
            at.ok = false;
            at.why = cat("no backend runs '", step_text(step), "' on ", to_string(opt.memory), " memory with dtype ",
                         to_string(p.dtype()));
            break;
          }
        }
        picks.push_back(pick);
      }
      if (at.ok) impl.backends = std::move(picks);
    }
    if (at.ok) {
      chosen = std::move(at);
      impl.strategy = s;
    } else {
      rejected.push_back(std::string(to_string(s)) + ": " + at.why);
    }
  };
  if (opt.strategy == Strategy::automatic) {
    consider(Strategy::fold);
    consider(Strategy::fused);
    consider(Strategy::reference);
  } else {
    consider(opt.strategy);
    if (!chosen.ok) fail(ErrorCategory::unsupported, "plan", "strategy ", rejected.back());
  }
  impl.steps = std::move(chosen.steps);

  std::ostringstream d;
  d << "plan: " << to_string(p.input_shape()) << " " << to_string(p.dtype()) << " -> " << to_string(p.output_shape())
    << ", strategy " << to_string(impl.strategy) << (opt.strategy == Strategy::automatic ? " (auto)" : " (forced)")
    << ", " << to_string(opt.memory) << " memory\n";
  d << "  why: " << chosen.why << "\n";
  for (const std::string& r : rejected) d << "  not " << r << "\n";
  for (const std::string& n : notes) d << "  rewrite: " << n << "\n";
  int64_t moved = impl.floor_bytes;
  for (std::size_t k = 0; k < impl.steps.size(); ++k) {
    d << "  step " << k + 1 << ": " << step_text(impl.steps[k]) << " ["
      << (impl.backends[k] ? impl.backends[k]->name() : "kokkos eager") << "]\n";
    if (auto* c = std::get_if<ConvStep>(&impl.steps[k]))  // Y written once, read once
      moved += 2 * checked_numel(c->out_shape, "plan", "Y") * int64_t(size_of(p.dtype()));
  }
  d << "  bytes: floor " << mb(impl.floor_bytes) << " (each input, weight and operand read once, the output written once)";
  if (impl.strategy != Strategy::reference) d << "; this plan moves about " << mb(moved);
  d << "\n";
  impl.description = d.str();
  return impl;
}

}  // namespace

PlanImpl make_plan(const Pipeline& p, const PlanOptions& opt) {
  if (p.dtype() == DType::f64) return make_typed<double>(p, opt);
  return make_typed<float>(p, opt);
}

}  // namespace kfuse::detail
