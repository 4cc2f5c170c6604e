#pragma once
// Adam and AdamW with torch.optim semantics (torch 1.13, single-tensor path, maximize=false).
//
// Per parameter p with gradient g, at its step t (counted per parameter, as torch does):
//   Adam:  g += wd * p                      (L2 penalty folded into the gradient)
//   AdamW: p *= 1 - lr * wd                 (decoupled decay, before the update)
//   m = b1 m + (1-b1) g ;  v = b2 v + (1-b2) g²  ;  amsgrad: v̂ = max(v̂, v), used in place of v
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// step() reads Parameter::grad, which backward assigned. A parameter whose grad holds no memory
// (a default-constructed Tensor: torch's grad=None) is skipped: its step count does not advance.
// State is allocated at construction (zeros, step 0, what torch creates lazily) and visitable:
// visit_state(f) calls f("<param>.step", std::int64_t&) and f("<param>.exp_avg" / ".exp_avg_sq" /
// ".max_exp_avg_sq" (amsgrad only), Tensor<T,B>&), so a checkpoint restores it bit-identically.
// The update of each parameter is one fused op (ops::adam_update) on the parameter's backend.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/train/parameter_list.hpp"

namespace celltx::train {

/// torch.optim.Adam's defaults.
struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;  ///< L2 penalty added to the gradient
    bool amsgrad = false;
};

/// torch.optim.AdamW's defaults (note weight_decay = 1e-2).
struct AdamWOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;  ///< decoupled: p *= 1 - lr * weight_decay each step
    bool amsgrad = false;
};

namespace detail {

inline void check_lr(double lr, const char* who) {
    require(std::isfinite(lr) && lr >= 0.0, "{}: invalid learning rate {} (must be finite and >= 0)", who, lr);
}

/// The shared machinery; Decoupled selects AdamW's weight decay.
template <Scalar T, Backend B, class Options, bool Decoupled>
class AdamImpl {
public:
    AdamImpl(ParameterList<T, B> params, const Options& o, const char* who) : params_(std::move(params)), opt_(o), who_(who) {
        check_lr(o.lr, who);
        require(std::isfinite(o.eps) && o.eps >= 0.0, "{}: invalid epsilon {} (must be finite and >= 0)", who, o.eps);
        require(o.beta1 >= 0.0 && o.beta1 < 1.0, "{}: invalid beta1 {} (must be in [0, 1))", who, o.beta1);
        require(o.beta2 >= 0.0 && o.beta2 < 1.0, "{}: invalid beta2 {} (must be in [0, 1))", who, o.beta2);
        require(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0, "{}: invalid weight_decay {} (must be finite and >= 0)",
                who, o.weight_decay);
        check_unique(params_, who);
        state_.reserve(params_.size());
        for (const auto& [name, p] : params_) {
            State s;
            s.exp_avg = Tensor<T, B>(p->shape());
            s.exp_avg_sq = Tensor<T, B>(p->shape());
            if (o.amsgrad) s.max_exp_avg_sq = Tensor<T, B>(p->shape());
            state_.push_back(std::move(s));
        }
    }

    double lr() const noexcept { return opt_.lr; }
    /// Sets the learning rate used from the next step on (what a schedule drives).
    void set_lr(double lr) {
        check_lr(lr, who_);
        opt_.lr = lr;
    }
    const Options& options() const noexcept { return opt_; }
    const ParameterList<T, B>& parameters() const noexcept { return params_; }

    /// One update of every parameter that has a gradient.
    void step() {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Parameter<T, B>& p = *params_[i].second;
            if (p.grad.data() == nullptr && !p.value.empty()) continue;  // no gradient: skipped, like torch's grad=None
            const std::string& name = params_[i].first;
            require(p.grad.shape() == p.value.shape(), "{}: parameter '{}' has value {} but gradient {}", who_, name,
                    p.value.shape(), p.grad.shape());
            State& s = state_[i];
            const auto check = [&](const Tensor<T, B>& t, const char* what) {
                require(t.shape() == p.value.shape(), "{}: state '{}.{}' has shape {} but the parameter has {}", who_, name,
                        what, t.shape(), p.value.shape());
            };
            check(s.exp_avg, "exp_avg");
            check(s.exp_avg_sq, "exp_avg_sq");
            if (opt_.amsgrad) check(s.max_exp_avg_sq, "max_exp_avg_sq");
            require(s.step >= 0, "{}: state '{}.step' is negative ({})", who_, name, s.step);
            update(p, s);
        }
    }

