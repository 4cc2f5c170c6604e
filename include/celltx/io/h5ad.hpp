#pragma once
// .h5ad (AnnData on HDF5) reading and writing, and the 10x Genomics .h5 matrix layout, through the
// HDF5 C library (io/hdf5.hpp).
//
// read_h5ad<T>(path): X (dense, CSR, CSC; float32/float64/integer counts, converted to T), layers,
// obs and var (categorical columns in both anndata encodings: the group of codes + categories of
// anndata ≥ 0.8, and anndata 0.7's integer codes whose `categories` attribute references
// obs/__categories/<column>; numeric, boolean, string and nullable-integer columns), obsm
// matrices, and uns strings. A file that is not HDF5, a missing X, an element whose size
// disagrees with obs/var, or an encoding celltx does not read gives an IoError naming the file
// and the element; HDF5's own error printing is silenced.
//
// write_h5ad(path, adata): anndata 0.8's encoding (what anndata ≥ 0.8 reads, and what h5py
// writes: variable-length UTF-8 strings, the int8 FALSE/TRUE enum for booleans), atomically:
// a temporary file in the destination directory, renamed over the destination when complete.
//
// read_10x_h5<T>(path): Cell Ranger's feature-barcode matrix, v3 (`matrix/{data, indices, indptr,
// shape, barcodes, features/name}`, genes × cells CSC = cells × genes CSR) and v2 (one group per
// genome with `genes` and `gene_names`). Cells are obs (barcodes), genes are var (names).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>
#include <unistd.h>
#include <fmt/format.h>
#include "celltx/io/anndata.hpp"
#include "celltx/io/hdf5.hpp"

namespace celltx::io {

struct H5adReadOptions {
    bool read_layers = true;
    bool read_obsm = true;
};

struct H5adWriteOptions {
    int compression = 0;  ///< gzip level of the array datasets (0: none, as anndata's default)
};

namespace h5ad_detail {

inline std::vector<std::int32_t> checked_int32(const std::vector<std::int64_t>& v, const h5::Object& where, index_t limit) {
    std::vector<std::int32_t> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] < 0 || v[i] >= limit) where.fail(fmt::format("index {} (entry {}) is outside [0, {})", v[i], i, limit));
        if (v[i] > std::numeric_limits<std::int32_t>::max())
            where.fail(fmt::format("index {} (entry {}) does not fit the 32-bit indices celltx keeps", v[i], i));
        out[i] = static_cast<std::int32_t>(v[i]);
    }
    return out;
}

/// A size read from the file (a shape attribute or dataset): a whole number in [0, 2^40], so that
/// rows + 1 and rows × cols cannot overflow.
inline index_t checked_extent(double v, const h5::Object& where, const char* what) {
    if (!(v >= 0.0 && v <= 1099511627776.0) || std::floor(v) != v)
        where.fail(fmt::format("its {} {} is not a size (a whole number in [0, 2^40])", what, v));
    return static_cast<index_t>(v);
}

/// Categorical codes: -1 (missing) or a category index; anything outside int32 is an error, not a wrap-around.
inline std::vector<std::int32_t> read_codes(const h5::Object& d) {
    const std::vector<std::int64_t> raw = d.read<std::int64_t>();
    std::vector<std::int32_t> out(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] < -1 || raw[i] > std::numeric_limits<std::int32_t>::max())
            d.fail(fmt::format("categorical code {} at row {} is neither -1 (missing) nor a category index", raw[i], i));
        out[i] = static_cast<std::int32_t>(raw[i]);
    }
    return out;
}

/// A string array that may be stored as numbers (pandas categories of a numeric column).
inline std::vector<std::string> read_labels(const h5::Object& ds) {
    if (ds.dtype() == h5::Dtype::string) return ds.read_strings();
    if (!h5::is_numeric(ds.dtype())) ds.fail(fmt::format("holds {} values, expected strings or numbers", h5::dtype_name(ds.dtype())));
    std::vector<std::string> out;
    for (double v : ds.read<double>()) out.push_back(std::floor(v) == v && std::abs(v) < 1e15 ? fmt::format("{}", static_cast<long long>(v))
                                                                                             : fmt::format("{}", v));
    return out;
}

inline std::vector<std::string> column_order(const h5::Object& g) {
    if (!g.has_attr("column-order")) return {};
    try {
        return g.attr_strings("column-order");
    } catch (const IoError&) {
        if (g.attr_numbers("column-order").empty()) return {};  // h5py writes an empty list as float64[0]
        throw;
    }
}

