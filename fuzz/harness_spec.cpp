// The JSON spec harness: parse_spec on the bytes (relative .npy paths resolve
// in the harness's scratch directory), then a plan of the parsed pipeline and,
// when it is small, a run on the spec's own input.
//
// Oracle: parse_spec returns a Spec or throws kfuse::Error of category spec
// or io (nothing else); a float32/float64 Spec's pipeline plans under
// Strategy::automatic (in the Kokkos backend's memory); a small plan of a
// float32/float64 pipeline runs without error on make_input(spec) (copied to
// that memory) and writes an output of the planned shape.
//
// Inputs the harness does not try (legitimately slow, not bugs): a "shape"
// with more than 2^20 elements (the parser generates every weight it
// describes), and a "npy" path with a '/' (only the scratch files are meant).
#include <algorithm>
#include <optional>
#include <typeinfo>

#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "harness_util.hpp"
#include "kfuse/plan.hpp"
#include "kfuse/spec.hpp"

namespace kfuse_fuzz {

namespace detail {
std::string& scratch_dir();
}

namespace {

using namespace kfuse;

constexpr double kShapeLimit = 1 << 20;
constexpr int64_t kRunLimit = 1 << 14;
constexpr double kMacLimit = 1 << 20;

// False for inputs the harness skips (see the top of this file).
bool worth_trying(const nlohmann::json& j, int depth = 0) {
  if (depth > 64) return true;
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "shape" && it->is_array()) {
        double n = 1;
        for (const auto& e : *it)
          if (e.is_number()) n *= std::max(0.0, e.get<double>());
        if (n > kShapeLimit) return false;
      }
      if (it.key() == "npy" && it->is_string() && it->get<std::string>().find('/') != std::string::npos) return false;
      if (!worth_trying(*it, depth + 1)) return false;
    }
  } else if (j.is_array()) {
    for (const auto& e : j)
      if (!worth_trying(e, depth + 1)) return false;
  }
  return true;
}

bool small(const Pipeline& p) {
  try {
    if (checked_numel(p.input_shape(), "fuzz", "input") > kRunLimit) return false;
    for (const PipelineStage& s : p.stages())
      if (checked_numel(s.out_shape, "fuzz", "stage") > kRunLimit) return false;
    return conv_macs(p) <= kMacLimit;
  } catch (const Error&) {
    return false;
  }
}

std::string check_impl(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && !worth_trying(j)) return "";
  } catch (const nlohmann::json::exception&) {  // not JSON: parse_spec must say so cleanly
  }
  std::optional<Spec> spec;
  try {
    spec.emplace(parse_spec(text, detail::scratch_dir()));
  } catch (const Error& e) {
    if (e.category() != ErrorCategory::spec && e.category() != ErrorCategory::io)
      return std::string("parse_spec threw category ") + to_string(e.category()) + ": " + e.what();
    ++stats().clean_errors;
    return "";
  }
  const Pipeline& p = spec->pipeline;
  const bool numeric = p.dtype() == DType::f32 || p.dtype() == DType::f64;
  std::optional<Plan> planned;
  try {
    planned.emplace(p);
  } catch (const Error& e) {
    // float32/float64 must plan (the Kokkos backend runs every step);
    // float16/bfloat16 need the CUDA backend and may fail cleanly.
    if (numeric && e.category() != ErrorCategory::backend)  // backend: more than the memory can hold
      return std::string("a valid float32/float64 spec does not plan: ") + e.what();
    ++stats().clean_errors;
    return "";
  }
  const Plan& plan = *planned;
  ++stats().plans;
  if (plan.output_shape() != p.output_shape()) return "the plan's output shape differs from the pipeline's";
  if (!small(p)) return "";
  Tensor x;
  try {
    x = make_input(*spec);
  } catch (const Error&) {  // e.g. the .npy changed under the spec
    ++stats().clean_errors;
    return "";
  }
  try {
    const Tensor out = plan.run(Tensor::copy_of(x, plan.memory()));
    if (out.shape() != p.output_shape()) return "the output's shape differs from the plan's";
    ++stats().runs;
  } catch (const Error& e) {
    if (numeric) return std::string("a small float32/float64 plan failed to run: ") + e.what() + "\n" + plan.describe();
    ++stats().clean_errors;
  }
  return "";
}

}  // namespace

std::string check_spec(const uint8_t* data, std::size_t size) {
  ++stats().inputs;
  return guarded([&] { return check_impl(data, size); });
}

}  // namespace kfuse_fuzz
