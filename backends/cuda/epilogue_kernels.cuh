// The fused epilogue's kernels (backends/cuda/epilogue.cu launches them):
// built into the library with the point chains interpreted, and compiled
// again by NVRTC at plan time with each plan's chains as straight-line code
// (jit.cpp). Y and the output are of the pipeline's dtype T (float32, float64,
// or a half type whose values are computed in float: A), the reduced
// intermediates in A.
//
//  map      a grid-stride stream over Y (16-byte loads and stores when Y is
//           contiguous and both ends are aligned), the body chain per element;
//           Y channels-last to the NCHW output through shared-memory tiles.
//           Reductions walk their outputs in Y's memory order (`order`), so
//           neighbouring threads read neighbouring elements of any layout.
//  reduce   reduced axes trailing and contiguous ("rows"): a warp per output
//           for short rows, else a block per output (several blocks per
//           output when there are few, joined by the last one to finish);
//           reduced axes elsewhere ("columns", e.g. logsumexp over C): a
//           thread per output, loads coalesced across threads.
//           Point ops after the reduction run on each output as it is
//           stored (`after`); a reduction or softmax over the outputs'
//           trailing axes (the tail) runs on the R x K intermediate (a
//           second kernel; a thread, a warp or a block per row by K).
//  softmax  a warp/block per row when the axis is contiguous, else rows
//           across: a block's warps holding 32 rows of up to 256 values
//           between them, or a thread per row; a row is read twice (the
//           second read mostly from L2), or once when held; over C of a
//           channels-last Y, a warp per pixel and the output written through
//           shared memory.
//
// `Ch` runs the chains (device.cuh: InterpretedChains, or a plan's compiled
// PlanChains).
#pragma once

#include "backends/cuda/device.cuh"

// Blocks of kThreads each streaming kernel is compiled to fit per SM (its
// register budget); plan-time compilation may set it per kernel.
#ifndef KFUSE_EPI_MIN_BLOCKS
#define KFUSE_EPI_MIN_BLOCKS 1
#endif

namespace kfuse::detail::cuda::epi {

// The body chain on one value at (i, j).
template <class Ch, class A>
__device__ __forceinline__ A body1(const Chain<A>& c, A v, int64_t i, int64_t j) {
  A w[1] = {v};
  Ch::body(c, w, i, 0, j, 0);
  return w[0];
}

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
               // (epi_map_nhwc: 0 vectors, 1 element by element)
  int64_t channels, plane;  // epi_map_nhwc: Y [N, plane, channels] written [N, channels, plane]
};

// U 16-byte vectors of a thread, `step` vectors apart: all loaded, then the
// chain run on each and each stored.
template <int U, class Ch, class T, class A>
__device__ __forceinline__ void map_vectors(const MapArgs<T, A>& a, int64_t v, int64_t step) {
  constexpr int VEC = Vec16<T>::kVec;
  Vec16<T> d[U];
#pragma unroll
  for (int u = 0; u < U; ++u) d[u] = load_stream(a.y + (v + u * step) * VEC);
#pragma unroll
  for (int u = 0; u < U; ++u) {
    A e[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) e[k] = to_acc<A>(d[u].get(k));
    Ch::body(a.body, e, (v + u * step) * VEC, 1, 0, 0);
#pragma unroll
    for (int k = 0; k < VEC; ++k) d[u].set(k, to_elem<T>(e[k]));
    store16(a.out + (v + u * step) * VEC, d[u]);
  }
}

// Mode 0: each thread takes U vectors nthreads apart, so that each load and
// store of a warp covers 512 contiguous bytes (whole 128-byte lines; U
// adjacent vectors a thread, 64 bytes apart across the warp, ran at 73% of
// copy on the H200), then the last < U of each thread one by one.
template <class T, class A, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_map(const MapArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec;
  constexpr int U = 4;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  if (a.mode == 0) {
    const int64_t nvec = a.n / VEC;
    int64_t v = tid;
    for (; v + (U - 1) * nthreads < nvec; v += U * nthreads) map_vectors<U, Ch>(a, v, nthreads);
    for (; v < nvec; v += nthreads) map_vectors<1, Ch>(a, v, nthreads);
    for (int64_t i = nvec * VEC + tid; i < a.n; i += nthreads)
      a.out[i] = to_elem<T>(body1<Ch>(a.body, to_acc<A>(a.y[i]), i, 0));
  } else {
    for (int64_t i = tid; i < a.n; i += nthreads) {
      const A v = to_acc<A>(a.mode == 1 ? a.y[i] : a.y[a.ix.offset(i)]);
      a.out[i] = to_elem<T>(body1<Ch>(a.body, v, i, 0));
    }
  }
}

// Y channels-last to the NCHW output, through shared memory: a block per
// tile of map_tile_p<T>() pixels x kMapTileC channels of one sample (grid:
// pixel tiles, channel tiles, N; 256 threads). Mode 0 (Y and the output take
// 16-byte vectors: aligned, C and the plane multiples of a vector): Y is read
// along C in vectors (whole 256-byte rows of a 64-channel Y), then
// kMapRowThreads threads per channel row take vectors of its pixels
// kMapRowThreads apart, run the chain on them four values at a time (one call
// on 16 put the op in 464 bytes of stack) and store them: each store of a
// warp writes whole 128-byte lines. The tile's rows are swizzled (map_col) so
// that neither side has bank conflicts. Tiles partial along the pixels, and
// mode 1, go element by element.
// H200, Y [64, 64, 256, 256] float32, a per-channel affine chain: 0.581 ms,
// 87% of copy; each thread storing a run of 16 adjacent pixels (64 bytes
// apart across the warp) 0.713 ms; 16 threads a row 0.584 ms. In bfloat16
// (tiles of 64 pixels) the runs were faster: 0.397 ms against 0.440 (not
// understood; 4 threads a row with runs of two vectors 0.514, every vector
// read before the first store 0.450: perf/results/*-twelfth-session-summary.md).
constexpr int kMapTileC = 64, kMapRowThreads = 8;
// Pixels a tile: 16 KB of Y in float32 and the 16-bit types; float64 keeps
// 64 (map_col's range: at least kMapTileC). H200, the set's bfloat16 maps
// over a channels-last Y (stage medians, same run): per-channel affine
// chain, Y [64, 64, 256, 256], 0.500 -> 0.491 ms; mish chain, Y [128, 64,
// 256, 256], 1.130 -> 1.094 (tiles of 64 pixels -> 128). Both are still
// about half of copy bandwidth: not the bytes in flight.
template <class T>
__host__ __device__ constexpr int map_tile_p() {
  return sizeof(T) == 2 ? 2 * kMapTileC : kMapTileC;
}

