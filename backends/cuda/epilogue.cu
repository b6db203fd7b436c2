// The fused epilogue on CUDA: one read of Y, one write of the output, with
// the same semantics as run_epilogue in backends/kokkos/backend.cpp. Y and
// the output are of the pipeline's dtype T (float32, float64, or a half type
// whose values are computed in float: A), the reduced intermediates in A.
//
//  map      a grid-stride stream over Y (16-byte loads and stores when Y is
//           contiguous and both ends are aligned), the body chain per element.
//  reduce   reduced axes trailing and contiguous ("rows"): a warp per output
//           for short rows, else a block per output (several blocks per
//           output when there are few, joined by the last one to finish);
//           reduced axes elsewhere ("columns", e.g. logsumexp over C): a
//           thread per output, loads coalesced across threads.
//           Then the tail on the R x K intermediate (a second kernel; a
//           thread, a warp or a block per row by K), unless there is none.
//  softmax  a warp/block per row when the axis is contiguous, else a thread
//           per row; the row is read twice (the second read mostly from L2).
#include <algorithm>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"

namespace kfuse::detail::cuda {

namespace {

constexpr int kThreads = 256;  // the most threads per block; the tuner picks 128 or 256 (the tail: 256)

// ---- map ------------------------------------------------------------------------

template <class T, class A>
struct MapArgs {
  const T* y;
  T* out;
  int64_t n;
  Indexer ix;  // Y's strides (mode 2)
  Chain<A> body;
  int mode;    // 0: contiguous and aligned (16-byte vectors), 1: contiguous, 2: strided
};

// N adjacent 16-byte vectors from vector index v: loaded, the chain run once
// on all N x kVec values (its fields, and an operand the same for all of
// them, read once), stored.
template <int N, class T, class A>
__device__ __forceinline__ void map_vectors(const MapArgs<T, A>& a, int64_t v) {
  constexpr int VEC = Vec16<T>::kVec;
  Vec16<T> d[N];
#pragma unroll
  for (int u = 0; u < N; ++u) d[u] = load_stream(a.y + (v + u) * VEC);
  A e[N * VEC];
#pragma unroll
  for (int u = 0; u < N; ++u)
#pragma unroll
    for (int k = 0; k < VEC; ++k) e[u * VEC + k] = to_acc<A>(d[u].get(k));
  apply_chain(a.body.ops, a.body.n, e, v * VEC, 1, 0, 0);
#pragma unroll
  for (int u = 0; u < N; ++u) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) d[u].set(k, to_elem<T>(e[u * VEC + k]));
    store16(a.out + (v + u) * VEC, d[u]);
  }
}

template <class T, class A>
__global__ void __launch_bounds__(kThreads, 1) epi_map(const MapArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec;
  constexpr int U = 4;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  if (a.mode == 0) {
    // Each thread takes U adjacent vectors at a time; the last < U one by one.
    const int64_t nvec = a.n / VEC;
    for (int64_t v = tid * U; v + U <= nvec; v += U * nthreads) map_vectors<U>(a, v);
    for (int64_t v = nvec / U * U + tid; v < nvec; v += nthreads) map_vectors<1>(a, v);
    for (int64_t i = nvec * VEC + tid; i < a.n; i += nthreads)
      a.out[i] = to_elem<T>(apply_chain(a.body.ops, a.body.n, to_acc<A>(a.y[i]), i, int64_t(0)));
  } else {
    for (int64_t i = tid; i < a.n; i += nthreads) {
      const A v = to_acc<A>(a.mode == 1 ? a.y[i] : a.y[a.ix.offset(i)]);
      a.out[i] = to_elem<T>(apply_chain(a.body.ops, a.body.n, v, i, int64_t(0)));
    }
  }
}

// ---- reduce: rows (reduced axes trailing and contiguous, or any, by a group) ------

