#include "kfuse/tensor.hpp"

#include <atomic>
#include <cstring>
#include <vector>

#include "core/device_runtime.hpp"
#include "core/env.hpp"
#include "kfuse/kokkos.hpp"

namespace kfuse {

const char* to_string(DType d) noexcept {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "unknown";
}

const char* to_string(Memory m) noexcept { return m == Memory::host ? "host" : "cuda"; }

Memory kokkos_memory() noexcept { return kKokkosOnCuda ? Memory::cuda : Memory::host; }

std::size_t size_of(DType d) noexcept {
  switch (d) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16:
    case DType::bf16: return 2;
  }
  return 0;
}

TensorView::TensorView(void* data_, DType dtype_, Shape shape_, Memory memory_)
    : data(data_), dtype(dtype_), memory(memory_), shape(std::move(shape_)) {
  strides = contiguous_strides(shape);
}

TensorView::TensorView(void* data_, DType dtype_, Shape shape_, Shape strides_, Memory memory_)
    : data(data_), dtype(dtype_), memory(memory_), shape(std::move(shape_)), strides(std::move(strides_)) {}

int64_t TensorView::numel() const { return checked_numel(shape, "TensorView", "shape"); }

bool TensorView::is_contiguous() const {
  if (rank() > kMaxRank) return false;  // no kernel takes it (check_view says why)
  return make_indexer(shape, strides).is_dense();
}

void check_view(const TensorView& v, const std::string& op, const std::string& arg) {
  if (v.rank() > kMaxRank)
    fail(ErrorCategory::unsupported, op, arg, " has rank ", v.rank(), "; the maximum is ", kMaxRank);
  if (v.strides.size() != v.shape.size())
    fail(ErrorCategory::invalid_argument, op, arg, " has ", v.strides.size(), " strides for rank ", v.rank());
  const int64_t n = checked_numel(v.shape, op, arg);
  if (n > 0 && v.data == nullptr) fail(ErrorCategory::invalid_argument, op, arg, " has no data (null pointer)");
  if (n == 0) return;  // no element is ever addressed, whatever the strides
  // The largest offset must fit in 64 bits too.
  int64_t span = 0;
  for (int d = 0; d < v.rank(); ++d) {
    const int64_t st = v.strides[d] < 0 ? -v.strides[d] : v.strides[d];
    if (st != 0 && v.shape[d] - 1 > (INT64_MAX - span) / st)
      fail(ErrorCategory::overflow, op, arg, " with shape ", to_string(v.shape), " and strides ",
           to_string(v.strides), " spans more than 2^63-1 elements");
    span += (v.shape[d] - 1) * st;
  }
}

namespace {
std::atomic<bool>& poison_new_tensors() {
  static std::atomic<bool> on{detail::env_flag("KFUSE_POISON_NEW_TENSORS").value_or(false)};
  return on;
}
}  // namespace

void set_poison_new_tensors(bool on) { poison_new_tensors() = on; }

Tensor Tensor::empty(Shape shape, DType dtype, Memory memory) {
  const int64_t n = checked_numel(shape, "Tensor::empty", "shape");
  if (static_cast<uint64_t>(n) > SIZE_MAX / size_of(dtype))
    fail(ErrorCategory::overflow, "Tensor::empty", "shape ", to_string(shape), " needs more bytes than size_t holds");
  const std::size_t bytes = static_cast<std::size_t>(n) * size_of(dtype);
  Tensor t;
  if (memory == Memory::host) {
    // Host storage is a Kokkos::View; the shared_ptr keeps it alive. Kokkos
    // reports a failed allocation as Kokkos::Experimental::RawMemoryAllocationFailure
    // (a std::bad_alloc) or std::runtime_error: kfuse's callers get an Error.
    try {
      auto view = std::make_shared<Kokkos::View<unsigned char*, Kokkos::HostSpace>>(
          Kokkos::view_alloc(std::string("kfuse::tensor"), Kokkos::WithoutInitializing), bytes > 0 ? bytes : 1);
      t.storage_ = std::shared_ptr<void>(view, view->data());
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      std::string why = e.what();
      why = why.substr(0, why.find('\n'));
      fail(ErrorCategory::backend, "Tensor::empty", "cannot allocate ", bytes, " bytes of host memory for shape ",
           to_string(shape), " ", to_string(dtype), " (", why, ")");
    }
  } else {
    // device::allocate names the CUDA call and error; say what it was for, as for the host.
    void* p = nullptr;
    try {
      p = device::allocate(bytes > 0 ? bytes : 1);
    } catch (const Error& e) {
      if (e.category() != ErrorCategory::backend) throw;  // no CUDA in this build
      fail(ErrorCategory::backend, "Tensor::empty", "cannot allocate ", bytes, " bytes of cuda memory for shape ",
           to_string(shape), " ", to_string(dtype), " (", e.what(), ")");
    }
    t.storage_ = std::shared_ptr<void>(p, [](void* q) { device::release(q); });
  }
  if (poison_new_tensors().load(std::memory_order_relaxed) && bytes > 0) {
    if (memory == Memory::host) std::memset(t.storage_.get(), 0xFF, bytes);
    else device::fill_bytes(t.storage_.get(), 0xFF, bytes);
  }
  t.view_ = TensorView(t.storage_.get(), dtype, std::move(shape), memory);
  return t;
}