// The column of pixel p in the tile's row of channel c: XOR-swizzled in
// whole 16-byte chunks, by the channel's load vector (VEC channels a load)
// and by p's 32-pixel group, so that the shared stores of the loads have
// conflicts at most 2-way and a row's 128-byte reads none.
template <int VEC>
__device__ __forceinline__ int map_col(int c, int p) {
  return p ^ (c & ~(VEC - 1)) ^ (((p >> 5) & 3) << 2);
}

template <class T, class A, class Ch>
__global__ void __launch_bounds__(256, 2) epi_map_nhwc(const MapArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec, SV = 16 / int(sizeof(A));  // per 16 bytes: elements of Y, of the tile
  constexpr int TP = map_tile_p<T>(), VPP = kMapTileC / VEC, LOADS = TP * VPP / 256;
  static_assert(TP >= kMapTileC && (TP & (TP - 1)) == 0, "map_col's range");
  __shared__ __align__(16) A tile[kMapTileC][TP];
  const int64_t C = a.channels, P = a.plane;
  const int64_t n = blockIdx.z, c0 = int64_t(blockIdx.y) * kMapTileC, p0 = int64_t(blockIdx.x) * TP;
  const int tid = threadIdx.x;
  const bool vec = a.mode == 0 && p0 + TP <= P;
  if (vec) {
    Vec16<T> d[LOADS];
#pragma unroll
    for (int u = 0; u < LOADS; ++u) {
      // Channels past C (the last channel tile) load a vector of this pixel instead: in bounds and
      // never stored, where a guard on the load cost 12 registers (56: four blocks an SM, not five).
      const int q = tid + 256 * u, r = q / VPP, c = q % VPP * VEC;
      d[u] = load_stream(a.y + (n * P + p0 + r) * C + min(c0 + c, C - VEC));
    }
#pragma unroll
    for (int u = 0; u < LOADS; ++u) {
      const int q = tid + 256 * u, r = q / VPP, c = q % VPP * VEC;
      if (c0 + c < C)
#pragma unroll
        for (int e = 0; e < VEC; ++e) tile[c + e][map_col<VEC>(c + e, r)] = to_acc<A>(d[u].get(e));
    }
  } else {
    for (int e = tid; e < TP * kMapTileC; e += 256) {
      const int r = e / kMapTileC, c = e % kMapTileC;  // along C: coalesced
      if (c0 + c < C && p0 + r < P) tile[c][map_col<VEC>(c, r)] = to_acc<A>(a.y[(n * P + p0 + r) * C + c0 + c]);
    }
  }
  __syncthreads();
  if (vec) {
    constexpr int ROWS = 256 / kMapRowThreads, PER_ROW = TP / VEC / kMapRowThreads, CALL = VEC < 4 ? VEC : 4;
    const int m = tid % kMapRowThreads;
#pragma unroll
    for (int pass = 0; pass < kMapTileC / ROWS; ++pass) {
      const int c = tid / kMapRowThreads + ROWS * pass;
      if (c0 + c >= C) break;
#pragma unroll
      for (int s = 0; s < PER_ROW; ++s) {
        const int px = VEC * (m + kMapRowThreads * s);
        A v[VEC];
#pragma unroll
        for (int w = 0; w < VEC / SV; ++w) {
          const uint4 raw = *reinterpret_cast<const uint4*>(&tile[c][map_col<VEC>(c, px + SV * w)]);
#pragma unroll
          for (int e = 0; e < SV; ++e) v[SV * w + e] = reinterpret_cast<const A*>(&raw)[e];
        }
        const int64_t i = (n * C + c0 + c) * P + p0 + px;
#pragma unroll
        for (int k = 0; k < VEC / CALL; ++k) {
          A u[CALL];
#pragma unroll
          for (int e = 0; e < CALL; ++e) u[e] = v[CALL * k + e];
          Ch::body(a.body, u, i + CALL * k, 1, 0, 0);
#pragma unroll
          for (int e = 0; e < CALL; ++e) v[CALL * k + e] = u[e];
        }
        Vec16<T> d;
#pragma unroll
        for (int e = 0; e < VEC; ++e) d.set(e, to_elem<T>(v[e]));
        store16(a.out + i, d);
      }
    }
  } else {
    for (int e = tid; e < TP * kMapTileC; e += 256) {
      const int c = e / TP, r = e % TP;  // along the pixels: coalesced
      const int64_t i = (n * C + c0 + c) * P + p0 + r;
      if (c0 + c < C && p0 + r < P) a.out[i] = to_elem<T>(body1<Ch>(a.body, tile[c][map_col<VEC>(c, r)], i, 0));
    }
  }
}

// ---- reduce: rows (reduced axes trailing and contiguous, or any, by a group) ------

template <class T, class A>
struct ReduceArgs {
  const T* y;
  Indexer outer, inner;  // kept axes of Y in its memory order / reduced axes of Y
  Indexer order;         // the walk over the kept axes -> the output's index (when `ordered`)
  bool ordered;          // false: the walk is the output's row-major order
  Chain<A> body;
  Chain<A> after;   // on each output as it is stored (none when there is a tail)
  ReduceKind kind;
  int64_t count;    // elements per output
  int64_t outputs;  // R * K
  int64_t stride;   // columns kernel: the reduced axes as one stride (when not generic)
  int64_t out_step; // epi_reduce_cols_vec: the output index between a thread's adjacent outputs
  int64_t parts, part_len;  // rows kernel, block mode: blocks per output
  A* z;                     // [outputs]: the intermediate the tail reads; null: write `out`
  T* out;                   // [outputs]: the stage's output when there is no tail
  ReduceAcc<A>* partials;   // [outputs * parts] when parts > 1
  unsigned* counters;       // [outputs], zero
};

