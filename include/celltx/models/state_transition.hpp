#pragma once
// StateTransition<T, B, Backbone, Loss, Options...>: Arc Institute State's set-to-set perturbation
// model (StateTransitionPerturbationModel; docs/state_transition.md), composed at compile
// time from policies and sized at run time by a StateConfig:
//   Backbone  LlamaBackbone | GPT2Backbone                         (BackbonePolicy)
//   Loss      EnergyLoss | SinkhornLoss | CombinedLoss | MseLoss   (SetLossPolicy)
//   Options   any of ConfidenceToken, GeneDecoder, BatchEmbedding  (StateOption, each at most once)
// Forward: seq = pert_encoder(pert) + basal_encoder(ctrl) [+ batch_encoder(batch)] per cell, [+ the
// confidence token after the S cells], h = backbone(seq), then project_out with the configured
// residual, ReLU, and the gene decoder.
//  - forward(pert, ctrl, batch, ctx): pert [B·S, pert_dim] and ctrl [B·S, input_dim] (sets of
//    cell_set_len), or [B, S, ·] for any S; saves what backward needs (nothing under
//    Context::inference(): prediction only, then loss() and backward() throw);
//  - backward(dpred, dconf, dgenes, dpert, dctrl): ASSIGNS every parameter gradient, ADDS into the
//    input gradients (empty views: not wanted; empty dconf/dgenes: zero);
//  - loss(target, gene_target) after a forward: main set loss + decoder loss + confidence MSE + L1,
//    saving the output gradients; backward(dpert, dctrl) then runs the whole model backward.
//    train_step() does all three;
//  - visit_parameters: the State checkpoint names; is_frozen_key() accepts the backbone's unused,
//    frozen embeddings (io::LoadOptions::ignore).
#include <span>
#include <string>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/state/state_config.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/backbone/concept.hpp"
#include "celltx/policies/backbone/gpt2_backbone.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"
#include "celltx/policies/loss/confidence_loss.hpp"
#include "celltx/policies/loss/l1_penalty.hpp"
#include "celltx/policies/loss/set_loss.hpp"
#include "celltx/policies/state/batch_embedding.hpp"
#include "celltx/policies/state/confidence_token.hpp"
#include "celltx/policies/state/gene_decoder.hpp"
#include "celltx/policies/state/option.hpp"
#include "celltx/policies/state/set_loss_policy.hpp"

namespace celltx {

/// What forward returns.
template <Scalar T, Backend B = cpu>
struct StatePrediction {
    Tensor<T, B> pred;        ///< [B·S, output_dim] ([B, S, output_dim] for rank-3 inputs)
    Tensor<T, B> confidence;  ///< [B, 1] with ConfidenceToken, else empty
    Tensor<T, B> genes;       ///< [B·S, gene_dim] ([B, S, gene_dim]) with GeneDecoder, else empty
};

/// The terms of the training loss: total = main + w_dec·decoder + w_conf·confidence + l1 (l1 has λ in it).
struct StateLossValues {
    double total = 0.0, main = 0.0, decoder = 0.0, confidence = 0.0, l1 = 0.0;
    std::vector<double> per_set;  ///< the main loss of each set
};

/// The ops the State model itself calls on backend B (its encoders, heads and residuals), beside
/// those of its policies.
template <class B, class T>
concept StateModelOps = nn::MlpOps<B, T> && ops::provides_accumulate<B, T> && ops::provides_sign_axpy<B, T> && ops::provides_sum_abs<B, T>;

/// What StateTransition requires of its policies.
template <class T, class B, class Backbone, class Loss, class... Options>
concept StateComposition = Scalar<T> && Backend<B> && StateModelOps<B, T> && BackbonePolicy<Backbone, T, B> && SetLossPolicy<Loss, T, B> &&
                           (StateOption<Options, T, B> && ...) && DistinctStateOptions<Options...>;

template <Scalar T, Backend B, class Backbone, class Loss, class... Options>
    requires StateComposition<T, B, Backbone, Loss, Options...>
class StateTransition {
public:
    using value_type = T;
    using backend = B;
    static constexpr bool has_confidence_token = has_state_option<ConfidenceToken, Options...>;
    static constexpr bool has_gene_decoder = has_state_option<GeneDecoder, Options...>;
    static constexpr bool has_batch_embedding = has_state_option<BatchEmbedding, Options...>;
    using backbone_type = policy_module<Backbone, T, B>;
    using loss_type = policy_module<Loss, T, B>;

