#pragma once
// clip_grad_norm: torch.nn.utils.clip_grad_norm_ (torch 1.13) on Parameter::grad.
//
// total = ‖(‖g_1‖_p, …, ‖g_k‖_p)‖_p over every gradient that holds memory (p = inf: the largest |g|), i.e.
// the p-norm of all gradients concatenated. coef = max_norm / (total + 1e-6); when coef < 1 every
// gradient is multiplied by it (torch multiplies by min(coef, 1), the same thing; a NaN coef is
// applied too, as torch does). Returns total. A non-finite total throws NonFiniteNormError when
// error_if_nonfinite is set, and is otherwise returned (the gradients are scaled as torch would).
// Each gradient's norm is one reduction on its backend (ops::norm); the scaling one ops::scale.
#include <cmath>
#include <limits>
#include <string>
#include <vector>
#include <fmt/format.h>
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/core/error.hpp"
#include "celltx/train/parameter_list.hpp"

namespace celltx::train {

/// The total gradient norm is NaN or infinite and the caller asked for an error.
class NonFiniteNormError : public Error {
public:
    using Error::Error;
};

namespace detail {

/// The p-norm of n values, accumulated in double; NaN propagates through the inf-norm too.
template <class T>
double pnorm(const T* x, index_t n, double p) {
    if (std::isinf(p)) {
        double m = 0.0;
        for (index_t i = 0; i < n; ++i) {
            const double a = std::abs(static_cast<double>(x[i]));
            if (std::isnan(a)) return a;
            if (a > m) m = a;
        }
        return m;
    }
    double s = 0.0;
    if (p == 2.0) {
        for (index_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
        return std::sqrt(s);
    }
    if (p == 1.0) {
        for (index_t i = 0; i < n; ++i) s += std::abs(static_cast<double>(x[i]));
        return s;
    }
    for (index_t i = 0; i < n; ++i) s += std::pow(std::abs(static_cast<double>(x[i])), p);
    return std::pow(s, 1.0 / p);
}

} // namespace detail

/// Scales the gradients of `params` so that their joint p-norm is at most max_norm; returns the norm before.
template <Scalar T, Backend B>
double clip_grad_norm(const ParameterList<T, B>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false) {
    require(!std::isnan(max_norm) && max_norm >= 0.0, "clip_grad_norm: max_norm {} must be >= 0", max_norm);
    require(norm_type > 0.0, "clip_grad_norm: norm_type {} must be > 0 (or infinity)", norm_type);
    std::vector<double> norms;
    for (const auto& [name, p] : params) {
        require(p != nullptr, "clip_grad_norm: parameter '{}' is a null pointer", name);
        if (p->grad.data() != nullptr) norms.push_back(ops::norm(B{}, p->grad.data(), p->grad.numel(), norm_type));
    }
    if (norms.empty()) return 0.0;  // torch returns tensor(0.) when no parameter has a gradient
    const double total = detail::pnorm(norms.data(), static_cast<index_t>(norms.size()), norm_type);
    if (error_if_nonfinite && !std::isfinite(total))
        throw NonFiniteNormError(fmt::format(
            "clip_grad_norm: the total norm of order {} of the gradients of {} parameters is {}, so they cannot be clipped "
            "(pass error_if_nonfinite=false to scale them by the non-finite norm anyway)",
            norm_type, norms.size(), total));
    const double coef = max_norm / (total + 1e-6);
    if (!(coef >= 1.0)) {
        const T c = static_cast<T>(coef);
        for (const auto& [name, p] : params)
            if (p->grad.data() != nullptr) ops::scale(B{}, p->grad.data(), p->grad.numel(), c);
    }
    return total;
}

/// The same over every parameter of a module.
template <Scalar T, Backend B = cpu, class M>
    requires ParameterVisitable<M, T, B>
double clip_grad_norm(M& module, double max_norm, double norm_type = 2.0, bool error_if_nonfinite = false) {
    return clip_grad_norm(collect_parameters<T, B>(module), max_norm, norm_type, error_if_nonfinite);
}

} // namespace celltx::train
