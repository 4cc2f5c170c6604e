#pragma once
// AnnData in memory: what an .h5ad file holds that celltx uses (anndata's data model).
//  - X (and each layer): an n_obs × n_vars matrix, dense or compressed sparse rows (CSC files are
//    converted to CSR on reading; cells are rows);
//  - obs / var: data frames (an index of names plus named columns: categorical, numeric, boolean,
//    string), in column order;
//  - obsm: per-cell matrices (embeddings), n_obs rows each;
//  - uns: the string and string-array entries (other unstructured entries are not read).
// io/h5ad.hpp reads and writes these; validate() checks every size against n_obs / n_vars and
// names the element that disagrees.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/io/hdf5.hpp"

namespace celltx::io {

/// Compressed sparse rows: row i holds entries indptr[i] .. indptr[i+1]-1 (column indices[k], value data[k]).
template <Scalar T>
struct CsrMatrix {
    index_t rows = 0, cols = 0;
    std::vector<std::int64_t> indptr{0};
    std::vector<std::int32_t> indices;
    std::vector<T> data;

    index_t nnz() const noexcept { return static_cast<index_t>(data.size()); }

    /// Checks the structure; `where` prefixes the message (file and element).
    void validate(const std::string& where) const {
        if (static_cast<index_t>(indptr.size()) != rows + 1)
            throw IoError(fmt::format("{}: indptr has {} entries, expected rows + 1 = {}", where, indptr.size(), rows + 1));
        if (indices.size() != data.size())
            throw IoError(fmt::format("{}: {} indices but {} data values", where, indices.size(), data.size()));
        if (indptr.front() != 0) throw IoError(fmt::format("{}: indptr starts at {}, expected 0", where, indptr.front()));
        if (indptr.back() != nnz())
            throw IoError(fmt::format("{}: indptr ends at {}, but there are {} stored values", where, indptr.back(), nnz()));
        for (index_t i = 0; i < rows; ++i)
            if (indptr[i + 1] < indptr[i]) throw IoError(fmt::format("{}: indptr decreases at row {}", where, i));
        for (std::size_t k = 0; k < indices.size(); ++k)
            if (indices[k] < 0 || indices[k] >= cols)
                throw IoError(fmt::format("{}: column index {} (entry {}) is outside [0, {})", where, indices[k], k, cols));
    }

    Tensor<T> to_dense() const {
        Tensor<T> out(Shape{rows, cols});
        for (index_t i = 0; i < rows; ++i)
            for (std::int64_t k = indptr[i]; k < indptr[i + 1]; ++k) out[i * cols + indices[k]] += data[k];
        return out;
    }
    /// Keeps the non-zero entries of a dense [rows, cols] matrix.
    static CsrMatrix from_dense(ConstView<T> m) {
        require(m.rank() == 2, "CsrMatrix::from_dense: {} is not a matrix", m.shape());
        CsrMatrix s;
        s.rows = m.size(0);
        s.cols = m.size(1);
        s.indptr.assign(1, 0);
        for (index_t i = 0; i < s.rows; ++i) {
            for (index_t j = 0; j < s.cols; ++j)
                if (const T v = m[i * s.cols + j]; v != T(0)) {
                    s.indices.push_back(static_cast<std::int32_t>(j));
                    s.data.push_back(v);
                }
            s.indptr.push_back(static_cast<std::int64_t>(s.data.size()));
        }
        return s;
    }
    /// Compressed sparse columns (indptr over cols) of the same shape → CSR (a transpose of the layout).
    static CsrMatrix from_csc(index_t rows, index_t cols, const std::vector<std::int64_t>& cptr, const std::vector<std::int32_t>& rind,
                              const std::vector<T>& vals) {
        CsrMatrix s;
        s.rows = rows;
        s.cols = cols;
        s.indptr.assign(static_cast<std::size_t>(rows + 1), 0);
        for (std::int32_t r : rind) ++s.indptr[static_cast<std::size_t>(r) + 1];
        for (index_t i = 0; i < rows; ++i) s.indptr[i + 1] += s.indptr[i];
        s.indices.resize(vals.size());
        s.data.resize(vals.size());
        std::vector<std::int64_t> next(s.indptr.begin(), s.indptr.end() - 1);
        for (index_t j = 0; j < cols; ++j)
            for (std::int64_t k = cptr[j]; k < cptr[j + 1]; ++k) {
                const std::int64_t at = next[rind[k]]++;
                s.indices[at] = static_cast<std::int32_t>(j);
                s.data[at] = vals[k];
            }
        return s;
    }
};

/// An n_obs × n_vars matrix (X or a layer), dense or CSR, and how it was stored.
template <Scalar T>
struct Matrix {
    std::variant<Tensor<T>, CsrMatrix<T>> value{Tensor<T>(Shape{0, 0})};
    h5::Dtype stored_dtype = h5::Dtype::f32;  ///< the element type in the file (integer counts, float32, ...)
    std::string stored_format = "array";      ///< "array", "csr_matrix" or "csc_matrix" as read

    Matrix() = default;
    explicit Matrix(Tensor<T> dense) : value(std::move(dense)) {}
    explicit Matrix(CsrMatrix<T> sparse) : value(std::move(sparse)), stored_format("csr_matrix") {}

