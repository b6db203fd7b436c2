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

}  // namespace kfuse::kokkos
