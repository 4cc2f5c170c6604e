// safetensors reading (every dtype against what torch stored and converted), the validation of
// corrupted files, bit-exact and atomic writing, and state_dict loading/saving.
// Fixtures: tools/fixtures/make_safetensors.py.
#include <boost/test/unit_test.hpp>
#include <bit>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>
#include <sys/resource.h>
#include <unistd.h>
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"

using namespace celltx;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(CELLTX_FIXTURE_DIR) + "/" + name; }

/// Same bits, or both NaN (payloads may differ between conversion paths).
template <class T>
bool same_value(T a, T b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return std::bit_cast<std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>(a) ==
           std::bit_cast<std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>(b);
}

std::string file_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

std::set<std::string> listing(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
}

/// A fresh directory, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() / ("celltx_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
};

/// Runs f, which must throw IoError; returns its message ("" when it did not throw).
template <class F>
std::string io_error_of(F&& f) {
    try {
        f();
    } catch (const IoError& e) {
        return e.what();
    }
    return "";
}

void check_contains(const std::string& msg, const std::vector<std::string>& parts) {
    BOOST_TEST(!msg.empty(), "expected an IoError");
    for (const auto& p : parts) BOOST_TEST(msg.find(p) != std::string::npos, "'" << p << "' not in: " << msg);
}

