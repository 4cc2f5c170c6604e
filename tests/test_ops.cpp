// The cross-backend op harness (testing/op_harness.hpp) on the backends every machine has, one
// ctest entry each, in one translation unit (the float64 reference and the naive implementations
// are compiled once):
//  - ops_cpu: every op in float and double against the float64 CPU reference and a naive
//    implementation, every backward op against finite differences, the harness's list of ops
//    against the ops backend/ops.hpp declares, and the harness itself on a broken backend;
//  - ops_emulated_device (testing/emulated_device.hpp): device semantics above the backend, the
//    CPU's kernels below. Every op runs through the harness, and both model families train on it
//    with every option; since the kernels are the CPU's, every output, gradient and updated weight
//    must be bit-identical to the CPU's. This proves that the models reach a device's memory only
//    through ops and host staging: a real device backend needs nothing but its storage_traits and
//    its ops::kernels.
// The ops_cpu suite also checks the per-element math every backend shares (backend/math/,
// core/rng.hpp's PhiloxStream): the CUDA kernels run these functions, so these checks hold for them too.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>
#include <unistd.h>
#include <filesystem>
#include <iterator>
#include <string_view>
#include "celltx/backend/math/adam.hpp"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/testing/emulated_device.hpp"
#include "celltx/testing/model_parity.hpp"
#include "celltx/testing/op_harness.hpp"

using namespace celltx;
using celltx::testing::emulated_device;

namespace {

/// A backend whose column sum forgets the last row, and which lacks scale_rows: everything else is the CPU's.
struct broken_backend {
    static constexpr const char* name = "broken";
    static constexpr bool is_device = false;
};

} // namespace

namespace celltx {
template <>
struct storage_traits<broken_backend> : storage_traits<cpu> {};
template <>
struct ops::kernels<broken_backend> : ops::kernels<cpu> {
    template <Scalar T>
    static void column_sum(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
        ops::kernels<cpu>::column_sum(X, rows > 1 ? rows - 1 : rows, n, out, accumulate);
    }
    static void scale_rows(auto&&...) = delete;
};
} // namespace celltx

namespace {

void expect_clean(const testing::OpHarnessReport& r, const char* what) {
    BOOST_TEST_MESSAGE(what << ": " << r.summary());
    BOOST_TEST(r.ok(), what << ": " << r.summary());
    BOOST_TEST(r.missing_ops.empty(), what << ": the CPU backend lacks ops");
}

} // namespace

BOOST_AUTO_TEST_SUITE(ops_cpu)

BOOST_AUTO_TEST_CASE(every_op_is_registered_once) {
    std::ifstream in(std::string(CELLTX_INCLUDE_DIR) + "/celltx/backend/ops.hpp");
    BOOST_REQUIRE(in.good());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    std::set<std::string> declared;
    const std::regex re(R"(concept provides_(\w+) =)");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) declared.insert((*it)[1]);
    const std::vector<std::string> names = testing::registered_op_names();
    const std::set<std::string> registered(names.begin(), names.end());
    BOOST_TEST(registered.size() == names.size(), "an op is registered twice");
    for (const auto& d : declared) BOOST_TEST(registered.count(d) == 1u, "op " << d << " is declared in backend/ops.hpp but not in the harness");
    for (const auto& r : registered) BOOST_TEST(declared.count(r) == 1u, "the harness registers " << r << ", which backend/ops.hpp does not declare");
    BOOST_TEST(declared.size() >= 40u);
}

BOOST_AUTO_TEST_CASE(every_op_in_float) { expect_clean(testing::run_op_harness<cpu, float>(), "cpu float"); }

// The CPU's vector kernels (backend/cpu/simd.hpp) run at the best level the CPU has; the harness
// again at every lower level, so that an AVX2-only machine's path is tested on an AVX-512 one.
BOOST_AUTO_TEST_CASE(every_op_in_float_at_every_lower_vector_level) {
    const auto best = cpu_detail::detect_simd_level();
    for (auto level : {cpu_detail::SimdLevel::none, cpu_detail::SimdLevel::avx2}) {
        if (static_cast<int>(level) >= static_cast<int>(best)) continue;
        const auto old = cpu_detail::set_simd_level(level);
        const auto r = testing::run_op_harness<cpu, float>();
        cpu_detail::set_simd_level(old);
        expect_clean(r, level == cpu_detail::SimdLevel::none ? "cpu float, no vector kernels" : "cpu float, AVX2 kernels");
    }
}

