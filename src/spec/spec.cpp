// The JSON pipeline spec: its parser (errors name the JSON pointer and a
// bounded excerpt of the value) and the spec's input. Generators and dtype
// conversion: generate.cpp, cast.cpp.
#include "kfuse/spec.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "kfuse/error.hpp"
#include "kfuse/npy.hpp"
#include "spec/elements.hpp"

namespace kfuse {

using spec_detail::cast_through;
using spec_detail::generate_through;
using spec_detail::round_to;
using spec_detail::store;

double conv_macs(const Pipeline& pipeline) {
  if (pipeline.stages().empty()) return 0.0;
  const PipelineStage& s = pipeline.stages().front();
  const auto* conv = std::get_if<ConvTranspose2dOp>(&s.op);
  if (!conv) return 0.0;
  const Shape& w = conv->weight.shape();
  double macs = 1.0;
  for (int64_t e : s.out_shape) macs *= static_cast<double>(e);
  return macs * static_cast<double>(s.in_shape[1] / conv->params.groups) * static_cast<double>(w[2]) *
         static_cast<double>(w[3]);
}

// ===========================================================================
// Specs
// ===========================================================================

namespace {

using json = nlohmann::json;

std::string escape_key(const std::string& k) {
  std::string out;
  for (char c : k) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}
std::string child(const std::string& path, const std::string& key) { return path + "/" + escape_key(key); }
std::string child(const std::string& path, std::size_t i) { return path + "/" + std::to_string(i); }

[[noreturn]] void spec_fail(const std::string& path, const std::string& msg) {
  throw Error(ErrorCategory::spec, "spec: " + (path.empty() ? std::string("/") : path) + ": " + msg);
}

// Messages quote at most this many characters of a value, and containers
// this many levels deep: json::dump() of the whole value is unbounded work,
// and recursion as deep as the value's nesting.
constexpr std::size_t kShowChars = 60;
constexpr int kShowDepth = 3;

void excerpt(const json& v, std::string& out, int depth) {
  if (out.size() > kShowChars) return;
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    // A cut may split a UTF-8 sequence: replaced, not thrown, by dump().
    out += json(s.substr(0, kShowChars + 1)).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  if (!v.is_structured()) {
    out += v.dump();
    return;
  }
  const bool array = v.is_array();
  if (depth >= kShowDepth && !v.empty()) {
    out += array ? "[...]" : "{...}";
    return;
  }
  out += array ? '[' : '{';
  for (auto it = v.begin(); it != v.end() && out.size() <= kShowChars; ++it) {
    if (it != v.begin()) out += ',';  // dump()'s compact form, which short values keep
    if (!array) {
      excerpt(json(it.key()), out, depth + 1);
      out += ':';
    }
    excerpt(*it, out, depth + 1);
  }
  out += array ? ']' : '}';
}

std::string show(const json& v) {
  std::string s;
  excerpt(v, s, 0);
  if (s.size() > kShowChars) s = s.substr(0, kShowChars - 3) + "...";
  return s;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void check_object(const json& j, const std::string& path, const std::vector<std::string>& allowed) {
  if (!j.is_object()) spec_fail(path, "expected an object, got " + show(j));
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
      spec_fail(child(path, it.key()), "unknown key '" + it.key() + "' (valid keys: " + join(allowed) + ")");
}

const json* find(const json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

const json& require(const json& j, const std::string& path, const std::string& key) {
  const json* v = find(j, key);
  if (!v) spec_fail(path, "missing required key '" + key + "'");
  return *v;
}

int64_t as_int(const json& v, const std::string& path) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) spec_fail(path, "integer " + show(v) + " is too large");
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  spec_fail(path, "expected an integer, got " + show(v));
}

int as_small_int(const json& v, const std::string& path) {
  const int64_t i = as_int(v, path);
  if (i < std::numeric_limits<int>::min() || i > std::numeric_limits<int>::max())
    spec_fail(path, "integer " + show(v) + " is out of range");
  return static_cast<int>(i);
}

uint64_t as_seed(const json& v, const std::string& path) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    if (v.get<int64_t>() < 0) spec_fail(path, "a seed must be a non-negative integer, got " + show(v));
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  spec_fail(path, "expected a non-negative integer seed, got " + show(v));
}

double as_number(const json& v, const std::string& path) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf" || s == "+inf" || s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-inf" || s == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (s == "nan" || s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  spec_fail(path, "expected a number, got " + show(v));
}

bool as_bool(const json& v, const std::string& path) {
  if (!v.is_boolean()) spec_fail(path, "expected true or false, got " + show(v));
  return v.get<bool>();
}

std::string as_string(const json& v, const std::string& path) {
  if (!v.is_string()) spec_fail(path, "expected a string, got " + show(v));
  return v.get<std::string>();
}

Shape as_shape(const json& v, const std::string& path) {
  if (!v.is_array()) spec_fail(path, "expected a shape (an array of non-negative integers), got " + show(v));
  if (v.size() > static_cast<std::size_t>(kMaxRank))
    spec_fail(path, "rank " + std::to_string(v.size()) + " exceeds the maximum " + std::to_string(kMaxRank));
  Shape s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const int64_t e = as_int(v[i], child(path, i));
    if (e < 0) spec_fail(child(path, i), "an extent must be non-negative, got " + std::to_string(e));
    s.push_back(e);
  }
  try {
    checked_numel(s, "shape", "shape");
  } catch (const Error&) {
    spec_fail(path, "shape " + to_string(s) + " has more than 2^63-1 elements");
  }
  return s;
}

