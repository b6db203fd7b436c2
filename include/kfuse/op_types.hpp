// The op vocabulary as plain data: what each op is and its parameters.
#pragma once

#ifndef __CUDACC_RTC__  // NVRTC (backends/cuda/jit.cpp) sees the op kinds only
#include <array>
#include <cstdint>
#include <string>
#endif

namespace kfuse {

enum class UnaryKind {
  relu, leaky_relu, tanh, sigmoid, gelu, gelu_tanh, silu, mish,
  hardtanh, hardswish, clamp, exp, log, neg, abs,
};

// One unary op. `a`, `b` are its parameters: leaky_relu slope in a;
// hardtanh/clamp min in a, max in b.
struct Unary {
  UnaryKind kind = UnaryKind::relu;
  double a = 0.0;
  double b = 0.0;
};

enum class BinaryKind { add, sub, mul, div, min, max };

enum class ReduceKind { sum, mean, max, min, logsumexp };

#ifndef __CUDACC_RTC__
const char* to_string(UnaryKind k) noexcept;
const char* to_string(BinaryKind k) noexcept;
const char* to_string(ReduceKind k) noexcept;
// Inverse of to_string; throw invalid_argument naming `op` on an unknown name.
UnaryKind unary_kind_from(const std::string& name, const std::string& op);
BinaryKind binary_kind_from(const std::string& name, const std::string& op);
ReduceKind reduce_kind_from(const std::string& name, const std::string& op);

using Pair = std::array<int64_t, 2>;  // (height, width)

// ConvTranspose2d hyper-parameters, PyTorch's meaning. The kernel size comes
// from the weight's shape [Cin, Cout/groups, kH, kW].
struct ConvTranspose2dParams {
  Pair stride{1, 1};
  Pair padding{0, 0};
  Pair output_padding{0, 0};
  Pair dilation{1, 1};
  int64_t groups = 1;

  ConvTranspose2dParams& with_stride(int64_t s) { stride = {s, s}; return *this; }
  ConvTranspose2dParams& with_padding(int64_t p) { padding = {p, p}; return *this; }
  ConvTranspose2dParams& with_output_padding(int64_t p) { output_padding = {p, p}; return *this; }
  ConvTranspose2dParams& with_dilation(int64_t d) { dilation = {d, d}; return *this; }
  ConvTranspose2dParams& with_groups(int64_t g) { groups = g; return *this; }
};

// Output extent of one axis: (in-1)*s - 2p + d*(k-1) + op + 1.
inline int64_t conv_transpose_out_extent(int64_t in, int64_t k, int64_t s, int64_t p, int64_t op,
                                         int64_t d) {
  return (in - 1) * s - 2 * p + d * (k - 1) + op + 1;
}

#endif  // __CUDACC_RTC__

}  // namespace kfuse