template <class T, class A>
struct ReduceArgs {
  const T* y;
  Indexer outer, inner;  // kept / reduced axes of Y
  Chain<A> body;
  ReduceKind kind;
  int64_t count;    // elements per output
  int64_t outputs;  // R * K
  int64_t stride;   // columns kernel: the reduced axes as one stride (when not generic)
  int64_t parts, part_len;  // rows kernel, block mode: blocks per output
  A* z;                     // [outputs]: the intermediate the tail reads; null: write `out`
  T* out;                   // [outputs]: the stage's output when there is no tail
  ReduceAcc<A>* partials;   // [outputs * parts] when parts > 1
  unsigned* counters;       // [outputs], zero
};

template <class T, class A>
__device__ __forceinline__ void push(const ReduceArgs<T, A>& a, ReduceAcc<A>& acc, T v, int64_t o, int64_t k) {
  reduce_push(a.kind, acc, apply_chain(a.body.ops, a.body.n, to_acc<A>(v), o, k));
}

template <class T, class A>
__device__ __forceinline__ void put(const ReduceArgs<T, A>& a, int64_t o, const ReduceAcc<A>& r) {
  const A v = reduce_finish(a.kind, r, a.count);
  if (a.z) a.z[o] = v;
  else a.out[o] = to_elem<T>(v);
}

// CONTIG: the reduced elements of an output are base[0 .. count). WARP: a warp
// per output (no block barriers), else a block per (output, part).
template <class T, class A, bool CONTIG, bool WARP>
__global__ void __launch_bounds__(kThreads, 1) epi_reduce_rows(const ReduceArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec;
  __shared__ ReduceAcc<A> wred[33];
  const int lane = WARP ? (threadIdx.x & 31) : threadIdx.x;
  const int width = WARP ? 32 : blockDim.x;
  int64_t o, part = 0;
  if (WARP) {
    o = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (o >= a.outputs) return;  // whole warps leave; no block barrier below in warp mode
  } else {
    o = blockIdx.x / a.parts;
    part = blockIdx.x - o * a.parts;
  }
  const int64_t k0 = part * a.part_len, k1 = min(a.count, k0 + a.part_len);
  const T* base = a.y + a.outer.offset(o);
  ReduceAcc<A> acc[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = reduce_init<A>(a.kind);

  if (CONTIG) {
    const T* p = base + k0;
    const int64_t n = k1 - k0;
    const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) & 15u) / sizeof(T));
    const int64_t head = min(n, mis ? VEC - mis : int64_t(0));
    const int64_t nvec = (n - head) / VEC, tail0 = head + nvec * VEC;
    for (int64_t e = lane; e < head + (n - tail0); e += width) {
      const int64_t ee = e < head ? e : tail0 + (e - head);
      push(a, acc[0], p[ee], o, k0 + ee);
    }
    const T* vp = p + head;
    constexpr int U = 4;  // loads in flight per thread
    int64_t v = lane;
    const auto consume = [&](const Vec16<T>& d, int64_t kfirst) {
      A e[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) e[k] = to_acc<A>(d.get(k));
      apply_chain(a.body.ops, a.body.n, e, o, 0, kfirst, 1);
#pragma unroll
      for (int k = 0; k < VEC; ++k) reduce_push(a.kind, acc[k], e[k]);
    };
    for (; v + (U - 1) * width < nvec; v += U * width) {
      Vec16<T> d[U];
#pragma unroll
      for (int u = 0; u < U; ++u) d[u] = load_stream(vp + (v + u * width) * VEC);
#pragma unroll
      for (int u = 0; u < U; ++u) consume(d[u], k0 + head + (v + u * width) * VEC);
    }
    for (; v < nvec; v += width) consume(load_stream(vp + v * VEC), k0 + head + v * VEC);
  } else {
    for (int64_t k = k0 + lane; k < k1; k += width) push(a, acc[0], base[a.inner.offset(k)], o, k);
  }
