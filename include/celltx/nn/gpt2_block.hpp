#pragma once
// GPT2Block: one Hugging Face GPT2Block, bidirectional (no causal mask), pre-LN:
//   x += drop(attn(ln_1(x)));  x += drop(mlp(ln_2(x))),  mlp = c_proj(gelu_tanh(c_fc(·)))
// LayerNorm eps 1e-5, attention with biases, MLP width n_inner (4·d by default). Every projection is
// a Conv1D whose weight is stored [in, out] as in the checkpoint. state_dict names: ln_1.*,
// attn.c_attn.*, attn.c_proj.*, ln_2.*, mlp.c_fc.*, mlp.c_proj.*.
// Dropout (attn_pdrop on the probabilities, resid_pdrop after each branch) acts in training only.
// Layer contract of nn/linear.hpp; x is [B, T, d] (or [T, d]).
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/conv1d.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/layer_norm.hpp"

namespace celltx::nn {

struct GPT2BlockConfig {
    index_t d_model = 0;
    index_t num_heads = 1;
    index_t inner = 0;            ///< n_inner; 0: 4·d_model
    double eps = 1e-5;            ///< layer_norm_epsilon
    double attn_dropout = 0.0;    ///< attn_pdrop
    double resid_dropout = 0.0;   ///< resid_pdrop
    std::uint64_t stream = 0;     ///< dropout stream of this block
};

/// The ops a GPT2Block calls on backend B (its Conv1D projections are GEMMs with a bias).
template <class B, class T>
concept GPT2BlockOps = LayerNormOps<B, T> && AttentionOps<B, T> && ActivationOps<B, T> && DropoutOps<B, T>;

/// GPT2MLP: c_proj(gelu_tanh(c_fc(x))) (names mlp.c_fc.*, mlp.c_proj.*).
template <Scalar T, Backend B = cpu>
class GPT2MLP {
public:
    GPT2MLP() = default;
    GPT2MLP(index_t d, index_t inner) : c_fc(d, inner), c_proj(inner, d), act_(ActivationKind::gelu_tanh) {}

    void reset_parameters(Generator& g) {
        c_fc.reset_parameters(g);
        c_proj.reset_parameters(g);
    }
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        return c_proj.forward(act_.forward(c_fc.forward(x, ctx).cview(), ctx).cview(), ctx);
    }
    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> da(dy.shape().with_last(c_fc.out_features()));
        c_proj.backward(dy, da.view());
        Tensor<T, B> dh(da.shape());
        act_.backward(da.cview(), dh.view());
        c_fc.backward(dh.cview(), dx);
    }
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        c_fc.visit_parameters(f, prefix + "c_fc.");
        c_proj.visit_parameters(f, prefix + "c_proj.");
    }

    Conv1D<T, B> c_fc, c_proj;

private:
    Activation<T, B> act_;
};

template <Scalar T, Backend B = cpu>
class GPT2Block {
public:
    GPT2Block() = default;
    explicit GPT2Block(const GPT2BlockConfig& c)
        : ln_1(c.d_model, c.eps),
          attn(attention_config(c)),
          ln_2(c.d_model, c.eps),
          mlp(c.d_model, c.inner ? c.inner : 4 * c.d_model),
          drop_attn_(c.resid_dropout, CounterRng(0, c.stream).substream(1).stream()),
          drop_mlp_(c.resid_dropout, CounterRng(0, c.stream).substream(2).stream()),
          cfg_(c) {}

    const GPT2BlockConfig& config() const noexcept { return cfg_; }

    /// HF GPT-2's initialisation without the depth-scaled c_proj: N(0, 0.02) weights, zero biases,
    /// unit LayerNorms.
    void reset_parameters(Generator& g) {
        ln_1.reset_parameters(g);
        attn.reset_parameters(g);
        ln_2.reset_parameters(g);
        mlp.reset_parameters(g);
    }

    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        Tensor<T, B> a = drop_attn_.forward(attn.forward(ln_1.forward(x, ctx).cview(), ctx).cview(), ctx);
        ops::accumulate(B{}, x.data(), a.data(), a.numel());  // a = x + attn: the residual stream
        Tensor<T, B> y = drop_mlp_.forward(mlp.forward(ln_2.forward(a.cview(), ctx).cview(), ctx).cview(), ctx);
        ops::accumulate(B{}, a.data(), y.data(), y.numel());
        return y;
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> dm(dy.shape());
        drop_mlp_.backward(dy, dm.view());
        Tensor<T, B> dn(dy.shape());
        mlp.backward(dm.cview(), dn.view());
        Tensor<T, B> da = Tensor<T, B>::copy_of(dy);  // d(residual after attention)
        ln_2.backward(dn.cview(), da.view());
        Tensor<T, B> dd(dy.shape());
        drop_attn_.backward(da.cview(), dd.view());
        Tensor<T, B> dl(dy.shape());
        attn.backward(dd.cview(), dl.view());
        ln_1.backward(dl.cview(), dx);
        if (dx.data()) ops::accumulate(B{}, da.data(), dx.data(), da.numel());
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        ln_1.visit_parameters(f, prefix + "ln_1.");
        attn.visit_parameters(f, prefix + "attn.");
        ln_2.visit_parameters(f, prefix + "ln_2.");
        mlp.visit_parameters(f, prefix + "mlp.");
    }

    LayerNorm<T, B> ln_1;
    MultiHeadAttention<T, B> attn;
    LayerNorm<T, B> ln_2;
    GPT2MLP<T, B> mlp;

private:
    static AttentionConfig attention_config(const GPT2BlockConfig& c) {
        AttentionConfig a;
        a.d_model = c.d_model;
        a.num_heads = c.num_heads;
        a.bias = true;
        a.layout = AttentionLayout::gpt2;
        a.dropout = c.attn_dropout;
        a.dropout_stream = CounterRng(0, c.stream).substream(0).stream();
        return a;
    }

    Dropout<T, B> drop_attn_, drop_mlp_;
    GPT2BlockConfig cfg_{};
};

} // namespace celltx::nn
