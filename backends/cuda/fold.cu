// The fold on CUDA (DESIGN.md section 4), two launches:
//
//  1. fold_plane_sums: one block per (plane, row chunk) reads its part of x
//     once with 16-byte streaming loads and sums every segment block of
//     FoldGeometry. Elements of the largest block (the central one, where
//     every tap's range covers the row and the column) go to per-thread
//     register accumulators; the few border elements go to shared-memory
//     block sums (shared atomics). Each tap's rectangle sum is then a sum of
//     block sums (geom.tap_sum): exact, no cancellation. With several chunks
//     per plane, the last chunk to finish (a counter per plane) adds the
//     chunks' tap sums in chunk order (deterministic). The plane's block then
//     takes the plane's share of the contraction, P[n, c, j] = sum_t
//     weight[(c % cin_g, t), co0 + j] * S[n, c, t] for the cout_g outputs of
//     its group (weights read along Cout, coalesced; fetched into L2 when the
//     block starts).
//  2. fold_contract_tail: Z[n, co] = bias[co] + sum_c P[n, c, co % cout_g]
//     over the channels of co's group, in tiles of Z spread over the SMs,
//     then the tail program on each Z row (detail::run_tail). Rows of up to
//     512 values are whole in one tile: a warp runs each row's tail from
//     shared memory. Longer rows span tiles: the block that completes a row
//     (a counter per row) runs its tail. Only the output is stored. On
//     sm_90+ it is launched with programmatic dependent launch and waits for
//     the shares inside (griddepcontrol.wait).
//
// (The whole contraction in the second kernel, cin_g x taps terms an output
// with the weights from DRAM, took 8.5 us of seed 2's 37 on an H100. One
// launch, the sample's last plane adding the shares and running the tail,
// measured slower: 54 us for seed 2, 22 us at 4 MiB where two launches take
// 37 and 19 (H100, 2026-12-05): the per-block fence, arrival and
// contraction sat on every wave's critical path, and the tail's interpreter
// took the kernel from 64 to 80 registers.)
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
constexpr int kContractThreads = 256;
constexpr int kWholeRowsThreads = 512;  // blocks that hold whole tail rows

// Fetches the cache line holding p (global memory) into L2: no register is
// written and nothing waits for it.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(__cvta_generic_to_global(p)));
}

struct FoldLaunch {
  int64_t units;           // planes * chunks
  int64_t chunks, rows_per_chunk;
  int64_t rlo, rhi, clo, chi;  // the block accumulated in registers
  int main_block;              // its index in B (-1: empty planes)
  int contiguous;              // each plane is one contiguous run of H*W elements
  int64_t cl2, cr2;  // FoldGeometry::Block's: the column segments beside it, in registers too
};

// ---- Kernel 1: segment-block sums of each (plane, chunk) ----------------------
//
// 256-thread blocks an SM must hold: 4, so 64 registers and 8 blocks of 4
// warps an SM (seed 2's 1024 planes in one wave: ptxas alone took 72 and 7),
// where that does not spill: 32-bit indices and float sums.
template <class S, class I>
constexpr int kPlaneSumsMinBlocks = sizeof(S) == 4 && sizeof(I) == 4 ? 4 : 1;

