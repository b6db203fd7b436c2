// Check and benchmark driver of the implicit-GEMM conv_transpose2d
// (backends/cuda/convt_igemm.cuh), linked with libkfuse (the kernel, and NVRTC
// for its chains):
//
//   igemm_bench check [geometries] [seed]   random geometries x every precision
//                                            x {no chain, mish->+0.5->hardtanh(-1,1)->x2}
//                                            (chains compiled as plans compile them,
//                                            unless KFUSE_CUDA_JIT=0)
//   igemm_bench small                        a few small cases (for compute-sanitizer)
//   igemm_bench bench                        the DESIGN.md section 11 example, timed
//
// Reference: a direct gather kernel in float64 on the GPU over the same
// (possibly half-precision) inputs, then the chain through detail::apply_chain
// on PointOp<double> (the shared op definitions). Error metric (stated in the
// output): max|y - ref| / max|ref| over every checked element ("maxrel"), and
// the norm-relative ||y - ref|| / ||ref|| beside it. The output is poisoned
// with NaN (0xFF bytes) before each run: any element not written fails.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/convt_igemm.cuh"
#include "backends/cuda/device.cuh"

using namespace kfuse;
using namespace kfuse::detail;
using namespace kfuse::detail::cuda;

#define CK(call)                                                                                       \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));       \
      std::exit(2);                                                                                    \
    }                                                                                                  \
  } while (0)

// ---- Random fill (counter-based, on the device) ------------------------------------
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
template <class T>
__global__ void fill_uniform(T* p, int64_t n, float lo, float hi, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double u = double(mix64(seed * 0x100000001B3ull + uint64_t(i)) >> 11) * (1.0 / 9007199254740992.0);
    p[i] = to_elem<T>(float(lo + (hi - lo) * u));
  }
}
template <class T>
void fill(T* p, int64_t n, float lo, float hi, uint64_t seed) {
  fill_uniform<T><<<1024, 256>>>(p, n, lo, hi, seed);
  CK(cudaGetLastError());
}

// ---- float64 reference ---------------------------------------------------------------
struct RefGeom {
  int N, Cin, H, W, Cout, kH, kW, sh, sw, ph, pw, dh, dw, G, Hout, Wout;
};

// conv_transpose2d's output (n, co, oh, ow) in float64, written out plainly
// (its own gather, independent of the library's).
template <class T>
__device__ double ref_conv(const RefGeom& q, const T* x, const T* w, const T* bias, int n, int co, int oh, int ow) {
  const int cin_g = q.Cin / q.G, cout_g = q.Cout / q.G;
  const int g = co / cout_g, col = co % cout_g;
  double acc = bias ? double(to_acc<float>(bias[co])) : 0.0;
  for (int ci = 0; ci < cin_g; ++ci) {
    const int cg = g * cin_g + ci;
    for (int kh = 0; kh < q.kH; ++kh) {
      const int th = oh + q.ph - kh * q.dh;
      if (th < 0 || th % q.sh) continue;
      const int ih = th / q.sh;
      if (ih >= q.H) continue;
      for (int kw = 0; kw < q.kW; ++kw) {
        const int tw = ow + q.pw - kw * q.dw;
        if (tw < 0 || tw % q.sw) continue;
        const int iw = tw / q.sw;
        if (iw >= q.W) continue;
        acc += double(to_acc<float>(x[((int64_t(n) * q.Cin + cg) * q.H + ih) * q.W + iw])) *
               double(to_acc<float>(w[((int64_t(cg) * cout_g + col) * q.kH + kh) * q.kW + kw]));
      }
    }
  }
  return acc;
}
template <class T>
__global__ void ref_kernel(RefGeom q, const T* x, const T* w, const T* bias, const PointOp<double>* chain,
                           int chain_len, int64_t count, int64_t step, double* ref) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k * step;
    int64_t r = e;
    const int ow = int(r % q.Wout);
    r /= q.Wout;
    const int oh = int(r % q.Hout);
    r /= q.Hout;
    const int co = int(r % q.Cout);
    const int n = int(r / q.Cout);
    const double acc = ref_conv(q, x, w, bias, n, co, oh, ow);
    ref[k] = apply_chain(chain, chain_len, acc, int64_t(n) * q.Cout + co, int64_t(oh) * q.Wout + ow);  // the kernel's (i, j)
  }
}

// Reductions over C (groups == 1, Cout <= 64): one output pixel per thread.
// mode 1: y[n, 0, oh, ow] = post(reduce_c(chain(conv + bias))); mode 2: softmax over C then post.
// Output element k of the reference = flat index k * step of y.
template <class T>
__global__ void ref_reduce_kernel(RefGeom q, const T* x, const T* w, const T* bias, const PointOp<double>* chain,
                                  int chain_len, int mode, ReduceKind kind, const PointOp<double>* post,
                                  int post_len, int64_t count, int64_t step, double* ref) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k * step;
    int64_t r = e;
    const int ow = int(r % q.Wout);
    r /= q.Wout;
    const int oh = int(r % q.Hout);
    r /= q.Hout;
    int co_out = 0;
    if (mode == 2) {
      co_out = int(r % q.Cout);
      r /= q.Cout;
    }
    const int n = int(r);
    double vals[64];
    const ReduceKind kk = mode == 2 ? ReduceKind::logsumexp : kind;
    ReduceAcc<double> acc = reduce_init<double>(kk);
    for (int co = 0; co < q.Cout; ++co) {
      double a = ref_conv(q, x, w, bias, n, co, oh, ow);
      a = apply_chain(chain, chain_len, a, int64_t(n) * q.Cout + co, int64_t(oh) * q.Wout + ow);
      vals[co] = a;
      reduce_push(kk, acc, a);
    }
    double out;
    if (mode == 1) {
      out = reduce_finish(kk, acc, int64_t(q.Cout));
    } else {
      out = softmax_value(acc, vals[co_out]);
    }
    ref[k] = apply_chain(post, post_len, out, int64_t(n) * (mode == 2 ? q.Cout : 1) + co_out,
                         int64_t(oh) * q.Wout + ow);
  }
}

