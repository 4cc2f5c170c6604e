// Optimisers (Adam, AdamW), gradient clipping and learning-rate schedules against PyTorch 1.13
// fixtures (tools/fixtures/make_optim.py): float64 within 1e-12 relative, float32 within 1e-5.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <variant>
#include <vector>
#include "celltx/io/safetensors.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"
#include "celltx/train/lr_schedule.hpp"
#include "celltx/train/parameter_list.hpp"

using namespace celltx;
using celltx::testing::relative_difference;

namespace {

const std::string fixture_dir = CELLTX_FIXTURE_DIR;

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return out;
}

struct Meta {
    const io::SafetensorsFile& f;
    const std::string& str(const std::string& key) const {
        auto it = f.metadata().find(key);
        BOOST_REQUIRE_MESSAGE(it != f.metadata().end(), "fixture metadata lacks " << key);
        return it->second;
    }
    double num(const std::string& key) const { return std::stod(str(key)); }
};

/// The fixture's module: nn.Linear(4, 3) under "lin." and a free parameter "scale" [2, 3].
template <Scalar T>
struct Tiny {
    nn::Linear<T> lin{4, 3};
    Parameter<T> scale{Shape{2, 3}};
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        lin.visit_parameters(f, join_name(prefix, "lin."));
        f(join_name(prefix, "scale"), scale);
    }
};

template <Scalar T>
void load_into(Tiny<T>& m, const io::SafetensorsFile& f, const std::string& prefix) {
    for (auto& [name, p] : train::collect_parameters<T>(m)) p->value = f.load<T>(prefix + name);
}

template <Scalar T>
double tolerance() {
    return std::is_same_v<T, double> ? 1e-12 : 1e-5;
}
/// Below this magnitude errors are judged absolutely. The fixture's values are O(1); in float32 a
/// parameter (or momentum) that cancels down to ~1e-3 keeps the ~1e-8 absolute rounding of its terms.
template <Scalar T>
double floor_for() {
    return std::is_same_v<T, double> ? 1e-6 : 1e-2;
}

/// Runs every Adam/AdamW configuration of the fixture in precision T; returns the worst error.
template <Scalar T>
double adam_worst_error() {
    io::SafetensorsFile f(fixture_dir + "/optim_adam.safetensors");
    Meta meta{f};
    const int steps = static_cast<int>(meta.num("steps"));
    double worst = 0.0;
    for (const std::string& c : split(meta.str("configs"))) {
        Tiny<T> m;
        load_into(m, f, "init.");
        const double lr_later = meta.num(c + ".lr_later");
        auto run = [&](auto& opt) {
            for (int k = 0; k < steps; ++k) {
                if (lr_later > 0.0 && k == 3) opt.set_lr(lr_later);
                for (auto& [name, p] : train::collect_parameters<T>(m)) p->grad = f.load<T>(fmt::format("grad.{}.{}", k, name));
                opt.step();
                for (auto& [name, p] : train::collect_parameters<T>(m)) {
                    auto d = relative_difference(p->value, f.load<double>(fmt::format("{}.step{}.{}", c, k, name)), floor_for<T>());
                    BOOST_TEST(d.within(tolerance<T>()), c << " step " << k << " " << name << ": " << d.str());
                    worst = std::max(worst, d.max_error);
                }
            }
            int visited = 0;
            opt.visit_state([&](const std::string& name, auto& s) {
                ++visited;
                if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::int64_t>) {
                    BOOST_TEST(s == steps, name);
                } else {
                    auto d = relative_difference(s, f.load<double>(c + ".state." + name), floor_for<T>());
                    BOOST_TEST(d.within(tolerance<T>()), c << " " << name << ": " << d.str());
                    worst = std::max(worst, d.max_error);
                }
            });
            BOOST_TEST(visited == 3 * (meta.num(c + ".amsgrad") != 0.0 ? 4 : 3));
        };
        const bool ams = meta.num(c + ".amsgrad") != 0.0;
        if (meta.str(c + ".kind") == "adam") {
            train::Adam<T> opt(m, {.lr = meta.num(c + ".lr"), .beta1 = meta.num(c + ".beta1"), .beta2 = meta.num(c + ".beta2"),
                                   .eps = meta.num(c + ".eps"), .weight_decay = meta.num(c + ".weight_decay"), .amsgrad = ams});
            run(opt);
        } else {
            BOOST_TEST(meta.str(c + ".kind") == "adamw");
            train::AdamW<T> opt(m, {.lr = meta.num(c + ".lr"), .beta1 = meta.num(c + ".beta1"), .beta2 = meta.num(c + ".beta2"),
                                    .eps = meta.num(c + ".eps"), .weight_decay = meta.num(c + ".weight_decay"), .amsgrad = ams});
            run(opt);
        }
    }
    return worst;
}

