#pragma once
// Perturbation-response metrics as Arc Institute's cell-eval defines them, on a real and a
// predicted cell × gene matrix (log-normalised expression), each with a perturbation per cell and
// control cells in both (a prediction carries the control cells it started from).
//
// Per perturbation p (the control excluded), on pseudobulk means (cell-eval's BulkArrays):
//  - pearson_delta: Pearson r of (pred mean_p − pred mean_ctrl) and (real mean_p − real mean_ctrl);
//  - mse, mae: between pred mean_p and real mean_p; mse_delta, mae_delta: between the two deltas;
//  - discrimination_score_{l1,l2,cosine}: the distances from p's predicted delta to every real
//    delta, sorted ascending; score = 1 − rank(p) / #perturbations (1 best, 0 worst), over the
//    genes other than p's own target (when p names a gene);
//  - de_overlap_at_k (k = 0 means N, all of the real DE genes): the DE genes of real and pred,
//    each sorted by |log2 fold change| descending; |real[:k'] ∩ pred[:k']| / k' with
//    k' = min(k, #real DE genes) (0 when k' = 0).
// Across perturbations:
//  - pearson_edistance: Pearson r over perturbations of the energy distance between p's cells and
//    the control cells, real vs pred: E = 2·mean‖x − y‖ − mean‖x − x'‖ − mean‖y − y'‖ (Euclidean,
//    means over all pairs, the zero diagonal included, as sklearn's pairwise_distances(...).mean()).
// Differential expression (pdex, as cell-eval calls it): per perturbation and gene, the
// two-sided Mann–Whitney U test of p's cells against the control cells (scipy.stats.mannwhitneyu
// defaults: the exact distribution when a group has at most 8 cells and there are no ties, else the
// normal approximation with tie and continuity corrections); Benjamini–Hochberg FDR over all
// (perturbation, gene) tests of one matrix; DE genes: FDR < fdr_threshold. Fold change on
// log1p data: expm1(mean_p) / expm1(mean_ctrl), 20 where the control mean is 0 and 1/20 where
// p's is 0; log2 of it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::train {

struct CellEvalOptions {
    std::vector<index_t> de_top_k{0, 50, 100};  ///< overlap at k (0: N, every real DE gene)
    double fdr_threshold = 0.05;
    double fold_change_clip = 20.0;
    bool exclude_target_gene = true;  ///< discrimination score: drop the column of the perturbed gene
    bool differential_expression = true;
};

/// One matrix with its per-cell perturbation (indices into the shared name list).
template <Scalar T>
struct LabelledCells {
    ConstView<T> x;                      ///< [cells, genes]
    std::span<const index_t> perturbation;
};

struct PerturbationScores {
    std::string name;
    index_t real_cells = 0, pred_cells = 0;
    double pearson_delta = 0, mse = 0, mae = 0, mse_delta = 0, mae_delta = 0;
    double discrimination_l1 = 0, discrimination_l2 = 0, discrimination_cosine = 0;
    std::vector<double> de_overlap;      ///< per CellEvalOptions::de_top_k
    index_t de_real = 0, de_pred = 0;    ///< significant genes
};

struct CellEvalResult {
    std::vector<PerturbationScores> perturbations;
    double pearson_edistance = std::numeric_limits<double>::quiet_NaN();
    std::vector<index_t> de_top_k;

    /// Mean over perturbations of each metric (NaN entries skipped), by cell-eval's names.
    std::vector<std::pair<std::string, double>> summary() const {
        std::vector<std::pair<std::string, double>> out;
        auto mean = [&](auto get) {
            double s = 0.0;
            int n = 0;
            for (const auto& p : perturbations)
                if (const double v = get(p); !std::isnan(v)) {
                    s += v;
                    ++n;
                }
            return n ? s / n : std::numeric_limits<double>::quiet_NaN();
        };
        out.emplace_back("pearson_delta", mean([](const auto& p) { return p.pearson_delta; }));
        out.emplace_back("mse", mean([](const auto& p) { return p.mse; }));
        out.emplace_back("mae", mean([](const auto& p) { return p.mae; }));
        out.emplace_back("mse_delta", mean([](const auto& p) { return p.mse_delta; }));
        out.emplace_back("mae_delta", mean([](const auto& p) { return p.mae_delta; }));
        out.emplace_back("discrimination_score_l1", mean([](const auto& p) { return p.discrimination_l1; }));
        out.emplace_back("discrimination_score_l2", mean([](const auto& p) { return p.discrimination_l2; }));
        out.emplace_back("discrimination_score_cosine", mean([](const auto& p) { return p.discrimination_cosine; }));
        out.emplace_back("pearson_edistance", pearson_edistance);
        for (std::size_t k = 0; k < de_top_k.size(); ++k)
            if (!perturbations.empty() && !perturbations.front().de_overlap.empty())
                out.emplace_back(de_top_k[k] ? fmt::format("overlap_at_{}", de_top_k[k]) : std::string("overlap_at_N"),
                                 mean([k](const auto& p) { return p.de_overlap[k]; }));
        return out;
    }
};

