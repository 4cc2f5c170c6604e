// The catalogue of bad inputs (docs/reliability.md). Each entry asserts the exception's exact type,
// that its message names the file and the line or key (or the field of a configuration), and that
// no output file exists or changed afterwards (the watched directory is byte-for-byte as before:
// no new file, no temporary file, no changed mode). Where the library accepts an input by design
// (an empty perturbation set, a gene listed twice in a PerturbationBatch, a self-edge), the entry
// tests the documented behaviour instead.
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <typeinfo>
#include <vector>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include "celltx/core/gene_graph.hpp"
#include "celltx/io/arguments.hpp"
#include "celltx/io/dcell_topology.hpp"
#include "celltx/io/gene_sets.hpp"
#include "celltx/io/gi_labels.hpp"
#include "celltx/io/graph_sources.hpp"
#include "celltx/io/h5ad.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/nn/linear.hpp"

using namespace celltx;
using namespace celltx::io;
namespace fs = std::filesystem;

namespace {

/// A fresh directory, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() / ("celltx_bad_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        for (const auto& e : fs::recursive_directory_iterator(path, ec))  // read-only files and dirs must go too
            fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
    fs::path write(const std::string& name, const std::string& bytes) const {
        std::ofstream(path / name, std::ios::binary) << bytes;
        return path / name;
    }
    fs::path write_gz(const std::string& name, const std::string& text) const {
        gzFile f = gzopen((path / name).c_str(), "wb");
        BOOST_REQUIRE(f != nullptr);
        BOOST_REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
        gzclose(f);
        return path / name;
    }
};

std::string file_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Every entry of a directory (recursively): kind, mode, link target, size, mtime and the bytes of
/// files up to 16 MB (a sparse 64 GB file is compared by size and time only).
using DirState = std::map<std::string, std::string>;
DirState dir_state(const fs::path& dir) {
    DirState s;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        struct stat st {};
        ::lstat(e.path().c_str(), &st);
        std::string v = fmt::format("mode {:o} size {} mtime {}.{} ", st.st_mode, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        if (S_ISLNK(st.st_mode)) v += "-> " + fs::read_symlink(e.path()).string();
        else if (S_ISREG(st.st_mode) && st.st_size <= (16 << 20)) v += file_bytes(e.path());
        s[fs::relative(e.path(), dir).string()] = v;
    }
    return s;
}

/// Runs f, which must throw exactly E with every part in its message, and leave `watched` as it was.
template <class E, class F>
std::string expect_error(F&& f, const std::vector<std::string>& parts, const fs::path& watched) {
    const DirState before = dir_state(watched);
    std::string msg;
    try {
        f();
        BOOST_ERROR("no exception; expected " << typeid(E).name() << " with '" << (parts.empty() ? "" : parts[0]) << "'");
        return msg;
    } catch (const std::exception& e) {
        msg = e.what();
        BOOST_TEST((typeid(e) == typeid(E)), "exception " << typeid(e).name() << " instead of " << typeid(E).name() << ": " << msg);
    }
    for (const auto& p : parts) BOOST_TEST(msg.find(p) != std::string::npos, "'" << p << "' not in: " << msg);
    BOOST_TEST((dir_state(watched) == before), "the directory changed: " << msg);
    return msg;
}
/// The same for errors of functions that take no file (configurations): no directory to watch.
template <class E, class F>
std::string expect_error(F&& f, const std::vector<std::string>& parts) {
    TempDir none;
    return expect_error<E>(std::forward<F>(f), parts, none.path);
}

/// The 16 genes the small files below use, with standard names.
const GeneUniverse& universe() {
    static const GeneUniverse u = GeneUniverse::from_names(
        {"YAL001C", "YAL002W", "YBR158W", "YLR131C", "YGL035C", "YER111C", "YLR035C", "YML060W", "YGL094C", "YDL154W", "YKL067W",
         "YEL018W", "YOR346W", "YIR018W", "YDR501W", "YIL033C"},
        {"TFC3", "VPS8", "AMN1", "ACE2", "MIG1", "SWI4", "MLH2", "OGG1", "PAN2", "MSH5", "YNK1", "EAF5", "REV1", "YAP5", "PLM2", "BCY1"});
    return u;
}

/// Bytes of a safetensors file from header text and data.
std::string safetensors_bytes(const std::string& header, const std::string& data = {}) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return out + header + data;
}
std::string f32_bytes(std::initializer_list<float> v) {
    std::string s;
    for (float x : v) s.append(reinterpret_cast<const char*>(&x), 4);
    return s;
}

/// Every reader of a text file, for the file-level entries.
const std::vector<std::pair<std::string, std::function<void(const fs::path&)>>>& text_readers() {
    static const std::vector<std::pair<std::string, std::function<void(const fs::path&)>>> r{
        {"read_gi_labels", [](const fs::path& p) { read_gi_labels(p, universe()); }},
        {"read_gene_list", [](const fs::path& p) { read_gene_list(p, universe()); }},
        {"read_go_slim", [](const fs::path& p) { read_go_slim(p, universe()); }},
        {"read_string_actions", [](const fs::path& p) { read_string_actions(p, universe()); }},
        {"read_yeastract", [](const fs::path& p) { read_yeastract(p, universe()); }},
        {"read_dcell_topology", [](const fs::path& p) { read_dcell_topology(p, universe()); }},
        {"GeneUniverse::from_table", [](const fs::path& p) { GeneUniverse::from_table(p); }},
        {"GeneUniverse::from_gff", [](const fs::path& p) { GeneUniverse::from_gff(p); }},
    };
    return r;
}

/// A small CGT configuration.
CgtConfig cgt_config(index_t N = 12, index_t d = 8, int L = 2, int H = 2, int pert_heads = 2) {
    CgtConfig c;
    c.num_genes = N;
    c.d_model = d;
    c.num_layers = L;
    c.num_heads = H;
    c.pert_heads = pert_heads;
    c.dropout = 0.0;
    c.seed = 3;
    return c;
}
StateConfig state_config() {
    StateConfig c;
    c.input_dim = c.output_dim = 6;
    c.pert_dim = 3;
    c.hidden = 8;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.cell_set_len = 4;
    c.backbone.layers = 1;
    c.backbone.heads = 2;
    c.backbone.intermediate = 16;
    return c;
}
using StateModel = StateTransition<float, cpu, LlamaBackbone, EnergyLoss>;

} // namespace

