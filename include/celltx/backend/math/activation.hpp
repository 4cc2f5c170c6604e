#pragma once
// The element-wise nonlinearities (value and derivative), in the input's precision as PyTorch
// computes them: one definition for every backend (CELLTX_HOST_DEVICE), so the CPU tests run the
// GPU's arithmetic. ActivationMath<K, T>::value / ::derivative; silu_sigmoid for SwiGLU.
#include <cmath>
#include <numbers>
#include "celltx/backend/types.hpp"
#include "celltx/core/host_device.hpp"

namespace celltx::math {

template <ActivationKind K, class T>
struct ActivationMath;

/// GELU with the exact erf (nn.GELU()).
template <class T>
struct ActivationMath<ActivationKind::gelu, T> {
    CELLTX_HOST_DEVICE static T value(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2))); }
    CELLTX_HOST_DEVICE static T derivative(T x) {
        const T cdf = T(0.5) * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
        const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2);
        return cdf + x * pdf;
    }
};

/// GELU with the tanh approximation (nn.GELU('tanh')).
template <class T>
struct ActivationMath<ActivationKind::gelu_tanh, T> {
    static constexpr T k = T(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);  // sqrt(2/pi)
    static constexpr T c = T(0.044715);
    CELLTX_HOST_DEVICE static T value(T x) { return T(0.5) * x * (T(1) + std::tanh(k * (x + c * x * x * x))); }
    CELLTX_HOST_DEVICE static T derivative(T x) {
        const T t = std::tanh(k * (x + c * x * x * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x);
    }
};

template <class T>
struct ActivationMath<ActivationKind::relu, T> {
    CELLTX_HOST_DEVICE static T value(T x) { return x > T(0) ? x : T(0); }
    CELLTX_HOST_DEVICE static T derivative(T x) { return x > T(0) ? T(1) : T(0); }  // 0 at 0, like PyTorch's threshold_backward
};

template <class T>
struct ActivationMath<ActivationKind::silu, T> {
    CELLTX_HOST_DEVICE static T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
    CELLTX_HOST_DEVICE static T value(T x) { return x * sigmoid(x); }
    CELLTX_HOST_DEVICE static T derivative(T x) {
        const T s = sigmoid(x);
        return s * (T(1) + x * (T(1) - s));
    }
};

/// SwiGLU's h = silu(g)·u.
template <class T>
CELLTX_HOST_DEVICE inline T swiglu_value(T g, T u) {
    return ActivationMath<ActivationKind::silu, T>::value(g) * u;
}
/// SwiGLU's gradients: dg = dh·u·silu'(g), du = dh·silu(g).
template <class T>
CELLTX_HOST_DEVICE inline void swiglu_gradients(T g, T u, T dh, T& dg, T& du) {
    using S = ActivationMath<ActivationKind::silu, T>;
    dg = dh * u * S::derivative(g);
    du = dh * S::value(g);
}

} // namespace celltx::math
