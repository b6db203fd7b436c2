// The portable backend: every plan step as Kokkos kernels, one team per unit
// of work (a plane chunk of the fold, a row of an epilogue), launch shapes
// from the tuner (backends/kokkos/launch.hpp).

#include "backends/backend.hpp"
#include "backends/kokkos/dispatch.hpp"
#include "backends/kokkos/kernels.hpp"
#include "backends/kokkos/rows.hpp"
#include "backends/kokkos/workspace.hpp"
#include "core/env.hpp"
#include "tuning/launch.hpp"

namespace kfuse::detail {

namespace {

using kokkos::AccReducer;
using kokkos::Range;
using kokkos::TeamConfig;

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

// Adds into team-shared memory; a one-thread team needs no atomic.
template <class V>
KOKKOS_INLINE_FUNCTION void team_add(V& dst, V v) {
  if constexpr (kokkos::kOnDevice) Kokkos::atomic_add(&dst, v);
  else dst += v;
}

// One thread as the group of detail::run_tail (a short row).
template <class A>
struct ThreadGroup {
  template <class F>
  KOKKOS_INLINE_FUNCTION void for_each(int64_t n, const F& f) const {
    for (int64_t k = 0; k < n; ++k) f(k);
  }
  template <class F>
  KOKKOS_INLINE_FUNCTION ReduceAcc<A> reduce(ReduceKind kind, int64_t n, const F& f) const {
    ReduceAcc<A> acc = reduce_init<A>(kind);
    for (int64_t k = 0; k < n; ++k) reduce_push(kind, acc, f(k));
    return acc;
  }
};

// Rows of the tail a thread runs alone (as the CUDA backend's epi_tail).
constexpr int64_t kThreadTailRow = 4;

// The tail on each row of Z (R rows of K, in place), then the output: a
// thread a short row, else a team a row. (A team a row of one value, with
// its barriers, was R teams for R values: after a logsumexp over C of
// [16, 128, 256, 256], a million.)
template <class A>
void run_tail_rows(const Tail<A>& tail, A* z, A* out) {
  if (tail.K <= kThreadTailRow) {
    Kokkos::parallel_for("kfuse::tail", Range(0, tail.R), KOKKOS_LAMBDA(int64_t r) {
      A* row = z + r * tail.K;
      const int64_t kout = run_tail(ThreadGroup<A>{}, tail.ops, tail.n, row, r, tail.K);
      for (int64_t k = 0; k < kout; ++k) out[r * kout + k] = row[k];
    });
    return;
  }
  Kokkos::parallel_for("kfuse::tail", team_policy(tail.R, 0, 1), KOKKOS_LAMBDA(const Team& team) {
    const int64_t r = team.league_rank();
    A* row = z + r * tail.K;
    const int64_t kout = run_tail(TeamGroup<A>{team}, tail.ops, tail.n, row, r, tail.K);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, kout), [&](int64_t k) { out[r * kout + k] = row[k]; });
  });
}

// ---- The fold -------------------------------------------------------------------
//
// Two launches, as the CUDA backend's fold:
//  1. FoldPlanes: team u = (plane, row chunk) streams its part of x once
//     (stream_contiguous: 16-byte loads, coalesced) and sums every segment
//     block of FoldGeometry: the largest block in per-thread registers, the
//     border elements into team-shared block sums; each tap's rectangle sum
//     is then a sum of block sums (geom.tap_sum). The last chunk of a plane
//     to finish (a counter a plane) adds the plane's chunk sums in chunk
//     order (deterministic), then takes the plane's share of the contraction,
//     P[n, c, co] = sum_t weight[(c, t), co] * S[n, c, t] over its group's co.
//  2. FoldSamples: team n adds the shares of its sample, Z[n, co] = bias +
//     sum_c P[n, c, co], in channel order; the team that completes a row of
//     Z runs the tail on it and stores it (rows of one value: the thread
//     that computed it).
// (One launch, the last plane of a sample going on with its contraction,
// spent most of its time at the arrival: 54.6 us at 4 MiB on an H200, 42.8%
// of the stalls at barriers, a team waiting for one thread's fence and
// atomic; 2026-12-05.)

