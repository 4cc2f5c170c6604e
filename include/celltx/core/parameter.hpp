#pragma once
// A trainable parameter: its value and the gradient that backward assigns.
#include <string>
#include <string_view>
#include "celltx/core/tensor.hpp"

namespace celltx {

// A grad that holds no memory (after release_gradients) is torch's grad=None: optimisers and
// clip_grad_norm skip it, and the next backward allocates it again.
template <Scalar T, Backend B = cpu>
struct Parameter {
    Tensor<T, B> value;
    Tensor<T, B> grad;

    Parameter() = default;
    explicit Parameter(Shape shape) : value(shape), grad(shape) {}
    const Shape& shape() const noexcept { return value.shape(); }
    index_t numel() const noexcept { return value.numel(); }

    /// The gradient a backward assigns: allocated (zeroed) here when it was released.
    Tensor<T, B>& grad_for_backward() {
        if (grad.data() == nullptr && !value.empty()) grad = Tensor<T, B>(value.shape());
        return grad;
    }
};

/// Frees every parameter gradient of `module` (any type with visit_parameters): a model that only
/// predicts then holds its weights alone. A later backward allocates the gradients again.
template <class Module>
void release_gradients(Module& module) {
    module.visit_parameters([](const auto&, auto& p) { p.grad = decltype(p.grad)(); });
}

/// Joins a module prefix and a parameter name the way PyTorch's state_dict does ("a.b." + "weight").
inline std::string join_name(std::string_view prefix, std::string_view name) {
    std::string s(prefix);
    s += name;
    return s;
}

} // namespace celltx