template <class Ch, class T, class A>
__device__ __forceinline__ void push(const ReduceArgs<T, A>& a, ReduceAcc<A>& acc, T v, int64_t o, int64_t k) {
  reduce_push(Ch::reduce_kind(a.kind), acc, body1<Ch>(a.body, to_acc<A>(v), o, k));
}

// The output index of the walk's t-th output (a reduction) or row (a softmax).
template <class Args>
__device__ __forceinline__ int64_t output_of(const Args& a, int64_t t) {
  return a.ordered ? a.order.offset(t) : t;
}

template <class Ch, class T, class A>
__device__ __forceinline__ void put(const ReduceArgs<T, A>& a, int64_t o, const ReduceAcc<A>& r) {
  A v[1] = {reduce_finish(a.kind, r, a.count)};
  Ch::after(a.after, v, o, 0, 0, 0);
  if (a.z) a.z[o] = v[0];
  else a.out[o] = to_elem<T>(v[0]);
}

// Part `part` of the walk's output t (o in the output) is r: kept; the last
// of the output's parts to arrive joins them in order (deterministic) and
// puts the result.
template <class Ch, class T, class A>
__device__ __forceinline__ void join_parts(const ReduceArgs<T, A>& a, int64_t t, int64_t o, int64_t part,
                                           const ReduceAcc<A>& r) {
  a.partials[t * a.parts + part] = r;
  __threadfence();
  if (atomicAdd(&a.counters[t], 1u) == unsigned(a.parts - 1)) {
    __threadfence();
    ReduceAcc<A> all = reduce_init<A>(a.kind);
    for (int64_t q = 0; q < a.parts; ++q) {
      const ReduceAcc<A>* pp = a.partials + t * a.parts + q;
      const ReduceAcc<A> pq{__ldcg(&pp->a), __ldcg(&pp->b)};
      reduce_join(a.kind, all, pq);
    }
    put<Ch>(a, o, all);
    a.counters[t] = 0u;
  }
}

// CONTIG: the reduced elements of an output are base[0 .. count). WARP: a warp
// per output (no block barriers), else a block per (output, part).
template <class T, class A, bool CONTIG, bool WARP, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_reduce_rows(const ReduceArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec;
  __shared__ ReduceAcc<A> wred[33];
  const int lane = WARP ? (threadIdx.x & 31) : threadIdx.x;
  const int width = WARP ? 32 : blockDim.x;
  int64_t t, part = 0;  // the walk's output t, o in the output
  if (WARP) {
    t = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    if (t >= a.outputs) return;  // whole warps leave; no block barrier below in warp mode
  } else {
    t = blockIdx.x / a.parts;
    part = blockIdx.x - t * a.parts;
  }
  const int64_t o = output_of(a, t);
  const int64_t k0 = part * a.part_len, k1 = min(a.count, k0 + a.part_len);
  const T* base = a.y + a.outer.offset(t);
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
      push<Ch>(a, acc[0], p[ee], o, k0 + ee);
    }
    const T* vp = p + head;
    constexpr int U = 4;  // loads in flight per thread
    int64_t v = lane;
    const auto consume = [&](const Vec16<T>& d, int64_t kfirst) {
      A e[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) e[k] = to_acc<A>(d.get(k));
      Ch::body(a.body, e, o, 0, kfirst, 1);
#pragma unroll
      for (int k = 0; k < VEC; ++k) reduce_push(Ch::reduce_kind(a.kind), acc[k], e[k]);
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
    for (int64_t k = k0 + lane; k < k1; k += width) push<Ch>(a, acc[0], base[a.inner.offset(k)], o, k);
  }
#pragma unroll
  for (int k = 1; k < VEC; ++k) reduce_join(a.kind, acc[0], acc[k]);
  const ReduceAcc<A> r = WARP ? warp_join(a.kind, acc[0]) : block_join(a.kind, acc[0], wred);
  if (WARP || a.parts == 1) {
    if (lane == 0) put<Ch>(a, o, r);
    return;
  }
  // Several blocks per output: the last to finish joins the parts in order.
  if (threadIdx.x == 0) join_parts<Ch>(a, t, o, part, r);
}

// N (even) values of one output into a thread's two accumulators, in turn
// (two dependency chains); a logsumexp takes them as one block.
template <class A, int N>
__device__ __forceinline__ void push_pairs(ReduceKind kind, ReduceAcc<A>& acc0, ReduceAcc<A>& acc1, const A (&v)[N]) {
  if (kind == ReduceKind::logsumexp) {
    reduce_push_n(kind, acc0, v);
    return;
  }
#pragma unroll
  for (int u = 0; u < N; u += 2) {
    reduce_push(kind, acc0, v[u]);
    reduce_push(kind, acc1, v[u + 1]);
  }
}

