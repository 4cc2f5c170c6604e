#pragma once
// SinkhornDivergence: geomloss' SamplesLoss("sinkhorn", p=2, blur, scaling, debias=True), uniform
// weights, one value per set, exactly as the State reference builds it (docs/state_transition.md):
//  - cost C(u, v) = ½‖u − v‖² in the expanded form; ε = blur²; the ε schedule runs from diameter² down
//    to blur² by factors scaling² (numpy.arange semantics, sinkhorn_epsilons), the diameter being the
//    bounding-box diagonal of the WHOLE batch (x and y) unless given;
//  - log-domain soft-min updates, symmetric and averaged, without gradient; then one extrapolation
//    step at ε = blur² that carries the gradient only through the costs' first argument
//    (Cxy = C(x, y.detach()), Cyx = C(y, x.detach()), Cxx = C(x, x.detach()), Cyy = C(y, y.detach()));
//  - loss_b = ⟨a, f_ba − f_aa⟩ + ⟨b, g_ab − g_bb⟩.
// So backward is the reference's autograd gradient, NOT the full derivative of the value (the inner
// iterations are detached). Soft-mins are blockwise log-sum-exps (ops::pairwise_softmin): no N×M
// buffer unless SinkhornOptions::cost_cache_bytes allows caching the four squared-distance matrices
// (which changes no bit of the result, only the work: the costs are then computed once per forward).
// Deviation: the reference raises when the batch diameter is not finite (NaN inputs); here non-finite
// coordinates are left out of the diameter, and a diameter of 0 runs the schedule from blur.
// Contract as EnergyDistance: forward(x [B,N,D], y [B,M,D]) -> [B]; backward(dloss [B], dx, dy) ADDS.
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/loss/energy_distance.hpp"

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
template <Scalar T, Backend B>
double sinkhorn_diameter(ConstView<T, B> x, ConstView<T, B> y) {
    const index_t d = x.shape().last();
    std::vector<T> lo(static_cast<std::size_t>(d), std::numeric_limits<T>::infinity());
    std::vector<T> hi(static_cast<std::size_t>(d), -std::numeric_limits<T>::infinity());
    for (ConstView<T, B> v : {x, y}) ops::column_min_max(B{}, v.data(), v.shape().rows(), d, lo.data(), hi.data());
    double s = 0.0;
    for (std::size_t k = 0; k < lo.size(); ++k) {
        if (!(hi[k] >= lo[k])) continue;  // no finite coordinate on this axis
        const double e = static_cast<double>(static_cast<T>(hi[k] - lo[k]));
        s += e * e;
    }
    return static_cast<double>(static_cast<T>(std::sqrt(s)));
}

template <Scalar T, Backend B = cpu>
class SinkhornDivergence {
public:
    explicit SinkhornDivergence(SinkhornOptions o = {}) : opt_(o) {
        require(o.block >= 1, "SinkhornDivergence: block size {} must be positive", o.block);
        require(o.blur > 0.0 && o.scaling > 0.0 && o.scaling < 1.0, "SinkhornDivergence: need blur > 0 and 0 < scaling < 1 (got {}, {})",
                o.blur, o.scaling);
    }

    const SinkhornOptions& options() const noexcept { return opt_; }
    SinkhornOptions& options() noexcept { return opt_; }
    /// The ε schedule of the last forward (its last entry is blur²).
    const std::vector<double>& epsilons() const noexcept { return eps_; }
    /// The diameter the last forward used.
    double diameter() const noexcept { return diameter_; }

