// conv_transpose2d on the Kokkos path as a GEMM over the input channels
// (Kokkos Kernels: a BLAS on the host, cuBLAS when Kokkos Kernels has it) and
// a column-to-image gather. The direct gather (ops.cpp) stays the reference.
//
// For sample n and group g, with X = x[n, the group's Cin_g channels] as a
// [Cin_g, H*W] matrix and Wg = w[the group's Cin_g rows] as [Cin_g, Cout_g*kH*kW]:
//   cols = Wg^T X                                     [Cout_g*kH*kW, H*W]
//   y[n, co, oh, ow] = bias[co] + sum of cols[(co, kh, kw), (ih, iw)] over the
//                      taps (kh, kw) whose input (ih, iw) lands on (oh, ow)
// No multiply-add of the GEMM touches an inserted zero, but those of (input,
// tap) pairs that land outside the output (cropped by the padding) are wasted:
// a geometry where most would be is left to the gather. The column-to-image
// gather sums a fixed set of taps per output: no atomics, the same result run
// to run.
#include <algorithm>
#include <climits>

#include "kfuse/kokkos.hpp"  // before Kokkos Kernels' headers (Kokkos' CUDA 13 shims)

#include <KokkosBlas3_gemm.hpp>

#include "backends/kokkos/dispatch.hpp"
#include "backends/kokkos/kernels.hpp"
#include "backends/kokkos/workspace.hpp"
#include "kfuse/detail/conv.hpp"
#include "kfuse/detail/math.hpp"

namespace kfuse::kokkos {

namespace {

// A row-major [rows, cols] block is the column-major [cols, rows] matrix that
// BLAS (and Kokkos Kernels' TPL path) takes.
template <class T>
using Matrix = Kokkos::View<T**, Kokkos::LayoutLeft, DeviceMemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// The input index each tap brings to each output index along one axis, -1
// where none ([out, k]): the column-to-image gather's divisions done once per
// plan, not once per tap of every output element.
Kokkos::View<int*, DeviceMemSpace> tap_table(int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dilation,
                                             int64_t in) {
  Kokkos::View<int*, DeviceMemSpace> t("kfuse::conv_tap_table", std::size_t(out * k));
  const auto h = Kokkos::create_mirror_view(t);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < k; ++j) {
      int64_t i;
      h(o * k + j) = detail::tap_input(o, j, stride, pad, dilation, in, i) ? int(i) : -1;
    }
  Kokkos::deep_copy(t, h);
  return t;
}

template <class T>
void gemm_conv(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
               const ConvTranspose2dParams& p, const TensorView& y, const int* th, const int* tw) {
  using A = detail::acc_t<T>;
  const int64_t N = x.shape[0], H = x.shape[2], W = x.shape[3], HW = H * W;
  const int64_t kH = w.shape[2], kW = w.shape[3], cout_g = w.shape[1], cin_g = x.shape[1] / p.groups;
  const int64_t Cout = y.shape[1], Ho = y.shape[2], Wo = y.shape[3], taps = kH * kW, M = cout_g * taps;
  const T* xp = static_cast<const T*>(x.data);
  const T* wp = static_cast<const T*>(w.data);
  const T* bp = bias ? static_cast<const T*>(bias->data) : nullptr;
  const int64_t bs = bias ? bias->strides[0] : 0;
  T* yp = static_cast<T*>(y.data);
  const Indexer yix = make_indexer(y.shape, y.strides);
  const bool dense = y.is_contiguous();
  T* cols = scratch<T>(Slot::conv_cols, p.groups * M * HW);
  const int64_t per_sample = Cout * Ho * Wo;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      // cols_g (row-major [M, HW]) = Wg^T X, as column-major: [HW, M] = X' [HW, Cin_g] x Wg' [M, Cin_g]^T.
      const Matrix<const T> xm(xp + n * x.strides[0] + g * cin_g * x.strides[1],
                               Kokkos::LayoutLeft(std::size_t(HW), std::size_t(cin_g)));
      const Matrix<const T> wm(wp + g * cin_g * w.strides[0], Kokkos::LayoutLeft(std::size_t(M), std::size_t(cin_g)));
      const Matrix<T> cm(cols + g * M * HW, Kokkos::LayoutLeft(std::size_t(HW), std::size_t(M)));
      KokkosBlas::gemm("N", "T", T(1), xm, wm, T(0), cm);
    }
    const int64_t y0 = n * per_sample;
    Kokkos::parallel_for("kfuse::conv_transpose2d::col2im", Range(0, per_sample), KOKKOS_LAMBDA(int64_t i) {
      const int64_t ow = i % Wo, oh = (i / Wo) % Ho, co = i / (Wo * Ho);
      A acc = bp ? A(bp[co * bs]) : A(0);
      const T* c = cols + co * taps * HW;  // group-major rows: (g * cout_g + col) = co
      for (int64_t kh = 0; kh < kH; ++kh) {
        const int ih = th[oh * kH + kh];
        if (ih < 0) continue;
        const T* row = c + kh * kW * HW + ih * W;
        for (int64_t kw = 0; kw < kW; ++kw) {
          const int iw = tw[ow * kW + kw];
          if (iw >= 0) acc += A(row[kw * HW + iw]);
        }
      }
      yp[dense ? y0 + i : yix.offset(y0 + i)] = T(acc);
    });
  }
  Kokkos::fence();
}

}  // namespace

