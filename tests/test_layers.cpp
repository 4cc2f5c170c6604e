// The basic layers (Linear, Embedding, LayerNorm, RMSNorm, activations, SwiGLU, Dropout, Mlp):
// gradient checks in double against finite differences, parity with PyTorch fixtures
// (tools/fixtures/make_layers.py, float64) in double and float, float agreeing with double, and the
// dropout mask's statistics and determinism; Context::inference() in every layer that saves.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "celltx/core/concepts.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/conv1d.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/embedding.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/nn/rms_norm.hpp"
#include "celltx/nn/swiglu.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "threads.hpp"

using namespace celltx;
using celltx::testing::gradcheck_layer;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;

namespace {

io::SafetensorsFile fixture(const std::string& name) {
    return io::SafetensorsFile(std::string(CELLTX_FIXTURE_DIR) + "/layers_" + name + ".safetensors");
}

/// The comparison floor: a fraction of the reference's largest magnitude, so that entries far below
/// the tensor's scale are judged by their absolute error.
double floor_of(const Tensor<double>& ref, double fraction) {
    double m = 0.0;
    for (index_t i = 0; i < ref.numel(); ++i) m = std::max(m, std::abs(ref[i]));
    return std::max(fraction * m, 1e-300);
}

/// What a forward + backward against the fixture's dy produced, in double.
struct Outputs {
    Tensor<double> y, dx;
    std::map<std::string, Tensor<double>> grads;  // by state_dict name
};

/// Loads the fixture's weights (`<case>.<name>`) into the layer, checks that the layer's parameter
/// names are exactly the fixture's, and runs forward(x) and backward(dy) in precision T.
template <class T, class L>
Outputs run_fixture(L& layer, const io::SafetensorsFile& f, const std::string& c, const Context& ctx = {}) {
    std::set<std::string> visited, stored;
    layer.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        const std::string key = c + "." + std::string(name);
        visited.insert(key);
        BOOST_REQUIRE_MESSAGE(f.contains(key), f.path() << " has no tensor " << key);
        Tensor<T> v = f.load<T>(key);
        BOOST_REQUIRE_MESSAGE(v.shape() == p.shape(), key << ": fixture " << v.shape().str() << " vs layer " << p.shape().str());
        p.value = std::move(v);
    });
    for (const auto& ti : f.tensors())
        if (ti.name.rfind(c + ".", 0) == 0) stored.insert(ti.name);
    BOOST_TEST(visited == stored, c << ": the layer's parameter names differ from the PyTorch state_dict");

    Tensor<T> x = f.load<T>("x"), dy = f.load<T>("dy");
    Outputs o;
    Tensor<T> y = layer.forward(x.cview(), ctx);
    Tensor<T> dx(x.shape());
    layer.backward(dy.cview(), dx.view());
    o.y = y.template cast<double>();
    o.dx = dx.template cast<double>();
    layer.visit_parameters([&](std::string_view name, Parameter<T>& p) { o.grads[std::string(name)] = p.grad.template cast<double>(); });
    return o;
}

struct Tolerances {
    double y, grad;
};

/// Compares a run against the fixture (or against another run), printing the measured errors.
double check_outputs(const std::string& what, const Outputs& got, const Tensor<double>& y, const Tensor<double>& dx,
                     const std::map<std::string, Tensor<double>>& grads, Tolerances tol, double floor_fraction) {
    const auto ey = relative_difference(got.y, y, floor_of(y, floor_fraction));
    const auto ex = relative_difference(got.dx, dx, floor_of(dx, floor_fraction));
    BOOST_TEST(ey.within(tol.y), what << " y: " << ey.str());
    BOOST_TEST(ex.within(tol.grad), what << " dx: " << ex.str());
    double eg = 0.0;
    for (const auto& [name, g] : grads) {
        BOOST_REQUIRE(got.grads.count(name));
        const auto e = relative_difference(got.grads.at(name), g, floor_of(g, floor_fraction));
        BOOST_TEST(e.within(tol.grad), what << " grad " << name << ": " << e.str());
        eg = std::max(eg, e.max_error);
    }
    BOOST_TEST_MESSAGE(what << ": max rel. error y " << ey.max_error << ", dx " << ex.max_error << ", parameter grads " << eg);
    return std::max({ey.max_error, ex.max_error, eg});
}

