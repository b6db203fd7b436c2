// Element conversions of the host-side spec code: float <-> float16 /
// bfloat16 (round to nearest even), loads and stores of any dtype through
// double, and long loops split over a few threads. Shared by the generators
// (generate.cpp), dtype conversion (cast.cpp) and the spec parser.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "kfuse/spec.hpp"
#include "kfuse/tensor.hpp"

namespace kfuse::spec_detail {

double round_to(double v, DType d);                    // v as dtype d holds it
void store(double v, DType d, void* base, int64_t i);  // base[i] = v in dtype d
double load(DType d, const void* base, int64_t off);   // base[off] of dtype d

// `src` converted to `dtype` through `through`: each value rounded to
// `through` first (a spec's own dtype), then stored as `dtype`.
Tensor cast_through(const TensorView& src, DType through, DType dtype);
// Values of `init` over [begin, end) of `shape`, rounded to `through`, stored as `dtype`.
void generate_through(const Shape& shape, DType dtype, DType through, const InitSpec& init, int64_t begin, int64_t end,
                      void* out);

// Runs f(begin, end) over [0, n) on a few threads when n is large.
template <class F>
void parallel_chunks(int64_t n, F&& f) {
  const int64_t min_per_thread = int64_t(1) << 20;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads = std::min<int64_t>({static_cast<int64_t>(std::min(hw, 32u)), n / min_per_thread});
  if (threads <= 1) return f(int64_t(0), n);
  std::vector<std::thread> pool;
  const int64_t per = (n + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t b = t * per, e = std::min(n, b + per);
    if (b < e) pool.emplace_back([&f, b, e] { f(b, e); });
  }
  for (auto& th : pool) th.join();
}

}  // namespace kfuse::spec_detail
