#pragma once
// Row-broadcast helpers used by layers with a bias (Linear, LayerNorm, ...).
#include "celltx/backend/cpu/eigen.hpp"

namespace celltx::ops {

/// Y[r, :] += b for every row r of a [rows, n] matrix.
template <Scalar T>
void add_row_vector(cpu, T* Y, const T* b, index_t rows, index_t n) {
    cpu_detail::mat(Y, rows, n, n).rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, n);
}

/// out[:] (=, or += when accumulate) the column sums of a [rows, n] matrix.
template <Scalar T>
void column_sum(cpu, const T* X, index_t rows, index_t n, T* out, bool accumulate = false) {
    auto o = cpu_detail::mat(out, 1, n, n);
    if (rows == 0) {
        if (!accumulate) o.setZero();
        return;
    }
    if (accumulate) o += cpu_detail::mat(X, rows, n, n).colwise().sum();
    else o = cpu_detail::mat(X, rows, n, n).colwise().sum();
}

} // namespace celltx::ops