/// (b) parity with the fixture in float64 (1e-10) and float32 (forward 1e-4, gradients 1e-3), and
/// (c) float32 agreeing with float64. make(std::type_identity<T>) builds the layer in precision T.
template <class Make>
void parity(const std::string& c, Make make, const Context& ctx = {}) {
    const auto f = fixture(c);
    auto l64 = make(std::type_identity<double>{});
    auto l32 = make(std::type_identity<float>{});
    const Outputs o64 = run_fixture<double>(l64, f, c, ctx);
    const Outputs o32 = run_fixture<float>(l32, f, c, ctx);
    std::map<std::string, Tensor<double>> ref_grads;
    for (const auto& [name, g] : o64.grads) ref_grads[name] = f.load<double>("grad." + c + "." + name);
    const Tensor<double> y = f.load<double>("y"), dx = f.load<double>("dx");
    check_outputs(c + " f64 vs torch", o64, y, dx, ref_grads, {1e-10, 1e-10}, 1e-6);
    check_outputs(c + " f32 vs torch", o32, y, dx, ref_grads, {1e-4, 1e-3}, 1e-3);
    check_outputs(c + " f32 vs f64", o32, o64.y, o64.dx, o64.grads, {1e-4, 1e-3}, 1e-3);
}

void expect_gradcheck(const testing::GradcheckResult& r) {
    BOOST_TEST_MESSAGE(r.summary());
    BOOST_TEST(r.ok, r.summary());
    BOOST_TEST(r.max_error <= 1e-6, r.summary());
}

/// Replaces every parameter with N(0, 0.5²) draws (+1 on norm weights), so that nothing is trivially 1 or 0.
template <class L>
void randomise(L& layer, std::uint64_t seed) {
    CounterRng rng(seed, 3);
    std::uint64_t k = 0;
    layer.visit_parameters([&](std::string_view, Parameter<double>& p) {
        for (index_t i = 0; i < p.numel(); ++i) p.value[i] = 0.5 * rng.substream(k).normal(static_cast<std::uint64_t>(i));
        ++k;
    });
}

bool message_contains(const ShapeError& e, const std::string& s) { return std::string(e.what()).find(s) != std::string::npos; }

bool names_inference(const Error& e) { return std::string(e.what()).find("Context::inference()") != std::string::npos; }

/// Under Context::inference() a layer returns the bits of a keeping forward, holds nothing but its
/// output afterwards (memory_stats), and its backward throws until a keeping forward runs again.
template <class L, class Input>
void check_inference_forward(L& layer, const Input& x, const Tensor<double>& dy, const Shape& dx_shape) {
    auto& stats = memory_stats<cpu>();
    const Tensor<double> kept = layer.forward(x, Context::eval());
    const std::size_t holding = stats.live.load();
    Tensor<double> y = layer.forward(x, Context::inference());
    BOOST_TEST(stats.live.load() < holding + sizeof(double) * static_cast<std::size_t>(y.numel()));  // the saved state is freed
    const std::size_t before = stats.live.load() - sizeof(double) * static_cast<std::size_t>(y.numel());
    y = layer.forward(x, Context::inference());
    BOOST_TEST(stats.live.load() == before + sizeof(double) * static_cast<std::size_t>(y.numel()));
    BOOST_TEST(y.shape() == kept.shape());
    BOOST_TEST(std::memcmp(y.data(), kept.data(), sizeof(double) * static_cast<std::size_t>(y.numel())) == 0);
    Tensor<double> dx(dx_shape);
    BOOST_CHECK_EXCEPTION(layer.backward(dy.cview(), dx.view()), Error, names_inference);
    layer.forward(x, Context::eval());
    BOOST_CHECK_NO_THROW(layer.backward(dy.cview(), dx.view()));
}

} // namespace