#pragma unroll
  for (int k = 1; k < VEC; ++k) reduce_join(a.kind, acc[0], acc[k]);
  const ReduceAcc<A> r = WARP ? warp_join(a.kind, acc[0]) : block_join(a.kind, acc[0], wred);
  if (WARP || a.parts == 1) {
    if (lane == 0) put(a, o, r);
    return;
  }
  // Several blocks per output: the last to finish joins the parts in order.
  if (threadIdx.x == 0) {
    a.partials[o * a.parts + part] = r;
    __threadfence();
    if (atomicAdd(&a.counters[o], 1u) == unsigned(a.parts - 1)) {
      __threadfence();
      ReduceAcc<A> t = reduce_init<A>(a.kind);
      for (int64_t q = 0; q < a.parts; ++q) {
        const ReduceAcc<A>* pp = a.partials + o * a.parts + q;
        const ReduceAcc<A> pq{__ldcg(&pp->a), __ldcg(&pp->b)};
        reduce_join(a.kind, t, pq);
      }
      put(a, o, t);
      a.counters[o] = 0u;
    }
  }
}

// A thread per output: for reduced axes that are not contiguous (e.g. C of
// NCHW); consecutive outputs are adjacent in memory, so loads coalesce.
// MODE 0: the reduced axes as one stride and no point ops (the lean kernel:
// fewer registers, more loads in flight); 1: one stride; 2: any layout.
template <class T, class A, int MODE>
__global__ void __launch_bounds__(kThreads, 1) epi_reduce_cols(const ReduceArgs<T, A> a) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < a.outputs; o += nthreads) {
    const T* base = a.y + a.outer.offset(o);
    ReduceAcc<A> acc0 = reduce_init<A>(a.kind), acc1 = acc0;
    int64_t k = 0;
    if (MODE < 2) {
      // Four values per call: eight made reductions over C (an operand that
      // varies along k) 1.7x slower on the H200 (2026-12-01, run 17).
      constexpr int U = 4;
      for (; k + U - 1 < a.count; k += U) {
        A v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) v[u] = to_acc<A>(base[(k + u) * a.stride]);
        if (MODE == 1) apply_chain(a.body.ops, a.body.n, v, o, 0, k, 1);  // the chain's fields read once for the U
#pragma unroll
        for (int u = 0; u < U; u += 2) {
          reduce_push(a.kind, acc0, v[u]);
          reduce_push(a.kind, acc1, v[u + 1]);
        }
      }
      for (; k < a.count; ++k) push(a, acc0, base[k * a.stride], o, k);
    } else {
      for (; k < a.count; ++k) push(a, acc0, base[a.inner.offset(k)], o, k);
    }
    reduce_join(a.kind, acc0, acc1);
    put(a, o, acc0);
  }
}

// ---- tail on the R x K intermediate --------------------------------------------------

template <class T, class A>
struct TailArgs {
  A* z;  // [R, K], modified in place
  T* out;
  Tail<A> tail;
};

// MODE 0: a thread per row, 1: a warp per row, 2: a block per row.
template <class T, class A, int MODE>
__global__ void __launch_bounds__(kThreads, 1) epi_tail(const TailArgs<T, A> a) {
  __shared__ ReduceAcc<A> wred[33];
  const int64_t K = a.tail.K;
  if (MODE == 0) {
    const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (r >= a.tail.R) return;
    A* row = a.z + r * K;
    const int64_t kout = run_tail(ThreadGroup<A>{}, a.tail.ops, a.tail.n, row, r, K);
    for (int64_t k = 0; k < kout; ++k) a.out[r * kout + k] = to_elem<T>(row[k]);
  } else if (MODE == 1) {
    const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (r >= a.tail.R) return;
    A* row = a.z + r * K;
    const int64_t kout = run_tail(WarpGroup<A>{}, a.tail.ops, a.tail.n, row, r, K);
    for (int64_t k = threadIdx.x & 31; k < kout; k += 32) a.out[r * kout + k] = to_elem<T>(row[k]);
  } else {
    for (int64_t r = blockIdx.x; r < a.tail.R; r += gridDim.x) {
      A* row = a.z + r * K;
      const int64_t kout = run_tail(BlockGroup<A>{wred}, a.tail.ops, a.tail.n, row, r, K);
      for (int64_t k = threadIdx.x; k < kout; k += blockDim.x) a.out[r * kout + k] = to_elem<T>(row[k]);
      __syncthreads();
    }
  }
}