    /// Per-set loss [B] of x [B, N, D] (prediction) against y [B, M, D] (target).
    Tensor<T, B> forward(ConstView<T, B> x, ConstView<T, B> y, const Context& ctx = {}) {
        detail::check_sets("SinkhornDivergence", x, y);
        require(x.size(1) >= 1 && y.size(1) >= 1, "SinkhornDivergence: empty set (x {}, y {})", x.shape(), y.shape());
        x_ = Tensor<T, B>::copy_of(x);
        y_ = Tensor<T, B>::copy_of(y);
        sets_ = x.size(0);
        n_ = x.size(1);
        m_ = y.size(1);
        diameter_ = opt_.diameter > 0.0 ? opt_.diameter : sinkhorn_diameter<T, B>(x, y);
        eps_ = sinkhorn_epsilons(diameter_ > 0.0 && std::isfinite(diameter_) ? diameter_ : opt_.blur, opt_.blur, opt_.scaling);
        fill_cache();
        const auto xy = pairs(XY), yx = pairs(YX), xx = pairs(XX), yy = pairs(YY);

        const index_t bn = sets_ * n_, bm = sets_ * m_;
        const T a_log = static_cast<T>(std::log(1.0 / static_cast<double>(n_)));
        const T b_log = static_cast<T>(std::log(1.0 / static_cast<double>(m_)));
        const auto vec = [](index_t n) { return Tensor<T, B>::uninitialized(Shape{n}); };
        Tensor<T, B> f_ba = vec(bn), f_aa = vec(bn), g_ab = vec(bm), g_bb = vec(bm);
        Tensor<T, B> ft_ba = vec(bn), ft_aa = vec(bn), gt_ab = vec(bm), gt_bb = vec(bm);
        Tensor<T, B> ha = vec(bn), hb = vec(bm);
        ops::fill(B{}, ha.data(), bn, a_log);
        ops::fill(B{}, hb.data(), bm, b_log);
        h_xy_ = vec(bm), h_yx_ = vec(bn), h_xx_ = vec(bn), h_yy_ = vec(bm);

        // h_j = log w_j + potential_j / ε: the soft-min's column weights.
        auto shift = [](Tensor<T, B>& h, T w_log, const Tensor<T, B>& pot, T e) {
            ops::shift_div(B{}, pot.data(), e, w_log, h.data(), h.numel());
        };
        // f = ½(f + f̃): the symmetric averaging of the ε-annealing loop.
        auto average = [](Tensor<T, B>& f, const Tensor<T, B>& ft) { ops::axpby(B{}, f.numel(), T(0.5), ft.data(), T(0.5), f.data()); };
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
        lse_xy_ = vec(bn), lse_yx_ = vec(bm), lse_xx_ = vec(bn), lse_yy_ = vec(bm);
        ops::pairwise_softmin(B{}, xy, e, h_xy_.data(), f_ba.data(), lse_xy_.data());
        ops::pairwise_softmin(B{}, yx, e, h_yx_.data(), g_ab.data(), lse_yx_.data());
        ops::pairwise_softmin(B{}, xx, e, h_xx_.data(), f_aa.data(), lse_xx_.data());
        ops::pairwise_softmin(B{}, yy, e, h_yy_.data(), g_bb.data(), lse_yy_.data());

        // loss_b = ⟨a, f_ba − f_aa⟩ + ⟨b, g_ab − g_bb⟩: a few values per set, summed on the host.
        const Tensor<T, cpu> fba = to_host(f_ba), faa = to_host(f_aa), gab = to_host(g_ab), gbb = to_host(g_bb);
        std::vector<T> out(static_cast<std::size_t>(sets_));
        for (index_t b = 0; b < sets_; ++b) {
            double sf = 0.0, sg = 0.0;
            for (index_t i = 0; i < n_; ++i) sf += static_cast<double>(fba[b * n_ + i] - faa[b * n_ + i]);
            for (index_t j = 0; j < m_; ++j) sg += static_cast<double>(gab[b * m_ + j] - gbb[b * m_ + j]);
            out[static_cast<std::size_t>(b)] = static_cast<T>(sf / static_cast<double>(n_) + sg / static_cast<double>(m_));
        }
        kept_ = ctx.keep_for_backward;
        if (!kept_) {
            x_ = y_ = h_xy_ = h_yx_ = h_xx_ = h_yy_ = lse_xy_ = lse_yx_ = lse_xx_ = lse_yy_ = Tensor<T, B>();
            for (auto& c : cache_) c = Tensor<T, B>();
        }
        return from_host<T, B>(out);
    }

    /// ADDS the reference's gradient of L = Σ_b dloss_b·loss_b: through the last step's costs only.
    void backward(ConstView<T, B> dloss, TensorView<T, B> dx, TensorView<T, B> dy) {
        require(kept_, "SinkhornDivergence::backward: {}", nothing_kept_for_backward);
        require(dloss.numel() == sets_, "SinkhornDivergence::backward: dloss {} for {} sets", dloss.shape(), sets_);
        const Tensor<T, cpu> dl = to_host(dloss);
        std::vector<T> plus(vsize(sets_)), minus(vsize(sets_));
        auto coefs = [&](index_t count) {
            for (index_t b = 0; b < sets_; ++b) {
                const double c = static_cast<double>(dl[b]) / static_cast<double>(count);
                plus[vsize(b)] = static_cast<T>(c);
                minus[vsize(b)] = static_cast<T>(-c);
            }
        };
        if (dx.data()) {
            require(dx.shape() == x_.shape(), "SinkhornDivergence::backward: dx {} does not match x {}", dx.shape(), x_.shape());
            coefs(n_);
            const auto xy = pairs(XY), xx = pairs(XX);
            ops::pairwise_softmin_grad(B{}, xy, e_, h_xy_.data(), lse_xy_.data(), plus.data(), dx.data());
            ops::pairwise_softmin_grad(B{}, xx, e_, h_xx_.data(), lse_xx_.data(), minus.data(), dx.data());
        }
        if (dy.data()) {
            require(dy.shape() == y_.shape(), "SinkhornDivergence::backward: dy {} does not match y {}", dy.shape(), y_.shape());
            coefs(m_);
            const auto yx = pairs(YX), yy = pairs(YY);
            ops::pairwise_softmin_grad(B{}, yx, e_, h_yx_.data(), lse_yx_.data(), plus.data(), dy.data());
            ops::pairwise_softmin_grad(B{}, yy, e_, h_yy_.data(), lse_yy_.data(), minus.data(), dy.data());
        }
    }

private:
    static std::size_t vsize(index_t n) { return static_cast<std::size_t>(n); }

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
    bool kept_ = false;
    Tensor<T, B> x_, y_;
    std::array<Tensor<T, B>, 4> cache_;  ///< d2 of XY, YX, XX, YY (or empty)
    Tensor<T, B> h_xy_, h_yx_, h_xx_, h_yy_, lse_xy_, lse_yx_, lse_xx_, lse_yy_;  // the extrapolation step's weights and LSEs
};

} // namespace celltx::loss
