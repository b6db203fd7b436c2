// The fold on CUDA (DESIGN.md section 4), in one launch: a grid of at most
// the resident blocks whose blocks take work items in order from a queue (a
// ticket counter), first every (plane, row chunk) unit, then every
// contraction tile.
//
//  - A unit reads its part of x once with 16-byte streaming loads and sums
//    every segment block of FoldGeometry. Elements of the largest block (the
//    central one, where every tap's range covers the row and the column) go
//    to per-thread register accumulators; the few border elements go to
//    shared-memory block sums (shared atomics). Each tap's rectangle sum is
//    then a sum of block sums (geom.tap_sum): exact, no cancellation. With
//    several chunks per plane, the last chunk to finish (a counter per plane)
//    adds the chunks' tap sums in chunk order (deterministic). A plane whose
//    sums are complete counts towards its sample.
//  - A tile computes Z[n, co] = bias[co] + sum_q weight[q*Cout + co] *
//    S[n, g*cin_g + c, t] for its Z values once the planes of their samples
//    are complete, then the block that completes a Z row (a counter per row)
//    runs the tail program on it (detail::run_tail on a block). Only the
//    output is stored.
//
// Tickets are handed out in order, so a waiting tile waits only for units
// that running blocks hold: no deadlock, however many blocks are resident.
// Tiles of the first samples overlap the units of the last ones, and there is
// no second launch to wait for. The last block to leave puts the queue and the
// sample counters back to zero.
#include <algorithm>
#include <climits>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"

