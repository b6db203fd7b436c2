// An independent, naive fp64 reference of every kfuse op, written from
// PyTorch's semantics (DESIGN.md section 2), and the helpers the tests share:
// seeded random inputs, strided tensors whose unused slots hold NaN (built on
// the host, mirrored to where the Kokkos kernels run), and a comparison that
// fails on any NaN mismatch. Every kfuse output starts as NaN: main.cpp turns
// on kfuse::set_poison_new_tensors, so an element a kernel skips fails too.
//
// Nothing here calls kfuse's detail/math.hpp, its Indexer or its kernels: the
// reference only borrows kfuse's plain parameter types (Shape, Unary,
// BinaryKind, ReduceKind, ConvTranspose2dParams) so that tests can pass the
// same arguments to both sides.
//
// Every reference value comes with two scales:
//  - err[i], a worst-case error scale: the comparison allows
//    |out[i] - ref[i]| <= factor * eps(T) * err[i] + atol(T). Each reference
//    function derives err[i] from a forward error bound of the computation
//    kfuse performs in precision T (e.g. (K + 2) * sum|terms| for a sum of K
//    terms);
//  - mag[i], the magnitude the result's error is naturally relative to (for
//    a sum: sum|terms|, which is |ref| unless terms cancel). The norm check
//    ||out - ref||_2 / ||mag||_2 <= rel_tol catches small systematic errors
//    (a wrong constant, a wrong divisor) that hide inside worst-case bounds,
//    without failing on cancellation.
// See test_ops.cpp for the justification of the constants.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness_util.hpp"
#include "kfuse/op_types.hpp"
#include "kfuse/ops.hpp"
#include "kfuse/shape.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse_test {

using kfuse::Shape;
// Inputs go to kfuse::kokkos_memory() through a Mirror; results come back
// through values_of (fuzz/harness_util.hpp, shared with the harnesses).
using kfuse_fuzz::Mirror;
using kfuse_fuzz::values_of;

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------
// Shapes, written again here so the reference does not lean on kfuse's.

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t e : s) n *= e;
  return n;
}

inline std::vector<int64_t> row_major_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int d = static_cast<int>(s.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * s[d + 1];
  return st;
}

// Row-major linear index -> multi-index.
inline std::vector<int64_t> unravel(int64_t linear, const Shape& s) {
  std::vector<int64_t> idx(s.size(), 0);
  for (int d = static_cast<int>(s.size()) - 1; d >= 0; --d) {
    idx[d] = linear % s[d];
    linear /= s[d];
  }
  return idx;
}

inline std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// Sets (or, with nullptr, unsets) an environment variable for a scope; restores the old value.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~EnvVar() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// ---------------------------------------------------------------------------
// Random numbers: one seeded std::mt19937_64 per test.

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen_); }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen_); }  // inclusive
  bool coin(double p_true = 0.5) { return uniform(0.0, 1.0) < p_true; }
  template <class V>
  const typename V::value_type& pick(const V& v) { return v[static_cast<std::size_t>(integer(0, static_cast<int64_t>(v.size()) - 1))]; }
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// n values uniform in [lo, hi); never all zeros (a zero input hides bugs).
inline std::vector<double> random_values(int64_t n, double lo, double hi, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& e : v) e = rng.uniform(lo, hi);
  if (n > 0 && std::all_of(v.begin(), v.end(), [](double e) { return e == 0.0; })) v[0] = hi != 0.0 ? 0.5 * hi : 0.5 * lo;
  return v;
}

// n values k / 64 with integer k uniform in [lo*64, hi*64]: sums of up to
// 2^24 / (64 * max|x|) of them are exact in fp32, whatever the order.
inline std::vector<double> dyadic_values(int64_t n, double lo, double hi, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& e : v) e = static_cast<double>(rng.integer(static_cast<int64_t>(lo * 64), static_cast<int64_t>(hi * 64))) / 64.0;
  if (n > 0 && std::all_of(v.begin(), v.end(), [](double e) { return e == 0.0; })) v[0] = 1.0;
  return v;
}

