// The scalar math of every op, written once and called by every backend
// (Kokkos functors and hand-written CUDA kernels alike).
#pragma once

#ifndef __CUDACC_RTC__  // NVRTC (backends/cuda/jit.cpp) brings its own definitions
#include <cmath>
#include <limits>
#endif

#include "kfuse/detail/hd.hpp"
#include "kfuse/op_types.hpp"

namespace kfuse::detail {

template <class T> KFUSE_HDI bool is_nan(T x) { return x != x; }
// INFINITY/NAN (not numeric_limits, which is host-only in CUDA device code).
template <class T> KFUSE_HDI T inf() { return T(INFINITY); }
template <class T> KFUSE_HDI T quiet_nan() { return T(NAN); }

template <class T> struct is_f32 { static constexpr bool value = false; };
template <> struct is_f32<float> { static constexpr bool value = true; };

// NaN-propagating max (kMax) or min (torch.maximum / torch.minimum, amax /
// amin). On sm_80 and later a float takes one instruction (max.NaN, min.NaN)
// where the compares take six: reductions over C do little else per element.
template <bool kMax, class T> KFUSE_HDI T nan_extreme(T a, T b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (is_f32<T>::value) {
    float r;
    if constexpr (kMax) asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    else asm("min.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
  }
#endif
  return is_nan(a) ? a : (is_nan(b) ? b : ((kMax ? a > b : a < b) ? a : b));
}
template <class T> KFUSE_HDI T nan_max(T a, T b) { return nan_extreme<true>(a, b); }
template <class T> KFUSE_HDI T nan_min(T a, T b) { return nan_extreme<false>(a, b); }

template <class T> KFUSE_HDI T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

template <class T>
KFUSE_HDI T apply(const Unary& op, T x) {
  switch (op.kind) {
    case UnaryKind::relu: return is_nan(x) ? x : (x > T(0) ? x : T(0));
    case UnaryKind::leaky_relu: return x > T(0) ? x : x * T(op.a);
    case UnaryKind::tanh: return std::tanh(x);
    case UnaryKind::sigmoid: return sigmoid(x);
    // PyTorch's formula (and Inductor's). Written with erfc there is no
    // cancellation for x << 0, but erfcf is 85 PTX instructions where erff is
    // 41, and a gelu stage is bound by instruction issue (ncu, H200).
    case UnaryKind::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case UnaryKind::gelu_tanh: {
      const T inner = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(inner));
    }
    case UnaryKind::silu: return x * sigmoid(x);
    // x tanh(softplus(x)) = x u / (u + 2) with u = e^x (e^x + 2): one exp and
    // a division where tanh(log1p(exp(x))) takes three functions (about 85
    // instructions a float, which made every mish stage issue-bound). Past
    // PyTorch's softplus threshold (20) x, as there (tanh of it is 1.0 in
    // float and double); no cancellation for x << 0 (u ~ 2e^x).
    case UnaryKind::mish: {
      if (!(x <= T(20))) return x;  // and NaN
      const T n = std::exp(x);
      const T u = n * (n + T(2));
      return x * (u / (u + T(2)));
    }
    // min(max(x, lo), hi) as torch.clamp, NaN kept; lo <= hi (the pipeline
    // checks). nan_max/nan_min: two instructions a float where the NaN test
    // was a branch a value (H200, the channels-last map of an affine chain
    // ending in clamp, bfloat16: 0.362 -> 0.334 ms).
    case UnaryKind::hardtanh:
    case UnaryKind::clamp: return nan_min(nan_max(x, T(op.a)), T(op.b));
    // Times one sixth, as ATen's CUDA kernel: a division is about eight
    // instructions a float (a third of a mean over W of hardswish's 24 a value).
    case UnaryKind::hardswish: return x * nan_min(nan_max(x + T(3), T(0)), T(6)) * (T(1) / T(6));
    case UnaryKind::exp: return std::exp(x);
    case UnaryKind::log: return std::log(x);
    case UnaryKind::neg: return -x;
    case UnaryKind::abs: return std::fabs(x);
  }
  return quiet_nan<T>();
}

template <class T>
KFUSE_HDI T apply(BinaryKind kind, T a, T b) {
  switch (kind) {
    case BinaryKind::add: return a + b;
    case BinaryKind::sub: return a - b;
    case BinaryKind::mul: return a * b;
    case BinaryKind::div: return a / b;
    case BinaryKind::min: return nan_min(a, b);
    case BinaryKind::max: return nan_max(a, b);
  }
  return quiet_nan<T>();
}

// Running state of any reduction: sum/mean use `a` as the sum; max/min use
// `a` as the extremum; logsumexp keeps the running max in `a` and the sum of
// exp(x - a) in `b` (online, max-shifted).
template <class A>
struct ReduceAcc {
  A a;
  A b;
};

template <class A>
KFUSE_HDI ReduceAcc<A> reduce_init(ReduceKind k) {
  switch (k) {
    case ReduceKind::max: return {-inf<A>(), A(0)};
    case ReduceKind::min: return {inf<A>(), A(0)};
    case ReduceKind::logsumexp: return {-inf<A>(), A(0)};
    default: return {A(0), A(0)};
  }
}

// Merges two logsumexp states (m1, s1) and (m2, s2).
template <class A>
KFUSE_HDI void lse_merge(ReduceAcc<A>& acc, A m, A s) {
  if (is_nan(acc.a) || m == -inf<A>()) return;
  if (is_nan(m)) { acc.a = m; return; }
  if (acc.a == -inf<A>()) { acc.a = m; acc.b = s; return; }
  // +inf on either side decides the result in reduce_finish; keep the sum finite.
  if (m == inf<A>() || acc.a == inf<A>()) { acc.a = inf<A>(); acc.b = A(1); return; }
  if (m > acc.a) {
    acc.b = acc.b * std::exp(acc.a - m) + s;
    acc.a = m;
  } else {
    acc.b += s * std::exp(m - acc.a);
  }
}

template <class A>
KFUSE_HDI void reduce_push(ReduceKind k, ReduceAcc<A>& acc, A x) {
  switch (k) {
    case ReduceKind::max: acc.a = nan_max(acc.a, x); break;
    case ReduceKind::min: acc.a = nan_min(acc.a, x); break;
    case ReduceKind::logsumexp: lse_merge(acc, x, A(1)); break;
    default: acc.a += x; break;
  }
}

// N values at once. logsumexp merges them as one block (their max, then one
// exp per value and one merge) where value-by-value pushes pay a compare, a
// branch and an exp each; the other kinds push them in order.
template <class A, int N>
KFUSE_HDI void reduce_push_n(ReduceKind k, ReduceAcc<A>& acc, const A (&v)[N]) {
  if (k != ReduceKind::logsumexp) {
    KFUSE_UNROLL for (int i = 0; i < N; ++i) reduce_push(k, acc, v[i]);
    return;
  }
  A m = v[0];
  KFUSE_UNROLL for (int i = 1; i < N; ++i) m = nan_max(m, v[i]);
  A s = A(1);  // NaN, +inf or -inf: lse_merge decides from m alone
  if (!is_nan(m) && m != inf<A>() && m != -inf<A>()) {
    s = A(0);
    KFUSE_UNROLL for (int i = 0; i < N; ++i) s += std::exp(v[i] - m);
  }
  lse_merge(acc, m, s);
}

template <class A>
KFUSE_HDI void reduce_join(ReduceKind k, ReduceAcc<A>& acc, const ReduceAcc<A>& other) {
  switch (k) {
    case ReduceKind::max: acc.a = nan_max(acc.a, other.a); break;
    case ReduceKind::min: acc.a = nan_min(acc.a, other.a); break;
    case ReduceKind::logsumexp: lse_merge(acc, other.a, other.b); break;
    default: acc.a += other.a; break;
  }
}

// The reduction's value over `count` elements (mean of none is NaN, as in PyTorch).
template <class A>
KFUSE_HDI A reduce_finish(ReduceKind k, const ReduceAcc<A>& acc, int64_t count) {
  switch (k) {
    case ReduceKind::mean: return acc.a / A(count);
    case ReduceKind::logsumexp:
      if (is_nan(acc.a) || acc.a == inf<A>() || acc.a == -inf<A>()) return acc.a;
      return acc.a + std::log(acc.b);
    default: return acc.a;
  }
}

// softmax of x in a row whose logsumexp state is `acc`. As PyTorch, a row
// holding +inf is NaN throughout (exp(x - max) meets inf - inf). e times the
// sum's reciprocal (an ulp or so from e / sum; the sum is at least 1): the
// reciprocal depends on the row only, so a loop over the row computes it
// once, where a division a value cost the issue-bound softmax kernels about
// eight instructions a value.
template <class A>
KFUSE_HDI A softmax_of_exp(const ReduceAcc<A>& acc, A e) {  // e = exp(x - acc.a), already at hand
  const A inv_sum = acc.a == inf<A>() ? quiet_nan<A>() : A(1) / acc.b;
  return e * inv_sum;
}
template <class A>
KFUSE_HDI A softmax_value(const ReduceAcc<A>& acc, A x) {
  return softmax_of_exp(acc, std::exp(x - acc.a));
}

// Accumulation type: at least fp32, fp64 for fp64 tensors.
template <class T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };
template <class T> using acc_t = typename acc_type<T>::type;

}  // namespace kfuse::detail
