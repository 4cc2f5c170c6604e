#pragma once
// PerturbationTask<Model>: a set-to-set perturbation model (StateTransition, EmbedSum, Pseudobulk)
// with its Perturb-seq cells, as a train::TrainableModel, so the shared Trainer fits it.
//  - a training "sample" is one set of the epoch: the sampler's sets (one (cell type,
//    perturbation) group each, S cells, short groups resampled) are redrawn in begin_epoch(e),
//    and every perturbed cell is paired with a control cell drawn for that epoch (ControlMatcher);
//  - loss_backward: the sets of a batch as [b, S, ·] tensors, model.train_step (the model's own
//    set loss; nothing is z-scored: label_columns() is 0); the sets are gathered on the host and,
//    for a model on a device backend, uploaded;
//  - validate: the mean shift of every perturbation predicted on the validation cells (each set
//    from matched validation controls) against the real one, both relative to the validation
//    controls' mean, each z-scored over the genes and concatenated: the trainer's Pearson of them
//    is exactly cell-eval's pearson_delta (the mean over perturbations), which picks the best
//    checkpoint (its MSE is then one of z-scores, not of expression).
// predict_cells() predicts any list of cells the same way (the evaluation and the predict command).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/models/state_baselines.hpp"
#include "celltx/train/set_sampler.hpp"
#include "celltx/train/trainer.hpp"

namespace celltx::train {

/// Per-cell data every perturbation model reads (views: the owner keeps them alive).
template <Scalar T>
struct PerturbationData {
    ConstView<T> expression;          ///< [cells, genes]
    ConstView<T> perturbation_table;  ///< [perturbations, pert_dim]: each perturbation's vector (one-hot or features)
    std::span<const index_t> perturbation, cell_type, batch;
    index_t control = -1;

    index_t cells() const { return expression.size(0); }
    index_t genes() const { return expression.size(1); }
    index_t pert_dim() const { return perturbation_table.size(1); }
    void validate() const {
        require(expression.rank() == 2 && perturbation_table.rank() == 2, "PerturbationData: expression {} and table {} must be matrices",
                expression.shape(), perturbation_table.shape());
        const auto n = static_cast<std::size_t>(cells());
        require(perturbation.size() == n && cell_type.size() == n && batch.size() == n,
                "PerturbationData: {} cells but {} / {} / {} perturbation / cell type / batch labels", n, perturbation.size(),
                cell_type.size(), batch.size());
        for (index_t p : perturbation)
            require(p >= 0 && p < perturbation_table.size(0), "PerturbationData: perturbation {} has no row in the table of {}", p,
                    perturbation_table.size(0));
        require(control >= 0 && control < perturbation_table.size(0), "PerturbationData: control {} is not a perturbation", control);
    }
};

/// The cells of `cells` that are controls.
template <Scalar T>
std::vector<index_t> control_cells(const PerturbationData<T>& d, std::span<const index_t> cells) {
    std::vector<index_t> out;
    for (index_t c : cells)
        if (d.perturbation[c] == d.control) out.push_back(c);
    return out;
}

/// Copies rows `rows` of m into out (row-major, [rows.size(), m.cols]).
template <Scalar T>
void gather_rows(ConstView<T> m, std::span<const index_t> rows, T* out) {
    const index_t w = m.size(1);
    for (std::size_t i = 0; i < rows.size(); ++i) std::copy_n(m.data() + rows[i] * w, w, out + static_cast<index_t>(i) * w);
}

/// One set's inputs: every cell's perturbation vector and its matched control cell.
template <Scalar T>
void set_inputs(const PerturbationData<T>& d, const CellSet& s, const ControlMatcher& m, std::uint64_t epoch, T* pert, T* ctrl) {
    const index_t pd = d.pert_dim(), G = d.genes();
    for (std::size_t i = 0; i < s.cells.size(); ++i) {
        std::copy_n(d.perturbation_table.data() + s.perturbation * pd, pd, pert + static_cast<index_t>(i) * pd);
        const index_t c = m.draw(s.cells[i], epoch);
        std::copy_n(d.expression.data() + c * G, G, ctrl + static_cast<index_t>(i) * G);
    }
}

/// Predictions [cells.size(), genes] for `cells`, in that order: each (cell type, perturbation)
/// group cut into sets of at most set_len cells, each cell starting from a control drawn by
/// `controls` (epoch `epoch`). With pass_controls, control cells are copied, not predicted.
template <class Model, Scalar T>
Tensor<T> predict_cells(Model& model, const PerturbationData<T>& d, std::span<const index_t> cells, const ControlMatcher& controls,
                        index_t set_len, bool pass_controls = true, std::uint64_t epoch = 0) {
    const index_t G = d.genes(), pd = d.pert_dim();
    Tensor<T> out(Shape{static_cast<index_t>(cells.size()), G});
    std::vector<index_t> where(static_cast<std::size_t>(d.cells()), -1);
    std::vector<index_t> todo;
    for (std::size_t i = 0; i < cells.size(); ++i) {
        where[cells[i]] = static_cast<index_t>(i);
        if (pass_controls && d.perturbation[cells[i]] == d.control) std::copy_n(d.expression.data() + cells[i] * G, G, out.data() + static_cast<index_t>(i) * G);
        else todo.push_back(cells[i]);
    }
    const SetSampler sampler(todo, d.cell_type, d.perturbation, set_len, 0);
    for (const CellSet& s : sampler.epoch(0, false)) {
        const index_t n = static_cast<index_t>(s.cells.size());
        Tensor<T> pert = Tensor<T>::uninitialized(Shape{n, pd}), ctrl = Tensor<T>::uninitialized(Shape{n, G});
        set_inputs(d, s, controls, epoch, pert.data(), ctrl.data());
        std::vector<index_t> batch;
        if constexpr (requires { Model::has_batch_embedding; }) {
            if constexpr (Model::has_batch_embedding)
                for (index_t c : s.cells) batch.push_back(d.batch[c]);
        }
        const SetInput<T> in{s.perturbation, s.cell_type, pert.cview(), ctrl.cview(), batch};
        const Tensor<T> y = predict_set(model, in);
        for (index_t i = 0; i < n; ++i) std::copy_n(y.data() + i * G, G, out.data() + where[s.cells[i]] * G);
    }
    return out;
}

template <class Model>
class PerturbationTask {
public:
    using value_type = typename Model::value_type;
    using backend = typename Model::backend;
    using T = value_type;