    explicit StateTransition(const StateConfig& config) : cfg_(resolved(config)) {
        const StateConfig& c = cfg_;
        require(c.input_dim >= 1 && c.pert_dim >= 1 && c.hidden >= 1 && c.out_dim() >= 1 && c.cell_set_len >= 1,
                "StateTransition: input_dim {}, pert_dim {}, hidden {}, output_dim {}, cell_set_len {} must be positive", c.input_dim,
                c.pert_dim, c.hidden, c.out_dim(), c.cell_set_len);
        require(c.backbone.hidden == c.hidden, "StateTransition: backbone hidden size {} differs from hidden {}", c.backbone.hidden,
                c.hidden);
        require(c.n_encoder_layers >= 1 && c.n_decoder_layers >= 1 && c.backbone.layers >= 1,
                "StateTransition: n_encoder_layers {}, n_decoder_layers {} and backbone.layers {} must be >= 1", c.n_encoder_layers,
                c.n_decoder_layers, c.backbone.layers);
        require(c.output_space != OutputSpace::all || (c.out_dim() == c.input_dim && c.out_dim() >= 8),
                "StateTransition: output_space 'all' adds ctrl to the output: needs output_dim == input_dim >= 8 (got {} and {})",
                c.out_dim(), c.input_dim);
        require(c.l1_lambda == 0.0 || c.out_dim() == c.input_dim, "StateTransition: the L1 term compares pred with ctrl: needs "
                "output_dim == input_dim (got {} and {})", c.out_dim(), c.input_dim);
        pert_encoder = nn::Mlp<T, B>(c.pert_dim, c.hidden, c.hidden, c.n_encoder_layers, c.dropout, ActivationKind::gelu, 1);
        basal_encoder = nn::Mlp<T, B>(c.input_dim, c.hidden, c.hidden, c.use_basal_projection ? c.n_encoder_layers : 1, c.dropout,
                                      ActivationKind::gelu, 2);
        transformer_backbone = backbone_type(c.backbone);
        project_out = nn::Mlp<T, B>(c.hidden, c.out_dim(), c.hidden, c.n_decoder_layers, c.dropout, ActivationKind::gelu, 3);
        if (c.output_space == OutputSpace::all) {
            final_down = nn::Linear<T, B>(c.out_dim(), c.out_dim() / 8);
            final_up = nn::Linear<T, B>(c.out_dim() / 8, c.out_dim());
        }
        if constexpr (has_batch_embedding) batch_encoder = policy_module<BatchEmbedding, T, B>(c);
        if constexpr (has_confidence_token) confidence_token = policy_module<ConfidenceToken, T, B>(c);
        if constexpr (has_gene_decoder) gene_decoder = policy_module<GeneDecoder, T, B>(c);
        main_loss_ = loss_type(c);
        decoder_loss_ = loss_type(c);
        confidence_loss_ = loss::ConfidenceLoss<T, B>(c.confidence_target_scale);
        l1_ = loss::L1Penalty<T, B>(c.l1_lambda);
    }

    const StateConfig& config() const noexcept { return cfg_; }

    /// PyTorch's default initialisation distributions for every module (State checkpoints are loaded).
    void reset_parameters(Generator& g) {
        pert_encoder.reset_parameters(g);
        basal_encoder.reset_parameters(g);
        transformer_backbone.reset_parameters(g);
        project_out.reset_parameters(g);
        if (cfg_.output_space == OutputSpace::all) {
            final_down.reset_parameters(g);
            final_up.reset_parameters(g);
        }
        if constexpr (has_batch_embedding) batch_encoder.reset_parameters(g);
        if constexpr (has_confidence_token) confidence_token.reset_parameters(g);
        if constexpr (has_gene_decoder) gene_decoder.reset_parameters(g);
    }

