// kfuse::mpi: batch sharding over an MPI communicator (include/kfuse/mpi.hpp).
#include "kfuse/mpi.hpp"

#include <algorithm>
#include <climits>
#include <optional>
#include <vector>

#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>  // Open MPI: MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support
#endif
#endif

#include "core/env.hpp"
#include "kfuse/device.hpp"

namespace kfuse::mpi {

namespace {

const char* kWhere = "kfuse::mpi";

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(code, text, &len);
  fail(ErrorCategory::backend, kWhere, call, " failed: ", std::string(text, static_cast<std::size_t>(len)));
}

int comm_rank(MPI_Comm comm) {
  int r = 0;
  check_mpi(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
  return r;
}

int comm_size(MPI_Comm comm) {
  int s = 0;
  check_mpi(MPI_Comm_size(comm, &s), "MPI_Comm_size");
  return s;
}

// Broadcasts a string of any length from `root` (in chunks of at most INT_MAX bytes).
void bcast_string(std::string& s, int root, MPI_Comm comm) {
  uint64_t n = s.size();
  check_mpi(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm), "MPI_Bcast");
  s.resize(static_cast<std::size_t>(n));
  for (uint64_t off = 0; off < n;) {
    const int chunk = static_cast<int>(std::min<uint64_t>(n - off, INT_MAX));
    check_mpi(MPI_Bcast(&s[static_cast<std::size_t>(off)], chunk, MPI_CHAR, root, comm), "MPI_Bcast");
    off += static_cast<uint64_t>(chunk);
  }
}

// The outcome of one rank's local work: nothing, or the error it threw.
struct Failure {
  ErrorCategory category = ErrorCategory::backend;
  std::string message;
  int rank = -1;  // the rank it names (an agreed error keeps its original rank)
};

// Every rank learns whether any failed; when one did, all throw the lowest
// failing rank's error.
void settle(MPI_Comm comm, const std::optional<Failure>& mine) {
  const int me = comm_rank(comm);
  const int local = mine ? me : INT_MAX;
  int lowest = INT_MAX;
  check_mpi(MPI_Allreduce(&local, &lowest, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  if (lowest == INT_MAX) return;
  int head[2] = {0, 0};
  std::string message;
  if (me == lowest) {
    head[0] = static_cast<int>(mine->category);
    head[1] = mine->rank;
    message = mine->message;
  }
  check_mpi(MPI_Bcast(head, 2, MPI_INT, lowest, comm), "MPI_Bcast");
  bcast_string(message, lowest, comm);
  throw CollectiveError(static_cast<ErrorCategory>(head[0]), message, head[1]);
}

std::optional<Failure> attempt(MPI_Comm comm, const std::function<void()>& f) {
  try {
    f();
    return std::nullopt;
  } catch (const CollectiveError& e) {
    return Failure{e.category(), e.what(), e.failed_rank()};
  } catch (const Error& e) {
    return Failure{e.category(), e.what(), comm_rank(comm)};
  } catch (const std::exception& e) {
    return Failure{ErrorCategory::backend, std::string("internal: ") + e.what(), comm_rank(comm)};
  } catch (...) {
    return Failure{ErrorCategory::backend, "internal: an unknown exception", comm_rank(comm)};
  }
}

// A communicator owned by kfuse (a dup of the caller's, so that kfuse's
// messages never match the caller's); freed unless MPI is already finalised.
struct OwnedComm {
  MPI_Comm comm = MPI_COMM_NULL;
  OwnedComm() = default;
  OwnedComm(const OwnedComm&) = delete;
  OwnedComm& operator=(const OwnedComm&) = delete;
  ~OwnedComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm);
  }
};

MPI_Comm node_comm(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, comm_rank(comm), MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  return node;
}


Shape without_batch(Shape s) {
  s[0] = 1;
  return s;
}

}  // namespace

BatchSlice batch_slice(int64_t n, int rank, int size) {
  if (n < 0) fail(ErrorCategory::invalid_argument, "batch_slice", "the batch size must be non-negative, got ", n);
  if (size < 1 || rank < 0 || rank >= size)
    fail(ErrorCategory::invalid_argument, "batch_slice", "rank ", rank, " is not a rank of ", size);
  const int64_t q = n / size, r = n % size;
  BatchSlice s;
  s.count = q + (rank < r ? 1 : 0);
  s.begin = rank * q + std::min<int64_t>(rank, r);
  return s;
}

