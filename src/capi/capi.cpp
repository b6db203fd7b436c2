// The C API: a thin client of kfuse::Plan. Every entry point catches
// everything; errors become a status code and a thread-local message.
#include "kfuse/kfuse.h"

#include <atomic>
#include <exception>
#include <new>
#include <optional>
#include <string>

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
std::atomic<long> g_live_plans{0};

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

void check_plan(kfuse_plan plan, const char* fn) {
  if (!plan) invalid(fn, "plan is NULL");
}

kfuse::PlanOptions options(const char* strategy, int on_device) {
  kfuse::PlanOptions opt;
  if (strategy) opt.strategy = kfuse::strategy_from(strategy);
  opt.memory = on_device ? kfuse::Memory::cuda : kfuse::Memory::host;
  return opt;
}

void require_initialized(const char* fn) {
  if (!kfuse::is_initialized())
    kfuse::fail(kfuse::ErrorCategory::invalid_argument, fn, "kfuse is not initialised: call kfuse_init() first");
}

kfuse_plan make_plan(const kfuse::Spec& spec, const char* strategy, int on_device) {
  kfuse::Plan p(spec.pipeline, options(strategy, on_device));
  std::string d = p.describe();
  auto* h = new kfuse_plan_s{std::move(p), std::move(d)};
  ++g_live_plans;
  return h;
}

void shape_out(const kfuse::Shape& s, int64_t* dims, int* rank, const char* fn) {
  if (!rank) invalid(fn, "rank is NULL");
  *rank = static_cast<int>(s.size());
  if (dims)
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
    const long live = g_live_plans.load();
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
    delete plan;
    --g_live_plans;
  });
}

kfuse_status kfuse_plan_input_shape(kfuse_plan plan, int64_t* dims, int* rank) {
  return guarded("kfuse_plan_input_shape", [&] {
    check_plan(plan, "kfuse_plan_input_shape");
    shape_out(plan->plan.input_shape(), dims, rank, "kfuse_plan_input_shape");
  });
}

kfuse_status kfuse_plan_output_shape(kfuse_plan plan, int64_t* dims, int* rank) {
  return guarded("kfuse_plan_output_shape", [&] {
    check_plan(plan, "kfuse_plan_output_shape");
    shape_out(plan->plan.output_shape(), dims, rank, "kfuse_plan_output_shape");
  });
}

kfuse_status kfuse_plan_input_numel(kfuse_plan plan, int64_t* numel) {
  return guarded("kfuse_plan_input_numel", [&] {
    check_plan(plan, "kfuse_plan_input_numel");
    if (!numel) invalid("kfuse_plan_input_numel", "numel is NULL");
    *numel = kfuse::checked_numel(plan->plan.input_shape(), "kfuse_plan_input_numel", "input");
  });
}

kfuse_status kfuse_plan_output_numel(kfuse_plan plan, int64_t* numel) {
  return guarded("kfuse_plan_output_numel", [&] {
    check_plan(plan, "kfuse_plan_output_numel");
    if (!numel) invalid("kfuse_plan_output_numel", "numel is NULL");
    *numel = kfuse::checked_numel(plan->plan.output_shape(), "kfuse_plan_output_numel", "output");
  });
}

kfuse_status kfuse_plan_dtype(kfuse_plan plan, int* dtype) {
  return guarded("kfuse_plan_dtype", [&] {
    check_plan(plan, "kfuse_plan_dtype");
    if (!dtype) invalid("kfuse_plan_dtype", "dtype is NULL");
    switch (plan->plan.dtype()) {
      case kfuse::DType::f32: *dtype = KFUSE_FLOAT32; break;
      case kfuse::DType::f64: *dtype = KFUSE_FLOAT64; break;
      case kfuse::DType::f16: *dtype = KFUSE_FLOAT16; break;
      case kfuse::DType::bf16: *dtype = KFUSE_BFLOAT16; break;
    }
  });
}

kfuse_status kfuse_plan_run(kfuse_plan plan, const void* x, void* out) {
  return guarded("kfuse_plan_run", [&] {
    check_plan(plan, "kfuse_plan_run");
    const kfuse::Plan& p = plan->plan;
    if (!x && kfuse::checked_numel(p.input_shape(), "kfuse_plan_run", "x") > 0) invalid("kfuse_plan_run", "x is NULL");
    if (!out) invalid("kfuse_plan_run", "out is NULL");
    const kfuse::TensorView xv(const_cast<void*>(x), p.dtype(), p.input_shape(), p.memory());
    const kfuse::TensorView ov(out, p.dtype(), p.output_shape(), p.memory());
    p.run(xv, ov);
    Kokkos::fence();
  });
}

const char* kfuse_plan_describe(kfuse_plan plan) {
  const kfuse_status s = guarded("kfuse_plan_describe", [&] { check_plan(plan, "kfuse_plan_describe"); });
  return s == KFUSE_OK ? plan->description.c_str() : nullptr;
}

kfuse_status kfuse_plan_floor_bytes(kfuse_plan plan, int64_t* bytes) {
  return guarded("kfuse_plan_floor_bytes", [&] {
    check_plan(plan, "kfuse_plan_floor_bytes");
    if (!bytes) invalid("kfuse_plan_floor_bytes", "bytes is NULL");
    *bytes = plan->plan.floor_bytes();
  });
}

const char* kfuse_last_error(void) { return g_last_error.c_str(); }

}  // extern "C"
