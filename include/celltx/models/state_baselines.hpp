#pragma once
// The baselines Arc Institute's State is compared with (state/tx/models), on the same interface as
// StateTransition: predict_set(model, SetInput) predicts one set of cells, and the two trainable
// ones have StateTransition's training interface (forward / loss / backward / train_step /
// visit_parameters / reset_parameters), so one trainer fits all of them.
//  - PerturbMean (perturb_mean): control cell + the perturbation's mean shift, where the shift of
//    (cell type c, perturbation p) is mean(perturbed cells of c, p) − mean(control cells of c),
//    averaged over the cell types that have p; the control (and an unseen perturbation) shift by 0.
//  - ContextMean (context_mean): every perturbed cell of cell type c is predicted as the mean of
//    all perturbed cells of c in training (c's control mean when c has none); controls pass through.
//  - EmbedSum (embedsum): project_out(pert_encoder(p) + basal_encoder(x)) per cell, no transformer,
//    ReLU on the output with apply_relu; trained with the same set loss as State.
//  - Pseudobulk (pseudobulk): the encoders, mean-pooled over the set into one token, the
//    transformer backbone on that token, broadcast back to every cell, then
//    project_out(token + basal_encoder(x)) (predict_residual; project_out(token) without), ReLU with
//    apply_relu; trained with the same set loss.
// The neural baselines take their sizes from a StateConfig (hidden, encoder/decoder depths,
// dropout, backbone, loss weights) and use state's names: pert_encoder.*, basal_encoder.*,
// project_out.*, transformer_backbone.*.
#include <algorithm>
#include <concepts>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/policies/state/state_config.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/backbone/concept.hpp"
#include "celltx/policies/loss/set_loss.hpp"
#include "celltx/policies/state/set_loss_policy.hpp"

namespace celltx {

/// One set of cells to predict: the perturbation (index and encoding), the cell type and the
/// control cells the prediction starts from.
template <Scalar T>
struct SetInput {
    index_t perturbation = 0;          ///< index into the dataset's perturbation names
    index_t cell_type = 0;
    ConstView<T> pert;                 ///< [S, pert_dim]: the perturbation's vector for every cell
    ConstView<T> ctrl;                 ///< [S, genes]: the matched control cells
    std::span<const index_t> batch{};  ///< per cell, for models with a BatchEmbedding
};

/// A model that predicts a set from its SetInput directly (the non-parametric baselines).
template <class M, class T>
concept SetPredictor = requires(M& m, const SetInput<T>& in) {
    { m.predict(in) } -> std::same_as<Tensor<T>>;
};

/// The predicted cells [S, genes] of one set, in evaluation mode keeping nothing (Context::inference()): SetPredictors answer directly,
/// the neural models (StateTransition, EmbedSum, Pseudobulk) run forward on one set of length S.
template <class M, Scalar T>
Tensor<T> predict_set(M& model, const SetInput<T>& in) {
    if constexpr (SetPredictor<M, T>) {
        return model.predict(in);
    } else {
        using B = typename M::backend;
        const index_t S = in.ctrl.size(0);
        const ConstView<T> p = in.pert.reshaped(Shape{1, S, in.pert.size(1)}), c = in.ctrl.reshaped(Shape{1, S, in.ctrl.size(1)});
        Tensor<T> y;
        if constexpr (B::is_device) {  // the set uploaded, the prediction downloaded
            const Tensor<T, B> pd = from_host<T, B>(p.data(), p.shape()), cd = from_host<T, B>(c.data(), c.shape());
            y = to_host(model.forward(pd.cview(), cd.cview(), in.batch, Context::inference()).pred);
        } else {
            y = std::move(model.forward(p, c, in.batch, Context::inference()).pred);
        }
        y.reshape(Shape{S, y.numel() / S});
        return y;
    }
}

namespace baseline_detail {
/// Sum and count of the rows of x per key.
template <Scalar T>
struct RowMeans {
    std::map<std::pair<index_t, index_t>, std::pair<std::vector<double>, index_t>> acc;
    void add(std::pair<index_t, index_t> key, const T* row, index_t G) {
        auto& [sum, n] = acc[key];
        if (sum.empty()) sum.assign(static_cast<std::size_t>(G), 0.0);
        for (index_t g = 0; g < G; ++g) sum[g] += static_cast<double>(row[g]);
        ++n;
    }
    std::vector<double> mean(std::pair<index_t, index_t> key) const {
        const auto& [sum, n] = acc.at(key);
        std::vector<double> m = sum;
        for (double& v : m) v /= static_cast<double>(n);
        return m;
    }
};
} // namespace baseline_detail

/// perturb_mean: control cell + the perturbation's mean shift, averaged over cell types.
template <Scalar T>
class PerturbMean {
public:
    /// x: [cells, genes]; perturbation / cell_type per cell; cells: the rows to fit on (the training split).
    void fit(ConstView<T> x, std::span<const index_t> perturbation, std::span<const index_t> cell_type, index_t control,
             std::span<const index_t> cells) {
        const index_t G = x.size(1);
        baseline_detail::RowMeans<T> m;
        index_t P = control + 1;
        for (index_t c : cells) {
            m.add({cell_type[c], perturbation[c]}, x.data() + c * G, G);
            P = std::max(P, perturbation[c] + 1);
        }
        offsets_ = Tensor<T>(Shape{P, G});
        std::vector<std::vector<double>> sum(static_cast<std::size_t>(P), std::vector<double>(static_cast<std::size_t>(G), 0.0));
        std::vector<index_t> n(static_cast<std::size_t>(P), 0);
        for (const auto& [key, v] : m.acc) {
            const auto [ct, p] = key;
            if (p == control || !m.acc.count({ct, control})) continue;  // no control mean in this cell type: no shift
            const std::vector<double> mp = m.mean(key), mc = m.mean({ct, control});
            for (index_t g = 0; g < G; ++g) sum[p][g] += mp[g] - mc[g];
            ++n[p];
        }
        for (index_t p = 0; p < P; ++p)
            for (index_t g = 0; g < G; ++g) offsets_[p * G + g] = n[p] ? static_cast<T>(sum[p][g] / static_cast<double>(n[p])) : T(0);
    }

