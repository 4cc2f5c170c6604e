#pragma once
// The pairwise tiles of the distribution losses on the GPU (energy distance, Sinkhorn), blockwise:
// rows of X against rows of Y, for every set at once, one tile of at most 256 × 256 pairs per set
// at a time (nothing of size n×m unless the caller passes the PointPairs::d2 cache).
//  - d2_ij = (‖x_i‖² − 2 x_i·y_j) + ‖y_j‖² (geomloss' expanded form, as on the CPU), x·y by a cuBLAS
//    strided-batched GEMM over the sets, the rest by a kernel on the tile;
//  - the per-pair functions run one thread per (set, row of X) walking the tile's columns in order
//    (the soft-min's online max/sum carried from tile to tile, as on the CPU);
//  - the gradients Σ_j W_ij (x_i − y_j) = (Σ_j W_ij) x_i − (W Y)_i: W tile by a kernel, W·Y by a
//    strided-batched GEMM accumulated over the column tiles.
// Everything is deterministic; sums the host reads are added on the host in row order.
#include <cmath>
#include <limits>
#include <vector>
#include "celltx/backend/cuda/dense.cuh"
#include "celltx/backend/cuda/elementwise.cuh"
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cuda_detail {

/// out[r] = ‖x_r‖² over the rows of a [rows, d] matrix (one warp per row).
template <class T>
__global__ void row_sq_norms_kernel(const T* x, index_t rows, index_t d, T* out) {
    for (index_t r = thread_index() / 32; r < rows; r += grid_stride() / 32) {
        T s = T(0);
        for (index_t c = threadIdx.x & 31; c < d; c += 32) s += x[r * d + c] * x[r * d + c];
        s = warp_sum(s);
        if ((threadIdx.x & 31) == 0) out[r] = s;
    }
}

/// A d2 tile of every set: element (b, r, c) at d2[b·set_stride + r·ld + c].
template <class T>
struct PairTile {
    T* d2;
    index_t ld, set_stride, rows, cols, i0, j0;
};

/// d2 = (xsq_i − 2·t) + ysq_j in place over a tile holding x·y.
template <class T>
__global__ void d2_from_dot_kernel(PairTile<T> t, index_t sets, const T* xsq, index_t n, const T* ysq, index_t m) {
    for (index_t x = thread_index(); x < sets * t.rows * t.cols; x += grid_stride()) {
        const index_t c = x % t.cols, r = (x / t.cols) % t.rows, b = x / (t.cols * t.rows);
        T& v = t.d2[b * t.set_stride + r * t.ld + c];
        v = (xsq[b * n + t.i0 + r] - T(2) * v) + ysq[b * m + t.j0 + c];
    }
}

/// Per set and row of X: acc[b·n + i] += Σ_c sqrt(max(d2, min_sq)) over the tile (the row's sum in
/// T, added to the running double).
template <class T>
__global__ void distance_sum_kernel(PairTile<T> t, index_t sets, index_t n, T min_sq, double* acc) {
    for (index_t x = thread_index(); x < sets * t.rows; x += grid_stride()) {
        const index_t r = x % t.rows, b = x / t.rows;
        const T* row = t.d2 + b * t.set_stride + r * t.ld;
        T s = T(0);
        for (index_t c = 0; c < t.cols; ++c) {
            const T v = row[c];
            s += std::sqrt(v < min_sq ? min_sq : v);  // NaN passes through
        }
        acc[b * n + t.i0 + r] += static_cast<double>(s);
    }
}

enum class PairWeight { distance, softmin };

/// W[b, r, c] (ld = cols) from the d2 tile: distance: [d2 >= min_sq] / sqrt(d2); softmin:
/// exp(h[b, j] − ½d2/eps − lse[b, i]); 0 for sets whose coefficient is 0. rs[b, r] += Σ_c W.
template <class T>
__global__ void pair_weights_kernel(PairTile<T> t, index_t sets, index_t n, index_t m, PairWeight kind, T param, const T* h, const T* lse,
                                    const T* coef, T* W, T* rs) {
    for (index_t x = thread_index(); x < sets * t.rows; x += grid_stride()) {
        const index_t r = x % t.rows, b = x / t.rows;
        const T* row = t.d2 + b * t.set_stride + r * t.ld;
        T* w = W + (b * t.rows + r) * t.cols;
        if (coef[b] == T(0)) {
            for (index_t c = 0; c < t.cols; ++c) w[c] = T(0);
            continue;
        }
        T s = T(0);
        if (kind == PairWeight::distance) {
            for (index_t c = 0; c < t.cols; ++c) {
                const T v = row[c];
                w[c] = v < param ? T(0) : T(1) / std::sqrt(v);
                s += w[c];
            }
        } else {
            const T l = lse[b * n + t.i0 + r];
            const T* hb = h + b * m + t.j0;
            for (index_t c = 0; c < t.cols; ++c) {
                w[c] = std::exp(hb[c] - (T(0.5) * row[c]) / param - l);
                s += w[c];
            }
        }
        rs[b * t.rows + r] += s;
    }
}

/// grad[b, i0 + r, :] += coef[b]·(rs[b, r]·x_i − G[b, r, :]) for sets with coef != 0.
template <class T>
__global__ void pair_grad_kernel(const T* x, index_t n, index_t d, index_t i0, index_t rows, index_t sets, const T* coef, const T* rs, const T* G,
                                 T* grad) {
    for (index_t e = thread_index(); e < sets * rows * d; e += grid_stride()) {
        const index_t c = e % d, r = (e / d) % rows, b = e / (d * rows);
        if (coef[b] == T(0)) continue;
        const index_t at = (b * n + i0 + r) * d + c;
        grad[at] += coef[b] * (rs[b * rows + r] * x[at] - G[(b * rows + r) * d + c]);
    }
}

/// The soft-min's running max and sum of each (set, row) over one tile.
template <class T>
__global__ void softmin_tile_kernel(PairTile<T> t, index_t sets, index_t n, index_t m, T eps, const T* h, T* mx, T* sum) {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    for (index_t x = thread_index(); x < sets * t.rows; x += grid_stride()) {
        const index_t r = x % t.rows, b = x / t.rows, at = b * n + t.i0 + r;
        const T* row = t.d2 + b * t.set_stride + r * t.ld;
        const T* hb = h + b * m + t.j0;
        T local = neg_inf;
        for (index_t c = 0; c < t.cols; ++c) {
            const T z = hb[c] - (T(0.5) * row[c]) / eps;
            local = local < z ? z : local;
        }
        T run_max = mx[at], run_sum = sum[at];
        if ((run_max < local ? local : run_max) == neg_inf) continue;  // every term so far is exp(-inf) = 0
        math::online_softmax_rescale(run_max, run_sum, local);
        T acc = T(0);
        for (index_t c = 0; c < t.cols; ++c) acc += std::exp(hb[c] - (T(0.5) * row[c]) / eps - run_max);
        mx[at] = run_max;
        sum[at] = run_sum + acc;
    }
}

template <class T>
__global__ void softmin_finish_kernel(index_t count, const T* mx, const T* sum, T eps, T* out, T* lse) {
    const T neg_inf = -std::numeric_limits<T>::infinity();
    for (index_t x = thread_index(); x < count; x += grid_stride()) {
        const T l = mx[x] == neg_inf ? neg_inf : math::online_softmax_lse(mx[x], sum[x]);
        if (lse) lse[x] = l;
        out[x] = -eps * l;
    }
}

/// The per-call state of a pairwise op: the squared norms, the tile sizes and the tile scratch.
template <class T>
class PairPlan {
public:
    explicit PairPlan(const ops::PointPairs<T>& p) : p_(p) {
        require(p.sets >= 0 && p.n >= 0 && p.m >= 0 && p.d >= 1, "pairwise: bad sizes (sets {}, n {}, m {}, d {})", p.sets, p.n, p.m, p.d);
        require(p.block >= 1, "pairwise: block size {} must be positive", p.block);
        require((p.x != nullptr || p.sets * p.n == 0) && (p.y != nullptr || p.sets * p.m == 0), "pairwise: null operand");
        cols_ = std::max<index_t>(1, std::min<index_t>(p.m, 256));
        const index_t budget = index_t{1} << 24;  // elements of one tile over every set
        rows_ = std::max<index_t>(1, std::min<index_t>({std::max<index_t>(p.n, 1), 256, budget / std::max<index_t>(1, p.sets * std::max(cols_, p.d))}));
        if (!p.d2 && p.sets > 0) {
            xsq_ = Tensor<T, cuda>::uninitialized(Shape{p.sets * p.n});
            ysq_ = Tensor<T, cuda>::uninitialized(Shape{p.sets * p.m});
            CELLTX_CUDA_LAUNCH(blocks_for(p.sets * p.n * 32, 256), 256, 0, row_sq_norms_kernel<T>, p.x, p.sets * p.n, p.d, xsq_.data());
            CELLTX_CUDA_LAUNCH(blocks_for(p.sets * p.m * 32, 256), 256, 0, row_sq_norms_kernel<T>, p.y, p.sets * p.m, p.d, ysq_.data());
            scratch_ = Tensor<T, cuda>::uninitialized(Shape{p.sets * rows_ * cols_});
        }
    }

    index_t rows() const { return rows_; }
    index_t cols() const { return cols_; }

    /// The d2 tile of rows [i0, i0+rows) × columns [j0, j0+cols) of every set: the cache, or
    /// computed into `dest` (ld, set stride; the plan's scratch when null).
    PairTile<T> tile(index_t i0, index_t rows, index_t j0, index_t cols, T* dest = nullptr, index_t ld = 0, index_t stride = 0) {
        if (p_.d2 && !dest) return {const_cast<T*>(p_.d2) + i0 * p_.m + j0, p_.m, p_.n * p_.m, rows, cols, i0, j0};
        if (!dest) dest = scratch_.data(), ld = cols, stride = rows_ * cols_;
        const PairTile<T> t{dest, ld, stride, rows, cols, i0, j0};
        gemm_strided_batched<T>(false, true, rows, cols, p_.d, T(1), p_.x + i0 * p_.d, p_.d, p_.n * p_.d, p_.y + j0 * p_.d, p_.d, p_.m * p_.d, T(0),
                                dest, ld, stride, p_.sets);
        CELLTX_CUDA_LAUNCH(blocks_for(p_.sets * rows * cols, 256), 256, 0, d2_from_dot_kernel<T>, t, p_.sets, xsq_.data(), p_.n, ysq_.data(), p_.m);
        return t;
    }

    /// Calls f(i0, rows, j0, cols) over the tiles, row blocks outside.
    template <class F>
    void for_tiles(F&& f) {
        for (index_t i0 = 0; i0 < p_.n; i0 += rows_)
            for (index_t j0 = 0; j0 < p_.m; j0 += cols_) f(i0, std::min(rows_, p_.n - i0), j0, std::min(cols_, p_.m - j0));
    }

    /// grad += coef[b]·Σ_j W_ij (x_i − y_j), W from pair_weights_kernel (kind, param, h, lse).
    void weighted_differences(PairWeight kind, T param, const T* h, const T* lse, const T* coef_host, T* grad) {
        const ops::PointPairs<T>& p = p_;
        bool any = false;
        for (index_t b = 0; b < p.sets; ++b) any = any || coef_host[b] != T(0);
        if (!any || p.n == 0) return;
        const Tensor<T, cuda> coef = from_host<T, cuda>(coef_host, Shape{p.sets});
        auto W = Tensor<T, cuda>::uninitialized(Shape{p.sets * rows_ * cols_});
        auto G = Tensor<T, cuda>::uninitialized(Shape{p.sets * rows_ * p.d});
        auto rs = Tensor<T, cuda>::uninitialized(Shape{p.sets * rows_});
        for (index_t i0 = 0; i0 < p.n; i0 += rows_) {
            const index_t rows = std::min(rows_, p.n - i0);
            rs.zero();
            if (p.m == 0) G.zero();
            for (index_t j0 = 0; j0 < p.m; j0 += cols_) {
                const index_t cols = std::min(cols_, p.m - j0);
                const PairTile<T> t = tile(i0, rows, j0, cols);
                CELLTX_CUDA_LAUNCH(blocks_for(p.sets * rows, 128), 128, 0, pair_weights_kernel<T>, t, p.sets, p.n, p.m, kind, param, h, lse,
                                   coef.data(), W.data(), rs.data());
                // G[b] (rows × d) (=, then +=) W[b] (rows × cols) · Y[b, j0 : j0 + cols]
                gemm_strided_batched<T>(false, false, rows, p.d, cols, T(1), W.data(), cols, rows * cols, p.y + j0 * p.d, p.d, p.m * p.d,
                                        j0 == 0 ? T(0) : T(1), G.data(), p.d, rows * p.d, p.sets);
            }
            CELLTX_CUDA_LAUNCH(blocks_for(p.sets * rows * p.d, 256), 256, 0, pair_grad_kernel<T>, p.x, p.n, p.d, i0, rows, p.sets, coef.data(),
                               rs.data(), G.data(), grad);
        }
    }

private:
    const ops::PointPairs<T>& p_;
    index_t rows_ = 1, cols_ = 1;
    Tensor<T, cuda> xsq_, ysq_, scratch_;
};

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's pairwise tiles of the distribution losses (see backend/ops.hpp for each contract).
struct pairwise {
    template <Scalar T>
    static void pairwise_sqdist(const ops::PointPairs<T>& p, T* out) {
        require(p.d2 == nullptr, "pairwise_sqdist: the operands already carry a d2 cache");
        cuda_detail::PairPlan<T> plan(p);
        plan.for_tiles([&](index_t i0, index_t rows, index_t j0, index_t cols) { plan.tile(i0, rows, j0, cols, out + i0 * p.m + j0, p.m, p.n * p.m); });
    }

    template <Scalar T>
    static void pairwise_distance_sum(const ops::PointPairs<T>& p, T min_sq, double* sums) {
        using namespace cuda_detail;
        PairPlan<T> plan(p);
        if (p.sets == 0) return;
        auto acc = Tensor<double, cuda>::zeros(Shape{p.sets * p.n});
        plan.for_tiles([&](index_t i0, index_t rows, index_t j0, index_t cols) {
            const PairTile<T> t = plan.tile(i0, rows, j0, cols);
            CELLTX_CUDA_LAUNCH(blocks_for(p.sets * rows, 128), 128, 0, distance_sum_kernel<T>, t, p.sets, p.n, min_sq, acc.data());
        });
        const Tensor<double, cpu> h = to_host(acc);
        for (index_t b = 0; b < p.sets; ++b) {
            double s = 0.0;
            for (index_t i = 0; i < p.n; ++i) s += h[b * p.n + i];
            sums[b] = s;
        }
    }

    template <Scalar T>
    static void pairwise_distance_grad(const ops::PointPairs<T>& p, T min_sq, const T* coef, T* grad) {
        cuda_detail::PairPlan<T> plan(p);
        plan.weighted_differences(cuda_detail::PairWeight::distance, min_sq, nullptr, nullptr, coef, grad);
    }

    template <Scalar T>
    static void pairwise_softmin(const ops::PointPairs<T>& p, T eps, const T* h, T* out, T* lse = nullptr) {
        using namespace cuda_detail;
        PairPlan<T> plan(p);
        const index_t count = p.sets * p.n;
        if (count == 0) return;
        auto mx = Tensor<T, cuda>::uninitialized(Shape{count}), sum = Tensor<T, cuda>::zeros(Shape{count});
        elementwise::fill(mx.data(), count, -std::numeric_limits<T>::infinity());
        plan.for_tiles([&](index_t i0, index_t rows, index_t j0, index_t cols) {
            const PairTile<T> t = plan.tile(i0, rows, j0, cols);
            CELLTX_CUDA_LAUNCH(blocks_for(p.sets * rows, 128), 128, 0, softmin_tile_kernel<T>, t, p.sets, p.n, p.m, eps, h, mx.data(), sum.data());
        });
        CELLTX_CUDA_LAUNCH(blocks_for(count, 256), 256, 0, softmin_finish_kernel<T>, count, mx.data(), sum.data(), eps, out, lse);
    }

    template <Scalar T>
    static void pairwise_softmin_grad(const ops::PointPairs<T>& p, T eps, const T* h, const T* lse, const T* coef, T* grad) {
        cuda_detail::PairPlan<T> plan(p);
        plan.weighted_differences(cuda_detail::PairWeight::softmin, eps, h, lse, coef, grad);
    }
};

} // namespace celltx::cuda_kernels
