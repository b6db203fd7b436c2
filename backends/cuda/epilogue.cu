// The fused epilogue on CUDA: launches the kernels of epilogue_kernels.cuh,
// with the same semantics as run_epilogue in backends/kokkos/backend.cpp.
// Each stage's point chains are compiled into its kernels at plan time
// (NVRTC, jit.hpp), as straight-line code; the built-in kernels, which
// interpret them, run when that is off or fails (describe() says which).
#include <algorithm>
#include <limits>
#include <mutex>
#include <type_traits>

#include "backends/cuda/epilogue_kernels.cuh"
#include "backends/cuda/jit.hpp"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"

namespace kfuse::detail::cuda {

namespace {

using namespace epi;

// The kernels a stage may launch; Y's layout picks one (choose_kernel).
enum class Kernel {
  map, map_nhwc,
  rows_warp, rows_warp_strided, rows_block, rows_block_strided,  // reduce: rows
  cols_lean, cols, cols_generic, rows_thread,                     // reduce: a thread per output
  cols_vec,                                                       // reduce: a thread per 16 bytes of outputs
  cols_warp,                                                      // reduce: a warp per contiguous block of rows
  softmax_rows_warp, softmax_rows_block, softmax_cols,
  softmax_nhwc4, softmax_nhwc8,            // over C of a channels-last Y: C <= 128, C <= 256
  softmax_cols_held16, softmax_cols_held32,  // rows across, held: count <= 128, <= 256
  count
};

// What each kernel is, for describe().
const char* kernel_label(Kernel k) {
  static const char* const labels[] = {
      "epilogue_map",
      "epilogue_map_nhwc (through shared-memory tiles)",
      "epilogue_reduce_rows (a warp an output)",
      "epilogue_reduce_rows (a warp an output, strided)",
      "epilogue_reduce_rows (a block an output)",
      "epilogue_reduce_rows (a block an output, strided)",
      "epilogue_reduce_cols (a thread an output, no point ops)",
      "epilogue_reduce_cols (a thread an output)",
      "epilogue_reduce_cols (a thread an output, any layout)",
      "epilogue_reduce_cols (a thread a short row)",
      "epilogue_reduce_cols_vec (a thread 16 bytes of outputs)",
      "epilogue_reduce_cols_warp (a warp a contiguous block of outputs and their reduced elements)",
      "epilogue_softmax_rows (a warp a row)",
      "epilogue_softmax_rows (a block a row)",
      "epilogue_softmax_cols (a thread a row)",
      "epilogue_softmax_nhwc (a warp a pixel, C <= 128)",
      "epilogue_softmax_nhwc (a warp a pixel, C <= 256)",
      "epilogue_softmax_cols_held (a block 32 rows in registers, count <= 128)",
      "epilogue_softmax_cols_held (a block 32 rows in registers, count <= 256)",
  };
  static_assert(sizeof(labels) / sizeof(labels[0]) == static_cast<std::size_t>(Kernel::count), "a label a kernel");
  return labels[static_cast<int>(k)];
}

// The kernel with the chains `ch` (a type), as an NVRTC name expression.
std::string kernel_name(Kernel k, const std::string& t, const std::string& a, const std::string& ch) {
  const std::string ns = "kfuse::detail::cuda::epi::", ta = t + ", " + a + ", ", c = ch + ">";
  switch (k) {
    case Kernel::map: return ns + "epi_map<" + ta + c;
    case Kernel::map_nhwc: return ns + "epi_map_nhwc<" + ta + c;
    case Kernel::rows_warp: return ns + "epi_reduce_rows<" + ta + "true, true, " + c;
    case Kernel::rows_warp_strided: return ns + "epi_reduce_rows<" + ta + "false, true, " + c;
    case Kernel::rows_block: return ns + "epi_reduce_rows<" + ta + "true, false, " + c;
    case Kernel::rows_block_strided: return ns + "epi_reduce_rows<" + ta + "false, false, " + c;
    case Kernel::cols_lean: return ns + "epi_reduce_cols<" + ta + "0, " + c;
    case Kernel::cols: return ns + "epi_reduce_cols<" + ta + "1, " + c;
    case Kernel::cols_generic: return ns + "epi_reduce_cols<" + ta + "2, " + c;
    case Kernel::rows_thread: return ns + "epi_reduce_cols<" + ta + "3, " + c;
    case Kernel::cols_vec: return ns + "epi_reduce_cols_vec<" + ta + c;
    case Kernel::cols_warp: return ns + "epi_reduce_cols_warp<" + ta + c;
    case Kernel::softmax_rows_warp: return ns + "epi_softmax_rows<" + ta + "true, " + c;
    case Kernel::softmax_rows_block: return ns + "epi_softmax_rows<" + ta + "false, " + c;
    case Kernel::softmax_cols: return ns + "epi_softmax_cols<" + ta + c;
    case Kernel::softmax_nhwc4: return ns + "epi_softmax_nhwc<" + ta + "4, " + c;
    case Kernel::softmax_nhwc8: return ns + "epi_softmax_nhwc<" + ta + "8, " + c;
    case Kernel::softmax_cols_held16: return ns + "epi_softmax_cols_held<" + ta + "16, " + c;
    default: return ns + "epi_softmax_cols_held<" + ta + "32, " + c;
  }
}

// The held softmax kernels take float32 and 16-bit Y: choose_kernel keeps
// float64 on softmax_cols. (Built with the chain interpreter, the float64
// kernels had it called out of line, their held values spilled or passed
// through the stack; the 16-bit ones hold float values as float32's do, and
// ptxas reports no spills for them on sm_89 and sm_90, 2026-12-06.)
template <class T>
constexpr bool held_rows() { return !std::is_same_v<T, double>; }
static_assert(held_tile_bytes<float>(32 * kHeldWarps) <= 48 * 1024, "the held kernels' tile without an opt-in");
template <class T, class A, int HOLD>
const void* builtin_held() {
  if constexpr (held_rows<T>()) return reinterpret_cast<const void*>(epi_softmax_cols_held<T, A, HOLD, InterpretedChains>);
  else return nullptr;
}

// The same kernel built into the library, its chains interpreted.
template <class T, class A>
const void* builtin(Kernel k) {
  using I = InterpretedChains;
  const auto fn = [](auto kernel) { return reinterpret_cast<const void*>(kernel); };
  switch (k) {
    case Kernel::map: return fn(epi_map<T, A, I>);
    case Kernel::map_nhwc: return fn(epi_map_nhwc<T, A, I>);
    case Kernel::rows_warp: return fn(epi_reduce_rows<T, A, true, true, I>);
    case Kernel::rows_warp_strided: return fn(epi_reduce_rows<T, A, false, true, I>);
    case Kernel::rows_block: return fn(epi_reduce_rows<T, A, true, false, I>);
    case Kernel::rows_block_strided: return fn(epi_reduce_rows<T, A, false, false, I>);
    case Kernel::cols_lean: return fn(epi_reduce_cols<T, A, 0, I>);
    case Kernel::cols: return fn(epi_reduce_cols<T, A, 1, I>);
    case Kernel::cols_generic: return fn(epi_reduce_cols<T, A, 2, I>);
    case Kernel::rows_thread: return fn(epi_reduce_cols<T, A, 3, I>);
    case Kernel::cols_vec: return fn(epi_reduce_cols_vec<T, A, I>);
    case Kernel::cols_warp: return fn(epi_reduce_cols_warp<T, A, I>);
    case Kernel::softmax_rows_warp: return fn(epi_softmax_rows<T, A, true, I>);
    case Kernel::softmax_rows_block: return fn(epi_softmax_rows<T, A, false, I>);
    case Kernel::softmax_cols: return fn(epi_softmax_cols<T, A, I>);
    case Kernel::softmax_nhwc4: return fn(epi_softmax_nhwc<T, A, 4, I>);
    case Kernel::softmax_nhwc8: return fn(epi_softmax_nhwc<T, A, 8, I>);
    case Kernel::softmax_cols_held16: return builtin_held<T, A, 16>();
    default: return builtin_held<T, A, 32>();
  }
}

// The NVRTC program of a stage: the kernels' header, its chains as code and
// its reduction kind as a constant.
template <class A>
std::string program_source(const std::vector<PointOp<A>>& body, const std::vector<PointOp<A>>& after,
                           ReduceKind reduce) {
  return "#include \"backends/cuda/epilogue_kernels.cuh\"\n" + jit::chains_struct(body, after, reduce);
}

// The single stride of an Indexer with at most one axis of extent > 1 (false otherwise).
bool single_stride(const Indexer& ix, int64_t& stride) {
  stride = 1;
  int axes = 0;
  for (int d = 0; d < ix.rank; ++d)
    if (ix.size[d] != 1) stride = ix.stride[d], ++axes;
  return axes <= 1;
}

// Whether two views may share bytes (the spans their strides reach).
bool overlaps(const TensorView& a, const TensorView& b) {
  const auto span = [](const TensorView& v) {
    int64_t lo = 0, hi = 0;
    for (int d = 0; d < v.rank(); ++d) {
      if (v.shape[d] == 0) return std::pair<uintptr_t, uintptr_t>(0, 0);
      const int64_t reach = (v.shape[d] - 1) * v.strides[d];
      (reach < 0 ? lo : hi) += reach;
    }
    const uintptr_t base = reinterpret_cast<uintptr_t>(v.data);
    const int64_t es = int64_t(size_of(v.dtype));
    return std::pair<uintptr_t, uintptr_t>(base + lo * es, base + (hi + 1) * es);
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1;
}

// Y's layout for a stage: its kept and main axes, and what the kernels need of them.
struct Layout {
  Indexer outer, inner;
  Indexer order;         // the walk over the kept axes (a reduction's outputs, a softmax's rows) -> the
                         // output index (when `ordered`)
  bool ordered = false;
  int64_t n = 0;         // Y's elements
  int64_t stride = 1;    // the main axes as one stride (one_axis)
  bool contig = false;   // the main axes dense and trailing
  bool one_axis = false;
  bool walk_unit = false;  // a reduction's walk reads neighbouring elements at its fastest 32 or more outputs
  bool nhwc = false;     // Y [N, C, H, W] stored channels-last (C and H x W > 1):
  int64_t batch = 0, channels = 0, plane = 0;  // N, C, H x W
};

// The output step between the `vec` adjacent outputs a thread of
// epi_reduce_cols_vec takes, or 0 where that kernel does not apply: the
// walk's fastest axis contiguous in Y and `vec` dividing its extent (and the
// output's axis of that walk), every other kept stride and the reduced stride
// (and Y 16-byte aligned, which the run checks).
int64_t vector_step(const Layout& l, int64_t vec) {
  const Indexer& w = l.outer;
  if (!l.one_axis || l.stride % vec != 0 || w.rank == 0) return 0;
  if (w.stride[w.rank - 1] != 1 || w.size[w.rank - 1] % vec != 0) return 0;
  for (int d = 0; d + 1 < w.rank; ++d)
    if (w.stride[d] % vec != 0) return 0;
  if (!l.ordered) return 1;
  const Indexer& o = l.order;
  return o.rank > 0 && o.size[o.rank - 1] % vec == 0 ? o.stride[o.rank - 1] : 0;
}

// The vectors of `vec` elements across the walk's fastest kept axis when the
// reduced axis lies right outside it, the two one contiguous block (a
// reduction over W, or H and W, of a channels-last Y), as epi_reduce_cols_warp
// takes them: at most 16 (two or more of a warp's lanes a vector); else 0.
int64_t block_vectors(const Layout& l, int64_t vec) {
  const Indexer& w = l.outer;
  if (!l.one_axis || w.rank == 0 || w.stride[w.rank - 1] != 1 || l.stride != w.size[w.rank - 1]) return 0;
  return l.stride % vec == 0 && l.stride / vec <= 16 ? l.stride / vec : 0;
}

// A reduction walks its outputs, and a softmax its rows, in Y's memory order
// (the kept axes by descending stride; broadcast axes, stride 0, outermost),
// so that neighbouring threads read neighbouring elements whatever Y's
// layout: `outer` over that walk, `order` from it to the output's row-major
// index. A contiguous Y's walk is the output's order.
void walk_in_memory_order(const Shape& shape, const Shape& strides, uint32_t mask, Layout& l) {
  std::vector<int> kept;
  for (int d = 0; d < int(shape.size()); ++d)
    if (!(mask & (1u << d))) kept.push_back(d);
  std::vector<int> walk = kept;
  const auto key = [&](int d) { return strides[d] == 0 ? std::numeric_limits<int64_t>::max() : strides[d]; };
  std::stable_sort(walk.begin(), walk.end(), [&](int a, int b) { return key(a) > key(b); });
  l.ordered = walk != kept;
  if (!l.ordered) return;
  Shape out_stride(shape.size(), 0);
  int64_t s = 1;
  for (auto d = kept.rbegin(); d != kept.rend(); ++d) out_stride[*d] = s, s *= shape[*d];
  Shape ws, wst, wo;
  for (int d : walk) ws.push_back(shape[d]), wst.push_back(strides[d]), wo.push_back(out_stride[d]);
  l.outer = make_indexer(ws, wst);
  l.order = make_indexer(ws, wo);
}

template <class A>
Layout layout_of(const EpilogueStep<A>& e, const Shape& shape, const Shape& strides) {
  Layout l;
  split_axes(shape, strides, e.mask, l.outer, l.inner);
  if (e.main != MainKind::map) walk_in_memory_order(shape, strides, e.mask, l);
  l.n = checked_numel(shape, "epilogue", "Y");
  l.contig = l.inner.is_dense();
  l.one_axis = single_stride(l.inner, l.stride);
  const Indexer& w = l.outer;
  l.walk_unit = w.rank > 0 && w.stride[w.rank - 1] == 1 && w.size[w.rank - 1] >= 32;
  l.nhwc = shape.size() == 4 && strides == channels_last_strides(shape) && shape[1] > 1 && shape[2] * shape[3] > 1;
  if (l.nhwc) l.batch = shape[0], l.channels = shape[1], l.plane = shape[2] * shape[3];
  return l;
}

// The shared memory epi_softmax_nhwc takes: the block's 32 rows.
template <class A>
std::size_t softmax_nhwc_smem(int64_t count) {
  return std::size_t(32 * epi::softmax_nhwc_row<A>(count)) * sizeof(A);
}

// Rows a thread reduces alone (16-byte loads along it) when there are outputs enough.
constexpr int64_t kShortRow = 128;

// The kernel for a stage over Y (of T) of this layout on a device of `sms`
// SMs; `vectors`: a columns reduction may take 16-byte loads (vector_step).
template <class T, class A>
Kernel choose_kernel(const EpilogueStep<A>& e, const Layout& l, int sms, bool vectors) {
  // Y channels-last to the NCHW output: through shared-memory tiles (within their grids' reach).
  if (e.main == MainKind::map)
    return l.nhwc && l.batch <= 65535 && (l.channels + kMapTileC - 1) / kMapTileC <= 65535 &&
                   l.plane / kMapTileC < 0x7fffffff  // tiles of at least kMapTileC pixels
               ? Kernel::map_nhwc
               : Kernel::map;
  if (e.main == MainKind::reduce) {
    // A thread per output when outputs alone fill the device, or per part of
    // an output when the walk reads neighbouring elements (columns); short
    // contiguous rows (at most kShortRow elements) a thread each.
    const int64_t outputs = e.tail.R * e.tail.K;
    const bool many = outputs >= int64_t(sms) * 1024;
    if (vectors && block_vectors(l, Vec16<T>::kVec) > 0) return Kernel::cols_warp;
    if (!l.contig && (many || l.walk_unit))
      return !l.one_axis ? Kernel::cols_generic
             : vectors    ? Kernel::cols_vec
             : e.body.n == 0 && many ? Kernel::cols_lean
                                     : Kernel::cols;
    if (e.count <= kShortRow && many) return Kernel::rows_thread;
    if (e.count < 2048) return l.contig ? Kernel::rows_warp : Kernel::rows_warp_strided;
    return l.contig ? Kernel::rows_block : Kernel::rows_block_strided;
  }
  const int64_t rows = e.count > 0 ? l.n / e.count : 0;
  if (l.nhwc && e.mask == 2u && e.count <= 32 * kSoftmaxHold && softmax_nhwc_smem<A>(e.count) <= 48 * 1024 &&
      l.batch * ((l.plane + 31) / 32) <= 0x7fffffff)
    return e.count <= 128 ? Kernel::softmax_nhwc4 : Kernel::softmax_nhwc8;
  // Rows across (the axis strided, neighbouring rows adjacent in Y): held
  // where a block's 8 warps hold them, else a thread a row when rows fill the device.
  const bool adjacent_rows = l.outer.rank > 0 && l.outer.stride[l.outer.rank - 1] == 1;
  if (l.stride != 1 && e.count > 1 && e.count <= 32 * kHeldWarps && adjacent_rows && held_rows<T>())
    return e.count <= 16 * kHeldWarps ? Kernel::softmax_cols_held16 : Kernel::softmax_cols_held32;
  if (l.stride != 1 && e.count > 1 && rows >= int64_t(sms) * 1024) return Kernel::softmax_cols;
  return e.count <= 1024 ? Kernel::softmax_rows_warp : Kernel::softmax_rows_block;
}

// Launches `kernel` through run(threads) with the tuner's 4 or 8 warps. A
// candidate is timed on these very arguments, which only works when the kernel
// does not write what it reads (`measurable`: the output does not overlap Y).
template <class Fn, class Run>
void tuned_launch(Fn kernel, const char* name, std::string shape, bool measurable, const Run& run) {
  const auto measure = [&](const tuning::LaunchConfig& c) { return time_launches([&] { run(c.threads()); }); };
  run(tuned(kernel, name, std::move(shape), measurable, measure).threads());
}

// The kernels of one stage: compiled at plan time with its chains (jit.hpp),
// else the built-in ones.
template <class T, class A>
class StageKernels {
 public:
  // Y and the output of `dtype` (T's), accumulated in A.
  StageKernels(const EpilogueStep<A>& e, DType dtype)
      : elem_(jit::type_name(dtype)), acc_(jit::acc_type_name<A>()) {
    // Stages with no point ops are compiled too: the constant reduction kind
    // and the absent chains take the built-in kernels' registers from 88-113
    // to 40-54 (sm_90, float: reduce_rows by blocks, softmax by rows and by
    // columns), and their occupancy from a quarter to a half.
    if (!jit::enabled())
      why_built_in_ = "plan-time compilation is off (KFUSE_CUDA_JIT=0)";
    else
      source_ = program_source(jit::host_ops(e.body), jit::host_ops(e.after), e.reduce);
  }

  // Compiles the kernel on first use; a failure is remembered and every
  // kernel of the stage is then the built-in one.
  const void* get(Kernel k) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const void*& slot = compiled_[static_cast<int>(k)];
    if (!slot && why_built_in_.empty()) {
      try {
        slot = jit::kernel(source_, kernel_name(k, elem_, acc_, jit::kPlanChains));
      } catch (const Error& err) {
        why_built_in_ = cat("NVRTC failed: ", err.what());
      }
    }
    return slot ? slot : builtin<T, A>(k);
  }
  bool compiled(Kernel k) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return compiled_[static_cast<int>(k)] != nullptr;
  }
  std::string describe() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return why_built_in_.empty() ? "point chains compiled at plan time (NVRTC)"
                                 : cat("point chains interpreted: ", why_built_in_);
  }

