#pragma once
// LatentToGeneDecoder: state's LatentToGeneDecoder (non-residual variant), which maps the model's latent
// predictions to gene expression: for each hidden width h_k
//   Linear(in, h_k), LayerNorm(h_k), GELU, Dropout(p)
// then Linear(h_last, genes) and ReLU, as one nn.Sequential called `decoder`. state_dict names:
// "decoder.{4k}.*" (Linear k), "decoder.{4k+1}.*" (LayerNorm k), "decoder.{4n}.*" (the last Linear).
// Dropout k draws from CounterRng(0, stream).substream(k). Layer contract of nn/linear.hpp.
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/nn/activation.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"

namespace celltx::nn {

/// The ops a LatentToGeneDecoder calls on backend B.
template <class B, class T>
concept LatentToGeneDecoderOps = LinearOps<B, T> && LayerNormOps<B, T> && ActivationOps<B, T> && DropoutOps<B, T>;

template <Scalar T, Backend B = cpu>
class LatentToGeneDecoder {
public:
    LatentToGeneDecoder() = default;
    LatentToGeneDecoder(index_t latent_dim, index_t gene_dim, const std::vector<index_t>& hidden_dims = {1024, 1024, 512},
                double dropout = 0.1, std::uint64_t stream = 0)
        : relu_(ActivationKind::relu) {
        require(latent_dim >= 1 && gene_dim >= 1, "LatentToGeneDecoder: needs positive sizes (latent {}, genes {})", latent_dim, gene_dim);
        index_t in = latent_dim;
        for (std::size_t k = 0; k < hidden_dims.size(); ++k) {
            require(hidden_dims[k] >= 1, "LatentToGeneDecoder: hidden width {} (layer {}) must be positive", hidden_dims[k], k);
            linears.emplace_back(in, hidden_dims[k]);
            norms.emplace_back(hidden_dims[k]);
            gelus_.emplace_back(ActivationKind::gelu);
            dropouts_.emplace_back(dropout, CounterRng(0, stream).substream(k).stream());
            in = hidden_dims[k];
        }
        linears.emplace_back(in, gene_dim);
    }

    index_t latent_dim() const noexcept { return linears.front().in_features(); }
    index_t gene_dim() const noexcept { return linears.back().out_features(); }

    void reset_parameters(Generator& g) {
        for (std::size_t k = 0; k < linears.size(); ++k) {
            linears[k].reset_parameters(g);
            if (k < norms.size()) norms[k].reset_parameters(g);
        }
    }

    /// x [..., latent] -> [..., genes]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        Tensor<T, B> h = Tensor<T, B>::copy_of(x);
        for (std::size_t k = 0; k < norms.size(); ++k) {
            h = linears[k].forward(h.cview(), ctx);
            h = norms[k].forward(h.cview(), ctx);
            h = gelus_[k].forward(h.cview(), ctx);
            h = dropouts_[k].forward(h.cview(), ctx);
        }
        return relu_.forward(linears.back().forward(h.cview(), ctx).cview(), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> g(dy.shape());
        relu_.backward(dy, g.view());
        for (std::size_t k = norms.size(); k-- > 0;) {
            const Shape s = dropouts_[k].last_shape();
            Tensor<T, B> a(s), b(s), c(s), d(s);
            linears[k + 1].backward(g.cview(), a.view());
            dropouts_[k].backward(a.cview(), b.view());
            gelus_[k].backward(b.cview(), c.view());
            norms[k].backward(c.cview(), d.view());
            g = std::move(d);
        }
        linears.front().backward(g.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        for (std::size_t k = 0; k < linears.size(); ++k) {
            linears[k].visit_parameters(f, prefix + "decoder." + std::to_string(4 * k) + ".");
            if (k < norms.size()) norms[k].visit_parameters(f, prefix + "decoder." + std::to_string(4 * k + 1) + ".");
        }
    }

    std::vector<Linear<T, B>> linears;  ///< hidden_dims.size() + 1
    std::vector<LayerNorm<T, B>> norms;

private:
    std::vector<Activation<T, B>> gelus_;
    std::vector<Dropout<T, B>> dropouts_;
    Activation<T, B> relu_;
};

} // namespace celltx::nn
