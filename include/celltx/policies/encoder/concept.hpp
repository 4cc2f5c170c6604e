#pragma once
// Concepts for the encoder-side policies of the Cell Graph Transformer. A policy is a tag type with
// a nested `template <Scalar T, Backend B> class module`; each requirement is its own small concept,
// so a wrong policy is rejected naming what it lacks, e.g. (GCC) "template constraint failure ...
// EncoderPolicy<E, float, cpu> ... note: the required expression 'm.graph_loss()' is invalid".
//  - EncoderPolicy: module(const CgtConfig&); forward(ConstView X, const Context&, GraphRegularizer<T, B>*)
//    -> Tensor; graph_loss() -> double; backward(ConstView dH, TensorView dX); visit_parameters;
//    backend B provides CgtEncoderOps.
//  - PropagationPolicy: module(const CgtConfig&); forward(ConstView H_pert, const Context&) -> Tensor;
//    backward(ConstView, TensorView); visit_parameters; backend B provides the encoder layers' ops.
#include <concepts>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"
#include "celltx/policies/policy.hpp"

namespace celltx {

/// The ops the CGT's encoder policies call on backend B: encoder layers and the graph regulariser.
template <class B, class T>
concept CgtEncoderOps = nn::PostNormEncoderLayerOps<B, T> && GraphRegularizerOps<B, T>;

// The individual requirements (own namespace: other policy families define their own).
namespace encoder_requirements {

template <class M, class T, class B>
concept encoder_has_forward = requires(M& m, ConstView<T, B> x, const Context& ctx, GraphRegularizer<T, B>* reg) {
    { m.forward(x, ctx, reg) } -> std::same_as<Tensor<T, B>>;
};

template <class M>
concept encoder_has_graph_loss = requires(const M& m) {
    { m.graph_loss() } -> std::convertible_to<double>;
};

template <class M, class T, class B>
concept module_has_backward = requires(M& m, ConstView<T, B> dy, TensorView<T, B> dx) { m.backward(dy, dx); };

template <class M, class T, class B>
concept propagation_has_forward = requires(M& m, ConstView<T, B> x, const Context& ctx) {
    { m.forward(x, ctx) } -> std::same_as<Tensor<T, B>>;
};

} // namespace encoder_requirements

/// An encoder policy (e.g. PostNormEncoder): X [N+1, d] -> H [N+1, d] with an optional graph term.
template <class P, class T = float, class B = cpu>
concept EncoderPolicy =
    CgtEncoderOps<B, T> &&
    policy_requirements::has_module_template<P, T, B> &&
    policy_requirements::module_from_config<P, T, B, CgtConfig> &&
    encoder_requirements::encoder_has_forward<typename P::template module<T, B>, T, B> &&
    encoder_requirements::encoder_has_graph_loss<typename P::template module<T, B>> &&
    encoder_requirements::module_has_backward<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

/// A propagation policy (e.g. Propagation): H_pert [B, N, d] -> [B, N, d].
template <class P, class T = float, class B = cpu>
concept PropagationPolicy =
    nn::PostNormEncoderLayerOps<B, T> &&
    policy_requirements::has_module_template<P, T, B> &&
    policy_requirements::module_from_config<P, T, B, CgtConfig> &&
    encoder_requirements::propagation_has_forward<typename P::template module<T, B>, T, B> &&
    encoder_requirements::module_has_backward<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

} // namespace celltx
