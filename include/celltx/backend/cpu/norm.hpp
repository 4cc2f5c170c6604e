#pragma once
// Row-wise normalisation kernels on the CPU (LayerNorm, RMSNorm) for a [rows, d] matrix.
// Row statistics are accumulated in double whatever T is (PyTorch accumulates in at least float32);
// the formulas on top of them are backend/math/norm.hpp's, which the CUDA kernels run too.
// Rows run in parallel; parameter gradients are reduced over fixed row chunks, so results do not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/math/norm.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail {

/// Calls f(r) for every row of a [rows, d] matrix; rows are grouped into tasks of about 16K
/// elements, so that small rows do not pay one scheduling step each.
template <class F>
void for_rows(index_t rows, index_t d, F&& f) {
    const index_t per = std::max<index_t>(1, 16384 / std::max<index_t>(d, 1));
    parallel_for((rows + per - 1) / per, [&](index_t b) {
        const index_t end = std::min(rows, (b + 1) * per);
        for (index_t r = b * per; r < end; ++r) f(r);
    });
}

/// out[j] = Σ_r a[r,j] (* b[r,j] when b is given) for a [rows, d] matrix, summed in double.
/// Rows are cut into at most 256 fixed chunks (independent of the thread count) whose partial sums
/// are added in chunk order, so the result is deterministic.
template <class T>
void column_reduce(const T* a, const T* b, index_t rows, index_t d, T* out) {
    const index_t per = std::max({index_t{1}, 32768 / std::max<index_t>(d, 1), (rows + 255) / 256});
    const index_t chunks = (rows + per - 1) / per;
    std::vector<double> partial(static_cast<std::size_t>(chunks * d), 0.0);
    parallel_for(chunks, [&](index_t c) {
        double* acc = partial.data() + c * d;
        const index_t end = std::min(rows, (c + 1) * per);
        for (index_t r = c * per; r < end; ++r) {
            const T* ar = a + r * d;
            if (b) {
                const T* br = b + r * d;
                for (index_t j = 0; j < d; ++j) acc[j] += static_cast<double>(ar[j]) * br[j];
            } else {
                for (index_t j = 0; j < d; ++j) acc[j] += ar[j];
            }
        }
    });
    for (index_t j = 0; j < d; ++j) {
        double s = 0.0;
        for (index_t c = 0; c < chunks; ++c) s += partial[static_cast<std::size_t>(c * d + j)];
        out[j] = static_cast<T>(s);
    }
}

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's row normalisations (see backend/ops.hpp for each contract).
struct normalization {

    /// LayerNorm forward: xhat = (x - mean) * rstd with the biased variance, y = xhat * w + b
    /// (w, b null: no affine). Saves xhat [rows, d] and rstd [rows] for the backward.
    template <Scalar T>
    static void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd, index_t rows, index_t d,
                            double eps) {
        cpu_detail::for_rows(rows, d, [&](index_t r) {
            const T* xr = x + r * d;
            double mean = 0.0;
            for (index_t j = 0; j < d; ++j) mean += xr[j];
            mean /= static_cast<double>(d);
            double var = 0.0;
            for (index_t j = 0; j < d; ++j) {
                const double c = xr[j] - mean;
                var += c * c;
            }
            const double rs = math::inverse_rms(var, static_cast<double>(d), eps);
            rstd[r] = static_cast<T>(rs);
            T* hr = xhat + r * d;
            T* yr = y + r * d;
            for (index_t j = 0; j < d; ++j) {
                const double h = (xr[j] - mean) * rs;
                hr[j] = static_cast<T>(h);
                yr[j] = w ? math::layer_norm_affine(h, w[j], b[j]) : static_cast<T>(h);
            }
        });
    }

    /// LayerNorm backward. With g = dy * w: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) (dx may be
    /// null); dw = Σ_rows dy * xhat and db = Σ_rows dy are assigned (when w is given).
    template <Scalar T>
    static void layer_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* w, index_t rows, index_t d, T* dx,
                             T* dw, T* db) {
        if (dx) {
            cpu_detail::for_rows(rows, d, [&](index_t r) {
                const T* gr = dy + r * d;
                const T* hr = xhat + r * d;
                double sg = 0.0, sgh = 0.0;
                for (index_t j = 0; j < d; ++j) {
                    const double g = w ? static_cast<double>(gr[j]) * w[j] : static_cast<double>(gr[j]);
                    sg += g;
                    sgh += g * hr[j];
                }
                sg /= static_cast<double>(d);
                sgh /= static_cast<double>(d);
                const double rs = rstd[r];
                T* dr = dx + r * d;
                for (index_t j = 0; j < d; ++j) {
                    const double g = w ? static_cast<double>(gr[j]) * w[j] : static_cast<double>(gr[j]);
                    dr[j] += static_cast<T>(math::layer_norm_input_grad(rs, g, sg, hr[j], sgh));
                }
            });
        }
        if (w) {
            cpu_detail::column_reduce(dy, xhat, rows, d, dw);
            cpu_detail::column_reduce(dy, static_cast<const T*>(nullptr), rows, d, db);
        }
    }

    /// RMSNorm forward (HF LlamaRMSNorm): n = x * rsqrt(mean(x²) + eps) computed in double and rounded to T,
    /// y = w * n. Saves n [rows, d] and rstd [rows] for the backward.
    template <Scalar T>
    static void rms_norm_forward(const T* x, const T* w, T* y, T* n, T* rstd, index_t rows, index_t d, double eps) {
        cpu_detail::for_rows(rows, d, [&](index_t r) {
            const T* xr = x + r * d;
            double ss = 0.0;
            for (index_t j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
            const double rs = math::inverse_rms(ss, static_cast<double>(d), eps);
            rstd[r] = static_cast<T>(rs);
            T* nr = n + r * d;
            T* yr = y + r * d;
            for (index_t j = 0; j < d; ++j) {
                nr[j] = static_cast<T>(xr[j] * rs);  // HF casts the normalised value to the input dtype first
                yr[j] = w[j] * nr[j];
            }
        });
    }

    /// RMSNorm backward. With g = dy * w: dx += rstd * (g - n * mean(g * n)) (dx may be null);
    /// dw = Σ_rows dy * n is assigned.
    template <Scalar T>
    static void rms_norm_backward(const T* dy, const T* n, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw) {
        if (dx) {
            cpu_detail::for_rows(rows, d, [&](index_t r) {
                const T* gr = dy + r * d;
                const T* nr = n + r * d;
                double sgn = 0.0;
                for (index_t j = 0; j < d; ++j) sgn += static_cast<double>(gr[j]) * w[j] * nr[j];
                sgn /= static_cast<double>(d);
                const double rs = rstd[r];
                T* dr = dx + r * d;
                for (index_t j = 0; j < d; ++j) dr[j] += static_cast<T>(math::rms_norm_input_grad(rs, static_cast<double>(gr[j]) * w[j], nr[j], sgn));
            });
        }
        cpu_detail::column_reduce(dy, n, rows, d, dw);
    }
};

} // namespace celltx::cpu_kernels
