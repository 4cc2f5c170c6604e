#pragma once
// PostNormEncoderStack: L PostNormEncoderLayers applied in turn, the one layer loop behind the CGT's
// encoder (over the N+1 wild-type tokens) and its propagation layers (over each sample's N rows).
//  - forward(x, ctx, after_layer) -> the last layer's output; after_layer(l, layer) runs right after
//    layer l's forward (the graph regulariser evaluates its term there);
//  - backward(dy, dx, before_layer) runs before_layer(l, layer) right before layer l's backward (to
//    fuse a graph term into it), then the layer contract of nn/linear.hpp;
//  - names {l}.{q_proj,k_proj,v_proj,out_proj,norm1,norm2,ffn.0,ffn.3}.{weight,bias} under a prefix.
// With 0 layers it is the identity. Layer l's dropout streams derive from (stream, l), so no two
// layers, and no two stacks built with different streams, share a mask.
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"

namespace celltx::nn {

template <Scalar T, Backend B = cpu>
class PostNormEncoderStack {
public:
    /// The default per-layer callback: does nothing.
    struct NoCallback {
        void operator()(int, PostNormEncoderLayer<T, B>&) const noexcept {}
    };

    PostNormEncoderStack() = default;
    PostNormEncoderStack(int num_layers, index_t d_model, index_t num_heads, double dropout, std::uint64_t stream) : d_(d_model) {
        require(num_layers >= 0, "PostNormEncoderStack: {} layers", num_layers);
        require(d_model >= 1 && num_heads >= 1 && d_model % num_heads == 0,
                "PostNormEncoderStack: d_model {} is not a positive multiple of {} heads", d_model, num_heads);
        layers.reserve(static_cast<std::size_t>(num_layers));
        for (int l = 0; l < num_layers; ++l)
            layers.emplace_back(d_model, num_heads, dropout, CounterRng(0, stream).substream(static_cast<std::uint64_t>(l)).stream());
    }

    int num_layers() const noexcept { return static_cast<int>(layers.size()); }
    index_t d_model() const noexcept { return d_; }

    void reset_parameters(Generator& g) {
        for (auto& l : layers) l.reset_parameters(g);
    }

    /// x [T, d] or [B, T, d] -> the same shape.
    template <class AfterLayer = NoCallback>
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}, AfterLayer&& after_layer = {}) {
        if (layers.empty()) return Tensor<T, B>::copy_of(x);
        Tensor<T, B> h;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            h = layers[l].forward(l == 0 ? x : h.cview(), ctx);
            after_layer(static_cast<int>(l), layers[l]);
        }
        return h;
    }

    template <class BeforeLayer = NoCallback>
    void backward(ConstView<T, B> dy, TensorView<T, B> dx, BeforeLayer&& before_layer = {}) {
        if (layers.empty()) {
            if (dx.data()) {
                require(dx.shape() == dy.shape(), "PostNormEncoderStack::backward: dx {} does not match dy {}", dx.shape(), dy.shape());
                ops::accumulate(B{}, dy.data(), dx.data(), dy.numel());
            }
            return;
        }
        Tensor<T, B> g;
        for (std::size_t l = layers.size(); l-- > 0;) {
            before_layer(static_cast<int>(l), layers[l]);
            const ConstView<T, B> d = l + 1 == layers.size() ? dy : g.cview();
            if (l == 0) {
                layers[0].backward(d, dx);
            } else {
                Tensor<T, B> dprev(d.shape());
                layers[l].backward(d, dprev.view());
                g = std::move(dprev);
            }
        }
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        for (std::size_t l = 0; l < layers.size(); ++l) layers[l].visit_parameters(f, join_name(prefix, std::to_string(l) + "."));
    }

    std::vector<PostNormEncoderLayer<T, B>> layers;

private:
    index_t d_ = 0;
};

} // namespace celltx::nn
