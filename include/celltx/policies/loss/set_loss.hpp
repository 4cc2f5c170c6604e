#pragma once
// SetLoss: the State Transition model's main loss (State's st_loss; docs/state_transition.md). Flat [B·S, D] predictions
// and targets are viewed as B sets of S cells; the per-set distribution loss ('energy', 'sinkhorn',
// or 'combined' = sinkhorn_weight·sinkhorn + energy_weight·energy, state's "se") is reduced by a
// nan-mean over the sets: sets whose loss is NaN leave the mean and get zero gradient; if every set
// is NaN the loss is NaN. 'mse' is the reference's fallback: mean (p − t)² over every element (no
// nan-mean; per_set() then holds each set's own mean).
//  - forward(pred, target) -> rank-0 tensor; per_set() keeps the [B] values (e.g. for ConfidenceLoss);
//  - backward(dloss, dpred, dtarget) ADDS the gradients; an empty view skips one.
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/backend/ops.hpp"
#include "celltx/policies/loss/energy_distance.hpp"
#include "celltx/policies/loss/sinkhorn_divergence.hpp"

namespace celltx::loss {

enum class SetLossKind { energy, sinkhorn, combined, mse };

/// state's `loss` names: "energy", "sinkhorn", "se" (or "combined"), "mse"; anything else throws.
inline SetLossKind parse_set_loss_kind(std::string_view name) {
    if (name == "energy") return SetLossKind::energy;
    if (name == "sinkhorn") return SetLossKind::sinkhorn;
    if (name == "se" || name == "combined") return SetLossKind::combined;
    if (name == "mse") return SetLossKind::mse;
    throw ShapeError(fmt::format("SetLoss: unknown loss '{}' (expected energy, sinkhorn, se, combined or mse)", name));
}

struct SetLossOptions {
    SetLossKind kind = SetLossKind::energy;
    index_t set_size = 0;             ///< S: rank-2 inputs [B·S, D] are read as [B, S, D]; rank-3 inputs need not give it
    double blur = 0.05;               ///< Sinkhorn blur (ε = blur²)
    double sinkhorn_weight = 0.01;    ///< 'combined' only
    double energy_weight = 1.0;       ///< 'combined' only
    index_t block = 256;              ///< tile edge of the pairwise kernels
    std::size_t cost_cache_bytes = 0; ///< SinkhornOptions::cost_cache_bytes
};

template <Scalar T, Backend B = cpu>
class SetLoss {
public:
    explicit SetLoss(SetLossOptions o = {}) : opt_(o), energy_(o.block), sinkhorn_(sinkhorn_options(o)) {
        require(o.set_size >= 0, "SetLoss: negative set size {}", o.set_size);
    }

    const SetLossOptions& options() const noexcept { return opt_; }
    /// Per-set losses [B] of the last forward.
    const Tensor<T, B>& per_set() const noexcept { return per_set_; }
    /// Sets of the last forward that entered the mean (non-NaN losses).
    index_t valid_sets() const noexcept { return valid_; }
    const SinkhornDivergence<T, B>& sinkhorn() const noexcept { return sinkhorn_; }

