#pragma once
// CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>: the equivariant Cell Graph
// Transformer (spec cell_graph_transformer.md; cgt_ref.py CGTRef), composed at compile time from
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
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/embedding/concept.hpp"
#include "celltx/policies/embedding/gene_embedding.hpp"
#include "celltx/policies/encoder/concept.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"
#include "celltx/policies/encoder/post_norm_encoder.hpp"
#include "celltx/policies/encoder/propagation.hpp"
#include "celltx/policies/loss/multitask_loss.hpp"
#include "celltx/policies/perturbation/concept.hpp"
#include "celltx/policies/perturbation/cross_attention_transform.hpp"
#include "celltx/policies/perturbation/perturbation_batch.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/readout/concept.hpp"
#include "celltx/policies/readout/expression.hpp"
#include "celltx/policies/readout/fitness.hpp"
#include "celltx/policies/readout/gene_interaction.hpp"
#include "celltx/policies/readout/gene_set.hpp"

namespace celltx {

// ---------------------------------------------------------------------------------------------
// Propagation as a perturbation policy

/// Perturbation policy: Inner's Type I transform, then Prop's layers (self-attention over the N rows
/// of each sample, memory-efficient: O(B·N·d)). It needs every row, whatever the readouts read.
template <class Inner = CrossAttentionTransform, class Prop = Propagation>
struct WithPropagation {
    static constexpr const char* name = "WithPropagation";
    static constexpr bool needs_all_rows = true;

    template <Scalar T, Backend B = cpu>
    class module {
        static_assert(PerturbationPolicy<Inner, T, B>, "WithPropagation<Inner, Prop>: Inner must satisfy PerturbationPolicy");
        static_assert(PropagationPolicy<Prop, T, B>, "WithPropagation<Inner, Prop>: Prop must satisfy PropagationPolicy");

    public:
        module() = default;
        explicit module(const CgtConfig& cfg) : transform(cfg), propagation(cfg) {}

        void reset_parameters(Generator& g) {
            if constexpr (requires { transform.reset_parameters(g); }) transform.reset_parameters(g);
            if constexpr (requires { propagation.reset_parameters(g); }) propagation.reset_parameters(g);
        }

        /// All rows of H_pert (whatever `need` says), each sample then propagated.
        PerturbedRows<T, B> forward(ConstView<T, B> H, const PerturbationBatch& batch, RowNeedSet need, const GeneSetList* sets = nullptr,
                                    const Context& ctx = {}) {
            PerturbedRows<T, B> rows = transform.forward(H, batch, need | RowNeed::all, sets, ctx);
            Tensor<T, B> y = propagation.forward(rows.values.cview().reshaped(Shape{rows.batch, rows.num_genes, rows.d}), ctx);
            rows.values = std::move(y.reshape(Shape{rows.rows(), rows.d}));
            return rows;
        }

        void backward(const PerturbedRows<T, B>& dRows, TensorView<T, B> dH) {
            require(dRows.all_rows, "WithPropagation::backward: dRows must have the all-rows layout of the forward");
            const Shape s{dRows.batch, dRows.num_genes, dRows.d};
            PerturbedRows<T, B> inner = dRows.without_values();
            inner.values = Tensor<T, B>(s);
            propagation.backward(dRows.values.cview().reshaped(s), inner.values.view());
            inner.values.reshape(Shape{dRows.rows(), dRows.d});
            transform.backward(inner, dH);
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            transform.visit_parameters(f, prefix);
            propagation.visit_parameters(f, prefix);
        }

        typename Inner::template module<T, B> transform;
        typename Prop::template module<T, B> propagation;
    };
};

/// Whether a perturbation policy needs every row of H_pert (WithPropagation).
template <class P>
constexpr bool perturbation_needs_all_rows() {
    if constexpr (requires { { P::needs_all_rows } -> std::convertible_to<bool>; }) return P::needs_all_rows;
    else return false;
}

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
// Inputs and outputs

/// What forward returns (K readouts).
template <Scalar T, Backend B, std::size_t K>
struct CgtOutputs {
    Tensor<T, B> h_cls;                     ///< [d]
    Tensor<T, B> H_genes;                   ///< [N, d]
    PerturbedRows<T, B> H_pert;             ///< the rows of H_pert the transform computed
    std::array<Tensor<T, B>, K> predictions;  ///< readout k's prediction, in the order of the model type
    double graph_loss = 0.0;                ///< the weighted graph term (0 without graphs)
};

/// The label (and optional mask) of one readout's prediction, as loss::TaskTarget without the prediction.
template <Scalar T, Backend B = cpu>
struct CgtTarget {
    ConstView<T, B> label;  ///< the prediction's shape, NaN = missing
    ConstView<T, B> mask{};  ///< optional: [B] or the prediction's shape, 0 = missing
};

/// The terms of the training loss: total = phenotype + graph_weight·graph.
struct CgtLossValues {
    double total = 0.0, phenotype = 0.0, graph = 0.0;
};

/// What train_step returns.
template <class Outputs>
struct CgtStep {
    CgtLossValues loss;
    Outputs outputs;
};

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

/// Embedding + encoder + graph regulariser: the part both CGT variants share (run once per step, batch 1).
template <Scalar T, Backend B, class Embedding, class Encoder>
class EncoderStack {
public:
    using value_type = T;
    using backend = B;
    using embedding_type = typename Embedding::template module<T, B>;
    using encoder_type = typename Encoder::template module<T, B>;