// The values after a round trip through T, so the reference sees exactly
// what kfuse reads.
template <class T>
std::vector<double> rounded(std::vector<double> v) {
  for (double& e : v) e = static_cast<double>(static_cast<T>(e));
  return v;
}

// ---------------------------------------------------------------------------
// Reference tensors: fp64, row-major, with an error scale per element.

struct Ref {
  Shape shape;
  std::vector<double> v;
  std::vector<double> err;  // worst-case error scale (see the top of this file); empty: |v|
  std::vector<double> mag;  // natural magnitude for the norm check; empty: err
};

inline Ref make_ref(Shape shape, std::vector<double> v) { return Ref{std::move(shape), std::move(v), {}, {}}; }

// For results that must be exact up to the final rounding (e.g. sums of
// dyadic values, which fp32 adds without error in any order): err = |v|.
inline Ref tightened(Ref r) {
  for (std::size_t i = 0; i < r.v.size(); ++i) r.err[i] = std::fabs(r.v[i]);
  return r;
}

// ---------------------------------------------------------------------------
// Test tensors in several layouts: a host buffer, which the reference reads,
// mirrored to kfuse::kokkos_memory(), which view() shows with the same strides
// and offset. Slots of the buffer that the view does not cover hold NaN, so a
// kernel that ignores strides reads NaN and fails.

enum class Layout {
  contiguous,            // row-major
  every_other,           // innermost stride 2, padded rows, data offset by one element
  permuted,              // axes stored in reverse order (e.g. NCHW stored as WHCN)
  permuted_every_other,  // both
  broadcast_leading,     // axis 0 with stride 0 when its extent is > 1 (an expand()ed view):
                         // all slices along axis 0 then hold the same values
};

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::every_other: return "every_other";
    case Layout::permuted: return "permuted";
    case Layout::permuted_every_other: return "permuted_every_other";
    case Layout::broadcast_leading: return "broadcast_leading";
  }
  return "?";
}

inline const std::vector<Layout>& strided_layouts() {
  static const std::vector<Layout> all{Layout::contiguous, Layout::every_other, Layout::permuted,
                                       Layout::permuted_every_other};
  return all;
}

template <class T>
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;
  HostTensor(HostTensor&&) = default;  // the vector's heap buffer and the mirror move with it: `view` stays valid
  HostTensor& operator=(HostTensor&&) = default;

  // `values` are the logical row-major values. With broadcast_leading, only
  // the first slice along axis 0 is stored and `values` is rewritten to what
  // the view shows.
  HostTensor(const Shape& shape, std::vector<double> values, Layout layout) : layout_(layout) {
    const int r = static_cast<int>(shape.size());
    const int64_t n = numel_of(shape);
    if (static_cast<int64_t>(values.size()) != n) throw std::logic_error("HostTensor: value count does not match shape");
    // perm[k]: the logical axis stored k-th from the outside.
    std::vector<int> perm(r);
    std::iota(perm.begin(), perm.end(), 0);
    const bool permute = layout == Layout::permuted || layout == Layout::permuted_every_other;
    const bool spread = layout == Layout::every_other || layout == Layout::permuted_every_other;
    if (permute) std::reverse(perm.begin(), perm.end());
    Shape phys(r);
    for (int k = 0; k < r; ++k) phys[k] = shape[perm[k]];
    if (layout == Layout::broadcast_leading && r > 0) phys[0] = 1;
    if (spread && r > 0) {
      phys[r - 1] = 2 * phys[r - 1] + 1;  // every other element, plus a spare one per row
      phys[0] += 1;                       // and a spare outer slice
    }
    const std::vector<int64_t> pst = row_major_strides(phys);
    std::vector<int64_t> st(r);
    for (int k = 0; k < r; ++k) st[perm[k]] = pst[k];
    if (spread && r > 0) st[perm[r - 1]] = 2 * pst[r - 1];
    if (layout == Layout::broadcast_leading && r > 0) st[0] = 0;
    const int64_t offset = spread ? 1 : 0;
    buffer_.assign(static_cast<std::size_t>(numel_of(phys) + offset + 1), std::numeric_limits<T>::quiet_NaN());
    if (layout == Layout::broadcast_leading && r > 0) {
      const int64_t slice = r > 0 && shape[0] > 0 ? n / shape[0] : n;
      for (int64_t i = 0; i < n; ++i) values[i] = values[i % std::max<int64_t>(slice, 1)];
    }
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<int64_t> idx = unravel(i, shape);
      int64_t off = offset;
      for (int d = 0; d < r; ++d) off += idx[d] * st[d];
      buffer_[static_cast<std::size_t>(off)] = static_cast<T>(values[i]);
      values[i] = static_cast<double>(static_cast<T>(values[i]));
    }
    host_view_ = kfuse::TensorView(buffer_.data() + offset, kfuse::dtype_of<T>(), shape, Shape(st.begin(), st.end()),
                                   kfuse::Memory::host);
    mirror_ = Mirror(buffer_);
    view_ = mirror_.at(host_view_);
    ref_ = make_ref(shape, std::move(values));
  }

  // The view in kfuse::kokkos_memory(), for ops and plans.
  const kfuse::TensorView& view() const { return view_; }
  operator const kfuse::TensorView&() const { return view_; }
  // A contiguous host copy: kfuse::Pipeline takes weights and operands on the host.
  kfuse::Tensor host_tensor() const { return kfuse::Tensor::copy_of(host_view_, kfuse::Memory::host); }
  const Ref& ref() const { return ref_; }
  Layout layout() const { return layout_; }

 private:
  std::vector<T> buffer_;
  Mirror mirror_;
  kfuse::TensorView host_view_, view_;
  Ref ref_;
  Layout layout_ = Layout::contiguous;
};