/// Runs three AdamW (amsgrad) steps, snapshots parameters and state, then checks that a fresh module
/// and optimiser restored from the snapshot take exactly the same next two steps.
template <Scalar T>
void check_state_round_trip() {
    using Snapshot = std::map<std::string, std::variant<std::int64_t, Tensor<T>>>;
    auto grad_for = [](Tiny<T>& m, int k) {
        int i = 0;
        for (auto& [name, p] : train::collect_parameters<T>(m)) {
            for (index_t j = 0; j < p->grad.numel(); ++j)
                p->grad[j] = static_cast<T>(std::sin(0.7 * (k + 1) + 0.31 * j + 1.3 * i) * (k == 3 ? 0.1 : 1.0));
            ++i;
        }
    };
    Tiny<T> a;
    Generator g(3);
    a.lin.reset_parameters(g);
    for (index_t j = 0; j < a.scale.numel(); ++j) a.scale.value[j] = static_cast<T>(0.1 * j - 0.2);
    const train::AdamWOptions o{.lr = 3e-2, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-7, .weight_decay = 0.05, .amsgrad = true};
    train::AdamW<T> opt_a(a, o);
    for (int k = 0; k < 3; ++k) {
        grad_for(a, k);
        opt_a.step();
    }
    Snapshot snap;
    for (auto& [name, p] : train::collect_parameters<T>(a)) snap[name] = p->value;
    opt_a.visit_state([&](const std::string& name, auto& s) { snap["optim." + name] = s; });
    BOOST_TEST(snap.size() == 3u + 3u * 4u);

    Tiny<T> b;
    for (auto& [name, p] : train::collect_parameters<T>(b)) p->value = std::get<Tensor<T>>(snap.at(name));
    train::AdamW<T> opt_b(b, o);
    opt_b.visit_state([&](const std::string& name, auto& s) { s = std::get<std::decay_t<decltype(s)>>(snap.at("optim." + name)); });
    Tensor<T> after_one;
    for (int k = 3; k < 5; ++k) {
        grad_for(a, k);
        grad_for(b, k);
        opt_a.step();
        opt_b.step();
        if (k == 3) after_one = b.scale.value;
    }
    auto pa = train::collect_parameters<T>(a), pb = train::collect_parameters<T>(b);
    for (std::size_t i = 0; i < pa.size(); ++i)
        BOOST_TEST(std::memcmp(pa[i].second->value.data(), pb[i].second->value.data(), pa[i].second->value.bytes()) == 0,
                   pa[i].first << " differs after restoring the optimiser state");

    // Without the restored state (fresh moments, step 0) the same step lands elsewhere: the state matters.
    Tiny<T> c;
    for (auto& [name, p] : train::collect_parameters<T>(c)) p->value = std::get<Tensor<T>>(snap.at(name));
    train::AdamW<T> opt_c(c, o);
    grad_for(c, 3);
    opt_c.step();
    BOOST_TEST(relative_difference(c.scale.value, after_one).max_error > 1e-3);
}

template <Scalar T>
double clip_worst_error() {
    io::SafetensorsFile f(fixture_dir + "/optim_clip.safetensors");
    Meta meta{f};
    double worst = 0.0;
    for (const std::string& c : split(meta.str("cases"))) {
        Tiny<T> m;
        auto params = train::collect_parameters<T>(m);
        for (auto& [name, p] : params) p->grad = f.load<T>("grad." + name);
        const double total = train::clip_grad_norm(params, meta.num(c + ".max_norm"), meta.num(c + ".norm_type"));
        const double ref = f.load<double>(c + ".total")[0];
        const double e = std::abs(total - ref) / std::abs(ref);
        BOOST_TEST(e < tolerance<T>(), c << ": total norm " << total << " vs " << ref);
        worst = std::max(worst, e);
        for (auto& [name, p] : params) {
            auto d = relative_difference(p->grad, f.load<double>(c + "." + name), floor_for<T>());
            BOOST_TEST(d.within(tolerance<T>()), c << " " << name << ": " << d.str());
            worst = std::max(worst, d.max_error);
        }
    }
    return worst;
}

