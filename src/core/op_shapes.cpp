// Shape rules and argument validation of the ops, independent of any backend.
#include "kfuse/ops.hpp"

#include <string>

namespace kfuse {

Shape conv_transpose2d_shape(const Shape& x, const Shape& w, const std::optional<Shape>& bias,
                             const ConvTranspose2dParams& p) {
  const std::string op = "conv_transpose2d";
  if (x.size() != 4) fail(ErrorCategory::shape_mismatch, op, "input must have rank 4 [N, Cin, H, W], got rank ", x.size(), " ", to_string(x));
  if (w.size() != 4) fail(ErrorCategory::shape_mismatch, op, "weight must have rank 4 [Cin, Cout/groups, kH, kW], got rank ", w.size(), " ", to_string(w));
  checked_numel(x, op, "input");
  checked_numel(w, op, "weight");
  if (p.groups < 1) fail(ErrorCategory::invalid_argument, op, "groups (", p.groups, ") must be >= 1");
  const char* axis[2] = {"height", "width"};
  for (int i = 0; i < 2; ++i) {
    if (p.stride[i] < 1) fail(ErrorCategory::invalid_argument, op, "stride (", p.stride[i], ") must be >= 1 along ", axis[i]);
    if (p.dilation[i] < 1) fail(ErrorCategory::invalid_argument, op, "dilation (", p.dilation[i], ") must be >= 1 along ", axis[i]);
    if (p.padding[i] < 0) fail(ErrorCategory::invalid_argument, op, "padding (", p.padding[i], ") must be >= 0 along ", axis[i]);
    if (p.output_padding[i] < 0 || p.output_padding[i] >= std::max(p.stride[i], p.dilation[i]))
      fail(ErrorCategory::invalid_argument, op, "output_padding (", p.output_padding[i], ") must be smaller than stride (",
           p.stride[i], ") or dilation (", p.dilation[i], ") along ", axis[i]);
  }
  const int64_t cin = x[1];
  if (w[0] != cin) fail(ErrorCategory::shape_mismatch, op, "weight's first axis (", w[0], ") must equal the input channels (", cin, ")");
  if (cin % p.groups != 0) fail(ErrorCategory::invalid_argument, op, "groups (", p.groups, ") must divide in_channels (", cin, ")");
  // 0 % groups == 0 for any groups: without this, an empty weight [0, c, k, k]
  // would claim c * groups output channels (up to 2^63) for free.
  if (cin == 0 && p.groups > 1)
    fail(ErrorCategory::invalid_argument, op, "groups (", p.groups, ") must not exceed in_channels (", cin, ")");
  if (w[2] < 1 || w[3] < 1) fail(ErrorCategory::shape_mismatch, op, "kernel size must be >= 1, got weight ", to_string(w));
  if (w[1] < 1) fail(ErrorCategory::shape_mismatch, op, "weight's second axis (Cout/groups) must be >= 1, got ", w[1]);
  if (w[1] > INT64_MAX / p.groups) fail(ErrorCategory::overflow, op, "out_channels overflows: ", w[1], " * groups ", p.groups);
  const int64_t cout = w[1] * p.groups;
  if (bias && (bias->size() != 1 || (*bias)[0] != cout))
    fail(ErrorCategory::shape_mismatch, op, "bias must have shape [", cout, "], got ", to_string(*bias));
  Shape out{x[0], cout, 0, 0};
  for (int i = 0; i < 2; ++i) {
    const int64_t in = x[2 + i], k = w[2 + i];
    if (in < 1) fail(ErrorCategory::shape_mismatch, op, "input ", axis[i], " (", in, ") must be >= 1");
    // In 128 bits: hostile parameters must not overflow. The extent before
    // the padding crops it, (in-1)*s + d*(k-1) + op + 1, must fit in 64 bits:
    // then so does every index the kernels compute (oh + p - kh*d, ...).
    const __int128 full = static_cast<__int128>(in - 1) * p.stride[i] +
                          static_cast<__int128>(p.dilation[i]) * (k - 1) + p.output_padding[i] + 1;
    if (full > INT64_MAX)
      fail(ErrorCategory::overflow, op, "output ", axis[i], " overflows 64 bits: input ", in, ", kernel ", k,
           ", stride ", p.stride[i], ", output_padding ", p.output_padding[i], ", dilation ", p.dilation[i]);
    const __int128 ext = full - static_cast<__int128>(2) * p.padding[i];
    if (ext < 1)
      fail(ErrorCategory::invalid_argument, op, "output ", axis[i], " (",
           ext >= INT64_MIN ? std::to_string(static_cast<int64_t>(ext)) : std::string("< -2^63"),
           ") must be >= 1: input ", in, ", kernel ", k, ", stride ", p.stride[i], ", padding ", p.padding[i],
           ", output_padding ", p.output_padding[i], ", dilation ", p.dilation[i]);
    out[2 + i] = static_cast<int64_t>(ext);
  }
  checked_numel(out, op, "output");
  return out;
}

}  // namespace kfuse
