#pragma once
// PostNormEncoder: the CGT encoder policy (docs/cell_graph_transformer.md): L PostNormEncoderLayers over the N+1
// tokens [CLS, genes], no final norm, optionally graph-regularised (GraphRegularizer).
//  - module<T,B>(cfg): cfg.num_layers layers of width cfg.d_model, cfg.num_heads heads, cfg.dropout
//    (an nn::PostNormEncoderStack);
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
#include "celltx/nn/post_norm_encoder_stack.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"

namespace celltx {

struct PostNormEncoder {
    static constexpr const char* name = "PostNormEncoder";

    template <Scalar T, Backend B = cpu>
    class module : public nn::PostNormEncoderStack<T, B> {
        using stack = nn::PostNormEncoderStack<T, B>;

    public:
        module() = default;
        explicit module(const CgtConfig& cfg) : stack(cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.dropout, layer_stream) {
            graph_layers_.assign(this->layers.size(), false);
        }

        /// X [N+1, d] (or [1, N+1, d]) -> H of the same shape; row 0 is the CLS token. The graph
        /// term is a training loss: under Context::inference() it is not evaluated (graph_loss() 0).
        Tensor<T, B> forward(ConstView<T, B> X, const Context& ctx = {}, GraphRegularizer<T, B>* reg = nullptr) {
            require((X.rank() == 2 || X.rank() == 3) && X.shape().last() == this->d_model(), "PostNormEncoder: input {} is not [N+1, {}]",
                    X.shape(), this->d_model());
            if (!ctx.keep_for_backward) reg = nullptr;
            reg_ = reg;
            graph_loss_ = 0.0;
            graph_layers_.assign(this->layers.size(), false);
            return stack::forward(X, ctx, [&](int l, nn::PostNormEncoderLayer<T, B>& layer) {
                if (reg && reg->regularizes(l)) {
                    graph_loss_ += reg->evaluate(l, layer.attn, ctx);
                    graph_layers_[static_cast<std::size_t>(l)] = true;
                }
            });
        }

        /// Σ over layers of the weighted graph terms of the last forward (0 without a regulariser).
        double graph_loss() const noexcept { return graph_loss_; }

        void backward(ConstView<T, B> dH, TensorView<T, B> dX, double dgraph = 1.0) {
            stack::backward(dH, dX, [&](int l, nn::PostNormEncoderLayer<T, B>& layer) {
                if (graph_layers_[static_cast<std::size_t>(l)] && reg_ && dgraph != 0.0) layer.set_graph_hook(reg_->hook(l, dgraph));
            });
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            stack::visit_parameters(f, join_name(prefix, "transformer_layers."));
        }

    private:
        static constexpr std::uint64_t layer_stream = 0x656E636F646572ull;  // "encoder"

        GraphRegularizer<T, B>* reg_ = nullptr;
        double graph_loss_ = 0.0;
        std::vector<bool> graph_layers_;  // which layers the last forward evaluated a graph term on
    };
};

} // namespace celltx
