// Device-side helpers of the CUDA backend: element types and 16-byte
// vectors, warp/block reductions of ReduceAcc, and the cooperating groups
// that detail::run_tail runs on (a thread, a warp, a block).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef __CUDACC_RTC__  // NVRTC (jit.cpp) brings its own definitions
#include <cuda_runtime.h>

#include <cstdint>
#endif

#include "kfuse/detail/program.hpp"

namespace kfuse::detail::cuda {

// ---- Element types -------------------------------------------------------------

// Converts an element to the accumulation type S (float or double; the
// half types through float).
template <class S, class T> __device__ __forceinline__ S to_acc(T v) { return static_cast<S>(v); }
template <> __device__ __forceinline__ float to_acc<float, __half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// Converts an accumulator value to the stored element type.
template <class O, class A> __device__ __forceinline__ O to_elem(A v) { return static_cast<O>(v); }
template <> __device__ __forceinline__ __half to_elem<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 to_elem<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// kVec adjacent elements of T moved as one access of kVec * sizeof(T) bytes (2, 4, 8 or 16).
template <int B> struct RawBytes;
template <> struct RawBytes<2> { using type = unsigned short; };
template <> struct RawBytes<4> { using type = unsigned int; };
template <> struct RawBytes<8> { using type = uint2; };
template <> struct RawBytes<16> { using type = uint4; };
template <class T, int N> struct VecN {
  static constexpr int kVec = N;
  typename RawBytes<N * int(sizeof(T))>::type raw;
  __device__ __forceinline__ T get(int k) const { return reinterpret_cast<const T*>(&raw)[k]; }
  __device__ __forceinline__ void set(int k, T v) { reinterpret_cast<T*>(&raw)[k] = v; }
};
// A 16-byte vector of T: kVec elements loaded with one 128-bit load.
template <class T> using Vec16 = VecN<T, 16 / int(sizeof(T))>;

// Streaming 16-byte load (evict-first: x is read once).
template <class T> __device__ __forceinline__ Vec16<T> load_stream(const T* p) {
  Vec16<T> v;
  v.raw = __ldcs(reinterpret_cast<const uint4*>(p));
  return v;
}
// N elements in one load (p aligned to their size), kept in L1: a thread
// walking its own row takes the rest of the sector with its next load.
template <int N, class T> __device__ __forceinline__ VecN<T, N> load_vec(const T* p) {
  VecN<T, N> v;
  v.raw = *reinterpret_cast<const decltype(v.raw)*>(p);
  return v;
}
template <class T> __device__ __forceinline__ Vec16<T> load16(const T* p) { return load_vec<Vec16<T>::kVec>(p); }
// A 16-byte store to global memory (not shared: st.global), as
// st.global.wb.v4, the default cache policy. Written as an assignment of the
// uint4, nvcc 13.0 split it into four 32-bit stores (or four pairs of 16-bit
// values) once the vector had been filled element by element (the PTX of
// epi_map_nhwc). H200, 2026-12-04, the channels-last map stage of the set's
// per-channel affine chain: bfloat16 0.491 -> 0.472 ms, float32 0.649 -> 0.628.
template <class T> __device__ __forceinline__ void store16(T* p, const Vec16<T>& v) {
  __stwb(reinterpret_cast<uint4*>(p), v.raw);
}

// p on a multiple of `bytes` (a power of two).
__host__ __device__ __forceinline__ bool aligned_to(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}
__host__ __device__ __forceinline__ bool aligned16(const void* p) { return aligned_to(p, 16); }

// ---- Programmatic dependent launch (sm_90+; no-ops elsewhere) -------------------

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// ---- Reductions -------------------------------------------------------------------

template <class A>
__device__ __forceinline__ ReduceAcc<A> shfl_xor(const ReduceAcc<A>& a, int mask) {
  return ReduceAcc<A>{__shfl_xor_sync(0xffffffffu, a.a, mask), __shfl_xor_sync(0xffffffffu, a.b, mask)};
}

// Butterfly join over the warp: every lane ends with the warp's result.
template <class A>
__device__ __forceinline__ ReduceAcc<A> warp_join(ReduceKind kind, ReduceAcc<A> acc) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) reduce_join(kind, acc, shfl_xor(acc, m));
  return acc;
}

