#pragma once
// The gradient checker every layer test uses (after dlib's test_layer):
//  1. poisons every parameter gradient with NaN before backward, so an entry backward does not
//     write (or accumulates into instead of assigning) shows up;
//  2. pre-fills every input gradient with random values and subtracts them afterwards, which checks
//     that backward ADDS into dx rather than overwriting it;
//  3. compares every analytic gradient entry with a central finite difference in double.
// The scalar loss is L = Σ R ∘ y for a fixed random R, so dL/dy = R. A non-finite forward output,
// finite difference or analytic gradient fails the check (NaN never compares as a small error).
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::testing {

struct GradcheckOptions {
    double step = 1e-5;          ///< finite-difference step
    double tolerance = 1e-6;     ///< max relative error allowed
    double floor = 1e-2;         ///< denominators below this are taken as this (tiny gradients judged absolutely)
    std::uint64_t seed = 20261123;
    index_t max_entries = 4096;  ///< per tensor: at most this many entries, evenly spaced, are differenced
};

struct GradcheckResult {
    bool ok = true;
    double max_error = 0.0;
    std::string worst;                  ///< which tensor and entry had max_error
    std::vector<std::string> problems;  ///< NaNs, unwritten entries, shape errors
    std::string summary() const {
        std::string s = fmt::format("gradcheck {}: max relative error {:.3e} at {}", ok ? "passed" : "FAILED", max_error, worst);
        for (const auto& p : problems) s += "\n  " + p;
        return s;
    }
};

using NamedParameter = std::pair<std::string, Parameter<double>*>;

/// forward(): recomputes the output from the current inputs and parameters.
/// backward(dy, dxs): the module's backward; dxs[i] is the gradient buffer of inputs[i].
template <class Forward, class Backward>
GradcheckResult gradcheck(Forward&& forward, Backward&& backward, std::vector<Tensor<double>*> inputs,
                          std::vector<NamedParameter> params, const GradcheckOptions& opt = {}) {
    GradcheckResult res;
    CounterRng rng(opt.seed, 1);
    Tensor<double> y = forward();
    for (index_t i = 0; i < y.numel(); ++i)
        if (!std::isfinite(y[i])) {
            res.ok = false;
            res.max_error = std::numeric_limits<double>::infinity();
            res.worst = fmt::format("output[{}] = {}", i, y[i]);
            res.problems.push_back(fmt::format("the forward output holds {} at entry {}: nothing to check against", y[i], i));
            return res;
        }
    Tensor<double> R = Tensor<double>::uninitialized(y.shape());
    for (index_t i = 0; i < R.numel(); ++i) R[i] = 2.0 * rng.uniform(static_cast<std::uint64_t>(i)) - 1.0;

    // Analytic gradients: poisoned parameter gradients, pre-filled input gradients.
    for (auto& [name, p] : params) p->grad.fill(std::numeric_limits<double>::quiet_NaN());
    std::vector<Tensor<double>> dx, prefill;
    std::vector<TensorView<double>> dx_views;
    CounterRng pre(opt.seed, 2);
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        Tensor<double> p = Tensor<double>::uninitialized(inputs[k]->shape());
        for (index_t i = 0; i < p.numel(); ++i) p[i] = pre.substream(k).normal(static_cast<std::uint64_t>(i));
        prefill.push_back(p);
        dx.push_back(std::move(p));
    }
    for (auto& t : dx) dx_views.push_back(t.view());
    backward(R.cview(), dx_views);
    for (std::size_t k = 0; k < inputs.size(); ++k)
        for (index_t i = 0; i < dx[k].numel(); ++i) dx[k][i] -= prefill[k][i];

    auto loss = [&] {
        Tensor<double> out = forward();
        if (!(out.shape() == R.shape())) throw Error(fmt::format("gradcheck: the output shape changed from {} to {}", R.shape(), out.shape()));
        double s = 0.0;
        for (index_t i = 0; i < out.numel(); ++i) s += R[i] * out[i];
        return s;
    };
    auto check = [&](const std::string& what, Tensor<double>& value, const Tensor<double>& grad) {
        const index_t n = value.numel();
        for (index_t i = 0; i < n; ++i)
            if (!std::isfinite(grad[i])) {
                res.ok = false;
                res.max_error = std::numeric_limits<double>::infinity();
                res.worst = fmt::format("{}[{}] = {}", what, i, grad[i]);
                res.problems.push_back(fmt::format("{}[{}] is {} after backward (unwritten or accumulated into a poisoned buffer)", what, i, grad[i]));
                return;
            }
        const index_t stride = n > opt.max_entries ? (n + opt.max_entries - 1) / opt.max_entries : 1;
        for (index_t i = 0; i < n; i += stride) {
            const double v0 = value[i];
            value[i] = v0 + opt.step;
            const double lp = loss();
            value[i] = v0 - opt.step;
            const double lm = loss();
            value[i] = v0;
            const double fd = (lp - lm) / (2.0 * opt.step);
            if (!std::isfinite(fd)) {  // the loss went non-finite next to the point
                res.ok = false;
                res.max_error = std::numeric_limits<double>::infinity();
                res.worst = fmt::format("{}[{}] (analytic {:.12g}, numeric {})", what, i, grad[i], fd);
                res.problems.push_back(fmt::format("{}[{}]: the finite difference is {} (the loss is {} / {} at ±step)", what, i, fd, lp, lm));
                return;
            }
            const double err = std::abs(fd - grad[i]) / std::max({std::abs(fd), std::abs(grad[i]), opt.floor});
            if (err > res.max_error || res.worst.empty()) {
                res.max_error = std::max(res.max_error, err);
                if (err >= res.max_error) res.worst = fmt::format("{}[{}] (analytic {:.12g}, numeric {:.12g})", what, i, grad[i], fd);
            }
        }
    };
    for (std::size_t k = 0; k < inputs.size(); ++k) check(fmt::format("input{}", k), *inputs[k], dx[k]);
    for (auto& [name, p] : params) {
        Tensor<double> g = p->grad;  // forward() calls below may not touch it, but keep a copy anyway
        check(name, p->value, g);
    }
    if (!(res.max_error <= opt.tolerance)) res.ok = false;
    return res;
}

/// Every parameter of a module, by name, for gradcheck().
template <class M>
std::vector<NamedParameter> parameters_of(M& module) {
    std::vector<NamedParameter> out;
    module.visit_parameters([&](std::string_view name, Parameter<double>& p) { out.emplace_back(std::string(name), &p); }, std::string{});
    return out;
}

/// Gradient check of a single-input layer (forward(x, ctx) / backward(dy, dx)).
template <class L>
GradcheckResult gradcheck_layer(L& layer, Tensor<double> x, const Context& ctx = {}, const GradcheckOptions& opt = {}) {
    return gradcheck([&] { return layer.forward(x.cview(), ctx); },
                     [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) { layer.backward(dy, dxs[0]); },
                     {&x}, parameters_of(layer), opt);
}

/// A tensor of the given shape filled from N(0, scale²), deterministic in `seed`.
template <Scalar T = double>
Tensor<T> random_tensor(Shape s, std::uint64_t seed, double scale = 1.0) {
    Tensor<T> t = Tensor<T>::uninitialized(s);
    CounterRng rng(seed, 7);
    for (index_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(scale * rng.normal(static_cast<std::uint64_t>(i)));
    return t;
}

} // namespace celltx::testing
