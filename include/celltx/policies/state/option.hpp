#pragma once
// StateOption: the optional parts of a State Transition model, chosen at compile time as a list of
// tag types (ConfidenceToken, GeneDecoder, BatchEmbedding; any order, each at most once). An option
// tag names its kind and the module it adds (`template <Scalar T, Backend B> module`, built from the
// StateConfig, policies/policy.hpp); the model holds that module only when the option is listed
// (otherwise an empty Absent member). Whether a part exists is the type; its sizes are the config's
// (batch_dim, gene_dim, decoder_hidden), which only the option's module reads.
#include <concepts>
#include <string>
#include <type_traits>
#include "celltx/backend/ops.hpp"
#include "celltx/core/backend.hpp"
#include "celltx/nn/confidence_head.hpp"
#include "celltx/nn/embedding.hpp"
#include "celltx/nn/latent_to_gene_decoder.hpp"
#include "celltx/policies/policy.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx {

enum class StateOptionKind { confidence_token, gene_decoder, batch_embedding };

/// The ops the State options' modules call on backend B.
template <class B, class T>
concept StateOptionOps = nn::EmbeddingOps<B, T> && nn::ConfidenceHeadOps<B, T> && nn::LatentToGeneDecoderOps<B, T> &&
                         ops::provides_copy_2d<B, T> && ops::provides_column_sum<B, T> && ops::provides_accumulate<B, T>;

/// A State Transition option tag: `option` says which part it adds, `module<T, B>` is that part.
template <class P, class T = float, class B = cpu>
concept StateOption = StateOptionOps<B, T> && requires {
    { P::option } -> std::convertible_to<StateOptionKind>;
} && policy_requirements::has_module_template<P, T, B> && policy_requirements::module_from_config<P, T, B, StateConfig>;

namespace state_detail {
template <class O, class... Os>
inline constexpr int option_count = (0 + ... + (std::same_as<O, Os> ? 1 : 0));
} // namespace state_detail

/// No option is listed twice.
template <class... Os>
concept DistinctStateOptions = ((state_detail::option_count<Os, Os...> == 1) && ...);

/// Whether option O is in the list.
template <class O, class... Os>
inline constexpr bool has_state_option = (std::same_as<O, Os> || ...);

namespace state_detail {
/// Stands in for an option's module when the option is not listed.
struct Absent {
    template <class F>
    void visit_parameters(F&&, const std::string& = "") {}
};
template <bool On, class M>
using optional_module = std::conditional_t<On, M, Absent>;
} // namespace state_detail

} // namespace celltx
