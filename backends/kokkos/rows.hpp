// Row kernels shared by the eager ops (ops.cpp) and the fused epilogue
// (backend.cpp), each element passed through a chain of point ops first (none
// for the eager ops). A row is the elements one output reduces (or one
// softmax normalises):
//  - contiguous rows (dense): short ones (fewer than kWarpRow elements) take
//    the vector lanes of one team thread each (on a GPU a warp, or fewer
//    lanes for rows of fewer 16-byte vectors), several rows a team; long ones
//    a team each, split in chunks when there are few; the row streamed with
//    16-byte loads (stream.hpp);
//  - rows walked across (by_columns, e.g. over C of NCHW): a thread per
//    output on a GPU, loads coalesced across threads and kAhead of them in
//    flight (a softmax of rows of up to 256 values: 32 rows a team, held in
//    its warps' registers); on the host a block of outputs side by side.
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
  // The first nb of the N values at (o + m do, k + m dk): all at once when
  // nb == N, else one by one (a loop of N, so that v keeps to registers).
  template <int N>
  KOKKOS_INLINE_FUNCTION void first(T (&v)[N], int nb, int64_t o, int64_t d_o, int64_t k, int64_t dk) const {
    if (nb == N) {
      (*this)(v, o, d_o, k, dk);
      return;
    }
    KFUSE_UNROLL
    for (int m = 0; m < N; ++m)
      if (m < nb) v[m] = (*this)(v[m], o + m * d_o, k + m * dk);
  }
};

// ---- The threads of a row ---------------------------------------------------------

// Rows shorter than this take the vector lanes of one team thread (VectorLanes).
constexpr int64_t kWarpRow = 2048;

// The ts threads that share one row: run(f) calls f(t, ts) on each thread t,
// reduce(kind, f) too with the thread's accumulator, and gives every thread
// the join of all.
struct TeamLanes {  // the whole team
  const Team& team;
  template <class F>
  KOKKOS_INLINE_FUNCTION void run(const F& f) const {
    f(int64_t(team.team_rank()), int64_t(team.team_size()));
  }
  template <class R, class F>
  KOKKOS_INLINE_FUNCTION detail::ReduceAcc<R> reduce(ReduceKind kind, const F& f) const {
    detail::ReduceAcc<R> acc = detail::reduce_init<R>(kind);
    f(int64_t(team.team_rank()), int64_t(team.team_size()), acc);
    team.team_reduce(AccReducer<R>(kind, acc));
    return acc;
  }
};
struct VectorLanes {  // the `lanes` vector lanes of this team thread (the policy's vector length)
  const Team& team;
  int lanes;
  template <class F>
  KOKKOS_INLINE_FUNCTION void run(const F& f) const {
    Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, lanes), [&](int lane) { f(int64_t(lane), int64_t(lanes)); });
  }
  template <class R, class F>
  KOKKOS_INLINE_FUNCTION detail::ReduceAcc<R> reduce(ReduceKind kind, const F& f) const {
    return join<AccReducer<R>>(kind, f);
  }
  // The same for a reduction whose state is one value (ScalarReducer): f(t, ts, a) with a an R.
  template <class R, class F>
  KOKKOS_INLINE_FUNCTION R reduce_scalar(ReduceKind kind, const F& f) const {
    return join<ScalarReducer<R>>(kind, f);
  }

 private:
  template <class Reducer, class F>
  KOKKOS_INLINE_FUNCTION typename Reducer::value_type join(ReduceKind kind, const F& f) const {
    using V = typename Reducer::value_type;
    V acc;
    Reducer(kind, acc).init(acc);
    Kokkos::parallel_reduce(
        Kokkos::ThreadVectorRange(team, lanes), [&](int lane, V& a) { f(int64_t(lane), int64_t(lanes), a); },
        Reducer(kind, acc));
    return acc;
  }
};

// Whether a row goes to the vector lanes of one team thread.
template <class T>
bool by_lanes(const Row<T>& row) {
  return row.dense && row.count < kWarpRow;
}

// Vector lanes a row of VectorLanes: on a GPU the fewest (a power of two, at
// most a warp) that take all of the row's 16-byte vectors at once, so that a
// short row leaves few lanes idle; on the host one.
template <class T>
int row_lanes(const Row<T>& row) {
  if (!kOnDevice) return 1;
  const int64_t vectors = (row.count + Vec16<T>::kVec - 1) / Vec16<T>::kVec;
  int lanes = 1;
  while (lanes < 32 && lanes < vectors) lanes *= 2;
  return lanes;
}