    bool is_sparse() const noexcept { return std::holds_alternative<CsrMatrix<T>>(value); }
    index_t rows() const {
        return is_sparse() ? std::get<CsrMatrix<T>>(value).rows : std::get<Tensor<T>>(value).size(0);
    }
    index_t cols() const {
        return is_sparse() ? std::get<CsrMatrix<T>>(value).cols : std::get<Tensor<T>>(value).size(1);
    }
    const CsrMatrix<T>& sparse() const { return std::get<CsrMatrix<T>>(value); }
    const Tensor<T>& dense() const { return std::get<Tensor<T>>(value); }
    /// A dense copy (or the dense matrix itself).
    Tensor<T> to_dense() const { return is_sparse() ? sparse().to_dense() : dense(); }
    CsrMatrix<T> to_csr() const { return is_sparse() ? sparse() : CsrMatrix<T>::from_dense(dense().cview()); }
};

/// One column of a data frame.
struct Column {
    enum class Kind { categorical, numeric, boolean, string };
    Kind kind = Kind::numeric;
    // categorical: codes into categories (-1: missing)
    std::vector<std::int32_t> codes;
    std::vector<std::string> categories;
    bool ordered = false;
    // numeric and boolean (0/1); dtype is what a writer stores
    std::vector<double> numbers;
    h5::Dtype dtype = h5::Dtype::f64;
    // string
    std::vector<std::string> strings;

    static Column categorical(std::vector<std::int32_t> codes, std::vector<std::string> categories, bool ordered = false) {
        Column c;
        c.kind = Kind::categorical;
        c.codes = std::move(codes);
        c.categories = std::move(categories);
        c.ordered = ordered;
        return c;
    }
    /// A categorical column from labels; categories sorted (as pandas does).
    static Column categorical_from(const std::vector<std::string>& labels) {
        std::vector<std::string> cats = labels;
        std::sort(cats.begin(), cats.end());
        cats.erase(std::unique(cats.begin(), cats.end()), cats.end());
        std::vector<std::int32_t> codes;
        codes.reserve(labels.size());
        for (const auto& l : labels)
            codes.push_back(static_cast<std::int32_t>(std::lower_bound(cats.begin(), cats.end(), l) - cats.begin()));
        return categorical(std::move(codes), std::move(cats));
    }
    static Column numeric(std::vector<double> values, h5::Dtype dtype = h5::Dtype::f64) {
        Column c;
        c.kind = Kind::numeric;
        c.numbers = std::move(values);
        c.dtype = dtype;
        return c;
    }
    static Column boolean(const std::vector<bool>& values) {
        Column c;
        c.kind = Kind::boolean;
        c.dtype = h5::Dtype::boolean;
        for (bool b : values) c.numbers.push_back(b ? 1.0 : 0.0);
        return c;
    }
    static Column string(std::vector<std::string> values) {
        Column c;
        c.kind = Kind::string;
        c.strings = std::move(values);
        c.dtype = h5::Dtype::string;
        return c;
    }

    index_t size() const {
        switch (kind) {
            case Kind::categorical: return static_cast<index_t>(codes.size());
            case Kind::string: return static_cast<index_t>(strings.size());
            default: return static_cast<index_t>(numbers.size());
        }
    }
    /// Row i as text: the category (empty when missing), the string, or the number.
    std::string label(index_t i) const {
        switch (kind) {
            case Kind::categorical: return codes[i] < 0 ? std::string() : categories[codes[i]];
            case Kind::string: return strings[i];
            case Kind::boolean: return numbers[i] != 0.0 ? "True" : "False";
            case Kind::numeric: return fmt::format("{}", numbers[i]);
        }
        return {};
    }
    std::vector<std::string> labels() const {
        std::vector<std::string> out;
        out.reserve(static_cast<std::size_t>(size()));
        for (index_t i = 0; i < size(); ++i) out.push_back(label(i));
        return out;
    }
    /// Checks the codes and the length; `where` names the column.
    void validate(const std::string& where, index_t rows) const {
        if (size() != rows) throw IoError(fmt::format("{}: {} values, but the frame has {} rows", where, size(), rows));
        if (kind == Kind::categorical)
            for (std::size_t i = 0; i < codes.size(); ++i)
                if (codes[i] < -1 || codes[i] >= static_cast<std::int32_t>(categories.size()))
                    throw IoError(fmt::format("{}: code {} at row {} is outside [-1, {})", where, codes[i], i, categories.size()));
    }
};

/// A data frame: an index of row names and named columns in order.
struct DataFrame {
    std::string index_name = "_index";
    std::vector<std::string> index;
    std::vector<std::pair<std::string, Column>> columns;