    /// ctrl + offset[perturbation] for every cell (an unseen perturbation shifts by 0).
    Tensor<T> predict(const SetInput<T>& in) const {
        const index_t S = in.ctrl.size(0), G = in.ctrl.size(1);
        require(offsets_.rank() == 2 && offsets_.size(1) == G, "PerturbMean: fitted on {} genes, asked for {}",
                offsets_.rank() == 2 ? offsets_.size(1) : 0, G);
        Tensor<T> y = Tensor<T>::copy_of(in.ctrl);
        if (in.perturbation >= 0 && in.perturbation < offsets_.size(0))
            for (index_t i = 0; i < S; ++i)
                for (index_t g = 0; g < G; ++g) y[i * G + g] += offsets_[in.perturbation * G + g];
        return y;
    }
    /// [perturbations, genes]: the shift of every perturbation.
    const Tensor<T>& offsets() const noexcept { return offsets_; }

private:
    Tensor<T> offsets_;
};

/// context_mean: the cell type's mean over its perturbed training cells; controls pass through.
template <Scalar T>
class ContextMean {
public:
    void fit(ConstView<T> x, std::span<const index_t> perturbation, std::span<const index_t> cell_type, index_t control,
             std::span<const index_t> cells) {
        const index_t G = x.size(1);
        control_ = control;
        baseline_detail::RowMeans<T> m;  // key (cell type, is_control)
        index_t C = 0;
        for (index_t c : cells) {
            m.add({cell_type[c], perturbation[c] == control}, x.data() + c * G, G);
            C = std::max(C, cell_type[c] + 1);
        }
        means_ = Tensor<T>(Shape{C, G});
        known_.assign(static_cast<std::size_t>(C), false);
        for (index_t ct = 0; ct < C; ++ct) {
            std::pair<index_t, index_t> key{ct, 0};
            if (!m.acc.count(key)) key = {ct, 1};
            if (!m.acc.count(key)) continue;
            const std::vector<double> v = m.mean(key);
            for (index_t g = 0; g < G; ++g) means_[ct * G + g] = static_cast<T>(v[g]);
            known_[ct] = true;
        }
    }

