#include "kfuse/shape.hpp"

#include <algorithm>
#include <limits>

#include "kfuse/error.hpp"

namespace kfuse {

std::string to_string(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t checked_numel(const Shape& shape, const std::string& op, const std::string& arg) {
  int64_t n = 1;
  for (int64_t e : shape) {
    if (e < 0) fail(ErrorCategory::invalid_argument, op, arg, " has a negative extent: ", to_string(shape));
    if (e != 0 && n > std::numeric_limits<int64_t>::max() / e)
      fail(ErrorCategory::overflow, op, arg, " of shape ", to_string(shape),
           " has more than 2^63-1 elements");
    n *= e;
  }
  return n;
}

int64_t checked_extents(const Shape& shape, const std::string& op, const std::string& arg) {
  const int64_t numel = checked_numel(shape, op, arg);
  int64_t n = 1;
  for (int64_t e : shape)
    if (e > 0 && __builtin_mul_overflow(n, e, &n))
      fail(ErrorCategory::overflow, op, arg, " of shape ", to_string(shape),
           " is empty but its nonzero extents multiply past 2^63-1");
  return numel;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    // A shape whose element count overflows has no valid strides; saturate
    // (no signed overflow) and let checked_numel/check_view reject the view.
    if (__builtin_mul_overflow(s, shape[i] > 0 ? shape[i] : 1, &s)) s = std::numeric_limits<int64_t>::max();
  }
  return st;
}

Shape channels_last_strides(const Shape& s) {
  if (s.size() != 4) fail(ErrorCategory::invalid_argument, "channels_last_strides", "shape ", to_string(s), " is not [N, C, H, W]");
  const Shape nhwc = contiguous_strides({s[0], s[2], s[3], s[1]});
  return {nhwc[0], nhwc[3], nhwc[1], nhwc[2]};
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& op) {
  const std::size_t r = std::max(a.size(), b.size());
  if (r > static_cast<std::size_t>(kMaxRank))
    fail(ErrorCategory::unsupported, op, "rank ", r, " exceeds the maximum rank ", kMaxRank);
  Shape out(r);
  for (std::size_t i = 0; i < r; ++i) {
    const int64_t ea = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t eb = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (ea != eb && ea != 1 && eb != 1)
      fail(ErrorCategory::shape_mismatch, op, "shapes ", to_string(a), " and ", to_string(b),
           " do not broadcast (axis ", i, ": ", ea, " vs ", eb, ")");
    out[i] = ea == 1 ? eb : ea;
  }
  return out;
}

uint32_t axes_mask(const std::vector<int>& axes, int rank, const std::string& op) {
  uint32_t mask = 0;
  for (int a : axes) {
    if (a < -rank || a >= rank)
      fail(ErrorCategory::invalid_argument, op, "axis ", a, " is out of range for rank ", rank,
           " (valid: ", -rank, " to ", rank - 1, ")");
    const int d = a < 0 ? a + rank : a;
    if (mask & (1u << d)) fail(ErrorCategory::invalid_argument, op, "axis ", d, " appears twice in the axes");
    mask |= 1u << d;
  }
  return mask;
}

Shape reduced_shape(const Shape& shape, uint32_t mask, bool keepdim) {
  Shape out;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (mask & (1u << d)) {
      if (keepdim) out.push_back(1);
    } else {
      out.push_back(shape[d]);
    }
  }
  return out;
}

Indexer make_indexer(const Shape& size, const Shape& stride) {
  if (size.size() > static_cast<std::size_t>(kMaxRank))
    fail(ErrorCategory::unsupported, "Indexer", "rank ", size.size(), " exceeds the maximum rank ", kMaxRank);
  Indexer ix;
  const bool empty = std::find(size.begin(), size.end(), int64_t(0)) != size.end();
  for (std::size_t d = 0; d < size.size(); ++d) {
    if (size[d] == 1 && !empty) continue;  // coordinate always 0
    // Merge with the axis before when the two walk as one: outer stride = inner stride x inner extent.
    if (ix.rank > 0 && !empty && ix.stride[ix.rank - 1] == stride[d] * size[d]) {
      ix.size[ix.rank - 1] *= size[d];
      ix.stride[ix.rank - 1] = stride[d];
      continue;
    }
    ix.size[ix.rank] = size[d];
    ix.stride[ix.rank] = stride[d];
    ++ix.rank;
  }
  while (ix.live < ix.rank && ix.stride[ix.live] == 0) ++ix.live;
  ix.fast = true;
  uint64_t indices = 1;  // the product of the extents, while it stays within 2^32
  for (int d = 0; d < ix.rank; ++d) {
    const uint64_t divisor = static_cast<uint64_t>(ix.size[d]);
    if (divisor == 0 || divisor > (uint64_t(1) << 31) || divisor > (uint64_t(1) << 32) / indices) {
      ix.fast = false;
      break;
    }
    indices *= divisor;
    uint32_t s = 0;
    while ((uint64_t(1) << s) < divisor) ++s;
    ix.shift[d] = s;
    ix.magic[d] = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << s) - divisor)) / divisor + 1);
  }
  return ix;
}

Shape broadcast_strides(const Shape& out_shape, const Shape& in_shape, const Shape& in_strides) {
  Shape stride(out_shape.size(), 0);
  const std::size_t lead = out_shape.size() - in_shape.size();
  for (std::size_t i = 0; i < in_shape.size(); ++i)
    stride[lead + i] = in_shape[i] == 1 ? 0 : in_strides[i];
  return stride;
}

Indexer broadcast_indexer(const Shape& out_shape, const Shape& in_shape, const Shape& in_strides) {
  return make_indexer(out_shape, broadcast_strides(out_shape, in_shape, in_strides));
}

void split_axes(const Shape& shape, const Shape& strides, uint32_t mask, Indexer& kept, Indexer& reduced) {
  Shape ks, kst, rs, rst;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (mask & (1u << d)) {
      rs.push_back(shape[d]);
      rst.push_back(strides[d]);
    } else {
      ks.push_back(shape[d]);
      kst.push_back(strides[d]);
    }
  }
  kept = make_indexer(ks, kst);
  reduced = make_indexer(rs, rst);
}

}  // namespace kfuse
