// The op vocabulary as portable Kokkos kernels, one kernel per op.
#include "kfuse/ops.hpp"

#include "backends/kokkos/dispatch.hpp"
#include "backends/kokkos/kernels.hpp"
#include "backends/kokkos/rows.hpp"
#include "kfuse/detail/conv.hpp"
#include "kfuse/detail/math.hpp"

namespace kfuse {

using kokkos::check_input;
using kokkos::dispatch_float;
using kokkos::dispatch_mutex;
using kokkos::DispatchLock;
using kokkos::Range;

namespace {

// Kernels are function templates: CUDA forbids device lambdas inside generic lambdas.

template <class T>
void conv_kernel(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias, const ConvTranspose2dParams& p, const TensorView& y) {
  using A = detail::acc_t<T>;
  const T* xp = static_cast<const T*>(x.data);
  const T* wp = static_cast<const T*>(w.data);
  const T* bp = bias ? static_cast<const T*>(bias->data) : nullptr;
  T* yp = static_cast<T*>(y.data);
  const detail::ConvTransposeGather gather(x, w, bias ? &*bias : nullptr, p, y.shape);
  const Indexer yix = make_indexer(y.shape, y.strides);
  const bool dense = y.is_contiguous();
  Kokkos::parallel_for("kfuse::conv_transpose2d", Range(0, y.numel()), KOKKOS_LAMBDA(int64_t i) {
    yp[dense ? i : yix.offset(i)] = T(gather.at<A>(xp, wp, bp, i));
  });
}

template <class T>
void unary_kernel(const TensorView& x, const Unary& u, const TensorView& y) {
  const T* xp = static_cast<const T*>(x.data);
  T* yp = static_cast<T*>(y.data);
  const Indexer ix = make_indexer(x.shape, x.strides);
  Kokkos::parallel_for("kfuse::unary", Range(0, y.numel()),
                       KOKKOS_LAMBDA(int64_t i) { yp[i] = detail::apply(u, xp[ix.offset(i)]); });
}

template <class T>
void binary_kernel(const TensorView& a, const TensorView& b, const Shape& shape, BinaryKind kind, const TensorView& y) {
  const T* ap = static_cast<const T*>(a.data);
  const T* bp = static_cast<const T*>(b.data);
  T* yp = static_cast<T*>(y.data);
  const Indexer ia = broadcast_indexer(shape, a.shape, a.strides);
  const Indexer ib = broadcast_indexer(shape, b.shape, b.strides);
  Kokkos::parallel_for("kfuse::binary", Range(0, y.numel()), KOKKOS_LAMBDA(int64_t i) {
    yp[i] = detail::apply(kind, ap[ia.offset(i)], bp[ib.offset(i)]);
  });
}

template <class T>
void binary_scalar_kernel(const TensorView& a, double scalar, BinaryKind kind, const TensorView& y) {
  const T* ap = static_cast<const T*>(a.data);
  T* yp = static_cast<T*>(y.data);
  const T s = T(scalar);
  const Indexer ia = make_indexer(a.shape, a.strides);
  Kokkos::parallel_for("kfuse::binary_scalar", Range(0, y.numel()),
                       KOKKOS_LAMBDA(int64_t i) { yp[i] = detail::apply(kind, ap[ia.offset(i)], s); });
}

// Threads per team the caller asked for (TeamLaunch: team_size * vector_length; 0: the tuner's choice).
int requested_threads(TeamLaunch launch) {
  return launch.team_size > 0 ? launch.team_size * std::max(1, launch.vector_length) : 0;
}

template <class T>
void reduce_kernel(const TensorView& x, ReduceKind kind, uint32_t mask, TeamLaunch launch, const TensorView& y) {
  using R = kokkos::red_acc_t<T>;  // double on the host: long rows stay accurate
  kokkos::Row<T> row{static_cast<const T*>(x.data), {}, {}, false, 1};
  split_axes(x.shape, x.strides, mask, row.outer, row.inner);
  for (int d = 0; d < row.inner.rank; ++d) row.count *= row.inner.size[d];
  row.dense = row.inner.is_dense();
  kokkos::run_reduce_rows<T, R>("kfuse::reduce", row, {}, kind, y.numel(), static_cast<T*>(y.data), requested_threads(launch));
}

template <class T>
void softmax_kernel(const TensorView& x, uint32_t mask, TeamLaunch launch, const TensorView& y) {
  using R = kokkos::red_acc_t<T>;  // double on the host: long rows stay accurate
  if (y.numel() == 0) return;  // an empty axis: no rows to normalise, however many rows of nothing
  kokkos::Softmax<T, R> s{{static_cast<const T*>(x.data), {}, {}, false, 1}, {}, {}, static_cast<T*>(y.data), {}, {}};
  split_axes(x.shape, x.strides, mask, s.row.outer, s.row.inner);
  split_axes(y.shape, y.strides, mask, s.out_outer, s.out_inner);
  s.row.count = s.row.inner.rank ? s.row.inner.size[0] : 1;
  s.row.dense = s.row.inner.is_dense();
  kokkos::run_softmax_rows("kfuse::softmax", s, y.numel() / s.row.count, requested_threads(launch));
}

}  // namespace

void kokkos::conv_transpose2d_into(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                                   const ConvTranspose2dParams& p, const TensorView& y) {
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(x.dtype, "conv_transpose2d", [&](auto tag) { conv_kernel<decltype(tag)>(x, w, bias, p, y); });
  Kokkos::fence();
}

Tensor conv_transpose2d(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                        const ConvTranspose2dParams& p) {
  const std::string op = "conv_transpose2d";
  check_input(x, op, "input");
  check_input(w, op, "weight");
  if (bias) check_input(*bias, op, "bias");
  const Shape out_shape = conv_transpose2d_shape(x.shape, w.shape, bias ? std::optional<Shape>(bias->shape) : std::nullopt, p);
  if (w.dtype != x.dtype || (bias && bias->dtype != x.dtype))
    fail(ErrorCategory::invalid_argument, op, "input, weight and bias must share a dtype (input ", to_string(x.dtype),
         ", weight ", to_string(w.dtype), bias ? std::string(", bias ") + to_string(bias->dtype) : std::string(), ")");
  Tensor out = Tensor::empty(out_shape, x.dtype, x.memory);
  kokkos::conv_transpose2d_into(x, w, bias, p, out.view());
  return out;
}

Tensor unary(const TensorView& x, const Unary& u) {
  check_input(x, to_string(u.kind), "input");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.memory);
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(x.dtype, to_string(u.kind), [&](auto tag) { unary_kernel<decltype(tag)>(x, u, out.view()); });
  Kokkos::fence();
  return out;
}