/// One obs/var column: a group (categorical, nullable) or a dataset (numeric, bool, string, legacy categorical).
inline Column read_column(const h5::Object& frame, const std::string& name, index_t rows) {
    Column c;
    if (frame.is_group(name)) {
        const h5::Object g = frame.group(name);
        const std::string enc = g.attr_string_or("encoding-type", "");
        if (enc == "categorical") {
            std::vector<std::int32_t> cv = read_codes(g.dataset("codes"));
            bool ordered = false;
            if (g.has_attr("ordered")) {
                const std::vector<double> o = g.attr_numbers("ordered");
                ordered = !o.empty() && o[0] != 0.0;
            }
            c = Column::categorical(std::move(cv), read_labels(g.dataset("categories")), ordered);
        } else if (enc == "nullable-integer" || enc == "nullable-boolean") {
            std::vector<double> v = g.dataset("values").read<double>();
            const std::vector<std::int8_t> mask = g.dataset("mask").read<std::int8_t>();
            if (mask.size() != v.size()) g.fail(fmt::format("mask has {} entries for {} values", mask.size(), v.size()));
            for (std::size_t i = 0; i < v.size(); ++i)
                if (mask[i]) v[i] = std::numeric_limits<double>::quiet_NaN();
            c = Column::numeric(std::move(v), h5::Dtype::f64);
        } else {
            g.fail(fmt::format("column encoding '{}' is not one celltx reads (categorical, nullable-integer, nullable-boolean)",
                               enc.empty() ? "none" : enc));
        }
    } else {
        const h5::Object d = frame.dataset(name);
        if (d.dims().size() != 1) d.fail(fmt::format("a column must be one-dimensional, found {} dimensions", d.dims().size()));
        const h5::Dtype dt = d.dtype();
        if (dt == h5::Dtype::string) {
            c = Column::string(d.read_strings());
        } else if (!h5::is_numeric(dt)) {
            d.fail(fmt::format("holds {} values", h5::dtype_name(dt)));
        } else if (auto cats = d.attr_object_ref("categories"); cats || (frame.is_group("__categories") && frame.group("__categories").has(name))) {
            // anndata 0.7: integer codes + a reference to obs/__categories/<name>
            const h5::Object cat = cats ? std::move(*cats) : frame.group("__categories").dataset(name);
            std::vector<std::int32_t> cv = read_codes(d);
            bool ordered = false;
            if (d.has_attr("ordered")) {
                const std::vector<double> o = d.attr_numbers("ordered");
                ordered = !o.empty() && o[0] != 0.0;
            }
            c = Column::categorical(std::move(cv), read_labels(cat), ordered);
        } else if (dt == h5::Dtype::boolean) {
            c = Column::numeric(d.read<double>(), dt);
            c.kind = Column::Kind::boolean;
        } else {
            c = Column::numeric(d.read<double>(), dt);
        }
    }
    c.validate(frame.where(name), rows);
    return c;
}

inline DataFrame read_dataframe(const h5::Object& root, const std::string& name) {
    if (!root.has(name)) root.fail(fmt::format("no /{} (an AnnData file has obs and var data frames)", name));
    if (!root.is_group(name))
        throw IoError(fmt::format("{}: is a dataset (anndata < 0.7's compound record array), which celltx does not read; "
                                  "re-save the file with anndata >= 0.7",
                                  root.where(name)));
    const h5::Object g = root.group(name);
    const std::string enc = g.attr_string_or("encoding-type", "dataframe");
    if (enc != "dataframe") g.fail(fmt::format("encoding-type is '{}', expected 'dataframe'", enc));
    DataFrame df;
    df.index_name = g.attr_string_or("_index", "_index");
    if (!g.has(df.index_name)) g.fail(fmt::format("the index dataset '{}' named by the _index attribute is missing", df.index_name));
    df.index = read_labels(g.dataset(df.index_name));
    const index_t rows = df.rows();
    for (const std::string& col : column_order(g)) {
        if (!g.has(col)) g.fail(fmt::format("column '{}' is listed in column-order but missing", col));
        df.columns.emplace_back(col, read_column(g, col, rows));
    }
    return df;
}

