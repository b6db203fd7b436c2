// Argument checks and dtype dispatch shared by the Kokkos kernels.
#pragma once

#include <string>

#include "kfuse/kokkos.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::kokkos {

// The Kokkos backend runs on the memory of Kokkos's default execution space.
inline bool accepts(Memory m) { return (m == Memory::cuda) == kKokkosOnCuda; }

inline void check_input(const TensorView& v, const std::string& op, const std::string& arg) {
  check_view(v, op, arg);
  if (!accepts(v.memory))
    fail(ErrorCategory::unsupported, op, arg, " lives in ", to_string(v.memory),
         " memory, which the Kokkos backend (", ExecSpace::name(), ") cannot access");
}

// Calls f(T{}) with T the C++ type of `d`; the Kokkos kernels take fp32 and fp64.
template <class F>
decltype(auto) dispatch_float(DType d, const std::string& op, F&& f) {
  switch (d) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    default:
      fail(ErrorCategory::unsupported, op, "dtype ", to_string(d),
           " is not supported by the Kokkos backend (float32, float64)");
  }
}

using Range = Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<int64_t>>;

}  // namespace kfuse::kokkos
