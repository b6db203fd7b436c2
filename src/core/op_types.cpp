#include "kfuse/op_types.hpp"

#include <iterator>
#include <utility>

#include "kfuse/error.hpp"

namespace kfuse {

namespace {

constexpr std::pair<UnaryKind, const char*> kUnaryNames[] = {
    {UnaryKind::relu, "relu"},         {UnaryKind::leaky_relu, "leaky_relu"},
    {UnaryKind::tanh, "tanh"},         {UnaryKind::sigmoid, "sigmoid"},
    {UnaryKind::gelu, "gelu"},         {UnaryKind::gelu_tanh, "gelu_tanh"},
    {UnaryKind::silu, "silu"},         {UnaryKind::mish, "mish"},
    {UnaryKind::hardtanh, "hardtanh"}, {UnaryKind::hardswish, "hardswish"},
    {UnaryKind::clamp, "clamp"},       {UnaryKind::exp, "exp"},
    {UnaryKind::log, "log"},           {UnaryKind::neg, "neg"},
    {UnaryKind::abs, "abs"},
};
constexpr std::pair<BinaryKind, const char*> kBinaryNames[] = {
    {BinaryKind::add, "add"}, {BinaryKind::sub, "sub"}, {BinaryKind::mul, "mul"},
    {BinaryKind::div, "div"}, {BinaryKind::min, "min"}, {BinaryKind::max, "max"},
};
constexpr std::pair<ReduceKind, const char*> kReduceNames[] = {
    {ReduceKind::sum, "sum"}, {ReduceKind::mean, "mean"}, {ReduceKind::max, "max"},
    {ReduceKind::min, "min"}, {ReduceKind::logsumexp, "logsumexp"},
};

template <class K, std::size_t N>
const char* name_of(const std::pair<K, const char*> (&table)[N], K k) {
  for (const auto& e : table)
    if (e.first == k) return e.second;
  return "unknown";
}

template <class K, std::size_t N>
K kind_of(const std::pair<K, const char*> (&table)[N], const std::string& name, const std::string& op,
          const char* what) {
  for (const auto& e : table)
    if (name == e.second) return e.first;
  std::string valid;
  for (const auto& e : table) valid += (valid.empty() ? "" : ", ") + std::string(e.second);
  fail(ErrorCategory::invalid_argument, op, "unknown ", what, " '", name, "' (valid: ", valid, ")");
}

}  // namespace

const char* to_string(UnaryKind k) noexcept { return name_of(kUnaryNames, k); }
const char* to_string(BinaryKind k) noexcept { return name_of(kBinaryNames, k); }
const char* to_string(ReduceKind k) noexcept { return name_of(kReduceNames, k); }
UnaryKind unary_kind_from(const std::string& n, const std::string& op) { return kind_of(kUnaryNames, n, op, "unary op"); }
BinaryKind binary_kind_from(const std::string& n, const std::string& op) { return kind_of(kBinaryNames, n, op, "binary op"); }
ReduceKind reduce_kind_from(const std::string& n, const std::string& op) { return kind_of(kReduceNames, n, op, "reduction"); }

}  // namespace kfuse
