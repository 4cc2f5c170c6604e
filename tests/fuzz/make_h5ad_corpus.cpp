// Writes the seed corpus of fuzz_h5ad (tests/fuzz/corpus/h5ad/seed-*): tiny .h5ad files written by
// celltx's own writer (io::write_h5ad: CSR and dense X, categorical, numeric, boolean and string
// columns, a layer, obsm, uns), plus the layouts celltx reads but does not write (CSC X with
// anndata 0.7's referenced categories, anndata 0.6's h5sparse obsm, Cell Ranger's 10x v3 matrix;
// these two in HDF5's newest file format, the writer's files in the default one).
//   cmake --build --preset asan-ubsan --target make_h5ad_corpus
//   build-asan/tests/fuzz/make_h5ad_corpus tests/fuzz/corpus/h5ad
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>
#include "celltx/io/h5ad.hpp"

namespace io = celltx::io;
using celltx::index_t;
using celltx::Shape;
using celltx::Tensor;

namespace {

void frame(const io::h5::Object& f, const char* name, const std::vector<std::string>& index) {
    const io::h5::Object g = f.create_group(name);
    g.write_attr("encoding-type", "dataframe");
    g.write_attr("encoding-version", "0.2.0");
    g.write_attr("_index", "_index");
    g.write_attr("column-order", std::vector<std::string>{});
    g.write_strings("_index", index);
}

/// A file in HDF5's newest format (compact groups, as h5py's libver="latest" writes): a few hundred
/// bytes per group instead of the default format's 1.5 KB of mostly zeros, and other code paths.
io::h5::Object create_compact(const std::filesystem::path& path) {
    io::h5::Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    io::h5::Handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
    if (!f.valid()) throw celltx::IoError(path.string() + ": cannot create the HDF5 file");
    return io::h5::Object(std::move(f), path.string(), "/");
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_h5ad_corpus DIRECTORY\n");
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    try {
        {   // CSR float32 X (3 cells × 4 genes), a dense layer, every column kind, obsm, uns
            io::AnnData<float> a;
            Tensor<float> x(Shape{3, 4});
            for (index_t i = 0; i < 3; ++i)
                for (index_t j = 0; j < 4; ++j) x(i, j) = static_cast<float>((i + 2 * j) % 3);
            a.X = io::Matrix<float>(io::CsrMatrix<float>::from_dense(x.cview()));
            a.layers.emplace("counts", io::Matrix<float>(x));
            a.obs.index_name = "cell_id";
            a.obs.index = {"c0", "c1", "c2"};
            a.obs.set("perturbation", io::Column::categorical({0, 1, -1}, {"STAT1", "control"}));
            a.obs.set("umi", io::Column::numeric({10, 20, 30}, io::h5::Dtype::i32));
            a.obs.set("is_control", io::Column::boolean({false, true, false}));
            a.obs.set("note", io::Column::string({"a", "β", ""}));
            a.var.index = {"STAT1", "JAK2", "IRF1", "MYC"};
            Tensor<float> emb(Shape{3, 1});
            emb[0] = 0.5f;
            a.obsm.emplace("X_pca", emb);
            a.uns["control_label"] = "control";
            io::write_h5ad(dir / "seed-csr", a);
        }
        {   // dense float64 X (2 × 3), one categorical column, nothing else
            io::AnnData<double> a;
            Tensor<double> x(Shape{2, 3});
            for (index_t k = 0; k < 6; ++k) x[k] = 0.5 * static_cast<double>(k);
            a.X = io::Matrix<double>(x);
            a.obs.index = {"c0", "c1"};
            a.obs.set("perturbation", io::Column::categorical({1, 0}, {"KO", "control"}));
            a.var.index = {"g0", "g1", "g2"};
            io::write_h5ad(dir / "seed-dense", a);
        }
        {   // CSC int32 X (2 × 3), anndata 0.7's categorical codes referencing obs/__categories, an h5sparse obsm
            const io::h5::Object f = create_compact(dir / "seed-csc-legacy");
            frame(f, "obs", {"c0", "c1"});
            const io::h5::Object obs = f.group("obs");
            obs.write_attr("column-order", std::vector<std::string>{"pert"});
            obs.create_group("__categories").write_strings("pert", {"ctrl", "KO"});
            obs.write_dataset<std::int8_t>("pert", {1, 0}).write_attr_object_ref("categories", "/obs/__categories/pert");
            frame(f, "var", {"g0", "g1", "g2"});
            const io::h5::Object X = f.create_group("X");
            X.write_attr("encoding-type", "csc_matrix");
            X.write_attr_array<std::int64_t>("shape", {2, 3});
            X.write_dataset<std::int32_t>("data", {5, 7});
            X.write_dataset<std::int32_t>("indices", {1, 0});
            X.write_dataset<std::int64_t>("indptr", {0, 1, 1, 2});
            const io::h5::Object s = f.create_group("obsm").create_group("X_old");
            s.write_attr("h5sparse_format", "csr");
            s.write_attr_array<std::int64_t>("h5sparse_shape", {2, 2});
            s.write_dataset<double>("data", {1.5});
            s.write_dataset<std::int64_t>("indices", {1});
            s.write_dataset<std::int64_t>("indptr", {0, 1, 1});
        }
        {   // Cell Ranger v3 feature-barcode matrix: 3 genes × 2 cells CSC
            const io::h5::Object f = create_compact(dir / "seed-10x-v3");
            const io::h5::Object m = f.create_group("matrix");
            m.write_dataset<std::int32_t>("data", {4, 1, 2});
            m.write_dataset<std::int64_t>("indices", {0, 2, 1});
            m.write_dataset<std::int64_t>("indptr", {0, 2, 3});
            m.write_dataset<std::int32_t>("shape", {3, 2});
            m.write_strings("barcodes", {"AAAC-1", "AAAG-1"});
            const io::h5::Object feat = m.create_group("features");
            feat.write_strings("name", {"STAT1", "JAK2", "MYC"});
            feat.write_strings("id", {"E1", "E2", "E3"});
            feat.write_strings("feature_type", {"Gene Expression", "Gene Expression", "Gene Expression"});
        }
    } catch (const celltx::Error& e) {
        std::fprintf(stderr, "make_h5ad_corpus: %s\n", e.what());
        return 1;
    }
    return 0;
}
