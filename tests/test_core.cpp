// Core types: shapes, tensors, views, the counter RNG, Linear (the reference layer) and the
// gradient checker itself (it must catch broken backwards).
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <limits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include "celltx/core/concepts.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"

using namespace celltx;
using celltx::testing::gradcheck_layer;
using celltx::testing::random_tensor;

BOOST_AUTO_TEST_SUITE(core)

BOOST_AUTO_TEST_CASE(shape_and_tensor_basics) {
    Shape s{2, 3, 4};
    BOOST_TEST(s.rank() == 3);
    BOOST_TEST(s.numel() == 24);
    BOOST_TEST(s.rows() == 6);
    BOOST_TEST(s.last() == 4);
    BOOST_TEST(s.str() == "[2,3,4]");
    BOOST_CHECK_THROW((Shape{1, 2, 3, 4, 5}), ShapeError);
    BOOST_CHECK_THROW((Shape{-1}), ShapeError);

    Tensor<float> t(s);
    for (index_t i = 0; i < t.numel(); ++i) BOOST_TEST(t[i] == 0.0f);
    t(1, 2, 3) = 7.0f;
    BOOST_TEST(t[23] == 7.0f);
    BOOST_CHECK_THROW(t(2, 0, 0), ShapeError);
    BOOST_CHECK_THROW(t(0, 0), ShapeError);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0u);

    Tensor<float> c = t;  // deep copy
    c(1, 2, 3) = 1.0f;
    BOOST_TEST(t(1, 2, 3) == 7.0f);
    auto v = t.view().slice(1, 1);
    BOOST_TEST(v.shape() == (Shape{1, 3, 4}));
    BOOST_TEST(v(0, 2, 3) == 7.0f);
    auto r = t.reshaped(Shape{6, 4});
    BOOST_TEST(r(5, 3) == 7.0f);
    BOOST_CHECK_THROW(t.reshaped(Shape{5, 5}), ShapeError);
    ConstView<float> cv = t.view();
    BOOST_TEST(cv.numel() == 24);
    Tensor<double> d = t.cast<double>();
    BOOST_TEST(d(1, 2, 3) == 7.0);
    Tensor<float> def;  // default: empty, and copyable
    BOOST_TEST(def.empty());
    Tensor<float> def2 = def;
    BOOST_TEST(def2.numel() == 0);
    def2 = t;
    BOOST_TEST(def2(1, 2, 3) == 7.0f);
    Tensor<float> e = Tensor<float>::zeros(Shape{0, 5});
    BOOST_TEST(e.empty());
    BOOST_TEST(e.data() == nullptr);
}

// Large host blocks are reused (HostBlockCache): the next Tensor of the size gets the freed block,
// memory_stats still counts only live Tensors, and release_cached_host_memory empties the cache.
BOOST_AUTO_TEST_CASE(large_host_blocks_are_reused_and_released) {
    auto& cache = HostBlockCache::instance();
    if (!cache.enabled()) {
        BOOST_TEST_MESSAGE("host block cache off (sanitizer build or CELLTX_HOST_CACHE=0)");
        return;
    }
    release_cached_host_memory();
    const index_t n = (index_t{5} << 20) / 4 + 3;  // 5 MiB of float and a bit
    auto& stats = memory_stats<cpu>();
    const std::size_t live0 = stats.live.load();
    const float* first = nullptr;
    {
        auto a = Tensor<float>::uninitialized(Shape{n});
        first = a.data();
        BOOST_TEST(stats.live.load() == live0 + static_cast<std::size_t>(n) * sizeof(float));
    }
    BOOST_TEST(stats.live.load() == live0);
    BOOST_TEST(cache.cached_bytes() >= static_cast<std::size_t>(n) * sizeof(float));
    {
        Tensor<float> b(Shape{n});  // zero-filled although the block is reused
        BOOST_TEST(b.data() == first);
        BOOST_TEST(cache.cached_bytes() == 0u);
        BOOST_TEST(std::all_of(b.data(), b.data() + n, [](float v) { return v == 0.0f; }));
        auto c = Tensor<float>::uninitialized(Shape{2 * n});  // too large for any cached block: a fresh one
        BOOST_TEST(c.data() != first);
    }
    release_cached_host_memory();
    BOOST_TEST(cache.cached_bytes() == 0u);
}

