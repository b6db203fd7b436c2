// The pipeline builder harness: bytes -> a pipeline, plans, runs.
//
// Oracle, for every input:
//  - building the pipeline either succeeds or throws kfuse::Error;
//  - a valid float32/float64 pipeline always gets a plan under
//    Strategy::automatic and Strategy::reference in the Kokkos backend's
//    memory (kfuse::kokkos_memory()); a forced fold/fused either plans or
//    throws kfuse::Error, and automatic picks the first of fold, fused,
//    reference that plans;
//  - a small plan runs (f32/f64 in that memory: without error), writes every output
//    element (two runs into differently poisoned outputs agree bit for bit),
//    the reference strategy equals the eager ops bit for bit, and fold and
//    fused agree with the reference: the same NaN/+inf/-inf pattern and
//    finite values within a bound derived from the problem's measured
//    conditioning. The conditioning is measured in float64 by running the
//    eager ops again with every input, weight and operand perturbed by a
//    relative 2^-30: an element whose class (NaN/inf/finite) changes under
//    the perturbation sits on a discontinuity (a division by an exact zero,
//    log(0), a softmax row that overflows) and is not compared, and a finite
//    element's bound is 64 K u |dy|/2^-30 + 64 u (1 + |y|) (K terms at most,
//    u the unit roundoff of the dtype). Pipelines with a non-finite or huge
//    scalar or input value are run, but not compared (the fold legitimately
//    differs there: README, "Guarantees"); so are problems whose
//    intermediates leave [1e-30, 1e30] (f32) or [1e-300, 1e300] (f64).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <typeinfo>
#include <variant>

#include "harness.hpp"
#include "harness_util.hpp"
#include "kfuse/ops.hpp"
#include "kfuse/plan.hpp"

namespace kfuse_fuzz {

namespace {

using namespace kfuse;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kDelta = 0x1p-30;         // relative perturbation of the conditioning run
constexpr int64_t kRunLimit = 4096;        // elements per stage for a pipeline to run
constexpr double kMacLimit = 1 << 18;      // conv multiply-adds for a pipeline to run
// Elements per stage for a pipeline to be planned: a plan allocates its
// intermediates when it is made (four plans of a 2.3 GB Y, from a dilation of
// 10^6, passed libFuzzer's 2 GB limit).
constexpr int64_t kPlanLimit = int64_t(1) << 22;

constexpr double kNormal[] = {0, 1, -1, 0.5, 2, -2, 3, 0.25, -0.75, 10, 0.125, 100, -3, 1.5, 4, -0.5};
constexpr double kSpecial[] = {kInf, -kInf, kNaN, 1e30, -1e30, 1e-30, -1e-30, 1e300, 5e-324, -0.0, 3.4e38, 1e-45};

// How a build is done: the bytes decide everything but these.
struct Mode {
  std::optional<DType> dtype;  // override (the float64 conditioning runs)
  double delta = 0.0;          // relative perturbation of every value
};

struct Built {
  std::optional<Pipeline> pipeline;
  PlanOptions options;
  int layout = 0;
  bool special = false;  // a non-finite or extreme value somewhere: no numeric comparison
  bool inject = false;   // NaN/inf in x
  uint64_t seed = 0;
  int64_t terms = 1;     // K of the oracle's bound
  std::string log;       // what was built (printed with KFUSE_FUZZ_DEBUG=1, and with a bug)
};

// Dyadic values (exact in f32 and f64), perturbed by a relative `delta`.
class Values {
 public:
  Values(uint64_t seed, double delta) : gen_(seed), pert_(seed ^ 0xA5A5A5A5u), delta_(delta) {}
  double next(int lo, int hi, int denom) {
    const double v = double(std::uniform_int_distribution<int>(lo * denom, hi * denom)(gen_)) / denom;
    const double u = std::uniform_real_distribution<double>(-1.0, 1.0)(pert_);
    return v * (1.0 + delta_ * u);
  }

