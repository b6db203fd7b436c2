// The implicit-GEMM conv_transpose2d kernel (convt_igemm.cuh says what it
// computes and how). A header so that NVRTC compiles it again at plan time
// with a plan's point chains as straight-line code (jit.hpp): `Ch` runs them,
// as in the epilogue kernels (InterpretedChains in device.cuh, or a plan's
// PlanChains). Plain data and device code only: NVRTC-clean.
#pragma once

#include "backends/cuda/device.cuh"

namespace kfuse::detail::cuda {

enum class IgemmPrecision { tf32, tf32x3, bf16, f16 };

constexpr int kIgemmMaxPhases = 16;    // stride <= 4 per axis
constexpr int kIgemmMaxTaps = 8;       // taps per axis within one phase
constexpr int kIgemmMaxCols = 4;       // column phases one block computes
constexpr int kIgemmMaxGroupTaps = 8;  // their column taps together

// What one block computes: a row phase and `ncp` of its column phases (all
// s_w of them when s_w is 2 or 4, so that the tile's output columns are
// contiguous, stored in whole lines, and one copy of the input segments
// serves every column phase; one otherwise).
struct IgemmPhase {
  int rp, Hp, Th;    // output rows oh = rp + s_h*a (a < Hp); row taps (0: bias + epilogue only)
  int taps, Wpmax;   // the column phases' taps together; the widest phase grid
  int CH, TG;        // one stage: CH input channels x TG row taps x all column taps
  int nch, nstages;  // channel chunks; stages = nch * ceil(Th / TG)
  int emin;          // min over the column taps of ew
  int kh[kIgemmMaxTaps], eh[kIgemmMaxTaps];  // ih = a + eh
  // Column phase q: columns ow = cp + s_w*b (b < Wp), taps [tap0, tap0 + Tw) of kw / ew.
  int cp[kIgemmMaxCols], Wp[kIgemmMaxCols], Tw[kIgemmMaxCols], tap0[kIgemmMaxCols];
  int kw[kIgemmMaxGroupTaps], ew[kIgemmMaxGroupTaps];  // iw = b + ew
};

struct IgemmParams {
  int N, Cin, H, W, Cout, G, cin_g, cout_g, Hout, Wout, sh, sw;
  int ncp_log2;        // column phases per block (the same for every block)
  int bwp_log2, R;     // a column phase's tile: R rows x BWp columns of its grid (R * BWp * ncp = kBM)
  int SW, LDg;         // A segment width and the stride between (channel, row tap) groups, elements
  int a_stage_elems;   // elements of T per A stage
  int b_stage_words;   // 32-bit words per B stage
  int cipad, copad, kH, kW;
  int tiles_r, tiles_c, tiles_co, nphase;
  int vec_ok;          // x rows 16-byte aligned: W * sizeof(T) % 16 == 0 and x aligned
  int tma_ch;          // TMA: input channels per A box (the least CH of the phases; a stage's CH is a multiple)
  IgemmPhase ph[kIgemmMaxPhases];
};
// The kernel's parameters pass 4 KB with the tensor maps (CUDA 12.1 and
// later take 32 KB); the block of phases stays the bulk of them.
static_assert(sizeof(IgemmParams) <= 3900, "the conv kernel's parameters");

// The tensor maps of the TMA stage copies: two CUtensorMap (cuda.h's opaque
// 128-byte type on the host), x as [N*G][Cin/G][H][W] (boxes SW x R x tma_ch)
// and the packed weights as 32-bit words [G*kH*kW][Cin/G padded][Cout/G
// padded] (boxes kLDB x tma_ch words' rows x 1). Outside the tensor the copy
// fills zeros: padding, rows and columns past the input, channels past Cin/G.
struct alignas(64) IgemmTensorMaps {
  unsigned long long x[16], w[16];
};

// Kernel-side form of the epilogue: the point chain after the bias; mode 0
// stores it (map), 1 reduces it over C (`kind`, keepdim), 2 takes softmax
// over C, 3 reduces it over H and W (`kind`: sum, mean, max or min).
// `after` runs on what a reduction or softmax produces.
// Where a reduction spans several tiles (over C: a sample's channels in
// several channel tiles or groups; over H and W: always) each tile writes its
// part to `partials` (igemm_parts: row r's part k at r * row_stride + k *
// part_stride; a logsumexp's sums a plane further) and the host launches
// igemm_finish, which reduces each row's parts in a fixed order.
struct IgemmEpilogue {
  Chain<float> body;
  int mode = 0;
  ReduceKind kind = ReduceKind::sum;
  Chain<float> after;
  float* partials = nullptr;  // null: the reduction completes in the tile
};

// The parts of a reduction that spans tiles. Over C (mode 1): a row per
// output pixel (n * Hout * Wout + pixel), a part per channel tile of every
// group, laid out [part][row]. Over H and W (mode 3): a row per channel (n *
// Cout + co), a part per tile of its sample and channel tile (a block's row
// tile, column tile and phase), laid out [row][part].
struct IgemmParts {
  int64_t rows, parts, row_stride, part_stride;
};
__host__ __device__ inline IgemmParts igemm_parts(const IgemmParams& p, int mode) {
  if (mode == 3) {
    const int64_t tiles = int64_t(p.tiles_r) * p.tiles_c * p.nphase;
    return {int64_t(p.N) * p.Cout, tiles, tiles, 1};
  }
  const int64_t rows = int64_t(p.N) * p.Hout * p.Wout;
  return {rows, int64_t(p.G) * p.tiles_co, 1, rows};
}

namespace igemm {

constexpr int kBM = 256;      // pixels per tile
constexpr int kBN = 64;       // output channels per tile
constexpr int kThreads = 256; // 8 warps, 4 (M) x 2 (N), warp tile 64 x 32; a warp's rows in one column phase
constexpr int kLDB = kBN + 8; // words per B row (conflict-free fragment loads)
// Floats per staged output row: the tile's pixels, column phase q's from
// q * ((kBM + 32) >> ncp_log2) (padding that spreads the epilogue's reads of
// adjacent output columns, alternately from each phase, over all banks), and
// 4 more (the accumulators' stores conflict-free).
constexpr int kLDO = kBM + 32 + 4;
// The pipeline: stages and the bytes of weights one may hold, by how stages
// are copied. The TMA path takes 2 stages of up to 32 KB of weights (twice
// the channels a stage, half the stage overhead per multiply: the DESIGN
// example 2.22 -> 1.72 ms in TF32, H200, 2026-12-03, run H of the sixteenth
// session); cp.async keeps 3 of 16 KB (2 stages spill there).
__host__ __device__ constexpr int stages(bool tma) { return tma ? 2 : 3; }
// The TMA pipeline takes as many stage buffers as the block's shared memory
// holds, up to kMaxTmaStages: the host sizes it for stages(true) or for the
// epilogue's [channel][pixel] tile, whichever is larger, and where the tile is
// (small stages: few channels or one tap a phase) a third buffer keeps two
// stages in flight while one is multiplied.
constexpr int kMaxTmaStages = 4;
__host__ __device__ inline int tma_stage_buffers(int a_stage_elems, int b_stage_words, int elem_bytes,
                                                 unsigned smem_bytes) {
  const unsigned per_stage = unsigned(a_stage_elems * elem_bytes + b_stage_words * 4);
  return smem_bytes / per_stage < unsigned(kMaxTmaStages) ? int(smem_bytes / per_stage) : kMaxTmaStages;
}
constexpr int kStageBudgetA = 24 * 1024;  // bytes of A per stage at most
__host__ __device__ constexpr int stage_budget_b(bool tma) { return tma ? 32 * 1024 : 16 * 1024; }
// Channels of a pixel per chain call in the epilogue (values per dispatch of
// an interpreted chain); plan-time compilation may set it (KFUSE_CUDA_JIT_OPTIONS).
#ifndef KFUSE_IGEMM_EPI
#define KFUSE_IGEMM_EPI 4
#endif
constexpr int kIgemmEpi = KFUSE_IGEMM_EPI;
static_assert(kBN % kIgemmEpi == 0, "the epilogue steps through a tile's channels");

// The fast paths' compile-time segment widths (tiles of R rows x 128 columns:
// R = 2 with one column phase, R = 1 with two), each the least width of its
// 16-byte vectors whose 32-bit words leave the A fragment reads conflict-free
// (R * SW = 8 mod 32 words).
template <IgemmPrecision P>
__host__ __device__ constexpr int fast_sw(int R) {
  return P == IgemmPrecision::tf32 || P == IgemmPrecision::tf32x3 ? (R == 2 ? 148 : 168) : (R == 2 ? 168 : 144);
}

template <IgemmPrecision P> struct Traits;
template <> struct Traits<IgemmPrecision::tf32> {
  using T = float;
  static constexpr int kVec = 4, kKS = 8, kPair = 1;
};
template <> struct Traits<IgemmPrecision::tf32x3> : Traits<IgemmPrecision::tf32> {};
template <> struct Traits<IgemmPrecision::bf16> {
  using T = __nv_bfloat16;
  static constexpr int kVec = 8, kKS = 16, kPair = 2;
};
template <> struct Traits<IgemmPrecision::f16> : Traits<IgemmPrecision::bf16> {
  using T = __half;
};

// ---- Device helpers --------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Stage copies by the tensor memory accelerator, completed on an mbarrier a
// stage (sm_90+; compiled out for earlier targets).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KFUSE_IGEMM_TMA 1
#else
#define KFUSE_IGEMM_TMA 0
#endif
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
#if KFUSE_IGEMM_TMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, int bytes) {
#if KFUSE_IGEMM_TMA
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, int parity) {
#if KFUSE_IGEMM_TMA
  uint32_t done = 0;
  while (!done)
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
                 : "=r"(done)
                 : "r"(smem_u32(bar)), "r"(parity)
                 : "memory");
#endif
}
// The box of `map` at coordinates c (innermost first) into dst.
__device__ __forceinline__ void tma_box(void* dst, const void* map, uint64_t* bar, int c0, int c1, int c2, int c3) {
#if KFUSE_IGEMM_TMA
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];" ::"r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar))
      : "memory");