// ---- softmax ------------------------------------------------------------------------

template <class T, class A>
struct SoftmaxArgs {
  const T* y;
  T* out;
  Indexer outer, out_outer;  // kept axes of Y and of the (contiguous) output
  int64_t ys, os;            // the softmax axis' stride in Y and in the output
  int64_t count, rows;
  Chain<A> body, after;
};

template <class T, class A>
__device__ __forceinline__ A soft_in(const SoftmaxArgs<T, A>& a, const T* base, int64_t o, int64_t j) {
  return apply_chain(a.body.ops, a.body.n, to_acc<A>(base[j * a.ys]), o, j);
}
template <class T, class A>
__device__ __forceinline__ void soft_out(const SoftmaxArgs<T, A>& a, T* dst, const ReduceAcc<A>& acc, A v, int64_t o,
                                         int64_t j) {
  dst[j * a.os] = to_elem<T>(apply_chain(a.after.ops, a.after.n, softmax_value(acc, v), o, j));
}

// A warp (WARP) or a block per row: the axis is contiguous in Y. A warp
// keeps rows of up to 32 * kSoftmaxHold values in registers (one read of Y);
// longer rows are read twice, the second time mostly from L2.
constexpr int kSoftmaxHold = 8;
template <class T, class A, bool WARP>
__global__ void __launch_bounds__(kThreads, 1) epi_softmax_rows(const SoftmaxArgs<T, A> a) {
  __shared__ ReduceAcc<A> wred[33];
  const int lane = WARP ? (threadIdx.x & 31) : threadIdx.x;
  const int width = WARP ? 32 : blockDim.x;
  const int64_t per_block = WARP ? blockDim.x / 32 : 1;
  for (int64_t first = int64_t(blockIdx.x) * per_block; first < a.rows; first += int64_t(gridDim.x) * per_block) {
    const int64_t o = first + (WARP ? threadIdx.x >> 5 : 0);
    if (WARP && o >= a.rows) return;  // whole warp; later rows of this warp are further out
    const T* base = a.y + a.outer.offset(o);
    T* dst = a.out + a.out_outer.offset(o);
    if (WARP && a.count <= 32 * kSoftmaxHold) {
      // The row in registers: one read, the max, then the sum of exp(v - max)
      // (softmax_value's state), then the writes.
      // The chains run on all kSoftmaxHold values at once (value t at j =
      // lane + 32 t; an operand constant along the row is loaded once); the
      // values past the row are computed on and dropped.
      A v[kSoftmaxHold];
      ReduceAcc<A> acc{-inf<A>(), A(0)};
#pragma unroll
      for (int t = 0; t < kSoftmaxHold; ++t) {
        const int64_t j = lane + 32 * t;
        v[t] = j < a.count ? to_acc<A>(base[j * a.ys]) : A(0);
      }
      apply_chain(a.body.ops, a.body.n, v, o, 0, lane, 32);
#pragma unroll
      for (int t = 0; t < kSoftmaxHold; ++t) {
        if (lane + 32 * t >= a.count) v[t] = -inf<A>();
        acc.a = nan_max(acc.a, v[t]);
      }
      acc = warp_join(ReduceKind::max, acc);
#pragma unroll
      for (int t = 0; t < kSoftmaxHold; ++t)
        if (lane + 32 * t < a.count) acc.b += std::exp(v[t] - acc.a);
      acc.b = warp_sum(acc.b);
#pragma unroll
      for (int t = 0; t < kSoftmaxHold; ++t) v[t] = softmax_value(acc, v[t]);
      apply_chain(a.after.ops, a.after.n, v, o, 0, lane, 32);
#pragma unroll
      for (int t = 0; t < kSoftmaxHold; ++t)
        if (lane + 32 * t < a.count) dst[(lane + 32 * t) * a.os] = to_elem<T>(v[t]);
      continue;
    }
    ReduceAcc<A> acc = reduce_init<A>(ReduceKind::logsumexp);
    for (int64_t j = lane; j < a.count; j += width) reduce_push(ReduceKind::logsumexp, acc, soft_in(a, base, o, j));
    acc = WARP ? warp_join(ReduceKind::logsumexp, acc) : block_join(ReduceKind::logsumexp, acc, wred);
    for (int64_t j = lane; j < a.count; j += width) soft_out(a, dst, acc, soft_in(a, base, o, j), o, j);
  }
}

