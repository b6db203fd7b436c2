// Streaming a contiguous run of elements through ts threads (a team, or the
// vector lanes of one team thread): the access pattern of every memory-bound
// Kokkos kernel of kfuse (the fold's plane sums, row reductions, softmax).
// Thread t of ts takes the 16-byte vectors t, t + ts, t + 2 ts, ... so a
// warp's loads are consecutive (coalesced), with D loads in flight per thread
// (the pipelining depth the tuner picks); the elements before the first
// 16-byte boundary and after the last whole vector go one by one. On the host
// (one thread) it is a sequential sweep in 16-byte steps.
#pragma once

#include <cstdint>

#include "kfuse/detail/hd.hpp"
#include "kfuse/kokkos.hpp"

namespace kfuse::kokkos {

template <class T>
struct alignas(16) Vec16 {
  static constexpr int kVec = int(16 / sizeof(T));
  T v[kVec];
};

// A contiguous run of n elements at p as 16-byte vectors: the head elements
// before the first 16-byte boundary, nvec whole vectors from element head,
// the tail elements from tail0; head and tail together are the edges (fewer
// than 2 kVec).
template <class T>
struct ContiguousSplit {
  int64_t head, nvec, tail0, edges;
  KOKKOS_INLINE_FUNCTION ContiguousSplit(const T* p, int64_t n) {
    constexpr int64_t kV = Vec16<T>::kVec;
    const int64_t mis = int64_t(reinterpret_cast<uintptr_t>(p) % 16) / int64_t(sizeof(T));
    head = mis ? (kV - mis < n ? kV - mis : n) : 0;
    nvec = (n - head) / kV;
    tail0 = head + nvec * kV;
    edges = head + (n - tail0);
  }
  KOKKOS_INLINE_FUNCTION int64_t edge(int64_t i) const { return i < head ? i : tail0 + (i - head); }  // i < edges
};

// Calls vec(const Vec16<T>&, e) for each whole vector of thread t (e: the
// offset of its first element; from one call to the next of a thread, e grows
// by exactly ts * kVec), and one(T, e) for each edge element.
template <int D, class T, class FV, class FO>
KOKKOS_INLINE_FUNCTION void stream_contiguous(int64_t t, int64_t ts, const T* p, int64_t n, const FV& vec, const FO& one) {
  using V = Vec16<T>;
  constexpr int64_t kV = V::kVec;
  const ContiguousSplit<T> sp(p, n);
  const V* pv = reinterpret_cast<const V*>(p + sp.head);
  int64_t v = t;
  for (; v + (D - 1) * ts < sp.nvec; v += D * ts) {
    V d[D];  // (unrolled: in registers, not local memory, on a GPU)
    KFUSE_UNROLL
    for (int k = 0; k < D; ++k) d[k] = pv[v + k * ts];
    KFUSE_UNROLL
    for (int k = 0; k < D; ++k) vec(d[k], sp.head + (v + k * ts) * kV);
  }
  for (; v < sp.nvec; v += ts) vec(pv[v], sp.head + v * kV);
  for (int64_t i = t; i < sp.edges; i += ts) {
    const int64_t e = sp.edge(i);
    one(p[e], e);
  }
}

}  // namespace kfuse::kokkos
