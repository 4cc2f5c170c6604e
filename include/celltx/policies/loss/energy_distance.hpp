#pragma once
// EnergyDistance: geomloss' SamplesLoss("energy") with uniform weights, one value per set (the
// distribution loss behind the State model's EnergyLoss policy).
//   loss_b = ½⟨a, Kxx a⟩ + ½⟨b, Kyy b⟩ − ⟨a, Kxy b⟩,  K(u, v) = −sqrt(max(‖u‖² − 2u·v + ‖v‖², 1e-8)),
// a = 1/N, b = 1/M: half the classic energy distance. The squared distance uses exactly that
// expanded form (so self-distances are clamped to 1e-8, not 0, as in the reference) and is computed
// blockwise (the ops::pairwise_* tiles): memory O((N+M)·D + block²), never N×M.
//  - forward(x [B,N,D], y [B,M,D]) -> [B]; saves x and y (by value);
//  - backward(dloss [B], dx, dy) ADDS dL/dx and dL/dy (L = Σ_b dloss_b·loss_b); an empty view skips
//    that gradient; a set with dloss_b == 0 adds nothing (a NaN set left out of a nan-mean stays
//    NaN-free). The clamp passes no gradient (PyTorch's clamp_min).
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::loss {

namespace detail {
/// [B, N, D] point sets: checks rank and returns (B, N, D).
template <class V>
void check_sets(const char* who, const V& x, const V& y) {
    require(x.rank() == 3 && y.rank() == 3, "{}: x {} and y {} must be [B, N, D] and [B, M, D]", who, x.shape(), y.shape());
    require(x.size(0) == y.size(0) && x.size(2) == y.size(2), "{}: x {} and y {} differ in sets or dimension", who, x.shape(),
            y.shape());
    require(x.size(2) >= 1, "{}: points of dimension 0", who);
}

template <class T>
ops::PointPairs<T> pairs(const T* x, index_t n, const T* y, index_t m, index_t sets, index_t d, index_t block) {
    ops::PointPairs<T> p;
    p.x = x;
    p.y = y;
    p.sets = sets;
    p.n = n;
    p.m = m;
    p.d = d;
    p.block = block;
    return p;
}
} // namespace detail

template <Scalar T, Backend B = cpu>
class EnergyDistance {
public:
    static constexpr double min_sq = 1e-8;  ///< clamp of the squared distance (geomloss)

    /// block: tile edge of the pairwise kernels (results agree across block sizes to rounding).
    explicit EnergyDistance(index_t block = 256) : block_(block) {
        require(block >= 1, "EnergyDistance: block size {} must be positive", block);
    }

    index_t block() const noexcept { return block_; }
    void set_block(index_t block) {
        require(block >= 1, "EnergyDistance: block size {} must be positive", block);
        block_ = block;
    }

    /// Per-set loss [B] of x [B, N, D] (prediction) against y [B, M, D] (target).
    Tensor<T, B> forward(ConstView<T, B> x, ConstView<T, B> y, const Context& ctx = {}) {
        detail::check_sets("EnergyDistance", x, y);
        require(x.size(1) >= 1 && y.size(1) >= 1, "EnergyDistance: empty set (x {}, y {})", x.shape(), y.shape());
        kept_ = ctx.keep_for_backward;  // the backward reads both sets again
        x_ = kept_ ? Tensor<T, B>::copy_of(x) : Tensor<T, B>();
        y_ = kept_ ? Tensor<T, B>::copy_of(y) : Tensor<T, B>();
        const index_t sets = x.size(0), n = x.size(1), m = y.size(1), d = x.size(2);
        std::vector<double> sxy(static_cast<std::size_t>(sets)), sxx(sxy.size()), syy(sxy.size());
        const T floor = static_cast<T>(min_sq);
        ops::pairwise_distance_sum(B{}, detail::pairs(x.data(), n, y.data(), m, sets, d, block_), floor, sxy.data());
        ops::pairwise_distance_sum(B{}, detail::pairs(x.data(), n, x.data(), n, sets, d, block_), floor, sxx.data());
        ops::pairwise_distance_sum(B{}, detail::pairs(y.data(), m, y.data(), m, sets, d, block_), floor, syy.data());
        std::vector<T> out(static_cast<std::size_t>(sets));
        const double nn = static_cast<double>(n), mm = static_cast<double>(m);
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = static_cast<T>(sxy[i] / (nn * mm) - 0.5 * sxx[i] / (nn * nn) - 0.5 * syy[i] / (mm * mm));
        return from_host<T, B>(out);
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dx, TensorView<T, B> dy) {
        require(kept_, "EnergyDistance::backward: {}", nothing_kept_for_backward);
        const index_t sets = x_.size(0), n = x_.size(1), m = y_.size(1), d = x_.size(2);
        require(dloss.numel() == sets, "EnergyDistance::backward: dloss {} for {} sets", dloss.shape(), sets);
        const Tensor<T, cpu> dl = to_host(dloss);
        const T floor = static_cast<T>(min_sq);
        const double nn = static_cast<double>(n), mm = static_cast<double>(m);
        std::vector<T> self(static_cast<std::size_t>(sets)), cross(self.size());
        // d/dx_i of ½Σ K(x,x)/N² counts both slots of each pair: −(1/N²) Σ_j ∂‖x_i − x_j‖/∂x_i.
        if (dx.data()) {
            require(dx.shape() == x_.shape(), "EnergyDistance::backward: dx {} does not match x {}", dx.shape(), x_.shape());
            for (index_t b = 0; b < sets; ++b) {
                self[static_cast<std::size_t>(b)] = static_cast<T>(-static_cast<double>(dl[b]) / (nn * nn));
                cross[static_cast<std::size_t>(b)] = static_cast<T>(static_cast<double>(dl[b]) / (nn * mm));
            }
            ops::pairwise_distance_grad(B{}, detail::pairs(x_.data(), n, x_.data(), n, sets, d, block_), floor, self.data(), dx.data());
            ops::pairwise_distance_grad(B{}, detail::pairs(x_.data(), n, y_.data(), m, sets, d, block_), floor, cross.data(), dx.data());
        }
        if (dy.data()) {
            require(dy.shape() == y_.shape(), "EnergyDistance::backward: dy {} does not match y {}", dy.shape(), y_.shape());
            for (index_t b = 0; b < sets; ++b) {
                self[static_cast<std::size_t>(b)] = static_cast<T>(-static_cast<double>(dl[b]) / (mm * mm));
                cross[static_cast<std::size_t>(b)] = static_cast<T>(static_cast<double>(dl[b]) / (nn * mm));
            }
            ops::pairwise_distance_grad(B{}, detail::pairs(y_.data(), m, y_.data(), m, sets, d, block_), floor, self.data(), dy.data());
            ops::pairwise_distance_grad(B{}, detail::pairs(y_.data(), m, x_.data(), n, sets, d, block_), floor, cross.data(), dy.data());
        }
    }

private:
    index_t block_ = 256;
    bool kept_ = false;
    Tensor<T, B> x_, y_;
};

} // namespace celltx::loss