struct ErrAcc {
  unsigned long long max_err_bits, max_ref_bits;
  double sum_err2, sum_ref2;
  unsigned long long bad;  // NaN / inf outputs (unwritten: poisoned NaN)
};
template <class T>
__global__ void compare_kernel(const T* y, const double* ref, int64_t count, int64_t step, ErrAcc* out) {
  double me = 0, mr = 0, se = 0, sr = 0;
  unsigned long long bad = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count; k += int64_t(gridDim.x) * blockDim.x) {
    const double v = double(to_acc<float>(y[k * step])), rf = ref[k];
    if (!isfinite(v)) {
      ++bad;
      continue;
    }
    const double d = fabs(v - rf);
    me = fmax(me, d);
    mr = fmax(mr, fabs(rf));
    se += d * d;
    sr += rf * rf;
  }
  atomicMax(&out->max_err_bits, (unsigned long long)__double_as_longlong(me));
  atomicMax(&out->max_ref_bits, (unsigned long long)__double_as_longlong(mr));
  atomicAdd(&out->sum_err2, se);
  atomicAdd(&out->sum_ref2, sr);
  atomicAdd(&out->bad, bad);
}
__global__ void count_diff(const uint32_t* a, const uint32_t* b, int64_t n, unsigned long long* out) {
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    c += a[i] != b[i];
  atomicAdd(out, c);
}

// ---- Chains --------------------------------------------------------------------------
struct OpSpec {
  bool unary;
  UnaryKind u;
  BinaryKind b;
  double a, c;  // unary params, or the scalar in a
};
template <class A>
std::vector<PointOp<A>> build_chain(const std::vector<OpSpec>& specs) {
  std::vector<PointOp<A>> ops;
  for (const OpSpec& s : specs) {
    PointOp<A> op{};
    if (s.unary) {
      op.kind = PointKind::unary;
      op.unary.kind = s.u;
      op.unary.a = s.a;
      op.unary.b = s.c;
    } else {
      op.kind = PointKind::scalar;
      op.binary = s.b;
      op.scalar = A(s.a);
    }
    op.operand = nullptr;
    ops.push_back(op);
  }
  return ops;
}
std::vector<OpSpec> light_chain() {  // relu -> +0.5 -> hardtanh(-1, 1) -> x2: the chain without its heavy op
  return {{true, UnaryKind::relu, BinaryKind::add, 0, 0},
          {false, UnaryKind::relu, BinaryKind::add, 0.5, 0},
          {true, UnaryKind::hardtanh, BinaryKind::add, -1.0, 1.0},
          {false, UnaryKind::relu, BinaryKind::mul, 2.0, 0}};
}
// Every unary kind and every scalar op once (checks the epilogue dispatch).
std::vector<OpSpec> every_op_chain() {
  return {{true, UnaryKind::gelu, BinaryKind::add, 0, 0},      {false, UnaryKind::relu, BinaryKind::sub, 0.25, 0},
          {true, UnaryKind::silu, BinaryKind::add, 0, 0},      {true, UnaryKind::leaky_relu, BinaryKind::add, 0.1, 0},
          {true, UnaryKind::gelu_tanh, BinaryKind::add, 0, 0}, {false, UnaryKind::relu, BinaryKind::div, 1.5, 0},
          {true, UnaryKind::sigmoid, BinaryKind::add, 0, 0},   {false, UnaryKind::relu, BinaryKind::max, 0.2, 0},
          {true, UnaryKind::hardswish, BinaryKind::add, 0, 0}, {false, UnaryKind::relu, BinaryKind::min, 0.9, 0},
          {true, UnaryKind::clamp, BinaryKind::add, -0.5, 0.8}, {true, UnaryKind::exp, BinaryKind::add, 0, 0},
          {true, UnaryKind::log, BinaryKind::add, 0, 0},       {true, UnaryKind::tanh, BinaryKind::add, 0, 0},
          {true, UnaryKind::neg, BinaryKind::add, 0, 0},       {true, UnaryKind::abs, BinaryKind::add, 0, 0},
          {true, UnaryKind::relu, BinaryKind::add, 0, 0},      {true, UnaryKind::mish, BinaryKind::add, 0, 0},
          {true, UnaryKind::hardtanh, BinaryKind::add, -1, 1}, {false, UnaryKind::relu, BinaryKind::mul, 2.0, 0}};
}
std::vector<OpSpec> design_chain() {  // mish -> +0.5 -> hardtanh(-1, 1) -> x2
  return {{true, UnaryKind::mish, BinaryKind::add, 0, 0},
          {false, UnaryKind::relu, BinaryKind::add, 0.5, 0},
          {true, UnaryKind::hardtanh, BinaryKind::add, -1.0, 1.0},
          {false, UnaryKind::relu, BinaryKind::mul, 2.0, 0}};
}
template <class A>
PointOp<A>* upload(const std::vector<PointOp<A>>& ops) {
  if (ops.empty()) return nullptr;
  PointOp<A>* d = nullptr;
  CK(cudaMalloc(&d, ops.size() * sizeof(PointOp<A>)));
  CK(cudaMemcpy(d, ops.data(), ops.size() * sizeof(PointOp<A>), cudaMemcpyHostToDevice));
  return d;
}
// A map epilogue: the chain of `n` ops at `ops` (device memory).
IgemmEpilogue map_epilogue(const PointOp<float>* ops, int n) {
  IgemmEpilogue ep;
  ep.body = Chain<float>{ops, n};
  return ep;
}

