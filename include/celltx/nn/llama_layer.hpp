#pragma once
// LlamaLayer: one Hugging Face LlamaDecoderLayer as the State Transition model runs it, bidirectional
// and without rotary embedding (state's NoRoPE: cos = 1, sin = 0):
//   x += self_attn(input_layernorm(x));  x += mlp(post_attention_layernorm(x))
// RMSNorm (eps 1e-6) in wide precision, q/k/v/o without bias, grouped KV heads, a head width that may
// differ from d/heads, SwiGLU MLP. state_dict names: input_layernorm.weight,
// self_attn.{q,k,v,o}_proj.weight, post_attention_layernorm.weight, mlp.{gate,up,down}_proj.weight.
// Layer contract of nn/linear.hpp; x is [B, T, d] (or [T, d]).
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/rms_norm.hpp"
#include "celltx/nn/swiglu.hpp"

namespace celltx::nn {

struct LlamaLayerConfig {
    index_t d_model = 0;
    index_t num_heads = 1;
    index_t num_kv_heads = 0;     ///< 0: num_heads
    index_t head_dim = 0;         ///< 0: d_model / num_heads
    index_t intermediate = 0;     ///< SwiGLU width (intermediate_size)
    double eps = 1e-6;            ///< rms_norm_eps
    double attn_dropout = 0.0;    ///< attention_dropout (training only)
    std::uint64_t stream = 0;     ///< dropout stream of this layer
};

/// The ops a LlamaLayer calls on backend B.
template <class B, class T>
concept LlamaLayerOps = RMSNormOps<B, T> && AttentionOps<B, T> && SwiGLUOps<B, T> && ops::provides_accumulate<B, T>;

template <Scalar T, Backend B = cpu>
class LlamaLayer {
public:
    LlamaLayer() = default;
    explicit LlamaLayer(const LlamaLayerConfig& c)
        : input_layernorm(c.d_model, c.eps),
          self_attn(attention_config(c)),
          post_attention_layernorm(c.d_model, c.eps),
          mlp(c.d_model, c.intermediate),
          cfg_(c) {
        require(c.intermediate >= 1, "LlamaLayer: intermediate size {} must be positive", c.intermediate);
    }

    const LlamaLayerConfig& config() const noexcept { return cfg_; }

    /// nn.Linear's default for the projections, ones for the norms (HF's own init differs; State
    /// checkpoints are loaded, not re-initialised).
    void reset_parameters(Generator& g) {
        input_layernorm.reset_parameters(g);
        self_attn.reset_parameters(g);
        post_attention_layernorm.reset_parameters(g);
        mlp.reset_parameters(g);
    }

    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        // The normed inputs are handed over: attention and MLP keep them as their saved inputs.
        Tensor<T, B> a = self_attn.forward(input_layernorm.forward(x, ctx), ctx);
        ops::accumulate(B{}, x.data(), a.data(), a.numel());  // a = x + attn: the residual stream
        Tensor<T, B> y = mlp.forward(post_attention_layernorm.forward(a.cview(), ctx), ctx);
        ops::accumulate(B{}, a.data(), y.data(), y.numel());
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        // d(residual after attention) = dy + post_norm'ᵀ mlp'ᵀ dy
        Tensor<T, B> dm(dy.shape());
        mlp.backward(dy, dm.view());
        Tensor<T, B> da = Tensor<T, B>::copy_of(dy);
        post_attention_layernorm.backward(dm.cview(), da.view());
        Tensor<T, B> dn(dy.shape());
        self_attn.backward(da.cview(), dn.view());
        input_layernorm.backward(dn.cview(), dx);
        if (dx.data()) ops::accumulate(B{}, da.data(), dx.data(), da.numel());
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        input_layernorm.visit_parameters(f, prefix + "input_layernorm.");
        self_attn.visit_parameters(f, prefix + "self_attn.");
        post_attention_layernorm.visit_parameters(f, prefix + "post_attention_layernorm.");
        mlp.visit_parameters(f, prefix + "mlp.");
    }

    RMSNorm<T, B> input_layernorm;
    MultiHeadAttention<T, B> self_attn;
    RMSNorm<T, B> post_attention_layernorm;
    SwiGLU<T, B> mlp;

private:
    static AttentionConfig attention_config(const LlamaLayerConfig& c) {
        AttentionConfig a;
        a.d_model = c.d_model;
        a.num_heads = c.num_heads;
        a.num_kv_heads = c.num_kv_heads;
        a.head_dim = c.head_dim;
        a.bias = false;
        a.layout = AttentionLayout::llama;
        a.dropout = c.attn_dropout;
        a.dropout_stream = c.stream;
        return a;
    }

    LlamaLayerConfig cfg_{};
};

} // namespace celltx::nn