std::string GemmConv::refusal(const Shape& x, const Shape& w, const ConvTranspose2dParams& p, const Shape& y) {
  const int64_t HW = x[2] * x[3], cin_g = x[1] / p.groups, M = w[1] * w[2] * w[3];
  const auto empty = [](const Shape& s) { return std::find(s.begin(), s.end(), int64_t(0)) != s.end(); };
  if (empty(x) || empty(w) || empty(y)) return "there is nothing to multiply";
  if (x[2] > INT_MAX / x[3] || M > INT_MAX || cin_g > INT_MAX)
    return "a GEMM dimension passes 2^31 - 1 (BLAS takes 32-bit sizes)";
  if (y[2] > INT_MAX / w[2] || y[3] > INT_MAX / w[3]) return "its tap tables would pass 2^31 - 1 entries";
  if (M > (INT64_MAX / 8) / HW / p.groups) return "its column buffer would pass 2^63 bytes";
  // The GEMM multiplies every (input, tap) pair; those that land outside the
  // output (cropped by the padding) are work the gather never does.
  const auto landing = [](int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
    int64_t pairs = 0;
    for (int64_t t = 0; t < k; ++t) {
      const detail::TapRange r = detail::tap_range(in, out, t, stride, pad, dilation);
      pairs += r.hi - r.lo;
    }
    return double(pairs) / (double(in) * double(k));
  };
  const double useful = landing(x[2], y[2], w[2], p.stride[0], p.padding[0], p.dilation[0]) *
                        landing(x[3], y[3], w[3], p.stride[1], p.padding[1], p.dilation[1]);
  if (useful < 0.5)
    return detail::cat("the padding crops ", int(100 * (1 - useful) + 0.5),
                       "% of its products (the gather computes only those that land in the output)");
  return "";
}

GemmConv::GemmConv(const Shape& x, const Shape& w, const ConvTranspose2dParams& p, const Shape& y)
    : tap_rows_(tap_table(y[2], w[2], p.stride[0], p.padding[0], p.dilation[0], x[2])),
      tap_cols_(tap_table(y[3], w[3], p.stride[1], p.padding[1], p.dilation[1], x[3])) {}

std::string GemmConv::refusal(const TensorView& x, const TensorView& w) {
  const int64_t H = x.shape[2], W = x.shape[3];
  if (x.strides[3] != 1 || x.strides[2] != W || x.strides[1] != H * W)
    return "the input's channels and pixels are not dense (the GEMM reads each sample as one matrix)";
  if (w.strides[3] != 1 || w.strides[2] != w.shape[3] || w.strides[1] != w.shape[2] * w.shape[3] ||
      w.strides[0] != w.shape[1] * w.shape[2] * w.shape[3])
    return "the weight is not contiguous";
  return "";
}

void GemmConv::run(const TensorView& x, const TensorView& w, const std::optional<TensorView>& bias,
                   const ConvTranspose2dParams& p, const TensorView& y) const {
  dispatch_float(x.dtype, "conv_transpose2d",
                 [&](auto tag) { gemm_conv<decltype(tag)>(x, w, bias, p, y, tap_rows_.data(), tap_cols_.data()); });
}

}  // namespace kfuse::kokkos