    Tensor<T> predict(const SetInput<T>& in) const {
        const index_t S = in.ctrl.size(0), G = in.ctrl.size(1);
        if (in.perturbation == control_) return Tensor<T>::copy_of(in.ctrl);
        require(in.cell_type >= 0 && in.cell_type < static_cast<index_t>(known_.size()) && known_[in.cell_type],
                "ContextMean: cell type {} was not seen in training", in.cell_type);
        require(means_.size(1) == G, "ContextMean: fitted on {} genes, asked for {}", means_.size(1), G);
        Tensor<T> y = Tensor<T>::uninitialized(Shape{S, G});
        for (index_t i = 0; i < S; ++i) std::copy_n(means_.data() + in.cell_type * G, G, y.data() + i * G);
        return y;
    }
    const Tensor<T>& means() const noexcept { return means_; }

private:
    Tensor<T> means_;
    std::vector<bool> known_;
    index_t control_ = -1;
};

namespace baseline_detail {

/// The set-loss part shared by the neural baselines: loss() after a forward, the output gradient for backward().
template <Scalar T, Backend B>
class SetLossHead {
public:
    SetLossHead() = default;
    SetLossHead(const StateConfig& c, loss::SetLossKind kind) {
        loss::SetLossOptions lo;
        lo.kind = kind;
        lo.blur = c.blur;
        lo.sinkhorn_weight = c.sinkhorn_weight;
        lo.energy_weight = c.energy_weight;
        lo.block = c.loss_block;
        loss_ = loss::SetLoss<T, B>(lo);
    }
    StateLossValues compute(const Tensor<T, B>& pred, ConstView<T, B> target, index_t sets, index_t set_len) {
        require(target.numel() == pred.numel(), "loss: target {} does not match the prediction {}", target.shape(), pred.shape());
        const Shape s{sets, set_len, pred.numel() / std::max<index_t>(sets * set_len, 1)};
        StateLossValues v;
        // Scalars cross to the host through read_value / to_host, so a device backend runs it too.
        v.main = v.total = static_cast<double>(read_value(loss_.forward(pred.reshaped(s), target.reshaped(s)).cview()));
        const Tensor<T, cpu> per_set = to_host(loss_.per_set());
        for (index_t b = 0; b < per_set.numel(); ++b) v.per_set.push_back(static_cast<double>(per_set[b]));
        dpred = Tensor<T, B>(pred.shape());
        const T one(1);
        loss_.backward(from_host<T, B>(&one, Shape{}).cview(), dpred.reshaped(s));
        return v;
    }
    Tensor<T, B> dpred;

private:
    loss::SetLoss<T, B> loss_;
};

} // namespace baseline_detail

/// embedsum: project_out(pert_encoder(p) + basal_encoder(x)), cell by cell.
template <Scalar T, Backend B, class Loss>
    requires SetLossPolicy<Loss>
class EmbedSum {
public:
    using value_type = T;
    using backend = B;

    explicit EmbedSum(const StateConfig& c) : cfg_(c), head_(c, Loss::kind) {
        require(c.input_dim >= 1 && c.pert_dim >= 1 && c.hidden >= 1 && c.out_dim() >= 1, "EmbedSum: sizes must be positive");
        pert_encoder = nn::Mlp<T, B>(c.pert_dim, c.hidden, c.hidden, c.n_encoder_layers, c.dropout, ActivationKind::gelu, 1);
        basal_encoder = nn::Mlp<T, B>(c.input_dim, c.hidden, c.hidden, c.n_encoder_layers, c.dropout, ActivationKind::gelu, 2);
        project_out = nn::Mlp<T, B>(c.hidden, c.out_dim(), c.hidden, c.n_decoder_layers, c.dropout, ActivationKind::gelu, 3);
    }
    const StateConfig& config() const noexcept { return cfg_; }

