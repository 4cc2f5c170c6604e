#pragma once
// The concept of a CGT Type I perturbation policy (e.g. CrossAttentionTransform): a tag type with a
// nested `template <Scalar T, Backend B> class module` built from CgtConfig, with
//   PerturbedRows<T,B> forward(ConstView H_genes, const PerturbationBatch&, RowNeedSet, const GeneSetList*, const Context&);
//   void backward(const PerturbedRows<T,B>& dRows, TensorView dH_genes);
//   visit_parameters(f, prefix).
// Each requirement is its own named concept, so a wrong policy is rejected with the name of what it
// lacks, e.g. "the concept 'perturbation_requirements::computes_rows_on_demand<M, T, B>' evaluated to false".
#include <concepts>
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/policy.hpp"

namespace celltx {

/// The ops the CGT's Type I transforms call on backend B: the ragged cross-attention, its gathers and
/// scatters, row-addressed dropout, the projections, norms and FFN, and the propagation layers.
template <class B, class T>
concept CgtPerturbationOps =
    nn::LinearOps<B, T> && nn::LayerNormOps<B, T> && nn::ActivationOps<B, T> && ops::provides_gather_rows<B, T> &&
    ops::provides_scatter_add_rows<B, T> && ops::provides_ragged_cross_attention_forward<B, T> &&
    ops::provides_ragged_cross_attention_backward<B, T> && ops::provides_row_dropout<B, T> && ops::provides_scale_rows<B, T> &&
    ops::provides_accumulate<B, T> && nn::PostNormEncoderLayerOps<B, T>;

namespace perturbation_requirements {

template <class M, class T, class B>
concept computes_rows_on_demand = requires(M& m, ConstView<T, B> H, const PerturbationBatch& batch, RowNeedSet need,
                                           const GeneSetList* sets, const Context& ctx) {
    { m.forward(H, batch, need, sets, ctx) } -> std::same_as<PerturbedRows<T, B>>;
};

template <class M, class T, class B>
concept backward_from_rows = requires(M& m, const PerturbedRows<T, B>& drows, TensorView<T, B> dH) { m.backward(drows, dH); };

} // namespace perturbation_requirements

template <class P, class T = float, class B = cpu>
concept PerturbationPolicy =
    CgtPerturbationOps<B, T> &&
    policy_requirements::has_module_template<P, T, B> &&
    policy_requirements::module_from_config<P, T, B, CgtConfig> &&
    perturbation_requirements::computes_rows_on_demand<typename P::template module<T, B>, T, B> &&
    perturbation_requirements::backward_from_rows<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

/// Whether a perturbation policy needs every row of H_pert (WithPropagation).
template <class P>
constexpr bool perturbation_needs_all_rows() {
    if constexpr (requires { { P::needs_all_rows } -> std::convertible_to<bool>; }) return P::needs_all_rows;
    else return false;
}

} // namespace celltx
