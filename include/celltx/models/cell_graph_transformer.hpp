#pragma once
// CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>: the equivariant Cell Graph
// Transformer (docs/cell_graph_transformer.md), composed at compile time from
// policies and sized at run time by a CgtConfig:
//   Embedding     GeneEmbedding                                         (EmbeddingPolicy)
//   Encoder       PostNormEncoder, regularised by graph_regularizer()   (EncoderPolicy)
//   Perturbation  CrossAttentionTransform, or WithPropagation<P, Prop>  (PerturbationPolicy): the latter
//                 runs cfg.propagation_layers encoder layers over all N rows of each sample after Type I
//   Readouts...   GeneInteractionReadout, FitnessReadout, ExpressionReadout, GeneSetReadout
//                 (ReadoutPolicy; at least one, each type at most once)
// Rows on demand: the transform computes only `rows_needed`, the union of the readouts' RowNeed (all
// rows with propagation), so a GI-only model never holds B×N×d values.
//  - construction: parameters from the reference's init distributions drawn with Generator(cfg.seed);
//    graph row sampling seeded by cfg.seed unless GraphRegularizerOptions say otherwise;
//  - forward(batch, ctx) -> CgtOutputs {h_cls [d], H_genes [N,d], H_pert (the computed rows),
//    predictions[k] (readout k, [B, ·]), graph_loss}; saves what backward needs;
//  - backward(dpreds, dgraph = 1) ASSIGNS every parameter gradient of
//    L = Σ_k <dpred_k, pred_k> + dgraph·graph_loss (an empty dpred_k counts as zero);
//  - loss_backward(outputs, targets, MultiTaskLoss): L = masked multi-task loss + graph_loss, then
//    backward; train_step(batch, targets, loss, ctx, update) = forward, loss_backward, update()
//    (update clips and steps the optimiser: train/ sits to the right of models/);
//  - visit_parameters: torchcell's state_dict names, so io::load_state_dict (strict by default) and
//    io::save_state_dict read and write PyTorch checkpoints.
// The model keeps pointers into itself between forward and backward (the graph regulariser) and
// optimisers keep pointers to its parameters: do not move it once in use.
// Heavy members are defined out of class, so `extern template` (models/cgt_instantiations.hpp) keeps
// every translation unit from compiling them again.
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/gene_graph.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/models/cgt_encoder_base.hpp"
#include "celltx/models/cgt_loss.hpp"
#include "celltx/models/cgt_types.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/embedding/gene_embedding.hpp"
#include "celltx/policies/encoder/post_norm_encoder.hpp"
#include "celltx/policies/encoder/propagation.hpp"
#include "celltx/policies/loss/multitask_loss.hpp"
#include "celltx/policies/perturbation/concept.hpp"
#include "celltx/policies/perturbation/cross_attention_transform.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/perturbation/with_propagation.hpp"
#include "celltx/policies/readout/concept.hpp"
#include "celltx/policies/readout/expression.hpp"
#include "celltx/policies/readout/fitness.hpp"
#include "celltx/policies/readout/gene_interaction.hpp"
#include "celltx/policies/readout/gene_set.hpp"

namespace celltx {

// ---------------------------------------------------------------------------------------------
// Composition constraints

namespace cgt_detail {
template <class... Ts>
inline constexpr bool distinct_types = true;
template <class T0, class... Ts>
inline constexpr bool distinct_types<T0, Ts...> = (!std::is_same_v<T0, Ts> && ...) && distinct_types<Ts...>;
} // namespace cgt_detail

/// Readouts appear at most once each (their parameter names would collide).
template <class... Readouts>
concept DistinctReadouts = cgt_detail::distinct_types<Readouts...>;

/// What CellGraphTransformer requires of its policies.
template <class T, class B, class Embedding, class Encoder, class Perturbation, class... Readouts>
concept CgtComposition = Scalar<T> && Backend<B> && EmbeddingPolicy<Embedding, T, B> && EncoderPolicy<Encoder, T, B> &&
                         PerturbationPolicy<Perturbation, T, B> && (sizeof...(Readouts) >= 1) && (ReadoutPolicy<Readouts, T, B> && ...) &&
                         DistinctReadouts<Readouts...>;

// ---------------------------------------------------------------------------------------------
// The model

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
class CellGraphTransformer : public CgtEncoderBase<T, B, Embedding, Encoder> {
    using base = CgtEncoderBase<T, B, Embedding, Encoder>;

public:
    static constexpr std::size_t num_readouts = sizeof...(Readouts);
    /// The rows of H_pert the transform computes: what the readouts read (every row with propagation).
    static constexpr RowNeedSet rows_needed =
        rows_needed_by<Readouts...> | (perturbation_needs_all_rows<Perturbation>() ? RowNeedSet(RowNeed::all) : RowNeedSet{});
    static constexpr bool has_propagation = perturbation_needs_all_rows<Perturbation>();
    using perturbation_type = typename Perturbation::template module<T, B>;
    using readouts_type = std::tuple<typename Readouts::template module<T, B>...>;
    using outputs_type = CgtOutputs<T, B, num_readouts>;