template <class T>
HostTensor<T> random_tensor(const Shape& shape, Rng& rng, Layout layout = Layout::contiguous, double lo = -1.0,
                            double hi = 1.0) {
  return HostTensor<T>(shape, random_values(numel_of(shape), lo, hi, rng), layout);
}

// A host tensor of `values` (row-major): weights and operands for kfuse::Pipeline.
inline kfuse::Tensor host_tensor(const Shape& shape, const std::vector<double>& values,
                                 kfuse::DType dtype = kfuse::DType::f32) {
  kfuse::Tensor t = kfuse::Tensor::empty(shape, dtype, kfuse::Memory::host);
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw std::logic_error("host_tensor: value count does not match shape");
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == kfuse::DType::f64) t.data<double>()[i] = values[static_cast<std::size_t>(i)];
    else t.data<float>()[i] = static_cast<float>(values[static_cast<std::size_t>(i)]);
  }
  return t;
}

// Every element of a view of dtype T as fp64, in row-major order (any strides, either memory).
template <class T>
std::vector<double> read_values(const kfuse::TensorView& v) {
  if (v.dtype != kfuse::dtype_of<T>()) throw std::logic_error("read_values: the view's dtype is not T");
  return values_of(v);
}

// ---------------------------------------------------------------------------
// Comparison.

template <class T>
constexpr double eps_of() { return static_cast<double>(std::numeric_limits<T>::epsilon()); }
// Absolute slack: values this small are subnormal in T, where relative bounds
// do not hold (e.g. sigmoid(-100) in fp32).
template <class T>
constexpr double atol_of() { return 1e4 * static_cast<double>(std::numeric_limits<T>::min()); }

// What the exact value `r` becomes when stored in T: +-inf past T's range.
template <class T>
double representable(double r) {
  if (std::isfinite(r) && std::fabs(r) > static_cast<double>(std::numeric_limits<T>::max()))
    return r > 0 ? kInf : -kInf;
  return r;
}

