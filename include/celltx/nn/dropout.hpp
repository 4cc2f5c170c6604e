#pragma once
// Dropout(p, stream): in training each element is kept with probability 1-p and scaled by 1/(1-p);
// in eval (or p = 0) it is the identity. The mask is a pure function of
// CounterRng(ctx.seed, stream).substream(ctx.step) and the element index, so it does not depend on
// threads, and backward (or a recomputation with the same ctx) sees exactly the forward's mask.
// Nothing is stored: backward redraws the mask. Layer contract of nn/linear.hpp.
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"

namespace celltx::nn {

/// The ops a Dropout calls on backend B.
template <class B, class T>
concept DropoutOps = ops::provides_dropout_apply<B, T> && ops::provides_accumulate<B, T>;

template <Scalar T, Backend B = cpu>
class Dropout {
public:
    Dropout() = default;
    explicit Dropout(double p, std::uint64_t stream = 0) : p_(p), stream_(stream) {
        require(p >= 0.0 && p < 1.0, "Dropout: p={} is not in [0, 1)", p);
    }

    double p() const noexcept { return p_; }
    std::uint64_t stream() const noexcept { return stream_; }
    /// Shape of the last forward's input (and output).
    const Shape& last_shape() const noexcept { return shape_; }

    /// The random stream whose uniform(i) > p keeps element i under `ctx`.
    CounterRng mask_rng(const Context& ctx) const noexcept { return CounterRng(ctx.seed, stream_).substream(ctx.step); }

    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        shape_ = x.shape();
        active_ = ctx.training && p_ > 0.0;
        if (!active_) return Tensor<T, B>::copy_of(x);
        rng_ = mask_rng(ctx);
        auto y = Tensor<T, B>::uninitialized(x.shape());
        ops::dropout_apply(B{}, rng_, p_, x.data(), y.data(), x.numel(), false);
        return y;
    }
    /// As above; when no mask applies, x itself is the output (no copy).
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) {
        if (ctx.training && p_ > 0.0) return forward(x.cview(), ctx);
        shape_ = x.shape();
        active_ = false;
        return std::move(x);
    }
    /// Whether the last forward applied a mask (backward is then the identity where it is not).
    bool active() const noexcept { return active_; }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(dy.shape() == shape_, "Dropout::backward: dy {} does not match the output {}", dy.shape(), shape_);
        if (!dx.data()) return;
        require(dx.shape() == shape_, "Dropout::backward: dx {} does not match the input {}", dx.shape(), shape_);
        if (active_) ops::dropout_apply(B{}, rng_, p_, dy.data(), dx.data(), dy.numel(), true);
        else ops::accumulate(B{}, dy.data(), dx.data(), dy.numel());
    }

    template <class F>
    void visit_parameters(F&&, const std::string& = "") {}

private:
    double p_ = 0.0;
    std::uint64_t stream_ = 0;
    // saved by forward: whether a mask was applied, and the stream it was drawn from
    bool active_ = false;
    CounterRng rng_;
    Shape shape_;
};

} // namespace celltx::nn