/// A matrix element: a 2-D dataset, or a csr_matrix / csc_matrix group (also anndata 0.6's h5sparse_format).
template <Scalar T>
Matrix<T> read_matrix(const h5::Object& parent, const std::string& name) {
    Matrix<T> m;
    if (parent.is_dataset(name)) {
        const h5::Object d = parent.dataset(name);
        const std::vector<index_t> dims = d.dims();
        if (dims.size() != 2) d.fail(fmt::format("a matrix must be two-dimensional, found {} dimensions", dims.size()));
        m.stored_dtype = d.dtype();
        m.stored_format = "array";
        const std::vector<T> v = d.read<T>();  // checks the extents against the file before allocating
        Tensor<T> t = Tensor<T>::uninitialized(Shape{dims[0], dims[1]});
        std::copy(v.begin(), v.end(), t.data());
        m.value = std::move(t);
        return m;
    }
    const h5::Object g = parent.group(name);
    std::string format = g.attr_string_or("encoding-type", "");
    std::string shape_attr = "shape";
    if (format.empty() && g.has_attr("h5sparse_format")) {
        format = g.attr_string("h5sparse_format") + "_matrix";
        shape_attr = "h5sparse_shape";
    }
    if (format != "csr_matrix" && format != "csc_matrix")
        g.fail(fmt::format("encoding '{}' is not a matrix celltx reads (array, csr_matrix, csc_matrix)", format.empty() ? "none" : format));
    if (!g.has_attr(shape_attr)) g.fail(fmt::format("has no '{}' attribute", shape_attr));
    const std::vector<double> shape = g.attr_numbers(shape_attr);
    if (shape.size() != 2) g.fail(fmt::format("its {} attribute holds {} numbers, expected two sizes", shape_attr, shape.size()));
    const index_t rows = checked_extent(shape[0], g, "row count"), cols = checked_extent(shape[1], g, "column count");
    const bool csr = format == "csr_matrix";
    const index_t major = csr ? rows : cols, minor = csr ? cols : rows;
    for (const char* part : {"data", "indices", "indptr"})
        if (!g.is_dataset(part)) g.fail(fmt::format("has no '{}' dataset", part));
    const h5::Object data = g.dataset("data"), indices = g.dataset("indices"), indptr = g.dataset("indptr");
    m.stored_dtype = data.dtype();
    m.stored_format = format;
    std::vector<T> vals = data.read<T>();
    std::vector<std::int32_t> ind = checked_int32(indices.read<std::int64_t>(), indices, minor);
    std::vector<std::int64_t> ptr = indptr.read<std::int64_t>();
    if (static_cast<index_t>(ptr.size()) != major + 1)
        indptr.fail(fmt::format("has {} entries, expected {} + 1 for a {} × {} {}", ptr.size(), major, rows, cols, format));
    if (ind.size() != vals.size()) indices.fail(fmt::format("has {} entries, but data has {}", ind.size(), vals.size()));
    CsrMatrix<T> check;  // validate the compressed axis as if it were rows
    check.rows = major;
    check.cols = minor;
    check.indptr = ptr;
    check.indices = ind;
    check.data = vals;
    check.validate(g.where());
    if (csr) {
        m.value = std::move(check);
    } else {
        m.value = CsrMatrix<T>::from_csc(rows, cols, ptr, ind, vals);
    }
    return m;
}

template <Scalar T>
Tensor<T> read_obsm_entry(const h5::Object& parent, const std::string& name) {
    const Matrix<T> m = read_matrix<T>(parent, name);
    return m.to_dense();
}

// ---- writing
inline void array_attrs(const h5::Object& o) {
    o.write_attr("encoding-type", "array");
    o.write_attr("encoding-version", "0.2.0");
}
inline void dict_attrs(const h5::Object& o) {
    o.write_attr("encoding-type", "dict");
    o.write_attr("encoding-version", "0.1.0");
}
inline void string_array_attrs(const h5::Object& o) {
    o.write_attr("encoding-type", "string-array");
    o.write_attr("encoding-version", "0.2.0");
}

template <Scalar T>
void write_matrix(const h5::Object& parent, const std::string& name, const Matrix<T>& m, int compression) {
    if (!m.is_sparse()) {
        const Tensor<T>& d = m.dense();
        array_attrs(parent.write_dataset<T>(name, {d.size(0), d.size(1)}, d.data(), compression));
        return;
    }
    const CsrMatrix<T>& s = m.sparse();
    const h5::Object g = parent.create_group(name);
    g.write_attr("encoding-type", "csr_matrix");
    g.write_attr("encoding-version", "0.1.0");
    g.write_attr_array<std::int64_t>("shape", {s.rows, s.cols});
    g.write_dataset<T>("data", s.data, compression);
    g.write_dataset<std::int32_t>("indices", s.indices, compression);
    if (s.nnz() <= std::numeric_limits<std::int32_t>::max()) {
        const std::vector<std::int32_t> p(s.indptr.begin(), s.indptr.end());
        g.write_dataset<std::int32_t>("indptr", p, compression);
    } else {
        g.write_dataset<std::int64_t>("indptr", s.indptr, compression);
    }
}