BOOST_AUTO_TEST_SUITE(layers)

BOOST_AUTO_TEST_CASE(every_layer_satisfies_the_layer_concept) {
    static_assert(Layer<nn::LayerNorm<float>, float> && Layer<nn::LayerNorm<double>, double>);
    static_assert(Layer<nn::RMSNorm<float>, float> && Layer<nn::RMSNorm<double>, double>);
    static_assert(Layer<nn::GELU<float>, float> && Layer<nn::ReLU<double>, double> && Layer<nn::SiLU<float>, float>);
    static_assert(Layer<nn::Activation<double>, double>);
    static_assert(Layer<nn::SwiGLU<float>, float> && Layer<nn::SwiGLU<double>, double>);
    static_assert(Layer<nn::Dropout<float>, float> && Layer<nn::Dropout<double>, double>);
    static_assert(Layer<nn::Mlp<float>, float> && Layer<nn::Mlp<double>, double>);
    nn::SwiGLU<float> sw(8, 20);
    BOOST_TEST(parameter_count<float>(sw) == 3 * 8 * 20);
    nn::LayerNorm<float> ln(8), plain(8, 1e-5, false);
    BOOST_TEST(parameter_count<float>(ln) == 16);
    BOOST_TEST(parameter_count<float>(plain) == 0);
    // CGT d=64: FFN 33,088 and the GI head 8,321 parameters (spec, "Parameter counts").
    nn::Mlp<float> ffn(64, 64, 256, 2), head(128, 1, 64, 2, 0.1, ActivationKind::relu);
    BOOST_TEST(parameter_count<float>(ffn) == 33088);
    BOOST_TEST(parameter_count<float>(head) == 8321);
}

BOOST_AUTO_TEST_CASE(linear_gradcheck_and_parity) {
    nn::Linear<double> lin(12, 7);
    Generator g(3);
    lin.reset_parameters(g);
    expect_gradcheck(gradcheck_layer(lin, random_tensor(Shape{2, 3, 12}, 31)));
    parity("linear", []<class T>(std::type_identity<T>) { return nn::Linear<T>(12, 7); });
}

BOOST_AUTO_TEST_CASE(embedding_gradcheck_parity_and_range) {
    nn::Embedding<double> emb(10, 8);
    Generator g(4);
    emb.reset_parameters(g);
    const std::vector<index_t> idx{3, 7, 0, 3, 9, 7, 3, 1};
    auto res = testing::gradcheck([&] { return emb.forward(idx); },
                                  [&](ConstView<double> dy, std::vector<TensorView<double>>&) { emb.backward(dy); }, {},
                                  testing::parameters_of(emb));
    expect_gradcheck(res);

    // Parity: the fixture's indices hold duplicates, whose gradients must accumulate.
    const auto f = fixture("embedding");
    const Tensor<double> fi = f.load<double>("indices");
    std::vector<index_t> indices(static_cast<std::size_t>(fi.numel()));
    for (index_t i = 0; i < fi.numel(); ++i) indices[static_cast<std::size_t>(i)] = static_cast<index_t>(fi[i]);
    BOOST_TEST(indices == idx);
    const Tensor<double> y = f.load<double>("y"), gw = f.load<double>("grad.embedding.weight");
    auto run = [&]<class T>(std::type_identity<T>) {
        nn::Embedding<T> e(10, 8);
        e.weight.value = f.load<T>("embedding.weight");
        Tensor<T> out = e.forward(indices);
        e.weight.grad.fill(std::numeric_limits<T>::quiet_NaN());
        e.backward(f.load<T>("dy").cview());
        return std::pair{out.template cast<double>(), e.weight.grad.template cast<double>()};
    };
    const auto [y64, g64] = run(std::type_identity<double>{});
    const auto [y32, g32] = run(std::type_identity<float>{});
    const double e64 = std::max(relative_difference(y64, y).max_error, relative_difference(g64, gw).max_error);
    const double e32y = relative_difference(y32, y, 1e-3).max_error, e32g = relative_difference(g32, gw, 1e-3).max_error;
    BOOST_TEST(e64 <= 1e-10);
    BOOST_TEST(e32y <= 1e-4);
    BOOST_TEST(e32g <= 1e-3);
    BOOST_TEST(relative_difference(g32, g64, 1e-3).max_error <= 1e-3);
    BOOST_TEST_MESSAGE("embedding: f64 " << e64 << ", f32 y " << e32y << ", f32 grad " << e32g);

    BOOST_CHECK_EXCEPTION(emb.forward(std::vector<index_t>{1, 10}), ShapeError,
                          [](const ShapeError& e) { return message_contains(e, "index 10"); });
    BOOST_CHECK_EXCEPTION(emb.forward(std::vector<index_t>{-2}), ShapeError,
                          [](const ShapeError& e) { return message_contains(e, "index -2"); });
    BOOST_TEST(emb.forward(std::vector<index_t>{}).shape() == (Shape{0, 8}));

    // Initialisation N(0, std²).
    nn::Embedding<double> big(1000, 20);
    big.reset_parameters(g, 0.02);
    double s = 0.0, s2 = 0.0;
    for (index_t i = 0; i < big.weight.numel(); ++i) s += big.weight.value[i], s2 += big.weight.value[i] * big.weight.value[i];
    const double n = static_cast<double>(big.weight.numel());
    BOOST_TEST(std::abs(s / n) < 0.001);
    BOOST_TEST(std::abs(std::sqrt(s2 / n) - 0.02) < 0.001);
}