namespace kfuse::detail::cuda {

namespace {

constexpr int kMaxBlocks = kFoldMaxSegments * kFoldMaxSegments;
constexpr int kFoldMaxThreads = 256;
constexpr int kTileMaxRows = 160;  // rows one contraction tile can touch: tile (<= 128) + 1

struct FoldLaunch {
  int64_t units;           // planes * chunks
  int64_t chunks, rows_per_chunk;
  int64_t rlo, rhi, clo, chi;  // the block accumulated in registers
  int main_block;              // its index in B (-1: empty planes)
  int contiguous;              // each plane is one contiguous run of H*W elements
  // The column segments left and right of the central one, [cl2, clo) and
  // [chi, cr2), in the central rows: two more register accumulators (empty
  // ranges when there are none); blocks main_block - 1 and + 1.
  int64_t cl2, cr2;
};

// ---- The work items -----------------------------------------------------------
//
// I is the index type of a unit's hot loop: int when a chunk has fewer than
// 2^31 elements (fewer registers, more resident blocks), else int64_t.

// The block sums of one (plane, chunk) unit into B (shared, zero on entry);
// returns with every thread past a barrier.
template <class T, class S, class I>
__device__ __forceinline__ void sum_unit(const T* __restrict__ x, const FoldGeometry& g, const FoldLaunch& L,
                                         int64_t plane, int64_t ch, S* B, S* red) {
  constexpr int VEC = Vec16<T>::kVec;
  constexpr int NACC = VEC < 4 ? VEC : 4;  // independent register accumulators
  const int tid = threadIdx.x, bd = blockDim.x, cs = g.col_segments;
  const int64_t H = g.H, W = g.W;
  const int64_t r0 = ch * L.rows_per_chunk, r1 = min(H, r0 + L.rows_per_chunk);
  const T* p = x + (plane / g.C) * g.xs[0] + (plane % g.C) * g.xs[1];
  S acc[NACC];
#pragma unroll
  for (int k = 0; k < NACC; ++k) acc[k] = S(0);
  S acc_left = S(0), acc_right = S(0);

  // One border element at (absolute row r, column c): a shared-memory block sum.
  const auto border = [&](int64_t r, int64_t c, S v) { atomicAdd(&B[g.row_segment(r) * cs + g.col_segment(c)], v); };

  if (L.contiguous && r1 > r0 && W > 0) {
    // Rows relative to r0: the central block is rows [rlo, rhi), columns [clo, chi).
    const I rlo = I(max(L.rlo - r0, int64_t(0))), rhi = I(max(min(L.rhi, r1) - r0, int64_t(0)));
    const I clo = I(L.clo), chi = I(L.chi), w = I(W), cl2 = I(L.cl2), cr2 = I(L.cr2);
    const T* base = p + r0 * W;
    const I n = I((r1 - r0) * W);
    const I mis = I((reinterpret_cast<uintptr_t>(base) & 15u) / sizeof(T));
    const I head = min(n, mis ? I(VEC - mis) : I(0));
    const I nvec = (n - head) / VEC;
    const I tail0 = head + nvec * VEC;
    // Scalar head (up to the first 16-byte boundary) and tail.
    for (I e = tid; e < head + (n - tail0); e += bd) {
      const I ee = e < head ? e : tail0 + (e - head);
      const I r = ee / w, c = ee - r * w;
      const S v = to_acc<S>(base[ee]);
      if (r >= rlo && r < rhi && c >= clo && c < chi) acc[0] += v;
      else border(r0 + r, c, v);
    }
    // 16-byte vectors: the row and column of the first element are tracked
    // incrementally (no division in the loop).
    const T* vbase = base + head;
    const I step = I(bd) * VEC, dr = step / w, dc = step - dr * w;
    I v = tid;
    I row, col;
    {
      const I e = head + v * VEC;
      row = e / w;
      col = e - row * w;
    }
    const auto consume = [&](const Vec16<T>& d, I rr, I cc) {
      if (rr >= rlo && rr < rhi && cc >= clo && cc + VEC <= chi) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) acc[k % NACC] += to_acc<S>(d.get(k));
      } else if (cc + VEC <= w) {
        // Within one row: the columns next to the central block in registers too.
        const bool rin = rr >= rlo && rr < rhi;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const I c = cc + k;
          const S val = to_acc<S>(d.get(k));
          if (rin && c >= clo && c < chi) acc[k % NACC] += val;
          else if (rin && c >= cl2 && c < clo) acc_left += val;
          else if (rin && c >= chi && c < cr2) acc_right += val;
          else border(r0 + rr, c, val);
        }
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          I r = rr, c = cc + k;
          while (c >= w) c -= w, ++r;
          const S val = to_acc<S>(d.get(k));
          if (r >= rlo && r < rhi && c >= clo && c < chi) acc[k % NACC] += val;
          else border(r0 + r, c, val);
        }
      }
    };
    const auto advance = [&]() {
      row += dr;
      col += dc;
      if (col >= w) col -= w, ++row;
    };
    constexpr int U = 4;  // loads in flight per thread
    for (; v + (U - 1) * bd < nvec; v += U * bd) {
      Vec16<T> d[U];
#pragma unroll
      for (int k = 0; k < U; ++k) d[k] = load_stream(vbase + int64_t(v + k * bd) * VEC);
#pragma unroll
      for (int k = 0; k < U; ++k) {
        consume(d[k], row, col);
        advance();
      }
    }
    for (; v < nvec; v += bd) {
      consume(load_stream(vbase + int64_t(v) * VEC), row, col);
      advance();
    }
    // (Only the vector loop fills these: contiguous planes.)
    acc_left = warp_sum(acc_left);
    acc_right = warp_sum(acc_right);
    if ((tid & 31) == 0 && acc_left != S(0)) atomicAdd(&B[L.main_block - 1], acc_left);
    if ((tid & 31) == 0 && acc_right != S(0)) atomicAdd(&B[L.main_block + 1], acc_right);
  } else if (!L.contiguous) {
    // Strided planes: element by element.
    const int64_t n = (r1 - r0) * W;
    for (int64_t e = tid; e < n; e += bd) {
      const int64_t r = r0 + e / W, c = e % W;
      const S v = to_acc<S>(p[r * g.xs[2] + c * g.xs[3]]);
      if (r >= L.rlo && r < L.rhi && c >= L.clo && c < L.chi) acc[0] += v;
      else border(r, c, v);
    }
  }
  S t = S(0);
#pragma unroll
  for (int k = 0; k < NACC; ++k) t += acc[k];
  t = block_sum(t, red);  // ends with a barrier: the shared atomics are complete too
  if (tid == 0 && L.main_block >= 0) B[L.main_block] += t;
  __syncthreads();
}

