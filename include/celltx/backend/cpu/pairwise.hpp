#pragma once
// Blockwise kernels over every pair (x_i, y_j) of two batched point sets X [sets, n, d] and
// Y [sets, m, d], for the distribution losses (energy distance, Sinkhorn):
//  - squared distances in geomloss' expanded form d2_ij = (‖x_i‖² − 2 x_i·y_j) + ‖y_j‖² (parity with
//    the PyTorch reference depends on it, e.g. through the clamp of self-distances), one tile of at
//    most block × block at a time, the x·y part by GEMM (ops::gemm: float on AVX2 runs the packed kernel);
//  - memory O((n+m)·d + block²) per task: nothing of size n×m (let alone n×m×d) is allocated, unless
//    the caller passes a precomputed d2 cache (PointPairs::d2);
//  - tasks are (set, row block of X): each owns its output rows and reduces in a fixed order, and the
//    GEMMs always run single-threaded inside the task, so every bit of a result is independent of the
//    thread count. A row's result does depend (at rounding level) on the block size.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail::pairwise_detail {

using ops::PointPairs;

template <class T>
void check(const PointPairs<T>& p) {
    require(p.sets >= 0 && p.n >= 0 && p.m >= 0 && p.d >= 1, "pairwise: bad sizes (sets {}, n {}, m {}, d {})", p.sets, p.n,
            p.m, p.d);
    require(p.block >= 1, "pairwise: block size {} must be positive", p.block);
    require((p.x != nullptr || p.sets * p.n == 0) && (p.y != nullptr || p.sets * p.m == 0), "pairwise: null operand");
}

/// ‖row‖² of every row of a [rows, d] matrix, as (x*x).sum(-1).
template <class T>
std::vector<T> row_sq_norms(const T* x, index_t rows, index_t d) {
    std::vector<T> out(static_cast<std::size_t>(rows));
    if (rows > 0) cpu_detail::VectorMap<T>(out.data(), rows) = cpu_detail::mat(x, rows, d, d).rowwise().squaredNorm();
    return out;
}

/// The per-call state: squared norms of every row, and the task decomposition.
template <class T>
struct Plan {
    const PointPairs<T>& p;
    std::vector<T> xsq, ysq;
    index_t row_blocks, tasks, min_parallel;

    explicit Plan(const PointPairs<T>& pp) : p(pp) {
        check(p);
        if (!p.d2) {
            xsq = row_sq_norms(p.x, p.sets * p.n, p.d);
            ysq = row_sq_norms(p.y, p.sets * p.m, p.d);
        }
        row_blocks = (p.n + p.block - 1) / p.block;
        tasks = p.sets * row_blocks;
        // Eigen threads a GEMM of >= 1e5 multiply-adds itself when called outside a parallel region,
        // with a thread-count-dependent k blocking; so small problems run serially (every GEMM stays
        // below that size) and larger ones always inside a parallel region (even with one task).
        const double work = static_cast<double>(p.sets) * static_cast<double>(p.n) * static_cast<double>(p.m) *
                            static_cast<double>(p.d);
        min_parallel = work < 65536.0 ? tasks + 1 : 1;
    }

    /// Calls f(b, i0, rows) for every task.
    template <class F>
    void run(F&& f) const {
        cpu_detail::parallel_for(tasks, [&](index_t t) {
            const index_t b = t / row_blocks, i0 = (t % row_blocks) * p.block;
            f(b, i0, std::min(p.block, p.n - i0));
        }, min_parallel);
    }

    /// The d2 tile of set b, rows [i0, i0+rows) of X, rows [j0, j0+cols) of Y: a pointer into the
    /// cache (ld = m) or computed into `scratch` (ld = cols).
    const T* tile(index_t b, index_t i0, index_t rows, index_t j0, index_t cols, T* scratch, index_t& ld) const {
        if (p.d2) {
            ld = p.m;
            return p.d2 + (b * p.n + i0) * p.m + j0;
        }
        ld = cols;
        cpu_kernels::dense::gemm(false, true, rows, cols, p.d, T(1), p.x + (b * p.n + i0) * p.d, p.d, p.y + (b * p.m + j0) * p.d, p.d, T(0),
                  scratch, cols);
        const T* xs = xsq.data() + b * p.n + i0;
        const T* ys = ysq.data() + b * p.m + j0;
        for (index_t r = 0; r < rows; ++r) {
            T* row = scratch + r * cols;
            for (index_t c = 0; c < cols; ++c) row[c] = (xs[r] - T(2) * row[c]) + ys[c];
        }
        return scratch;
    }
};