namespace cell_eval_detail {

inline double pearson(const std::vector<double>& a, const std::vector<double>& b) {
    const std::size_t n = a.size();
    if (n < 2) return std::numeric_limits<double>::quiet_NaN();
    const double ma = std::accumulate(a.begin(), a.end(), 0.0) / static_cast<double>(n);
    const double mb = std::accumulate(b.begin(), b.end(), 0.0) / static_cast<double>(n);
    double sab = 0, saa = 0, sbb = 0;
    for (std::size_t i = 0; i < n; ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    if (saa == 0.0 || sbb == 0.0) return std::numeric_limits<double>::quiet_NaN();
    return std::clamp(sab / std::sqrt(saa * sbb), -1.0, 1.0);
}

inline double normal_sf(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

/// The exact null distribution of U without ties: entry u counts the arrangements of n1 + n2
/// ranks with U = u, the coefficients of the Gaussian binomial [n1 + n2 choose m]_q (m = the smaller
/// group) = prod_k (1 - q^(N - m + k)) / (1 - q^k), built one factor pair at a time.
inline std::vector<double> u_counts(int n1, int n2) {
    const int m = std::min(n1, n2), N = n1 + n2, deg = n1 * n2;
    std::vector<double> c(static_cast<std::size_t>(deg) + 1, 0.0);
    c[0] = 1.0;
    for (int k = 1; k <= m; ++k) {
        const int a = N - m + k;
        for (int i = deg; i >= a; --i) c[i] -= c[i - a];  // × (1 − q^a)
        for (int i = k; i <= deg; ++i) c[i] += c[i - k];   // ÷ (1 − q^k)
    }
    return c;
}

/// Two-sided Mann–Whitney U p-value of x against y (scipy.stats.mannwhitneyu defaults).
inline double mann_whitney_p(const std::vector<double>& x, const std::vector<double>& y) {
    const std::size_t n1 = x.size(), n2 = y.size(), n = n1 + n2;
    if (n1 == 0 || n2 == 0) return std::numeric_limits<double>::quiet_NaN();
    std::vector<std::pair<double, int>> all;
    all.reserve(n);
    for (double v : x) all.emplace_back(v, 0);
    for (double v : y) all.emplace_back(v, 1);
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    double r1 = 0.0, tie_term = 0.0;
    bool ties = false;
    for (std::size_t i = 0; i < n;) {
        std::size_t j = i;
        while (j < n && all[j].first == all[i].first) ++j;
        const double t = static_cast<double>(j - i), rank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1..j
        for (std::size_t k = i; k < j; ++k)
            if (all[k].second == 0) r1 += rank;
        if (t > 1) {
            ties = true;
            tie_term += t * t * t - t;
        }
        i = j;
    }
    const double d1 = static_cast<double>(n1), d2 = static_cast<double>(n2), dn = static_cast<double>(n);
    const double u1 = r1 - d1 * (d1 + 1.0) / 2.0;
    const double u = std::max(u1, d1 * d2 - u1);
    double p;
    if (!(n1 > 8 && n2 > 8) && !ties) {
        const std::vector<double> cnt = u_counts(static_cast<int>(n1), static_cast<int>(n2));
        const double total = std::accumulate(cnt.begin(), cnt.end(), 0.0);
        double tail = 0.0;  // P(U >= u)
        for (std::size_t k = static_cast<std::size_t>(std::llround(u)); k < cnt.size(); ++k) tail += cnt[k];
        p = 2.0 * tail / total;
    } else {
        const double mu = d1 * d2 / 2.0;
        const double s = std::sqrt(d1 * d2 / 12.0 * ((dn + 1.0) - tie_term / (dn * (dn - 1.0))));
        const double z = (u - mu - 0.5) / s;
        p = 2.0 * normal_sf(z);
    }
    return std::clamp(p, 0.0, 1.0);
}

/// Benjamini–Hochberg adjusted p-values (scipy.stats.false_discovery_control(method="bh")).
inline std::vector<double> bh_adjust(const std::vector<double>& p) {
    const std::size_t m = p.size();
    std::vector<std::size_t> order(m);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[a] < p[b]; });
    std::vector<double> q(m);
    double running = 1.0;
    for (std::size_t r = m; r-- > 0;) {
        const double v = p[order[r]] * static_cast<double>(m) / static_cast<double>(r + 1);
        running = std::min(running, v);
        q[order[r]] = std::min(running, 1.0);
    }
    return q;
}

} // namespace cell_eval_detail

