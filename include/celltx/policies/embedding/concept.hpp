#pragma once
// EmbeddingPolicy: what the Cell Graph Transformer needs from its embedding policy (e.g.
// GeneEmbedding): a tag type with `template <Scalar T, Backend B> class module` (policies/policy.hpp)
// that is built from a CgtConfig, produces X [N+1, d] from forward(const Context&), takes dX in
// backward(ConstView) and names its parameters; backend B provides the ops it calls
// (CgtEmbeddingOps). Each requirement is its own small concept, so a wrong policy is rejected naming
// what it lacks (GCC: "note: the required expression 'm.forward(ctx)' is invalid").
#include <concepts>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/policy.hpp"

namespace celltx {

/// The ops the CGT's embedding policies call on backend B (GeneEmbedding's feature projection).
template <class B, class T>
concept CgtEmbeddingOps = nn::LinearOps<B, T> && nn::LayerNormOps<B, T> && nn::ActivationOps<B, T> && nn::DropoutOps<B, T>;

namespace embedding_requirements {

template <class M, class T, class B>
concept embedding_has_forward = requires(M& m, const Context& ctx) {
    { m.forward(ctx) } -> std::same_as<Tensor<T, B>>;
};

template <class M, class T, class B>
concept embedding_has_backward = requires(M& m, ConstView<T, B> dx) { m.backward(dx); };

} // namespace embedding_requirements

template <class P, class T = float, class B = cpu>
concept EmbeddingPolicy =
    CgtEmbeddingOps<B, T> &&
    policy_requirements::has_module_template<P, T, B> &&
    policy_requirements::module_from_config<P, T, B, CgtConfig> &&
    embedding_requirements::embedding_has_forward<typename P::template module<T, B>, T, B> &&
    embedding_requirements::embedding_has_backward<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

} // namespace celltx
