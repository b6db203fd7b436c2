// JSON pipeline specs, and the deterministic data generators they use.
//
//   { "name": "convt_gap_bias_lse",
//     "input": {"shape": [16, 64, 512, 512], "dtype": "float32", "init": {"kind": "uniform", "seed": 0}},
//     "ops": [
//       {"op": "conv_transpose2d", "weight": {"shape": [64, 128, 3, 3], "init": {"kind": "conv_default", "seed": 1}},
//        "bias": {"shape": [128], "init": {"kind": "conv_default", "seed": 2}}, "stride": 1},
//       {"op": "mean", "axes": [2, 3], "keepdim": true},
//       {"op": "add", "tensor": {"shape": [128, 1, 1], "init": {"kind": "randn", "seed": 3}}},
//       {"op": "logsumexp", "axes": [1], "keepdim": true},
//       {"op": "sum", "axes": [2, 3]},
//       {"op": "mul", "scalar": 10.0} ] }
//
// Format (every object rejects keys it does not know; nesting deeper than 32
// levels is an error):
//   top level   "name" (string, optional: defaults to the file's stem), "description"
//               (string, ignored), "input" (required), "ops" (required, non-empty array).
//   input       {"shape": [..], "dtype": "float32"|"float64"|"float16"|"bfloat16" (default
//               float32), "init": INIT} or {"npy": "x.npy", "dtype": ... (default: the file's)}.
//   tensor      {"shape": [..], "init": INIT} | {"shape": [..], "data": [flat values]} |
//               {"npy": "w.npy"}. Relative paths are resolved against the spec's directory.
//   INIT        {"kind": "uniform", "seed": s, "low": 0, "high": 1}
//               {"kind": "randn", "seed": s, "mean": 0, "std": 1}
//               {"kind": "conv_default", "seed": s, "fan_in": f (optional)}
//               {"kind": "constant", "value": v}
//   ops         {"op": "conv_transpose2d", "weight": T, "bias": T|null (optional), "stride",
//                "padding", "output_padding", "dilation" (int or [h, w]), "groups" (int)}
//               unary: relu, leaky_relu {"slope"}, tanh, sigmoid, gelu {"approximate":
//                "none"|"tanh"}, gelu_tanh, silu, mish, hardtanh {"min","max"}, hardswish,
//                clamp {"min","max"}, exp, log, neg, abs
//               binary: add, sub, mul, div, min, max (also minimum, maximum) with exactly
//                one of "scalar" (number) or "tensor" (T)
//               reductions: sum, mean, max, min, logsumexp {"axes": int or [..],
//                "keepdim": bool (default false)}; min/max with "axes" are reductions
//               softmax {"axis": int}
//   Numbers may be written as the strings "inf", "-inf" or "nan" where a float is expected.
//
// Errors are kfuse::Error of category spec whose message starts with the JSON
// pointer of the offending field: `spec: /ops/2/axes/0: expected an integer, got "x"`.
// Files that cannot be read are category io and name the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kfuse/pipeline.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse {

// ---------------------------------------------------------------------------
// Deterministic, sliceable generators.
//
// Element i (row-major linear index into the *global* tensor) of a tensor with
// seed s draws its bits from a counter-based generator:
//   bits(s, i)   = splitmix64(s * 0x9E3779B97F4A7C15 + i)        (mod 2^64)
//   uniform01    = (bits >> 11) * 2^-53                            in [0, 1)
//   uniform      = low + (high - low) * uniform01(s, i)
//   randn        = mean + std * sqrt(-2 ln(1 - u1)) * cos(2 pi u2),
//                  u1 = uniform01(r, 2i), u2 = uniform01(r, 2i + 1), r = splitmix64(s ^ 0x5DEECE66D)
//   conv_default = uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's ConvTranspose2d
//                  default for both weight and bias; fan_in = shape[1] * prod(shape[2:])
//                  of the *weight* (set InitSpec::fan_in for the bias)
//   constant     = value
// Values are computed in double and rounded once to the target dtype, so any
// slice [begin, end) equals the same range of the full tensor bit for bit.
// ---------------------------------------------------------------------------