BOOST_AUTO_TEST_SUITE(bad_inputs)

// ---- files: missing, a directory, a FIFO, empty, truncated -------------------------------------

BOOST_AUTO_TEST_CASE(missing_files_directories_and_fifos_are_refused_without_blocking) {
    TempDir t;
    const fs::path missing = t / "missing.txt", dir = t / "a_dir", fifo = t / "a_fifo";
    fs::create_directories(dir);
    BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    expect_error<IoError>([&] { SafetensorsFile{missing}; }, {missing.string(), "No such file"}, t.path);
    expect_error<IoError>([&] { SafetensorsFile{dir}; }, {dir.string(), "a directory"}, t.path);
    for (const auto& [name, reader] : text_readers()) {
        const auto& read = reader;  // clang 14 cannot capture a structured binding
        BOOST_TEST_CONTEXT(name) {
            expect_error<IoError>([&] { read(missing); }, {missing.string(), "No such file"}, t.path);
            expect_error<IoError>([&] { read(dir); }, {dir.string(), "a directory"}, t.path);
        }
    }
    // A FIFO with no writer: open() would block forever; the readers must refuse it at once. On a
    // regression, the writer end is opened to release the reader and the entry fails.
    auto no_hang = [&](const std::string& name, std::function<void()> read) {
        auto result = std::async(std::launch::async, [&] {
            try {
                read();
            } catch (const IoError& e) {
                return std::string(e.what());
            }
            return std::string("no error");
        });
        if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
            BOOST_ERROR(name << " blocked on a FIFO");
            const int w = ::open(fifo.c_str(), O_WRONLY);
            if (w >= 0) ::close(w);
        }
        const std::string msg = result.get();
        BOOST_TEST(msg.find(fifo.string()) != std::string::npos, name << ": " << msg);
        BOOST_TEST(msg.find("FIFO") != std::string::npos, name << ": " << msg);
    };
    no_hang("SafetensorsFile", [&] { SafetensorsFile{fifo}; });
    for (const auto& [name, reader] : text_readers()) no_hang(name, [&, r = reader] { r(fifo); });
}

BOOST_AUTO_TEST_CASE(empty_and_blank_files_are_errors) {
    TempDir t;
    const fs::path empty = t.write("empty.txt", ""), blank = t.write("blank.txt", "\n\n  \n");
    expect_error<IoError>([&] { SafetensorsFile{empty}; }, {empty.string(), "too short"}, t.path);
    for (const auto& [name, reader] : text_readers())
        BOOST_TEST_CONTEXT(name) {
            const auto& read = reader;  // clang 14 cannot capture a structured binding
            expect_error<IoError>([&] { read(empty); }, {empty.string()}, t.path);
            if (name != "read_go_slim" && name != "read_string_actions" && name != "read_yeastract" && name != "GeneUniverse::from_table")
                expect_error<IoError>([&] { read(blank); }, {blank.string()}, t.path);
        }
    // The messages say what is missing.
    expect_error<IoError>([&] { read_gi_labels(empty, universe()); }, {"no records"}, t.path);
    expect_error<IoError>([&] { read_gene_list(blank, universe()); }, {"no genes"}, t.path);
    expect_error<IoError>([&] { read_go_slim(empty, universe()); }, {"no annotation rows"}, t.path);
    expect_error<IoError>([&] { read_dcell_topology(blank, universe()); }, {"no terms"}, t.path);
}

BOOST_AUTO_TEST_CASE(truncated_files) {
    TempDir t;
    const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
    const std::string full = safetensors_bytes(header, f32_bytes({1, 2, 3, 4}));
    fs::path p = t.write("short_len.safetensors", full.substr(0, 5));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "too short"}, t.path);
    p = t.write("short_header.safetensors", full.substr(0, 30));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "runs past the end", "truncated"}, t.path);
    p = t.write("short_data.safetensors", full.substr(0, full.size() - 3));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "truncated"}, t.path);

    const std::string text = "2 YLR035C YML060W 0.0447\n2 YGL094C YDL154W -0.0014\n2 YAL001C YAL002W 0.25\n";
    p = t.write("cut.txt", text.substr(0, text.size() - 12));  // the last line loses its label
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":3:", "gene count 2 needs 4 fields"}, t.path);
    const fs::path gz = t.write_gz("full.txt.gz", text);
    const std::string zipped = file_bytes(gz);
    p = t.write("cut.txt.gz", zipped.substr(0, zipped.size() - 10));  // the gzip trailer is gone
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string(), "truncated gzip stream"}, t.path);
    p = t.write("cut2.txt.gz", zipped.substr(0, 12));
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":1:", "gzip"}, t.path);
}

// ---- oversized files and lines ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(oversized_files_and_lines) {
    TempDir t;
    // A header length beyond the 100 MB limit, and a sparse 64 GB file of zeros: both refused from
    // the first bytes, before anything of the file's size is allocated.
    std::string big(8, '\0');
    big[4] = 1;  // 2^32
    fs::path p = t.write("huge_header.safetensors", big + "{}");
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "exceeds the 100 MB limit"}, t.path);
    p = t / "sparse.safetensors";
    {
        const int fd = ::open(p.c_str(), O_CREAT | O_WRONLY, 0644);
        BOOST_REQUIRE(fd >= 0);
        const bool sparse = ::ftruncate(fd, std::int64_t{64} << 30) == 0;
        ::close(fd);
        if (sparse) expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "header is not a JSON object", "must start with '{'"}, t.path);
        else BOOST_TEST_MESSAGE("this file system cannot hold a sparse 64 GB file: entry skipped");
        fs::remove(p);
    }
    // A line longer than the reader's limit: plain, and a 4 MB line in a .gz of a few KB.
    p = t.write("long.txt", "YAL001C\n" + std::string(5000, 'A') + "\n");
    expect_error<IoError>([&] { TextReader in(p, 4096); std::string_view l; while (in.next_line(l)) {} }, {p.string() + ":2:", "line longer than 4096 bytes"},
                          t.path);
    p = t.write_gz("long.txt.gz", "2 YAL001C YAL002W 0.1\n" + std::string(4 << 20, '7'));
    BOOST_TEST(fs::file_size(p) < 20000u);
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":2:", "line longer than 1048576 bytes"}, t.path);
}