/// grad[b, i, :] += coef[b] Σ_j W_ij (x_i − y_j) with W from weights(b, i0, rows, j0, cols, d2, ld, W)
/// (W row-major, ld = cols). Sets with coef 0 are skipped (they add exactly nothing, not 0·NaN).
template <class T, class Weights>
void weighted_differences(const PointPairs<T>& p, const T* coef, T* grad, Weights&& weights) {
    using cpu_detail::mat;
    const Plan<T> plan(p);
    plan.run([&](index_t b, index_t i0, index_t rows) {
        if (coef[b] == T(0) || rows == 0) return;
        const index_t bs = std::min(p.block, p.m);
        auto scratch = Tensor<T>::uninitialized(Shape{2 * rows * bs + rows * p.d + rows});
        T* d2buf = scratch.data();
        T* W = d2buf + rows * bs;
        auto G = mat(W + rows * bs, rows, p.d, p.d);  // Σ_j W_ij y_j
        T* rs = W + rows * bs + rows * p.d;            // Σ_j W_ij
        G.setZero();
        std::fill_n(rs, rows, T(0));
        for (index_t j0 = 0; j0 < p.m; j0 += p.block) {
            const index_t cols = std::min(p.block, p.m - j0);
            index_t ld = 0;
            const T* t = plan.tile(b, i0, rows, j0, cols, d2buf, ld);
            weights(b, i0, rows, j0, cols, t, ld, W);
            auto w = mat(W, rows, cols, cols);
            cpu_kernels::dense::gemm(false, false, rows, p.d, cols, T(1), W, cols, p.y + (b * p.m + j0) * p.d, p.d, T(1), G.data(), p.d);
            for (index_t r = 0; r < rows; ++r) rs[r] += w.row(r).sum();
        }
        auto x = mat(p.x + (b * p.n + i0) * p.d, rows, p.d, p.d);
        auto g = mat(grad + (b * p.n + i0) * p.d, rows, p.d, p.d);
        for (index_t r = 0; r < rows; ++r) g.row(r) += coef[b] * (rs[r] * x.row(r) - G.row(r));
    });
}

} // namespace celltx::cpu_detail::pairwise_detail

