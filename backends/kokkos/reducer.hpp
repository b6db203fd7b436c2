// Kokkos reducers over kfuse's reduction states, so team reductions share the math
// of detail/math.hpp (NaN propagation, online logsumexp) with the CUDA kernels.
#pragma once

#include "kfuse/detail/math.hpp"
#include "kfuse/kokkos.hpp"

namespace kfuse::kokkos {

// The join of two reduction states of `kind`: a ReduceAcc (every kind), or a
// plain value where the state is one (sum, mean's sum, max, min).
template <class A>
KOKKOS_INLINE_FUNCTION void join_states(ReduceKind kind, detail::ReduceAcc<A>& dest, const detail::ReduceAcc<A>& src) {
  detail::reduce_join(kind, dest, src);
}
template <class A>
KOKKOS_INLINE_FUNCTION void join_states(ReduceKind kind, A& dest, const A& src) {
  detail::ReduceAcc<A> d{dest, A(0)};
  detail::reduce_join(kind, d, detail::ReduceAcc<A>{src, A(0)});
  dest = d.a;
}
template <class A>
KOKKOS_INLINE_FUNCTION void init_state(ReduceKind kind, detail::ReduceAcc<A>& v) { v = detail::reduce_init<A>(kind); }
template <class A>
KOKKOS_INLINE_FUNCTION void init_state(ReduceKind kind, A& v) { v = detail::reduce_init<A>(kind).a; }
#if KOKKOS_VERSION < 40000
template <class A>
KOKKOS_INLINE_FUNCTION detail::ReduceAcc<A> unvolatile(const volatile detail::ReduceAcc<A>& v) { return {v.a, v.b}; }
template <class A>
KOKKOS_INLINE_FUNCTION A unvolatile(const volatile A& v) { return v; }
template <class A>
KOKKOS_INLINE_FUNCTION void store(volatile detail::ReduceAcc<A>& dest, const detail::ReduceAcc<A>& v) {
  dest.a = v.a;
  dest.b = v.b;
}
template <class A>
KOKKOS_INLINE_FUNCTION void store(volatile A& dest, const A& v) { dest = v; }
#endif

// A Kokkos reducer of kind `kind` over a state V: AccReducer's ReduceAcc, or
// ScalarReducer's one value, which Kokkos's vector joins shuffle in
// registers where a two-field state went through the stack (the held softmax
// over W: 201 MB of local loads, H100, 2026-12-06).
template <class V, class Space>
struct KindReducer {
  using reducer = KindReducer;
  using value_type = V;
  using result_view_type = Kokkos::View<value_type, Space, Kokkos::MemoryUnmanaged>;

  ReduceKind kind;
  value_type* value;

  KOKKOS_INLINE_FUNCTION KindReducer(ReduceKind k, value_type& v) : kind(k), value(&v) {}
  KOKKOS_INLINE_FUNCTION void join(value_type& dest, const value_type& src) const { join_states(kind, dest, src); }
#if KOKKOS_VERSION < 40000
  KOKKOS_INLINE_FUNCTION void join(volatile value_type& dest, const volatile value_type& src) const {
    value_type d = unvolatile(dest);
    join_states(kind, d, unvolatile(src));
    store(dest, d);
  }
#endif
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const { init_state(kind, v); }
  KOKKOS_INLINE_FUNCTION value_type& reference() const { return *value; }
  KOKKOS_INLINE_FUNCTION result_view_type view() const { return result_view_type(value); }
  KOKKOS_INLINE_FUNCTION bool references_scalar() const { return true; }
};
template <class A, class Space = Kokkos::HostSpace>
using AccReducer = KindReducer<detail::ReduceAcc<A>, Space>;
template <class A, class Space = Kokkos::HostSpace>
using ScalarReducer = KindReducer<A, Space>;

}  // namespace kfuse::kokkos