 private:
  std::mt19937_64 gen_, pert_;
  double delta_;
};

// A host tensor: kfuse::Pipeline takes weights and operands on the host.
Tensor make_tensor(const Shape& shape, DType dtype, Values& vals, int lo, int hi, int denom) {
  Tensor t = Tensor::empty(shape, dtype, Memory::host);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = vals.next(lo, hi, denom);
    if (dtype == DType::f64) t.data<double>()[i] = v;
    else t.data<float>()[i] = static_cast<float>(v);
  }
  return t;
}

int64_t numel_or_max(const Shape& s) {
  try {
    return checked_numel(s, "fuzz", "shape");
  } catch (const Error&) {
    return std::numeric_limits<int64_t>::max();
  }
}

double scalar(Bytes& b, Built& out) {
  if (b.chance(32)) {
    out.special = true;
    return kSpecial[b.below(sizeof kSpecial / sizeof kSpecial[0])];
  }
  return kNormal[b.below(sizeof kNormal / sizeof kNormal[0])];
}

std::vector<int> axes_of(Bytes& b, int rank) {
  std::vector<int> axes;
  const int n = b.chance(32) ? 0 : 1 + b.below(3);
  for (int k = 0; k < n; ++k) axes.push_back(b.below(2 * rank + 3) - rank - 1);
  return axes;
}

// An operand shape against the running shape `s`: mostly broadcastable, some not.
Shape operand_shape(Bytes& b, const Shape& s) {
  const int r = static_cast<int>(s.size());
  Shape o;
  switch (b.below(8)) {
    case 0: o = s; break;
    case 1:  // per-channel [C, 1, 1]
      if (r >= 2) {
        o.assign(r - 1, 1);
        o[0] = s[1];
      } else {
        o = s;
      }
      break;
    case 2:  // [1, C, 1, 1]
      o.assign(r, 1);
      if (r >= 2) o[1] = s[1];
      break;
    case 3: o.assign(s.end() - b.below(r + 1), s.end()); break;
    case 4: {
      o = s;
      const uint8_t m = b.u8();
      for (int d = 0; d < r; ++d)
        if (m >> (d % 8) & 1) o[d] = 1;
      break;
    }
    case 5:
      for (int d = 1 + b.below(3); d > 0; --d) o.push_back(b.in(1, 4));
      break;
    case 6:
      o = s;
      o.insert(o.begin(), 2);
      break;
    default: o = {1}; break;
  }
  if (numel_or_max(o) > 4096) o = {1};
  return o;
}

Built build(const uint8_t* data, std::size_t size, const Mode& mode) {
  Bytes b(data, size);
  Built out;
  out.seed = b.u64();
  Values vals(out.seed, mode.delta);
  const int dt = b.below(16);
  DType dtype = dt < 8 ? DType::f32 : dt < 15 ? DType::f64 : (b.u8() & 1 ? DType::f16 : DType::bf16);
  if (mode.dtype) dtype = *mode.dtype;
  const DType odt = dtype == DType::f64 ? DType::f64 : DType::f32;

  // Plan options and the input's layout.
  const int mem = b.below(32);
  // mem 0: the memory the Kokkos backend cannot reach (plans must fail cleanly or use the CUDA backend).
  if (mem == 0) out.options.memory = kokkos_memory() == Memory::host ? Memory::cuda : Memory::host;
  if (mem == 1) out.options.backend = BackendChoice::cuda;
  if (mem == 2) out.options.backend = BackendChoice::kokkos;
  out.options.precision = b.u8() & 1 ? kfuse::Precision::tf32 : kfuse::Precision::strict;
  out.layout = b.below(5);
  out.inject = b.chance(16);
  if (out.inject) out.special = true;

  const bool conv = b.below(4) != 0;
  Shape in;
  ConvTranspose2dParams prm;
  Shape wshape;
  bool bias = false;
  int64_t bias_extra = 0;
  if (conv) {
    const int64_t groups = b.hostile(1, 3);
    const int64_t cin_g = b.in(1, 3), cout_g = b.chance(32) ? 0 : b.in(1, 3);
    const int64_t cin = b.chance(16) ? b.in(0, 6) : (groups >= 1 && groups <= 3 ? groups : 1) * cin_g;
    const int64_t n = b.chance(8) ? 0 : b.in(1, 3);
    in = {n, cin, b.chance(32) ? 0 : b.in(1, 7), b.chance(32) ? 0 : b.in(1, 7)};
    const int64_t kh = b.chance(32) ? 17 : b.in(b.chance(32) ? 0 : 1, 5), kw = b.in(1, 5);
    wshape = {b.chance(16) ? cin + 1 : cin, cout_g, kh, kw};
    prm.groups = groups;
    for (int a = 0; a < 2; ++a) {
      prm.stride[a] = b.hostile(1, 4);
      prm.padding[a] = b.hostile(0, 3);
      prm.dilation[a] = b.hostile(1, 3);
      prm.output_padding[a] = b.hostile(0, 3);
    }
    bias = b.u8() & 1;
    bias_extra = b.chance(16) ? 1 : 0;
  } else {
    const int rank = b.chance(32) ? (b.u8() & 1 ? 0 : 9) : 1 + b.below(5);
    for (int d = 0; d < rank; ++d) in.push_back(b.chance(10) ? 0 : b.in(1, 5));
  }

  std::ostringstream log;
  log << "dtype " << to_string(dtype) << ", memory " << to_string(out.options.memory) << ", backend "
      << to_string(out.options.backend) << ", layout " << out.layout << (out.inject ? ", NaN/inf in x" : "")
      << "\ninput " << to_string(in);
  if (conv)
    log << "\nconv_transpose2d weight " << to_string(wshape) << (bias ? " with bias" : "") << " stride " << prm.stride[0]
        << "," << prm.stride[1] << " padding " << prm.padding[0] << "," << prm.padding[1] << " output_padding "
        << prm.output_padding[0] << "," << prm.output_padding[1] << " dilation " << prm.dilation[0] << ","
        << prm.dilation[1] << " groups " << prm.groups;
  struct Flush {
    Built& b;
    std::ostringstream& log;
    ~Flush() { b.log = log.str(); }
  } flush{out, log};
  try {
    out.pipeline.emplace(in, dtype);
    Pipeline& p = *out.pipeline;
    out.terms = numel_or_max(in) + 64;
    if (conv) {
      std::optional<Tensor> bt;
      const int64_t cout = wshape[1] * std::max<int64_t>(1, std::min<int64_t>(prm.groups, 3)) + bias_extra;
      if (bias) bt = make_tensor({cout}, odt, vals, -1, 1, 16);
      const Tensor w = make_tensor(wshape, odt, vals, -1, 1, 16);
      out.terms += w.numel();
      p.conv_transpose2d(w, bt, prm);
    }
    for (int n_ops = b.below(9); n_ops > 0; --n_ops) {
      const Shape s = p.output_shape();
      const int rank = static_cast<int>(s.size());
      switch (b.below(6)) {
        case 0:
        case 5: {
          Unary u{static_cast<UnaryKind>(b.below(15))};
          if (u.kind == UnaryKind::leaky_relu) u.a = scalar(b, out);
          if (u.kind == UnaryKind::hardtanh || u.kind == UnaryKind::clamp) {
            u.a = scalar(b, out);
            u.b = scalar(b, out);
          }
          log << "\n" << to_string(u.kind) << "(" << u.a << ", " << u.b << ")";
          p.unary(u);
          break;
        }
        case 1: {
          const BinaryKind k = static_cast<BinaryKind>(b.below(6));
          const double v = scalar(b, out);
          log << "\n" << to_string(k) << "(" << v << ")";
          p.binary(k, v);
          break;
        }
        case 2: {
          const BinaryKind k = static_cast<BinaryKind>(b.below(6));
          const Shape os = operand_shape(b, s);
          Tensor t = make_tensor(os, odt, vals, -2, 2, 8);
          if (b.chance(64) && t.numel() > 0) {  // an inf or NaN in the operand
            out.special = true;
            const double v = b.u8() & 1 ? kNaN : kInf;
            if (odt == DType::f64) t.data<double>()[0] = v;
            else t.data<float>()[0] = static_cast<float>(v);
          }
          log << "\n" << to_string(k) << "(tensor " << to_string(os) << ")";
          p.binary(k, std::move(t));
          break;
        }
        case 3: {
          const ReduceKind k = static_cast<ReduceKind>(b.below(5));
          const std::vector<int> axes = axes_of(b, rank);
          const bool keep = b.u8() & 1;
          log << "\n" << to_string(k) << " axes";
          for (int a : axes) log << " " << a;
          log << (keep ? " keepdim" : "");
          p.reduce(k, axes, keep);
          break;
        }
        default: {
          const std::vector<int> a = axes_of(b, rank);
          log << "\nsoftmax " << (a.empty() ? rank : a[0]);
          p.softmax(a.empty() ? rank : a[0]);
          break;
        }
      }
    }
  } catch (const Error& e) {
    log << "\n-> " << e.what();
    out.pipeline.reset();
  }
  return out;
}

bool plannable(const Pipeline& p) {
  if (numel_or_max(p.input_shape()) > kPlanLimit) return false;
  for (const PipelineStage& s : p.stages())
    if (numel_or_max(s.out_shape) > kPlanLimit) return false;
  return true;
}

bool small_enough(const Pipeline& p) {
  if (numel_or_max(p.input_shape()) > kRunLimit) return false;
  for (const PipelineStage& s : p.stages()) {
    if (numel_or_max(s.out_shape) > kRunLimit) return false;
    if (const auto* c = std::get_if<ConvTranspose2dOp>(&s.op)) {
      const Shape& w = c->weight.shape();
      const double macs = double(numel_or_max(s.out_shape)) * double(w[0] / c->params.groups) * double(w[2]) * double(w[3]);
      if (macs > kMacLimit) return false;
    }
  }
  return true;
}

// The input: logical row-major values in a physical layout (the view's
// strides), slots outside the view holding NaN; `view` is in the Kokkos
// backend's memory.
struct Input {
  std::vector<double> f64;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  Mirror mirror;
  TensorView view;
};

std::vector<double> input_values(const Shape& shape, uint64_t seed, double delta, bool inject, int layout) {
  const int64_t n = numel_or_max(shape);
  Values vals(seed ^ 0x1234567u, delta);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& e : v) e = vals.next(-2, 2, 32);
  if (inject && n > 0) {
    std::mt19937_64 g(seed);
    for (int k = 0; k < 3; ++k) v[g() % n] = k == 0 ? kNaN : (k == 1 ? kInf : -kInf);
  }
  if (layout == 3 && !shape.empty() && shape[0] > 0) {  // broadcast along axis 0: every slice equal
    const int64_t slice = n / shape[0];
    for (int64_t i = 0; i < n; ++i) v[i] = v[i % std::max<int64_t>(slice, 1)];
  }
  return v;
}