    void reset_parameters(Generator& g) {
        pert_encoder.reset_parameters(g);
        basal_encoder.reset_parameters(g);
        project_out.reset_parameters(g);
    }

    /// pert [B·S, pert_dim] / ctrl [B·S, input_dim] or [B, S, ·]; batch must be empty.
    StatePrediction<T, B> forward(ConstView<T, B> pert, ConstView<T, B> ctrl, std::span<const index_t> batch = {}, const Context& ctx = {}) {
        require(batch.empty(), "EmbedSum: has no batch encoder");
        require(pert.rank() == ctrl.rank() && pert.shape().rows() == ctrl.shape().rows(), "EmbedSum: pert {} and ctrl {} hold different cells",
                pert.shape(), ctrl.shape());
        rank_ = pert.rank();
        set_len_ = rank_ == 3 ? pert.size(1) : cfg_.cell_set_len;
        n_ = pert.shape().rows();
        require(n_ % set_len_ == 0, "EmbedSum: {} cells do not split into sets of {}", n_, set_len_);
        Tensor<T, B> x = pert_encoder.forward(pert.reshaped(Shape{n_, cfg_.pert_dim}), ctx);
        const Tensor<T, B> b = basal_encoder.forward(ctrl.reshaped(Shape{n_, cfg_.input_dim}), ctx);
        ops::accumulate(B{}, b.data(), x.data(), x.numel());
        Tensor<T, B> y = project_out.forward(x.cview(), ctx);
        if (cfg_.apply_relu) y = relu_.forward(y.cview(), ctx);
        pred_ = y;
        StatePrediction<T, B> out;
        out.pred = std::move(y);
        if (rank_ == 3) out.pred.reshape(Shape{n_ / set_len_, set_len_, cfg_.out_dim()});
        return out;
    }
    void backward(ConstView<T, B> dpred, TensorView<T, B> dpert = {}, TensorView<T, B> dctrl = {}) {
        require(n_ > 0 && dpred.numel() == pred_.numel(), "EmbedSum::backward: dpred {} does not match the last prediction", dpred.shape());
        Tensor<T, B> dy = Tensor<T, B>::copy_of(dpred.reshaped(pred_.shape()));
        if (cfg_.apply_relu) {
            Tensor<T, B> d(dy.shape());
            relu_.backward(dy.cview(), d.view());
            dy = std::move(d);
        }
        Tensor<T, B> dx(Shape{n_, cfg_.hidden});
        project_out.backward(dy.cview(), dx.view());
        pert_encoder.backward(dx.cview(), dpert.data() ? dpert.reshaped(Shape{n_, cfg_.pert_dim}) : TensorView<T, B>());
        basal_encoder.backward(dx.cview(), dctrl.data() ? dctrl.reshaped(Shape{n_, cfg_.input_dim}) : TensorView<T, B>());
    }
    StateLossValues loss(ConstView<T, B> target, ConstView<T, B> = {}) {
        require(n_ > 0, "EmbedSum::loss: no forward has run");
        return head_.compute(pred_, target, n_ / set_len_, set_len_);
    }
    void backward() { backward(head_.dpred.cview()); }
    StateLossValues train_step(ConstView<T, B> pert, ConstView<T, B> ctrl, ConstView<T, B> target, ConstView<T, B> = {},
                               std::span<const index_t> batch = {}, const Context& ctx = {}) {
        forward(pert, ctrl, batch, ctx);
        StateLossValues v = loss(target);
        backward();
        return v;
    }
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        pert_encoder.visit_parameters(f, prefix + "pert_encoder.");
        basal_encoder.visit_parameters(f, prefix + "basal_encoder.");
        project_out.visit_parameters(f, prefix + "project_out.");
    }

    nn::Mlp<T, B> pert_encoder, basal_encoder, project_out;

private:
    StateConfig cfg_;
    baseline_detail::SetLossHead<T, B> head_;
    nn::Activation<T, B> relu_{ActivationKind::relu};
    int rank_ = 2;
    index_t n_ = 0, set_len_ = 1;
    Tensor<T, B> pred_;
};

