#pragma once
// Eigen maps over tensor memory: every CPU GEMM goes through these (no copies).
#include <Eigen/Core>
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;

/// rows x cols row-major matrix at `p` with leading dimension `ld` (>= cols).
template <class T>
MatrixMap<T> mat(T* p, index_t rows, index_t cols, index_t ld) { return {p, rows, cols, Eigen::OuterStride<>(ld)}; }
template <class T>
ConstMatrixMap<T> mat(const T* p, index_t rows, index_t cols, index_t ld) { return {p, rows, cols, Eigen::OuterStride<>(ld)}; }

/// A view as a [rows, last] matrix.
template <class T>
auto as_matrix(TensorView<T> v) { return mat(v.data(), v.shape().rows(), v.shape().last(), v.shape().last()); }
template <class T>
auto as_matrix(ConstView<T> v) { return mat(v.data(), v.shape().rows(), v.shape().last(), v.shape().last()); }

} // namespace celltx::cpu_detail
