#pragma once
// Propagation: the seed's "future direction" (equivariant_cell_graph_transformer.md, "Enabling
// Propagation Layers"): n PostNormEncoderLayers applied to EACH sample's H_pert after the Type I
// transform, self-attention over all N gene rows of that sample (the B samples are B independent
// items of one batched attention). PyTorch would need B·H·N² probabilities per layer (357 GB at
// B=256, N=6607); the memory-efficient attention keeps it O(B·N·d).
//  - module<T,B>(cfg): cfg.propagation_layers layers, cfg.num_heads heads, width cfg.d_model, cfg.dropout;
//  - forward(H_pert [B, N, d], ctx) -> [B, N, d]; backward(dY, dH) (layer contract of nn/linear.hpp);
//  - names propagation_layers.{l}.{q_proj,k_proj,v_proj,out_proj,norm1,norm2,ffn.0,ffn.3}.{weight,bias}.
// With 0 layers it is the identity. It needs every row of every sample (RowNeed::all upstream).
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"
#include "celltx/policies/cgt_config.hpp"

namespace celltx {

struct Propagation {
    static constexpr const char* name = "Propagation";

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg) : d_(cfg.d_model) {
            require(cfg.propagation_layers >= 0, "Propagation: {} layers", cfg.propagation_layers);
            require(cfg.d_model >= 1 && cfg.num_heads >= 1 && cfg.d_model % cfg.num_heads == 0,
                    "Propagation: d_model {} is not a positive multiple of {} heads", cfg.d_model, cfg.num_heads);
            layers.reserve(static_cast<std::size_t>(cfg.propagation_layers));
            for (int l = 0; l < cfg.propagation_layers; ++l)
                layers.emplace_back(cfg.d_model, cfg.num_heads, cfg.dropout,
                                    CounterRng(0, layer_stream).substream(static_cast<std::uint64_t>(l)).stream());
        }

        int num_layers() const noexcept { return static_cast<int>(layers.size()); }

        void reset_parameters(Generator& g) {
            for (auto& l : layers) l.reset_parameters(g);
        }

        /// H_pert [B, N, d] -> [B, N, d].
        Tensor<T, B> forward(ConstView<T, B> H, const Context& ctx = {}) {
            require(H.rank() == 3 && H.size(2) == d_, "Propagation: input {} is not [B, N, {}]", H.shape(), d_);
            Tensor<T, B> h = Tensor<T, B>::copy_of(H);
            for (auto& layer : layers) h = layer.forward(h.cview(), ctx);
            return h;
        }

        void backward(ConstView<T, B> dY, TensorView<T, B> dH) {
            if (layers.empty()) {
                if (dH.data()) {
                    require(dH.shape() == dY.shape(), "Propagation::backward: dH {} does not match dY {}", dH.shape(), dY.shape());
                    ops::accumulate(B{}, dY.data(), dH.data(), dY.numel());
                }
                return;
            }
            Tensor<T, B> g;
            for (std::size_t l = layers.size(); l-- > 0;) {
                const ConstView<T, B> dy = l + 1 == layers.size() ? dY : g.cview();
                if (l == 0) {
                    layers[0].backward(dy, dH);
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
                layers[l].visit_parameters(f, join_name(prefix, "propagation_layers." + std::to_string(l) + "."));
        }

        std::vector<nn::PostNormEncoderLayer<T, B>> layers;

    private:
        static constexpr std::uint64_t layer_stream = 0x70726F70616761ull;  // "propaga"

        index_t d_ = 0;
    };
};

} // namespace celltx
