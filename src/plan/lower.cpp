// The pieces every lowering shares: operand storage, the rewrites, point ops
// and the row program after a reduction.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "plan/lower.hpp"

namespace kfuse::detail {

double host_value(const TensorView& v, int64_t offset) {
  return v.dtype == DType::f64 ? static_cast<const double*>(v.data)[offset] : static_cast<const float*>(v.data)[offset];
}

template <class A>
const A* Store<A>::operand(const Tensor& t) {
  const TensorView& v = t.view();
  std::vector<A> host(static_cast<std::size_t>(v.numel()));
  const Indexer ix = make_indexer(v.shape, v.strides);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = A(host_value(v, ix.offset(int64_t(i))));
  return upload(host);
}

template <class A>
Tensor Store<A>::tensor(const Tensor& t) {
  return t.memory() == memory_ ? t : Tensor::copy_of(t, memory_);
}

template <class A>
const void* Store<A>::upload_bytes(const void* data, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  Tensor host = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::f64, Memory::host);
  std::memcpy(host.view().data, data, bytes);
  storage_.push_back(memory_ == Memory::host ? host : Tensor::copy_of(host, memory_));
  return storage_.back().view().data;
}

template class Store<float>;
template class Store<double>;

bool is_point(const Op& op) { return std::holds_alternative<UnaryOp>(op) || std::holds_alternative<BinaryOp>(op); }

// Compared by shape, not by element count, which misses [3, 4] + [1, 1, 4]
// and every empty tensor. in_shape, not out_shape: the reshape rewrite
// changes the latter.
bool expands(const PipelineStage& s) {
  const auto* b = std::get_if<BinaryOp>(&s.op);
  return b && b->operand && broadcast_shapes(s.in_shape, b->operand->shape(), "plan") != s.in_shape;
}

Stages rewrite(const Pipeline& p, std::vector<std::string>& notes) {
  Stages out;
  for (PipelineStage st : p.stages()) {
    if (auto* r = std::get_if<ReduceOp>(&st.op)) {
      const bool all_one = std::all_of(r->axes.begin(), r->axes.end(), [&](int a) { return st.in_shape[a] == 1; });
      // (Not folded into a conv: the conv's own output shape must stay
      // intact; nor into an op that broadcasts: its operand is indexed over
      // the broadcast shape, which the reshape would change under it.)
      if (all_one && !out.empty() && !std::holds_alternative<ConvTranspose2dOp>(out.back().op) &&
          !expands(out.back())) {
        notes.push_back(op_text(st.op) + " reduces only size-1 axes: a reshape to " + to_string(st.out_shape));
        out.back().out_shape = st.out_shape;
        continue;
      }
    }
    auto* b = std::get_if<BinaryOp>(&st.op);
    if (b && b->kind == BinaryKind::div && !b->operand) {
      // A multiply by the reciprocal (in the compute type), as PyTorch divides
      // a tensor by a scalar: a division is about eight instructions a float
      // where an epilogue issues about ten a value. Kept a division where the
      // reciprocal is not a normal number (x * inf is not x / tiny).
      const double r = p.dtype() == DType::f64 ? 1.0 / b->scalar
                                               : static_cast<double>(1.0f / static_cast<float>(b->scalar));
      if (std::isnormal(r)) {
        notes.push_back(cat("div(", b->scalar, ") as mul(", r, ")"));
        b->kind = BinaryKind::mul;
        b->scalar = r;
      }
    }
    if (b && b->kind == BinaryKind::mul && !b->operand && !out.empty()) {
      auto* prev = std::get_if<BinaryOp>(&out.back().op);
      // Merged only when the product, in the pipeline's compute type, is what
      // the two multiplies give: finite, and zero only with a zero factor
      // (mul(1e30).mul(1e30) in float32 must not turn 0 into 0 * inf = NaN).
      const double prod = prev ? prev->scalar * b->scalar : 0.0;
      const double in_type = p.dtype() == DType::f64 ? prod : static_cast<double>(static_cast<float>(prod));
      if (prev && prev->kind == BinaryKind::mul && !prev->operand && std::isfinite(in_type) &&
          (in_type != 0.0 || prev->scalar == 0.0 || b->scalar == 0.0)) {
        notes.push_back(cat("merged mul(", prev->scalar, ") and mul(", b->scalar, ") into mul(", prev->scalar * b->scalar,
                            ")"));
        prev->scalar *= b->scalar;
        out.back().out_shape = st.out_shape;
        continue;
      }
    }
    out.push_back(st);
  }
  return out;
}

// The operand's element for the coordinate (i, j) of the split iteration
// space: outer = the axes outside `inner_mask`, inner = the masked axes, both
// of the op's running shape (its output shape when the operand expands it:
// the stage then reads its input broadcast to that shape).
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
  const Shape running = broadcast_shapes(st.in_shape, os, "plan");
  split_axes(running, broadcast_strides(running, os, contiguous_strides(os)), inner_mask, p.outer, p.inner);
  return p;
}
template PointOp<float> point_op(const PipelineStage&, Store<float>&, uint32_t);
template PointOp<double> point_op(const PipelineStage&, Store<double>&, uint32_t);

namespace {
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
}  // namespace

template <class A>
bool build_tail(const Stages& rest, const Shape& z, int64_t out_numel, Store<A>& store, Tail<A>& tail, std::string& why) {
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
template bool build_tail(const Stages&, const Shape&, int64_t, Store<float>&, Tail<float>&, std::string&);
template bool build_tail(const Stages&, const Shape&, int64_t, Store<double>&, Tail<double>&, std::string&);

}  // namespace kfuse::detail
