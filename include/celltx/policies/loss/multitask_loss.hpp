#pragma once
// MultiTaskLoss: the CGT phenotype loss over several tasks with missing labels (docs/cell_graph_transformer.md, "multi-task
// loss"): L = Σ_t w_t · (1/|L_t|) Σ_{b ∈ L_t} ℓ_t(b), where ℓ_t(b) is the mean over the labelled
// outputs of sample b of ℓ(ŷ − y) (MSE: r², log-cosh: log cosh r), and L_t is the set of samples with
// at least one labelled output. An output is labelled when its label is not NaN and the optional
// mask (per sample [B], or per output like the prediction) is non-zero. Unlabelled outputs add
// neither value nor gradient (a NaN prediction there is ignored too); a task without labels in the
// batch adds 0.
//  - forward(targets) -> rank-0 tensor L; task_value(t), labelled_samples(t) describe the last call;
//  - backward(dloss, dpreds) ADDS dloss·∂L/∂ŷ_t into dpreds[t] (an empty view skips a task).
// log cosh r = |r| + log1p(exp(−2|r|)) − log 2 (no overflow for large |r|); its derivative is tanh r.
// Predictions hold a few values per sample, so the loss runs on the host: predictions, labels and
// masks are downloaded, the gradients uploaded in backward.
#include <cmath>
#include <initializer_list>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::loss {

enum class PhenotypeLoss { mse, log_cosh };

/// Config names: "mse", "log_cosh" (or "logcosh").
inline PhenotypeLoss parse_phenotype_loss(std::string_view name) {
    if (name == "mse") return PhenotypeLoss::mse;
    if (name == "log_cosh" || name == "logcosh") return PhenotypeLoss::log_cosh;
    throw ShapeError(fmt::format("MultiTaskLoss: unknown loss '{}' (expected mse or log_cosh)", name));
}

/// ℓ(r) and ℓ'(r) of one residual r = ŷ − y, in double.
inline double phenotype_loss_value(PhenotypeLoss k, double r) {
    if (k == PhenotypeLoss::mse) return r * r;
    const double a = std::abs(r);
    return a + std::log1p(std::exp(-2.0 * a)) - std::numbers::ln2;
}
inline double phenotype_loss_derivative(PhenotypeLoss k, double r) { return k == PhenotypeLoss::mse ? 2.0 * r : std::tanh(r); }

struct LossTask {
    std::string name;
    double weight = 1.0;
    PhenotypeLoss kind = PhenotypeLoss::mse;
};

/// One task's batch: prediction [B] or [B, ...] (k_t outputs per sample), label of the same shape
/// (NaN = missing), optional mask [B] or of the prediction's shape (0 = missing).
template <Scalar T, Backend B = cpu>
struct TaskTarget {
    ConstView<T, B> prediction;
    ConstView<T, B> label;
    ConstView<T, B> mask{};
};

template <Scalar T, Backend B = cpu>
class MultiTaskLoss {
public:
    explicit MultiTaskLoss(std::vector<LossTask> tasks) : tasks_(std::move(tasks)) {
        require(!tasks_.empty(), "MultiTaskLoss: no tasks");
        for (const auto& t : tasks_)
            require(std::isfinite(t.weight) && t.weight >= 0.0, "MultiTaskLoss: task '{}' has weight {}", t.name, t.weight);
    }

    const std::vector<LossTask>& tasks() const noexcept { return tasks_; }
    /// Unweighted loss of task t in the last forward (0 without labels).
    double task_value(std::size_t t) const { return values_.at(t); }
    /// Samples of task t with at least one label in the last forward.
    index_t labelled_samples(std::size_t t) const { return labelled_.at(t); }

    /// targets[t] for every task, in the order of the constructor -> rank-0 L.
    Tensor<T, B> forward(std::span<const TaskTarget<T, B>> targets, const Context& = {}) {
        require(targets.size() == tasks_.size(), "MultiTaskLoss: {} targets for {} tasks", targets.size(), tasks_.size());
        grads_.assign(tasks_.size(), Tensor<T, cpu>{});
        values_.assign(tasks_.size(), 0.0);
        labelled_.assign(tasks_.size(), 0);
        double total = 0.0;
        for (std::size_t t = 0; t < tasks_.size(); ++t) total += tasks_[t].weight * task_forward(t, targets[t]);
        const T v = static_cast<T>(total);
        return from_host<T, B>(&v, Shape{});
    }
    Tensor<T, B> forward(std::initializer_list<TaskTarget<T, B>> targets, const Context& ctx = {}) {
        return forward(std::span<const TaskTarget<T, B>>(targets.begin(), targets.size()), ctx);
    }

