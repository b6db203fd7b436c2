// Device scratch of the Kokkos kernels, kept between runs and grown on demand
// (on a GPU an allocation costs more than the fold's small kernels).
#pragma once

#include <cstddef>
#include <exception>
#include <string>

#include "kfuse/error.hpp"
#include "kfuse/kokkos.hpp"

namespace kfuse::kokkos {

// One buffer per slot for the process: every Kokkos launch of kfuse holds the
// dispatch lock (dispatch.hpp). Freed when Kokkos finalizes.
enum class Slot { tap_sums, partial_sums, z, row_partials, conv_cols, count };
template <class V>
inline V* scratch(Slot slot, int64_t n) {
  struct Buffer {
    void* p = nullptr;
    std::size_t bytes = 0;
  };
  static Buffer buffers[int(Slot::count)];
  static bool hooked = false;
  Buffer& b = buffers[int(slot)];
  const std::size_t bytes = std::size_t(n > 0 ? n : 1) * sizeof(V);
  if (bytes <= b.bytes) return static_cast<V*>(b.p);
  if (!hooked) {
    Kokkos::push_finalize_hook([] {
      for (Buffer& f : buffers) Kokkos::kokkos_free<DeviceMemSpace>(f.p), f = Buffer{};
      hooked = false;
    });
    hooked = true;
  }
  Kokkos::kokkos_free<DeviceMemSpace>(b.p);
  b = Buffer{};
  try {
    b.p = Kokkos::kokkos_malloc<DeviceMemSpace>("kfuse::scratch", bytes);
  } catch (const std::exception& e) {
    const std::string why = e.what();
    fail(ErrorCategory::backend, "kokkos backend", "cannot allocate ", bytes, " bytes of scratch memory (",
         why.substr(0, why.find('\n')), ")");
  }
  b.bytes = bytes;
  return static_cast<V*>(b.p);
}

}  // namespace kfuse::kokkos
