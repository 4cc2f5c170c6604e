#pragma once
// Trainer<M>: the training loop every celltx model shares. M is a TrainableModel: it owns its data,
// turns a list of training-sample indices into a mean loss and ASSIGNS its parameter gradients, and
// evaluates its validation samples. The trainer supplies, per epoch e (0-based):
//   order   a shuffle of the training samples that is a pure function of (seed, e) (epoch_order);
//   batches global batch k = order[k·B, min(n, (k+1)·B)); rank r of R takes the positions
//           p ≡ r (mod R) of it (rank_slice), so R ranks together see exactly the single-rank batch;
//   steps   lr from the schedule -> loss_backward -> [gradient seam] -> clip_grad_norm -> AdamW ->
//           schedule step; Context::train(model seed, global step) drives every random draw of the
//           model (dropout, graph row sampling), so a step's randomness is a pure function of
//           (seed, rank, step);
//   epoch   end: validate (MSE, RMSE, Pearson, Spearman, in label units), keep the best epoch by
//           validation Pearson (a NaN is never best), early stopping after `patience` epochs without
//           an improvement larger than `min_delta`, then on_epoch_end(record) (checkpoints, CSV).
// Labels are z-scored with a LabelScaler fitted on the training labels at construction.
// Optional hooks of the model: begin_epoch(e) is called before the first step of every epoch e
// (also after a resume), for data redrawn per epoch (State's sets and control pairings) — it must
// be a pure function of e so that a resume is bit-identical. A third constructor argument limits
// the optimised parameters (LoRA: the adapters and the layers outside the backbone; the rest stays
// frozen because neither clipping nor AdamW sees it).
//
// The gradient seam (data parallelism, a later issue): after loss_backward and before clipping,
// `reduce_gradients(params, local_samples)` is called. Each rank's gradients are the mean over its
// own `local_samples`; an all-reduce (MPI on CPUs, NCCL on GPUs) must replace them, on every rank,
// by Σ_r local_samples_r · g_r / Σ_r local_samples_r, i.e. the gradient of the global batch. Clipping
// and the optimiser then run identically on every rank, so the weights stay equal without being
// broadcast. A rank whose slice is empty (a short last batch) takes part with zero gradients.
// Validation and the loss figures of an epoch are each rank's own.
//
// Checkpoints: visit_state(f) calls f(name, x) for everything besides the model's parameters that a
// bit-identical resume needs: x is std::int64_t&, std::uint64_t&, double&, std::vector<double>& or
// Tensor<T,B>& (the optimiser's moments). A loader assigns them and then calls check_state(). The
// trainer never writes files itself (train/ sits beside io/): io/checkpoint.hpp serialises it.
//
// A non-finite loss throws (naming the step) instead of training on silently.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/concepts.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"
#include "celltx/train/label_scaler.hpp"
#include "celltx/train/lr_schedule.hpp"
#include "celltx/train/metrics.hpp"
#include "celltx/train/parameter_list.hpp"