namespace celltx::cpu_kernels {

/// The CPU's pairwise tiles of the distribution losses (see backend/ops.hpp for each contract).
struct pairwise {
    template <class T>
    using PointPairs = ops::PointPairs<T>;


/// out [sets, n, m] = d2 of every pair, tile by tile exactly as the other kernels compute it (so
/// passing `out` back as PointPairs::d2, with the same block, changes no bit of their results).
template <Scalar T>
static void pairwise_sqdist(const PointPairs<T>& p, T* out) {
    require(p.d2 == nullptr, "pairwise_sqdist: the operands already carry a d2 cache");
    const cpu_detail::pairwise_detail::Plan<T> plan(p);
    plan.run([&](index_t b, index_t i0, index_t rows) {
        auto scratch = Tensor<T>::uninitialized(Shape{rows * std::min(p.block, p.m)});
        for (index_t j0 = 0; j0 < p.m; j0 += p.block) {
            const index_t cols = std::min(p.block, p.m - j0);
            index_t ld = 0;
            const T* t = plan.tile(b, i0, rows, j0, cols, scratch.data(), ld);
            for (index_t r = 0; r < rows; ++r) std::copy_n(t + r * ld, cols, out + (b * p.n + i0 + r) * p.m + j0);
        }
    });
}

/// sums[b] = Σ_ij sqrt(max(d2_ij, min_sq)) (accumulated in double): the clamped distance sum.
template <Scalar T>
static void pairwise_distance_sum(const PointPairs<T>& p, T min_sq, double* sums) {
    const cpu_detail::pairwise_detail::Plan<T> plan(p);
    std::vector<double> partial(static_cast<std::size_t>(plan.tasks), 0.0);
    plan.run([&](index_t b, index_t i0, index_t rows) {
        if (rows == 0 || p.m == 0) return;
        auto scratch = Tensor<T>::uninitialized(Shape{rows * std::min(p.block, p.m)});
        double acc = 0.0;
        for (index_t j0 = 0; j0 < p.m; j0 += p.block) {
            const index_t cols = std::min(p.block, p.m - j0);
            index_t ld = 0;
            const T* t = plan.tile(b, i0, rows, j0, cols, scratch.data(), ld);
            for (index_t r = 0; r < rows; ++r) {
                T row_acc = 0;
                for (index_t c = 0; c < cols; ++c) {
                    const T v = t[r * ld + c];
                    row_acc += std::sqrt(v < min_sq ? min_sq : v);  // NaN passes through
                }
                acc += static_cast<double>(row_acc);
            }
        }
        partial[static_cast<std::size_t>(b * plan.row_blocks + i0 / p.block)] = acc;
    });
    for (index_t b = 0; b < p.sets; ++b) {
        double s = 0.0;
        for (index_t r = 0; r < plan.row_blocks; ++r) s += partial[static_cast<std::size_t>(b * plan.row_blocks + r)];
        sums[b] = s;
    }
}

/// grad[b, i, :] += coef[b] Σ_j ∂/∂x_i sqrt(max(d2_ij, min_sq)) = coef[b] Σ_j [d2_ij >= min_sq] (x_i − y_j) / sqrt(d2_ij)
/// (the clamp passes no gradient, as PyTorch's clamp_min). Sets with coef[b] == 0 are skipped.
template <Scalar T>
static void pairwise_distance_grad(const PointPairs<T>& p, T min_sq, const T* coef, T* grad) {
    cpu_detail::pairwise_detail::weighted_differences(p, coef, grad,
        [&](index_t, index_t, index_t rows, index_t, index_t cols, const T* t, index_t ld, T* W) {
            for (index_t r = 0; r < rows; ++r)
                for (index_t c = 0; c < cols; ++c) {
                    const T v = t[r * ld + c];
                    W[r * cols + c] = v < min_sq ? T(0) : T(1) / std::sqrt(v);
                }
        });
}

/// The soft-min of Sinkhorn with cost C_ij = ½ d2_ij (geomloss p = 2):
///   lse[b, i] = log Σ_j exp(h[b, j] − C_ij / eps),   out[b, i] = −eps · lse[b, i]
/// with an online max/sum over column tiles. h is [sets, m]; lse may be null.
template <Scalar T>
static void pairwise_softmin(const PointPairs<T>& p, T eps, const T* h, T* out, T* lse = nullptr) {
    const cpu_detail::pairwise_detail::Plan<T> plan(p);
    constexpr T neg_inf = -std::numeric_limits<T>::infinity();
    plan.run([&](index_t b, index_t i0, index_t rows) {
        if (rows == 0) return;
        const index_t bs = std::min(p.block, p.m);
        auto scratch = Tensor<T>::uninitialized(Shape{2 * rows * bs + 2 * rows});
        T* d2buf = scratch.data();
        T* z = d2buf + rows * bs;
        T* mx = z + rows * bs;
        T* s = mx + rows;
        std::fill_n(mx, rows, neg_inf);
        std::fill_n(s, rows, T(0));
        const T* hb = h + b * p.m;
        for (index_t j0 = 0; j0 < p.m; j0 += p.block) {
            const index_t cols = std::min(p.block, p.m - j0);
            index_t ld = 0;
            const T* t = plan.tile(b, i0, rows, j0, cols, d2buf, ld);
            for (index_t r = 0; r < rows; ++r) {
                T* zr = z + r * cols;
                T local = neg_inf;
                for (index_t c = 0; c < cols; ++c) {
                    zr[c] = hb[j0 + c] - (T(0.5) * t[r * ld + c]) / eps;
                    local = std::max(local, zr[c]);
                }
                if (std::max(mx[r], local) == neg_inf) continue;  // every term so far is exp(-inf) = 0
                math::online_softmax_rescale(mx[r], s[r], local);
                T acc = 0;
                for (index_t c = 0; c < cols; ++c) acc += std::exp(zr[c] - mx[r]);
                s[r] += acc;
            }
        }
        for (index_t r = 0; r < rows; ++r) {
            const T l = (mx[r] == neg_inf ? neg_inf : math::online_softmax_lse(mx[r], s[r]));
            if (lse) lse[b * p.n + i0 + r] = l;
            out[b * p.n + i0 + r] = -eps * l;
        }
    });
}

/// grad[b, i, :] += coef[b] Σ_j P_ij (x_i − y_j), P_ij = exp(h[b, j] − C_ij / eps − lse[b, i]): the
/// gradient of pairwise_softmin's out[b, i] w.r.t. x_i (y and h held fixed). Sets with coef 0 are skipped.
template <Scalar T>
static void pairwise_softmin_grad(const PointPairs<T>& p, T eps, const T* h, const T* lse, const T* coef, T* grad) {
    cpu_detail::pairwise_detail::weighted_differences(p, coef, grad,
        [&](index_t b, index_t i0, index_t rows, index_t j0, index_t cols, const T* t, index_t ld, T* W) {
            const T* hb = h + b * p.m + j0;
            for (index_t r = 0; r < rows; ++r) {
                const T l = lse[b * p.n + i0 + r];
                for (index_t c = 0; c < cols; ++c) W[r * cols + c] = std::exp(hb[c] - (T(0.5) * t[r * ld + c]) / eps - l);
            }
        });
}

};

} // namespace celltx::cpu_kernels