uint64_t splitmix64(uint64_t x) noexcept;
double uniform01(uint64_t seed, uint64_t counter) noexcept;

enum class InitKind { uniform, randn, conv_default, constant };
const char* to_string(InitKind k) noexcept;

struct InitSpec {
  InitKind kind = InitKind::uniform;
  uint64_t seed = 0;
  double low = 0.0, high = 1.0;    // uniform
  double mean = 0.0, stddev = 1.0; // randn
  double value = 0.0;              // constant
  std::optional<int64_t> fan_in;   // conv_default: else derived from the shape (rank >= 2)
};

// conv_default's fan_in for a tensor of `shape`: init.fan_in if set, else
// shape[1] * prod(shape[2:]); throws invalid_argument when neither applies.
int64_t conv_default_fan_in(const Shape& shape, const InitSpec& init);

// Element i of the generated tensor `shape`, in double (before rounding).
double generated_value(const Shape& shape, const InitSpec& init, int64_t i);

// The whole tensor, row-major, host memory. Needs Kokkos initialised (host
// tensors are Kokkos views).
Tensor generate(const Shape& shape, DType dtype, const InitSpec& init);

// Elements [begin, end) of the flat row-major tensor `shape`, as a 1-D host
// tensor of end - begin elements: the same values as the same range of
// generate(shape, dtype, init). For generating one rank's part of a global tensor.
Tensor generate_slice(const Shape& shape, DType dtype, const InitSpec& init, int64_t begin, int64_t end);
// The same into caller memory (host, contiguous, end - begin elements of `dtype`).
void generate_into(const Shape& shape, DType dtype, const InitSpec& init, int64_t begin, int64_t end, void* out);

// Element-wise conversion of a host view to a new row-major host tensor of
// `dtype` (round to nearest even; float16/bfloat16 included).
Tensor cast(const TensorView& src, DType dtype);

DType dtype_from(const std::string& name);  // "float32", "float64", "float16", "bfloat16"

// ---------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------

// Where the pipeline's input comes from.
struct InputSource {
  Shape shape;
  DType dtype = DType::f32;         // as written in the spec (before any override)
  std::optional<std::string> npy;   // resolved path; else generated with `init`
  InitSpec init;
};

struct Spec {
  std::string name;
  Pipeline pipeline;   // in the spec's dtype, or the override's
  InputSource input;
  DType spec_dtype = DType::f32;  // the dtype the spec names (pipeline.dtype() differs under an override)
  std::string source;             // the file it came from, or "" for a string
  Precision precision = Precision::strict;  // "precision": "strict" | "tf32" (the convolution's arithmetic)
};

// Parses a spec. `base_dir` resolves relative .npy paths. With `dtype`, the
// pipeline is built in that dtype instead of the spec's, with the same values:
// every generated or loaded value is first rounded to the spec's own dtype,
// then converted, so a float64 override of a float32 spec computes exactly the
// float32 problem in float64 (for checking).
Spec parse_spec(const std::string& json_text, const std::string& base_dir = ".",
                std::optional<DType> dtype = std::nullopt);
// Reads and parses a file (relative .npy paths against its directory; the name
// defaults to the file's stem); io errors name the file.
Spec load_spec(const std::string& path, std::optional<DType> dtype = std::nullopt);

// The spec's input as a host tensor of the pipeline's dtype (same rounding
// rule as the weights).
Tensor make_input(const Spec& spec);

// Rows [begin, end) along axis 0 of make_input(spec), computed alone: the
// generators draw from the global element counter and a .npy input is read
// at the slice's offset, so the rows equal those of the whole input bit for
// bit. For one rank's part of the batch (kfuse run --distributed).
Tensor make_input_slice(const Spec& spec, int64_t begin, int64_t end);

// Multiply-adds of the pipeline's conv_transpose2d (0 without one):
// N * Cout * Hout * Wout * (Cin / groups) * kH * kW.
double conv_macs(const Pipeline& pipeline);

}  // namespace kfuse
