#pragma once
// The one policy style, shared by every slot of every model: a policy is a tag type with a nested
// `template <Scalar T, Backend B> class module` (or alias) built from its model's configuration.
// The tag holds what is known at compile time (names, row needs, option kinds); the module holds
// parameters and saved state. Each family's concept (EmbeddingPolicy, ReadoutPolicy, BackbonePolicy,
// ...) starts with the ops its modules call on B, then these shared requirements, then its own.
#include <concepts>
#include "celltx/core/backend.hpp"

namespace celltx {

namespace policy_requirements {

/// P names a module template: P::template module<T, B> is a type.
template <class P, class T, class B>
concept has_module_template = requires { typename P::template module<T, B>; };

/// The module is built from the model's configuration.
template <class P, class T, class B, class Config>
concept module_from_config = std::constructible_from<typename P::template module<T, B>, const Config&>;

} // namespace policy_requirements

/// The module a policy contributes to a model of scalar T on backend B.
template <class P, class T, class B>
using policy_module = typename P::template module<T, B>;

} // namespace celltx
