#pragma once
// SetLoss: the State Transition model's main loss (state_ref.py st_loss). Flat [B·S, D] predictions
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
#include "celltx/policies/loss/energy_loss.hpp"
#include "celltx/policies/loss/sinkhorn_loss.hpp"

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
    const SinkhornLoss<T, B>& sinkhorn() const noexcept { return sinkhorn_; }

    /// pred and target: [B·S, D] (with set_size S) or [B, S, D]; returns the scalar loss (rank 0).
    Tensor<T, B> forward(ConstView<T, B> pred, ConstView<T, B> target, const Context& ctx = {}) {
        require(pred.shape() == target.shape(), "SetLoss: pred {} and target {} differ", pred.shape(), target.shape());
        shape_ = pred.shape();
        const Shape s = sets_shape(pred.shape());
        const ConstView<T, B> p = pred.reshaped(s), t = target.reshaped(s);
        auto out = Tensor<T, B>::uninitialized(Shape{});
        if (opt_.kind == SetLossKind::mse) {
            diff_ = Tensor<T, B>::uninitialized(s);
            per_set_ = Tensor<T, B>::uninitialized(Shape{s[0]});
            const index_t per = s[1] * s[2];
            double total = 0.0;
            for (index_t b = 0; b < s[0]; ++b) {
                double acc = 0.0;
                for (index_t i = b * per; i < (b + 1) * per; ++i) {
                    diff_[i] = p[i] - t[i];
                    acc += static_cast<double>(diff_[i]) * static_cast<double>(diff_[i]);
                }
                per_set_[b] = static_cast<T>(per > 0 ? acc / static_cast<double>(per) : std::numeric_limits<double>::quiet_NaN());
                total += acc;
            }
            valid_ = s[0];
            out[0] = static_cast<T>(total / static_cast<double>(p.numel()));
            return out;
        }
        if (opt_.kind == SetLossKind::energy) per_set_ = energy_.forward(p, t, ctx);
        else if (opt_.kind == SetLossKind::sinkhorn) per_set_ = sinkhorn_.forward(p, t, ctx);
        else {
            per_set_ = sinkhorn_.forward(p, t, ctx);
            const Tensor<T, B> e = energy_.forward(p, t, ctx);
            const T sw = static_cast<T>(opt_.sinkhorn_weight), ew = static_cast<T>(opt_.energy_weight);
            for (index_t b = 0; b < s[0]; ++b) per_set_[b] = sw * per_set_[b] + ew * e[b];
        }
        double sum = 0.0;
        valid_ = 0;
        for (index_t b = 0; b < s[0]; ++b)
            if (!std::isnan(per_set_[b])) {
                sum += static_cast<double>(per_set_[b]);
                ++valid_;
            }
        out[0] = static_cast<T>(valid_ ? sum / static_cast<double>(valid_) : std::numeric_limits<double>::quiet_NaN());
        return out;
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dpred, TensorView<T, B> dtarget = {}) {
        require(dloss.numel() == 1, "SetLoss::backward: dloss {} must hold one value", dloss.shape());
        for (auto v : {dpred, dtarget})
            require(!v.data() || v.shape() == shape_, "SetLoss::backward: gradient {} does not match the input {}", v.shape(), shape_);
        const Shape s = sets_shape(shape_);
        if (opt_.kind == SetLossKind::mse) {
            const T g = static_cast<T>(2.0 * static_cast<double>(dloss[0]) / static_cast<double>(diff_.numel()));
            for (index_t i = 0; i < diff_.numel(); ++i) {
                if (dpred.data()) dpred[i] += g * diff_[i];
                if (dtarget.data()) dtarget[i] -= g * diff_[i];
            }
            return;
        }
        // nan-mean: d mean / d loss_b = 1/valid for the sets in the mean, 0 (skipped) for NaN sets.
        auto w = Tensor<T, B>::uninitialized(Shape{s[0]});
        for (index_t b = 0; b < s[0]; ++b)
            w[b] = std::isnan(per_set_[b]) ? T(0) : static_cast<T>(static_cast<double>(dloss[0]) / static_cast<double>(valid_));
        const TensorView<T, B> dp = dpred.data() ? dpred.reshaped(s) : TensorView<T, B>();
        const TensorView<T, B> dt = dtarget.data() ? dtarget.reshaped(s) : TensorView<T, B>();
        if (opt_.kind == SetLossKind::energy) energy_.backward(w.cview(), dp, dt);
        else if (opt_.kind == SetLossKind::sinkhorn) sinkhorn_.backward(w.cview(), dp, dt);
        else {
            auto ws = w, we = w;
            for (index_t b = 0; b < s[0]; ++b) {
                ws[b] = static_cast<T>(opt_.sinkhorn_weight) * w[b];
                we[b] = static_cast<T>(opt_.energy_weight) * w[b];
            }
            sinkhorn_.backward(ws.cview(), dp, dt);
            energy_.backward(we.cview(), dp, dt);
        }
    }

private:
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
    EnergyLoss<T, B> energy_;
    SinkhornLoss<T, B> sinkhorn_;
    Tensor<T, B> per_set_, diff_;
    Shape shape_;
    index_t valid_ = 0;
};

} // namespace celltx::loss
