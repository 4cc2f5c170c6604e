#pragma once
// Concepts for the CGT Type II readouts. A readout policy is a tag type with
//   static constexpr RowNeed rows;                          // which rows of H_pert it reads
//   template <Scalar T, Backend B> class module;            // the stateful part
// whose module is built from CgtConfig and has
//   Tensor forward(ConstView h_cls, const PerturbedRows&, const PerturbationBatch&, const Context&);
//   void backward(ConstView dY, TensorView dh_cls, PerturbedRows& dRows);   // adds into dRows.values
//   visit_parameters(f, prefix).
// The non-equivariant head reads H_genes instead (no Type I): NonEquivariantHeadPolicy.
// Each requirement is its own named concept, so a wrong policy is rejected with the name of what it
// lacks, e.g. "the concept 'readout_requirements::declares_row_need<R>' evaluated to false".
#include <concepts>
#include <type_traits>
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/policy.hpp"

namespace celltx {

/// The ops the CGT's readouts call on backend B: their MLPs, the [h_CLS ‖ z] input and its
/// gradient, and the pooling of rows into samples or gene sets.
template <class B, class T>
concept CgtReadoutOps = nn::MlpOps<B, T> && ops::provides_copy_2d<B, T> && ops::provides_column_sum<B, T> &&
                        ops::provides_segment_pool<B, T> && ops::provides_segment_pool_backward<B, T>;

namespace readout_requirements {

/// R::rows is a RowNeed known at compile time (the transform's row union is computed from it).
template <class R>
concept declares_row_need = requires {
    { R::rows } -> std::convertible_to<RowNeed>;
    typename std::integral_constant<unsigned, static_cast<unsigned>(R::rows)>;
};

template <class M, class T, class B>
concept reads_perturbed_rows = requires(M& m, ConstView<T, B> h_cls, const PerturbedRows<T, B>& rows, const PerturbationBatch& batch,
                                        const Context& ctx) {
    { m.forward(h_cls, rows, batch, ctx) } -> std::same_as<Tensor<T, B>>;
};

template <class M, class T, class B>
concept adds_into_row_gradients = requires(M& m, ConstView<T, B> dy, TensorView<T, B> dh_cls, PerturbedRows<T, B>& drows) {
    m.backward(dy, dh_cls, drows);
};

/// The non-equivariant marker: the head reads H_genes (and replaces the perturbation transform).
template <class R>
concept marked_reads_h_genes = requires {
    { R::reads_h_genes } -> std::convertible_to<bool>;
    requires R::reads_h_genes;
};

template <class M, class T, class B>
concept reads_h_genes = requires(M& m, ConstView<T, B> h_cls, ConstView<T, B> H, const PerturbationBatch& batch, const Context& ctx) {
    { m.forward(h_cls, H, batch, ctx) } -> std::same_as<Tensor<T, B>>;
};

template <class M, class T, class B>
concept adds_into_h_genes_gradient = requires(M& m, ConstView<T, B> dy, TensorView<T, B> dh_cls, TensorView<T, B> dH) {
    m.backward(dy, dh_cls, dH);
};

} // namespace readout_requirements

/// A Type II readout (GeneInteractionReadout, FitnessReadout, ExpressionReadout, GeneSetReadout).
template <class R, class T = float, class B = cpu>
concept ReadoutPolicy =
    CgtReadoutOps<B, T> &&
    readout_requirements::declares_row_need<R> &&
    policy_requirements::has_module_template<R, T, B> &&
    policy_requirements::module_from_config<R, T, B, CgtConfig> &&
    readout_requirements::reads_perturbed_rows<typename R::template module<T, B>, T, B> &&
    readout_requirements::adds_into_row_gradients<typename R::template module<T, B>, T, B> &&
    ParameterVisitable<typename R::template module<T, B>, T, B>;

/// A head that reads H_genes directly (NonEquivariantHead): composed without a perturbation transform.
template <class R, class T = float, class B = cpu>
concept NonEquivariantHeadPolicy =
    CgtReadoutOps<B, T> && nn::AttentionOps<B, T> &&
    readout_requirements::marked_reads_h_genes<R> &&
    policy_requirements::has_module_template<R, T, B> &&
    policy_requirements::module_from_config<R, T, B, CgtConfig> &&
    readout_requirements::reads_h_genes<typename R::template module<T, B>, T, B> &&
    readout_requirements::adds_into_h_genes_gradient<typename R::template module<T, B>, T, B> &&
    ParameterVisitable<typename R::template module<T, B>, T, B>;

/// The union of the rows a list of readouts reads: what the transform must compute.
template <class... Readouts>
inline constexpr RowNeedSet rows_needed_by = (RowNeedSet{} | ... | RowNeedSet(Readouts::rows));

} // namespace celltx