/// A module that names two parameters alike.
struct Duplicated {
    Parameter<double> a{Shape{2}}, b{Shape{2}};
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "w"), a);
        f(join_name(prefix, "w"), b);
    }
};

train::CosineWarmupOptions cosine_options(const Meta& meta, const std::string& c) {
    return {.first_cycle_steps = static_cast<std::int64_t>(meta.num(c + ".first_cycle_steps")),
            .cycle_mult = meta.num(c + ".cycle_mult"),
            .max_lr = meta.num(c + ".max_lr"),
            .min_lr = meta.num(c + ".min_lr"),
            .warmup_steps = static_cast<std::int64_t>(meta.num(c + ".warmup_steps")),
            .gamma = meta.num(c + ".gamma")};
}

double lr_error(double a, double b) { return std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-300}); }

} // namespace

BOOST_AUTO_TEST_SUITE(optim)

BOOST_AUTO_TEST_CASE(collect_parameters_keeps_visit_order_and_state_dict_names) {
    Tiny<double> m;
    auto ps = train::collect_parameters<double>(m, "model.");
    BOOST_REQUIRE(ps.size() == 3u);
    BOOST_TEST(ps[0].first == "model.lin.weight");
    BOOST_TEST(ps[1].first == "model.lin.bias");
    BOOST_TEST(ps[2].first == "model.scale");
    BOOST_TEST(ps[0].second == &m.lin.weight);
    BOOST_TEST(ps[1].second == &m.lin.bias);
    BOOST_TEST(ps[2].second == &m.scale);
    nn::Linear<float> nobias(5, 2, false);
    auto pl = train::collect_parameters<float>(nobias);
    BOOST_REQUIRE(pl.size() == 1u);
    BOOST_TEST(pl[0].first == "weight");
    Duplicated d;
    BOOST_CHECK_THROW(train::collect_parameters<double>(d), ShapeError);
}

BOOST_AUTO_TEST_CASE(adam_and_adamw_match_torch_in_double) {
    const double worst = adam_worst_error<double>();
    BOOST_TEST_MESSAGE("Adam/AdamW float64 worst relative error " << worst);
    BOOST_TEST(worst < 1e-12);
}

BOOST_AUTO_TEST_CASE(adam_and_adamw_match_torch_in_float) {
    const double worst = adam_worst_error<float>();
    BOOST_TEST_MESSAGE("Adam/AdamW float32 worst relative error " << worst);
    BOOST_TEST(worst < 1e-5);
}

BOOST_AUTO_TEST_CASE(optimiser_state_restores_bit_identically) {
    check_state_round_trip<double>();
    check_state_round_trip<float>();
}

BOOST_AUTO_TEST_CASE(adam_skips_parameters_without_gradient_like_torch) {
    Parameter<double> a(Shape{3}), b(Shape{2});
    a.value.fill(1.0);
    b.value.fill(1.0);
    a.grad.fill(0.5);
    b.grad = Tensor<double>();  // torch's grad=None
    train::Adam<double> opt(train::ParameterList<double>{{"a", &a}, {"b", &b}}, {.lr = 0.1});
    opt.step();
    opt.step();
    // A constant gradient moves Adam by exactly lr per step (bias correction cancels), up to eps.
    BOOST_TEST(std::abs(a.value[0] - (1.0 - 2 * 0.1)) < 1e-7);
    BOOST_TEST(b.value[0] == 1.0);
    std::map<std::string, std::int64_t> steps;
    opt.visit_state([&](const std::string& name, auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::int64_t>) steps[name] = s;
    });
    BOOST_TEST(steps["a.step"] == 2);
    BOOST_TEST(steps["b.step"] == 0);
}