// A thread per output: for reduced axes that are not contiguous (e.g. C of
// NCHW); the walk puts neighbouring outputs' elements next to each other in
// memory, so loads coalesce. Or for short contiguous rows (e.g. C of a
// channels-last Y), where a warp per row would leave lanes idle.
// MODE 0: the reduced axes as one stride and no point ops (the lean kernel:
// fewer registers, more loads in flight); 1: one stride; 2: any layout;
// 3: a contiguous row (16-byte loads when it is aligned). With few outputs
// each takes `parts` threads (neighbouring threads still on neighbouring
// outputs), joined by the last to finish.
template <class T, class A, int MODE, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_reduce_cols(const ReduceArgs<T, A> a) {
  constexpr bool kParts = MODE == 1 || MODE == 2;  // the lean kernel and rows take one thread an output
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < a.outputs * a.parts; g += nthreads) {
    const int64_t part = kParts && a.parts > 1 ? g / a.outputs : 0;
    const int64_t t = g - part * a.outputs;
    // (The lean kernel, with no chain, finds the output index after its loop: fewer registers live in it.)
    const int64_t o = MODE == 0 ? 0 : output_of(a, t);
    const T* base = a.y + a.outer.offset(t);
    const int64_t end = min(a.count, (part + 1) * a.part_len);
    ReduceAcc<A> acc0 = reduce_init<A>(a.kind), acc1 = acc0;
    int64_t k = part * a.part_len;
    if (MODE == 3) {
      // U loads in flight. H200, max over the 64 channels of a channels-last 1 GB Y: one 0.42 ms, four 0.375.
      constexpr int VEC = Vec16<T>::kVec, U = 4;
      const auto consume = [&](const Vec16<T>& d, int64_t kk) {
        A v[VEC];
#pragma unroll
        for (int u = 0; u < VEC; ++u) v[u] = to_acc<A>(d.get(u));
        Ch::body(a.body, v, o, 0, kk, 1);
        push_pairs(Ch::reduce_kind(a.kind), acc0, acc1, v);
      };
      if ((reinterpret_cast<uintptr_t>(base + k) & 15u) == 0) {
        for (; k + U * VEC <= end; k += U * VEC) {
          Vec16<T> d[U];
#pragma unroll
          for (int n = 0; n < U; ++n) d[n] = load16(base + k + n * VEC);
#pragma unroll
          for (int n = 0; n < U; ++n) consume(d[n], k + n * VEC);
        }
        for (; k + VEC <= end; k += VEC) consume(load16(base + k), k);
      }
      for (; k < end; ++k) push<Ch>(a, acc0, base[k], o, k);
    } else if (MODE < 2) {
      // Four values per call: eight made reductions over C (an operand that
      // varies along k) 1.7x slower on the H200 (2026-12-01, run 17).
      constexpr int U = 4;
      for (; k + U - 1 < end; k += U) {
        A v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) v[u] = to_acc<A>(base[(k + u) * a.stride]);
        if (MODE == 1) Ch::body(a.body, v, o, 0, k, 1);  // the chain's fields read once for the U
        push_pairs(Ch::reduce_kind(a.kind), acc0, acc1, v);
      }
      for (; k < end; ++k) push<Ch>(a, acc0, base[k * a.stride], o, k);
    } else {
      for (; k < end; ++k) push<Ch>(a, acc0, base[a.inner.offset(k)], o, k);
    }
    reduce_join(a.kind, acc0, acc1);
    if (!kParts || a.parts == 1) put<Ch>(a, MODE == 0 ? output_of(a, t) : o, acc0);
    else join_parts<Ch>(a, t, o, part, acc0);
  }
}

// N vectors of VEC adjacent outputs at k, k + dk, ...: each output's N values
// through the chain (at (o_u, k), 1 apart in k: the call the one-output
// kernel makes, whose operand lookups the compiler keeps out of the loop;
// one call on a vector, VEC outputs out_step apart, cost 25% more in time),
// then pushed as one block (a logsumexp merges them once).
template <class Ch, class T, class A, int VEC, int N>
__device__ __forceinline__ void push_vectors(const ReduceArgs<T, A>& a, ReduceAcc<A> (&acc)[VEC], const Vec16<T> (&d)[N],
                                             int64_t o, int64_t k, int64_t dk) {
#pragma unroll
  for (int u = 0; u < VEC; ++u) {
    A col[N];
#pragma unroll
    for (int n = 0; n < N; ++n) col[n] = to_acc<A>(d[n].get(u));
    Ch::body(a.body, col, o + u * a.out_step, 0, k, dk);
    reduce_push_n(Ch::reduce_kind(a.kind), acc[u], col);
  }
}

// The reduced positions k, k + dk, ... before `end` of VEC adjacent outputs
// (o, o + out_step, ...; Y's at base) into acc, U vectors in flight.
template <class Ch, int U, class T, class A, int VEC>
__device__ __forceinline__ void reduce_vectors(const ReduceArgs<T, A>& a, ReduceAcc<A> (&acc)[VEC], const T* base,
                                               int64_t o, int64_t k, int64_t end, int64_t dk) {
  for (; k + (U - 1) * dk < end; k += U * dk) {
    Vec16<T> d[U];
#pragma unroll
    for (int n = 0; n < U; ++n) d[n] = load_stream(base + (k + n * dk) * a.stride);
    push_vectors<Ch>(a, acc, d, o, k, dk);
  }
  for (; k < end; k += dk) {
    const Vec16<T> d[1] = {load_stream(base + k * a.stride)};
    push_vectors<Ch>(a, acc, d, o, k, dk);
  }
}

// Part `part` of the walk's outputs t .. t + VEC - 1 (o, o + out_step, ...)
// is r: kept, the group's VEC values of a part side by side; the last of the
// group's parts to arrive joins each output's parts in order (deterministic),
// the VEC outputs' loads together. (join_parts on each output in turn made a
// mean over H and W, 132 parts of 4 outputs a thread, 0.13 ms slower.)
template <class Ch, class T, class A, int VEC>
__device__ __forceinline__ void join_vector_parts(const ReduceArgs<T, A>& a, int64_t t, int64_t o, int64_t part,
                                                  const ReduceAcc<A> (&r)[VEC]) {
  ReduceAcc<A>* group = a.partials + t * a.parts;  // [parts][VEC]
#pragma unroll
  for (int u = 0; u < VEC; ++u) group[part * VEC + u] = r[u];
  __threadfence();
  if (atomicAdd(&a.counters[t], 1u) == unsigned(a.parts - 1)) {
    __threadfence();
    ReduceAcc<A> all[VEC];
#pragma unroll
    for (int u = 0; u < VEC; ++u) all[u] = reduce_init<A>(a.kind);
#pragma unroll 1
    for (int64_t q = 0; q < a.parts; ++q) {
#pragma unroll
      for (int u = 0; u < VEC; ++u) {
        const ReduceAcc<A>* pp = group + q * VEC + u;
        reduce_join(a.kind, all[u], ReduceAcc<A>{__ldcg(&pp->a), __ldcg(&pp->b)});
      }
    }
#pragma unroll
    for (int u = 0; u < VEC; ++u) put<Ch>(a, o + u * a.out_step, all[u]);
    a.counters[t] = 0u;
  }
}