    /// Parameters drawn with Generator(cfg.seed); graph rows sampled with cfg.seed.
    explicit CellGraphTransformer(const CgtConfig& cfg) : CellGraphTransformer(cfg, cgt_detail::default_graph_options(cfg)) {}
    CellGraphTransformer(const CgtConfig& cfg, GraphRegularizerOptions graph);

    /// The reference's initialisation distributions, module by module in the reference's construction order.
    void reset_parameters(Generator& g) {
        this->reset_encoder(g);
        cgt_detail::reset_if_possible(perturbation, g);
        std::apply([&](auto&... r) { (cgt_detail::reset_if_possible(r, g), ...); }, readouts);
    }

    /// Readout I (in the order of the model type), or the readout of policy R.
    template <std::size_t I>
    auto& readout() noexcept {
        return std::get<I>(readouts);
    }
    template <class R>
    auto& readout() noexcept {
        return std::get<typename R::template module<T, B>>(readouts);
    }

    /// Gives `sets` to every readout that pools over gene sets (GeneSetReadout).
    void set_gene_sets(const GeneSetList& sets) {
        bool any = false;
        std::apply([&](auto&... r) { ((give_gene_sets(r, sets, any)), ...); }, readouts);
        require(any, "CellGraphTransformer::set_gene_sets: no readout of this model reads gene sets");
    }

    outputs_type forward(const PerturbationBatch& batch, const Context& ctx = {});

    /// dpreds[k]: gradient w.r.t. predictions[k] of the last forward (empty: zero).
    void backward(std::span<const ConstView<T, B>> dpreds, double dgraph = 1.0);
    void backward(std::initializer_list<ConstView<T, B>> dpreds, double dgraph = 1.0) {
        backward(std::span<const ConstView<T, B>>(dpreds.begin(), dpreds.size()), dgraph);
    }

    /// L = loss(predictions, targets) + graph_weight·graph_loss of `out` (the last forward's outputs);
    /// backpropagates L (parameter gradients assigned) and returns its terms. targets[k] labels readout k.
    CgtLossValues loss_backward(const outputs_type& out, std::span<const CgtTarget<T, B>> targets, loss::MultiTaskLoss<T, B>& loss,
                                double graph_weight = 1.0);
    CgtLossValues loss_backward(const outputs_type& out, std::initializer_list<CgtTarget<T, B>> targets, loss::MultiTaskLoss<T, B>& loss,
                                double graph_weight = 1.0) {
        return loss_backward(out, std::span<const CgtTarget<T, B>>(targets.begin(), targets.size()), loss, graph_weight);
    }

    /// One training step: forward(batch, ctx), loss_backward, then update() (e.g. clip_grad_norm + AdamW::step).
    template <class Update>
        requires std::invocable<Update&>
    CgtStep<outputs_type> train_step(const PerturbationBatch& batch, std::span<const CgtTarget<T, B>> targets,
                                     loss::MultiTaskLoss<T, B>& loss, const Context& ctx, Update&& update) {
        CgtStep<outputs_type> s;
        s.outputs = forward(batch, ctx);
        s.loss = loss_backward(s.outputs, targets, loss);
        update();
        return s;
    }
    template <class Update>
        requires std::invocable<Update&>
    CgtStep<outputs_type> train_step(const PerturbationBatch& batch, std::initializer_list<CgtTarget<T, B>> targets,
                                     loss::MultiTaskLoss<T, B>& loss, const Context& ctx, Update&& update) {
        return train_step(batch, std::span<const CgtTarget<T, B>>(targets.begin(), targets.size()), loss, ctx, std::forward<Update>(update));
    }

    /// gene_embedding.weight, cls_token, transformer_layers.*, perturbation_transform.*, [propagation_layers.*], readouts.
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        this->visit_encoder_parameters(f, prefix);
        perturbation.visit_parameters(f, prefix);
        std::apply([&](auto&... r) { (r.visit_parameters(f, prefix), ...); }, readouts);
    }