/// pseudobulk: one token per set (the mean of the encoded cells) through the backbone, broadcast back.
template <Scalar T, Backend B, class Backbone, class Loss>
    requires BackbonePolicy<Backbone, T, B> && SetLossPolicy<Loss>
class Pseudobulk {
public:
    using value_type = T;
    using backend = B;
    using backbone_type = typename Backbone::template module<T, B>;

    explicit Pseudobulk(const StateConfig& config) : cfg_(resolved(config)), head_(cfg_, Loss::kind) {
        const StateConfig& c = cfg_;
        require(c.input_dim >= 1 && c.pert_dim >= 1 && c.hidden >= 1 && c.out_dim() >= 1, "Pseudobulk: sizes must be positive");
        require(c.backbone.hidden == c.hidden, "Pseudobulk: backbone hidden size {} differs from hidden {}", c.backbone.hidden, c.hidden);
        pert_encoder = nn::Mlp<T, B>(c.pert_dim, c.hidden, c.hidden, c.n_encoder_layers, c.dropout, ActivationKind::gelu, 1);
        basal_encoder = nn::Mlp<T, B>(c.input_dim, c.hidden, c.hidden, c.n_encoder_layers, c.dropout, ActivationKind::gelu, 2);
        transformer_backbone = backbone_type(c.backbone);
        project_out = nn::Mlp<T, B>(c.hidden, c.out_dim(), c.hidden, c.n_decoder_layers, c.dropout, ActivationKind::gelu, 3);
    }
    const StateConfig& config() const noexcept { return cfg_; }

    void reset_parameters(Generator& g) {
        pert_encoder.reset_parameters(g);
        basal_encoder.reset_parameters(g);
        transformer_backbone.reset_parameters(g);
        project_out.reset_parameters(g);
    }

