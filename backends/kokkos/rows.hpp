// Row kernels shared by the eager ops (ops.cpp) and the fused epilogue
// (backend.cpp): one team per row of a reduction or softmax, the row streamed
// with 16-byte loads when dense (stream.hpp), each element passed through a
// chain of point ops first (none for the eager ops).
#pragma once

#include <optional>
#include <string>

#include "backends/kokkos/dispatch.hpp"
#include "backends/kokkos/launch.hpp"
#include "backends/kokkos/reducer.hpp"
#include "backends/kokkos/workspace.hpp"
#include "backends/kokkos/stream.hpp"
#include "kfuse/detail/program.hpp"

namespace kfuse::kokkos {

// A row of x: `count` elements at base + inner.offset(k), dense when inner
// walks contiguously.
template <class T>
struct Row {
  const T* x;
  Indexer outer, inner;
  bool dense;
  int64_t count;

  KOKKOS_INLINE_FUNCTION const T* base(int64_t o) const { return x + outer.offset(o); }
};

// Point ops applied to each element before it is reduced (row o, column k).
// On N values at once (value m at row o + m do, column k + m dk), each op's
// fields are read and its kind dispatched once for the N.
template <class T>
struct Body {
  const detail::PointOp<T>* ops = nullptr;
  int n = 0;
  KOKKOS_INLINE_FUNCTION T operator()(T v, int64_t o, int64_t k) const { return detail::apply_chain(ops, n, v, o, k); }
  template <int N>
  KOKKOS_INLINE_FUNCTION void operator()(T (&v)[N], int64_t o, int64_t d_o, int64_t k, int64_t dk) const {
    detail::apply_chain(ops, n, v, o, d_o, k, dk);
  }
  // Column k of rows o0, o0 + 1, ... for the first nb of the N values: all at
  // once when nb == N, else one by one.
  template <int N>
  KOKKOS_INLINE_FUNCTION void across(T (&v)[N], int nb, int64_t o0, int64_t k) const {
    if (nb == N) (*this)(v, o0, 1, k, 0);
    else
      for (int m = 0; m < nb; ++m) v[m] = (*this)(v[m], o0 + m, k);
  }
};

// The reduction of elements [k0, k0 + n) of row o after `body` (the identity
// unless kChain), accumulated in R; every thread of the team holds the result.
template <int D, bool kChain, class R, class T>
KOKKOS_INLINE_FUNCTION detail::ReduceAcc<R> reduce_row(const Team& team, ReduceKind kind, const Row<T>& row,
                                                       const Body<T>& body, int64_t o, int64_t k0, int64_t n) {
  const auto f = [&](T v, int64_t k) { return kChain ? R(body(v, o, k)) : R(v); };
  detail::ReduceAcc<R> acc = detail::reduce_init<R>(kind);
  const T* base = row.base(o);
  if (row.dense) {
    stream_contiguous<D>(
        team, base + k0, n,
        [&](const Vec16<T>& d, int64_t e) {
          T v[Vec16<T>::kVec];
          for (int k = 0; k < Vec16<T>::kVec; ++k) v[k] = d.v[k];
          if (kChain) body(v, o, 0, k0 + e, 1);
          for (int k = 0; k < Vec16<T>::kVec; ++k) detail::reduce_push(kind, acc, R(v[k]));
        },
        [&](T v, int64_t e) { detail::reduce_push(kind, acc, f(v, k0 + e)); });
  } else {
    for (int64_t k = k0 + team.team_rank(); k < k0 + n; k += team.team_size())
      detail::reduce_push(kind, acc, f(base[row.inner.offset(k)], k));
  }
  team.team_reduce(AccReducer<R>(kind, acc));
  return acc;
}

// One team per (row, chunk): the chunk's reduction, into out[row] when a row
// is one chunk, else into partial[row * chunks + chunk].
template <int D, bool kChain, class T, class R>
struct ReduceRows {
  Row<T> row;
  Body<T> body;
  ReduceKind kind;
  int64_t chunks, chunk_len;
  T* out;
  detail::ReduceAcc<R>* partial;

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int64_t u = team.league_rank(), o = u / chunks, k0 = (u - o * chunks) * chunk_len;
    const int64_t n = row.count - k0 < chunk_len ? row.count - k0 : chunk_len;
    const detail::ReduceAcc<R> acc = reduce_row<D, kChain, R>(team, kind, row, body, o, k0, n);
    Kokkos::single(Kokkos::PerTeam(team), [&]() {
      if (chunks == 1) out[o] = T(detail::reduce_finish(kind, acc, row.count));
      else partial[u] = acc;
    });
  }
};