constexpr int kAcc = 4;  // independent accumulators per thread: loads in flight on a GPU

using kokkos::Counter;

// Whether this team is the last of the arrivals at *counter that add up to
// `total` (this one adding `count`). Every thread's stores are made visible
// before the count (the threadfence pattern); the last team zeroes the
// counter for the next run.
KOKKOS_INLINE_FUNCTION bool arrive(const Team& team, Counter* counter, Counter count, Counter total) {
  Kokkos::memory_fence();
  team.team_barrier();
  bool last = false;
  Kokkos::single(
      Kokkos::PerTeam(team),
      [&](bool& l) {
        l = Kokkos::atomic_fetch_add(counter, count) + count == total;
        if (l) *counter = 0;
      },
      last);
  Kokkos::memory_fence();
  return last;
}

// What other teams wrote in this launch, read past a GPU's non-coherent L1
// (a host's caches are coherent, and its fences order the plain loads).
template <class S>
KOKKOS_INLINE_FUNCTION S load_shared(const S* p) {
  if constexpr (kokkos::kOnDevice) return *static_cast<const volatile S*>(p);
  else return *p;
}

template <int D, class T, class A>
struct FoldPlanes {
  using S = kokkos::red_acc_t<A>;  // plane sums: double on the host (one long sequential sum per plane)
  using Scratch = Kokkos::View<S*, ExecSpace::scratch_memory_space, Kokkos::MemoryUnmanaged>;
  using V = kokkos::Vec16<T>;
  FoldGeometry g;
  FoldGeometry::Block m;
  bool contiguous;
  const T* x;
  FoldContraction<A> con;
  S* chunk_sums;      // [planes * chunks, taps], with several chunks a plane
  S* sums;            // [planes, taps]
  A* shares;          // [planes, cout_g]: each plane's share of the contraction
  Counter* counters;  // [planes] chunks done

  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int64_t u = team.league_rank(), plane = u / g.chunks, taps = g.taps();
    if (g.chunks == 1) {
      plane_sums(team, u, sums + plane * taps);
    } else {
      plane_sums(team, u, chunk_sums + u * taps);
      if (!arrive(team, counters + plane, 1, Counter(g.chunks))) return;
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, taps), [&](int t) {
        S s = S(0);
        for (int64_t c = 0; c < g.chunks; ++c) s += load_shared(chunk_sums + (plane * g.chunks + c) * taps + t);
        sums[plane * taps + t] = s;
      });
    }
    team.team_barrier();  // the plane's tap sums, written by this team
    share(team, plane);
  }

  // The plane's share of the contraction: its taps times its channel's
  // weights, for each output channel of its group (weights read along Cout:
  // coalesced). (One team's contraction of a whole sample, cin_g x taps terms
  // an output, was the one-launch fold's fixed cost: 85 us of 88 at 4 MiB on
  // Kokkos on CUDA, H100, 2026-12-05.)
  KOKKOS_INLINE_FUNCTION void share(const Team& team, int64_t plane) const {
    const int64_t taps = g.taps();
    const S* s = sums + plane * taps;
    const A* w0 = con.channel_weights(plane % g.C, taps);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, con.cout_g), [&](int64_t j) {
      const A* w = w0 + j;
      A acc = A(0);
      for (int64_t t = 0; t < taps; ++t) acc += w[t * con.Cout] * A(load_shared(s + t));
      shares[plane * con.cout_g + j] = acc;
    });
  }

  // This unit's tap sums into dst[0, taps).
  KOKKOS_INLINE_FUNCTION void plane_sums(const Team& team, int64_t u, S* dst) const {
    if (g.H == 0 || g.W == 0) {
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, g.taps()), [&](int t) { dst[t] = S(0); });
      return;
    }
    const int64_t plane = u / g.chunks;
    const int64_t r0 = (u - plane * g.chunks) * g.rows_per_chunk;
    const int64_t r1 = r0 + g.rows_per_chunk < g.H ? r0 + g.rows_per_chunk : g.H;
    const int nb = g.blocks();
    const T* p = x + (plane / g.C) * g.xs[0] + (plane % g.C) * g.xs[1];
    Scratch B(team.team_scratch(0), nb);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, nb), [&](int b) { B(b) = S(0); });
    team.team_barrier();

    S total = S(0);
    if constexpr (kokkos::kOnDevice) total = sweep_vectors(team, p, r0, r1, B);
    else sweep_rows(p, r0, r1, B);
    team.team_reduce(Kokkos::Sum<S>(total));
    Kokkos::single(Kokkos::PerTeam(team), [&]() {
      if (m.index >= 0) B(m.index) += total;
    });
    team.team_barrier();
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, g.taps()), [&](int t) { dst[t] = g.tap_sum(B.data(), t); });
  }

  // On a GPU: the chunk streamed by the whole team in 16-byte vectors. Whole
  // vectors of the largest block go to per-thread registers (the returned
  // partial sum), and so do the elements of the column segments beside it in
  // its rows (Block::cl2, cr2); every other element to its block in B. (Only
  // the vector path touches `acc`, so that the compiler keeps it in registers.)
  KOKKOS_INLINE_FUNCTION S sweep_vectors(const Team& team, const T* p, int64_t r0, int64_t r1, const Scratch& B) const {
    constexpr int64_t kV = V::kVec;
    const int64_t W = g.W;
    const int cs = g.col_segments;
    S acc[kAcc] = {};
    S left = S(0), right = S(0);
    const auto add = [&](int64_t r, int64_t c, S v) { team_add(B(g.row_segment(r) * cs + g.col_segment(c)), v); };
    if (contiguous) {
      // The row and column of the thread's vector follow it incrementally (no division per vector).
      const int64_t step = int64_t(team.team_size()) * kV, dr = step / W, dc = step % W;
      int64_t row = -1, col = 0;
      kokkos::stream_contiguous<D>(
          team.team_rank(), team.team_size(), p + r0 * W, (r1 - r0) * W,
          [&](const V& d, int64_t e) {
            if (row < 0) {
              row = r0 + e / W;
              col = e % W;
            } else {
              row += dr;
              col += dc;
              if (col >= W) col -= W, ++row;
            }
            const bool in_rows = row >= m.rlo && row < m.rhi;
            if (in_rows && col >= m.clo && col + kV <= m.chi) {
              KFUSE_UNROLL
              for (int k = 0; k < kV; ++k) acc[k % kAcc] += S(d.v[k]);
            } else if (in_rows && col + kV <= W) {
              KFUSE_UNROLL
              for (int k = 0; k < kV; ++k) {
                const int64_t c = col + k;
                if (c >= m.clo && c < m.chi) acc[k % kAcc] += S(d.v[k]);
                else if (c >= m.cl2 && c < m.clo) left += S(d.v[k]);
                else if (c >= m.chi && c < m.cr2) right += S(d.v[k]);
                else add(row, c, S(d.v[k]));
              }
            } else {
              for (int k = 0; k < kV; ++k) {
                int64_t r = row, c = col + k;
                while (c >= W) c -= W, ++r;
                add(r, c, S(d.v[k]));
              }
            }
          },
          [&](T v, int64_t e) { add(r0 + e / W, e % W, S(v)); });
    } else {
      for (int64_t e = team.team_rank(); e < (r1 - r0) * W; e += team.team_size()) {
        const int64_t r = r0 + e / W, c = e % W;
        add(r, c, S(p[r * g.xs[2] + c * g.xs[3]]));
      }
    }
    if (left != S(0)) team_add(B(m.index - 1), left);
    if (right != S(0)) team_add(B(m.index + 1), right);
    S total = S(0);
    for (int k = 0; k < kAcc; ++k) total += acc[k];
    return total;
  }

  // On the host (a team is one thread): row by row, each column segment summed
  // with independent accumulators straight into its block, so that a core
  // streams at memory speed (the per-vector bookkeeping of sweep_vectors
  // costs a CPU about 3x).
  void sweep_rows(const T* p, int64_t r0, int64_t r1, const Scratch& B) const {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = p + r * g.xs[2];
      const int i = g.row_segment(r);
      for (int j = 0; j < g.col_segments; ++j) {
        const T* q = row + g.col_cut[j] * g.xs[3];
        const int64_t n = g.col_cut[j + 1] - g.col_cut[j];
        S a[8] = {};
        int64_t k = 0;
        if (g.xs[3] == 1)
          for (; k + 8 <= n; k += 8)
            for (int l = 0; l < 8; ++l) a[l] += S(q[k + l]);
        for (; k < n; ++k) a[0] += S(q[k * g.xs[3]]);
        B(i * g.col_segments + j) += ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
      }
    }
  }
};

