// The C API: a thin client of kfuse::Plan. Every entry point catches
// everything; errors become a status code and a thread-local message.
// Handles are ids in a registry of live plans, never dereferenced as
// pointers: a destroyed, foreign or garbage handle is an error, not a crash.
#include "kfuse/kfuse.h"

#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <unordered_map>

#include "kfuse/cost.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/runtime.hpp"
#include "kfuse/spec.hpp"
#include "kfuse/version.hpp"

struct kfuse_plan_s {
  kfuse::Plan plan;
  std::string description;
};

namespace {

thread_local std::string g_last_error;

// Live plans by handle. Ids are never reused, so a destroyed handle stays
// invalid; a call holds its plan (shared_ptr) while it runs, so a concurrent
// destroy cannot free it under the call.
struct Registry {
  std::mutex mutex;
  std::unordered_map<uintptr_t, std::shared_ptr<const kfuse_plan_s>> plans;
  uintptr_t next = 0x4b460000u;  // 8-aligned, far from NULL and small integers
};
Registry& registry() {
  static Registry r;
  return r;
}

kfuse_status status_of(kfuse::ErrorCategory c) {
  switch (c) {
    case kfuse::ErrorCategory::invalid_argument: return KFUSE_INVALID_ARGUMENT;
    case kfuse::ErrorCategory::shape_mismatch: return KFUSE_SHAPE_MISMATCH;
    case kfuse::ErrorCategory::unsupported: return KFUSE_UNSUPPORTED;
    case kfuse::ErrorCategory::overflow: return KFUSE_OVERFLOW;
    case kfuse::ErrorCategory::io: return KFUSE_IO;
    case kfuse::ErrorCategory::spec: return KFUSE_SPEC;
    case kfuse::ErrorCategory::backend: return KFUSE_BACKEND;
  }
  return KFUSE_INTERNAL;
}

kfuse_status set_error(kfuse_status s, const std::string& msg) {
  try {
    g_last_error = msg;
  } catch (...) {
  }
  return s;
}

// Runs f() with the error contract: clears the last error, maps exceptions.
template <class F>
kfuse_status guarded(const char* fn, F&& f) {
  try {
    g_last_error.clear();
    f();
    return KFUSE_OK;
  } catch (const kfuse::Error& e) {
    return set_error(status_of(e.category()), e.what());
  } catch (const std::bad_alloc&) {
    return set_error(KFUSE_INTERNAL, std::string(fn) + ": out of memory");
  } catch (const std::exception& e) {
    return set_error(KFUSE_INTERNAL, std::string(fn) + ": internal error: " + e.what());
  } catch (...) {
    return set_error(KFUSE_INTERNAL, std::string(fn) + ": unknown internal error");
  }
}

[[noreturn]] void invalid(const char* fn, const char* what) {
  kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, what);
}

// The registry's entry of `plan`; the caller holds r.mutex.
auto find_locked(Registry& r, kfuse_plan plan, const char* fn) {
  const auto it = r.plans.find(reinterpret_cast<uintptr_t>(plan));
  if (it == r.plans.end())
    kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, "plan ", static_cast<const void*>(plan),
                " is not a live plan (destroyed already, or not made by kfuse_plan_create)");
  return it;
}

std::shared_ptr<const kfuse_plan_s> live(kfuse_plan plan, const char* fn) {
  if (!plan) invalid(fn, "plan is NULL");
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  return find_locked(r, plan, fn)->second;
}

// The caller's buffer `arg` of `bytes` must hold the plan's `what` (`shape` in `dtype`).
void check_room(const char* fn, const char* arg, std::size_t bytes, const char* what, const kfuse::Shape& shape,
                kfuse::DType dtype) {
  const int64_t need = kfuse::checked_numel(shape, fn, what) * static_cast<int64_t>(kfuse::size_of(dtype));
  if (static_cast<uint64_t>(need) > bytes)
    kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, arg, "_bytes (", bytes, ") is smaller than the ", what, " ",
                kfuse::to_string(shape), " ", kfuse::to_string(dtype), " (", need, " bytes)");
}

