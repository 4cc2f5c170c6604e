#pragma once
// LayerNorm and RMSNorm on the GPU: one warp per row, row sums in double (as on the CPU; the order
// of the warp's sums is a fixed butterfly), the formulas of backend/math/norm.hpp. The parameter
// gradients are deterministic column reductions (backend/cuda/reduction.cuh).
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/cuda/reduction.cuh"
#include "celltx/backend/math/norm.hpp"

namespace celltx::cuda_detail {

inline constexpr int norm_threads = 256;  // 8 rows per block

inline unsigned norm_blocks(index_t rows) { return blocks_for(rows * 32, norm_threads); }

template <class T>
__global__ void layer_norm_forward_kernel(const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd, index_t rows, index_t d, double eps) {
    const int lane = threadIdx.x & 31;
    for (index_t r = thread_index() / 32; r < rows; r += grid_stride() / 32) {
        const T* xr = x + r * d;
        double s = 0.0;
        for (index_t j = lane; j < d; j += 32) s += static_cast<double>(xr[j]);
        const double mean = warp_sum(s) / static_cast<double>(d);
        double v = 0.0;
        for (index_t j = lane; j < d; j += 32) {
            const double c = static_cast<double>(xr[j]) - mean;
            v += c * c;
        }
        const double rs = math::inverse_rms(warp_sum(v), static_cast<double>(d), eps);
        if (lane == 0) rstd[r] = static_cast<T>(rs);
        for (index_t j = lane; j < d; j += 32) {
            const double h = (static_cast<double>(xr[j]) - mean) * rs;
            xhat[r * d + j] = static_cast<T>(h);
            y[r * d + j] = w ? math::layer_norm_affine(h, w[j], b[j]) : static_cast<T>(h);
        }
    }
}

template <class T>
__global__ void layer_norm_input_grad_kernel(const T* dy, const T* xhat, const T* rstd, const T* w, index_t rows, index_t d, T* dx) {
    const int lane = threadIdx.x & 31;
    for (index_t r = thread_index() / 32; r < rows; r += grid_stride() / 32) {
        const T* gr = dy + r * d;
        const T* hr = xhat + r * d;
        double sg = 0.0, sgh = 0.0;
        for (index_t j = lane; j < d; j += 32) {
            const double g = w ? static_cast<double>(gr[j]) * w[j] : static_cast<double>(gr[j]);
            sg += g;
            sgh += g * hr[j];
        }
        sg = warp_sum(sg) / static_cast<double>(d);
        sgh = warp_sum(sgh) / static_cast<double>(d);
        const double rs = static_cast<double>(rstd[r]);
        for (index_t j = lane; j < d; j += 32) {
            const double g = w ? static_cast<double>(gr[j]) * w[j] : static_cast<double>(gr[j]);
            dx[r * d + j] += static_cast<T>(math::layer_norm_input_grad(rs, g, sg, static_cast<double>(hr[j]), sgh));
        }
    }
}

template <class T>
__global__ void rms_norm_forward_kernel(const T* x, const T* w, T* y, T* n, T* rstd, index_t rows, index_t d, double eps) {
    const int lane = threadIdx.x & 31;
    for (index_t r = thread_index() / 32; r < rows; r += grid_stride() / 32) {
        const T* xr = x + r * d;
        double ss = 0.0;
        for (index_t j = lane; j < d; j += 32) ss += static_cast<double>(xr[j]) * static_cast<double>(xr[j]);
        const double rs = math::inverse_rms(warp_sum(ss), static_cast<double>(d), eps);
        if (lane == 0) rstd[r] = static_cast<T>(rs);
        for (index_t j = lane; j < d; j += 32) {
            const T nv = static_cast<T>(xr[j] * rs);  // HF casts the normalised value to the input dtype first
            n[r * d + j] = nv;
            y[r * d + j] = w[j] * nv;
        }
    }
}

template <class T>
__global__ void rms_norm_input_grad_kernel(const T* dy, const T* n, const T* rstd, const T* w, index_t rows, index_t d, T* dx) {
    const int lane = threadIdx.x & 31;
    for (index_t r = thread_index() / 32; r < rows; r += grid_stride() / 32) {
        const T* gr = dy + r * d;
        const T* nr = n + r * d;
        double sgn = 0.0;
        for (index_t j = lane; j < d; j += 32) sgn += static_cast<double>(gr[j]) * w[j] * nr[j];
        sgn = warp_sum(sgn) / static_cast<double>(d);
        const double rs = static_cast<double>(rstd[r]);
        for (index_t j = lane; j < d; j += 32)
            dx[r * d + j] += static_cast<T>(math::rms_norm_input_grad(rs, static_cast<double>(gr[j]) * w[j], static_cast<double>(nr[j]), sgn));
    }
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's row normalisations (see backend/ops.hpp for each contract).
struct normalization {
    template <Scalar T>
    static void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd, index_t rows, index_t d, double eps) {
        using namespace cuda_detail;
        if (d == 0) return;
        CELLTX_CUDA_LAUNCH(norm_blocks(rows), norm_threads, 0, layer_norm_forward_kernel<T>, x, w, b, y, xhat, rstd, rows, d, eps);
    }

    template <Scalar T>
    static void layer_norm_backward(const T* dy, const T* xhat, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw, T* db) {
        using namespace cuda_detail;
        if (dx && d > 0) CELLTX_CUDA_LAUNCH(norm_blocks(rows), norm_threads, 0, layer_norm_input_grad_kernel<T>, dy, xhat, rstd, w, rows, d, dx);
        if (w) {
            column_reduce(rows, d, ColumnProduct<T>{dy, xhat, d}, dw, false);
            column_reduce(rows, d, ColumnValue<T>{dy, d}, db, false);
        }
    }

    template <Scalar T>
    static void rms_norm_forward(const T* x, const T* w, T* y, T* n, T* rstd, index_t rows, index_t d, double eps) {
        using namespace cuda_detail;
        if (d == 0) return;
        CELLTX_CUDA_LAUNCH(norm_blocks(rows), norm_threads, 0, rms_norm_forward_kernel<T>, x, w, y, n, rstd, rows, d, eps);
    }

    template <Scalar T>
    static void rms_norm_backward(const T* dy, const T* n, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw) {
        using namespace cuda_detail;
        if (dx && d > 0) CELLTX_CUDA_LAUNCH(norm_blocks(rows), norm_threads, 0, rms_norm_input_grad_kernel<T>, dy, n, rstd, w, rows, d, dx);
        column_reduce(rows, d, ColumnProduct<T>{dy, n, d}, dw, false);
    }
};

} // namespace celltx::cuda_kernels
