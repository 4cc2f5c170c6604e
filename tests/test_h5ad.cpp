// .h5ad and 10x .h5 reading and writing (io/h5ad.hpp, io/hdf5.hpp):
//  - the real files in ../shared/data/perturbseq (an anndata-written CSR h5ad with categorical,
//    boolean and numeric obs and uns strings; the GEARS-format Norman subset with a dense layer;
//    the two Kang 2018 10x matrices), against figures computed with anndata / h5py;
//  - files we write: the round trip of every element and column kind, in float32 and float64, and
//    the structure anndata expects (encoding attributes, h5py's string and bool types);
//  - the other encodings, written here with the raw HDF5 layer: CSC and dense X, integer counts,
//    anndata 0.7's `__categories` categoricals, anndata 0.6's h5sparse_format;
//  - errors: a file that is not HDF5, a missing X, sizes that disagree, atomic writes.
// The anndata cross-check (tests/anndata_roundtrip.py, its own ctest entry) reads the file this
// suite leaves in CELLTX_TEST_OUTPUT_DIR and writes files that `anndata_written_files` reads back.
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>
#include "celltx/io/h5ad.hpp"

using namespace celltx;
namespace fs = std::filesystem;

namespace {

const fs::path data_dir = fs::path(CELLTX_DATA_DIR) / "perturbseq";

fs::path scratch(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / "celltx_test_h5ad";
    fs::create_directories(dir);
    return dir / name;
}

/// The message of the IoError `f` throws (fails the test when it throws nothing).
template <class F>
std::string io_error_of(F&& f) {
    try {
        f();
    } catch (const IoError& e) {
        return e.what();
    }
    BOOST_FAIL("expected an IoError");
    return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A small AnnData with every element kind: 6 cells × 4 genes, X[i][j] = (i + 2j) % 3 (sparse).
template <class T>
io::AnnData<T> small_anndata() {
    io::AnnData<T> a;
    Tensor<T> x(Shape{6, 4});
    for (index_t i = 0; i < 6; ++i)
        for (index_t j = 0; j < 4; ++j) x(i, j) = static_cast<T>((i + 2 * j) % 3);
    a.X = io::Matrix<T>(io::CsrMatrix<T>::from_dense(x.cview()));
    a.layers.emplace("counts", io::Matrix<T>(x));
    a.obs.index_name = "cell_id";
    a.obs.index = {"c0", "c1", "c2", "c3", "c4", "c5"};
    a.obs.set("perturbation", io::Column::categorical({0, 1, 1, 2, -1, 0}, {"STAT1", "control", "JAK2"}));
    a.obs.set("dose", io::Column::numeric({0.5, 1.0, 1.5, 2.0, 2.5, 3.0}, io::h5::Dtype::f32));
    a.obs.set("umi", io::Column::numeric({10, 20, 30, 40, 50, 60}, io::h5::Dtype::i32));
    a.obs.set("is_control", io::Column::boolean({false, true, true, false, false, false}));
    a.obs.set("note", io::Column::string({"a", "β-cell", "", "d", "e", "f"}));
    a.var.index_name = "gene_symbol";
    a.var.index = {"STAT1", "JAK2", "IRF1", "MYC"};
    a.var.set("is_target", io::Column::boolean({true, true, false, false}));
    Tensor<T> emb(Shape{6, 2});
    for (index_t i = 0; i < 12; ++i) emb[i] = static_cast<T>(0.25 * static_cast<double>(i) - 1.0);
    a.obsm.emplace("X_pca", emb);
    a.uns["control_label"] = "control";
    a.uns_lists["heldout"] = {"IFNGR2", "STAT2"};
    return a;
}

template <class T>
void check_equal(const io::AnnData<T>& a, const io::AnnData<T>& b) {
    BOOST_TEST(a.n_obs() == b.n_obs());
    BOOST_TEST(a.n_vars() == b.n_vars());
    const Tensor<T> xa = a.X.to_dense(), xb = b.X.to_dense();
    BOOST_TEST(std::equal(xa.data(), xa.data() + xa.numel(), xb.data()));
    BOOST_TEST(a.X.is_sparse() == b.X.is_sparse());
    BOOST_TEST(a.obs.index == b.obs.index, boost::test_tools::per_element());
    BOOST_TEST(a.var.index == b.var.index, boost::test_tools::per_element());
    BOOST_TEST(a.obs.index_name == b.obs.index_name);
    BOOST_REQUIRE(a.obs.columns.size() == b.obs.columns.size());
    for (std::size_t k = 0; k < a.obs.columns.size(); ++k) {
        const auto& [na, ca] = a.obs.columns[k];
        const auto& [nb, cb] = b.obs.columns[k];
        BOOST_TEST(na == nb);
        BOOST_TEST(static_cast<int>(ca.kind) == static_cast<int>(cb.kind));
        BOOST_TEST(ca.codes == cb.codes, boost::test_tools::per_element());
        BOOST_TEST(ca.categories == cb.categories, boost::test_tools::per_element());
        BOOST_TEST(ca.numbers == cb.numbers, boost::test_tools::per_element());
        BOOST_TEST(ca.strings == cb.strings, boost::test_tools::per_element());
    }
    BOOST_REQUIRE(a.obsm.size() == b.obsm.size());
    for (const auto& [k, m] : a.obsm) {
        const Tensor<T>& o = b.obsm.at(k);
        BOOST_TEST(m.shape() == o.shape());
        BOOST_TEST(std::equal(m.data(), m.data() + m.numel(), o.data()));
    }
    BOOST_CHECK(a.uns == b.uns);
    BOOST_CHECK(a.uns_lists == b.uns_lists);
}

} // namespace

BOOST_AUTO_TEST_SUITE(h5ad)

BOOST_AUTO_TEST_CASE(reads_the_papalexi_file) {
    const io::AnnData<float> a = io::read_h5ad(data_dir / "papalexi2021_thp1_lowmoi_train.h5ad");
    // Figures from anndata 0.8 (python3-anndata) on the same file.
    BOOST_TEST(a.n_obs() == 17678);
    BOOST_TEST(a.n_vars() == 299);
    BOOST_REQUIRE(a.X.is_sparse());
    BOOST_TEST(a.X.stored_format == "csr_matrix");
    BOOST_CHECK(a.X.stored_dtype == io::h5::Dtype::f32);
    const auto& X = a.X.sparse();
    BOOST_TEST(X.nnz() == 1183293);
    double total = 0.0;
    for (float v : X.data) total += v;
    BOOST_TEST(total == 3677082.0);
    BOOST_TEST(X.indptr[1] == 71);  // row 0: 71 entries summing to 173, starting (1, 2), (11, 1)
    BOOST_TEST(std::accumulate(X.data.begin(), X.data.begin() + 71, 0.0) == 173.0);
    BOOST_TEST(X.indices[0] == 1);
    BOOST_TEST(X.data[0] == 2.0f);
    BOOST_TEST(X.indices[1] == 11);
    BOOST_TEST(a.obs.index_name == "cell_id");
    BOOST_TEST(a.obs.index[0] == "cell2");
    const io::Column& pert = a.obs["perturbation"];
    BOOST_CHECK(pert.kind == io::Column::Kind::categorical);
    BOOST_TEST(pert.categories.size() == 22u);
    BOOST_TEST(pert.label(0) == "CAV1");
    BOOST_TEST(pert.label(1) == "STAT1");
    std::size_t controls = 0;
    for (index_t i = 0; i < a.n_obs(); ++i) controls += pert.label(i) == "control";
    BOOST_TEST(controls == 2386u);
    const io::Column& is_control = a.obs["is_control"];
    BOOST_CHECK(is_control.kind == io::Column::Kind::boolean);
    BOOST_TEST(std::accumulate(is_control.numbers.begin(), is_control.numbers.end(), 0.0) == 2386.0);
    const io::Column& umi = a.obs["grna_umi_max"];
    BOOST_CHECK(umi.kind == io::Column::Kind::numeric);
    BOOST_CHECK(umi.dtype == io::h5::Dtype::i32);
    BOOST_TEST(std::accumulate(umi.numbers.begin(), umi.numbers.end(), 0.0) == 3608252.0);
    BOOST_TEST(a.obs["bio_rep"].categories == (std::vector<std::string>{"rep_1", "rep_2", "rep_3"}), boost::test_tools::per_element());
    BOOST_TEST(a.var.index_name == "gene_symbol");
    BOOST_TEST(a.var.index[0] == "PCBP3");
    const io::Column& target = a.var["is_perturbation_target"];
    BOOST_TEST(std::accumulate(target.numbers.begin(), target.numbers.end(), 0.0) == 9.0);
    BOOST_TEST(a.uns.at("control_label") == "control");
    BOOST_TEST(a.uns.at("perturbation_key") == "perturbation");
    BOOST_TEST(a.uns_lists.at("heldout_perturbations") == (std::vector<std::string>{"IFNGR2", "STAT2", "UBE2L6", "SMAD4"}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(reads_the_norman_gears_file) {
    const io::AnnData<double> a = io::read_h5ad<double>(data_dir / "norman2019_gears_format_50x50.h5ad");
    BOOST_TEST(a.n_obs() == 50);
    BOOST_TEST(a.n_vars() == 50);
    BOOST_TEST(a.obs["condition"].label(0) == "FOXL2+HOXB9");
    BOOST_TEST(a.obs["cell_type"].label(0) == "A549");
    BOOST_CHECK(a.obs["control"].dtype == io::h5::Dtype::i64);
    BOOST_TEST(a.var.index[0] == "ENSG00000228423");
    BOOST_TEST(a.var["feature_name"].label(1) == "CFAP57");
    BOOST_REQUIRE(a.layers.count("counts") == 1u);
    const io::Matrix<double>& counts = a.layers.at("counts");
    BOOST_TEST(!counts.is_sparse());
    double sum = 0.0;
    for (index_t i = 0; i < counts.dense().numel(); ++i) sum += counts.dense()[i];
    BOOST_TEST(sum == 446.0);
    const Tensor<double> x = a.X.to_dense();
    double xs = 0.0;
    for (index_t i = 0; i < x.numel(); ++i) xs += x[i];
    BOOST_TEST(xs == 184.16531372070312, boost::test_tools::tolerance(1e-6));  // anndata summed in float32
}

BOOST_AUTO_TEST_CASE(reads_the_kang_10x_files) {
    const io::AnnData<float> ctrl = io::read_10x_h5(data_dir / "kang2018_pbmc_ifnb_ctrl.h5");
    const io::AnnData<float> stim = io::read_10x_h5(data_dir / "kang2018_pbmc_ifnb_stim.h5");
    BOOST_TEST(ctrl.n_obs() == 300);
    BOOST_TEST(ctrl.n_vars() == 266);
    BOOST_TEST(stim.n_vars() == 262);
    BOOST_CHECK(ctrl.X.stored_dtype == io::h5::Dtype::f64);
    BOOST_TEST(ctrl.obs.index[0] == "ctrl_AAACATACCTCGCT.1");
    BOOST_TEST(stim.obs.index[1] == "stim_AAACTTGAGCTATG.1");
    BOOST_TEST(ctrl.var.index[0] == "ISG15");
    BOOST_TEST(ctrl.var.index[2] == "RPL11");
    double sc = 0.0, ss = 0.0;
    for (float v : ctrl.X.sparse().data) sc += v;
    for (float v : stim.X.sparse().data) ss += v;
    BOOST_TEST(sc == 323389.0);
    BOOST_TEST(ss == 333396.0);
    BOOST_TEST(ctrl.X.sparse().indptr[1] == 102);  // the first cell's 102 genes
    BOOST_TEST(stim.X.sparse().indptr[2] == 172);
    // The 10x file read as .h5ad is an error that says what is missing.
    const std::string msg = io_error_of([&] { io::read_h5ad(data_dir / "kang2018_pbmc_ifnb_ctrl.h5"); });
    BOOST_TEST(contains(msg, "kang2018_pbmc_ifnb_ctrl.h5"));
    BOOST_TEST(contains(msg, "/obs"));
}

BOOST_AUTO_TEST_CASE(round_trip_float32_and_float64) {
    const fs::path p32 = scratch("round32.h5ad"), p64 = scratch("round64.h5ad");
    const io::AnnData<float> a = small_anndata<float>();
    io::write_h5ad(p32, a);
    check_equal(a, io::read_h5ad<float>(p32));
    io::AnnData<double> b = small_anndata<double>();
    b.X = io::Matrix<double>(b.X.to_dense());  // dense X
    b.obsm.at("X_pca")[3] = 1.0 / 3.0;         // a value float32 cannot hold
    io::write_h5ad(p64, b, {.compression = 4});
    const io::AnnData<double> back = io::read_h5ad<double>(p64);
    check_equal(b, back);
    BOOST_CHECK(back.X.stored_dtype == io::h5::Dtype::f64);
    BOOST_TEST(back.obsm.at("X_pca")[3] == 1.0 / 3.0);
    // the subset keeps every element aligned
    const io::AnnData<float> sub = a.subset_obs({4, 1});
    BOOST_TEST(sub.obs.index == (std::vector<std::string>{"c4", "c1"}), boost::test_tools::per_element());
    BOOST_TEST(sub.obs["perturbation"].codes == (std::vector<std::int32_t>{-1, 1}), boost::test_tools::per_element());
    BOOST_TEST(sub.X.to_dense()(1, 3) == a.X.to_dense()(1, 3));
    BOOST_TEST(sub.obsm.at("X_pca")(0, 1) == a.obsm.at("X_pca")(4, 1));
}

BOOST_AUTO_TEST_CASE(written_structure_is_anndatas) {
    // The file the anndata cross-check reads (tests/anndata_roundtrip.py) is this one.
    const fs::path dir = fs::path(CELLTX_TEST_OUTPUT_DIR) / "h5ad_roundtrip";
    fs::create_directories(dir);
    const fs::path p = dir / "celltx_written.h5ad";
    io::write_h5ad(p, small_anndata<float>());
    const io::h5::File f = io::h5::File::open(p);
    BOOST_TEST(f.attr_string("encoding-type") == "anndata");
    BOOST_TEST(f.attr_string("encoding-version") == "0.1.0");
    const io::h5::Object X = f.group("X");
    BOOST_TEST(X.attr_string("encoding-type") == "csr_matrix");
    BOOST_TEST(X.attr_string("encoding-version") == "0.1.0");
    BOOST_TEST(X.attr_numbers("shape") == (std::vector<double>{6, 4}), boost::test_tools::per_element());
    BOOST_CHECK(X.dataset("data").dtype() == io::h5::Dtype::f32);
    BOOST_CHECK(X.dataset("indices").dtype() == io::h5::Dtype::i32);
    BOOST_CHECK(X.dataset("indptr").dtype() == io::h5::Dtype::i32);
    const io::h5::Object obs = f.group("obs");
    BOOST_TEST(obs.attr_string("encoding-type") == "dataframe");
    BOOST_TEST(obs.attr_string("encoding-version") == "0.2.0");
    BOOST_TEST(obs.attr_string("_index") == "cell_id");
    BOOST_TEST(obs.attr_strings("column-order") == (std::vector<std::string>{"perturbation", "dose", "umi", "is_control", "note"}),
               boost::test_tools::per_element());
    BOOST_TEST(obs.dataset("cell_id").attr_string("encoding-type") == "string-array");
    const io::h5::Object cat = obs.group("perturbation");
    BOOST_TEST(cat.attr_string("encoding-type") == "categorical");
    BOOST_TEST(cat.attr_numbers("ordered") == (std::vector<double>{0}), boost::test_tools::per_element());
    BOOST_CHECK(cat.dataset("codes").dtype() == io::h5::Dtype::i8);
    BOOST_CHECK(cat.dataset("categories").dtype() == io::h5::Dtype::string);
    BOOST_CHECK(obs.dataset("is_control").dtype() == io::h5::Dtype::boolean);
    BOOST_CHECK(obs.dataset("umi").dtype() == io::h5::Dtype::i32);
    BOOST_CHECK(obs.dataset("dose").dtype() == io::h5::Dtype::f32);
    BOOST_TEST(obs.dataset("note").read_strings()[1] == "β-cell");
    for (const char* g : {"layers", "obsm", "obsp", "varm", "varp", "uns"}) BOOST_TEST(f.group(g).attr_string("encoding-type") == "dict");
    BOOST_TEST(f.group("obsm").dataset("X_pca").dims() == (std::vector<index_t>{6, 2}), boost::test_tools::per_element());
    BOOST_TEST(f.group("uns").dataset("control_label").attr_string("encoding-type") == "string");
    BOOST_TEST(f.group("uns").dataset("heldout").attr_string("encoding-type") == "string-array");
    // no temporary file is left beside it
    std::size_t files = 0;
    for (const auto& e : fs::directory_iterator(dir)) files += e.path().filename().string().rfind(".celltx_written", 0) == 0;
    BOOST_TEST(files == 0u);
}

BOOST_AUTO_TEST_CASE(reads_csc_dense_integer_and_legacy_encodings) {
    // X[i][j] = i·10 + j on a 3 × 4 matrix with zeros where (i + j) is odd.
    auto value = [](index_t i, index_t j) { return (i + j) % 2 ? 0 : static_cast<int>(i * 10 + j); };
    auto frame = [](const io::h5::Object& root, const char* name, std::vector<std::string> index) {
        io::h5::Object g = root.create_group(name);
        g.write_attr("encoding-type", "dataframe");
        g.write_attr("encoding-version", "0.2.0");
        g.write_attr("_index", "_index");
        g.write_attr("column-order", std::vector<std::string>{});
        g.write_strings("_index", index);
        return g;
    };
    const std::vector<std::string> cells{"a", "b", "c"}, genes{"g0", "g1", "g2", "g3"};
    {   // CSC with int32 counts, and anndata 0.7's __categories column
        io::h5::File f = io::h5::File::create(scratch("csc.h5ad"));
        const io::h5::Object obs = frame(f, "obs", cells);
        obs.write_attr("column-order", std::vector<std::string>{"pert"});
        obs.create_group("__categories").write_strings("pert", {"ctrl", "KO"});
        const io::h5::Object codes = obs.write_dataset<std::int8_t>("pert", {1, 0, 1});
        codes.write_attr_object_ref("categories", "/obs/__categories/pert");
        frame(f, "var", genes);
        const io::h5::Object X = f.create_group("X");
        X.write_attr("encoding-type", "csc_matrix");
        X.write_attr("encoding-version", "0.1.0");
        X.write_attr_array<std::int64_t>("shape", {3, 4});
        std::vector<std::int32_t> data, indices;
        std::vector<std::int64_t> indptr{0};
        for (index_t j = 0; j < 4; ++j) {
            for (index_t i = 0; i < 3; ++i)
                if (value(i, j)) {
                    data.push_back(value(i, j));
                    indices.push_back(static_cast<std::int32_t>(i));
                }
            indptr.push_back(static_cast<std::int64_t>(data.size()));
        }
        X.write_dataset<std::int32_t>("data", data);
        X.write_dataset<std::int32_t>("indices", indices);
        X.write_dataset<std::int64_t>("indptr", indptr);
        f.close();
    }
    const io::AnnData<float> csc = io::read_h5ad(scratch("csc.h5ad"));
    BOOST_TEST(csc.X.stored_format == "csc_matrix");
    BOOST_CHECK(csc.X.stored_dtype == io::h5::Dtype::i32);
    const Tensor<float> d = csc.X.to_dense();
    for (index_t i = 0; i < 3; ++i)
        for (index_t j = 0; j < 4; ++j) BOOST_TEST(d(i, j) == static_cast<float>(value(i, j)));
    const io::Column& pert = csc.obs["pert"];
    BOOST_CHECK(pert.kind == io::Column::Kind::categorical);
    BOOST_TEST(pert.labels() == (std::vector<std::string>{"KO", "ctrl", "KO"}), boost::test_tools::per_element());

    {   // dense uint16 X; anndata 0.6's h5sparse_format obsm entry
        io::h5::File f = io::h5::File::create(scratch("dense.h5ad"));
        frame(f, "obs", cells);
        frame(f, "var", genes);
        std::vector<std::uint16_t> x;
        for (index_t i = 0; i < 3; ++i)
            for (index_t j = 0; j < 4; ++j) x.push_back(static_cast<std::uint16_t>(value(i, j)));
        f.write_dataset<std::uint16_t>("X", {3, 4}, x.data());
        const io::h5::Object obsm = f.create_group("obsm");
        const io::h5::Object s = obsm.create_group("X_old");
        s.write_attr("h5sparse_format", "csr");
        s.write_attr_array<std::int64_t>("h5sparse_shape", {3, 2});
        s.write_dataset<double>("data", {1.5, -2.0});
        s.write_dataset<std::int64_t>("indices", {1, 0});
        s.write_dataset<std::int64_t>("indptr", {0, 1, 1, 2});
        f.close();
    }
    const io::AnnData<double> dense = io::read_h5ad<double>(scratch("dense.h5ad"));
    BOOST_TEST(!dense.X.is_sparse());
    BOOST_CHECK(dense.X.stored_dtype == io::h5::Dtype::u16);
    BOOST_TEST(dense.X.dense()(2, 2) == 22.0);
    const Tensor<double>& old = dense.obsm.at("X_old");
    BOOST_TEST(old(0, 1) == 1.5);
    BOOST_TEST(old(2, 0) == -2.0);
    BOOST_TEST(old(1, 0) == 0.0);
}

BOOST_AUTO_TEST_CASE(clear_errors) {
    // not HDF5
    const fs::path text = scratch("not_hdf5.h5ad");
    std::ofstream(text) << "cell,gene\n";
    std::string msg = io_error_of([&] { io::read_h5ad(text); });
    BOOST_TEST(contains(msg, text.string()));
    BOOST_TEST(contains(msg, "not an HDF5 file"));
    msg = io_error_of([&] { io::read_h5ad(scratch("does_not_exist.h5ad")); });
    BOOST_TEST(contains(msg, "no such file"));

    // a valid file, then one defect at a time
    const fs::path good = scratch("good.h5ad");
    io::write_h5ad(good, small_anndata<float>());
    auto defect = [&](const char* name, auto&& edit) {
        const fs::path p = scratch(name);
        fs::copy_file(good, p, fs::copy_options::overwrite_existing);
        {
            io::h5::QuietErrors quiet;
            io::h5::Handle f(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
            BOOST_REQUIRE(f.valid());
            edit(io::h5::Object(std::move(f), p.string(), "/"));
        }
        return io_error_of([&] { io::read_h5ad(p); });
    };
    msg = defect("no_x.h5ad", [](const io::h5::Object& f) { H5Ldelete(f.id(), "X", H5P_DEFAULT); });
    BOOST_TEST(contains(msg, "no_x.h5ad"));
    BOOST_TEST(contains(msg, "no /X"));
    msg = defect("short_indptr.h5ad", [](const io::h5::Object& f) {
        H5Ldelete(f.id(), "X/indptr", H5P_DEFAULT);
        f.group("X").write_dataset<std::int32_t>("indptr", {0, 1, 2});
    });
    BOOST_TEST(contains(msg, "short_indptr.h5ad: /X/indptr"));
    BOOST_TEST(contains(msg, "3 entries"));
    msg = defect("bad_index.h5ad", [](const io::h5::Object& f) {
        const std::vector<std::int32_t> ind = f.group("X").dataset("indices").read<std::int32_t>();
        std::vector<std::int32_t> bad = ind;
        bad[0] = 4;
        H5Ldelete(f.id(), "X/indices", H5P_DEFAULT);
        f.group("X").write_dataset<std::int32_t>("indices", bad);
    });
    BOOST_TEST(contains(msg, "/X/indices"));
    BOOST_TEST(contains(msg, "outside [0, 4)"));
    msg = defect("short_column.h5ad", [](const io::h5::Object& f) {
        H5Ldelete(f.id(), "obs/umi", H5P_DEFAULT);
        f.group("obs").write_dataset<std::int32_t>("umi", {1, 2, 3});
    });
    BOOST_TEST(contains(msg, "short_column.h5ad: /obs/umi"));
    BOOST_TEST(contains(msg, "3 values, but the frame has 6 rows"));
    msg = defect("wide_x.h5ad", [](const io::h5::Object& f) {
        H5Adelete(f.group("X").id(), "shape");
        f.group("X").write_attr_array<std::int64_t>("shape", {6, 5});
    });
    BOOST_TEST(contains(msg, "/X is 6 × 5, but obs has 6 rows and var has 4"));
    msg = defect("missing_column.h5ad", [](const io::h5::Object& f) { H5Ldelete(f.id(), "obs/note", H5P_DEFAULT); });
    BOOST_TEST(contains(msg, "/obs"));
    BOOST_TEST(contains(msg, "'note'"));
    msg = defect("bad_code.h5ad", [](const io::h5::Object& f) {
        H5Ldelete(f.id(), "obs/perturbation/codes", H5P_DEFAULT);
        f.group("obs").group("perturbation").write_dataset<std::int8_t>("codes", {0, 1, 2, 3, 0, 0});
    });
    BOOST_TEST(contains(msg, "/obs/perturbation"));
    BOOST_TEST(contains(msg, "code 3 at row 3"));

    // writing: an inconsistent AnnData or a missing directory leaves nothing behind, and the old file intact
    io::AnnData<float> bad = small_anndata<float>();
    bad.obs.index.pop_back();
    msg = io_error_of([&] { io::write_h5ad(good, bad); });
    BOOST_TEST(contains(msg, "good.h5ad"));
    BOOST_TEST(io::read_h5ad(good).n_obs() == 6);
    msg = io_error_of([&] { io::write_h5ad(scratch("no_such_dir") / "x.h5ad", small_anndata<float>()); });
    BOOST_TEST(contains(msg, "does not exist"));
}

// Run by tests/anndata_roundtrip.py (skipped otherwise): reads the files anndata wrote into
// $CELLTX_ANNDATA_DIR and checks them against the formulas the script used.
boost::test_tools::assertion_result anndata_dir_given(boost::unit_test::test_unit_id) {
    boost::test_tools::assertion_result r(std::getenv("CELLTX_ANNDATA_DIR") != nullptr);
    r.message() << "CELLTX_ANNDATA_DIR is not set: run by tests/anndata_roundtrip.py";
    return r;
}

BOOST_AUTO_TEST_CASE(anndata_written_files, *boost::unit_test::precondition(anndata_dir_given)) {
    const char* env = std::getenv("CELLTX_ANNDATA_DIR");
    const fs::path dir(env);
    // 7 cells × 5 genes, X[i][j] = (i·j) % 4 as int64 counts: CSR, CSC and dense files.
    for (const char* name : {"anndata_csr.h5ad", "anndata_csc.h5ad", "anndata_dense.h5ad"}) {
        BOOST_TEST_CONTEXT(name) {
            const io::AnnData<float> a = io::read_h5ad(dir / name);
            BOOST_TEST(a.n_obs() == 7);
            BOOST_TEST(a.n_vars() == 5);
            BOOST_CHECK(a.X.stored_dtype == io::h5::Dtype::i64);
            const Tensor<float> x = a.X.to_dense();
            for (index_t i = 0; i < 7; ++i)
                for (index_t j = 0; j < 5; ++j) BOOST_TEST(x(i, j) == static_cast<float>((i * j) % 4));
            BOOST_TEST(a.var.index[4] == "gene4");
            BOOST_TEST(a.obs.index[6] == "cell6");
            const io::Column& pert = a.obs["perturbation"];
            BOOST_CHECK(pert.kind == io::Column::Kind::categorical);
            for (index_t i = 0; i < 7; ++i) BOOST_TEST(pert.label(i) == (i % 3 == 0 ? "control" : i % 3 == 1 ? "STAT1" : "JAK2"));
            BOOST_CHECK(a.obs["is_control"].kind == io::Column::Kind::boolean);
            BOOST_TEST(a.obs["is_control"].numbers[3] == 1.0);
            BOOST_TEST(a.obs["n_counts"].numbers[2] == 4.0);  // (2·0 + 2·1 + 2·2 + 2·3 + 2·4) % 4 summed: 0+2+0+2+0
            BOOST_TEST(a.obs["label"].strings[5] == "cell-5");
            BOOST_TEST(a.obsm.at("X_emb")(6, 1) == 6.5f);
            BOOST_TEST(a.uns.at("note") == "written by anndata");
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