    /// pert [B·S, pert_dim] / ctrl [B·S, input_dim] (S = cell_set_len), or [B, S, ·] for any S;
    /// batch: one batch index per cell (BatchEmbedding only).
    StatePrediction<T, B> forward(ConstView<T, B> pert, ConstView<T, B> ctrl, std::span<const index_t> batch = {},
                                  const Context& ctx = {}) {
        const StateConfig& c = cfg_;
        require(pert.rank() == ctrl.rank() && (pert.rank() == 2 || pert.rank() == 3), "StateTransition: pert {} and ctrl {} must both "
                "be [B*S, dim] or [B, S, dim]", pert.shape(), ctrl.shape());
        require(pert.shape().last() == c.pert_dim && ctrl.shape().last() == c.input_dim,
                "StateTransition: pert {} must end in pert_dim {} and ctrl {} in input_dim {}", pert.shape(), c.pert_dim, ctrl.shape(),
                c.input_dim);
        require(pert.shape().rows() == ctrl.shape().rows() && (pert.rank() == 2 || pert.size(1) == ctrl.size(1)),
                "StateTransition: pert {} and ctrl {} hold different cells", pert.shape(), ctrl.shape());
        rank_ = pert.rank();
        set_len_ = rank_ == 3 ? pert.size(1) : c.cell_set_len;
        n_ = pert.shape().rows();
        require(set_len_ >= 1 && n_ % set_len_ == 0, "StateTransition: {} cells do not split into sets of {}", n_, set_len_);
        sets_ = n_ / set_len_;
        const index_t H = c.hidden;
        const ConstView<T, B> p2 = pert.reshaped(Shape{n_, c.pert_dim}), c2 = ctrl.reshaped(Shape{n_, c.input_dim});
        const bool keep = ctx.keep_for_backward;
        kept_ = has_loss_grads_ = false;  // until this forward has finished
        ctrl_ = keep && c.l1_lambda != 0.0 ? Tensor<T, B>::copy_of(c2) : Tensor<T, B>();  // only the L1 term reads it
        conf_ = pred_ = genes_ = Tensor<T, B>();

        Tensor<T, B> x = pert_encoder.forward(p2, ctx);
        Tensor<T, B> basal = basal_encoder.forward(c2, ctx);
        ops::accumulate(B{}, basal.data(), x.data(), x.numel());
        if constexpr (has_batch_embedding) {
            require(static_cast<index_t>(batch.size()) == n_, "StateTransition: {} batch indices for {} cells", batch.size(), n_);
            Tensor<T, B> e = batch_encoder.forward(batch, ctx);
            ops::accumulate(B{}, e.data(), x.data(), x.numel());
        } else {
            require(batch.empty(), "StateTransition: batch indices given, but the model has no BatchEmbedding option");
        }
        x.reshape(Shape{sets_, set_len_, H});

        StatePrediction<T, B> out;
        Tensor<T, B> cells;
        if constexpr (has_confidence_token) {
            const Tensor<T, B> h = transformer_backbone.forward(confidence_token.append(x.cview()).cview(), ctx);
            out.confidence = confidence_token.split(h.cview(), ctx, cells);
            if (keep) conf_ = out.confidence;
        } else {
            cells = transformer_backbone.forward(x.cview(), ctx);
        }
        cells.reshape(Shape{n_, H});

        Tensor<T, B> y;
        if (c.predict_residual && c.output_space == OutputSpace::all) {
            Tensor<T, B> z = project_out.forward(std::move(cells), ctx);
            ops::accumulate(B{}, c2.data(), z.data(), z.numel());
            y = final_up.forward(final_act_.forward(final_down.forward(std::move(z), ctx), ctx), ctx);
        } else {
            if (c.predict_residual) ops::accumulate(B{}, basal.data(), cells.data(), cells.numel());
            y = project_out.forward(std::move(cells), ctx);  // the decoder keeps the cells as its saved input
        }
        basal = Tensor<T, B>();
        if (c.apply_relu) y = relu_.forward(std::move(y), ctx);
        if (keep) pred_ = y;  // loss() reads it
        if constexpr (has_gene_decoder) {
            out.genes = gene_decoder.forward(y.cview(), ctx);
            if (keep) genes_ = out.genes;
            if (rank_ == 3) out.genes.reshape(Shape{sets_, set_len_, c.gene_dim});
        }
        out.pred = std::move(y);
        if (rank_ == 3) out.pred.reshape(Shape{sets_, set_len_, c.out_dim()});
        kept_ = keep;
        return out;
    }

