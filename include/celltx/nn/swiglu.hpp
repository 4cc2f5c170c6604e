#pragma once
// SwiGLU(d, inter): HF LlamaMLP, y = down_proj(silu(gate_proj(x)) * up_proj(x)), no biases;
// state_dict `gate_proj.weight` [inter,d], `up_proj.weight` [inter,d], `down_proj.weight` [d,inter].
// Layer contract of nn/linear.hpp.
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/nn/linear.hpp"

namespace celltx::nn {

/// The ops a SwiGLU calls on backend B.
template <class B, class T>
concept SwiGLUOps = LinearOps<B, T> && ops::provides_swiglu_forward<B, T> && ops::provides_swiglu_backward<B, T>;

template <Scalar T, Backend B = cpu>
class SwiGLU {
public:
    SwiGLU() = default;
    SwiGLU(index_t d, index_t inter) : gate_proj(d, inter, false), up_proj(d, inter, false), down_proj(inter, d, false) {}

    index_t features() const noexcept { return gate_proj.in_features(); }
    index_t intermediate() const noexcept { return gate_proj.out_features(); }

    /// nn.Linear's default initialisation for the three projections.
    void reset_parameters(Generator& g) {
        gate_proj.reset_parameters(g);
        up_proj.reset_parameters(g);
        down_proj.reset_parameters(g);
    }

    /// x [..., d] -> y [..., d]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) { return forward(Tensor<T, B>::copy_of(x), ctx); }
    /// As above, keeping x itself (no copy): one saved input serves both gate_proj and up_proj.
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) {
        kept_ = ctx.keep_for_backward;
        if (!kept_) {  // inference: free x after the projections, and h overwrites the gate in place
            x_ = gate_ = up_ = Tensor<T, B>();
            Tensor<T, B> g = gate_proj.apply(x.cview()), u = up_proj.apply(x.cview());
            x = Tensor<T, B>();
            ops::swiglu_forward(B{}, g.data(), u.data(), g.data(), g.numel());
            return down_proj.forward(std::move(g), ctx);
        }
        x_ = std::move(x);
        gate_ = gate_proj.apply(x_.cview());
        up_ = up_proj.apply(x_.cview());
        auto h = Tensor<T, B>::uninitialized(gate_.shape());
        ops::swiglu_forward(B{}, gate_.data(), up_.data(), h.data(), h.numel());
        return down_proj.forward(std::move(h), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "SwiGLU::backward: {}", nothing_kept_for_backward);
        Tensor<T, B> dh(gate_.shape());
        down_proj.backward(dy, dh.view());
        auto dg = Tensor<T, B>::uninitialized(gate_.shape());
        auto du = Tensor<T, B>::uninitialized(gate_.shape());
        ops::swiglu_backward(B{}, gate_.data(), up_.data(), dh.data(), dg.data(), du.data(), dh.numel());
        gate_proj.backward_given_input(x_.cview(), dg.cview(), dx);
        up_proj.backward_given_input(x_.cview(), du.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        gate_proj.visit_parameters(f, prefix + "gate_proj.");
        up_proj.visit_parameters(f, prefix + "up_proj.");
        down_proj.visit_parameters(f, prefix + "down_proj.");
    }

    Linear<T, B> gate_proj, up_proj, down_proj;

private:
    bool kept_ = false;
    Tensor<T, B> x_, gate_, up_;  // saved by forward: the input and the two projections
};

} // namespace celltx::nn
