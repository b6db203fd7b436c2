// The ordered list of backends (backends/backend.hpp): the first that prepares
// a step runs it.
#include "backends/backend.hpp"

namespace kfuse::detail {

#ifdef KFUSE_HAVE_CUDA
const Backend& cuda_backend();  // backends/cuda/backend.cu
#endif
const Backend& kokkos_backend();     // backends/kokkos/backend.cpp
const Backend& reference_backend();  // backends/kokkos/reference.cpp

const std::vector<const Backend*>& backends() {
  static const std::vector<const Backend*> list = {
#ifdef KFUSE_HAVE_CUDA
      &cuda_backend(),
#endif
      &kokkos_backend(),
      &reference_backend(),
  };
  return list;
}

}  // namespace kfuse::detail