// vexp: at most 2 ulp from exp over its whole normal range, 0 below it, NaN through; the vector GELU
// within 8 ulp of x·Φ(x) (also in the negative tail, where the plain float formula loses every
// digit) and its derivative within 4e-7 absolute.
BOOST_AUTO_TEST_CASE(the_vector_exp_and_gelu_are_accurate) {
    const auto best = cpu_detail::detect_simd_level();
    if (best == cpu_detail::SimdLevel::none) {
        BOOST_TEST_MESSAGE("no AVX2: the vector kernels do not run on this CPU");
        return;
    }
    auto ulps = [](float got, double ref) {
        const float r = static_cast<float>(ref);
        const double u = static_cast<double>(std::nextafter(std::fabs(r), std::numeric_limits<float>::infinity())) - std::fabs(r);
        return std::fabs(static_cast<double>(got) - ref) / u;
    };
    for (auto level : {cpu_detail::SimdLevel::avx2, cpu_detail::SimdLevel::avx512}) {
        if (static_cast<int>(level) > static_cast<int>(best)) continue;
        const auto old = cpu_detail::set_simd_level(level);
        const index_t n = 400003;
        std::vector<float> x(static_cast<std::size_t>(n)), y(x.size()), dy(x.size(), 1.0f), dx(x.size(), 0.0f);
        for (index_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(-87.33 + (88.37 + 87.33) * static_cast<double>(i) / (n - 1));
        BOOST_REQUIRE(cpu_detail::simd_exp(x.data(), y.data(), n));
        double worst = 0.0;
        for (index_t i = 0; i < n; ++i) worst = std::max(worst, ulps(y[static_cast<std::size_t>(i)], std::exp(static_cast<double>(x[static_cast<std::size_t>(i)]))));
        BOOST_TEST(worst <= 2.0, "vexp: " << worst << " ulp at level " << static_cast<int>(level));
        const float special[4] = {-std::numeric_limits<float>::infinity(), -100.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
        float out[4];
        cpu_detail::simd_exp(special, out, 4);
        BOOST_TEST(out[0] == 0.0f);
        BOOST_TEST(out[1] == 0.0f);
        BOOST_TEST(std::isnan(out[2]));
        BOOST_TEST(out[3] == 1.0f);
        // The softmax kernels' 2^x: within 2 ulp over [-126, 1/2] (scores minus their max, or minus the
        // LSE, in base 2), about 1.2e-38 below -126 (−inf included) instead of 0.
        std::vector<float> ys(x.size());
        for (index_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(-126.0 + 126.5 * static_cast<double>(i) / (n - 1));
        BOOST_REQUIRE(cpu_detail::simd_exp2_softmax(x.data(), ys.data(), n));
        double worst2 = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i) worst2 = std::max(worst2, ulps(ys[i], std::exp2(static_cast<double>(x[i]))));
        BOOST_TEST(worst2 <= 2.0, "vexp2_softmax: " << worst2 << " ulp at level " << static_cast<int>(level));
        cpu_detail::simd_exp2_softmax(special, out, 4);
        BOOST_TEST((out[0] >= 0.0f && out[0] < 2e-38f));
        BOOST_TEST(ulps(out[1], std::exp2(-100.0)) <= 2.0);
        BOOST_TEST(out[3] == 1.0f);

        for (index_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(-12.0 + 24.0 * static_cast<double>(i) / (n - 1));
        BOOST_REQUIRE(cpu_detail::simd_gelu_forward(x.data(), y.data(), n));
        BOOST_REQUIRE(cpu_detail::simd_gelu_backward(x.data(), dy.data(), dx.data(), n));
        double worst_value = 0.0, worst_derivative = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double xi = x[i], cdf = 0.5 * std::erfc(-xi / std::sqrt(2.0));
            const double ref = xi * cdf, dref = cdf + xi * std::exp(-0.5 * xi * xi) / std::sqrt(2.0 * 3.14159265358979323846);
            if (std::fabs(ref) > 1e-37) worst_value = std::max(worst_value, ulps(y[i], ref));
            worst_derivative = std::max(worst_derivative, std::fabs(dx[i] - dref));
        }
        BOOST_TEST(worst_value <= 8.0, "GELU: " << worst_value << " ulp at level " << static_cast<int>(level));
        BOOST_TEST(worst_derivative <= 4e-7, "GELU': " << worst_derivative << " at level " << static_cast<int>(level));
        cpu_detail::set_simd_level(old);
    }
}

BOOST_AUTO_TEST_CASE(every_op_in_double) { expect_clean(testing::run_op_harness<cpu, double>(), "cpu double"); }

BOOST_AUTO_TEST_CASE(every_backward_against_finite_differences) {
    const auto r = testing::check_backward_ops();
    BOOST_TEST_MESSAGE(r.summary());
    for (const auto& c : r.checks) BOOST_TEST_MESSAGE(c.op << " [" << c.label << "]: " << c.error);
    BOOST_TEST(r.ok(), r.summary());
}

// The vector Philox (dropout masks of the generic attention kernel) gives CounterRng::bits bit for
// bit at every vector level, including counters whose low word wraps inside the 16 blocks.
BOOST_AUTO_TEST_CASE(vector_philox_blocks_equal_the_counter_rng) {
    const auto best = cpu_detail::detect_simd_level();
    if (best == cpu_detail::SimdLevel::none) {
        BOOST_TEST_MESSAGE("no vector level on this CPU: the portable loop is the only path");
        return;
    }
    std::size_t checked = 0;
    for (auto level : {cpu_detail::SimdLevel::avx2, cpu_detail::SimdLevel::avx512}) {
        if (static_cast<int>(level) > static_cast<int>(best)) continue;
        const auto old = cpu_detail::set_simd_level(level);
        for (const std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{7}, ~std::uint64_t{0}})
            for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{12345}, std::uint64_t{0xFFFFFFF8u}, (std::uint64_t{5} << 40) + 0xFFFFFFF1u}) {
                const CounterRng rng = CounterRng(seed, 3).substream(seed + first);
                std::uint32_t out[64];
                BOOST_REQUIRE(cpu_detail::simd_philox_blocks16(rng.philox_stream(), first, out));
                std::size_t wrong = 0;
                for (int l = 0; l < 16; ++l) {
                    const auto want = rng.bits(first + static_cast<std::uint64_t>(l));
                    for (int w = 0; w < 4; ++w) wrong += out[4 * l + w] != want[static_cast<std::size_t>(w)];
                }
                BOOST_TEST(wrong == 0u, "level " << static_cast<int>(level) << ", seed " << seed << ", first block " << first);
                ++checked;
            }
        cpu_detail::set_simd_level(old);
    }
    BOOST_TEST(checked >= 12u);
}

