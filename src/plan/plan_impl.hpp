// What a Plan holds: its steps with their descriptors, operands already in
// the plan's memory, and the backend chosen for each step.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kfuse/detail/program.hpp"
#include "kfuse/plan.hpp"

namespace kfuse::detail {

// A run of point ops, stored as PointOp<A>[n] in the plan's memory.
template <class A>
struct Chain {
  const PointOp<A>* ops = nullptr;
  int n = 0;
};

// The per-row program after the first reduction: Z is R rows by K columns;
// the output holds R rows by K_out (K, or 1 when the tail reduces).
template <class A>
struct Tail {
  const TailOp<A>* ops = nullptr;
  int n = 0;
  int64_t R = 0, K = 0, K_out = 0;
};

// conv_transpose2d materialising Y (fused strategy).
struct ConvStep {
  ConvTranspose2dParams params;
  Tensor weight;               // plan memory, pipeline dtype (fp32 for half inputs)
  std::optional<Tensor> bias;
  Shape out_shape;
  bool allow_tf32 = false;     // PlanOptions::allow_tf32: TF32 tensor cores allowed for fp32 convolutions
};

// The fold: one pass over x for the segment-block sums of every plane, then
// the contraction fused with the tail.
template <class A>
struct FoldStep {
  FoldGeometry geom;
  FoldContraction<A> contraction;
  Tail<A> tail;
};

// The fused epilogue over Y (the conv output, or the input when there is no
// front op): body point ops, then the main stage, then the tail.
enum class MainKind { map, reduce, softmax };
template <class A>
struct EpilogueStep {
  MainKind main;
  Chain<A> body;
  ReduceKind reduce = ReduceKind::sum;  // main == reduce
  uint32_t mask = 0;                    // the main stage's axes of Y (split with Y's strides at launch)
  int64_t count = 1;                    // elements per main reduction / softmax row
  Tail<A> tail;                         // main == reduce
  Chain<A> after;                       // point ops after a main softmax
  Shape y_shape;
};

// One eager op (reference strategy).
struct OpStep {
  Op op;
};

template <class A>
using TypedStep = std::variant<FoldStep<A>, EpilogueStep<A>>;
using FusedStep = std::variant<FoldStep<float>, EpilogueStep<float>, FoldStep<double>, EpilogueStep<double>>;
using Step = std::variant<ConvStep, FusedStep, OpStep>;

struct Backend;  // backends/registry.hpp

// Conv outputs (Y) kept between runs: on a GPU an allocation per run costs
// more than the epilogue. Each concurrent run leases its own buffer.
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
  Tensor take(const Shape& shape, DType dtype, Memory memory) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->shape() == shape && it->dtype() == dtype && it->memory() == memory) {
          Tensor t = std::move(*it);
          free_.erase(it);
          return t;
        }
    }
    return Tensor::empty(shape, dtype, memory);
  }
  void give_back(Tensor t) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(t));
  }

  std::mutex mutex_;
  std::vector<Tensor> free_;
};

struct PlanImpl {
  PlanOptions options;
  Strategy strategy;
  DType dtype;
  Shape input_shape, output_shape;
  std::vector<Step> steps;
  std::vector<const Backend*> backends;  // one per step
  std::vector<Tensor> storage;           // operand data and op arrays the steps point into
  std::string description;
  int64_t floor_bytes = 0;
  mutable BufferPool y_buffers;
};

}  // namespace kfuse::detail