    StatePrediction<T, B> forward(ConstView<T, B> pert, ConstView<T, B> ctrl, std::span<const index_t> batch = {}, const Context& ctx = {}) {
        const StateConfig& c = cfg_;
        require(batch.empty(), "Pseudobulk: has no batch encoder");
        require(pert.rank() == ctrl.rank() && pert.shape().rows() == ctrl.shape().rows(),
                "Pseudobulk: pert {} and ctrl {} hold different cells", pert.shape(), ctrl.shape());
        rank_ = pert.rank();
        set_len_ = rank_ == 3 ? pert.size(1) : c.cell_set_len;
        n_ = pert.shape().rows();
        require(set_len_ >= 1 && n_ % set_len_ == 0, "Pseudobulk: {} cells do not split into sets of {}", n_, set_len_);
        sets_ = n_ / set_len_;
        const index_t H = c.hidden;
        Tensor<T, B> x = pert_encoder.forward(pert.reshaped(Shape{n_, c.pert_dim}), ctx);
        basal_ = basal_encoder.forward(ctrl.reshaped(Shape{n_, c.input_dim}), ctx);
        ops::accumulate(B{}, basal_.data(), x.data(), x.numel());
        Tensor<T, B> pooled(Shape{sets_, 1, H});
        for (index_t s = 0; s < sets_; ++s)
            for (index_t i = 0; i < set_len_; ++i)
                for (index_t h = 0; h < H; ++h) pooled[s * H + h] += x[(s * set_len_ + i) * H + h];
        for (index_t k = 0; k < pooled.numel(); ++k) pooled[k] /= static_cast<T>(set_len_);
        const Tensor<T, B> token = transformer_backbone.forward(pooled.cview(), ctx);
        Tensor<T, B> z = Tensor<T, B>::uninitialized(Shape{n_, H});
        for (index_t s = 0; s < sets_; ++s)
            for (index_t i = 0; i < set_len_; ++i) std::copy_n(token.data() + s * H, H, z.data() + (s * set_len_ + i) * H);
        if (c.predict_residual) ops::accumulate(B{}, basal_.data(), z.data(), z.numel());
        Tensor<T, B> y = project_out.forward(z.cview(), ctx);
        if (c.apply_relu) y = relu_.forward(y.cview(), ctx);
        pred_ = y;
        StatePrediction<T, B> out;
        out.pred = std::move(y);
        if (rank_ == 3) out.pred.reshape(Shape{sets_, set_len_, c.out_dim()});
        return out;
    }
    void backward(ConstView<T, B> dpred, TensorView<T, B> dpert = {}, TensorView<T, B> dctrl = {}) {
        const StateConfig& c = cfg_;
        const index_t H = c.hidden;
        require(n_ > 0 && dpred.numel() == pred_.numel(), "Pseudobulk::backward: dpred {} does not match the last prediction",
                dpred.shape());
        Tensor<T, B> dy = Tensor<T, B>::copy_of(dpred.reshaped(pred_.shape()));
        if (c.apply_relu) {
            Tensor<T, B> d(dy.shape());
            relu_.backward(dy.cview(), d.view());
            dy = std::move(d);
        }
        Tensor<T, B> dz(Shape{n_, H});
        project_out.backward(dy.cview(), dz.view());
        Tensor<T, B> dtoken(Shape{sets_, 1, H});
        for (index_t s = 0; s < sets_; ++s)
            for (index_t i = 0; i < set_len_; ++i)
                for (index_t h = 0; h < H; ++h) dtoken[s * H + h] += dz[(s * set_len_ + i) * H + h];
        Tensor<T, B> dpooled(Shape{sets_, 1, H});
        transformer_backbone.backward(dtoken.cview(), dpooled.view());
        Tensor<T, B> dx(Shape{n_, H});  // d(seq): the pooled mean's gradient, spread over the set
        for (index_t s = 0; s < sets_; ++s)
            for (index_t i = 0; i < set_len_; ++i)
                for (index_t h = 0; h < H; ++h) dx[(s * set_len_ + i) * H + h] = dpooled[s * H + h] / static_cast<T>(set_len_);
        Tensor<T, B> dbasal = Tensor<T, B>::copy_of(dx.cview());
        if (c.predict_residual) ops::accumulate(B{}, dz.data(), dbasal.data(), dz.numel());
        pert_encoder.backward(dx.cview(), dpert.data() ? dpert.reshaped(Shape{n_, c.pert_dim}) : TensorView<T, B>());
        basal_encoder.backward(dbasal.cview(), dctrl.data() ? dctrl.reshaped(Shape{n_, c.input_dim}) : TensorView<T, B>());
    }
    StateLossValues loss(ConstView<T, B> target, ConstView<T, B> = {}) {
        require(n_ > 0, "Pseudobulk::loss: no forward has run");
        return head_.compute(pred_, target, sets_, set_len_);
    }
    void backward() { backward(head_.dpred.cview()); }
    StateLossValues train_step(ConstView<T, B> pert, ConstView<T, B> ctrl, ConstView<T, B> target, ConstView<T, B> = {},
                               std::span<const index_t> batch = {}, const Context& ctx = {}) {
        forward(pert, ctrl, batch, ctx);
        StateLossValues v = loss(target);
        backward();
        return v;
    }
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        pert_encoder.visit_parameters(f, prefix + "pert_encoder.");
        basal_encoder.visit_parameters(f, prefix + "basal_encoder.");
        transformer_backbone.visit_parameters(f, prefix + "transformer_backbone.");
        project_out.visit_parameters(f, prefix + "project_out.");
    }

    nn::Mlp<T, B> pert_encoder, basal_encoder;
    backbone_type transformer_backbone;
    nn::Mlp<T, B> project_out;

private:
    static StateConfig resolved(StateConfig c) {
        if (c.backbone.hidden == 0) c.backbone.hidden = c.hidden;
        return c;
    }
    StateConfig cfg_;
    baseline_detail::SetLossHead<T, B> head_;
    nn::Activation<T, B> relu_{ActivationKind::relu};
    int rank_ = 2;
    index_t n_ = 0, sets_ = 0, set_len_ = 1;
    Tensor<T, B> basal_, pred_;
};

} // namespace celltx