// Part `part` of the walk's outputs t .. t + VEC - 1 (o, o + out_step, ...):
// put, or kept for the last of their parts to join.
template <class Ch, class T, class A, int VEC>
__device__ __forceinline__ void put_vectors(const ReduceArgs<T, A>& a, int64_t t, int64_t o, int64_t part,
                                            const ReduceAcc<A> (&acc)[VEC]) {
  if (a.parts > 1) {
    join_vector_parts<Ch>(a, t, o, part, acc);
    return;
  }
#pragma unroll
  for (int u = 0; u < VEC; ++u) put<Ch>(a, o + u * a.out_step, acc[u]);
}

// The columns kernel on VEC adjacent outputs a thread with 16-byte loads:
// when the walk's fastest axis is contiguous in Y and VEC divides its extent,
// the other kept strides and the reduced stride (so each load is aligned),
// and the outputs t .. t + VEC - 1 are o, o + out_step, ... A thread's load
// is a quarter of the instructions and address arithmetic of the four that
// epi_reduce_cols issues for the same bytes (a gelu before a sum over H was
// bound by instruction issue there). Parts as in epi_reduce_cols.
template <class T, class A, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_reduce_cols_vec(const ReduceArgs<T, A> a) {
  // U loads in flight. H200, gelu(y + bias) summed over H of Y [64, 64, 256, 256], U = 2 / 4 / 8:
  // float32 0.478 / 0.39 / 0.36 ms, bfloat16 0.47 / 0.40 / 0.36 (a thread an output: 0.43 and 0.42).
  constexpr int VEC = Vec16<T>::kVec, U = 8;
  const int64_t groups = a.outputs / VEC, nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups * a.parts; g += nthreads) {
    const int64_t part = a.parts > 1 ? g / groups : 0;
    const int64_t t = (g - part * groups) * VEC;
    const int64_t o = output_of(a, t);
    const T* base = a.y + a.outer.offset(t);
    const int64_t end = min(a.count, (part + 1) * a.part_len);
    ReduceAcc<A> acc[VEC];
#pragma unroll
    for (int u = 0; u < VEC; ++u) acc[u] = reduce_init<A>(a.kind);
    reduce_vectors<Ch, U>(a, acc, base, o, part * a.part_len, end, 1);
    put_vectors<Ch>(a, t, o, part, acc);
  }
}

template <class A>
__device__ __forceinline__ ReduceAcc<A> shfl_down(const ReduceAcc<A>& a, int delta) {
  return ReduceAcc<A>{__shfl_down_sync(0xffffffffu, a.a, delta), __shfl_down_sync(0xffffffffu, a.b, delta)};
}

// A warp per row (and part) where the reduced axis and the walk's fastest kept
// axis, E = a.stride outputs, are one contiguous block (over W, or H and W, of
// a channels-last Y): a lane takes one of the block's G = E / VEC vectors at
// every M-th reduced position (M = 32 / G), so a warp's load is M x E
// contiguous elements, where epi_reduce_cols_vec's warp reads 32 x VEC
// elements in pieces of E a block apart. The M lanes of a vector are joined
// by a fixed shuffle tree (deterministic), then as epi_reduce_cols_vec's.
template <class T, class A, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_reduce_cols_warp(const ReduceArgs<T, A> a) {
  constexpr int VEC = Vec16<T>::kVec, U = 8;
  const int G = static_cast<int>(a.stride / VEC), M = 32 / G;
  const int lane = threadIdx.x & 31, m = lane / G;
  const int64_t rows = a.outputs / a.stride, warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t g = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); g < rows * a.parts; g += warps) {
    const int64_t part = a.parts > 1 ? g / rows : 0;
    const int64_t t = (g - part * rows) * a.stride + (lane % G) * VEC;
    const int64_t o = output_of(a, t);
    const T* base = a.y + a.outer.offset(t);
    const int64_t end = min(a.count, (part + 1) * a.part_len);
    ReduceAcc<A> acc[VEC];
#pragma unroll
    for (int u = 0; u < VEC; ++u) acc[u] = reduce_init<A>(a.kind);
    if (m < M) reduce_vectors<Ch, U>(a, acc, base, o, part * a.part_len + m, end, M);
    // Lane m takes lane m + s's values (s = 1, 2, 4, ... positions, s x G lanes on) where m is a multiple of 2s.
    for (int s = 1; s < M; s *= 2) {
#pragma unroll
      for (int u = 0; u < VEC; ++u) {
        const ReduceAcc<A> other = shfl_down(acc[u], s * G);
        if (m % (2 * s) == 0 && m + s < M) reduce_join(Ch::reduce_kind(a.kind), acc[u], other);
      }
    }
    if (m == 0) put_vectors<Ch>(a, t, o, part, acc);
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
  int64_t plane;             // epi_softmax_nhwc: pixels per sample
  Indexer order;             // the walk over the rows -> the output's row (when `ordered`)
  bool ordered;              // false: the walk is the output's row-major order
};

template <class Ch, class T, class A>
__device__ __forceinline__ A soft_in(const SoftmaxArgs<T, A>& a, const T* base, int64_t o, int64_t j) {
  return body1<Ch>(a.body, to_acc<A>(base[j * a.ys]), o, j);
}
template <class Ch, class T, class A>
__device__ __forceinline__ void soft_out(const SoftmaxArgs<T, A>& a, T* dst, const ReduceAcc<A>& acc, A v, int64_t o,
                                         int64_t j) {
  A w[1] = {softmax_value(acc, v)};
  Ch::after(a.after, w, o, 0, j, 0);
  dst[j * a.os] = to_elem<T>(w[0]);
}

