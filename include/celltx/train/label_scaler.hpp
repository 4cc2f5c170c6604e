#pragma once
// LabelScaler: z-scoring of regression labels, fitted on the training labels only and stored with a
// checkpoint (so that predictions come back in label units without the data).
//   z = (y - mean_c) / sd_c per label column c; y = mean_c + sd_c · z.
// mean and sd are the training labels' mean and population standard deviation (ddof = 0), NaN
// labels (missing) skipped. A column with fewer than two labels or zero spread gets sd = 1, so it is
// only centred. A scaler with no columns is the identity (models whose labels are not z-scored).
// visit_state(f) calls f("labels.mean", std::vector<double>&) and f("labels.sd", ...).
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>
#include "celltx/core/error.hpp"

namespace celltx::train {

class LabelScaler {
public:
    LabelScaler() = default;

    /// Fits `columns` columns from row-major labels [n, columns].
    static LabelScaler fit(std::span<const double> labels, std::size_t columns) {
        LabelScaler s;
        if (columns == 0) return s;
        require(labels.size() % columns == 0, "LabelScaler: {} labels do not form rows of {} columns", labels.size(), columns);
        s.mean_.assign(columns, 0.0);
        s.sd_.assign(columns, 1.0);
        for (std::size_t c = 0; c < columns; ++c) {
            double sum = 0;
            std::size_t n = 0;
            for (std::size_t i = c; i < labels.size(); i += columns)
                if (!std::isnan(labels[i])) {
                    require(std::isfinite(labels[i]), "LabelScaler: label {} of column {} is infinite", i / columns, c);
                    sum += labels[i];
                    ++n;
                }
            if (n == 0) continue;
            const double m = sum / static_cast<double>(n);
            double ss = 0;
            for (std::size_t i = c; i < labels.size(); i += columns)
                if (!std::isnan(labels[i])) ss += (labels[i] - m) * (labels[i] - m);
            s.mean_[c] = m;
            const double sd = std::sqrt(ss / static_cast<double>(n));
            s.sd_[c] = n >= 2 && sd > 0.0 ? sd : 1.0;
        }
        return s;
    }

    std::size_t columns() const noexcept { return mean_.size(); }
    const std::vector<double>& mean() const noexcept { return mean_; }
    const std::vector<double>& sd() const noexcept { return sd_; }

    /// Label -> z-score (identity without columns).
    double transform(double y, std::size_t column = 0) const {
        if (mean_.empty()) return y;
        check(column);
        return (y - mean_[column]) / sd_[column];
    }
    /// z-score -> label units.
    double inverse(double z, std::size_t column = 0) const {
        if (mean_.empty()) return z;
        check(column);
        return mean_[column] + sd_[column] * z;
    }

    template <class F>
    void visit_state(F&& f) {
        f("labels.mean", mean_);
        f("labels.sd", sd_);
    }

    /// Throws unless mean and sd have the same length and every sd is finite and positive (after a load).
    void validate() const {
        require(mean_.size() == sd_.size(), "LabelScaler: {} means but {} standard deviations", mean_.size(), sd_.size());
        for (std::size_t c = 0; c < sd_.size(); ++c)
            require(std::isfinite(mean_[c]) && std::isfinite(sd_[c]) && sd_[c] > 0.0, "LabelScaler: column {} has mean {} and sd {}", c,
                    mean_[c], sd_[c]);
    }

private:
    void check(std::size_t column) const {
        require(column < mean_.size(), "LabelScaler: column {} of {}", column, mean_.size());
    }
    std::vector<double> mean_, sd_;
};

} // namespace celltx::train