// ---- One check -------------------------------------------------------------------------
double tolerance(IgemmPrecision p) {
  switch (p) {
    case IgemmPrecision::tf32: return 5e-3;
    case IgemmPrecision::tf32x3: return 1e-5;
    default: return 2e-2;
  }
}

struct CheckResult {
  double maxrel, normrel;
  unsigned long long bad;
  bool ok;
};

std::vector<OpSpec> chain_specs(int which) {
  switch (which) {
    case 1: return design_chain();
    case 2: return light_chain();
    case 3: return every_op_chain();
    default: return {};
  }
}
const char* chain_name(int which) {
  static const char* names[] = {"none", "mish->+0.5->hardtanh->x2", "relu->+0.5->hardtanh->x2", "every op"};
  return names[which & 3];
}

// y against the float64 reference values (every sample_step-th element):
// the worst and the norm-wise relative error, the elements left unwritten.
template <class T>
CheckResult compare_to_reference(const T* y, const double* ref, int64_t count, int64_t sample_step, IgemmPrecision prec) {
  ErrAcc* acc;
  CK(cudaMalloc(&acc, sizeof(ErrAcc)));
  CK(cudaMemset(acc, 0, sizeof(ErrAcc)));
  compare_kernel<T><<<1024, 256>>>(y, ref, count, sample_step, acc);
  CK(cudaGetLastError());
  ErrAcc h;
  CK(cudaMemcpy(&h, acc, sizeof(ErrAcc), cudaMemcpyDeviceToHost));
  CK(cudaFree(acc));
  double me, mr;
  std::memcpy(&me, &h.max_err_bits, 8);
  std::memcpy(&mr, &h.max_ref_bits, 8);
  CheckResult r;
  r.maxrel = me / std::max(mr, 1e-30);
  r.normrel = std::sqrt(h.sum_err2 / std::max(h.sum_ref2, 1e-300));
  r.bad = h.bad;
  r.ok = h.bad == 0 && r.maxrel <= tolerance(prec);
  return r;
}

template <class T>
// x_shift: x starts that many elements into its allocation (1: not 16-byte
// aligned, so the kernel cannot map it for the TMA).
CheckResult check_case(const IgemmProblem& pb, IgemmPrecision prec, bool with_bias, int with_chain, uint64_t seed,
                       int64_t sample_step, std::string* desc, int x_shift = 0) {
  const IgemmProblem q = igemm_normalized(pb);
  const int64_t cout_g = q.Cout / q.groups;
  const int64_t nx = q.N * q.Cin * q.H * q.W, nw = q.Cin * cout_g * q.kH * q.kW,
                ny = q.N * q.Cout * q.Hout * q.Wout;
  T *xa, *w, *b = nullptr, *y;
  CK(cudaMalloc(&xa, (nx + x_shift) * sizeof(T)));
  CK(cudaMalloc(&w, nw * sizeof(T)));
  CK(cudaMalloc(&y, ny * sizeof(T)));
  T* x = xa + x_shift;
  fill(x, nx, 0.f, 1.f, seed * 3 + 1);
  const float bound = 1.0f / std::sqrt(float(cout_g * q.kH * q.kW));  // PyTorch's default init for ConvTranspose2d
  fill(w, nw, -bound, bound, seed * 3 + 2);
  if (with_bias) {
    CK(cudaMalloc(&b, q.Cout * sizeof(T)));
    fill(b, q.Cout, -bound, bound, seed * 3 + 3);
  }
  const auto specs = chain_specs(with_chain);
  PointOp<float>* chf = upload(build_chain<float>(specs));
  PointOp<double>* chd = upload(build_chain<double>(specs));
  const int chain_len = int(specs.size());

  IgemmConv conv(q, prec, w, b, map_epilogue(chf, chain_len));
  if (desc) *desc = conv.describe();
  CK(cudaMemset(y, 0xFF, ny * sizeof(T)));  // NaN in every type
  conv.run(x, y, 0);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  const int64_t count = (ny + sample_step - 1) / sample_step;
  double* ref;
  CK(cudaMalloc(&ref, count * sizeof(double)));
  RefGeom g{int(q.N), int(q.Cin), int(q.H), int(q.W), int(q.Cout), int(q.kH), int(q.kW),
            int(q.stride[0]), int(q.stride[1]), int(q.padding[0]), int(q.padding[1]), int(q.dilation[0]),
            int(q.dilation[1]), int(q.groups), int(q.Hout), int(q.Wout)};
  ref_kernel<T><<<2048, 128>>>(g, x, w, b, chd, chain_len, count, sample_step, ref);
  CK(cudaGetLastError());
  const CheckResult r = compare_to_reference(y, ref, count, sample_step, prec);
  for (void* p : {(void*)xa, (void*)w, (void*)b, (void*)y, (void*)ref, (void*)chf, (void*)chd})
    if (p) CK(cudaFree(p));
  return r;
}

