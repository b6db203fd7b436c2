// Tensors: a non-owning strided view, and an owning row-major tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kfuse/error.hpp"
#include "kfuse/shape.hpp"

namespace kfuse {

enum class DType { f32, f64, f16, bf16 };
enum class Memory { host, cuda };  // cuda: CUDA device memory (cudaMalloc or Kokkos::CudaSpace)

const char* to_string(DType d) noexcept;
const char* to_string(Memory m) noexcept;

// The memory of Kokkos's default execution space, where the portable backend
// runs: cuda for a Kokkos built with CUDA, host otherwise. The default memory
// of tensors and plans.
Memory kokkos_memory() noexcept;
std::size_t size_of(DType d) noexcept;

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }

// A strided N-d tensor someone else owns. Strides are in elements.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Memory memory = Memory::host;
  Shape shape;
  Shape strides;

  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape, Memory memory = Memory::host);  // row-major
  TensorView(void* data, DType dtype, Shape shape, Shape strides, Memory memory);

  template <class T>
  static TensorView of(T* data, Shape shape, Memory memory = Memory::host) {
    return TensorView(const_cast<std::remove_const_t<T>*>(data), dtype_of<std::remove_const_t<T>>(),
                      std::move(shape), memory);
  }

  int rank() const { return static_cast<int>(shape.size()); }
  int64_t numel() const;
  bool is_contiguous() const;
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * size_of(dtype); }

  // Typed pointer; throws unsupported naming `op` when the dtype differs.
  template <class T>
  T* ptr(const std::string& op = "TensorView") const {
    if (dtype != dtype_of<T>())
      fail(ErrorCategory::unsupported, op, "expected dtype ", to_string(dtype_of<T>()), ", got ",
           to_string(dtype));
    return static_cast<T*>(data);
  }
};

// Checks that a view is well formed (rank, non-negative extents, strides given
// for every axis, non-null data when non-empty); errors name op and arg.
void check_view(const TensorView& v, const std::string& op, const std::string& arg);

// An owning, row-major (NCHW) tensor. Host storage is a Kokkos::View in
// HostSpace; CUDA storage comes from the CUDA runtime (or Kokkos::CudaSpace).
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype, Memory memory = kokkos_memory());
  // A contiguous copy of `src` in `memory` (host<->cuda when CUDA is built in).
  static Tensor copy_of(const TensorView& src, Memory memory);

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }
  const Shape& shape() const { return view_.shape; }
  DType dtype() const { return view_.dtype; }
  Memory memory() const { return view_.memory; }
  int64_t numel() const { return view_.numel(); }
  template <class T> T* data() const { return view_.ptr<T>(); }
  bool defined() const { return storage_ != nullptr; }

 private:
  std::shared_ptr<void> storage_;
  TensorView view_;
};

// Element-wise copy between any two views of equal shape and dtype (strided,
// host or CUDA); the destination keeps its own strides.
void copy(const TensorView& src, const TensorView& dst);

// Debugging: while on, Tensor::empty fills new storage with all-ones bytes (a
// quiet NaN in every dtype), so an element that a kernel never writes reads
// back as NaN. Off by default; the environment variable
// KFUSE_POISON_NEW_TENSORS=1 turns it on at startup.
void set_poison_new_tensors(bool on);

}  // namespace kfuse