/// A module that is not a layer: a Linear under "enc." and a loose parameter.
struct Encoder {
    nn::Linear<double> enc{4, 3};
    Parameter<double> scale{Shape{3}};
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        enc.visit_parameters(f, join_name(prefix, "enc."));
        f(join_name(prefix, "scale"), scale);
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(every_dtype_reads_as_torch_converts_it) {
    // st_dtypes_expected holds torch's own t.double() and t.float() of every stored tensor.
    io::SafetensorsFile expected(fixture("st_dtypes_expected.safetensors"));
    std::set<io::DType> seen;
    int checked = 0;
    for (const char* name : {"st_dtypes.safetensors", "st_dtypes_extra.safetensors"}) {
        io::SafetensorsFile f(fixture(name));
        for (const auto& ti : f.tensors()) {
            seen.insert(ti.dtype);
            const auto e64 = expected.load<double>(ti.name + ".f64");
            const auto e32 = expected.load<float>(ti.name + ".f32");
            const auto d = f.load<double>(ti.name);
            const auto s = f.load<float>(ti.name);
            BOOST_TEST(d.shape() == e64.shape(), ti.name);
            BOOST_TEST(s.shape() == e32.shape(), ti.name);
            for (index_t i = 0; i < e64.numel(); ++i) {
                BOOST_TEST(same_value(d[i], e64[i]), ti.name << "[" << i << "] as double: " << d[i] << " vs torch " << e64[i]);
                BOOST_TEST(same_value(s[i], e32[i]), ti.name << "[" << i << "] as float: " << s[i] << " vs torch " << e32[i]);
            }
            Tensor<double> into(ti.shape);
            f.load_into<double>(ti.name, into.view());
            for (index_t i = 0; i < e64.numel(); ++i) BOOST_TEST(same_value(into[i], e64[i]));
            ++checked;
        }
    }
    BOOST_TEST(checked == 16);
    BOOST_TEST(seen.size() == 13u);  // every dtype celltx reads
}

BOOST_AUTO_TEST_CASE(known_values_shapes_and_exact_integers) {
    io::SafetensorsFile f(fixture("st_dtypes.safetensors"));
    // Halves: largest, smallest subnormal, smallest normal, a rounded subnormal, infinities, NaN.
    const auto h = f.load<double>("f16");
    BOOST_TEST(io::dtype_name(f.info("f16").dtype) == std::string("F16"));
    BOOST_TEST(h[0] == 65504.0);
    BOOST_TEST(h[1] == -65504.0);
    BOOST_TEST(h[2] == std::ldexp(1.0, -24));
    BOOST_TEST(h[3] == std::ldexp(1.0, -14));
    BOOST_TEST(h[5] == -50 * std::ldexp(1.0, -24));  // -3e-6 rounds to 50 subnormal steps
    BOOST_TEST(h[6] == 1.0009765625);
    BOOST_TEST((std::isinf(h[7]) && h[7] > 0));
    BOOST_TEST((std::isinf(h[8]) && h[8] < 0));
    BOOST_TEST(std::isnan(h[9]));
    // bfloat16 from float rounds to nearest, ties to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6.
    const auto b = f.load<float>("bf16");
    BOOST_TEST(b.shape() == (Shape{2, 3}));
    BOOST_TEST(b(0, 0) == 1.0f);
    BOOST_TEST(b(0, 1) == 1.015625f);
    BOOST_TEST(b(0, 2) == 1.0078125f);
    BOOST_TEST(b(1, 2) == -7.5f);
    // Integers: exact through load_values, rounded (to nearest even) as float/double.
    const auto i64 = f.load_values<std::int64_t>("i64");
    BOOST_TEST(i64 == (std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(),
                                                  9007199254740993, -3}), boost::test_tools::per_element());
    BOOST_TEST(f.load<double>("i64")(1, 0) == 9007199254740992.0);
    BOOST_TEST(f.load<float>("i32")[2] == 16777216.0f);
    BOOST_TEST(f.load<double>("i32")[2] == 16777217.0);
    io::SafetensorsFile extra(fixture("st_dtypes_extra.safetensors"));
    const auto u64 = extra.load_values<std::uint64_t>("u64");
    BOOST_TEST(u64[0] == 18446744073709551615ull);
    BOOST_TEST(u64[1] == 9007199254740993ull);
    BOOST_TEST(extra.load_values<int>("bool") == (std::vector<int>{1, 0, 1}), boost::test_tools::per_element());
    check_contains(io_error_of([&] { (void)f.load_values<std::int32_t>("i64"); }), {"st_dtypes.safetensors", "'i64'", "does not fit"});
    check_contains(io_error_of([&] { (void)extra.load_values<std::int64_t>("u64"); }), {"'u64'", "does not fit"});
    check_contains(io_error_of([&] { (void)f.load_values<int>("f32"); }), {"'f32'", "not integers"});
    // Scalar, empty and rank-4 shapes.
    const auto s = f.load<float>("scalar");
    BOOST_TEST(s.rank() == 0);
    BOOST_TEST(s[0] == 2.5f);
    const auto e = f.load<double>("empty");
    BOOST_TEST(e.shape() == (Shape{0, 3}));
    BOOST_TEST(e.numel() == 0);
    BOOST_TEST(f.load<float>("rank4").shape() == (Shape{1, 2, 1, 3}));
    BOOST_TEST(f.load<float>("rank4")(0, 1, 0, 2) == 2.5f);
    BOOST_TEST(f.metadata().at("producer") == "make_safetensors.py");
    BOOST_TEST(f.tensors().front().name == "bf16");  // sorted by name
    // A destination of the wrong shape is refused.
    Tensor<float> wrong(Shape{3, 2});
    check_contains(io_error_of([&] { f.load_into<float>("bf16", wrong.view()); }), {"'bf16'", "[2,3]", "[3,2]"});
}

