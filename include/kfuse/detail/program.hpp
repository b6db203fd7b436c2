// The steps a plan runs, as plain data that both backends execute with the
// same device functions. Built once on the host by the planner (src/plan/).
//
// Every fused step computes an intermediate Z of R rows by K columns (small:
// the result of the first reduction, or of the fold), then runs a *tail* on
// each row: point ops, at most one reduction over the columns and softmaxes
// over the columns, entirely in registers/team memory, and stores only the
// output.
#pragma once

#ifndef __CUDACC_RTC__  // NVRTC (backends/cuda/jit.cpp) brings its own definitions
#include <cstdint>
#endif

#include "kfuse/detail/math.hpp"
#include "kfuse/shape.hpp"

namespace kfuse::detail {

enum class PointKind : int { unary, scalar, tensor };

// A value in the plan's memory that no kernel writes (an operand's element,
// a pointer in the plan's op array). On the GPU a global load through the
// read-only path (__ldg: ld.global.nc), where a plain load was a generic one
// (LD.E in the SASS of the channels-last map). H200, the conv kernel with an
// affine chain of two per-channel operands inside, bfloat16: 0.918 -> 0.846
// ms (one run each). A compiled chain still loads its operand pointers at
// each call: nvcc does not merge these loads across the kernel's stores.
template <class T>
KFUSE_HDI T load_invariant(const T* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}
template <class T>
KFUSE_HDI const T* load_invariant(const T* const* p) {
#ifdef __CUDA_ARCH__
  return reinterpret_cast<const T*>(__ldg(reinterpret_cast<const unsigned long long*>(p)));
#else
  return *p;
#endif
}

// y = f(y) or y = y (op) operand. The operand's element for the coordinate
// (i, j) of a split iteration space sits at outer.offset(i) + inner.offset(j).
template <class A>
struct PointOp {
  PointKind kind;
  Unary unary;
  BinaryKind binary;
  A scalar;
  const A* operand;
  Indexer outer;
  Indexer inner;