kfuse::PlanOptions options(const kfuse::Spec& spec, const char* strategy, int on_device) {
  kfuse::PlanOptions opt;
  opt.precision = spec.precision;
  if (strategy) opt.strategy = kfuse::strategy_from(strategy);
  opt.memory = on_device ? kfuse::Memory::cuda : kfuse::Memory::host;
  return opt;
}

void require_initialized(const char* fn) {
  if (!kfuse::is_initialized())
    kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, "kfuse is not initialised: call kfuse_init() first");
}

kfuse_plan make_plan(const kfuse::Spec& spec, const char* strategy, int on_device) {
  kfuse::Plan p(spec.pipeline, options(spec, strategy, on_device));
  std::string d = p.describe() + kfuse::plan_cost(spec.pipeline, p).text() + "\n";
  auto h = std::make_shared<const kfuse_plan_s>(kfuse_plan_s{std::move(p), std::move(d)});
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  const uintptr_t id = r.next;
  r.plans.emplace(id, std::move(h));
  r.next += 8;
  return reinterpret_cast<kfuse_plan>(id);
}

// *rank always (so that a caller can size dims); dims, unless NULL, when it has room.
void shape_out(const kfuse::Shape& s, int64_t* dims, int max_rank, int* rank, const char* fn) {
  if (!rank) invalid(fn, "rank is NULL");
  *rank = static_cast<int>(s.size());
  if (!dims) return;
  if (max_rank < *rank)
    kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, "dims has room for ", max_rank, " extents (max_rank), the ",
                "shape ", kfuse::to_string(s), " has ", *rank);
  for (std::size_t i = 0; i < s.size(); ++i) dims[i] = s[i];
}

}  // namespace

