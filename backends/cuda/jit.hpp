// Kernels compiled at plan time with NVRTC: the backend's kernel templates
// (embedded in the library) instantiated with code generated for one plan,
// for the device in use. The built-in instantiations stay the fallback.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "kfuse/detail/program.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::detail::cuda::jit {

// Whether plan-time compilation is on (KFUSE_CUDA_JIT=0 turns it off).
bool enabled();

// `name` in `source` compiled for sm_<arch> (needs no GPU): the cubin and
// the kernel's mangled name. Throws kfuse::Error(backend) with NVRTC's log.
// Cubins are kept on disk, named by a hash of NVRTC's version, the options,
// the name and the full source: KFUSE_CUDA_JIT_CACHE (a folder; "0": no disk
// cache), else <tuning::cache_home()>/nvrtc.
struct Cubin {
  std::string image;
  std::string lowered_name;
  std::string log;  // NVRTC's (with -Xptxas=-v, ptxas's report); empty when read from the disk cache
};
Cubin compile(const std::string& source, const std::string& name, int arch);

// Compiles `source` (which may include the backend's headers by their
// repository paths, e.g. "backends/cuda/epilogue_kernels.cuh") for the
// current device and returns the kernel named by `name` (a name expression,
// e.g. "kfuse::detail::cuda::epi::epi_map<float, float, Chains>") as a
// function handle for the launch and occupancy APIs. Cached per (device,
// source, name); throws kfuse::Error(backend) with NVRTC's log on failure.
const void* kernel(const std::string& source, const std::string& name);

// The C++ type of `dtype`'s elements in device code: "float", "double",
// "__half", "__nv_bfloat16".
const char* type_name(DType dtype);
// ... of the accumulation type A (float or double).
template <class A>
const char* acc_type_name() {
  return type_name(std::is_same_v<A, double> ? DType::f64 : DType::f32);
}

// `ops` as C++: a static device function `name` that applies them to N
// values as apply_chain does, each op through its own function
// (apply_unary_n, apply_scalar_n, apply_operand_n) with its kind and
// constants in the code. A tensor operand's index maps are constants too
// (its walk folds to multiplies by constants, with no loads: read per call,
// the maps of two per-channel operands made a channels-last map of 1 GB
// take 1.87 ms where the same kernel takes 1.12 with them as constants;
// H200, 2026-12-02), its pointer read from `chain` (the same ops in device
// memory) at run time. So the code follows the ops and their operands'
// shapes: one compiled kernel per plan shape, not per structure.
//   template <int N> static void name(const Chain<A>& chain, A (&v)[N],
//                                     int64_t i, int64_t di, int64_t j, int64_t dj)
template <class A>
std::string chain_function(const char* name, const std::vector<PointOp<A>>& ops);

// A kernel template's `Ch` (device.cuh) for one plan: the struct kPlanChains
// with the chains `body` and `after` as code (chain_function) and `reduce`
// as its reduction kind, to append to a program that includes the kernels.
// A chain's ops (in device or host memory) copied to the host, for chains_struct.
template <class A>
std::vector<PointOp<A>> host_ops(const Chain<A>& chain);

constexpr const char* kPlanChains = "kfuse::detail::cuda::PlanChains";
template <class A>
std::string chains_struct(const std::vector<PointOp<A>>& body, const std::vector<PointOp<A>>& after, ReduceKind reduce);

}  // namespace kfuse::detail::cuda::jit