// I is the index type of the hot loop: int when a chunk has fewer than 2^31
// elements (fewer registers, more resident blocks), else int64_t.
template <class T, class S, class I>
__global__ void __launch_bounds__(kFoldMaxThreads, kPlaneSumsMinBlocks<S, I>)
    fold_plane_sums(const T* __restrict__ x, const FoldGeometry geom, const FoldLaunch L, const FoldContraction<S> con,
                    S* __restrict__ partial, S* __restrict__ shares, unsigned* __restrict__ counters) {
  // The contraction (launched with PDL behind this grid) may be scheduled as
  // soon as every block of this grid has started; it waits for our results.
  pdl_launch_dependents();

  constexpr int VEC = Vec16<T>::kVec;
  constexpr int NACC = VEC < 4 ? VEC : 4;  // independent register accumulators
  // (The geometry is read from the parameter space: a copy in shared memory
  // made ptxas spill.)
  const FoldGeometry& g = geom;
  __shared__ S B[kMaxBlocks];
  __shared__ S red[33];
  __shared__ S ts[kFoldMaxTaps * kFoldMaxTaps];  // the plane's tap sums
  __shared__ int last_chunk;

  const int tid = threadIdx.x, bd = blockDim.x;
  const int taps = geom.kH * geom.kW, nb = geom.row_segments * geom.col_segments;
  const int cs = geom.col_segments;
  const int64_t H = geom.H, W = geom.W, C = geom.C;

  for (int64_t u = blockIdx.x; u < L.units; u += gridDim.x) {
    const int64_t plane = u / L.chunks, ch = u - plane * L.chunks;
    const int64_t r0 = ch * L.rows_per_chunk, r1 = min(H, r0 + L.rows_per_chunk);
    // The plane's weights, [taps, cout_g] at a row stride of Cout: into L2
    // now, for the share at the end.
    constexpr int64_t kLine = 128 / sizeof(S);  // values a cache line
    const int64_t cg = con.cout_g, lines = cg / kLine + 1;
    const S* w = con.channel_weights(plane % C, taps);
    for (int64_t i = tid; i < taps * lines; i += bd)
      prefetch_l2(w + (i / lines) * con.Cout + min((i % lines) * kLine, cg - 1));
    for (int i = tid; i < nb; i += bd) B[i] = S(0);
    __syncthreads();

    const T* p = x + (plane / C) * geom.xs[0] + (plane % C) * geom.xs[1];
    S acc[NACC];
#pragma unroll
    for (int k = 0; k < NACC; ++k) acc[k] = S(0);
    S acc_left = S(0), acc_right = S(0);

    // One border element at (absolute row r, column c): a shared-memory block sum.
    const auto border = [&](int64_t r, int64_t c, S v) {
      atomicAdd(&B[g.row_segment(r) * cs + g.col_segment(c)], v);
    };

    if (L.contiguous) {
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
    } else {
      // Strided planes: element by element.
      const int64_t n = (r1 - r0) * W;
      for (int64_t e = tid; e < n; e += bd) {
        const int64_t r = r0 + e / W, c = e % W;
        const S v = to_acc<S>(p[r * geom.xs[2] + c * geom.xs[3]]);
        if (r >= L.rlo && r < L.rhi && c >= L.clo && c < L.chi) acc[0] += v;
        else border(r, c, v);
      }
    }

    if (L.contiguous) {
      // (Only the vector loop fills these: contiguous planes.)
      acc_left = warp_sum(acc_left);
      acc_right = warp_sum(acc_right);
      if ((tid & 31) == 0 && acc_left != S(0)) atomicAdd(&B[L.main_block - 1], acc_left);
      if ((tid & 31) == 0 && acc_right != S(0)) atomicAdd(&B[L.main_block + 1], acc_right);
    }
    S t = S(0);
#pragma unroll
    for (int k = 0; k < NACC; ++k) t += acc[k];
    t = block_sum(t, red);  // ends with a barrier: the shared atomics are complete too
    if (tid == 0 && L.main_block >= 0) B[L.main_block] += t;
    __syncthreads();

    if (L.chunks == 1) {
      for (int k = tid; k < taps; k += bd) ts[k] = g.tap_sum(B, k);
    } else {
      for (int k = tid; k < taps; k += bd) partial[u * taps + k] = g.tap_sum(B, k);
      __threadfence();
      __syncthreads();
      if (tid == 0) last_chunk = atomicAdd(&counters[plane], 1u) == unsigned(L.chunks - 1);
      __syncthreads();
      if (!last_chunk) continue;  // (uniform: last_chunk is shared)
      for (int k = tid; k < taps; k += bd) {
        S s = S(0);
        for (int64_t c = 0; c < L.chunks; ++c) s += __ldcg(&partial[(plane * L.chunks + c) * taps + k]);
        ts[k] = s;
      }
      if (tid == 0) counters[plane] = 0u;  // back to zero for the next run
    }
    __syncthreads();
    // The plane's share: an output of its group a thread.
    for (int64_t j = tid; j < cg; j += bd) {
      S p[4] = {S(0), S(0), S(0), S(0)};
      int t = 0;
      for (; t + 3 < taps; t += 4) {
#pragma unroll
        for (int k = 0; k < 4; ++k) p[k] += w[(t + k) * con.Cout + j] * ts[t + k];
      }
      for (; t < taps; ++t) p[0] += w[t * con.Cout + j] * ts[t];
      shares[plane * cg + j] = (p[0] + p[1]) + (p[2] + p[3]);
    }
    __syncthreads();
  }
}