// The policy of `rows` rows of VectorLanes, `lanes` threads a row, in teams
// of the tuned `threads` threads; and the row of a team thread in it (past
// the last row for the spare threads of the last team).
inline TeamPolicy lanes_policy(int64_t rows, int threads, int lanes) {
  const int per_team = threads / lanes > 1 ? threads / lanes : 1;
  return team_policy((rows + per_team - 1) / per_team, per_team, lanes);
}
KOKKOS_INLINE_FUNCTION int64_t lanes_row(const Team& team) {
  return int64_t(team.league_rank()) * team.team_size() + team.team_rank();
}

// The reduction of elements [k0, k0 + n) of row o after `body` (the identity
// unless kChain), accumulated in R; every thread of the lanes holds the result.
template <int D, bool kChain, class R, class T, class Lanes>
KOKKOS_INLINE_FUNCTION detail::ReduceAcc<R> reduce_row(const Lanes& lanes, ReduceKind kind, const Row<T>& row,
                                                       const Body<T>& body, int64_t o, int64_t k0, int64_t n) {
  const T* base = row.base(o);
  return lanes.template reduce<R>(kind, [&](int64_t t, int64_t ts, detail::ReduceAcc<R>& acc) {
    const auto f = [&](T v, int64_t k) { return kChain ? R(body(v, o, k)) : R(v); };
    if (row.dense) {
      stream_contiguous<D>(
          t, ts, base + k0, n,
          [&](const Vec16<T>& d, int64_t e) {
            T v[Vec16<T>::kVec];
            KFUSE_UNROLL
            for (int k = 0; k < Vec16<T>::kVec; ++k) v[k] = d.v[k];
            if (kChain) body(v, o, 0, k0 + e, 1);
            KFUSE_UNROLL
            for (int k = 0; k < Vec16<T>::kVec; ++k) detail::reduce_push(kind, acc, R(v[k]));
          },
          [&](T v, int64_t e) { detail::reduce_push(kind, acc, f(v, k0 + e)); });
    } else {
      for (int64_t k = k0 + t; k < k0 + n; k += ts) detail::reduce_push(kind, acc, f(base[row.inner.offset(k)], k));
    }
  });
}

// ---- Reductions over rows -----------------------------------------------------------