// ---- corrupt contents -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(corrupt_headers_streams_and_text) {
    TempDir t;
    const std::string w = R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
    fs::path p = t.write("nul.safetensors", safetensors_bytes(std::string("{}\0\0garbage{", 12)));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "NUL byte at offset 2"}, t.path);
    p = t.write("bom.safetensors", safetensors_bytes("\xEF\xBB\xBF{" + w + "}", f32_bytes({1})));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "must start with '{'"}, t.path);
    p = t.write("deep.safetensors", safetensors_bytes(R"({"w":{"dtype":)" + std::string(200000, '[')));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "nests deeper than 16 levels"}, t.path);
    // A bad value is quoted by a short prefix only.
    p = t.write("long_value.safetensors",
                safetensors_bytes(R"({"w":{"dtype":")" + std::string(1 << 20, 'X') + R"(","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1})));
    const std::string msg = expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "dtype", "..."}, t.path);
    BOOST_TEST(msg.size() < 400u, msg.size() << " characters");
    p = t.write("long_shape.safetensors",
                safetensors_bytes(R"({"w":{"dtype":"F32","shape":[)" + std::string(100000, '1') + R"(],"data_offsets":[0,4]}})", f32_bytes({1})));
    BOOST_TEST(expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "not valid JSON", "number overflow", "..."}, t.path).size() < 400u);

    // gzip: garbage after the end of the stream, corrupt data.
    const fs::path gz = t.write_gz("ok.txt.gz", "2 YAL001C YAL002W 0.1\n");
    p = t.write("trailing.txt.gz", file_bytes(gz) + "this is not gzip");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string(), "garbage after the end of the gzip stream"}, t.path);
    std::string corrupt = file_bytes(gz);
    corrupt[corrupt.size() / 2] ^= 0x55;
    p = t.write("corrupt.txt.gz", corrupt);
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string()}, t.path);
    // Two members in a row are one valid stream.
    p = t.write("two.txt.gz", file_bytes(gz) + file_bytes(t.write_gz("b.gz", "2 YLR035C YML060W 0.2\n")));
    BOOST_TEST(read_gi_labels(p, universe()).records.size() == 2u);

    // Gene names with a NUL byte or invalid UTF-8.
    p = t.write("nul.txt", std::string("YAL001C\nYAL0\0002W\n", 17));
    expect_error<IoError>([&] { read_gene_list(p, universe()); }, {p.string() + ":2:", "NUL byte at column 5"}, t.path);
    p = t.write("utf8.txt", "YAL001C\nYAL\xff" "002W\n");
    expect_error<IoError>([&] { read_gene_list(p, universe()); }, {p.string() + ":2:", "invalid UTF-8 at column 4"}, t.path);
    p = t.write("table.tsv", "systematic_name\tstandard_name\nYAL001C\tTFC3\nYAL002W\tVP\xc0\xafS8\n");
    expect_error<IoError>([&] { GeneUniverse::from_table(p); }, {p.string() + ":3:", "invalid UTF-8"}, t.path);
    p = t.write_gz("g.gff.gz", "##gff-version 3\nchrI\tSGD\tgene\t1\t9\t.\t+\t.\tID=YAL%00001C\n");
    expect_error<IoError>([&] { GeneUniverse::from_gff(p); }, {p.string() + ":2:", "invalid gene ID 'YAL\\x00001C'"}, t.path);
    BOOST_CHECK_THROW(GeneUniverse::from_names({"YAL001C", std::string("YB\0C", 4)}), Error);
}

// ---- wrong dtypes and shapes; shape products that overflow ---------------------------------------