#endif
}
__device__ __forceinline__ void tma_box(void* dst, const void* map, uint64_t* bar, int c0, int c1, int c2) {
#if KFUSE_IGEMM_TMA
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];" ::"r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
#endif
}
// Bytes of dynamic shared memory this launch gave the block.
__device__ __forceinline__ uint32_t dynamic_smem_bytes() {
  uint32_t r;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
  return r;
}
// Orders this thread's earlier generic accesses to shared memory (the other
// threads', through the barrier before) before its next async-proxy writes.
__device__ __forceinline__ void fence_proxy_async() {
#if KFUSE_IGEMM_TMA
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <IgemmPrecision P>
__device__ __forceinline__ void mma_16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (P == IgemmPrecision::bf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ uint32_t ld_half_bits(const void* p) {
  return static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(p));
}

// Where one vector of kVec input elements starting at column iw lies in its
// row: wholly outside (zero fill), wholly inside and 16-byte aligned (one
// copy), or across an edge or unaligned (element by element).
enum class Span { outside, whole, partial };
__device__ __forceinline__ Span span_of(int iw, int kVec, int W, int vec_ok) {
  if (iw >= W || iw + kVec <= 0) return Span::outside;
  return vec_ok && iw >= 0 && iw + kVec <= W ? Span::whole : Span::partial;
}

// That vector of an A row segment into shared memory (16-bit types element by
// element with plain loads: cp.async moves 4 bytes at least). `row` is the
// input row (any address when !row_ok); `x` any valid address, the source of
// the zero fills.
template <int kVec, bool k16, class T>
__device__ __forceinline__ void stage_vector(T* dst, const T* row, const T* x, int iw, int W, bool row_ok, Span span) {
  if (!row_ok || span == Span::outside) {
    cp_async16(dst, x, false);
  } else if (span == Span::whole) {
    cp_async16(dst, row + iw, true);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const bool in = iw + e >= 0 && iw + e < W;
      if constexpr (k16) {
        dst[e] = in ? row[iw + e] : T(0.0f);
      } else {
        cp_async4(dst + e, in ? row + iw + e : x, in);
      }
    }
  }
}

}  // namespace igemm

// ---- The kernel ------------------------------------------------------------------