// kByLanes: team thread r of team l reduces row l * team_size + r with its
// vector lanes, into out[row]. Else one team per (row, chunk): the chunk's
// reduction, into out[row] when a row is one chunk, else into
// partial[row * chunks + chunk].
template <int D, bool kChain, bool kByLanes, class T, class R>
struct ReduceRows {
  Row<T> row;
  Body<T> body;
  ReduceKind kind;
  int64_t rows, chunks, chunk_len;
  T* out;
  detail::ReduceAcc<R>* partial;
  int lanes;  // kByLanes: a row's vector lanes

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    if constexpr (kByLanes) {
      const int64_t o = lanes_row(team);
      if (o >= rows) return;
      const detail::ReduceAcc<R> acc = reduce_row<D, kChain, R>(VectorLanes{team, lanes}, kind, row, body, o, 0, row.count);
      Kokkos::single(Kokkos::PerThread(team), [&]() { out[o] = T(detail::reduce_finish(kind, acc, row.count)); });
    } else {
      const int64_t u = team.league_rank(), o = u / chunks, k0 = (u - o * chunks) * chunk_len;
      const int64_t n = row.count - k0 < chunk_len ? row.count - k0 : chunk_len;
      const detail::ReduceAcc<R> acc = reduce_row<D, kChain, R>(TeamLanes{team}, kind, row, body, o, k0, n);
      Kokkos::single(Kokkos::PerTeam(team), [&]() {
        if (chunks == 1) out[o] = T(detail::reduce_finish(kind, acc, row.count));
        else partial[u] = acc;
      });
    }
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

// ---- Rows walked across --------------------------------------------------------------

// Whether rows are better walked across (reduce_columns): when the reduced
// elements are strided but the kept axes hold the contiguous one (e.g. over
// the channels of NCHW), so that neighbouring outputs read neighbouring elements.
template <class T>
bool by_columns(const Row<T>& row) {
  return !row.dense && row.outer.rank > 0 && row.outer.stride[row.outer.rank - 1] == 1;
}

// Outputs one thread walks together across their rows (kColumns), and the
// columns of each whose loads it issues before using any (kAhead). On a GPU
// one output (neighbouring threads read neighbouring elements) and 8 loads in
// flight: one at a time, each thread waited on every load (a thread's column
// of a logsumexp over C is C dependent steps). On the host a block of outputs
// whose elements at each k sit side by side, so that a core reads whole cache
// lines where one output a time would read one element of each.
constexpr int kColumns = kOnDevice ? 1 : 16;
constexpr int kAhead = kOnDevice ? 8 : 1;
static_assert(kColumns == 1 || kAhead == 1, "a block's values are one output's columns or one column's outputs");
using ColumnBlock = int64_t[kColumns];  // where each output of a block starts
template <class T>
using ColumnValues = T[kColumns * kAhead];  // value (m, u): output o0 + m at column k + u, at m * kAhead + u

// Calls f(i, m, u) for each value (m, u) of a block in use, m < nb and
// u < nk, i = m * kAhead + u. The loops run to kColumns and kAhead, unrolled
// on a GPU, so that the block's values stay in registers: loops to nb and nk
// put them in local memory, where each store waited on its load (one load
// in flight, not kAhead: H100, 2026-12-05, logsumexp over C at 3.9x the floor).
template <class F>
KOKKOS_INLINE_FUNCTION void column_each(int nb, int nk, const F& f) {
  KFUSE_UNROLL
  for (int m = 0; m < kColumns; ++m) {
    KFUSE_UNROLL
    for (int u = 0; u < kAhead; ++u)
      if (m < nb && u < nk) f(m * kAhead + u, m, u);
  }
}

// The first element of each output of the block from o0 (nb of them), and
// the number nb.
KOKKOS_INLINE_FUNCTION int column_block(const Indexer& outer, int64_t rows, int64_t o0, ColumnBlock& base) {
  const int nb = rows - o0 < kColumns ? int(rows - o0) : kColumns;
  column_each(nb, 1, [&](int, int m, int) { base[m] = outer.offset(o0 + m); });
  return nb;
}

// Where columns k + u of a row start, for u < nk: first + u * step when the
// run is affine (Indexer::run; always for one reduced axis), else through
// the indexer.
struct ColumnRun {
  const Indexer& inner;
  int64_t k, first = 0, step = 0;
  bool affine;
  KOKKOS_INLINE_FUNCTION ColumnRun(const Indexer& ix, int64_t k0, int nk) : inner(ix), k(k0) {
    affine = inner.run(k0, 1, nk, first, step);
  }
  KOKKOS_INLINE_FUNCTION int64_t operator()(int u) const { return affine ? first + u * step : inner.offset(k + u); }
};

// A chain on the block's values: nb outputs at one column, or nk columns of one output.
template <class T>
KOKKOS_INLINE_FUNCTION void column_chain(const Body<T>& chain, ColumnValues<T>& v, int nb, int64_t o0, int64_t k, int nk) {
  if constexpr (kAhead == 1) chain.first(v, nb, o0, 1, k, 0);
  else chain.first(v, nk, o0, 0, k, 1);
}

// The block's elements at columns [k, k + nk) after `body` (kChain).
template <bool kChain, class T>
KOKKOS_INLINE_FUNCTION void column_values(const Row<T>& row, const Body<T>& body, const ColumnBlock& base, int nb,
                                          int64_t o0, int64_t k, int nk, ColumnValues<T>& v) {
  const ColumnRun at(row.inner, k, nk);
  column_each(nb, nk, [&](int i, int m, int u) { v[i] = row.x[base[m] + at(u)]; });
  if (kChain) column_chain(body, v, nb, o0, k, nk);
}

// The block's values pushed into its outputs' accumulators: a whole run of
// one output's columns at once (one merge of a logsumexp for kAhead values).
template <class R, class T>
KOKKOS_INLINE_FUNCTION void column_push(ReduceKind kind, detail::ReduceAcc<R> (&acc)[kColumns], const ColumnValues<T>& v,
                                        int nb, int nk) {
  if (kAhead > 1 && nk == kAhead) {
    R r[kAhead];
    KFUSE_UNROLL
    for (int u = 0; u < kAhead; ++u) r[u] = R(v[u]);
    detail::reduce_push_n(kind, acc[0], r);
    return;
  }
  column_each(nb, nk, [&](int i, int m, int) { detail::reduce_push(kind, acc[m], R(v[i])); });
}

// Calls f(k, nk) for the column runs [k, k + nk) of a row of `count`.
template <class F>
KOKKOS_INLINE_FUNCTION void column_runs(int64_t count, const F& f) {
  for (int64_t k = 0; k < count; k += kAhead) f(k, count - k < kAhead ? int(count - k) : kAhead);
}

// out[o] = the reduction of row o after `body` (kChain), walked across (by_columns).
template <bool kChain, class T, class R>
void reduce_columns(const char* label, const Row<T>& row, const Body<T>& body, ReduceKind kind, int64_t rows, T* out) {
  Kokkos::parallel_for(label, Range(0, (rows + kColumns - 1) / kColumns), KOKKOS_LAMBDA(int64_t b) {
    const int64_t o0 = b * kColumns;
    // Set up to nb (nk); zeroed once a block (g++ cannot see that only those are read).
    ColumnBlock base = {};
    ColumnValues<T> v = {};
    const int nb = column_block(row.outer, rows, o0, base);
    detail::ReduceAcc<R> acc[kColumns];
    for (int m = 0; m < kColumns; ++m) acc[m] = detail::reduce_init<R>(kind);
    column_runs(row.count, [&](int64_t k, int nk) {
      column_values<kChain>(row, body, base, nb, o0, k, nk, v);
      column_push(kind, acc, v, nb, nk);
    });
    for (int m = 0; m < nb; ++m) out[o0 + m] = T(detail::reduce_finish(kind, acc[m], row.count));
  });
}

// out[o] = the reduction of row o after `body`, o < rows. On a GPU long rows
// are split in chunks so that the teams fill the SMs in even waves (the rule
// of the fold's plane chunks, src/tuning), and the chunks' results joined in
// order. `threads` > 0: the caller's team size (a team a row), else the tuner's.
template <class T, class R>
void run_reduce_rows(const char* label, const Row<T>& row, const Body<T>& body, ReduceKind kind, int64_t rows, T* out,
                     int threads) {
  if (rows == 0) return;
  with_chain(body.n > 0, [&](auto chain) {
    constexpr bool kChain = decltype(chain)::value;
    if (threads <= 0 && by_columns(row)) return reduce_columns<kChain, T, R>(label, row, body, kind, rows, out);
    const int lanes = row_lanes(row);
    const auto functor = [&](auto depth, auto ops, auto by_lanes, int64_t chunks, int64_t chunk_len,
                             detail::ReduceAcc<R>* partial) {
      return ReduceRows<decltype(depth)::value, decltype(ops)::value, decltype(by_lanes)::value, T, R>{
          row, body, kind, rows, chunks, chunk_len, out, partial, lanes};
    };
    const auto launch = [&](auto by_lanes, const TeamPolicy& policy, const TeamConfig& c, int64_t chunks, int64_t len,
                            detail::ReduceAcc<R>* partial) {
      with_depth(c.depth, [&](auto d) {
        Kokkos::parallel_for(label, policy, functor(d, chain, by_lanes, chunks, len, partial));
      });
    };
    // (Explicit long long: nvcc 13 mangles the deduced pairs of a braced list of template members.)
    const long long n_rows = rows, count = row.count, ops = body.n;
    const std::string shape = tuning::shape_class({{"rows", n_rows}, {"count", count}, {"ops", ops}});
    const auto plain = [&](auto by_lanes) {
      return functor(std::integral_constant<int, 2>{}, std::false_type{}, by_lanes, 1, row.count, nullptr);
    };

    if (threads <= 0 && by_lanes(row)) {
      const auto run = [&](const TeamConfig& c) {
        launch(std::true_type{}, lanes_policy(rows, c.team_size, lanes), c, 1, row.count, nullptr);
      };
      return run(
          team_config("kokkos::reduce_rows_by_lanes", shape, team_policy(rows, 1, lanes), plain(std::true_type{}), run));
    }

    const auto policy = team_policy(rows, 1, 1);
    const auto run = [&](const TeamConfig& c) {
      int64_t chunks = 1;
      if (kOnDevice && row.dense) {
        const tuning::DeviceLimits& limits = device_facts().limits;
        const int64_t resident =
            int64_t(tuning::blocks_per_sm(team_resources(policy, plain(std::false_type{})), limits, c.team_size)) *
            limits.sm_count;
        chunks = tuning::fold_chunks(rows, row.count / Vec16<T>::kVec, row.count * int64_t(sizeof(T)), resident);
      }
      int64_t len = row.count;  // elements per chunk: whole 16-byte vectors when a row is split
      if (chunks > 1) {
        len = (row.count + chunks - 1) / chunks;
        len += (Vec16<T>::kVec - len % Vec16<T>::kVec) % Vec16<T>::kVec;
        chunks = (row.count + len - 1) / len;
      }
      detail::ReduceAcc<R>* partial =
          chunks > 1 ? scratch<detail::ReduceAcc<R>>(Slot::row_partials, rows * chunks) : nullptr;
      launch(std::false_type{}, team_policy(rows * chunks, c.team_size, 1), c, chunks, len, partial);
      if (chunks > 1) join_chunks(kind, partial, rows, chunks, row.count, out);
    };
    if (threads > 0) return run(TeamConfig{threads, 2});
    run(team_config("kokkos::reduce_rows", shape, policy, plain(std::false_type{}), run));
  });
}

// ---- Softmax ----------------------------------------------------------------------------

// out's row o = after(softmax(body(row o))), the output's row at
// out + out_outer.offset(o) + out_inner.offset(k).
template <class T, class R>
struct Softmax {
  Row<T> row;
  Body<T> body, after;
  T* out;
  Indexer out_outer, out_inner;
};

// The (max, sum of exponentials) pass, then each element again: read as the
// first pass did (its second read mostly from L2, or L1), stored in 16-byte
// vectors where the output row is contiguous and aligned as the input's.
// kChain: s.body and s.after are applied (else both are empty). kByLanes:
// rows of VectorLanes as ReduceRows; else a team a row.
template <int D, bool kChain, bool kByLanes, class T, class R>
struct SoftmaxRows {
  Softmax<T, R> s;
  int64_t rows;
  int lanes;  // kByLanes: a row's vector lanes

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    if constexpr (kByLanes) {
      const int64_t o = lanes_row(team);
      if (o < rows) softmax_row(VectorLanes{team, lanes}, o);
    } else {
      softmax_row(TeamLanes{team}, team.league_rank());
    }
  }

