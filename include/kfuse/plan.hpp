// A plan: a pipeline checked once, rewritten, and lowered to a short list of
// steps, each a kernel with its descriptor computed on the host. Immutable:
// one plan may run from several threads at once, each with its own output
// (tests/test_concurrency.cpp). On the Kokkos backend the kernels of
// concurrent runs are serialised, one launch at a time (a process-wide lock:
// Kokkos's default execution-space instance is not safe for concurrent
// dispatch, Kokkos 3.4's Serial least of all); the CUDA backend runs each
// thread's launches on that thread's default stream (cudaStreamPerThread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kfuse/pipeline.hpp"

namespace kfuse {

enum class Strategy { automatic, fold, fused_conv, fused, reference };
enum class BackendChoice { automatic, kokkos, cuda };
// The convolution's arithmetic, as PyTorch means it: strict fp32 (fp32
// multiply-adds; torch.backends.cudnn.allow_tf32 = False), or TF32 tensor cores
// with fp32 accumulation (PyTorch's default for cuDNN convolutions; about 1e-3
// relative error). float64 pipelines are always strict; float16/bfloat16
// pipelines multiply in their dtype and accumulate in fp32.
enum class Precision { strict, tf32 };
// The layout of the conv output Y where the fused strategy writes it: NCHW
// (contiguous), or channels-last NHWC, cuDNN's own (no transpose of Y; the
// epilogue reads it through its strides). automatic: measured at plan time on
// a GPU (tuning on), else NCHW.
enum class YLayout { automatic, nchw, nhwc };

const char* to_string(Strategy s) noexcept;
const char* to_string(BackendChoice b) noexcept;
const char* to_string(Precision p) noexcept;
const char* to_string(YLayout l) noexcept;
Strategy strategy_from(const std::string& name);      // "auto", "fold", "fused_conv", "fused", "reference"
BackendChoice backend_from(const std::string& name);  // "auto", "kokkos", "cuda"
Precision precision_from(const std::string& name);    // "strict", "tf32"
YLayout y_layout_from(const std::string& name);       // "auto", "nchw", "nhwc"

struct PlanOptions {
  Strategy strategy = Strategy::automatic;  // a forced strategy that cannot apply is an error
  Memory memory = kokkos_memory();          // where inputs and outputs live
  BackendChoice backend = BackendChoice::automatic;
  Precision precision = Precision::strict;
  YLayout y_layout = YLayout::automatic;  // nhwc: the fused strategy applies only where it can take it
};

namespace detail {
struct PlanImpl;
}

class Plan {
 public:
  Plan(const Pipeline& pipeline, PlanOptions options = {});

  Strategy strategy() const;
  const Shape& input_shape() const;
  const Shape& output_shape() const;
  DType dtype() const;
  Memory memory() const;

  // The strategy and rewrites chosen and why, the steps and their backends,
  // and the bytes the plan must move.
  std::string describe() const;
  // Fewest bytes the pipeline must move: input, weights and operands read
  // once, output written once.
  int64_t floor_bytes() const;

  // Runs on caller-owned memory (`x` may be strided; `out` must have the
  // output shape and be contiguous), both in the plan's memory.
  void run(const TensorView& x, const TensorView& out) const;
  Tensor run(const TensorView& x) const;

 private:
  std::shared_ptr<const detail::PlanImpl> impl_;
};

}  // namespace kfuse
