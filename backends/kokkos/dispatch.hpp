// Argument checks and dtype dispatch shared by the Kokkos kernels.
#pragma once

#include <mutex>
#include <string>

#include <type_traits>

#include "kfuse/detail/math.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::kokkos {

// Kokkos's default execution-space instance is not safe for kernels
// dispatched from several host threads at once (Kokkos 3.4's Serial keeps one
// team scratch and reduction buffer, resized by the launch that needs more),
// so every Kokkos launch of kfuse, eager op or plan step, holds this lock.
// Recursive: an eager op may call another. Plan::run is thread-safe through it
// (include/kfuse/plan.hpp); the hand-written CUDA backend does not take it.
inline std::recursive_mutex& dispatch_mutex() {
  static std::recursive_mutex m;
  return m;
}
using DispatchLock = std::lock_guard<std::recursive_mutex>;

// Whether the default execution space is a device (a team is a block of
// threads). On the host kfuse runs teams of one thread.
inline constexpr bool kOnDevice = !Kokkos::SpaceAccessibility<Kokkos::HostSpace, DeviceMemSpace>::accessible;

// The accumulator of the Kokkos kernels' reductions (sum, mean, logsumexp,
// softmax's sum of exponentials) over float T: double on the host, where a
// team's reduction is one sequential sum whose float error grows like K*u (a
// row of 2^24 + 1 ones sums to 2^24; a 512x512 mean is off by ~1e-2), the
// shared acc_t on a device, where tree reductions grow like log K.
template <class T>
using red_acc_t = std::conditional_t<kOnDevice, detail::acc_t<T>, double>;

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