BOOST_AUTO_TEST_CASE(large_parameters_update_elementwise_whatever_the_chunking) {
    // 40000 elements span several parallel chunks; each must get exactly the update that the same
    // (value, gradient) pair gets in a 7-element parameter.
    Parameter<float> big(Shape{200, 200}), small(Shape{7});
    for (index_t i = 0; i < 7; ++i) {
        small.value[i] = 0.3f * static_cast<float>(i) - 1.0f;
        small.grad[i] = std::sin(static_cast<float>(i)) * 2.0f;
    }
    for (index_t i = 0; i < big.numel(); ++i) {
        big.value[i] = small.value[i % 7];
        big.grad[i] = small.grad[i % 7];
    }
    train::AdamW<float> ob(train::ParameterList<float>{{"big", &big}}, {.lr = 0.1, .amsgrad = true});
    train::AdamW<float> os(train::ParameterList<float>{{"small", &small}}, {.lr = 0.1, .amsgrad = true});
    for (int k = 0; k < 3; ++k) {
        ob.step();
        os.step();
    }
    index_t mismatches = 0;
    for (index_t i = 0; i < big.numel(); ++i) mismatches += big.value[i] != small.value[i % 7];
    BOOST_TEST(mismatches == 0);
    BOOST_TEST(small.value[0] != -1.0f);
}

BOOST_AUTO_TEST_CASE(optimisers_reject_invalid_arguments_and_state) {
    Tiny<double> m;
    BOOST_CHECK_THROW(train::Adam<double>(m, {.lr = -1e-3}), ShapeError);
    BOOST_CHECK_THROW(train::Adam<double>(m, {.lr = std::numeric_limits<double>::quiet_NaN()}), ShapeError);
    BOOST_CHECK_THROW(train::Adam<double>(m, {.beta1 = 1.0}), ShapeError);
    BOOST_CHECK_THROW(train::AdamW<double>(m, {.beta2 = -0.1}), ShapeError);
    BOOST_CHECK_THROW(train::AdamW<double>(m, {.eps = -1e-8}), ShapeError);
    BOOST_CHECK_THROW(train::AdamW<double>(m, {.weight_decay = -0.01}), ShapeError);
    Parameter<double> p(Shape{2});
    BOOST_CHECK_THROW(train::Adam<double>(train::ParameterList<double>{{"p", &p}, {"q", &p}}), ShapeError);
    BOOST_CHECK_THROW(train::Adam<double>(train::ParameterList<double>{{"p", nullptr}}), ShapeError);

    train::AdamW<double> opt(m);
    BOOST_TEST(opt.options().weight_decay == 1e-2);  // torch's AdamW default
    BOOST_TEST(train::Adam<double>(m).options().weight_decay == 0.0);
    BOOST_CHECK_THROW(opt.set_lr(-0.5), ShapeError);
    opt.set_lr(0.25);
    BOOST_TEST(opt.lr() == 0.25);
    m.scale.grad = Tensor<double>(Shape{3, 2});  // wrong shape
    try {
        opt.step();
        BOOST_FAIL("a gradient of the wrong shape was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(std::string(e.what()).find("'scale'") != std::string::npos, e.what());
    }
    m.scale.grad = Tensor<double>(Shape{2, 3});
    opt.visit_state([](const std::string& name, auto& s) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(s)>, std::int64_t>)
            if (name == "lin.bias.exp_avg_sq") s = Tensor<double>(Shape{4});  // a checkpoint for another model
    });
    BOOST_CHECK_THROW(opt.step(), ShapeError);
}

BOOST_AUTO_TEST_CASE(clip_grad_norm_matches_torch) {
    const double wd = clip_worst_error<double>();
    const double wf = clip_worst_error<float>();
    BOOST_TEST_MESSAGE("clip_grad_norm worst relative error: float64 " << wd << ", float32 " << wf);
    BOOST_TEST(wd < 1e-12);
    BOOST_TEST(wf < 1e-5);

    // The module overload gives the list overload's result; afterwards the norm is max_norm.
    io::SafetensorsFile f(fixture_dir + "/optim_clip.safetensors");
    Tiny<double> m;
    for (auto& [name, p] : train::collect_parameters<double>(m)) p->grad = f.load<double>("grad." + name);
    const double total = train::clip_grad_norm<double>(m, 1.0);
    BOOST_TEST(std::abs(total - f.load<double>("l2_clipped.total")[0]) < 1e-12 * total);
    BOOST_TEST(relative_difference(m.scale.grad, f.load<double>("l2_clipped.scale")).max_error < 1e-12);
    const double again = train::clip_grad_norm<double>(m, 1.0);  // the norm is now max_norm, up to the 1e-6
    BOOST_TEST(std::abs(again - 1.0) < 2e-6);
}

