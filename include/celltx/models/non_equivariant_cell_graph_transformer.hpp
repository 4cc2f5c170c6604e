#pragma once
// NonEquivariantCellGraphTransformer<T, B, Embedding, Encoder, Head>: the non-equivariant CGT
// (torchcell's non-equivariant model; docs/cell_graph_transformer.md) as its own
// composition: the same embedding, encoder and graph-regularised attention as CellGraphTransformer,
// and no Type I transform: the head (NonEquivariantHeadPolicy, e.g. NonEquivariantHead) reads H_genes.
//   ŷ_b = MLP([h_CLS ‖ MHA(mean of H_genes[S_b] -> all N gene rows)])
//  - construction: parameters from the reference's init distributions drawn with Generator(cfg.seed);
//  - forward(batch, ctx) -> NonEquivariantOutputs {h_cls [d], H_genes [N,d], prediction [B,1], graph_loss};
//  - backward(dpred, dgraph = 1) ASSIGNS every parameter gradient of <dpred, ŷ> + dgraph·graph_loss;
//  - loss_backward / train_step as CellGraphTransformer's, with one target;
//  - names: gene_embedding.weight, cls_token, transformer_layers.*, perturbation_head.{cross_attn,mlp}.*.
#include <concepts>
#include <span>
#include <string>
#include <utility>
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/policies/readout/non_equivariant.hpp"

namespace celltx {

/// What NonEquivariantCellGraphTransformer requires of its policies.
template <class T, class B, class Embedding, class Encoder, class Head>
concept NonEquivariantCgtComposition = Scalar<T> && Backend<B> && EmbeddingPolicy<Embedding, T, B> && EncoderPolicy<Encoder, T, B> &&
                                       NonEquivariantHeadPolicy<Head, T, B>;

template <Scalar T, Backend B>
struct NonEquivariantOutputs {
    Tensor<T, B> h_cls;       ///< [d]
    Tensor<T, B> H_genes;     ///< [N, d]
    Tensor<T, B> prediction;  ///< [B, 1]
    double graph_loss = 0.0;
};

template <Scalar T, Backend B = cpu, class Embedding = GeneEmbedding, class Encoder = PostNormEncoder, class Head = NonEquivariantHead>
    requires NonEquivariantCgtComposition<T, B, Embedding, Encoder, Head>
class NonEquivariantCellGraphTransformer : public CgtEncoderBase<T, B, Embedding, Encoder> {
    using base = CgtEncoderBase<T, B, Embedding, Encoder>;

public:
    using head_type = typename Head::template module<T, B>;
    using outputs_type = NonEquivariantOutputs<T, B>;

    explicit NonEquivariantCellGraphTransformer(const CgtConfig& cfg)
        : NonEquivariantCellGraphTransformer(cfg, cgt_detail::default_graph_options(cfg)) {}
    NonEquivariantCellGraphTransformer(const CgtConfig& cfg, GraphRegularizerOptions graph);

    void reset_parameters(Generator& g) {
        this->reset_encoder(g);
        cgt_detail::reset_if_possible(head, g);
    }

    outputs_type forward(const PerturbationBatch& batch, const Context& ctx = {});
    /// dpred: gradient w.r.t. the last forward's prediction (empty: zero).
    void backward(ConstView<T, B> dpred, double dgraph = 1.0);

    /// L = loss(prediction, target) + graph_weight·graph_loss of `out`; backpropagates L.
    CgtLossValues loss_backward(const outputs_type& out, const CgtTarget<T, B>& target, loss::MultiTaskLoss<T, B>& loss,
                                double graph_weight = 1.0);

    template <class Update>
        requires std::invocable<Update&>
    CgtStep<outputs_type> train_step(const PerturbationBatch& batch, const CgtTarget<T, B>& target, loss::MultiTaskLoss<T, B>& loss,
                                     const Context& ctx, Update&& update) {
        CgtStep<outputs_type> s;
        s.outputs = forward(batch, ctx);
        s.loss = loss_backward(s.outputs, target, loss);
        update();
        return s;
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        this->visit_encoder_parameters(f, prefix);
        head.visit_parameters(f, prefix);
    }

    head_type head;

private:
    Shape pred_shape_{0};
    bool has_forward_ = false;
};

template <Scalar T, Backend B, class Embedding, class Encoder, class Head>
    requires NonEquivariantCgtComposition<T, B, Embedding, Encoder, Head>
NonEquivariantCellGraphTransformer<T, B, Embedding, Encoder, Head>::NonEquivariantCellGraphTransformer(const CgtConfig& cfg,
                                                                                                     GraphRegularizerOptions graph)
    : base(cfg, graph), head(cfg) {
    Generator g(cfg.seed);
    reset_parameters(g);
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Head>
    requires NonEquivariantCgtComposition<T, B, Embedding, Encoder, Head>
auto NonEquivariantCellGraphTransformer<T, B, Embedding, Encoder, Head>::forward(const PerturbationBatch& batch, const Context& ctx)
    -> outputs_type {
    const index_t N = this->cfg_.num_genes, d = this->cfg_.d_model;
    batch.validate(N, "PerturbationBatch");
    require(batch.batch_size() >= 1, "NonEquivariantCellGraphTransformer: an empty batch");
    const Tensor<T, B> H = this->encode(ctx);
    const ConstView<T, B> h_cls = H.cview().slice(0, 1), genes = H.cview().slice(1, N);
    outputs_type out;
    out.prediction = head.forward(h_cls, genes, batch, ctx);
    pred_shape_ = out.prediction.shape();
    out.h_cls = Tensor<T, B>::copy_of(h_cls);
    out.h_cls.reshape(Shape{d});
    out.H_genes = Tensor<T, B>::copy_of(genes);
    out.graph_loss = this->encoder.graph_loss();
    has_forward_ = ctx.keep_for_backward;
    return out;
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Head>
    requires NonEquivariantCgtComposition<T, B, Embedding, Encoder, Head>
void NonEquivariantCellGraphTransformer<T, B, Embedding, Encoder, Head>::backward(ConstView<T, B> dpred, double dgraph) {
    require(has_forward_, "NonEquivariantCellGraphTransformer::backward: {}", nothing_kept_for_backward);
    const index_t N = this->cfg_.num_genes, d = this->cfg_.d_model;
    Tensor<T, B> dH(Shape{N + 1, d});
    const Tensor<T, B> zero = dpred.data() ? Tensor<T, B>() : Tensor<T, B>(pred_shape_);
    head.backward(dpred.data() ? dpred : zero.cview(), dH.view().slice(0, 1), dH.view().slice(1, N));
    this->encode_backward(dH.cview(), dgraph);
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Head>
    requires NonEquivariantCgtComposition<T, B, Embedding, Encoder, Head>
CgtLossValues NonEquivariantCellGraphTransformer<T, B, Embedding, Encoder, Head>::loss_backward(const outputs_type& out,
                                                                                                const CgtTarget<T, B>& target,
                                                                                                loss::MultiTaskLoss<T, B>& loss,
                                                                                                double graph_weight) {
    const std::array<ConstView<T, B>, 1> preds{out.prediction.cview()};
    std::array<Tensor<T, B>, 1> dpreds;
    const double phenotype = cgt_detail::multitask_gradients<T, B, 1>(preds, std::span<const CgtTarget<T, B>>(&target, 1), loss, dpreds);
    backward(dpreds[0].cview(), graph_weight);
    return {phenotype + graph_weight * out.graph_loss, phenotype, out.graph_loss};
}

} // namespace celltx