// Norm-wise relative error ||out - ref||_2 / ||ref||_2, skipping NaN and
// matching infinities of ref; NaN when out and ref disagree on NaN-ness.
inline double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return kNaN;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i]) != std::isnan(ref[i])) return kNaN;
    if (std::isnan(ref[i]) || (std::isinf(ref[i]) && out[i] == ref[i])) continue;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Errors {
  double rel = 0.0;      // ||out - ref||_2 / ||ref||_2 over the finite elements
  double rel_mag = 0.0;  // ||out - ref||_2 / ||mag||_2 over the finite elements (checked)
  double max_abs = 0.0;  // max |out - ref| over the finite elements
};

// Compares `out` (values read back from kfuse) with `ref`.
//  - NaN must match NaN exactly: a NaN where the reference is a number (an
//    unwritten, still-poisoned element or a bad read) fails, and so does a
//    number where the reference is NaN.
//  - +-inf must match exactly.
//  - every finite element: |out - ref| <= factor * eps(T) * err[i] + atol(T).
//  - norm-wise: ||out - ref|| / ||mag|| <= rel_tol (||mag|| >= ||ref||; the
//    plain relative error ||out - ref|| / ||ref|| is reported too).
template <class T>
::testing::AssertionResult compare_values(const std::vector<double>& out, const Ref& ref, const std::string& what,
                                          double factor, double rel_tol, Errors* errors = nullptr) {
  if (out.size() != ref.v.size())
    return ::testing::AssertionFailure() << what << ": " << out.size() << " elements, reference has " << ref.v.size();
  const double eps = eps_of<T>(), atol = atol_of<T>();
  double num = 0.0, den = 0.0, den_mag = 0.0, max_abs = 0.0;
  int bad = 0;
  std::ostringstream msg;
  msg.precision(10);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double r = representable<T>(ref.v[i]), o = out[i];
    double scale = ref.err.empty() ? std::fabs(r) : ref.err[i];
    if (std::isnan(scale)) scale = 0.0;  // a scale of 0 * inf: the reference claims exactness
    const double mag = ref.mag.empty() ? scale : ref.mag[i];
    const double bound = factor * eps * scale + atol;
    bool ok;
    if (std::isnan(r)) {
      ok = std::isnan(o);
    } else if (std::isinf(r)) {
      ok = o == r;
    } else if (!std::isfinite(o)) {
      ok = false;  // NaN (unwritten/poisoned) or inf where the reference is finite
    } else {
      const double d = std::fabs(o - r);
      num += d * d;
      den += r * r;
      den_mag += std::max(mag * mag, r * r);
      max_abs = std::max(max_abs, d);
      ok = d <= bound;
    }
    if (!ok && ++bad <= 8) {
      const std::vector<int64_t> idx = unravel(static_cast<int64_t>(i), ref.shape);
      msg << "\n  at " << shape_str(Shape(idx.begin(), idx.end())) << ": got " << o << ", expected " << r
          << " (allowed error " << bound << ")";
    }
  }
  const double rel = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  const double rel_mag = den_mag > 0.0 ? std::sqrt(num / den_mag) : std::sqrt(num);
  if (errors) *errors = Errors{rel, rel_mag, max_abs};
  if (bad > 0)
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << out.size()
                                         << " elements wrong (relative error " << rel << ", max abs error "
                                         << max_abs << ")" << msg.str();
  if (rel_mag > rel_tol)
    return ::testing::AssertionFailure() << what << ": norm-wise error " << rel_mag << " exceeds " << rel_tol
                                         << " (relative error " << rel << ", max abs error " << max_abs << ")";
  return ::testing::AssertionSuccess();
}