// Row o's softmax (its axis contiguous in Y at `base`, count <= 32 * H) by
// one warp with the row in registers: one read, the max, then the sum of
// e = exp(v - max) (softmax_value's state), each e kept for its output (one
// exp per value); v[t] ends as the value at j = lane + 32 t (VEC = 1), or
// in 16-byte vectors of VEC values at j = VEC (lane + 32 g) + e for t = g
// VEC + e (VEC > 1: the row a multiple of VEC values, 16-byte aligned, one
// load a vector), its `after` chain applied. The chains run on all H values
// at once (an operand constant along the row is loaded once), or a vector
// at a time; the values past the row are computed on and dropped, so
// callers take the fewest H (softmax_row).
constexpr int kSoftmaxHold = 8;  // the most values a lane holds
template <int VEC>
__device__ __forceinline__ int softmax_j(int lane, int t) {
  return VEC * (lane + 32 * (t / VEC)) + t % VEC;
}
// The body (or the after) chain on a lane's values: one call, or a vector a call.
template <int VEC, bool kAfter, class Ch, class A, int H>
__device__ __forceinline__ void softmax_chain(const Chain<A>& c, A (&v)[H], int64_t o, int lane) {
  if constexpr (VEC == 1) {
    if constexpr (kAfter) Ch::after(c, v, o, 0, lane, 32);
    else Ch::body(c, v, o, 0, lane, 32);
  } else {
#pragma unroll
    for (int g = 0; g < H / VEC; ++g) {
      A u[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) u[e] = v[g * VEC + e];
      if constexpr (kAfter) Ch::after(c, u, o, 0, softmax_j<VEC>(lane, g * VEC), 1);
      else Ch::body(c, u, o, 0, softmax_j<VEC>(lane, g * VEC), 1);
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[g * VEC + e] = u[e];
    }
  }
}
template <int H, int VEC, class Ch, class T, class A>
__device__ __forceinline__ void softmax_in_registers(const SoftmaxArgs<T, A>& a, const T* base, int64_t o, int lane,
                                                     A (&v)[H]) {
  static_assert(H % VEC == 0 && Vec16<T>::kVec % VEC == 0, "whole vectors of at most 16 bytes");
  const int count = int(a.count);  // at most 32 H: the bounds in 32 bits
  if constexpr (VEC == 1) {
#pragma unroll
    for (int t = 0; t < H; ++t) {
      const int j = softmax_j<1>(lane, t);
      v[t] = j < count ? to_acc<A>(base[j * a.ys]) : A(0);
    }
  } else {
#pragma unroll
    for (int g = 0; g < H / VEC; ++g) {
      const int j0 = softmax_j<VEC>(lane, g * VEC);
      VecN<T, VEC> d{};
      if (j0 < count) d = load_vec<VEC>(base + j0);
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[g * VEC + e] = to_acc<A>(d.get(e));
    }
  }
  softmax_chain<VEC, false, Ch>(a.body, v, o, lane);
  ReduceAcc<A> acc{-inf<A>(), A(0)};
#pragma unroll
  for (int t = 0; t < H; ++t) {
    if (softmax_j<VEC>(lane, t) >= count) v[t] = -inf<A>();
    acc.a = nan_max(acc.a, v[t]);
  }
  acc = warp_join(ReduceKind::max, acc);
#pragma unroll
  for (int t = 0; t < H; ++t) {
    v[t] = std::exp(v[t] - acc.a);
    if (softmax_j<VEC>(lane, t) < count) acc.b += v[t];
  }
  acc.b = warp_sum(acc.b);
#pragma unroll
  for (int t = 0; t < H; ++t) v[t] = softmax_of_exp(acc, v[t]);
  softmax_chain<VEC, true, Ch>(a.after, v, o, lane);
}

// softmax_in_registers with the fewest values a lane holds (H, a power of
// two up to HMAX, count <= 32 * HMAX), each result stored at dst[j * stride].
// H200, softmax over the 64 channels of a channels-last 1 GB Y: 4 values a
// lane 1.82 ms, 2 values 1.27 ms (and 1.27 with a warp's 4 pixels read
// before the first is reduced: not instruction latency).
template <int HMAX, class Ch, class T, class A, class D>
__device__ __forceinline__ void softmax_row(const SoftmaxArgs<T, A>& a, const T* base, int64_t o, int lane, D* dst,
                                            int64_t stride) {
  if constexpr (HMAX > 1) {
    if (a.count <= 16 * HMAX) return softmax_row<HMAX / 2, Ch>(a, base, o, lane, dst, stride);
  }
  A v[HMAX];
  softmax_in_registers<HMAX, 1, Ch>(a, base, o, lane, v);
  const int count = int(a.count);
#pragma unroll
  for (int t = 0; t < HMAX; ++t)
    if (lane + 32 * t < count) dst[(lane + 32 * t) * stride] = to_elem<D>(v[t]);
}

// A warp (WARP) or a block per row: the axis is contiguous in Y. A warp
// keeps rows of up to 32 * kSoftmaxHold values in registers (one read of Y);
// longer rows are read twice, the second time mostly from L2.
template <class T, class A, bool WARP, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_softmax_rows(const SoftmaxArgs<T, A> a) {
  __shared__ ReduceAcc<A> wred[33];
  const int lane = WARP ? (threadIdx.x & 31) : threadIdx.x;
  const int width = WARP ? 32 : blockDim.x;
  const int64_t per_block = WARP ? blockDim.x / 32 : 1;
  for (int64_t first = int64_t(blockIdx.x) * per_block; first < a.rows; first += int64_t(gridDim.x) * per_block) {
    const int64_t t = first + (WARP ? threadIdx.x >> 5 : 0);
    if (WARP && t >= a.rows) return;  // whole warp; later rows of this warp are further out
    const int64_t o = output_of(a, t);
    const T* base = a.y + a.outer.offset(t);
    T* dst = a.out + a.out_outer.offset(o);
    if (WARP && a.count <= 32 * kSoftmaxHold) {
      softmax_row<kSoftmaxHold, Ch>(a, base, o, lane, dst, a.os);
      continue;
    }
    ReduceAcc<A> acc = reduce_init<A>(ReduceKind::logsumexp);
    for (int64_t j = lane; j < a.count; j += width) reduce_push(ReduceKind::logsumexp, acc, soft_in<Ch>(a, base, o, j));
    acc = WARP ? warp_join(ReduceKind::logsumexp, acc) : block_join(ReduceKind::logsumexp, acc, wred);
    for (int64_t j = lane; j < a.count; j += width) soft_out<Ch>(a, dst, acc, soft_in<Ch>(a, base, o, j), o, j);
  }
}