Pair as_pair(const json& v, const std::string& path) {
  if (v.is_array()) {
    if (v.size() != 2) spec_fail(path, "expected an integer or an array of 2 integers, got " + show(v));
    return {as_int(v[0], child(path, std::size_t(0))), as_int(v[1], child(path, std::size_t(1)))};
  }
  if (!v.is_number_integer()) spec_fail(path, "expected an integer or an array of 2 integers, got " + show(v));
  const int64_t i = as_int(v, path);
  return {i, i};
}

std::vector<int> as_axes(const json& v, const std::string& path) {
  if (v.is_number_integer()) return {as_small_int(v, path)};
  if (!v.is_array()) spec_fail(path, "expected an axis or an array of axes, got " + show(v));
  std::vector<int> axes;
  for (std::size_t i = 0; i < v.size(); ++i) axes.push_back(as_small_int(v[i], child(path, i)));
  return axes;
}

DType as_dtype(const json& v, const std::string& path) {
  const std::string s = as_string(v, path);
  for (DType d : {DType::f32, DType::f64, DType::f16, DType::bf16})
    if (s == to_string(d)) return d;
  spec_fail(path, "unknown dtype \"" + s + "\" (valid: float32, float64, float16, bfloat16)");
}

// Throws Error(spec) at `path` for any kfuse::Error f() throws; io errors keep
// their category with the path in front.
template <class F>
auto at_path(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    if (e.category() == ErrorCategory::spec) throw;
    const ErrorCategory c = e.category() == ErrorCategory::io ? ErrorCategory::io : ErrorCategory::spec;
    throw Error(c, "spec: " + (path.empty() ? std::string("/") : path) + ": " + e.what());
  }
}

DType operand_dtype(DType d) { return d == DType::f64 ? DType::f64 : DType::f32; }

struct Ctx {
  std::filesystem::path base_dir;
  DType spec_dtype;  // as written
  DType dtype;       // the pipeline's (override or spec)
  DType spec_operand() const { return operand_dtype(spec_dtype); }
  DType operand() const { return operand_dtype(dtype); }
  std::string resolve(const std::string& p) const {
    std::filesystem::path fp(p);
    if (fp.is_relative()) fp = base_dir / fp;
    return fp.lexically_normal().string();
  }
};

InitSpec parse_init(const json& j, const std::string& path) {
  if (!j.is_object()) spec_fail(path, "expected an init object such as {\"kind\": \"uniform\", \"seed\": 0}, got " + show(j));
  const std::string kpath = child(path, "kind");
  const std::string kind = as_string(require(j, path, "kind"), kpath);
  InitSpec init;
  if (kind == "uniform") {
    init.kind = InitKind::uniform;
    check_object(j, path, {"kind", "seed", "low", "high"});
    if (auto* v = find(j, "low")) init.low = as_number(*v, child(path, "low"));
    if (auto* v = find(j, "high")) init.high = as_number(*v, child(path, "high"));
    if (!std::isfinite(init.low) || !std::isfinite(init.high) || init.low > init.high)
      spec_fail(path, "uniform needs finite low <= high, got low " + std::to_string(init.low) + ", high " +
                          std::to_string(init.high));
  } else if (kind == "randn") {
    init.kind = InitKind::randn;
    check_object(j, path, {"kind", "seed", "mean", "std"});
    if (auto* v = find(j, "mean")) init.mean = as_number(*v, child(path, "mean"));
    if (auto* v = find(j, "std")) init.stddev = as_number(*v, child(path, "std"));
    if (!std::isfinite(init.mean) || !(init.stddev >= 0) || !std::isfinite(init.stddev))
      spec_fail(path, "randn needs a finite mean and std >= 0");
  } else if (kind == "conv_default") {
    init.kind = InitKind::conv_default;
    check_object(j, path, {"kind", "seed", "fan_in"});
    if (auto* v = find(j, "fan_in")) {
      init.fan_in = as_int(*v, child(path, "fan_in"));
      if (*init.fan_in <= 0) spec_fail(child(path, "fan_in"), "fan_in must be positive, got " + show(*v));
    }
  } else if (kind == "constant") {
    init.kind = InitKind::constant;
    check_object(j, path, {"kind", "value"});
    init.value = as_number(require(j, path, "value"), child(path, "value"));
    return init;
  } else {
    spec_fail(kpath, "unknown init kind \"" + kind + "\" (valid: uniform, randn, conv_default, constant)");
  }
  init.seed = as_seed(require(j, path, "seed"), child(path, "seed"));
  return init;
}