template <class A>
struct FoldSamples {
  using Parts = Kokkos::View<A*, ExecSpace::scratch_memory_space, Kokkos::MemoryUnmanaged>;
  FoldContraction<A> con;
  Tail<A> tail;
  int64_t C;                  // input channels
  const A* shares;            // [N * C, cout_g], from FoldPlanes
  A* z;                       // [N, Cout], where the tail's rows hold more than one value
  Counter* row_counters;      // [tail.R] values of the row done
  A* out;

  // Team n: Z[n, :] from the shares of the sample's planes, then the tail of
  // each row of Z this completes. Thread (slice, co) sums the shares of
  // channels c = slice, slice + slices, ... of co's group, so that a team
  // larger than Cout is busy; the slices are added in order. Eight
  // independent sums a thread: eight loads in flight.
  KOKKOS_INLINE_FUNCTION void operator()(const Team& team) const {
    const int64_t kg = con.cin_g, K = tail.K, Cout = con.Cout, cg = con.cout_g, n = team.league_rank();
    const int64_t slices = Cout > 0 && Cout < team.team_size() ? team.team_size() / Cout : 1;
    const auto partial = [&](int64_t co, int64_t slice) {
      const A* p = con.output_shares(shares, C, n, co);  // channel c's at p[c * cg]
      A acc[8] = {};
      int64_t q = slice;
      for (; q + 7 * slices < kg; q += 8 * slices) {
        KFUSE_UNROLL
        for (int k = 0; k < 8; ++k) acc[k] += p[(q + k * slices) * cg];
      }
      for (; q < kg; q += slices) acc[0] += p[q * cg];
      return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    };
    Parts part(team.team_scratch(0), team.team_size());
    if (slices > 1) {
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, slices * Cout), [&](int64_t i) { part(i) = partial(i % Cout, i / Cout); });
      team.team_barrier();
    }
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, Cout), [&](int64_t co) {
      A acc = A(0);
      if (slices == 1) acc = partial(co, 0);
      else
        for (int64_t sl = 0; sl < slices; ++sl) acc += part(sl * Cout + co);
      A v = con.bias[co] + acc;
      const int64_t i = n * Cout + co;
      if (K == 1) {
        run_tail(ThreadGroup<A>{}, tail.ops, tail.n, &v, i, 1);
        out[i] = v;
      } else {
        z[i] = v;
      }
    });
    if (K == 1) return;
    const int64_t z0 = n * Cout, z1 = z0 + Cout;
    for (int64_t r = z0 / K; r * K < z1; ++r) {
      const int64_t lo = r * K > z0 ? r * K : z0, hi = (r + 1) * K < z1 ? (r + 1) * K : z1;
      // A row within the sample is this team's alone: a barrier, no counter
      // (an arrival is a fence, a barrier and an atomic round trip).
      if (hi - lo < K) {
        if (!arrive(team, row_counters + r, Counter(hi - lo), Counter(K))) continue;
      } else {
        team.team_barrier();
      }
      A* row = z + r * K;
      const int64_t kout = run_tail(TeamGroup<A>{team}, tail.ops, tail.n, row, r, K);
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, kout), [&](int64_t k) { out[r * kout + k] = row[k]; });
    }
  }
};

