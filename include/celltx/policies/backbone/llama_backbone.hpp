#pragma once
// LlamaBackbone: the State Transition model's LLaMA-style bidirectional backbone (HF LlamaModel fed
// inputs_embeds, with state's NoRoPE and no causal mask): `layers` LlamaLayers, then a final RMSNorm.
// No positional signal at all, so the backbone is permutation-equivariant over the cells of a set.
// state_dict names (under "transformer_backbone."): layers.{i}.input_layernorm.weight,
// layers.{i}.self_attn.{q,k,v,o}_proj.weight, layers.{i}.post_attention_layernorm.weight,
// layers.{i}.mlp.{gate,up,down}_proj.weight, norm.weight. Checkpoints also hold the frozen, zeroed
// embed_tokens.weight [vocab, H], which inputs_embeds never reads: is_frozen_key() names it.
// Layer contract of nn/linear.hpp; x is [B, T, H].
#include <string>
#include <string_view>
#include <vector>
#include "celltx/nn/llama_layer.hpp"
#include "celltx/nn/rms_norm.hpp"
#include "celltx/policies/backbone/backbone_config.hpp"

namespace celltx {

namespace backbone {

template <Scalar T, Backend B = cpu>
class Llama {
public:
    Llama() = default;
    explicit Llama(const BackboneConfig& c) : norm(c.hidden, c.eps > 0.0 ? c.eps : 1e-6), cfg_(c) {
        require(c.hidden >= 1 && c.layers >= 0 && c.heads >= 1, "LlamaBackbone: hidden {}, layers {}, heads {} are invalid", c.hidden,
                c.layers, c.heads);
        require(c.intermediate >= 1, "LlamaBackbone: intermediate_size must be given (got {})", c.intermediate);
        for (int i = 0; i < c.layers; ++i) {
            nn::LlamaLayerConfig lc;
            lc.d_model = c.hidden;
            lc.num_heads = c.heads;
            lc.num_kv_heads = c.kv_heads;
            lc.head_dim = c.head_dim;
            lc.intermediate = c.intermediate;
            lc.eps = c.eps > 0.0 ? c.eps : 1e-6;
            lc.attn_dropout = c.attn_dropout;
            lc.stream = CounterRng(0, c.stream).substream(static_cast<std::uint64_t>(i)).stream();
            layers.emplace_back(lc);
        }
    }

    const BackboneConfig& config() const noexcept { return cfg_; }

    void reset_parameters(Generator& g) {
        for (auto& l : layers) l.reset_parameters(g);
        norm.reset_parameters(g);
    }

    /// x [B, T, H] -> [B, T, H]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        Tensor<T, B> h;
        for (std::size_t i = 0; i < layers.size(); ++i) h = layers[i].forward(i == 0 ? x : h.cview(), ctx);
        return norm.forward(layers.empty() ? x : h.cview(), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        if (layers.empty()) return norm.backward(dy, dx);
        Tensor<T, B> g(dy.shape());
        norm.backward(dy, g.view());
        for (std::size_t i = layers.size(); i-- > 1;) {
            Tensor<T, B> d(dy.shape());
            layers[i].backward(g.cview(), d.view());
            g = std::move(d);
        }
        layers[0].backward(g.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        for (std::size_t i = 0; i < layers.size(); ++i) layers[i].visit_parameters(f, prefix + "layers." + std::to_string(i) + ".");
        norm.visit_parameters(f, prefix + "norm.");
    }

    std::vector<nn::LlamaLayer<T, B>> layers;
    nn::RMSNorm<T, B> norm;

private:
    BackboneConfig cfg_{};
};

} // namespace backbone

/// The LLaMA backbone policy.
struct LlamaBackbone {
    template <Scalar T, Backend B>
    using module = backbone::Llama<T, B>;
    static constexpr const char* name = "llama";

    static bool is_frozen_key(std::string_view key) { return key == "embed_tokens.weight"; }
    /// embed_tokens: vocab_size × hidden (32000 rows by default, as LlamaConfig).
    static index_t frozen_parameter_count(const BackboneConfig& c, index_t /*set_len*/) {
        return (c.vocab_size ? c.vocab_size : 32000) * c.hidden;
    }
};

} // namespace celltx