 private:
  const char* elem_;
  const char* acc_;
  std::string source_;
  mutable std::mutex mutex_;
  mutable std::string why_built_in_;
  mutable const void* compiled_[static_cast<int>(Kernel::count)] = {};
};

template <class T, class A>
void epilogue(const EpilogueStep<A>& e, const StageKernels<T, A>& kernels, const TensorView& y, const TensorView& out) {
  const Layout l = layout_of(e, y.shape, y.strides);
  const T* yp = static_cast<const T*>(y.data);
  T* op = static_cast<T*>(out.data);
  const int sms = device_info().limits.sm_count;
  const bool measurable = !overlaps(y, out);
  const int64_t step = e.main == MainKind::reduce && aligned16(yp) ? vector_step(l, Vec16<T>::kVec) : 0;
  const Kernel k = choose_kernel<T>(e, l, sms, step > 0);
  const void* fn = kernels.get(k);
  const std::string dtype = cat(to_string(y.dtype), kernels.compiled(k) ? ",nvrtc" : "");
  Workspace& ws = workspace();
  try {
    if (k == Kernel::map_nhwc) {
      if (l.n > 0) {
        constexpr int64_t vec = Vec16<T>::kVec;
        const bool vectors = aligned16(yp) && aligned16(op) && l.channels % vec == 0 && l.plane % vec == 0;
        MapArgs<T, A> a{yp, op, l.n, l.outer, e.body, vectors ? 0 : 1, l.channels, l.plane};
        constexpr int64_t tp = map_tile_p<T>();
        const dim3 grid(grid_of((l.plane + tp - 1) / tp), unsigned((l.channels + kMapTileC - 1) / kMapTileC),
                        unsigned(l.batch));
        launch("kfuse::cuda::epilogue_map_nhwc", fn, grid, dim3(256), 0, false, a);
      }
    } else if (e.main == MainKind::map) {
      if (l.n > 0) {
        MapArgs<T, A> a{yp, op, l.n, l.outer, e.body, 2, 0, 0};
        if (y.is_contiguous()) a.mode = aligned16(yp) && aligned16(op) ? 0 : 1;
        const char* layout = a.mode == 0 ? "vec16" : a.mode == 1 ? "contiguous" : "strided";
        tuned_launch(fn, "cuda::epilogue_map", tuning::shape_class({{"n", l.n}}) + "," + dtype + "," + layout,
                     measurable, [&](int threads) {
                       const int64_t per_block = int64_t(threads) * (a.mode == 0 ? Vec16<T>::kVec * 4 : 4);
                       const int64_t resident = int64_t(occupancy(fn, threads, 0)) * sms;
                       const int64_t blocks = std::min<int64_t>((l.n + per_block - 1) / per_block, resident * 4);
                       launch("kfuse::cuda::epilogue_map", fn, dim3(grid_of(blocks)), dim3(threads), 0, false, a);
                     });
      }
    } else if (e.main == MainKind::reduce) {
      const Tail<A>& tail = e.tail;
      const int64_t outputs = tail.R * tail.K;
      const bool direct = tail.n == 0 && tail.K_out == tail.K;
      ReduceArgs<T, A> a{};
      a.y = yp;
      a.outer = l.outer;
      a.inner = l.inner;
      a.order = l.order;
      a.ordered = l.ordered;
      a.body = e.body;
      a.after = e.after;
      a.kind = e.reduce;
      a.count = e.count;
      a.outputs = outputs;
      a.stride = l.stride;
      a.out_step = step;
      if (outputs > 0) {
        const bool cols = k == Kernel::cols_lean || k == Kernel::cols || k == Kernel::cols_generic ||
                          k == Kernel::rows_thread || k == Kernel::cols_vec;
        const int64_t per_thread = k == Kernel::cols_vec ? Vec16<T>::kVec : 1;  // outputs a thread (or its part) takes
        // epi_reduce_cols_warp: a warp a block of l.stride outputs, M of its lanes a vector.
        const bool block_rows = k == Kernel::cols_warp;
        const int64_t lanes_a_vector = block_rows ? 32 / block_vectors(l, Vec16<T>::kVec) : 1;
        const int64_t units = block_rows ? outputs / l.stride : outputs / per_thread;
        const bool warp = k == Kernel::rows_warp || k == Kernel::rows_warp_strided;
        const auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
        const std::size_t z_bytes = direct ? 0 : align(std::size_t(outputs) * sizeof(A));
        // Parts per output, so that there are twice the resident blocks (a
        // block per output) or threads (columns), then the scratch they need.
        const auto prepare = [&](int threads) {
          a.parts = 1;
          a.part_len = e.count;
          if (!warp && k != Kernel::rows_thread && k != Kernel::cols_lean) {
            const int64_t resident =
                int64_t(occupancy(fn, threads, 0)) * sms * (cols ? threads : block_rows ? threads / 32 : 1);
            const int64_t want = units >= resident ? 1 : (2 * resident + units - 1) / units;
            // Elements a part: a thread's 256, a block-rows lane's 16 vectors.
            const int64_t least = cols ? 256 / per_thread : block_rows ? 16 * lanes_a_vector : 8192;
            a.parts = std::max<int64_t>(1, std::min(want, (e.count + least - 1) / least));
            const int64_t vec = Vec16<T>::kVec;
            a.part_len = ((e.count + a.parts - 1) / a.parts + vec - 1) / vec * vec;
            a.parts = (e.count + a.part_len - 1) / a.part_len;
          }
          const std::size_t p_bytes = a.parts > 1 ? align(std::size_t(outputs * a.parts) * sizeof(ReduceAcc<A>)) : 0;
          char* base = static_cast<char*>(ws.scratch(std::max<std::size_t>(z_bytes + p_bytes, 1)));
          a.z = direct ? nullptr : reinterpret_cast<A*>(base);
          a.out = op;
          a.partials = reinterpret_cast<ReduceAcc<A>*>(base + z_bytes);
          a.counters = a.parts > 1 ? ws.counters(std::size_t(outputs)) : nullptr;
        };
        // (Not e.count in the braces below: nvcc 13 parenthesises it into a statement expression.)
        const int64_t count = e.count;
        const std::string shape = tuning::shape_class({{"outputs", outputs}, {"count", count}}) + "," + dtype + "," +
                                  (l.contig ? "contiguous" : l.one_axis ? "strided" : "generic");
        const auto blocks = [&](int threads) -> int64_t {
          if (cols) return (units * a.parts + threads - 1) / threads;
          if (block_rows) return (units * a.parts + threads / 32 - 1) / (threads / 32);
          if (warp) return (outputs + threads / 32 - 1) / (threads / 32);
          const int64_t b = outputs * a.parts;
          if (b > 0x7fffffff)
            fail(ErrorCategory::unsupported, "epilogue (cuda)", outputs, " outputs x ", a.parts, " parts");
          return b;
        };
        const char* name = cols         ? "cuda::epilogue_reduce_cols"
                           : block_rows ? "cuda::epilogue_reduce_cols_warp"
                           : warp       ? "cuda::epilogue_reduce_rows_warp"
                                        : "cuda::epilogue_reduce_rows";
        tuned_launch(fn, name, shape, measurable, [&](int threads) {
          prepare(threads);
          launch(cols || block_rows ? "kfuse::cuda::epilogue_reduce_cols" : "kfuse::cuda::epilogue_reduce_rows", fn,
                 dim3(grid_of(blocks(threads))), dim3(threads), 0, false, a);
        });
        // The tail rewrites its rows in place (a re-run would not be the same
        // run), so it is not measured: kThreads per block.
        if (!direct && tail.R > 0) {
          TailArgs<T, A> t{a.z, op, tail};
          if (tail.K <= 4)
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 0>, dim3(grid_of((tail.R + kThreads - 1) / kThreads)), dim3(kThreads), 0, false, t);
          else if (tail.K <= 1024)
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 1>, dim3(grid_of((tail.R + kThreads / 32 - 1) / (kThreads / 32))), dim3(kThreads), 0, false, t);
          else
            launch("kfuse::cuda::epilogue_tail", epi_tail<T, A, 2>, dim3(grid_of(std::min<int64_t>(tail.R, int64_t(sms) * 8))), dim3(kThreads), 0, false, t);
        }
      }
    } else {
      Indexer out_outer, out_inner;
      split_axes(y.shape, contiguous_strides(y.shape), e.mask, out_outer, out_inner);
      const int64_t count = e.count;
      const int64_t rows = count > 0 ? l.n / count : 0;
      if (rows > 0 && count > 0) {
        int64_t os = 1;
        single_stride(out_inner, os);
        const SoftmaxArgs<T, A> a{yp,    op,     l.outer, out_outer, l.stride, os,       count,
                                  rows,  e.body, e.after, l.plane,   l.order,  l.ordered};
        const std::string shape = tuning::shape_class({{"rows", rows}, {"count", count}}) + "," + dtype + "," +
                                  (l.stride == 1 ? "contiguous" : "strided");
        if (k == Kernel::softmax_nhwc4 || k == Kernel::softmax_nhwc8) {
          const int64_t blocks = l.batch * ((l.plane + 31) / 32);
          launch("kfuse::cuda::epilogue_softmax_nhwc", fn, dim3(grid_of(blocks)), dim3(256),
                 softmax_nhwc_smem<A>(count), false, a);
        } else if (k == Kernel::softmax_cols_held16 || k == Kernel::softmax_cols_held32) {
          launch("kfuse::cuda::epilogue_softmax_cols_held", fn, dim3(grid_of((rows + 31) / 32)), dim3(32 * kHeldWarps),
                 std::size_t(os == 1 ? held_tile_bytes<A>(count) : 0), false, a);
        } else if (k == Kernel::softmax_cols) {
          tuned_launch(fn, "cuda::epilogue_softmax_cols", shape, measurable, [&](int threads) {
            launch("kfuse::cuda::epilogue_softmax_cols", fn, dim3(grid_of((rows + threads - 1) / threads)),
                   dim3(threads), 0, false, a);
          });
        } else if (k == Kernel::softmax_rows_warp) {
          tuned_launch(fn, "cuda::epilogue_softmax_rows_warp", shape, measurable, [&](int threads) {
            const int64_t blocks = std::min<int64_t>((rows + threads / 32 - 1) / (threads / 32), int64_t(sms) * 64);
            launch("kfuse::cuda::epilogue_softmax_rows", fn, dim3(grid_of(blocks)), dim3(threads), 0, false, a);
          });
        } else {
          tuned_launch(fn, "cuda::epilogue_softmax_rows", shape, measurable, [&](int threads) {
            const int64_t blocks = std::min<int64_t>(rows, int64_t(sms) * 16);
            launch("kfuse::cuda::epilogue_softmax_rows", fn, dim3(grid_of(blocks)), dim3(threads), 0, false, a);
          });
        }
      }
    }
  } catch (...) {
    ws.mark_dirty();
    throw;
  }
}

