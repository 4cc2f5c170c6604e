// The State Transition distribution losses (policies/loss/*): energy and Sinkhorn per set, the
// nan-mean set loss, the L1 regulariser and the confidence MSE. Parity with the PyTorch reference
// (tools/fixtures/make_state_losses.py: state_ref.energy_loss / sinkhorn_loss / st_loss), central
// differences for the energy gradient, permutation invariance, and blockwise / cached / threaded
// runs against plain ones.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "celltx/io/safetensors.hpp"
#include "celltx/policies/loss/confidence_loss.hpp"
#include "celltx/policies/loss/energy_distance.hpp"
#include "celltx/policies/loss/l1_penalty.hpp"
#include "celltx/policies/loss/set_loss.hpp"
#include "celltx/policies/loss/sinkhorn_divergence.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "threads.hpp"

using namespace celltx;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;

namespace {

io::SafetensorsFile fixture(const std::string& name) {
    return io::SafetensorsFile(std::string(CELLTX_FIXTURE_DIR) + "/state_losses_" + name + ".safetensors");
}

double max_abs(const Tensor<double>& t) {
    double m = 0.0;
    for (index_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t[i]));
    return m;
}

/// Relative difference with the floor at `fraction` of the reference's largest magnitude.
template <class A>
testing::Difference diff(const Tensor<A>& got, const Tensor<double>& ref, double fraction = 1e-6) {
    return relative_difference(got, ref, std::max(fraction * max_abs(ref), 1e-300));
}

/// Value and gradients of a per-set loss for upstream weights `w` (dloss).
template <class T>
struct Run {
    Tensor<T> value, dx, dy;
};

template <class Loss, class T>
Run<T> run(Loss& loss, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& w) {
    Run<T> r;
    r.value = loss.forward(x.cview(), y.cview());
    r.dx = Tensor<T>(x.shape());
    r.dy = Tensor<T>(y.shape());
    loss.backward(w.cview(), r.dx.view(), r.dy.view());
    return r;
}

bool same_bits(const Tensor<double>& a, const Tensor<double>& b) {
    if (!(a.shape() == b.shape())) return false;
    for (index_t i = 0; i < a.numel(); ++i)
        if (!(a[i] == b[i])) return false;
    return true;
}

/// Checks a per-set loss against a fixture case: values, gradients of Σ loss and of Σ w·loss.
/// Gradients are judged with the floor at grad_floor × their largest magnitude (1 for float32: its
/// gradients carry ~5e-5 of the largest entry as noise, PyTorch's as much as ours). With `also`, the
/// same tolerance holds against a second fixture (float32 results against the float64 reference).
template <class T, class Loss>
void check_against_fixture(Loss& loss, const io::SafetensorsFile& f, const std::string& name, double tol, double& worst,
                           double grad_floor = 1e-6, const io::SafetensorsFile* also = nullptr) {
    const Tensor<T> x = f.load<T>("x"), y = f.load<T>("y"), w = f.load<T>("w");
    const Tensor<T> ones = Tensor<T>::full(w.shape(), T(1));
    const Run<T> a = run(loss, x, y, ones), b = run(loss, x, y, w);
    const std::pair<const Tensor<T>*, std::string> checks[] = {
        {&a.value, ".value"}, {&a.dx, ".dx"}, {&a.dy, ".dy"}, {&b.dx, ".wdx"}, {&b.dy, ".wdy"}};
    for (const auto& [got, key] : checks) {
        const double floor = key == ".value" ? 1e-6 : grad_floor;
        for (const io::SafetensorsFile* ref : {&f, also}) {
            if (!ref) continue;
            const auto d = diff(*got, ref->load<double>(name + key), floor);
            BOOST_TEST_MESSAGE(ref->path() << " " << name << key << ": " << d.str());
            BOOST_TEST(d.within(tol), ref->path() << " " << name << key << ": " << d.str());
            worst = std::max(worst, d.max_error);
        }
    }
}