Input make_input(const Shape& shape, DType dtype, const std::vector<double>& v, int layout) {
  const int r = static_cast<int>(shape.size());
  Shape st(r, 0);
  int64_t base = 0;
  std::vector<int> perm(r);
  for (int d = 0; d < r; ++d) perm[d] = layout == 4 ? r - 1 - d : d;  // perm[k]: axis stored k-th from the outside
  int64_t s = 1;
  for (int k = r - 1; k >= 0; --k) {
    const int d = perm[k];
    const bool spread = layout == 1 && d == r - 1;
    st[d] = spread ? 2 * s : s;
    s *= std::max<int64_t>(shape[d], 1) * (spread ? 2 : 1);
  }
  if (layout == 2 && r > 0) {  // the last axis reversed: a negative stride
    base = (std::max<int64_t>(shape[r - 1], 1) - 1) * st[r - 1];
    st[r - 1] = -st[r - 1];
  }
  if (layout == 3 && r > 0) st[0] = 0;
  Input in;
  const std::size_t len = static_cast<std::size_t>(s + 1);
  void* buf = nullptr;
  if (dtype == DType::f64) {
    in.f64.assign(len, kNaN);
    buf = in.f64.data();
  } else if (dtype == DType::f32) {
    in.f32.assign(len, std::numeric_limits<float>::quiet_NaN());
    buf = in.f32.data();
  } else {
    in.half.assign(len, 0);
    buf = in.half.data();
  }
  char* base_ptr = static_cast<char*>(buf) + base * static_cast<int64_t>(size_of(dtype));
  if (dtype == DType::f64 || dtype == DType::f32) {
    const Indexer ix = make_indexer(shape, st);
    for (std::size_t i = 0; i < v.size(); ++i) {
      const int64_t off = ix.offset(int64_t(i));
      if (dtype == DType::f64) reinterpret_cast<double*>(base_ptr)[off] = v[i];
      else reinterpret_cast<float*>(base_ptr)[off] = static_cast<float>(v[i]);
    }
  }
  in.mirror = Mirror(buf, static_cast<int64_t>(len), dtype);
  in.view = in.mirror.at(TensorView(base_ptr, dtype, shape, st, Memory::host));
  return in;
}