/// Per-gene differential expression of one perturbation's cells against the controls.
struct DeResult {
    std::vector<double> p_value, fdr, log2_fold_change;
};

/// DE of every perturbation in `perts` against the controls of `m` (BH over all of them together).
template <Scalar T>
std::vector<DeResult> differential_expression(const LabelledCells<T>& m, index_t control, const std::vector<index_t>& perts,
                                              double clip = 20.0) {
    using namespace cell_eval_detail;
    const index_t genes = m.x.size(1), cells = m.x.size(0);
    std::vector<index_t> ctrl;
    for (index_t i = 0; i < cells; ++i)
        if (m.perturbation[i] == control) ctrl.push_back(i);
    std::vector<DeResult> out(perts.size());
    std::vector<double> all_p;
    for (std::size_t k = 0; k < perts.size(); ++k) {
        std::vector<index_t> pc;
        for (index_t i = 0; i < cells; ++i)
            if (m.perturbation[i] == perts[k]) pc.push_back(i);
        DeResult& r = out[k];
        std::vector<double> x(pc.size()), y(ctrl.size());
        for (index_t g = 0; g < genes; ++g) {
            double mx = 0.0, my = 0.0;
            for (std::size_t i = 0; i < pc.size(); ++i) mx += x[i] = static_cast<double>(m.x[pc[i] * genes + g]);
            for (std::size_t i = 0; i < ctrl.size(); ++i) my += y[i] = static_cast<double>(m.x[ctrl[i] * genes + g]);
            mx = pc.empty() ? 0.0 : std::expm1(mx / static_cast<double>(pc.size()));
            my = ctrl.empty() ? 0.0 : std::expm1(my / static_cast<double>(ctrl.size()));
            const double fc = my == 0.0 ? clip : mx == 0.0 ? 1.0 / clip : mx / my;
            r.log2_fold_change.push_back(std::log2(fc));
            r.p_value.push_back(mann_whitney_p(x, y));
            all_p.push_back(r.p_value.back());
        }
    }
    // NaN p-values (an empty group) are left out of the correction and never significant.
    std::vector<double> finite;
    for (double v : all_p)
        if (!std::isnan(v)) finite.push_back(v);
    const std::vector<double> q = bh_adjust(finite);
    std::size_t fi = 0;
    for (auto& r : out)
        for (double pv : r.p_value) r.fdr.push_back(std::isnan(pv) ? std::numeric_limits<double>::quiet_NaN() : q[fi++]);
    return out;
}

/// The significant genes of one DE result, by |log2 fold change| descending (ties: gene order).
inline std::vector<index_t> top_de_genes(const DeResult& r, double fdr_threshold) {
    std::vector<index_t> g;
    for (std::size_t j = 0; j < r.fdr.size(); ++j)
        if (r.fdr[j] < fdr_threshold) g.push_back(static_cast<index_t>(j));
    std::stable_sort(g.begin(), g.end(), [&](index_t a, index_t b) { return std::abs(r.log2_fold_change[a]) > std::abs(r.log2_fold_change[b]); });
    return g;
}