// The kernel of each stage and its launch shape follow from Y's strides,
// which only the run knows (Y is x itself when there is no conv): a few
// integer operations per run, then the launches. The kernel the plan's
// layout of Y takes is compiled here, so that Plan::run only launches.
template <class T, class A>
class PreparedEpilogue final : public PreparedStep {
 public:
  PreparedEpilogue(const EpilogueStep<A>& step, DType dtype) : step_(step), kernels_(step, dtype) {
    const Shape& y = step_.y_shape;
    const Layout l = layout_of(step_, y, step_.y_strides.empty() ? contiguous_strides(y) : step_.y_strides);
    const bool vectors = step_.main == MainKind::reduce && vector_step(l, Vec16<T>::kVec) > 0;  // Y aligned, as the plan's is
    planned_ = choose_kernel<T>(step_, l, device_info().limits.sm_count, vectors);
    (void)kernels_.get(planned_);
  }
  void run(const TensorView& y, const TensorView& out) const override { epilogue<T>(step_, kernels_, y, out); }
  std::string describe() const override {
    // Y's strides at run time pick the kernel again (Y is x itself when there is no conv).
    return cat(kernel_label(planned_), " for Y as planned",
               step_.main == MainKind::reduce && step_.tail.n ? ", then epilogue_tail" : "", "; ", kernels_.describe());
  }

