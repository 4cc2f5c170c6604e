#pragma once
// Learning-rate schedules, driven like torch's: build the schedule (it fixes the first lr), then
// after every optimiser step call step() and hand lr() to the optimiser (opt.set_lr(s.lr())).
//
// LrSchedule: lr() is the rate for the next optimiser step; step() advances one step; step_to(e)
// jumps to epoch e (torch's scheduler.step(epoch)); last_epoch() counts steps (0 after construction).
// ConstantLR: torch.optim.lr_scheduler.ConstantLR (lr·factor before total_iters, then lr); the
// defaults here (factor 1, total_iters 0) give a truly constant rate (torch's are 1/3 and 5).
// CosineAnnealingWarmupRestarts: katsura-jp/pytorch-cosine-annealing-with-warmup, quirks included:
// the lr right after construction is min_lr even without warm-up; step_to() past the first cycle
// uses the closed-form cycle index (log formula when cycle_mult != 1, which ignores warm-up in cycle
// lengths) and step_to() inside the first cycle keeps the current cycle count (so its gamma power).
// visit_state(f) calls f(name, double&) / f(name, std::int64_t&) on everything a checkpoint needs.
#include <cmath>
#include <cstdint>
#include <numbers>
#include "celltx/core/error.hpp"

namespace celltx::train {

/// What a training loop needs from a schedule.
class LrSchedule {
public:
    virtual ~LrSchedule() = default;
    /// The learning rate for the next optimiser step.
    virtual double lr() const = 0;
    /// Advances by one step (call after each optimiser step).
    virtual void step() = 0;
    /// Jumps to `epoch` (>= 0), as torch's scheduler.step(epoch).
    virtual void step_to(std::int64_t epoch) = 0;
    virtual std::int64_t last_epoch() const = 0;
};

/// lr = base_lr · factor while last_epoch < total_iters, base_lr afterwards.
class ConstantLR final : public LrSchedule {
public:
    explicit ConstantLR(double base_lr, double factor = 1.0, std::int64_t total_iters = 0)
        : base_lr_(base_lr), factor_(factor), total_iters_(total_iters) {
        require(std::isfinite(base_lr) && base_lr >= 0.0, "ConstantLR: base_lr {} must be finite and >= 0", base_lr);
        require(factor >= 0.0 && factor <= 1.0, "ConstantLR: factor {} must be in [0, 1]", factor);
        require(total_iters >= 0, "ConstantLR: total_iters {} must be >= 0", total_iters);
    }

    /// The closed form at any epoch.
    double lr_at(std::int64_t epoch) const { return epoch < total_iters_ ? base_lr_ * factor_ : base_lr_; }
    double lr() const override { return lr_at(last_epoch_); }
    void step() override { ++last_epoch_; }
    void step_to(std::int64_t epoch) override {
        require(epoch >= 0, "ConstantLR::step_to: epoch {} must be >= 0", epoch);
        last_epoch_ = epoch;
    }
    std::int64_t last_epoch() const override { return last_epoch_; }

    template <class F>
    void visit_state(F&& f) {
        f("last_epoch", last_epoch_);
    }

private:
    double base_lr_, factor_;
    std::int64_t total_iters_;
    std::int64_t last_epoch_ = 0;
};

struct CosineWarmupOptions {
    std::int64_t first_cycle_steps = 1;  ///< length of the first cycle, warm-up included
    double cycle_mult = 1.0;             ///< each cycle's post-warm-up length is multiplied by this
    double max_lr = 0.1;                 ///< the first cycle's peak
    double min_lr = 0.001;               ///< the floor (and the warm-up's start)
    std::int64_t warmup_steps = 0;       ///< linear warm-up at the start of every cycle
    double gamma = 1.0;                  ///< max_lr is multiplied by gamma at each restart
};

/// Linear warm-up min_lr -> max_lr, cosine down to min_lr, restart with longer cycles and a lower peak.
class CosineAnnealingWarmupRestarts final : public LrSchedule {
public:
    explicit CosineAnnealingWarmupRestarts(const CosineWarmupOptions& o) : o_(o) {
        constexpr const char* who = "CosineAnnealingWarmupRestarts";
        require(o.first_cycle_steps >= 1, "{}: first_cycle_steps {} must be >= 1", who, o.first_cycle_steps);
        require(o.warmup_steps >= 0 && o.warmup_steps < o.first_cycle_steps,
                "{}: warmup_steps {} must be >= 0 and < first_cycle_steps {}", who, o.warmup_steps, o.first_cycle_steps);
        require(std::isfinite(o.cycle_mult) && o.cycle_mult >= 1.0, "{}: cycle_mult {} must be finite and >= 1", who,
                o.cycle_mult);
        require(std::isfinite(o.max_lr) && o.max_lr >= 0.0, "{}: max_lr {} must be finite and >= 0", who, o.max_lr);
        require(std::isfinite(o.min_lr) && o.min_lr >= 0.0, "{}: min_lr {} must be finite and >= 0", who, o.min_lr);
        require(std::isfinite(o.gamma) && o.gamma >= 0.0, "{}: gamma {} must be finite and >= 0", who, o.gamma);
        // State after torch's implicit first step; the lr itself is then forced to min_lr.
        cur_cycle_steps_ = static_cast<double>(o.first_cycle_steps);
        max_lr_ = o.max_lr;
        lr_ = o.min_lr;
    }