namespace celltx::train {

/// The loss of one step: the mean over the step's samples (what was backpropagated is `total`).
struct StepLoss {
    double total = 0.0;
    double phenotype = 0.0;  ///< the data term
    double auxiliary = 0.0;  ///< regularisers (the CGT's graph term)
};

/// Validation predictions and labels, in label units, one value per (sample, label column).
struct Evaluation {
    std::vector<double> prediction, truth;
};

/// A model (with its data) that Trainer can train:
///  - value_type, backend: the parameters' scalar and backend;
///  - train_size(): the number of training samples; label_columns(): labels per sample (0: no z-scoring);
///  - train_labels(): the training labels, [train_size × label_columns] row-major (NaN = missing);
///  - loss_backward(samples, scaler, ctx): forward on the training samples with these indices, the
///    mean loss against their z-scored labels, backward (ASSIGNS every parameter gradient);
///  - validate(scaler): predictions and labels of the validation samples in label units (eval mode);
///  - visit_parameters(f, prefix): the parameters, with their PyTorch names.
template <class M>
concept TrainableModel =
    requires(M& m, std::span<const std::size_t> samples, const LabelScaler& scaler, const Context& ctx) {
        typename M::value_type;
        typename M::backend;
        { m.train_size() } -> std::convertible_to<std::size_t>;
        { m.label_columns() } -> std::convertible_to<std::size_t>;
        { m.train_labels() } -> std::convertible_to<std::vector<double>>;
        { m.loss_backward(samples, scaler, ctx) } -> std::convertible_to<StepLoss>;
        { m.validate(scaler) } -> std::convertible_to<Evaluation>;
    } && ParameterVisitable<M, typename M::value_type, typename M::backend>;

struct TrainerOptions {
    std::int64_t epochs = 10;
    std::size_t batch_size = 256;   ///< samples per global batch (all ranks together)
    double lr = 1e-3;               ///< the schedule's peak
    double min_lr_ratio = 0.05;     ///< the schedule's floor, as a fraction of lr
    double warmup_fraction = 0.1;   ///< linear warm-up, as a fraction of each cosine cycle
    std::int64_t cycle_epochs = 0;  ///< cosine cycle length in epochs (warm restarts); 0: one cycle over the run
    double cycle_gamma = 1.0;       ///< the peak is multiplied by this at every restart
    double weight_decay = 1e-8;     ///< AdamW, decoupled
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double clip_norm = 10.0;        ///< gradient 2-norm clipping; <= 0: none
    std::uint64_t seed = 1;         ///< batch order and the model's random draws
    std::int64_t patience = 0;      ///< early stopping after this many epochs without improvement; 0: never
    double min_delta = 0.0;         ///< an improvement of the validation Pearson must exceed this
    std::int64_t rank = 0, world_size = 1;