// The output pixel (oh * Wout + ow) at position mm of column phase q's run in
// the tile at (a0, b0) of the phase grid; false outside the output.
__device__ __forceinline__ bool igemm_pixel(const IgemmParams& p, const IgemmPhase& ph, int q, int mm, int a0, int b0,
                                            int bwp_log2, int64_t& pix) {
  const int a = a0 + (mm >> bwp_log2), b = b0 + (mm & ((1 << bwp_log2) - 1));
  pix = int64_t(ph.rp + p.sh * a) * p.Wout + ph.cp[q] + p.sw * b;
  return a < ph.Hp && b < ph.Wp[q];
}

// The bias and the chain on a thread's accumulators of its pixel i (8 pixels
// (mf, h) by 8 channels (nf, e), as the m16n8 fragments hold them: rows mf *
// 16 + h * 8 + gq of the warp's 64, channels wn * 32 + nf * 8 + 2 * tq + e of
// the tile), four channels of one parity (8 apart) a call; push(nf, e, v)
// takes each value, the values go back to acc. (Two channels a call, skipping
// those past the tile's channels, ran n3 0.219 -> 0.272 ms and
// convt_k2s2_lse_c_relu 0.346 -> 0.394 in bfloat16: H100, 2026-12-07.)
template <class Ch, class Push>
__device__ __forceinline__ void igemm_chain_regs(float (&acc)[4][4][4], int i, const IgemmEpilogue& ep,
                                                 const float* sbias, int64_t row0, int64_t pix, Push&& push) {
  const int lane = threadIdx.x & 31, wn = (threadIdx.x >> 5) & 1, tq = lane & 3;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int c0 = wn * 32 + 2 * tq + e;
    float v[4];  // channels c0 + 8 nf
#pragma unroll
    for (int nf = 0; nf < 4; ++nf) v[nf] = acc[i >> 1][nf][2 * (i & 1) + e] + sbias[c0 + 8 * nf];
    Ch::body(ep.body, v, row0 + c0, 8, pix, 0);
#pragma unroll
    for (int nf = 0; nf < 4; ++nf) {
      acc[i >> 1][nf][2 * (i & 1) + e] = v[nf];
      push(nf, e, v[nf]);
    }
  }
}

// Mode 3 with compiled chains: the tile's part of each channel's reduction
// over H and W from the accumulators in registers (no round trip through
// shared memory, no barrier before the chain): the bias and the chain on a
// thread's 8 pixels by 8 channels (igemm_chain_regs), pixels outside the
// output left out; the warp's 8 lanes of a channel pair (gq) join by
// shuffles, the block's 4 M warps through red[4][kBN] in shared memory, in a
// fixed order (bitwise reproducible). Channel c's part goes to out[c *
// row_stride]; the parts of sum and mean are sums (igemm_finish divides a
// mean by Hout * Wout). Probe n3 (relu, max over H and W of a k2 s2 conv
// into 151M values): 0.336 -> 0.222 ms in bfloat16, H100, 2026-12-07.
// Interpreted chains (the built-in kernels) take the tile path below: this
// one, inlined with the interpreter, spilled in the run-time-geometry kernels
// (sm_89, sm_90).
template <class Ch>
__device__ __forceinline__ void igemm_tile_parts_hw_regs(float (&acc)[4][4][4], const IgemmEpilogue& ep,
                                                         const IgemmParams& p, const IgemmPhase& ph, int64_t row0,
                                                         int nco, int a0, int b0, int q, int wq, int bwp_log2,
                                                         const float* sbias, float* red, float* out) {
  using namespace igemm;
  const ReduceKind kind = Ch::reduce_kind(ep.kind);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wn = warp & 1, wm = warp >> 1;
  const int gq = lane >> 2, tq = lane & 3;
  ReduceAcc<float> r[4][2];
#pragma unroll
  for (int nf = 0; nf < 4; ++nf) r[nf][0] = r[nf][1] = reduce_init<float>(kind);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    int64_t pix;
    if (igemm_pixel(p, ph, q, wq * 64 + (i >> 1) * 16 + (i & 1) * 8 + gq, a0, b0, bwp_log2, pix))
      igemm_chain_regs<Ch>(acc, i, ep, sbias, row0, pix, [&](int nf, int e, float v) { reduce_push(kind, r[nf][e], v); });
  }
#pragma unroll
  for (int off = 4; off < 32; off <<= 1)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf)
#pragma unroll
      for (int e = 0; e < 2; ++e) reduce_push(kind, r[nf][e], __shfl_xor_sync(0xffffffffu, r[nf][e].a, off));
  if (gq == 0)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf)
#pragma unroll
      for (int e = 0; e < 2; ++e) red[wm * kBN + wn * 32 + nf * 8 + 2 * tq + e] = r[nf][e].a;
  __syncthreads();
  if (tid >= nco) return;
  ReduceAcc<float> all = reduce_init<float>(kind);
  for (int w = 0; w < 4; ++w) reduce_push(kind, all, red[w * kBN + tid]);
  out[tid * igemm_parts(p, 3).row_stride] = all.a;
}

