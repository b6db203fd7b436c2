// What a Plan holds: its steps, where each reads and writes, the step each
// backend prepared, and the operands the steps point into.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "core/device_runtime.hpp"
#include "plan/steps.hpp"

namespace kfuse::detail {

// Where a step reads and writes. Slot 0 is the plan's input, kOutput its
// output, k >= 1 the intermediate buffers[k - 1] (the plan's dtype). The step reads its slot viewed as `in_shape`: the same elements
// reshaped, or broadcast (a point op whose operand expands the running value).
inline constexpr int kOutput = -1;
struct StepIO {
  int in = 0;
  int out = kOutput;
  Shape in_shape;
};

// An intermediate: its shape, and its strides when it is not contiguous (a
// conv output written channels-last).
struct Buffer {
  Shape shape;
  Shape strides;  // empty: contiguous
};

// Intermediate buffers kept between runs: on a GPU an allocation per run
// costs more than the epilogue. Each concurrent run leases its own.
class BufferPool {
 public:
  BufferPool() = default;
  BufferPool(BufferPool&&) noexcept {}  // a plan is moved only while it is built, with no buffers yet

  // A buffer of `shape`, returned to the pool when the lease ends.
  class Lease {
   public:
    Lease(BufferPool& pool, const Shape& shape, DType dtype, Memory memory)
        : pool_(pool), t_(pool.take(shape, dtype, memory)) {}
    ~Lease() { pool_.give_back(std::move(t_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const TensorView& view() const { return t_.view(); }

   private:
    BufferPool& pool_;
    Tensor t_;
  };

 private:
  Tensor take(const Shape& shape, DType dtype, Memory memory);
  void give_back(Tensor t);

  std::mutex mutex_;
  std::vector<Tensor> free_;
};

struct PlanImpl {
  PlanOptions options;
  Strategy strategy = Strategy::automatic;
  DType dtype = DType::f32;
  Shape input_shape, output_shape;
  std::vector<Step> steps;
  std::vector<StepIO> io;                                   // one per step
  std::vector<Buffer> buffers;                              // intermediate slots 1..
  std::vector<const Backend*> backends;                     // one per step
  std::vector<std::unique_ptr<const PreparedStep>> prepared;  // one per step
  std::vector<Tensor> storage;                              // operand data and op arrays the steps point into
  std::string description;
  int64_t floor_bytes = 0;
  mutable BufferPool pool;
  std::unique_ptr<device::LaunchGraph> graph;  // the steps replayed as a CUDA graph (null: launched directly)
};

// The plan's steps on checked arguments, stream-ordered (Plan::run waits).
void run_steps(const PlanImpl& plan, const TensorView& x, const TensorView& out, device::RunTimer* timer = nullptr);

}  // namespace kfuse::detail
