// Named ranges for profilers: kfuse::detail::TraceRange r("kfuse::fold");
// opens a range until the end of the scope
//   - in Kokkos Tools (Kokkos::Profiling::pushRegion/popRegion; only when a
//     tool is loaded, so no cost otherwise), and
//   - in NVTX (Nsight Systems, ncu --nvtx) when kfuse is built with CUDA and
//     NVTX3 was found (KFUSE_HAVE_NVTX, set by CMake). NVTX3 is header-only
//     and does nothing unless a profiler is attached.
#pragma once

#include "kfuse/kokkos.hpp"

#ifdef KFUSE_HAVE_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace kfuse::detail {

class TraceRange {
 public:
  explicit TraceRange(const char* name) : kokkos_(Kokkos::Profiling::profileLibraryLoaded()) {
#ifdef KFUSE_HAVE_NVTX
    nvtxRangePushA(name);
#endif
    if (kokkos_) Kokkos::Profiling::pushRegion(name);
  }
  ~TraceRange() {
    if (kokkos_) Kokkos::Profiling::popRegion();
#ifdef KFUSE_HAVE_NVTX
    nvtxRangePop();
#endif
  }
  TraceRange(const TraceRange&) = delete;
  TraceRange& operator=(const TraceRange&) = delete;

 private:
  bool kokkos_;
};

}  // namespace kfuse::detail