// Mode 1 with compiled chains: each pixel's reduction over the tile's
// channels from the accumulators in registers (no round trip through the
// [channel][pixel] tile): the bias and the chain as in mode 3, a pixel's 4
// lanes (tq) join by shuffles, the block's 2 N warps through red[2][kBM] in
// shared memory, and a thread a pixel (column phase fastest, as the tile path
// stores) joins them in a fixed order and finishes the reduction, or writes
// the tile's part (igemm_parts). A logsumexp takes two such passes: the max,
// then the sum of exp(v - max) over the values kept in acc. Channels past nco
// are left out; the kernel takes this path for more than 32 of them: with
// fewer, most of the chain's calls here are on channels past nco, and the
// tile path was faster (probe n4, groups of 16 channels, TF32: 0.685 ms
// there; here fused_conv lost to writing Y at 0.725; H100, 2026-12-07).
template <class Ch, class T>
__device__ __forceinline__ void igemm_tile_reduce_c_regs(float (&acc)[4][4][4], const IgemmEpilogue& ep,
                                                         const IgemmParams& p, const IgemmPhase& ph, int n,
                                                         int64_t row0, int nco, int part, int a0, int b0,
                                                         int ncp_log2, int bwp_log2, const float* sbias, float* red,
                                                         T* y) {
  using namespace igemm;
  const ReduceKind kind = Ch::reduce_kind(ep.kind);
  const bool lse = kind == ReduceKind::logsumexp;
  const ReduceKind first = lse ? ReduceKind::max : kind;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wn = warp & 1, wm = warp >> 1;
  const int gq = lane >> 2, tq = lane & 3;
  const int q = wm >> (2 - ncp_log2), wq = wm & ((4 >> ncp_log2) - 1);
  // A thread's pixel i: run position wq * 64 + i_off(i), block slot wm * 64 + i_off(i).
  auto i_off = [&](int i) { return (i >> 1) * 16 + (i & 1) * 8 + gq; };
  // Whether its value (nf, e) is of a channel of the tile's group.
  auto counts = [&](int nf, int e) { return wn * 32 + nf * 8 + 2 * tq + e < nco; };
  // This thread's values pushed into r[i], each pixel's 4 lanes and then the
  // 2 N warps joined into red (read after the barrier).
  auto join = [&](ReduceKind k, ReduceAcc<float> (&r)[8], float* to) {
#pragma unroll
    for (int off = 1; off < 4; off <<= 1)
#pragma unroll
      for (int i = 0; i < 8; ++i) reduce_push(k, r[i], __shfl_xor_sync(0xffffffffu, r[i].a, off));
    if (tq == 0)
#pragma unroll
      for (int i = 0; i < 8; ++i) to[wn * kBM + wm * 64 + i_off(i)] = r[i].a;
    __syncthreads();
  };
  ReduceAcc<float> r[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    r[i] = reduce_init<float>(first);
    int64_t pix;
    if (igemm_pixel(p, ph, q, wq * 64 + i_off(i), a0, b0, bwp_log2, pix))
      igemm_chain_regs<Ch>(acc, i, ep, sbias, row0, pix, [&](int nf, int e, float v) {
        if (counts(nf, e)) reduce_push(first, r[i], v);
      });
  }
  join(first, r, red);
  if (lse) {
    ReduceAcc<float> s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      s[i] = reduce_init<float>(ReduceKind::sum);
      const int slot = wm * 64 + i_off(i);
      const float mx = nan_max(red[slot], red[kBM + slot]);
#pragma unroll
      for (int e = 0; e < 2; ++e)
#pragma unroll
        for (int nf = 0; nf < 4; ++nf)
          if (counts(nf, e)) s[i].a += std::exp(acc[i >> 1][nf][2 * (i & 1) + e] - mx);
    }
    join(ReduceKind::sum, s, red + 2 * kBM);
  }
  // A thread a pixel, in the order the tile path stores.
  const int row_log2 = bwp_log2 + ncp_log2;
  const int u = tid & ((1 << row_log2) - 1), eq = u & ((1 << ncp_log2) - 1);
  const int mm = ((tid >> row_log2) << bwp_log2) + (u >> ncp_log2), slot = eq * (kBM >> ncp_log2) + mm;
  int64_t pix;
  if (!igemm_pixel(p, ph, eq, mm, a0, b0, bwp_log2, pix)) return;
  ReduceAcc<float> racc = reduce_init<float>(kind);
  if (lse) {
    const float mx = nan_max(red[slot], red[kBM + slot]);
    // NaN and infinities decide from mx alone (reduce_push_n)
    const bool finite = !is_nan(mx) && mx != inf<float>() && mx != -inf<float>();
    lse_merge(racc, mx, finite ? red[2 * kBM + slot] + red[3 * kBM + slot] : 1.0f);
  } else {
    reduce_push(kind, racc, red[slot]);
    reduce_push(kind, racc, red[kBM + slot]);
  }
  const int64_t HW = int64_t(p.Hout) * p.Wout;
  if (ep.partials) {  // this channel tile's part of the pixel's row (igemm_parts)
    const IgemmParts pp = igemm_parts(p, 1);
    float* to = ep.partials + part * pp.part_stride + n * HW + pix;
    to[0] = racc.a;
    if (lse) to[pp.rows * pp.parts] = racc.b;
    return;
  }
  float v[1] = {reduce_finish(kind, racc, int64_t(nco))};
  Ch::after(ep.after, v, n, 0, pix, 0);
  y[n * HW + pix] = to_elem<T>(v[0]);  // y is [N, 1, Hout, Wout]
}

// Mode 3 with interpreted chains (the built-in kernels): the tile's part of
// each channel's reduction over H and W, from the values in sO (pixels
// outside the output hold the identity). A column phase's pixels are one run
// of kBM >> ncp_log2 values from q * qstride, so four threads take a channel,
// each every fourth 16-byte vector of its runs, and two shuffles join them (a
// fixed order: bitwise reproducible); channel c's part goes to out[c *
// stride], sums for sum and mean as above. Out of line: inlined, it made
// ptxas spill in the main loop of the generic TF32 kernel (sm_90).
template <class Ch>
static __device__ __noinline__ void igemm_tile_parts_hw(const float* sO, int nco, int ncp_log2, ReduceKind k,
                                                        float* out, int64_t stride) {
  using namespace igemm;
  constexpr int kPer = kThreads / kBN;  // threads a channel
  static_assert(kPer == 4, "two shuffles join a channel's threads");
  const ReduceKind kind = Ch::reduce_kind(k);
  const int c = threadIdx.x / kPer, j = threadIdx.x % kPer;
  const int run = kBM >> ncp_log2, qstride = (kBM + 32) >> ncp_log2;
  ReduceAcc<float> acc = reduce_init<float>(kind);
  if (c < nco)
    for (int q = 0; q < (1 << ncp_log2); ++q) {
      const float* r = sO + c * kLDO + q * qstride;  // 16-byte aligned: kLDO and qstride are multiples of 4
      for (int i = 4 * j; i < run; i += 4 * kPer) {
        const float4 v = *reinterpret_cast<const float4*>(r + i);
        reduce_push(kind, acc, v.x);
        reduce_push(kind, acc, v.y);
        reduce_push(kind, acc, v.z);
        reduce_push(kind, acc, v.w);
      }
    }
#pragma unroll
  for (int off = kPer / 2; off > 0; off >>= 1) reduce_push(kind, acc, __shfl_xor_sync(0xffffffffu, acc.a, off));
  if (j == 0 && c < nco) out[c * stride] = acc.a;
}
static_assert(igemm::kLDO % 4 == 0 && ((igemm::kBM + 32) >> 2) % 4 == 0, "16-byte reads of sO's runs");

