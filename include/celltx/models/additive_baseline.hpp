#pragma once
// AdditiveBaseline: the additive model of a perturbation set's phenotype,
//   ŷ(S) = b + Σ_{i ∈ S} a_i        (a gene listed twice counts twice),
// the classic baseline of genetic-interaction prediction (for a pair, ε_ij ≈ b + a_i + a_j). It is fit
// by ridge regression with an unpenalised intercept:
//   minimise Σ_n (y_n − b − Σ_{i∈S_n} a_i)² + λ Σ_i a_i²,
// solved exactly (Cholesky of XᵀX + λD, D = diag(0, 1, …, 1), over the genes seen in training; the
// other genes keep a_i = 0). λ is chosen on the training samples alone by exact leave-one-out
// cross-validation: for a penalised least-squares fit with λ fixed, the LOO residual of sample n is
// e_n / (1 − h_nn) with h_nn = x_nᵀ(XᵀX + λD)⁻¹x_n (the PRESS identity), so every λ of the grid is
// scored without refitting. The smallest mean squared LOO residual wins (ties: the larger λ).
// Cost O(p³) per λ for p genes seen in training (p = 160 for a DCell GO-term file).
// visit_state(f): "additive.gene_effect" (std::vector<double>, N), "additive.intercept",
// "additive.lambda" (double), so that a checkpoint stores the fit next to the model it corrects.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

/// The λ grid scored by leave-one-out, and the scores.
struct RidgeSelection {
    std::vector<double> lambdas;
    std::vector<double> loo_mse;  ///< mean squared leave-one-out residual per λ
    double lambda = 0.0;          ///< the chosen λ
};

class AdditiveBaseline {
public:
    AdditiveBaseline() = default;
    explicit AdditiveBaseline(index_t num_genes) : effect_(static_cast<std::size_t>(num_genes), 0.0) {
        require(num_genes >= 1, "AdditiveBaseline: {} genes", num_genes);
    }

    /// The default λ grid: 10^-3 … 10^4 in half decades (λ counts like samples: XᵀX's diagonal holds
    /// how often each gene occurs).
    static std::vector<double> default_lambdas() {
        std::vector<double> l;
        for (int k = -6; k <= 8; ++k) l.push_back(std::pow(10.0, 0.5 * k));
        return l;
    }

    /// Fits with a fixed λ > 0 (the exact ridge solution).
    static AdditiveBaseline fit(index_t num_genes, std::span<const std::vector<index_t>> sets, std::span<const double> labels,
                                double lambda) {
        AdditiveBaseline m(num_genes);
        Problem p = Problem::build(num_genes, sets, labels);
        m.solve(p, lambda, nullptr);
        return m;
    }

    /// Chooses λ from `lambdas` by exact leave-one-out on (sets, labels), then fits with it.
    static AdditiveBaseline fit_loo(index_t num_genes, std::span<const std::vector<index_t>> sets, std::span<const double> labels,
                                    std::span<const double> lambdas = {}, RidgeSelection* selection = nullptr) {
        std::vector<double> grid(lambdas.begin(), lambdas.end());
        if (grid.empty()) grid = default_lambdas();
        Problem p = Problem::build(num_genes, sets, labels);
        RidgeSelection sel;
        sel.lambdas = grid;
        double best = std::numeric_limits<double>::infinity();
        for (double l : grid) {
            AdditiveBaseline m(num_genes);
            double loo = 0.0;
            m.solve(p, l, &loo);
            sel.loo_mse.push_back(loo);
            if (loo <= best) {  // ties go to the larger λ when the grid ascends
                best = loo;
                sel.lambda = l;
            }
        }
        require(std::isfinite(best), "AdditiveBaseline: no λ of the grid gave a finite leave-one-out error");
        AdditiveBaseline m(num_genes);
        m.solve(p, sel.lambda, nullptr);
        if (selection) *selection = std::move(sel);
        return m;
    }

    /// The leave-one-out residuals y_n − ŷ_{−n}(S_n) of a fit with λ on (sets, labels) (exact, via PRESS).
    static std::vector<double> loo_residuals(index_t num_genes, std::span<const std::vector<index_t>> sets, std::span<const double> labels,
                                             double lambda) {
        AdditiveBaseline m(num_genes);
        Problem p = Problem::build(num_genes, sets, labels);
        std::vector<double> r;
        m.solve(p, lambda, nullptr, &r);
        return r;
    }

    index_t num_genes() const noexcept { return static_cast<index_t>(effect_.size()); }
    double intercept() const noexcept { return intercept_; }
    double lambda() const noexcept { return lambda_; }
    const std::vector<double>& gene_effects() const noexcept { return effect_; }

    /// b + Σ_{i∈S} a_i.
    double predict(std::span<const index_t> set) const {
        double y = intercept_;
        for (index_t g : set) {
            require(g >= 0 && g < num_genes(), "AdditiveBaseline: gene index {} outside [0, {})", g, num_genes());
            y += effect_[static_cast<std::size_t>(g)];
        }
        return y;
    }
    std::vector<double> predict(std::span<const std::vector<index_t>> sets) const {
        std::vector<double> y;
        y.reserve(sets.size());
        for (const auto& s : sets) y.push_back(predict(s));
        return y;
    }

    template <class F>
    void visit_state(F&& f) {
        f("additive.gene_effect", effect_);
        f("additive.intercept", intercept_);
        f("additive.lambda", lambda_);
    }

private:
    /// The normal equations over the genes seen in the samples: column 0 the intercept, column c ≥ 1 gene genes[c-1].
    struct Problem {
        std::vector<index_t> genes;         // compact column -> gene
        std::vector<std::vector<std::pair<std::size_t, double>>> rows;  // sparse x_n (intercept included)
        std::vector<double> xtx, xty;      // dense p×p, p
        std::span<const double> y;
        std::size_t p = 0;