// out[o] = the chunks' partial reductions of row o, joined in chunk order.
template <class R, class T>
void join_chunks(ReduceKind kind, const detail::ReduceAcc<R>* partial, int64_t rows, int64_t chunks, int64_t count, T* out) {
  Kokkos::parallel_for("kfuse::reduce::join_chunks", Range(0, rows), KOKKOS_LAMBDA(int64_t o) {
    detail::ReduceAcc<R> acc = partial[o * chunks];
    for (int64_t ch = 1; ch < chunks; ++ch) detail::reduce_join(kind, acc, partial[o * chunks + ch]);
    out[o] = T(detail::reduce_finish(kind, acc, count));
  });
}

// Whether rows are better walked across (reduce_columns): when the reduced
// elements are strided but the kept axes hold the contiguous one (e.g. over
// the channels of NCHW), so that neighbouring outputs read neighbours.
template <class T>
bool by_columns(const Row<T>& row) {
  return !row.dense && row.outer.rank > 0 && row.outer.stride[row.outer.rank - 1] == 1;
}

// Outputs one thread walks together across their rows: on a GPU one
// (neighbouring threads read neighbouring elements), on the host a block
// whose elements at each k sit side by side, so that a core reads whole cache
// lines where one output a time would read one element of each.
constexpr int kColumns = kOnDevice ? 1 : 16;

// The first element of each output of the block from o0 (nb of them), and
// the number nb.
KOKKOS_INLINE_FUNCTION int column_block(const Indexer& outer, int64_t rows, int64_t o0, int64_t (&base)[kColumns]) {
  const int nb = rows - o0 < kColumns ? int(rows - o0) : kColumns;
  for (int m = 0; m < nb; ++m) base[m] = outer.offset(o0 + m);
  return nb;
}

// The block's elements k of its rows after `body`, into v (nb of them).
template <class T>
KOKKOS_INLINE_FUNCTION void column_values(const Row<T>& row, const Body<T>& body, const int64_t (&base)[kColumns],
                                          int nb, int64_t o0, int64_t k, T (&v)[kColumns]) {
  const int64_t ko = row.inner.offset(k);
  for (int m = 0; m < nb; ++m) v[m] = row.x[base[m] + ko];
  body.across(v, nb, o0, k);
}

// out[o] = the reduction of row o after `body`, walked across (by_columns).
template <class T, class R>
void reduce_columns(const char* label, const Row<T>& row, const Body<T>& body, ReduceKind kind, int64_t rows, T* out) {
  Kokkos::parallel_for(label, Range(0, (rows + kColumns - 1) / kColumns), KOKKOS_LAMBDA(int64_t b) {
    const int64_t o0 = b * kColumns;
    // Set up to nb; zeroed once a block (g++ cannot see that only those are read).
    int64_t base[kColumns] = {};
    T v[kColumns] = {};
    const int nb = column_block(row.outer, rows, o0, base);
    detail::ReduceAcc<R> acc[kColumns];
    for (int m = 0; m < kColumns; ++m) acc[m] = detail::reduce_init<R>(kind);
    for (int64_t k = 0; k < row.count; ++k) {
      column_values(row, body, base, nb, o0, k, v);
      for (int m = 0; m < nb; ++m) detail::reduce_push(kind, acc[m], R(v[m]));
    }
    for (int m = 0; m < nb; ++m) out[o0 + m] = T(detail::reduce_finish(kind, acc[m], row.count));
  });
}

// out[o] = the reduction of row o after `body`, o < rows. On a GPU long rows
// are split in chunks so that the teams fill the SMs in even waves (the rule
// of the fold's plane chunks, src/tuning), and the chunks' results joined in
// order. `threads` > 0: the caller's team size, else the tuner's.
template <class T, class R>
void run_reduce_rows(const char* label, const Row<T>& row, const Body<T>& body, ReduceKind kind, int64_t rows, T* out,
                     int threads) {
  if (rows == 0) return;
  if (threads <= 0 && by_columns(row)) return reduce_columns<T, R>(label, row, body, kind, rows, out);
  const auto functor = [&](auto depth, auto chain, int64_t chunks, int64_t chunk_len, detail::ReduceAcc<R>* partial) {
    return ReduceRows<decltype(depth)::value, decltype(chain)::value, T, R>{row, body, kind, chunks, chunk_len, out, partial};
  };
  // (Explicit long long: nvcc 13 mangles the deduced pairs of a braced list of template members.)
  const long long n_rows = rows, count = row.count, ops = body.n;
  const std::string shape = tuning::shape_class({{"rows", n_rows}, {"count", count}, {"ops", ops}});
  const auto policy = team_policy(rows, 1, 1);
  const auto plain = functor(std::integral_constant<int, 2>{}, std::false_type{}, 1, row.count, nullptr);
  const auto run = [&](const TeamConfig& c) {
    int64_t chunks = 1;
    if (kOnDevice && row.dense) {
      const tuning::DeviceLimits& limits = device_facts().limits;
      const int64_t resident =
          int64_t(tuning::blocks_per_sm(team_resources(policy, plain), limits, c.team_size)) * limits.sm_count;
      chunks = tuning::fold_chunks(rows, row.count / Vec16<T>::kVec, row.count * int64_t(sizeof(T)), resident);
    }
    int64_t len = row.count;  // elements per chunk: whole 16-byte vectors when a row is split
    if (chunks > 1) {
      len = (row.count + chunks - 1) / chunks;
      len += (Vec16<T>::kVec - len % Vec16<T>::kVec) % Vec16<T>::kVec;
      chunks = (row.count + len - 1) / len;
    }
    detail::ReduceAcc<R>* partial = chunks > 1 ? scratch<detail::ReduceAcc<R>>(Slot::row_partials, rows * chunks) : nullptr;
    with_depth(c.depth, [&](auto d) {
      const auto policy = team_policy(rows * chunks, c.team_size, 1);
      if (body.n > 0) Kokkos::parallel_for(label, policy, functor(d, std::true_type{}, chunks, len, partial));
      else Kokkos::parallel_for(label, policy, functor(d, std::false_type{}, chunks, len, partial));
    });
    if (chunks > 1) join_chunks(kind, partial, rows, chunks, row.count, out);
  };
  if (threads > 0) return run(TeamConfig{threads, 2});
  run(team_config("kokkos::reduce_rows", shape, policy, plain, run));
}