BOOST_AUTO_TEST_CASE(philox_matches_the_published_known_answers) {
    // Random123 kat_vectors: philox4x32-10 with counter = key = 0 and with all bits set.
    auto z = philox4x32({0, 0, 0, 0}, {0, 0});
    BOOST_TEST(z[0] == 0x6627e8d5u);
    BOOST_TEST(z[1] == 0xe169c58du);
    BOOST_TEST(z[2] == 0xbc57ac4cu);
    BOOST_TEST(z[3] == 0x9b00dbd8u);
    auto f = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
    BOOST_TEST(f[0] == 0x408f276du);
    BOOST_TEST(f[1] == 0x41c83b0eu);
    BOOST_TEST(f[2] == 0xa20bc7c6u);
    BOOST_TEST(f[3] == 0x6d5451fdu);
}

BOOST_AUTO_TEST_CASE(counter_rng_is_addressed_by_index_and_well_distributed) {
    CounterRng a(42, 3), b(42, 3), c(43, 3);
    BOOST_TEST(a.uniform(12345) == b.uniform(12345));
    BOOST_TEST(a.uniform(12345) != c.uniform(12345));
    BOOST_TEST(a.substream(1).uniform(0) != a.substream(2).uniform(0));
    const int n = 200000;
    double su = 0, su2 = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < n; ++i) {
        const double u = a.uniform(i), z = a.normal(i);
        BOOST_REQUIRE(u > 0.0);
        BOOST_REQUIRE(u <= 1.0);
        su += u; su2 += u * u; sn += z; sn2 += z * z;
    }
    BOOST_TEST(std::abs(su / n - 0.5) < 0.005);
    BOOST_TEST(std::abs(su2 / n - su * su / n / n - 1.0 / 12) < 0.002);
    BOOST_TEST(std::abs(sn / n) < 0.01);
    BOOST_TEST(std::abs(sn2 / n - 1.0) < 0.01);
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(a.below(i, 10));
    BOOST_TEST(seen.size() == 10u);
    Generator g(5), h(5);
    g.uniform();
    h.set_position(1);
    BOOST_TEST(g.uniform() == h.uniform());
}

BOOST_AUTO_TEST_CASE(linear_satisfies_the_layer_concept) {
    static_assert(Layer<nn::Linear<float>, float>);
    static_assert(Layer<nn::Linear<double>, double>);
    nn::Linear<float> lin(64, 32);
    BOOST_TEST(parameter_count<float>(lin) == 64 * 32 + 32);
}

BOOST_AUTO_TEST_CASE(linear_forward_and_gradcheck) {
    nn::Linear<double> lin(5, 3);
    Generator g(1);
    lin.reset_parameters(g);
    auto x = random_tensor(Shape{2, 4, 5}, 11);
    auto y = lin.forward(x.cview());
    BOOST_TEST(y.shape() == (Shape{2, 4, 3}));
    double ref = lin.bias.value[1];
    for (int k = 0; k < 5; ++k) ref += x(1, 2, k) * lin.weight.value(1, k);
    BOOST_TEST(std::abs(y(1, 2, 1) - ref) < 1e-14);
    auto res = gradcheck_layer(lin, x);
    BOOST_TEST_MESSAGE(res.summary());
    BOOST_TEST(res.ok, res.summary());
    BOOST_TEST(res.max_error < 1e-6);

    nn::Linear<double> nobias(5, 3, false);
    nobias.reset_parameters(g);
    BOOST_TEST(gradcheck_layer(nobias, x).ok);
    // float32 agrees with float64
    nn::Linear<float> lf(5, 3);
    lf.weight.value = lin.weight.value.cast<float>();
    lf.bias.value = lin.bias.value.cast<float>();
    auto yf = lf.forward(x.cast<float>().cview());
    BOOST_TEST(celltx::testing::relative_difference(yf, y, 1e-3).max_error < 1e-5);
}

// A layer whose backward forgets the bias gradient and overwrites dx: the checker must fail it.
struct BrokenLinear : nn::Linear<double> {
    using nn::Linear<double>::Linear;
    bool overwrite_dx = false;
    void backward(ConstView<double> dy, TensorView<double> dx) {
        Tensor<double> keep = bias.grad;
        if (overwrite_dx) std::fill_n(dx.data(), dx.numel(), 0.0);
        nn::Linear<double>::backward(dy, dx);
        if (!overwrite_dx) bias.grad = keep;  // "forgets" to assign
    }
};