// A thread per row (the axis is strided; neighbouring rows are adjacent).
template <class T, class A>
__global__ void __launch_bounds__(kThreads, 1) epi_softmax_cols(const SoftmaxArgs<T, A> a) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < a.rows; o += nthreads) {
    const T* base = a.y + a.outer.offset(o);
    T* dst = a.out + a.out_outer.offset(o);
    // Four values at a time through the chains (their fields read once for the four).
    constexpr int U = 4;
    const int64_t full = a.count / U * U;
    const auto load = [&](int64_t j, A (&v)[U]) {
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = to_acc<A>(base[(j + u) * a.ys]);
      apply_chain(a.body.ops, a.body.n, v, o, 0, j, 1);
    };
    ReduceAcc<A> acc = reduce_init<A>(ReduceKind::logsumexp);
    for (int64_t j = 0; j < full; j += U) {
      A v[U];
      load(j, v);
#pragma unroll
      for (int u = 0; u < U; ++u) reduce_push(ReduceKind::logsumexp, acc, v[u]);
    }
    for (int64_t j = full; j < a.count; ++j) reduce_push(ReduceKind::logsumexp, acc, soft_in(a, base, o, j));
    for (int64_t j = 0; j < full; j += U) {
      A v[U];
      load(j, v);
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = softmax_value(acc, v[u]);
      apply_chain(a.after.ops, a.after.n, v, o, 0, j, 1);
#pragma unroll
      for (int u = 0; u < U; ++u) dst[(j + u) * a.os] = to_elem<T>(v[u]);
    }
    for (int64_t j = full; j < a.count; ++j) soft_out(a, dst, acc, soft_in(a, base, o, j), o, j);
  }
}

// ---- Host side ----------------------------------------------------------------------

// The single stride of an Indexer with at most one axis of extent > 1 (false otherwise).
bool single_stride(const Indexer& ix, int64_t& stride) {
  stride = 1;
  int axes = 0;
  for (int d = 0; d < ix.rank; ++d)
    if (ix.size[d] != 1) stride = ix.stride[d], ++axes;
  return axes <= 1;
}