BOOST_AUTO_TEST_CASE(layernorm_gradcheck_and_parity) {
    nn::LayerNorm<double> ln(12);
    randomise(ln, 5);
    expect_gradcheck(gradcheck_layer(ln, random_tensor(Shape{2, 3, 12}, 32, 2.0)));
    nn::LayerNorm<double> plain(12, 1e-5, false);
    expect_gradcheck(gradcheck_layer(plain, random_tensor(Shape{5, 12}, 33)));
    parity("layernorm", []<class T>(std::type_identity<T>) { return nn::LayerNorm<T>(12, 1e-5); });

    // Without affine (F.layer_norm with no weight), on the same input.
    const auto f = fixture("layernorm");
    const Tensor<double> x = f.load<double>("x"), dy = f.load<double>("plain.dy");
    Tensor<double> y = plain.forward(x.cview());
    Tensor<double> dx(x.shape());
    plain.backward(dy.cview(), dx.view());
    BOOST_TEST(relative_difference(y, f.load<double>("plain.y")).max_error <= 1e-10);
    BOOST_TEST(relative_difference(dx, f.load<double>("plain.dx")).max_error <= 1e-10);

    // PyTorch's initialisation and the shape check.
    Generator g(1);
    ln.reset_parameters(g);
    for (index_t i = 0; i < 12; ++i) {
        BOOST_TEST(ln.weight.value[i] == 1.0);
        BOOST_TEST(ln.bias.value[i] == 0.0);
    }
    BOOST_CHECK_THROW(ln.forward(random_tensor(Shape{3, 11}, 1).cview()), ShapeError);
}

BOOST_AUTO_TEST_CASE(rmsnorm_gradcheck_and_parity) {
    nn::RMSNorm<double> rn(16);
    randomise(rn, 6);
    expect_gradcheck(gradcheck_layer(rn, random_tensor(Shape{2, 3, 16}, 34, 1.5)));
    parity("rmsnorm", []<class T>(std::type_identity<T>) { return nn::RMSNorm<T>(16, 1e-6); });
    Generator g(1);
    rn.reset_parameters(g);
    for (index_t i = 0; i < 16; ++i) BOOST_TEST(rn.weight.value[i] == 1.0);
    BOOST_CHECK_THROW(rn.forward(random_tensor(Shape{3, 8}, 1).cview()), ShapeError);
}

