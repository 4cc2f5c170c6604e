#pragma once
// Element-wise CUDA kernels; compiled by nvcc only (included from backend/cuda/kernels.cuh).
#include "celltx/backend/cuda/memory.hpp"

namespace celltx::cuda_detail {

template <class T>
__global__ void add_row_vector_kernel(T* Y, const T* b, index_t rows, index_t n) {
    const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < rows * n) Y[i] += b[i % n];
}

// One thread per column: a deterministic sum in row order (no atomics, so results repeat exactly).
template <class T>
__global__ void column_sum_kernel(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
    const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= n) return;
    T s = 0;
    for (index_t r = 0; r < rows; ++r) s += X[r * n + j];
    out[j] = accumulate ? out[j] + s : s;
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The element-wise ops the CUDA backend implements so far (see backend/ops.hpp for the contracts).
struct elementwise {
    template <Scalar T>
    static void add_row_vector(T* Y, const T* b, index_t rows, index_t n) {
        const index_t total = rows * n;
        if (total == 0) return;
        cuda_detail::add_row_vector_kernel<<<static_cast<unsigned>((total + 255) / 256), 256>>>(Y, b, rows, n);
        cuda_check(cudaGetLastError(), "add_row_vector_kernel");
    }

    template <Scalar T>
    static void column_sum(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
        if (n == 0) return;
        cuda_detail::column_sum_kernel<<<static_cast<unsigned>((n + 127) / 128), 128>>>(X, rows, n, out, accumulate);
        cuda_check(cudaGetLastError(), "column_sum_kernel");
    }
};

} // namespace celltx::cuda_kernels
