#pragma once
// PostNormEncoderLayer: the CGT encoder layer (the PyTorch reference's EncoderLayer; docs/cell_graph_transformer.md), POST-LayerNorm:
//   x = LN1(x + Dropout(out_proj(attn(x))));  x = LN2(x + Dropout(FFN(x)))
// attn = MultiHeadAttention (separate q/k/v/out_proj with bias, memory-efficient, dropout on the
// probabilities); FFN = Mlp(d, d, 4d, 2, p, gelu) (Linear → exact GELU → Dropout → Linear).
// Names under a prefix: q_proj, k_proj, v_proj, out_proj, norm1, norm2, ffn.0, ffn.3 (.weight/.bias).
// Each dropout use (probabilities, residual 1, residual 2, inside the FFN) draws from its own stream
// derived from `stream`, so no two uses share a mask (PyTorch's one reused Dropout module also draws
// a fresh mask per call). Input [T, d] or [B, T, d] (B independent sequences, self-attention within
// each). Layer contract of nn/linear.hpp; set_graph_hook() fuses a graph term into the NEXT backward.
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/mlp.hpp"

namespace celltx::nn {

/// The ops a PostNormEncoderLayer calls on backend B.
template <class B, class T>
concept PostNormEncoderLayerOps = AttentionOps<B, T> && LayerNormOps<B, T> && MlpOps<B, T> && DropoutOps<B, T>;

template <Scalar T, Backend B = cpu>
class PostNormEncoderLayer {
public:
    PostNormEncoderLayer() = default;
    /// d_model divisible by num_heads; dropout p in [0, 1); `stream` distinguishes this layer's masks.
    PostNormEncoderLayer(index_t d_model, index_t num_heads, double dropout = 0.1, std::uint64_t stream = 0)
        : attn(attention_config(d_model, num_heads, dropout, stream)),
          norm1(d_model),
          norm2(d_model),
          ffn(d_model, d_model, 4 * d_model, 2, dropout, ActivationKind::gelu, substream(stream, 3)),
          drop1_(dropout, substream(stream, 1)),
          drop2_(dropout, substream(stream, 2)),
          d_(d_model) {}

    index_t d_model() const noexcept { return d_; }
    index_t num_heads() const noexcept { return attn.num_heads(); }

    /// PyTorch's initialisation of every submodule (nn.Linear default, LayerNorm 1/0).
    void reset_parameters(Generator& g) {
        attn.reset_parameters(g);
        norm1.reset_parameters(g);
        norm2.reset_parameters(g);
        ffn.reset_parameters(g);
    }

    /// x [T, d] or [B, T, d] -> same shape.
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        require((x.rank() == 2 || x.rank() == 3) && x.shape().last() == d_,
                "PostNormEncoderLayer: input {} is not [T, {}] or [B, T, {}]", x.shape(), d_, d_);
        Tensor<T, B> a = attn.forward(x, ctx);
        Tensor<T, B> r = drop1_.forward(a.cview(), ctx);
        ops::accumulate(B{}, x.data(), r.data(), r.numel());  // r = x + Dropout(attn(x))
        Tensor<T, B> h = norm1.forward(r.cview(), ctx);
        Tensor<T, B> f = ffn.forward(h.cview(), ctx);
        Tensor<T, B> r2 = drop2_.forward(f.cview(), ctx);
        ops::accumulate(B{}, h.data(), r2.data(), r2.numel());  // r2 = h + Dropout(FFN(h))
        return norm2.forward(r2.cview(), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        const Shape s = dy.shape();
        Tensor<T, B> dr2(s);
        norm2.backward(dy, dr2.view());
        Tensor<T, B> dh = Tensor<T, B>::copy_of(dr2.cview());  // residual branch of the FFN block
        Tensor<T, B> df(s);
        drop2_.backward(dr2.cview(), df.view());
        ffn.backward(df.cview(), dh.view());
        Tensor<T, B> dr(s);
        norm1.backward(dh.cview(), dr.view());
        Tensor<T, B> da(s);
        drop1_.backward(dr.cview(), da.view());
        attn.backward(da.cview(), dx);  // graph hook (if any) is consumed here
        if (dx.data()) ops::accumulate(B{}, dr.data(), dx.data(), dr.numel());  // residual branch of the attention block
    }

    /// The graph-regularisation term for the next backward only (see nn/attention.hpp).
    void set_graph_hook(ops::GraphHook<T> hook) { attn.set_graph_hook(std::move(hook)); }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        attn.visit_parameters(f, prefix);
        norm1.visit_parameters(f, join_name(prefix, "norm1."));
        norm2.visit_parameters(f, join_name(prefix, "norm2."));
        ffn.visit_parameters(f, join_name(prefix, "ffn."));
    }

    MultiHeadAttention<T, B> attn;  ///< public: the graph regulariser reads its LSE and edge scores
    LayerNorm<T, B> norm1, norm2;
    Mlp<T, B> ffn;

private:
    static std::uint64_t substream(std::uint64_t stream, std::uint64_t k) { return CounterRng(0, stream).substream(k).stream(); }
    static AttentionConfig attention_config(index_t d, index_t heads, double p, std::uint64_t stream) {
        AttentionConfig c;
        c.d_model = d;
        c.num_heads = heads;
        c.layout = AttentionLayout::separate;
        c.dropout = p;
        c.dropout_stream = substream(stream, 0);
        return c;
    }

    Dropout<T, B> drop1_, drop2_;
    index_t d_ = 0;
};

} // namespace celltx::nn