// Row chunks a plane: `forced` (> 0) as asked, else on a GPU enough units to
// fill the `resident` teams in even waves (src/tuning fold_chunks), on the
// host one team a plane; at most one a row.
template <class T>
FoldGeometry chunked(FoldGeometry g, int64_t forced, int64_t resident) {
  const int64_t planes = g.N * g.C;
  g.chunks = forced > 0                   ? forced
             : resident > 0 && planes > 0 ? tuning::fold_chunks(planes, g.H, g.H * g.W * int64_t(sizeof(T)), resident)
                                          : 1;
  g.rows_per_chunk = std::max<int64_t>(1, (g.H + g.chunks - 1) / g.chunks);
  g.chunks = std::max<int64_t>(1, (g.H + g.rows_per_chunk - 1) / g.rows_per_chunk);
  return g;
}

// KFUSE_KOKKOS_FOLD_CHUNKS=k > 0 asks for k row chunks a plane on any device
// (the tests join chunks on the host with it), 0 (or unset) for the rule.
inline int64_t forced_fold_chunks() { return env_count("KFUSE_KOKKOS_FOLD_CHUNKS").value_or(0); }

// FoldPlanes' launches: (a) at most 64 registers (512 threads, 2 teams of
// them an SM), so that 8 teams of 128 fit an SM: at 72, 7 did, and a 4 MiB
// input's 1024 planes took two waves on an H100; (b) the functor (1 KB, most
// of it FoldGeometry) passed as the kernel's parameter: Kokkos copies a
// functor over 512 bytes to constant memory first, an H2D copy in the stream
// and a host wait for the previous such kernel, on every launch.
using FoldPlanesPolicy =
    Kokkos::TeamPolicy<ExecSpace, Kokkos::LaunchBounds<512, 2>, Kokkos::Experimental::WorkItemProperty::HintLightWeight_t>;