BOOST_AUTO_TEST_CASE(norms_on_many_rows_are_exact_and_thread_independent) {
    // 5000 rows: several row tasks and parameter-gradient chunks. The weight gradient is checked
    // against a plain serial sum, and float runs with 1 and 2 threads must agree bit for bit.
    const index_t rows = 5000, d = 16;
    const Tensor<double> x = random_tensor(Shape{rows, d}, 45, 3.0), dy = random_tensor(Shape{rows, d}, 46);
    nn::LayerNorm<double> ln(d);
    randomise(ln, 9);
    nn::RMSNorm<double> rn(d);
    randomise(rn, 10);
    const Tensor<double> yl = ln.forward(x.cview()), yr = rn.forward(x.cview());
    ln.backward(dy.cview(), {});
    rn.backward(dy.cview(), {});
    double err_l = 0.0, err_r = 0.0;
    for (index_t j = 0; j < d; ++j) {
        double gl = 0.0, gb = 0.0, gr = 0.0;
        for (index_t r = 0; r < rows; ++r) {
            gl += dy(r, j) * (yl(r, j) - ln.bias.value[j]) / ln.weight.value[j];
            gb += dy(r, j);
            gr += dy(r, j) * yr(r, j) / rn.weight.value[j];
        }
        err_l = std::max({err_l, std::abs(gl - ln.weight.grad[j]) / std::abs(gl), std::abs(gb - ln.bias.grad[j]) / std::abs(gb)});
        err_r = std::max(err_r, std::abs(gr - rn.weight.grad[j]) / std::abs(gr));
    }
    BOOST_TEST(err_l < 1e-9);
    BOOST_TEST(err_r < 1e-9);

    auto run = [&] {
        nn::LayerNorm<float> l(d);
        nn::RMSNorm<float> r(d);
        const Tensor<float> xf = x.cast<float>(), dyf = dy.cast<float>();
        std::vector<Tensor<float>> out{l.forward(xf.cview()), r.forward(xf.cview()), Tensor<float>(x.shape()), Tensor<float>(x.shape())};
        l.backward(dyf.cview(), out[2].view());
        r.backward(dyf.cview(), out[3].view());
        out.push_back(l.weight.grad);
        out.push_back(l.bias.grad);
        out.push_back(r.weight.grad);
        return out;
    };
    if (!celltx_test::have_openmp) {
        BOOST_TEST_MESSAGE("built without OpenMP: the 1-vs-2-thread comparison is skipped");
        return;
    }
    std::vector<Tensor<float>> one, two;
    {
        celltx_test::ScopedThreads t(1);
        one = run();
    }
    {
        celltx_test::ScopedThreads t(2);
        two = run();
    }
    for (std::size_t k = 0; k < one.size(); ++k) BOOST_TEST(relative_difference(one[k], two[k]).max_error == 0.0, "output " << k);
}

BOOST_AUTO_TEST_CASE(activations_gradcheck_and_parity) {
    for (auto kind : {ActivationKind::gelu, ActivationKind::gelu_tanh, ActivationKind::relu, ActivationKind::silu}) {
        BOOST_TEST_CONTEXT(nn::activation_name(kind)) {
            nn::Activation<double> act(kind);
            int visited = 0;
            act.visit_parameters([&](std::string_view, Parameter<double>&) { ++visited; });
            BOOST_TEST(visited == 0);
            expect_gradcheck(gradcheck_layer(act, random_tensor(Shape{4, 3, 10}, 35, 2.0)));
            BOOST_TEST((nn::activation_from_name(nn::activation_name(kind)) == kind));
        }
    }
    BOOST_TEST((nn::activation_from_name("gelu_new") == ActivationKind::gelu_tanh));
    BOOST_CHECK_THROW(nn::activation_from_name("tanh"), ShapeError);
    // The fixtures hold x = 0 (relu's gradient there is 0, as in PyTorch) and |x| = 5.
    parity("gelu", []<class T>(std::type_identity<T>) { return nn::GELU<T>(); });
    parity("gelu_tanh", []<class T>(std::type_identity<T>) { return nn::GELU<T>(nn::Approx::tanh); });
    parity("relu", []<class T>(std::type_identity<T>) { return nn::ReLU<T>(); });
    parity("silu", []<class T>(std::type_identity<T>) { return nn::SiLU<T>(); });
}