// Checks a kfuse output tensor: defined, in the Kokkos backend's memory,
// dtype T, the reference's shape, row-major, and every element (compare_values).
template <class T>
::testing::AssertionResult matches(const kfuse::Tensor& out, const Ref& ref, const std::string& what,
                                   double factor = 4.0, double rel_tol = 64 * eps_of<T>()) {
  if (!out.defined()) return ::testing::AssertionFailure() << what << ": output tensor is not defined";
  if (out.memory() != kfuse::kokkos_memory())
    return ::testing::AssertionFailure() << what << ": output is in " << kfuse::to_string(out.memory()) << " memory";
  if (out.dtype() != kfuse::dtype_of<T>())
    return ::testing::AssertionFailure() << what << ": output dtype " << kfuse::to_string(out.dtype());
  if (out.shape() != ref.shape)
    return ::testing::AssertionFailure() << what << ": output shape " << shape_str(out.shape()) << ", expected "
                                         << shape_str(ref.shape);
  if (out.view().strides.size() != ref.shape.size() ||
      std::vector<int64_t>(out.view().strides.begin(), out.view().strides.end()) != row_major_strides(ref.shape))
    return ::testing::AssertionFailure() << what << ": output is not row-major, strides "
                                         << shape_str(out.view().strides);
  return compare_values<T>(read_values<T>(out.view()), ref, what, factor, rel_tol);
}

// ---------------------------------------------------------------------------
// The reference ops.

// Unsigned index of a multi-index in a row-major shape.
inline int64_t ravel(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t off = 0;
  for (std::size_t d = 0; d < s.size(); ++d) off = off * s[d] + idx[d];
  return off;
}

// ConvTranspose2d as a scatter: every input element, for every tap, adds
// x * w into the output pixel it lands on (oh = ih*s - p + kh*d). The kernel
// under test gathers per output pixel instead.
// Error scale: an fp sum of K products is within ~K*u*sum|terms| of the exact
// value (u = eps/2), so err[i] = (K_i + 1) * (|b| + sum |x*w|), with K_i the
// number of terms of output i.
inline Ref conv_transpose2d_ref(const Ref& x, const Ref& w, const Ref* bias, const kfuse::ConvTranspose2dParams& p) {
  const int64_t N = x.shape[0], Cin = x.shape[1], H = x.shape[2], W = x.shape[3];
  const int64_t coutg = w.shape[1], kH = w.shape[2], kW = w.shape[3];
  const int64_t G = p.groups, cing = Cin / G, Cout = coutg * G;
  const int64_t Ho = (H - 1) * p.stride[0] - 2 * p.padding[0] + p.dilation[0] * (kH - 1) + p.output_padding[0] + 1;
  const int64_t Wo = (W - 1) * p.stride[1] - 2 * p.padding[1] + p.dilation[1] * (kW - 1) + p.output_padding[1] + 1;
  Ref y{Shape{N, Cout, Ho, Wo}, {}, {}, {}};
  const std::size_t n_out = static_cast<std::size_t>(N * Cout * Ho * Wo);
  y.v.assign(n_out, 0.0);
  std::vector<double> abs_sum(n_out, 0.0), terms(n_out, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t i = 0; i < Ho * Wo; ++i) {
        const std::size_t o = static_cast<std::size_t>((n * Cout + co) * Ho * Wo + i);
        y.v[o] = bias ? bias->v[co] : 0.0;
        abs_sum[o] = bias ? std::fabs(bias->v[co]) : 0.0;
      }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < Cin; ++ci) {
      const int64_t g = ci / cing;
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw) {
          const double xv = x.v[((n * Cin + ci) * H + ih) * W + iw];
          for (int64_t j = 0; j < coutg; ++j) {
            const int64_t co = g * coutg + j;
            for (int64_t kh = 0; kh < kH; ++kh) {
              const int64_t oh = ih * p.stride[0] - p.padding[0] + kh * p.dilation[0];
              if (oh < 0 || oh >= Ho) continue;
              for (int64_t kw = 0; kw < kW; ++kw) {
                const int64_t ow = iw * p.stride[1] - p.padding[1] + kw * p.dilation[1];
                if (ow < 0 || ow >= Wo) continue;
                const double t = xv * w.v[((ci * coutg + j) * kH + kh) * kW + kw];
                const std::size_t o = static_cast<std::size_t>(((n * Cout + co) * Ho + oh) * Wo + ow);
                y.v[o] += t;
                abs_sum[o] += std::fabs(t);
                terms[o] += 1.0;
              }
            }
          }
        }
    }
  y.err.resize(n_out);
  for (std::size_t o = 0; o < n_out; ++o) y.err[o] = (terms[o] + 2.0) * abs_sum[o];
  y.mag = std::move(abs_sum);
  return y;
}