// A reduction over C (mode 1, `kind`) or softmax over C (mode 2), pre-chain
// `chain` and post ops `post` (chain_specs indices).
template <class T>
CheckResult check_reduce_case(const IgemmProblem& pb, IgemmPrecision prec, int mode, ReduceKind kind, int chain,
                              int post, uint64_t seed, int64_t sample_step, std::string* desc) {
  const IgemmProblem q = igemm_normalized(pb);
  const int64_t nx = q.N * q.Cin * q.H * q.W, nw = q.Cin * q.Cout * q.kH * q.kW;
  const int64_t ny = mode == 2 ? q.N * q.Cout * q.Hout * q.Wout : q.N * q.Hout * q.Wout;
  T *x, *w, *b, *y;
  CK(cudaMalloc(&x, nx * sizeof(T)));
  CK(cudaMalloc(&w, nw * sizeof(T)));
  CK(cudaMalloc(&b, q.Cout * sizeof(T)));
  CK(cudaMalloc(&y, ny * sizeof(T)));
  fill(x, nx, 0.f, 1.f, seed * 3 + 1);
  const float bound = 1.0f / std::sqrt(float(q.Cout * q.kH * q.kW));
  fill(w, nw, -bound, bound, seed * 3 + 2);
  fill(b, q.Cout, -bound, bound, seed * 3 + 3);
  const auto specs = chain_specs(chain), pspecs = chain_specs(post);
  PointOp<float>* chf = upload(build_chain<float>(specs));
  PointOp<double>* chd = upload(build_chain<double>(specs));
  PointOp<float>* pf = upload(build_chain<float>(pspecs));
  PointOp<double>* pd = upload(build_chain<double>(pspecs));
  IgemmEpilogue ep = map_epilogue(chf, int(specs.size()));
  ep.mode = mode;
  ep.kind = kind;
  ep.after = Chain<float>{pf, int(pspecs.size())};
  IgemmConv conv(q, prec, w, b, ep);
  if (desc) *desc = conv.describe();
  CK(cudaMemset(y, 0xFF, ny * sizeof(T)));
  conv.run(x, y, 0);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  const int64_t count = (ny + sample_step - 1) / sample_step;
  double* ref;
  CK(cudaMalloc(&ref, count * sizeof(double)));
  RefGeom g{int(q.N), int(q.Cin), int(q.H), int(q.W), int(q.Cout), int(q.kH), int(q.kW),
            int(q.stride[0]), int(q.stride[1]), int(q.padding[0]), int(q.padding[1]), int(q.dilation[0]),
            int(q.dilation[1]), int(q.groups), int(q.Hout), int(q.Wout)};
  ref_reduce_kernel<T><<<1024, 64>>>(g, x, w, b, chd, int(specs.size()), mode, kind, pd, int(pspecs.size()), count,
                                     sample_step, ref);
  CK(cudaGetLastError());
  const CheckResult r = compare_to_reference(y, ref, count, sample_step, prec);
  for (void* p : {(void*)x, (void*)w, (void*)b, (void*)y, (void*)ref, (void*)chf, (void*)chd, (void*)pf,
                  (void*)pd})
    if (p) CK(cudaFree(p));
  return r;
}

CheckResult check_reduce_any(const IgemmProblem& pb, IgemmPrecision prec, int mode, ReduceKind kind, int chain,
                             int post, uint64_t seed, int64_t step, std::string* desc) {
  switch (prec) {
    case IgemmPrecision::bf16:
      return check_reduce_case<__nv_bfloat16>(pb, prec, mode, kind, chain, post, seed, step, desc);
    case IgemmPrecision::f16: return check_reduce_case<__half>(pb, prec, mode, kind, chain, post, seed, step, desc);
    default: return check_reduce_case<float>(pb, prec, mode, kind, chain, post, seed, step, desc);
  }
}

const char* reduce_name(int mode, ReduceKind k) {
  if (mode == 2) return "softmax";
  switch (k) {
    case ReduceKind::sum: return "sum";
    case ReduceKind::mean: return "mean";
    case ReduceKind::max: return "max";
    case ReduceKind::min: return "min";
    case ReduceKind::logsumexp: return "logsumexp";
  }
  return "?";
}

CheckResult check_any(const IgemmProblem& pb, IgemmPrecision prec, bool bias, int chain, uint64_t seed,
                      int64_t step, std::string* desc, int x_shift = 0) {
  switch (prec) {
    case IgemmPrecision::bf16: return check_case<__nv_bfloat16>(pb, prec, bias, chain, seed, step, desc, x_shift);
    case IgemmPrecision::f16: return check_case<__half>(pb, prec, bias, chain, seed, step, desc, x_shift);
    default: return check_case<float>(pb, prec, bias, chain, seed, step, desc, x_shift);
  }
}