  template <class Lanes>
  KOKKOS_INLINE_FUNCTION void softmax_row(const Lanes& lanes, int64_t o) const {
    const Row<T>& row = s.row;
    const detail::ReduceAcc<R> acc = reduce_row<D, kChain, R>(lanes, ReduceKind::logsumexp, row, s.body, o, 0, row.count);
    const T* base = row.base(o);
    T* dst = s.out + s.out_outer.offset(o);
    // Element k of the output from element v of the row.
    const auto output = [&](T v, int64_t k) {
      if (kChain) v = s.body(v, o, k);
      v = T(detail::softmax_value(acc, R(v)));
      return kChain ? s.after(v, o, k) : v;
    };
    lanes.run([&](int64_t t, int64_t ts) {
      if (!row.dense) {
        for (int64_t k = t; k < row.count; k += ts) dst[s.out_inner.offset(k)] = output(base[row.inner.offset(k)], k);
        return;
      }
      using V = Vec16<T>;
      const bool out_dense = s.out_inner.is_dense();
      const bool paired = out_dense && (reinterpret_cast<uintptr_t>(dst) - reinterpret_cast<uintptr_t>(base)) % 16 == 0;
      stream_contiguous<D>(
          t, ts, base, row.count,
          [&](const V& d, int64_t e) {
            T v[V::kVec];
            KFUSE_UNROLL
            for (int k = 0; k < V::kVec; ++k) v[k] = d.v[k];
            if (kChain) s.body(v, o, 0, e, 1);
            KFUSE_UNROLL
            for (int k = 0; k < V::kVec; ++k) v[k] = T(detail::softmax_value(acc, R(v[k])));
            if (kChain) s.after(v, o, 0, e, 1);
            if (paired) {
              V w;
              KFUSE_UNROLL
              for (int k = 0; k < V::kVec; ++k) w.v[k] = v[k];
              *reinterpret_cast<V*>(dst + e) = w;
            } else {
              KFUSE_UNROLL
              for (int k = 0; k < V::kVec; ++k) dst[out_dense ? e + k : s.out_inner.offset(e + k)] = v[k];
            }
          },
          [&](T v, int64_t e) { dst[out_dense ? e : s.out_inner.offset(e)] = output(v, e); });
    });
  }
};

