// Fused CPU kernels for the length-packed GRU recurrence of
// tfrs_din/layers/recurrence.py: the whole sequence forward in one op and the
// whole sequence backward in another, instead of ~20 small TensorFlow ops per
// step. The equations and the [update, reset, candidate] gate layout are
// stated once in tfrs_din/layers/gru_equations.py (g = u for "gru", s_t * u
// for "augru", s_t for "agru"); the packed layout is that of
// `packed_gru_recurrence`. tests/layers/test_gru_equations.py checks this
// kernel against the other implementations.
//
// Packed layout: step k is rows offset_k .. offset_k + n_k - 1 and its row r
// continues row r of step k - 1 (n_0 >= n_1 >= ...); row r of step 0 starts
// from initial_state[r].

#include <cstdint>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfrs_din {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
namespace shape_inference = ::tensorflow::shape_inference;

using Matrix =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using RowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;

// g = u (GRU), s * u (AUGRU), s (AGRU), u + s * (1 - u) (AUGRU, the
// official code's form: s scales the keep gate 1 - u).
enum class Gate { kUpdate, kScaledUpdate, kScale, kScaledKeep };

Status ParseGate(const std::string& name, Gate* gate) {
  if (name == "gru") {
    *gate = Gate::kUpdate;
  } else if (name == "augru") {
    *gate = Gate::kScaledUpdate;
  } else if (name == "agru") {
    *gate = Gate::kScale;
  } else if (name == "augru_official") {
    *gate = Gate::kScaledKeep;
  } else {
    return InvalidArgument(
        "gate must be gru, augru, agru or augru_official, got ", name);
  }
  return Status();
}

// The inputs both kernels read, checked once.
struct Sequence {
  int64_t size = 0;   // P, packed rows
  int64_t units = 0;  // H
  std::vector<int64_t> sizes, offsets;
  const float* x = nullptr;
  const float* scale = nullptr;  // [P, 1] or null for a plain GRU
  const float* h0 = nullptr;
  int64_t h0_rows = 0;
  const float* kernel = nullptr;
  const float* bias = nullptr;
};

Status ReadSequence(OpKernelContext* ctx, Gate gate, Sequence* seq) {
  const Tensor& x = ctx->input(0);
  const Tensor& scale = ctx->input(1);
  const Tensor& step_sizes = ctx->input(2);
  const Tensor& h0 = ctx->input(3);
  const Tensor& kernel = ctx->input(4);
  const Tensor& bias = ctx->input(5);
  if (kernel.dims() != 2 || kernel.dim_size(1) != 3 * kernel.dim_size(0)) {
    return InvalidArgument("recurrent_kernel must be [H, 3H], got ",
                           kernel.shape().DebugString());
  }
  const int64_t units = kernel.dim_size(0);
  if (bias.dims() != 1 || bias.dim_size(0) != 3 * units) {
    return InvalidArgument("recurrent_bias must be [3H] = [", 3 * units,
                           "], got ", bias.shape().DebugString());
  }
  if (x.dims() != 2 || x.dim_size(1) != 3 * units) {
    return InvalidArgument("inputs must be [P, 3H] with 3H = ", 3 * units,
                           ", got ", x.shape().DebugString());
  }
  if (h0.dims() != 2 || h0.dim_size(1) != units) {
    return InvalidArgument("initial_state must be [n_0, ", units, "], got ",
                           h0.shape().DebugString());
  }
  if (step_sizes.dims() != 1) {
    return InvalidArgument("step_sizes must be a vector, got ",
                           step_sizes.shape().DebugString());
  }
  seq->size = x.dim_size(0);
  seq->units = units;
  auto sizes = step_sizes.flat<int32_t>();
  int64_t total = 0;
  for (int64_t k = 0; k < sizes.size(); ++k) {
    const int64_t n = sizes(k);
    const int64_t limit = k == 0 ? h0.dim_size(0) : seq->sizes.back();
    if (n < 0 || n > limit) {
      return InvalidArgument("step_sizes must be non-increasing and start at "
                             "most at the initial_state rows (",
                             h0.dim_size(0), "); step ", k, " has ", n);
    }
    seq->offsets.push_back(total);
    seq->sizes.push_back(n);
    total += n;
  }
  if (total != seq->size) {
    return InvalidArgument("step_sizes sum to ", total, " but inputs have ",
                           seq->size, " rows");
  }
  if (gate != Gate::kUpdate) {
    if (scale.dims() != 2 || scale.dim_size(0) != seq->size ||
        scale.dim_size(1) != 1) {
      return InvalidArgument("gate_scale must be [P, 1] = [", seq->size,
                             ", 1], got ", scale.shape().DebugString());
    }
    seq->scale = scale.flat<float>().data();
  }
  seq->x = x.flat<float>().data();
  seq->h0 = h0.flat<float>().data();
  seq->h0_rows = h0.dim_size(0);
  seq->kernel = kernel.flat<float>().data();
  seq->bias = bias.flat<float>().data();
  return Status();
}