    void validate() const {
        require(epochs >= 1, "TrainerOptions: epochs = {} must be >= 1", epochs);
        require(batch_size >= 1, "TrainerOptions: batch_size must be >= 1");
        require(std::isfinite(lr) && lr > 0.0, "TrainerOptions: lr = {} must be finite and > 0", lr);
        require(min_lr_ratio >= 0.0 && min_lr_ratio <= 1.0, "TrainerOptions: min_lr_ratio = {} must be in [0, 1]", min_lr_ratio);
        require(warmup_fraction >= 0.0 && warmup_fraction < 1.0, "TrainerOptions: warmup_fraction = {} must be in [0, 1)", warmup_fraction);
        require(cycle_epochs >= 0, "TrainerOptions: cycle_epochs = {} must be >= 0", cycle_epochs);
        require(std::isfinite(cycle_gamma) && cycle_gamma > 0.0, "TrainerOptions: cycle_gamma = {} must be > 0", cycle_gamma);
        require(std::isfinite(clip_norm), "TrainerOptions: clip_norm = {} must be finite", clip_norm);
        require(patience >= 0, "TrainerOptions: patience = {} must be >= 0", patience);
        require(world_size >= 1 && rank >= 0 && rank < world_size, "TrainerOptions: rank {} of world size {}", rank, world_size);
    }
};

inline void to_json(nlohmann::json& j, const TrainerOptions& o) {
    j = nlohmann::json{{"epochs", o.epochs},
                       {"batch_size", o.batch_size},
                       {"lr", o.lr},
                       {"min_lr_ratio", o.min_lr_ratio},
                       {"warmup_fraction", o.warmup_fraction},
                       {"cycle_epochs", o.cycle_epochs},
                       {"cycle_gamma", o.cycle_gamma},
                       {"weight_decay", o.weight_decay},
                       {"beta1", o.beta1},
                       {"beta2", o.beta2},
                       {"eps", o.eps},
                       {"clip_norm", o.clip_norm},
                       {"seed", o.seed},
                       {"patience", o.patience},
                       {"min_delta", o.min_delta},
                       {"rank", o.rank},
                       {"world_size", o.world_size}};
}
/// Every field is required (a checkpoint's configuration is complete); a missing one throws naming it.
inline void from_json(const nlohmann::json& j, TrainerOptions& o) {
    auto get = [&](const char* key, auto& v) {
        if (!j.contains(key)) throw Error(fmt::format("trainer options: the field '{}' is missing", key));
        try {
            j.at(key).get_to(v);
        } catch (const nlohmann::json::exception& e) {
            throw Error(fmt::format("trainer options: the field '{}' is invalid: {}", key, e.what()));
        }
    };
    get("epochs", o.epochs);
    get("batch_size", o.batch_size);
    get("lr", o.lr);
    get("min_lr_ratio", o.min_lr_ratio);
    get("warmup_fraction", o.warmup_fraction);
    get("cycle_epochs", o.cycle_epochs);
    get("cycle_gamma", o.cycle_gamma);
    get("weight_decay", o.weight_decay);
    get("beta1", o.beta1);
    get("beta2", o.beta2);
    get("eps", o.eps);
    get("clip_norm", o.clip_norm);
    get("seed", o.seed);
    get("patience", o.patience);
    get("min_delta", o.min_delta);
    get("rank", o.rank);
    get("world_size", o.world_size);
}

/// One finished epoch.
struct EpochRecord {
    std::int64_t epoch = 0;  ///< 1-based
    std::int64_t step = 0;   ///< global optimiser steps after it
    double train_loss = 0.0, train_phenotype = 0.0, train_auxiliary = 0.0;  ///< sample-weighted means over the epoch
    double lr = 0.0;                                                         ///< of the epoch's last step
    RegressionMetrics validation;
    double seconds = 0.0;             ///< wall time of the epoch, validation included
    double samples_per_second = 0.0;  ///< training samples of this rank per second of training
    bool best = false;                ///< the best validation Pearson so far
};

/// "epoch,step,train_loss,...,best" then one line per record (17 significant digits).
inline std::string metrics_csv(std::span<const EpochRecord> history) {
    std::string s =
        "epoch,step,train_loss,train_phenotype,train_auxiliary,lr,val_mse,val_rmse,val_pearson,val_spearman,val_count,seconds,"
        "samples_per_second,best\n";
    for (const auto& r : history)
        s += fmt::format("{},{},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{},{:.3f},{:.1f},{}\n", r.epoch, r.step,
                         r.train_loss, r.train_phenotype, r.train_auxiliary, r.lr, r.validation.mse, r.validation.rmse,
                         r.validation.pearson, r.validation.spearman, r.validation.count, r.seconds, r.samples_per_second,
                         r.best ? 1 : 0);
    return s;
}

/// Where training stands, for a progress line.
struct Progress {
    std::int64_t epoch = 0, epochs = 0;    ///< epoch 1-based
    std::int64_t batch = 0, batches = 0;   ///< batches done in this epoch, of
    std::int64_t step = 0, total_steps = 0;
    double loss = 0.0;                     ///< mean training loss of the epoch so far
    double lr = 0.0;
    double elapsed_seconds = 0.0;          ///< this process's training time
    double samples_per_second = 0.0;
    double eta_seconds = 0.0;              ///< to the last epoch's end, at this process's pace
};

/// "epoch 3/20  batch 5/7  step 19/140  loss 0.9412  lr 2.1e-03  143 samples/s  elapsed 0:42  ETA 4:31".
inline std::string format_progress(const Progress& p) {
    auto clock = [](double s) {
        const auto t = static_cast<long long>(std::max(0.0, s) + 0.5);
        return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, (t / 60) % 60, t % 60) : fmt::format("{}:{:02d}", t / 60, t % 60);
    };
    return fmt::format("epoch {}/{}  batch {}/{}  step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} samples/s  elapsed {}  ETA {}", p.epoch,
                       p.epochs, p.batch, p.batches, p.step, p.total_steps, p.loss, p.lr, p.samples_per_second, clock(p.elapsed_seconds),
                       clock(p.eta_seconds));
}

/// The training samples of epoch `epoch` in the order they are visited: a Fisher-Yates shuffle of
/// 0..n-1 drawn from CounterRng(seed).substream(epoch) — a pure function of (seed, epoch, n).
inline std::vector<std::size_t> epoch_order(std::uint64_t seed, std::int64_t epoch, std::size_t n) {
    constexpr std::uint64_t shuffle_stream = 0x73687566666C65ull;  // "shuffle"
    const CounterRng rng = CounterRng(seed, shuffle_stream).substream(static_cast<std::uint64_t>(epoch));
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    for (std::size_t i = n; i > 1; --i) std::swap(order[i - 1], order[static_cast<std::size_t>(rng.below(i, i))]);
    return order;
}