// Softmax rows of VectorLanes held in registers, for rows of at most
// kHeldVecs 16-byte vectors a lane: one read of the row (SoftmaxRows reads it
// twice) and one exponential a value (SoftmaxRows' online (max, sum) pass
// pays two a value, and a third for the output). Lane t holds
// stream_contiguous's vectors t + j ts and edge elements t + i ts; their
// max, joined across the lanes, then exp(v - max) of each and their sum,
// joined likewise; the outputs are the held exponentials times the sum's
// reciprocal. (A lane's values live from one vector loop of its thread to
// the next: each loop runs index t on lane t.) On a GPU a row takes the
// fewest lanes that hold it (lanes_of): a warp then works on several rows at
// once, their loads in flight together and the joins across lanes shorter,
// where a warp a row of 256 floats (2 vectors a lane) left DRAM at 40% with
// most of the time in Kokkos's 5-step vector joins (H100, 2026-12-06: 513
// warp instructions a row, 2.31x the floor).
constexpr int kHeldVecs = 8;
template <bool kChain, class T, class R>
struct SoftmaxRowsHeld {
  using V = Vec16<T>;
  static constexpr int kV = V::kVec, kEdges = 2 * kV - 2, kHeld = kHeldVecs * kV + kEdges;
  Softmax<T, R> s;
  int64_t rows;
  int lanes;