// The gate g [n, H] of step k from its saved u and the scale s_t.
template <typename Update>
Matrix StepGate(const Sequence& seq, Gate gate, int64_t k,
                const Update& u) {
  const int64_t n = seq.sizes[k];
  if (gate == Gate::kUpdate) return u;
  Eigen::Map<const Eigen::VectorXf> s(seq.scale + seq.offsets[k], n);
  if (gate == Gate::kScaledUpdate) {
    return (u.array().colwise() * s.array()).matrix();
  }
  if (gate == Gate::kScaledKeep) {
    return (u.array() + (1.0f - u.array()).colwise() * s.array()).matrix();
  }
  return s.replicate(1, seq.units);
}

// Saved per packed row, [P, 4H]: u, r, p_h (= (h U + c)_h) and h~.
constexpr int kSavedGates = 4;

// Reads the gate attribute and the shared inputs; subclasses run the loop.
class PackedGruOp : public OpKernel {
 public:
  explicit PackedGruOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gate", &name));
    OP_REQUIRES_OK(ctx, ParseGate(name, &gate_));
  }

  void Compute(OpKernelContext* ctx) override {
    Sequence seq;
    OP_REQUIRES_OK(ctx, ReadSequence(ctx, gate_, &seq));
    Run(ctx, seq);
  }

 protected:
  virtual void Run(OpKernelContext* ctx, const Sequence& seq) = 0;
  Gate gate_;
};

class PackedGruForwardOp : public PackedGruOp {
 public:
  using PackedGruOp::PackedGruOp;

 protected:
  void Run(OpKernelContext* ctx, const Sequence& seq) override {
    const int64_t h = seq.units;
    Tensor *states_out = nullptr, *gates_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({seq.size, h}),
                                             &states_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({seq.size, kSavedGates * h}),
                            &gates_out));
    float* states = states_out->flat<float>().data();
    float* gates = gates_out->flat<float>().data();
    ConstMatrixMap kernel(seq.kernel, h, 3 * h);
    RowVectorMap bias(seq.bias, 3 * h);
    const float* previous = seq.h0;
    for (size_t k = 0; k < seq.sizes.size(); ++k) {
      const int64_t n = seq.sizes[k], offset = seq.offsets[k];
      ConstMatrixMap prev(previous, n, h);
      ConstMatrixMap x(seq.x + offset * 3 * h, n, 3 * h);
      MatrixMap saved(gates + offset * kSavedGates * h, n, kSavedGates * h);
      auto projected = saved.leftCols(3 * h);
      projected.noalias() = prev * kernel;
      projected.rowwise() += bias;
      // [u, r] = sigmoid(x_ur + p_ur); h~ = tanh(x_h + r * p_h).
      projected.leftCols(2 * h) =
          (x.leftCols(2 * h) + projected.leftCols(2 * h)).array().logistic();
      saved.rightCols(h) =
          (x.rightCols(h).array() + projected.middleCols(h, h).array() *
                                        projected.rightCols(h).array())
              .tanh();
      const Matrix g = StepGate(seq, gate_, k, saved.leftCols(h));
      float* current = states + offset * h;
      MatrixMap(current, n, h) =
          prev.array() + g.array() * (saved.rightCols(h).array() - prev.array());
      previous = current;
    }
  }

};

