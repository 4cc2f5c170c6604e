#pragma once
// SinkhornLoss: geomloss' SamplesLoss("sinkhorn", p=2, blur, scaling, debias=True), uniform
// weights, one value per set, exactly as ../shared/reference/state_ref.py builds it:
//  - cost C(u, v) = ½‖u − v‖² in the expanded form; ε = blur²; the ε schedule runs from diameter² down
//    to blur² by factors scaling² (numpy.arange semantics, sinkhorn_epsilons), the diameter being the
//    bounding-box diagonal of the WHOLE batch (x and y) unless given;
//  - log-domain soft-min updates, symmetric and averaged, without gradient; then one extrapolation
//    step at ε = blur² that carries the gradient only through the costs' first argument
//    (Cxy = C(x, y.detach()), Cyx = C(y, x.detach()), Cxx = C(x, x.detach()), Cyy = C(y, y.detach()));
//  - loss_b = ⟨a, f_ba − f_aa⟩ + ⟨b, g_ab − g_bb⟩.
// So backward is the reference's autograd gradient, NOT the full derivative of the value (the inner
// iterations are detached). Soft-mins are blockwise log-sum-exps (backend/cpu/pairwise.hpp): no N×M
// buffer unless SinkhornOptions::cost_cache_bytes allows caching the four squared-distance matrices
// (which changes no bit of the result, only the work: the costs are then computed once per forward).
// Deviation: the reference raises when the batch diameter is not finite (NaN inputs); here non-finite
// coordinates are left out of the diameter, and a diameter of 0 runs the schedule from blur.
// Contract as EnergyLoss: forward(x [B,N,D], y [B,M,D]) -> [B]; backward(dloss [B], dx, dy) ADDS.
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>
#include "celltx/backend/cpu/pairwise.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/loss/energy_loss.hpp"

namespace celltx::loss {

struct SinkhornOptions {
    double blur = 0.05;
    double scaling = 0.5;
    double diameter = 0.0;              ///< > 0: use it; otherwise the bounding-box diagonal of the batch
    index_t block = 256;                ///< tile edge of the pairwise kernels
    std::size_t cost_cache_bytes = 0;   ///< cache the d2 matrices (B·(N+M)² scalars) when they fit
};

/// numpy.arange(start, stop, step) for doubles, computed as numpy does: length ceil((stop-start)/step),
/// values start + i·((start + step) − start).
inline std::vector<double> numpy_arange(double start, double stop, double step) {
    const double delta = stop - start, tmp = delta / step;
    require(std::isfinite(tmp) || tmp == -std::numeric_limits<double>::infinity(),
            "numpy_arange: cannot compute the length of arange({}, {}, {})", start, stop, step);
    index_t len = 0;
    if (tmp == 0.0 && delta != 0.0) len = std::signbit(tmp) ? 0 : 1;
    else if (tmp > 0.0) len = static_cast<index_t>(std::ceil(tmp));
    std::vector<double> out;
    if (len <= 0) return out;
    out.push_back(start);
    if (len > 1) {
        out.push_back(start + step);
        const double d = out[1] - out[0];
        for (index_t i = 2; i < len; ++i) out.push_back(start + static_cast<double>(i) * d);
    }
    return out;
}

/// The ε schedule of geomloss (p = 2): [diameter², exp(a) for a in arange(2 ln diameter, 2 ln blur,
/// 2 ln scaling), blur²].
inline std::vector<double> sinkhorn_epsilons(double diameter, double blur, double scaling) {
    require(diameter > 0.0 && std::isfinite(diameter), "sinkhorn_epsilons: diameter {} must be positive and finite", diameter);
    require(blur > 0.0 && scaling > 0.0 && scaling < 1.0, "sinkhorn_epsilons: need blur > 0 and 0 < scaling < 1 (got {}, {})",
            blur, scaling);
    std::vector<double> eps{std::pow(diameter, 2.0)};
    for (double a : numpy_arange(2.0 * std::log(diameter), 2.0 * std::log(blur), 2.0 * std::log(scaling))) eps.push_back(std::exp(a));
    eps.push_back(std::pow(blur, 2.0));
    return eps;
}

/// ‖max − min‖ of the bounding box of all points of x and y (every set), computed in T as the
/// reference does; non-finite coordinates are ignored. 0 when there is no finite point.
template <Scalar T>
double sinkhorn_diameter(ConstView<T> x, ConstView<T> y) {
    const index_t d = x.shape().last();
    std::vector<T> lo(static_cast<std::size_t>(d), std::numeric_limits<T>::infinity());
    std::vector<T> hi(static_cast<std::size_t>(d), -std::numeric_limits<T>::infinity());
    for (ConstView<T> v : {x, y})
        for (index_t i = 0; i < v.numel(); ++i) {
            const T c = v[i];
            if (!std::isfinite(c)) continue;
            auto k = static_cast<std::size_t>(i % d);
            lo[k] = std::min(lo[k], c);
            hi[k] = std::max(hi[k], c);
        }
    double s = 0.0;
    for (std::size_t k = 0; k < lo.size(); ++k) {
        if (!(hi[k] >= lo[k])) continue;  // no finite coordinate on this axis
        const double e = static_cast<double>(static_cast<T>(hi[k] - lo[k]));
        s += e * e;
    }
    return static_cast<double>(static_cast<T>(std::sqrt(s)));
}

template <Scalar T, Backend B = cpu>
class SinkhornLoss {
public:
    explicit SinkhornLoss(SinkhornOptions o = {}) : opt_(o) {
        require(o.block >= 1, "SinkhornLoss: block size {} must be positive", o.block);
        require(o.blur > 0.0 && o.scaling > 0.0 && o.scaling < 1.0, "SinkhornLoss: need blur > 0 and 0 < scaling < 1 (got {}, {})",
                o.blur, o.scaling);
    }