// ---- Kernel 2: contraction fused with the tail ----------------------------------

template <class A, class O>
struct ContractArgs {
  FoldContraction<A> con;
  Tail<A> tail;
  const A* shares;         // [N*C, cout_g]
  int64_t C;
  int tile;                // Z values per block: a power of two dividing blockDim
  int64_t total;           // R*K
  A* z;                    // [R*K] scratch (rows whose tail runs later)
  unsigned* row_counters;  // [R], zero between runs
  O* out;
  int direct;              // no tail ops: Z is the output
  int whole_rows;          // tile = whole rows of K: their tails run in the block
  int row_in_smem;         // the tail's rows fit in shared memory
  int ops_bytes;           // the tail's ops, copied to shared memory: a multiple of 16
};

template <class A, class O>
__global__ void __launch_bounds__(kWholeRowsThreads, 1) fold_contract_tail(const ContractArgs<A, O> a) {
  static_assert(sizeof(TailOp<A>) % sizeof(unsigned) == 0, "the tail's ops are copied as words");
  extern __shared__ __align__(16) unsigned char smem[];
  TailOp<A>* ops = reinterpret_cast<TailOp<A>*>(smem);  // [tail.n]
  A* red = reinterpret_cast<A*>(smem + a.ops_bytes);    // [blockDim]
  A* zrow = red + blockDim.x;                           // [tile] when whole_rows, else [K] when row_in_smem
  __shared__ ReduceAcc<A> wred[33];
  __shared__ int64_t mine[kTileMaxRows];
  __shared__ int n_mine;

  // Thread (s, j): Z value z0 + j, the channels s, s + QS, ... of its group
  // (where the tile does not divide the block, threads past the QS whole
  // slices take none).
  const int tid = threadIdx.x, TZ = a.tile, j = tid % TZ, s = tid / TZ, QS = blockDim.x / TZ;
  const int64_t Cout = a.con.Cout, K = a.tail.K, cg = a.con.cout_g, kg = a.con.cin_g;
  const int64_t z0 = int64_t(blockIdx.x) * TZ, zi = z0 + j;
  const bool valid = zi < a.total && s < QS;
  const int64_t n = valid ? zi / Cout : 0, co = valid ? zi - n * Cout : 0;
  const A* sp = a.con.output_shares(a.shares, a.C, n, co);  // channel q's share at sp[q * cg]

  // Plan constants, read while the plane sums finish: the tail's ops (the
  // interpreter reads an op's fields as it goes, a dependent load each, from
  // DRAM after an L2 flush) and this thread's bias.
  for (int i = tid; i < int(a.tail.n * sizeof(TailOp<A>) / sizeof(unsigned)); i += blockDim.x)
    reinterpret_cast<unsigned*>(ops)[i] = load_invariant(reinterpret_cast<const unsigned*>(a.tail.ops) + i);
  const A bias = valid && s == 0 ? a.con.bias[co] : A(0);

  pdl_wait();  // the shares are complete and visible from here on

  A part = A(0);
  if (valid) {
    A p[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) p[k] = A(0);
    int64_t q = s;
    for (; q + 7 * QS < kg; q += 8 * QS) {
#pragma unroll
      for (int k = 0; k < 8; ++k) p[k] += sp[(q + k * QS) * cg];
    }
    for (; q < kg; q += QS) p[0] += sp[q * cg];
    part = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  }
  red[tid] = part;  // red[s * TZ + j]
  __syncthreads();
  if (s == 0 && valid) {
    A v = bias;
    for (int k = 0; k < QS; ++k) v += red[k * TZ + j];
    if (K == 1) {
      // A row of one value: this thread's (not a block's tail a row, one after another).
      run_tail(ThreadGroup<A>{}, ops, a.tail.n, &v, zi, 1);
      a.out[zi] = to_elem<O>(v);
    } else if (a.direct) {
      a.out[zi] = to_elem<O>(v);
    } else if (a.whole_rows) {
      zrow[j] = v;
    } else {
      a.z[zi] = v;
    }
  }
  if (a.direct || K == 1) return;

  if (a.whole_rows) {
    // A warp a row, from shared memory: shuffles, no block barrier, no
    // fence and counter, no round trip of Z through L2.
    __syncthreads();
    const int64_t rows = (min(a.total, z0 + TZ) - z0) / K;
    for (int64_t i = tid / 32; i < rows; i += blockDim.x / 32) {
      const int64_t r = z0 / K + i;
      A* row = zrow + i * K;
      const int64_t kout = run_tail(WarpGroup<A>{}, ops, a.tail.n, row, r, K);
      for (int64_t k = tid % 32; k < kout; k += 32) a.out[r * kout + k] = to_elem<O>(row[k]);
    }
    return;
  }

  // The block that completes a row runs its tail.
  __threadfence();
  if (tid == 0) n_mine = 0;
  __syncthreads();
  const int64_t zend = min(a.total, z0 + TZ);
  const int64_t rfirst = z0 / K, rlast = (zend - 1) / K;
  for (int64_t r = rfirst + tid; r <= rlast; r += blockDim.x) {
    const int64_t lo = max(z0, r * K), hi = min(zend, (r + 1) * K);
    const unsigned cnt = static_cast<unsigned>(hi - lo);
    const unsigned prev = atomicAdd(&a.row_counters[r], cnt);
    if (int64_t(prev) + cnt == K) mine[atomicAdd(&n_mine, 1)] = r;
  }
  __syncthreads();
  const int rows = n_mine;
  for (int i = 0; i < rows; ++i) {
    const int64_t r = mine[i];
    A* row = a.row_in_smem ? zrow : a.z + r * K;
    if (a.row_in_smem) {
      for (int64_t k = tid; k < K; k += blockDim.x) zrow[k] = __ldcg(a.z + r * K + k);
      __syncthreads();
    }
    const int64_t kout = run_tail(BlockGroup<A>{wred}, ops, a.tail.n, row, r, K);
    for (int64_t k = tid; k < kout; k += blockDim.x) a.out[r * kout + k] = to_elem<O>(row[k]);
    if (tid == 0) a.row_counters[r] = 0u;
    __syncthreads();
  }
}