// A tensor operand: {"npy": ...} | {"shape", "init"} | {"shape", "data"}.
// `fan_in` is the conv weight's, for a bias's conv_default.
Tensor parse_tensor(const json& j, const std::string& path, const Ctx& ctx, std::optional<int64_t> fan_in = {}) {
  if (!j.is_object())
    spec_fail(path, "expected a tensor ({\"shape\": [..], \"init\": {..}}, {\"shape\": [..], \"data\": [..]} or "
                    "{\"npy\": \"file.npy\"}), got " + show(j));
  const DType through = ctx.spec_operand(), dtype = ctx.operand();
  if (find(j, "npy")) {
    check_object(j, path, {"npy"});
    const std::string p = ctx.resolve(as_string(j["npy"], child(path, "npy")));
    Tensor t = at_path(child(path, "npy"), [&] { return read_npy(p); });
    if (t.dtype() == through && through == dtype) return t;
    return cast_through(t.view(), through, dtype);
  }
  check_object(j, path, {"shape", "init", "data"});
  const Shape shape = as_shape(require(j, path, "shape"), child(path, "shape"));
  const json* init_j = find(j, "init");
  const json* data_j = find(j, "data");
  if (init_j && data_j) spec_fail(path, "give either 'init' or 'data', not both");
  if (!init_j && !data_j) spec_fail(path, "missing required key 'init' (or 'data', or use {\"npy\": path})");
  Tensor t = Tensor::empty(shape, dtype, Memory::host);
  if (data_j) {
    const std::string dpath = child(path, "data");
    if (!data_j->is_array()) spec_fail(dpath, "expected a flat array of numbers, got " + show(*data_j));
    if (static_cast<int64_t>(data_j->size()) != t.numel())
      spec_fail(dpath, "has " + std::to_string(data_j->size()) + " values; shape " + to_string(shape) + " needs " +
                           std::to_string(t.numel()));
    for (std::size_t i = 0; i < data_j->size(); ++i)
      store(round_to(as_number((*data_j)[i], child(dpath, i)), through), dtype, t.view().data, static_cast<int64_t>(i));
    return t;
  }
  const std::string ipath = child(path, "init");
  InitSpec init = parse_init(*init_j, ipath);
  if (init.kind == InitKind::conv_default && !init.fan_in && fan_in) init.fan_in = fan_in;
  at_path(ipath, [&] { generate_through(shape, dtype, through, init, 0, t.numel(), t.view().data); return 0; });
  return t;
}

InputSource parse_input(const json& j, const std::string& path, const std::filesystem::path& base_dir) {
  if (!j.is_object()) spec_fail(path, "expected an object, got " + show(j));
  InputSource in;
  if (find(j, "npy")) {
    check_object(j, path, {"npy", "dtype"});
    std::filesystem::path fp(as_string(j["npy"], child(path, "npy")));
    if (fp.is_relative()) fp = base_dir / fp;
    in.npy = fp.lexically_normal().string();
    const NpyInfo info = at_path(child(path, "npy"), [&] { return read_npy_info(*in.npy); });
    in.shape = info.shape;
    in.dtype = info.dtype;
    if (auto* d = find(j, "dtype")) in.dtype = as_dtype(*d, child(path, "dtype"));
    return in;
  }
  check_object(j, path, {"shape", "dtype", "init"});
  in.shape = as_shape(require(j, path, "shape"), child(path, "shape"));
  if (auto* d = find(j, "dtype")) in.dtype = as_dtype(*d, child(path, "dtype"));
  in.init = parse_init(require(j, path, "init"), child(path, "init"));
  return in;
}