    double lr() const override { return lr_; }
    std::int64_t last_epoch() const override { return last_epoch_; }
    std::int64_t cycle() const noexcept { return cycle_; }
    double step_in_cycle() const noexcept { return step_in_cycle_; }
    double cycle_steps() const noexcept { return cur_cycle_steps_; }
    double max_lr() const noexcept { return max_lr_; }
    const CosineWarmupOptions& options() const noexcept { return o_; }

    void step() override {
        const double warmup = static_cast<double>(o_.warmup_steps);
        step_in_cycle_ += 1.0;
        if (step_in_cycle_ >= cur_cycle_steps_) {
            ++cycle_;
            step_in_cycle_ -= cur_cycle_steps_;
            cur_cycle_steps_ = std::trunc((cur_cycle_steps_ - warmup) * o_.cycle_mult) + warmup;
        }
        finish(last_epoch_ + 1);
    }

    void step_to(std::int64_t epoch) override {
        require(epoch >= 0, "CosineAnnealingWarmupRestarts::step_to: epoch {} must be >= 0", epoch);
        const std::int64_t first = o_.first_cycle_steps;
        if (epoch >= first) {
            if (o_.cycle_mult == 1.0) {
                step_in_cycle_ = static_cast<double>(epoch % first);
                cycle_ = epoch / first;
            } else {
                // Cycle n starts at first·(m^n - 1)/(m - 1): invert for n (warm-up not counted, as upstream).
                const double m = o_.cycle_mult, f = static_cast<double>(first);
                const double x = static_cast<double>(epoch) / f * (m - 1.0) + 1.0;
                const auto n = static_cast<std::int64_t>(std::log(x) / std::log(m));
                cycle_ = n;
                const double mn = std::pow(m, static_cast<double>(n));
                step_in_cycle_ = static_cast<double>(epoch - static_cast<std::int64_t>(f * (mn - 1.0) / (m - 1.0)));
                cur_cycle_steps_ = f * mn;
            }
        } else {
            cur_cycle_steps_ = static_cast<double>(first);
            step_in_cycle_ = static_cast<double>(epoch);
        }
        finish(epoch);
    }

    template <class F>
    void visit_state(F&& f) {
        f("last_epoch", last_epoch_);
        f("cycle", cycle_);
        f("step_in_cycle", step_in_cycle_);
        f("cur_cycle_steps", cur_cycle_steps_);
        f("max_lr", max_lr_);
        f("lr", lr_);
    }

private:
    void finish(std::int64_t epoch) {
        max_lr_ = o_.max_lr * std::pow(o_.gamma, static_cast<double>(cycle_));
        last_epoch_ = epoch;
        lr_ = compute_lr();
    }

    double compute_lr() const {
        const double base = o_.min_lr, warmup = static_cast<double>(o_.warmup_steps);
        if (step_in_cycle_ < warmup) return (max_lr_ - base) * step_in_cycle_ / warmup + base;
        const double phase = std::numbers::pi * (step_in_cycle_ - warmup) / (cur_cycle_steps_ - warmup);
        return base + (max_lr_ - base) * (1.0 + std::cos(phase)) / 2.0;
    }

    CosineWarmupOptions o_;
    std::int64_t last_epoch_ = 0;
    std::int64_t cycle_ = 0;
    double step_in_cycle_ = 0.0;    // a double because upstream's cycle length can be fractional
    double cur_cycle_steps_ = 0.0;
    double max_lr_ = 0.0;
    double lr_ = 0.0;
};

} // namespace celltx::train
