#pragma once
// EmbeddingPolicy: what the Cell Graph Transformer needs from its embedding policy (e.g.
// GeneEmbedding): a tag type with `template <Scalar T, Backend B> class module` that is built from a
// CgtConfig, produces X [N+1, d] from forward(const Context&), takes dX in backward(ConstView) and
// names its parameters. Each requirement is its own small concept, so a wrong policy is rejected
// naming what it lacks (GCC: "note: the required expression 'm.forward(ctx)' is invalid").
#include <concepts>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/cgt_config.hpp"

namespace celltx {

namespace embedding_requirements {

/// P names a module template: P::template module<T, B> is a type.
template <class P, class T, class B>
concept has_module_template = requires { typename P::template module<T, B>; };

/// The module is built from the shared model configuration.
template <class M>
concept module_from_config = std::constructible_from<M, const CgtConfig&>;

template <class M, class T, class B>
concept embedding_has_forward = requires(M& m, const Context& ctx) {
    { m.forward(ctx) } -> std::same_as<Tensor<T, B>>;
};

template <class M, class T, class B>
concept embedding_has_backward = requires(M& m, ConstView<T, B> dx) { m.backward(dx); };

} // namespace embedding_requirements

template <class P, class T = float, class B = cpu>
concept EmbeddingPolicy =
    embedding_requirements::has_module_template<P, T, B> &&
    embedding_requirements::module_from_config<typename P::template module<T, B>> &&
    embedding_requirements::embedding_has_forward<typename P::template module<T, B>, T, B> &&
    embedding_requirements::embedding_has_backward<typename P::template module<T, B>, T, B> &&
    ParameterVisitable<typename P::template module<T, B>, T, B>;

} // namespace celltx
