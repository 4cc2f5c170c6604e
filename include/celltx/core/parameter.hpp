#pragma once
// A trainable parameter: its value and the gradient that backward assigns.
#include <string>
#include <string_view>
#include "celltx/core/tensor.hpp"

namespace celltx {

template <Scalar T, Backend B = cpu>
struct Parameter {
    Tensor<T, B> value;
    Tensor<T, B> grad;

    Parameter() = default;
    explicit Parameter(Shape shape) : value(shape), grad(shape) {}
    const Shape& shape() const noexcept { return value.shape(); }
    index_t numel() const noexcept { return value.numel(); }
};

/// Joins a module prefix and a parameter name the way PyTorch's state_dict does ("a.b." + "weight").
inline std::string join_name(std::string_view prefix, std::string_view name) {
    std::string s(prefix);
    s += name;
    return s;
}

} // namespace celltx