BOOST_AUTO_TEST_CASE(every_corruption_is_an_io_error_naming_file_and_key) {
    struct Case {
        const char* file;
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases{
        {"st_bad_empty.safetensors", {"0 bytes", "too short"}},
        {"st_bad_truncated_header.safetensors", {"header length", "runs past the end"}},
        {"st_bad_truncated.safetensors", {"tensor 'b'", "data_offsets", "past the end"}},
        {"st_bad_header_huge.safetensors", {"header length 1099511627776", "100 MB"}},
        {"st_bad_json.safetensors", {"not valid JSON"}},
        {"st_bad_not_object.safetensors", {"not a JSON object"}},
        {"st_bad_overlap.safetensors", {"tensor 'b'", "data_offsets", "overlaps tensor 'a'"}},
        {"st_bad_gap.safetensors", {"tensor 'b'", "data_offsets", "gap of 4 bytes", "contiguous"}},
        {"st_bad_past_end.safetensors", {"tensor 'b'", "data_offsets", "past the end"}},
        {"st_bad_trailing.safetensors", {"8 bytes after", "'b'"}},
        {"st_bad_offsets_reversed.safetensors", {"tensor 'b'", "data_offsets", "ends before it begins"}},
        {"st_bad_duplicate.safetensors", {"tensor 'a'", "twice", "duplicate"}},
        {"st_bad_duplicate_field.safetensors", {"duplicate key 'dtype'", "entry 'a'"}},
        {"st_bad_size.safetensors", {"tensor 'b'", "F32", "[2,2]", "need 16 bytes", "spans 12"}},
        {"st_bad_dtype.safetensors", {"tensor 'b'", "'dtype'", "X9"}},
        {"st_bad_rank.safetensors", {"tensor 'b'", "'shape'", "rank 5"}},
        {"st_bad_shape_float.safetensors", {"tensor 'b'", "'shape'", "non-integer"}},
        {"st_bad_shape_negative.safetensors", {"tensor 'b'", "'shape'", "negative"}},
        {"st_bad_missing_field.safetensors", {"tensor 'b'", "missing field 'data_offsets'"}},
        {"st_bad_metadata.safetensors", {"'__metadata__'", "'epoch'", "not a string"}},
        {"st_no_such_file.safetensors", {"cannot open"}},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.file) {
            auto parts = c.parts;
            parts.push_back(c.file);
            check_contains(io_error_of([&] { io::SafetensorsFile f(fixture(c.file)); }), parts);
        }
    }
    // A valid file cut anywhere is rejected, never read as something else.
    const std::string good = file_bytes(fixture("st_linear.safetensors"));
    TempDir dir;
    for (std::size_t cut : {std::size_t{0}, std::size_t{5}, std::size_t{8}, std::size_t{40}, good.size() - 1}) {
        write_bytes(dir / "cut.safetensors", good.substr(0, cut));
        BOOST_TEST(!io_error_of([&] { io::SafetensorsFile f(dir / "cut.safetensors"); }).empty(), "cut at " << cut);
    }
}

BOOST_AUTO_TEST_CASE(a_missing_name_suggests_close_ones) {
    io::SafetensorsFile lin(fixture("st_linear.safetensors"));
    BOOST_TEST(lin.contains("weight"));
    BOOST_TEST(!lin.contains("wieght"));
    check_contains(io_error_of([&] { (void)lin.load<float>("wieght"); }),
                   {"st_linear.safetensors", "no tensor named 'wieght'", "did you mean 'weight'", "2 tensors"});
    io::SafetensorsFile ckpt(fixture("st_checkpoint.safetensors"));
    check_contains(io_error_of([&] { (void)ckpt.info("proj.bias"); }), {"did you mean 'model.proj.bias'"});
    check_contains(io_error_of([&] { (void)ckpt.info("embed_tokens"); }), {"did you mean 'model.embed_tokens.weight'"});
    // Copies share the bytes and outlive the original.
    auto copy = std::make_unique<io::SafetensorsFile>(fixture("st_linear.safetensors"));
    const io::SafetensorsFile kept = *copy;
    copy.reset();
    BOOST_TEST(kept.load<double>("bias")[0] == lin.load<double>("bias")[0]);
}

