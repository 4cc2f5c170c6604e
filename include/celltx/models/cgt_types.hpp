#pragma once
// The inputs and outputs of the Cell Graph Transformer models: what forward returns (CgtOutputs),
// a readout's label (CgtTarget), the terms of the training loss (CgtLossValues), and train_step's result.
#include <array>
#include <cstddef>
#include "celltx/core/tensor.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

/// What forward returns (K readouts).
template <Scalar T, Backend B, std::size_t K>
struct CgtOutputs {
    Tensor<T, B> h_cls;                     ///< [d]
    Tensor<T, B> H_genes;                   ///< [N, d]
    PerturbedRows<T, B> H_pert;             ///< the rows of H_pert the transform computed
    std::array<Tensor<T, B>, K> predictions;  ///< readout k's prediction, in the order of the model type
    double graph_loss = 0.0;                ///< the weighted graph term (0 without graphs)
};

/// The label (and optional mask) of one readout's prediction, as loss::TaskTarget without the prediction.
template <Scalar T, Backend B = cpu>
struct CgtTarget {
    ConstView<T, B> label;  ///< the prediction's shape, NaN = missing
    ConstView<T, B> mask{};  ///< optional: [B] or the prediction's shape, 0 = missing
};

/// The terms of the training loss: total = phenotype + graph_weight·graph.
struct CgtLossValues {
    double total = 0.0, phenotype = 0.0, graph = 0.0;
};

/// What train_step returns.
template <class Outputs>
struct CgtStep {
    CgtLossValues loss;
    Outputs outputs;
};

} // namespace celltx
