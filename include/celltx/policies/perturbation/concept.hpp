#pragma once
// The concept of a CGT Type I perturbation policy (e.g. CrossAttentionTransform): a tag type with a
// nested `template <Scalar T, Backend B> class module` built from CgtConfig, with
//   PerturbedRows<T,B> forward(ConstView H_genes, const PerturbationBatch&, RowNeedSet, const GeneSetList*, const Context&);
//   void backward(const PerturbedRows<T,B>& dRows, TensorView dH_genes);
//   visit_parameters(f, prefix).
// Each requirement is its own named concept, so a wrong policy is rejected with the name of what it
// lacks, e.g. "the concept 'perturbation_requirements::computes_rows_on_demand<M, T, B>' evaluated to false".
#include <concepts>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbation_batch.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

namespace perturbation_requirements {

template <class P, class T, class B>
concept has_module_template = requires { typename P::template module<T, B>; };

template <class M>
concept module_from_config = std::constructible_from<M, const CgtConfig&>;

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
    perturbation_requirements::has_module_template<P, T, B> &&
    perturbation_requirements::module_from_config<typename P::template module<T, B>> &&
    perturbation_requirements::computes_rows_on_demand<typename P::template module<T, B>, T, B> &&
    perturbation_requirements::backward_from_rows<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

} // namespace celltx