BOOST_AUTO_TEST_CASE(write_then_read_is_bit_exact) {
    TempDir dir;
    const float fi = std::numeric_limits<float>::infinity();
    const double di = std::numeric_limits<double>::infinity();
    auto f = Tensor<float>::from(Shape{2, 5}, {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(), -fi,
                                               fi, std::numeric_limits<float>::quiet_NaN(), 1.0f / 3.0f, -2.5e-38f, 123456.789f});
    auto d = Tensor<double>::from(Shape{2, 2, 1, 2}, {0.1, -0.0, std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max(),
                                                      -di, std::numeric_limits<double>::quiet_NaN(), 1.0 / 3.0, 1e-300});
    auto scalar = Tensor<double>::full(Shape{}, -7.25);
    auto empty = Tensor<float>::zeros(Shape{0, 3});
    auto narrowed = Tensor<double>::from(Shape{3}, {1.0 / 3.0, 1e300, 16777217.0});
    const fs::path p = dir / "rt.safetensors";
    io::save_safetensors(p,
                         {{"layer.f", f}, {"d", d.view()}, {"scalar", scalar.cview()}, {"empty", empty}, {"narrowed", narrowed, io::DType::F32},
                          {"widened", f, io::DType::F64}},
                         {{"epoch", "3"}, {"note", "round trip"}});
    io::SafetensorsFile r(p);
    BOOST_TEST(r.names() == (std::vector<std::string>{"d", "empty", "layer.f", "narrowed", "scalar", "widened"}), boost::test_tools::per_element());
    BOOST_TEST((r.info("layer.f").dtype == io::DType::F32 && r.info("d").dtype == io::DType::F64));
    BOOST_TEST((r.info("narrowed").dtype == io::DType::F32 && r.info("widened").dtype == io::DType::F64));
    BOOST_TEST(r.metadata().at("epoch") == "3");
    BOOST_TEST(r.metadata().at("note") == "round trip");
    const auto rf = r.load<float>("layer.f");
    const auto rd = r.load<double>("d");
    const auto rw = r.load<double>("widened");
    BOOST_TEST(rf.shape() == f.shape());
    BOOST_TEST(rd.shape() == d.shape());
    for (index_t i = 0; i < f.numel(); ++i) BOOST_TEST(same_value(rf[i], f[i]), i);
    for (index_t i = 0; i < f.numel(); ++i) BOOST_TEST(same_value(rw[i], static_cast<double>(f[i])), i);
    for (index_t i = 0; i < d.numel(); ++i) BOOST_TEST(same_value(rd[i], d[i]), i);
    const auto rn = r.load<float>("narrowed");
    for (index_t i = 0; i < 3; ++i) BOOST_TEST(same_value(rn[i], static_cast<float>(narrowed[i])), i);
    BOOST_TEST(r.load<double>("scalar").rank() == 0);
    BOOST_TEST(r.load<double>("scalar")[0] == -7.25);
    BOOST_TEST(r.load<float>("empty").shape() == (Shape{0, 3}));

    // Header: length a multiple of 8, padded with spaces, metadata first, then keys sorted.
    const std::string bytes = file_bytes(p);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
    BOOST_TEST(n % 8 == 0u);
    const std::string header = bytes.substr(8, n);
    const auto close = header.find_last_of('}');
    BOOST_TEST(header.find_first_not_of(' ', close + 1) == std::string::npos);
    BOOST_TEST(n - close - 1 < 8u);
    const auto j = nlohmann::ordered_json::parse(header);
    std::vector<std::string> keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
    BOOST_TEST(keys == (std::vector<std::string>{"__metadata__", "d", "empty", "layer.f", "narrowed", "scalar", "widened"}),
               boost::test_tools::per_element());
    BOOST_TEST(listing(dir.path) == (std::set<std::string>{"rt.safetensors"}));
}

BOOST_AUTO_TEST_CASE(writer_output_is_byte_identical_to_the_python_writer) {
    // tools/fixtures/stio.py wrote these tensors; the same tensors written here give the same bytes.
    Tensor<float> a(Shape{2, 3});
    for (index_t i = 0; i < 6; ++i) a[i] = static_cast<float>(i) * 0.5f - 1.0f;
    auto b = Tensor<double>::from(Shape{4}, {0.25, -8.0, 1e300, -0.0});
    auto c = Tensor<float>::full(Shape{}, 3.0f);
    auto e = Tensor<double>::zeros(Shape{0, 2});
    TempDir dir;
    io::save_safetensors(dir / "same.safetensors", {{"e", e}, {"c.d", c}, {"b", b}, {"a", a}});
    const std::string ours = file_bytes(dir / "same.safetensors"), theirs = file_bytes(fixture("st_stio_reference.safetensors"));
    BOOST_TEST(ours.size() == theirs.size());
    BOOST_TEST((ours == theirs));
}