// kFastR: 0 for any tile shape (run-time geometry); else a fast path: tiles of
// kFastR rows x 128 columns, 2 / kFastR column phases, segment width
// fast_sw(kFastR): fragment offsets become immediates and the stage loads
// divide by constants.
// Parameters: x, bias and y of the pipeline's type; wp the packed weights.
// (One __grid_constant__ struct of them all ran it 3% slower without a chain:
// H200, 2026-12-02, perf/results/NVIDIA-H200-2026-12-02-summary.md.)
template <IgemmPrecision P, int kFastR, class Ch>
__global__ void __launch_bounds__(igemm::kThreads, 2)
    igemm_convt_kernel(const __grid_constant__ IgemmParams p, const typename igemm::Traits<P>::T* __restrict__ x,
                       const uint32_t* __restrict__ wp, const typename igemm::Traits<P>::T* __restrict__ bias,
                       typename igemm::Traits<P>::T* __restrict__ y, const IgemmEpilogue ep,
                       const __grid_constant__ IgemmTensorMaps tm) {
  using namespace igemm;
  using T = typename Traits<P>::T;
  constexpr int kVec = Traits<P>::kVec, kKS = Traits<P>::kKS, kPair = Traits<P>::kPair;
  constexpr bool k16 = kPair == 2;

  extern __shared__ __align__(128) uint4 smem_raw[];  // TMA boxes land on 128-byte boundaries
  __shared__ IgemmPhase ph;
  __shared__ uint64_t full[kMaxTmaStages];  // TMA: stage buffer s has landed (its phase flips each use)
  __shared__ int toff[kIgemmMaxTaps * kIgemmMaxGroupTaps];  // word offset of tap (th, t) in a group's weights
  __shared__ float sbias[kBN];
  constexpr bool kFast = kFastR != 0;
  constexpr int kSWc = kFast ? fast_sw<P>(kFastR) : 0;
  // The fast path copies its stages by the TMA on sm_90 and later (the host
  // launches it there only with the tensor maps; cp.async before sm_90).
  constexpr bool kTma = KFUSE_IGEMM_TMA && kFast;
  constexpr int kStages = stages(kTma);  // the host sized the stages for it (derive() in convt_igemm.cu)
  // Stage buffers: kStages for cp.async (its waits count commit groups at
  // compile time); with the TMA as many as the shared memory holds.
  const int nbuf =
      kTma ? tma_stage_buffers(p.a_stage_elems, p.b_stage_words, int(sizeof(T)), dynamic_smem_bytes()) : kStages;

  // Tile: phase fastest (with one column phase a block, the sibling column
  // phases of an output row are adjacent blocks), then the channel tile, column
  // tile, row tile, group, sample.
  int t = blockIdx.x;
  const int phi = t % p.nphase;
  t /= p.nphase;
  const int cot = t % p.tiles_co;
  t /= p.tiles_co;
  const int tc = t % p.tiles_c;
  t /= p.tiles_c;
  const int tr = t % p.tiles_r;
  t /= p.tiles_r;
  const int g = t % p.G;
  const int n = t / p.G;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int cipadw = p.cipad / kPair;
  // The phase in the parameter space: what the stage copies and the tile's
  // bounds read (valid before the barrier below); the main loop and the
  // epilogue read its copy in shared memory.
  const IgemmPhase& gp = p.ph[phi];

  // Mode 3: this block's parts, its channel c's at partial()[c * row_stride]
  // (from the block index alone: nothing held through the main loop).
  auto partial = [&] {
    const int64_t b = blockIdx.x, per_co = int64_t(p.nphase) * p.tiles_co;
    const int64_t row = b / (per_co * p.tiles_c * p.tiles_r) * p.cout_g + b / p.nphase % p.tiles_co * kBN;
    return ep.partials + row * igemm_parts(p, 3).row_stride + b / per_co % (p.tiles_r * p.tiles_c) * p.nphase +
           b % p.nphase;
  };
  const int a0 = tr * (kFast ? kFastR : p.R), b0 = tc << (kFast ? 7 : p.bwp_log2);
  if (a0 >= gp.Hp || b0 >= gp.Wpmax) {  // the phase grid is smaller than the largest one
    if (ep.mode == 3 && tid < min(kBN, p.cout_g - cot * kBN))
      partial()[tid * igemm_parts(p, 3).row_stride] = reduce_init<float>(Ch::reduce_kind(ep.kind)).a;
    return;
  }
  // The bias of channel tid (tid < kBN) goes to sbias after the first stage
  // copies went out: its load's latency off their path.
  float bias_v = 0.0f;
  {
    const int* src = reinterpret_cast<const int*>(&gp);
    int* dst = reinterpret_cast<int*>(&ph);
    for (int k = tid; k < int(sizeof(IgemmPhase) / sizeof(int)); k += kThreads) dst[k] = src[k];
    for (int k = tid; k < gp.Th * gp.taps; k += kThreads)
      toff[k] = (gp.kh[k / gp.taps] * p.kW + gp.kw[k % gp.taps]) * cipadw * p.copad;
    if (kTma && tid == 0)
      for (int s = 0; s < nbuf; ++s) mbar_init(&full[s]);
    const int co = cot * kBN + tid;
    if (tid < kBN && bias != nullptr && co < p.cout_g) bias_v = to_acc<float>(bias[g * p.cout_g + co]);
  }
  // (The barrier after this block comes with the first stage copies below.)

  // Warps 2k and 2k+1 share M rows (the 4 schedulers each get two column
  // phases' work when there are two); the M warps of a column phase are consecutive.
  const int wm = warp >> 1, wn = warp & 1;
  const int gq = lane >> 2, tq = lane & 3;
  const int ncp_log2 = kFast ? 2 / kFastR - 1 : p.ncp_log2;
  // This warp's column phase and its M warp within it (computed where used:
  // held through the main loop they cost the generic path a spill).
  auto warp_phase = [&] { return wm >> (2 - ncp_log2); };
  auto warp_in_phase = [&] { return wm & ((4 >> ncp_log2) - 1); };

  T* sA = reinterpret_cast<T*>(smem_raw);
  uint32_t* sB = reinterpret_cast<uint32_t*>(sA + nbuf * p.a_stage_elems);

  const int CH = gp.CH, TG = gp.TG, taps = gp.taps, Th = gp.Th, nch = gp.nch;
  const int chlog = __ffs(CH) - 1;
  const int CHw = CH / kPair, chwlog = chlog - (kPair == 2 ? 1 : 0);
  const int SW = kFast ? kSWc : p.SW, LDg = kFast ? kFastR * kSWc : p.LDg;
  const int R = kFast ? kFastR : p.R, rlog = kFast ? kFastR - 1 : __ffs(R) - 1;
  const int bwp_log2 = kFast ? 7 : p.bwp_log2;
  const int nvec_row = SW / kVec;
  // First input column of the segments (aligned down to a vector).
  const int iw_first = b0 + gp.emin;
  const int iw_al = (iw_first >= 0 ? iw_first / kVec : -((-iw_first + kVec - 1) / kVec)) * kVec;
  const int shift0 = b0 - iw_al;

  // This sample's group of input channels; offsets inside it are 32-bit
  // (igemm_why_not: its channels in whole stages x H x W under 2^31).
  const T* xg = x + (int64_t(n) * p.Cin + int64_t(g) * p.cin_g) * p.H * p.W;
  const int co0 = cot * kBN;
  const uint32_t* wg = wp + int64_t(g) * p.kH * p.kW * cipadw * p.copad + co0;
  // A thread copies one vector column of the A rows (fast path: every
  // kRowsA-th row; generic: a warp a row, a lane a vector) and one 16-byte
  // column of the B rows, every stage: its columns' spans are the tile's.
  constexpr int kNVfast = kFast ? kSWc / kVec : 1, kRowsA = kThreads / kNVfast;
  const int a_row0 = tid / kNVfast, a_iw = iw_al + (tid - a_row0 * kNVfast) * kVec;
  const Span a_span = span_of(a_iw, kVec, p.W, p.vec_ok);
  const int b_col = (tid & 15) * 4;
  const uint32_t* wb = wg + b_col;

  // Stages in order: channel chunk fastest, then row-tap group.
  auto load_stage = [&](int buf, int ci0, int th0) {
    const int tgc = min(TG, Th - th0);
    // A: rows (th_l, ci_l, r) of SW elements, contiguous in shared memory.
    T* dA = sA + buf * p.a_stage_elems;
    uint32_t* dB = sB + buf * p.b_stage_words;
    if constexpr (kTma) {  // one thread: per row tap, CH / tma_ch boxes of A and as many of each column tap's B rows
      if (tid == 0) {
        const int bch = p.tma_ch, bchw = bch / kPair;
        fence_proxy_async();
        mbar_expect_tx(&full[buf], tgc * (CH * LDg * int(sizeof(T)) + taps * CHw * kLDB * 4));
        for (int th_l = 0; th_l < tgc; ++th_l) {
          const int th = th0 + th_l;
          for (int c = 0; c < CH; c += bch)
            tma_box(dA + (th_l * CH + c) * LDg, tm.x, &full[buf], iw_al, a0 + gp.eh[th], ci0 + c, n * p.G + g);
          for (int t = 0; t < taps; ++t)
            for (int c = 0; c < CHw; c += bchw)
              tma_box(dB + ((th_l * taps + t) * CHw + c) * kLDB, tm.w, &full[buf], co0, ci0 / kPair + c,
                      (g * p.kH + gp.kh[th]) * p.kW + gp.kw[t]);
        }
      }
      return;
    }
    const int rowsA = tgc * CH * R;
    auto row_of = [&](int row, bool& ok) {
      const int r = row & (R - 1), rg = row >> rlog;
      const int ci = ci0 + (rg & (CH - 1)), ih = a0 + r + ph.eh[th0 + (rg >> chlog)];
      ok = ci < p.cin_g && unsigned(ih) < unsigned(p.H);
      return xg + (ci * p.H + ih) * p.W;
    };
    if constexpr (kFast) {
      if (a_row0 < kRowsA)
        for (int row = a_row0; row < rowsA; row += kRowsA) {
          bool ok;
          const T* src = row_of(row, ok);
          stage_vector<kVec, k16>(dA + row * kSWc + (a_iw - iw_al), src, x, a_iw, p.W, ok, a_span);
        }
    } else {
      for (int row = warp; row < rowsA; row += kThreads / 32) {
        bool ok;
        const T* src = row_of(row, ok);
        for (int v = lane; v < nvec_row; v += 32) {
          const int iw = iw_al + v * kVec;
          stage_vector<kVec, k16>(dA + row * SW + v * kVec, src, x, iw, p.W, ok, span_of(iw, kVec, p.W, p.vec_ok));
        }
      }
    }
    // B: rows (th_l, t, c) of kBN words: 16 vectors of 16 bytes each.
    const int rowsB = tgc * taps * CHw;
    const int ci0w = ci0 / kPair;
    for (int row = tid >> 4; row < rowsB; row += kThreads / 16) {
      const int cl = row & (CHw - 1), rest = row >> chwlog;
      const bool ok = ci0w + cl < cipadw;
      const int off = toff[th0 * taps + rest] + (ci0w + cl) * p.copad;  // within the group's weights
      cp_async16(dB + row * kLDB + b_col, ok ? wb + off : wp, ok);
    }
  };

  // Each thread's shared-memory offsets of its A rows (m, pixels of its
  // column phase's tile) within a group: aoff[mf] for row m = .. + mf*16 + gq,
  // and a8 from it to row m + 8 (the next tile row when BWp is 8, else 8
  // columns on). (Fast path: a warp's 64 rows lie in one tile row, so the
  // offsets are a per-thread base plus compile-time constants.)
  int aoff[4];
  const int wq = warp_in_phase();
  const int abase = shift0 + (kFast ? (kFastR == 2 ? (wq >> 1) * kSWc : 0) + (wq & 1) * 64 + gq : 0);
  const int a8 = kFast || bwp_log2 > 3 ? 8 : SW;
#pragma unroll
  for (int mf = 0; mf < 4; ++mf) {
    const int m = wq * 64 + mf * 16 + gq;
    aoff[mf] = kFast ? mf * 16 : (m >> bwp_log2) * SW + (m & ((1 << bwp_log2) - 1));
  }

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.0f;

  auto compute_stage = [&](int buf, int th0) {
    const int tgc = min(TG, Th - th0);
    const T* bufA = sA + buf * p.a_stage_elems;
    const uint32_t* bufB = sB + buf * p.b_stage_words + wn * 32 + gq;
    // This warp's column taps, as a mask of the group's (the fewest registers:
    // the generic path spills with their range held).
    const uint32_t mine = ((1u << ph.Tw[warp_phase()]) - 1u) << ph.tap0[warp_phase()];
    for (int th_l = 0; th_l < tgc; ++th_l) {
      for (int t = 0; t < taps; ++t) {
        if (!((mine >> t) & 1u)) continue;
        const T* aT = bufA + th_l * CH * LDg + ph.ew[t] + abase;
        const uint32_t* bT = bufB + (th_l * taps + t) * CHw * kLDB;
        for (int kc = 0; kc < CH / kKS; ++kc) {
          uint32_t bfr[4][2];
#pragma unroll
          for (int nf = 0; nf < 4; ++nf) {
            bfr[nf][0] = bT[(kc * 8 + tq) * kLDB + nf * 8];
            bfr[nf][1] = bT[(kc * 8 + tq + 4) * kLDB + nf * 8];
          }
          if constexpr (!k16) {
            const float* a = reinterpret_cast<const float*>(aT) + (kc * 8 + tq) * LDg;
            if constexpr (P == IgemmPrecision::tf32) {
#pragma unroll
              for (int mf = 0; mf < 4; ++mf) {
                uint32_t afr[4];
                afr[0] = to_tf32(a[aoff[mf]]);
                afr[1] = to_tf32(a[aoff[mf] + a8]);
                afr[2] = to_tf32(a[4 * LDg + aoff[mf]]);
                afr[3] = to_tf32(a[4 * LDg + aoff[mf] + a8]);
#pragma unroll
                for (int nf = 0; nf < 4; ++nf) mma_tf32(acc[mf][nf], afr, bfr[nf]);
              }
            } else {
              uint32_t bhi[4][2], blo[4][2];
#pragma unroll
              for (int nf = 0; nf < 4; ++nf)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                  const float f = __uint_as_float(bfr[nf][h]);
                  bhi[nf][h] = to_tf32(f);
                  blo[nf][h] = to_tf32(f - __uint_as_float(bhi[nf][h]));
                }
#pragma unroll
              for (int mf = 0; mf < 4; ++mf) {
                float av[4];
                av[0] = a[aoff[mf]];
                av[1] = a[aoff[mf] + a8];
                av[2] = a[4 * LDg + aoff[mf]];
                av[3] = a[4 * LDg + aoff[mf] + a8];
                uint32_t ahi[4], alo[4];
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                  ahi[q] = to_tf32(av[q]);
                  alo[q] = to_tf32(av[q] - __uint_as_float(ahi[q]));
                }
#pragma unroll
                for (int nf = 0; nf < 4; ++nf) {
                  mma_tf32(acc[mf][nf], alo, bhi[nf]);
                  mma_tf32(acc[mf][nf], ahi, blo[nf]);
                  mma_tf32(acc[mf][nf], ahi, bhi[nf]);
                }
              }
            }
          } else {
            // Register q holds k = 2tq (+8 for q >= 2) and k + 1 for row g (+8 for odd q).
            const T* a = aT + (kc * 16 + 2 * tq) * LDg;
#pragma unroll
            for (int mf = 0; mf < 4; ++mf) {
              uint32_t afr[4];
#pragma unroll
              for (int q = 0; q < 4; ++q) {
                const T* e = a + (q >= 2 ? 8 * LDg : 0) + aoff[mf] + (q & 1 ? a8 : 0);
                afr[q] = ld_half_bits(e) | (ld_half_bits(e + LDg) << 16);
              }
#pragma unroll
              for (int nf = 0; nf < 4; ++nf) mma_16<P>(acc[mf][nf], afr, bfr[nf]);
            }
          }
        }
      }
    }
  };

  const int nst = gp.nstages;
  int l_ci0 = 0, l_th0 = 0;  // the next stage to load
  auto advance = [&](int& ci0, int& th0) {
    ci0 += CH;
    if (ci0 >= nch * CH) {
      ci0 = 0;
      th0 += TG;
    }
  };
  // The prologue's barrier: cp.async copies need toff first; the TMA's first
  // stages go out before it (thread 0 initialised the mbarriers), so that
  // their latency overlaps the bias loads and the other threads' arrival.
  // (The main loop's barriers order sbias before the epilogue reads it.)
  if constexpr (!kTma) __syncthreads();