// PyTorch's softplus (beta 1, threshold 20).
inline double softplus_ref(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// NaN-propagating min/max (torch.minimum/maximum, amin/amax).
inline double max_ref(double a, double b) { return std::isnan(a) || std::isnan(b) ? kNaN : (a >= b ? a : b); }
inline double min_ref(double a, double b) { return std::isnan(a) || std::isnan(b) ? kNaN : (a <= b ? a : b); }

// torch.clamp(x, lo, hi) = min(max(x, lo), hi): hi wins when lo > hi; NaN stays NaN.
inline double clamp_ref(double x, double lo, double hi) { return min_ref(max_ref(x, lo), hi); }

// One unary op on one value, PyTorch's formulas in fp64.
inline double unary_value(const kfuse::Unary& u, double x) {
  using K = kfuse::UnaryKind;
  switch (u.kind) {
    case K::relu: return std::isnan(x) ? x : (x > 0.0 ? x : 0.0);
    case K::leaky_relu: return x > 0.0 ? x : x * u.a;
    case K::tanh: return std::tanh(x);
    case K::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case K::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));  // = 0.5x(1 + erf(x/sqrt2)), accurate for x < 0
    case K::gelu_tanh: {
      const double k = std::sqrt(2.0 / std::acos(-1.0));
      return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    }
    case K::silu: return x / (1.0 + std::exp(-x));
    case K::mish: return x * std::tanh(softplus_ref(x));
    case K::hardtanh:
    case K::clamp: return clamp_ref(x, u.a, u.b);
    case K::hardswish: return x * clamp_ref(x + 3.0, 0.0, 6.0) / 6.0;
    case K::exp: return std::exp(x);
    case K::log: return std::log(x);
    case K::neg: return -x;
    case K::abs: return std::fabs(x);
  }
  return kNaN;
}

// Error scale of a unary op in T on input x with exact result r:
//  - ops that are exact or rounded a few times: |r| (relative bound);
//  - gelu / gelu_tanh compute 0.5x(1 + erf(.)) and 1 + erf cancels for x < 0:
//    the absolute error is ~u*|x|, so |x| + |r|.
inline double unary_err(const kfuse::Unary& u, double x, double r) {
  using K = kfuse::UnaryKind;
  switch (u.kind) {
    case K::gelu:
    case K::gelu_tanh: return std::fabs(x) + std::fabs(r);
    default: return std::fabs(r);
  }
}

inline Ref unary_ref(const Ref& x, const kfuse::Unary& u) {
  Ref y{x.shape, std::vector<double>(x.v.size()), std::vector<double>(x.v.size()), {}};
  for (std::size_t i = 0; i < x.v.size(); ++i) {
    y.v[i] = unary_value(u, x.v[i]);
    y.err[i] = unary_err(u, x.v[i], y.v[i]);
  }
  return y;
}

inline double binary_value(kfuse::BinaryKind k, double a, double b) {
  using B = kfuse::BinaryKind;
  switch (k) {
    case B::add: return a + b;
    case B::sub: return a - b;
    case B::mul: return a * b;
    case B::div: return a / b;
    case B::min: return min_ref(a, b);
    case B::max: return max_ref(a, b);
  }
  return kNaN;
}

// Error scale: add/sub are one rounding of exact inputs, but a scalar operand
// is rounded to T first (u*|b|), so |a| + |b|; mul/div/min/max: |r|, plus |a|
// for mul/div by a rounded scalar (relative, folded into |r|).
inline double binary_err(kfuse::BinaryKind k, double a, double b, double r) {
  using B = kfuse::BinaryKind;
  if (k == B::add || k == B::sub) return std::fabs(a) + std::fabs(b) + std::fabs(r);
  return std::fabs(r);
}