const std::vector<std::string>& op_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v{"conv_transpose2d"};
    for (int k = 0; k <= static_cast<int>(UnaryKind::abs); ++k) v.push_back(to_string(static_cast<UnaryKind>(k)));
    for (int k = 0; k <= static_cast<int>(BinaryKind::max); ++k) v.push_back(to_string(static_cast<BinaryKind>(k)));
    v.push_back("minimum");
    v.push_back("maximum");
    for (int k = 0; k <= static_cast<int>(ReduceKind::logsumexp); ++k) {
      const std::string n = to_string(static_cast<ReduceKind>(k));
      if (std::find(v.begin(), v.end(), n) == v.end()) v.push_back(n);
    }
    v.push_back("softmax");
    return v;
  }();
  return names;
}

template <class T>
bool try_kind(T (*from)(const std::string&, const std::string&), const std::string& name, T& out) {
  try {
    out = from(name, "spec");
    return true;
  } catch (const Error&) {
    return false;
  }
}

void parse_op(const json& j, const std::string& path, const Ctx& ctx, Pipeline& p) {
  if (!j.is_object()) spec_fail(path, "expected an op object such as {\"op\": \"relu\"}, got " + show(j));
  const std::string opath = child(path, "op");
  const std::string name = as_string(require(j, path, "op"), opath);
  // The builder's own errors (shapes, parameters) come back prefixed with the op's path.
  auto build = [&](auto&& f) { at_path(path, [&] { f(); return 0; }); };

  if (name == "conv_transpose2d") {
    check_object(j, path, {"op", "weight", "bias", "stride", "padding", "output_padding", "dilation", "groups"});
    Tensor w = parse_tensor(require(j, path, "weight"), child(path, "weight"), ctx);
    std::optional<Tensor> b;
    if (const json* bj = find(j, "bias"); bj && !bj->is_null()) {
      std::optional<int64_t> fan_in;
      if (w.shape().size() >= 2) {
        int64_t f = 1;
        for (std::size_t d = 1; d < w.shape().size(); ++d) f *= w.shape()[d];
        if (f > 0) fan_in = f;
      }
      b = parse_tensor(*bj, child(path, "bias"), ctx, fan_in ? fan_in : std::optional<int64_t>(1));
    }
    ConvTranspose2dParams prm;
    if (auto* v = find(j, "stride")) prm.stride = as_pair(*v, child(path, "stride"));
    if (auto* v = find(j, "padding")) prm.padding = as_pair(*v, child(path, "padding"));
    if (auto* v = find(j, "output_padding")) prm.output_padding = as_pair(*v, child(path, "output_padding"));
    if (auto* v = find(j, "dilation")) prm.dilation = as_pair(*v, child(path, "dilation"));
    if (auto* v = find(j, "groups")) prm.groups = as_int(*v, child(path, "groups"));
    build([&] { p.conv_transpose2d(std::move(w), std::move(b), prm); });
    return;
  }
  if (name == "softmax") {
    check_object(j, path, {"op", "axis"});
    const int axis = as_small_int(require(j, path, "axis"), child(path, "axis"));
    build([&] { p.softmax(axis); });
    return;
  }

  ReduceKind rk = ReduceKind::sum;
  BinaryKind bk = BinaryKind::add;
  UnaryKind uk = UnaryKind::relu;
  const bool is_reduce = try_kind(reduce_kind_from, name, rk);
  const bool is_binary = try_kind(binary_kind_from, name, bk) || name == "minimum" || name == "maximum";
  if (name == "minimum") bk = BinaryKind::min;
  if (name == "maximum") bk = BinaryKind::max;
  // "min"/"max" are both: "axes" makes a reduction, "scalar"/"tensor" an element-wise op.
  bool reduce = is_reduce && !is_binary;
  if (is_reduce && is_binary) {
    if (find(j, "axes")) {
      reduce = true;
    } else if (!find(j, "scalar") && !find(j, "tensor")) {
      spec_fail(path, "'" + name + "' needs \"axes\" (a reduction) or \"scalar\"/\"tensor\" (element-wise)");
    }
  }
  if (reduce) {
    check_object(j, path, {"op", "axes", "keepdim"});
    std::vector<int> axes = as_axes(require(j, path, "axes"), child(path, "axes"));
    bool keepdim = false;
    if (auto* v = find(j, "keepdim")) keepdim = as_bool(*v, child(path, "keepdim"));
    build([&] { p.reduce(rk, std::move(axes), keepdim); });
    return;
  }
  if (is_binary) {
    check_object(j, path, {"op", "scalar", "tensor"});
    const json* s = find(j, "scalar");
    const json* t = find(j, "tensor");
    if (s && t) spec_fail(path, "give either 'scalar' or 'tensor', not both");
    if (!s && !t) spec_fail(path, "missing required key 'scalar' (or 'tensor')");
    if (s) {
      const double v = as_number(*s, child(path, "scalar"));
      build([&] { p.binary(bk, v); });
    } else {
      Tensor operand = parse_tensor(*t, child(path, "tensor"), ctx);
      build([&] { p.binary(bk, std::move(operand)); });
    }
    return;
  }
  if (try_kind(unary_kind_from, name, uk)) {
    Unary u{uk};
    switch (uk) {
      case UnaryKind::leaky_relu:
        check_object(j, path, {"op", "slope"});
        u.a = 0.01;
        if (auto* v = find(j, "slope")) u.a = as_number(*v, child(path, "slope"));
        break;
      case UnaryKind::gelu:
        check_object(j, path, {"op", "approximate"});
        if (auto* v = find(j, "approximate")) {
          const std::string a = as_string(*v, child(path, "approximate"));
          if (a == "tanh") u.kind = UnaryKind::gelu_tanh;
          else if (a != "none") spec_fail(child(path, "approximate"), "expected \"none\" or \"tanh\", got " + show(*v));
        }
        break;
      case UnaryKind::hardtanh:
      case UnaryKind::clamp: {
        check_object(j, path, {"op", "min", "max"});
        const bool ht = uk == UnaryKind::hardtanh;
        const double inf = std::numeric_limits<double>::infinity();
        u.a = ht ? -1.0 : -inf;
        u.b = ht ? 1.0 : inf;
        const json* lo = find(j, "min");
        const json* hi = find(j, "max");
        if (!ht && !lo && !hi) spec_fail(path, "clamp needs 'min', 'max' or both");
        if (lo) u.a = as_number(*lo, child(path, "min"));
        if (hi) u.b = as_number(*hi, child(path, "max"));
        break;
      }
      default:
        check_object(j, path, {"op"});
    }
    build([&] { p.unary(u); });
    return;
  }
  spec_fail(opath, "unknown op \"" + name + "\" (valid: " + join(op_names()) + ")");
}