// ---- Host side ----------------------------------------------------------------------

// Prepared once per plan: the typed kernels, the register block, the scratch
// layout, and the row chunks for each warp count the tuner may choose.
template <class T, class A, class O>
class PreparedFold final : public PreparedStep {
 public:
  using S = A;  // plane sums: fp32 for f32/f16/bf16 inputs, fp64 for f64

  explicit PreparedFold(const FoldStep<A>& step) : step_(step), g_(step.geom) {
    const DeviceInfo& dev = device_info();
    planes_ = g_.N * g_.C;
    taps_ = g_.taps();
    total_ = step.tail.R * step.tail.K;
    if (step.tail.K >= (int64_t(1) << 31))
      fail(ErrorCategory::unsupported, "fold (cuda)", "tail rows of ", step.tail.K, " values exceed the row counters");
    // 32-bit indices in the hot loop when a whole plane (the largest chunk) has
    // fewer than 2^31 elements, with room for one step of the loop.
    sums_kernel_ = g_.H * g_.W < (int64_t(1) << 31) - (int64_t(1) << 16) ? fold_plane_sums<T, S, int>
                                                                          : fold_plane_sums<T, S, int64_t>;
    const FoldGeometry::Block m = g_.largest_block();
    L_.main_block = m.index;
    if (m.index >= 0) L_.rlo = m.rlo, L_.rhi = m.rhi, L_.clo = m.clo, L_.chi = m.chi, L_.cl2 = m.cl2, L_.cr2 = m.cr2;
    // Row chunks per plane at each warp count: they follow the resident blocks.
    for (int w = 0; w < 2; ++w) {
      const int warps = 4 << w;
      const int64_t resident = int64_t(occupancy(sums_kernel_, warps * 32, 0)) * dev.limits.sm_count;
      const Overrides& ov = overrides();
      int64_t chunks = ov.fold_chunks ? ov.fold_chunks
                                      : tuning::fold_chunks(planes_, g_.H, g_.H * g_.W * int64_t(sizeof(T)), resident);
      const int64_t rows_per_chunk = std::max<int64_t>(1, (g_.H + chunks - 1) / std::max<int64_t>(chunks, 1));
      chunks = std::max<int64_t>(1, (g_.H + rows_per_chunk - 1) / rows_per_chunk);
      chunked_[w] = {chunks, rows_per_chunk};
    }
    const auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
    shares_bytes_ = align(std::size_t(std::max<int64_t>(planes_ * step.contraction.cout_g, 1)) * sizeof(S));
    z_bytes_ = align(std::size_t(std::max<int64_t>(total_, 1)) * sizeof(A));
    for (int w = 0; w < 2; ++w)
      partial_bytes_[w] = chunked_[w].chunks > 1 ? align(std::size_t(planes_ * chunked_[w].chunks * taps_) * sizeof(S)) : 0;
    // The contraction's tile and shared memory.
    ca_.con = step.contraction;
    ca_.tail = step.tail;
    ca_.C = g_.C;
    ca_.tile = tuning::contraction_tile(total_, dev.limits.sm_count);
    ca_.total = total_;
    ca_.direct = step.tail.n == 0 && step.tail.K_out == step.tail.K;
    const int64_t K = step.tail.K;
    ca_.whole_rows = !ca_.direct && K > 1 && K <= kWholeRowsThreads && overrides().fold_whole_rows;
    contract_threads_ = kContractThreads;
    if (ca_.whole_rows) {
      // As many whole rows as the power-of-two tile holds (at least one), and
      // up to 16 slices of a tile's channels (the more slices, the fewer
      // dependent loads a thread).
      ca_.tile = int(K * std::max<int64_t>(1, ca_.tile / K));
      contract_threads_ = int(std::min<int64_t>(kWholeRowsThreads, (int64_t(ca_.tile) * 16 + 31) / 32 * 32));
    }
    ca_.row_in_smem = K * int64_t(sizeof(A)) <= 32 * 1024;
    ca_.ops_bytes = int((std::size_t(step.tail.n) * sizeof(TailOp<A>) + 15) / 16 * 16);
    const int64_t zrow = ca_.whole_rows ? ca_.tile : ca_.row_in_smem ? K : 0;
    contract_smem_ = ca_.ops_bytes + std::size_t(contract_threads_ + zrow) * sizeof(A);
  }