void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int get_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/// x with the points of every set permuted by i -> (i * 7 + 3) mod n (7 is coprime to the sizes used).
Tensor<double> permuted(const Tensor<double>& x, std::vector<index_t>& perm) {
    const index_t sets = x.size(0), n = x.size(1), d = x.size(2);
    perm.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = (i * 7 + 3) % n;
    Tensor<double> out(x.shape());
    for (index_t b = 0; b < sets; ++b)
        for (index_t i = 0; i < n; ++i)
            for (index_t k = 0; k < d; ++k) out(b, i, k) = x(b, perm[static_cast<std::size_t>(i)], k);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(state_losses)

BOOST_AUTO_TEST_CASE(energy_and_sinkhorn_match_the_reference_in_float64) {
    double worst_e = 0.0, worst_s = 0.0;
    for (const char* c : {"basic", "dup", "scale"}) {
        const auto f = fixture(c);
        loss::EnergyDistance<double> energy;
        check_against_fixture<double>(energy, f, "energy", 1e-8, worst_e);
        loss::SinkhornDivergence<double> sinkhorn;
        check_against_fixture<double>(sinkhorn, f, "sinkhorn", 1e-8, worst_s);
        // The ε schedule and the batch diameter, entry for entry.
        const Tensor<double> eps = f.load<double>("sinkhorn.eps");
        BOOST_TEST(static_cast<index_t>(sinkhorn.epsilons().size()) == eps.numel(), c);
        for (index_t i = 0; i < std::min<index_t>(eps.numel(), static_cast<index_t>(sinkhorn.epsilons().size())); ++i)
            BOOST_TEST(std::abs(sinkhorn.epsilons()[static_cast<std::size_t>(i)] - eps[i]) <= 1e-14 * eps[i], c << " eps[" << i << "]");
        BOOST_TEST(std::abs(sinkhorn.diameter() - f.load<double>("sinkhorn.diameter")[0]) <= 1e-14 * sinkhorn.diameter());
    }
    BOOST_TEST_MESSAGE("float64 parity, max relative error: energy " << worst_e << ", sinkhorn " << worst_s);
    // The scale case anneals over a long schedule (16 entries), the basic one over 11.
    BOOST_TEST(fixture("scale").load<double>("sinkhorn.eps").numel() >= 15);
}

BOOST_AUTO_TEST_CASE(energy_and_sinkhorn_match_the_reference_in_float32) {
    const auto f = fixture("f32");
    double worst_e = 0.0, worst_s = 0.0;
    loss::EnergyDistance<float> energy;
    const auto f64 = fixture("basic");  // the same points in float64
    check_against_fixture<float>(energy, f, "energy", 1e-4, worst_e, 1.0, &f64);
    loss::SinkhornDivergence<float> sinkhorn;
    check_against_fixture<float>(sinkhorn, f, "sinkhorn", 1e-4, worst_s, 1.0, &f64);
    BOOST_TEST_MESSAGE("float32 parity, max relative error: energy " << worst_e << ", sinkhorn " << worst_s);
}

BOOST_AUTO_TEST_CASE(the_epsilon_schedule_follows_numpy_arange) {
    // numpy.arange(2 ln 8, 2 ln 0.05, 2 ln 0.5): ceil(log2(160)) = 8 entries, then blur².
    const auto eps = loss::sinkhorn_epsilons(8.0, 0.05, 0.5);
    BOOST_TEST(eps.size() == 10u);
    BOOST_TEST(eps.front() == 64.0);
    BOOST_TEST(eps.back() == std::pow(0.05, 2.0));
    BOOST_TEST(std::abs(eps[1] - 64.0) < 1e-12);
    BOOST_TEST(std::abs(eps[2] - 16.0) < 1e-12);
    // A diameter below blur: an empty arange, only [d², blur²].
    BOOST_TEST(loss::sinkhorn_epsilons(0.01, 0.05, 0.5).size() == 2u);
    BOOST_TEST(loss::numpy_arange(0.0, 1.0, 0.25).size() == 4u);
    BOOST_TEST(loss::numpy_arange(0.0, 1.0, -0.25).empty());
    BOOST_CHECK_THROW(loss::sinkhorn_epsilons(0.0, 0.05, 0.5), ShapeError);
}

BOOST_AUTO_TEST_CASE(energy_gradient_matches_finite_differences) {
    Tensor<double> x = random_tensor(Shape{2, 6, 3}, 31), y = random_tensor(Shape{2, 5, 3}, 32, 1.4);
    for (index_t i = 0; i < y.numel(); ++i) y[i] += 0.3;
    for (index_t block : {2, 256}) {
        loss::EnergyDistance<double> energy(block);
        auto res = testing::gradcheck([&] { return energy.forward(x.cview(), y.cview()); },
                                      [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) { energy.backward(dy, dxs[0], dxs[1]); },
                                      {&x, &y}, {});
        BOOST_TEST_MESSAGE("energy gradcheck (block " << block << "): " << res.summary());
        BOOST_TEST(res.ok, res.summary());
    }
}

BOOST_AUTO_TEST_CASE(the_losses_are_invariant_to_the_order_of_points) {
    const auto f = fixture("basic");
    const Tensor<double> x = f.load<double>("x"), y = f.load<double>("y"), w = f.load<double>("w");
    std::vector<index_t> px, py;
    const Tensor<double> xp = permuted(x, px), yp = permuted(y, py);
    auto check = [&](auto& a_loss, auto& b_loss, const char* what) {
        const Run<double> a = run(a_loss, x, y, w), b = run(b_loss, xp, yp, w);
        BOOST_TEST(diff(b.value, a.value).max_error < 1e-12, what);
        double gerr = 0.0;
        const double fx = 1e-9 * max_abs(a.dx), fy = 1e-9 * max_abs(a.dy);
        for (index_t s = 0; s < x.size(0); ++s)
            for (index_t k = 0; k < x.size(2); ++k) {
                for (index_t i = 0; i < x.size(1); ++i) {
                    const double u = b.dx(s, i, k), v = a.dx(s, px[static_cast<std::size_t>(i)], k);
                    gerr = std::max(gerr, std::abs(u - v) / std::max({std::abs(u), std::abs(v), fx}));
                }
                for (index_t j = 0; j < y.size(1); ++j) {
                    const double u = b.dy(s, j, k), v = a.dy(s, py[static_cast<std::size_t>(j)], k);
                    gerr = std::max(gerr, std::abs(u - v) / std::max({std::abs(u), std::abs(v), fy}));
                }
            }
        BOOST_TEST_MESSAGE(what << ": permuted gradients differ by " << gerr);
        BOOST_TEST(gerr < 1e-10, what);
    };
    loss::EnergyDistance<double> e1, e2;
    check(e1, e2, "energy");
    loss::SinkhornDivergence<double> s1, s2;
    check(s1, s2, "sinkhorn");
}

BOOST_AUTO_TEST_CASE(small_blocks_and_the_cost_cache_agree_with_one_block) {
    const auto f = fixture("basic");
    const Tensor<double> x = f.load<double>("x"), y = f.load<double>("y"), w = f.load<double>("w");
    double worst = 0.0;
    auto compare = [&](const Run<double>& a, const Run<double>& b, const char* what) {
        for (auto [p, q] : {std::pair{&a.value, &b.value}, {&a.dx, &b.dx}, {&a.dy, &b.dy}}) {
            const auto d = diff(*p, *q, 1e-9);
            worst = std::max(worst, d.max_error);
            BOOST_TEST(d.within(1e-12), what << ": " << d.str());
        }
    };
    loss::EnergyDistance<double> e4(4), e256(256);
    compare(run(e4, x, y, w), run(e256, x, y, w), "energy block 4 vs 256");
    loss::SinkhornOptions o4, o256;
    o4.block = 4;
    o256.block = 256;
    loss::SinkhornDivergence<double> s4(o4), s256(o256);
    const Run<double> r4 = run(s4, x, y, w);
    compare(r4, run(s256, x, y, w), "sinkhorn block 4 vs 256");
    BOOST_TEST_MESSAGE("block 4 vs 256: max relative difference " << worst);

    // The cost cache is a memo of the same tiles: not one bit changes.
    o4.cost_cache_bytes = std::size_t(1) << 20;
    loss::SinkhornDivergence<double> cached(o4);
    const Run<double> rc = run(cached, x, y, w);
    BOOST_TEST(same_bits(rc.value, r4.value));
    BOOST_TEST(same_bits(rc.dx, r4.dx));
    BOOST_TEST(same_bits(rc.dy, r4.dy));
}

BOOST_AUTO_TEST_CASE(one_and_two_threads_give_identical_bits, *celltx_test::needs_openmp()) {
    // Large enough (4·64·64·16 multiply-adds per pass) that the kernels run in a parallel region.
    const Tensor<double> x = random_tensor(Shape{4, 64, 16}, 41), y = random_tensor(Shape{4, 56, 16}, 42, 1.2);
    const Tensor<double> w = random_tensor(Shape{4}, 43);
    const int saved = get_threads();
    std::vector<Run<double>> runs;
    for (int threads : {1, 2}) {
        set_threads(threads);
        loss::EnergyDistance<double> energy(16);
        runs.push_back(run(energy, x, y, w));
        loss::SinkhornOptions o;
        o.block = 16;
        loss::SinkhornDivergence<double> sinkhorn(o);
        runs.push_back(run(sinkhorn, x, y, w));
    }
    set_threads(saved);
    for (std::size_t k = 0; k < 2; ++k) {
        BOOST_TEST(same_bits(runs[k].value, runs[k + 2].value));
        BOOST_TEST(same_bits(runs[k].dx, runs[k + 2].dx));
        BOOST_TEST(same_bits(runs[k].dy, runs[k + 2].dy));
    }
}

BOOST_AUTO_TEST_CASE(no_n_by_m_buffer_is_allocated) {
    // N = M = 256 points: one N×M matrix of doubles is 512 KB; every tensor the losses allocate
    // (inputs saved by value, per-task tiles) stays far below it. With the cost cache, it shows.
    const index_t n = 256;
    const Tensor<double> x = random_tensor(Shape{1, n, 4}, 51), y = random_tensor(Shape{1, n, 4}, 52, 1.1);
    const Tensor<double> w = Tensor<double>::full(Shape{1}, 1.0);
    const double nm_bytes = static_cast<double>(n * n) * sizeof(double);
    auto peak_of = [&](auto& loss) {
        auto& stats = memory_stats<cpu>();
        const std::size_t before = stats.live.load();
        stats.reset_peak();
        run(loss, x, y, w);
        return static_cast<double>(stats.peak.load() - before);
    };
    loss::EnergyDistance<double> energy(16);
    const double pe = peak_of(energy);
    loss::SinkhornOptions o;
    o.block = 16;
    loss::SinkhornDivergence<double> sinkhorn(o);
    const double ps = peak_of(sinkhorn);
    o.cost_cache_bytes = std::size_t(1) << 24;
    loss::SinkhornDivergence<double> cached(o);
    const double pc = peak_of(cached);
    BOOST_TEST_MESSAGE("peak bytes: energy " << pe << ", sinkhorn " << ps << ", sinkhorn with cost cache " << pc << " (N×M = " << nm_bytes << ")");
    BOOST_TEST(pe < 0.25 * nm_bytes);
    BOOST_TEST(ps < 0.25 * nm_bytes);
    BOOST_TEST(pc >= 4.0 * nm_bytes);
}

BOOST_AUTO_TEST_CASE(set_loss_matches_st_loss) {
    const auto f = fixture("st");
    const Tensor<double> pred = f.load<double>("pred"), target = f.load<double>("target");
    for (const char* name : {"energy", "sinkhorn", "se", "mse"}) {
        loss::SetLossOptions o;
        o.kind = loss::parse_set_loss_kind(name);
        o.set_size = 8;
        loss::SetLoss<double> l(o);
        const Tensor<double> v = l.forward(pred.cview(), target.cview());
        BOOST_TEST(v.rank() == 0);
        BOOST_TEST(l.per_set().numel() == 3);
        Tensor<double> dp(pred.shape()), dt(pred.shape());
        const Tensor<double> one = Tensor<double>::full(Shape{}, 1.0);
        l.backward(one.cview(), dp.view(), dt.view());
        const std::string k = std::string("st.") + name;
        const auto dv = relative_difference(v.data(), f.load<double>(k + ".value").data(), 1, 1e-12);
        const auto dd = diff(dp, f.load<double>(k + ".dpred")), dq = diff(dt, f.load<double>(k + ".dtarget"));
        BOOST_TEST_MESSAGE(k << ": value " << dv.str() << "; dpred " << dd.str() << "; dtarget " << dq.str());
        BOOST_TEST(dv.within(1e-8), k << " value " << dv.str());
        BOOST_TEST(dd.within(1e-8), k << " dpred " << dd.str());
        BOOST_TEST(dq.within(1e-8), k << " dtarget " << dq.str());
        // Rank-3 input gives the same value; float agrees.
        loss::SetLoss<double> l3(o);
        BOOST_TEST(l3.forward(pred.reshaped(Shape{3, 8, 6}), target.reshaped(Shape{3, 8, 6}))[0] == v[0]);
        loss::SetLoss<float> lf(o);
        const Tensor<float> pf = pred.cast<float>(), tf = target.cast<float>();
        BOOST_TEST(std::abs(lf.forward(pf.cview(), tf.cview())[0] - v[0]) <= 1e-4 * std::abs(v[0]), k);
    }
    BOOST_CHECK_THROW(loss::parse_set_loss_kind("wasserstein"), ShapeError);
    BOOST_TEST((loss::parse_set_loss_kind("combined") == loss::SetLossKind::combined));
    loss::SetLossOptions o;
    o.set_size = 5;  // 24 rows are not sets of 5
    loss::SetLoss<double> bad(o);
    BOOST_CHECK_THROW(bad.forward(pred.cview(), target.cview()), ShapeError);
    BOOST_CHECK_THROW(bad.forward(pred.cview(), target.reshaped(Shape{6, 24})), ShapeError);
}

BOOST_AUTO_TEST_CASE(the_nan_mean_leaves_nan_sets_out) {
    const auto f = fixture("st");
    const Tensor<double> pred = f.load<double>("pred"), target = f.load<double>("target");
    const Tensor<double> one = Tensor<double>::full(Shape{}, 1.0);
    loss::SetLossOptions o;
    o.set_size = 8;
    loss::SetLoss<double> clean(o);
    clean.forward(pred.cview(), target.cview());
    const Tensor<double> per_set = clean.per_set();
    Tensor<double> dclean(pred.shape());
    clean.backward(one.cview(), dclean.view());

    // Set 1 (rows 8..15) gets a NaN: the mean is over sets 0 and 2, set 1's gradient is zero and the
    // others' gradients are the clean ones scaled by 3/2 (mean over two sets instead of three).
    Tensor<double> bad = pred;
    bad(11, 2) = std::numeric_limits<double>::quiet_NaN();
    loss::SetLoss<double> l(o);
    const double v = l.forward(bad.cview(), target.cview())[0];
    BOOST_TEST(std::isnan(l.per_set()[1]));
    BOOST_TEST(l.valid_sets() == 2);
    BOOST_TEST(std::abs(v - 0.5 * (per_set[0] + per_set[2])) < 1e-14);
    Tensor<double> dp(pred.shape()), dt(pred.shape());
    l.backward(one.cview(), dp.view(), dt.view());
    double err = 0.0;
    for (index_t r = 0; r < 24; ++r)
        for (index_t k = 0; k < 6; ++k) {
            if (r >= 8 && r < 16) {
                BOOST_TEST(dp(r, k) == 0.0);
                BOOST_TEST(dt(r, k) == 0.0);
            } else {
                err = std::max(err, std::abs(dp(r, k) - 1.5 * dclean(r, k)));
            }
        }
    BOOST_TEST(err < 1e-14);

    // Sinkhorn: the NaN set is NaN (the diameter ignores the NaN), the others finite, no throw.
    o.kind = loss::SetLossKind::combined;
    loss::SetLoss<double> se(o);
    BOOST_TEST(std::isfinite(se.forward(bad.cview(), target.cview())[0]));
    BOOST_TEST(std::isnan(se.per_set()[1]));
    Tensor<double> ds(pred.shape());
    se.backward(one.cview(), ds.view());
    for (index_t i = 0; i < ds.numel(); ++i) BOOST_REQUIRE(std::isfinite(ds[i]));

    // Every set NaN: the loss is NaN and no gradient flows.
    Tensor<double> all = pred;
    for (index_t s = 0; s < 3; ++s) all(8 * s, 0) = std::numeric_limits<double>::quiet_NaN();
    o.kind = loss::SetLossKind::energy;
    loss::SetLoss<double> n(o);
    BOOST_TEST(std::isnan(n.forward(all.cview(), target.cview())[0]));
    BOOST_TEST(n.valid_sets() == 0);
    Tensor<double> dn(pred.shape());
    n.backward(one.cview(), dn.view());
    BOOST_TEST(max_abs(dn) == 0.0);
}

BOOST_AUTO_TEST_CASE(l1_penalty_and_confidence_loss) {
    const auto f = fixture("st");
    const Tensor<double> pred = f.load<double>("pred"), target = f.load<double>("target"), ctrl = f.load<double>("ctrl");
    const Tensor<double> one = Tensor<double>::full(Shape{}, 1.0);
    loss::L1Penalty<double> l1(0.37);
    const Tensor<double> v = l1.forward(pred.cview(), ctrl.cview());
    Tensor<double> dp(pred.shape());
    l1.backward(one.cview(), dp.view());
    BOOST_TEST(std::abs(v[0] - f.load<double>("l1.value")[0]) < 1e-14);
    BOOST_TEST(diff(dp, f.load<double>("l1.dpred")).max_error < 1e-14);
    BOOST_TEST(pred(0, 0) == ctrl(0, 0));
    BOOST_TEST(dp(0, 0) == 0.0);  // the subgradient at |0|

    // Confidence: MSE against 10 × the (detached) per-set energy loss.
    loss::SetLossOptions o;
    o.set_size = 8;
    loss::SetLoss<double> main(o);
    main.forward(pred.cview(), target.cview());
    const Tensor<double> conf = f.load<double>("conf");
    loss::ConfidenceLoss<double> cl;
    const Tensor<double> c = cl.forward(conf.cview(), main.per_set().cview());
    Tensor<double> dc(conf.shape());
    cl.backward(one.cview(), dc.view());
    BOOST_TEST(std::abs(c[0] - f.load<double>("conf.value")[0]) < 1e-12 * c[0]);
    BOOST_TEST(diff(dc, f.load<double>("conf.dconf")).max_error < 1e-10);
    // [B, 1] predictions and a single (broadcast) loss value are accepted; gradient by differences.
    Tensor<double> conf2 = conf;
    conf2.reshape(Shape{3, 1});
    const Tensor<double> batch_loss = Tensor<double>::full(Shape{1}, 0.2);
    auto res = testing::gradcheck([&] { return cl.forward(conf2.cview(), batch_loss.cview()); },
                                  [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) { cl.backward(dy, dxs[0]); },
                                  {&conf2}, {});
    BOOST_TEST(res.ok, res.summary());
    Tensor<double> pred2 = pred;
    pred2(0, 0) += 0.5;  // keep finite differences away from the kink
    auto r2 = testing::gradcheck([&] { return l1.forward(pred2.cview(), ctrl.cview()); },
                                 [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) { l1.backward(dy, dxs[0]); },
                                 {&pred2}, {});
    BOOST_TEST(r2.ok, r2.summary());
}

BOOST_AUTO_TEST_CASE(bad_arguments_throw) {
    const Tensor<double> x = random_tensor(Shape{2, 5, 3}, 1), y = random_tensor(Shape{3, 4, 3}, 2), z = random_tensor(Shape{2, 4, 2}, 3);
    loss::EnergyDistance<double> e;
    BOOST_CHECK_THROW(e.forward(x.cview(), y.cview()), ShapeError);
    BOOST_CHECK_THROW(e.forward(x.cview(), z.cview()), ShapeError);
    BOOST_CHECK_THROW(e.forward(x.reshaped(Shape{10, 3}), x.reshaped(Shape{10, 3})), ShapeError);
    BOOST_CHECK_THROW(loss::EnergyDistance<double>(0), ShapeError);
    loss::SinkhornDivergence<double> s;
    BOOST_CHECK_THROW(s.forward(x.cview(), y.cview()), ShapeError);
    s.forward(x.cview(), x.cview());
    Tensor<double> dx(x.shape());
    const Tensor<double> w3 = Tensor<double>::full(Shape{3}, 1.0);
    BOOST_CHECK_THROW(s.backward(w3.cview(), dx.view(), {}), ShapeError);
    loss::ConfidenceLoss<double> c;
    BOOST_CHECK_THROW(c.forward(x.cview(), w3.cview()), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
