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
enum class Slot { tap_sums, partial_sums, shares, z, row_partials, conv_cols, counters, count };

// The slot's buffer, at least `bytes` long; `fresh` says whether it was
// (re)allocated by this call.
inline void* grow(Slot slot, std::size_t bytes, bool& fresh) {
  struct Buffer {
    void* p = nullptr;
    std::size_t bytes = 0;
  };
  static Buffer buffers[int(Slot::count)];
  static bool hooked = false;
  Buffer& b = buffers[int(slot)];
  fresh = bytes > b.bytes;
  if (!fresh) return b.p;
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
  return b.p;
}

template <class V>
inline V* scratch(Slot slot, int64_t n) {
  bool fresh = false;
  return static_cast<V*>(grow(slot, std::size_t(n > 0 ? n : 1) * sizeof(V), fresh));
}

// Arrival counters of the kernels whose last team to finish a unit of work
// goes on with it (the fold): zero when allocated, and each kernel leaves
// them zero.
using Counter = unsigned long long;
inline Counter* counters(int64_t n) {
  bool fresh = false;
  const int64_t len = n > 0 ? n : 1;
  auto* c = static_cast<Counter*>(grow(Slot::counters, std::size_t(len) * sizeof(Counter), fresh));
  if (fresh) Kokkos::deep_copy(Kokkos::View<Counter*, DeviceMemSpace, Kokkos::MemoryUnmanaged>(c, len), Counter(0));
  return c;
}

}  // namespace kfuse::kokkos
