// Implicit-GEMM conv_transpose2d on tensor cores with the elementwise
// epilogue applied before the single store (issue 14; DESIGN.md section 11).
//
// Method. Output phase decomposition: for stride s the output pixel (oh, ow)
// belongs to phase (oh mod s_h, ow mod s_w); inside one phase every output
// pixel sees the same taps kh (those with (rp + p - kh*d) = 0 mod s) and
// input row ih = a + eh(kh) where oh = rp + s*a and eh(kh) = (rp + p - kh*d)/s
// (exact division); likewise for columns. So each phase is an ordinary
// (correlation-like) convolution with ceil(k/s)-ish taps and no multiply-add
// on inserted zeros. A phase with no tap along an axis (dilation and stride
// sharing a factor) outputs bias + epilogue only.
//
// GEMM per phase and group: M = samples x pixels of the phase, N = Cout/G,
// K = Cin/G x taps. A block tile is 128 pixels (R rows x BWp columns of one
// phase's grid, BWp a power of two in [8, 128]) x 64 output channels, 4 warps
// of 64 x 32, mma.sync with fp32 accumulation:
//   tf32   : m16n8k8 TF32 (A and B rounded to nearest, cvt.rna)
//   tf32x3 : m16n8k8 TF32, a = hi + lo split of both operands, three products
//            (lo*hi + hi*lo + hi*hi): strict-fp32 accuracy
//   bf16/f16: m16n8k16, x / weight / bias / y in that type
// The input rows a tile needs (per input channel and row tap, one segment of
// BWp + halo columns) are copied once per stage with cp.async (16 bytes where
// aligned and inside the row, 4 bytes / scalar otherwise, zero fill outside),
// and every column tap reads that segment at its own shift: the A operand of
// all column taps comes from one copy. Weights are re-laid out once, at
// construction, as [G][kH][kW][Cin/G padded][Cout/G padded] (fp32; rounded to
// tf32 for the tf32 mode) or with channel pairs interleaved (16-bit), so B
// stages are 16-byte cp.async copies. Multistage (3) cp.async pipeline.
//
// Tiles of 2 rows x 128 columns take a fast path (compile-time segment width:
// immediate shared-memory offsets for the fragments); any other tile shape the
// generic one. Resources: 123-128 registers, no spills, no stack (sm_89 and
// sm_90, every precision); 84-92 KB of dynamic shared memory on the DESIGN
// example, 2 blocks of 8 warps per SM on the H200.
//
// Epilogue: accumulators -> shared memory; then each thread takes one pixel
// and 4 channels at a time, adds the bias, runs the chain (the shared op
// definitions of include/kfuse/detail/math.hpp, dispatched once per op for the
// 4 values; value k at the flat NCHW index i + k*Hout*Wout, j = 0) and stores
// NCHW (coalesced along the pixel axis; consecutive lanes are consecutive
// output columns of one phase, so stride s_w apart; the sibling column phases
// of one output row are adjacent blocks, so L2 merges their sectors).
// run_reduce_c: when the tile holds every output channel (groups 1, Cout <=
// 64) a reduction over C (sum/mean/max/min/logsumexp, keepdim) or softmax over
// C completes in the thread that owns the pixel, with reduce_init/push/finish
// and softmax_value from math.hpp; only the reduced output is written.
//
// Covered: any stride, padding, output_padding, dilation and groups the conv
// accepts, up to the limits igemm_why_not names (stride <= 4 per axis, at most
// 8 taps per axis in one phase, a stage within 24 KB of inputs + 16 KB of
// weights, 32-bit sizes), contiguous NCHW x and y. Results are bitwise
// reproducible (no atomics; fixed reduction order).
//
// Measured (H200, 2026-12-01, perf/results/NVIDIA-H200-2026-12-01-igemm.md):
// correct in every precision over random geometries; not yet at the issue's
// speed targets (the chain machinery and the per-tile instruction overhead
// dominate; the results file says where the time goes).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kfuse/detail/program.hpp"

