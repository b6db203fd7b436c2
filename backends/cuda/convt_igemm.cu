// Implicit-GEMM conv_transpose2d on tensor cores with the epilogue before the
// one store: the host side (tile configuration, weight packing, the kernel
// for an epilogue). The method and the interface: convt_igemm.cuh; the
// kernel: convt_igemm_kernel.cuh.
#include "backends/cuda/convt_igemm.cuh"

#include <cuda.h>           // CUtensorMap and its enums (the encoder comes through the runtime: no -lcuda)
#include <cudaTypedefs.h>   // PFN_cuTensorMapEncodeTiled

#include <algorithm>
#include <sstream>
#include <vector>

#include "backends/cuda/context.hpp"
#include "backends/cuda/jit.hpp"
#include "backends/cuda/kernels.hpp"
#include "core/cuda_check.hpp"
#include "core/env.hpp"
#include "kfuse/error.hpp"

namespace kfuse::detail::cuda {

namespace {

using namespace igemm;

int elem_size(IgemmPrecision p) { return (p == IgemmPrecision::tf32 || p == IgemmPrecision::tf32x3) ? 4 : 2; }
int vec_elems(IgemmPrecision p) { return 16 / elem_size(p); }
int kstep_channels(IgemmPrecision p) { return elem_size(p) == 4 ? 8 : 16; }
int fast_sw(IgemmPrecision p, int R) {
  switch (p) {
    case IgemmPrecision::tf32: return igemm::fast_sw<IgemmPrecision::tf32>(R);
    case IgemmPrecision::tf32x3: return igemm::fast_sw<IgemmPrecision::tf32x3>(R);
    case IgemmPrecision::bf16: return igemm::fast_sw<IgemmPrecision::bf16>(R);
    default: return igemm::fast_sw<IgemmPrecision::f16>(R);
  }
}

int ilog2(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t pmod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// ---- Weight packing ----------------------------------------------------------------
// fp32: wp[g][kh][kw][ci (cipad)][co (copad)], tf32-rounded when `round`.
// 16-bit: wp[g][kh][kw][ci/2][co][ci&1] (channel pairs interleaved).
template <class T>
__global__ void igemm_pack_weights(const T* __restrict__ w, T* __restrict__ wp, int G, int cin_g, int cout_g,
                                   int kH, int kW, int cipad, int copad, int pair, int round) {
  const int64_t total = int64_t(G) * kH * kW * cipad * copad;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = e;
    int lo = 0;
    if (pair == 2) {
      lo = int(r & 1);
      r >>= 1;
    }
    const int co = int(r % copad);
    r /= copad;
    const int cip = int(r % (cipad / pair));
    r /= (cipad / pair);
    const int kw = int(r % kW);
    r /= kW;
    const int kh = int(r % kH);
    const int g = int(r / kH);
    const int ci = cip * pair + lo;
    T v = T(0.0f);
    if (ci < cin_g && co < cout_g) v = w[((int64_t(g * cin_g + ci) * cout_g + co) * kH + kh) * kW + kw];
    if constexpr (sizeof(T) == 4) {
      if (round) v = __uint_as_float(to_tf32(v));
    }
    wp[e] = v;
  }
}

// The second pass of a reduction that spans tiles (IgemmEpilogue): row r of
// y from its parts (igemm_parts) in a fixed order, kLanes lanes a row (lanes
// strided over the parts, then a butterfly), finished over `count` values,
// then the chain after the reduction at (i, j) = (r / hw, r % hw),
// interpreted (one value a row).
template <class T, int kLanes>
__global__ void igemm_finish(const float* __restrict__ partials, const IgemmParts pp, int64_t hw,
                             const IgemmEpilogue ep, int64_t count, T* __restrict__ y) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, r = t / kLanes;
  const int lane = int(t % kLanes);
  if (r >= pp.rows) return;  // whole groups of kLanes: blocks are whole warps
  const ReduceKind kind = ep.kind;
  const int64_t sums = pp.rows * pp.parts;  // a logsumexp's sums: the plane after the maxima
  ReduceAcc<float> acc = reduce_init<float>(kind);
  for (int64_t k = lane; k < pp.parts; k += kLanes) {
    const float* q = partials + r * pp.row_stride + k * pp.part_stride;
    reduce_join(kind, acc, ReduceAcc<float>{q[0], kind == ReduceKind::logsumexp ? q[sums] : 0.0f});
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1)
    reduce_join(kind, acc, ReduceAcc<float>{__shfl_xor_sync(0xffffffffu, acc.a, off),
                                            __shfl_xor_sync(0xffffffffu, acc.b, off)});
  if (lane == 0) {
    float v[1] = {reduce_finish(kind, acc, count)};
    InterpretedChains::after(ep.after, v, r / hw, 0, r % hw, 0);
    y[r] = to_elem<T>(v[0]);
  }
}

// Tiles a fast path covers: 2 x 128 with one column phase, 1 x 128 with two.
bool fast_tile(const IgemmParams& p) {
  return p.bwp_log2 == 7 && ((p.R == 2 && p.ncp_log2 == 0) || (p.R == 1 && p.ncp_log2 == 1));
}

// The taps of output phase r along one axis: the kernel offsets k with
// r + pad - k*dil = 0 mod s, each with e = (r + pad - k*dil) / s (exact), so
// that the phase's output index a reads input a + e. -1: more than kIgemmMaxTaps.
int phase_taps(int r, int64_t pad, int64_t dil, int s, int extent, int* ks, int* es) {
  int n = 0;
  for (int k = 0; k < extent; ++k) {
    const int64_t q = r + pad - k * dil;
    if (pmod(q, s) != 0) continue;
    if (n == kIgemmMaxTaps) return -1;
    ks[n] = k;
    es[n++] = int(q / s);
  }
  return n;
}

struct Derived {
  IgemmParams prm{};
  std::string why;
};

// Everything about a problem that does not need the device, its stages sized
// for a TMA pipeline or a cp.async one (igemm::stages).
Derived derive(const IgemmProblem& pin, IgemmPrecision prec, bool tma) {
  const int budget_b = stage_budget_b(tma);
  Derived d;
  const IgemmProblem pb = igemm_normalized(pin);
  auto no = [&](const std::string& s) {
    d.why = s;
    return d;
  };
  const int64_t G = pb.groups;
  if (pb.N < 1 || pb.Cin < 1 || pb.Cout < 1 || pb.H < 1 || pb.W < 1 || pb.kH < 1 || pb.kW < 1)
    return no("sizes must be positive");
  if (G < 1 || pb.Cin % G || pb.Cout % G) return no("groups must divide in_channels and out_channels");
  for (int ax = 0; ax < 2; ++ax) {
    if (pb.stride[ax] < 1 || pb.dilation[ax] < 1 || pb.padding[ax] < 0) return no("stride/dilation >= 1, padding >= 0");
    if (pb.output_padding[ax] < 0 || pb.output_padding[ax] >= std::max(pb.stride[ax], pb.dilation[ax]))
      return no("output_padding must be in [0, max(stride, dilation))");
  }
  const int64_t Hout = conv_transpose_out_extent(pb.H, pb.kH, pb.stride[0], pb.padding[0], pb.output_padding[0],
                                                 pb.dilation[0]);
  const int64_t Wout = conv_transpose_out_extent(pb.W, pb.kW, pb.stride[1], pb.padding[1], pb.output_padding[1],
                                                 pb.dilation[1]);
  if (Hout < 1 || Wout < 1) return no("empty output");
  if (pb.Hout != Hout || pb.Wout != Wout) return no("Hout/Wout inconsistent with the conv parameters");
  const int64_t lim = (int64_t(1) << 31) - 1;
  for (int64_t v : {pb.N, pb.Cin, pb.H, pb.W, pb.Cout, Hout, Wout, pb.N * pb.Cin, pb.N * pb.Cout})
    if (v > lim) return no("a size is past 2^31 - 1 (32-bit index arithmetic in the kernel)");
  if (pb.stride[0] > 4 || pb.stride[1] > 4)
    return no("stride > 4 (at most 16 output phases in the kernel's parameter block)");

  IgemmParams& p = d.prm;
  p.N = int(pb.N);
  p.Cin = int(pb.Cin);
  p.H = int(pb.H);
  p.W = int(pb.W);
  p.Cout = int(pb.Cout);
  p.G = int(G);
  p.cin_g = int(pb.Cin / G);
  p.cout_g = int(pb.Cout / G);
  p.Hout = int(Hout);
  p.Wout = int(Wout);
  p.sh = int(pb.stride[0]);
  p.sw = int(pb.stride[1]);
  p.kH = int(pb.kH);
  p.kW = int(pb.kW);

  const int esz = elem_size(prec), vec = vec_elems(prec), ks = kstep_channels(prec), pair = esz == 2 ? 2 : 1;
  // Phases: per output row phase, its column phases with their taps.
  struct ColPhase {
    int cp, Wp, Tw, kw[kIgemmMaxTaps], ew[kIgemmMaxTaps];
  };
  std::vector<ColPhase> cols;
  for (int cp = 0; cp < p.sw; ++cp) {
    ColPhase c{};
    c.cp = cp;
    c.Wp = cp < Wout ? int(ceil_div(Wout - cp, p.sw)) : 0;
    if (c.Wp == 0) continue;
    c.Tw = phase_taps(cp, pb.padding[1], pb.dilation[1], p.sw, p.kW, c.kw, c.ew);
    if (c.Tw < 0) return no("more than 8 column taps in one output phase");
    cols.push_back(c);
  }
  // A block takes every column phase when there are 2 or 4 of them (its
  // output columns contiguous) and a stage of their taps together fits.
  int col_taps = 0;
  for (const ColPhase& c : cols) col_taps += c.Tw;
  const bool together = (p.sw == 2 || p.sw == 4) && int(cols.size()) == p.sw && col_taps <= kIgemmMaxGroupTaps &&
                        (ks / pair) * col_taps * kLDB * 4 <= budget_b;
  const int ncp = together ? p.sw : 1;
  p.ncp_log2 = ilog2(ncp);
  int Hpmax = 0, Wpmax = 0, span = 0;
  for (const ColPhase& c : cols) Wpmax = std::max(Wpmax, c.Wp);
  p.nphase = 0;
  for (int rp = 0; rp < p.sh; ++rp) {
    const int Hp = rp < Hout ? int(ceil_div(Hout - rp, p.sh)) : 0;
    if (Hp == 0) continue;
    IgemmPhase rows{};
    rows.rp = rp;
    rows.Hp = Hp;
    rows.Th = phase_taps(rp, pb.padding[0], pb.dilation[0], p.sh, p.kH, rows.kh, rows.eh);
    if (rows.Th < 0) return no("more than 8 row taps in one output phase");
    Hpmax = std::max(Hpmax, Hp);
    for (std::size_t c0 = 0; c0 < cols.size(); c0 += ncp) {
      IgemmPhase ph = rows;
      int emax = 0;
      for (int qc = 0; qc < ncp; ++qc) {
        const ColPhase& c = cols[c0 + qc];
        ph.cp[qc] = c.cp;
        ph.Wp[qc] = c.Wp;
        ph.Tw[qc] = c.Tw;
        ph.tap0[qc] = ph.taps;
        ph.Wpmax = std::max(ph.Wpmax, c.Wp);
        for (int t = 0; t < c.Tw; ++t, ++ph.taps) {
          ph.kw[ph.taps] = c.kw[t];
          ph.ew[ph.taps] = c.ew[t];
          if (ph.taps == 0 || c.ew[t] < ph.emin) ph.emin = c.ew[t];
          if (ph.taps == 0 || c.ew[t] > emax) emax = c.ew[t];
        }
      }
      if (ph.taps > 0) span = std::max(span, emax - ph.emin);
      p.ph[p.nphase++] = ph;
    }
  }
  // Tile geometry: a column phase's tile R x BWp, R * BWp * ncp = kBM.
  const int bwp_max = std::min(128, kBM / ncp);
  int bwp = 8;
  while (bwp < Wpmax && bwp < bwp_max) bwp *= 2;
  p.bwp_log2 = ilog2(bwp);
  p.R = kBM / ncp / bwp;
  int SW = int(ceil_div(bwp + span + vec - 1, vec)) * vec;
  const int want_mod = p.R == 1 ? 32 : (p.R == 2 ? 16 : 8), want_rem = p.R == 1 ? 8 : 4;
  while ((SW * esz / 4) % want_mod != want_rem) SW += vec;
  // A fast path's compile-time segment width when it fits.
  if (fast_tile(p) && SW <= fast_sw(prec, p.R)) SW = fast_sw(prec, p.R);
  p.SW = SW;
  p.LDg = p.R * SW;
  p.cipad = int(ceil_div(p.cin_g, 16)) * 16;
  p.copad = int(ceil_div(p.cout_g, kBN)) * kBN;
  p.tiles_r = int(ceil_div(Hpmax, p.R));
  p.tiles_c = int(ceil_div(Wpmax, bwp));
  p.tiles_co = p.copad / kBN;
  // Stage shape per phase: CH channels (a power of two, a multiple of the
  // k-step) x TG row taps x all column taps, within the byte budgets, at the
  // least modelled cost (stages x (2 + k-steps per stage)).
  int a_max = 0, b_max = 0;
  int chmax = ks;
  while (chmax < p.cin_g) chmax *= 2;
  for (int f = 0; f < p.nphase; ++f) {
    IgemmPhase& ph = p.ph[f];
    if (ph.Th == 0 || ph.taps == 0) {
      ph.CH = ks;
      ph.TG = 1;
      ph.nch = 0;
      ph.nstages = 0;
      continue;
    }
    int64_t best = -1;
    for (int ch = ks; ch <= chmax; ch *= 2)
      for (int tg = 1; tg <= ph.Th; ++tg) {
        const int64_t abytes = int64_t(tg) * ch * p.LDg * esz;
        const int64_t bbytes = int64_t(ch / pair) * tg * ph.taps * kLDB * 4;
        if (abytes > kStageBudgetA || bbytes > budget_b) continue;
        const int64_t nch = ceil_div(p.cin_g, ch), ntg = ceil_div(ph.Th, tg);
        const int64_t cost = nch * ntg * (2 + (ch / ks) * tg * ph.taps);
        if (best < 0 || cost < best) {
          best = cost;
          ph.CH = ch;
          ph.TG = tg;
        }
      }
    if (best < 0)
      return no(cat("one stage (one k-step of channels, one row tap, all column taps) exceeds the shared-memory "
                    "budget (", kStageBudgetA / 1024, " KB of inputs, ", budget_b / 1024, " KB of weights)"));
    ph.nch = int(ceil_div(p.cin_g, ph.CH));
    if (int64_t(ph.nch) * ph.CH * p.H * p.W > lim)
      return no("one sample's group of input channels, in whole stages of channels, is past 2^31 - 1 elements "
                "(32-bit offsets in the kernel's stage loads)");
    ph.nstages = ph.nch * int(ceil_div(ph.Th, ph.TG));
    a_max = std::max(a_max, ph.TG * ph.CH * p.LDg);
    b_max = std::max(b_max, (ph.CH / pair) * ph.TG * ph.taps * kLDB);
  }
  p.tma_ch = 0;
  for (int f = 0; f < p.nphase; ++f)
    if (p.ph[f].nstages > 0) p.tma_ch = p.tma_ch == 0 ? p.ph[f].CH : std::min(p.tma_ch, p.ph[f].CH);
  p.a_stage_elems = std::max(a_max, vec);
  p.b_stage_words = std::max(b_max, 4);
  const int64_t grid = int64_t(p.N) * p.G * p.tiles_r * p.tiles_c * p.tiles_co * p.nphase;
  if (grid > lim) return no("more than 2^31 - 1 tiles");
  if (int64_t(p.kH) * p.kW * p.cipad * p.copad > lim) return no("a group's packed weights exceed 2^31 - 1 elements");
  p.vec_ok = (int64_t(p.W) * esz) % 16 == 0;
  return d;
}

size_t smem_for(const IgemmParams& p, IgemmPrecision prec, bool tma) {
  const size_t pipe = size_t(stages(tma)) * (size_t(p.a_stage_elems) * elem_size(prec) + size_t(p.b_stage_words) * 4);
  return std::max(pipe, size_t(kBN) * kLDO * 4);
}

// The kernel's fast path for a tile (its kFastR: rows of the tile), or 0.
int fast_rows(const IgemmParams& p, IgemmPrecision prec) {
  return fast_tile(p) && p.SW == fast_sw(prec, p.R) ? p.R : 0;
}

// The built-in kernel (chains interpreted) for a precision and tile path.
template <IgemmPrecision P>
const void* builtin_for(int fast_r) {
  switch (fast_r) {
    case 1: return reinterpret_cast<const void*>(igemm_convt_kernel<P, 1, InterpretedChains>);
    case 2: return reinterpret_cast<const void*>(igemm_convt_kernel<P, 2, InterpretedChains>);
    default: return reinterpret_cast<const void*>(igemm_convt_kernel<P, 0, InterpretedChains>);
  }
}
const void* builtin_kernel(IgemmPrecision prec, int fast_r) {
  switch (prec) {
    case IgemmPrecision::tf32: return builtin_for<IgemmPrecision::tf32>(fast_r);
    case IgemmPrecision::tf32x3: return builtin_for<IgemmPrecision::tf32x3>(fast_r);
    case IgemmPrecision::bf16: return builtin_for<IgemmPrecision::bf16>(fast_r);
    default: return builtin_for<IgemmPrecision::f16>(fast_r);
  }
}

// The same kernel compiled by NVRTC with the epilogue's chains as code.
const void* compiled_kernel(IgemmPrecision prec, int fast_r, const IgemmEpilogue& ep) {
  const JitProgram p = igemm_program(prec, jit::host_ops(ep.body), jit::host_ops(ep.after), ep.kind);
  return jit::kernel(p.source, p.kernels[fast_r]);
}

// ---- Tensor maps of the TMA stage copies (sm_90+) --------------------------------

static_assert(sizeof(CUtensorMap) == sizeof(IgemmTensorMaps::x), "a CUtensorMap is 128 bytes");

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A tiled map of `rank` dimensions (innermost first; strides of the outer ones
// in bytes) into `out`; false when the driver refuses it.
bool encode_map(void* out, CUtensorMapDataType type, cuuint32_t rank, const void* base, const cuuint64_t* dims,
                const cuuint64_t* strides, const cuuint32_t* box) {
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return tensor_map_encoder()(static_cast<CUtensorMap*>(out), type, rank, const_cast<void*>(base), dims, strides, box,
                              unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

CUtensorMapDataType map_type(IgemmPrecision p) {
  return p == IgemmPrecision::bf16  ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
         : p == IgemmPrecision::f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                    : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
}

// x as [N*G][Cin/G][H][W], boxes SW x R x tma_ch.
bool encode_x_map(void* out, const IgemmParams& p, IgemmPrecision prec, const void* x) {
  const cuuint64_t esz = cuuint64_t(elem_size(prec));
  const cuuint64_t dims[4] = {cuuint64_t(p.W), cuuint64_t(p.H), cuuint64_t(p.cin_g), cuuint64_t(p.N) * p.G};
  const cuuint64_t strides[3] = {p.W * esz, cuuint64_t(p.H) * p.W * esz, cuuint64_t(p.cin_g) * p.H * p.W * esz};
  const cuuint32_t box[4] = {cuuint32_t(p.SW), cuuint32_t(p.R), cuuint32_t(p.tma_ch), 1};
  return encode_map(out, map_type(prec), 4, x, dims, strides, box);
}

// The packed weights as 32-bit words [G*kH*kW][Cin/G padded][Cout/G padded],
// boxes kLDB x tma_ch words' rows x 1 (the row's padding read from the next
// channel tile, or zeros past the last).
bool encode_w_map(void* out, const IgemmParams& p, IgemmPrecision prec, const void* wpack) {
  const int pair = elem_size(prec) == 4 ? 1 : 2;
  const cuuint64_t dims[3] = {cuuint64_t(p.copad), cuuint64_t(p.cipad / pair), cuuint64_t(p.G) * p.kH * p.kW};
  const cuuint64_t strides[2] = {cuuint64_t(p.copad) * 4, cuuint64_t(p.cipad / pair) * p.copad * 4};
  const cuuint32_t box[3] = {cuuint32_t(kLDB), cuuint32_t(p.tma_ch / pair), 1};
  return encode_map(out, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, wpack, dims, strides, box);
}

// Why the fast path's stages are not copied by the TMA here (empty: they are).
std::string tma_why_not(const IgemmParams& p) {
  if (!env_flag("KFUSE_CUDA_IGEMM_TMA").value_or(true)) return "KFUSE_CUDA_IGEMM_TMA=0";
  if (!p.vec_ok) return "x rows not a multiple of 16 bytes";
  if (p.SW > 256 || p.tma_ch > 256) return "a box past 256 elements";
  if (tensor_map_encoder() == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  return {};
}

}  // namespace

JitProgram igemm_program(IgemmPrecision precision, const std::vector<PointOp<float>>& body,
                         const std::vector<PointOp<float>>& after, ReduceKind reduce) {
  JitProgram p{"#include \"backends/cuda/convt_igemm_kernel.cuh\"\n" + jit::chains_struct(body, after, reduce), {}};
  for (int fast_r : {0, 1, 2})  // indexed by the fast path's rows (0: the generic path)
    p.kernels.push_back(cat("kfuse::detail::cuda::igemm_convt_kernel<kfuse::detail::cuda::IgemmPrecision(",
                            int(precision), "), ", fast_r, ", ", jit::kPlanChains, ">"));
  return p;
}

const char* to_string(IgemmPrecision p) {
  switch (p) {
    case IgemmPrecision::tf32: return "tf32";
    case IgemmPrecision::tf32x3: return "tf32x3";
    case IgemmPrecision::bf16: return "bf16";
    case IgemmPrecision::f16: return "f16";
  }
  return "?";
}

IgemmProblem igemm_normalized(IgemmProblem p) {
  if (p.Hout == 0)
    p.Hout = conv_transpose_out_extent(p.H, p.kH, p.stride[0], p.padding[0], p.output_padding[0], p.dilation[0]);
  if (p.Wout == 0)
    p.Wout = conv_transpose_out_extent(p.W, p.kW, p.stride[1], p.padding[1], p.output_padding[1], p.dilation[1]);
  return p;
}

// (The cp.async sizes: a problem they accept, the TMA's larger budget accepts too.)
std::string igemm_why_not(const IgemmProblem& p, IgemmPrecision prec) { return derive(p, prec, false).why; }

std::string igemm_why_not_softmax_c(const IgemmProblem& p, IgemmPrecision prec) {
  std::string why = igemm_why_not(p, prec);
  if (!why.empty()) return why;
  if (p.groups != 1) return "a softmax over C with groups > 1 spans several channel tiles (one group per tile)";
  if (p.Cout > kBN)
    return "a softmax over C with more than 64 output channels spans several channel tiles (each value needs the "
           "whole row's sum before its one store)";
  return {};
}

std::string igemm_why_not_reduce_hw(const IgemmProblem& p, IgemmPrecision prec, ReduceKind kind) {
  if (kind == ReduceKind::logsumexp)
    return "a logsumexp over H and W (the kernel's partials over H and W are sums, maxima or minima)";
  return igemm_why_not(p, prec);
}

IgemmConv::IgemmConv(const IgemmProblem& pb, IgemmPrecision prec, const void* weight_device,
                     const void* bias_device, const IgemmEpilogue& epilogue)
    : pb_(igemm_normalized(pb)), prec_(prec), ep_(epilogue), bias_(bias_device) {
  if (ep_.mode < 0 || ep_.mode > 3)
    fail(ErrorCategory::invalid_argument, "IgemmConv", "epilogue mode ", ep_.mode,
         " (0: map, 1: reduce over C, 2: softmax over C, 3: reduce over H and W)");
  const std::string why = ep_.mode == 2   ? igemm_why_not_softmax_c(pb_, prec)
                          : ep_.mode == 3 ? igemm_why_not_reduce_hw(pb_, prec, ep_.kind)
                                          : igemm_why_not(pb_, prec);
  if (!why.empty()) fail(ErrorCategory::unsupported, "IgemmConv", why);
  // On sm_90 and later the fast path copies its stages by the TMA (only), in
  // the TMA's pipeline (igemm::stages); without the tensor maps the generic
  // path runs there, in the cp.async one. Stages are sized for the TMA where
  // three of them (the generic path's, for a run whose x the TMA cannot map)
  // fit the device's shared memory too, else for cp.async (accepted above).
  // The packed weights are the same for both.
  const bool sm90 = device_info().major >= 9;
  int dev = 0, optin = 0;
  KFUSE_CUDA_CHECK(cudaGetDevice(&dev));
  KFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  Derived sized = derive(pb_, prec, sm90);
  if (!sized.why.empty() || smem_for(sized.prm, prec, false) > size_t(optin)) sized = derive(pb_, prec, false);
  prm_ = sized.prm;
  int fast_r = fast_rows(prm_, prec_);
  tma_text_ = fast_r == 0 ? "the generic tile path" : !sm90 ? "before sm_90" : tma_why_not(prm_);

  const int esz = elem_size(prec_);
  const int64_t welems = int64_t(prm_.G) * prm_.kH * prm_.kW * prm_.cipad * prm_.copad;
  wpack_.reset(kfuse::device::allocate(size_t(welems) * esz));
  void* wpack = wpack_.get();
  const int blocks = int(std::min<int64_t>(ceil_div(welems, 256), 4096));
  if (esz == 4) {
    igemm_pack_weights<float><<<blocks, 256>>>(static_cast<const float*>(weight_device), static_cast<float*>(wpack),
                                               prm_.G, prm_.cin_g, prm_.cout_g, prm_.kH, prm_.kW, prm_.cipad,
                                               prm_.copad, 1, prec_ == IgemmPrecision::tf32 ? 1 : 0);
  } else if (prec_ == IgemmPrecision::bf16) {
    igemm_pack_weights<__nv_bfloat16><<<blocks, 256>>>(
        static_cast<const __nv_bfloat16*>(weight_device), static_cast<__nv_bfloat16*>(wpack), prm_.G, prm_.cin_g,
        prm_.cout_g, prm_.kH, prm_.kW, prm_.cipad, prm_.copad, 2, 0);
  } else {
    igemm_pack_weights<__half><<<blocks, 256>>>(static_cast<const __half*>(weight_device),
                                                static_cast<__half*>(wpack), prm_.G, prm_.cin_g, prm_.cout_g,
                                                prm_.kH, prm_.kW, prm_.cipad, prm_.copad, 2, 0);
  }
  check_launch("igemm_pack_weights");
  KFUSE_CUDA_CHECK(cudaDeviceSynchronize());

  if (tma_text_.empty() && !encode_w_map(maps_.w, prm_, prec_, wpack)) tma_text_ = "the weights' tensor map refused";
  const bool tma = tma_text_.empty();
  if (sm90 && !tma) {
    fast_r = 0;
    prm_ = derive(pb_, prec, false).prm;
  }
  fast_r_ = fast_r;
  grid_ = int64_t(prm_.N) * prm_.G * prm_.tiles_r * prm_.tiles_c * prm_.tiles_co * prm_.nphase;
  const IgemmParts parts = igemm_parts(prm_, ep_.mode);
  if (ep_.mode == 3 || (ep_.mode == 1 && parts.parts > 1))
    parts_bytes_ = size_t(parts.rows * parts.parts) * (ep_.kind == ReduceKind::logsumexp ? 2 : 1) * sizeof(float);
  smem_ = smem_for(prm_, prec, tma);
  // A run whose x the TMA cannot map (not 16-byte aligned) takes the generic
  // path, built in, with the same tiles in the cp.async pipeline.
  unmapped_smem_ = tma ? smem_for(prm_, prec, false) : 0;
  const size_t need = std::max(smem_, unmapped_smem_);  // the more either kernel takes
  if (need > size_t(optin))
    fail(ErrorCategory::unsupported, "IgemmConv", "needs ", need, " bytes of shared memory per block, the device ",
         optin);
  // The kernel: compiled when NVRTC is on and there is a chain, or a
  // reduction whose kind becomes a constant there (the built-in kernel
  // dispatches it per value).
  kernel_ = builtin_kernel(prec_, fast_r);
  bool compiled = false;
  if (ep_.mode == 0 && ep_.body.n == 0) {
    kernel_text_ = "no point ops";
  } else if (!jit::enabled()) {
    kernel_text_ = "point chains interpreted: plan-time compilation is off (KFUSE_CUDA_JIT=0)";
  } else {
    try {
      kernel_ = compiled_kernel(prec_, fast_r, ep_);
      compiled = true;
      kernel_text_ = ep_.mode == 0 ? "point chains compiled at plan time (NVRTC)"
                                   : "point chains and reduction kind compiled at plan time (NVRTC)";
    } catch (const Error& err) {
      kernel_text_ = cat("point chains interpreted: NVRTC failed: ", err.what());
    }
  }
  if (compiled)
    KFUSE_CUDA_CHECK(cudaKernelSetAttributeForDevice(static_cast<cudaKernel_t>(const_cast<void*>(kernel_)),
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_), dev),
                     "igemm_convt_kernel, dynamic shared memory ", smem_);
  else
    KFUSE_CUDA_CHECK(cudaFuncSetAttribute(kernel_, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_)),
                     "igemm_convt_kernel, dynamic shared memory ", smem_);
  cudaFuncAttributes fa{};
  KFUSE_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel_), "igemm_convt_kernel attributes");
  kernel_text_ += cat("; ", fa.numRegs, " registers", fa.localSizeBytes > 0 ? cat(", ", fa.localSizeBytes, " B of local memory") : "");
  if (tma) {
    unmapped_kernel_ = builtin_kernel(prec_, 0);
    KFUSE_CUDA_CHECK(
        cudaFuncSetAttribute(unmapped_kernel_, cudaFuncAttributeMaxDynamicSharedMemorySize, int(unmapped_smem_)),
        "igemm_convt_kernel, dynamic shared memory ", unmapped_smem_);
  }

}