// Softmax over C of a channels-last Y [N, H, W, C] into the NCHW output: a
// block per 32 pixels of one sample, a warp per pixel at a time with its
// row in registers (softmax_in_registers, C <= 32 * HMAX), in vectors of
// adjacent channels where the row allows; the results go through a pixel-major tile
// in shared memory (rows of softmax_nhwc_row(C) values: 16 bytes past a
// multiple of 128, so that the lanes' 16-byte reads of their pixels' rows
// meet no bank twice) and out along the pixels, coalesced. 256 threads.
template <class A>
__host__ __device__ constexpr int64_t softmax_nhwc_row(int64_t count) {
  constexpr int64_t line = 128 / sizeof(A), vec = 16 / sizeof(A);
  return (count + line - 1) / line * line + vec;
}
// Blocks an SM holds at least: with rows of up to 128 values (HMAX 4) and
// the chains compiled, 8 (32 registers), where 5 left the kernel short of
// warps to issue from (softmax over 128 channels, then x2 and sigmoid, the
// whole pipeline 1.36 -> 1.29 ms in float32 and 0.94 -> 0.91 in bfloat16,
// H100, 2026-12-06); the interpreted chains take about 100 and would spill.
template <int HMAX, class Ch>
__host__ __device__ constexpr int softmax_nhwc_min_blocks() {
  return HMAX <= 4 && Ch::kCompiled ? 8 : KFUSE_EPI_MIN_BLOCKS;
}
template <class T, class A, int HMAX, class Ch>
__global__ void __launch_bounds__(256, softmax_nhwc_min_blocks<HMAX, Ch>())
    epi_softmax_nhwc(const SoftmaxArgs<T, A> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  A* tile = reinterpret_cast<A*>(smem);  // [32][softmax_nhwc_row(count)]
  const int64_t row_len = softmax_nhwc_row<A>(a.count);
  const int64_t tiles = (a.plane + 31) / 32;
  const int64_t n = blockIdx.x / tiles, p0 = (blockIdx.x - n * tiles) * 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Vectors of at most 16 bytes and HMAX values, where every lane's last one
  // is at least half used (as softmax_row halves its values a lane): a lane
  // loads its adjacent channels at once. 128 bfloat16 channels take 8-byte
  // vectors, 32 lanes a pixel (16-byte ones left 16 lanes idle: 0.77 ms
  // against 0.64 element by element, H200).
  constexpr int VEC = Vec16<T>::kVec < HMAX ? Vec16<T>::kVec : HMAX, AV = Vec16<A>::kVec;
  static_assert(VEC % AV == 0, "whole 16-byte stores into the tile");
  const int count = int(a.count);  // at most 32 HMAX
  for (int q = warp; q < 32; q += 8) {
    if (p0 + q >= a.plane) break;
    const int64_t o = n * a.plane + p0 + q;
    // Y is channels-last and contiguous (choose_kernel): pixel o's row starts
    // at o * C, where the walk of a.outer took 44 instructions a pixel (ncu).
    const T* base = a.y + o * a.count;
    A* row = tile + q * row_len;
    if (count > 16 * HMAX && count % VEC == 0 && aligned_to(base, VEC * sizeof(T))) {
      A v[HMAX];
      softmax_in_registers<HMAX, VEC, Ch>(a, base, o, lane, v);
#pragma unroll
      for (int g = 0; g < HMAX / VEC; ++g) {
        const int j0 = softmax_j<VEC>(lane, g * VEC);
        if (j0 < count)
#pragma unroll
          for (int w = 0; w < VEC / AV; ++w) {
            Vec16<A> r;
#pragma unroll
            for (int e = 0; e < AV; ++e) r.set(e, v[g * VEC + w * AV + e]);
            *reinterpret_cast<uint4*>(row + j0 + w * AV) = r.raw;  // shared memory: store16 is for global
          }
      }
    } else {
      softmax_row<HMAX, Ch>(a, base, o, lane, row, 1);
    }
  }
  __syncthreads();
  if (p0 + lane >= a.plane) return;
  // This lane's pixel, AV channels a read: warp w takes channels AV (w + 8 i).
  T* dst = a.out + a.out_outer.offset(n * a.plane + p0 + lane);
  const A* mine = tile + lane * row_len;
  for (int c0 = AV * warp; c0 < count; c0 += AV * 8) {
    const Vec16<A> r = load16(mine + c0);
    T* d = dst + c0 * a.os;
#pragma unroll
    for (int e = 0; e < AV; ++e, d += a.os)
      if (c0 + e < count) *d = to_elem<T>(r.get(e));
  }
}