// The dense Type I block's float kernels at the CGT's head width run the attention with genes in
// vector lanes. The harness's float reference for a backward is the CPU kernel itself, so the vector
// path is checked here against the scalar path (itself checked against finite differences), in float,
// forward and backward, over two tasks of gene rows and samples with 0, 1 and more keys.
BOOST_AUTO_TEST_CASE(the_dense_blocks_vector_path_equals_its_scalar_path) {
    if (cpu_detail::detect_simd_level() == cpu_detail::SimdLevel::none) return;
    using Fwd = testing::op_tests::DenseCrossAttentionBlockForward;
    using Bwd = testing::op_tests::DenseCrossAttentionBlockBackward;
    const testing::op_tests::DenseBlockCase c{3, 130, 8, 8};
    const auto run = [&](cpu_detail::SimdLevel level) {
        const auto old = cpu_detail::set_simd_level(level);
        auto f = Fwd::make(c, 7).cast<float>();
        const float* w[10];
        for (std::size_t k = 0; k < 10; ++k) w[k] = f.in[3 + k].data();
        ops::dense_cross_attention_block_forward(cpu{}, testing::op_tests::dense_block_of(c, f.idx[0].data()), f.in[0].data(), f.in[1].data(),
                                                 f.in[2].data(), testing::op_tests::dense_block_weights<float>(w), f.out[0].data(),
                                                 ops::DenseCrossAttentionBlockSaved<float>{f.out[1].data(), f.out[2].data(), f.out[3].data(),
                                                                                           f.out[4].data(), f.out[5].data()});
        auto b = Bwd::make(c, 7).cast<float>();
        for (std::size_t k = 1; k < 6; ++k) b.in[12 + k] = f.out[k];  // the backward reads this forward's saved arrays
        Bwd::naive(c, b);
        cpu_detail::set_simd_level(old);
        std::vector<std::vector<float>> outs = f.out;
        outs.insert(outs.end(), b.out.begin(), b.out.end());
        return outs;
    };
    const auto scalar = run(cpu_detail::SimdLevel::none);
    const auto vector = run(cpu_detail::detect_simd_level());
    BOOST_REQUIRE_EQUAL(scalar.size(), vector.size());
    for (std::size_t k = 0; k < scalar.size(); ++k) {
        double err = 0.0, scale = 0.0;
        std::size_t differ = 0;  // non-finite entries (the LSE of a sample without keys) must match exactly
        for (std::size_t i = 0; i < scalar[k].size(); ++i) {
            const double a = scalar[k][i], v = vector[k][i];
            if (!std::isfinite(a) || !std::isfinite(v)) {
                differ += !(a == v);
                continue;
            }
            scale = std::max(scale, std::abs(a));
            err = std::max(err, std::abs(v - a));
        }
        BOOST_TEST(differ == 0u, "output " << k << ": " << differ << " non-finite entries differ");
        BOOST_TEST(err <= 2e-5 * std::max(scale, 1e-30), "output " << k << ": " << err << " against a scale of " << scale);
    }
}