    perturbation_type perturbation;
    readouts_type readouts;

private:
    template <class R>
    static void give_gene_sets(R& r, const GeneSetList& sets, bool& any) {
        if constexpr (requires { r.set_gene_sets(sets); }) {
            r.set_gene_sets(sets);
            any = true;
        }
    }
    /// Every gene set of every readout, concatenated: the transform needs only their genes.
    GeneSetList collect_gene_sets() {
        GeneSetList all;
        std::apply([&](auto&... r) { (append_gene_sets(r, all), ...); }, readouts);
        return all;
    }
    template <class R>
    static void append_gene_sets(R& r, GeneSetList& all) {
        if constexpr (requires { r.gene_sets(); }) all.append(r.gene_sets());
    }

    // Saved by forward.
    GeneSetList gene_sets_;
    PerturbedRows<T, B> layout_;
    std::array<Shape, num_readouts> pred_shapes_{};
    bool has_forward_ = false;
};

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::CellGraphTransformer(const CgtConfig& cfg,
                                                                                             GraphRegularizerOptions graph)
    : base(cfg, graph), perturbation(cfg), readouts(typename Readouts::template module<T, B>(cfg)...) {
    Generator g(cfg.seed);
    reset_parameters(g);
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
auto CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::forward(const PerturbationBatch& batch, const Context& ctx)
    -> outputs_type {
    const index_t N = this->cfg_.num_genes, d = this->cfg_.d_model;
    batch.validate(N, "PerturbationBatch");
    require(batch.batch_size() >= 1, "CellGraphTransformer: an empty batch");
    const Tensor<T, B> H = this->encode(ctx);
    const ConstView<T, B> h_cls = H.cview().slice(0, 1), genes = H.cview().slice(1, N);
    const GeneSetList* sets = nullptr;
    if constexpr (rows_needed.contains(RowNeed::gene_sets)) {
        gene_sets_ = collect_gene_sets();
        sets = &gene_sets_;
    }
    outputs_type out;
    out.H_pert = perturbation.forward(genes, batch, rows_needed, sets, ctx);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((out.predictions[I] = std::get<I>(readouts).forward(h_cls, out.H_pert, batch, ctx)), ...);
    }(std::make_index_sequence<num_readouts>{});
    for (std::size_t k = 0; k < num_readouts; ++k) pred_shapes_[k] = out.predictions[k].shape();
    layout_ = out.H_pert.without_values();
    out.h_cls = Tensor<T, B>::copy_of(h_cls);
    out.h_cls.reshape(Shape{d});
    out.H_genes = Tensor<T, B>::copy_of(genes);
    out.graph_loss = this->encoder.graph_loss();
    has_forward_ = ctx.keep_for_backward;
    return out;
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
void CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::backward(std::span<const ConstView<T, B>> dpreds,
                                                                                       double dgraph) {
    require(has_forward_, "CellGraphTransformer::backward: {}", nothing_kept_for_backward);
    require(dpreds.size() == num_readouts, "CellGraphTransformer::backward: {} gradients for {} readouts", dpreds.size(), num_readouts);
    const index_t N = this->cfg_.num_genes, d = this->cfg_.d_model;
    Tensor<T, B> dH(Shape{N + 1, d});  // row 0: dh_CLS, rows 1..N: dH_genes
    const TensorView<T, B> dh_cls = dH.view().slice(0, 1);
    PerturbedRows<T, B> drows = layout_.zeros_like();
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        auto one = [&](auto& r, std::size_t k) {
            if (dpreds[k].data() || pred_shapes_[k].numel() == 0) {
                r.backward(dpreds[k], dh_cls, drows);
            } else {  // an unused readout still assigns its (zero) parameter gradients
                const Tensor<T, B> zero(pred_shapes_[k]);
                r.backward(zero.cview(), dh_cls, drows);
            }
        };
        (one(std::get<I>(readouts), I), ...);
    }(std::make_index_sequence<num_readouts>{});
    perturbation.backward(drows, dH.view().slice(1, N));
    this->encode_backward(dH.cview(), dgraph);
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
CgtLossValues CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::loss_backward(
    const outputs_type& out, std::span<const CgtTarget<T, B>> targets, loss::MultiTaskLoss<T, B>& loss, double graph_weight) {
    std::array<ConstView<T, B>, num_readouts> preds;
    for (std::size_t k = 0; k < num_readouts; ++k) preds[k] = out.predictions[k].cview();
    std::array<Tensor<T, B>, num_readouts> dpreds;
    const double phenotype = cgt_detail::multitask_gradients<T, B, num_readouts>(preds, targets, loss, dpreds);
    std::array<ConstView<T, B>, num_readouts> views;
    for (std::size_t k = 0; k < num_readouts; ++k) views[k] = dpreds[k].cview();
    backward(std::span<const ConstView<T, B>>(views), graph_weight);
    return {phenotype + graph_weight * out.graph_loss, phenotype, out.graph_loss};
}

} // namespace celltx