  KFUSE_HDI A operator()(A y, int64_t i, int64_t j) const {
    switch (kind) {
      case PointKind::unary: return apply(unary, y);
      case PointKind::scalar: return apply(binary, y, scalar);
      default: return apply(binary, y, load_invariant(operand + outer.offset(i) + inner.offset(j)));
    }
  }
};

template <class A>
KFUSE_HDI A apply_chain(const PointOp<A>* ops, int n, A y, int64_t i, int64_t j) {
  for (int k = 0; k < n; ++k) y = ops[k](y, i, j);
  return y;
}

// The same on N values at once, value k at the coordinate (i + k*di, j + k*dj)
// (di, dj >= 0).
// Each op's fields are read once for all N, and its kind is dispatched once:
// every case calls apply() with a compile-time kind, so that switch folds away
// (per value, streaming kernels are bound by their load instructions and the
// dispatch). The math is apply()'s.
template <UnaryKind K, class A, int N>
KFUSE_HDI void apply_unary_n(Unary u, A (&v)[N]) {
  u.kind = K;
  KFUSE_UNROLL for (int k = 0; k < N; ++k) v[k] = apply(u, v[k]);
}
template <BinaryKind K, class A, int N>
KFUSE_HDI void apply_scalar_n(A s, A (&v)[N]) {
  KFUSE_UNROLL for (int k = 0; k < N; ++k) v[k] = apply(K, v[k], s);
}
template <class A, int N>
KFUSE_HDI void apply_binary_n(BinaryKind kind, A s, A (&v)[N]) {
  switch (kind) {
    case BinaryKind::add: apply_scalar_n<BinaryKind::add>(s, v); break;
    case BinaryKind::sub: apply_scalar_n<BinaryKind::sub>(s, v); break;
    case BinaryKind::mul: apply_scalar_n<BinaryKind::mul>(s, v); break;
    case BinaryKind::div: apply_scalar_n<BinaryKind::div>(s, v); break;
    case BinaryKind::min: apply_scalar_n<BinaryKind::min>(s, v); break;
    case BinaryKind::max: apply_scalar_n<BinaryKind::max>(s, v); break;
  }
}

// A tensor operand's op on N values. Where the N elements of the operand lie
// at a constant step (one walk of its index maps, not N): loaded together,
// or once and applied as a scalar when the step is 0 (e.g. a per-channel
// operand along a row of one channel; Indexer::run). The kind and the pointer
// come by reference, so an interpreted op's fields are read where they are
// used: taken by value, they were read first and held across the walk, and
// sm_89's ptxas spilled 16 bytes in epi_softmax_cols_held<float, 16>.
template <class A, int N>
KFUSE_HDI void apply_operand_n(const BinaryKind& binary, const A* const& operand, const Indexer& outer,
                               const Indexer& inner, A (&v)[N], int64_t i, int64_t di, int64_t j, int64_t dj) {
  int64_t oi, si, oj, sj;
  if (outer.run(i, di, N, oi, si) && inner.run(j, dj, N, oj, sj)) {
    const A* p = operand + oi + oj;
    const int64_t step = si + sj;
    if (step == 0) {
      apply_binary_n(binary, load_invariant(p), v);
    } else {
      KFUSE_UNROLL for (int k = 0; k < N; ++k) v[k] = apply(binary, v[k], load_invariant(p + k * step));
    }
  } else {
    KFUSE_UNROLL for (int k = 0; k < N; ++k) {
      const A* p = operand + outer.offset(i + k * di) + inner.offset(j + k * dj);
      v[k] = apply(binary, v[k], load_invariant(p));
    }
  }
}

// One op on N values; its kind is dispatched once for all N. (A chain
// compiled at plan time, backends/cuda/jit.cpp, calls the op's own function:
// apply_unary_n, apply_scalar_n or apply_operand_n.)
template <class A, int N>
KFUSE_HDI void apply_op_n(const PointOp<A>& op, A (&v)[N], int64_t i, int64_t di, int64_t j, int64_t dj) {
  const PointKind kind = op.kind;
  if (kind == PointKind::unary) {
    const Unary u = op.unary;
    switch (u.kind) {
#define KFUSE_UNARY_N(K) \
  case UnaryKind::K: apply_unary_n<UnaryKind::K>(u, v); break;
      KFUSE_UNARY_N(relu) KFUSE_UNARY_N(leaky_relu) KFUSE_UNARY_N(tanh) KFUSE_UNARY_N(sigmoid)
      KFUSE_UNARY_N(gelu) KFUSE_UNARY_N(gelu_tanh) KFUSE_UNARY_N(silu) KFUSE_UNARY_N(mish)
      KFUSE_UNARY_N(hardtanh) KFUSE_UNARY_N(hardswish) KFUSE_UNARY_N(clamp) KFUSE_UNARY_N(exp)
      KFUSE_UNARY_N(log) KFUSE_UNARY_N(neg) KFUSE_UNARY_N(abs)
#undef KFUSE_UNARY_N
    }
  } else if (kind == PointKind::scalar) {
    apply_binary_n(op.binary, op.scalar, v);
  } else {
    apply_operand_n(op.binary, op.operand, op.outer, op.inner, v, i, di, j, dj);
  }
}

template <class A, int N>
KFUSE_HDI void apply_chain(const PointOp<A>* ops, int n, A (&v)[N], int64_t i, int64_t di, int64_t j, int64_t dj) {
  for (int t = 0; t < n; ++t) apply_op_n(ops[t], v, i, di, j, dj);
}

// A run of point ops, stored as PointOp<A>[n] in the plan's memory.
template <class A>
struct Chain {
  const PointOp<A>* ops = nullptr;
  int n = 0;
};

enum class TailKind : int { point, reduce, softmax };

template <class A>
struct TailOp {
  TailKind kind;
  PointOp<A> point;   // kind == point
  ReduceKind reduce;  // kind == reduce
};

// Runs the tail on one row of K values held in `row` (team-shared memory).
// `Group` is the backend's cooperating group (a Kokkos team, a CUDA block):
//   g.for_each(n, f)            f(k) for k in [0, n), then a barrier
//   g.reduce(kind, n, f) -> ReduceAcc<A> over f(k), visible to the whole group
// Returns the number of values left in `row` (K, or 1 after a reduction).
template <class A, class Group>
KFUSE_HD int64_t run_tail(const Group& g, const TailOp<A>* ops, int n_ops, A* row, int64_t r, int64_t K) {
  for (int t = 0; t < n_ops; ++t) {
    const TailOp<A>& op = ops[t];
    if (op.kind == TailKind::point) {
      g.for_each(K, [&](int64_t k) { row[k] = op.point(row[k], r, k); });
    } else if (op.kind == TailKind::reduce) {
      const ReduceAcc<A> acc = g.reduce(op.reduce, K, [&](int64_t k) { return row[k]; });
      g.for_each(1, [&](int64_t) { row[0] = reduce_finish(op.reduce, acc, K); });
      K = 1;
    } else {
      const ReduceAcc<A> acc = g.reduce(ReduceKind::logsumexp, K, [&](int64_t k) { return row[k]; });
      g.for_each(K, [&](int64_t k) { row[k] = softmax_value(acc, row[k]); });
    }
  }
  return K;
}

// The per-row program after the first reduction: Z is R rows by K columns;
// the output holds R rows by K_out (K, or 1 when the tail reduces).
template <class A>
struct Tail {
  const TailOp<A>* ops = nullptr;
  int n = 0;
  int64_t R = 0, K = 0, K_out = 0;
};

// ---- The fold (DESIGN.md section 4) -------------------------------------
//
// Rows of a plane are cut into segments such that every tap's input-row range
// I(kh) is a union of whole segments (likewise columns). One pass over a
// plane sums each segment block; each tap's rectangle sum S[kh][kw] is then a
// sum of block sums: exact, no cancellation.

inline constexpr int kFoldMaxTaps = 16;                  // per axis
inline constexpr int kFoldMaxSegments = 2 * kFoldMaxTaps + 1;

struct FoldGeometry {
  int64_t N, C, H, W;          // input x [N, C, H, W]
  int64_t xs[4];               // x's strides, in elements
  int kH, kW;
  int row_segments, col_segments;
  int64_t row_cut[kFoldMaxSegments + 1];  // segment s covers [cut[s], cut[s+1])
  int64_t col_cut[kFoldMaxSegments + 1];
  uint64_t row_taps[kFoldMaxTaps];  // bit s: row segment s lies in I(kh)
  uint64_t col_taps[kFoldMaxTaps];
  int64_t chunks;              // row chunks a plane is split into
  int64_t rows_per_chunk;