BOOST_AUTO_TEST_CASE(the_harness_catches_a_wrong_kernel_and_a_missing_one) {
    static_assert(!ops::provides_scale_rows<broken_backend, float> && ops::provides_column_sum<broken_backend, float>);
    const auto r = testing::run_op_harness<broken_backend, float>();
    BOOST_TEST(!r.ok());
    std::set<std::string> failed;
    for (const auto* c : r.failures()) failed.insert(c->op);
    BOOST_TEST((failed == std::set<std::string>{"column_sum"}), r.summary());
    BOOST_TEST((r.missing_ops == std::vector<std::string>{"scale_rows (float)"}), r.summary());
}

BOOST_AUTO_TEST_CASE(philox_stream_draws_what_counter_rng_draws) {
    // The kernels draw through PhiloxStream (plain words, host and device); the CPU through CounterRng.
    for (const auto& [seed, stream] : {std::pair<std::uint64_t, std::uint64_t>{0, 0}, {41, 0x55}, {~0ull, 1ull << 63}, {20261127, 7}})
        for (const std::uint64_t sub : {0ull, 1ull, 12345ull}) {
            const CounterRng rng = CounterRng(seed, stream).substream(sub);
            const PhiloxStream ps = rng.philox_stream();
            for (const std::uint64_t i : {0ull, 1ull, 2ull, 3ull, 4ull, 1001ull, (1ull << 32) + 3, ~0ull - 2}) {
                BOOST_TEST(ps.element_bits(i) == rng.bits(i >> 2)[i & 3]);
                BOOST_TEST(uint_to_unit(ps.element_bits(i)) == rng.uniform(i));
            }
        }
}