// NumPy broadcasting, written from the rule: align trailing axes; extents
// must be equal or 1. Returns false when the shapes do not broadcast.
inline bool broadcast_ref_shape(const Shape& a, const Shape& b, Shape& out) {
  const std::size_t r = std::max(a.size(), b.size());
  out.assign(r, 1);
  for (std::size_t k = 0; k < r; ++k) {  // k counts from the last axis
    const int64_t ea = k < a.size() ? a[a.size() - 1 - k] : 1;
    const int64_t eb = k < b.size() ? b[b.size() - 1 - k] : 1;
    if (ea != eb && ea != 1 && eb != 1) return false;
    out[r - 1 - k] = ea == 1 ? eb : ea;
  }
  return true;
}

inline Ref binary_ref(const Ref& a, const Ref& b, kfuse::BinaryKind k) {
  Shape s;
  if (!broadcast_ref_shape(a.shape, b.shape, s)) throw std::logic_error("binary_ref: shapes do not broadcast");
  const int64_t n = numel_of(s);
  Ref y{s, std::vector<double>(static_cast<std::size_t>(n)), std::vector<double>(static_cast<std::size_t>(n)), {}};
  auto source = [&](const Ref& t, const std::vector<int64_t>& idx) {
    std::vector<int64_t> j(t.shape.size());
    const std::size_t lead = s.size() - t.shape.size();
    for (std::size_t d = 0; d < t.shape.size(); ++d) j[d] = t.shape[d] == 1 ? 0 : idx[lead + d];
    return t.v[static_cast<std::size_t>(ravel(j, t.shape))];
  };
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int64_t> idx = unravel(i, s);
    const double av = source(a, idx), bv = source(b, idx);
    y.v[i] = binary_value(k, av, bv);
    y.err[i] = binary_err(k, av, bv, y.v[i]);
  }
  return y;
}

inline Ref binary_scalar_ref(const Ref& a, double s, kfuse::BinaryKind k) {
  Ref y{a.shape, std::vector<double>(a.v.size()), std::vector<double>(a.v.size()), {}};
  for (std::size_t i = 0; i < a.v.size(); ++i) {
    y.v[i] = binary_value(k, a.v[i], s);
    y.err[i] = binary_err(k, a.v[i], s, y.v[i]) + (k == kfuse::BinaryKind::mul || k == kfuse::BinaryKind::div ? std::fabs(y.v[i]) : 0.0);
  }
  return y;
}