template <class A, class O>
struct ContractArgs {
  FoldContraction<A> con;
  Tail<A> tail;
  int64_t C;
  int taps;
  int tile;                // Z values per tile: a power of two dividing blockDim
  int64_t total;           // R*K
  A* z;                    // [R*K] scratch (rows whose tail runs later)
  unsigned* row_counters;  // [R], zero between runs
  O* out;
  int direct;              // no tail ops: Z is the output
  int row_in_smem;         // the tail's rows fit in shared memory (dynamic)
};

// Acquire load: what the block that raised the counter wrote before it is visible.
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Contraction tile `tile` (its Z values [tile*TZ, +TZ)) once the plane sums of
// its samples are complete, then the tail of each Z row it completes. `red`
// holds blockDim values; returns with every thread past a barrier.
template <class A, class O>
__device__ __forceinline__ void contract_tile(const ContractArgs<A, O>& a, const A* sums,
                                              const unsigned* sample_planes, int64_t tile, A* red,
                                              ReduceAcc<A>* wred, int64_t* mine, int* n_mine, A* zrow) {
  const int tid = threadIdx.x, TZ = a.tile, j = tid % TZ, s = tid / TZ, QS = blockDim.x / TZ;
  const int64_t Cout = a.con.Cout, K = a.tail.K;
  const int64_t z0 = tile * TZ, zend = min(a.total, z0 + TZ), zi = z0 + j;
  if (tid == 0) {
    for (int64_t n = z0 / Cout; n <= (zend - 1) / Cout; ++n)
      while (load_acquire(sample_planes + n) < unsigned(a.C)) __nanosleep(100);
  }
  __syncthreads();

  const bool valid = zi < a.total;
  const int64_t n = valid ? zi / Cout : 0, co = valid ? zi - n * Cout : 0, grp = co / a.con.cout_g;
  const int64_t kg = a.con.cin_g * a.taps, per = (kg + QS - 1) / QS;
  const int64_t q0 = min(kg, s * per), q1 = min(kg, q0 + per);
  A part = A(0);
  if (valid) {
    const A* wp = a.con.weight + co;
    const A* sp = sums + (n * a.C + grp * a.con.cin_g) * a.taps;
    A p[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) p[k] = A(0);
    int64_t q = q0;
    for (; q + 7 < q1; q += 8) {
#pragma unroll
      for (int k = 0; k < 8; ++k) p[k] += wp[(q + k) * Cout] * __ldcg(sp + q + k);
    }
    for (; q < q1; ++q) p[0] += wp[q * Cout] * __ldcg(sp + q);
    part = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  }
  red[tid] = part;  // red[s * TZ + j]
  __syncthreads();
  if (s == 0 && valid) {
    A v = a.con.bias[co];
    for (int k = 0; k < QS; ++k) v += red[k * TZ + j];
    if (a.direct) a.out[zi] = to_elem<O>(v);
    else a.z[zi] = v;
  }
  if (a.direct) {
    __syncthreads();  // red is reused by the next item
    return;
  }

  // The block that completes a row runs its tail.
  __threadfence();
  if (tid == 0) *n_mine = 0;
  __syncthreads();
  const int64_t rfirst = z0 / K, rlast = (zend - 1) / K;
  for (int64_t r = rfirst + tid; r <= rlast; r += blockDim.x) {
    const int64_t lo = max(z0, r * K), hi = min(zend, (r + 1) * K);
    const unsigned cnt = static_cast<unsigned>(hi - lo);
    const unsigned prev = atomicAdd(&a.row_counters[r], cnt);
    if (int64_t(prev) + cnt == K) mine[atomicAdd(n_mine, 1)] = r;
  }
  __syncthreads();
  const int rows = *n_mine;
  for (int i = 0; i < rows; ++i) {
    const int64_t r = mine[i];
    A* row = a.row_in_smem ? zrow : a.z + r * K;
    if (a.row_in_smem) {
      for (int64_t k = tid; k < K; k += blockDim.x) zrow[k] = __ldcg(a.z + r * K + k);
      __syncthreads();
    }
    const int64_t kout = run_tail(BlockGroup<A>{wred}, a.tail.ops, a.tail.n, row, r, K);
    for (int64_t k = tid; k < kout; k += blockDim.x) a.out[r * kout + k] = to_elem<O>(row[k]);
    if (tid == 0) a.row_counters[r] = 0u;
    __syncthreads();
  }
}

