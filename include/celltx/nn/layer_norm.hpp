#pragma once
// LayerNorm over the last axis (nn.LayerNorm(d, eps, elementwise_affine); state_dict `weight`, `bias` [d]):
// y = (x - mean) / sqrt(var + eps) * weight + bias with the biased variance, as PyTorch.
// Statistics are accumulated in double. Follows the layer contract of nn/linear.hpp.
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"

namespace celltx::nn {

/// The ops a LayerNorm calls on backend B.
template <class B, class T>
concept LayerNormOps = ops::provides_layer_norm_forward<B, T> && ops::provides_layer_norm_backward<B, T> && ops::provides_fill<B, T>;

template <Scalar T, Backend B = cpu>
class LayerNorm {
public:
    LayerNorm() = default;
    explicit LayerNorm(index_t d, double eps = 1e-5, bool affine = true) : d_(d), eps_(eps), affine_(affine) {
        require(d > 0 && eps >= 0.0, "LayerNorm: needs d > 0 and eps >= 0 (got d={}, eps={})", d, eps);
        if (affine) {
            weight = Parameter<T, B>(Shape{d});
            bias = Parameter<T, B>(Shape{d});
            ops::fill(B{}, weight.value.data(), d, T(1));
        }
    }

    index_t features() const noexcept { return d_; }
    double eps() const noexcept { return eps_; }
    bool affine() const noexcept { return affine_; }

    /// PyTorch's initialisation: weight = 1, bias = 0 (the generator is not used).
    void reset_parameters(Generator&) {
        if (!affine_) return;
        ops::fill(B{}, weight.value.data(), d_, T(1));
        ops::fill(B{}, bias.value.data(), d_, T(0));
    }

    /// x [..., d] -> y [..., d]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        require(x.rank() >= 1 && x.shape().last() == d_, "LayerNorm: input {} does not end in d={}", x.shape(), d_);
        const index_t rows = x.shape().rows();
        auto y = Tensor<T, B>::uninitialized(x.shape());
        xhat_ = Tensor<T, B>::uninitialized(x.shape());
        rstd_ = Tensor<T, B>::uninitialized(Shape{rows});
        ops::layer_norm_forward(B{}, x.data(), affine_ ? weight.value.data() : nullptr, affine_ ? bias.value.data() : nullptr,
                                y.data(), xhat_.data(), rstd_.data(), rows, d_, eps_);
        kept_ = ctx.keep_for_backward;
        if (!kept_) xhat_ = rstd_ = Tensor<T, B>();
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "LayerNorm::backward: {}", nothing_kept_for_backward);
        require(dy.shape() == xhat_.shape(), "LayerNorm::backward: dy {} does not match the output {}", dy.shape(), xhat_.shape());
        if (dx.data())
            require(dx.shape() == xhat_.shape(), "LayerNorm::backward: dx {} does not match the input {}", dx.shape(), xhat_.shape());
        ops::layer_norm_backward(B{}, dy.data(), xhat_.data(), rstd_.data(), affine_ ? weight.value.data() : nullptr,
                                 xhat_.shape().rows(), d_, dx.data(), affine_ ? weight.grad_for_backward().data() : nullptr,
                                 affine_ ? bias.grad_for_backward().data() : nullptr);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        if (!affine_) return;
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
    }

    Parameter<T, B> weight;
    Parameter<T, B> bias;

private:
    index_t d_ = 0;
    double eps_ = 1e-5;
    bool affine_ = true;
    bool kept_ = false;
    Tensor<T, B> xhat_, rstd_;  // saved by forward: normalised input and 1/sqrt(var + eps) per row
};

} // namespace celltx::nn
