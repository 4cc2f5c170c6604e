#pragma once
// RMSNorm over the last axis (HF LlamaRMSNorm; state_dict `weight` [d]):
// y = weight * (x * rsqrt(mean(x²) + eps)), the statistics in double (HF: float32), the normalised
// value rounded to the input type before the weight multiplies it. Layer contract of nn/linear.hpp.
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"

namespace celltx::nn {

/// The ops an RMSNorm calls on backend B.
template <class B, class T>
concept RMSNormOps = ops::provides_rms_norm_forward<B, T> && ops::provides_rms_norm_backward<B, T> && ops::provides_fill<B, T>;

template <Scalar T, Backend B = cpu>
class RMSNorm {
public:
    RMSNorm() = default;
    explicit RMSNorm(index_t d, double eps = 1e-6) : weight(Shape{d}), d_(d), eps_(eps) {
        require(d > 0 && eps >= 0.0, "RMSNorm: needs d > 0 and eps >= 0 (got d={}, eps={})", d, eps);
        ops::fill(B{}, weight.value.data(), d, T(1));
    }

    index_t features() const noexcept { return d_; }
    double eps() const noexcept { return eps_; }

    /// HF's initialisation: weight = 1 (the generator is not used).
    void reset_parameters(Generator&) { ops::fill(B{}, weight.value.data(), d_, T(1)); }

    /// x [..., d] -> y [..., d]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        require(x.rank() >= 1 && x.shape().last() == d_, "RMSNorm: input {} does not end in d={}", x.shape(), d_);
        const index_t rows = x.shape().rows();
        auto y = Tensor<T, B>::uninitialized(x.shape());
        normed_ = Tensor<T, B>::uninitialized(x.shape());
        rstd_ = Tensor<T, B>::uninitialized(Shape{rows});
        ops::rms_norm_forward(B{}, x.data(), weight.value.data(), y.data(), normed_.data(), rstd_.data(), rows, d_, eps_);
        kept_ = ctx.keep_for_backward;
        if (!kept_) normed_ = rstd_ = Tensor<T, B>();
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "RMSNorm::backward: {}", nothing_kept_for_backward);
        require(dy.shape() == normed_.shape(), "RMSNorm::backward: dy {} does not match the output {}", dy.shape(), normed_.shape());
        if (dx.data())
            require(dx.shape() == normed_.shape(), "RMSNorm::backward: dx {} does not match the input {}", dx.shape(), normed_.shape());
        ops::rms_norm_backward(B{}, dy.data(), normed_.data(), rstd_.data(), weight.value.data(), normed_.shape().rows(), d_,
                               dx.data(), weight.grad_for_backward().data());
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "weight"), weight);
    }

    Parameter<T, B> weight;

private:
    index_t d_ = 0;
    double eps_ = 1e-6;
    bool kept_ = false;
    Tensor<T, B> normed_, rstd_;  // saved by forward: x * rstd and rstd per row
};

} // namespace celltx::nn
