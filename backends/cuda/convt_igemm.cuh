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
// K = Cin/G x taps. A block takes one row phase and, when s_w is 2 or 4, all
// s_w column phases of it (otherwise one): its tile is 256 pixels, R rows x
// BWp columns (BWp a power of two in [8, 128]) of each of its ncp column
// phases' grids, x 64 output channels; 8 warps (4 x 2) of 64 x 32, a warp's
// 64 pixels in one column phase; mma.sync with fp32 accumulation:
//   tf32   : m16n8k8 TF32 (A and B rounded to nearest, cvt.rna)
//   tf32x3 : m16n8k8 TF32, a = hi + lo split of both operands, three products
//            (lo*hi + hi*lo + hi*hi): strict-fp32 accuracy; an infinity in x
//            or w gives NaN (inf - hi is NaN) where PyTorch gives +-inf
//   bf16/f16: m16n8k16, x / weight / bias / y in that type
// The input rows a tile needs (per input channel and row tap, one segment of
// BWp + halo columns) are copied once per stage, and every column tap reads
// that segment at its own shift: the A operand of all column taps (of every
// column phase of the block) comes from one copy. On sm_90 and later the fast
// path's stages are copied by the tensor memory accelerator: one thread
// issues a box per (row tap, channel chunk) of x, mapped as [N*G][Cin/G][H][W]
// (zeros outside it: padding, edges, channels past Cin/G), and per column tap
// of the weights, all landing on one mbarrier a stage (KFUSE_CUDA_IGEMM_TMA=0,
// an x not 16-byte aligned or rows not a multiple of 16 bytes: the generic
// path). Elsewhere every thread issues cp.async copies of its columns (16
// bytes where aligned and inside the row, 4 bytes / scalar otherwise, zero
// fill outside). Weights are re-laid out once, at
// construction, as [G][kH][kW][Cin/G padded][Cout/G padded] (fp32; rounded to
// tf32 for the tf32 mode) or with channel pairs interleaved (16-bit), so B
// stages are 16-byte cp.async copies. The pipeline: 2 stages of up to 32 KB
// of weights with the TMA, 3 of up to 16 KB with cp.async (igemm::stages).
//
// The kernel is convt_igemm_kernel.cuh: built into the library with the
// chains interpreted (an op's kind read and dispatched per call), and compiled
// at plan time by NVRTC with the conv's own chains as straight-line code
// (jit.hpp), which IgemmConv prefers.
//
// Tiles of 2 rows x 128 columns of one column phase, and of 1 row x 128
// columns of two, take a fast path (compile-time segment width: immediate
// shared-memory offsets for the fragments); any other tile shape the generic
// one. Resources: 120-128 registers, no spills, no stack in the built-in
// kernels (sm_89 and sm_90, every precision); 96 KB of dynamic shared memory
// on the DESIGN example (TF32, TMA), 2 blocks of 8 warps per SM on the H200.
//
// Epilogue: accumulators -> shared memory; then each thread takes one pixel
// and 4 channels at a time, adds the bias, runs the chain (the shared op
// definitions of include/kfuse/detail/math.hpp; value k at (i, j) =
// (n*Cout + co + k, oh*Wout + ow), so that a per-channel operand costs one
// division a call) and stores NCHW, consecutive lanes on consecutive output
// columns: with every column phase in the block each warp store is whole
// 128-byte lines; with one (s_w 3), columns s_w apart, whose sibling phases
// are adjacent blocks (L2 merges their sectors).
// Reductions (IgemmEpilogue mode 1, 2): when the tile holds every output channel (groups 1, Cout <=
// 64) a reduction over C (sum/mean/max/min/logsumexp, keepdim) or softmax over
// C completes in the thread that owns the pixel, with reduce_init/push/finish,
// lse_merge and softmax_of_exp from math.hpp (logsumexp and softmax in two
// passes: the max, then one exp a value); only the reduced output is written.
// A reduction over C whose channels span tiles (more than 64 a group, or
// groups) writes each tile's part of a pixel's row instead (a logsumexp's
// (max, sum) pair), and a second kernel, igemm_finish, joins a row's parts in
// channel-tile order and runs the chain after it. Over H and W (mode 3:
// sum/mean/max/min, any channels and groups) each block reduces its tile's
// pixels per channel in shared memory and writes one part a channel; the
// same igemm_finish joins a channel's parts. Softmax over C needs the tile to
// hold every channel.
//
// Covered: any stride, padding, output_padding, dilation and groups the conv
// accepts, up to the limits igemm_why_not names (stride <= 4 per axis, at most
// 8 taps per axis in one phase, a stage within 24 KB of inputs + 16 KB of
// weights, 32-bit sizes), contiguous NCHW x and y. Results are bitwise
// reproducible (no atomics; fixed reduction order).
//
// Measured (H200, perf/results/NVIDIA-H200-2026-12-01-igemm.md,
// *-2026-12-02-summary.md, *-2026-12-03-fifteenth-session-summary.md): correct in every precision over random
// geometries; on the DESIGN example 2.27 ms without a chain (68 TFLOPS TF32),
// 3.17 ms with the mish chain compiled, 1.69 / 2.55 ms in bf16 without / with
// it (fifteenth session, TMA stage copies); not yet at the issue's speed
// targets (ncu: 16 instructions per HMMA, a quarter of the stall samples at
// the stage barrier, the TF32 conversion of A emulated in three instructions
// per element; the results files say where the time goes).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backends/cuda/convt_igemm_kernel.cuh"
#include "core/device_runtime.hpp"