  // The lanes of a row (a power of two, at most a warp; one on the host), and
  // whether they hold it.
  static int lanes_of(const Row<T>& row) {
    if (!kOnDevice) return 1;
    const int64_t vectors = (row.count + kV - 1) / kV;
    int n = 1;
    while (n < 32 && int64_t(n) * kHeldVecs < vectors) n *= 2;
    return n;
  }
  static bool fits(const Row<T>& row) { return row.dense && row.count <= int64_t(lanes_of(row)) * kHeldVecs * kV; }

  // Calls vec(j, e) for each 16-byte vector j of lane t (slots j kV to j kV +
  // kV - 1; e: the row element of its first value) and one(i, e) for each edge
  // element it holds (slot i, row element e).
  template <class FV, class FO>
  KOKKOS_INLINE_FUNCTION static void slots(const ContiguousSplit<T>& sp, int64_t t, int64_t ts, const FV& vec,
                                           const FO& one) {
    KFUSE_UNROLL
    for (int j = 0; j < kHeldVecs; ++j)
      if (t + j * ts < sp.nvec) vec(j, sp.head + (t + j * ts) * kV);
    KFUSE_UNROLL
    for (int i = 0; i < kEdges; ++i)
      if (t + i * ts < sp.edges) one(kHeldVecs * kV + i, sp.edge(t + i * ts));
  }
  // Calls f(i) for each slot i of lane t that holds a value.
  template <class F>
  KOKKOS_INLINE_FUNCTION static void each(const ContiguousSplit<T>& sp, int64_t t, int64_t ts, const F& f) {
    slots(
        sp, t, ts,
        [&](int j, int64_t) {
          KFUSE_UNROLL
          for (int k = 0; k < kV; ++k) f(j * kV + k);
        },
        [&](int i, int64_t) { f(i); });
  }

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int64_t o = lanes_row(team);
    if (o >= rows) return;
    const VectorLanes lane{team, lanes};
    const T* base = s.row.base(o);
    const ContiguousSplit<T> sp(base, s.row.count);
    R v[kHeld] = {};  // (set where read; g++ cannot see that)
    lane.run([&](int64_t t, int64_t ts) {
      slots(
          sp, t, ts,
          [&](int j, int64_t e) {
            const V d = *reinterpret_cast<const V*>(base + e);  // (e is past the head: 16-byte aligned)
            T w[kV];
            KFUSE_UNROLL
            for (int k = 0; k < kV; ++k) w[k] = d.v[k];
            if (kChain) s.body(w, o, 0, e, 1);
            KFUSE_UNROLL
            for (int k = 0; k < kV; ++k) v[j * kV + k] = R(w[k]);
          },
          [&](int i, int64_t e) { v[i] = R(kChain ? s.body(base[e], o, e) : base[e]); });
    });
    const R m = lane.template reduce_scalar<R>(ReduceKind::max, [&](int64_t t, int64_t ts, R& a) {
      each(sp, t, ts, [&](int i) { a = detail::nan_max(a, v[i]); });
    });
    const R sum = lane.template reduce_scalar<R>(ReduceKind::sum, [&](int64_t t, int64_t ts, R& a) {
      each(sp, t, ts, [&](int i) {
        v[i] = std::exp(v[i] - m);
        a += v[i];
      });
    });
    const detail::ReduceAcc<R> acc{m, sum};
    T* dst = s.out + s.out_outer.offset(o);
    const bool out_dense = s.out_inner.is_dense();
    const bool paired = out_dense && (reinterpret_cast<uintptr_t>(dst) - reinterpret_cast<uintptr_t>(base)) % 16 == 0;
    lane.run([&](int64_t t, int64_t ts) {
      slots(
          sp, t, ts,
          [&](int j, int64_t e) {
            T w[kV];
            KFUSE_UNROLL
            for (int k = 0; k < kV; ++k) w[k] = T(detail::softmax_of_exp(acc, v[j * kV + k]));
            if (kChain) s.after(w, o, 0, e, 1);
            if (paired) {
              V d;
              KFUSE_UNROLL
              for (int k = 0; k < kV; ++k) d.v[k] = w[k];
              *reinterpret_cast<V*>(dst + e) = d;
            } else {
              KFUSE_UNROLL
              for (int k = 0; k < kV; ++k) dst[out_dense ? e + k : s.out_inner.offset(e + k)] = w[k];
            }
          },
          [&](int i, int64_t e) {
            T w = T(detail::softmax_of_exp(acc, v[i]));
            if (kChain) w = s.after(w, o, e);
            dst[out_dense ? e : s.out_inner.offset(e)] = w;
          });
    });
  }
};