int node_local_rank(MPI_Comm comm) {
  OwnedComm node;
  node.comm = node_comm(comm);
  return comm_rank(node.comm);
}

bool cuda_aware() {
  if (const std::optional<bool> env = kfuse::detail::env_flag("KFUSE_MPI_CUDA_AWARE")) return *env;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#elif defined(MPIX_GPU_SUPPORT_CUDA)
  int yes = 0;
  return MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &yes) == MPI_SUCCESS && yes == 1;
#else
  return false;
#endif
}

int select_device(MPI_Comm comm) {
  const int local = node_local_rank(comm);
  agree(comm, [&] { device::select_device(local); });
  return local;
}

void agree(MPI_Comm comm, const std::function<void()>& f) { settle(comm, attempt(comm, f)); }

std::string broadcast_config(MPI_Comm comm, const std::function<std::string()>& produce, int root) {
  const int size = comm_size(comm);
  if (root < 0 || root >= size)
    fail(ErrorCategory::invalid_argument, "broadcast_config", "root ", root, " is not a rank of ", size);
  std::string blob;
  std::optional<Failure> failure;
  if (comm_rank(comm) == root) failure = attempt(comm, [&] { blob = produce(); });
  settle(comm, failure);
  bcast_string(blob, root, comm);
  return blob;
}

std::string broadcast_node_config(MPI_Comm comm, const std::function<std::string()>& produce) {
  OwnedComm node;
  node.comm = node_comm(comm);
  return broadcast_config(node.comm, produce, 0);
}

// ---------------------------------------------------------------------------
// ShardedPlan
// ---------------------------------------------------------------------------

namespace detail {

struct ShardedPlanImpl {
  OwnedComm comm;
  int rank = 0, size = 1, local_rank = 0;
  ShardOptions options;
  std::vector<BatchSlice> slices;
  Shape global_in, global_out, local_in, local_out;
  DType dtype = DType::f32;
  int64_t row_elems = 0;  // elements of one sample's output
  bool to_mpi = false;    // device buffers straight to MPI
  std::optional<Plan> plan;
  int64_t floor_bytes = 0;
  MPI_Datatype row_type = MPI_DATATYPE_NULL;

  ShardedPlanImpl() = default;
  ShardedPlanImpl(const ShardedPlanImpl&) = delete;
  ShardedPlanImpl& operator=(const ShardedPlanImpl&) = delete;
  ~ShardedPlanImpl() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (row_type != MPI_DATATYPE_NULL && !finalized) MPI_Type_free(&row_type);
  }
};

}  // namespace detail

ShardedPlan::ShardedPlan(const Pipeline& global, MPI_Comm comm, ShardOptions options) {
  auto impl = std::make_shared<detail::ShardedPlanImpl>();
  check_mpi(MPI_Comm_dup(comm, &impl->comm.comm), "MPI_Comm_dup");
  MPI_Comm c = impl->comm.comm;
  impl->rank = comm_rank(c);
  impl->size = comm_size(c);
  impl->options = options;
  impl->local_rank = ::kfuse::mpi::node_local_rank(c);
  impl->dtype = global.dtype();
  impl->global_in = global.input_shape();
  impl->global_out = global.output_shape();

  const Memory mem = options.plan.memory;
  if (mem == Memory::cuda && options.select_device) agree(c, [&] { device::select_device(impl->local_rank); });

  agree(c, [&] {
    if (options.output == Output::gather && (options.root < 0 || options.root >= impl->size))
      fail(ErrorCategory::invalid_argument, "ShardedPlan", "root ", options.root, " is not a rank of ", impl->size);
    const int64_t n = impl->global_in[0];
    if (n > INT_MAX)
      fail(ErrorCategory::unsupported, "ShardedPlan", "batch ", n, " exceeds the MPI count limit (2^31-1)");
    for (int r = 0; r < impl->size; ++r) impl->slices.push_back(batch_slice(n, r, impl->size));
    const BatchSlice mine = impl->slices[static_cast<std::size_t>(impl->rank)];
    const Pipeline local = global.with_batch(mine.count);  // throws when ops mix samples
    impl->local_in = local.input_shape();
    impl->local_out = local.output_shape();
    if (impl->global_out.empty() || impl->global_out[0] != n)
      fail(ErrorCategory::unsupported, "ShardedPlan", "the output ", to_string(impl->global_out),
           " does not keep the batch on axis 0");
    impl->row_elems = checked_numel(without_batch(impl->global_out), "ShardedPlan", "output row");
    if (impl->row_elems > INT_MAX)
      fail(ErrorCategory::unsupported, "ShardedPlan", "one sample's output has ", impl->row_elems,
           " elements, past the MPI count limit (2^31-1)");
    if (mine.count > 0) impl->plan.emplace(local, options.plan);
  });

  impl->to_mpi = mem == Memory::cuda && cuda_aware();
  if (impl->row_elems > 0) {
    MPI_Datatype elem = MPI_DATATYPE_NULL;
    check_mpi(MPI_Type_contiguous(static_cast<int>(size_of(impl->dtype)), MPI_BYTE, &elem), "MPI_Type_contiguous");
    check_mpi(MPI_Type_contiguous(static_cast<int>(impl->row_elems), elem, &impl->row_type), "MPI_Type_contiguous");
    MPI_Type_free(&elem);
    check_mpi(MPI_Type_commit(&impl->row_type), "MPI_Type_commit");
  }

  impl->floor_bytes = global.floor_bytes();  // the whole problem
  impl_ = std::move(impl);
}