    /// train / validation: cell indices of `data` (the validation controls are the validation
    /// split's control cells). The model, the data and the lists must outlive the task.
    PerturbationTask(Model& model, PerturbationData<T> data, std::vector<index_t> train, std::vector<index_t> validation, index_t set_len,
                     std::uint64_t seed, bool match_batch = true)
        : model_(model), data_(data), train_(std::move(train)), val_(std::move(validation)), set_len_(set_len) {
        data_.validate();
        const std::vector<index_t> tc = control_cells(data_, train_), vc = control_cells(data_, val_);
        require(!tc.empty(), "PerturbationTask: the training cells hold no control cells");
        sampler_ = SetSampler(train_, data_.cell_type, data_.perturbation, set_len, seed);
        train_controls_ = ControlMatcher(data_.cell_type, data_.batch, tc, seed, match_batch);
        if (!vc.empty()) val_controls_ = ControlMatcher(data_.cell_type, data_.batch, vc, seed ^ 0x7a11, match_batch);
        has_val_controls_ = !vc.empty();
        sets_ = sampler_.epoch(0, true);
    }

    Model& model() noexcept { return model_; }
    const SetSampler& sampler() const noexcept { return sampler_; }

    std::size_t train_size() const { return static_cast<std::size_t>(sampler_.sets_per_epoch()); }
    std::size_t label_columns() const noexcept { return 0; }
    std::vector<double> train_labels() const { return {}; }

    /// The sets and control pairings of epoch e (the trainer calls this as each epoch begins).
    void begin_epoch(std::int64_t e) {
        if (e == epoch_) return;
        epoch_ = e;
        sets_ = sampler_.epoch(static_cast<std::uint64_t>(e), true);
    }