  void run(const TensorView& x, const TensorView& out) const override {
    FoldGeometry g = g_;
    for (int d = 0; d < 4; ++d) g.xs[d] = x.strides[d];
    FoldLaunch L = L_;
    L.contiguous = (g.W == 1 || g.xs[3] == 1) && (g.H == 1 || g.xs[2] == g.W);
    const auto with_chunks = [&](int warps, FoldGeometry& gc, FoldLaunch& lc) {
      const Chunks& c = chunked_[warps > 4];
      gc.chunks = lc.chunks = c.chunks;
      gc.rows_per_chunk = lc.rows_per_chunk = c.rows_per_chunk;
      lc.units = planes_ * c.chunks;
    };
    Workspace& ws = workspace();
    const auto scratch = [&](int warps) {
      return static_cast<char*>(ws.scratch(shares_bytes_ + partial_bytes_[warps > 4] + z_bytes_));
    };
    const auto plane_sums = [&](const FoldGeometry& gc, const FoldLaunch& lc, int threads) {
      char* base = scratch(threads / 32);
      S* partial = lc.chunks > 1 ? reinterpret_cast<S*>(base + shares_bytes_) : nullptr;
      launch("kfuse::cuda::fold_plane_sums", sums_kernel_, dim3(grid_of(lc.units)), dim3(threads), 0, false,
             static_cast<const T*>(x.data), gc, lc, step_.contraction, partial, reinterpret_cast<S*>(base),
             ws.counters(std::size_t(planes_ + step_.tail.R)));
    };
    const bool sums_kernel = planes_ > 0 && g.H > 0 && g.W > 0;
    try {
      // Warps per block of the plane sums (the tuner); a candidate is timed on
      // this very input (the kernel only writes scratch and puts its counters back).
      int threads = tuning::baseline_launch().threads();  // (no plane sums to launch: unused)
      if (sums_kernel) {
        const std::string shape =
            tuning::shape_class({{"planes", planes_}, {"plane", g.H * g.W}}) + "," + to_string(x.dtype);
        threads = tuned(sums_kernel_, "cuda::fold_plane_sums", shape, true, [&](const tuning::LaunchConfig& c) {
                    FoldGeometry gc = g;
                    FoldLaunch lc = L;
                    with_chunks(c.warps, gc, lc);
                    return time_launches([&] { plane_sums(gc, lc, c.threads()); });
                  }).threads();
      }
      with_chunks(threads / 32, g, L);
      char* base = scratch(threads / 32);
      S* shares = reinterpret_cast<S*>(base);
      A* z = reinterpret_cast<A*>(base + shares_bytes_ + partial_bytes_[threads / 32 > 4]);
      unsigned* counters = ws.counters(std::size_t(planes_ + step_.tail.R));

      bool launched = false;
      if (L.units > 0 && !sums_kernel) {
        // Empty planes: every tap sum, so every share, is zero.
        KFUSE_CUDA_CHECK(cudaMemsetAsync(shares, 0, std::size_t(planes_ * step_.contraction.cout_g) * sizeof(S), stream()),
                         "empty planes");
      } else if (L.units > 0) {
        plane_sums(g, L, threads);
        launched = true;
      }
      if (total_ > 0) {
        ContractArgs<A, O> ca = ca_;
        ca.shares = shares;
        ca.z = z;
        ca.row_counters = counters + planes_;
        ca.out = static_cast<O*>(out.data);
        launch("kfuse::cuda::fold_contract_tail", fold_contract_tail<A, O>,
               dim3(grid_of((total_ + ca.tile - 1) / ca.tile)), dim3(contract_threads_), contract_smem_,
               pdl_enabled() && launched, ca);
      }
    } catch (...) {
      ws.mark_dirty();  // a kernel may have stopped with counters raised
      throw;
    }
  }

  std::string describe() const override {
    return cat("plane sums and each plane's share of the contraction (", chunked_[0].chunks,
               " row chunks per plane at 4 warps, ", chunked_[1].chunks, " at 8), then the shares added in tiles of ",
               ca_.tile, ca_.whole_rows ? " (whole tail rows, a warp's tail each)" : "", " with the tail");
  }

 private:
  struct Chunks {
    int64_t chunks, rows_per_chunk;
  };
  FoldStep<A> step_;
  FoldGeometry g_;
  FoldLaunch L_{};
  void (*sums_kernel_)(const T*, const FoldGeometry, const FoldLaunch, const FoldContraction<S>, S*, S*, unsigned*) = nullptr;
  int64_t planes_ = 0, total_ = 0;
  int taps_ = 0;
  Chunks chunked_[2]{};  // at 4 and 8 warps
  std::size_t shares_bytes_ = 0, z_bytes_ = 0, partial_bytes_[2]{}, contract_smem_ = 0;
  int contract_threads_ = kContractThreads;
  ContractArgs<A, O> ca_{};
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