class PackedGruBackwardOp : public PackedGruOp {
 public:
  using PackedGruOp::PackedGruOp;

 protected:
  void Run(OpKernelContext* ctx, const Sequence& seq) override {
    const int64_t h = seq.units, size = seq.size;
    const Tensor& states_in = ctx->input(6);
    const Tensor& gates_in = ctx->input(7);
    const Tensor& d_states_in = ctx->input(8);
    for (const Tensor* t : {&states_in, &d_states_in}) {
      OP_REQUIRES(ctx, t->shape() == TensorShape({size, h}),
                  InvalidArgument("states and their gradient must be [P, H] = [",
                                  size, ", ", h, "], got ",
                                  t->shape().DebugString()));
    }
    OP_REQUIRES(ctx, gates_in.shape() == TensorShape({size, kSavedGates * h}),
                InvalidArgument("gates must be [P, 4H] = [", size, ", ",
                                kSavedGates * h, "], got ",
                                gates_in.shape().DebugString()));
    const float* states = states_in.flat<float>().data();
    const float* gates = gates_in.flat<float>().data();
    const float* d_states = d_states_in.flat<float>().data();
    Tensor *d_x_out, *d_scale_out, *d_h0_out, *d_kernel_out, *d_bias_out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({size, 3 * h}),
                                             &d_x_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(),
                                             &d_scale_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            2, TensorShape({seq.h0_rows, h}), &d_h0_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({h, 3 * h}),
                                             &d_kernel_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({3 * h}),
                                             &d_bias_out));
    float* d_x = d_x_out->flat<float>().data();
    float* d_scale = d_scale_out->flat<float>().data();
    MatrixMap d_h(d_h0_out->flat<float>().data(), seq.h0_rows, h);
    d_h.setZero();  // running dL/dh_t of every row, becomes dL/dh0
    d_scale_out->flat<float>().setZero();
    ConstMatrixMap kernel(seq.kernel, h, 3 * h);

    // Every packed row's previous state and dL/d(h U + c): the kernel and
    // bias gradients are one product of the two after the loop.
    Matrix previous(size, h), d_projected(size, 3 * h);
    for (int64_t k = static_cast<int64_t>(seq.sizes.size()) - 1; k >= 0;
         --k) {
      const int64_t n = seq.sizes[k], offset = seq.offsets[k];
      auto prev = previous.middleRows(offset, n);
      prev = ConstMatrixMap(k == 0 ? seq.h0 : states + seq.offsets[k - 1] * h,
                            n, h);
      ConstMatrixMap saved(gates + offset * kSavedGates * h, n,
                           kSavedGates * h);
      const auto u = saved.leftCols(h).array();
      const auto r = saved.middleCols(h, h).array();
      const auto p_h = saved.middleCols(2 * h, h).array();
      const auto candidate = saved.rightCols(h).array();
      const Matrix g = StepGate(seq, gate_, k, saved.leftCols(h));
      auto dh = d_h.topRows(n);
      dh += ConstMatrixMap(d_states + offset * h, n, h);
      // dL/d(g * h~), dL/d(candidate pre-activation), dL/dg.
      const Matrix d_gated = dh.array() * g.array();
      const Matrix d_candidate = d_gated.array() * (1.0f - candidate.square());
      const Matrix d_g = dh.array() * (candidate - prev.array());
      auto d_step = d_projected.middleRows(offset, n);
      Eigen::Map<Eigen::VectorXf> d_s(d_scale + offset, n);
      Eigen::Map<const Eigen::VectorXf> s(
          seq.scale == nullptr ? nullptr : seq.scale + offset, n);
      switch (gate_) {
        case Gate::kUpdate:
          d_step.leftCols(h) = d_g.array() * u * (1.0f - u);
          break;
        case Gate::kScaledUpdate:
          d_step.leftCols(h) =
              (d_g.array().colwise() * s.array()) * u * (1.0f - u);
          d_s = (d_g.array() * u).rowwise().sum();
          break;
        case Gate::kScale:
          d_step.leftCols(h).setZero();
          d_s = d_g.rowwise().sum();
          break;
        case Gate::kScaledKeep:
          d_step.leftCols(h) = (d_g.array().colwise() * (1.0f - s.array())) *
                               u * (1.0f - u);
          d_s = (d_g.array() * (1.0f - u)).rowwise().sum();
          break;
      }
      d_step.middleCols(h, h) = d_candidate.array() * p_h * r * (1.0f - r);
      d_step.rightCols(h) = d_candidate.array() * r;
      MatrixMap dx(d_x + offset * 3 * h, n, 3 * h);
      dx.leftCols(2 * h) = d_step.leftCols(2 * h);
      dx.rightCols(h) = d_candidate;
      dh -= d_gated;
      dh.noalias() += d_step * kernel.transpose();
    }
    MatrixMap(d_kernel_out->flat<float>().data(), h, 3 * h).noalias() =
        previous.transpose() * d_projected;
    Eigen::Map<Eigen::RowVectorXf>(d_bias_out->flat<float>().data(), 3 * h) =
        d_projected.colwise().sum();
  }

};

