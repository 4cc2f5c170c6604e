#pragma once
// Row-major GEMMs on the GPU through cuBLAS (column-major): a row-major C = op(A) op(B) is the
// column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the operands are swapped instead of transposed. FP32 runs in
// full FP32 (cuBLAS's default math mode: no TF32), as the CPU does.
#include <type_traits>
#include <cublas_v2.h>
#include "celltx/backend/cuda/launch.cuh"

namespace celltx::cuda_detail {

/// One cuBLAS handle per host thread, created on first use, bound to cuda_stream().
inline cublasHandle_t cublas_handle() {
    struct Holder {
        cublasHandle_t h = nullptr;
        Holder() {
            CELLTX_CUBLAS_CHECK(cublasCreate(&h));
            CELLTX_CUBLAS_CHECK(cublasSetStream(h, cuda_stream()));
        }
        ~Holder() {
            if (h) cublasDestroy(h);
        }
    };
    thread_local Holder holder;
    return holder.h;
}

/// C[r·ldc + c] *= beta for a [rows, cols] block (beta == 0 writes exact zeros).
template <class T>
__global__ void scale_block_kernel(T* C, index_t ldc, index_t rows, index_t cols, T beta) {
    for (index_t i = thread_index(); i < rows * cols; i += grid_stride()) {
        T& c = C[(i / cols) * ldc + i % cols];
        c = beta == T(0) ? T(0) : c * beta;
    }
}

inline int cublas_ld(index_t ld) { return static_cast<int>(std::max<index_t>(ld, 1)); }

/// `count` row-major products C_i = alpha·op(A_i)·op(B_i) + beta·C_i, operand i at base + i·stride.
template <class T>
void gemm_strided_batched(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, index_t stride_a,
                          const T* B, index_t ldb, index_t stride_b, T beta, T* C, index_t ldc, index_t stride_c, index_t count) {
    if (m == 0 || n == 0 || count == 0) return;
    if (k == 0) {  // cuBLAS wants lda >= 1 rows; the product is empty: C = beta·C
        for (index_t i = 0; i < count; ++i)
            CELLTX_CUDA_LAUNCH(blocks_for(m * n, 256), 256, 0, scale_block_kernel<T>, C + i * stride_c, ldc, m, n, beta);
        return;
    }
    const auto opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    if constexpr (std::is_same_v<T, float>)
        CELLTX_CUBLAS_CHECK(cublasSgemmStridedBatched(cublas_handle(), opb, opa, M, N, K, &alpha, B, cublas_ld(ldb), stride_b, A, cublas_ld(lda),
                                                      stride_a, &beta, C, cublas_ld(ldc), stride_c, static_cast<int>(count)));
    else
        CELLTX_CUBLAS_CHECK(cublasDgemmStridedBatched(cublas_handle(), opb, opa, M, N, K, &alpha, B, cublas_ld(ldb), stride_b, A, cublas_ld(lda),
                                                      stride_a, &beta, C, cublas_ld(ldc), stride_c, static_cast<int>(count)));
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// cuBLAS products (see backend/ops.hpp for the contract).
struct dense {
    template <Scalar T>
    static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, const T* B, index_t ldb,
                     T beta, T* C, index_t ldc) {
        require(m >= 0 && n >= 0 && k >= 0, "gemm: negative size ({} x {} x {})", m, n, k);
        if (m == 0 || n == 0) return;
        if (k == 0) {
            cuda_detail::gemm_strided_batched<T>(trans_a, trans_b, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
            return;
        }
        const auto opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
        auto h = cuda_detail::cublas_handle();
        using cuda_detail::cublas_ld;
        if constexpr (std::is_same_v<T, float>)
            CELLTX_CUBLAS_CHECK(cublasSgemm(h, opb, opa, M, N, K, &alpha, B, cublas_ld(ldb), A, cublas_ld(lda), &beta, C, cublas_ld(ldc)));
        else
            CELLTX_CUBLAS_CHECK(cublasDgemm(h, opb, opa, M, N, K, &alpha, B, cublas_ld(ldb), A, cublas_ld(lda), &beta, C, cublas_ld(ldc)));
    }
};

} // namespace celltx::cuda_kernels