    const SinkhornOptions& options() const noexcept { return opt_; }
    SinkhornOptions& options() noexcept { return opt_; }
    /// The ε schedule of the last forward (its last entry is blur²).
    const std::vector<double>& epsilons() const noexcept { return eps_; }
    /// The diameter the last forward used.
    double diameter() const noexcept { return diameter_; }

    /// Per-set loss [B] of x [B, N, D] (prediction) against y [B, M, D] (target).
    Tensor<T, B> forward(ConstView<T, B> x, ConstView<T, B> y, const Context& = {}) {
        detail::check_sets("SinkhornLoss", x, y);
        require(x.size(1) >= 1 && y.size(1) >= 1, "SinkhornLoss: empty set (x {}, y {})", x.shape(), y.shape());
        x_ = Tensor<T, B>::copy_of(x);
        y_ = Tensor<T, B>::copy_of(y);
        sets_ = x.size(0);
        n_ = x.size(1);
        m_ = y.size(1);
        diameter_ = opt_.diameter > 0.0 ? opt_.diameter : sinkhorn_diameter<T>(x, y);
        eps_ = sinkhorn_epsilons(diameter_ > 0.0 && std::isfinite(diameter_) ? diameter_ : opt_.blur, opt_.blur, opt_.scaling);
        fill_cache();
        const auto xy = pairs(XY), yx = pairs(YX), xx = pairs(XX), yy = pairs(YY);

        const index_t bn = sets_ * n_, bm = sets_ * m_;
        const T a_log = static_cast<T>(std::log(1.0 / static_cast<double>(n_)));
        const T b_log = static_cast<T>(std::log(1.0 / static_cast<double>(m_)));
        std::vector<T> f_ba(vsize(bn)), f_aa(vsize(bn)), g_ab(vsize(bm)), g_bb(vsize(bm));
        std::vector<T> ft_ba(vsize(bn)), ft_aa(vsize(bn)), gt_ab(vsize(bm)), gt_bb(vsize(bm));
        std::vector<T> ha(vsize(bn), a_log), hb(vsize(bm), b_log);
        h_xy_.assign(vsize(bm), T(0));
        h_yx_.assign(vsize(bn), T(0));
        h_xx_.assign(vsize(bn), T(0));
        h_yy_.assign(vsize(bm), T(0));

        // h_j = log w_j + potential_j / ε: the soft-min's column weights.
        auto shift = [](std::vector<T>& h, T w_log, const std::vector<T>& pot, T e) {
            for (std::size_t j = 0; j < h.size(); ++j) h[j] = w_log + pot[j] / e;
        };
        T e = static_cast<T>(eps_.front());
        ops::pairwise_softmin(B{}, yx, e, ha.data(), g_ab.data());
        ops::pairwise_softmin(B{}, xy, e, hb.data(), f_ba.data());
        ops::pairwise_softmin(B{}, xx, e, ha.data(), f_aa.data());
        ops::pairwise_softmin(B{}, yy, e, hb.data(), g_bb.data());
        for (double eps : eps_) {
            e = static_cast<T>(eps);
            shift(h_xy_, b_log, g_ab, e);
            shift(h_yx_, a_log, f_ba, e);
            shift(h_xx_, a_log, f_aa, e);
            shift(h_yy_, b_log, g_bb, e);
            ops::pairwise_softmin(B{}, xy, e, h_xy_.data(), ft_ba.data());
            ops::pairwise_softmin(B{}, yx, e, h_yx_.data(), gt_ab.data());
            ops::pairwise_softmin(B{}, xx, e, h_xx_.data(), ft_aa.data());
            ops::pairwise_softmin(B{}, yy, e, h_yy_.data(), gt_bb.data());
            average(f_ba, ft_ba);
            average(g_ab, gt_ab);
            average(f_aa, ft_aa);
            average(g_bb, gt_bb);
        }
        // The extrapolation step (ε = blur²) that carries the gradient: keep its weights and LSEs.
        e_ = e;
        shift(h_xy_, b_log, g_ab, e);
        shift(h_yx_, a_log, f_ba, e);
        shift(h_xx_, a_log, f_aa, e);
        shift(h_yy_, b_log, g_bb, e);
        lse_xy_.assign(vsize(bn), T(0));
        lse_yx_.assign(vsize(bm), T(0));
        lse_xx_.assign(vsize(bn), T(0));
        lse_yy_.assign(vsize(bm), T(0));
        ops::pairwise_softmin(B{}, xy, e, h_xy_.data(), f_ba.data(), lse_xy_.data());
        ops::pairwise_softmin(B{}, yx, e, h_yx_.data(), g_ab.data(), lse_yx_.data());
        ops::pairwise_softmin(B{}, xx, e, h_xx_.data(), f_aa.data(), lse_xx_.data());
        ops::pairwise_softmin(B{}, yy, e, h_yy_.data(), g_bb.data(), lse_yy_.data());

        auto out = Tensor<T, B>::uninitialized(Shape{sets_});
        for (index_t b = 0; b < sets_; ++b) {
            double sf = 0.0, sg = 0.0;
            for (index_t i = 0; i < n_; ++i) sf += static_cast<double>(f_ba[vsize(b * n_ + i)] - f_aa[vsize(b * n_ + i)]);
            for (index_t j = 0; j < m_; ++j) sg += static_cast<double>(g_ab[vsize(b * m_ + j)] - g_bb[vsize(b * m_ + j)]);
            out[b] = static_cast<T>(sf / static_cast<double>(n_) + sg / static_cast<double>(m_));
        }
        return out;
    }