BOOST_AUTO_TEST_CASE(the_integer_dropout_rule_is_the_uniform_rule) {
    // math::dropout_keeps_above(bits, keep_threshold(p)) decides as uniform(bits) > p for every p in
    // [0, 1): at the threshold, on both sides of it, at the ends of the range and on random bits.
    const CounterRng rng(9, 9);
    std::vector<double> ps{0.0, 1e-12, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.999, 1.0 - 1.0 / 4294967296.0, 0.5 + 1.0 / 8589934592.0};
    for (std::uint64_t k = 0; k < 200; ++k) ps.push_back(rng.uniform(k));
    std::uint64_t checked = 0, mismatches = 0;
    for (const double p : ps) {
        const std::uint32_t t = ops::keep_threshold(p);
        std::vector<std::uint32_t> bits{0u, 1u, 0xFFFFFFFFu, 0xFFFFFFFEu, t};
        if (t > 0) bits.push_back(t - 1);
        if (t < 0xFFFFFFFFu) bits.push_back(t + 1);
        for (std::uint64_t k = 0; k < 64; ++k) bits.push_back(rng.bits(1000 + k)[0]);
        for (const std::uint32_t b : bits) {
            ++checked;
            mismatches += math::dropout_keeps(b, p) != math::dropout_keeps_above(b, t);
        }
    }
    BOOST_TEST(mismatches == 0u, mismatches << " of " << checked << " decisions differ");
}

BOOST_AUTO_TEST_CASE(the_online_softmax_matches_the_direct_one) {
    // Blocks of any size (the GPU rescales every 8 scores, the CPU every 256), scores far apart and
    // -inf ones: the same log-sum-exp as the direct formula.
    const CounterRng rng(3, 4);
    std::vector<double> s(1000);
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = 30.0 * rng.normal(i) + (i == 500 ? 400.0 : 0.0);
    s[3] = -std::numeric_limits<double>::infinity();
    const double mx = *std::max_element(s.begin(), s.end());
    double direct = 0.0;
    for (double v : s) direct += std::exp(v - mx);
    direct = mx + std::log(direct);
    for (const std::size_t block : {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{256}, std::size_t{1000}}) {
        double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (std::size_t b = 0; b < s.size(); b += block) {
            const std::size_t e = std::min(s.size(), b + block);
            math::online_softmax_rescale(m, sum, *std::max_element(s.begin() + static_cast<std::ptrdiff_t>(b), s.begin() + static_cast<std::ptrdiff_t>(e)));
            for (std::size_t i = b; i < e; ++i) sum += std::exp(s[i] - m);
        }
        BOOST_TEST(std::abs(math::online_softmax_lse(m, sum) - direct) <= 1e-12 * std::abs(direct), "block " << block);
    }
}

BOOST_AUTO_TEST_CASE(the_adam_element_update_is_torchs) {
    // One AdamW step of one element by hand (torch.optim.AdamW, step 1): w ← w(1 − lr·wd) − lr·m̂/(sqrt(v̂) + eps).
    ops::AdamStep<double> s;
    const double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    s.neg_step = -lr / (1.0 - b1), s.bc2_sqrt = std::sqrt(1.0 - b2), s.b1 = b1, s.one_m_b1 = 1.0 - b1, s.b2 = b2, s.one_m_b2 = 1.0 - b2;
    s.eps = eps, s.wd = wd, s.decay = 1.0 - lr * wd, s.decoupled = true;
    double w = 0.7, m = 0.0, v = 0.0;
    math::adam_element(s, w, 0.3, m, v, static_cast<double*>(nullptr));
    const double mhat = 0.3, vhat = 0.09;
    BOOST_TEST(std::abs(w - (0.7 * (1.0 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps))) < 1e-14);
    // amsgrad keeps the larger second moment, and a NaN in it propagates (torch.maximum)
    s.amsgrad = true;
    double vmax = 1.0, w2 = 0.7, m2 = 0.0, v2 = 0.0;
    math::adam_element(s, w2, 0.3, m2, v2, &vmax);
    BOOST_TEST(vmax == 1.0);
    double vnan = std::numeric_limits<double>::quiet_NaN(), w3 = 0.7, m3 = 0.0, v3 = 0.0;
    math::adam_element(s, w3, 0.3, m3, v3, &vnan);
    BOOST_TEST(std::isnan(w3));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ops_emulated_device)

BOOST_AUTO_TEST_CASE(every_op_in_float_and_double) {
    for (const auto& r : {testing::run_op_harness<emulated_device, float>(), testing::run_op_harness<emulated_device, double>()}) {
        BOOST_TEST_MESSAGE(r.summary());
        BOOST_TEST(r.ok(), r.summary());
        BOOST_TEST(r.missing_ops.empty());
    }
}

