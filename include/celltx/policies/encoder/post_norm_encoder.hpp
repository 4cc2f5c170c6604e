#pragma once
// PostNormEncoder: the CGT encoder policy (spec "Encoder"): L PostNormEncoderLayers over the N+1
// tokens [CLS, genes], no final norm, optionally graph-regularised (GraphRegularizer).
//  - module<T,B>(cfg): cfg.num_layers layers of width cfg.d_model, cfg.num_heads heads, cfg.dropout;
//  - forward(X [N+1, d], ctx, reg) -> H [N+1, d]; with reg, each regularised layer's graph value is
//    evaluated right after that layer's forward (from its LSE and edge scores) and summed into
//    graph_loss(); reg must outlive the following backward and is not evaluated again meanwhile;
//  - backward(dH, dX, dgraph = 1) ASSIGNS parameter gradients and ADDS dL/dX, for
//    L = <dH, H> + dgraph·graph_loss (the graph gradient is fused into each layer's attention backward);
//  - names transformer_layers.{l}.{q_proj,k_proj,v_proj,out_proj,norm1,norm2,ffn.0,ffn.3}.{weight,bias}.
// Each layer's dropout streams derive from its index, so no two layers share a mask.
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"

namespace celltx {

struct PostNormEncoder {
    static constexpr const char* name = "PostNormEncoder";

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg) : d_(cfg.d_model) {
            require(cfg.num_layers >= 0, "PostNormEncoder: {} layers", cfg.num_layers);
            require(cfg.d_model >= 1 && cfg.num_heads >= 1 && cfg.d_model % cfg.num_heads == 0,
                    "PostNormEncoder: d_model {} is not a positive multiple of {} heads", cfg.d_model, cfg.num_heads);
            layers.reserve(static_cast<std::size_t>(cfg.num_layers));
            for (int l = 0; l < cfg.num_layers; ++l)
                layers.emplace_back(cfg.d_model, cfg.num_heads, cfg.dropout,
                                    CounterRng(0, layer_stream).substream(static_cast<std::uint64_t>(l)).stream());
            graph_layers_.assign(layers.size(), false);
        }

        int num_layers() const noexcept { return static_cast<int>(layers.size()); }
        index_t d_model() const noexcept { return d_; }

        void reset_parameters(Generator& g) {
            for (auto& l : layers) l.reset_parameters(g);
        }

        /// X [N+1, d] (or [1, N+1, d]) -> H of the same shape; row 0 is the CLS token.
        Tensor<T, B> forward(ConstView<T, B> X, const Context& ctx = {}, GraphRegularizer<T>* reg = nullptr) {
            require((X.rank() == 2 || X.rank() == 3) && X.shape().last() == d_, "PostNormEncoder: input {} is not [N+1, {}]", X.shape(), d_);
            reg_ = reg;
            graph_loss_ = 0.0;
            graph_layers_.assign(layers.size(), false);
            if (layers.empty()) return Tensor<T, B>::copy_of(X);
            Tensor<T, B> h;
            for (std::size_t l = 0; l < layers.size(); ++l) {
                h = layers[l].forward(l == 0 ? X : h.cview(), ctx);
                if (reg && reg->regularizes(static_cast<int>(l))) {
                    graph_loss_ += reg->evaluate(static_cast<int>(l), layers[l].attn, ctx);
                    graph_layers_[l] = true;
                }
            }
            return h;
        }

        /// Σ over layers of the weighted graph terms of the last forward (0 without a regulariser).
        double graph_loss() const noexcept { return graph_loss_; }

        void backward(ConstView<T, B> dH, TensorView<T, B> dX, double dgraph = 1.0) {
            if (layers.empty()) {
                if (dX.data()) {
                    require(dX.shape() == dH.shape(), "PostNormEncoder::backward: dX {} does not match dH {}", dX.shape(), dH.shape());
                    ops::accumulate(B{}, dH.data(), dX.data(), dH.numel());
                }
                return;
            }
            Tensor<T, B> g;
            for (std::size_t l = layers.size(); l-- > 0;) {
                if (graph_layers_[l] && reg_ && dgraph != 0.0) layers[l].set_graph_hook(reg_->hook(static_cast<int>(l), dgraph));
                const ConstView<T, B> dy = l + 1 == layers.size() ? dH : g.cview();
                if (l == 0) {
                    layers[0].backward(dy, dX);
                } else {
                    Tensor<T, B> dprev(dy.shape());
                    layers[l].backward(dy, dprev.view());
                    g = std::move(dprev);
                }
            }
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            for (std::size_t l = 0; l < layers.size(); ++l)
                layers[l].visit_parameters(f, join_name(prefix, "transformer_layers." + std::to_string(l) + "."));
        }

        std::vector<nn::PostNormEncoderLayer<T, B>> layers;

    private:
        static constexpr std::uint64_t layer_stream = 0x656E636F646572ull;  // "encoder"

        index_t d_ = 0;
        GraphRegularizer<T>* reg_ = nullptr;
        double graph_loss_ = 0.0;
        std::vector<bool> graph_layers_;  // which layers the last forward evaluated a graph term on
    };
};

} // namespace celltx