BOOST_AUTO_TEST_CASE(swiglu_gradcheck_and_parity) {
    nn::SwiGLU<double> sw(12, 20);
    Generator g(7);
    sw.reset_parameters(g);
    expect_gradcheck(gradcheck_layer(sw, random_tensor(Shape{2, 3, 12}, 36)));
    parity("swiglu", []<class T>(std::type_identity<T>) { return nn::SwiGLU<T>(12, 20); });
}

BOOST_AUTO_TEST_CASE(inference_forward_keeps_nothing_in_every_saving_layer) {
    Generator g(17);
    const Tensor<double> x = random_tensor(Shape{2, 5, 12}, 171);
    const auto dy = [](index_t out) { return random_tensor(Shape{2, 5, out}, 172); };
    const auto run = [&](auto layer, index_t out) {
        layer.reset_parameters(g);
        check_inference_forward(layer, x.cview(), dy(out), x.shape());
    };
    BOOST_TEST_CONTEXT("Linear") run(nn::Linear<double>(12, 7), 7);
    BOOST_TEST_CONTEXT("Conv1D") run(nn::Conv1D<double>(12, 7), 7);
    BOOST_TEST_CONTEXT("LayerNorm") run(nn::LayerNorm<double>(12), 12);
    BOOST_TEST_CONTEXT("RMSNorm") run(nn::RMSNorm<double>(12), 12);
    BOOST_TEST_CONTEXT("SwiGLU") run(nn::SwiGLU<double>(12, 20), 12);
    BOOST_TEST_CONTEXT("Mlp") run(nn::Mlp<double>(12, 6, 16, 3), 6);
    for (const auto layout : {nn::AttentionLayout::separate, nn::AttentionLayout::llama, nn::AttentionLayout::packed, nn::AttentionLayout::gpt2}) {
        nn::AttentionConfig c;
        c.d_model = 12;
        c.num_heads = 3;
        c.layout = layout;
        c.bias = layout != nn::AttentionLayout::llama;
        BOOST_TEST_CONTEXT("MultiHeadAttention, layout " << static_cast<int>(layout)) run(nn::MultiHeadAttention<double>(c), 12);
    }
    for (const auto kind : {ActivationKind::gelu, ActivationKind::relu, ActivationKind::silu}) {
        nn::Activation<double> act(kind);
        BOOST_TEST_CONTEXT("Activation " << nn::activation_name(kind)) check_inference_forward(act, x.cview(), dy(12), x.shape());
    }
    nn::Embedding<double> emb(10, 4);
    emb.reset_parameters(g);
    const std::vector<index_t> idx{3, 1, 4, 1, 5, 9};
    const std::span<const index_t> indices(idx);
    const Tensor<double> demb = random_tensor(Shape{6, 4}, 173);
    auto& stats = memory_stats<cpu>();
    const Tensor<double> kept = emb.forward(indices, Context::eval());
    emb.forward(indices, Context::inference());
    const std::size_t before = stats.live.load();
    const Tensor<double> y = emb.forward(indices, Context::inference());
    BOOST_TEST(stats.live.load() == before + sizeof(double) * 24);
    BOOST_TEST(std::memcmp(y.data(), kept.data(), sizeof(double) * 24) == 0);
    BOOST_CHECK_EXCEPTION(emb.backward(demb.cview()), Error, names_inference);
}