BOOST_AUTO_TEST_CASE(clip_grad_norm_non_finite_and_invalid_arguments) {
    Parameter<double> a(Shape{3}), b(Shape{2});
    a.grad = Tensor<double>::from(Shape{3}, {1.0, std::numeric_limits<double>::quiet_NaN(), 2.0});
    b.grad = Tensor<double>::from(Shape{2}, {3.0, 4.0});
    train::ParameterList<double> ps{{"a", &a}, {"b", &b}};
    try {
        train::clip_grad_norm(ps, 1.0, 2.0, /*error_if_nonfinite=*/true);
        BOOST_FAIL("a NaN norm did not throw");
    } catch (const train::NonFiniteNormError& e) {
        BOOST_TEST(std::string(e.what()).find("nan") != std::string::npos, e.what());
    }
    BOOST_TEST(b.grad[0] == 3.0);  // nothing scaled when it throws
    BOOST_CHECK_THROW(train::clip_grad_norm(ps, 1.0, std::numeric_limits<double>::infinity(), true), Error);
    BOOST_TEST(std::isnan(train::clip_grad_norm(ps, 1.0)));  // default: returned, grads scaled by NaN as torch does
    BOOST_TEST(std::isnan(b.grad[0]));

    b.grad = Tensor<double>::from(Shape{2}, {std::numeric_limits<double>::infinity(), 1.0});
    a.grad = Tensor<double>::from(Shape{3}, {1.0, 1.0, 1.0});
    BOOST_TEST(std::isinf(train::clip_grad_norm(ps, 1.0, 1.0)));
    BOOST_TEST(a.grad[0] == 0.0);  // coef = 1/inf = 0
    BOOST_CHECK_THROW(train::clip_grad_norm(ps, 1.0, 2.0, true), train::NonFiniteNormError);

    BOOST_CHECK_THROW(train::clip_grad_norm(ps, -1.0), ShapeError);
    BOOST_CHECK_THROW(train::clip_grad_norm(ps, 1.0, 0.0), ShapeError);
    BOOST_CHECK_THROW(train::clip_grad_norm(ps, 1.0, std::numeric_limits<double>::quiet_NaN()), ShapeError);
    BOOST_TEST(train::clip_grad_norm(train::ParameterList<double>{}, 1.0) == 0.0);
}

BOOST_AUTO_TEST_CASE(cosine_warmup_restarts_matches_the_reference_scheduler) {
    io::SafetensorsFile f(fixture_dir + "/optim_schedule.safetensors");
    Meta meta{f};
    std::vector<std::int64_t> epochs;
    for (const auto& e : split(meta.str("epochs"))) epochs.push_back(std::stoll(e));
    double worst = 0.0;
    auto check = [&](double got, double ref, const std::string& what) {
        const double e = lr_error(got, ref);
        BOOST_TEST(e < 1e-12, what << ": " << got << " vs " << ref);
        worst = std::max(worst, e);
    };
    for (const std::string& c : split(meta.str("configs"))) {
        train::CosineAnnealingWarmupRestarts s(cosine_options(meta, c));
        const auto seq = f.load<double>(c + ".sequential");
        check(s.lr(), seq[0], c + " at construction");
        BOOST_TEST(s.last_epoch() == 0);
        for (index_t k = 1; k < seq.numel(); ++k) {
            s.step();
            check(s.lr(), seq[k], fmt::format("{} step {}", c, k));
        }
        BOOST_TEST(s.last_epoch() == seq.numel() - 1);
        const auto ep = f.load<double>(c + ".epochs");
        for (std::size_t i = 0; i < epochs.size(); ++i) {
            s.step_to(epochs[i]);
            check(s.lr(), ep[static_cast<index_t>(i)], fmt::format("{} epoch {}", c, epochs[i]));
            BOOST_TEST(s.last_epoch() == epochs[i]);
        }
        const auto after = f.load<double>(c + ".after_epochs");
        for (index_t k = 0; k < after.numel(); ++k) {
            s.step();
            check(s.lr(), after[k], fmt::format("{} step {} after the epochs", c, k));
        }
    }
    BOOST_TEST_MESSAGE("cosine schedule worst relative error " << worst);
}

