#pragma once
// Row-major GEMM on the GPU through cuBLAS (column-major): a row-major C = op(A) op(B) is the
// column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the operands are swapped instead of transposed.
#include <type_traits>
#include <cublas_v2.h>
#include "celltx/backend/cuda/memory.hpp"

namespace celltx::cuda_detail {

inline void cublas_check(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) throw Error(fmt::format(fmt::runtime("cuBLAS error in {}: status {}"), what, static_cast<int>(s)));
}

/// One cuBLAS handle per host thread, created on first use.
inline cublasHandle_t cublas_handle() {
    struct Holder {
        cublasHandle_t h = nullptr;
        Holder() { cublas_check(cublasCreate(&h), "cublasCreate"); }
        ~Holder() { if (h) cublasDestroy(h); }
    };
    thread_local Holder holder;
    return holder.h;
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// cuBLAS products (see backend/ops.hpp for the contract).
struct dense {
    template <Scalar T>
    static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, const T* B,
                     index_t ldb, T beta, T* C, index_t ldc) {
        if (m == 0 || n == 0) return;
        auto h = cuda_detail::cublas_handle();
        const auto opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
        if constexpr (std::is_same_v<T, float>)
            cuda_detail::cublas_check(cublasSgemm(h, opb, opa, M, N, K, &alpha, B, static_cast<int>(ldb), A, static_cast<int>(lda), &beta,
                                                  C, static_cast<int>(ldc)), "cublasSgemm");
        else
            cuda_detail::cublas_check(cublasDgemm(h, opb, opa, M, N, K, &alpha, B, static_cast<int>(ldb), A, static_cast<int>(lda), &beta,
                                                  C, static_cast<int>(ldc)), "cublasDgemm");
    }
};

} // namespace celltx::cuda_kernels