BOOST_AUTO_TEST_CASE(wrong_dtypes_and_shapes) {
    TempDir t;
    nn::Linear<float> lin(4, 3);  // weight [3, 4], bias [3]
    for (auto* p : {&lin.weight, &lin.bias}) p->value.fill(0.5f);
    const fs::path ok = t / "lin.safetensors";
    save_state_dict(lin, ok);
    auto unchanged = [&] {
        for (auto* p : {&lin.weight, &lin.bias})
            for (index_t i = 0; i < p->value.numel(); ++i) BOOST_REQUIRE(p->value[i] == 0.5f);
    };
    fs::path p = t.write("shape.safetensors", safetensors_bytes(R"({"bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                                                                R"("weight":{"dtype":"F32","shape":[4,3],"data_offsets":[12,60]}})",
                                                                std::string(60, '\0')));
    expect_error<IoError>([&] { load_state_dict(lin, p); }, {p.string(), "size mismatch for \"weight\"", "[4,3]", "[3,4]"}, t.path);
    unchanged();
    p = t.write("dtype.safetensors", safetensors_bytes(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "ab"));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "unknown or unsupported dtype \"F8_E4M3\""}, t.path);
    p = t.write("size.safetensors", safetensors_bytes(R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "need 16 bytes"}, t.path);
    p = t.write("rank.safetensors", safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}})", f32_bytes({1})));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "rank 5"}, t.path);
    p = t.write("neg.safetensors", safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", f32_bytes({1})));
    expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "negative extent"}, t.path);
    // Integers from floats, and values that do not fit.
    const SafetensorsFile lf(ok);
    expect_error<IoError>([&] { (void)lf.load_values<int>("weight"); }, {ok.string(), "tensor 'weight'", "not integers"}, t.path);
    std::string big(8, '\0');
    big[7] = 0x40;  // 2^62
    p = t.write("int.safetensors", safetensors_bytes(R"({"n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", big));
    expect_error<IoError>([&] { (void)SafetensorsFile(p).load_values<std::int32_t>("n"); }, {p.string(), "tensor 'n'", "does not fit"}, t.path);
    BOOST_TEST(SafetensorsFile(p).load_values<std::int64_t>("n")[0] == std::int64_t{1} << 62);
    // A missing name suggests close ones.
    expect_error<IoError>([&] { (void)lf.load<float>("weights"); }, {ok.string(), "no tensor named 'weights'", "did you mean 'weight'"}, t.path);
}

BOOST_AUTO_TEST_CASE(shape_products_that_overflow) {
    TempDir t;
    for (const char* shape : {"[4294967296,4294967296,2]", "[18446744073709551615,2]", "[1152921504606846977]", "[2,0,18446744073709551615,3]"}) {
        BOOST_TEST_CONTEXT(shape) {
            const fs::path p = t.write("overflow.safetensors",
                                       safetensors_bytes(std::string(R"({"w":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,4]}})",
                                                         f32_bytes({1})));
            // Zero extents do not excuse the others: the product of the non-zero extents must fit.
            expect_error<IoError>([&] { SafetensorsFile{p}; }, {p.string(), "tensor 'w'", "too many elements"}, t.path);
            fs::remove(p);
        }
    }
    // In memory: a Shape whose extents multiply past 2^60 throws before any allocation.
    expect_error<ShapeError>([] { Shape{index_t{1} << 31, index_t{1} << 31, 1 << 30}; }, {"2^60", "[2147483648,2147483648,1073741824]"});
    const std::vector<index_t> dims{index_t{1} << 40, index_t{1} << 40};
    expect_error<ShapeError>([&] { Shape::from_range(dims.begin(), dims.end()); }, {"overflow"});
    expect_error<ShapeError>([] { Tensor<float>(Shape{index_t{1} << 62, 4}); }, {"2^60"});
    BOOST_TEST(Shape({0, index_t{1} << 40, 8}).numel() == 0);
    expect_error<ShapeError>([] { Shape{0, index_t{1} << 62, 8}; }, {"2^60"});  // zero elements, but the strides would overflow
}

// ---- unknown genes, duplicated records ---------------------------------------------------------

BOOST_AUTO_TEST_CASE(unknown_genes) {
    TempDir t;
    fs::path p = t.write("gi.txt", "2 YLR035C YML060W 0.0447\n2 YLR035C NOTAGENE 0.1\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":2:", "gene 'NOTAGENE' is not in the universe", "Unknown::skip"},
                          t.path);
    const auto lenient = read_gi_labels(p, universe(), {true, Unknown::skip});
    BOOST_TEST(lenient.records.size() == 1u);
    BOOST_TEST(lenient.report.unknown_names.at("NOTAGENE") == 1u);
    p = t.write("genes.txt", "YAL001C\nACE2\nYIL171W\n");
    expect_error<IoError>([&] { read_gene_list(p, universe()); }, {p.string() + ":3:", "gene 'YIL171W' is not in the universe"}, t.path);
    p = t.write("topo.txt", "ROOT: GO:0000001 2\nGENES: YAL001C YXX001W\nTERMS:\n");
    expect_error<IoError>([&] { read_dcell_topology(p, universe()); }, {p.string() + ":2:", "gene 'YXX001W' of term GO:0000001"}, t.path);
    const auto topo = read_dcell_topology(p, universe(), Unknown::skip);
    BOOST_TEST(topo.report.skipped == 1u);
    BOOST_TEST(topo.terms[0].genes == std::vector<index_t>{universe().index("YAL001C")});
    // Graph sources skip and count edges with unknown genes (by design: STRING and YEASTRACT name
    // proteins and RNAs outside the protein-coding universe).
    p = t.write("y.csv", "\"\",\"TF\",\"TG\"\n\"1\",\"Ace2p\",\"AMN1\"\n\"2\",\"Xyz1p\",\"AMN1\"\n");
    const EdgeList y = read_yeastract(p, universe());
    BOOST_TEST(y.edges.size() == 1u);
    BOOST_TEST(y.report.skipped == 1u);
    BOOST_TEST(y.report.unknown_names.count("XYZ1") + y.report.unknown_names.count("Xyz1") == 1u);
}

BOOST_AUTO_TEST_CASE(duplicated_pairs_and_genes) {
    TempDir t;
    fs::path p = t.write("dup.txt", "2 YLR035C YML060W 0.0447\n2 YAL001C YAL002W 0.1\n2 YLR035C YML060W 0.0447\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":3:", "the gene set of line 1 appears again"}, t.path);
    const auto kept = read_gi_labels(p, universe(), {.duplicates = Duplicates::keep_first});
    BOOST_TEST(kept.records.size() == 2u);
    BOOST_TEST(kept.report.duplicates == 1u);
    p = t.write("reversed.txt", "2 YLR035C YML060W 0.0447\n2 YML060W YLR035C 0.0447\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":2:", "appears again"}, t.path);
    p = t.write("conflict.txt", "2 YLR035C YML060W 0.0447\n2 OGG1 MLH2 -0.3\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe(), {.duplicates = Duplicates::keep_first}); },
                          {p.string() + ":2:", "conflicting labels for the same gene set: -0.3 here, 0.0447 on line 1"}, t.path);
    p = t.write("query.txt", "YLR035C YML060W -2.0\nYML060W YLR035C -2.0\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe(), {.labeled = false}); }, {p.string() + ":2:", "appears again"}, t.path);
    // A gene twice in one record (under two of its names).
    p = t.write("self.txt", "2 YLR035C MLH2 0.1\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":1:", "gene 'YLR035C' appears twice in the record"}, t.path);
    // A count near 2^64 is an error at its line, not a wrap-around.
    p = t.write("count.txt", "18446744073709551615 YLR035C 0.1\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":1:", "gene count 18446744073709551615 needs"}, t.path);
    p = t.write("count2.txt", "99999999999999999999999 YLR035C 0.1\n");
    expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":1:", "must be a positive integer"}, t.path);
    // Gene lists keep a repeated gene once and count it.
    p = t.write("genes.txt", "YAL001C\nTFC3\nYBR158W\n");
    MappingReport r;
    BOOST_TEST(read_gene_list(p, universe(), Unknown::error, &r).size() == 2u);
    BOOST_TEST(r.duplicates == 1u);
    // Universes, topologies: a name or a term twice.
    p = t.write("table.tsv", "systematic_name\tstandard_name\nYAL001C\tTFC3\nYAL001C\t\n");
    expect_error<IoError>([&] { GeneUniverse::from_table(p); }, {p.string() + ":3:", "duplicate systematic name 'YAL001C' (first on line 2)"}, t.path);
    p = t.write("topo.txt", "ROOT: GO:0000001 1\nGENES: YAL001C YAL001C\nTERMS:\n");
    expect_error<IoError>([&] { read_dcell_topology(p, universe()); }, {p.string() + ":2:", "listed twice"}, t.path);
    p = t.write("topo2.txt", "ROOT: GO:0000001 1\nGENES: YAL001C\nTERMS:\nROOT: GO:0000001 1\nGENES: YAL001C\nTERMS:\n");
    expect_error<IoError>([&] { read_dcell_topology(p, universe()); }, {p.string() + ":4:", "defined twice (first on line 1)"}, t.path);
    p = t.write("topo3.txt", "ROOT: GO:0000001 2\nGENES: YAL001C\nTERMS: GO:0000002\nROOT: GO:0000002 2\nGENES: YAL002W\nTERMS: GO:0000001\n");
    expect_error<IoError>([&] { read_dcell_topology(p, universe()); }, {p.string(), "no root"}, t.path);
    p = t.write("topo4.txt", "ROOT: GO:0000001 3\nGENES: YAL001C\nTERMS: GO:0000002\nROOT: GO:0000002 1\nGENES: YAL002W\nTERMS:\n");
    expect_error<IoError>([&] { read_dcell_topology(p, universe()); }, {p.string() + ":1:", "declares 3 genes but 2"}, t.path);
}

// ---- NaN and Inf in labels and weights ----------------------------------------------------------

BOOST_AUTO_TEST_CASE(nan_and_inf_in_labels_and_weights) {
    TempDir t;
    for (const char* v : {"nan", "NaN", "inf", "-inf", "1e999", "0x1p3", ""}) {
        BOOST_TEST_CONTEXT(v) {
            const fs::path p = t.write("labels.txt", std::string("2 YLR035C YML060W 0.1\n2 YAL001C YAL002W ") + v + "\n");
            if (*v == '\0') expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":2:"}, t.path);
            else expect_error<IoError>([&] { read_gi_labels(p, universe()); }, {p.string() + ":2:", "is not a finite number"}, t.path);
            fs::remove(p);
        }
    }
    // Weights: a NaN or an infinity that would load into a parameter names the key and the index;
    // the module keeps its values. allow_non_finite loads them.
    nn::Linear<float> lin(2, 2);
    lin.weight.value.fill(0.5f);
    lin.bias.value.fill(0.5f);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const fs::path p = t.write("nan.safetensors", safetensors_bytes(R"({"bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                                    R"("weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}})",
                                                                    f32_bytes({0, inf}) + f32_bytes({1, 2, nan, 4})));
    expect_error<IoError>([&] { load_state_dict(lin, p); }, {p.string(), "non-finite value inf at flat index 1 of \"bias\"",
                                                             "non-finite value nan at flat index 2 of \"weight\""}, t.path);
    BOOST_TEST(lin.weight.value[2] == 0.5f);
    BOOST_TEST(lin.bias.value[1] == 0.5f);
    load_state_dict(lin, p, {.allow_non_finite = true});
    BOOST_TEST(std::isnan(lin.weight.value[2]));
    // Training targets: NaN marks a missing label (masked, by design); an infinity is an error.
    loss::MultiTaskLoss<double> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
    CgtGi<double> m(cgt_config());
    const PerturbationBatch b = PerturbationBatch::from_sets({{1}, {2, 3}});
    const auto out = m.forward(b, Context::eval());
    Tensor<double> y = Tensor<double>::from(Shape{2, 1}, {0.5, std::numeric_limits<double>::quiet_NaN()});
    BOOST_TEST(std::isfinite(m.loss_backward(out, {CgtTarget<double>{y.cview()}}, mse).total));
    y[1] = std::numeric_limits<double>::infinity();
    expect_error<ShapeError>([&] { m.loss_backward(out, {CgtTarget<double>{y.cview()}}, mse); }, {"task 'gi'", "flat index 1", "inf"});
}