int ShardedPlan::rank() const { return impl_->rank; }
int ShardedPlan::size() const { return impl_->size; }
int ShardedPlan::node_local_rank() const { return impl_->local_rank; }
BatchSlice ShardedPlan::slice() const { return impl_->slices[static_cast<std::size_t>(impl_->rank)]; }
BatchSlice ShardedPlan::slice_of(int rank) const {
  if (rank < 0 || rank >= impl_->size)
    fail(ErrorCategory::invalid_argument, "ShardedPlan::slice_of", "rank ", rank, " is not a rank of ", impl_->size);
  return impl_->slices[static_cast<std::size_t>(rank)];
}
const Shape& ShardedPlan::global_input_shape() const { return impl_->global_in; }
const Shape& ShardedPlan::global_output_shape() const { return impl_->global_out; }
const Shape& ShardedPlan::local_input_shape() const { return impl_->local_in; }
const Shape& ShardedPlan::local_output_shape() const { return impl_->local_out; }
DType ShardedPlan::dtype() const { return impl_->dtype; }
Memory ShardedPlan::memory() const { return impl_->options.plan.memory; }
const ShardOptions& ShardedPlan::options() const { return impl_->options; }
bool ShardedPlan::device_buffers_to_mpi() const { return impl_->to_mpi; }
const Plan* ShardedPlan::local_plan() const { return impl_->plan ? &*impl_->plan : nullptr; }
int64_t ShardedPlan::floor_bytes() const { return impl_->floor_bytes; }

std::string ShardedPlan::describe() const {
  const detail::ShardedPlanImpl& p = *impl_;
  const BatchSlice s = slice();
  const int64_t n = p.global_in[0];
  std::string d = ::kfuse::detail::cat(
      "distributed: ", p.size, p.size == 1 ? " rank" : " ranks", ", batch ", n, " split ", n / p.size,
      n % p.size ? ::kfuse::detail::cat(" or ", n / p.size + 1) : std::string(), " per rank; rank ", p.rank,
      " (node-local ", p.local_rank, ") rows [", s.begin, ", ", s.end(), ")\n");
  d += p.options.output == Output::gather ? ::kfuse::detail::cat("  output: gathered to rank ", p.options.root,
                                                                 " (MPI_Gatherv)\n")
                                          : std::string("  output: left distributed (each rank keeps its rows)\n");
  if (p.options.plan.memory == Memory::cuda)
    d += p.to_mpi ? "  MPI: CUDA-aware, device buffers go to MPI directly\n"
                  : "  MPI: not CUDA-aware, device buffers are staged through host memory\n";
  if (p.plan) {
    d += p.plan->describe();
    if (!d.empty() && d.back() != '\n') d += '\n';
  } else {
    d += ::kfuse::detail::cat("rank ", p.rank, ": an empty slice, no local plan\n");
  }
  return d;
}