// Whether two views may share bytes (the spans their strides reach).
bool overlaps(const TensorView& a, const TensorView& b) {
  const auto span = [](const TensorView& v) {
    int64_t lo = 0, hi = 0;
    for (int d = 0; d < v.rank(); ++d) {
      if (v.shape[d] == 0) return std::pair<uintptr_t, uintptr_t>(0, 0);
      const int64_t reach = (v.shape[d] - 1) * v.strides[d];
      (reach < 0 ? lo : hi) += reach;
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(v.data);
    const int64_t es = int64_t(size_of(v.dtype));
    return std::pair<uintptr_t, uintptr_t>(base + lo * es, base + (hi + 1) * es);
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1;
}

// Launches `kernel` through run(threads) with the tuner's 4 or 8 warps. A
// candidate is timed on these very arguments, which only works when the kernel
// does not write what it reads (`measurable`: the output does not overlap Y).
template <class Kernel, class Run>
void tuned_launch(Kernel kernel, const char* name, std::string shape, bool measurable, const Run& run) {
  const auto measure = [&](const tuning::LaunchConfig& c) { return time_launches([&] { run(c.threads()); }); };
  run(tuned(kernel, name, std::move(shape), measurable, measure).threads());
}

template <class T, class A>
void epilogue(const EpilogueStep<A>& e, const TensorView& y, const TensorView& out) {
  Indexer outer, inner;
  split_axes(y.shape, y.strides, e.mask, outer, inner);
  const T* yp = static_cast<const T*>(y.data);
  T* op = static_cast<T*>(out.data);
  const int64_t n = y.numel();
  const int sms = device_info().limits.sm_count;
  const bool measurable = !overlaps(y, out);
  const std::string dtype = to_string(y.dtype);
  Workspace& ws = workspace();
  try {
    if (e.main == MainKind::map) {
      if (n > 0) {
        MapArgs<T, A> a{yp, op, n, outer, e.body, 2};
        if (y.is_contiguous()) a.mode = aligned16(yp) && aligned16(op) ? 0 : 1;
        const char* layout = a.mode == 0 ? "vec16" : a.mode == 1 ? "contiguous" : "strided";
        tuned_launch(epi_map<T, A>, "cuda::epilogue_map", tuning::shape_class({{"n", n}}) + "," + dtype + "," + layout,
                     measurable, [&](int threads) {
                       const int64_t per_block = int64_t(threads) * (a.mode == 0 ? Vec16<T>::kVec * 4 : 4);
                       const int64_t resident = int64_t(occupancy(epi_map<T, A>, threads, 0)) * sms;
                       const int64_t blocks = std::min<int64_t>((n + per_block - 1) / per_block, resident * 4);
                       launch("kfuse::cuda::epilogue_map", epi_map<T, A>, dim3(grid_of(blocks)), dim3(threads), 0, false,
                              a);
                     });
      }
    } else if (e.main == MainKind::reduce) {
      const Tail<A>& tail = e.tail;
      const int64_t outputs = tail.R * tail.K;
      const bool direct = tail.n == 0 && tail.K_out == tail.K;
      ReduceArgs<T, A> a{};
      a.y = yp;
      a.outer = outer;
      a.inner = inner;
      a.body = e.body;
      a.kind = e.reduce;
      a.count = e.count;
      a.outputs = outputs;
      if (outputs > 0) {
        const bool contig = inner.is_dense();
        int64_t stride = 1;
        const bool one_axis = single_stride(inner, stride);
        a.stride = stride;
        // Columns (a thread per output) when outputs alone fill the device.
        const bool cols = !contig && outputs >= int64_t(sms) * 1024;
        const bool warp = !cols && e.count < 2048;
        const auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
        const std::size_t z_bytes = direct ? 0 : align(std::size_t(outputs) * sizeof(A));
        // Blocks per output (a block per output: they follow the resident
        // blocks at `threads`), then the scratch they need.
        const auto prepare = [&](int threads) {
          a.parts = 1;
          a.part_len = e.count;
          if (!cols && !warp) {
            const int64_t resident = int64_t(occupancy(epi_reduce_rows<T, A, true, false>, threads, 0)) * sms;
            const int64_t want = (2 * resident + outputs - 1) / outputs;
            const int64_t most = (e.count + 8191) / 8192;  // parts of at least 8K elements
            a.parts = std::max<int64_t>(1, std::min(want, most));
            const int64_t vec = Vec16<T>::kVec;
            a.part_len = ((e.count + a.parts - 1) / a.parts + vec - 1) / vec * vec;
            a.parts = (e.count + a.part_len - 1) / a.part_len;
          }
          const std::size_t p_bytes = a.parts > 1 ? align(std::size_t(outputs * a.parts) * sizeof(ReduceAcc<A>)) : 0;
          char* base = static_cast<char*>(ws.scratch(std::max<std::size_t>(z_bytes + p_bytes, 1)));
          a.z = direct ? nullptr : reinterpret_cast<A*>(base);
          a.out = op;
          a.partials = reinterpret_cast<ReduceAcc<A>*>(base + z_bytes);
          a.counters = a.parts > 1 ? ws.counters(std::size_t(outputs)) : nullptr;
        };
        // (Not e.count in the braces below: nvcc 13 parenthesises it into a statement expression.)
        const int64_t count = e.count;
        const std::string shape = tuning::shape_class({{"outputs", outputs}, {"count", count}}) + "," + dtype + "," +
                                  (contig ? "contiguous" : one_axis ? "strided" : "generic");
        // `blocks(threads)` after prepare(threads).
        const auto go = [&](auto kernel, const char* name, const char* launch_name, const auto& blocks) {
          tuned_launch(kernel, name, shape, measurable, [&](int threads) {
            prepare(threads);
            launch(launch_name, kernel, dim3(grid_of(blocks(threads))), dim3(threads), 0, false, a);
          });
        };
        if (cols) {
          const auto blocks = [&](int threads) { return (outputs + threads - 1) / threads; };
          if (!one_axis)
            go(epi_reduce_cols<T, A, 2>, "cuda::epilogue_reduce_cols", "kfuse::cuda::epilogue_reduce_cols", blocks);
          else if (e.body.n == 0)
            go(epi_reduce_cols<T, A, 0>, "cuda::epilogue_reduce_cols", "kfuse::cuda::epilogue_reduce_cols", blocks);
          else
            go(epi_reduce_cols<T, A, 1>, "cuda::epilogue_reduce_cols", "kfuse::cuda::epilogue_reduce_cols", blocks);
        } else if (warp) {
          const auto blocks = [&](int threads) { return (outputs + threads / 32 - 1) / (threads / 32); };
          if (contig)
            go(epi_reduce_rows<T, A, true, true>, "cuda::epilogue_reduce_rows_warp", "kfuse::cuda::epilogue_reduce_rows",
               blocks);
          else
            go(epi_reduce_rows<T, A, false, true>, "cuda::epilogue_reduce_rows_warp", "kfuse::cuda::epilogue_reduce_rows",
               blocks);
        } else {
          const auto blocks = [&](int) {
            const int64_t b = outputs * a.parts;
            if (b > 0x7fffffff)
              fail(ErrorCategory::unsupported, "epilogue (cuda)", outputs, " outputs x ", a.parts, " parts");
            return b;
          };
          if (contig)
            go(epi_reduce_rows<T, A, true, false>, "cuda::epilogue_reduce_rows", "kfuse::cuda::epilogue_reduce_rows",
               blocks);
          else
            go(epi_reduce_rows<T, A, false, false>, "cuda::epilogue_reduce_rows", "kfuse::cuda::epilogue_reduce_rows",
               blocks);
        }
        // The tail rewrites its rows in place (a re-run would not be the same
        // run), so it is not measured: kThreads per block.
        if (!direct && tail.R > 0) {
          TailArgs<T, A> t{a.z, op, tail};
          if (tail.K <= 4)
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 0>, dim3(grid_of((tail.R + kThreads - 1) / kThreads)), dim3(kThreads), 0, false, t);
          else if (tail.K <= 1024)
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 1>, dim3(grid_of((tail.R + kThreads / 32 - 1) / (kThreads / 32))), dim3(kThreads), 0, false, t);
          else
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 2>, dim3(grid_of(std::min<int64_t>(tail.R, int64_t(sms) * 8))), dim3(kThreads), 0, false, t);
        }
      }
    } else {
      Indexer out_outer, out_inner;
      split_axes(y.shape, contiguous_strides(y.shape), e.mask, out_outer, out_inner);
      const int64_t count = e.count;
      const int64_t rows = count > 0 ? n / count : 0;
      if (rows > 0 && count > 0) {
        SoftmaxArgs<T, A> a{yp, op, outer, out_outer, 0, 0, count, rows, e.body, e.after};
        int64_t ys = 1, os = 1;
        single_stride(inner, ys);
        single_stride(out_inner, os);
        a.ys = ys;
        a.os = os;
        const std::string shape = tuning::shape_class({{"rows", rows}, {"count", count}}) + "," + dtype + "," +
                                  (ys == 1 ? "contiguous" : "strided");
        const bool cols = ys != 1 && count > 1 && rows >= int64_t(sms) * 1024;
        if (cols) {
          tuned_launch(epi_softmax_cols<T, A>, "cuda::epilogue_softmax_cols", shape, measurable, [&](int threads) {
            launch("kfuse::cuda::epilogue_softmax_cols", epi_softmax_cols<T, A>,
                   dim3(grid_of((rows + threads - 1) / threads)), dim3(threads), 0, false, a);
          });
        } else if (count <= 1024) {
          tuned_launch(epi_softmax_rows<T, A, true>, "cuda::epilogue_softmax_rows_warp", shape, measurable,
                       [&](int threads) {
                         const int64_t blocks =
                             std::min<int64_t>((rows + threads / 32 - 1) / (threads / 32), int64_t(sms) * 64);
                         launch("kfuse::cuda::epilogue_softmax_rows", epi_softmax_rows<T, A, true>, dim3(grid_of(blocks)),
                                dim3(threads), 0, false, a);
                       });
        } else {
          tuned_launch(epi_softmax_rows<T, A, false>, "cuda::epilogue_softmax_rows", shape, measurable, [&](int threads) {
            const int64_t blocks = std::min<int64_t>(rows, int64_t(sms) * 16);
            launch("kfuse::cuda::epilogue_softmax_rows", epi_softmax_rows<T, A, false>, dim3(grid_of(blocks)),
                   dim3(threads), 0, false, a);
          });
        }
      }
    }
  } catch (...) {
    ws.mark_dirty();
    throw;
  }
}

