// The generators of spec tensors: counter-based random values (splitmix64),
// so any slice of a tensor is computed alone and equals the same elements of
// the whole; PyTorch's default conv init bounds (conv_default).
#include <cmath>

#include "kfuse/spec.hpp"
#include "spec/elements.hpp"

namespace kfuse {

using spec_detail::parallel_chunks;
using spec_detail::round_to;
using spec_detail::store;

uint64_t splitmix64(uint64_t x) noexcept {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(uint64_t seed, uint64_t counter) noexcept {
  const uint64_t bits = splitmix64(seed * 0x9E3779B97F4A7C15ull + counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

const char* to_string(InitKind k) noexcept {
  switch (k) {
    case InitKind::uniform: return "uniform";
    case InitKind::randn: return "randn";
    case InitKind::conv_default: return "conv_default";
    case InitKind::constant: return "constant";
  }
  return "unknown";
}

int64_t conv_default_fan_in(const Shape& shape, const InitSpec& init) {
  if (init.fan_in) {
    if (*init.fan_in <= 0) fail(ErrorCategory::invalid_argument, "conv_default", "fan_in must be positive, got ", *init.fan_in);
    return *init.fan_in;
  }
  if (shape.size() < 2)
    fail(ErrorCategory::invalid_argument, "conv_default",
         "fan_in cannot be derived from a tensor of rank ", shape.size(), " ", to_string(shape),
         " (it is shape[1] * prod(shape[2:]) of a conv weight); give fan_in");
  int64_t f = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) f *= shape[d];
  if (f <= 0) fail(ErrorCategory::invalid_argument, "conv_default", "fan_in of ", to_string(shape), " is 0");
  return f;
}

namespace {

constexpr uint64_t kRandnSalt = 0x5DEECE66Dull;

// Parameters resolved once per tensor, so the per-element work is small.
struct Gen {
  InitKind kind;
  uint64_t seed;
  double a, b;  // uniform: low, high - low; randn: mean, std; constant: value
  double at(int64_t i) const {
    switch (kind) {
      case InitKind::uniform:
      case InitKind::conv_default: return a + b * uniform01(seed, static_cast<uint64_t>(i));
      case InitKind::randn: {
        const double u1 = uniform01(seed, 2 * static_cast<uint64_t>(i));
        const double u2 = uniform01(seed, 2 * static_cast<uint64_t>(i) + 1);
        return a + b * std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
      }
      case InitKind::constant: return a;
    }
    return 0.0;
  }
};

Gen make_gen(const Shape& shape, const InitSpec& init) {
  switch (init.kind) {
    case InitKind::uniform: return {init.kind, init.seed, init.low, init.high - init.low};
    case InitKind::randn: return {init.kind, splitmix64(init.seed ^ kRandnSalt), init.mean, init.stddev};
    case InitKind::conv_default: {
      const double bound = 1.0 / std::sqrt(static_cast<double>(conv_default_fan_in(shape, init)));
      return {init.kind, init.seed, -bound, 2.0 * bound};
    }
    case InitKind::constant: return {init.kind, 0, init.value, 0.0};
  }
  return {};
}


}  // namespace

void spec_detail::generate_through(const Shape& shape, DType dtype, DType through, const InitSpec& init, int64_t begin,
                   int64_t end, void* out) {
  const int64_t numel = checked_numel(shape, "generate", "shape");
  if (begin < 0 || end < begin || end > numel)
    fail(ErrorCategory::invalid_argument, "generate", "slice [", begin, ", ", end, ") is outside [0, ", numel,
         ") of shape ", to_string(shape));
  const Gen g = make_gen(shape, init);
  parallel_chunks(end - begin, [&](int64_t b, int64_t e) {
    if (dtype == DType::f32 && (through == DType::f32 || through == DType::f64)) {
      float* o = static_cast<float*>(out);
      for (int64_t i = b; i < e; ++i) o[i] = static_cast<float>(g.at(begin + i));
    } else if (dtype == DType::f64 && through == DType::f64) {
      double* o = static_cast<double*>(out);
      for (int64_t i = b; i < e; ++i) o[i] = g.at(begin + i);
    } else {
      for (int64_t i = b; i < e; ++i) store(round_to(g.at(begin + i), through), dtype, out, i);
    }
  });
}

double generated_value(const Shape& shape, const InitSpec& init, int64_t i) {
  return make_gen(shape, init).at(i);
}

void generate_into(const Shape& shape, DType dtype, const InitSpec& init, int64_t begin, int64_t end, void* out) {
  spec_detail::generate_through(shape, dtype, dtype, init, begin, end, out);
}

Tensor generate(const Shape& shape, DType dtype, const InitSpec& init) {
  Tensor t = Tensor::empty(shape, dtype, Memory::host);
  spec_detail::generate_through(shape, dtype, dtype, init, 0, t.numel(), t.view().data);
  return t;
}

Tensor generate_slice(const Shape& shape, DType dtype, const InitSpec& init, int64_t begin, int64_t end) {
  const int64_t numel = checked_numel(shape, "generate_slice", "shape");
  if (begin < 0 || end < begin || end > numel)
    fail(ErrorCategory::invalid_argument, "generate_slice", "slice [", begin, ", ", end, ") is outside [0, ", numel,
         ") of shape ", to_string(shape));
  Tensor t = Tensor::empty({end - begin}, dtype, Memory::host);
  spec_detail::generate_through(shape, dtype, dtype, init, begin, end, t.view().data);
  return t;
}

}  // namespace kfuse