// Rows across, held (the axis is strided, neighbouring rows adjacent; e.g.
// softmax over C of an NCHW Y): a block per 32 rows, lane l of every warp on
// row l, warp w holding the row's values j = w + 8 t (t < HOLD, count <= 8
// HOLD) in registers. The warps' maxima, then their sums of e = exp(v - max),
// are joined through shared memory in warp order (deterministic). One read of
// Y, where epi_softmax_cols reads each row twice (H100, [16, 128, 256, 256]
// float32: 60% of copy, the second read mostly from DRAM). Where the rows are
// contiguous in the output (os == 1: e.g. softmax over W of a channels-last
// Y, the walk along C), the lanes' stores would each touch a line of its
// own: the block's rows go through shared memory (held_tile_bytes, dynamic)
// and out a warp a row. (Not in the built-in kernels, their chains
// interpreted: there sm_89's ptxas spilled, bfloat16, 16 values a lane.)
constexpr int kHeldWarps = 8;
__host__ __device__ constexpr int64_t held_tile_row(int64_t count) {
  return count | 1;  // odd: the lanes' rows meet no bank twice
}
template <class A>
__host__ __device__ constexpr int64_t held_tile_bytes(int64_t count) {
  return 32 * held_tile_row(count) * int64_t(sizeof(A));
}
// A chain on a lane's held values, eight at a time (the interpreter on
// sixteen at once was called out of line, and spilled).
template <bool kAfter, class Ch, class A, int HOLD>
__device__ __forceinline__ void held_chain(const Chain<A>& c, A (&v)[HOLD], int64_t o, int warp) {
  constexpr int G = HOLD < 8 ? HOLD : 8;
  static_assert(HOLD % G == 0, "whole groups");
#pragma unroll
  for (int h = 0; h < HOLD; h += G) {
    A u[G];
#pragma unroll
    for (int e = 0; e < G; ++e) u[e] = v[h + e];
    if constexpr (kAfter) Ch::after(c, u, o, 0, warp + kHeldWarps * h, kHeldWarps);
    else Ch::body(c, u, o, 0, warp + kHeldWarps * h, kHeldWarps);
#pragma unroll
    for (int e = 0; e < G; ++e) v[h + e] = u[e];
  }
}
template <class T, class A, int HOLD, class Ch>
__global__ void __launch_bounds__(32 * kHeldWarps) epi_softmax_cols_held(const SoftmaxArgs<T, A> a) {
  __shared__ A part[2][kHeldWarps][32];
  extern __shared__ __align__(16) unsigned char smem[];
  A* tile = reinterpret_cast<A*>(smem);  // [32][held_tile_row(count)] when a.os == 1
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int count = int(a.count);  // at most 8 HOLD
  const int row_len = int(held_tile_row(count));
  for (int64_t first = int64_t(blockIdx.x) * 32; first < a.rows; first += int64_t(gridDim.x) * 32) {
    const int64_t t = first + lane;
    const bool row = t < a.rows;
    const int64_t o = row ? output_of(a, t) : 0;
    const T* base = a.y + (row ? a.outer.offset(t) : 0);
    A v[HOLD];
#pragma unroll
    for (int h = 0; h < HOLD; ++h) {
      const int j = warp + kHeldWarps * h;
      v[h] = row && j < count ? to_acc<A>(base[j * a.ys]) : A(0);
    }
    held_chain<false, Ch>(a.body, v, o, warp);
    A m = -inf<A>();
#pragma unroll
    for (int h = 0; h < HOLD; ++h)
      if (warp + kHeldWarps * h < count) m = nan_max(m, v[h]);
    part[0][warp][lane] = m;
    __syncthreads();
    ReduceAcc<A> acc{part[0][0][lane], A(0)};
#pragma unroll
    for (int w = 1; w < kHeldWarps; ++w) acc.a = nan_max(acc.a, part[0][w][lane]);
    A s = A(0);
#pragma unroll
    for (int h = 0; h < HOLD; ++h) {
      v[h] = std::exp(v[h] - acc.a);
      if (warp + kHeldWarps * h < count) s += v[h];
    }
    part[1][warp][lane] = s;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < kHeldWarps; ++w) acc.b += part[1][w][lane];
#pragma unroll
    for (int h = 0; h < HOLD; ++h) v[h] = softmax_of_exp(acc, v[h]);
    held_chain<true, Ch>(a.after, v, o, warp);
    const int64_t dst_off = row ? a.out_outer.offset(o) : 0;  // this lane's row in the output
    if (Ch::kCompiled && a.os == 1) {
#pragma unroll
      for (int h = 0; h < HOLD; ++h) {
        const int j = warp + kHeldWarps * h;
        if (j < count) tile[lane * row_len + j] = v[h];
      }
      __syncthreads();
      // Row r's place from lane r (its two Indexer walks again, a warp's 4 rows, were a third of the
      // kernel's instructions: softmax over W, bfloat16, H200).
      for (int r = warp; r < 32; r += kHeldWarps) {
        T* dst = a.out + __shfl_sync(0xffffffffu, dst_off, r);
        if (first + r < a.rows)
          for (int j = lane; j < count; j += 32) dst[j] = to_elem<T>(tile[r * row_len + j]);
      }
    } else if (row) {
      T* dst = a.out + dst_off;
#pragma unroll
      for (int h = 0; h < HOLD; ++h) {
        const int j = warp + kHeldWarps * h;
        if (j < count) dst[j * a.os] = to_elem<T>(v[h]);
      }
    }
    __syncthreads();  // part and the tile are rewritten by the next rows
  }
}

// A thread per row (the axis is strided; neighbouring rows are adjacent).
template <class T, class A, class Ch>
__global__ void __launch_bounds__(kThreads, KFUSE_EPI_MIN_BLOCKS) epi_softmax_cols(const SoftmaxArgs<T, A> a) {
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < a.rows; t += nthreads) {
    const int64_t o = output_of(a, t);
    const T* base = a.y + a.outer.offset(t);
    T* dst = a.out + a.out_outer.offset(o);
    // Four values at a time through the chains (their fields read once for the four).
    constexpr int U = 4;
    const int64_t full = a.count / U * U;
    const auto load = [&](int64_t j, A (&v)[U]) {
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = to_acc<A>(base[(j + u) * a.ys]);
      Ch::body(a.body, v, o, 0, j, 1);
    };
    ReduceAcc<A> acc = reduce_init<A>(ReduceKind::logsumexp);
    for (int64_t j = 0; j < full; j += U) {
      A v[U];
      load(j, v);
      reduce_push_n(ReduceKind::logsumexp, acc, v);
    }
    for (int64_t j = full; j < a.count; ++j) reduce_push(ReduceKind::logsumexp, acc, soft_in<Ch>(a, base, o, j));
    for (int64_t j = 0; j < full; j += U) {
      A v[U];
      load(j, v);
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = softmax_value(acc, v[u]);
      Ch::after(a.after, v, o, 0, j, 1);
#pragma unroll
      for (int u = 0; u < U; ++u) dst[(j + u) * a.os] = to_elem<T>(v[u]);
    }
    for (int64_t j = full; j < a.count; ++j) soft_out<Ch>(a, dst, acc, soft_in<Ch>(a, base, o, j), o, j);
  }
}

}  // namespace kfuse::detail::cuda::epi
