#include "plan/fold.hpp"

#include <algorithm>

namespace kfuse::detail {

namespace {
// Cuts one axis into segments so that every tap's range is a union of them.
void cut_axis(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d, int& segments, int64_t* cut,
              uint64_t* taps) {
  std::vector<int64_t> c = {0, in};
  std::vector<TapRange> r;
  for (int64_t t = 0; t < k; ++t) {
    r.push_back(tap_range(in, out, t, s, p, d));
    c.push_back(r.back().lo);
    c.push_back(r.back().hi);
  }
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  segments = static_cast<int>(c.size()) - 1;
  std::copy(c.begin(), c.end(), cut);
  for (int64_t t = 0; t < k; ++t) {
    taps[t] = 0;
    for (int seg = 0; seg < segments; ++seg)
      if (cut[seg] >= r[t].lo && cut[seg + 1] <= r[t].hi) taps[t] |= uint64_t(1) << seg;
  }
}
}  // namespace

FoldGeometry fold_geometry(const Shape& x, const ConvTranspose2dOp& conv, const Shape& y) {
  FoldGeometry g{};
  g.N = x[0];
  g.C = x[1];
  g.H = x[2];
  g.W = x[3];
  const Shape& w = conv.weight.shape();
  g.kH = static_cast<int>(w[2]);
  g.kW = static_cast<int>(w[3]);
  const auto& p = conv.params;
  cut_axis(g.H, y[2], g.kH, p.stride[0], p.padding[0], p.dilation[0], g.row_segments, g.row_cut, g.row_taps);
  cut_axis(g.W, y[3], g.kW, p.stride[1], p.padding[1], p.dilation[1], g.col_segments, g.col_cut, g.col_taps);
  g.chunks = 1;
  g.rows_per_chunk = g.H;
  return g;
}

FoldWeights fold_weights(const ConvTranspose2dOp& conv, const Shape& y, const std::vector<double>& a,
                         const std::vector<double>& b, bool mean) {
  const TensorView& w = conv.weight.view();
  const int64_t cin = w.shape[0], cout_g = w.shape[1], kH = w.shape[2], kW = w.shape[3];
  const int64_t groups = conv.params.groups, cin_g = cin / groups, cout = cout_g * groups, taps = kH * kW;
  const double area = double(y[2]) * double(y[3]);
  const double scale = mean ? 1.0 / area : 1.0;
  auto wat = [&](int64_t ci, int64_t co, int64_t t) -> double {
    const int64_t off = ci * w.strides[0] + co * w.strides[1] + (t / kW) * w.strides[2] + (t % kW) * w.strides[3];
    return w.dtype == DType::f64 ? static_cast<const double*>(w.data)[off] : static_cast<const float*>(w.data)[off];
  };
  FoldWeights f;
  f.weight.assign(static_cast<std::size_t>(cin_g * taps * cout), 0.0);
  f.bias.assign(static_cast<std::size_t>(cout), 0.0);
  for (int64_t co = 0; co < cout; ++co) {
    const int64_t g = co / cout_g, col = co % cout_g;
    for (int64_t c = 0; c < cin_g; ++c)
      for (int64_t t = 0; t < taps; ++t) f.weight[(c * taps + t) * cout + co] = wat(g * cin_g + c, col, t) * a[co] * scale;
    double cb = 0.0;
    if (conv.bias) {
      const TensorView& bv = conv.bias->view();
      cb = bv.dtype == DType::f64 ? static_cast<const double*>(bv.data)[co * bv.strides[0]]
                                  : static_cast<const float*>(bv.data)[co * bv.strides[0]];
    }
    f.bias[co] = (a[co] * cb + b[co]) * area * scale;
  }
  return f;
}

}  // namespace kfuse::detail