IgemmConv::~IgemmConv() = default;

void IgemmConv::run(const void* x, void* y, cudaStream_t stream) const {
  IgemmParams prm = prm_;
  if (!aligned16(x)) prm.vec_ok = 0;  // 16-byte copies of x rows need the base aligned too
  IgemmTensorMaps maps = maps_;
  const void* kernel = kernel_;
  size_t smem = smem_;
  if (tma_text_.empty() && !(prm.vec_ok && encode_x_map(maps.x, prm, prec_, x))) {
    kernel = unmapped_kernel_;
    smem = unmapped_smem_;
  }
  const void* wp = wpack_.get();
  IgemmEpilogue ep = ep_;
  // The parts live in the calling thread's workspace, as the fold's sums: runs
  // of one plan on several threads do not share them.
  ep.partials = parts_bytes_ ? static_cast<float*>(workspace().scratch(parts_bytes_)) : nullptr;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(grid_));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  // The kernel's parameters in order (the pointers' bytes are the typed ones').
  const void* bias = bias_;
  void* params[] = {&prm, &x, &wp, &bias, &y, &ep, &maps};
  KFUSE_CUDA_CHECK(cudaLaunchKernelExC(&cfg, kernel, params), "igemm_convt_kernel, grid ", grid_, ", dynamic shared memory ", smem);
  check_launch("igemm_convt_kernel");
  if (ep.partials == nullptr) return;
  // Over H and W a warp a channel (hundreds of parts, few rows); over C a
  // thread a pixel (a part per channel tile).
  const int64_t hw = int64_t(prm_.Hout) * prm_.Wout;
  if (elem_size(prec_) == 4) finish(ep, hw, static_cast<float*>(y), stream);
  else if (prec_ == IgemmPrecision::bf16) finish(ep, hw, static_cast<__nv_bfloat16*>(y), stream);
  else finish(ep, hw, static_cast<__half*>(y), stream);
  check_launch("igemm_finish");
}