        static Problem build(index_t num_genes, std::span<const std::vector<index_t>> sets, std::span<const double> labels) {
            require(sets.size() == labels.size(), "AdditiveBaseline: {} sets for {} labels", sets.size(), labels.size());
            require(!sets.empty(), "AdditiveBaseline: no training samples");
            Problem pr;
            pr.y = labels;
            std::vector<std::size_t> column(static_cast<std::size_t>(num_genes), 0);
            for (std::size_t n = 0; n < sets.size(); ++n) {
                require(std::isfinite(labels[n]), "AdditiveBaseline: label {} is {}", n, labels[n]);
                for (index_t g : sets[n]) {
                    require(g >= 0 && g < num_genes, "AdditiveBaseline: sample {} has gene index {} outside [0, {})", n, g, num_genes);
                    if (column[static_cast<std::size_t>(g)] == 0) {
                        pr.genes.push_back(g);
                        column[static_cast<std::size_t>(g)] = pr.genes.size();
                    }
                }
            }
            pr.p = pr.genes.size() + 1;
            const std::size_t p = pr.p;
            pr.xtx.assign(p * p, 0.0);
            pr.xty.assign(p, 0.0);
            pr.rows.resize(sets.size());
            for (std::size_t n = 0; n < sets.size(); ++n) {
                auto& row = pr.rows[n];
                row.push_back({0, 1.0});
                for (index_t g : sets[n]) {
                    const std::size_t c = column[static_cast<std::size_t>(g)];
                    auto it = std::find_if(row.begin(), row.end(), [&](const auto& e) { return e.first == c; });
                    if (it == row.end()) row.push_back({c, 1.0});
                    else it->second += 1.0;  // a gene listed twice counts twice
                }
                for (const auto& [a, va] : row) {
                    pr.xty[a] += va * labels[n];
                    for (const auto& [b, vb] : row) pr.xtx[a * p + b] += va * vb;
                }
            }
            return pr;
        }
    };

    /// In-place Cholesky A = LLᵀ (lower triangle); false when A is not positive definite.
    static bool cholesky(std::vector<double>& a, std::size_t p) {
        for (std::size_t j = 0; j < p; ++j) {
            double d = a[j * p + j];
            for (std::size_t k = 0; k < j; ++k) d -= a[j * p + k] * a[j * p + k];
            if (!(d > 0.0)) return false;
            d = std::sqrt(d);
            a[j * p + j] = d;
            for (std::size_t i = j + 1; i < p; ++i) {
                double s = a[i * p + j];
                for (std::size_t k = 0; k < j; ++k) s -= a[i * p + k] * a[j * p + k];
                a[i * p + j] = s / d;
            }
        }
        return true;
    }
    /// Solves LLᵀx = b in place.
    static void cholesky_solve(const std::vector<double>& l, std::size_t p, std::vector<double>& b) {
        for (std::size_t i = 0; i < p; ++i) {
            double s = b[i];
            for (std::size_t k = 0; k < i; ++k) s -= l[i * p + k] * b[k];
            b[i] = s / l[i * p + i];
        }
        for (std::size_t i = p; i-- > 0;) {
            double s = b[i];
            for (std::size_t k = i + 1; k < p; ++k) s -= l[k * p + i] * b[k];
            b[i] = s / l[i * p + i];
        }
    }

    /// Fits with λ; optionally the mean squared LOO residual and the LOO residuals themselves.
    void solve(const Problem& pr, double lambda, double* loo_mse, std::vector<double>* loo = nullptr) {
        require(std::isfinite(lambda) && lambda > 0.0, "AdditiveBaseline: λ = {} must be finite and > 0", lambda);
        const std::size_t p = pr.p;
        std::vector<double> a = pr.xtx;
        for (std::size_t c = 1; c < p; ++c) a[c * p + c] += lambda;
        require(cholesky(a, p), "AdditiveBaseline: XᵀX + λD is not positive definite (λ = {})", lambda);
        std::vector<double> w = pr.xty;
        cholesky_solve(a, p, w);
        std::fill(effect_.begin(), effect_.end(), 0.0);
        intercept_ = w[0];
        for (std::size_t c = 1; c < p; ++c) effect_[static_cast<std::size_t>(pr.genes[c - 1])] = w[c];
        lambda_ = lambda;
        if (!loo_mse && !loo) return;
        // h_nn = x_nᵀ A⁻¹ x_n needs the entries of A⁻¹ at the few columns of each sparse row.
        std::vector<double> inv(p * p);
        std::vector<double> e(p);
        for (std::size_t c = 0; c < p; ++c) {
            std::fill(e.begin(), e.end(), 0.0);
            e[c] = 1.0;
            cholesky_solve(a, p, e);
            for (std::size_t r = 0; r < p; ++r) inv[r * p + c] = e[r];
        }
        double press = 0.0;
        if (loo) loo->resize(pr.rows.size());
        for (std::size_t n = 0; n < pr.rows.size(); ++n) {
            const auto& row = pr.rows[n];
            double fit = 0.0, h = 0.0;
            for (const auto& [i, vi] : row) {
                fit += vi * w[i];
                for (const auto& [j, vj] : row) h += vi * inv[i * p + j] * vj;
            }
            const double r = (pr.y[n] - fit) / std::max(1.0 - h, 1e-12);
            press += r * r;
            if (loo) (*loo)[n] = r;
        }
        if (loo_mse) *loo_mse = press / static_cast<double>(pr.rows.size());
    }

    std::vector<double> effect_;
    double intercept_ = 0.0;
    double lambda_ = 0.0;
};

} // namespace celltx
