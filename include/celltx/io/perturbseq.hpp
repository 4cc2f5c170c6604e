#pragma once
// Perturb-seq data for the State Transition model: from an AnnData to what a model trains on.
//
// Preprocessing (scanpy's semantics, so a pipeline moves over unchanged):
//  - normalize_total(m, target_sum): every cell scaled to the same total count; without a target,
//    the median total of the cells with counts (sc.pp.normalize_total's default);
//  - log1p(m): natural log(1 + x) (sc.pp.log1p);
//  - highly_variable_genes(m, opt): Seurat's dispersion flavour, scanpy's default
//    (flavor="seurat"): on log-normalised data, mean and variance (ddof 1) of expm1(X) per gene,
//    dispersion = var / mean (0 → NaN) and its log, mean → log1p(mean); genes binned by mean into
//    n_bins equal-width bins (pd.cut: the lowest edge moved down by 0.1% of the range); dispersion
//    z-scored within its bin (a bin of one gene gets 1); then the n_top_genes largest normalised
//    dispersions (ties at the cut-off all kept, NaN counted as 0, as scanpy), or the mean/dispersion
//    cut-offs (min_mean 0.0125, max_mean 3, min_disp 0.5).
//
// PerturbSeqData: expression [cells, genes] plus, per cell, the perturbation, cell type and batch
// as indices into name lists, from obs columns (the perturbation column and the control label
// default to uns["perturbation_key"] / uns["control_label"] when the file names them).
//
// PerturbationEncoding: one vector per perturbation name, one-hot over a vocabulary or read from a
// feature file (state's perturbation-feature dict): safetensors with one 1-D tensor per name, or
// text lines "name v1 v2 ..." (tab, comma or space separated; a header line is skipped). A name
// the file lacks gets a zero vector and a warning, as in state.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/io/anndata.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

// ------------------------------------------------------------------------------------------------
// Preprocessing

/// Scales every row to `target_sum` (default: the median total of the rows with a positive total);
/// rows that sum to zero stay zero. Returns the target used.
template <Scalar T>
double normalize_total(Matrix<T>& m, std::optional<double> target_sum = std::nullopt) {
    const index_t rows = m.rows(), cols = m.cols();
    std::vector<double> totals(static_cast<std::size_t>(rows), 0.0);
    if (m.is_sparse()) {
        const CsrMatrix<T>& s = m.sparse();
        for (index_t i = 0; i < rows; ++i)
            for (std::int64_t k = s.indptr[i]; k < s.indptr[i + 1]; ++k) totals[i] += static_cast<double>(s.data[k]);
    } else {
        const Tensor<T>& d = m.dense();
        for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) totals[i] += static_cast<double>(d[i * cols + j]);
    }
    double target = 0.0;
    if (target_sum) {
        require(*target_sum > 0.0, "normalize_total: target_sum {} must be positive", *target_sum);
        target = *target_sum;
    } else {
        std::vector<double> pos;
        for (double t : totals)
            if (t > 0.0) pos.push_back(t);
        if (pos.empty()) return 0.0;
        std::sort(pos.begin(), pos.end());
        const std::size_t n = pos.size();
        target = n % 2 ? pos[n / 2] : 0.5 * (pos[n / 2 - 1] + pos[n / 2]);  // numpy's median
    }
    auto scale = [&](index_t i) { return totals[i] > 0.0 ? target / totals[i] : 1.0; };
    if (m.is_sparse()) {
        CsrMatrix<T>& s = std::get<CsrMatrix<T>>(m.value);
        for (index_t i = 0; i < rows; ++i)
            for (std::int64_t k = s.indptr[i]; k < s.indptr[i + 1]; ++k)
                s.data[k] = static_cast<T>(static_cast<double>(s.data[k]) * scale(i));
    } else {
        Tensor<T>& d = std::get<Tensor<T>>(m.value);
        for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) d[i * cols + j] = static_cast<T>(static_cast<double>(d[i * cols + j]) * scale(i));
    }
    return target;
}

/// x ← log(1 + x), elementwise (zeros of a sparse matrix stay zero).
template <Scalar T>
void log1p(Matrix<T>& m) {
    if (m.is_sparse()) {
        for (T& v : std::get<CsrMatrix<T>>(m.value).data) v = static_cast<T>(std::log1p(static_cast<double>(v)));
    } else {
        Tensor<T>& d = std::get<Tensor<T>>(m.value);
        for (index_t i = 0; i < d.numel(); ++i) d[i] = static_cast<T>(std::log1p(static_cast<double>(d[i])));
    }
}

