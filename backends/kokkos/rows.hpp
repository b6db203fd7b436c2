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
template <class T>
struct Body {
  const detail::PointOp<T>* ops = nullptr;
  int n = 0;
  KOKKOS_INLINE_FUNCTION T operator()(T v, int64_t o, int64_t k) const { return detail::apply_chain(ops, n, v, o, k); }
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
          for (int k = 0; k < Vec16<T>::kVec; ++k) detail::reduce_push(kind, acc, f(d.v[k], k0 + e + k));
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

// Whether rows are better walked by one thread each: on a GPU, when the
// reduced elements are strided but the kept axes hold the contiguous one
// (e.g. over the channels of NCHW), so neighbouring threads read neighbours.
template <class T>
bool by_columns(const Row<T>& row) {
  return kOnDevice && !row.dense && row.outer.rank > 0 && row.outer.stride[row.outer.rank - 1] == 1;
}

// out[o] = the reduction of row o after `body`, one thread per row.
template <class T, class R>
void reduce_columns(const char* label, const Row<T>& row, const Body<T>& body, ReduceKind kind, int64_t rows, T* out) {
  Kokkos::parallel_for(label, Range(0, rows), KOKKOS_LAMBDA(int64_t o) {
    const T* base = row.base(o);
    detail::ReduceAcc<R> acc = detail::reduce_init<R>(kind);
    for (int64_t k = 0; k < row.count; ++k) detail::reduce_push(kind, acc, R(body(base[row.inner.offset(k)], o, k)));
    out[o] = T(detail::reduce_finish(kind, acc, row.count));
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

// Softmax rows walked by one thread each (by_columns).
template <class T, class R>
void softmax_columns(const char* label, const SoftmaxRows<2, T, R>& s, int64_t rows) {
  Kokkos::parallel_for(label, Range(0, rows), KOKKOS_LAMBDA(int64_t o) {
    const T* base = s.row.base(o);
    T* dst = s.out + s.out_outer.offset(o);
    detail::ReduceAcc<R> acc = detail::reduce_init<R>(ReduceKind::logsumexp);
    for (int64_t k = 0; k < s.row.count; ++k)
      detail::reduce_push(ReduceKind::logsumexp, acc, R(s.body(base[s.row.inner.offset(k)], o, k)));
    for (int64_t k = 0; k < s.row.count; ++k) {
      const T v = s.body(base[s.row.inner.offset(k)], o, k);
      dst[s.out_inner.offset(k)] = s.after(T(detail::softmax_value(acc, R(v))), o, k);
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