BOOST_AUTO_TEST_CASE(invalid_entries_leave_the_destination_untouched) {
    TempDir dir;
    const fs::path p = dir / "keep.safetensors";
    auto w = Tensor<float>::full(Shape{2}, 1.5f);
    io::save_safetensors(p, {{"w", w}});
    const std::string before = file_bytes(p);
    const std::vector<std::pair<std::string, std::vector<io::TensorEntry>>> bad{
        {"given twice", {{"w", w}, {"w", w}}},
        {"reserved", {{"__metadata__", w}}},
        {"empty tensor name", {{"", w}}},
        {"cannot store as F16", {{"w", w, io::DType::F16}}},
        {"no data", {{"w", ConstView<float>(nullptr, Shape{2})}}},
        {"UTF-8", {{"w\xff", w}}},
    };
    for (const auto& c : bad) {
        BOOST_TEST_CONTEXT(c.first) {
            check_contains(io_error_of([&] { io::save_safetensors(p, c.second); }), {"keep.safetensors", c.first});
            BOOST_TEST((file_bytes(p) == before));
            BOOST_TEST(listing(dir.path) == (std::set<std::string>{"keep.safetensors"}));
        }
    }
}

BOOST_AUTO_TEST_CASE(failed_writes_are_atomic) {
    TempDir dir;
    auto big = Tensor<float>::full(Shape{16384}, 0.5f);  // 64 KB
    // Unwritable location: the directory does not exist.
    check_contains(io_error_of([&] { io::save_safetensors(dir / "no/such/dir/x.safetensors", {{"x", big}}); }),
                   {"x.safetensors", "temporary file", "No such file"});
    BOOST_TEST(listing(dir.path).empty());

    // The destination is a directory: refused before anything is written.
    fs::create_directories(dir / "taken.safetensors/inside");
    check_contains(io_error_of([&] { io::save_safetensors(dir / "taken.safetensors", {{"x", big}}); }), {"taken.safetensors", "a directory"});
    BOOST_TEST(fs::is_directory(dir / "taken.safetensors/inside"));
    BOOST_TEST(listing(dir.path) == (std::set<std::string>{"taken.safetensors"}));

    // A write that fails midway (file size limit): the old file stays, no temporary file remains.
    const fs::path p = dir / "old.safetensors";
    auto small = Tensor<float>::full(Shape{3}, 2.0f);
    io::save_safetensors(p, {{"x", small}});
    const std::string before = file_bytes(p);
    std::string msg;
    {
        rlimit saved{};
        BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
        auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // else exceeding the limit kills the process
        rlimit low = saved;
        low.rlim_cur = 4096;
        ::setrlimit(RLIMIT_FSIZE, &low);
        msg = io_error_of([&] { io::save_safetensors(p, {{"x", big}}); });
        ::setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, old_handler);
    }
    check_contains(msg, {"old.safetensors", "write", "temporary file"});
    BOOST_TEST((file_bytes(p) == before));
    BOOST_TEST(listing(dir.path) == (std::set<std::string>{"old.safetensors", "taken.safetensors"}));
    // And the same write succeeds without the limit, replacing the file.
    io::save_safetensors(p, {{"x", big}});
    BOOST_TEST(io::SafetensorsFile(p).load<float>("x").numel() == 16384);
}

BOOST_AUTO_TEST_CASE(linear_float_loads_the_f64_state_dict_and_matches_torch) {
    nn::Linear<float> lin(4, 3);
    const auto report = io::load_state_dict(lin, fixture("st_linear.safetensors"));
    BOOST_TEST(report.loaded == (std::vector<std::string>{"weight", "bias"}), boost::test_tools::per_element());
    BOOST_TEST((report.missing.empty() && report.unexpected.empty() && report.ignored.empty()));
    io::SafetensorsFile f(fixture("st_linear.safetensors"));
    const auto w = f.load<double>("weight"), b = f.load<double>("bias");
    for (index_t i = 0; i < w.numel(); ++i) BOOST_TEST(lin.weight.value[i] == static_cast<float>(w[i]));
    for (index_t i = 0; i < b.numel(); ++i) BOOST_TEST(lin.bias.value[i] == static_cast<float>(b[i]));
    // The loaded layer computes what torch computed in float32 with the same weights.
    io::SafetensorsFile io_file(fixture("st_linear_io.safetensors"));
    const auto y = lin.apply(io_file.load<float>("x"));
    const auto diff = testing::relative_difference(y, io_file.load<double>("y"));
    BOOST_TEST_MESSAGE("Linear<float> from F64 file vs torch: " << diff.str());
    BOOST_TEST(diff.within(1e-6), diff.str());
}