#pragma unroll
  for (int s = 0; s < nbuf - 1; ++s) {
    if (s < nst) {
      load_stage(s, l_ci0, l_th0);
      advance(l_ci0, l_th0);
    }
    cp_async_commit();
  }
  if (tid < kBN) sbias[tid] = bias_v;
  if constexpr (kTma) __syncthreads();
  int c_ci0 = 0, c_th0 = 0;  // the stage to compute
  int buf = 0, lbuf = nbuf - 1, parity = 0;  // parity: of buffer buf's current use
  for (int it = 0; it < nst; ++it) {
    if constexpr (kTma)
      mbar_wait(&full[buf], parity);
    else
      cp_async_wait<kStages - 2>();
    __syncthreads();
    if (it + nbuf - 1 < nst) {
      load_stage(lbuf, l_ci0, l_th0);
      advance(l_ci0, l_th0);
    }
    cp_async_commit();
    compute_stage(buf, c_th0);
    advance(c_ci0, c_th0);
    if (++buf == nbuf) {
      buf = 0;
      parity ^= 1;
    }
    lbuf = lbuf + 1 == nbuf ? 0 : lbuf + 1;
  }
  cp_async_wait<0>();
  __syncthreads();
  float* sO = reinterpret_cast<float*>(smem_raw);
  if constexpr (Ch::kCompiled) {
    const int64_t row0 = int64_t(n) * p.Cout + g * p.cout_g + co0;
    const int nco = min(kBN, p.cout_g - co0);
    if (ep.mode == 3) {
      igemm_tile_parts_hw_regs<Ch>(acc, ep, p, ph, row0, nco, a0, b0, warp_phase(), warp_in_phase(), bwp_log2, sbias,
                                   sO, partial());
      return;
    } else if (ep.mode == 1 && nco > 32) {
      igemm_tile_reduce_c_regs<Ch>(acc, ep, p, ph, n, row0, nco, g * p.tiles_co + cot, a0, b0, ncp_log2, bwp_log2,
                                   sbias, sO, y);
      return;
    }
  }

  // ---- Epilogue: accumulators -> shared memory [channel][pixel] ----
  const int qstride = (kBM + 32) >> ncp_log2;  // where column phase q's pixels start in a row of sO