constexpr char kGateAttr[] =
    "gate: {'gru', 'augru', 'agru', 'augru_official'}";

Status ForwardShape(shape_inference::InferenceContext* c) {
  const auto units = c->Dim(c->input(4), 0);
  shape_inference::DimensionHandle saved;
  TF_RETURN_IF_ERROR(c->Multiply(units, kSavedGates, &saved));
  c->set_output(0, c->Matrix(c->Dim(c->input(0), 0), units));
  c->set_output(1, c->Matrix(c->Dim(c->input(0), 0), saved));
  return Status();
}

Status BackwardShape(shape_inference::InferenceContext* c) {
  // d_inputs, d_gate_scale, d_initial_state, d_kernel, d_bias take the
  // shapes of inputs 0, 1, 3, 4 and 5.
  const int like[] = {0, 1, 3, 4, 5};
  for (int i = 0; i < 5; ++i) c->set_output(i, c->input(like[i]));
  return Status();
}

}  // namespace

REGISTER_OP("TfrsDinPackedGruForward")
    .Input("inputs: float")
    .Input("gate_scale: float")
    .Input("step_sizes: int32")
    .Input("initial_state: float")
    .Input("recurrent_kernel: float")
    .Input("recurrent_bias: float")
    .Output("states: float")
    .Output("gates: float")
    .Attr(kGateAttr)
    .SetShapeFn(ForwardShape);

REGISTER_OP("TfrsDinPackedGruBackward")
    .Input("inputs: float")
    .Input("gate_scale: float")
    .Input("step_sizes: int32")
    .Input("initial_state: float")
    .Input("recurrent_kernel: float")
    .Input("recurrent_bias: float")
    .Input("states: float")
    .Input("gates: float")
    .Input("d_states: float")
    .Output("d_inputs: float")
    .Output("d_gate_scale: float")
    .Output("d_initial_state: float")
    .Output("d_recurrent_kernel: float")
    .Output("d_recurrent_bias: float")
    .Attr(kGateAttr)
    .SetShapeFn(BackwardShape);

REGISTER_KERNEL_BUILDER(
    Name("TfrsDinPackedGruForward").Device(::tensorflow::DEVICE_CPU),
    PackedGruForwardOp);
REGISTER_KERNEL_BUILDER(
    Name("TfrsDinPackedGruBackward").Device(::tensorflow::DEVICE_CPU),
    PackedGruBackwardOp);

}  // namespace tfrs_din
