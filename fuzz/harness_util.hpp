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

inline double load(const kfuse::TensorView& v, int64_t off) {
  return v.dtype == kfuse::DType::f64 ? static_cast<const double*>(v.data)[off]
                                      : static_cast<const float*>(v.data)[off];
}

// Every element of a host f32/f64 view, row-major, as double.
inline std::vector<double> values_of(const kfuse::TensorView& v) {
  const int64_t n = v.numel();
  std::vector<double> out(static_cast<std::size_t>(n));
  if (n == 0) return out;
  const kfuse::Indexer ix = kfuse::make_indexer(v.shape, v.strides);
  for (int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = load(v, ix.offset(i));
  return out;
}

// Bitwise equality, except that any NaN equals any NaN.
inline bool same(double a, double b) {
  if (a != a || b != b) return a != a && b != b;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace kfuse_fuzz