    void backward(ConstView<T, B> dloss, std::span<const TensorView<T, B>> dpreds) {
        require(dloss.numel() == 1, "MultiTaskLoss::backward: dloss {} must hold one value", dloss.shape());
        require(dpreds.size() == tasks_.size(), "MultiTaskLoss::backward: {} gradients for {} tasks", dpreds.size(), tasks_.size());
        const T s = read_value(dloss);
        for (std::size_t t = 0; t < tasks_.size(); ++t) {
            const TensorView<T, B>& dp = dpreds[t];
            if (!dp.data()) continue;
            require(dp.shape() == grads_[t].shape(), "MultiTaskLoss::backward: task '{}' gradient {} does not match the prediction {}",
                    tasks_[t].name, dp.shape(), grads_[t].shape());
            const Tensor<T, B> g = grads_[t].template to<B>();
            ops::axpby(B{}, dp.numel(), s, g.data(), T(1), dp.data());
        }
    }
    void backward(ConstView<T, B> dloss, std::initializer_list<TensorView<T, B>> dpreds) {
        backward(dloss, std::span<const TensorView<T, B>>(dpreds.begin(), dpreds.size()));
    }

private:
    /// Unweighted task loss; stores w_t·∂(task loss)/∂ŷ in grads_[t].
    double task_forward(std::size_t t, const TaskTarget<T, B>& in) {
        const LossTask& task = tasks_[t];
        const Tensor<T, cpu> p = to_host(in.prediction);
        const Tensor<T, cpu> label = to_host(in.label);
        const Tensor<T, cpu> mask = in.mask.data() ? to_host(in.mask) : Tensor<T, cpu>();
        require(p.rank() >= 1 && p.size(0) >= 0, "MultiTaskLoss: task '{}' prediction {} needs a batch axis", task.name, p.shape());
        require(in.label.shape() == p.shape(), "MultiTaskLoss: task '{}' label {} does not match the prediction {}", task.name,
                in.label.shape(), p.shape());
        const index_t Bn = p.size(0), k = Bn ? p.numel() / Bn : 0;
        const bool has_mask = in.mask.data() != nullptr;
        const bool sample_mask = has_mask && in.mask.numel() == Bn && !(in.mask.shape() == p.shape());
        require(!has_mask || sample_mask || in.mask.shape() == p.shape(),
                "MultiTaskLoss: task '{}' mask {} is neither [{}] nor the prediction's shape {}", task.name, in.mask.shape(), Bn, p.shape());
        grads_[t] = Tensor<T, cpu>(p.shape());
        std::vector<double> per_sample(static_cast<std::size_t>(Bn), 0.0);
        std::vector<index_t> count(static_cast<std::size_t>(Bn), 0);
        auto labelled = [&](index_t b, index_t i) {
            if (has_mask && mask[sample_mask ? b : i] == T(0)) return false;
            const double y = static_cast<double>(label[i]);
            // NaN marks a missing label; an infinite one would turn the weights into NaN silently.
            require(!std::isinf(y), "MultiTaskLoss: task '{}' label at flat index {} is {} (labels are finite, or NaN when missing)",
                    task.name, i, y);
            return !std::isnan(y);
        };
        for (index_t b = 0; b < Bn; ++b)
            for (index_t i = b * k; i < (b + 1) * k; ++i)
                if (labelled(b, i)) {
                    per_sample[static_cast<std::size_t>(b)] +=
                        phenotype_loss_value(task.kind, static_cast<double>(p[i]) - static_cast<double>(label[i]));
                    ++count[static_cast<std::size_t>(b)];
                }
        index_t n = 0;
        for (index_t b = 0; b < Bn; ++b) n += count[static_cast<std::size_t>(b)] > 0;
        labelled_[t] = n;
        if (n == 0) return 0.0;
        double value = 0.0;
        for (index_t b = 0; b < Bn; ++b) {
            const index_t c = count[static_cast<std::size_t>(b)];
            if (c == 0) continue;
            value += per_sample[static_cast<std::size_t>(b)] / static_cast<double>(c);
            const double coef = task.weight / (static_cast<double>(n) * static_cast<double>(c));
            for (index_t i = b * k; i < (b + 1) * k; ++i)
                if (labelled(b, i))
                    grads_[t][i] = static_cast<T>(coef * phenotype_loss_derivative(task.kind, static_cast<double>(p[i]) - static_cast<double>(label[i])));
        }
        values_[t] = value / static_cast<double>(n);
        return values_[t];
    }

    std::vector<LossTask> tasks_;
    // Saved by forward.
    std::vector<Tensor<T, cpu>> grads_;  // w_t·∂(task loss)/∂ŷ, on the host
    std::vector<double> values_;
    std::vector<index_t> labelled_;
};

} // namespace celltx::loss