    /// Backward of the last forward for output gradients dpred (pred's shape), dconf ([B, 1]) and
    /// dgenes (genes' shape); dpert/dctrl (the inputs' shapes) receive += dL/dinput.
    void backward(ConstView<T, B> dpred, ConstView<T, B> dconf, ConstView<T, B> dgenes, TensorView<T, B> dpert = {},
                  TensorView<T, B> dctrl = {}) {
        const StateConfig& c = cfg_;
        const index_t H = c.hidden, O = c.out_dim();
        require(kept_, "StateTransition::backward: {}", nothing_kept_for_backward);
        require(dpred.numel() == n_ * O, "StateTransition::backward: dpred {} does not match the prediction [{}, {}]", dpred.shape(), n_, O);
        require(!dpert.data() || dpert.numel() == n_ * c.pert_dim, "StateTransition::backward: dpert {} does not match pert", dpert.shape());
        require(!dctrl.data() || dctrl.numel() == n_ * c.input_dim, "StateTransition::backward: dctrl {} does not match ctrl", dctrl.shape());
        const TensorView<T, B> dctrl2 = dctrl.data() ? dctrl.reshaped(Shape{n_, c.input_dim}) : TensorView<T, B>();

        Tensor<T, B> dy = Tensor<T, B>::copy_of(dpred.reshaped(Shape{n_, O}));
        if constexpr (has_gene_decoder) {
            if (dgenes.data()) {
                require(dgenes.numel() == n_ * c.gene_dim, "StateTransition::backward: dgenes {} does not match the genes [{}, {}]",
                        dgenes.shape(), n_, c.gene_dim);
                gene_decoder.backward(dgenes.reshaped(Shape{n_, c.gene_dim}), c.detach_decoder ? TensorView<T, B>() : dy.view());
            } else {
                zero_grads(gene_decoder);
            }
        }
        if (c.apply_relu) {
            Tensor<T, B> d(dy.shape());
            relu_.backward(dy.cview(), d.view());
            dy = std::move(d);
        }
        Tensor<T, B> dcells(Shape{n_, H}), dbasal(Shape{n_, H});
        if (c.predict_residual && c.output_space == OutputSpace::all) {
            Tensor<T, B> dd(Shape{n_, final_down.out_features()}), da(dd.shape()), dz(Shape{n_, O});
            final_up.backward(dy.cview(), dd.view());
            final_act_.backward(dd.cview(), da.view());
            final_down.backward(da.cview(), dz.view());
            if (dctrl2.data()) ops::accumulate(B{}, dz.data(), dctrl2.data(), dz.numel());
            project_out.backward(dz.cview(), dcells.view());
        } else {
            if (c.output_space == OutputSpace::all) {  // final_down_then_up exists but is not used
                zero_grads(final_down);
                zero_grads(final_up);
            }
            project_out.backward(dy.cview(), dcells.view());
            if (c.predict_residual) ops::accumulate(B{}, dcells.data(), dbasal.data(), dcells.numel());
        }
        dcells.reshape(Shape{sets_, set_len_, H});

        Tensor<T, B> dx(Shape{sets_, set_len_, H});  // gradient of seq's cells
        if constexpr (has_confidence_token) {
            Tensor<T, B> dc = dconf.data() ? Tensor<T, B>::copy_of(dconf) : Tensor<T, B>(conf_.shape());
            require(dc.shape() == conf_.shape(), "StateTransition::backward: dconf {} does not match the confidence {}", dc.shape(),
                    conf_.shape());
            const Tensor<T, B> dh = confidence_token.backward_split(dc.cview(), dcells.cview());
            Tensor<T, B> dseq(dh.shape());
            transformer_backbone.backward(dh.cview(), dseq.view());
            confidence_token.backward_append(dseq.cview(), dx.view());
        } else {
            transformer_backbone.backward(dcells.cview(), dx.view());
        }
        dx.reshape(Shape{n_, H});
        if constexpr (has_batch_embedding) batch_encoder.backward(dx.cview());
        ops::accumulate(B{}, dx.data(), dbasal.data(), dx.numel());
        pert_encoder.backward(dx.cview(), dpert.data() ? dpert.reshaped(Shape{n_, c.pert_dim}) : TensorView<T, B>());
        basal_encoder.backward(dbasal.cview(), dctrl2);
    }

