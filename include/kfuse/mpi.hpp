// kfuse::mpi: one pipeline over a batch split across the ranks of an MPI
// communicator, one rank per GPU. Built with -DKFUSE_ENABLE_MPI=ON; link
// kfuse::mpi (it brings MPI::MPI_CXX).
//
//   MPI_Init(&argc, &argv);
//   kfuse::ScopeGuard guard;
//   kfuse::mpi::ShardedPlan plan(pipeline, MPI_COMM_WORLD);   // pipeline: the global batch N
//   const kfuse::mpi::BatchSlice s = plan.slice();              // this rank's rows [s.begin, s.end())
//   kfuse::Tensor x = ...;                                      // those rows of the input: plan.local_input_shape()
//   kfuse::Tensor out = plan.run(x);                            // on the root: the whole [N, ...] output
//
// Each rank takes a contiguous slice of the batch axis (axis 0): with P ranks,
// the first N % P ranks get N / P + 1 samples and the others N / P, so a rank
// may get none (P > N); its part of every collective is then empty. Each rank
// plans its local batch (Pipeline::with_batch), so every sample is computed
// exactly as a single process computes it: on the host backend the gathered
// output equals the single-process output bit for bit. Pipelines that mix
// samples (a reduction or a softmax over axis 0, an operand varying along it)
// are rejected: they would need a cross-rank reduction.
//
// Every function here is collective over the communicator it is given (all
// its ranks must call it, in the same order). Errors are agreed: when any
// rank fails, every rank throws the same CollectiveError, so none is left
// waiting in a later collective.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kfuse/plan.hpp"

namespace kfuse::mpi {

// A rank's contiguous rows [begin, begin + count) of the batch.
struct BatchSlice {
  int64_t begin = 0;
  int64_t count = 0;
  int64_t end() const { return begin + count; }
};

// Rank `rank` of `size`'s slice of a batch of `n`: the first n % size ranks get
// n / size + 1 rows, the others n / size. Not collective.
BatchSlice batch_slice(int64_t n, int rank, int size);

// This process's rank among the ranks of `comm` that share its node
// (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED).
int node_local_rank(MPI_Comm comm);

// Whether the MPI library takes CUDA device pointers: the environment variable
// KFUSE_MPI_CUDA_AWARE=0|1 when set (for libraries that cannot say), else
// MPIX_Query_cuda_support() (Open MPI) or MPIX_GPU_query_support (MPICH) where
// the library has them, else false. Not collective.
bool cuda_aware();

// Makes GPU node_local_rank(comm) % (GPUs on the node) current on the calling
// thread and returns the node-local rank. With a Kokkos built with CUDA, call
// it before kfuse::initialize(): Kokkos binds its device when it starts.
int select_device(MPI_Comm comm);

// The error every rank throws when a collective kfuse::mpi call failed on
// some rank: the category and message of the lowest failing rank.
class CollectiveError : public Error {
 public:
  CollectiveError(ErrorCategory category, const std::string& message, int failed_rank)
      : Error(category, message), failed_rank_(failed_rank) {}
  int failed_rank() const noexcept { return failed_rank_; }

 private:
  int failed_rank_;
};

// Runs `f` on every rank of `comm`; when it throws on any rank, every rank
// throws the CollectiveError of the lowest failing rank. For wrapping local
// work that precedes a collective (reading a rank's slice of the input, ...).
void agree(MPI_Comm comm, const std::function<void()>& f);

// ---------------------------------------------------------------------------
// Tuning: the one place where the tuner's chosen configs are shared.
//
// The tuner (src/tuning, with its JSON cache) must run on one rank per node
// only: every rank tuning, or reading and writing the cache, at once would
// race on the cache file and could pick different configs on different ranks.
// Wrap it in broadcast_node_config: `produce` (tune, or read the cache, and
// serialise the chosen configs) runs on node-local rank 0 only and every rank
// of the node gets its result. When the cache sits on a file system shared by
// the nodes, use broadcast_config with one root for the whole communicator.
// A throw from `produce` is rethrown on every rank as a CollectiveError.
// ---------------------------------------------------------------------------

// Runs `produce` on node-local rank 0 of each node of `comm` and broadcasts
// its string to the other ranks of that node.
std::string broadcast_node_config(MPI_Comm comm, const std::function<std::string()>& produce);
// Runs `produce` on rank `root` of `comm` and broadcasts its string to every rank.
std::string broadcast_config(MPI_Comm comm, const std::function<std::string()>& produce, int root = 0);

// ---------------------------------------------------------------------------
// Batch sharding
// ---------------------------------------------------------------------------

enum class Output {
  gather,       // the whole [N, ...] output on the root (MPI_Gatherv)
  distributed,  // each rank keeps its own rows
};

struct ShardOptions {
  PlanOptions plan;          // each rank's local plan; plan.memory is where x and out live
  Output output = Output::gather;
  int root = 0;              // Output::gather: the rank that receives the output
  bool select_device = true; // memory cuda: select_device(comm) when the plan is built
};

namespace detail {
struct ShardedPlanImpl;
}

class ShardedPlan {
 public:
  // `global`: the pipeline on the whole batch (axis 0 of its input). Collective.
  ShardedPlan(const Pipeline& global, MPI_Comm comm, ShardOptions options = {});

  int rank() const;
  int size() const;
  int node_local_rank() const;
  BatchSlice slice() const;               // this rank's rows of the batch
  BatchSlice slice_of(int rank) const;
  const Shape& global_input_shape() const;
  const Shape& global_output_shape() const;
  const Shape& local_input_shape() const;   // [slice().count, ...]
  const Shape& local_output_shape() const;
  DType dtype() const;
  Memory memory() const;
  const ShardOptions& options() const;
  // The device buffers go to MPI as they are (a CUDA-aware MPI), else through
  // host copies. Always false for host memory.
  bool device_buffers_to_mpi() const;
  // This rank's plan; nullptr when its slice is empty.
  const Plan* local_plan() const;
  // The split, the output mode, the MPI transport, then this rank's plan.
  std::string describe() const;
  // Fewest bytes the whole (global) pipeline must move.
  int64_t floor_bytes() const;

  // Collective. `x_local`: this rank's rows, local_input_shape(), in memory();
  // may be strided. `out`: Output::gather: on the root a contiguous
  // global_output_shape() tensor in memory(), ignored elsewhere (pass {});
  // Output::distributed: this rank's contiguous local_output_shape() rows.
  void run(const TensorView& x_local, const TensorView& out) const;
  // The same into a new tensor: the whole output on the root (an undefined
  // Tensor on the other ranks) or this rank's rows.
  Tensor run(const TensorView& x_local) const;

 private:
  std::shared_ptr<const detail::ShardedPlanImpl> impl_;
};

}  // namespace kfuse::mpi