 private:
  EpilogueStep<A> step_;
  Kernel planned_;
  StageKernels<T, A> kernels_;
};

}  // namespace

JitProgram epilogue_program(const std::vector<PointOp<float>>& body, const std::vector<PointOp<float>>& after,
                            ReduceKind reduce, DType dtype) {
  JitProgram p{program_source(body, after, reduce), {}};
  for (int k = 0; k < static_cast<int>(Kernel::count); ++k)
    p.kernels.push_back(kernel_name(Kernel(k), jit::type_name(dtype), "float", jit::kPlanChains));
  return p;
}

Preparation prepare_epilogue(const EpilogueStep<float>& step, DType dtype) {
  switch (dtype) {
    case DType::f32: return Preparation::of<PreparedEpilogue<float, float>>(step, dtype);
    case DType::bf16: return Preparation::of<PreparedEpilogue<__nv_bfloat16, float>>(step, dtype);
    case DType::f16: return Preparation::of<PreparedEpilogue<__half, float>>(step, dtype);
    default: return Preparation::refuse(cat("a float32-accumulating epilogue does not read ", to_string(dtype)));
  }
}

Preparation prepare_epilogue(const EpilogueStep<double>& step, DType dtype) {
  if (dtype != DType::f64) return Preparation::refuse(cat("a float64 epilogue does not read ", to_string(dtype)));
  return Preparation::of<PreparedEpilogue<double, double>>(step, dtype);
}

}  // namespace kfuse::detail::cuda