BOOST_AUTO_TEST_CASE(cgt_training_step_is_bit_identical_to_the_cpu) {
    std::string where;
    const double e = testing::compare_runs(testing::cgt_scenario<float, emulated_device>(), testing::cgt_scenario<float, cpu>(), &where);
    BOOST_TEST(e == 0.0, "largest difference " << e << " at " << where);
}

BOOST_AUTO_TEST_CASE(state_training_step_is_bit_identical_to_the_cpu) {
    std::string where;
    const double e = testing::compare_runs(testing::state_scenario<float, emulated_device>(), testing::state_scenario<float, cpu>(), &where);
    BOOST_TEST(e == 0.0, "largest difference " << e << " at " << where);
}

BOOST_AUTO_TEST_CASE(the_scenarios_measure_float_error_against_double) {
    // The yardstick of the GPU's model tests: float against double on the CPU.
    std::string where;
    const double cgt = testing::compare_runs(testing::cgt_scenario<float, cpu>(), testing::cgt_scenario<double, cpu>(), &where);
    BOOST_TEST_MESSAGE("CGT step, float vs double: " << cgt << " at " << where);
    // Adam normalises each gradient entry, so an entry whose exact value is 0 (the key bias, to
    // which softmax is blind) steps by ±lr on its rounding noise: about 2e-3 of the weights here.
    BOOST_TEST(cgt < 1e-2);
    const double st = testing::compare_runs(testing::state_scenario<float, cpu>(), testing::state_scenario<double, cpu>(), &where);
    BOOST_TEST_MESSAGE("State step, float vs double: " << st << " at " << where);
    BOOST_TEST(st < 1e-3);
}

BOOST_AUTO_TEST_CASE(state_dicts_load_into_and_save_from_a_device_model) {
    // The device path of io::load_state_dict / save_state_dict (read on the host and upload; download
    // and write), as the CUDA backend takes it.
    StateConfig c;
    c.input_dim = c.output_dim = 10;
    c.pert_dim = 3;
    c.hidden = 16;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.cell_set_len = 6;
    c.backbone.layers = 1;
    c.backbone.heads = 2;
    c.backbone.intermediate = 24;
    StateTransition<float, cpu, LlamaBackbone, EnergyLoss, ConfidenceToken> host(c);
    Generator g(11);
    host.reset_parameters(g);
    const auto dir = std::filesystem::temp_directory_path();
    const auto a = dir / ("celltx_emulated_a_" + std::to_string(::getpid()) + ".safetensors");
    const auto b = dir / ("celltx_emulated_b_" + std::to_string(::getpid()) + ".safetensors");
    io::save_state_dict(host, a);
    StateTransition<float, emulated_device, LlamaBackbone, EnergyLoss, ConfidenceToken> dev(c);
    const io::LoadReport r = io::load_state_dict(dev, a);
    BOOST_TEST(r.missing.empty());
    BOOST_TEST(r.unexpected.empty());
    std::size_t names = 0;
    host.visit_parameters([&](std::string_view, Parameter<float>&) { ++names; }, std::string{});
    BOOST_TEST(r.loaded.size() == names);
    io::save_state_dict(dev, b);
    auto bytes = [](const std::filesystem::path& p) {
        std::ifstream f(p, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    };
    BOOST_TEST(bytes(a) == bytes(b), "the device model saves the file it loaded");

    Tensor<float> pert(Shape{2, 6, 3}), ctrl = Tensor<float>::uninitialized(Shape{2, 6, 10});
    for (index_t i = 0; i < 12; ++i) pert[i * 3 + i % 3] = 1.0f;
    for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = static_cast<float>(g.normal());
    const Tensor<float> ph = host.forward(pert.cview(), ctrl.cview()).pred;
    const Tensor<float> pd = to_host(dev.forward(pert.to<emulated_device>().cview(), ctrl.to<emulated_device>().cview()).pred);
    BOOST_TEST(std::equal(ph.data(), ph.data() + ph.numel(), pd.data()));
    std::filesystem::remove(a);
    std::filesystem::remove(b);
}

BOOST_AUTO_TEST_SUITE_END()