constexpr std::size_t kMaxNesting = 32;

// json::parse, with duplicate keys and nesting past kMaxNesting rejected.
// `source` (a file, or "" for text) names the text in syntax errors.
json parse_json(const std::string& text, const std::string& source) {
  struct Frame {
    explicit Frame(bool a) : array(a) {}
    bool array;
    int64_t index = -1;
    std::string key;
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  auto path_of = [&](std::size_t depth) {
    std::string p;
    for (std::size_t i = 0; i < depth; ++i)
      p = stack[i].array ? child(p, static_cast<std::size_t>(stack[i].index)) : child(p, stack[i].key);
    return p;
  };
  auto next_in_array = [&] {
    if (!stack.empty() && stack.back().array) ++stack.back().index;
  };
  // Specs nest a few levels; a limit keeps every walk over the value (ours
  // and the library's) shallow, whatever the input.
  const auto open = [&](bool array) {
    next_in_array();
    if (stack.size() >= kMaxNesting)
      spec_fail(path_of(stack.size()), "nested more than " + std::to_string(kMaxNesting) + " levels deep");
    stack.emplace_back(array);
  };
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start: open(false); break;
      case json::parse_event_t::array_start: open(true); break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end: if (!stack.empty()) stack.pop_back(); break;
      case json::parse_event_t::value: next_in_array(); break;
      case json::parse_event_t::key: {
        Frame& f = stack.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second) spec_fail(path_of(stack.size()), "duplicate key '" + f.key + "'");
        break;
      }
    }
    return true;
  };
  try {
    return json::parse(text, cb);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past double's range
    std::string msg = e.what();
    const auto pos = msg.find("] ");
    if (msg.rfind("[json.exception", 0) == 0 && pos != std::string::npos) msg = msg.substr(pos + 2);
    throw Error(ErrorCategory::spec, "spec: " + (source.empty() ? "" : source + ": ") + "invalid JSON: " + msg);
  }
}

