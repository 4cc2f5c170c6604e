#pragma once
// CgtEncoderBase<T, B, Embedding, Encoder>: the wild-type half of both Cell Graph Transformer models
// (CellGraphTransformer, NonEquivariantCellGraphTransformer): the embedding policy, the encoder
// policy and the graph regulariser, run once per step on the N+1 tokens [CLS, genes] (batch 1).
//  - add_graph(GeneGraph, {layers, head, λ}, name): a biological graph regularising one head;
//  - encode(ctx) -> H [N+1, d]; encode_backward(dH, dgraph) -> every embedding and encoder gradient.
// Heavy members are defined out of class, so models/cgt_instantiations.hpp can compile them once.
#include <string>
#include <utility>
#include "celltx/core/context.hpp"
#include "celltx/core/gene_graph.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/embedding/concept.hpp"
#include "celltx/policies/encoder/concept.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"

namespace celltx {

namespace cgt_detail {

/// Row sampling seeded by the model's seed.
inline GraphRegularizerOptions default_graph_options(const CgtConfig& cfg) {
    GraphRegularizerOptions o;
    o.seed = cfg.seed;
    return o;
}

template <class M>
void reset_if_possible(M& m, Generator& g) {
    if constexpr (requires { m.reset_parameters(g); }) m.reset_parameters(g);
}

} // namespace cgt_detail

/// Embedding + encoder + graph regulariser: the part both CGT variants share (run once per step, batch 1).
template <Scalar T, Backend B, class Embedding, class Encoder>
class CgtEncoderBase {
public:
    using value_type = T;
    using backend = B;
    using embedding_type = typename Embedding::template module<T, B>;
    using encoder_type = typename Encoder::template module<T, B>;

    CgtEncoderBase(const CgtConfig& cfg, GraphRegularizerOptions graph)
        : embedding(checked(cfg)), encoder(cfg), cfg_(cfg), reg_(cfg.num_genes, graph) {}

    const CgtConfig& config() const noexcept { return cfg_; }

    /// The graphs of the graph-regularised attention: add_graph(GeneGraph, {layers, head, λ}, name).
    GraphRegularizer<T, B>& graph_regularizer() noexcept { return reg_; }
    const GraphRegularizer<T, B>& graph_regularizer() const noexcept { return reg_; }
    /// The assignment is checked against the encoder here, not at the first forward.
    index_t add_graph(GeneGraph graph, GraphAssignment a, std::string name = {}) {
        for (int l : a.layers)
            require(l >= 0 && l < cfg_.num_layers, "CellGraphTransformer: graph '{}' is assigned to layer {} of a {}-layer encoder", name, l,
                    cfg_.num_layers);
        require(a.head >= 0 && a.head < cfg_.num_heads, "CellGraphTransformer: graph '{}' regularises head {} of {} (use head k % H)", name,
                a.head, cfg_.num_heads);
        return reg_.add_graph(std::move(graph), std::move(a), std::move(name));
    }

    /// Precomputed gene features [N, cfg.gene_feature_dim] (embedding policies that take them).
    void set_gene_features(Tensor<T, B> features)
        requires requires(embedding_type& e, Tensor<T, B> f) { e.set_gene_features(std::move(f)); }
    {
        embedding.set_gene_features(std::move(features));
    }

    embedding_type embedding;
    encoder_type encoder;

protected:
    /// H [N+1, d] of the wild type (row 0: CLS), graph term evaluated on the assigned layers.
    Tensor<T, B> encode(const Context& ctx);
    /// dH [N+1, d] -> every embedding and encoder gradient (the graph term's weighted by dgraph).
    void encode_backward(ConstView<T, B> dH, double dgraph);

    template <class F>
    void visit_encoder_parameters(F&& f, const std::string& prefix) {
        embedding.visit_parameters(f, prefix);
        encoder.visit_parameters(f, prefix);
    }
    void reset_encoder(Generator& g) {
        cgt_detail::reset_if_possible(embedding, g);
        cgt_detail::reset_if_possible(encoder, g);
    }

    /// Sizes no policy can build a model from, rejected before any module is built.
    static const CgtConfig& checked(const CgtConfig& c) {
        require(c.num_genes >= 1 && c.d_model >= 1, "CellGraphTransformer: num_genes {} and d_model {} must be positive", c.num_genes,
                c.d_model);
        require(c.num_layers >= 1, "CellGraphTransformer: num_layers = {}: the encoder needs at least one layer", c.num_layers);
        require(c.num_heads >= 1 && c.d_model % c.num_heads == 0, "CellGraphTransformer: d_model {} is not divisible by num_heads {}",
                c.d_model, c.num_heads);
        require(c.dropout >= 0.0 && c.dropout < 1.0, "CellGraphTransformer: dropout {} is outside [0, 1)", c.dropout);
        return c;
    }

    CgtConfig cfg_;
    GraphRegularizer<T, B> reg_;
};

template <Scalar T, Backend B, class Embedding, class Encoder>
Tensor<T, B> CgtEncoderBase<T, B, Embedding, Encoder>::encode(const Context& ctx) {
    for (index_t k = 0; k < reg_.num_graphs(); ++k) {
        const GraphAssignment& a = reg_.assignment(k);
        for (int l : a.layers)
            require(l < cfg_.num_layers, "CellGraphTransformer: graph '{}' is assigned to layer {} of a {}-layer encoder", reg_.name(k), l,
                    cfg_.num_layers);
        require(a.head < cfg_.num_heads, "CellGraphTransformer: graph '{}' regularises head {} of {} (use head k % H)", reg_.name(k),
                a.head, cfg_.num_heads);
    }
    const Tensor<T, B> X = embedding.forward(ctx);
    return encoder.forward(X.cview(), ctx, reg_.num_graphs() > 0 ? &reg_ : nullptr);
}

template <Scalar T, Backend B, class Embedding, class Encoder>
void CgtEncoderBase<T, B, Embedding, Encoder>::encode_backward(ConstView<T, B> dH, double dgraph) {
    Tensor<T, B> dX(dH.shape());
    if constexpr (requires(encoder_type& e) { e.backward(dH, dX.view(), dgraph); }) {
        encoder.backward(dH, dX.view(), dgraph);
    } else {
        require(dgraph == 1.0, "CellGraphTransformer: this encoder policy weights its graph term by 1 only (got {})", dgraph);
        encoder.backward(dH, dX.view());
    }
    embedding.backward(dX.cview());
}


} // namespace celltx
