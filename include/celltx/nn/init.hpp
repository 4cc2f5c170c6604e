#pragma once
// Parameter initialisers with PyTorch's distributions (not its random streams: celltx draws from
// its own seeded counter RNG, so PyTorch-initialised weights are loaded from safetensors instead).
#include <cmath>
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::init {

template <Scalar T>
void uniform(Tensor<T>& t, Generator& g, double lo, double hi) {
    for (index_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(lo + (hi - lo) * g.uniform());
}
template <Scalar T>
void normal(Tensor<T>& t, Generator& g, double mean, double std) {
    for (index_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(mean + std * g.normal());
}
/// nn.init.xavier_uniform_ for a [fan_out, fan_in] matrix.
template <Scalar T>
void xavier_uniform(Tensor<T>& t, Generator& g, index_t fan_out, index_t fan_in) {
    const double a = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
    uniform(t, g, -a, a);
}
/// nn.Linear's default (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
template <Scalar T>
void linear_default(Tensor<T>& t, Generator& g, index_t fan_in) {
    const double a = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    uniform(t, g, -a, a);
}

} // namespace celltx::init