    index_t rows() const noexcept { return static_cast<index_t>(index.size()); }
    bool has(std::string_view name) const {
        return std::any_of(columns.begin(), columns.end(), [&](const auto& c) { return c.first == name; });
    }
    const Column& operator[](std::string_view name) const {
        for (const auto& [n, c] : columns)
            if (n == name) return c;
        std::string have;
        for (const auto& [n, c] : columns) have += (have.empty() ? "" : ", ") + n;
        throw IoError(fmt::format("no column '{}' (columns: {})", name, have.empty() ? "none" : have));
    }
    /// Adds or replaces a column.
    void set(const std::string& name, Column c) {
        for (auto& [n, old] : columns)
            if (n == name) {
                old = std::move(c);
                return;
            }
        columns.emplace_back(name, std::move(c));
    }
    void validate(const std::string& where) const {
        for (const auto& [n, c] : columns) c.validate(fmt::format("{}/{}", where, n), rows());
    }
    /// The rows `keep` (in that order) of every column and the index.
    DataFrame subset(const std::vector<index_t>& keep) const {
        DataFrame out;
        out.index_name = index_name;
        for (index_t i : keep) out.index.push_back(index[i]);
        for (const auto& [n, c] : columns) {
            Column s = c;
            s.codes.clear();
            s.numbers.clear();
            s.strings.clear();
            for (index_t i : keep) {
                if (c.kind == Column::Kind::categorical) s.codes.push_back(c.codes[i]);
                else if (c.kind == Column::Kind::string) s.strings.push_back(c.strings[i]);
                else s.numbers.push_back(c.numbers[i]);
            }
            out.columns.emplace_back(n, std::move(s));
        }
        return out;
    }
};

/// An annotated data matrix (anndata.AnnData).
template <Scalar T = float>
struct AnnData {
    Matrix<T> X;
    std::map<std::string, Matrix<T>> layers;
    DataFrame obs, var;
    std::map<std::string, Tensor<T>> obsm;  ///< [n_obs, k] each
    std::map<std::string, std::string> uns;  ///< string entries of uns
    std::map<std::string, std::vector<std::string>> uns_lists;  ///< string-array entries of uns
    std::string source;  ///< the file it was read from (for messages)

    index_t n_obs() const { return obs.rows(); }
    index_t n_vars() const { return var.rows(); }
    const std::vector<std::string>& obs_names() const { return obs.index; }
    const std::vector<std::string>& var_names() const { return var.index; }

    /// Every element agrees with n_obs × n_vars; an IoError names the first that does not.
    void validate() const {
        const std::string where = source.empty() ? std::string("AnnData") : source;
        if (X.rows() != n_obs() || X.cols() != n_vars())
            throw IoError(fmt::format("{}: /X is {} × {}, but obs has {} rows and var {}", where, X.rows(), X.cols(), n_obs(), n_vars()));
        if (X.is_sparse()) X.sparse().validate(where + ": /X");
        for (const auto& [k, m] : layers) {
            if (m.rows() != n_obs() || m.cols() != n_vars())
                throw IoError(fmt::format("{}: /layers/{} is {} × {}, expected {} × {}", where, k, m.rows(), m.cols(), n_obs(), n_vars()));
            if (m.is_sparse()) m.sparse().validate(fmt::format("{}: /layers/{}", where, k));
        }
        obs.validate(where + ": /obs");
        var.validate(where + ": /var");
        for (const auto& [k, m] : obsm)
            if (m.rank() != 2 || m.size(0) != n_obs())
                throw IoError(fmt::format("{}: /obsm/{} has shape {}, expected {} rows", where, k, m.shape(), n_obs()));
    }

    /// The cells `keep`, in that order (X, layers, obs and obsm).
    AnnData subset_obs(const std::vector<index_t>& keep) const {
        AnnData out;
        out.var = var;
        out.uns = uns;
        out.uns_lists = uns_lists;
        out.source = source;
        out.obs = obs.subset(keep);
        auto rows_of = [&](const Matrix<T>& m) {
            Matrix<T> r;
            r.stored_dtype = m.stored_dtype;
            r.stored_format = m.stored_format;
            if (m.is_sparse()) {
                const CsrMatrix<T>& s = m.sparse();
                CsrMatrix<T> o;
                o.rows = static_cast<index_t>(keep.size());
                o.cols = s.cols;
                for (index_t i : keep) {
                    for (std::int64_t k = s.indptr[i]; k < s.indptr[i + 1]; ++k) {
                        o.indices.push_back(s.indices[k]);
                        o.data.push_back(s.data[k]);
                    }
                    o.indptr.push_back(static_cast<std::int64_t>(o.data.size()));
                }
                r.value = std::move(o);
            } else {
                r.value = take_rows(m.dense(), keep);
            }
            return r;
        };
        out.X = rows_of(X);
        for (const auto& [k, m] : layers) out.layers.emplace(k, rows_of(m));
        for (const auto& [k, m] : obsm) out.obsm.emplace(k, take_rows(m, keep));
        return out;
    }

    static Tensor<T> take_rows(const Tensor<T>& m, const std::vector<index_t>& keep) {
        const index_t w = m.size(1);
        Tensor<T> out = Tensor<T>::uninitialized(Shape{static_cast<index_t>(keep.size()), w});
        for (std::size_t r = 0; r < keep.size(); ++r) std::copy_n(m.data() + keep[r] * w, w, out.data() + static_cast<index_t>(r) * w);
        return out;
    }
};

} // namespace celltx::io
