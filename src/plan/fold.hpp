// Host-side construction of the fold's descriptors (DESIGN.md section 4).
#pragma once

#include <string>
#include <vector>

#include "kfuse/detail/conv.hpp"
#include "kfuse/detail/program.hpp"
#include "kfuse/pipeline.hpp"

namespace kfuse::detail {

// Segment cuts and tap masks for x [N, C, H, W] under `conv`. Strides and
// chunking are filled in by the backend at launch.
FoldGeometry fold_geometry(const Shape& x_shape, const ConvTranspose2dOp& conv, const Shape& y_shape);

// Contraction weights [cin_g * taps, Cout] and bias [Cout] in double, with
// y' = a[co] * y + b[co] (the affine ops before the spatial reduction), the
// conv bias and the reduction's scale (1/(Hout*Wout) for mean) folded in.
struct FoldWeights {
  std::vector<double> weight, bias;
};
FoldWeights fold_weights(const ConvTranspose2dOp& conv, const Shape& y_shape, const std::vector<double>& a,
                         const std::vector<double>& b, bool mean);

}  // namespace kfuse::detail