// Softmax rows walked across (by_columns): the (max, sum of exponentials)
// pass, then the outputs (chains as in SoftmaxRows).
template <bool kChain, class T, class R>
void softmax_columns(const char* label, const Softmax<T, R>& s, int64_t rows) {
  Kokkos::parallel_for(label, Range(0, (rows + kColumns - 1) / kColumns), KOKKOS_LAMBDA(int64_t b) {
    const int64_t o0 = b * kColumns;
    ColumnBlock base = {}, dst = {};  // as in reduce_columns
    ColumnValues<T> v = {};
    const int nb = column_block(s.row.outer, rows, o0, base);
    column_block(s.out_outer, rows, o0, dst);
    detail::ReduceAcc<R> acc[kColumns];
    for (int m = 0; m < kColumns; ++m) acc[m] = detail::reduce_init<R>(ReduceKind::logsumexp);
    column_runs(s.row.count, [&](int64_t k, int nk) {
      column_values<kChain>(s.row, s.body, base, nb, o0, k, nk, v);
      column_push(ReduceKind::logsumexp, acc, v, nb, nk);
    });
    column_runs(s.row.count, [&](int64_t k, int nk) {
      column_values<kChain>(s.row, s.body, base, nb, o0, k, nk, v);
      column_each(nb, nk, [&](int i, int m, int) { v[i] = T(detail::softmax_value(acc[m], R(v[i]))); });
      if (kChain) column_chain(s.after, v, nb, o0, k, nk);
      const ColumnRun at(s.out_inner, k, nk);
      column_each(nb, nk, [&](int i, int m, int u) { s.out[dst[m] + at(u)] = v[i]; });
    });
  });
}

// Softmax rows walked across, held (on a GPU, rows of at most 32 kHeldGroups
// values): a team of 32 kHeldGroups threads per 32 rows, lane l of each warp
// on row o0 + l and warp g holding its values k = g + kHeldGroups t (t <
// HOLD) in registers; the warps' maxima, then their sums of exp(v - max),
// joined through team scratch in warp order (deterministic). One read of the
// row, where softmax_columns reads it twice (the CUDA backend's
// epi_softmax_cols_held).
constexpr int kHeldGroups = 8;
template <int HOLD, bool kChain, class T, class R>
struct SoftmaxHeld {
  using Parts = Kokkos::View<R*, ExecSpace::scratch_memory_space, Kokkos::MemoryUnmanaged>;
  Softmax<T, R> s;
  int64_t rows;

  static constexpr int kTeam = 32 * kHeldGroups;
  static std::size_t scratch_bytes() { return Parts::shmem_size(2 * kTeam); }

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int lane = team.team_rank() % 32, g = team.team_rank() / 32;
    const int64_t o = int64_t(team.league_rank()) * 32 + lane;
    const bool live = o < rows;
    const int64_t count = s.row.count;
    const int held = count > g ? int((count - g + kHeldGroups - 1) / kHeldGroups) : 0;  // this warp's values
    Parts part(team.team_scratch(0), 2 * kTeam);
    T v[HOLD];
    const T* base = s.row.x + (live ? s.row.outer.offset(o) : 0);
    // Value t at k = g + kHeldGroups t: first + t step where that run is affine
    // (Indexer::run), else through the indexer. (Two loops: one loop choosing
    // per value kept both address paths live, in registers.)
    int64_t first = 0, step = 0;
    bool affine = held > 0 && s.row.inner.run(g, kHeldGroups, held, first, step);
    if (affine) {
      KFUSE_UNROLL
      for (int t = 0; t < HOLD; ++t) v[t] = live && t < held ? base[first + t * step] : T(0);
    } else {
      KFUSE_UNROLL
      for (int t = 0; t < HOLD; ++t) v[t] = live && t < held ? base[s.row.inner.offset(g + t * kHeldGroups)] : T(0);
    }
    if (kChain) s.body(v, o, 0, g, kHeldGroups);
    R m = -detail::inf<R>();
    KFUSE_UNROLL
    for (int t = 0; t < HOLD; ++t)
      if (t < held) m = detail::nan_max(m, R(v[t]));
    part(team.team_rank()) = m;
    team.team_barrier();
    detail::ReduceAcc<R> acc{part(lane), R(0)};
    KFUSE_UNROLL
    for (int w = 1; w < kHeldGroups; ++w) acc.a = detail::nan_max(acc.a, part(w * 32 + lane));
    // exp(v - max) in place (R is T on a device; on the host a float's
    // exponential is rounded to float before the sum, an ulp).
    R sum = R(0);
    KFUSE_UNROLL
    for (int t = 0; t < HOLD; ++t) {
      v[t] = T(std::exp(R(v[t]) - acc.a));
      if (t < held) sum += R(v[t]);
    }
    part(kTeam + team.team_rank()) = sum;
    team.team_barrier();
    KFUSE_UNROLL
    for (int w = 0; w < kHeldGroups; ++w) acc.b += part(kTeam + w * 32 + lane);
    KFUSE_UNROLL
    for (int t = 0; t < HOLD; ++t) v[t] = T(detail::softmax_of_exp(acc, R(v[t])));
    if (kChain) s.after(v, o, 0, g, kHeldGroups);
    if (!live) return;
    T* dst = s.out + s.out_outer.offset(o);
    affine = held > 0 && s.out_inner.run(g, kHeldGroups, held, first, step);
    if (affine) {
      KFUSE_UNROLL
      for (int t = 0; t < HOLD; ++t)
        if (t < held) dst[first + t * step] = v[t];
    } else {
      KFUSE_UNROLL
      for (int t = 0; t < HOLD; ++t)
        if (t < held) dst[s.out_inner.offset(g + t * kHeldGroups)] = v[t];
    }
  }
};