/// Rank r's samples of global batch k: the positions p ≡ r (mod world) of order[k·B, min(n, (k+1)·B)).
inline std::vector<std::size_t> rank_slice(std::span<const std::size_t> order, std::size_t batch_size, std::int64_t batch,
                                           std::int64_t rank, std::int64_t world_size) {
    const std::size_t begin = static_cast<std::size_t>(batch) * batch_size, end = std::min(order.size(), begin + batch_size);
    std::vector<std::size_t> s;
    for (std::size_t p = begin + static_cast<std::size_t>(rank); p < end; p += static_cast<std::size_t>(world_size)) s.push_back(order[p]);
    return s;
}

template <TrainableModel M>
class Trainer {
public:
    using value_type = typename M::value_type;
    using backend = typename M::backend;
    using T = value_type;
    using B = backend;

    /// The gradient seam (see the header comment): all-reduce of the gradients across ranks.
    std::function<void(ParameterList<T, B>& params, std::size_t local_samples)> reduce_gradients;
    /// After every epoch's validation, with the trainer's state already at the next epoch (checkpoint here).
    std::function<void(const EpochRecord&)> on_epoch_end;
    /// After every step.
    std::function<void(const Progress&)> on_progress;

    /// The model must outlive the trainer and stay in place (the optimiser points into it).
    Trainer(M& model, const TrainerOptions& o) : Trainer(model, o, collect_parameters<T, B>(model)) {}
    /// Trains only `params` (e.g. LoRA adapters, the rest frozen): the optimiser and clipping see nothing else.
    Trainer(M& model, const TrainerOptions& o, ParameterList<T, B> params)
        : model_(model), opt_(o), params_((o.validate(), std::move(params))),
          adamw_(params_, AdamWOptions{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.weight_decay}),
          schedule_(schedule_options(o, model.train_size())) {
        train_size_ = static_cast<std::int64_t>(model_.train_size());
        require(train_size_ >= 1, "Trainer: the model has no training samples");
        const std::vector<double> labels = model_.train_labels();
        scaler_ = LabelScaler::fit(labels, model_.label_columns());
    }
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    const TrainerOptions& options() const noexcept { return opt_; }
    const LabelScaler& label_scaler() const noexcept { return scaler_; }
    const std::vector<EpochRecord>& history() const noexcept { return history_; }
    AdamW<T, B>& optimizer() noexcept { return adamw_; }
    const CosineAnnealingWarmupRestarts& schedule() const noexcept { return schedule_; }
    const ParameterList<T, B>& parameters() const noexcept { return params_; }

    std::int64_t batches_per_epoch() const noexcept {
        return (train_size_ + static_cast<std::int64_t>(opt_.batch_size) - 1) / static_cast<std::int64_t>(opt_.batch_size);
    }
    std::int64_t total_steps() const noexcept { return opt_.epochs * batches_per_epoch(); }
    /// Epochs finished, batches done in the current epoch, optimiser steps taken.
    std::int64_t epoch() const noexcept { return epoch_; }
    std::int64_t batch() const noexcept { return batch_; }
    std::int64_t step_count() const noexcept { return step_; }
    /// The best validation Pearson and its epoch (1-based; 0 when none yet).
    double best_pearson() const noexcept { return best_pearson_; }
    std::int64_t best_epoch() const noexcept { return best_epoch_; }
    bool stopped_early() const noexcept { return stopped_ != 0; }
    bool finished() const noexcept { return stopped_ != 0 || epoch_ >= opt_.epochs; }
    /// The gradient norm before clipping of the last step (NaN before the first).
    double last_gradient_norm() const noexcept { return grad_norm_; }
    /// The seed of the model's random draws on this rank (the trainer's seed on rank 0).
    std::uint64_t model_seed() const noexcept {
        return opt_.rank == 0 ? opt_.seed : opt_.seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(opt_.rank);
    }

