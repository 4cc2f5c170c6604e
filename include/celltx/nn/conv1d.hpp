#pragma once
// Conv1D: Hugging Face GPT-2's projection, y = x·W + b over the last axis, with the weight stored
// [in, out] (the transpose of nn.Linear); state_dict names `weight` [in,out], `bias` [out].
// The parameter keeps the checkpoint's [in, out] layout, so GPT-2 weights load and save as they
// are (PyTorch reads them back) and the GEMMs read W without a transposed copy.
// Layer contract of nn/linear.hpp.
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"

namespace celltx::nn {

template <Scalar T, Backend B = cpu>
class Conv1D {
public:
    Conv1D() = default;
    Conv1D(index_t in_features, index_t out_features)
        : weight(Shape{in_features, out_features}), bias(Shape{out_features}), in_(in_features), out_(out_features) {
        require(in_features >= 1 && out_features >= 1, "Conv1D: needs positive sizes (got in={}, out={})", in_features, out_features);
    }

    index_t in_features() const noexcept { return in_; }
    index_t out_features() const noexcept { return out_; }

    /// HF GPT-2's initialisation: weight ~ N(0, std) (0.02), bias = 0.
    void reset_parameters(Generator& g, double std = 0.02) {
        init::normal(weight.value, g, 0.0, std);
        bias.value.zero();
    }

    /// x [..., in] -> y [..., out]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        check(x);
        kept_ = ctx.keep_for_backward;
        x_ = kept_ ? Tensor<T, B>::copy_of(x) : Tensor<T, B>();
        return apply(x);
    }

    /// y = x·W + b without saving anything (inference).
    Tensor<T, B> apply(ConstView<T, B> x) const {
        check(x);
        const index_t rows = x.shape().rows();
        auto y = Tensor<T, B>::uninitialized(x.shape().with_last(out_));
        ops::gemm(B{}, false, false, rows, out_, in_, T(1), x.data(), in_, weight.value.data(), out_, T(0), y.data(), out_);
        ops::add_row_vector(B{}, y.data(), bias.value.data(), rows, out_);
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "Conv1D::backward: {}", nothing_kept_for_backward);
        const index_t rows = x_.shape().rows();
        require(dy.shape() == x_.shape().with_last(out_), "Conv1D::backward: dy {} does not match the output {}", dy.shape(),
                x_.shape().with_last(out_));
        // dW = xᵀ dy, db = Σ_rows dy (assigned), dx += dy Wᵀ
        ops::gemm(B{}, true, false, in_, out_, rows, T(1), x_.data(), in_, dy.data(), out_, T(0), weight.grad_for_backward().data(), out_);
        ops::column_sum(B{}, dy.data(), rows, out_, bias.grad_for_backward().data());
        if (dx.data()) {
            require(dx.shape() == x_.shape(), "Conv1D::backward: dx {} does not match the input {}", dx.shape(), x_.shape());
            ops::gemm(B{}, false, true, rows, in_, out_, T(1), dy.data(), out_, weight.value.data(), out_, T(1), dx.data(), in_);
        }
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
    }

    Parameter<T, B> weight;  ///< [in, out]
    Parameter<T, B> bias;    ///< [out]

private:
    void check(ConstView<T, B> x) const {
        require(x.rank() >= 1 && x.shape().last() == in_, "Conv1D: input {} does not end in in_features={}", x.shape(), in_);
    }

    index_t in_ = 0, out_ = 0;
    bool kept_ = false;
    Tensor<T, B> x_;  // saved input
};

} // namespace celltx::nn