BOOST_AUTO_TEST_CASE(dropout_mask_statistics_and_scaling) {
    const index_t n = 100000;
    const double p = 0.3;
    nn::Dropout<double> drop(p, 17);
    const Tensor<double> x = Tensor<double>::full(Shape{100, 1000}, 1.0);
    const Context ctx = Context::train(42, 5);
    const Tensor<double> y = drop.forward(x.cview(), ctx);
    const CounterRng rng = CounterRng(42, 17).substream(5);
    index_t kept = 0;
    double sum = 0.0;
    bool as_documented = true;
    for (index_t i = 0; i < n; ++i) {
        const bool keep = y[i] != 0.0;
        kept += keep;
        sum += y[i];
        if (keep && y[i] != 1.0 / (1.0 - p)) as_documented = false;
        if (keep != (rng.uniform(static_cast<std::uint64_t>(i)) > p)) as_documented = false;
    }
    const double rate = static_cast<double>(kept) / static_cast<double>(n);
    BOOST_TEST_MESSAGE("dropout keep rate " << rate << " (expected " << 1 - p << ")");
    BOOST_TEST(std::abs(rate - (1.0 - p)) < 0.01);  // 7 standard deviations at n = 1e5
    BOOST_TEST(std::abs(sum / static_cast<double>(n) - 1.0) < 0.015);
    BOOST_TEST(as_documented);

    // Eval, and p = 0 in training, are the identity; p outside [0, 1) is refused.
    const Tensor<double> r = random_tensor(Shape{7, 9}, 37);
    BOOST_TEST(relative_difference(drop.forward(r.cview(), Context::eval()), r).max_error == 0.0);
    nn::Dropout<double> none(0.0, 1);
    BOOST_TEST(relative_difference(none.forward(r.cview(), ctx), r).max_error == 0.0);
    Tensor<double> dx(r.shape());
    none.backward(r.cview(), dx.view());
    BOOST_TEST(relative_difference(dx, r).max_error == 0.0);
    BOOST_CHECK_THROW(nn::Dropout<double>(1.0), ShapeError);
    BOOST_CHECK_THROW(nn::Dropout<double>(-0.1), ShapeError);
    BOOST_CHECK_THROW(nn::Dropout<float>(1.5), ShapeError);
}

BOOST_AUTO_TEST_CASE(dropout_masks_are_pure_functions_of_seed_step_stream) {
    const Tensor<float> x = random_tensor<float>(Shape{1000}, 38);
    auto run = [&](std::uint64_t stream, const Context& ctx) { return nn::Dropout<float>(0.5, stream).forward(x.cview(), ctx); };
    auto same = [](const Tensor<float>& a, const Tensor<float>& b) { return relative_difference(a, b).max_error == 0.0; };
    const auto base = run(3, Context::train(9, 4));
    BOOST_TEST(same(base, run(3, Context::train(9, 4))));
    BOOST_TEST(!same(base, run(3, Context::train(9, 5))));  // another step
    BOOST_TEST(!same(base, run(4, Context::train(9, 4))));  // another stream
    BOOST_TEST(!same(base, run(3, Context::train(8, 4))));  // another seed

    // backward applies the forward's mask: dx = dy where kept (times the scale), else 0, added to dx.
    nn::Dropout<float> d(0.5, 3);
    const auto y = d.forward(x.cview(), Context::train(9, 4));
    const Tensor<float> dy = random_tensor<float>(Shape{1000}, 39);
    Tensor<float> dx = Tensor<float>::full(x.shape(), 1.0f);
    d.backward(dy.cview(), dx.view());
    bool match = true;
    for (index_t i = 0; i < x.numel(); ++i) match = match && dx[i] == 1.0f + (y[i] != 0.0f ? dy[i] * 2.0f : 0.0f);
    BOOST_TEST(match);

    // gradcheck in training mode with a fixed context (every forward redraws the same mask).
    nn::Dropout<double> dd(0.4, 12);
    expect_gradcheck(gradcheck_layer(dd, random_tensor(Shape{6, 50}, 40), Context::train(1, 2)));
}

BOOST_AUTO_TEST_CASE(dropout_does_not_depend_on_the_thread_count, *celltx_test::needs_openmp()) {
    const Tensor<float> x = random_tensor<float>(Shape{100, 1000}, 41);
    const Tensor<float> dy = random_tensor<float>(Shape{100, 1000}, 42);
    auto run = [&] {
        nn::Dropout<float> d(0.25, 99);
        auto y = d.forward(x.cview(), Context::train(5, 6));
        Tensor<float> dx(x.shape());
        d.backward(dy.cview(), dx.view());
        return std::pair{std::move(y), std::move(dx)};
    };
    std::pair<Tensor<float>, Tensor<float>> one, two;
    {
        celltx_test::ScopedThreads t(1);
        one = run();
    }
    {
        celltx_test::ScopedThreads t(2);
        two = run();
    }
    BOOST_TEST(relative_difference(one.first, two.first).max_error == 0.0);
    BOOST_TEST(relative_difference(one.second, two.second).max_error == 0.0);
}