// The queue's counters (Workspace::counters, zero between runs).
struct FoldQueue {
  unsigned* next;           // the next ticket
  unsigned* left;           // blocks that have left
  unsigned* sample_planes;  // [N] planes of each sample whose sums are complete
  unsigned* plane_chunks;   // [N*C] chunks of each plane that are done
  unsigned units, items;    // units, then tiles
};

// ---- The kernel ------------------------------------------------------------------

template <class T, class S, class I, class O>
__global__ void __launch_bounds__(kFoldMaxThreads, sizeof(S) == 4 && sizeof(I) == 4 ? 4 : 1)
    fold_kernel(const T* __restrict__ x, const FoldGeometry geom, const FoldLaunch L, const ContractArgs<S, O> ca,
                const FoldQueue q, S* __restrict__ partial, S* __restrict__ sums) {
  // A kernel launched behind this one with PDL may be scheduled once every
  // block has started; it waits for our results.
  pdl_launch_dependents();

  // (The geometry is read from the parameter space: a copy in shared memory
  // made ptxas spill.)
  const FoldGeometry& g = geom;
  extern __shared__ __align__(16) unsigned char smem[];
  S* zrow = reinterpret_cast<S*>(smem);  // [K] when ca.row_in_smem
  __shared__ S B[kMaxBlocks];            // a unit's block sums; a tile's partial products
  __shared__ S red[33];
  __shared__ ReduceAcc<S> wred[33];
  __shared__ int64_t mine[kTileMaxRows];
  __shared__ int n_mine;
  __shared__ unsigned item_s;
  __shared__ int flag;

  const int tid = threadIdx.x, bd = blockDim.x;
  const int taps = g.taps(), nb = g.blocks();
  if (tid == 0) item_s = atomicAdd(q.next, 1u);
  __syncthreads();
  for (;;) {
    const unsigned item = item_s;
    if (item >= q.items) break;
    // The next ticket, taken now so that its latency hides behind this item.
    unsigned next = 0;
    if (tid == 0) next = atomicAdd(q.next, 1u);

    if (item < q.units) {
      const int64_t plane = item / L.chunks, ch = item - plane * L.chunks;
      for (int i = tid; i < nb; i += bd) B[i] = S(0);
      __syncthreads();
      sum_unit<T, S, I>(x, g, L, plane, ch, B, red);
      bool complete = true;
      if (L.chunks == 1) {
        for (int k = tid; k < taps; k += bd) sums[plane * taps + k] = g.tap_sum(B, k);
      } else {
        for (int k = tid; k < taps; k += bd) partial[int64_t(item) * taps + k] = g.tap_sum(B, k);
        __threadfence();
        __syncthreads();
        if (tid == 0) flag = atomicAdd(&q.plane_chunks[plane], 1u) == unsigned(L.chunks - 1);
        __syncthreads();
        complete = flag;
        if (complete) {
          for (int k = tid; k < taps; k += bd) {
            S s = S(0);
            for (int64_t c = 0; c < L.chunks; ++c) s += __ldcg(&partial[(plane * L.chunks + c) * taps + k]);
            sums[plane * taps + k] = s;
          }
          if (tid == 0) q.plane_chunks[plane] = 0u;  // back to zero for the next run
        }
      }
      if (complete) {
        __threadfence();
        __syncthreads();
        if (tid == 0) atomicAdd(&q.sample_planes[plane / g.C], 1u);
      }
    } else {
      contract_tile(ca, sums, q.sample_planes, int64_t(item - q.units), B, wred, mine, &n_mine, zrow);
    }
    __syncthreads();  // every thread has read item_s
    if (tid == 0) item_s = next;
    __syncthreads();
  }

  // The last block to leave resets the queue.
  if (tid == 0) {
    __threadfence();
    flag = atomicAdd(q.left, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (flag) {
    for (int64_t n = tid; n < g.N; n += bd) q.sample_planes[n] = 0u;
    if (tid == 0) *q.next = 0u, *q.left = 0u;
  }
}

// ---- Host side ----------------------------------------------------------------------

// Prepared once per plan: the typed kernel, the register block, the scratch
// layout, and the row chunks and grid for each warp count the tuner may choose.
template <class T, class A, class O>
class PreparedFold final : public PreparedStep {
 public:
  using S = A;  // plane sums: fp32 for f32/f16/bf16 inputs, fp64 for f64
  using Kernel = void (*)(const T*, const FoldGeometry, const FoldLaunch, const ContractArgs<S, O>, const FoldQueue, S*,
                          S*);

  explicit PreparedFold(const FoldStep<A>& step) : step_(step), g_(step.geom) {
    const DeviceInfo& dev = device_info();
    planes_ = g_.N * g_.C;
    taps_ = g_.taps();
    total_ = step.tail.R * step.tail.K;
    if (step.tail.K >= (int64_t(1) << 31))
      fail(ErrorCategory::unsupported, "fold (cuda)", "tail rows of ", step.tail.K, " values exceed the row counters");
    // 32-bit indices in the hot loop when a whole plane (the largest chunk) has
    // fewer than 2^31 elements, with room for one step of the loop.
    kernel_ = g_.H * g_.W < (int64_t(1) << 31) - (int64_t(1) << 16) ? fold_kernel<T, S, int, O>
                                                                      : fold_kernel<T, S, int64_t, O>;
    const FoldGeometry::Block m = g_.largest_block();
    L_.main_block = m.index;
    if (m.index >= 0) {
      const int mc = m.index % g_.col_segments;
      L_.rlo = m.rlo, L_.rhi = m.rhi, L_.clo = m.clo, L_.chi = m.chi;
      L_.cl2 = mc > 0 ? g_.col_cut[mc - 1] : L_.clo;
      L_.cr2 = mc + 1 < g_.col_segments ? g_.col_cut[mc + 2] : L_.chi;
    }
    // The contraction's tiles and the tail's shared row.
    ca_.con = step.contraction;
    ca_.tail = step.tail;
    ca_.C = g_.C;
    ca_.taps = taps_;
    ca_.tile = tuning::contraction_tile(total_, dev.limits.sm_count);
    ca_.total = total_;
    ca_.direct = step.tail.n == 0 && step.tail.K_out == step.tail.K;
    ca_.row_in_smem = step.tail.K * int64_t(sizeof(A)) <= 8 * 1024;
    smem_ = ca_.row_in_smem ? std::size_t(step.tail.K) * sizeof(A) : 0;
    const int64_t tiles = (total_ + ca_.tile - 1) / ca_.tile;
    // Row chunks per plane and the grid at each warp count: they follow the resident blocks.
    for (int w = 0; w < 2; ++w) {
      const int warps = 4 << w;
      const int64_t resident = int64_t(occupancy(kernel_, warps * 32, smem_)) * dev.limits.sm_count;
      const Overrides& ov = overrides();
      int64_t chunks = ov.fold_chunks ? ov.fold_chunks
                                      : tuning::fold_chunks(planes_, g_.H, g_.H * g_.W * int64_t(sizeof(T)), resident);
      const int64_t rows_per_chunk = std::max<int64_t>(1, (g_.H + chunks - 1) / std::max<int64_t>(chunks, 1));
      chunks = std::max<int64_t>(1, (g_.H + rows_per_chunk - 1) / rows_per_chunk);
      const int64_t items = planes_ * chunks + tiles;
      if (items + resident >= (int64_t(1) << 32))
        fail(ErrorCategory::unsupported, "fold (cuda)", planes_, " planes in ", chunks, " chunks and ", tiles,
             " contraction tiles exceed the work queue's 32-bit tickets");
      shapes_[w] = {chunks, rows_per_chunk, planes_ * chunks, items, std::min(resident, items)};
    }
    const auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
    sums_bytes_ = align(std::size_t(std::max<int64_t>(planes_ * taps_, 1)) * sizeof(S));
    z_bytes_ = align(std::size_t(std::max<int64_t>(total_, 1)) * sizeof(A));
    for (int w = 0; w < 2; ++w)
      partial_bytes_[w] = shapes_[w].chunks > 1 ? align(std::size_t(shapes_[w].units * taps_) * sizeof(S)) : 0;
  }

  void run(const TensorView& x, const TensorView& out) const override {
    if (total_ == 0) return;  // an empty output
    FoldGeometry g = g_;
    for (int d = 0; d < 4; ++d) g.xs[d] = x.strides[d];
    FoldLaunch L = L_;
    L.contiguous = (g.W == 1 || g.xs[3] == 1) && (g.H == 1 || g.xs[2] == g.W);
    Workspace& ws = workspace();
    // Counters: the queue's ticket and leavers, then per sample, per plane and per Z row.
    const std::size_t n_counters = std::size_t(2 + g_.N + planes_ + step_.tail.R);
    const auto fold = [&](int threads) {
      const WorkShape& sh = shapes_[threads > 128];
      FoldGeometry gc = g;
      FoldLaunch lc = L;
      gc.chunks = lc.chunks = sh.chunks;
      gc.rows_per_chunk = lc.rows_per_chunk = sh.rows_per_chunk;
      lc.units = sh.units;
      char* base = static_cast<char*>(ws.scratch(sums_bytes_ + partial_bytes_[threads > 128] + z_bytes_));
      unsigned* counters = ws.counters(n_counters);
      ContractArgs<S, O> ca = ca_;
      ca.z = reinterpret_cast<A*>(base + sums_bytes_ + partial_bytes_[threads > 128]);
      ca.row_counters = counters + 2 + g_.N + planes_;
      ca.out = static_cast<O*>(out.data);
      const FoldQueue q{counters, counters + 1, counters + 2, counters + 2 + g_.N, unsigned(sh.units),
                        unsigned(sh.items)};
      launch("kfuse::cuda::fold_kernel", kernel_, dim3(grid_of(sh.grid)), dim3(threads), smem_, false,
             static_cast<const T*>(x.data), gc, lc, ca, q, sh.chunks > 1 ? reinterpret_cast<S*>(base + sums_bytes_) : nullptr,
             reinterpret_cast<S*>(base));
    };
    try {
      // Warps per block (the tuner); a candidate is timed on this very input
      // (the kernel writes the output and scratch, and puts its counters back).
      const std::string shape =
          tuning::shape_class({{"planes", planes_}, {"plane", g.H * g.W}}) + "," + to_string(x.dtype);
      const int threads = tuned(kernel_, "cuda::fold", shape, true, [&](const tuning::LaunchConfig& c) {
                            return time_launches([&] { fold(c.threads()); });
                          }).threads();
      fold(threads);
    } catch (...) {
      ws.mark_dirty();  // a kernel may have stopped with counters raised
      throw;
    }
  }

  std::string describe() const override {
    return cat("one launch: plane sums (", shapes_[0].chunks, " row chunks per plane at 4 warps, ", shapes_[1].chunks,
               " at 8), contraction tiles of ", ca_.tile, " with the tail, a grid of at most the resident blocks (",
               shapes_[0].grid, " at 4 warps, ", shapes_[1].grid, " at 8)");
  }

 private:
  struct WorkShape {
    int64_t chunks, rows_per_chunk, units, items, grid;
  };
  FoldStep<A> step_;
  FoldGeometry g_;
  FoldLaunch L_{};
  Kernel kernel_ = nullptr;
  int64_t planes_ = 0, total_ = 0;
  int taps_ = 0;
  WorkShape shapes_[2]{};  // at 4 and 8 warps
  std::size_t sums_bytes_ = 0, z_bytes_ = 0, partial_bytes_[2]{}, smem_ = 0;
  ContractArgs<S, O> ca_{};
};

}  // namespace

Preparation prepare_fold(const FoldStep<float>& step, DType dtype) {
  switch (dtype) {
    case DType::f32: return Preparation::of<PreparedFold<float, float, float>>(step);
    case DType::f16: return Preparation::of<PreparedFold<__half, float, __half>>(step);
    case DType::bf16: return Preparation::of<PreparedFold<__nv_bfloat16, float, __nv_bfloat16>>(step);
    default: return Preparation::refuse(cat("a float32 fold does not read ", to_string(dtype)));
  }
}

Preparation prepare_fold(const FoldStep<double>& step, DType dtype) {
  if (dtype != DType::f64) return Preparation::refuse(cat("a float64 fold does not read ", to_string(dtype)));
  return Preparation::of<PreparedFold<double, double, double>>(step);
}

}  // namespace kfuse::detail::cuda