// The chunks follow the team size the tuner picks: its teams resident on a
// GPU (the kernel's registers and team scratch, read from Kokkos's kernel)
// decide them. (Counting 8 teams of 256 an SM, as before, made 1024 planes one
// chunk each: one wave and a fraction where 80 registers fit 6 teams of 128.)
template <class A, class T>
void run_fold(const FoldStep<A>& step, int64_t forced, const TensorView& x, const TensorView& out) {
  using S = kokkos::red_acc_t<A>;
  using F = FoldPlanes<2, T, A>;
  using Z = FoldSamples<A>;
  static_assert(sizeof(FoldPlanes<3, T, A>) < 4096, "FoldPlanes goes as a kernel parameter (FoldPlanesPolicy)");
  FoldGeometry base = step.geom;
  for (int d = 0; d < 4; ++d) base.xs[d] = x.strides[d];
  const int taps = base.taps();
  const int64_t planes = base.N * base.C;
  if (planes == 0) return;  // no samples: the output is empty (lower_fold refuses a conv without input channels)
  const bool contiguous = (base.W == 1 || base.xs[3] == 1) && (base.H == 1 || base.xs[2] == base.W);
  const auto scratch_bytes = [&] { return F::Scratch::shmem_size(base.blocks()); };  // the block sums
  const auto policy = [&](int64_t units, const TeamConfig& c) {
    return FoldPlanesPolicy(units, c.team_size, 1).set_scratch_size(0, Kokkos::PerTeam(scratch_bytes()));
  };
  const auto geometry = [&](const TeamConfig& c) {
    int64_t resident = 0;
    if (kokkos::kOnDevice && forced <= 0) {
      const tuning::DeviceLimits& lim = kokkos::device_facts().limits;
      const tuning::KernelResources& k = kokkos::team_resources(policy(planes, c), F{});
      resident = int64_t(tuning::blocks_per_sm(k, lim, c.team_size, int64_t(scratch_bytes()))) * lim.sm_count;
    }
    return chunked<T>(base, forced, resident);
  };
  S* sums = kokkos::scratch<S>(kokkos::Slot::tap_sums, planes * taps);
  A* shares = kokkos::scratch<A>(kokkos::Slot::shares, planes * step.contraction.cout_g);
  Counter* counters = kokkos::counters(planes + step.tail.R);  // [planes] chunks done, [R] values of a row done
  const auto run = [&](const TeamConfig& c) {
    const FoldGeometry g = geometry(c);
    S* chunk_sums = g.chunks > 1 ? kokkos::scratch<S>(kokkos::Slot::partial_sums, planes * g.chunks * taps) : nullptr;
    kokkos::with_depth(c.depth, [&](auto d) {
      Kokkos::parallel_for("kfuse::fold::plane_sums_shares", policy(planes * g.chunks, c),
                           FoldPlanes<decltype(d)::value, T, A>{g, g.largest_block(), contiguous, static_cast<const T*>(x.data),
                                                                step.contraction, chunk_sums, sums, shares, counters});
    });
  };
  const std::string shape = tuning::shape_class({{"planes", planes}, {"plane_bytes", base.H * base.W * int64_t(sizeof(T))}});
  run(kokkos::team_config("kokkos::fold_plane_sums", shape, policy(planes, TeamConfig{1, 2}), F{}, run));
  // A team a sample: a thread an output channel, and slices of the channel sums beside where Cout is small.
  const int team = kokkos::kOnDevice ? 256 : 1;
  Kokkos::parallel_for("kfuse::fold::contraction_tail",
                       team_policy(base.N, team, 1).set_scratch_size(0, Kokkos::PerTeam(Z::Parts::shmem_size(team))),
                       Z{step.contraction, step.tail, base.C, shares,
                         step.tail.K > 1 ? kokkos::scratch<A>(kokkos::Slot::z, base.N * step.contraction.Cout) : nullptr,
                         counters + planes, static_cast<A*>(out.data)});
  Kokkos::fence();
}