// Teams an SM must hold: 4 (at most 64 registers) for rows of up to 16 values
// a thread, where ptxas took 102 and 2 teams fit, 25% of the warps: too few
// loads in flight between a team's barriers (H100, 2026-12-05, DRAM 42%).
template <int HOLD, bool kChain, class T, class R>
void softmax_held(const char* label, const Softmax<T, R>& s, int64_t rows) {
  using F = SoftmaxHeld<HOLD, kChain, T, R>;
  using Policy = Kokkos::TeamPolicy<ExecSpace, Kokkos::LaunchBounds<F::kTeam, HOLD <= 16 ? 4 : 2>>;
  Kokkos::parallel_for(label,
                       Policy((rows + 31) / 32, F::kTeam, 1).set_scratch_size(0, Kokkos::PerTeam(F::scratch_bytes())),
                       F{s, rows});
}

// Softmax over `rows` rows: walked across, by the lanes of a team thread, or
// a team a row (team size as in run_reduce_rows); without the chain
// interpreter when there are no point ops.
template <class T, class R>
void run_softmax_rows(const char* label, const Softmax<T, R>& s, int64_t rows, int threads) {
  if (rows == 0) return;
  with_chain(s.body.n > 0 || s.after.n > 0, [&](auto chain) {
    constexpr bool kChain = decltype(chain)::value;
    if (threads <= 0 && by_columns(s.row)) {
      if constexpr (kOnDevice) {
        if (s.row.count <= 16 * kHeldGroups) return softmax_held<16, kChain>(label, s, rows);
        if (s.row.count <= 32 * kHeldGroups) return softmax_held<32, kChain>(label, s, rows);
      }
      return softmax_columns<kChain>(label, s, rows);
    }
    const long long n_rows = rows, count = s.row.count;  // (as in run_reduce_rows)
    const std::string shape = tuning::shape_class({{"rows", n_rows}, {"count", count}});
    if (threads <= 0 && by_lanes(s.row)) {
      using Held = SoftmaxRowsHeld<kChain, T, R>;
      if (Held::fits(s.row)) {
        const Held held{s, rows, Held::lanes_of(s.row)};
        const auto run = [&](const TeamConfig& c) {
          Kokkos::parallel_for(label, lanes_policy(rows, c.team_size, held.lanes), held);
        };
        return run(team_config("kokkos::softmax_rows_held", shape, team_policy(rows, 1, held.lanes), held, run));
      }
      const int lanes = row_lanes(s.row);
      const auto run = [&](const TeamConfig& c) {
        with_depth(c.depth, [&](auto d) {
          Kokkos::parallel_for(label, lanes_policy(rows, c.team_size, lanes),
                               SoftmaxRows<decltype(d)::value, kChain, true, T, R>{s, rows, lanes});
        });
      };
      return run(team_config("kokkos::softmax_rows_by_lanes", shape, team_policy(rows, 1, lanes),
                             SoftmaxRows<2, kChain, true, T, R>{s, rows, lanes}, run));
    }
    const auto run = [&](const TeamConfig& c) {
      with_depth(c.depth, [&](auto d) {
        Kokkos::parallel_for(label, team_policy(rows, c.team_size, 1),
                             SoftmaxRows<decltype(d)::value, kChain, false, T, R>{s, rows, 1});
      });
    };
    if (threads > 0) return run(TeamConfig{threads, 2});
    run(team_config("kokkos::softmax_rows", shape, team_policy(rows, 1, 1), SoftmaxRows<2, kChain, false, T, R>{s, rows, 1},
                    run));
  });
}

}  // namespace kfuse::kokkos