    /// ADDS the reference's gradient of L = Σ_b dloss_b·loss_b: through the last step's costs only.
    void backward(ConstView<T, B> dloss, TensorView<T, B> dx, TensorView<T, B> dy) {
        require(dloss.numel() == sets_, "SinkhornLoss::backward: dloss {} for {} sets", dloss.shape(), sets_);
        std::vector<T> plus(vsize(sets_)), minus(vsize(sets_));
        auto coefs = [&](index_t count) {
            for (index_t b = 0; b < sets_; ++b) {
                const double c = static_cast<double>(dloss[b]) / static_cast<double>(count);
                plus[vsize(b)] = static_cast<T>(c);
                minus[vsize(b)] = static_cast<T>(-c);
            }
        };
        if (dx.data()) {
            require(dx.shape() == x_.shape(), "SinkhornLoss::backward: dx {} does not match x {}", dx.shape(), x_.shape());
            coefs(n_);
            const auto xy = pairs(XY), xx = pairs(XX);
            ops::pairwise_softmin_grad(B{}, xy, e_, h_xy_.data(), lse_xy_.data(), plus.data(), dx.data());
            ops::pairwise_softmin_grad(B{}, xx, e_, h_xx_.data(), lse_xx_.data(), minus.data(), dx.data());
        }
        if (dy.data()) {
            require(dy.shape() == y_.shape(), "SinkhornLoss::backward: dy {} does not match y {}", dy.shape(), y_.shape());
            coefs(m_);
            const auto yx = pairs(YX), yy = pairs(YY);
            ops::pairwise_softmin_grad(B{}, yx, e_, h_yx_.data(), lse_yx_.data(), plus.data(), dy.data());
            ops::pairwise_softmin_grad(B{}, yy, e_, h_yy_.data(), lse_yy_.data(), minus.data(), dy.data());
        }
    }

private:
    static std::size_t vsize(index_t n) { return static_cast<std::size_t>(n); }
    static void average(std::vector<T>& f, const std::vector<T>& ft) {
        for (std::size_t i = 0; i < f.size(); ++i) f[i] = T(0.5) * (f[i] + ft[i]);
    }

