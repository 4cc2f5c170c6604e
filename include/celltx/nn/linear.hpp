#pragma once
// Linear: y = x Wᵀ + b over the last axis (nn.Linear; state_dict names `weight` [out,in], `bias` [out]).
//
// Contract (shared by every layer in celltx::nn):
//  - forward(x, ctx) saves what backward needs and returns a new tensor; layers that save their
//    input also take it as an rvalue Tensor, keeping it without a copy. Under a Context with
//    keep_for_backward false (Context::inference()) it saves nothing and releases what an earlier
//    forward saved, so that a backward then throws instead of using stale activations;
//  - backward(dy, dx) ASSIGNS every parameter gradient and ADDS the input gradient into dx
//    (an empty dx means the caller needs no input gradient);
//  - visit_parameters(f, prefix) calls f(name, parameter) with PyTorch's state_dict names.
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"

namespace celltx::nn {

/// The ops a Linear layer calls on backend B.
template <class B, class T>
concept LinearOps = ops::provides_gemm<B, T> && ops::provides_add_row_vector<B, T> && ops::provides_column_sum<B, T>;

template <Scalar T, Backend B = cpu>
class Linear {
public:
    Linear() = default;
    Linear(index_t in_features, index_t out_features, bool bias = true)
        : weight(Shape{out_features, in_features}), in_(in_features), out_(out_features), has_bias_(bias) {
        if (bias) this->bias = Parameter<T, B>(Shape{out_features});
    }

    index_t in_features() const noexcept { return in_; }
    index_t out_features() const noexcept { return out_; }
    bool has_bias() const noexcept { return has_bias_; }

    /// PyTorch's default initialisation: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
    void reset_parameters(Generator& g) {
        init::linear_default(weight.value, g, in_);
        if (has_bias_) init::linear_default(bias.value, g, in_);
    }

    /// x [..., in] -> y [..., out]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        require(x.rank() >= 1 && x.shape().last() == in_, "Linear: input {} does not end in in_features={}", x.shape(), in_);
        kept_ = ctx.keep_for_backward;
        x_ = kept_ ? Tensor<T, B>::copy_of(x) : Tensor<T, B>();
        return apply(x);
    }
    /// As above, keeping x itself as the saved input: a caller done with x saves the copy.
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) {
        require(x.rank() >= 1 && x.shape().last() == in_, "Linear: input {} does not end in in_features={}", x.shape(), in_);
        kept_ = ctx.keep_for_backward;
        if (!kept_) {
            x_ = Tensor<T, B>();
            return apply(x.cview());  // x is freed on return
        }
        x_ = std::move(x);
        return apply(x_.cview());
    }

    /// y = x Wᵀ + b without saving anything (inference).
    Tensor<T, B> apply(ConstView<T, B> x) const {
        require(x.rank() >= 1 && x.shape().last() == in_, "Linear: input {} does not end in in_features={}", x.shape(), in_);
        const index_t rows = x.shape().rows();
        auto y = Tensor<T, B>::uninitialized(x.shape().with_last(out_));
        ops::gemm(B{}, false, true, rows, out_, in_, T(1), x.data(), in_, weight.value.data(), in_, T(0), y.data(), out_);
        if (has_bias_) ops::add_row_vector(B{}, y.data(), bias.value.data(), rows, out_);
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "Linear::backward: {}", nothing_kept_for_backward);
        backward_given_input(x_.cview(), dy, dx);
    }
    /// backward of apply(x), with the input given again by the caller (layers that keep one input for
    /// several projections, such as SwiGLU's gate and up).
    void backward_given_input(ConstView<T, B> x, ConstView<T, B> dy, TensorView<T, B> dx) {
        require(x.rank() >= 1 && x.shape().last() == in_, "Linear::backward: input {} does not end in in_features={}", x.shape(), in_);
        const index_t rows = x.shape().rows();
        require(dy.shape() == x.shape().with_last(out_), "Linear::backward: dy {} does not match the output {}", dy.shape(),
                x.shape().with_last(out_));
        // dW = dyᵀ x, db = Σ_rows dy (assigned), dx += dy W
        ops::gemm(B{}, true, false, out_, in_, rows, T(1), dy.data(), out_, x.data(), in_, T(0), weight.grad_for_backward().data(), in_);
        if (has_bias_) ops::column_sum(B{}, dy.data(), rows, out_, bias.grad_for_backward().data());
        if (dx.data()) {
            require(dx.shape() == x.shape(), "Linear::backward: dx {} does not match the input {}", dx.shape(), x.shape());
            ops::gemm(B{}, false, false, rows, in_, out_, T(1), dy.data(), out_, weight.value.data(), in_, T(1), dx.data(), in_);
        }
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "weight"), weight);
        if (has_bias_) f(join_name(prefix, "bias"), bias);
    }

    Parameter<T, B> weight;
    Parameter<T, B> bias;

private:
    index_t in_ = 0, out_ = 0;
    bool has_bias_ = true;
    bool kept_ = false;  // whether the last forward saved x_
    Tensor<T, B> x_;
};

} // namespace celltx::nn
