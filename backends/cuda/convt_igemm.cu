// Implicit-GEMM conv_transpose2d on tensor cores with the epilogue before the
// one store. The method and the interface: convt_igemm.cuh.
#include "backends/cuda/convt_igemm.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <sstream>

#include "core/cuda_check.hpp"
#include "backends/cuda/device.cuh"
#include "kfuse/error.hpp"

namespace kfuse::detail::cuda {

namespace {

constexpr int kBM = 256;      // pixels per tile
constexpr int kBN = 64;       // output channels per tile
constexpr int kThreads = 256; // 8 warps, 4 (M) x 2 (N), warp tile 64 x 32
constexpr int kStages = 3;    // cp.async pipeline depth
constexpr int kLDB = kBN + 8; // words per B row (conflict-free fragment loads)
constexpr int kLDO = kBM + 4; // floats per staged output row
constexpr int kStageBudgetA = 24 * 1024;  // bytes of A per stage at most
constexpr int kStageBudgetB = 16 * 1024;  // bytes of B per stage at most

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

int elem_size(IgemmPrecision p) { return (p == IgemmPrecision::tf32 || p == IgemmPrecision::tf32x3) ? 4 : 2; }
int vec_elems(IgemmPrecision p) { return 16 / elem_size(p); }
int kstep_channels(IgemmPrecision p) { return elem_size(p) == 4 ? 8 : 16; }

int ilog2(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t pmod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

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

// One vector of kVec input elements of an A row segment into shared memory:
// zeros outside the input, one 16-byte copy where aligned and inside, else
// element by element (16-bit types by plain loads: cp.async moves 4 bytes at
// least). `x` is any valid address, the source of the zero fills.
template <int kVec, bool k16, class T>
__device__ __forceinline__ void stage_vector(T* dst, const T* src, const T* x, int iw, int W, bool row_ok, int vec_ok) {
  if (!row_ok || iw >= W || iw + kVec <= 0) {
    cp_async16(dst, x, false);
  } else if (vec_ok && iw >= 0 && iw + kVec <= W) {
    cp_async16(dst, src + iw, true);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const bool in = iw + e >= 0 && iw + e < W;
      if constexpr (k16) {
        dst[e] = in ? src[iw + e] : T(0.0f);
      } else {
        cp_async4(dst + e, in ? src + iw + e : x, in);
      }
    }
  }
}

// ---- The kernel ------------------------------------------------------------------

// kSWc: 0 for any tile shape (run-time segment width); else the compile-time
// segment width of the fast path (tiles of 2 rows x 128 columns): fragment
// offsets become immediates and the stage loads divide by constants.
template <IgemmPrecision P, int kSWc>
__global__ void __launch_bounds__(kThreads, 2)
    igemm_convt_kernel(const __grid_constant__ IgemmParams p, const typename Traits<P>::T* __restrict__ x,
                       const uint32_t* __restrict__ wp, const typename Traits<P>::T* __restrict__ bias,
                       typename Traits<P>::T* __restrict__ y, const IgemmEpilogue ep) {
  using T = typename Traits<P>::T;
  constexpr int kVec = Traits<P>::kVec, kKS = Traits<P>::kKS, kPair = Traits<P>::kPair;
  constexpr bool k16 = kPair == 2;

  extern __shared__ uint4 smem_raw[];
  __shared__ IgemmPhase ph;
  __shared__ int toff[kIgemmMaxTaps * kIgemmMaxTaps];  // word offset of tap (th, tw) in a group's weights
  __shared__ float sbias[kBN];
  constexpr bool kFast = kSWc != 0;

  // Tile: phase fastest (the sibling column phases of an output row are
  // adjacent blocks), then the channel tile, column tile, row tile, group, sample.
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
  {
    const int* src = reinterpret_cast<const int*>(&p.ph[phi]);
    int* dst = reinterpret_cast<int*>(&ph);
    for (int k = tid; k < int(sizeof(IgemmPhase) / sizeof(int)); k += kThreads) dst[k] = src[k];
    const IgemmPhase& gp = p.ph[phi];
    for (int k = tid; k < gp.Th * gp.Tw; k += kThreads)
      toff[k] = (gp.kh[k / gp.Tw] * p.kW + gp.kw[k % gp.Tw]) * cipadw * p.copad;
    if (tid < kBN) {
      const int co = cot * kBN + tid;
      sbias[tid] = (bias != nullptr && co < p.cout_g) ? to_acc<float>(bias[g * p.cout_g + co]) : 0.0f;
    }
  }
  __syncthreads();

  const int a0 = tr * (kFast ? 2 : p.R), b0 = tc << (kFast ? 7 : p.bwp_log2);
  if (a0 >= ph.Hp || b0 >= ph.Wp) return;  // the phase grid is smaller than the largest one

  const int wm = warp & 3, wn = warp >> 2;
  const int gq = lane >> 2, tq = lane & 3;

  T* sA = reinterpret_cast<T*>(smem_raw);
  uint32_t* sB = reinterpret_cast<uint32_t*>(sA + kStages * p.a_stage_elems);

  const int CH = ph.CH, TG = ph.TG, Tw = ph.Tw, Th = ph.Th, nch = ph.nch;
  const int chlog = __ffs(CH) - 1;
  const int CHw = CH / kPair, chwlog = chlog - (kPair == 2 ? 1 : 0);
  const int SW = kFast ? kSWc : p.SW, LDg = kFast ? 2 * kSWc : p.LDg;
  const int R = kFast ? 2 : p.R, rlog = kFast ? 1 : __ffs(R) - 1;
  const int bwp_log2 = kFast ? 7 : p.bwp_log2;
  const int nvec_row = SW / kVec;
  // First input column of the segments (aligned down to a vector).
  const int iw_first = b0 + ph.emin;
  const int iw_al = (iw_first >= 0 ? iw_first / kVec : -((-iw_first + kVec - 1) / kVec)) * kVec;
  const int shift0 = b0 - iw_al;

  const int64_t cin_base = int64_t(n) * p.Cin + int64_t(g) * p.cin_g;
  const int co0 = cot * kBN;
  const uint32_t* wg = wp + int64_t(g) * p.kH * p.kW * cipadw * p.copad + co0;

  // Stages in order: channel chunk fastest, then row-tap group.
  auto load_stage = [&](int buf, int ci0, int th0) {
    const int tgc = min(TG, Th - th0);
    // A: rows (th_l, ci_l, r) of SW elements, contiguous in shared memory; a
    // warp per row, a lane per 16-byte vector.
    T* dA = sA + buf * p.a_stage_elems;
    const int rowsA = tgc * CH * R;
    if constexpr (kFast) {
      constexpr int kNV = kSWc / kVec;
      const int totalA = rowsA * kNV;
      for (int idx = tid; idx < totalA; idx += kThreads) {
        const int row = idx / kNV, v = idx - row * kNV;
        const int r = row & 1, rg = row >> 1;
        const int ci_l = rg & (CH - 1), th_l = rg >> chlog;
        const int ci = ci0 + ci_l, ih = a0 + r + ph.eh[th0 + th_l];
        const int iw = iw_al + v * kVec;
        T* dst = dA + row * kSWc + v * kVec;
        const bool row_ok = ci < p.cin_g && ih >= 0 && ih < p.H;
        const T* src = x + ((cin_base + ci) * p.H + ih) * int64_t(p.W);
        stage_vector<kVec, k16>(dst, src, x, iw, p.W, row_ok, p.vec_ok);
      }
    } else {
    for (int row = warp; row < rowsA; row += kThreads / 32) {
      const int r = row & (R - 1), rg = row >> rlog;
      const int ci_l = rg & (CH - 1), th_l = rg >> chlog;
      const int ci = ci0 + ci_l, ih = a0 + r + ph.eh[th0 + th_l];
      const bool row_ok = ci < p.cin_g && ih >= 0 && ih < p.H;
      const T* src = x + ((cin_base + ci) * p.H + ih) * int64_t(p.W);
      T* drow = dA + row * SW;
      for (int v = lane; v < nvec_row; v += 32) {
        const int iw = iw_al + v * kVec;
        T* dst = drow + v * kVec;
        stage_vector<kVec, k16>(dst, src, x, iw, p.W, row_ok, p.vec_ok);
      }
    }
    }
    // B: rows (th_l, tw, c) of kBN words: 16 vectors of 16 bytes each.
    uint32_t* dB = sB + buf * p.b_stage_words;
    const int totalB = (tgc * Tw * CHw) * (kBN / 4);
    const int ci0w = ci0 / kPair;
    for (int idx = tid; idx < totalB; idx += kThreads) {
      const int row = idx >> 4, c = idx & 15;
      const int cl = row & (CHw - 1), rest = row >> chwlog;
      const bool ok = ci0w + cl < cipadw;
      const uint32_t* src = wg + toff[th0 * Tw + rest] + (ci0w + cl) * p.copad + c * 4;
      cp_async16(dB + row * kLDB + c * 4, ok ? src : wp, ok);
    }
  };

  // Each thread's shared-memory offsets of its A rows (m) within a group.
  // (Fast path: a warp's 64 rows lie in one tile row, so the offsets are a
  // per-thread base plus compile-time constants.)
  int aoff[4][2];
  const int abase = kFast ? (wm >> 1) * kSWc + (wm & 1) * 64 + gq : 0;
#pragma unroll
  for (int mf = 0; mf < 4; ++mf)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = wm * 64 + mf * 16 + gq + 8 * h;
      aoff[mf][h] = kFast ? mf * 16 + 8 * h : (m >> bwp_log2) * SW + (m & ((1 << bwp_log2) - 1));
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
    for (int th_l = 0; th_l < tgc; ++th_l) {
      for (int tw = 0; tw < Tw; ++tw) {
        const T* aT = bufA + th_l * CH * LDg + shift0 + ph.ew[tw] + abase;
        const uint32_t* bT = bufB + (th_l * Tw + tw) * CHw * kLDB;
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
                afr[0] = to_tf32(a[aoff[mf][0]]);
                afr[1] = to_tf32(a[aoff[mf][1]]);
                afr[2] = to_tf32(a[4 * LDg + aoff[mf][0]]);
                afr[3] = to_tf32(a[4 * LDg + aoff[mf][1]]);
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
                av[0] = a[aoff[mf][0]];
                av[1] = a[aoff[mf][1]];
                av[2] = a[4 * LDg + aoff[mf][0]];
                av[3] = a[4 * LDg + aoff[mf][1]];
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
                const T* e = a + (q >= 2 ? 8 * LDg : 0) + aoff[mf][q & 1];
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

  const int nst = ph.nstages;
  int l_ci0 = 0, l_th0 = 0;  // the next stage to load
  auto advance = [&](int& ci0, int& th0) {
    ci0 += CH;
    if (ci0 >= nch * CH) {
      ci0 = 0;
      th0 += TG;
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nst) {
      load_stage(s, l_ci0, l_th0);
      advance(l_ci0, l_th0);
    }
    cp_async_commit();
  }
  int c_ci0 = 0, c_th0 = 0;  // the stage to compute
  int buf = 0, lbuf = kStages - 1;
  for (int it = 0; it < nst; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (it + kStages - 1 < nst) {
      load_stage(lbuf, l_ci0, l_th0);
      advance(l_ci0, l_th0);
    }
    cp_async_commit();
    compute_stage(buf, c_th0);
    advance(c_ci0, c_th0);
    buf = buf + 1 == kStages ? 0 : buf + 1;
    lbuf = lbuf + 1 == kStages ? 0 : lbuf + 1;
  }
  cp_async_wait<0>();
  __syncthreads();

  // ---- Epilogue: accumulators -> shared memory [channel][pixel] ----
  float* sO = reinterpret_cast<float*>(smem_raw);
#pragma unroll
  for (int mf = 0; mf < 4; ++mf)
#pragma unroll
    for (int nf = 0; nf < 4; ++nf) {
      const int m = wm * 64 + mf * 16 + gq, c = wn * 32 + nf * 8 + 2 * tq;
      sO[c * kLDO + m] = acc[mf][nf][0];
      sO[(c + 1) * kLDO + m] = acc[mf][nf][1];
      sO[c * kLDO + m + 8] = acc[mf][nf][2];
      sO[(c + 1) * kLDO + m + 8] = acc[mf][nf][3];
    }
  __syncthreads();

  // One pixel per thread, kEpi channels at a time: bias, the chain, the store
  // (consecutive lanes: consecutive pixels of one phase row).
  const int m = tid;
  const int a = a0 + (m >> bwp_log2), b = b0 + (m & ((1 << bwp_log2) - 1));
  if (a >= ph.Hp || b >= ph.Wp) return;
  const int oh = ph.rp + p.sh * a, ow = ph.cp + p.sw * b;
  const int64_t HW = int64_t(p.Hout) * p.Wout;
  const int cog = g * p.cout_g;
  const int nco = min(kBN, p.cout_g - co0);
  T* yp = y + ((int64_t(n) * p.Cout + cog + co0) * p.Hout + oh) * int64_t(p.Wout) + ow;
  const int64_t i0 = yp - y;
  const PointOp<float>* chain = ep.chain;
  const int chain_len = ep.chain_len;
#ifndef KFUSE_IGEMM_EPI
#define KFUSE_IGEMM_EPI 4
#endif
  // Channels per epilogue step (values per chain dispatch). 16 was slower than 4
  // before the dispatch was hoisted (more inlined code; H200, 2026-12-01).
  constexpr int kEpi = KFUSE_IGEMM_EPI;
  // Bias and chain on kEpi channels at a time; a map stores them, a reduction
  // (or softmax) over C pushes them and keeps them in sO for softmax's second
  // pass. The tile holds every channel then (host checked: G == 1, Cout <=
  // kBN) and this thread owns its pixel's column of sO, so the reduction
  // completes here, in channel order (deterministic), with the shared
  // reduce_init/push/finish and softmax_value (math.hpp).
  const bool map = ep.mode == 0;
  const ReduceKind kind = ep.mode == 2 ? ReduceKind::logsumexp : ep.kind;
  ReduceAcc<float> racc = reduce_init<float>(kind);
  for (int c0 = 0; c0 < nco; c0 += kEpi) {
    float v[kEpi];
#pragma unroll
    for (int k = 0; k < kEpi; ++k) v[k] = sO[(c0 + k) * kLDO + m] + sbias[c0 + k];
    apply_chain(chain, chain_len, v, i0 + c0 * HW, HW, 0, 0);
#pragma unroll
    for (int k = 0; k < kEpi; ++k)
      if (c0 + k < nco) {
        if (map) {
          yp[(c0 + k) * HW] = to_elem<T>(v[k]);
        } else {
          reduce_push(kind, racc, v[k]);
          sO[(c0 + k) * kLDO + m] = v[k];
        }
      }
  }
  if (map) return;
  if (ep.mode == 1) {
    float r[1] = {reduce_finish(kind, racc, int64_t(nco))};
    const int64_t io = (int64_t(n) * p.Hout + oh) * int64_t(p.Wout) + ow;  // y is [N, 1, Hout, Wout]
    apply_chain(ep.post, ep.post_len, r, io, 0, 0, 0);
    y[io] = to_elem<T>(r[0]);
    return;
  }
  for (int c0 = 0; c0 < nco; c0 += kEpi) {
    float v[kEpi];
#pragma unroll
    for (int k = 0; k < kEpi; ++k) v[k] = softmax_value(racc, sO[(c0 + k) * kLDO + m]);
    apply_chain(ep.post, ep.post_len, v, i0 + c0 * HW, HW, 0, 0);
#pragma unroll
    for (int k = 0; k < kEpi; ++k)
      if (c0 + k < nco) yp[(c0 + k) * HW] = to_elem<T>(v[k]);
  }
}

// ---- Weight packing ----------------------------------------------------------------
// fp32: wp[g][kh][kw][ci (cipad)][co (copad)], tf32-rounded when `round`.
// 16-bit: wp[g][kh][kw][ci/2][co][ci&1] (channel pairs interleaved).
template <class T>
__global__ void igemm_pack_weights(const T* __restrict__ w, T* __restrict__ wp, int G, int cin_g, int cout_g,
                                   int kH, int kW, int cipad, int copad, int pair, int round) {
  const int64_t total = int64_t(G) * kH * kW * cipad * copad;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = e;
    int lo = 0;
    if (pair == 2) {
      lo = int(r & 1);
      r >>= 1;
    }
    const int co = int(r % copad);
    r /= copad;
    const int cip = int(r % (cipad / pair));
    r /= (cipad / pair);
    const int kw = int(r % kW);
    r /= kW;
    const int kh = int(r % kH);
    const int g = int(r / kH);
    const int ci = cip * pair + lo;
    T v = T(0.0f);
    if (ci < cin_g && co < cout_g) v = w[((int64_t(g * cin_g + ci) * cout_g + co) * kH + kh) * kW + kw];
    if constexpr (sizeof(T) == 4) {
      if (round) v = __uint_as_float(to_tf32(v));
    }
    wp[e] = v;
  }
}

struct Derived {
  IgemmParams prm{};
  std::string why;
};

// Everything about a problem that does not need the device.
Derived derive(const IgemmProblem& pin, IgemmPrecision prec) {
  Derived d;
  const IgemmProblem pb = igemm_normalized(pin);
  auto no = [&](const std::string& s) {
    d.why = s;
    return d;
  };
  const int64_t G = pb.groups;
  if (pb.N < 1 || pb.Cin < 1 || pb.Cout < 1 || pb.H < 1 || pb.W < 1 || pb.kH < 1 || pb.kW < 1)
    return no("sizes must be positive");
  if (G < 1 || pb.Cin % G || pb.Cout % G) return no("groups must divide in_channels and out_channels");
  for (int ax = 0; ax < 2; ++ax) {
    if (pb.stride[ax] < 1 || pb.dilation[ax] < 1 || pb.padding[ax] < 0) return no("stride/dilation >= 1, padding >= 0");
    if (pb.output_padding[ax] < 0 || pb.output_padding[ax] >= std::max(pb.stride[ax], pb.dilation[ax]))
      return no("output_padding must be in [0, max(stride, dilation))");
  }
  const int64_t Hout = conv_transpose_out_extent(pb.H, pb.kH, pb.stride[0], pb.padding[0], pb.output_padding[0],
                                                 pb.dilation[0]);
  const int64_t Wout = conv_transpose_out_extent(pb.W, pb.kW, pb.stride[1], pb.padding[1], pb.output_padding[1],
                                                 pb.dilation[1]);
  if (Hout < 1 || Wout < 1) return no("empty output");
  if (pb.Hout != Hout || pb.Wout != Wout) return no("Hout/Wout inconsistent with the conv parameters");
  const int64_t lim = (int64_t(1) << 31) - 1;
  for (int64_t v : {pb.N, pb.Cin, pb.H, pb.W, pb.Cout, Hout, Wout, pb.N * pb.Cin, pb.N * pb.Cout})
    if (v > lim) return no("a size is past 2^31 - 1 (32-bit index arithmetic in the kernel)");
  if (pb.stride[0] > 4 || pb.stride[1] > 4)
    return no("stride > 4 (at most 16 output phases in the kernel's parameter block)");

  IgemmParams& p = d.prm;
  p.N = int(pb.N);
  p.Cin = int(pb.Cin);
  p.H = int(pb.H);
  p.W = int(pb.W);
  p.Cout = int(pb.Cout);
  p.G = int(G);
  p.cin_g = int(pb.Cin / G);
  p.cout_g = int(pb.Cout / G);
  p.Hout = int(Hout);
  p.Wout = int(Wout);
  p.sh = int(pb.stride[0]);
  p.sw = int(pb.stride[1]);
  p.kH = int(pb.kH);
  p.kW = int(pb.kW);

  const int esz = elem_size(prec), vec = vec_elems(prec), ks = kstep_channels(prec), pair = esz == 2 ? 2 : 1;
  // Phases.
  int Hpmax = 0, Wpmax = 0, span = 0;
  p.nphase = 0;
  for (int rp = 0; rp < p.sh; ++rp) {
    const int Hp = rp < Hout ? int(ceil_div(Hout - rp, p.sh)) : 0;
    for (int cp = 0; cp < p.sw; ++cp) {
      const int Wp = cp < Wout ? int(ceil_div(Wout - cp, p.sw)) : 0;
      if (Hp == 0 || Wp == 0) continue;
      IgemmPhase ph{};
      ph.rp = rp;
      ph.cp = cp;
      ph.Hp = Hp;
      ph.Wp = Wp;
      for (int kh = 0; kh < p.kH; ++kh) {
        const int64_t q = rp + pb.padding[0] - kh * pb.dilation[0];
        if (pmod(q, p.sh) != 0) continue;
        if (ph.Th == kIgemmMaxTaps) return no("more than 8 row taps in one output phase");
        ph.kh[ph.Th] = kh;
        ph.eh[ph.Th] = int(q / p.sh);
        ++ph.Th;
      }
      int emax = 0;
      for (int kw = 0; kw < p.kW; ++kw) {
        const int64_t q = cp + pb.padding[1] - kw * pb.dilation[1];
        if (pmod(q, p.sw) != 0) continue;
        if (ph.Tw == kIgemmMaxTaps) return no("more than 8 column taps in one output phase");
        ph.kw[ph.Tw] = kw;
        ph.ew[ph.Tw] = int(q / p.sw);
        if (ph.Tw == 0 || ph.ew[ph.Tw] < ph.emin) ph.emin = ph.ew[ph.Tw];
        if (ph.Tw == 0 || ph.ew[ph.Tw] > emax) emax = ph.ew[ph.Tw];
        ++ph.Tw;
      }
      if (ph.Tw > 0) span = std::max(span, emax - ph.emin);
      Hpmax = std::max(Hpmax, Hp);
      Wpmax = std::max(Wpmax, Wp);
      p.ph[p.nphase++] = ph;
    }
  }
  // Tile geometry.
  int bwp = 8;
  while (bwp < Wpmax && bwp < 128) bwp *= 2;
  p.bwp_log2 = ilog2(bwp);
  p.R = kBM / bwp;
  int SW = int(ceil_div(bwp + span + vec - 1, vec)) * vec;
  const int want_mod = p.R == 1 ? 32 : (p.R == 2 ? 16 : 8), want_rem = p.R == 1 ? 8 : 4;
  while ((SW * esz / 4) % want_mod != want_rem) SW += vec;
  // The fast path's compile-time segment width (fast_sw) when it fits.
  const int fast = esz == 4 ? 148 : 168;
  if (p.R == 2 && bwp == 128 && SW <= fast) SW = fast;
  p.SW = SW;
  p.LDg = p.R * SW;
  p.cipad = int(ceil_div(p.cin_g, 16)) * 16;
  p.copad = int(ceil_div(p.cout_g, kBN)) * kBN;
  p.tiles_r = int(ceil_div(Hpmax, p.R));
  p.tiles_c = int(ceil_div(Wpmax, bwp));
  p.tiles_co = p.copad / kBN;
  // Stage shape per phase: CH channels (a power of two, a multiple of the
  // k-step) x TG row taps x all column taps, within the byte budgets, at the
  // least modelled cost (stages x (2 + k-steps per stage)).
  int a_max = 0, b_max = 0;
  int chmax = ks;
  while (chmax < p.cin_g) chmax *= 2;
  for (int f = 0; f < p.nphase; ++f) {
    IgemmPhase& ph = p.ph[f];
    if (ph.Th == 0 || ph.Tw == 0) {
      ph.CH = ks;
      ph.TG = 1;
      ph.nch = 0;
      ph.nstages = 0;
      continue;
    }
    int64_t best = -1;
    for (int ch = ks; ch <= chmax; ch *= 2)
      for (int tg = 1; tg <= ph.Th; ++tg) {
        const int64_t abytes = int64_t(tg) * ch * p.LDg * esz;
        const int64_t bbytes = int64_t(ch / pair) * tg * ph.Tw * kLDB * 4;
        if (abytes > kStageBudgetA || bbytes > kStageBudgetB) continue;
        const int64_t nch = ceil_div(p.cin_g, ch), ntg = ceil_div(ph.Th, tg);
        const int64_t cost = nch * ntg * (2 + (ch / ks) * tg * ph.Tw);
        if (best < 0 || cost < best) {
          best = cost;
          ph.CH = ch;
          ph.TG = tg;
        }
      }
    if (best < 0) return no("one stage (one k-step of channels, one row tap, all column taps) exceeds the shared-memory budget (24 KB of inputs, 16 KB of weights)");
    ph.nch = int(ceil_div(p.cin_g, ph.CH));
    ph.nstages = ph.nch * int(ceil_div(ph.Th, ph.TG));
    a_max = std::max(a_max, ph.TG * ph.CH * p.LDg);
    b_max = std::max(b_max, (ph.CH / pair) * ph.TG * ph.Tw * kLDB);
  }
  p.a_stage_elems = std::max(a_max, vec);
  p.b_stage_words = std::max(b_max, 4);
  const int64_t grid = int64_t(p.N) * p.G * p.tiles_r * p.tiles_c * p.tiles_co * p.nphase;
  if (grid > lim) return no("more than 2^31 - 1 tiles");
  if (int64_t(p.kH) * p.kW * p.cipad * p.copad > lim) return no("a group's packed weights exceed 2^31 - 1 elements");
  p.vec_ok = (int64_t(p.W) * esz) % 16 == 0;
  return d;
}

size_t smem_for(const IgemmParams& p, IgemmPrecision prec) {
  const size_t pipe = size_t(kStages) * (size_t(p.a_stage_elems) * elem_size(prec) + size_t(p.b_stage_words) * 4);
  return std::max(pipe, size_t(kBN) * kLDO * 4);
}

template <IgemmPrecision P> constexpr int fast_sw() { return Traits<P>::kVec == 4 ? 148 : 168; }

// The fast path covers tiles of 2 x 128 whose segment fits kSWc.
bool use_fast(const IgemmParams& p, int fast_sw) { return p.R == 2 && p.bwp_log2 == 7 && p.SW == fast_sw; }

template <IgemmPrecision P>
void launch(const IgemmParams& prm, int64_t grid, size_t smem, const void* x, const void* wp, const void* bias,
            void* y, const IgemmEpilogue& ep, cudaStream_t stream) {
  using T = typename Traits<P>::T;
  if (use_fast(prm, fast_sw<P>()))
    igemm_convt_kernel<P, fast_sw<P>()><<<unsigned(grid), kThreads, smem, stream>>>(
        prm, static_cast<const T*>(x), static_cast<const uint32_t*>(wp), static_cast<const T*>(bias),
        static_cast<T*>(y), ep);
  else
    igemm_convt_kernel<P, 0><<<unsigned(grid), kThreads, smem, stream>>>(
        prm, static_cast<const T*>(x), static_cast<const uint32_t*>(wp), static_cast<const T*>(bias),
        static_cast<T*>(y), ep);
  check_launch("igemm_convt_kernel");
}

template <IgemmPrecision P>
void set_smem(size_t smem) {
  KFUSE_CUDA_CHECK(cudaFuncSetAttribute(igemm_convt_kernel<P, 0>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(smem)));
  KFUSE_CUDA_CHECK(cudaFuncSetAttribute(igemm_convt_kernel<P, fast_sw<P>()>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

}  // namespace

const char* to_string(IgemmPrecision p) {
  switch (p) {
    case IgemmPrecision::tf32: return "tf32";
    case IgemmPrecision::tf32x3: return "tf32x3";
    case IgemmPrecision::bf16: return "bf16";
    case IgemmPrecision::f16: return "f16";
  }
  return "?";
}

IgemmProblem igemm_normalized(IgemmProblem p) {
  if (p.Hout == 0)
    p.Hout = conv_transpose_out_extent(p.H, p.kH, p.stride[0], p.padding[0], p.output_padding[0], p.dilation[0]);
  if (p.Wout == 0)
    p.Wout = conv_transpose_out_extent(p.W, p.kW, p.stride[1], p.padding[1], p.output_padding[1], p.dilation[1]);
  return p;
}

std::string igemm_why_not(const IgemmProblem& p, IgemmPrecision prec) { return derive(p, prec).why; }

std::string igemm_why_not_reduce_c(const IgemmProblem& p, IgemmPrecision prec) {
  std::string why = igemm_why_not(p, prec);
  if (!why.empty()) return why;
  if (p.groups != 1) return "a reduction over C with groups > 1 spans several channel tiles (one group per tile)";
  if (p.Cout > kBN)
    return "a reduction over C with more than 64 output channels spans several channel tiles (the two-stage "
           "scheme is not built)";
  return {};
}

IgemmConv::IgemmConv(const IgemmProblem& pb, IgemmPrecision prec, const void* weight_device,
                     const void* bias_device)
    : pb_(igemm_normalized(pb)), prec_(prec), bias_(bias_device) {
  Derived d = derive(pb_, prec);
  if (!d.why.empty()) fail(ErrorCategory::unsupported, "IgemmConv", d.why);
  prm_ = d.prm;
  grid_ = int64_t(prm_.N) * prm_.G * prm_.tiles_r * prm_.tiles_c * prm_.tiles_co * prm_.nphase;
  smem_ = smem_for(prm_, prec);
  int dev = 0, optin = 0;
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev));
  KFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem_ > size_t(optin))
    fail(ErrorCategory::unsupported, "IgemmConv", "needs ", smem_, " bytes of shared memory per block, the device ",
         optin);
  switch (prec_) {
    case IgemmPrecision::tf32: set_smem<IgemmPrecision::tf32>(smem_); break;
    case IgemmPrecision::tf32x3: set_smem<IgemmPrecision::tf32x3>(smem_); break;
    case IgemmPrecision::bf16: set_smem<IgemmPrecision::bf16>(smem_); break;
    case IgemmPrecision::f16: set_smem<IgemmPrecision::f16>(smem_); break;
  }
  const int esz = elem_size(prec_);
  const int64_t welems = int64_t(prm_.G) * prm_.kH * prm_.kW * prm_.cipad * prm_.copad;
  KFUSE_CUDA_CHECK(cudaMalloc(&wpack_, size_t(welems) * esz), "bytes ", welems * esz);
  const int blocks = int(std::min<int64_t>(ceil_div(welems, 256), 4096));
  if (esz == 4) {
    igemm_pack_weights<float><<<blocks, 256>>>(static_cast<const float*>(weight_device), static_cast<float*>(wpack_),
                                               prm_.G, prm_.cin_g, prm_.cout_g, prm_.kH, prm_.kW, prm_.cipad,
                                               prm_.copad, 1, prec_ == IgemmPrecision::tf32 ? 1 : 0);
  } else if (prec_ == IgemmPrecision::bf16) {
    igemm_pack_weights<__nv_bfloat16><<<blocks, 256>>>(
        static_cast<const __nv_bfloat16*>(weight_device), static_cast<__nv_bfloat16*>(wpack_), prm_.G, prm_.cin_g,
        prm_.cout_g, prm_.kH, prm_.kW, prm_.cipad, prm_.copad, 2, 0);
  } else {
    igemm_pack_weights<__half><<<blocks, 256>>>(static_cast<const __half*>(weight_device),
                                                static_cast<__half*>(wpack_), prm_.G, prm_.cin_g, prm_.cout_g,
                                                prm_.kH, prm_.kW, prm_.cipad, prm_.copad, 2, 0);
  }
  check_launch("igemm_pack_weights");
  KFUSE_CUDA_CHECK(cudaDeviceSynchronize());
}

IgemmConv::~IgemmConv() {
  if (wpack_ != nullptr) cudaFree(wpack_);
}

void IgemmConv::run(const void* x, void* y, const PointOp<float>* chain, int chain_len, cudaStream_t stream) const {
  IgemmEpilogue ep{chain, chain == nullptr ? 0 : chain_len, 0, ReduceKind::sum, nullptr, 0};
  launch_any(x, y, ep, stream);
}

void IgemmConv::run_reduce_c(const void* x, void* y, const PointOp<float>* chain, int chain_len,
                             const IgemmReduceC& red, cudaStream_t stream) const {
  const std::string why = igemm_why_not_reduce_c(pb_, prec_);
  if (!why.empty()) fail(ErrorCategory::unsupported, "IgemmConv::run_reduce_c", why);
  IgemmEpilogue ep{chain,    chain == nullptr ? 0 : chain_len,
                   red.softmax ? 2 : 1, red.kind,
                   red.post, red.post == nullptr ? 0 : red.post_len};
  launch_any(x, y, ep, stream);
}

void IgemmConv::launch_any(const void* x, void* y, const IgemmEpilogue& ep, cudaStream_t stream) const {
  IgemmParams prm = prm_;
  // 16-byte copies of x rows need the base aligned too.
  if (!aligned16(x)) prm.vec_ok = 0;
  switch (prec_) {
    case IgemmPrecision::tf32: launch<IgemmPrecision::tf32>(prm, grid_, smem_, x, wpack_, bias_, y, ep, stream); break;
    case IgemmPrecision::tf32x3:
      launch<IgemmPrecision::tf32x3>(prm, grid_, smem_, x, wpack_, bias_, y, ep, stream);
      break;
    case IgemmPrecision::bf16: launch<IgemmPrecision::bf16>(prm, grid_, smem_, x, wpack_, bias_, y, ep, stream); break;
    case IgemmPrecision::f16: launch<IgemmPrecision::f16>(prm, grid_, smem_, x, wpack_, bias_, y, ep, stream); break;
  }
}

std::string IgemmConv::describe() const {
  std::ostringstream os;
  os << "igemm_convt[" << to_string(prec_) << "] tile " << kBM << "px(" << prm_.R << "x" << (1 << prm_.bwp_log2)
     << ") x " << kBN << "co, " << kStages << " stages, " << prm_.nphase << " phases, grid " << grid_ << ", smem "
     << smem_ << " B" << (use_fast(prm_, elem_size(prec_) == 4 ? 148 : 168) ? ", fast path" : "") << "; phase taps/stage(CHxTG):";
  for (int f = 0; f < prm_.nphase; ++f) {
    const IgemmPhase& ph = prm_.ph[f];
    os << " (" << ph.rp << "," << ph.cp << "):" << ph.Th << "x" << ph.Tw << "/" << ph.CH << "x" << ph.TG;
  }
  return os.str();
}

}  // namespace kfuse::detail::cuda
