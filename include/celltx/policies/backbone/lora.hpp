#pragma once
// LoRA on the State Transition model's backbone (state's apply_lora, PEFT): adapters beside the
// attention projections of every layer — LLaMA q_proj, k_proj, v_proj, o_proj; GPT-2 attn.c_attn
// and attn.c_proj (not mlp.c_proj) — built by nn::MultiHeadAttention::add_lora (nn/lora.hpp).
//  - apply_lora(model or backbone, config, g): fresh adapters (B = 0, so the function is unchanged);
//  - merge_lora(...): W += scaling · B A in every projection, adapters dropped (merge_and_unload);
//  - is_lora_parameter(name): the adapter weights' names ("...lora_A.weight", "...lora_B.weight").
// Which weights train is the optimiser's parameter list: train/lora.hpp gives the list PEFT
// trains (the adapters and everything outside the backbone), so the backbone's base weights stay
// frozen without any change to the layers.
#include <string_view>
#include <utility>
#include "celltx/nn/lora.hpp"
#include "celltx/policies/backbone/gpt2_backbone.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"

namespace celltx {

/// f(attention) for every self-attention of a backbone.
template <Scalar T, Backend B, class F>
void for_each_self_attention(backbone::Llama<T, B>& b, F&& f) {
    for (auto& l : b.layers) f(l.self_attn);
}
template <Scalar T, Backend B, class F>
void for_each_self_attention(backbone::GPT2<T, B>& b, F&& f) {
    for (auto& h : b.h) f(h.attn);
}

namespace lora_detail {
/// A visitor that does nothing: the concept names a type rather than a lambda, because nvcc's front
/// end rejects a lambda in a requires-expression (every candidate then fails deduction).
struct IgnoreAttention {
    template <class A>
    void operator()(A&) const noexcept {}
};
} // namespace lora_detail

template <class Bb>
concept LoraBackbone = requires(Bb& b, lora_detail::IgnoreAttention f) { for_each_self_attention(b, f); };

/// Fresh adapters on every attention projection of the backbone (layer i draws dropout stream i).
template <LoraBackbone Bb>
void apply_lora(Bb& b, const nn::LoraConfig& c, Generator& g) {
    std::uint64_t i = 0;
    for_each_self_attention(b, [&](auto& attn) {
        nn::LoraConfig ci = c;
        ci.stream = CounterRng(0, c.stream).substream(i++).stream();
        attn.add_lora(ci, g);
    });
}
template <LoraBackbone Bb>
void merge_lora(Bb& b) {
    for_each_self_attention(b, [](auto& attn) { attn.merge_lora(); });
}
template <LoraBackbone Bb>
bool has_lora(Bb& b) {
    bool any = false;
    for_each_self_attention(b, [&](auto& attn) { any = any || attn.has_lora(); });
    return any;
}

/// The same on a model's transformer_backbone (StateTransition, Pseudobulk).
template <class M>
    requires requires(M& m) { m.transformer_backbone; } && LoraBackbone<decltype(std::declval<M&>().transformer_backbone)>
void apply_lora(M& m, const nn::LoraConfig& c, Generator& g) {
    apply_lora(m.transformer_backbone, c, g);
}
template <class M>
    requires requires(M& m) { m.transformer_backbone; } && LoraBackbone<decltype(std::declval<M&>().transformer_backbone)>
void merge_lora(M& m) {
    merge_lora(m.transformer_backbone);
}
template <class M>
    requires requires(M& m) { m.transformer_backbone; } && LoraBackbone<decltype(std::declval<M&>().transformer_backbone)>
bool has_lora(M& m) {
    return has_lora(m.transformer_backbone);
}

/// Whether a parameter name is an adapter weight.
inline bool is_lora_parameter(std::string_view name) {
    return name.find(".lora_A.") != std::string_view::npos || name.find(".lora_B.") != std::string_view::npos ||
           name.starts_with("lora_A.") || name.starts_with("lora_B.");
}

} // namespace celltx
