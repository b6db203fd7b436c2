// Conversions between dtypes on the host: cast(), dtype_from(), and the
// element conversions they share with the generators (elements.hpp).
#include <cmath>
#include <cstring>

#include "kfuse/spec.hpp"
#include "spec/elements.hpp"

namespace kfuse {

namespace spec_detail {

namespace {

// float <-> float16 / bfloat16, round to nearest even.
uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (a < 0x38800000u) {  // below 2^-14: a half subnormal (or zero)
    float af;
    std::memcpy(&af, &a, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(static_cast<double>(af) * 16777216.0)));
  }
  uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
  const uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  float out;
  if (e == 0) {
    out = std::ldexp(static_cast<float>(m), -24);
    if (sign) out = -out;
    return out;
  }
  uint32_t x = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e - 15 + 127) << 23) | (m << 13));
  std::memcpy(&out, &x, 4);
  return out;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_f32(uint16_t h) {
  const uint32_t x = uint32_t(h) << 16;
  float out;
  std::memcpy(&out, &x, 4);
  return out;
}

}  // namespace

double round_to(double v, DType d) {
  switch (d) {
    case DType::f64: return v;
    case DType::f32: return static_cast<double>(static_cast<float>(v));
    case DType::f16: return f16_to_f32(f32_to_f16(static_cast<float>(v)));
    case DType::bf16: return bf16_to_f32(f32_to_bf16(static_cast<float>(v)));
  }
  return v;
}

void store(double v, DType d, void* base, int64_t i) {
  switch (d) {
    case DType::f64: static_cast<double*>(base)[i] = v; return;
    case DType::f32: static_cast<float*>(base)[i] = static_cast<float>(v); return;
    case DType::f16: static_cast<uint16_t*>(base)[i] = f32_to_f16(static_cast<float>(v)); return;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = f32_to_bf16(static_cast<float>(v)); return;
  }
}

double load(DType d, const void* base, int64_t off) {
  switch (d) {
    case DType::f64: return static_cast<const double*>(base)[off];
    case DType::f32: return static_cast<const float*>(base)[off];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(base)[off]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(base)[off]);
  }
  return 0.0;
}

Tensor cast_through(const TensorView& src, DType through, DType dtype) {
  check_view(src, "cast", "src");
  if (src.memory != Memory::host) fail(ErrorCategory::unsupported, "cast", "src must be a host tensor");
  Tensor out = Tensor::empty(src.shape, dtype, Memory::host);
  const int64_t n = src.numel();
  if (n == 0) return out;
  const Indexer ix = make_indexer(src.shape, src.strides);
  const bool contiguous = src.is_contiguous();
  void* dst = out.view().data;
  parallel_chunks(n, [&](int64_t b, int64_t e) {
    if (contiguous && src.dtype == DType::f32 && dtype == DType::f64) {
      const float* s = static_cast<const float*>(src.data);
      double* d = static_cast<double*>(dst);
      for (int64_t i = b; i < e; ++i) d[i] = s[i];
      return;
    }
    for (int64_t i = b; i < e; ++i) {
      const double v = load(src.dtype, src.data, contiguous ? i : ix.offset(i));
      store(round_to(v, through), dtype, dst, i);
    }
  });
  return out;
}

}  // namespace spec_detail

Tensor cast(const TensorView& src, DType dtype) { return spec_detail::cast_through(src, dtype, dtype); }

DType dtype_from(const std::string& name) {
  for (DType d : {DType::f32, DType::f64, DType::f16, DType::bf16})
    if (name == to_string(d)) return d;
  fail(ErrorCategory::invalid_argument, "dtype", "unknown dtype '", name, "' (valid: float32, float64, float16, bfloat16)");
}

}  // namespace kfuse