/// Every metric of the top of this header. `names[i]` names perturbation i (and, for the
/// discrimination score, the target gene when it is one of `genes`).
template <Scalar T>
CellEvalResult cell_eval(const LabelledCells<T>& real, const LabelledCells<T>& pred, index_t control, const std::vector<std::string>& names,
                         const std::vector<std::string>& genes, const CellEvalOptions& opt = {}) {
    using namespace cell_eval_detail;
    const index_t G = real.x.size(1);
    require(real.x.rank() == 2 && pred.x.rank() == 2 && pred.x.size(1) == G,
            "cell_eval: real {} and pred {} must be cell × gene matrices with the same genes", real.x.shape(), pred.x.shape());
    require(static_cast<index_t>(real.perturbation.size()) == real.x.size(0) &&
                static_cast<index_t>(pred.perturbation.size()) == pred.x.size(0),
            "cell_eval: {} / {} perturbation labels for {} / {} cells", real.perturbation.size(), pred.perturbation.size(), real.x.size(0),
            pred.x.size(0));
    require(static_cast<index_t>(genes.size()) == G, "cell_eval: {} gene names for {} genes", genes.size(), G);
    // means per perturbation
    const index_t P = static_cast<index_t>(names.size());
    auto means = [&](const LabelledCells<T>& m, std::vector<std::vector<double>>& mu, std::vector<index_t>& count) {
        mu.assign(static_cast<std::size_t>(P), std::vector<double>(static_cast<std::size_t>(G), 0.0));
        count.assign(static_cast<std::size_t>(P), 0);
        for (index_t i = 0; i < m.x.size(0); ++i) {
            const index_t p = m.perturbation[i];
            require(p >= 0 && p < P, "cell_eval: cell {} has perturbation {} outside the {} names", i, p, P);
            ++count[p];
            for (index_t g = 0; g < G; ++g) mu[p][g] += static_cast<double>(m.x[i * G + g]);
        }
        for (index_t p = 0; p < P; ++p)
            if (count[p])
                for (double& v : mu[p]) v /= static_cast<double>(count[p]);
    };
    std::vector<std::vector<double>> mr, mp;
    std::vector<index_t> cr, cp;
    means(real, mr, cr);
    means(pred, mp, cp);
    require(control >= 0 && control < P && cr[control] > 0 && cp[control] > 0,
            "cell_eval: the control '{}' needs cells in both the real ({}) and the predicted ({}) data",
            control >= 0 && control < P ? names[control] : std::string("?"), control >= 0 && control < P ? cr[control] : 0,
            control >= 0 && control < P ? cp[control] : 0);
    std::vector<index_t> perts;
    for (index_t p = 0; p < P; ++p) {
        if (p == control || (cr[p] == 0 && cp[p] == 0)) continue;
        require(cr[p] > 0 && cp[p] > 0, "cell_eval: perturbation '{}' has {} real and {} predicted cells (both need some)", names[p], cr[p],
                cp[p]);
        perts.push_back(p);
    }
    CellEvalResult res;
    res.de_top_k = opt.de_top_k;
    const std::size_t n = perts.size();
    std::vector<std::vector<double>> dreal(n), dpred(n);
    for (std::size_t k = 0; k < n; ++k) {
        const index_t p = perts[k];
        PerturbationScores s;
        s.name = names[p];
        s.real_cells = cr[p];
        s.pred_cells = cp[p];
        dreal[k].resize(static_cast<std::size_t>(G));
        dpred[k].resize(static_cast<std::size_t>(G));
        for (index_t g = 0; g < G; ++g) {
            dreal[k][g] = mr[p][g] - mr[control][g];
            dpred[k][g] = mp[p][g] - mp[control][g];
            const double e = mp[p][g] - mr[p][g], ed = dpred[k][g] - dreal[k][g];
            s.mse += e * e;
            s.mae += std::abs(e);
            s.mse_delta += ed * ed;
            s.mae_delta += std::abs(ed);
        }
        s.mse /= static_cast<double>(G);
        s.mae /= static_cast<double>(G);
        s.mse_delta /= static_cast<double>(G);
        s.mae_delta /= static_cast<double>(G);
        s.pearson_delta = pearson(dpred[k], dreal[k]);
        res.perturbations.push_back(std::move(s));
    }
    // discrimination scores
    for (std::size_t k = 0; k < n; ++k) {
        std::vector<char> use(static_cast<std::size_t>(G), 1);
        if (opt.exclude_target_gene)
            for (index_t g = 0; g < G; ++g)
                if (genes[g] == names[perts[k]]) use[g] = 0;
        for (int metric = 0; metric < 3; ++metric) {
            std::vector<double> d(n);
            for (std::size_t q = 0; q < n; ++q) {
                double acc = 0.0, dot = 0.0, na = 0.0, nb = 0.0;
                for (index_t g = 0; g < G; ++g) {
                    if (!use[g]) continue;
                    const double a = dreal[q][g], b = dpred[k][g];
                    if (metric == 0) acc += std::abs(a - b);
                    else if (metric == 1) acc += (a - b) * (a - b);
                    dot += a * b;
                    na += a * a;
                    nb += b * b;
                }
                d[q] = metric == 0 ? acc : metric == 1 ? std::sqrt(acc) : (na > 0 && nb > 0 ? 1.0 - dot / std::sqrt(na * nb) : 1.0);
            }
            std::size_t rank = 0;  // position of k in a stable ascending sort
            for (std::size_t q = 0; q < n; ++q) rank += d[q] < d[k] || (d[q] == d[k] && q < k);
            const double score = 1.0 - static_cast<double>(rank) / static_cast<double>(n);
            (metric == 0 ? res.perturbations[k].discrimination_l1
                         : metric == 1 ? res.perturbations[k].discrimination_l2 : res.perturbations[k].discrimination_cosine) = score;
        }
    }
    // pearson_edistance
    {
        auto mean_dist = [&](const LabelledCells<T>& m, const std::vector<index_t>& a, const std::vector<index_t>& b) {
            double s = 0.0;
            for (index_t i : a)
                for (index_t j : b) {
                    double d2 = 0.0;
                    for (index_t g = 0; g < G; ++g) {
                        const double t = static_cast<double>(m.x[i * G + g]) - static_cast<double>(m.x[j * G + g]);
                        d2 += t * t;
                    }
                    s += std::sqrt(d2);
                }
            return a.empty() || b.empty() ? 0.0 : s / (static_cast<double>(a.size()) * static_cast<double>(b.size()));
        };
        auto cells_of = [](const LabelledCells<T>& m, index_t p) {
            std::vector<index_t> c;
            for (std::size_t i = 0; i < m.perturbation.size(); ++i)
                if (m.perturbation[i] == p) c.push_back(static_cast<index_t>(i));
            return c;
        };
        const std::vector<index_t> ctrl_r = cells_of(real, control), ctrl_p = cells_of(pred, control);
        const double sr = mean_dist(real, ctrl_r, ctrl_r), sp = mean_dist(pred, ctrl_p, ctrl_p);
        std::vector<double> er(n), ep(n);
        for (std::size_t k = 0; k < n; ++k) {
            const std::vector<index_t> xr = cells_of(real, perts[k]), xp = cells_of(pred, perts[k]);
            er[k] = 2.0 * mean_dist(real, xr, ctrl_r) - mean_dist(real, xr, xr) - sr;
            ep[k] = 2.0 * mean_dist(pred, xp, ctrl_p) - mean_dist(pred, xp, xp) - sp;
        }
        res.pearson_edistance = pearson(er, ep);
    }
    // DE overlap
    if (opt.differential_expression && n > 0) {
        const std::vector<DeResult> de_r = differential_expression(real, control, perts, opt.fold_change_clip);
        const std::vector<DeResult> de_p = differential_expression(pred, control, perts, opt.fold_change_clip);
        for (std::size_t k = 0; k < n; ++k) {
            const std::vector<index_t> tr = top_de_genes(de_r[k], opt.fdr_threshold), tp = top_de_genes(de_p[k], opt.fdr_threshold);
            PerturbationScores& s = res.perturbations[k];
            s.de_real = static_cast<index_t>(tr.size());
            s.de_pred = static_cast<index_t>(tp.size());
            for (index_t kk : opt.de_top_k) {
                const std::size_t keff = std::min<std::size_t>(kk > 0 ? static_cast<std::size_t>(kk) : tr.size(), tr.size());
                if (keff == 0) {
                    s.de_overlap.push_back(0.0);
                    continue;
                }
                std::vector<index_t> a(tr.begin(), tr.begin() + static_cast<std::ptrdiff_t>(keff));
                std::vector<index_t> b(tp.begin(), tp.begin() + static_cast<std::ptrdiff_t>(std::min(keff, tp.size())));
                std::sort(a.begin(), a.end());
                std::sort(b.begin(), b.end());
                std::vector<index_t> both;
                std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
                s.de_overlap.push_back(static_cast<double>(both.size()) / static_cast<double>(keff));
            }
        }
    }
    return res;
}

} // namespace celltx::train