Tensor Tensor::copy_of(const TensorView& src, Memory memory) {
  Tensor t = empty(src.shape, src.dtype, memory);
  copy(src, t.view());
  return t;
}

namespace {

device::CopyKind copy_kind(Memory from, Memory to) {
  if (from == Memory::host) return device::CopyKind::host_to_device;
  return to == Memory::host ? device::CopyKind::device_to_host : device::CopyKind::device_to_device;
}

// Strided host-to-host copy, one element at a time.
void copy_host(const TensorView& src, const TensorView& dst) {
  const Indexer is = make_indexer(src.shape, src.strides);
  const Indexer id = make_indexer(dst.shape, dst.strides);
  // Signed byte offsets: strides may be negative.
  const int64_t es = static_cast<int64_t>(size_of(src.dtype));
  const auto* s = static_cast<const unsigned char*>(src.data);
  auto* d = static_cast<unsigned char*>(dst.data);
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) std::memcpy(d + id.offset(i) * es, s + is.offset(i) * es, static_cast<std::size_t>(es));
}

// A host copy of the memory a CUDA view spans, from its lowest to its highest
// element (the elements between its own included, so that writing it back
// keeps them), and the same view over the copy.
class HostSpan {
 public:
  explicit HostSpan(const TensorView& v) {
    int64_t lo = 0, hi = 0;  // offsets of the lowest and highest element (check_view: no overflow)
    for (int d = 0; d < v.rank(); ++d) (v.strides[d] < 0 ? lo : hi) += (v.shape[d] - 1) * v.strides[d];
    const int64_t es = static_cast<int64_t>(size_of(v.dtype));
    device_ = static_cast<unsigned char*>(v.data) + lo * es;
    try {
      host_.resize(static_cast<std::size_t>((hi - lo + 1) * es));
    } catch (const std::exception& e) {
      fail(ErrorCategory::backend, "copy", "cannot stage the ", (hi - lo + 1) * es, " bytes a strided CUDA view (shape ",
           to_string(v.shape), ", strides ", to_string(v.strides), ") spans (", e.what(), ")");
    }
    device::copy(host_.data(), device_, host_.size(), device::CopyKind::device_to_host);
    view = TensorView(host_.data() - lo * es, v.dtype, v.shape, v.strides, Memory::host);
  }
  void write_back() { device::copy(device_, host_.data(), host_.size(), device::CopyKind::host_to_device); }

  TensorView view;

 private:
  std::vector<unsigned char> host_;
  unsigned char* device_ = nullptr;
};

}  // namespace

void copy(const TensorView& src, const TensorView& dst) {
  check_view(src, "copy", "src");
  check_view(dst, "copy", "dst");
  if (src.shape != dst.shape || src.dtype != dst.dtype)
    fail(ErrorCategory::shape_mismatch, "copy", "src ", to_string(src.shape), " ", to_string(src.dtype),
         " does not match dst ", to_string(dst.shape), " ", to_string(dst.dtype));
  if (src.numel() == 0) return;
  if (src.memory == Memory::host && dst.memory == Memory::host) return copy_host(src, dst);
  if (src.is_contiguous() && dst.is_contiguous())
    return device::copy(dst.data, src.data, src.bytes(), copy_kind(src.memory, dst.memory));
  // A strided CUDA view goes through a host copy of the memory it spans.
  if (src.memory != Memory::host && !src.is_contiguous()) return copy(HostSpan(src).view, dst);
  if (dst.memory != Memory::host && !dst.is_contiguous()) {
    HostSpan span(dst);
    copy(src, span.view);
    return span.write_back();
  }
  Tensor staged = Tensor::empty(src.shape, src.dtype, Memory::host);
  copy(src, staged.view());
  copy(staged.view(), dst);
}

}  // namespace kfuse
