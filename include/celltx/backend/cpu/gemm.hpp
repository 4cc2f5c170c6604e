#pragma once
// Row-major GEMM on the CPU through Eigen (which threads it with OpenMP, or hands it to OpenBLAS
// under EIGEN_USE_BLAS).
#include "celltx/backend/cpu/eigen.hpp"

namespace celltx::ops {

/// C[m,n] = alpha * op(A) * op(B) + beta * C, all row-major; op(X) = X or Xᵀ.
/// A is [m,k] (or [k,m] when trans_a), B is [k,n] (or [n,k] when trans_b). beta == 0 ignores C.
template <Scalar T>
void gemm(cpu, bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc) {
    using namespace cpu_detail;
    auto c = mat(C, m, n, ldc);
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (beta == T(0)) c.setZero(); else c *= beta;
        return;
    }
    auto run = [&](const auto& a, const auto& b) {
        if (beta == T(0)) c.noalias() = alpha * (a * b);
        else {
            if (beta != T(1)) c *= beta;
            c.noalias() += alpha * (a * b);
        }
    };
    const auto a = mat(A, trans_a ? k : m, trans_a ? m : k, lda);
    const auto b = mat(B, trans_b ? n : k, trans_b ? k : n, ldb);
    if (!trans_a && !trans_b) run(a, b);
    else if (!trans_a && trans_b) run(a, b.transpose());
    else if (trans_a && !trans_b) run(a.transpose(), b);
    else run(a.transpose(), b.transpose());
}

} // namespace celltx::ops