template <class T>
void IgemmConv::finish(const IgemmEpilogue& ep, int64_t hw, T* y, cudaStream_t stream) const {
  const IgemmParts pp = igemm_parts(prm_, ep.mode);
  if (ep.mode == 3) {
    igemm_finish<T, 32><<<unsigned(ceil_div(pp.rows * 32, kThreads)), kThreads, 0, stream>>>(ep.partials, pp, 1, ep,
                                                                                           hw, y);
  } else {
    igemm_finish<T, 1><<<unsigned(ceil_div(pp.rows, kThreads)), kThreads, 0, stream>>>(ep.partials, pp, hw, ep,
                                                                                     prm_.Cout, y);
  }
}

std::string IgemmConv::describe() const {
  std::ostringstream os;
  const int ncp = 1 << prm_.ncp_log2;
  os << "igemm_convt[" << to_string(prec_) << "] tile " << kBM << "px (" << ncp << " column phase"
     << (ncp > 1 ? "s" : "") << " x " << prm_.R << "x" << (1 << prm_.bwp_log2) << ") x " << kBN << "co, "
     << (tma_text_.empty() ? tma_stage_buffers(prm_.a_stage_elems, prm_.b_stage_words, elem_size(prec_), unsigned(smem_))
                           : stages(false))
     << " stages (" << (tma_text_.empty() ? "TMA copies" : "cp.async: " + tma_text_) << "), grid " << grid_
     << ", smem " << smem_ << " B" << (fast_r_ ? ", fast path" : "")
     << " (" << kernel_text_ << ")"
     << (parts_bytes_ ? cat("; the reduction over ", ep_.mode == 3 ? "H and W" : "C", " spans tiles: ",
                         igemm_parts(prm_, ep_.mode).parts, " parts a row, then igemm_finish")
                   : std::string())
     << "; a block's phases, taps (rows x columns) / stage (CH x TG):";
  for (int f = 0; f < prm_.nphase; ++f) {
    const IgemmPhase& ph = prm_.ph[f];
    os << " (" << ph.rp << ",";
    for (int q = 0; q < ncp; ++q) os << (q ? "+" : "") << ph.cp[q];
    os << "):" << ph.Th << "x";
    for (int q = 0; q < ncp; ++q) os << (q ? "+" : "") << ph.Tw[q];
    os << "/" << ph.CH << "x" << ph.TG;
  }
  return os.str();
}

}  // namespace kfuse::detail::cuda
