// A Kokkos reducer over kfuse's ReduceAcc, so team reductions share the math
// of detail/math.hpp (NaN propagation, online logsumexp) with the CUDA kernels.
#pragma once

#include "kfuse/detail/math.hpp"
#include "kfuse/kokkos.hpp"

namespace kfuse::kokkos {

template <class A, class Space = Kokkos::HostSpace>
struct AccReducer {
  using reducer = AccReducer;
  using value_type = detail::ReduceAcc<A>;
  using result_view_type = Kokkos::View<value_type, Space, Kokkos::MemoryUnmanaged>;

  ReduceKind kind;
  value_type* value;

  KOKKOS_INLINE_FUNCTION AccReducer(ReduceKind k, value_type& v) : kind(k), value(&v) {}
  KOKKOS_INLINE_FUNCTION void join(value_type& dest, const value_type& src) const {
    detail::reduce_join(kind, dest, src);
  }
#if KOKKOS_VERSION < 40000
  KOKKOS_INLINE_FUNCTION void join(volatile value_type& dest, const volatile value_type& src) const {
    value_type d{dest.a, dest.b};
    detail::reduce_join(kind, d, value_type{src.a, src.b});
    dest.a = d.a;
    dest.b = d.b;
  }
#endif
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const { v = detail::reduce_init<A>(kind); }
  KOKKOS_INLINE_FUNCTION value_type& reference() const { return *value; }
  KOKKOS_INLINE_FUNCTION result_view_type view() const { return result_view_type(value); }
  KOKKOS_INLINE_FUNCTION bool references_scalar() const { return true; }
};

// A reduction whose state is one value (sum, mean's sum, max, min), joined as
// reduce_join joins it: Kokkos's vector joins then shuffle a scalar in
// registers, where AccReducer's two-field value went through the stack (the
// held softmax over W: 201 MB of local loads, H100, 2026-12-06).
template <class A, class Space = Kokkos::HostSpace>
struct ScalarReducer {
  using reducer = ScalarReducer;
  using value_type = A;
  using result_view_type = Kokkos::View<value_type, Space, Kokkos::MemoryUnmanaged>;

  ReduceKind kind;
  value_type* value;

  KOKKOS_INLINE_FUNCTION ScalarReducer(ReduceKind k, value_type& v) : kind(k), value(&v) {}
  KOKKOS_INLINE_FUNCTION void join(value_type& dest, const value_type& src) const { dest = joined(dest, src); }
#if KOKKOS_VERSION < 40000
  KOKKOS_INLINE_FUNCTION void join(volatile value_type& dest, const volatile value_type& src) const {
    dest = joined(dest, src);
  }
#endif
  KOKKOS_INLINE_FUNCTION void init(value_type& v) const { v = detail::reduce_init<A>(kind).a; }
  KOKKOS_INLINE_FUNCTION value_type& reference() const { return *value; }
  KOKKOS_INLINE_FUNCTION result_view_type view() const { return result_view_type(value); }
  KOKKOS_INLINE_FUNCTION bool references_scalar() const { return true; }

 private:
  KOKKOS_INLINE_FUNCTION A joined(A dest, A src) const {
    detail::ReduceAcc<A> d{dest, A(0)};
    detail::reduce_join(kind, d, detail::ReduceAcc<A>{src, A(0)});
    return d.a;
  }
};

}  // namespace kfuse::kokkos