template <class S>
__device__ __forceinline__ S warp_sum(S v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Block-wide join: `scratch` holds at least 33 entries of shared memory. Every
// thread of the block calls it and gets the block's result.
template <class A>
__device__ __forceinline__ ReduceAcc<A> block_join(ReduceKind kind, ReduceAcc<A> acc, ReduceAcc<A>* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  acc = warp_join(kind, acc);
  if (lane == 0) scratch[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    ReduceAcc<A> a = lane < warps ? scratch[lane] : reduce_init<A>(kind);
    a = warp_join(kind, a);
    if (lane == 0) scratch[32] = a;
  }
  __syncthreads();
  return scratch[32];
}

// Block-wide sum of one value per thread; the result is valid in every thread.
template <class S>
__device__ __forceinline__ S block_sum(S v, S* scratch /* >= 33 */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    S a = lane < warps ? scratch[lane] : S(0);
    a = warp_sum(a);
    if (lane == 0) scratch[32] = a;
  }
  __syncthreads();
  return scratch[32];
}

// ---- Point chains in kernels ----------------------------------------------------------
// A kernel template takes `Ch`, which runs its chains: Ch::body(chain, v, i,
// di, j, dj) and Ch::after(...) apply a chain to N values, value k at the
// coordinate (i + k di, j + k dj); Ch::reduce_kind(k) is the reduction the
// per-element loops push into. Built into the library with InterpretedChains;
// compiled again at plan time with a plan's PlanChains (jit::chains_struct):
// its ops as straight-line code, its reduction kind a constant.

// The plan's ops interpreted one by one (their kinds read at run time).
struct InterpretedChains {
  static constexpr bool kCompiled = false;  // (a plan's PlanChains: true)
  template <class A, int N>
  __device__ __forceinline__ static void body(const Chain<A>& c, A (&v)[N], int64_t i, int64_t di, int64_t j,
                                              int64_t dj) {
    apply_chain(c.ops, c.n, v, i, di, j, dj);
  }
  template <class A, int N>
  __device__ __forceinline__ static void after(const Chain<A>& c, A (&v)[N], int64_t i, int64_t di, int64_t j,
                                               int64_t dj) {
    body(c, v, i, di, j, dj);  // the same interpreter
  }
  // The stage's reduction, as the arguments say (a plan's chains give it as
  // a constant: no dispatch per element).
  __device__ __forceinline__ static ReduceKind reduce_kind(ReduceKind k) { return k; }
};

// ---- Groups for detail::run_tail ----------------------------------------------------
// for_each(n, f): f(k) for k in [0, n) spread over the group, then a barrier.
// reduce(kind, n, f): ReduceAcc over f(k), the same in every member.
// (Declared __host__ __device__ because run_tail is; they only run on the device.)

// One thread owns a whole row.
template <class A>
struct ThreadGroup {
  template <class F>
  __host__ __device__ void for_each(int64_t n, const F& f) const {
    for (int64_t k = 0; k < n; ++k) f(k);
  }
  template <class F>
  __host__ __device__ ReduceAcc<A> reduce(ReduceKind kind, int64_t n, const F& f) const {
    ReduceAcc<A> acc = reduce_init<A>(kind);
    for (int64_t k = 0; k < n; ++k) reduce_push(kind, acc, f(k));
    return acc;
  }
};

// The 32 lanes of a warp share a row.
template <class A>
struct WarpGroup {
  template <class F>
  __host__ __device__ void for_each(int64_t n, const F& f) const {
#ifdef __CUDA_ARCH__
    for (int64_t k = threadIdx.x & 31; k < n; k += 32) f(k);
    __syncwarp();
#endif
  }
  template <class F>
  __host__ __device__ ReduceAcc<A> reduce(ReduceKind kind, int64_t n, const F& f) const {
    ReduceAcc<A> acc = reduce_init<A>(kind);
#ifdef __CUDA_ARCH__
    for (int64_t k = threadIdx.x & 31; k < n; k += 32) reduce_push(kind, acc, f(k));
    acc = warp_join(kind, acc);
#endif
    return acc;
  }
};

// The whole block shares a row; `scratch` is >= 33 ReduceAcc in shared memory.
template <class A>
struct BlockGroup {
  ReduceAcc<A>* scratch;
  template <class F>
  __host__ __device__ void for_each(int64_t n, const F& f) const {
#ifdef __CUDA_ARCH__
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) f(k);
    __syncthreads();
#endif
  }
  template <class F>
  __host__ __device__ ReduceAcc<A> reduce(ReduceKind kind, int64_t n, const F& f) const {
    ReduceAcc<A> acc = reduce_init<A>(kind);
#ifdef __CUDA_ARCH__
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) reduce_push(kind, acc, f(k));
    acc = block_join(kind, acc, scratch);
#endif
    return acc;
  }
};

}  // namespace kfuse::detail::cuda