    EncoderStack(const CgtConfig& cfg, GraphRegularizerOptions graph)
        : embedding(checked(cfg)), encoder(cfg), cfg_(cfg), reg_(cfg.num_genes, graph) {}

    const CgtConfig& config() const noexcept { return cfg_; }

    /// The graphs of the graph-regularised attention: add_graph(GeneGraph, {layers, head, λ}, name).
    GraphRegularizer<T>& graph_regularizer() noexcept { return reg_; }
    const GraphRegularizer<T>& graph_regularizer() const noexcept { return reg_; }
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
    void visit_stack_parameters(F&& f, const std::string& prefix) {
        embedding.visit_parameters(f, prefix);
        encoder.visit_parameters(f, prefix);
    }
    void reset_stack(Generator& g) {
        reset_if_possible(embedding, g);
        reset_if_possible(encoder, g);
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
    GraphRegularizer<T> reg_;
};

template <Scalar T, Backend B, class Embedding, class Encoder>
Tensor<T, B> EncoderStack<T, B, Embedding, Encoder>::encode(const Context& ctx) {
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
void EncoderStack<T, B, Embedding, Encoder>::encode_backward(ConstView<T, B> dH, double dgraph) {
    Tensor<T, B> dX(dH.shape());
    if constexpr (requires(encoder_type& e) { e.backward(dH, dX.view(), dgraph); }) {
        encoder.backward(dH, dX.view(), dgraph);
    } else {
        require(dgraph == 1.0, "CellGraphTransformer: this encoder policy weights its graph term by 1 only (got {})", dgraph);
        encoder.backward(dH, dX.view());
    }
    embedding.backward(dX.cview());
}

/// d(Σ_t w_t ℓ_t)/d prediction for every prediction, from a MultiTaskLoss; returns the loss value.
template <Scalar T, Backend B, std::size_t K>
double multitask_gradients(const std::array<ConstView<T, B>, K>& preds, std::span<const CgtTarget<T, B>> targets,
                           loss::MultiTaskLoss<T, B>& loss, std::array<Tensor<T, B>, K>& dpreds) {
    require(targets.size() == K, "CellGraphTransformer: {} targets for {} readouts", targets.size(), K);
    require(loss.tasks().size() == K, "CellGraphTransformer: the loss has {} tasks for {} readouts", loss.tasks().size(), K);
    std::vector<loss::TaskTarget<T, B>> tt;
    tt.reserve(K);
    for (std::size_t k = 0; k < K; ++k) tt.push_back({preds[k], targets[k].label, targets[k].mask});
    const Tensor<T, B> value = loss.forward(std::span<const loss::TaskTarget<T, B>>(tt));
    std::vector<TensorView<T, B>> views;
    for (std::size_t k = 0; k < K; ++k) {
        dpreds[k] = Tensor<T, B>(preds[k].shape());
        views.push_back(dpreds[k].view());
    }
    const Tensor<T, B> one = Tensor<T, B>::full(Shape{}, T(1));
    loss.backward(one.cview(), std::span<const TensorView<T, B>>(views));
    return static_cast<double>(value[0]);
}

} // namespace cgt_detail

// ---------------------------------------------------------------------------------------------
// The model

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
class CellGraphTransformer : public cgt_detail::EncoderStack<T, B, Embedding, Encoder> {
    using stack = cgt_detail::EncoderStack<T, B, Embedding, Encoder>;

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
        this->reset_stack(g);
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
        this->visit_stack_parameters(f, prefix);
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
        if constexpr (requires { r.gene_sets(); }) {
            const GeneSetList& s = r.gene_sets();
            for (index_t k = 0; k < s.size(); ++k) {
                const auto g = s.set(k);
                all.genes.insert(all.genes.end(), g.begin(), g.end());
                all.offsets.push_back(static_cast<index_t>(all.genes.size()));
            }
        }
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
    : stack(cfg, graph), perturbation(cfg), readouts(typename Readouts::template module<T, B>(cfg)...) {
    require(has_propagation == (cfg.propagation_layers > 0),
            "CellGraphTransformer: cfg.propagation_layers = {} but the perturbation policy {} propagation (use WithPropagation<...> "
            "with propagation_layers >= 1, or neither)",
            cfg.propagation_layers, has_propagation ? "has" : "has no");
    Generator g(cfg.seed);
    reset_parameters(g);
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
auto CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::forward(const PerturbationBatch& batch, const Context& ctx)
    -> outputs_type {
    const index_t N = this->cfg_.num_genes, d = this->cfg_.d_model;
    batch.validate(N);
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
    has_forward_ = true;
    return out;
}

template <Scalar T, Backend B, class Embedding, class Encoder, class Perturbation, class... Readouts>
    requires CgtComposition<T, B, Embedding, Encoder, Perturbation, Readouts...>
void CellGraphTransformer<T, B, Embedding, Encoder, Perturbation, Readouts...>::backward(std::span<const ConstView<T, B>> dpreds,
                                                                                       double dgraph) {
    require(has_forward_, "CellGraphTransformer::backward: no forward has run");
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