// ---- perturbation sets --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(empty_sets_and_duplicate_genes_in_a_set) {
    CgtGi<double> m(cgt_config());
    // Documented (policies/perturbation/perturbation_batch.hpp): an empty set is a valid sample
    // (the readout sees no perturbed row), and a gene listed twice is kept and counts twice in the
    // mean: {4, 4, 5} pools rows (4, 4, 5), which differs from {4, 5}.
    const PerturbationBatch b = PerturbationBatch::from_sets({{}, {4, 5}, {4, 4, 5}, {4}});
    BOOST_CHECK_NO_THROW(b.validate(12));
    const auto out = m.forward(b, Context::eval());
    const auto& y = out.predictions[0];
    for (index_t i = 0; i < 4; ++i) BOOST_TEST(std::isfinite(y[i]), "sample " << i);
    BOOST_TEST(y[1] != y[2]);
    // What the file formats forbid is rejected by the readers (duplicated_pairs_and_genes).
    // Invalid batches: an index outside [0, N), negative, broken offsets, no sample at all.
    expect_error<ShapeError>([&] { m.forward(PerturbationBatch::from_sets({{1}, {2, 12}}), Context::eval()); },
                             {"set 1 entry 1 has index 12, outside [0, 12)"});
    expect_error<ShapeError>([&] { m.forward(PerturbationBatch::from_sets({{-1}}), Context::eval()); }, {"set 0 entry 0 has index -1"});
    PerturbationBatch broken = PerturbationBatch::from_sets({{1, 2}, {3}});
    broken.offsets[1] = 3;
    broken.offsets[2] = 2;
    expect_error<ShapeError>([&] { m.forward(broken, Context::eval()); }, {"last offset"});
    broken.offsets = {0, 2, 1, 3};
    expect_error<ShapeError>([&] { m.forward(broken, Context::eval()); }, {"offsets decrease at set 1"});
    expect_error<ShapeError>([&] { m.forward(PerturbationBatch::from_sets(std::vector<std::vector<index_t>>{}), Context::eval()); }, {"empty batch"});
}