BOOST_AUTO_TEST_CASE(gradcheck_catches_unwritten_gradients_and_overwritten_inputs) {
    BrokenLinear b(4, 2);
    Generator g(2);
    b.reset_parameters(g);
    auto x = random_tensor(Shape{3, 4}, 5);
    auto r1 = gradcheck_layer(b, x);
    BOOST_TEST(!r1.ok);
    BOOST_TEST(!r1.problems.empty());
    b.overwrite_dx = true;
    auto r2 = gradcheck_layer(b, x);
    BOOST_TEST(!r2.ok);
    BOOST_TEST(r2.max_error > 1e-3);
}

// The checker on hand-made cases: y = x² element-wise (dy/dx = 2x), with one defect each.
BOOST_AUTO_TEST_CASE(gradcheck_fails_on_nan_and_wrong_gradients) {
    Tensor<double> x = random_tensor(Shape{2, 3}, 8);
    enum class Defect { none, nan_forward, nan_gradient, wrong_gradient, unwritten_gradient };
    auto run = [&](Defect defect) {
        return celltx::testing::gradcheck(
            [&] {
                Tensor<double> y(x.shape());
                for (index_t i = 0; i < y.numel(); ++i) y[i] = x[i] * x[i];
                if (defect == Defect::nan_forward) y[4] = std::numeric_limits<double>::quiet_NaN();
                return y;
            },
            [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
                for (index_t i = 0; i < dy.numel(); ++i) {
                    if (defect == Defect::unwritten_gradient && i == 2) continue;  // adds nothing: dx keeps its pre-fill
                    double g = 2.0 * x[i] * dy[i];
                    if (defect == Defect::wrong_gradient && i == 3) g *= 1.5;
                    if (defect == Defect::nan_gradient && i == 1) g = std::numeric_limits<double>::quiet_NaN();
                    dxs[0][i] += g;
                }
            },
            {&x}, {});
    };
    const auto ok = run(Defect::none);
    BOOST_TEST(ok.ok, ok.summary());
    BOOST_TEST(ok.max_error < 1e-8);
    for (Defect d : {Defect::nan_forward, Defect::nan_gradient, Defect::wrong_gradient, Defect::unwritten_gradient}) {
        const auto r = run(d);
        BOOST_TEST(!r.ok, "defect " << static_cast<int>(d) << " passed: " << r.summary());
        BOOST_TEST(!(r.max_error <= 1e-6), "defect " << static_cast<int>(d) << ": " << r.summary());
    }
    BOOST_TEST(!run(Defect::nan_forward).problems.empty());
    BOOST_TEST(!run(Defect::nan_gradient).problems.empty());
}

BOOST_AUTO_TEST_CASE(headers_include_only_folders_to_their_left) {
    // core <- backend <- nn <- policies <- models <- io, train; testing may use all of them. Above
    // backend/, kernels are reached through ops:: only, never by including backend/cpu or backend/cuda.
    namespace fs = std::filesystem;
    const std::map<std::string, int> level{{"core", 0}, {"backend", 1}, {"nn", 2}, {"policies", 3}, {"models", 4},
                                           {"io", 5}, {"train", 5}, {"testing", 6}};
    const fs::path root = fs::path(CELLTX_INCLUDE_DIR) / "celltx";
    const std::regex include_line(R"re(^\s*#\s*include\s*"celltx/([a-z_]+)/([^"]*)")re");
    std::size_t headers = 0;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
        if (!e.is_regular_file()) continue;
        const fs::path rel = fs::relative(e.path(), root);
        const std::string folder = rel.begin()->string();
        if (!level.count(folder)) continue;
        ++headers;
        std::ifstream in(e.path());
        std::string line;
        for (int n = 1; std::getline(in, line); ++n) {
            std::smatch m;
            if (!std::regex_search(line, m, include_line)) continue;
            const std::string to = m[1], rest = m[2];
            const std::string where = rel.string() + ":" + std::to_string(n) + ": " + line;
            BOOST_TEST_REQUIRE(level.count(to) == 1u, where);
            BOOST_TEST(level.at(to) <= level.at(folder), where);
            BOOST_TEST(!((folder == "io" && to == "train") || (folder == "train" && to == "io")), where);
            const bool backend_overload = to == "backend" && (rest.starts_with("cpu/") || rest.starts_with("cuda/"));
            // Only backend/ itself (ops.hpp's dispatch, device.hpp's runtime) reaches a backend's overloads.
            if (backend_overload) BOOST_TEST(folder == "backend", where);
        }
    }
    BOOST_TEST(headers > 100u);
}

BOOST_AUTO_TEST_SUITE_END()