    /// pred and target: [B·S, D] (with set_size S) or [B, S, D]; returns the scalar loss (rank 0).
    Tensor<T, B> forward(ConstView<T, B> pred, ConstView<T, B> target, const Context& ctx = {}) {
        require(pred.shape() == target.shape(), "SetLoss: pred {} and target {} differ", pred.shape(), target.shape());
        shape_ = pred.shape();
        kept_ = ctx.keep_for_backward;
        const Shape s = sets_shape(pred.shape());
        const ConstView<T, B> p = pred.reshaped(s), t = target.reshaped(s);
        if (opt_.kind == SetLossKind::mse) {
            diff_ = Tensor<T, B>::copy_of(p);
            ops::axpby(B{}, diff_.numel(), T(-1), t.data(), T(1), diff_.data());  // p − t
            const index_t per = s[1] * s[2];
            std::vector<double> acc(static_cast<std::size_t>(s[0]));
            ops::row_sum_squares(B{}, diff_.data(), s[0], per, acc.data());
            std::vector<T> per_set(acc.size());
            double total = 0.0;
            for (std::size_t b = 0; b < acc.size(); ++b) {
                per_set[b] = static_cast<T>(per > 0 ? acc[b] / static_cast<double>(per) : std::numeric_limits<double>::quiet_NaN());
                total += acc[b];
            }
            per_set_ = from_host<T, B>(per_set);
            valid_ = s[0];
            if (!kept_) diff_ = Tensor<T, B>();
            return scalar(static_cast<T>(total / static_cast<double>(p.numel())));
        }
        if (opt_.kind == SetLossKind::energy) per_set_ = energy_.forward(p, t, ctx);
        else if (opt_.kind == SetLossKind::sinkhorn) per_set_ = sinkhorn_.forward(p, t, ctx);
        else {
            per_set_ = sinkhorn_.forward(p, t, ctx);
            const Tensor<T, B> e = energy_.forward(p, t, ctx);
            ops::axpby(B{}, s[0], static_cast<T>(opt_.energy_weight), e.data(), static_cast<T>(opt_.sinkhorn_weight), per_set_.data());
        }
        // nan-mean over the sets, on the host (one value per set).
        const Tensor<T, cpu> ps = to_host(per_set_);
        double sum = 0.0;
        valid_ = 0;
        for (index_t b = 0; b < s[0]; ++b)
            if (!std::isnan(ps[b])) {
                sum += static_cast<double>(ps[b]);
                ++valid_;
            }
        return scalar(static_cast<T>(valid_ ? sum / static_cast<double>(valid_) : std::numeric_limits<double>::quiet_NaN()));
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dpred, TensorView<T, B> dtarget = {}) {
        require(kept_, "SetLoss::backward: {}", nothing_kept_for_backward);
        require(dloss.numel() == 1, "SetLoss::backward: dloss {} must hold one value", dloss.shape());
        for (auto v : {dpred, dtarget})
            require(!v.data() || v.shape() == shape_, "SetLoss::backward: gradient {} does not match the input {}", v.shape(), shape_);
        const Shape s = sets_shape(shape_);
        const double dl = static_cast<double>(read_value(dloss));
        if (opt_.kind == SetLossKind::mse) {
            const T g = static_cast<T>(2.0 * dl / static_cast<double>(diff_.numel()));
            if (dpred.data()) ops::axpby(B{}, diff_.numel(), g, diff_.data(), T(1), dpred.data());
            if (dtarget.data()) ops::axpby(B{}, diff_.numel(), static_cast<T>(-g), diff_.data(), T(1), dtarget.data());
            return;
        }
        // nan-mean: d mean / d loss_b = 1/valid for the sets in the mean, 0 (skipped) for NaN sets.
        const Tensor<T, cpu> ps = to_host(per_set_);
        std::vector<T> w(static_cast<std::size_t>(s[0])), ws(w.size()), we(w.size());
        for (index_t b = 0; b < s[0]; ++b) {
            const auto i = static_cast<std::size_t>(b);
            w[i] = std::isnan(ps[b]) ? T(0) : static_cast<T>(dl / static_cast<double>(valid_));
            ws[i] = static_cast<T>(opt_.sinkhorn_weight) * w[i];
            we[i] = static_cast<T>(opt_.energy_weight) * w[i];
        }
        const TensorView<T, B> dp = dpred.data() ? dpred.reshaped(s) : TensorView<T, B>();
        const TensorView<T, B> dt = dtarget.data() ? dtarget.reshaped(s) : TensorView<T, B>();
        if (opt_.kind == SetLossKind::energy) energy_.backward(from_host<T, B>(w).cview(), dp, dt);
        else if (opt_.kind == SetLossKind::sinkhorn) sinkhorn_.backward(from_host<T, B>(w).cview(), dp, dt);
        else {
            sinkhorn_.backward(from_host<T, B>(ws).cview(), dp, dt);
            energy_.backward(from_host<T, B>(we).cview(), dp, dt);
        }
    }

private:
    static Tensor<T, B> scalar(T v) { return from_host<T, B>(&v, Shape{}); }
    static SinkhornOptions sinkhorn_options(const SetLossOptions& o) {
        SinkhornOptions s;
        s.blur = o.blur;
        s.block = o.block;
        s.cost_cache_bytes = o.cost_cache_bytes;
        return s;
    }

    /// [B, S, D] of an input shape.
    Shape sets_shape(const Shape& in) const {
        if (in.rank() == 3) {
            require(opt_.set_size == 0 || in[1] == opt_.set_size, "SetLoss: input {} has sets of {} cells, expected {}", in, in[1],
                    opt_.set_size);
            return in;
        }
        require(in.rank() == 2 && opt_.set_size > 0 && in[0] % opt_.set_size == 0,
                "SetLoss: input {} is neither [B, S, D] nor [B*S, D] with S = set_size = {}", in, opt_.set_size);
        return Shape{in[0] / opt_.set_size, opt_.set_size, in[1]};
    }

    SetLossOptions opt_;
    EnergyDistance<T, B> energy_;
    SinkhornDivergence<T, B> sinkhorn_;
    bool kept_ = false;
    Tensor<T, B> per_set_, diff_;
    Shape shape_;
    index_t valid_ = 0;
};

} // namespace celltx::loss
