// The fold strategy (DESIGN.md section 4): conv -> per-channel affine ops ->
// sum/mean over [2, 3] (or a superset, split) -> a row program on [N, Cout].
#include <algorithm>
#include <cmath>

#include "plan/fold.hpp"
#include "plan/lower.hpp"

namespace kfuse::detail {

template <class A>
Lowering lower_fold(const Pipeline& p, const Stages& st, Store<A>& store, std::vector<std::string>& notes) {
  Lowering at;
  if (st.empty() || !std::holds_alternative<ConvTranspose2dOp>(st[0].op)) {
    at.why = "the pipeline does not start with conv_transpose2d";
    return at;
  }
  const auto& conv = std::get<ConvTranspose2dOp>(st[0].op);
  const Shape& y = st[0].out_shape;
  const int64_t C = y[1];
  if (p.input_shape()[1] == 0) {  // the contraction would divide by cin_g = 0
    at.why = "the conv has no input channels (its output is its bias): nothing to fold";
    return at;
  }
  if (conv.weight.shape()[2] > kFoldMaxTaps || conv.weight.shape()[3] > kFoldMaxTaps) {
    at.why = cat("kernel ", conv.weight.shape()[2], "x", conv.weight.shape()[3], " exceeds the fold's ",
                         kFoldMaxTaps, " taps per axis");
    return at;
  }
  std::vector<double> a(C, 1.0), b(C, 0.0);
  std::size_t i = 1;
  for (; i < st.size(); ++i) {
    const Op& op = st[i].op;
    if (auto* u = std::get_if<UnaryOp>(&op)) {
      if (u->op.kind != UnaryKind::neg) break;
      for (int64_t c = 0; c < C; ++c) a[c] = -a[c], b[c] = -b[c];
      continue;
    }
    auto* bin = std::get_if<BinaryOp>(&op);
    if (!bin || bin->kind == BinaryKind::min || bin->kind == BinaryKind::max) break;
    std::vector<double> v(C, bin->scalar);
    if (bin->operand) {
      const Shape& os = bin->operand->shape();
      if (os.size() > 4) break;  // broadcasts the conv output to a higher rank: not per-channel
      Shape padded(4 - os.size(), 1);
      padded.insert(padded.end(), os.begin(), os.end());
      if (padded[0] != 1 || padded[2] != 1 || padded[3] != 1) break;  // not per-channel
      const TensorView& ov = bin->operand->view();
      for (int64_t c = 0; c < C; ++c) v[c] = host_value(ov, padded[1] == 1 ? 0 : c * ov.strides[ov.rank() - 3]);
    }
    for (int64_t c = 0; c < C; ++c) {
      switch (bin->kind) {
        case BinaryKind::add: b[c] += v[c]; break;
        case BinaryKind::sub: b[c] -= v[c]; break;
        case BinaryKind::mul: a[c] *= v[c], b[c] *= v[c]; break;
        default: a[c] /= v[c], b[c] /= v[c]; break;
      }
    }
  }
  auto* red = i < st.size() ? std::get_if<ReduceOp>(&st[i].op) : nullptr;
  const auto has = [&](int ax) { return red && std::find(red->axes.begin(), red->axes.end(), ax) != red->axes.end(); };
  if (!red || (red->kind != ReduceKind::sum && red->kind != ReduceKind::mean) || !has(2) || !has(3)) {
    at.why = i < st.size() ? op_text(st[i].op) + " follows the conv before any spatial sum/mean, and is not a per-channel affine op"
                           : "no spatial sum/mean follows the conv";
    return at;
  }
  const bool mean = red->kind == ReduceKind::mean;
  PipelineStage spatial = st[i];
  std::get<ReduceOp>(spatial.op).axes = {2, 3};
  spatial.out_shape = reduced_shape(spatial.in_shape, 0b1100, red->keepdim);
  Stages rest;
  if (red->axes.size() > 2) {  // sum/mean over {2,3} and more: the rest is a reduction of Z
    PipelineStage more = st[i];
    auto& ax = std::get<ReduceOp>(more.op).axes;
    ax.erase(std::remove_if(ax.begin(), ax.end(), [](int d) { return d >= 2; }), ax.end());
    more.in_shape = spatial.out_shape;
    notes.push_back(op_text(st[i].op) + " split into " + op_text(spatial.op) + " then " + op_text(more.op));
    rest.push_back(more);
  }
  rest.insert(rest.end(), st.begin() + i + 1, st.end());

  FoldStep<A> f{};
  f.geom = fold_geometry(p.input_shape(), conv, y);
  const FoldWeights fw = fold_weights(conv, y, a, b, mean);
  // A non-finite folded weight or bias (a NaN/inf conv weight, bias or affine
  // operand, a division by zero, an overflow in the dtype) would meet the
  // rectangle sums instead of each conv output: inf*0 and inf - inf land
  // elsewhere than in PyTorch's conv. Cheap to see here; the fused epilogue
  // then runs the conv as it is.
  const auto finite = [](double v) { return std::isfinite(static_cast<A>(v)); };
  if (!std::all_of(fw.weight.begin(), fw.weight.end(), finite) || !std::all_of(fw.bias.begin(), fw.bias.end(), finite)) {
    at.why = "a folded weight or bias is not finite (a NaN/inf weight, bias or affine operand, a division by zero, "
             "or an overflow): only the conv itself propagates it as PyTorch does";
    return at;
  }
  f.contraction.Cout = C;
  f.contraction.cin_g = p.input_shape()[1] / conv.params.groups;
  f.contraction.cout_g = conv.weight.shape()[1];
  f.contraction.weight = store.upload(std::vector<A>(fw.weight.begin(), fw.weight.end()));
  f.contraction.bias = store.upload(std::vector<A>(fw.bias.begin(), fw.bias.end()));
  if (!build_tail(rest, spatial.out_shape, checked_numel(p.output_shape(), "plan", "output"), store, f.tail, at.why)) {
    at.why = "the ops after the spatial reduction do not fit one row program: " + at.why;
    return at;
  }
  std::string chain;
  for (std::size_t k = 1; k < i; ++k) chain += " -> " + op_text(st[k].op);
  at.ok = true;
  at.why = "conv_transpose2d" + chain + " -> " + op_text(st[i].op) +
           ": the ops before the spatial reduction are per-channel affine, so it is computed from "
           "rectangle sums of x (one read of x) and a " +
           cat(f.contraction.cin_g * f.geom.taps(), " x ", C) + " contraction";
  at.steps.push_back(f);
  at.io.push_back(StepIO{0, kOutput, p.input_shape()});
  return at;
}

template Lowering lower_fold(const Pipeline&, const Stages&, Store<float>&, std::vector<std::string>&);
template Lowering lower_fold(const Pipeline&, const Stages&, Store<double>&, std::vector<std::string>&);

}  // namespace kfuse::detail