  KFUSE_HDI int taps() const { return kH * kW; }
  KFUSE_HDI int blocks() const { return row_segments * col_segments; }

  KFUSE_HDI int row_segment(int64_t r) const {
    int s = 0;
    while (r >= row_cut[s + 1]) ++s;
    return s;
  }
  KFUSE_HDI int col_segment(int64_t c) const {
    int s = 0;
    while (c >= col_cut[s + 1]) ++s;
    return s;
  }

  // The largest segment block (in practice the central one, where every
  // tap's range covers the row and the column): kernels sum its elements in
  // registers and only the few border elements into shared block sums.
  struct Block {
    int64_t rlo, rhi, clo, chi;  // rows [rlo, rhi), columns [clo, chi)
    int index;                   // in B; -1 when the planes are empty
    // The column segments left and right of it in its rows, [cl2, clo) and
    // [chi, cr2) (blocks index - 1 and index + 1; empty ranges where there
    // are none): kernels keep them in registers too, so that the threads
    // whose vectors straddle the block's edge columns (one lane of every
    // warp when a warp's vectors span a row) stay out of shared atomics.
    int64_t cl2, cr2;
  };
  KFUSE_HDI Block largest_block() const {
    const auto largest = [](const int64_t* cut, int segments) {
      int best = -1;
      for (int s = 0; s < segments; ++s)
        if (best < 0 || cut[s + 1] - cut[s] > cut[best + 1] - cut[best]) best = s;
      return best;
    };
    const int r = largest(row_cut, row_segments), c = largest(col_cut, col_segments);
    if (r < 0 || c < 0) return Block{0, 0, 0, 0, -1, 0, 0};
    return Block{row_cut[r], row_cut[r + 1], col_cut[c], col_cut[c + 1], r * col_segments + c,
                 col_cut[c > 0 ? c - 1 : c], col_cut[c + 1 < col_segments ? c + 2 : c + 1]};
  }

  // S[t] for every tap t = kh*kW + kw from the block sums B[i*col_segments + j].
  template <class A>
  KFUSE_HDI A tap_sum(const A* B, int t) const {
    const uint64_t rm = row_taps[t / kW], cm = col_taps[t % kW];
    A s = A(0);
    for (int i = 0; i < row_segments; ++i)
      if (rm >> i & 1u)
        for (int j = 0; j < col_segments; ++j)
          if (cm >> j & 1u) s += B[i * col_segments + j];
    return s;
  }
};

// Z[n, co] = bias[co] + sum over (c, t) of weight[(c*taps + t)*Cout + co] *
//            S[n, g*cin_g + c, t], g = co / cout_g.
// Affine ops before the mean, the conv bias and 1/(Hout*Wout) are folded
// into weight and bias by the planner.
template <class A>
struct FoldContraction {
  int64_t Cout, cin_g, cout_g;
  const A* weight;  // [cin_g * taps, Cout]
  const A* bias;    // [Cout]

  // Input channel c's weights: [taps, cout_g] at a row stride of Cout.
  KFUSE_HDI const A* channel_weights(int64_t c, int64_t taps) const {
    return weight + (c % cin_g) * taps * Cout + c / cin_g * cout_g;
  }
  // Each plane's share is [cout_g] in shares [N * C, cout_g]; Z[n, co] adds
  // those of the cin_g channels of co's group: channel q's at [q * cout_g].
  template <class S>
  KFUSE_HDI const S* output_shares(const S* shares, int64_t C, int64_t n, int64_t co) const {
    return shares + (n * C + co / cout_g * cin_g) * cout_g + co % cout_g;
  }
};

}  // namespace kfuse::detail