BOOST_AUTO_TEST_CASE(mlp_names_parity_and_gradcheck) {
    // Parameter names and numbers against PyTorch (eval: dropout is the identity).
    parity("mlp", []<class T>(std::type_identity<T>) { return nn::Mlp<T>(10, 6, 16, 3, 0.1); });
    parity("mlp1", []<class T>(std::type_identity<T>) { return nn::Mlp<T>(10, 6, 16, 1, 0.1); });
    parity("ffn", []<class T>(std::type_identity<T>) { return nn::Mlp<T>(8, 8, 32, 2, 0.1); });
    parity("gihead", []<class T>(std::type_identity<T>) { return nn::Mlp<T>(16, 1, 8, 2, 0.1, ActivationKind::relu); });
    std::vector<std::string> names;
    nn::Mlp<double> m4(5, 3, 7, 4, 0.1);
    m4.visit_parameters([&](std::string_view n, Parameter<double>&) { names.emplace_back(n); }, "project_out.");
    BOOST_TEST(names == (std::vector<std::string>{"project_out.0.weight", "project_out.0.bias", "project_out.3.weight",
                                                  "project_out.3.bias", "project_out.6.weight", "project_out.6.bias",
                                                  "project_out.9.weight", "project_out.9.bias"}),
               boost::test_tools::per_element());
    BOOST_CHECK_THROW(nn::Mlp<double>(5, 3, 7, 0), ShapeError);

    // Distinct dropout streams inside one Mlp and across base streams.
    nn::Mlp<double> a(5, 3, 7, 3, 0.3, ActivationKind::gelu, 1), b(5, 3, 7, 3, 0.3, ActivationKind::gelu, 2);
    std::set<std::uint64_t> streams;
    for (auto* m : {&a, &b})
        for (const auto& d : m->dropouts) streams.insert(d.stream());
    BOOST_TEST(streams.size() == 4u);

    // gradcheck with dropout active (fixed ctx), for every activation.
    for (auto kind : {ActivationKind::gelu, ActivationKind::gelu_tanh, ActivationKind::relu, ActivationKind::silu}) {
        BOOST_TEST_CONTEXT(nn::activation_name(kind)) {
            nn::Mlp<double> m(5, 3, 7, 3, 0.3, kind, 11);
            Generator g(8);
            m.reset_parameters(g);
            const auto x = random_tensor(Shape{2, 4, 5}, 43);
            const Context ctx = Context::train(77, 3);
            expect_gradcheck(gradcheck_layer(m, x, ctx));
            // Dropout really is on in training: the output differs from eval.
            const auto yt = m.forward(x.cview(), ctx), ye = m.forward(x.cview(), Context::eval());
            BOOST_TEST(relative_difference(yt, ye).max_error > 1e-3);
        }
    }
    nn::Mlp<double> one(5, 3, 7, 1);
    Generator g(9);
    one.reset_parameters(g);
    expect_gradcheck(gradcheck_layer(one, random_tensor(Shape{4, 5}, 44), Context::train(1)));

    // PyTorch's default Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    nn::Mlp<double> big(64, 10, 100, 2);
    big.reset_parameters(g);
    for (const auto& l : big.linears) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(l.in_features()));
        const auto [lo, hi] = std::minmax_element(l.weight.value.data(), l.weight.value.data() + l.weight.numel());
        BOOST_TEST(*lo >= -bound);
        BOOST_TEST(*hi <= bound);
        BOOST_TEST(*hi - *lo > 1.9 * bound);
    }
}

BOOST_AUTO_TEST_SUITE_END()
