// The reference backend, last in the registry: the pipeline's ops one by one
// as the Kokkos backend's eager ops (include/kfuse/ops.hpp), independent of
// the fold and the fused kernels, which it checks. It runs on any memory:
// data elsewhere than Kokkos's memory are staged there and back.
#include "backends/backend.hpp"
#include "backends/kokkos/dispatch.hpp"
#include "kfuse/ops.hpp"

namespace kfuse::detail {

namespace {

class PreparedReference final : public PreparedStep {
 public:
  PreparedReference(const ReferenceStep& step, Memory memory) : ops_(step.ops), staged_(!kokkos::accepts(memory)) {
    // Weights and operands copied into Kokkos's memory once.
    const Memory m = kokkos_memory();
    for (Op& op : ops_) {
      if (auto* c = std::get_if<ConvTranspose2dOp>(&op)) {
        c->weight = Tensor::copy_of(c->weight, m);
        if (c->bias) c->bias = Tensor::copy_of(*c->bias, m);
      } else if (auto* b = std::get_if<BinaryOp>(&op); b && b->operand) {
        b->operand = Tensor::copy_of(*b->operand, m);
      }
    }
  }

  void run(const TensorView& x, const TensorView& out) const override {
    // The first op reads x in place, whatever its strides; each result feeds the next.
    const Tensor staged_x = staged_ ? Tensor::copy_of(x, kokkos_memory()) : Tensor();
    Tensor cur;
    TensorView in = staged_ ? staged_x.view() : x;
    for (const Op& op : ops_) {
      if (auto* c = std::get_if<ConvTranspose2dOp>(&op)) {
        cur = conv_transpose2d(in, c->weight, c->bias ? std::optional<TensorView>(c->bias->view()) : std::nullopt,
                               c->params);
      } else if (auto* u = std::get_if<UnaryOp>(&op)) {
        cur = unary(in, u->op);
      } else if (auto* b = std::get_if<BinaryOp>(&op)) {
        cur = b->operand ? binary(in, *b->operand, b->kind) : binary(in, b->scalar, b->kind);
      } else if (auto* r = std::get_if<ReduceOp>(&op)) {
        cur = reduce(in, r->kind, r->axes, r->keepdim);
      } else {
        cur = softmax(in, std::get<SoftmaxOp>(op).axis);
      }
      in = cur.view();
    }
    // The last result is contiguous; with no ops the output is a copy of x.
    copy(ops_.empty() ? in : TensorView(in.data, in.dtype, out.shape, in.memory), out);
  }

  std::string describe() const override {
    return cat(ops_.size(), " eager ops on Kokkos ", ExecSpace::name(),
               staged_ ? cat(", input and output staged through ", to_string(kokkos_memory()), " memory") : "");
  }

 private:
  std::vector<Op> ops_;
  bool staged_;
};

class ReferenceBackend final : public Backend {
 public:
  const char* name() const override { return "reference"; }
  Preparation prepare(const Step& step, const StepContext& ctx) const override {
    const auto* r = std::get_if<ReferenceStep>(&step);
    if (!r) return Preparation::refuse("runs only the reference strategy");
    if (ctx.dtype != DType::f32 && ctx.dtype != DType::f64)
      return Preparation::refuse(cat("dtype ", to_string(ctx.dtype), " (the eager ops take float32 and float64)"));
    return Preparation::of<PreparedReference>(*r, ctx.memory);
  }
};

}  // namespace

const Backend& reference_backend() {
  static const ReferenceBackend backend;
  return backend;
}

}  // namespace kfuse::detail