// out's row o = after(softmax(body(row o))): the (max, sum of exponentials)
// pass, then each element again.
template <int D, class T, class R>
struct SoftmaxRows {
  Row<T> row;
  Body<T> body, after;
  T* out;
  Indexer out_outer, out_inner;

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int64_t o = team.league_rank();
    const detail::ReduceAcc<R> acc = reduce_row<D, true, R>(team, ReduceKind::logsumexp, row, body, o, 0, row.count);
    const T* base = row.base(o);
    T* dst = out + out_outer.offset(o);
    for (int64_t k = team.team_rank(); k < row.count; k += team.team_size()) {
      const T v = body(base[row.inner.offset(k)], o, k);
      dst[out_inner.offset(k)] = after(T(detail::softmax_value(acc, R(v))), o, k);
    }
  }
};

// Softmax rows walked across (by_columns): the (max, sum of exponentials)
// pass, then the outputs.
template <class T, class R>
void softmax_columns(const char* label, const SoftmaxRows<2, T, R>& s, int64_t rows) {
  Kokkos::parallel_for(label, Range(0, (rows + kColumns - 1) / kColumns), KOKKOS_LAMBDA(int64_t b) {
    const int64_t o0 = b * kColumns;
    int64_t base[kColumns] = {}, dst[kColumns] = {};  // as in reduce_columns
    T v[kColumns] = {};
    const int nb = column_block(s.row.outer, rows, o0, base);
    column_block(s.out_outer, rows, o0, dst);
    detail::ReduceAcc<R> acc[kColumns];
    for (int m = 0; m < kColumns; ++m) acc[m] = detail::reduce_init<R>(ReduceKind::logsumexp);
    for (int64_t k = 0; k < s.row.count; ++k) {
      column_values(s.row, s.body, base, nb, o0, k, v);
      for (int m = 0; m < nb; ++m) detail::reduce_push(ReduceKind::logsumexp, acc[m], R(v[m]));
    }
    for (int64_t k = 0; k < s.row.count; ++k) {
      column_values(s.row, s.body, base, nb, o0, k, v);
      for (int m = 0; m < nb; ++m) v[m] = T(detail::softmax_value(acc[m], R(v[m])));
      s.after.across(v, nb, o0, k);
      const int64_t ko = s.out_inner.offset(k);
      for (int m = 0; m < nb; ++m) s.out[dst[m] + ko] = v[m];
    }
  });
}

// Softmax over `rows` rows (one team each), team size as in run_reduce_rows.
template <class T, class R>
void run_softmax_rows(const char* label, const SoftmaxRows<2, T, R>& k, int64_t rows, int threads) {
  if (rows == 0) return;
  if (threads <= 0 && by_columns(k.row)) return softmax_columns(label, k, rows);
  const auto run = [&](const TeamConfig& c) {
    with_depth(c.depth, [&](auto d) {
      Kokkos::parallel_for(label, team_policy(rows, c.team_size, 1),
                           SoftmaxRows<decltype(d)::value, T, R>{k.row, k.body, k.after, k.out, k.out_outer, k.out_inner});
    });
  };
  if (threads > 0) return run(TeamConfig{threads, 2});
  const long long n_rows = rows, count = k.row.count;  // (as in run_reduce_rows)
  const std::string shape = tuning::shape_class({{"rows", n_rows}, {"count", count}});
  run(team_config("kokkos::softmax_rows", shape, team_policy(rows, 1, 1), k, run));
}

}  // namespace kfuse::kokkos
