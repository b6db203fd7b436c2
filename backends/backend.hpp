// The backend interface: a backend runs plan steps on the memory it can reach.
// The registry lists them in preference order; the first that accepts a step
// runs it (hand-written CUDA first, then the portable Kokkos kernels).
#pragma once

#include <vector>

#include "plan/plan_impl.hpp"

namespace kfuse::detail {

struct Backend {
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Whether this backend runs `step` with its input of `input_dtype` in `memory`.
  virtual bool accepts(const Step& step, Memory memory, DType input_dtype) const = 0;
  virtual void conv_transpose2d(const ConvStep& step, const TensorView& x, const TensorView& y) const = 0;
  // A fold step reads x; an epilogue step reads Y. `out` is contiguous.
  virtual void fused(const FusedStep& step, const TensorView& in, const TensorView& out) const = 0;
};

const Backend& kokkos_backend();
#ifdef KFUSE_HAVE_CUDA
const Backend& cuda_backend();
#endif

// Registered backends, most specialised first.
const std::vector<const Backend*>& backends();

}  // namespace kfuse::detail
