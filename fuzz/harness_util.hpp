// Helpers shared by the harnesses (not part of kfuse).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <typeinfo>
#include <vector>

#include "kfuse/error.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse_fuzz {

// Runs a harness's check: every expected kfuse::Error is handled inside it,
// so any exception that reaches here is a finding, described in the result.
template <class Check>
std::string guarded(Check&& check) {
  try {
    return check();
  } catch (const kfuse::Error& e) {
    return std::string("kfuse::Error from a step that must succeed: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("an exception that is not kfuse::Error: ") + typeid(e).name() + ": " + e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

// Reads decisions from the fuzzer's bytes; past the end every read is 0, so
// any prefix of an input is itself a valid (smaller) input.
class Bytes {
 public:
  Bytes(const uint8_t* data, std::size_t size) : d_(data), n_(size) {}
  uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  uint64_t u64() {
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = v << 8 | u8();
    return v;
  }
  int below(int n) { return n <= 1 ? 0 : u8() % n; }                                    // [0, n)
  int64_t in(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(u8()) % (hi - lo + 1); }  // [lo, hi], hi - lo < 256
  bool chance(int one_in) { return below(one_in) == 0; }

  // Usually in [lo, hi]; one time in 16 a value chosen to break index arithmetic.
  int64_t hostile(int64_t lo, int64_t hi) {
    static constexpr int64_t kExtreme[] = {
        0, -1, -7, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
        std::numeric_limits<int64_t>::max() / 2, std::numeric_limits<int64_t>::min() / 2, int64_t(1) << 31,
        (int64_t(1) << 31) - 1, int64_t(1) << 32, int64_t(1) << 62, -(int64_t(1) << 62), 1000000, 65536,
        3037000500,  // just above sqrt(2^63)
    };
    if (chance(16)) return kExtreme[below(sizeof kExtreme / sizeof kExtreme[0])];
    return in(lo, hi);
  }

 private:
  const uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

// ---- Memory. The Kokkos kernels run on kfuse::kokkos_memory() (CUDA memory
// when Kokkos runs on CUDA), while inputs are built and results are read on
// the host. Shared with the test suite (tests/reference.hpp).

// A host buffer and its copy in kfuse::kokkos_memory() (none when that is the
// host). at() maps a view over the buffer to the same shape, strides and
// offset in the copy, so strided, stride-0 and permuted layouts reach the
// kernels unchanged. The copy is taken once: the buffer must not change after.
class Mirror {
 public:
  Mirror() = default;
  Mirror(const void* buffer, int64_t count, kfuse::DType dtype)
      : buffer_(static_cast<const char*>(buffer)), dtype_(dtype) {
    if (kfuse::kokkos_memory() == kfuse::Memory::host) return;
    copy_ = kfuse::Tensor::empty({count}, dtype);
    kfuse::copy(kfuse::TensorView(const_cast<void*>(buffer), dtype, {count}), copy_.view());
  }
  template <class T>
  explicit Mirror(const std::vector<T>& buffer)
      : Mirror(buffer.data(), static_cast<int64_t>(buffer.size()), kfuse::dtype_of<T>()) {}

  kfuse::TensorView at(kfuse::TensorView v) const {
    if (!copy_.defined()) return v;
    v.data = static_cast<char*>(copy_.view().data) + (static_cast<const char*>(v.data) - buffer_);
    v.memory = copy_.memory();
    return v;
  }
  // The view of the buffer with `shape` and `strides`, `offset` elements in, mapped to the copy.
  kfuse::TensorView view(kfuse::Shape shape, kfuse::Shape strides, int64_t offset = 0) const {
    char* first = const_cast<char*>(buffer_) + offset * static_cast<int64_t>(kfuse::size_of(dtype_));
    return at(kfuse::TensorView(first, dtype_, std::move(shape), std::move(strides), kfuse::Memory::host));
  }

 private:
  const char* buffer_ = nullptr;
  kfuse::DType dtype_ = kfuse::DType::f32;
  kfuse::Tensor copy_;
};

// Every element of an f32/f64 view in either memory, row-major, as double.
inline std::vector<double> values_of(const kfuse::TensorView& view) {
  // CUDA memory: a row-major host copy first (kfuse::copy).
  const kfuse::Tensor staged =
      view.memory == kfuse::Memory::host ? kfuse::Tensor() : kfuse::Tensor::copy_of(view, kfuse::Memory::host);
  const kfuse::TensorView& v = staged.defined() ? staged.view() : view;
  const int64_t n = v.numel();
  std::vector<double> out(static_cast<std::size_t>(n));
  std::vector<int64_t> idx(static_cast<std::size_t>(v.rank()), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[static_cast<std::size_t>(i)] = v.dtype == kfuse::DType::f64 ? static_cast<const double*>(v.data)[off]
                                                                    : static_cast<const float*>(v.data)[off];
    for (int d = v.rank() - 1; d >= 0; --d) {  // the next row-major index, and its offset
      off += v.strides[d];
      if (++idx[d] < v.shape[d]) break;
      off -= v.shape[d] * v.strides[d];
      idx[d] = 0;
    }
  }
  return out;
}

// Bitwise equality, except that any NaN equals any NaN.
inline bool same(double a, double b) {
  if (a != a || b != b) return a != a && b != b;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace kfuse_fuzz