// The kernel of each stage and its launch shape follow from Y's strides,
// which only the run knows (Y is x itself when there is no conv): a few
// integer operations per run, then the launches.
template <class T, class A>
class PreparedEpilogue final : public PreparedStep {
 public:
  explicit PreparedEpilogue(const EpilogueStep<A>& step) : step_(step) {}
  void run(const TensorView& y, const TensorView& out) const override { epilogue<T>(step_, y, out); }
  std::string describe() const override {
    switch (step_.main) {
      case MainKind::map: return "epilogue_map";
      case MainKind::reduce:
        return cat("epilogue_reduce_rows or _cols by Y's layout", step_.tail.n ? ", then epilogue_tail" : "");
      default: return "epilogue_softmax_rows or _cols by Y's layout";
    }
  }

 private:
  EpilogueStep<A> step_;
};

}  // namespace

Preparation prepare_epilogue(const EpilogueStep<float>& step, DType dtype) {
  switch (dtype) {
    case DType::f32: return Preparation::of<PreparedEpilogue<float, float>>(step);
    case DType::bf16: return Preparation::of<PreparedEpilogue<__nv_bfloat16, float>>(step);
    case DType::f16: return Preparation::of<PreparedEpilogue<__half, float>>(step);
    default: return Preparation::refuse(cat("a float32-accumulating epilogue does not read ", to_string(dtype)));
  }
}

Preparation prepare_epilogue(const EpilogueStep<double>& step, DType dtype) {
  if (dtype != DType::f64) return Preparation::refuse(cat("a float64 epilogue does not read ", to_string(dtype)));
  return Preparation::of<PreparedEpilogue<double, double>>(step);
}

}  // namespace kfuse::detail::cuda
