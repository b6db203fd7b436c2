// Shapes, strides and the 64-bit index arithmetic every kernel uses.
#pragma once

#ifndef __CUDACC_RTC__  // NVRTC (backends/cuda/jit.cpp) sees the Indexer only
#include <cstdint>
#include <string>
#include <vector>
#endif

#include "kfuse/detail/hd.hpp"

namespace kfuse {

inline constexpr int kMaxRank = 8;

#ifndef __CUDACC_RTC__

using Shape = std::vector<int64_t>;

std::string to_string(const Shape& s);  // "[16, 64, 512, 512]"

// Product of the extents; throws overflow (naming op and arg) past 2^63-1.
int64_t checked_numel(const Shape& shape, const std::string& op, const std::string& arg);
// checked_numel, and the nonzero extents multiply within 2^63-1 as well: then
// any product of extents (a row, the reduced axes, a stride) fits 64 bits,
// even where a zero extent empties the shape. Pipelines hold such shapes only.
int64_t checked_extents(const Shape& shape, const std::string& op, const std::string& arg);

// Row-major (C order) strides, in elements.
Shape contiguous_strides(const Shape& shape);
// The strides of a rank-4 [N, C, H, W] tensor stored channels-last (NHWC).
Shape channels_last_strides(const Shape& nchw);

// NumPy broadcasting of two shapes; throws shape_mismatch naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& op);

// Checks an axis list against a rank (negative axes count from the end),
// rejecting out-of-range and duplicate axes; returns a bit mask of the axes.
uint32_t axes_mask(const std::vector<int>& axes, int rank, const std::string& op);

// The shape after reducing the axes in `mask`.
Shape reduced_shape(const Shape& shape, uint32_t mask, bool keepdim);

#endif  // __CUDACC_RTC__

// Maps a row-major linear index over `size` to an element offset through
// `stride`. A zero stride broadcasts. Plain data: passed by value to kernels.
// make_indexer builds it with the axes of extent 1 dropped and neighbours
// that walk as one axis merged (the same offsets, fewer divisions), and with
// each extent's 32-bit reciprocal: where every index it maps fits 32 bits
// (`fast`), a linear index is split into coordinates by a multiply-high and a
// shift per axis (Granlund-Montgomery, as PyTorch's IntDivider), where a
// 64-bit division costs tens of instructions on a GPU; otherwise by 64-bit
// division. Which path is decided per Indexer, not per index: a test of the
// index kept both paths in every compiled chain, the 64-bit one issued under
// a predicate (H200, the channels-last map of a chain with two per-channel
// operands, bfloat16: 0.393 -> 0.334 ms). Outer axes of stride 0 (an operand
// broadcast over them) are not split off at all.
struct Indexer {
  int rank = 0;
  int live = 0;  // axes [live, rank) are walked: those before have stride 0
  int64_t size[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
  uint32_t magic[kMaxRank] = {};  // q = (umulhi(n, magic) + n) >> shift  (n < 2^32)
  uint32_t shift[kMaxRank] = {};
  bool fast = false;              // extents at most 2^31, their product at most 2^32: reciprocals set

  KFUSE_HDI int64_t offset(int64_t linear) const {
    int64_t innermost = 0;
    return offset(linear, innermost);
  }

  // offset(linear), and the coordinate along the innermost walked axis
  // (rank - 1; left as it is when no axis is walked).
  KFUSE_HDI int64_t offset(int64_t linear, int64_t& innermost) const {
    int64_t off = 0;
    if (fast) {
      uint32_t n = static_cast<uint32_t>(linear);
      for (int d = rank - 1; d >= live; --d) {
        const uint32_t q = divide(n, d);
        const int64_t c = n - q * static_cast<uint32_t>(size[d]);
        if (d == rank - 1) innermost = c;
        off += c * stride[d];
        n = q;
      }
      return off;
    }
    for (int d = rank - 1; d >= live; --d) {
      const int64_t c = linear % size[d];
      if (d == rank - 1) innermost = c;
      linear /= size[d];
      off += c * stride[d];
    }
    return off;
  }

  // Whether offset(linear + k * di) == first + k * step for every k in
  // [0, count) (di >= 0, count >= 1): indices along the innermost walked
  // axis, or at a step di that is the product of the extents inside another
  // walked axis (e.g. the channels of NCHW data at the step H x W), without
  // leaving that axis; or no walked axis or di == 0 (step 0: e.g. a
  // per-channel operand along an output's reduced axis, where a compiled
  // chain then has one lookup and no branch). One walk for the run where
  // offset() per index takes one each. May answer false for runs that are
  // affine; first is set either way.
  KFUSE_HDI bool run(int64_t linear, int64_t di, int64_t count, int64_t& first, int64_t& step) const {
    if (live == rank || di == 0) {
      first = offset(linear);
      step = 0;
      return true;
    }
    int64_t innermost = 0;
    first = offset(linear, innermost);
    step = stride[rank - 1] * di;
    if (innermost + (count - 1) * di < size[rank - 1]) return true;
    int64_t inner = size[rank - 1];
    for (int d = rank - 2; d >= live && inner <= di; --d) {
      if (inner == di) {
        step = stride[d];
        return coordinate(linear, d) + count - 1 < size[d];
      }
      inner *= size[d];
    }
    return false;
  }

  // The coordinate of `linear` along axis d.
  KFUSE_HDI int64_t coordinate(int64_t linear, int d) const {
    if (fast) {
      uint32_t n = static_cast<uint32_t>(linear);
      for (int e = rank - 1; e > d; --e) n = divide(n, e);
      return n - divide(n, d) * static_cast<uint32_t>(size[d]);
    }
    for (int e = rank - 1; e > d; --e) linear /= size[e];
    return linear % size[d];
  }

  KFUSE_HDI uint32_t divide(uint32_t n, int d) const {
#ifdef __CUDA_ARCH__
    const uint64_t hi = __umulhi(n, magic[d]);
#else
    const uint64_t hi = (static_cast<uint64_t>(n) * magic[d]) >> 32;
#endif
    return static_cast<uint32_t>((hi + n) >> shift[d]);
  }

  // Whether it walks its elements contiguously (row-major, unit innermost
  // stride). With no elements nothing is out of place (and the other
  // extents' product may not even fit in 64 bits).
  KFUSE_HDI bool is_dense() const {
    for (int d = 0; d < rank; ++d)
      if (size[d] == 0) return true;
    int64_t expect = 1;
    for (int d = rank - 1; d >= 0; --d) {
      if (size[d] != 1 && stride[d] != expect) return false;
      expect *= size[d];
    }
    return true;
  }
};

#ifndef __CUDACC_RTC__
Indexer make_indexer(const Shape& size, const Shape& stride);

// The strides over `out_shape` of a tensor of `in_shape`/`in_strides` that
// broadcasts to it (stride 0 on broadcast axes), and its Indexer.
Shape broadcast_strides(const Shape& out_shape, const Shape& in_shape, const Shape& in_strides);
Indexer broadcast_indexer(const Shape& out_shape, const Shape& in_shape, const Shape& in_strides);

// Splits `shape`/`strides` by `mask`: the axes in mask (reduced) and the others (kept).
void split_axes(const Shape& shape, const Shape& strides, uint32_t mask, Indexer& kept,
                Indexer& reduced);

#endif  // __CUDACC_RTC__

}  // namespace kfuse