BOOST_AUTO_TEST_CASE(strict_loading_lists_all_missing_and_unexpected_names) {
    TempDir dir;
    const fs::path p = dir / "partial.safetensors";
    auto w = testing::random_tensor<double>(Shape{3, 4}, 1);
    auto extra = Tensor<double>::full(Shape{2}, 1.0);
    io::save_safetensors(p, {{"weight", w}, {"extra.b", extra}, {"extra.a", extra}});

    nn::Linear<double> lin(4, 3);
    lin.weight.value.fill(9.0);
    lin.bias.value.fill(9.0);
    check_contains(io_error_of([&] { io::load_state_dict(lin, p); }),
                   {"partial.safetensors", "error(s) in loading state_dict", "Missing key(s) in state_dict: \"bias\".",
                    "Unexpected key(s) in state_dict: \"extra.a\", \"extra.b\"."});
    for (index_t i = 0; i < 12; ++i) BOOST_TEST(lin.weight.value[i] == 9.0);  // nothing loaded on failure

    // Any module: every missing name listed, then a name mapping makes the Linear part match.
    Encoder enc;
    check_contains(io_error_of([&] { io::load_state_dict(enc, fixture("st_linear.safetensors")); }),
                   {"Missing key(s) in state_dict: \"enc.weight\", \"enc.bias\", \"scale\".", "Unexpected key(s) in state_dict: \"bias\", \"weight\"."});
    io::LoadOptions add_prefix;
    add_prefix.map_name = [](const std::string& k) { return "enc." + k; };
    check_contains(io_error_of([&] { io::load_state_dict(enc, fixture("st_linear.safetensors"), add_prefix); }),
                   {"Missing key(s) in state_dict: \"scale\"."});
    add_prefix.strict = false;
    const auto report = io::load_state_dict(enc, fixture("st_linear.safetensors"), add_prefix);
    BOOST_TEST(report.missing == (std::vector<std::string>{"scale"}), boost::test_tools::per_element());
    BOOST_TEST(report.loaded == (std::vector<std::string>{"enc.weight", "enc.bias"}), boost::test_tools::per_element());
    const auto fw = io::SafetensorsFile(fixture("st_linear.safetensors")).load<double>("weight");
    for (index_t i = 0; i < 12; ++i) BOOST_TEST(enc.enc.weight.value[i] == fw[i]);
}

BOOST_AUTO_TEST_CASE(non_strict_loading_reports_and_loads_the_rest) {
    TempDir dir;
    const fs::path p = dir / "partial.safetensors";
    auto w = testing::random_tensor<float>(Shape{3, 4}, 2);
    auto extra = Tensor<double>::full(Shape{2}, 1.0);
    io::save_safetensors(p, {{"weight", w}, {"extra.b", extra}, {"extra.a", extra}});
    nn::Linear<double> lin(4, 3);
    lin.bias.value.fill(9.0);
    io::LoadOptions lenient;
    lenient.strict = false;
    const auto report = io::load_state_dict(lin, p, lenient);
    BOOST_TEST(report.missing == (std::vector<std::string>{"bias"}), boost::test_tools::per_element());
    BOOST_TEST(report.unexpected == (std::vector<std::string>{"extra.a", "extra.b"}), boost::test_tools::per_element());
    BOOST_TEST(report.loaded == (std::vector<std::string>{"weight"}), boost::test_tools::per_element());
    for (index_t i = 0; i < 12; ++i) BOOST_TEST(lin.weight.value[i] == static_cast<double>(w[i]));
    for (index_t i = 0; i < 3; ++i) BOOST_TEST(lin.bias.value[i] == 9.0);
}

BOOST_AUTO_TEST_CASE(a_shape_mismatch_names_the_key_and_both_shapes) {
    nn::Linear<double> lin(3, 4);  // weight [4,3], bias [4]; the file holds [3,4], [3]
    lin.weight.value.fill(9.0);
    io::LoadOptions lenient;
    lenient.strict = false;
    for (const auto& opts : {io::LoadOptions{}, lenient}) {
        check_contains(io_error_of([&] { io::load_state_dict(lin, fixture("st_linear.safetensors"), opts); }),
                       {"st_linear.safetensors", "size mismatch for \"weight\": the file holds shape [3,4], the parameter in the module has shape [4,3]",
                        "size mismatch for \"bias\": the file holds shape [3], the parameter in the module has shape [4]"});
    }
    for (index_t i = 0; i < 12; ++i) BOOST_TEST(lin.weight.value[i] == 9.0);
}

