#pragma once
// Regression metrics of predictions against labels, accumulated in double:
//   MSE = mean (p - y)²,  RMSE = sqrt(MSE),
//   Pearson r = Σ(p - p̄)(y - ȳ) / sqrt(Σ(p - p̄)² Σ(y - ȳ)²)  (two-pass, so large offsets do not cancel),
//   Spearman ρ = Pearson r of the ranks, ties given the average of the ranks they span (scipy's
//   rankdata "average", so ρ equals scipy.stats.spearmanr).
// A correlation is undefined when either side is constant (zero variance) or there are fewer than two
// samples: it is then NaN, which every comparison in the trainer treats as "worse than any number".
// Mismatched sizes, empty inputs and non-finite labels throw; a non-finite prediction makes every
// metric NaN (the trainer reports it and stops rather than continue silently).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"

namespace celltx::train {

/// The metrics of one evaluation.
struct RegressionMetrics {
    std::size_t count = 0;
    double mse = std::numeric_limits<double>::quiet_NaN();
    double rmse = std::numeric_limits<double>::quiet_NaN();
    double pearson = std::numeric_limits<double>::quiet_NaN();
    double spearman = std::numeric_limits<double>::quiet_NaN();
};

namespace metrics_detail {
inline void check_pair(std::span<const double> x, std::span<const double> y, const char* who) {
    require(x.size() == y.size(), "{}: {} predictions for {} labels", who, x.size(), y.size());
}
} // namespace metrics_detail

/// Pearson's r (NaN when undefined: fewer than 2 values or a constant side).
inline double pearson(std::span<const double> x, std::span<const double> y) {
    metrics_detail::check_pair(x, y, "pearson");
    const std::size_t n = x.size();
    if (n < 2) return std::numeric_limits<double>::quiet_NaN();
    const double mx = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(n);
    const double my = std::accumulate(y.begin(), y.end(), 0.0) / static_cast<double>(n);
    double sxy = 0, sxx = 0, syy = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if (!(sxx > 0.0) || !(syy > 0.0)) return std::numeric_limits<double>::quiet_NaN();
    return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

/// 1-based ranks, ties sharing the average of the ranks they span (scipy.stats.rankdata "average").
/// NaN values are not ranked: the caller checks for them first.
inline std::vector<double> average_ranks(std::span<const double> x) {
    const std::size_t n = x.size();
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::vector<double> rank(n);
    for (std::size_t i = 0; i < n;) {
        std::size_t j = i + 1;
        while (j < n && x[order[j]] == x[order[i]]) ++j;
        const double r = 0.5 * static_cast<double>(i + 1 + j);  // mean of the ranks i+1 .. j
        for (std::size_t k = i; k < j; ++k) rank[order[k]] = r;
        i = j;
    }
    return rank;
}

/// Spearman's ρ with average ranks for ties (NaN when undefined).
inline double spearman(std::span<const double> x, std::span<const double> y) {
    metrics_detail::check_pair(x, y, "spearman");
    for (std::size_t i = 0; i < x.size(); ++i)
        if (std::isnan(x[i]) || std::isnan(y[i])) return std::numeric_limits<double>::quiet_NaN();
    const std::vector<double> rx = average_ranks(x), ry = average_ranks(y);
    return pearson(rx, ry);
}

/// MSE, RMSE, Pearson and Spearman of `prediction` against `truth` (same length, at least one value).
inline RegressionMetrics regression_metrics(std::span<const double> prediction, std::span<const double> truth) {
    metrics_detail::check_pair(prediction, truth, "regression_metrics");
    require(!truth.empty(), "regression_metrics: no samples");
    for (std::size_t i = 0; i < truth.size(); ++i)
        require(std::isfinite(truth[i]), "regression_metrics: label {} is {} (labels must be finite)", i, truth[i]);
    RegressionMetrics m;
    m.count = truth.size();
    for (std::size_t i = 0; i < truth.size(); ++i)
        if (!std::isfinite(prediction[i])) return m;  // every metric NaN: a diverged model, reported as such
    double se = 0;
    for (std::size_t i = 0; i < truth.size(); ++i) se += (prediction[i] - truth[i]) * (prediction[i] - truth[i]);
    m.mse = se / static_cast<double>(truth.size());
    m.rmse = std::sqrt(m.mse);
    m.pearson = pearson(prediction, truth);
    m.spearman = spearman(prediction, truth);
    return m;
}

/// "MSE 0.00512  RMSE 0.0716  Pearson 0.412  Spearman 0.377  (n = 1757)".
inline std::string format_metrics(const RegressionMetrics& m) {
    return fmt::format("MSE {:.6g}  RMSE {:.4g}  Pearson {:.4f}  Spearman {:.4f}  (n = {})", m.mse, m.rmse, m.pearson, m.spearman, m.count);
}

} // namespace celltx::train