// ---- The fused epilogue -------------------------------------------------------------

template <class A>
void run_epilogue(const EpilogueStep<A>& e, const TensorView& y, const TensorView& out) {
  using R = kokkos::red_acc_t<A>;  // the main reduction's accumulator (double on the host)
  kokkos::Row<A> row{static_cast<const A*>(y.data), {}, {}, false, e.count};
  split_axes(y.shape, y.strides, e.mask, row.outer, row.inner);
  row.dense = row.inner.is_dense();
  const kokkos::Body<A> body{e.body.ops, e.body.n};
  A* op = static_cast<A*>(out.data);

  if (e.main == MainKind::map) {
    // kMapRun consecutive elements a thread: the chain once on all of them,
    // moved as 16-byte vectors on a GPU when Y is dense and both ends are
    // aligned (on the host the plain loops vectorize, and run faster).
    using V = kokkos::Vec16<A>;
    constexpr int kMapRun = 8;
    static_assert(kMapRun % V::kVec == 0, "whole vectors a run");
    const A* yp = row.x;
    const Indexer outer = row.outer;
    const bool dense = outer.is_dense();  // no index arithmetic per element
    const bool vectors = kokkos::kOnDevice && dense && reinterpret_cast<uintptr_t>(yp) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(op) % 16 == 0;
    const int64_t n = y.numel();
    Kokkos::parallel_for("kfuse::epilogue::map", Range(0, (n + kMapRun - 1) / kMapRun), KOKKOS_LAMBDA(int64_t r) {
      const int64_t i0 = r * kMapRun;
      if (i0 + kMapRun <= n) {
        A v[kMapRun];
        if (vectors) {
          for (int q = 0; q < kMapRun / V::kVec; ++q) {
            const V d = reinterpret_cast<const V*>(yp + i0)[q];
            for (int k = 0; k < V::kVec; ++k) v[q * V::kVec + k] = d.v[k];
          }
        } else {
          for (int k = 0; k < kMapRun; ++k) v[k] = yp[dense ? i0 + k : outer.offset(i0 + k)];
        }
        body(v, i0, 1, 0, 0);
        if (vectors) {
          for (int q = 0; q < kMapRun / V::kVec; ++q) {
            V d;
            for (int k = 0; k < V::kVec; ++k) d.v[k] = v[q * V::kVec + k];
            reinterpret_cast<V*>(op + i0)[q] = d;
          }
        } else {
          for (int k = 0; k < kMapRun; ++k) op[i0 + k] = v[k];
        }
      } else {
        for (int64_t i = i0; i < n; ++i) op[i] = body(yp[dense ? i : outer.offset(i)], i, 0);
      }
    });
  } else if (e.main == MainKind::reduce) {
    // With no tail ops and a value a row, the reductions are the output, and
    // the point ops after them run on it in place.
    const Tail<A>& tail = e.tail;
    const bool direct = tail.n == 0 && tail.K_out == tail.K;
    A* z = direct ? op : kokkos::scratch<A>(kokkos::Slot::z, tail.R * tail.K);
    kokkos::run_reduce_rows<A, R>("kfuse::epilogue::reduce", row, body, e.reduce, tail.R * tail.K, z, 0);
    if (!direct) run_tail_rows(tail, z, op);
    if (e.after.n > 0) {
      const kokkos::Body<A> after{e.after.ops, e.after.n};
      Kokkos::parallel_for("kfuse::epilogue::after", Range(0, tail.R * tail.K_out),
                           KOKKOS_LAMBDA(int64_t o) { op[o] = after(op[o], o, 0); });
    }
  } else {
    Indexer out_outer, out_inner;
    split_axes(y.shape, contiguous_strides(y.shape), e.mask, out_outer, out_inner);
    const kokkos::Body<A> after{e.after.ops, e.after.n};
    const kokkos::Softmax<A, R> s{row, body, after, op, out_outer, out_inner};
    kokkos::run_softmax_rows("kfuse::epilogue::softmax", s, y.numel() / (e.count > 0 ? e.count : 1), 0);
  }
  Kokkos::fence();
}