std::string geom_str(const IgemmProblem& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "N%lld Cin%lld Cout%lld H%lld W%lld k%lldx%lld s%lld,%lld p%lld,%lld op%lld,%lld d%lld,%lld G%lld",
                (long long)p.N, (long long)p.Cin, (long long)p.Cout, (long long)p.H, (long long)p.W,
                (long long)p.kH, (long long)p.kW, (long long)p.stride[0], (long long)p.stride[1],
                (long long)p.padding[0], (long long)p.padding[1], (long long)p.output_padding[0],
                (long long)p.output_padding[1], (long long)p.dilation[0], (long long)p.dilation[1],
                (long long)p.groups);
  return buf;
}

IgemmProblem random_problem(std::mt19937_64& rng) {
  auto uni = [&](int lo, int hi) { return int(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  for (;;) {
    IgemmProblem p;
    p.groups = uni(1, 2);
    p.N = uni(1, 3);
    p.Cin = p.groups * uni(1, 40);
    p.Cout = p.groups * uni(1, 80);
    const int sz = uni(0, 9);
    if (sz < 5) {
      p.H = uni(1, 23);
      p.W = uni(1, 23);
    } else if (sz < 8) {
      p.H = uni(3, 30);
      p.W = uni(24, 80);
    } else {
      p.H = uni(1, 9);
      p.W = uni(100, 300);
    }
    const bool square = uni(0, 1);
    for (int ax = 0; ax < 2; ++ax) {
      const int s = uni(0, 9) == 0 ? 4 : uni(1, 3);
      const int k = uni(1, 5);
      const int d = uni(1, 2);
      p.stride[ax] = s;
      p.dilation[ax] = d;
      p.padding[ax] = uni(0, d * (k - 1));
      p.output_padding[ax] = uni(0, std::max(s, d) - 1);
      if (ax == 0) p.kH = k;
      else p.kW = k;
    }
    if (square) {
      p.kW = p.kH;
      p.stride[1] = p.stride[0];
      p.padding[1] = p.padding[0];
      p.output_padding[1] = p.output_padding[0];
      p.dilation[1] = p.dilation[0];
    }
    p.Hout = p.Wout = 0;
    const IgemmProblem q = igemm_normalized(p);
    if (q.Hout < 1 || q.Wout < 1) continue;
    return p;
  }
}

const IgemmPrecision kAll[] = {IgemmPrecision::tf32, IgemmPrecision::tf32x3, IgemmPrecision::bf16,
                               IgemmPrecision::f16};

int run_checks(int geometries, uint64_t seed, bool verbose) {
  std::mt19937_64 rng(seed);
  int fails = 0, runs = 0, skipped = 0;
  double worst[4] = {0, 0, 0, 0};
  for (int gi = 0; gi < geometries; ++gi) {
    const IgemmProblem p = random_problem(rng);
    for (int pi = 0; pi < 4; ++pi) {
      const IgemmPrecision prec = kAll[pi];
      const std::string why = igemm_why_not(p, prec);
      if (!why.empty()) {
        ++skipped;
        std::printf("SKIP %-6s %s: %s\n", to_string(prec), geom_str(p).c_str(), why.c_str());
        continue;
      }
      const int chain = (gi + pi) % 3 == 0 ? 0 : ((gi + pi) % 3 == 1 ? 1 : 3);
      const bool bias = gi % 5 != 4;
      std::string desc;
      const CheckResult r = check_any(p, prec, bias, chain, seed * 1000 + gi * 4 + pi, 1, &desc);
      ++runs;
      worst[pi] = std::max(worst[pi], r.maxrel);
      if (!r.ok) ++fails;
      if (!r.ok || verbose)
        std::printf("%s %-6s %s bias%d chain%d: maxrel %.3e normrel %.3e unwritten/nonfinite %llu  [%s]\n",
                    r.ok ? "ok  " : "FAIL", to_string(prec), geom_str(p).c_str(), int(bias), chain_name(chain), r.maxrel,
                    r.normrel, r.bad, desc.c_str());
    }
  }
  // Reductions / softmax over C completed in the tile: groups 1, Cout <= 64.
  int rruns = 0, rfails = 0;
  double rworst[4] = {0, 0, 0, 0};
  for (int gi = 0; gi < geometries / 2; ++gi) {
    IgemmProblem p = random_problem(rng);
    p.groups = 1;
    p.Cout = 1 + int(rng() % 64);
    p.Cin = 1 + int(rng() % 40);
    p.H = std::min<int64_t>(p.H, 24);
    p.W = std::min<int64_t>(p.W, 140);
    for (int pi = 0; pi < 4; ++pi) {
      const IgemmPrecision prec = kAll[pi];
      if (!igemm_why_not_softmax_c(p, prec).empty()) continue;  // the tile holds every channel
      const int sel = (gi * 4 + pi) % 6;
      const int mode = sel == 5 ? 2 : 1;
      const ReduceKind kind = ReduceKind(sel < 5 ? sel : 0);
      const int chain = (gi + pi) % 3 == 0 ? 1 : 0, post = (gi + pi) % 2 == 0 ? 2 : 0;
      std::string desc;
      const CheckResult r = check_reduce_any(p, prec, mode, kind, chain, post, seed * 7 + gi * 4 + pi, 1, &desc);
      ++rruns;
      rworst[pi] = std::max(rworst[pi], r.maxrel);
      if (!r.ok) ++rfails;
      if (!r.ok || verbose)
        std::printf("%s %-6s %s %s chain %s post %s: maxrel %.3e normrel %.3e unwritten/nonfinite %llu  [%s]\n",
                    r.ok ? "ok  " : "FAIL", to_string(prec), geom_str(p).c_str(), reduce_name(mode, kind),
                    chain_name(chain), chain_name(post), r.maxrel, r.normrel, r.bad, desc.c_str());
    }
  }
  std::printf("reduce-over-C checks: %d runs, %d failed; worst maxrel: tf32 %.3e tf32x3 %.3e bf16 %.3e f16 %.3e\n",
              rruns, rfails, rworst[0], rworst[1], rworst[2], rworst[3]);
  fails += rfails;
  std::printf("checks: %d runs, %d failed, %d skipped; worst maxrel (max|y-ref|/max|ref|): tf32 %.3e (tol 5e-3), "
              "tf32x3 %.3e (tol 1e-5), bf16 %.3e (tol 2e-2), f16 %.3e (tol 2e-2)\n",
              runs, fails, skipped, worst[0], worst[1], worst[2], worst[3]);
  return fails;
}

IgemmProblem design_problem();

// ---- Benchmark --------------------------------------------------------------------------
// `reps` timed runs of `run` (CUDA events on the default stream), each after
// a 256 MB write that evicts the L2; sorted, fastest first.
template <class F>
std::vector<float> timed_runs(int reps, const F& run) {
  void* flush;
  const size_t flush_bytes = size_t(256) << 20;
  CK(cudaMalloc(&flush, flush_bytes));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    CK(cudaMemsetAsync(flush, r & 0xFF, flush_bytes, 0));
    CK(cudaEventRecord(e0, 0));
    run();
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CK(cudaGetLastError());
  CK(cudaFree(flush));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  std::sort(ms.begin(), ms.end());
  return ms;
}

template <class T>
void bench_reduce(const IgemmProblem& q, IgemmPrecision prec, int mode, ReduceKind kind, double flop,
                  double peak_tflops, double bw, int reps) {
  const int64_t nx = q.N * q.Cin * q.H * q.W, nw = q.Cin * q.Cout * q.kH * q.kW;
  const int64_t ny = mode == 2 ? q.N * q.Cout * q.Hout * q.Wout : q.N * q.Hout * q.Wout;
  T *x, *w, *b, *y;
  CK(cudaMalloc(&x, nx * sizeof(T)));
  CK(cudaMalloc(&w, nw * sizeof(T)));
  CK(cudaMalloc(&b, q.Cout * sizeof(T)));
  CK(cudaMalloc(&y, ny * sizeof(T)));
  fill(x, nx, 0.f, 1.f, 11);
  const float bound = 1.0f / std::sqrt(float(q.Cout * q.kH * q.kW));
  fill(w, nw, -bound, bound, 12);
  fill(b, q.Cout, -bound, bound, 13);
  IgemmEpilogue ep;
  ep.mode = mode;
  ep.kind = kind;
  IgemmConv conv(q, prec, w, b, ep);
  conv.run(x, y, 0);
  CK(cudaDeviceSynchronize());
  const std::vector<float> ms = timed_runs(reps, [&] { conv.run(x, y, 0); });
  const double med = ms[ms.size() / 2];
  const double bytes = double(nx + ny) * sizeof(T);
  const double floor_b = bytes / bw * 1e3, floor_c = flop / (peak_tflops * 1e12) * 1e3;
  std::printf("BENCH %-6s %-9s over C (y %lld elements): median %.3f ms (min %.3f, max %.3f)  %.1f TFLOPS  floors: bytes "
              "%.3f ms, compute %.3f ms -> %.2fx max floor\n",
              to_string(prec), reduce_name(mode, kind), (long long)ny, med, ms.front(), ms.back(),
              flop / (med * 1e-3) / 1e12, floor_b, floor_c, med / std::max(floor_b, floor_c));
  for (void* p : {(void*)x, (void*)w, (void*)b, (void*)y}) CK(cudaFree(p));
}

template <class T>
void bench_one(const IgemmProblem& q, IgemmPrecision prec, int with_chain, double flop, double peak_tflops,
               double bw, int reps) {
  const int64_t cout_g = q.Cout / q.groups;
  const int64_t nx = q.N * q.Cin * q.H * q.W, nw = q.Cin * cout_g * q.kH * q.kW,
                ny = q.N * q.Cout * q.Hout * q.Wout;
  T *x, *w, *b, *y, *y2;
  CK(cudaMalloc(&x, nx * sizeof(T)));
  CK(cudaMalloc(&w, nw * sizeof(T)));
  CK(cudaMalloc(&b, q.Cout * sizeof(T)));
  CK(cudaMalloc(&y, ny * sizeof(T)));
  CK(cudaMalloc(&y2, ny * sizeof(T)));
  fill(x, nx, 0.f, 1.f, 11);
  const float bound = 1.0f / std::sqrt(float(cout_g * q.kH * q.kW));
  fill(w, nw, -bound, bound, 12);
  fill(b, q.Cout, -bound, bound, 13);
  const auto specs = chain_specs(with_chain);
  PointOp<float>* chf = upload(build_chain<float>(specs));
  const int chain_len = int(specs.size());
  IgemmConv conv(q, prec, w, b, map_epilogue(chf, chain_len));
  CK(cudaMemset(y, 0xFF, ny * sizeof(T)));
  conv.run(x, y, 0);  // warm-up, and the first of the two results compared bitwise
  CK(cudaDeviceSynchronize());
  const std::vector<float> ms = timed_runs(reps, [&] { conv.run(x, y2, 0); });
  const double med = ms[ms.size() / 2];
  unsigned long long* diff;
  CK(cudaMalloc(&diff, 8));
  CK(cudaMemset(diff, 0, 8));
  count_diff<<<2048, 256>>>(reinterpret_cast<uint32_t*>(y), reinterpret_cast<uint32_t*>(y2),
                            int64_t(ny * sizeof(T) / 4), diff);
  unsigned long long hd = 0;
  CK(cudaMemcpy(&hd, diff, 8, cudaMemcpyDeviceToHost));
  const double bytes = double(nx + ny) * sizeof(T);
  const double floor_b = bytes / bw * 1e3, floor_c = flop / (peak_tflops * 1e12) * 1e3;
  std::printf("BENCH %-6s chain %-26s median %.3f ms (min %.3f, max %.3f, %d runs, L2 flushed)  %.1f TFLOPS  %.0f GB/s "
              "(|x|+|y|)  floors: bytes %.3f ms, compute %.3f ms -> %.2fx max floor; bitwise diff vs first run: %llu "
              "words  [%s]\n",
              to_string(prec), chain_name(with_chain), med, ms.front(), ms.back(), reps, flop / (med * 1e-3) / 1e12,
              bytes / (med * 1e-3) / 1e9, floor_b, floor_c, med / std::max(floor_b, floor_c), hd,
              conv.describe().c_str());
  for (void* p : {(void*)x, (void*)w, (void*)b, (void*)y, (void*)y2, (void*)diff, (void*)chf})
    if (p) CK(cudaFree(p));
}

int run_bench() {
  const IgemmProblem q = design_problem();
  const double flop = 2.0 * q.N * q.Cin * q.Cout * q.H * q.W * q.kH * q.kW;  // 155 GFLOP
  const double bw = 4.2e12;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB; problem %s -> [%lld,%lld,%lld,%lld], %.1f GFLOP\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, geom_str(q).c_str(), (long long)q.N,
              (long long)q.Cout, (long long)q.Hout, (long long)q.Wout, flop / 1e9);
  // Sampled accuracy on the real size (every 997th output element).
  for (IgemmPrecision prec : {IgemmPrecision::tf32, IgemmPrecision::tf32x3, IgemmPrecision::bf16}) {
    std::string desc;
    const CheckResult r = check_any(q, prec, true, 1, 77, 997, &desc);
    std::printf("%s big %-6s sampled 1/997 with chain: maxrel %.3e normrel %.3e nonfinite %llu\n",
                r.ok ? "ok  " : "FAIL", to_string(prec), r.maxrel, r.normrel, r.bad);
  }
  const int reps = 15;
  for (int c : {1, 2, 0}) bench_one<float>(q, IgemmPrecision::tf32, c, flop, 495, bw, reps);
  for (int c : {1, 0}) bench_one<float>(q, IgemmPrecision::tf32x3, c, flop, 495.0 / 3, bw, reps);
  for (int c : {1, 2, 0}) bench_one<__nv_bfloat16>(q, IgemmPrecision::bf16, c, flop, 990, bw, reps);
  // Sampled accuracy and timing of a reduction over C on the real size.
  {
    std::string desc;
    const CheckResult r = check_reduce_any(q, IgemmPrecision::tf32, 1, ReduceKind::logsumexp, 0, 0, 78, 97, &desc);
    std::printf("%s big tf32 logsumexp over C sampled 1/97: maxrel %.3e normrel %.3e nonfinite %llu\n",
                r.ok ? "ok  " : "FAIL", r.maxrel, r.normrel, r.bad);
  }
  bench_reduce<float>(q, IgemmPrecision::tf32, 1, ReduceKind::logsumexp, flop, 495, bw, reps);
  bench_reduce<__nv_bfloat16>(q, IgemmPrecision::bf16, 1, ReduceKind::logsumexp, flop, 990, bw, reps);
  bench_reduce<float>(q, IgemmPrecision::tf32, 2, ReduceKind::sum, flop, 495, bw, reps);
  return 0;
}

IgemmProblem design_problem() {
  IgemmProblem q;
  q.N = 128;
  q.Cin = 64;
  q.Cout = 64;
  q.H = q.W = 128;
  q.kH = q.kW = 3;
  q.stride[0] = q.stride[1] = 2;
  q.padding[0] = q.padding[1] = 1;
  q.output_padding[0] = q.output_padding[1] = 1;
  return igemm_normalized(q);
}

// Three launches of one configuration on the DESIGN example (for ncu).
template <class T>
int profile_one(IgemmPrecision prec, int with_chain) {
  const IgemmProblem q = design_problem();
  const int64_t nx = q.N * q.Cin * q.H * q.W, nw = q.Cin * q.Cout * 9, ny = q.N * q.Cout * q.Hout * q.Wout;
  T *x, *w, *b, *y;
  CK(cudaMalloc(&x, nx * sizeof(T)));
  CK(cudaMalloc(&w, nw * sizeof(T)));
  CK(cudaMalloc(&b, q.Cout * sizeof(T)));
  CK(cudaMalloc(&y, ny * sizeof(T)));
  fill(x, nx, 0.f, 1.f, 11);
  fill(w, nw, -0.04f, 0.04f, 12);
  fill(b, q.Cout, -0.04f, 0.04f, 13);
  const auto specs = chain_specs(with_chain);
  PointOp<float>* chf = upload(build_chain<float>(specs));
  IgemmConv conv(q, prec, w, b, map_epilogue(chf, int(specs.size())));
  for (int r = 0; r < 3; ++r) conv.run(x, y, 0);
  CK(cudaDeviceSynchronize());
  std::printf("profile %s chain%d: %s\n", to_string(prec), int(with_chain), conv.describe().c_str());
  return 0;
}
int run_profile(const std::string& prec, int chain) {
  if (prec == "tf32") return profile_one<float>(IgemmPrecision::tf32, chain);
  if (prec == "tf32x3") return profile_one<float>(IgemmPrecision::tf32x3, chain);
  if (prec == "bf16") return profile_one<__nv_bfloat16>(IgemmPrecision::bf16, chain);
  return profile_one<__half>(IgemmPrecision::f16, chain);
}

int run_small() {
  IgemmProblem a;  // strided, padded, odd
  a.N = 2, a.Cin = 12, a.Cout = 70, a.H = 7, a.W = 9, a.kH = 3, a.kW = 4;
  a.stride[0] = 2, a.stride[1] = 3, a.padding[0] = 1, a.padding[1] = 2, a.output_padding[0] = 1;
  IgemmProblem b;  // groups + dilation, vector path (W % 8 == 0)
  b.N = 1, b.Cin = 20, b.Cout = 6, b.H = 5, b.W = 16, b.kH = 5, b.kW = 3, b.groups = 2;
  b.dilation[0] = b.dilation[1] = 2, b.stride[0] = b.stride[1] = 2, b.padding[0] = 3, b.output_padding[1] = 1;
  IgemmProblem c;  // wide rows: BWp = 128, two column tiles
  c.N = 1, c.Cin = 17, c.Cout = 33, c.H = 3, c.W = 150, c.kH = 1, c.kW = 5, c.padding[1] = 2;
  IgemmProblem d;  // the fast path (2 x 128 tiles) with stride 2
  d.N = 1, d.Cin = 9, d.Cout = 20, d.H = 3, d.W = 70, d.kH = d.kW = 3;
  d.stride[0] = d.stride[1] = 2, d.padding[0] = d.padding[1] = 1, d.output_padding[0] = d.output_padding[1] = 1;
  int fails = 0;
  for (const IgemmProblem& p : {a, b, c, d})
    for (IgemmPrecision prec : kAll)
      for (int x_shift : {0, 1}) {  // 1: an x the TMA cannot map (the fast path falls back to the generic one)
        std::string desc;
        const CheckResult r = check_any(p, prec, true, 3, 5, 1, &desc, x_shift);
        fails += !r.ok;
        std::printf("%s %-6s %s x+%d: maxrel %.3e normrel %.3e nonfinite %llu  [%s]\n", r.ok ? "ok  " : "FAIL",
                    to_string(prec), geom_str(p).c_str(), x_shift, r.maxrel, r.normrel, r.bad, desc.c_str());
      }
  for (const IgemmProblem& p : {c, d})
    for (IgemmPrecision prec : kAll)
      for (int mode : {1, 2}) {
        std::string desc;
        const CheckResult r = check_reduce_any(p, prec, mode, ReduceKind::logsumexp, 1, 2, 6, 1, &desc);
        fails += !r.ok;
        std::printf("%s %-6s %s %s over C: maxrel %.3e normrel %.3e nonfinite %llu\n", r.ok ? "ok  " : "FAIL",
                    to_string(prec), geom_str(p).c_str(), reduce_name(mode, ReduceKind::logsumexp), r.maxrel,
                    r.normrel, r.bad);
      }
  return fails;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;  // ctest SKIP_RETURN_CODE
  }
  try {
    if (mode == "check") {
      const int n = argc > 2 ? std::atoi(argv[2]) : 60;
      const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 2026;
      return run_checks(n, seed, argc > 4) == 0 ? 0 : 1;
    }
    if (mode == "small") return run_small() == 0 ? 0 : 1;
    if (mode == "bench") return run_bench();
    if (mode == "profile") return run_profile(argc > 2 ? argv[2] : "tf32", argc > 3 ? std::atoi(argv[3]) : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::fprintf(stderr, "usage: igemm_bench check [n] [seed] [verbose] | small | bench\n");
  return 2;
}