namespace kfuse::detail::cuda {

struct IgemmProblem {
  int64_t N = 1, Cin = 1, H = 1, W = 1, Cout = 1, kH = 1, kW = 1;
  int64_t stride[2] = {1, 1}, padding[2] = {0, 0}, output_padding[2] = {0, 0}, dilation[2] = {1, 1};
  int64_t groups = 1;
  int64_t Hout = 0, Wout = 0;  // 0: computed from the rest (PyTorch's formula)
};

enum class IgemmPrecision { tf32, tf32x3, bf16, f16 };

const char* to_string(IgemmPrecision p);

// Hout/Wout filled in when 0.
IgemmProblem igemm_normalized(IgemmProblem p);

// Empty when the kernel covers the problem; otherwise why not, precisely.
std::string igemm_why_not(const IgemmProblem&, IgemmPrecision);

constexpr int kIgemmMaxPhases = 16;  // stride <= 4 per axis
constexpr int kIgemmMaxTaps = 8;     // taps per axis within one phase

struct IgemmPhase {
  int rp, cp;        // output rows oh = rp + s_h*a, columns ow = cp + s_w*b
  int Hp, Wp;        // extents of the phase grid (a, b)
  int Th, Tw;        // taps per axis (0: bias + epilogue only)
  int CH, TG;        // one stage: CH input channels x TG row taps x all Tw column taps
  int nch, nstages;  // channel chunks; stages = nch * ceil(Th / TG)
  int emin;          // min over column taps of ew
  int kh[kIgemmMaxTaps], kw[kIgemmMaxTaps];
  int eh[kIgemmMaxTaps], ew[kIgemmMaxTaps];  // ih = a + eh, iw = b + ew
};

struct IgemmParams {
  int N, Cin, H, W, Cout, G, cin_g, cout_g, Hout, Wout, sh, sw;
  int bwp_log2, R;     // tile = R rows x BWp columns of a phase grid (R * BWp = 128)
  int SW, LDg;         // A segment width and the stride between (channel, row tap) groups, elements
  int a_stage_elems;   // elements of T per A stage
  int b_stage_words;   // 32-bit words per B stage
  int cipad, copad, kH, kW;
  int tiles_r, tiles_c, tiles_co, nphase;
  int vec_ok;          // x rows 16-byte aligned: W * sizeof(T) % 16 == 0 and x aligned
  IgemmPhase ph[kIgemmMaxPhases];
};

// A reduction over the channel axis completed inside the block (its tile
// holds all output channels: groups == 1 and Cout <= 64; see
// igemm_why_not_reduce_c). The point chain of run_reduce_c applies to each
// conv value (after the bias) before the reduction; `post` to each value the
// reduction produces.
struct IgemmReduceC {
  bool softmax = false;                // softmax over C: y is [N, Cout, Hout, Wout]
  ReduceKind kind = ReduceKind::sum;   // otherwise sum/mean/max/min/logsumexp over C, keepdim:
                                       // y is [N, 1, Hout, Wout]
  const PointOp<float>* post = nullptr;  // device array; the flat index is y's
  int post_len = 0;
};

// Empty when run_reduce_c covers the problem (igemm_why_not, plus the tile
// holding every output channel).
std::string igemm_why_not_reduce_c(const IgemmProblem&, IgemmPrecision);

// Kernel-side form of the epilogue.
struct IgemmEpilogue {
  const PointOp<float>* chain;
  int chain_len;
  int mode;  // 0: map, 1: reduce over C, 2: softmax over C
  ReduceKind kind;
  const PointOp<float>* post;
  int post_len;
};

// A prepared launch, built once at plan time: packed weights on the device,
// the tile configuration and the grid.
class IgemmConv {
 public:
  // weight_device: [Cin, Cout/G, kH, kW], fp32 for tf32/tf32x3, the half type
  // for bf16/f16. bias_device: nullable, [Cout], same type. Throws
  // kfuse::Error(unsupported) when igemm_why_not is not empty.
  IgemmConv(const IgemmProblem&, IgemmPrecision, const void* weight_device, const void* bias_device);
  ~IgemmConv();
  IgemmConv(const IgemmConv&) = delete;
  IgemmConv& operator=(const IgemmConv&) = delete;

  // x: [N, Cin, H, W] contiguous; y: [N, Cout, Hout, Wout] contiguous; both of
  // the pipeline type (fp32 for tf32/tf32x3, else the half type). chain: a
  // device array of chain_len point ops applied after the bias (may be null).
  void run(const void* x, void* y, const PointOp<float>* chain, int chain_len, cudaStream_t stream) const;

  // The same with a reduction (or softmax) over C completed in the block.
  // Throws kfuse::Error(unsupported) when igemm_why_not_reduce_c is not empty.
  void run_reduce_c(const void* x, void* y, const PointOp<float>* chain, int chain_len, const IgemmReduceC& red,
                    cudaStream_t stream) const;

  const IgemmParams& params() const { return prm_; }
  int64_t grid() const { return grid_; }
  size_t smem_bytes() const { return smem_; }
  std::string describe() const;

 private:
  void launch_any(const void* x, void* y, const IgemmEpilogue& ep, cudaStream_t stream) const;

  IgemmProblem pb_;
  IgemmPrecision prec_;
  IgemmParams prm_{};
  void* wpack_ = nullptr;
  const void* bias_ = nullptr;
  int64_t grid_ = 0;
  size_t smem_ = 0;
};

}  // namespace kfuse::detail::cuda