// The range of the finite, non-zero magnitudes a computation went through.
struct Range {
  double max_finite = 0.0, min_nonzero = kInf;
  void observe(const TensorView& t) {
    for (double v : values_of(t)) {
      const double a = std::fabs(v);
      if (std::isfinite(a)) max_finite = std::max(max_finite, a);
      if (a > 0.0) min_nonzero = std::min(min_nonzero, a);
    }
  }
};

// The values of the pipeline's ops one by one, as the public eager ops (their
// weights and operands copied to x's memory).
std::vector<double> eager(const Pipeline& p, const TensorView& x, Range& range) {
  range.observe(x);
  const auto near_x = [&](const Tensor& t) { return t.memory() == x.memory ? t : Tensor::copy_of(t, x.memory); };
  Tensor cur;
  const TensorView* in = &x;
  for (const PipelineStage& st : p.stages()) {
    Tensor next;
    if (auto* c = std::get_if<ConvTranspose2dOp>(&st.op)) {
      const std::optional<Tensor> bias = c->bias ? std::optional<Tensor>(near_x(*c->bias)) : std::nullopt;
      next = conv_transpose2d(*in, near_x(c->weight), bias ? std::optional<TensorView>(bias->view()) : std::nullopt,
                              c->params);
    } else if (auto* u = std::get_if<UnaryOp>(&st.op)) {
      next = unary(*in, u->op);
    } else if (auto* bo = std::get_if<BinaryOp>(&st.op)) {
      next = bo->operand ? binary(*in, near_x(*bo->operand), bo->kind) : binary(*in, bo->scalar, bo->kind);
    } else if (auto* r = std::get_if<ReduceOp>(&st.op)) {
      next = reduce(*in, r->kind, r->axes, r->keepdim);
    } else {
      next = softmax(*in, std::get<SoftmaxOp>(st.op).axis);
    }
    cur = std::move(next);
    in = &cur.view();
    range.observe(cur);
  }
  return values_of(*in);
}

