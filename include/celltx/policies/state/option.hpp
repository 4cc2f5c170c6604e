#pragma once
// StateOption: the optional parts of a State Transition model, chosen at compile time as a list of
// tag types (ConfidenceToken, GeneDecoder, BatchEmbedding; any order, each at most once). An option
// tag names its kind and the module it adds (`template <Scalar T, Backend B> using module`); the
// model holds that module only when the option is listed (otherwise an empty Absent member).
#include <concepts>
#include <string>
#include <type_traits>
#include "celltx/core/backend.hpp"

namespace celltx {

enum class StateOptionKind { confidence_token, gene_decoder, batch_embedding };

/// A State Transition option tag: `option` says which part it adds, `module<T, B>` is that part.
template <class P>
concept StateOption = requires {
    { P::option } -> std::convertible_to<StateOptionKind>;
    typename P::template module<float, cpu>;
};

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