    /// The training loss of the last forward against target (pred's shape) and, with GeneDecoder,
    /// gene_target (genes' shape; empty: no decoder loss). Saves the output gradients for backward().
    StateLossValues loss(ConstView<T, B> target, ConstView<T, B> gene_target = {}) {
        const StateConfig& c = cfg_;
        const index_t O = c.out_dim();
        require(kept_, "StateTransition::loss: {}", nothing_kept_for_backward);
        require(target.numel() == n_ * O, "StateTransition::loss: target {} does not match the prediction [{}, {}]", target.shape(), n_, O);
        const Shape sets{sets_, set_len_, O};
        StateLossValues v;
        const Tensor<T, B> one = scalar(T(1));

        v.main = value_of(main_loss_.forward(pred_.reshaped(sets), target.reshaped(sets)));
        const Tensor<T, B>& per_set = main_loss_.per_set();
        const Tensor<T, cpu> per_set_host = to_host(per_set);
        for (index_t b = 0; b < per_set_host.numel(); ++b) v.per_set.push_back(static_cast<double>(per_set_host[b]));
        dpred_ = Tensor<T, B>(Shape{n_, O});
        main_loss_.backward(one.cview(), dpred_.reshaped(sets));
        v.total = v.main;

        dgenes_ = Tensor<T, B>();
        if constexpr (has_gene_decoder) {
            if (gene_target.data()) {
                const Shape gs{sets_, set_len_, c.gene_dim};
                require(gene_target.numel() == gs.numel(), "StateTransition::loss: gene_target {} does not match the genes {}",
                        gene_target.shape(), gs);
                v.decoder = value_of(decoder_loss_.forward(genes_.reshaped(gs), gene_target.reshaped(gs)));
                dgenes_ = Tensor<T, B>(Shape{n_, c.gene_dim});
                decoder_loss_.backward(scalar(static_cast<T>(c.decoder_loss_weight)).cview(), dgenes_.reshaped(gs));
                v.total += c.decoder_loss_weight * v.decoder;
            }
        } else {
            require(!gene_target.data(), "StateTransition::loss: gene_target given, but the model has no GeneDecoder option");
        }

        dconf_ = Tensor<T, B>();
        if constexpr (has_confidence_token) {
            // The target is data: scale × the per-set main loss, detached.
            v.confidence = value_of(confidence_loss_.forward(conf_.cview(), per_set.cview()));
            dconf_ = Tensor<T, B>(conf_.shape());
            confidence_loss_.backward(scalar(static_cast<T>(c.confidence_weight)).cview(), dconf_.view());
            v.total += c.confidence_weight * v.confidence;
        }

        dctrl_l1_ = Tensor<T, B>();
        if (c.l1_lambda != 0.0) {
            v.l1 = value_of(l1_.forward(pred_.cview(), ctrl_.cview()));
            dctrl_l1_ = Tensor<T, B>(ctrl_.shape());
            l1_.backward(one.cview(), dpred_.view(), dctrl_l1_.view());
            v.total += v.l1;
        }
        has_loss_grads_ = true;
        return v;
    }

    /// Backward of the loss() just computed: every parameter gradient (assigned) and += dL/dpert, dL/dctrl.
    void backward(TensorView<T, B> dpert = {}, TensorView<T, B> dctrl = {}) {
        require(has_loss_grads_, "StateTransition::backward: call loss() after forward() first");
        if (dctrl.data() && dctrl_l1_.data()) {
            require(dctrl.numel() == dctrl_l1_.numel(), "StateTransition::backward: dctrl {} does not match ctrl", dctrl.shape());
            ops::accumulate(B{}, dctrl_l1_.data(), dctrl.data(), dctrl_l1_.numel());
        }
        backward(dpred_.cview(), dconf_.cview(), dgenes_.cview(), dpert, dctrl);
    }

