// The portable backend: every plan step as Kokkos kernels (TeamPolicy where a
// team cooperates on a reduction).
#include "backends/backend.hpp"
#include "backends/kokkos/dispatch.hpp"
#include "backends/kokkos/kernels.hpp"
#include "backends/kokkos/reducer.hpp"

namespace kfuse::detail {

namespace {

using kokkos::AccReducer;
using kokkos::Range;

// A Kokkos team as the cooperating group of detail::run_tail.
template <class A>
struct TeamGroup {
  const Team& team;

  template <class F>
  KOKKOS_INLINE_FUNCTION void for_each(int64_t n, const F& f) const {
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n), f);
    team.team_barrier();
  }
  template <class F>
  KOKKOS_INLINE_FUNCTION ReduceAcc<A> reduce(ReduceKind kind, int64_t n, const F& f) const {
    ReduceAcc<A> acc;
    Kokkos::parallel_reduce(Kokkos::TeamThreadRange(team, n),
                            [&](int64_t k, ReduceAcc<A>& a) { reduce_push(kind, a, f(k)); },
                            AccReducer<A>(kind, acc));
    return acc;
  }
};

// Adds into team-shared memory; a one-thread (Serial) team needs no atomic.
template <class V>
KOKKOS_INLINE_FUNCTION void team_add(V& dst, V v) {
#ifdef KOKKOS_ENABLE_SERIAL
  if constexpr (std::is_same_v<ExecSpace, Kokkos::Serial>) {
    dst += v;
    return;
  }
#endif
  Kokkos::atomic_add(&dst, v);
}

// Sum of n elements at p[0], p[stride], ... On the host an unrolled loop with
// independent accumulators (so one core streams at memory speed); on a
// device the team's vector lanes share it.
template <class T>
KOKKOS_INLINE_FUNCTION double lane_sum(const Team& team, const T* p, int64_t n, int64_t stride) {
  double s = 0.0;
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, DeviceMemSpace>::accessible) {
    (void)team;
    if (stride == 1) {
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; ++u) acc[u] += double(p[i + u]);
      for (; i < n; ++i) acc[0] += double(p[i]);
      for (int u = 0; u < 8; ++u) s += acc[u];
      return s;
    }
    for (int64_t i = 0; i < n; ++i) s += double(p[i * stride]);
  } else {
    Kokkos::parallel_reduce(Kokkos::ThreadVectorRange(team, n), [&](int64_t i, double& v) { v += double(p[i * stride]); }, s);
  }
  return s;
}

// A scratch view of n elements; a failed allocation is Error(backend), as in
// Tensor::empty (Kokkos throws std::bad_alloc or std::runtime_error).
template <class V>
V scratch_view(const char* label, int64_t n) {
  try {
    return V(std::string(label), static_cast<std::size_t>(n));
  } catch (const std::exception& e) {
    std::string why = e.what();
    fail(ErrorCategory::backend, label, "cannot allocate ", n, " elements of scratch memory (", why.substr(0, why.find('\n')), ")");
  }
}

// The tail on each row of Z (R rows of K, in place), then the output.
template <class A>
void run_tail_rows(const Tail<A>& tail, A* z, A* out) {
  Kokkos::parallel_for("kfuse::tail", team_policy(tail.R, 0, 1), KOKKOS_LAMBDA(const Team& team) {
    const int64_t r = team.league_rank();
    A* row = z + r * tail.K;
    const int64_t kout = run_tail(TeamGroup<A>{team}, tail.ops, tail.n, row, r, tail.K);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, kout), [&](int64_t k) { out[r * kout + k] = row[k]; });
  });
}

template <class A, class T>
void run_fold(const FoldStep<A>& step, const TensorView& x, const TensorView& out) {
  FoldGeometry g = step.geom;
  for (int d = 0; d < 4; ++d) g.xs[d] = x.strides[d];
  const int taps = g.taps(), blocks = g.blocks();
  const int64_t planes = g.N * g.C;
  const auto sums = scratch_view<Kokkos::View<double*, DeviceMemSpace>>("kfuse::fold::tap_sums", planes * taps);
  const T* xp = static_cast<const T*>(x.data);

  // 1. One pass per (n, c) plane: the sum of every segment block, then each
  //    tap's rectangle sum as a sum of blocks.
  using Scratch = Kokkos::View<double*, ExecSpace::scratch_memory_space, Kokkos::MemoryUnmanaged>;
  auto policy = team_policy(planes, 0, kKokkosOnCuda ? 32 : 1)
                    .set_scratch_size(0, Kokkos::PerTeam(Scratch::shmem_size(blocks)));
  Kokkos::parallel_for("kfuse::fold::plane_sums", policy, KOKKOS_LAMBDA(const Team& team) {
    const int64_t p = team.league_rank();
    const T* plane = xp + (p / g.C) * g.xs[0] + (p % g.C) * g.xs[1];
    Scratch B(team.team_scratch(0), blocks);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, blocks), [&](int b) { B(b) = 0.0; });
    team.team_barrier();
    // Row by row, each row's column segments in order: one sweep of the plane.
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, g.H), [&](int64_t r) {
      const int i = g.row_segment(r);
      const T* row = plane + r * g.xs[2];
      for (int j = 0; j < g.col_segments; ++j) {
        const int64_t c0 = g.col_cut[j];
        const double s = lane_sum(team, row + c0 * g.xs[3], g.col_cut[j + 1] - c0, g.xs[3]);
        Kokkos::single(Kokkos::PerThread(team), [&]() { team_add(B(i * g.col_segments + j), s); });
      }
    });
    team.team_barrier();
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, taps), [&](int t) { sums(p * taps + t) = g.tap_sum(B.data(), t); });
  });

  // 2. Z[n, :] = bias + contraction of n's tap sums: for each weight row q,
  //    the team sweeps Cout (contiguous in the weights, coalesced on a GPU).
  const FoldContraction<A> con = step.contraction;
  const int64_t kg = con.cin_g * taps, groups = g.C / con.cin_g;
  const auto z = scratch_view<Kokkos::View<A*, DeviceMemSpace>>("kfuse::fold::z", g.N * con.Cout);
  Kokkos::parallel_for("kfuse::fold::contract", team_policy(g.N, 0, 1), KOKKOS_LAMBDA(const Team& team) {
    const int64_t n = team.league_rank();
    A* zn = z.data() + n * con.Cout;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, con.Cout), [&](int64_t co) { zn[co] = con.bias[co]; });
    for (int64_t grp = 0; grp < groups; ++grp) {
      const double* s = sums.data() + (n * g.C + grp * con.cin_g) * taps;
      for (int64_t q = 0; q < kg; ++q) {
        const A sq = A(s[q]);
        const A* wq = con.weight + q * con.Cout;
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, grp * con.cout_g, (grp + 1) * con.cout_g),
                             [&](int64_t co) { zn[co] += wq[co] * sq; });
      }
    }
  });
  run_tail_rows(step.tail, z.data(), static_cast<A*>(out.data));
  Kokkos::fence();
}

