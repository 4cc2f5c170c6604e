#pragma once
// Parameterless element-wise activations: GELU (exact erf form, or the tanh form with
// GELU(Approx::tanh)), ReLU and SiLU, and Activation, the same selected at run time (what Mlp
// holds). forward saves its input; backward adds dy * f'(x) into dx. Layer contract of nn/linear.hpp.
#include <string>
#include <string_view>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"

namespace celltx::nn {

/// The name used in configs ("gelu", "gelu_tanh", "relu", "silu").
inline const char* activation_name(ActivationKind k) {
    switch (k) {
        case ActivationKind::gelu: return "gelu";
        case ActivationKind::gelu_tanh: return "gelu_tanh";
        case ActivationKind::relu: return "relu";
        case ActivationKind::silu: return "silu";
    }
    return "?";
}
/// Parses a config name; "gelu_new" and "gelu_pytorch_tanh" (HF's names) mean the tanh form.
inline ActivationKind activation_from_name(std::string_view name) {
    if (name == "gelu") return ActivationKind::gelu;
    if (name == "gelu_tanh" || name == "gelu_new" || name == "gelu_pytorch_tanh") return ActivationKind::gelu_tanh;
    if (name == "relu") return ActivationKind::relu;
    if (name == "silu" || name == "swish") return ActivationKind::silu;
    throw ShapeError(fmt::format("activation: unknown name '{}' (expected gelu, gelu_tanh, relu or silu)", name));
}

/// The ops an Activation calls on backend B.
template <class B, class T>
concept ActivationOps = ops::provides_activation_forward<B, T> && ops::provides_activation_backward<B, T>;

template <Scalar T, Backend B = cpu>
class Activation {
public:
    explicit Activation(ActivationKind kind = ActivationKind::gelu) : kind_(kind) {}

    ActivationKind kind() const noexcept { return kind_; }

    /// y = f(x), element-wise, any shape.
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) { return forward(Tensor<T, B>::copy_of(x), ctx); }
    /// As above, keeping x itself as the saved input (no copy); under inference, f is applied in place.
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) {
        kept_ = ctx.keep_for_backward;
        if (!kept_) {
            x_ = Tensor<T, B>();
            ops::activation_forward(B{}, kind_, x.data(), x.data(), x.numel());
            return std::move(x);
        }
        x_ = std::move(x);
        auto y = Tensor<T, B>::uninitialized(x_.shape());
        ops::activation_forward(B{}, kind_, x_.data(), y.data(), x_.numel());
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "{}::backward: {}", activation_name(kind_), nothing_kept_for_backward);
        require(dy.shape() == x_.shape(), "{}::backward: dy {} does not match the output {}", activation_name(kind_), dy.shape(),
                x_.shape());
        if (!dx.data()) return;
        require(dx.shape() == x_.shape(), "{}::backward: dx {} does not match the input {}", activation_name(kind_), dx.shape(),
                x_.shape());
        ops::activation_backward(B{}, kind_, x_.data(), dy.data(), dx.data(), x_.numel());
    }

    template <class F>
    void visit_parameters(F&&, const std::string& = "") {}

private:
    ActivationKind kind_;
    bool kept_ = false;  // whether the last forward saved x_
    Tensor<T, B> x_;     // saved input
};

/// GELU's two forms (nn.GELU(approximate='none' | 'tanh')).
enum class Approx { none, tanh };

template <Scalar T, Backend B = cpu>
class GELU : public Activation<T, B> {
public:
    explicit GELU(Approx a = Approx::none)
        : Activation<T, B>(a == Approx::tanh ? ActivationKind::gelu_tanh : ActivationKind::gelu) {}
};

template <Scalar T, Backend B = cpu>
class ReLU : public Activation<T, B> {
public:
    ReLU() : Activation<T, B>(ActivationKind::relu) {}
};

template <Scalar T, Backend B = cpu>
class SiLU : public Activation<T, B> {
public:
    SiLU() : Activation<T, B>(ActivationKind::silu) {}
};

} // namespace celltx::nn
