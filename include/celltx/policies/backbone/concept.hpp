#pragma once
// BackbonePolicy: what the State Transition model needs from a transformer backbone policy
// (LlamaBackbone, GPT2Backbone). A policy is a tag type with
//  - `template <Scalar T, Backend B> class module`: built from a BackboneConfig, a Layer
//    (forward(x [B, T, H], ctx) -> [B, T, H]; backward(dy, dx); visit_parameters with the Hugging
//    Face names, without the "transformer_backbone." prefix) with reset_parameters(Generator&);
//  - `name` ("llama", "gpt2");
//  - `is_frozen_key(key)`: the checkpoint keys of the frozen, zeroed embeddings the backbone never
//    uses (a loader accepts and ignores them), and `frozen_parameter_count(cfg, set_len)`, their size.
// Each requirement is its own named concept, so a wrong policy is rejected with the name of what it
// lacks ("... the concept 'celltx::BackbonePolicy<...>' evaluated to false").
#include <concepts>
#include <string_view>
#include "celltx/core/concepts.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/gpt2_block.hpp"
#include "celltx/nn/llama_layer.hpp"
#include "celltx/policies/backbone/backbone_config.hpp"
#include "celltx/policies/policy.hpp"

namespace celltx {

/// The ops the State backbones call on backend B (LLaMA and GPT-2 layers).
template <class B, class T>
concept StateBackboneOps = nn::LlamaLayerOps<B, T> && nn::GPT2BlockOps<B, T>;

namespace backbone_requirements {

template <class M>
concept module_has_reset = requires(M& m, Generator& g) { m.reset_parameters(g); };

template <class P>
concept names_frozen_embeddings = requires(std::string_view key, const BackboneConfig& c, index_t set_len) {
    { P::name } -> std::convertible_to<const char*>;
    { P::is_frozen_key(key) } -> std::same_as<bool>;
    { P::frozen_parameter_count(c, set_len) } -> std::same_as<index_t>;
};

} // namespace backbone_requirements

/// A transformer backbone policy of the State Transition model.
template <class P, class T = float, class B = cpu>
concept BackbonePolicy =
    StateBackboneOps<B, T> &&
    policy_requirements::has_module_template<P, T, B> &&
    policy_requirements::module_from_config<P, T, B, BackboneConfig> &&
    Layer<typename P::template module<T, B>, T, B> &&
    backbone_requirements::module_has_reset<typename P::template module<T, B>> &&
    backbone_requirements::names_frozen_embeddings<P>;

} // namespace celltx