// ---- graphs -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(graphs_with_self_edges_or_out_of_range_indices) {
    expect_error<ShapeError>([] { GeneGraph(5, std::vector<Edge>{{0, 1}, {2, 5}}); }, {"edge 1 (2 -> 5)", "outside [0,5)"});
    expect_error<ShapeError>([] { GeneGraph(5, std::vector<Edge>{{-1, 1}}); }, {"edge 0 (-1 -> 1)"});
    expect_error<ShapeError>([] { GeneGraph(-1, std::vector<Edge>{}); }, {"negative node count"});
    // Self-edges are edges (YEASTRACT has 33 TF self-regulations): kept once, and the self_loops
    // option adds no second copy.
    const GeneGraph g(4, std::vector<Edge>{{1, 1}, {1, 1}, {1, 2}});
    BOOST_TEST(g.nnz() == 2);
    BOOST_TEST(g.has_edge(1, 1));
    BOOST_TEST(g.duplicates() == 1);
    const GeneGraph loops(4, std::vector<Edge>{{1, 1}, {1, 2}}, {.self_loops = true});
    BOOST_TEST(loops.nnz() == 5);
    // A graph over another number of genes, or assigned to a layer or head the encoder lacks,
    // is rejected when it is added (naming the graph).
    CgtGi<float> m(cgt_config(12, 8, 2, 2, 2));
    expect_error<ShapeError>([&] { m.add_graph(GeneGraph(11, std::vector<Edge>{}), {{0}, 0, 1e-3}, "string_binding"); },
                             {"'string_binding'", "11 nodes, expected 12"});
    expect_error<ShapeError>([&] { m.add_graph(GeneGraph(12, std::vector<Edge>{}), {{2}, 0, 1e-3}, "g"); }, {"'g'", "layer 2 of a 2-layer"});
    expect_error<ShapeError>([&] { m.add_graph(GeneGraph(12, std::vector<Edge>{}), {{0}, 2, 1e-3}, "g"); }, {"'g'", "head 2 of 2"});
    expect_error<ShapeError>([&] { m.add_graph(GeneGraph(12, std::vector<Edge>{}), {{0}, -1, 1e-3}, "g"); }, {"'g'", "head -1"});
    const std::vector<index_t> row_ptr{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, col{12};
    expect_error<ShapeError>([&] { m.graph_regularizer().add_graph(row_ptr, col, {{0}, 0, 1e-3}, "csr"); }, {"edge 0 (0 -> 12)", "outside [0,12)"});
}

// ---- configurations with impossible sizes --------------------------------------------------------

BOOST_AUTO_TEST_CASE(impossible_configurations) {
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(12, 10, 2, 4, 2)); }, {"d_model 10 is not divisible by num_heads 4"});
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(12, 8, 2, 2, 3)); }, {"pert_heads"});
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(12, 8, 0, 2, 2)); }, {"num_layers = 0"});
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(0, 8, 2, 2, 2)); }, {"num_genes 0"});
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(12, 0, 2, 2, 2)); }, {"d_model 0"});
    expect_error<ShapeError>([] { CgtGi<float>(cgt_config(12, 8, 2, 0, 2)); }, {"num_heads 0"});
    expect_error<ShapeError>([] { CgtNonEquivariant<float>(cgt_config(12, 6, 2, 4, 2)); }, {"not divisible by num_heads 4"});
    CgtConfig drop = cgt_config();
    drop.dropout = 1.0;
    expect_error<ShapeError>([&] { CgtGi<float>{drop}; }, {"dropout 1"});

    auto state = [](auto edit) {
        StateConfig c = state_config();
        edit(c);
        return c;
    };
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.backbone.heads = 3; })); }, {"not divisible by 3 heads"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.backbone.kv_heads = 3; c.backbone.heads = 2; })); }, {"kv heads"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.backbone.layers = 0; })); }, {"backbone.layers 0"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.n_encoder_layers = 0; })); }, {"n_encoder_layers 0"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.n_decoder_layers = 0; })); }, {"n_decoder_layers 0"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.hidden = 0; })); }, {"hidden 0"});
    expect_error<ShapeError>([&] { StateModel(state([](StateConfig& c) { c.input_dim = 0; })); }, {"input_dim 0"});
    // Inputs that do not fit the configuration name both sizes.
    StateModel m(state_config());
    Tensor<float> pert(Shape{4, 3}), ctrl(Shape{4, 5});
    expect_error<ShapeError>([&] { m.forward(pert.cview(), ctrl.cview()); }, {"ctrl [4,5] in input_dim 6"});
}

// ---- a full disk while a file is saved ------------------------------------------------------------

namespace {
/// Saves `old` then `bigger` to dir/name with `fail` arranging a full disk for the second save:
/// the second save throws IoError naming the file and ENOSPC, the old file is intact, and no
/// temporary file is left.
template <class Arrange>
void full_disk_keeps_the_old_file(const fs::path& dir, Arrange&& arrange) {
    const fs::path p = dir / "model.safetensors";
    const Tensor<float> old = Tensor<float>::full(Shape{64}, 1.5f), bigger = Tensor<float>::full(Shape{64 * 1024}, 2.5f);
    save_safetensors(p, {{"w", old}});
    const auto before = dir_state(dir);
    {
        auto undo = arrange();
        expect_error<IoError>([&] { save_safetensors(p, {{"w", bigger}}); }, {p.string(), "No space left on device"}, dir);
    }
    BOOST_TEST((dir_state(dir) == before));
    BOOST_TEST(SafetensorsFile(p).load<float>("w")[63] == 1.5f);
    // The module-level writer goes through the same file.
    nn::Linear<float> lin(256, 256);
    {
        auto undo = arrange();
        expect_error<IoError>([&] { save_state_dict(lin, p); }, {p.string(), "No space left on device"}, dir);
    }
    BOOST_TEST(SafetensorsFile(p).load<float>("w").numel() == 64);
}
} // namespace