struct HvgOptions {
    index_t n_top_genes = 0;  ///< > 0: the n genes of largest normalised dispersion; 0: the cut-offs below
    double min_mean = 0.0125, max_mean = 3.0;
    double min_disp = 0.5, max_disp = std::numeric_limits<double>::infinity();
    int n_bins = 20;
};

/// Per gene: scanpy's var columns of highly_variable_genes(flavor="seurat").
struct HvgResult {
    std::vector<double> means, dispersions, dispersions_norm;  ///< log1p(mean), log(dispersion), z-scored in its bin
    std::vector<bool> highly_variable;
    std::vector<index_t> selected() const {
        std::vector<index_t> out;
        for (std::size_t j = 0; j < highly_variable.size(); ++j)
            if (highly_variable[j]) out.push_back(static_cast<index_t>(j));
        return out;
    }
};

/// Seurat-flavoured highly-variable genes of log-normalised data (see the top of this header).
template <Scalar T>
HvgResult highly_variable_genes(const Matrix<T>& m, const HvgOptions& opt = {}) {
    require(opt.n_bins >= 1, "highly_variable_genes: n_bins {} must be positive", opt.n_bins);
    const index_t rows = m.rows(), cols = m.cols();
    require(rows >= 2, "highly_variable_genes: needs at least 2 cells (got {})", rows);
    std::vector<double> sum(static_cast<std::size_t>(cols), 0.0), sq(static_cast<std::size_t>(cols), 0.0);
    if (m.is_sparse()) {
        const CsrMatrix<T>& s = m.sparse();
        for (index_t i = 0; i < rows; ++i)
            for (std::int64_t k = s.indptr[i]; k < s.indptr[i + 1]; ++k) {
                const double v = std::expm1(static_cast<double>(s.data[k]));
                sum[s.indices[k]] += v;
                sq[s.indices[k]] += v * v;
            }
    } else {
        const Tensor<T>& d = m.dense();
        for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) {
                const double v = std::expm1(static_cast<double>(d[i * cols + j]));
                sum[j] += v;
                sq[j] += v * v;
            }
    }
    const double n = static_cast<double>(rows), nan = std::numeric_limits<double>::quiet_NaN();
    HvgResult r;
    r.means.resize(static_cast<std::size_t>(cols));
    r.dispersions.resize(r.means.size());
    r.dispersions_norm.assign(r.means.size(), nan);
    for (index_t j = 0; j < cols; ++j) {
        double mean = sum[j] / n;
        const double var = (sq[j] / n - mean * mean) * (n / (n - 1.0));
        if (mean == 0.0) mean = 1e-12;
        double disp = var / mean;
        disp = disp == 0.0 ? nan : std::log(disp);
        r.dispersions[j] = disp;
        r.means[j] = std::log1p(mean);
    }
    // pd.cut(means, n_bins): equal-width bins over [min, max], right-closed, lowest edge moved down by 0.1%.
    const auto [lo_it, hi_it] = std::minmax_element(r.means.begin(), r.means.end());
    const double lo = *lo_it, hi = *hi_it;
    std::vector<int> bin(static_cast<std::size_t>(cols), 0);
    if (hi > lo) {
        std::vector<double> edges(static_cast<std::size_t>(opt.n_bins) + 1);
        const double step = (hi - lo) / opt.n_bins;  // as np.linspace
        for (int b = 0; b < opt.n_bins; ++b) edges[b] = b * step + lo;
        edges[opt.n_bins] = hi;
        edges[0] -= (hi - lo) * 0.001;
        for (index_t j = 0; j < cols; ++j) {
            const auto it = std::lower_bound(edges.begin(), edges.end(), r.means[j]);  // first edge >= x: x in (edge-1, edge]
            bin[j] = std::clamp(static_cast<int>(it - edges.begin()) - 1, 0, opt.n_bins - 1);
        }
    }
    // per-bin mean and std (ddof 1) of the non-NaN dispersions
    std::vector<double> bsum(static_cast<std::size_t>(opt.n_bins), 0.0), bsq(bsum.size(), 0.0);
    std::vector<index_t> bcount(bsum.size(), 0);
    for (index_t j = 0; j < cols; ++j)
        if (!std::isnan(r.dispersions[j])) {
            bsum[bin[j]] += r.dispersions[j];
            ++bcount[bin[j]];
        }
    std::vector<double> bmean(bsum.size(), nan), bstd(bsum.size(), nan);
    for (std::size_t b = 0; b < bsum.size(); ++b)
        if (bcount[b] > 0) bmean[b] = bsum[b] / static_cast<double>(bcount[b]);
    for (index_t j = 0; j < cols; ++j)
        if (!std::isnan(r.dispersions[j])) bsq[bin[j]] += (r.dispersions[j] - bmean[bin[j]]) * (r.dispersions[j] - bmean[bin[j]]);
    for (std::size_t b = 0; b < bsum.size(); ++b) {
        if (bcount[b] > 1) bstd[b] = std::sqrt(bsq[b] / static_cast<double>(bcount[b] - 1));
        if (bcount[b] == 1) {  // scanpy: a lone gene's bin gets std = its mean and mean 0, so its value is 1
            bstd[b] = bmean[b];
            bmean[b] = 0.0;
        }
    }
    for (index_t j = 0; j < cols; ++j) r.dispersions_norm[j] = (r.dispersions[j] - bmean[bin[j]]) / bstd[bin[j]];

    r.highly_variable.assign(r.means.size(), false);
    if (opt.n_top_genes > 0) {
        std::vector<double> finite;
        for (double v : r.dispersions_norm)
            if (!std::isnan(v)) finite.push_back(v);
        std::sort(finite.begin(), finite.end(), std::greater<>());
        if (!finite.empty()) {
            const double cut = finite[static_cast<std::size_t>(std::min<index_t>(opt.n_top_genes, static_cast<index_t>(finite.size())) - 1)];
            for (index_t j = 0; j < cols; ++j) {
                const double v = std::isnan(r.dispersions_norm[j]) ? 0.0 : r.dispersions_norm[j];
                r.highly_variable[j] = v >= cut;
            }
        }
    } else {
        for (index_t j = 0; j < cols; ++j) {
            const double mean = r.means[j], d = std::isnan(r.dispersions_norm[j]) ? 0.0 : r.dispersions_norm[j];
            r.highly_variable[j] = mean > opt.min_mean && mean < opt.max_mean && d > opt.min_disp && d < opt.max_disp;
        }
    }
    return r;
}