BOOST_AUTO_TEST_CASE(cosine_schedule_state_restores_and_drives_an_optimiser) {
    const train::CosineWarmupOptions o{.first_cycle_steps = 7, .cycle_mult = 1.5, .max_lr = 0.1, .min_lr = 0.01,
                                       .warmup_steps = 2, .gamma = 0.5};
    train::CosineAnnealingWarmupRestarts a(o), b(o);
    for (int k = 0; k < 11; ++k) a.step();
    BOOST_TEST(a.cycle() == 1);
    std::map<std::string, std::variant<std::int64_t, double>> snap;
    a.visit_state([&](const std::string& name, auto& v) { snap[name] = v; });
    BOOST_TEST(snap.size() == 6u);
    b.visit_state([&](const std::string& name, auto& v) { v = std::get<std::decay_t<decltype(v)>>(snap.at(name)); });
    BOOST_TEST(b.lr() == a.lr());
    Parameter<float> p(Shape{1});
    p.grad.fill(1.0f);
    train::Adam<float> opt(train::ParameterList<float>{{"p", &p}}, {.lr = b.lr()});
    for (int k = 0; k < 20; ++k) {
        a.step();
        b.step();
        BOOST_TEST(a.lr() == b.lr());
        opt.set_lr(b.lr());
        BOOST_TEST(opt.lr() == b.lr());
    }
    // Warm-up starts each cycle at min_lr; the peak of cycle c is max_lr·gamma^c.
    train::CosineAnnealingWarmupRestarts w(o);
    w.step_to(2);
    BOOST_TEST(std::abs(w.lr() - 0.1) < 1e-15);
    w.step_to(7);  // second cycle, closed form
    BOOST_TEST(w.cycle() == 1);
    BOOST_TEST(std::abs(w.max_lr() - 0.05) < 1e-15);
}

BOOST_AUTO_TEST_CASE(constant_lr_matches_torch_and_defaults_to_constant) {
    io::SafetensorsFile f(fixture_dir + "/optim_schedule.safetensors");
    Meta meta{f};
    train::ConstantLR s(meta.num("constant.base_lr"), meta.num("constant.factor"),
                        static_cast<std::int64_t>(meta.num("constant.total_iters")));
    const auto seq = f.load<double>("constant.sequential");
    for (index_t k = 0; k < seq.numel(); ++k) {
        BOOST_TEST(lr_error(s.lr(), seq[k]) < 1e-15, "step " << k);
        BOOST_TEST(s.lr_at(k) == s.lr());
        s.step();
    }
    train::ConstantLR plain(1e-4);
    train::LrSchedule& any = plain;
    for (int k = 0; k < 5; ++k, any.step()) BOOST_TEST(any.lr() == 1e-4);
    any.step_to(2);
    BOOST_TEST(any.last_epoch() == 2);
    BOOST_CHECK_THROW(train::ConstantLR(-1.0), ShapeError);
    BOOST_CHECK_THROW(train::ConstantLR(1.0, 1.5), ShapeError);
    BOOST_CHECK_THROW(train::ConstantLR(1.0, 0.5, -1), ShapeError);
    BOOST_CHECK_THROW(any.step_to(-1), ShapeError);
}

BOOST_AUTO_TEST_CASE(cosine_schedule_rejects_invalid_arguments) {
    using O = train::CosineWarmupOptions;
    using S = train::CosineAnnealingWarmupRestarts;
    try {
        S bad(O{.first_cycle_steps = 10, .warmup_steps = 10});
        BOOST_FAIL("warmup_steps == first_cycle_steps was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(std::string(e.what()).find("warmup_steps 10") != std::string::npos, e.what());
    }
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 0}), ShapeError);
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 10, .warmup_steps = -1}), ShapeError);
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 10, .cycle_mult = 0.5}), ShapeError);
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 10, .max_lr = -0.1}), ShapeError);
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 10, .min_lr = std::numeric_limits<double>::infinity()}), ShapeError);
    BOOST_CHECK_THROW(S(O{.first_cycle_steps = 10, .gamma = -1.0}), ShapeError);
    S ok(O{.first_cycle_steps = 10});
    BOOST_CHECK_THROW(ok.step_to(-3), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