    enum Which { XY, YX, XX, YY };

    /// Operands of a soft-min (rows of the first set against the second), with its squared-distance
    /// cache when there is one. Rebuilt on use, so copies of the loss never point into each other.
    ops::PointPairs<T> pairs(Which w) const {
        const index_t d = x_.size(2);
        const Tensor<T, B>& a = (w == XY || w == XX) ? x_ : y_;
        const Tensor<T, B>& b = (w == XY || w == YY) ? y_ : x_;
        auto p = detail::pairs(a.data(), a.size(1), b.data(), b.size(1), sets_, d, opt_.block);
        if (!cache_[w].empty()) p.d2 = cache_[w].data();
        return p;
    }

    /// Fills the four squared-distance matrices when they fit the budget (else leaves them empty).
    void fill_cache() {
        for (auto& c : cache_) c = Tensor<T, B>();
        const double need = static_cast<double>(sets_) * static_cast<double>((n_ + m_) * (n_ + m_)) * sizeof(T);
        if (need > static_cast<double>(opt_.cost_cache_bytes)) return;
        for (Which w : {XY, YX, XX, YY}) {
            const auto p = pairs(w);
            Tensor<T, B> c = Tensor<T, B>::uninitialized(Shape{p.sets, p.n, p.m});
            ops::pairwise_sqdist(B{}, p, c.data());
            cache_[w] = std::move(c);
        }
    }

    SinkhornOptions opt_;
    std::vector<double> eps_;
    double diameter_ = 0.0;
    index_t sets_ = 0, n_ = 0, m_ = 0;
    T e_ = 0;
    Tensor<T, B> x_, y_;
    std::array<Tensor<T, B>, 4> cache_;  ///< d2 of XY, YX, XX, YY (or empty)
    std::vector<T> h_xy_, h_yx_, h_xx_, h_yy_, lse_xy_, lse_yx_, lse_xx_, lse_yy_;
};

} // namespace celltx::loss
