#pragma once
// WithPropagation<Inner, Prop>: a perturbation policy that runs Inner's Type I transform over every
// row of H_pert, then Prop's layers (self-attention over the N rows of each sample, the design's
// "propagation layers"; memory-efficient, O(B·N·d)). Presence is the type; the number of layers is
// CgtConfig::propagation_layers, read by Prop's module only (0: the identity).
//  - forward(H_genes, batch, need, sets, ctx) -> all rows, propagated; backward(dRows, dH_genes);
//  - names: Inner's, then Prop's (propagation_layers.{l}.*).
#include <concepts>
#include <string>
#include <utility>
#include "celltx/core/context.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/encoder/concept.hpp"
#include "celltx/policies/encoder/propagation.hpp"
#include "celltx/policies/perturbation/concept.hpp"
#include "celltx/policies/perturbation/cross_attention_transform.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

/// Perturbation policy: Inner's Type I transform, then Prop's layers (self-attention over the N rows
/// of each sample, memory-efficient: O(B·N·d)). It needs every row, whatever the readouts read.
template <class Inner = CrossAttentionTransform, class Prop = Propagation>
struct WithPropagation {
    static constexpr const char* name = "WithPropagation";
    static constexpr bool needs_all_rows = true;

    template <Scalar T, Backend B = cpu>
    class module {
            public:
        module() = default;
        explicit module(const CgtConfig& cfg) : transform(cfg), propagation(cfg) {}

        void reset_parameters(Generator& g) {
            if constexpr (requires { transform.reset_parameters(g); }) transform.reset_parameters(g);
            if constexpr (requires { propagation.reset_parameters(g); }) propagation.reset_parameters(g);
        }

        /// All rows of H_pert (whatever `need` says), each sample then propagated.
        PerturbedRows<T, B> forward(ConstView<T, B> H, const PerturbationBatch& batch, RowNeedSet need, const GeneSetList* sets = nullptr,
                                    const Context& ctx = {}) {
            PerturbedRows<T, B> rows = transform.forward(H, batch, need | RowNeed::all, sets, ctx);
            Tensor<T, B> y = propagation.forward(rows.values.cview().reshaped(Shape{rows.batch, rows.num_genes, rows.d}), ctx);
            rows.values = std::move(y.reshape(Shape{rows.rows(), rows.d}));
            return rows;
        }

        void backward(const PerturbedRows<T, B>& dRows, TensorView<T, B> dH) {
            require(dRows.all_rows, "WithPropagation::backward: dRows must have the all-rows layout of the forward");
            const Shape s{dRows.batch, dRows.num_genes, dRows.d};
            PerturbedRows<T, B> inner = dRows.without_values();
            inner.values = Tensor<T, B>(s);
            propagation.backward(dRows.values.cview().reshaped(s), inner.values.view());
            inner.values.reshape(Shape{dRows.rows(), dRows.d});
            transform.backward(inner, dH);
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            transform.visit_parameters(f, prefix);
            propagation.visit_parameters(f, prefix);
        }

        typename Inner::template module<T, B> transform;
        typename Prop::template module<T, B> propagation;
    };
};


} // namespace celltx
