#pragma once
// The input [h_CLS ‖ z_b] that the GI, fitness and non-equivariant heads feed their MLP: h_CLS
// broadcast to every sample, and the gradient that flows back into it (the sum over samples).
#include "celltx/backend/ops.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::readout_detail {

/// x [rows, 2d] with every row's first d columns = h_cls (the rest unspecified, for the caller to fill).
template <Scalar T, Backend B>
Tensor<T, B> broadcast_cls(ConstView<T, B> h_cls, index_t rows, index_t d) {
    Tensor<T, B> x = Tensor<T, B>::uninitialized(Shape{rows, 2 * d});
    ops::copy_2d(B{}, x.data(), 2 * d, h_cls.data(), index_t{0}, rows, d);
    return x;
}

/// dh_cls += Σ_rows dx[row, :d] for dx [rows, 2d].
template <Scalar T, Backend B>
void add_cls_gradient(const Tensor<T, B>& dx, index_t rows, index_t d, TensorView<T, B> dh_cls) {
    Tensor<T, B> first = Tensor<T, B>::uninitialized(Shape{rows, d});
    ops::copy_2d(B{}, first.data(), d, dx.data(), 2 * d, rows, d);
    ops::column_sum(B{}, first.data(), rows, d, dh_cls.data(), true);
}

} // namespace celltx::readout_detail