Tensor binary(const TensorView& a, const TensorView& b, BinaryKind kind) {
  const std::string op = to_string(kind);
  check_input(a, op, "lhs");
  check_input(b, op, "rhs");
  if (a.dtype != b.dtype)
    fail(ErrorCategory::invalid_argument, op, "operands must share a dtype (lhs ", to_string(a.dtype), ", rhs ",
         to_string(b.dtype), ")");
  const Shape shape = broadcast_shapes(a.shape, b.shape, op);
  Tensor out = Tensor::empty(shape, a.dtype, a.memory);
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(a.dtype, op, [&](auto tag) { binary_kernel<decltype(tag)>(a, b, shape, kind, out.view()); });
  Kokkos::fence();
  return out;
}

Tensor binary(const TensorView& a, double scalar, BinaryKind kind) {
  const std::string op = to_string(kind);
  check_input(a, op, "lhs");
  Tensor out = Tensor::empty(a.shape, a.dtype, a.memory);
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(a.dtype, op, [&](auto tag) { binary_scalar_kernel<decltype(tag)>(a, scalar, kind, out.view()); });
  Kokkos::fence();
  return out;
}

Tensor reduce(const TensorView& x, ReduceKind kind, const std::vector<int>& axes, bool keepdim, TeamLaunch launch) {
  const std::string op = to_string(kind);
  check_input(x, op, "input");
  if (axes.empty())
    fail(ErrorCategory::invalid_argument, op, "needs at least one axis (PyTorch's dim=[] reduces every axis: list them)");
  const uint32_t mask = axes_mask(axes, x.rank(), op);
  if (kind == ReduceKind::max || kind == ReduceKind::min)  // sum/mean/logsumexp of nothing: 0, NaN, -inf
    for (int d = 0; d < x.rank(); ++d)
      if ((mask >> d & 1u) && x.shape[d] == 0)
        fail(ErrorCategory::invalid_argument, op, "axis ", d, " of the input ", to_string(x.shape),
             " is empty: the ", op, " of no elements is undefined (PyTorch raises too)");
  Tensor out = Tensor::empty(reduced_shape(x.shape, mask, keepdim), x.dtype, x.memory);
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(x.dtype, op, [&](auto tag) { reduce_kernel<decltype(tag)>(x, kind, mask, launch, out.view()); });
  Kokkos::fence();
  return out;
}

Tensor softmax(const TensorView& x, int axis, TeamLaunch launch) {
  const std::string op = "softmax";
  check_input(x, op, "input");
  const uint32_t mask = axes_mask({axis}, x.rank(), op);
  Tensor out = Tensor::empty(x.shape, x.dtype, x.memory);
  const DispatchLock lock(dispatch_mutex());
  dispatch_float(x.dtype, op, [&](auto tag) { softmax_kernel<decltype(tag)>(x, mask, launch, out.view()); });
  Kokkos::fence();
  return out;
}

}  // namespace kfuse