    /// One optimiser step; at the end of an epoch also validation, early stopping and on_epoch_end.
    StepLoss step() {
        require(!finished(), "Trainer::step: training has finished (epoch {} of {}{})", epoch_, opt_.epochs,
                stopped_ ? ", stopped early" : "");
        if (!clock_started_) {
            clock_start_ = Clock::now();
            clock_started_ = true;
        }
        if (epoch_start_time_ < 0) epoch_start_time_ = seconds_since_start();
        if (order_epoch_ != epoch_) {
            order_ = epoch_order(opt_.seed, epoch_, static_cast<std::size_t>(train_size_));
            order_epoch_ = epoch_;
            if constexpr (requires { model_.begin_epoch(epoch_); }) model_.begin_epoch(epoch_);
        }
        const std::vector<std::size_t> samples = rank_slice(order_, opt_.batch_size, batch_, opt_.rank, opt_.world_size);
        adamw_.set_lr(schedule_.lr());
        StepLoss l;
        if (samples.empty()) {
            for (auto& [name, p] : params_) p->grad_for_backward().zero();
        } else {
            l = model_.loss_backward(std::span<const std::size_t>(samples), scaler_, Context::train(model_seed(), static_cast<std::uint64_t>(step_)));
            if (!std::isfinite(l.total))
                throw Error(fmt::format("Trainer: step {} (epoch {}, batch {}): the loss is {} (phenotype {}, auxiliary {}); lower the "
                                        "learning rate ({:.3g}) or check the labels",
                                        step_ + 1, epoch_ + 1, batch_ + 1, l.total, l.phenotype, l.auxiliary, adamw_.lr()));
        }
        if (reduce_gradients) reduce_gradients(params_, samples.size());  // the data-parallel seam
        grad_norm_ = opt_.clip_norm > 0.0 ? clip_grad_norm(params_, opt_.clip_norm) : std::numeric_limits<double>::quiet_NaN();
        last_lr_ = adamw_.lr();
        adamw_.step();
        schedule_.step();
        ++step_;
        ++batch_;
        ++clock_steps_;
        const auto n = static_cast<double>(samples.size());
        sum_loss_ += l.total * n;
        sum_phenotype_ += l.phenotype * n;
        sum_auxiliary_ += l.auxiliary * n;
        epoch_samples_ += static_cast<std::int64_t>(samples.size());
        clock_samples_ += static_cast<std::int64_t>(samples.size());
        if (on_progress) on_progress(progress());
        if (batch_ == batches_per_epoch()) end_epoch();
        return l;
    }

    /// Trains until the last epoch or early stopping; returns the history.
    const std::vector<EpochRecord>& fit() {
        while (!finished()) step();
        return history_;
    }
    /// At most `steps` more steps (fewer when training finishes first); returns the steps taken.
    std::int64_t fit_steps(std::int64_t steps) {
        std::int64_t k = 0;
        for (; k < steps && !finished(); ++k) step();
        return k;
    }

    Progress progress() const {
        Progress p;
        p.epoch = std::min(epoch_ + 1, opt_.epochs);
        p.epochs = opt_.epochs;
        p.batch = batch_;
        p.batches = batches_per_epoch();
        p.step = step_;
        p.total_steps = total_steps();
        p.loss = epoch_samples_ > 0 ? sum_loss_ / static_cast<double>(epoch_samples_) : 0.0;
        p.lr = last_lr_;
        p.elapsed_seconds = seconds_since_start();
        p.samples_per_second = p.elapsed_seconds > 0 ? static_cast<double>(clock_samples_) / p.elapsed_seconds : 0.0;
        const double per_step = clock_steps_ > 0 ? p.elapsed_seconds / static_cast<double>(clock_steps_) : 0.0;
        p.eta_seconds = per_step * static_cast<double>(std::max<std::int64_t>(0, total_steps() - step_));
        return p;
    }

