#pragma once
// Row gather / scatter-add for nn::Embedding on the CPU.
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/parallel.hpp"

namespace celltx::ops {

/// out[i, :] = W[idx[i], :] for n host indices (already range-checked).
template <Scalar T>
void embedding_gather(cpu, const T* W, const index_t* idx, index_t n, index_t dim, T* out) {
    cpu_detail::parallel_for(n, [&](index_t i) {
        cpu_detail::mat(out + i * dim, 1, dim, dim) = cpu_detail::mat(W + idx[i] * dim, 1, dim, dim);
    }, 256);
}

/// dW = 0, then dW[idx[i], :] += dy[i, :] in index order (serial: duplicate indices must not race).
template <Scalar T>
void embedding_scatter_add(cpu, const T* dy, const index_t* idx, index_t n, index_t num, index_t dim, T* dW) {
    cpu_detail::mat(dW, num, dim, dim).setZero();
    for (index_t i = 0; i < n; ++i) cpu_detail::mat(dW + idx[i] * dim, 1, dim, dim) += cpu_detail::mat(dy + i * dim, 1, dim, dim);
}

} // namespace celltx::ops
