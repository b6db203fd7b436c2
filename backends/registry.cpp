#include "backends/backend.hpp"

namespace kfuse::detail {

const std::vector<const Backend*>& backends() {
  static const std::vector<const Backend*> list = {
#ifdef KFUSE_HAVE_CUDA
      &cuda_backend(),
#endif
      &kokkos_backend(),
  };
  return list;
}

}  // namespace kfuse::detail