// An output for `plan` in its memory, every element `v`.
Tensor poisoned(const Plan& plan, double v) {
  Tensor t = Tensor::empty(plan.output_shape(), plan.dtype(), Memory::host);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::f64) t.data<double>()[i] = v;
    else t.data<float>()[i] = static_cast<float>(v);
  }
  return plan.memory() == Memory::host ? t : Tensor::copy_of(t, plan.memory());
}

// Runs `plan` twice into outputs poisoned differently: every element must be written.
std::string run_checked(const Plan& plan, const TensorView& x, std::vector<double>& result, const char* what) {
  const Tensor a = poisoned(plan, kNaN), b = poisoned(plan, 12345.0);
  plan.run(x, a.view());
  plan.run(x, b.view());
  result = values_of(a.view());
  const std::vector<double> second = values_of(b.view());
  for (std::size_t i = 0; i < result.size(); ++i)
    if (!same(result[i], second[i])) {
      std::ostringstream os;
      os << what << ": output element " << i << " differs between two runs (" << result[i] << " vs " << second[i]
         << "): not every element is written, or the run is not deterministic";
      return os.str();
    }
  return "";
}

int kind_of(double v) { return v != v ? 3 : v == kInf ? 1 : v == -kInf ? 2 : 0; }

std::string compare(const char* what, const std::vector<double>& out, const std::vector<double>& ref,
                    const std::vector<double>& r64, const std::vector<double>& p64, DType dtype, int64_t terms) {
  const double u = dtype == DType::f64 ? 0x1p-53 : 0x1p-24;
  const double K = double(terms);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double o = out[i], r = ref[i];
    if (kind_of(r64[i]) != kind_of(p64[i])) continue;   // on a discontinuity
    if (kind_of(r) != kind_of(r64[i])) continue;        // f32 itself differs from f64 here
    std::ostringstream os;
    os.precision(17);
    if (kind_of(r) != 0) {
      if (kind_of(o) != kind_of(r)) {
        os << what << ": element " << i << " is " << o << ", the reference strategy gives " << r;
        return os.str();
      }
      continue;
    }
    const double sens = std::fabs(p64[i] - r64[i]) / kDelta;
    if (K * u * sens > 1e-3 * (1.0 + std::fabs(r))) continue;  // too ill-conditioned to say
    const double bound = 64.0 * K * u * sens + 64.0 * u * (1.0 + std::fabs(r));
    if (kind_of(o) != 0 || std::fabs(o - r) > bound) {
      os << what << ": element " << i << " is " << o << ", the reference strategy gives " << r << " (allowed error "
         << bound << ", float64 " << r64[i] << ", perturbed " << p64[i] << ")";
      return os.str();
    }
  }
  return "";
}

