// The conv-transpose tap arithmetic, written once (DESIGN.md section 2):
//   output o = i*stride - pad + k*dilation for input index i and tap k.
// Used by the gather kernels of every backend (one output element at a time)
// and by the fold's planner (the input range of each tap).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kfuse/detail/hd.hpp"
#include "kfuse/op_types.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::detail {

// The input index i that tap k brings to output o along one axis, if any.
KFUSE_HDI bool tap_input(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t dilation, int64_t in, int64_t& i) {
  const int64_t t = o + pad - k * dilation;  // = i * stride
  if (t < 0 || t % stride != 0 || t / stride >= in) return false;
  i = t / stride;
  return true;
}

// The input index range [lo, hi) of one axis whose tap k lands inside an
// output of extent `out`: 0 <= i*stride - pad + k*dilation < out (host).
struct TapRange {
  int64_t lo, hi;
};
inline TapRange tap_range(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  const auto floor_div = [](int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); };
  const int64_t lo = std::max<int64_t>(0, -floor_div(-(pad - k * dilation), stride));
  const int64_t hi = std::min<int64_t>(in, floor_div(out - 1 + pad - k * dilation, stride) + 1);
  return {std::min(lo, in), std::max(hi, std::min(lo, in))};
}

// Everything the gather form needs, from the views and parameters (host).
struct ConvTransposeGather {
  int64_t H, W, kH, kW, Cout, Ho, Wo, cin_g, cout_g;
  int64_t xs[4], ws[4], bs;  // strides of x, w and the bias, in elements
  int64_t stride[2], pad[2], dil[2];

  ConvTransposeGather(const TensorView& x, const TensorView& w, const TensorView* bias, const ConvTranspose2dParams& p,
                      const Shape& y)
      : H(x.shape[2]), W(x.shape[3]), kH(w.shape[2]), kW(w.shape[3]), Cout(y[1]), Ho(y[2]), Wo(y[3]),
        cin_g(x.shape[1] / p.groups), cout_g(w.shape[1]), bs(bias ? bias->strides[0] : 0),
        stride{p.stride[0], p.stride[1]}, pad{p.padding[0], p.padding[1]}, dil{p.dilation[0], p.dilation[1]} {
    for (int d = 0; d < 4; ++d) xs[d] = x.strides[d], ws[d] = w.strides[d];
  }

  // Output element i of the contiguous [N, Cout, Ho, Wo] output: the bias
  // plus every input tap that lands on it, accumulated in A.
  template <class A, class T>
  KFUSE_HDI A at(const T* x, const T* w, const T* b, int64_t i) const {
    const int64_t ow = i % Wo, oh = (i / Wo) % Ho, co = (i / (Wo * Ho)) % Cout, n = i / (Wo * Ho * Cout);
    const int64_t g = co / cout_g, col = co % cout_g;
    A acc = b ? A(b[co * bs]) : A(0);
    for (int64_t kh = 0; kh < kH; ++kh) {
      int64_t ih;
      if (!tap_input(oh, kh, stride[0], pad[0], dil[0], H, ih)) continue;
      for (int64_t kw = 0; kw < kW; ++kw) {
        int64_t iw;
        if (!tap_input(ow, kw, stride[1], pad[1], dil[1], W, iw)) continue;
        const T* xp = x + n * xs[0] + (g * cin_g) * xs[1] + ih * xs[2] + iw * xs[3];
        const T* wp = w + (g * cin_g) * ws[0] + col * ws[1] + kh * ws[2] + kw * ws[3];
        for (int64_t c = 0; c < cin_g; ++c) acc += A(xp[c * xs[1]]) * A(wp[c * ws[0]]);
      }
    }
    return acc;
  }
};

}  // namespace kfuse::detail