Spec parse_spec_impl(const std::string& text, const std::filesystem::path& base_dir, std::optional<DType> dtype,
                     std::string default_name, std::string source) {
  const json root = parse_json(text, source);
  check_object(root, "", {"name", "description", "precision", "input", "ops"});
  std::string name = std::move(default_name);
  Precision precision = Precision::strict;
  if (auto* v = find(root, "precision")) {
    const std::string text = as_string(*v, "/precision");
    if (text != "strict" && text != "tf32") spec_fail("/precision", "expected \"strict\" or \"tf32\", got " + show(*v));
    precision = precision_from(text);
  }
  if (auto* v = find(root, "name")) name = as_string(*v, "/name");
  if (auto* v = find(root, "description")) as_string(*v, "/description");
  InputSource input = parse_input(require(root, "", "input"), "/input", base_dir);
  const json& ops = require(root, "", "ops");
  if (!ops.is_array()) spec_fail("/ops", "expected an array of ops, got " + show(ops));
  if (ops.empty()) spec_fail("/ops", "expected at least one op");
  Ctx ctx{base_dir, input.dtype, dtype.value_or(input.dtype)};
  Pipeline p = at_path("/input", [&] { return Pipeline(input.shape, ctx.dtype); });
  for (std::size_t i = 0; i < ops.size(); ++i) parse_op(ops[i], child("/ops", i), ctx, p);
  return Spec{std::move(name), std::move(p), std::move(input), ctx.spec_dtype, std::move(source), precision};
}

}  // namespace

Spec parse_spec(const std::string& json_text, const std::string& base_dir, std::optional<DType> dtype) {
  return parse_spec_impl(json_text, base_dir.empty() ? std::filesystem::path(".") : std::filesystem::path(base_dir),
                         dtype, "unnamed", "");
}

Spec load_spec(const std::string& path, std::optional<DType> dtype) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(ErrorCategory::io, "spec: " + path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCategory::io, "spec: " + path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(ErrorCategory::io, "spec: " + path + ": read error");
  std::filesystem::path fp(path);
  std::filesystem::path dir = fp.parent_path();
  if (dir.empty()) dir = ".";
  return parse_spec_impl(ss.str(), dir, dtype, fp.stem().string(), path);
}

Tensor make_input(const Spec& spec) {
  const InputSource& in = spec.input;
  const DType dtype = spec.pipeline.dtype();
  if (in.npy) {
    Tensor t = read_npy(*in.npy);
    if (t.shape() != spec.pipeline.input_shape())
      fail(ErrorCategory::shape_mismatch, "make_input", *in.npy, " has shape ", to_string(t.shape()),
           "; the spec was built for ", to_string(spec.pipeline.input_shape()), " (the file changed?)");
    if (t.dtype() == in.dtype && in.dtype == dtype) return t;
    return cast_through(t.view(), in.dtype, dtype);
  }
  Tensor t = Tensor::empty(in.shape, dtype, Memory::host);
  generate_through(in.shape, dtype, in.dtype, in.init, 0, t.numel(), t.view().data);
  return t;
}

Tensor make_input_slice(const Spec& spec, int64_t begin, int64_t end) {
  const InputSource& in = spec.input;
  const DType dtype = spec.pipeline.dtype();
  const Shape& global = spec.pipeline.input_shape();
  if (begin < 0 || end < begin || end > global[0])
    fail(ErrorCategory::invalid_argument, "make_input_slice", "rows [", begin, ", ", end, ") are outside [0, ", global[0],
         ") of the input ", to_string(global));
  if (in.npy) {
    Tensor t = read_npy_rows(*in.npy, begin, end);
    Shape want = global;
    want[0] = end - begin;
    if (t.shape() != want)
      fail(ErrorCategory::shape_mismatch, "make_input_slice", *in.npy, " rows [", begin, ", ", end, ") have shape ",
           to_string(t.shape()), "; the spec was built for ", to_string(global), " (the file changed?)");
    if (t.dtype() == in.dtype && in.dtype == dtype) return t;
    return cast_through(t.view(), in.dtype, dtype);
  }
  Shape shape = global;
  shape[0] = end - begin;
  Tensor t = Tensor::empty(shape, dtype, Memory::host);
  const int64_t row = global[0] > 0 ? checked_numel(global, "make_input_slice", "input") / global[0] : 0;
  generate_through(in.shape, dtype, in.dtype, in.init, begin * row, end * row, t.view().data);
  return t;
}

}  // namespace kfuse