// Reductions over `axes` (negative axes count from the end), PyTorch's
// semantics: sum, mean, amax/amin (NaN propagates), logsumexp as PyTorch
// computes it: m = amax, m' = (|m| == inf ? 0 : m), log(sum exp(x - m')) + m'
// (all -inf -> -inf, any +inf -> +inf, NaN -> NaN).
// Error scales: sum/mean of K terms: err = (K + 1) * sum|x| (/K for mean),
// mag = sum|x| (/K); max/min are exact: err = 0, mag = |r|; logsumexp: each
// exp(x - m) carries ~u(|x - m| + 1), weighted by exp(x - m) <= 1/(e|x - m|),
// the sum adds K*u and the final log and add u(|r| + 1): err = 3K + 2|r| + 4,
// mag = |r| + 1.
inline Ref reduce_ref(const Ref& x, kfuse::ReduceKind kind, std::vector<int> axes, bool keepdim) {
  const int r = static_cast<int>(x.shape.size());
  std::vector<bool> red(r, false);
  for (int a : axes) red[a < 0 ? a + r : a] = true;
  Shape kept_full(r);  // the output shape with keepdim
  for (int d = 0; d < r; ++d) kept_full[d] = red[d] ? 1 : x.shape[d];
  const int64_t n_out = numel_of(kept_full);
  int64_t count = 1;
  for (int d = 0; d < r; ++d) count *= red[d] ? x.shape[d] : 1;
  std::vector<std::vector<double>> groups(static_cast<std::size_t>(n_out));
  for (int64_t i = 0; i < numel_of(x.shape); ++i) {
    std::vector<int64_t> idx = unravel(i, x.shape);
    for (int d = 0; d < r; ++d)
      if (red[d]) idx[d] = 0;
    groups[static_cast<std::size_t>(ravel(idx, kept_full))].push_back(x.v[static_cast<std::size_t>(i)]);
  }
  Shape out_shape;
  for (int d = 0; d < r; ++d)
    if (!red[d] || keepdim) out_shape.push_back(kept_full[d]);
  Ref y{out_shape, std::vector<double>(static_cast<std::size_t>(n_out)), std::vector<double>(static_cast<std::size_t>(n_out)),
        std::vector<double>(static_cast<std::size_t>(n_out))};
  using R = kfuse::ReduceKind;
  for (int64_t o = 0; o < n_out; ++o) {
    const std::vector<double>& g = groups[static_cast<std::size_t>(o)];
    const double K = static_cast<double>(count);
    double val = 0.0, err = 0.0, mag = 0.0;
    switch (kind) {
      case R::sum:
      case R::mean: {
        double s = 0.0, a = 0.0;
        for (double e : g) {
          s += e;
          a += std::fabs(e);
        }
        val = kind == R::sum ? s : s / K;
        mag = kind == R::sum ? a : a / K;
        err = (K + 1.0) * mag;
        break;
      }
      case R::max:
      case R::min: {
        val = kind == R::max ? -kInf : kInf;
        for (double e : g) val = kind == R::max ? max_ref(val, e) : min_ref(val, e);
        err = 0.0;
        mag = std::fabs(val);
        break;
      }
      case R::logsumexp: {
        double m = -kInf;
        for (double e : g) m = max_ref(m, e);
        const double shift = std::isinf(m) ? 0.0 : m;
        double s = 0.0;
        for (double e : g) s += std::exp(e - shift);
        val = std::log(s) + shift;
        err = 3.0 * K + 2.0 * std::fabs(val) + 4.0;
        mag = std::fabs(val) + 1.0;
        break;
      }
    }
    y.v[static_cast<std::size_t>(o)] = val;
    y.err[static_cast<std::size_t>(o)] = err;
    y.mag[static_cast<std::size_t>(o)] = mag;
  }
  return y;
}

// Softmax along `axis`, as PyTorch computes it: m = amax (NaN propagates),
// e = exp(x - m), y = e / sum(e) (a row with +inf, NaN or only -inf is all
// NaN). Error scale: exp(x - m) carries ~u(|x - m| + 1) relative, the sum of
// K terms ~K*u, the division u: err = |y| * (|x - m| + 2K + 4), mag =
// |y| * (|x - m| + 1).
inline Ref softmax_ref(const Ref& x, int axis) {
  const int r = static_cast<int>(x.shape.size());
  const int ax = axis < 0 ? axis + r : axis;
  const int64_t len = x.shape[ax];
  int64_t inner = 1;
  for (int d = ax + 1; d < r; ++d) inner *= x.shape[d];
  const int64_t outer = numel_of(x.shape) / std::max<int64_t>(len * inner, 1);
  Ref y{x.shape, std::vector<double>(x.v.size()), std::vector<double>(x.v.size()), std::vector<double>(x.v.size())};
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      auto at = [&](int64_t j) { return static_cast<std::size_t>((o * len + j) * inner + in); };
      double m = -kInf;
      for (int64_t j = 0; j < len; ++j) m = max_ref(m, x.v[at(j)]);
      double s = 0.0;
      for (int64_t j = 0; j < len; ++j) s += std::exp(x.v[at(j)] - m);
      for (int64_t j = 0; j < len; ++j) {
        const double e = std::exp(x.v[at(j)] - m);
        y.v[at(j)] = e / s;
        const double ay = std::fabs(y.v[at(j)]);  // 0 for x = -inf: exact, whatever |x - m|
        y.err[at(j)] = ay == 0.0 ? 0.0 : ay * (std::fabs(x.v[at(j)] - m) + 2.0 * static_cast<double>(len) + 4.0);
        y.mag[at(j)] = ay == 0.0 ? 0.0 : ay * (std::fabs(x.v[at(j)] - m) + 1.0);
      }
    }
  return y;
}

}  // namespace kfuse_test