// ---- Prepared steps ----------------------------------------------------------------

// The conv: a GEMM over the input channels through Kokkos Kernels and a
// column-to-image gather, or the direct gather (the reference's kernel) where
// the GEMM does not apply, the build has no Kokkos Kernels, or
// KFUSE_KOKKOS_CONV=gather asks for it.
struct PreparedConv final : PreparedStep {
  ConvStep step;
  std::string why_gather;  // empty: the GEMM where the input allows it
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
  std::optional<kokkos::GemmConv> gemm;
#endif
  explicit PreparedConv(const ConvStep& s) : step(s) {
    if (env_choice("KFUSE_KOKKOS_CONV", {"gemm", "gather"}) == std::size_t(1)) why_gather = "KFUSE_KOKKOS_CONV=gather";
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
    if (why_gather.empty())
      why_gather = kokkos::GemmConv::refusal(step.in_shape, step.weight.shape(), step.params, step.out_shape);
    if (why_gather.empty()) gemm.emplace(step.in_shape, step.weight.shape(), step.params, step.out_shape);
#else
    if (why_gather.empty()) why_gather = "this kfuse was built without Kokkos Kernels";
#endif
  }
  void run(const TensorView& x, const TensorView& y) const override {
    const kokkos::DispatchLock lock(kokkos::dispatch_mutex());
    const auto bias = step.bias ? std::optional<TensorView>(step.bias->view()) : std::nullopt;
#ifdef KFUSE_HAVE_KOKKOS_KERNELS
    if (gemm && kokkos::GemmConv::refusal(x, step.weight).empty())
      return gemm->run(x, step.weight, bias, step.params, y);
#endif
    kokkos::conv_transpose2d_into(x, step.weight, bias, step.params, y);
  }
  std::string describe() const override {
    // TF32 allows a rounded multiply; the Kokkos path multiplies in strict fp32 all the same.
    const char* strict = step.precision == Precision::tf32 ? "; strict fp32: the Kokkos path has no TF32 conv" : "";
    if (!why_gather.empty()) return cat("direct gather, a thread per output element (", why_gather, ")", strict);
    return cat("GEMM over the input channels (KokkosBlas::gemm) and a column-to-image gather (the direct gather "
               "where the input's channels and pixels are not dense)",
               strict);
  }
};