BOOST_AUTO_TEST_CASE(name_mapping_and_ignored_checkpoint_keys) {
    // The checkpoint nests the layer under "model.proj." and holds a frozen embedding nothing uses.
    nn::Linear<float> lin(4, 3);
    io::LoadOptions opts;
    opts.map_name = [](const std::string& k) { return k.starts_with("model.proj.") ? k.substr(11) : k; };
    check_contains(io_error_of([&] { io::load_state_dict(lin, fixture("st_checkpoint.safetensors"), opts); }),
                   {"st_checkpoint.safetensors", "Unexpected key(s) in state_dict: \"model.embed_tokens.weight\"."});
    opts.ignore = [](const std::string& k) { return k.ends_with("embed_tokens.weight"); };
    const auto report = io::load_state_dict(lin, fixture("st_checkpoint.safetensors"), opts);
    BOOST_TEST(report.ignored == (std::vector<std::string>{"model.embed_tokens.weight"}), boost::test_tools::per_element());
    BOOST_TEST(report.loaded.size() == 2u);
    io::SafetensorsFile f(fixture("st_checkpoint.safetensors"));
    const auto w = f.load<float>("model.proj.weight");
    for (index_t i = 0; i < 12; ++i) BOOST_TEST(lin.weight.value[i] == w[i]);
    // A renamed key that matches nothing is shown with its mapped name; two keys onto one name fail.
    io::LoadOptions wrong;
    wrong.map_name = [](const std::string& k) { return "x." + k; };
    check_contains(io_error_of([&] { io::load_state_dict(lin, fixture("st_linear.safetensors"), wrong); }),
                   {"\"bias\" (as \"x.bias\")", "\"weight\" (as \"x.weight\")"});
    io::LoadOptions collide;
    collide.map_name = [](const std::string&) { return std::string("weight"); };
    check_contains(io_error_of([&] { io::load_state_dict(lin, fixture("st_linear.safetensors"), collide); }),
                   {"keys 'bias' and 'weight' both map to parameter 'weight'"});
}

BOOST_AUTO_TEST_CASE(save_state_dict_round_trips) {
    TempDir dir;
    nn::Linear<double> a(5, 2);
    a.weight.value = testing::random_tensor<double>(Shape{2, 5}, 3);
    a.bias.value = testing::random_tensor<double>(Shape{2}, 4);
    io::save_state_dict(a, dir / "lin.safetensors", {{"module", "Linear(5, 2)"}});
    io::SafetensorsFile f(dir / "lin.safetensors");
    BOOST_TEST(f.names() == (std::vector<std::string>{"bias", "weight"}), boost::test_tools::per_element());
    BOOST_TEST(io::dtype_name(f.info("weight").dtype) == std::string("F64"));
    BOOST_TEST(f.metadata().at("module") == "Linear(5, 2)");
    nn::Linear<double> b(5, 2);
    io::load_state_dict(b, f);
    for (index_t i = 0; i < 10; ++i) BOOST_TEST(same_value(b.weight.value[i], a.weight.value[i]));
    for (index_t i = 0; i < 2; ++i) BOOST_TEST(same_value(b.bias.value[i], a.bias.value[i]));
    // Stored as F32: what a float model would hold.
    io::save_state_dict(a, dir / "lin32.safetensors", {}, io::DType::F32);
    nn::Linear<float> c(5, 2);
    io::load_state_dict(c, dir / "lin32.safetensors");
    BOOST_TEST(io::dtype_name(io::SafetensorsFile(dir / "lin32.safetensors").info("bias").dtype) == std::string("F32"));
    for (index_t i = 0; i < 10; ++i) BOOST_TEST(c.weight.value[i] == static_cast<float>(a.weight.value[i]));
    BOOST_TEST(listing(dir.path) == (std::set<std::string>{"lin.safetensors", "lin32.safetensors"}));
}

BOOST_AUTO_TEST_SUITE_END()