template <class A>
void run_epilogue(const EpilogueStep<A>& e, const TensorView& y, const TensorView& out) {
  Indexer outer, inner;
  split_axes(y.shape, y.strides, e.mask, outer, inner);
  const A* yp = static_cast<const A*>(y.data);
  A* op = static_cast<A*>(out.data);
  const Chain<A> body = e.body;
  const int64_t count = e.count;
  using R = kokkos::red_acc_t<A>;  // the main reduction's accumulator (double on the host)

  if (e.main == MainKind::map) {
    Kokkos::parallel_for("kfuse::epilogue::map", Range(0, y.numel()), KOKKOS_LAMBDA(int64_t i) {
      op[i] = apply_chain(body.ops, body.n, yp[outer.offset(i)], i, 0);
    });
  } else if (e.main == MainKind::reduce) {
    const Tail<A> tail = e.tail;
    const ReduceKind kind = e.reduce;
    const auto z = scratch_view<Kokkos::View<A*, DeviceMemSpace>>("kfuse::epilogue::z", tail.R * tail.K);
    Kokkos::parallel_for("kfuse::epilogue::reduce", team_policy(tail.R * tail.K, 0, 1), KOKKOS_LAMBDA(const Team& team) {
      const int64_t o = team.league_rank();
      const A* base = yp + outer.offset(o);
      ReduceAcc<R> acc;
      Kokkos::parallel_reduce(Kokkos::TeamThreadRange(team, count), [&](int64_t k, ReduceAcc<R>& a) {
        reduce_push(kind, a, R(apply_chain(body.ops, body.n, base[inner.offset(k)], o, k)));
      }, AccReducer<R>(kind, acc));
      Kokkos::single(Kokkos::PerTeam(team), [&]() { z(o) = A(reduce_finish(kind, acc, count)); });
    });
    run_tail_rows(tail, z.data(), op);
  } else {
    Indexer out_outer, out_inner;
    split_axes(y.shape, contiguous_strides(y.shape), e.mask, out_outer, out_inner);
    const Chain<A> after = e.after;
    const int64_t rows = y.numel() / (count > 0 ? count : 1);
    Kokkos::parallel_for("kfuse::epilogue::softmax", team_policy(rows, 0, 1), KOKKOS_LAMBDA(const Team& team) {
      const int64_t o = team.league_rank();
      const A* base = yp + outer.offset(o);
      A* dst = op + out_outer.offset(o);
      ReduceAcc<R> acc;  // (max, sum of exp(x - max)) of the row
      Kokkos::parallel_reduce(Kokkos::TeamThreadRange(team, count), [&](int64_t j, ReduceAcc<R>& a) {
        reduce_push(ReduceKind::logsumexp, a, R(apply_chain(body.ops, body.n, base[inner.offset(j)], o, j)));
      }, AccReducer<R>(ReduceKind::logsumexp, acc));
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, count), [&](int64_t j) {
        const A v = apply_chain(body.ops, body.n, base[inner.offset(j)], o, j);
        dst[out_inner.offset(j)] = apply_chain(after.ops, after.n, A(softmax_value(acc, R(v))), o, j);
      });
    });
  }
  Kokkos::fence();
}

struct KokkosBackend final : Backend {
  const char* name() const override { return "kokkos"; }

  bool accepts(const Step& step, Memory memory, DType dtype) const override {
    return kokkos::accepts(memory) && (dtype == DType::f32 || dtype == DType::f64) && !std::holds_alternative<OpStep>(step);
  }

  void conv_transpose2d(const ConvStep& s, const TensorView& x, const TensorView& y) const override {
    const kokkos::DispatchLock lock(kokkos::dispatch_mutex());
    kokkos::conv_transpose2d_into(x, s.weight, s.bias ? std::optional<TensorView>(s.bias->view()) : std::nullopt, s.params, y);
  }

  void fused(const FusedStep& step, const TensorView& in, const TensorView& out) const override {
    const kokkos::DispatchLock lock(kokkos::dispatch_mutex());
    std::visit([&](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<S, FoldStep<float>>) run_fold<float, float>(s, in, out);
      else if constexpr (std::is_same_v<S, FoldStep<double>>) run_fold<double, double>(s, in, out);
      else run_epilogue(s, in, out);
    }, step);
  }
};

}  // namespace

const Backend& kokkos_backend() {
  static const KokkosBackend backend;
  return backend;
}

}  // namespace kfuse::detail
