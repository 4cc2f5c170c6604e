#pragma once
// The glue between a Cell Graph Transformer's readouts and its multi-task loss: the gradient of
// Σ_t w_t ℓ_t w.r.t. every prediction, from the labels of each readout.
#include <array>
#include <cstddef>
#include <span>
#include <vector>
#include "celltx/core/tensor.hpp"
#include "celltx/models/cgt_types.hpp"
#include "celltx/policies/loss/multitask_loss.hpp"

namespace celltx::cgt_detail {

/// d(Σ_t w_t ℓ_t)/d prediction for every prediction, from a MultiTaskLoss; returns the loss value.
template <Scalar T, Backend B, std::size_t K>
double multitask_gradients(const std::array<ConstView<T, B>, K>& preds, std::span<const CgtTarget<T, B>> targets,
                           loss::MultiTaskLoss<T, B>& loss, std::array<Tensor<T, B>, K>& dpreds) {
    require(targets.size() == K, "CellGraphTransformer: {} targets for {} readouts", targets.size(), K);
    require(loss.tasks().size() == K, "CellGraphTransformer: the loss has {} tasks for {} readouts", loss.tasks().size(), K);
    std::vector<loss::TaskTarget<T, B>> tt;
    tt.reserve(K);
    for (std::size_t k = 0; k < K; ++k) tt.push_back({preds[k], targets[k].label, targets[k].mask});
    const Tensor<T, B> value = loss.forward(std::span<const loss::TaskTarget<T, B>>(tt));
    std::vector<TensorView<T, B>> views;
    for (std::size_t k = 0; k < K; ++k) {
        dpreds[k] = Tensor<T, B>(preds[k].shape());
        views.push_back(dpreds[k].view());
    }
    const T one = T(1);
    loss.backward(from_host<T, B>(&one, Shape{}).cview(), std::span<const TensorView<T, B>>(views));
    return static_cast<double>(read_value(value.cview()));
}


} // namespace celltx::cgt_detail