template <class I>
void write_codes(const h5::Object& g, const std::vector<std::int32_t>& codes, int compression) {
    const std::vector<I> c(codes.begin(), codes.end());
    array_attrs(g.write_dataset<I>("codes", c, compression));
}

inline void write_numbers(const h5::Object& frame, const std::string& name, const Column& c, int compression) {
    const auto as = [&](auto tag) {
        using I = decltype(tag);
        const std::vector<I> v(c.numbers.begin(), c.numbers.end());
        return frame.write_dataset<I>(name, v, compression);
    };
    const bool has_nan = std::any_of(c.numbers.begin(), c.numbers.end(), [](double v) { return std::isnan(v); });
    h5::Dtype dt = c.dtype;
    if (has_nan && dt != h5::Dtype::f32) dt = h5::Dtype::f64;  // integers cannot hold NaN
    h5::Object d;
    switch (dt) {
        case h5::Dtype::f32: d = as(float{}); break;
        case h5::Dtype::i8: d = as(std::int8_t{}); break;
        case h5::Dtype::i16: d = as(std::int16_t{}); break;
        case h5::Dtype::i32: d = as(std::int32_t{}); break;
        case h5::Dtype::i64: d = as(std::int64_t{}); break;
        case h5::Dtype::u8: d = as(std::uint8_t{}); break;
        case h5::Dtype::u16: d = as(std::uint16_t{}); break;
        case h5::Dtype::u32: d = as(std::uint32_t{}); break;
        case h5::Dtype::u64: d = as(std::uint64_t{}); break;
        default: d = frame.write_dataset<double>(name, c.numbers, compression); break;
    }
    array_attrs(d);
}

inline void write_dataframe(const h5::Object& root, const std::string& name, const DataFrame& df, int compression) {
    const h5::Object g = root.create_group(name);
    g.write_attr("encoding-type", "dataframe");
    g.write_attr("encoding-version", "0.2.0");
    g.write_attr("_index", df.index_name);
    std::vector<std::string> order;
    for (const auto& [n, c] : df.columns) {
        if (n == df.index_name) g.fail(fmt::format("column '{}' has the name of the index", n));
        order.push_back(n);
    }
    g.write_attr("column-order", order);
    string_array_attrs(g.write_strings(df.index_name, df.index, compression));
    for (const auto& [n, c] : df.columns) {
        switch (c.kind) {
            case Column::Kind::categorical: {
                const h5::Object cg = g.create_group(n);
                cg.write_attr("encoding-type", "categorical");
                cg.write_attr("encoding-version", "0.2.0");
                cg.write_attr_bool("ordered", c.ordered);
                const std::size_t k = c.categories.size();
                if (k < 128) write_codes<std::int8_t>(cg, c.codes, compression);
                else if (k < 32768) write_codes<std::int16_t>(cg, c.codes, compression);
                else write_codes<std::int32_t>(cg, c.codes, compression);
                string_array_attrs(cg.write_strings("categories", c.categories, compression));
                break;
            }
            case Column::Kind::string: string_array_attrs(g.write_strings(n, c.strings, compression)); break;
            case Column::Kind::boolean: {
                std::vector<std::int8_t> b;
                for (double v : c.numbers) b.push_back(v != 0.0 ? 1 : 0);
                array_attrs(g.write_bool_dataset(n, b, compression));
                break;
            }
            case Column::Kind::numeric: write_numbers(g, n, c, compression); break;
        }
    }
}

/// A file written under a temporary name beside the destination, renamed over it by commit().
class TemporaryPath {
public:
    explicit TemporaryPath(std::filesystem::path dest) : dest_(std::move(dest)) {
        static std::atomic<unsigned> counter{0};
        const std::filesystem::path dir = dest_.has_parent_path() ? dest_.parent_path() : std::filesystem::path(".");
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec))
            throw IoError(fmt::format("{}: cannot write: the directory {} does not exist", dest_.string(), dir.string()));
        tmp_ = dir / fmt::format(".{}.tmp.{}.{}", dest_.filename().string(), ::getpid(), counter++);
    }
    TemporaryPath(const TemporaryPath&) = delete;
    TemporaryPath& operator=(const TemporaryPath&) = delete;
    ~TemporaryPath() {
        if (!committed_) {
            std::error_code ec;
            std::filesystem::remove(tmp_, ec);
        }
    }
    const std::filesystem::path& path() const noexcept { return tmp_; }
    void commit() {
        std::error_code ec;
        std::filesystem::rename(tmp_, dest_, ec);
        if (ec) throw IoError(fmt::format("{}: cannot rename {} over it: {}", dest_.string(), tmp_.string(), ec.message()));
        committed_ = true;
    }