BOOST_AUTO_TEST_CASE(a_full_disk_while_saving_keeps_the_previous_file) {
    // The write-failure hook: the disk has 4 KB free for the new file.
    TempDir t;
    full_disk_keeps_the_old_file(t.path, [] {
        io::detail::simulated_free_bytes = 4096;
        struct Undo {
            ~Undo() { io::detail::simulated_free_bytes = -1; }
        };
        return Undo{};
    });
    // A real full disk: a 128 KB tmpfs, where the system allows mounting one (root).
    TempDir m;
    if (::geteuid() == 0 && ::mount("tmpfs", m.path.c_str(), "tmpfs", 0, "size=128k") == 0) {
        struct Unmount {
            fs::path p;
            ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
        } unmount{m.path};
        full_disk_keeps_the_old_file(m.path, [] { return 0; });
        BOOST_TEST_MESSAGE("full disk: checked on a 128 KB tmpfs");
    } else {
        BOOST_TEST_MESSAGE("full disk: no tmpfs can be mounted here (not root, or no permission): the write-failure hook only");
    }
}

// ---- where a file is saved: read-only files, permissions, symlinks, killed saves ----------------

BOOST_AUTO_TEST_CASE(saving_keeps_permissions_refuses_read_only_files_and_writes_through_symlinks) {
    TempDir t;
    const Tensor<float> a = Tensor<float>::full(Shape{3}, 1.0f), b = Tensor<float>::full(Shape{3}, 2.0f);
    // A read-only file is never replaced (root included).
    const fs::path ro = t / "ro.safetensors";
    save_safetensors(ro, {{"w", a}});
    fs::permissions(ro, fs::perms::owner_read | fs::perms::group_read);
    expect_error<IoError>([&] { save_safetensors(ro, {{"w", b}}); }, {ro.string(), "read-only (mode 0440)", "not replaced"}, t.path);
    // The mode of the replaced file is kept (0600 stays 0600).
    const fs::path priv = t / "private.safetensors";
    save_safetensors(priv, {{"w", a}});
    fs::permissions(priv, fs::perms::owner_read | fs::perms::owner_write);
    save_safetensors(priv, {{"w", b}});
    BOOST_TEST((fs::status(priv).permissions() == (fs::perms::owner_read | fs::perms::owner_write)));
    BOOST_TEST(SafetensorsFile(priv).load<float>("w")[0] == 2.0f);
    // A symlink is written through: the target is replaced, the link stays a link.
    fs::create_directories(t / "runs");
    const fs::path target = t / "runs" / "model.safetensors", link = t / "latest.safetensors";
    save_safetensors(target, {{"w", a}});
    fs::create_symlink(fs::path("runs") / "model.safetensors", link);
    save_safetensors(link, {{"w", b}});
    BOOST_TEST(fs::is_symlink(link));
    BOOST_TEST(SafetensorsFile(target).load<float>("w")[0] == 2.0f);
    // A dangling link creates its target; a link to a read-only file is refused like the file.
    const fs::path dangling = t / "next.safetensors";
    fs::create_symlink(fs::path("runs") / "next.safetensors", dangling);
    save_safetensors(dangling, {{"w", a}});
    BOOST_TEST(fs::is_symlink(dangling));
    BOOST_TEST(fs::is_regular_file(t / "runs" / "next.safetensors"));
    const fs::path ro_link = t / "ro_link.safetensors";
    fs::create_symlink("ro.safetensors", ro_link);
    expect_error<IoError>([&] { save_safetensors(ro_link, {{"w", b}}); }, {ro_link.string(), "read-only", "ro.safetensors"}, t.path);
    // A directory or a FIFO at the destination: refused before anything is written.
    fs::create_directories(t / "taken.safetensors" / "inside");
    expect_error<IoError>([&] { save_safetensors(t / "taken.safetensors", {{"w", b}}); }, {"taken.safetensors", "a directory"}, t.path);
    BOOST_REQUIRE(::mkfifo((t / "fifo.safetensors").c_str(), 0600) == 0);
    expect_error<IoError>([&] { save_safetensors(t / "fifo.safetensors", {{"w", b}}); }, {"fifo.safetensors", "FIFO"}, t.path);
    // A directory that does not exist.
    expect_error<IoError>([&] { save_safetensors(t / "no" / "dir" / "x.safetensors", {{"w", b}}); }, {"x.safetensors", "No such file"}, t.path);
}

BOOST_AUTO_TEST_CASE(temporary_files_of_killed_saves_are_removed) {
    TempDir t;
    const fs::path p = t / "ckpt.safetensors";
    const Tensor<float> a = Tensor<float>::full(Shape{3}, 1.0f);
    save_safetensors(p, {{"w", a}});
    // A process that died mid-save (a real, reaped child's pid), one of a live process (ours, as if
    // another thread were saving), an old one from another host, a recent one from another host,
    // and a temporary file of another destination.
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    BOOST_REQUIRE(child > 0);
    ::waitpid(child, nullptr, 0);
    const std::string host = io::detail::temp_host_name(), prefix = io::detail::temp_prefix("ckpt.safetensors");
    const std::string dead = prefix + host + "." + std::to_string(child) + ".0", live = prefix + host + "." + std::to_string(::getpid()) + ".999",
                      old_other = prefix + "otherhost.12345.0", new_other = prefix + "otherhost.12346.0",
                      unrelated = io::detail::temp_prefix("other.safetensors") + host + "." + std::to_string(child) + ".0";
    for (const auto& n : {dead, live, old_other, new_other, unrelated}) t.write(n, "half-written");
    const auto two_days_ago = fs::file_time_type::clock::now() - std::chrono::hours(48);
    fs::last_write_time(t / old_other, two_days_ago);
    save_safetensors(p, {{"w", a}});
    BOOST_TEST(!fs::exists(t / dead));
    BOOST_TEST(!fs::exists(t / old_other));
    BOOST_TEST(fs::exists(t / live));
    BOOST_TEST(fs::exists(t / new_other));
    BOOST_TEST(fs::exists(t / unrelated));
    BOOST_TEST(SafetensorsFile(p).load<float>("w")[0] == 1.0f);
}