    /// f(name, std::int64_t&) for each step count, f(name, Tensor<T,B>&) for each moment buffer.
    template <class F>
    void visit_state(F&& f) {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            const std::string& name = params_[i].first;
            State& s = state_[i];
            f(name + ".step", s.step);
            f(name + ".exp_avg", s.exp_avg);
            f(name + ".exp_avg_sq", s.exp_avg_sq);
            if (opt_.amsgrad) f(name + ".max_exp_avg_sq", s.max_exp_avg_sq);
        }
    }

private:
    struct State {
        std::int64_t step = 0;
        Tensor<T, B> exp_avg, exp_avg_sq, max_exp_avg_sq;
    };

    void update(Parameter<T, B>& p, State& s) {
        s.step += 1;
        // Scalars are formed in double and rounded to T once, as torch passes Python floats to its kernels.
        const double t = static_cast<double>(s.step);
        const double bias_c1 = 1.0 - std::pow(opt_.beta1, t);
        const double bias_c2 = 1.0 - std::pow(opt_.beta2, t);
        ops::AdamStep<T> a;
        a.neg_step = static_cast<T>(-(opt_.lr / bias_c1));
        a.bc2_sqrt = static_cast<T>(std::sqrt(bias_c2));
        a.b1 = static_cast<T>(opt_.beta1);
        a.one_m_b1 = static_cast<T>(1.0 - opt_.beta1);
        a.b2 = static_cast<T>(opt_.beta2);
        a.one_m_b2 = static_cast<T>(1.0 - opt_.beta2);
        a.eps = static_cast<T>(opt_.eps);
        a.wd = static_cast<T>(opt_.weight_decay);
        a.decay = static_cast<T>(1.0 - opt_.lr * opt_.weight_decay);
        a.l2 = !Decoupled && opt_.weight_decay != 0.0;
        a.decoupled = Decoupled;
        a.amsgrad = opt_.amsgrad;
        ops::adam_update(B{}, a, p.value.data(), p.grad.data(), s.exp_avg.data(), s.exp_avg_sq.data(),
                         opt_.amsgrad ? s.max_exp_avg_sq.data() : static_cast<T*>(nullptr), p.value.numel());
    }

    ParameterList<T, B> params_;
    Options opt_;
    const char* who_;
    std::vector<State> state_;
};

} // namespace detail

/// torch.optim.Adam: weight_decay is an L2 penalty added to the gradient.
template <Scalar T, Backend B = cpu>
class Adam : public detail::AdamImpl<T, B, AdamOptions, false> {
public:
    explicit Adam(ParameterList<T, B> params, const AdamOptions& o = {})
        : detail::AdamImpl<T, B, AdamOptions, false>(std::move(params), o, "Adam") {}
    /// Optimises every parameter of a module (which must outlive the optimiser and stay in place).
    template <class M>
        requires ParameterVisitable<M, T, B>
    explicit Adam(M& module, const AdamOptions& o = {}) : Adam(collect_parameters<T, B>(module), o) {}
};

/// torch.optim.AdamW: weight decay decoupled from the gradient (p *= 1 - lr * wd before the update).
template <Scalar T, Backend B = cpu>
class AdamW : public detail::AdamImpl<T, B, AdamWOptions, true> {
public:
    explicit AdamW(ParameterList<T, B> params, const AdamWOptions& o = {})
        : detail::AdamImpl<T, B, AdamWOptions, true>(std::move(params), o, "AdamW") {}
    template <class M>
        requires ParameterVisitable<M, T, B>
    explicit AdamW(M& module, const AdamWOptions& o = {}) : AdamW(collect_parameters<T, B>(module), o) {}
};

} // namespace celltx::train