std::string check_built(const Built& b, const uint8_t* data, std::size_t size);

std::string check_impl(const uint8_t* data, std::size_t size) {
  const Built b = build(data, size, {});
  static const bool debug = std::getenv("KFUSE_FUZZ_DEBUG") != nullptr;
  if (debug) std::fprintf(stderr, "---\n%s\n", b.log.c_str());
  std::string bug;
  try {
    bug = check_built(b, data, size);
  } catch (...) {
    std::fprintf(stderr, "the pipeline:\n%s\n", b.log.c_str());
    throw;
  }
  if (!bug.empty()) bug += "\nthe pipeline:\n" + b.log;
  return bug;
}

std::string check_built(const Built& b, const uint8_t* data, std::size_t size) {
  if (!b.pipeline) {
    ++stats().clean_errors;
    return "";
  }
  const Pipeline& p = *b.pipeline;
  if (!plannable(p)) return "";
  // The Kokkos backend's memory, float32/float64: the Kokkos backend runs every
  // step, so a valid pipeline must plan (float16/bfloat16 may fail cleanly).
  const bool kokkos_runs = b.options.memory == kokkos_memory() && b.options.backend != BackendChoice::cuda &&
                           (p.dtype() == DType::f32 || p.dtype() == DType::f64);

  std::map<Strategy, std::optional<Plan>> plans;
  for (Strategy s : {Strategy::automatic, Strategy::fold, Strategy::fused, Strategy::reference}) {
    PlanOptions o = b.options;
    o.strategy = s;
    try {
      plans[s].emplace(p, o);
    } catch (const Error& e) {
      // (backend: the memory cannot hold what the plan needs, e.g. 2^40 channels)
      if (kokkos_runs && (s == Strategy::automatic || s == Strategy::reference) && e.category() != ErrorCategory::backend)
        return std::string("a valid pipeline has no ") + to_string(s) + " plan: " + e.what();
    }
  }
  if (!plans[Strategy::automatic]) {
    ++stats().clean_errors;
    return "";
  }
  ++stats().plans;
  const Plan& automatic = *plans[Strategy::automatic];
  if (automatic.output_shape() != p.output_shape()) return "the plan's output shape differs from the pipeline's";
  if (automatic.describe().empty()) return "describe() is empty";
  const Strategy expect = plans[Strategy::fold] ? Strategy::fold : plans[Strategy::fused] ? Strategy::fused : Strategy::reference;
  if (automatic.strategy() != expect)
    return std::string("automatic chose ") + to_string(automatic.strategy()) + " but " + to_string(expect) + " applies";
  if (!small_enough(p)) return "";

  const std::vector<double> xv = input_values(p.input_shape(), b.seed, 0.0, b.inject, b.layout);
  const Input x = make_input(p.input_shape(), p.dtype(), xv, b.layout);
  if (!kokkos_runs) {  // must fail cleanly (or run)
    try {
      automatic.run(x.view);
    } catch (const Error&) {
      ++stats().clean_errors;
    }
    return "";
  }

  // The reference strategy: written everywhere, and equal to the eager ops.
  std::vector<double> ref;
  Range range;
  if (std::string e = run_checked(*plans[Strategy::reference], x.view, ref, "reference"); !e.empty()) return e;
  const std::vector<double> eag = eager(p, x.view, range);
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (!same(ref[i], eag[i])) return "the reference strategy differs from the eager ops at element " + std::to_string(i);
  ++stats().runs;

  // Float64 conditioning runs, unperturbed and perturbed.
  std::vector<double> r64, p64;
  Range range64;
  for (double delta : {0.0, kDelta}) {
    Built b64 = build(data, size, Mode{DType::f64, delta});
    if (!b64.pipeline) return "the float64 variant of a valid pipeline does not build";
    const std::vector<double> v64 = input_values(p.input_shape(), b.seed, delta, b.inject, b.layout);
    const Input x64 = make_input(p.input_shape(), DType::f64, v64, b.layout);
    Range rg;
    (delta == 0.0 ? r64 : p64) = eager(*b64.pipeline, x64.view, delta == 0.0 ? range64 : rg);
  }
  const double hi = p.dtype() == DType::f64 ? 1e300 : 1e30, lo = p.dtype() == DType::f64 ? 1e-300 : 1e-30;
  const bool compare_values = !b.special && range.max_finite <= hi && range64.max_finite <= hi &&
                              range.min_nonzero >= lo && range64.min_nonzero >= lo;

  for (Strategy s : {Strategy::fold, Strategy::fused, Strategy::automatic}) {
    if (!plans[s]) continue;
    std::vector<double> out;
    if (std::string e = run_checked(*plans[s], x.view, out, to_string(s)); !e.empty()) return e;
    if (s == Strategy::automatic) {
      const std::vector<double> again = values_of(plans[s]->run(x.view).view());
      for (std::size_t i = 0; i < out.size(); ++i)
        if (!same(out[i], again[i])) return "Plan::run(x) differs from Plan::run(x, out)";
    }
    if (compare_values) {
      if (std::string e = compare(to_string(s), out, ref, r64, p64, p.dtype(), b.terms); !e.empty())
        return e + "\n" + plans[s]->describe();
      ++stats().compared;
    }
  }
  return "";
}

}  // namespace

std::string check_pipeline(const uint8_t* data, std::size_t size) {
  ++stats().inputs;
  return guarded([&] { return check_impl(data, size); });
}

}  // namespace kfuse_fuzz
