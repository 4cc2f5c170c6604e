#pragma once
// Gradient checks of the CGT's Type I / Type II policy modules (double precision), on top of
// testing::gradcheck: the perturbation transform's forward(H_genes, batch, need, sets, ctx) with
// H_genes as the input, and a readout's forward(h_cls, rows, batch, ctx) with h_cls and the rows'
// values as inputs (dRows is pre-filled with the checker's input-gradient buffer, so a readout that
// overwrites instead of adding into dRows fails). randomize_parameters gives every parameter random
// values (+1 on norm weights), so zero biases or unit scales hide no gradient.
#include <cstdint>
#include <string_view>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/testing/gradcheck.hpp"

namespace celltx::testing {

/// N(0, scale²) values for every parameter of a double module (+1 on norm weights), from `seed`.
template <class M>
void randomize_parameters(M& m, std::uint64_t seed, double scale = 0.4) {
    CounterRng rng(seed, 3);
    std::uint64_t k = 0;
    m.visit_parameters([&](std::string_view name, Parameter<double>& p) {
        const bool norm_weight = name.find("norm") != std::string_view::npos && name.ends_with("weight");
        for (index_t i = 0; i < p.numel(); ++i) p.value[i] = (norm_weight ? 1.0 : 0.0) + scale * rng.substream(k).normal(static_cast<std::uint64_t>(i));
        ++k;
    });
}

/// A perturbation transform module: input H_genes [N, d] (given), output the computed rows' values.
template <class Transform>
GradcheckResult gradcheck_transform(Transform& transform, Tensor<double>& H, const PerturbationBatch& batch, RowNeedSet need,
                                    const GeneSetList* sets = nullptr, const Context& ctx = {}, const GradcheckOptions& opt = {}) {
    PerturbedRows<double> layout;
    return gradcheck(
        [&] {
            layout = transform.forward(H.cview(), batch, need, sets, ctx);
            return layout.values;
        },
        [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
            PerturbedRows<double> d_rows = layout.zeros_like();
            copy(dy, d_rows.values.view());
            transform.backward(d_rows, dxs[0]);
        },
        {&H}, parameters_of(transform), opt);
}

/// A Type II readout module: inputs h_cls [d] and the values of the rows `need` asks for over N
/// genes of width d (random, from `seed`); output the readout's prediction.
template <class Readout>
GradcheckResult gradcheck_readout(Readout& head, const PerturbationBatch& batch, index_t N, index_t d, RowNeedSet need,
                                  const GeneSetList* sets = nullptr, const Context& ctx = {}, std::uint64_t seed = 21,
                                  const GradcheckOptions& opt = {}) {
    PerturbedRows<double> rows = PerturbedRows<double>::layout(batch, N, d, need, sets);
    Tensor<double> values = random_tensor(rows.values.shape(), seed);
    Tensor<double> h_cls = random_tensor(Shape{d}, seed + 1);
    return gradcheck(
        [&] {
            rows.values = values;
            return head.forward(h_cls.cview(), rows, batch, ctx);
        },
        [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
            PerturbedRows<double> d_rows = rows.zeros_like();
            copy(ConstView<double>(dxs[1]), d_rows.values.view());
            head.backward(dy, dxs[0], d_rows);
            copy(d_rows.values.cview(), dxs[1]);
        },
        {&h_cls, &values}, parameters_of(head), opt);
}

} // namespace celltx::testing