private:
    std::filesystem::path dest_, tmp_;
    bool committed_ = false;
};

} // namespace h5ad_detail

/// Reads an .h5ad file (see the top of this header for what is read and what is checked).
template <Scalar T = float>
AnnData<T> read_h5ad(const std::filesystem::path& path, const H5adReadOptions& opt = {}) {
    using namespace h5ad_detail;
    const h5::File f = h5::File::open(path);
    AnnData<T> a;
    a.source = path.string();
    a.obs = read_dataframe(f, "obs");
    a.var = read_dataframe(f, "var");
    if (!f.has("X"))
        throw IoError(fmt::format("{}: no /X: the file has no expression matrix (is it an AnnData .h5ad file? it has: {})", a.source,
                                  [&] {
                                      std::string s;
                                      for (const auto& c : f.children()) s += (s.empty() ? "/" : ", /") + c;
                                      return s;
                                  }()));
    a.X = read_matrix<T>(f, "X");
    if (a.X.rows() != a.n_obs() || a.X.cols() != a.n_vars())
        throw IoError(fmt::format("{}: /X is {} × {}, but obs has {} rows and var has {}", a.source, a.X.rows(), a.X.cols(), a.n_obs(),
                                  a.n_vars()));
    if (opt.read_layers && f.is_group("layers")) {
        const h5::Object layers = f.group("layers");
        for (const std::string& k : layers.children()) a.layers.emplace(k, read_matrix<T>(layers, k));
    }
    if (opt.read_obsm && f.is_group("obsm")) {
        const h5::Object obsm = f.group("obsm");
        for (const std::string& k : obsm.children()) {
            if (obsm.is_group(k)) {
                const h5::Object g = obsm.group(k);
                const std::string enc = g.attr_string_or("encoding-type", g.has_attr("h5sparse_format") ? "csr_matrix" : "");
                if (enc != "csr_matrix" && enc != "csc_matrix") continue;  // data frames in obsm are not matrices
            }
            Tensor<T> m = read_obsm_entry<T>(obsm, k);
            a.obsm.emplace(k, std::move(m));
        }
    }
    if (f.is_group("uns")) {
        const h5::Object uns = f.group("uns");
        for (const std::string& k : uns.children()) {
            if (!uns.is_dataset(k)) continue;
            const h5::Object d = uns.dataset(k);
            if (d.dtype() != h5::Dtype::string) continue;
            std::vector<std::string> v = d.read_strings();
            if (d.dims().empty() && v.size() == 1) a.uns.emplace(k, std::move(v[0]));
            else a.uns_lists.emplace(k, std::move(v));
        }
    }
    a.validate();
    return a;
}

/// Writes an .h5ad file that anndata (>= 0.8) reads; atomic (temporary file, then rename).
template <Scalar T>
void write_h5ad(const std::filesystem::path& path, const AnnData<T>& a, const H5adWriteOptions& opt = {}) {
    using namespace h5ad_detail;
    AnnData<T> named = a;  // validate() names the destination in its messages
    named.source = path.string();
    named.validate();
    TemporaryPath tmp(path);
    {
        h5::File f = h5::File::create(tmp.path());
        f.write_attr("encoding-type", "anndata");
        f.write_attr("encoding-version", "0.1.0");
        write_matrix(f, "X", a.X, opt.compression);
        const h5::Object layers = f.create_group("layers");
        dict_attrs(layers);
        for (const auto& [k, m] : a.layers) write_matrix(layers, k, m, opt.compression);
        write_dataframe(f, "obs", a.obs, opt.compression);
        write_dataframe(f, "var", a.var, opt.compression);
        const h5::Object obsm = f.create_group("obsm");
        dict_attrs(obsm);
        for (const auto& [k, m] : a.obsm) array_attrs(obsm.write_dataset<T>(k, {m.size(0), m.size(1)}, m.data(), opt.compression));
        for (const char* empty : {"obsp", "varm", "varp"}) dict_attrs(f.create_group(empty));
        const h5::Object uns = f.create_group("uns");
        dict_attrs(uns);
        for (const auto& [k, v] : a.uns) {
            const h5::Object d = uns.write_string_scalar(k, v);
            d.write_attr("encoding-type", "string");
            d.write_attr("encoding-version", "0.2.0");
        }
        for (const auto& [k, v] : a.uns_lists) {
            if (a.uns.count(k)) throw IoError(fmt::format("{}: uns key '{}' is both a string and a list", path.string(), k));
            string_array_attrs(uns.write_strings(k, v, opt.compression));
        }
        f.close();
    }
    tmp.commit();
}