namespace kfuse::detail::cuda {

struct IgemmProblem {
  int64_t N = 1, Cin = 1, H = 1, W = 1, Cout = 1, kH = 1, kW = 1;
  int64_t stride[2] = {1, 1}, padding[2] = {0, 0}, output_padding[2] = {0, 0}, dilation[2] = {1, 1};
  int64_t groups = 1;
  int64_t Hout = 0, Wout = 0;  // 0: computed from the rest (PyTorch's formula)
};

const char* to_string(IgemmPrecision p);

// Hout/Wout filled in when 0.
IgemmProblem igemm_normalized(IgemmProblem p);

// Empty when the kernel covers the problem; otherwise why not, precisely.
std::string igemm_why_not(const IgemmProblem&, IgemmPrecision);

// Empty when the kernel also completes a softmax over C in the block
// (igemm_why_not, plus the tile holding every output channel: groups == 1
// and Cout <= 64). A reduction over C takes any channels (igemm_why_not).
std::string igemm_why_not_softmax_c(const IgemmProblem&, IgemmPrecision);

// Empty when the kernel also completes a reduction of `kind` over H and W
// (igemm_why_not, and not a logsumexp).
std::string igemm_why_not_reduce_hw(const IgemmProblem&, IgemmPrecision, ReduceKind kind);

// A prepared launch, built once at plan time: packed weights on the device,
// the tile configuration, the grid, and the kernel for its epilogue.
class IgemmConv {
 public:
  // weight_device: [Cin, Cout/G, kH, kW], fp32 for tf32/tf32x3, the half type
  // for bf16/f16. bias_device: nullable, [Cout], same type. epilogue: its
  // chains in device memory that outlives the conv; a reduction or softmax
  // over C (mode 1 or 2; y is then [N, 1, Hout, Wout] or [N, Cout, Hout,
  // Wout]), or a reduction over H and W (mode 3: y is [N, Cout]). Where a
  // reduction spans tiles, run keeps their parts (igemm_parts) in the calling
  // thread's workspace (context.hpp) and launches igemm_finish after the conv
  // kernel.
  // With plan-time compilation on and any point op, the kernel is
  // compiled with the chains as code (a failure falls back to the built-in
  // kernel, and describe() says why). Throws kfuse::Error(unsupported) when
  // igemm_why_not (igemm_why_not_softmax_c for mode 2, igemm_why_not_reduce_hw
  // for mode 3) is not empty.
  IgemmConv(const IgemmProblem&, IgemmPrecision, const void* weight_device, const void* bias_device,
            const IgemmEpilogue& epilogue = IgemmEpilogue{});
  ~IgemmConv();
  IgemmConv(const IgemmConv&) = delete;
  IgemmConv& operator=(const IgemmConv&) = delete;

  // x: [N, Cin, H, W] contiguous; y as above, contiguous; both of the
  // pipeline type (fp32 for tf32/tf32x3, else the half type).
  void run(const void* x, void* y, cudaStream_t stream) const;

  const IgemmParams& params() const { return prm_; }
  int64_t grid() const { return grid_; }
  size_t smem_bytes() const { return smem_; }
  std::string describe() const;

 private:
  template <class T>
  void finish(const IgemmEpilogue& ep, int64_t hw, T* y, cudaStream_t stream) const;
  IgemmProblem pb_;
  IgemmPrecision prec_;
  IgemmParams prm_{};
  IgemmEpilogue ep_;
  struct DeviceRelease {
    void operator()(void* p) const noexcept { kfuse::device::release(p); }
  };
  std::unique_ptr<void, DeviceRelease> wpack_;  // owned here: a constructor that throws frees it too
  size_t parts_bytes_ = 0;  // the parts of a reduction that spans tiles (igemm_parts); 0: none
  const void* bias_ = nullptr;
  const void* kernel_ = nullptr;  // built in, or compiled for ep_
  int fast_r_ = 0;                 // the kernel's fast path (its tile rows), 0: the generic path
  const void* unmapped_kernel_ = nullptr;  // TMA kernels: the generic one, for an x the TMA cannot map
  std::string kernel_text_;      // which, for describe()
  IgemmTensorMaps maps_{};       // the weights' tensor map (x's is made per run)
  std::string tma_text_;         // why the stages are not copied by the TMA (empty: they are)
  int64_t grid_ = 0;
  size_t smem_ = 0;
  size_t unmapped_smem_ = 0;     // unmapped_kernel_'s (its pipeline has more stages)
};

}  // namespace kfuse::detail::cuda