#pragma unroll
  for (int mf = 0; mf < 4; ++mf)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf) {
      const int m = warp_phase() * qstride + warp_in_phase() * 64 + mf * 16 + gq, c = wn * 32 + nf * 8 + 2 * tq;
      sO[c * kLDO + m] = acc[mf][nf][0];
      sO[(c + 1) * kLDO + m] = acc[mf][nf][1];
      sO[c * kLDO + m + 8] = acc[mf][nf][2];
      sO[(c + 1) * kLDO + m + 8] = acc[mf][nf][3];
    }
  __syncthreads();

  // One pixel per thread, kIgemmEpi channels at a time: bias, the chain, the
  // store. Consecutive threads take a tile row's columns in output order:
  // column phase fastest, so with every column phase in the block they are
  // consecutive output columns (each warp store whole 128-byte lines);
  // with one, consecutive columns of the phase (s_w apart).
  const int row_log2 = bwp_log2 + ncp_log2;
  const int u = tid & ((1 << row_log2) - 1);
  const int eq = u & ((1 << ncp_log2) - 1), eb = u >> ncp_log2, er = tid >> row_log2;
  const int m = eq * qstride + (er << bwp_log2) + eb;
  const int a = a0 + er, b = b0 + eb;
  const bool inside = a < ph.Hp && b < ph.Wp[eq];
  if (!inside && ep.mode != 3) return;
  const int oh = ph.rp + p.sh * a, ow = ph.cp[eq] + p.sw * b;
  const int64_t HW = int64_t(p.Hout) * p.Wout;
  const int cog = g * p.cout_g;
  const int nco = min(kBN, p.cout_g - co0);
  // The chains index (row n*Cout + co, pixel oh*Wout + ow): value k of a call
  // is channel c0 + k of this pixel (ConvEpilogueStep).
  // (A pixel outside the output, in mode 3, runs the chain at pixel 0, where
  // operands are in bounds; its values become the reduction's identity.)
  const int64_t row0 = int64_t(n) * p.Cout + cog + co0, pix = inside ? int64_t(oh) * p.Wout + ow : 0;
  T* yp = y + row0 * HW + pix;
  // Bias and chain on kIgemmEpi channels at a time; a map stores them, a reduction
  // (or softmax) over C pushes them and keeps them in sO. This thread owns its
  // pixel's column of sO, so the tile's part of the reduction completes here, in
  // channel order (deterministic), with the shared reduce_init/push/finish
  // (math.hpp): the whole reduction where the tile holds every channel (a
  // softmax always: the host checked), else the part igemm_finish joins.
  // logsumexp (softmax too) takes two passes: the max, then exp(v - max) summed
  // (stored for softmax) and merged into the empty state as reduce_push_n merges
  // a group: one exp a value and no compares, where the online push costs two
  // exps, compares and branches a value (most of the epilogue's time).
  const bool map = ep.mode == 0;
  const ReduceKind kind = ep.mode == 2 ? ReduceKind::logsumexp : Ch::reduce_kind(ep.kind);
  const bool lse = kind == ReduceKind::logsumexp;
  ReduceAcc<float> racc = reduce_init<float>(lse ? ReduceKind::max : kind);
  // Over H and W (mode 3) the chain's values go back to sO, and the identity of
  // the reduction at pixels outside the output (this thread's, when not inside).
  const float identity = reduce_init<float>(kind).a;
  // The stores step a pointer through the channel planes (a 64-bit product a
  // store cost eight instructions).
  T* yc = yp;
  for (int c0 = 0; c0 < nco; c0 += kIgemmEpi) {
    float v[kIgemmEpi];
#pragma unroll
    for (int k = 0; k < kIgemmEpi; ++k) v[k] = sO[(c0 + k) * kLDO + m] + sbias[c0 + k];
    Ch::body(ep.body, v, row0 + c0, 1, pix, 0);
#pragma unroll
    for (int k = 0; k < kIgemmEpi; ++k, yc += HW)
      if (c0 + k < nco) {
        if (map) {
          *yc = to_elem<T>(v[k]);
        } else {
          if (ep.mode != 3) reduce_push(lse ? ReduceKind::max : kind, racc, v[k]);
          sO[(c0 + k) * kLDO + m] = inside ? v[k] : identity;
        }
      }
  }
  if (map) return;
  if (ep.mode == 3) {
    __syncthreads();
    igemm_tile_parts_hw<Ch>(sO, nco, ncp_log2, kind, partial(), igemm_parts(p, 3).row_stride);
    return;
  }
  if (lse) {
    const float mx = racc.a;
    float s = 0.f;
#pragma unroll 1  // unrolled, the generic 3xTF32 kernel spills on sm_90
    for (int c = 0; c < nco; ++c) {
      const float e = std::exp(sO[c * kLDO + m] - mx);
      s += e;
      sO[c * kLDO + m] = e;
    }
    racc = reduce_init<float>(kind);
    lse_merge(racc, mx, s);  // NaN and infinities decide from mx alone
  }
  if (ep.mode == 1 && ep.partials) {  // this channel tile's part of the pixel's row (igemm_parts)
    const IgemmParts pp = igemm_parts(p, 1);
    float* part = ep.partials + (g * p.tiles_co + co0 / kBN) * pp.part_stride + n * HW + pix;
    part[0] = racc.a;
    if (lse) part[pp.rows * pp.parts] = racc.b;
    return;
  }
  if (ep.mode == 1) {
    float r[1] = {reduce_finish(kind, racc, int64_t(nco))};
    Ch::after(ep.after, r, n, 0, pix, 0);
    y[n * HW + pix] = to_elem<T>(r[0]);  // y is [N, 1, Hout, Wout]
    return;
  }
  yc = yp;
  for (int c0 = 0; c0 < nco; c0 += kIgemmEpi) {
    float v[kIgemmEpi];
#pragma unroll
    for (int k = 0; k < kIgemmEpi; ++k) v[k] = softmax_of_exp(racc, sO[(c0 + k) * kLDO + m]);
    Ch::after(ep.after, v, row0 + c0, 1, pix, 0);
#pragma unroll
    for (int k = 0; k < kIgemmEpi; ++k, yc += HW)
      if (c0 + k < nco) *yc = to_elem<T>(v[k]);
  }
}

}  // namespace kfuse::detail::cuda