    /// Everything a bit-identical resume needs besides the model's parameters (see the header).
    template <class F>
    void visit_state(F&& f) {
        f("trainer.epoch", epoch_);
        f("trainer.batch", batch_);
        f("trainer.step", step_);
        f("trainer.train_size", train_size_);
        f("trainer.rng_seed", seed_state_);
        f("trainer.epoch_samples", epoch_samples_);
        f("trainer.epoch_loss_sum", sum_loss_);
        f("trainer.epoch_phenotype_sum", sum_phenotype_);
        f("trainer.epoch_auxiliary_sum", sum_auxiliary_);
        f("trainer.best_pearson", best_pearson_);
        f("trainer.best_epoch", best_epoch_);
        f("trainer.bad_epochs", bad_epochs_);
        f("trainer.stopped", stopped_);
        f("trainer.last_lr", last_lr_);
        scaler_.visit_state(f);
        schedule_.visit_state([&](const std::string& name, auto& v) { f("schedule." + name, v); });
        adamw_.visit_state([&](const std::string& name, auto& v) { f("optimizer." + name, v); });
        visit_history(f);
    }

    /// After a load through visit_state: throws unless the state fits this trainer and its model.
    void check_state() {
        require(train_size_ == static_cast<std::int64_t>(model_.train_size()),
                "Trainer: the checkpoint was trained on {} samples but the model now has {} (the data or the split changed)", train_size_,
                model_.train_size());
        require(seed_state_ == opt_.seed, "Trainer: the checkpoint's seed {} differs from the options' seed {}", seed_state_, opt_.seed);
        require(epoch_ >= 0 && epoch_ <= opt_.epochs, "Trainer: the checkpoint is at epoch {} of {}", epoch_, opt_.epochs);
        require(batch_ >= 0 && batch_ < batches_per_epoch(), "Trainer: the checkpoint is at batch {} of an epoch of {}", batch_,
                batches_per_epoch());
        require(step_ == epoch_ * batches_per_epoch() + batch_, "Trainer: the checkpoint's step {} does not match epoch {} and batch {}", step_,
                epoch_, batch_);
        require(schedule_.last_epoch() == step_, "Trainer: the schedule is at step {} but the trainer at {}", schedule_.last_epoch(), step_);
        require(static_cast<std::int64_t>(history_.size()) == epoch_, "Trainer: {} epochs of history for epoch {}", history_.size(), epoch_);
        scaler_.validate();
        require(scaler_.columns() == model_.label_columns(), "Trainer: the checkpoint z-scores {} label columns, the model has {}",
                scaler_.columns(), model_.label_columns());
        order_epoch_ = -1;
        epoch_start_time_ = -1;
    }

private:
    using Clock = std::chrono::steady_clock;

    static CosineWarmupOptions schedule_options(const TrainerOptions& o, std::size_t n) {
        const std::int64_t per_epoch = (static_cast<std::int64_t>(n) + static_cast<std::int64_t>(o.batch_size) - 1) /
                                       static_cast<std::int64_t>(o.batch_size);
        const std::int64_t cycle = std::max<std::int64_t>(1, (o.cycle_epochs > 0 ? o.cycle_epochs : o.epochs) * per_epoch);
        const auto warmup = std::min<std::int64_t>(cycle - 1, static_cast<std::int64_t>(std::llround(o.warmup_fraction * static_cast<double>(cycle))));
        return {.first_cycle_steps = cycle, .cycle_mult = 1.0, .max_lr = o.lr, .min_lr = o.lr * o.min_lr_ratio, .warmup_steps = warmup,
                .gamma = o.cycle_gamma};
    }

    double seconds_since_start() const {
        return clock_started_ ? std::chrono::duration<double>(Clock::now() - clock_start_).count() : 0.0;
    }

    void end_epoch() {
        const Evaluation ev = model_.validate(scaler_);
        EpochRecord r;
        r.epoch = epoch_ + 1;
        r.step = step_;
        const double n = static_cast<double>(std::max<std::int64_t>(1, epoch_samples_));
        r.train_loss = sum_loss_ / n;
        r.train_phenotype = sum_phenotype_ / n;
        r.train_auxiliary = sum_auxiliary_ / n;
        r.lr = last_lr_;
        if (!ev.truth.empty()) r.validation = regression_metrics(ev.prediction, ev.truth);
        const double now = seconds_since_start();
        r.seconds = now - std::max(0.0, epoch_start_time_);
        r.samples_per_second = r.seconds > 0 ? static_cast<double>(epoch_samples_) / r.seconds : 0.0;
        // Without validation samples the latest epoch is the best one.
        r.best = ev.truth.empty() || (std::isfinite(r.validation.pearson) &&
                                      (best_epoch_ == 0 || r.validation.pearson > best_pearson_ + opt_.min_delta));
        if (r.best) {
            best_pearson_ = r.validation.pearson;
            best_epoch_ = r.epoch;
            bad_epochs_ = 0;
        } else {
            ++bad_epochs_;
            if (opt_.patience > 0 && bad_epochs_ >= opt_.patience) stopped_ = 1;
        }
        history_.push_back(r);
        ++epoch_;
        batch_ = 0;
        epoch_samples_ = 0;
        sum_loss_ = sum_phenotype_ = sum_auxiliary_ = 0.0;
        epoch_start_time_ = -1;
        if (on_epoch_end) on_epoch_end(history_.back());
    }