    /// forward + loss + backward: one training step's gradients (the optimiser step is the caller's).
    StateLossValues train_step(ConstView<T, B> pert, ConstView<T, B> ctrl, ConstView<T, B> target, ConstView<T, B> gene_target = {},
                               std::span<const index_t> batch = {}, const Context& ctx = {}) {
        forward(pert, ctrl, batch, ctx);
        StateLossValues v = loss(target, gene_target);
        backward();
        return v;
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        pert_encoder.visit_parameters(f, prefix + "pert_encoder.");
        if (cfg_.use_basal_projection) basal_encoder.visit_parameters(f, prefix + "basal_encoder.");
        else basal_encoder.linears[0].visit_parameters(f, prefix + "basal_encoder.");  // a bare nn.Linear
        transformer_backbone.visit_parameters(f, prefix + "transformer_backbone.");
        project_out.visit_parameters(f, prefix + "project_out.");
        if (cfg_.output_space == OutputSpace::all) {
            final_down.visit_parameters(f, prefix + "final_down_then_up.0.");
            final_up.visit_parameters(f, prefix + "final_down_then_up.2.");
        }
        batch_encoder.visit_parameters(f, prefix + "batch_encoder.");
        confidence_token.visit_parameters(f, prefix + "confidence_token.");
        gene_decoder.visit_parameters(f, prefix + "gene_decoder.");
    }

    /// Checkpoint keys that load into nothing: the backbone's frozen, zeroed embeddings.
    static bool is_frozen_key(const std::string& key) {
        static constexpr std::string_view bb = "transformer_backbone.";
        return key.starts_with(bb) && Backbone::is_frozen_key(std::string_view(key).substr(bb.size()));
    }
    /// Size of those frozen embeddings in a State checkpoint of this configuration (never allocated).
    index_t frozen_parameter_count() const { return Backbone::frozen_parameter_count(cfg_.backbone, cfg_.cell_set_len); }

    // Modules, named as in the checkpoint.
    nn::Mlp<T, B> pert_encoder, basal_encoder;
    backbone_type transformer_backbone;
    nn::Mlp<T, B> project_out;
    nn::Linear<T, B> final_down, final_up;  ///< final_down_then_up.{0,2} (output_space all)
    [[no_unique_address]] state_detail::optional_module<has_batch_embedding, policy_module<BatchEmbedding, T, B>> batch_encoder;
    [[no_unique_address]] state_detail::optional_module<has_confidence_token, policy_module<ConfidenceToken, T, B>> confidence_token;
    [[no_unique_address]] state_detail::optional_module<has_gene_decoder, policy_module<GeneDecoder, T, B>> gene_decoder;

private:
    static Tensor<T, B> scalar(T v) { return from_host<T, B>(&v, Shape{}); }
    static double value_of(const Tensor<T, B>& t) { return static_cast<double>(read_value(t.cview())); }
    static StateConfig resolved(StateConfig c) {
        if (c.backbone.hidden == 0) c.backbone.hidden = c.hidden;
        return c;
    }
    template <class M>
    static void zero_grads(M& m) {
        m.visit_parameters([](const std::string&, Parameter<T, B>& p) { p.grad_for_backward().zero(); });
    }

    StateConfig cfg_;
    nn::Activation<T, B> final_act_{ActivationKind::gelu}, relu_{ActivationKind::relu};
    loss_type main_loss_, decoder_loss_;
    loss::ConfidenceLoss<T, B> confidence_loss_;
    loss::L1Penalty<T, B> l1_;
    // saved by forward / loss
    int rank_ = 2;
    index_t n_ = 0, sets_ = 0, set_len_ = 0;
    bool kept_ = false;  // whether the last forward kept what loss() and backward() read
    Tensor<T, B> ctrl_, conf_, pred_, genes_;
    Tensor<T, B> dpred_, dconf_, dgenes_, dctrl_l1_;
    bool has_loss_grads_ = false;
};

} // namespace celltx