extern "C" {

const char* kfuse_version(void) { return KFUSE_VERSION_STRING; }

kfuse_status kfuse_init(void) {
  return guarded("kfuse_init", [] { kfuse::initialize(); });
}

kfuse_status kfuse_finalize(void) {
  return guarded("kfuse_finalize", [] {
    Registry& r = registry();
    const std::lock_guard<std::mutex> lock(r.mutex);
    const std::size_t live = r.plans.size();
    if (live > 0)
      kfuse::fail(kfuse::ErrorCategory::invalid_argument, "kfuse_finalize", live,
                  " plan(s) are still alive: kfuse_plan_destroy them first");
    kfuse::finalize();
  });
}

kfuse_status kfuse_plan_create(const char* json_spec, const char* strategy, int on_device, kfuse_plan* out) {
  return guarded("kfuse_plan_create", [&] {
    if (!out) invalid("kfuse_plan_create", "out is NULL");
    *out = nullptr;
    if (!json_spec) invalid("kfuse_plan_create", "json_spec is NULL");
    require_initialized("kfuse_plan_create");
    *out = make_plan(kfuse::parse_spec(json_spec, "."), strategy, on_device);
  });
}

kfuse_status kfuse_plan_create_from_file(const char* path, const char* strategy, int on_device, kfuse_plan* out) {
  return guarded("kfuse_plan_create_from_file", [&] {
    if (!out) invalid("kfuse_plan_create_from_file", "out is NULL");
    *out = nullptr;
    if (!path) invalid("kfuse_plan_create_from_file", "path is NULL");
    require_initialized("kfuse_plan_create_from_file");
    *out = make_plan(kfuse::load_spec(path), strategy, on_device);
  });
}

kfuse_status kfuse_plan_destroy(kfuse_plan plan) {
  return guarded("kfuse_plan_destroy", [&] {
    if (!plan) return;
    std::shared_ptr<const kfuse_plan_s> last;  // freed after the lock is released
    Registry& r = registry();
    const std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = find_locked(r, plan, "kfuse_plan_destroy");
    last = std::move(it->second);
    r.plans.erase(it);
  });
}

kfuse_status kfuse_plan_input_shape(kfuse_plan plan, int64_t* dims, int max_rank, int* rank) {
  return guarded("kfuse_plan_input_shape", [&] {
    const auto h = live(plan, "kfuse_plan_input_shape");
    shape_out(h->plan.input_shape(), dims, max_rank, rank, "kfuse_plan_input_shape");
  });
}

kfuse_status kfuse_plan_output_shape(kfuse_plan plan, int64_t* dims, int max_rank, int* rank) {
  return guarded("kfuse_plan_output_shape", [&] {
    const auto h = live(plan, "kfuse_plan_output_shape");
    shape_out(h->plan.output_shape(), dims, max_rank, rank, "kfuse_plan_output_shape");
  });
}

kfuse_status kfuse_plan_input_numel(kfuse_plan plan, int64_t* numel) {
  return guarded("kfuse_plan_input_numel", [&] {
    const auto h = live(plan, "kfuse_plan_input_numel");
    if (!numel) invalid("kfuse_plan_input_numel", "numel is NULL");
    *numel = kfuse::checked_numel(h->plan.input_shape(), "kfuse_plan_input_numel", "input");
  });
}

kfuse_status kfuse_plan_output_numel(kfuse_plan plan, int64_t* numel) {
  return guarded("kfuse_plan_output_numel", [&] {
    const auto h = live(plan, "kfuse_plan_output_numel");
    if (!numel) invalid("kfuse_plan_output_numel", "numel is NULL");
    *numel = kfuse::checked_numel(h->plan.output_shape(), "kfuse_plan_output_numel", "output");
  });
}

kfuse_status kfuse_plan_dtype(kfuse_plan plan, int* dtype) {
  return guarded("kfuse_plan_dtype", [&] {
    const auto h = live(plan, "kfuse_plan_dtype");
    if (!dtype) invalid("kfuse_plan_dtype", "dtype is NULL");
    switch (h->plan.dtype()) {
      case kfuse::DType::f32: *dtype = KFUSE_FLOAT32; break;
      case kfuse::DType::f64: *dtype = KFUSE_FLOAT64; break;
      case kfuse::DType::f16: *dtype = KFUSE_FLOAT16; break;
      case kfuse::DType::bf16: *dtype = KFUSE_BFLOAT16; break;
    }
  });
}

kfuse_status kfuse_plan_run(kfuse_plan plan, const void* x, size_t x_bytes, void* out, size_t out_bytes) {
  return guarded("kfuse_plan_run", [&] {
    const auto h = live(plan, "kfuse_plan_run");
    const kfuse::Plan& p = h->plan;
    if (!x && kfuse::checked_numel(p.input_shape(), "kfuse_plan_run", "x") > 0) invalid("kfuse_plan_run", "x is NULL");
    if (!out) invalid("kfuse_plan_run", "out is NULL");
    check_room("kfuse_plan_run", "x", x_bytes, "input", p.input_shape(), p.dtype());
    check_room("kfuse_plan_run", "out", out_bytes, "output", p.output_shape(), p.dtype());
    const kfuse::TensorView xv(const_cast<void*>(x), p.dtype(), p.input_shape(), p.memory());
    const kfuse::TensorView ov(out, p.dtype(), p.output_shape(), p.memory());
    p.run(xv, ov);
    Kokkos::fence();
  });
}

const char* kfuse_plan_describe(kfuse_plan plan) {
  const char* text = nullptr;
  guarded("kfuse_plan_describe", [&] { text = live(plan, "kfuse_plan_describe")->description.c_str(); });
  return text;
}

kfuse_status kfuse_plan_floor_bytes(kfuse_plan plan, int64_t* bytes) {
  return guarded("kfuse_plan_floor_bytes", [&] {
    const auto h = live(plan, "kfuse_plan_floor_bytes");
    if (!bytes) invalid("kfuse_plan_floor_bytes", "bytes is NULL");
    *bytes = h->plan.floor_bytes();
  });
}

const char* kfuse_last_error(void) { return g_last_error.c_str(); }

}  // extern "C"
