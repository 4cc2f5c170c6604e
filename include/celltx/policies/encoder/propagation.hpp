#pragma once
// Propagation: the design's "future direction" (docs/cell_graph_transformer.md, "Enabling
// Propagation Layers"): n PostNormEncoderLayers applied to EACH sample's H_pert after the Type I
// transform, self-attention over all N gene rows of that sample (the B samples are B independent
// items of one batched attention). PyTorch would need B·H·N² probabilities per layer (357 GB at
// B=256, N=6607); the memory-efficient attention keeps it O(B·N·d).
//  - module<T,B>(cfg): cfg.propagation_layers layers, cfg.num_heads heads, width cfg.d_model, cfg.dropout
//    (an nn::PostNormEncoderStack);
//  - forward(H_pert [B, N, d], ctx) -> [B, N, d]; backward(dY, dH) (layer contract of nn/linear.hpp);
//  - names propagation_layers.{l}.{q_proj,k_proj,v_proj,out_proj,norm1,norm2,ffn.0,ffn.3}.{weight,bias}.
// With 0 layers it is the identity. It needs every row of every sample (RowNeed::all upstream).
#include <cstdint>
#include <string>
#include "celltx/core/context.hpp"
#include "celltx/nn/post_norm_encoder_stack.hpp"
#include "celltx/policies/cgt_config.hpp"

namespace celltx {

struct Propagation {
    static constexpr const char* name = "Propagation";

    template <Scalar T, Backend B = cpu>
    class module : public nn::PostNormEncoderStack<T, B> {
        using stack = nn::PostNormEncoderStack<T, B>;

    public:
        module() = default;
        explicit module(const CgtConfig& cfg) : stack(cfg.propagation_layers, cfg.d_model, cfg.num_heads, cfg.dropout, layer_stream) {}

        /// H_pert [B, N, d] -> [B, N, d].
        Tensor<T, B> forward(ConstView<T, B> H, const Context& ctx = {}) {
            require(H.rank() == 3 && H.size(2) == this->d_model(), "Propagation: input {} is not [B, N, {}]", H.shape(), this->d_model());
            return stack::forward(H, ctx);
        }

        void backward(ConstView<T, B> dY, TensorView<T, B> dH) { stack::backward(dY, dH); }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            stack::visit_parameters(f, join_name(prefix, "propagation_layers."));
        }

    private:
        static constexpr std::uint64_t layer_stream = 0x70726F70616761ull;  // "propaga"
    };
};

} // namespace celltx