/// Reads a 10x Genomics feature-barcode matrix (.h5, Cell Ranger v3 or v2): cells × genes CSR.
template <Scalar T = float>
AnnData<T> read_10x_h5(const std::filesystem::path& path) {
    const h5::File f = h5::File::open(path);
    AnnData<T> a;
    a.source = path.string();
    h5::Object m;
    bool v3 = f.is_group("matrix");
    if (v3) {
        m = f.group("matrix");
    } else {
        for (const std::string& c : f.children())
            if (f.is_group(c) && f.group(c).has("gene_names")) {
                m = f.group(c);
                break;
            }
        if (m.id() < 0)
            throw IoError(fmt::format("{}: not a 10x feature-barcode matrix: expected /matrix/{{data, indices, indptr, shape, barcodes, "
                                      "features/name}} (Cell Ranger v3) or /<genome>/{{..., genes, gene_names}} (v2)",
                                      a.source));
    }
    for (const char* part : {"data", "indices", "indptr", "shape", "barcodes"})
        if (!m.is_dataset(part)) m.fail(fmt::format("has no '{}' dataset (10x layout)", part));
    const std::vector<std::int64_t> shape = m.dataset("shape").read<std::int64_t>();
    if (shape.size() != 2) m.dataset("shape").fail("expected two non-negative sizes [genes, cells]");
    const index_t genes = h5ad_detail::checked_extent(static_cast<double>(shape[0]), m.dataset("shape"), "gene count"),
                  cells = h5ad_detail::checked_extent(static_cast<double>(shape[1]), m.dataset("shape"), "cell count");
    CsrMatrix<T> x;  // genes × cells CSC is cells × genes CSR
    x.rows = cells;
    x.cols = genes;
    const h5::Object data = m.dataset("data");
    x.data = data.read<T>();
    x.indices = h5ad_detail::checked_int32(m.dataset("indices").read<std::int64_t>(), m.dataset("indices"), genes);
    x.indptr = m.dataset("indptr").read<std::int64_t>();
    if (static_cast<index_t>(x.indptr.size()) != cells + 1)
        m.dataset("indptr").fail(fmt::format("has {} entries, expected cells + 1 = {} (shape {} genes × {} cells)", x.indptr.size(), cells + 1,
                                             genes, cells));
    x.validate(m.where());
    Matrix<T> X(std::move(x));
    X.stored_dtype = data.dtype();
    X.stored_format = "csc_matrix";
    a.X = std::move(X);

    a.obs.index_name = "barcodes";
    a.obs.index = m.dataset("barcodes").read_strings();
    if (a.n_obs() != cells) m.dataset("barcodes").fail(fmt::format("has {} barcodes for {} cells", a.n_obs(), cells));
    a.var.index_name = "gene_symbols";
    if (v3) {
        if (!m.is_group("features") || !m.group("features").is_dataset("name")) m.fail("has no 'features/name' dataset (10x v3 layout)");
        const h5::Object feat = m.group("features");
        a.var.index = feat.dataset("name").read_strings();
        if (feat.is_dataset("id")) a.var.set("gene_ids", Column::string(feat.dataset("id").read_strings()));
        if (feat.is_dataset("feature_type")) a.var.set("feature_types", Column::categorical_from(feat.dataset("feature_type").read_strings()));
        if (feat.is_dataset("genome")) a.var.set("genome", Column::categorical_from(feat.dataset("genome").read_strings()));
    } else {
        a.var.index = m.dataset("gene_names").read_strings();
        if (m.is_dataset("genes")) a.var.set("gene_ids", Column::string(m.dataset("genes").read_strings()));
    }
    if (a.n_vars() != genes) m.fail(fmt::format("has {} feature names for {} genes", a.n_vars(), genes));
    a.validate();
    return a;
}

} // namespace celltx::io