    StepLoss loss_backward(std::span<const std::size_t> samples, const LabelScaler&, const Context& ctx) {
        const index_t b = static_cast<index_t>(samples.size()), S = set_len_, G = data_.genes(), pd = data_.pert_dim();
        Tensor<T> pert = Tensor<T>::uninitialized(Shape{b, S, pd}), ctrl = Tensor<T>::uninitialized(Shape{b, S, G}),
                  target = Tensor<T>::uninitialized(Shape{b, S, G});
        std::vector<index_t> batch;
        for (index_t k = 0; k < b; ++k) {
            require(samples[k] < sets_.size(), "PerturbationTask: set {} of {}", samples[k], sets_.size());
            const CellSet& s = sets_[samples[k]];
            set_inputs(data_, s, train_controls_, static_cast<std::uint64_t>(epoch_), pert.data() + k * S * pd, ctrl.data() + k * S * G);
            gather_rows(data_.expression, std::span<const index_t>(s.cells), target.data() + k * S * G);
            if constexpr (requires { Model::has_batch_embedding; }) {
                if constexpr (Model::has_batch_embedding)
                    for (index_t c : s.cells) batch.push_back(data_.batch[c]);
            }
        }
        StateLossValues v;
        if constexpr (backend::is_device) {  // the sets are gathered on the host and uploaded
            const Tensor<T, backend> p = pert.template to<backend>(), c = ctrl.template to<backend>(), t = target.template to<backend>();
            v = model_.train_step(p.cview(), c.cview(), t.cview(), {}, batch, ctx);
        } else {
            v = model_.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, batch, ctx);
        }
        return {v.total, v.main, v.total - v.main};
    }

    /// Predicted vs real mean shift of every validation perturbation, flattened over (perturbation, gene).
    Evaluation validate(const LabelScaler&) {
        Evaluation e;
        if (!has_val_controls_) return e;
        std::vector<index_t> perturbed;
        for (index_t c : val_)
            if (data_.perturbation[c] != data_.control) perturbed.push_back(c);
        if (perturbed.empty()) return e;
        const Tensor<T> pred = predict_cells(model_, data_, perturbed, val_controls_, set_len_);
        const index_t G = data_.genes(), P = data_.perturbation_table.size(0);
        std::vector<double> ctrl_mean(static_cast<std::size_t>(G), 0.0);
        index_t nc = 0;
        for (index_t c : val_)
            if (data_.perturbation[c] == data_.control) {
                for (index_t g = 0; g < G; ++g) ctrl_mean[g] += static_cast<double>(data_.expression[c * G + g]);
                ++nc;
            }
        for (double& v : ctrl_mean) v /= static_cast<double>(nc);
        std::vector<std::vector<double>> sp(static_cast<std::size_t>(P)), sr(static_cast<std::size_t>(P));
        std::vector<index_t> n(static_cast<std::size_t>(P), 0);
        for (std::size_t i = 0; i < perturbed.size(); ++i) {
            const index_t p = data_.perturbation[perturbed[i]];
            if (sp[p].empty()) sp[p].assign(static_cast<std::size_t>(G), 0.0), sr[p].assign(static_cast<std::size_t>(G), 0.0);
            for (index_t g = 0; g < G; ++g) {
                sp[p][g] += static_cast<double>(pred[static_cast<index_t>(i) * G + g]);
                sr[p][g] += static_cast<double>(data_.expression[perturbed[i] * G + g]);
            }
            ++n[p];
        }
        // Each perturbation's two delta vectors z-scored over the genes: the pooled Pearson of the
        // concatenation is then exactly the mean over perturbations of their Pearson, cell-eval's
        // pearson_delta (a constant vector contributes zeros).
        auto zscore = [G](std::vector<double> v) {
            double m = 0.0, ss = 0.0;
            for (double x : v) m += x;
            m /= static_cast<double>(G);
            for (double& x : v) ss += (x - m) * (x - m);
            const double sd = std::sqrt(ss / static_cast<double>(G));
            for (double& x : v) x = sd > 0.0 ? (x - m) / sd : 0.0;
            return v;
        };
        for (index_t p = 0; p < P; ++p) {
            if (n[p] == 0) continue;
            std::vector<double> dp(static_cast<std::size_t>(G)), dr(static_cast<std::size_t>(G));
            for (index_t g = 0; g < G; ++g) {
                dp[g] = sp[p][g] / static_cast<double>(n[p]) - ctrl_mean[g];
                dr[g] = sr[p][g] / static_cast<double>(n[p]) - ctrl_mean[g];
            }
            dp = zscore(std::move(dp));
            dr = zscore(std::move(dr));
            e.prediction.insert(e.prediction.end(), dp.begin(), dp.end());
            e.truth.insert(e.truth.end(), dr.begin(), dr.end());
        }
        return e;
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        model_.visit_parameters(f, prefix);
    }

private:
    Model& model_;
    PerturbationData<T> data_;
    std::vector<index_t> train_, val_;
    index_t set_len_;
    SetSampler sampler_;
    ControlMatcher train_controls_, val_controls_;
    bool has_val_controls_ = false;
    std::int64_t epoch_ = 0;
    std::vector<CellSet> sets_;
};

} // namespace celltx::train