// ---- numbers in arguments and environment variables -----------------------------------------------

BOOST_AUTO_TEST_CASE(numbers_in_arguments_and_environment_variables) {
    expect_error<Error>([] { parse_number<int>("12abc", "--epochs"); }, {"--epochs: '12abc' is not an integer"});
    expect_error<Error>([] { parse_number<index_t>("0", "--batch", 1, 1 << 20); }, {"--batch: '0' is outside [1, 1048576]"});
    expect_error<Error>([] { parse_number<int>("99999999999", "--layers"); }, {"--layers", "out of range"});
    expect_error<Error>([] { parse_number<double>("nan", "--lr"); }, {"--lr: 'nan' is not a finite number"});
    expect_error<Error>([] { parse_number<double>("", "--lr"); }, {"--lr: '' is not a number"});
    BOOST_TEST(parse_number<int>("+42", "x") == 42);
    BOOST_TEST(parse_number<double>("2e-3", "x") == 2e-3);
    ::setenv("CELLTX_TEST_NUMBER", "7x", 1);
    expect_error<Error>([] { env_number<int>("CELLTX_TEST_NUMBER", 3); }, {"environment variable CELLTX_TEST_NUMBER", "'7x' is not an integer"});
    ::setenv("CELLTX_TEST_NUMBER", "", 1);
    BOOST_TEST(env_number<int>("CELLTX_TEST_NUMBER", 3) == 3);
    ::setenv("CELLTX_TEST_NUMBER", "12", 1);
    BOOST_TEST(env_number<int>("CELLTX_TEST_NUMBER", 3, 1, 64) == 12);
    ::unsetenv("CELLTX_TEST_NUMBER");
}

// .h5ad files whose sizes cannot be believed (docs/reliability.md; found by fuzz_h5ad): each is an
// IoError naming the file and the element, before anything of the claimed size is allocated.
BOOST_AUTO_TEST_CASE(h5ad_files_with_impossible_sizes) {
    TempDir dir;
    AnnData<float> a;
    Tensor<float> x(Shape{3, 2});
    for (index_t k = 0; k < 6; ++k) x[k] = static_cast<float>(k % 2);
    a.X = Matrix<float>(CsrMatrix<float>::from_dense(x.cview()));
    a.obs.index = {"c0", "c1", "c2"};
    a.obs.set("perturbation", Column::categorical({0, 1, 0}, {"KO", "control"}));
    a.var.index = {"g0", "g1"};
    const fs::path good = dir / "good.h5ad";
    write_h5ad(good, a);
    auto defect = [&](const char* name, auto&& edit) {
        const fs::path p = dir / name;
        fs::copy_file(good, p);
        {
            h5::QuietErrors quiet;
            h5::Handle f(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
            BOOST_REQUIRE(f.valid());
            edit(h5::Object(std::move(f), p.string(), "/"));
        }
        return p;
    };
    // a sparse shape that is not a size: NaN, 1e300, 2.5, or past 2^40 (no int64 overflow of rows + 1)
    for (double bad : {std::nan(""), 1e300, 2.5, 1.2e12}) {
        const fs::path p = defect(fmt::format("shape_{}.h5ad", bad).c_str(), [&](const h5::Object& f) {
            H5Adelete(f.group("X").id(), "shape");
            f.group("X").write_attr_array<double>("shape", {bad, 2.0});
        });
        expect_error<IoError>([&] { (void)read_h5ad(p); }, {p.string(), "/X", "row count", "is not a size"}, dir.path);
    }
    // a dataset that declares 2^20 × 2^20 elements (4 TiB) with no storage (chunked, never written)
    const fs::path huge = defect("huge_layer.h5ad", [](const h5::Object& f) {
        const hsize_t dims[2] = {hsize_t(1) << 20, hsize_t(1) << 20}, chunk[2] = {16, 16};
        h5::Handle space(H5Screate_simple(2, dims, nullptr));
        h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
        H5Pset_chunk(dcpl.get(), 2, chunk);
        h5::Handle d(H5Dcreate2(f.group("layers").id(), "counts", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
        BOOST_REQUIRE(d.valid());
    });
    expect_error<IoError>([&] { (void)read_h5ad(huge); }, {huge.string(), "/layers/counts", "but the file stores only 0 bytes"}, dir.path);
    // a categorical code beyond int32 is not wrapped into a valid one
    const fs::path code = defect("code.h5ad", [](const h5::Object& f) {
        H5Ldelete(f.id(), "obs/perturbation/codes", H5P_DEFAULT);
        f.group("obs").group("perturbation").write_dataset<std::int64_t>("codes", {0, (std::int64_t(1) << 32) + 1, 0});
    });
    expect_error<IoError>([&] { (void)read_h5ad(code); }, {code.string(), "/obs/perturbation/codes", "4294967297 at row 1"}, dir.path);
    // a variable-length string whose stored length claims 2 GB: refused from its descriptor, before
    // libhdf5 would allocate and zero 2 GB for it
    const fs::path vlen = defect("vlen.h5ad", [](const h5::Object&) {});
    haddr_t offset = HADDR_UNDEF;
    {
        h5::QuietErrors quiet;
        h5::Handle f(H5Fopen(vlen.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
        h5::Handle d(H5Dopen2(f.get(), "var/_index", H5P_DEFAULT));
        offset = H5Dget_offset(d.get());
    }
    BOOST_REQUIRE(offset != HADDR_UNDEF);
    {
        std::fstream io(vlen, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(static_cast<std::streamoff>(offset));
        const char len[4] = {0, 0, 0, char(0x7f)};  // little-endian 0x7f000000
        io.write(len, 4);
    }
    const auto t0 = std::chrono::steady_clock::now();
    expect_error<IoError>([&] { (void)read_h5ad(vlen); }, {vlen.string(), "/var/_index", "string 0 declares a length of 2130706432 bytes"},
                          dir.path);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    BOOST_TEST(seconds < 5.0);
}

BOOST_AUTO_TEST_SUITE_END()
