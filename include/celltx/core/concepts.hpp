#pragma once
// The layer contract as a concept, so that a misuse fails with one readable line.
#include <concepts>
#include <string>
#include <string_view>
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx {

/// Calls f(name, parameter) for every parameter, with PyTorch state_dict names.
template <class L, class T, class B = cpu>
concept ParameterVisitable = requires(L& layer, void (*f)(std::string_view, Parameter<T, B>&), const std::string& prefix) {
    layer.visit_parameters(f, prefix);
};

/// A single-input layer: forward saves what backward needs; backward assigns parameter gradients
/// and adds (+=) into the input gradient.
template <class L, class T, class B = cpu>
concept Layer = ParameterVisitable<L, T, B> &&
    requires(L& layer, ConstView<T, B> x, ConstView<T, B> dy, TensorView<T, B> dx, const Context& ctx) {
        { layer.forward(x, ctx) } -> std::same_as<Tensor<T, B>>;
        layer.backward(dy, dx);
    };

/// Counts the scalars of every parameter of a module.
template <class T, class B = cpu, class M>
    requires ParameterVisitable<M, T, B>
index_t parameter_count(M& module) {
    index_t n = 0;
    module.visit_parameters([&](std::string_view, Parameter<T, B>& p) { n += p.numel(); }, std::string{});
    return n;
}

} // namespace celltx
