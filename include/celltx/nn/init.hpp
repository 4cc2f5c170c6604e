#pragma once
// Parameter initialisers with PyTorch's distributions (not its random streams: celltx draws from
// its own seeded counter RNG, so PyTorch-initialised weights are loaded from safetensors instead).
// Values are drawn on the host in element order and uploaded, so a model on any backend starts from
// the same bits as on the CPU.
#include <cmath>
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::init {

namespace detail {
/// t[i] = draw() for every element in order, drawn on the host.
template <Scalar T, Backend B, class Draw>
void fill_from_host(Tensor<T, B>& t, Draw&& draw) {
    if constexpr (!B::is_device) {
        for (index_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(draw());
    } else {
        auto h = Tensor<T, cpu>::uninitialized(t.shape());
        for (index_t i = 0; i < h.numel(); ++i) h[i] = static_cast<T>(draw());
        upload(h.data(), t.view());
    }
}
} // namespace detail

template <Scalar T, Backend B>
void uniform(Tensor<T, B>& t, Generator& g, double lo, double hi) {
    detail::fill_from_host(t, [&] { return lo + (hi - lo) * g.uniform(); });
}
template <Scalar T, Backend B>
void normal(Tensor<T, B>& t, Generator& g, double mean, double std) {
    detail::fill_from_host(t, [&] { return mean + std * g.normal(); });
}
template <Scalar T, Backend B>
void constant(Tensor<T, B>& t, double value) {
    detail::fill_from_host(t, [&] { return value; });
}
/// nn.init.xavier_uniform_ for a [fan_out, fan_in] matrix.
template <Scalar T, Backend B>
void xavier_uniform(Tensor<T, B>& t, Generator& g, index_t fan_out, index_t fan_in) {
    const double a = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
    uniform(t, g, -a, a);
}
/// nn.Linear's default (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
template <Scalar T, Backend B>
void linear_default(Tensor<T, B>& t, Generator& g, index_t fan_in) {
    const double a = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    uniform(t, g, -a, a);
}

} // namespace celltx::init
