#pragma once
// GeneInteractionTask<Model>: a Cell Graph Transformer whose only readout is the gene-interaction
// readout, together with labelled perturbation sets (gene pairs and their ε), as a TrainableModel.
// Optionally the model corrects an additive baseline (models/additive_baseline.hpp): it is then
// trained on targets t_n = y_n − offset(S_n) (or on the targets the caller gives, e.g. the
// baseline's leave-one-out residuals) and predicts offset(S) + model(S). Targets are z-scored by the
// trainer's LabelScaler; predictions come back in label units.
//  - loss_backward: one forward of the samples' sets in training mode, the masked MSE (or log-cosh)
//    of the z-scored targets plus the model's graph term, backward;
//  - validate / predict_gene_interactions: ONE eval forward for all sets (the encoder runs once;
//    Type I computes only the perturbed rows).
// The model may live on any backend: targets are made on the host and uploaded, predictions downloaded.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/models/additive_baseline.hpp"
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/policies/loss/multitask_loss.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/train/label_scaler.hpp"
#include "celltx/train/trainer.hpp"

namespace celltx::train {

/// Perturbation sets (gene rows) and one label each (NaN: unlabelled).
struct PerturbationSamples {
    std::vector<std::vector<index_t>> sets;
    std::vector<double> labels;

    std::size_t size() const noexcept { return sets.size(); }
    void validate(const char* what) const {
        require(sets.size() == labels.size(), "{}: {} perturbation sets but {} labels", what, sets.size(), labels.size());
    }
};

/// A model the task can drive: one readout (the GI readout), forward/loss_backward as CellGraphTransformer's.
template <class Model>
concept GeneInteractionModel = Model::num_readouts == 1 && requires(Model& m, const PerturbationBatch& b, const Context& ctx) {
    typename Model::value_type;
    typename Model::backend;
    m.forward(b, ctx);
};

/// Predictions in label units: offset(S) + scaler.inverse(model(S)), from one inference forward.
template <GeneInteractionModel Model>
std::vector<double> predict_gene_interactions(Model& model, std::span<const std::vector<index_t>> sets, const LabelScaler& scaler,
                                              const AdditiveBaseline* offset = nullptr) {
    if (sets.empty()) return {};
    const PerturbationBatch batch = PerturbationBatch::from_sets(std::vector<std::vector<index_t>>(sets.begin(), sets.end()));
    const auto out = model.forward(batch, Context::inference());
    using B = typename Model::backend;
    const auto host = [&]() -> decltype(auto) {  // the predictions in host memory (a device model's downloaded)
        if constexpr (B::is_device) return to_host(out.predictions[0]);
        else return (out.predictions[0]);
    };
    const auto& y = host();
    require(y.numel() == static_cast<index_t>(sets.size()), "predict_gene_interactions: {} predictions for {} sets", y.numel(), sets.size());
    std::vector<double> p(sets.size());
    for (std::size_t i = 0; i < sets.size(); ++i) {
        p[i] = scaler.inverse(static_cast<double>(y[static_cast<index_t>(i)]));
        if (offset) p[i] += offset->predict(sets[i]);
    }
    return p;
}

template <GeneInteractionModel Model>
class GeneInteractionTask {
public:
    using value_type = typename Model::value_type;
    using backend = typename Model::backend;
    using T = value_type;

    /// `offset` (optional, must outlive the task): the model corrects it. `train_targets` (optional):
    /// what the model fits, by default the labels minus the offset. `target_clip` > 0 clips the
    /// z-scored targets to [-target_clip, target_clip] (a label transform against heavy tails).
    GeneInteractionTask(Model& model, PerturbationSamples train, PerturbationSamples validation, const AdditiveBaseline* offset = nullptr,
                        std::vector<double> train_targets = {}, loss::PhenotypeLoss loss = loss::PhenotypeLoss::mse, double target_clip = 0.0)
        : model_(model), train_(std::move(train)), val_(std::move(validation)), offset_(offset),
          loss_({{"gi", 1.0, loss}}), clip_(target_clip) {
        require(clip_ >= 0.0 && std::isfinite(clip_), "GeneInteractionTask: target_clip {} must be finite and >= 0", clip_);
        train_.validate("GeneInteractionTask: training samples");
        val_.validate("GeneInteractionTask: validation samples");
        if (train_targets.empty()) {
            targets_ = train_.labels;
            if (offset_)
                for (std::size_t n = 0; n < targets_.size(); ++n) targets_[n] -= offset_->predict(train_.sets[n]);
        } else {
            require(train_targets.size() == train_.size(), "GeneInteractionTask: {} targets for {} training samples", train_targets.size(),
                    train_.size());
            targets_ = std::move(train_targets);
        }
        for (std::size_t n = 0; n < val_.size(); ++n)
            require(std::isfinite(val_.labels[n]), "GeneInteractionTask: validation sample {} has label {}", n, val_.labels[n]);
    }

    Model& model() noexcept { return model_; }
    const PerturbationSamples& train_samples() const noexcept { return train_; }
    const PerturbationSamples& validation_samples() const noexcept { return val_; }
    const AdditiveBaseline* offset() const noexcept { return offset_; }

    std::size_t train_size() const noexcept { return train_.size(); }
    std::size_t label_columns() const noexcept { return 1; }
    std::vector<double> train_labels() const { return targets_; }

    StepLoss loss_backward(std::span<const std::size_t> samples, const LabelScaler& scaler, const Context& ctx) {
        std::vector<std::vector<index_t>> sets;
        sets.reserve(samples.size());
        Tensor<T> y(Shape{static_cast<index_t>(samples.size()), 1});
        for (std::size_t k = 0; k < samples.size(); ++k) {
            require(samples[k] < train_.size(), "GeneInteractionTask: sample {} of {}", samples[k], train_.size());
            sets.push_back(train_.sets[samples[k]]);
            double z = scaler.transform(targets_[samples[k]]);
            if (clip_ > 0.0) z = std::clamp(z, -clip_, clip_);
            y[static_cast<index_t>(k)] = static_cast<T>(z);
        }
        const PerturbationBatch batch = PerturbationBatch::from_sets(sets);
        const auto out = model_.forward(batch, ctx);
        const Tensor<T, backend> y_on_backend = y.template to<backend>();  // uploaded on a device; a copy on the CPU
        const CgtLossValues l = model_.loss_backward(out, {CgtTarget<T, backend>{y_on_backend.cview()}}, loss_);
        return {l.total, l.phenotype, l.graph};
    }

    Evaluation validate(const LabelScaler& scaler) {
        Evaluation e;
        e.prediction = predict_gene_interactions(model_, val_.sets, scaler, offset_);
        e.truth = val_.labels;
        return e;
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        model_.visit_parameters(f, prefix);
    }

private:
    Model& model_;
    PerturbationSamples train_, val_;
    const AdditiveBaseline* offset_;
    std::vector<double> targets_;
    loss::MultiTaskLoss<T, backend> loss_;
    double clip_ = 0.0;
};

} // namespace celltx::train