    /// The history as columns of doubles: read for a save, written (then turned into records) by a load.
    template <class F>
    void visit_history(F& f) {
        constexpr std::size_t k = 14;
        static constexpr const char* names[k] = {"epoch",        "step",    "train_loss", "train_phenotype", "train_auxiliary",
                                                 "lr",           "val_mse", "val_rmse",   "val_pearson",     "val_spearman",
                                                 "val_count",    "seconds", "samples_per_second", "best"};
        std::vector<std::vector<double>> cols(k);
        for (const auto& r : history_) {
            const double v[k] = {static_cast<double>(r.epoch), static_cast<double>(r.step), r.train_loss, r.train_phenotype,
                                 r.train_auxiliary, r.lr, r.validation.mse, r.validation.rmse, r.validation.pearson,
                                 r.validation.spearman, static_cast<double>(r.validation.count), r.seconds, r.samples_per_second,
                                 r.best ? 1.0 : 0.0};
            for (std::size_t c = 0; c < k; ++c) cols[c].push_back(v[c]);
        }
        for (std::size_t c = 0; c < k; ++c) f(std::string("history.") + names[c], cols[c]);
        const std::size_t rows = cols[0].size();
        for (std::size_t c = 0; c < k; ++c)
            require(cols[c].size() == rows, "Trainer: history column '{}' has {} values, 'epoch' has {}", names[c], cols[c].size(), rows);
        history_.clear();
        for (std::size_t i = 0; i < rows; ++i) {
            EpochRecord r;
            r.epoch = static_cast<std::int64_t>(cols[0][i]);
            r.step = static_cast<std::int64_t>(cols[1][i]);
            r.train_loss = cols[2][i];
            r.train_phenotype = cols[3][i];
            r.train_auxiliary = cols[4][i];
            r.lr = cols[5][i];
            r.validation.mse = cols[6][i];
            r.validation.rmse = cols[7][i];
            r.validation.pearson = cols[8][i];
            r.validation.spearman = cols[9][i];
            r.validation.count = static_cast<std::size_t>(cols[10][i]);
            r.seconds = cols[11][i];
            r.samples_per_second = cols[12][i];
            r.best = cols[13][i] != 0.0;
            history_.push_back(r);
        }
    }

    M& model_;
    TrainerOptions opt_;
    ParameterList<T, B> params_;
    AdamW<T, B> adamw_;
    CosineAnnealingWarmupRestarts schedule_;
    LabelScaler scaler_;

    // Checkpointed state.
    std::int64_t epoch_ = 0, batch_ = 0, step_ = 0, train_size_ = 0;
    std::uint64_t seed_state_ = opt_.seed;
    std::int64_t epoch_samples_ = 0;
    double sum_loss_ = 0.0, sum_phenotype_ = 0.0, sum_auxiliary_ = 0.0;
    double best_pearson_ = -std::numeric_limits<double>::infinity();
    std::int64_t best_epoch_ = 0, bad_epochs_ = 0, stopped_ = 0;
    double last_lr_ = 0.0;
    std::vector<EpochRecord> history_;

    // Per process.
    std::vector<std::size_t> order_;
    std::int64_t order_epoch_ = -1;
    double grad_norm_ = std::numeric_limits<double>::quiet_NaN();
    Clock::time_point clock_start_{};
    bool clock_started_ = false;
    std::int64_t clock_steps_ = 0, clock_samples_ = 0;
    double epoch_start_time_ = -1;
};

} // namespace celltx::train
