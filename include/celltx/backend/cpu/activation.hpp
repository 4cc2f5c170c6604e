#pragma once
// Element-wise CPU kernels: activations (value and derivative), the SwiGLU product, dropout masks
// and accumulation. Work is split into fixed blocks of elements and every random draw is addressed
// by element index, so results never depend on the thread count.
#include <algorithm>
#include <cmath>
#include <numbers>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx {

/// The element-wise nonlinearities the models use (PyTorch's nn.GELU(), nn.GELU('tanh'), nn.ReLU, nn.SiLU).
enum class ActivationKind { gelu, gelu_tanh, relu, silu };

} // namespace celltx

namespace celltx::cpu_detail {

/// Elements per parallel block: a multiple of 4 so that one Philox block never straddles two blocks.
inline constexpr index_t elementwise_block = 8192;

/// Calls f(begin, end) over [0, n) in fixed blocks, in parallel.
template <class F>
void for_blocks(index_t n, F&& f) {
    const index_t blocks = (n + elementwise_block - 1) / elementwise_block;
    parallel_for(blocks, [&](index_t b) { f(b * elementwise_block, std::min(n, (b + 1) * elementwise_block)); });
}

/// Value and derivative of each activation, in the input's precision (as PyTorch computes them).
template <class T>
struct Gelu {
    static T value(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2))); }
    static T derivative(T x) {
        const T cdf = T(0.5) * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
        const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * std::numbers::inv_sqrtpi * std::numbers::sqrt2);
        return cdf + x * pdf;
    }
};
template <class T>
struct GeluTanh {
    static constexpr T k = T(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);  // sqrt(2/pi)
    static constexpr T c = T(0.044715);
    static T value(T x) { return T(0.5) * x * (T(1) + std::tanh(k * (x + c * x * x * x))); }
    static T derivative(T x) {
        const T t = std::tanh(k * (x + c * x * x * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x);
    }
};
template <class T>
struct Relu {
    static T value(T x) { return x > T(0) ? x : T(0); }
    static T derivative(T x) { return x > T(0) ? T(1) : T(0); }  // 0 at 0, like PyTorch's threshold_backward
};
template <class T>
struct Silu {
    static T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
    static T value(T x) { return x * sigmoid(x); }
    static T derivative(T x) {
        const T s = sigmoid(x);
        return s * (T(1) + x * (T(1) - s));
    }
};

/// Calls f(Math{}) with the math struct of `kind`, so that the inner loops are specialised.
template <class T, class F>
void with_activation(ActivationKind kind, F&& f) {
    switch (kind) {
        case ActivationKind::gelu: f(Gelu<T>{}); return;
        case ActivationKind::gelu_tanh: f(GeluTanh<T>{}); return;
        case ActivationKind::relu: f(Relu<T>{}); return;
        case ActivationKind::silu: f(Silu<T>{}); return;
    }
}

} // namespace celltx::cpu_detail

namespace celltx::ops {

/// y[i] = f(x[i]) for n elements.
template <Scalar T>
void activation_forward(cpu, ActivationKind kind, const T* x, T* y, index_t n) {
    cpu_detail::with_activation<T>(kind, [&](auto math) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) y[i] = math.value(x[i]);
        });
    });
}

/// dx[i] += dy[i] * f'(x[i]) for n elements.
template <Scalar T>
void activation_backward(cpu, ActivationKind kind, const T* x, const T* dy, T* dx, index_t n) {
    cpu_detail::with_activation<T>(kind, [&](auto math) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) dx[i] += dy[i] * math.derivative(x[i]);
        });
    });
}

/// dst[i] += src[i] for n elements.
template <Scalar T>
void accumulate(cpu, const T* src, T* dst, index_t n) {
    cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) dst[i] += src[i];
    });
}

/// SwiGLU's gated product h = silu(g) * u.
template <Scalar T>
void swiglu_forward(cpu, const T* g, const T* u, T* h, index_t n) {
    cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) h[i] = cpu_detail::Silu<T>::value(g[i]) * u[i];
    });
}

/// Gradients of h = silu(g) * u: dg = dh * u * silu'(g), du = dh * silu(g) (both assigned).
template <Scalar T>
void swiglu_backward(cpu, const T* g, const T* u, const T* dh, T* dg, T* du, index_t n) {
    using S = cpu_detail::Silu<T>;
    cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
        for (index_t i = b; i < e; ++i) {
            dg[i] = dh[i] * u[i] * S::derivative(g[i]);
            du[i] = dh[i] * S::value(g[i]);
        }
    });
}

/// Dropout: element i is kept iff rng.uniform(i) > p, and kept elements are scaled by 1/(1-p).
/// backward == false: out[i] = in[i] * m[i]; backward == true: out[i] += in[i] * m[i].
template <Scalar T>
void dropout_apply(cpu, const CounterRng& rng, double p, const T* in, T* out, index_t n, bool backward) {
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
        // One Philox block gives the draws of 4 consecutive elements (as CounterRng::uniform(i) does).
        for (index_t q = b / 4; q * 4 < e; ++q) {
            const auto bits = rng.bits(static_cast<std::uint64_t>(q));
            for (int r = 0; r < 4; ++r) {
                const index_t i = q * 4 + r;
                if (i >= e) break;
                const T m = uint_to_unit(bits[r]) > p ? scale : T(0);
                if (backward) out[i] += in[i] * m;
                else out[i] = in[i] * m;
            }
        }
    });
}

} // namespace celltx::ops