template <class A>
struct PreparedFold final : PreparedStep {
  FoldStep<A> step;
  int64_t forced = forced_fold_chunks();
  explicit PreparedFold(const FoldStep<A>& s) : step(s) {}
  void run(const TensorView& x, const TensorView& out) const override {
    const kokkos::DispatchLock lock(kokkos::dispatch_mutex());
    run_fold<A, A>(step, forced, x, out);
  }
  std::string describe() const override {
    const char* last = ", each plane taking its share of the contraction; then a team a sample adds the shares and runs the tail";
    if (forced <= 0 && kokkos::kOnDevice)
      return cat("plane sums in row chunks enough for the tuned team size's resident teams", last);
    const int64_t chunks = chunked<A>(step.geom, forced, 0).chunks;
    return cat("plane sums by ", chunks, chunks == 1 ? " team" : " teams", " a plane", last);
  }
};

template <class A>
struct PreparedEpilogue final : PreparedStep {
  EpilogueStep<A> step;
  explicit PreparedEpilogue(const EpilogueStep<A>& s) : step(s) {}
  void run(const TensorView& y, const TensorView& out) const override {
    const kokkos::DispatchLock lock(kokkos::dispatch_mutex());
    run_epilogue(step, y, out);
  }
  std::string describe() const override { return kokkos::kOnDevice ? "team kernels" : "host kernels"; }
};

class KokkosBackend final : public Backend {
 public:
  const char* name() const override { return "kokkos"; }

  Preparation prepare(const Step& step, const StepContext& ctx) const override {
    if (std::holds_alternative<ReferenceStep>(step)) return Preparation::refuse("the reference runs eager ops");
    if (!kokkos::accepts(ctx.memory))
      return Preparation::refuse(cat("the data are in ", to_string(ctx.memory), " memory, Kokkos runs on ",
                                     to_string(kokkos_memory()), " memory"));
    if (ctx.dtype != DType::f32 && ctx.dtype != DType::f64)
      return Preparation::refuse(cat("dtype ", to_string(ctx.dtype), " (the Kokkos kernels take float32 and float64; ",
                                     "float16 and bfloat16 run on the CUDA backend, data in CUDA memory)"));
    return std::visit([](const auto& s) {
      using S = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<S, ConvStep>) return Preparation::of<PreparedConv>(s);
      else if constexpr (std::is_same_v<S, FoldStep<float>>) return Preparation::of<PreparedFold<float>>(s);
      else if constexpr (std::is_same_v<S, FoldStep<double>>) return Preparation::of<PreparedFold<double>>(s);
      else if constexpr (std::is_same_v<S, EpilogueStep<float>>) return Preparation::of<PreparedEpilogue<float>>(s);
      else if constexpr (std::is_same_v<S, EpilogueStep<double>>) return Preparation::of<PreparedEpilogue<double>>(s);
      else if constexpr (std::is_same_v<S, ConvEpilogueStep>)
        return Preparation::refuse("the conv with its epilogue inside is the CUDA backend's tensor-core kernel");
      else return Preparation::refuse("the reference runs eager ops");
    }, step);
  }
};

}  // namespace

const Backend& kokkos_backend() {
  static const KokkosBackend backend;
  return backend;
}

}  // namespace kfuse::detail