/// The genes `keep` (in that order) of X, every layer and var.
template <Scalar T>
void select_genes(AnnData<T>& a, const std::vector<index_t>& keep) {
    std::vector<index_t> where(static_cast<std::size_t>(a.n_vars()), -1);
    for (std::size_t k = 0; k < keep.size(); ++k) {
        require(keep[k] >= 0 && keep[k] < a.n_vars(), "select_genes: gene {} is outside [0, {})", keep[k], a.n_vars());
        where[keep[k]] = static_cast<index_t>(k);
    }
    const index_t nk = static_cast<index_t>(keep.size());
    auto columns_of = [&](Matrix<T>& m) {
        if (m.is_sparse()) {
            const CsrMatrix<T>& s = m.sparse();
            CsrMatrix<T> o;
            o.rows = s.rows;
            o.cols = nk;
            for (index_t i = 0; i < s.rows; ++i) {
                std::vector<std::pair<std::int32_t, T>> row;
                for (std::int64_t k = s.indptr[i]; k < s.indptr[i + 1]; ++k)
                    if (where[s.indices[k]] >= 0) row.emplace_back(static_cast<std::int32_t>(where[s.indices[k]]), s.data[k]);
                std::sort(row.begin(), row.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
                for (const auto& [j, v] : row) {
                    o.indices.push_back(j);
                    o.data.push_back(v);
                }
                o.indptr.push_back(static_cast<std::int64_t>(o.data.size()));
            }
            m.value = std::move(o);
        } else {
            const Tensor<T>& d = m.dense();
            Tensor<T> o = Tensor<T>::uninitialized(Shape{d.size(0), nk});
            for (index_t i = 0; i < d.size(0); ++i)
                for (index_t k = 0; k < nk; ++k) o[i * nk + k] = d[i * d.size(1) + keep[k]];
            m.value = std::move(o);
        }
    };
    columns_of(a.X);
    for (auto& [k, m] : a.layers) columns_of(m);
    a.var = a.var.subset(keep);
}

// ------------------------------------------------------------------------------------------------
// Cells, perturbations, cell types and batches

struct PerturbSeqOptions {
    std::string perturbation_column;  ///< "": uns["perturbation_key"], else "perturbation"
    std::string control_label;        ///< "": uns["control_label"], else "control" or "non-targeting" (whichever occurs)
    std::string cell_type_column;     ///< "": every cell is of one type, named "all"
    std::string batch_column;         ///< "": one batch
};

template <Scalar T = float>
struct PerturbSeqData {
    Tensor<T> expression;  ///< [cells, genes]
    std::vector<index_t> perturbation, cell_type, batch;  ///< per cell, indices into the name lists
    std::vector<std::string> perturbation_names, cell_type_names, batch_names, gene_names, cell_names;
    index_t control = -1;  ///< index of the control label in perturbation_names
    std::string perturbation_column, control_label;

    index_t cells() const noexcept { return static_cast<index_t>(perturbation.size()); }
    index_t genes() const noexcept { return static_cast<index_t>(gene_names.size()); }
    bool is_control(index_t cell) const { return perturbation[cell] == control; }
    const T* row(index_t cell) const { return expression.data() + cell * genes(); }
};

namespace perturbseq_detail {
/// Labels of a column as indices into sorted unique names; a missing label is an error naming the cell.
inline void encode(const DataFrame& obs, const std::string& column, const std::string& source, std::vector<index_t>& ids,
                   std::vector<std::string>& names) {
    if (!obs.has(column)) {
        std::string have;
        for (const auto& [n, c] : obs.columns) have += (have.empty() ? "" : ", ") + n;
        throw IoError(fmt::format("{}: /obs has no column '{}' (columns: {})", source, column, have.empty() ? "none" : have));
    }
    const Column& c = obs[column];
    std::vector<std::string> labels = c.labels();
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (c.kind == Column::Kind::categorical && c.codes[i] < 0)
            throw IoError(fmt::format("{}: /obs/{}: cell {} ('{}') has no value", source, column, i, obs.index[i]));
    names = labels;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    ids.resize(labels.size());
    for (std::size_t i = 0; i < labels.size(); ++i)
        ids[i] = std::lower_bound(names.begin(), names.end(), labels[i]) - names.begin();
}
} // namespace perturbseq_detail

/// The cells of `a` with their perturbation, cell type and batch (X densified as it is: preprocess first).
template <Scalar T>
PerturbSeqData<T> perturbseq_data(const AnnData<T>& a, const PerturbSeqOptions& opt = {}) {
    const std::string src = a.source.empty() ? std::string("AnnData") : a.source;
    PerturbSeqData<T> d;
    d.perturbation_column = !opt.perturbation_column.empty() ? opt.perturbation_column
                            : a.uns.count("perturbation_key")   ? a.uns.at("perturbation_key")
                                                                : std::string("perturbation");
    perturbseq_detail::encode(a.obs, d.perturbation_column, src, d.perturbation, d.perturbation_names);
    std::string control = opt.control_label;
    if (control.empty() && a.uns.count("control_label")) control = a.uns.at("control_label");
    if (control.empty())
        for (const char* c : {"control", "non-targeting", "ctrl", "non_targeting"})
            if (std::binary_search(d.perturbation_names.begin(), d.perturbation_names.end(), std::string(c))) {
                control = c;
                break;
            }
    const auto it = std::lower_bound(d.perturbation_names.begin(), d.perturbation_names.end(), control);
    if (control.empty() || it == d.perturbation_names.end() || *it != control) {
        std::string have;
        for (const auto& n : d.perturbation_names) have += (have.empty() ? "" : ", ") + n;
        throw IoError(fmt::format("{}: /obs/{} has no control label '{}' (labels: {})", src, d.perturbation_column,
                                  control.empty() ? "control / non-targeting" : control, have));
    }
    d.control = it - d.perturbation_names.begin();
    d.control_label = control;
    if (!opt.cell_type_column.empty()) {
        perturbseq_detail::encode(a.obs, opt.cell_type_column, src, d.cell_type, d.cell_type_names);
    } else {
        d.cell_type.assign(static_cast<std::size_t>(a.n_obs()), 0);
        d.cell_type_names = {"all"};
    }
    if (!opt.batch_column.empty()) {
        perturbseq_detail::encode(a.obs, opt.batch_column, src, d.batch, d.batch_names);
    } else {
        d.batch.assign(static_cast<std::size_t>(a.n_obs()), 0);
        d.batch_names = {"all"};
    }
    d.expression = a.X.to_dense();
    d.gene_names = a.var_names();
    d.cell_names = a.obs_names();
    return d;
}

// ------------------------------------------------------------------------------------------------
// Perturbation encodings

template <Scalar T = float>
struct PerturbationEncoding {
    std::vector<std::string> names;  ///< sorted
    Tensor<T> table;                 ///< [names, dim]
    std::string source = "one-hot";  ///< "one-hot" or the feature file

    index_t dim() const { return table.rank() == 2 ? table.size(1) : 0; }
    /// The row of `name`, or -1.
    index_t find(std::string_view name) const {
        const auto it = std::lower_bound(names.begin(), names.end(), name);
        return it != names.end() && *it == name ? it - names.begin() : -1;
    }
    /// The vectors of `wanted`, in that order: [wanted, dim]; a name without one gets zeros and a
    /// line in `warnings`.
    Tensor<T> rows_for(const std::vector<std::string>& wanted, std::vector<std::string>* warnings = nullptr) const {
        Tensor<T> out(Shape{static_cast<index_t>(wanted.size()), dim()});
        for (std::size_t k = 0; k < wanted.size(); ++k) {
            const index_t r = find(wanted[k]);
            if (r < 0) {
                if (warnings)
                    warnings->push_back(fmt::format("perturbation '{}' has no vector in {}: using a zero vector", wanted[k], source));
                continue;
            }
            std::copy_n(table.data() + r * dim(), dim(), out.data() + static_cast<index_t>(k) * dim());
        }
        return out;
    }

    /// One-hot over `vocabulary` (state's pert_onehot_map, which includes the control).
    static PerturbationEncoding one_hot(std::vector<std::string> vocabulary) {
        std::sort(vocabulary.begin(), vocabulary.end());
        vocabulary.erase(std::unique(vocabulary.begin(), vocabulary.end()), vocabulary.end());
        PerturbationEncoding e;
        const index_t n = static_cast<index_t>(vocabulary.size());
        e.table = Tensor<T>(Shape{n, n});
        for (index_t i = 0; i < n; ++i) e.table[i * n + i] = T(1);
        e.names = std::move(vocabulary);
        return e;
    }

    /// Vectors from a feature file: .safetensors (one 1-D tensor per name) or text ("name v1 v2 ...").
    static PerturbationEncoding from_file(const std::filesystem::path& path) {
        PerturbationEncoding e;
        e.source = path.string();
        std::vector<std::pair<std::string, std::vector<double>>> rows;
        if (path.extension() == ".safetensors") {
            const SafetensorsFile f(path);
            for (const std::string& name : f.names()) {
                if (name == "__metadata__") continue;
                const auto& info = f.info(name);
                if (info.shape.rank() != 1 && !(info.shape.rank() == 2 && info.shape[0] == 1))
                    throw IoError(fmt::format("{}: tensor '{}' has shape {}, expected one vector", path.string(), name, info.shape));
                rows.emplace_back(name, f.load_values<double>(name));
            }
        } else {
            TextReader r(path);
            std::string_view line;
            std::vector<std::string_view> f;
            while (r.next_line(line)) {
                if (line.empty() || line[0] == '#') continue;
                const char sep = line.find('\t') != std::string_view::npos ? '\t' : line.find(',') != std::string_view::npos ? ',' : ' ';
                if (sep == ' ') split_whitespace(line, f);
                else split(line, sep, f);
                if (f.size() < 2) r.fail("expected a name and at least one value, found {} field(s)", f.size());
                std::vector<double> v;
                bool numeric = true;
                for (std::size_t k = 1; k < f.size(); ++k) {
                    const std::string s(f[k]);
                    char* end = nullptr;
                    const double x = std::strtod(s.c_str(), &end);
                    if (s.empty() || end != s.c_str() + s.size()) {
                        numeric = false;
                        break;
                    }
                    v.push_back(x);
                }
                if (!numeric) {
                    if (rows.empty() && r.line_number() == 1) continue;  // a header line
                    r.fail("field {} is not a number", v.size() + 2);
                }
                rows.emplace_back(std::string(f[0]), std::move(v));
            }
        }
        if (rows.empty()) throw IoError(fmt::format("{}: no perturbation vectors", path.string()));
        const std::size_t dim = rows.front().second.size();
        std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (std::size_t k = 0; k < rows.size(); ++k) {
            if (rows[k].second.size() != dim)
                throw IoError(fmt::format("{}: '{}' has {} values, but '{}' has {}", path.string(), rows[k].first, rows[k].second.size(),
                                          rows.front().first, dim));
            if (k > 0 && rows[k].first == rows[k - 1].first)
                throw IoError(fmt::format("{}: perturbation '{}' is listed twice", path.string(), rows[k].first));
        }
        e.table = Tensor<T>::uninitialized(Shape{static_cast<index_t>(rows.size()), static_cast<index_t>(dim)});
        for (std::size_t k = 0; k < rows.size(); ++k) {
            e.names.push_back(rows[k].first);
            for (std::size_t j = 0; j < dim; ++j) e.table[static_cast<index_t>(k * dim + j)] = static_cast<T>(rows[k].second[j]);
        }
        return e;
    }
};

} // namespace celltx::io