void ShardedPlan::run(const TensorView& x_local, const TensorView& out) const {
  const detail::ShardedPlanImpl& p = *impl_;
  MPI_Comm c = p.comm.comm;
  const BatchSlice mine = slice();
  const Memory mem = p.options.plan.memory;
  const bool gather = p.options.output == Output::gather;
  const bool root = gather && p.rank == p.options.root;
  const std::size_t row_bytes = static_cast<std::size_t>(p.row_elems) * size_of(p.dtype);

  // 1. This rank's rows: straight into the root's slot of `out`, else into
  //    `out` (distributed) or a buffer for the gather.
  Tensor local;  // the rows a non-root rank sends
  agree(c, [&] {
    const char* w = "ShardedPlan::run";
    check_view(x_local, w, "input");
    if (x_local.shape != p.local_in || x_local.dtype != p.dtype || x_local.memory != mem)
      fail(ErrorCategory::shape_mismatch, w, "rank ", p.rank, "'s input is ", to_string(x_local.shape), " ",
           to_string(x_local.dtype), " in ", to_string(x_local.memory), " memory; its rows [", mine.begin, ", ",
           mine.end(), ") of the batch need ", to_string(p.local_in), " ", to_string(p.dtype), " in ",
           to_string(mem), " memory");
    TensorView dst;
    if (!gather || root) {
      const Shape& want = gather ? p.global_out : p.local_out;
      check_view(out, w, "output");
      if (out.shape != want || out.dtype != p.dtype || out.memory != mem || !out.is_contiguous())
        fail(ErrorCategory::shape_mismatch, w, "rank ", p.rank, "'s output is ", to_string(out.shape), " ",
             to_string(out.dtype), " in ", to_string(out.memory), " memory", out.is_contiguous() ? "" : " (strided)",
             "; it must be a contiguous ", to_string(want), " ", to_string(p.dtype), " in ", to_string(mem),
             " memory", gather ? " (the whole gathered output)" : " (this rank's rows)");
      dst = out;
      if (gather) {
        dst.shape = p.local_out;
        dst.strides = contiguous_strides(p.local_out);
        dst.data = static_cast<unsigned char*>(out.data) + static_cast<std::size_t>(mine.begin) * row_bytes;
      }
    } else if (mine.count > 0) {
      local = Tensor::empty(p.local_out, p.dtype, mem);
      dst = local.view();
    }
    if (mine.count > 0) p.plan->run(x_local, dst);
  });
  if (!gather || p.row_elems == 0) return;

  // 2. The gather (row counts and displacements in samples of `row_type`).
  std::vector<int> counts, displs;
  for (const BatchSlice& s : p.slices) {
    counts.push_back(static_cast<int>(s.count));
    displs.push_back(static_cast<int>(s.begin));
  }
  const bool staged = mem == Memory::cuda && !p.to_mpi;
  Tensor send_host, recv_host;
  const void* send = local.defined() ? local.view().data : nullptr;
  void* recv = root ? out.data : nullptr;
  agree(c, [&] {
    if (!staged) return;
    if (root) recv_host = Tensor::empty(p.global_out, p.dtype, Memory::host);
    if (root || local.defined()) {
      // The root stages its own rows too: the whole host buffer goes to the device at once.
      TensorView rows = root ? out : local.view();
      if (root) {
        rows.shape = p.local_out;
        rows.strides = contiguous_strides(p.local_out);
        rows.data = static_cast<unsigned char*>(out.data) + static_cast<std::size_t>(mine.begin) * row_bytes;
      }
      send_host = Tensor::copy_of(rows, Memory::host);
      send = send_host.view().data;
    }
    if (root) recv = recv_host.view().data;
  });
  // The root's rows are in place already, unless they were staged.
  const void* sendbuf = root && !staged ? MPI_IN_PLACE : send;
  check_mpi(MPI_Gatherv(sendbuf, static_cast<int>(mine.count), p.row_type, recv, counts.data(), displs.data(),
                        p.row_type, p.options.root, c),
            "MPI_Gatherv");
  if (root && staged) copy(recv_host.view(), out);
}

Tensor ShardedPlan::run(const TensorView& x_local) const {
  const bool gather = impl_->options.output == Output::gather;
  const bool root = gather && impl_->rank == impl_->options.root;
  Tensor out;
  if (!gather || root) out = Tensor::empty(gather ? impl_->global_out : impl_->local_out, impl_->dtype, memory());
  run(x_local, out.defined() ? out.view() : TensorView());
  return out;
}

}  // namespace kfuse::mpi
