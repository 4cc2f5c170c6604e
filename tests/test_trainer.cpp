// The model-agnostic trainer (train/trainer.hpp), its metrics and label scaling, and checkpoints
// (io/checkpoint.hpp): metrics against values computed independently (Python, by hand), the batch
// order as a pure function of (seed, epoch) and its rank slices, early stopping and the best epoch,
// the data-parallel gradient seam (two ranks in two threads with an all-reduce give the single-rank
// training), checkpoint round trips and their errors, and the bit-identical resume of a Cell Graph
// Transformer with dropout and graph row sampling: N steps against N/2, save, load into a fresh
// model, N/2 more.
#include <boost/test/unit_test.hpp>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <unistd.h>
#include "celltx/io/checkpoint.hpp"
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/train/gene_interaction_task.hpp"
#include "celltx/train/label_scaler.hpp"
#include "celltx/train/metrics.hpp"
#include "celltx/train/trainer.hpp"

using namespace celltx;
namespace fs = std::filesystem;

namespace {

fs::path temp_path(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / fmt::format("celltx_trainer_{}", ::getpid());
    fs::create_directories(dir);
    return dir / name;
}

/// A linear regression y = x·w + b over 3 features, in double: the smallest TrainableModel.
struct LinearRegression {
    using value_type = double;
    using backend = cpu;

    Parameter<double> weight{Shape{3}}, bias{Shape{1}};
    std::vector<std::array<double, 3>> x_train, x_val;
    std::vector<double> y_train, y_val;
    std::vector<std::vector<double>> scripted;  // optional: validation predictions per epoch
    std::size_t validations = 0;

    static LinearRegression make(std::size_t n_train, std::size_t n_val, std::uint64_t seed) {
        LinearRegression m;
        CounterRng rng(seed);
        std::uint64_t k = 0;
        auto sample = [&](auto& xs, auto& ys, std::size_t n) {
            for (std::size_t i = 0; i < n; ++i) {
                std::array<double, 3> x{rng.normal(k++), rng.normal(k++), rng.normal(k++)};
                xs.push_back(x);
                ys.push_back(5.0 + 2.0 * x[0] - 1.0 * x[1] + 0.5 * x[2] + 0.3 * rng.normal(k++));
            }
        };
        sample(m.x_train, m.y_train, n_train);
        sample(m.x_val, m.y_val, n_val);
        return m;
    }

    std::size_t train_size() const { return x_train.size(); }
    std::size_t label_columns() const { return 1; }
    std::vector<double> train_labels() const { return y_train; }
    double predict(const std::array<double, 3>& x) const {
        return bias.value[0] + x[0] * weight.value[0] + x[1] * weight.value[1] + x[2] * weight.value[2];
    }
    train::StepLoss loss_backward(std::span<const std::size_t> samples, const train::LabelScaler& s, const Context&) {
        weight.grad.fill(0.0);
        bias.grad.fill(0.0);
        double loss = 0;
        const double n = static_cast<double>(samples.size());
        for (std::size_t i : samples) {
            const double r = predict(x_train[i]) - s.transform(y_train[i]);
            loss += r * r / n;
            for (int c = 0; c < 3; ++c) weight.grad[c] += 2.0 * r * x_train[i][static_cast<std::size_t>(c)] / n;
            bias.grad[0] += 2.0 * r / n;
        }
        return {loss, loss, 0.0};
    }
    train::Evaluation validate(const train::LabelScaler& s) {
        train::Evaluation e;
        e.truth = y_val;
        if (!scripted.empty()) e.prediction = scripted.at(validations);
        else
            for (const auto& x : x_val) e.prediction.push_back(s.inverse(predict(x)));
        ++validations;
        return e;
    }
    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(prefix + "linear.weight", weight);
        f(prefix + "linear.bias", bias);
    }
};
static_assert(train::TrainableModel<LinearRegression>);
static_assert(train::TrainableModel<train::GeneInteractionTask<CgtGi<float>>>);
static_assert(!train::TrainableModel<CgtGi<float>>, "a bare model has no data: it is not trainable by itself");

/// A state with every kind of value a checkpoint stores.
struct AllKinds {
    std::int64_t i = -7;
    std::uint64_t u = 0xFEDCBA9876543210ull;
    double d = 0.1, ninf = -std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> v{1.0 / 3.0, -2.5e-300, 0.0};
    Tensor<float> t = Tensor<float>::from(Shape{2, 2}, {1.5f, -0.1f, 3.0e-38f, 7.0f});
    bool extra = false;
    template <class F>
    void visit_state(F&& f) {
        f("kinds.i", i);
        f("kinds.u", u);
        f("kinds.d", d);
        f("kinds.ninf", ninf);
        f("kinds.nan", nan);
        f("kinds.v", v);
        f("kinds.t", t);
        if (extra) f("kinds.extra", i);
    }
};

template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

} // namespace

BOOST_AUTO_TEST_SUITE(trainer)

BOOST_AUTO_TEST_CASE(metrics_match_independent_values) {
    // Reference values from a plain-Python computation (two-pass sums; ranks by counting: #less + (#equal + 1)/2).
    const std::vector<double> x{0.5, -1.2, 3.3, 0.5, 2.0, -0.7, 1.1, 0.5}, y{1.0, -0.5, 2.5, 0.2, 2.2, -1.0, 0.3, 1.0};
    const auto m = train::regression_metrics(x, y);
    BOOST_TEST(m.count == 8u);
    BOOST_TEST(m.mse == 0.31125, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(m.rmse == 0.557897840110535, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(m.pearson == 0.9108674239183392, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(m.spearman == 0.859041213929178, boost::test_tools::tolerance(1e-14));
    const std::vector<double> rx = train::average_ranks(x), ry = train::average_ranks(y);
    BOOST_TEST(rx == (std::vector<double>{4.0, 1.0, 8.0, 4.0, 7.0, 2.0, 6.0, 4.0}), boost::test_tools::per_element());
    BOOST_TEST(ry == (std::vector<double>{5.5, 2.0, 8.0, 3.0, 7.0, 1.0, 4.0, 5.5}), boost::test_tools::per_element());
    // Invariances: Pearson under affine maps, Spearman under monotone ones; a perfect anti-correlation.
    std::vector<double> xa, xm, neg;
    for (double v : x) {
        xa.push_back(1e6 + 3.0 * v);
        xm.push_back(std::exp(v));
        neg.push_back(-v);
    }
    BOOST_TEST(train::pearson(xa, y) == m.pearson, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(train::spearman(xm, y) == m.spearman, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(train::pearson(neg, x) == -1.0, boost::test_tools::tolerance(1e-15));
    // Undefined correlations are NaN; a non-finite prediction makes every metric NaN; bad inputs throw.
    const std::vector<double> constant(8, 2.0);
    BOOST_TEST(std::isnan(train::pearson(constant, y)));
    BOOST_TEST(std::isnan(train::spearman(constant, y)));
    BOOST_TEST(std::isnan(train::pearson(std::vector<double>{1.0}, std::vector<double>{2.0})));
    std::vector<double> bad = x;
    bad[3] = std::numeric_limits<double>::quiet_NaN();
    const auto mb = train::regression_metrics(bad, y);
    BOOST_TEST((std::isnan(mb.mse) && std::isnan(mb.pearson) && std::isnan(mb.spearman)));
    BOOST_CHECK_THROW(train::regression_metrics(x, std::vector<double>{1.0, 2.0}), ShapeError);
    BOOST_CHECK_THROW(train::regression_metrics(std::vector<double>{}, std::vector<double>{}), ShapeError);
    BOOST_CHECK_THROW(train::regression_metrics(x, bad), ShapeError);
}

BOOST_AUTO_TEST_CASE(label_scaler_z_scores_with_training_statistics) {
    // Column 0: 1, 2, 3, 6 (mean 3, population sd sqrt(3.5)); column 1: NaN skipped, then constant -> sd 1.
    const std::vector<double> labels{1, 5, 2, std::numeric_limits<double>::quiet_NaN(), 3, 5, 6, 5};
    const auto s = train::LabelScaler::fit(labels, 2);
    BOOST_TEST(s.columns() == 2u);
    BOOST_TEST(s.mean()[0] == 3.0);
    BOOST_TEST(s.sd()[0] == std::sqrt(3.5), boost::test_tools::tolerance(1e-15));
    BOOST_TEST(s.mean()[1] == 5.0);
    BOOST_TEST(s.sd()[1] == 1.0);
    BOOST_TEST(s.transform(6.0, 0) == 3.0 / std::sqrt(3.5), boost::test_tools::tolerance(1e-15));
    BOOST_TEST(s.inverse(s.transform(-0.37, 0), 0) == -0.37, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(s.transform(7.0, 1) == 2.0);
    const train::LabelScaler identity;
    BOOST_TEST(identity.transform(4.25) == 4.25);
    BOOST_CHECK_THROW(train::LabelScaler::fit(labels, 3), ShapeError);
    BOOST_CHECK_THROW(s.transform(1.0, 2), ShapeError);
}

BOOST_AUTO_TEST_CASE(batch_order_is_a_pure_function_of_seed_and_epoch) {
    const std::size_t n = 103;
    const auto a = train::epoch_order(7, 3, n), b = train::epoch_order(7, 3, n);
    BOOST_TEST(a == b, boost::test_tools::per_element());
    std::vector<std::size_t> sorted = a;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < n; ++i) BOOST_TEST(sorted[i] == i);
    BOOST_TEST((train::epoch_order(7, 4, n) != a), "another epoch, another order");
    BOOST_TEST((train::epoch_order(8, 3, n) != a), "another seed, another order");
    // Rank slices of every global batch partition it exactly, in order, whatever the world size.
    for (std::int64_t world : {1, 2, 3, 5}) {
        for (std::int64_t k = 0; k < 11; ++k) {  // 103 = 10 batches of 10 + 3
            std::vector<std::size_t> merged;
            for (std::int64_t r = 0; r < world; ++r) {
                const auto s = train::rank_slice(a, 10, k, r, world);
                merged.insert(merged.end(), s.begin(), s.end());
            }
            std::sort(merged.begin(), merged.end());
            std::vector<std::size_t> want(a.begin() + k * 10, a.begin() + std::min<std::int64_t>(103, (k + 1) * 10));
            std::sort(want.begin(), want.end());
            BOOST_TEST(merged == want, boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(trains_a_linear_model_and_reports_each_epoch) {
    LinearRegression m = LinearRegression::make(200, 50, 11);
    train::TrainerOptions o;
    o.epochs = 30;
    o.batch_size = 32;
    o.lr = 0.05;
    o.weight_decay = 0.0;
    train::Trainer<LinearRegression> t(m, o);
    std::vector<train::EpochRecord> seen;
    std::int64_t progress_calls = 0;
    t.on_epoch_end = [&](const train::EpochRecord& r) {
        seen.push_back(r);
        BOOST_TEST(t.epoch() == r.epoch, "the trainer is at the next epoch when the hook runs");
    };
    t.on_progress = [&](const train::Progress& p) {
        ++progress_calls;
        BOOST_TEST(p.step == t.step_count());
        BOOST_TEST(p.total_steps == 30 * 7);
    };
    t.fit();
    BOOST_TEST(t.finished());
    BOOST_TEST(t.step_count() == 30 * 7);
    BOOST_TEST(progress_calls == 30 * 7);
    BOOST_TEST(seen.size() == 30u);
    BOOST_TEST(t.history().size() == 30u);
    // z-scored labels: the fit recovers the true coefficients divided by the label sd.
    const double sd = t.label_scaler().sd()[0];
    BOOST_TEST(m.weight.value[0] * sd == 2.0, boost::test_tools::tolerance(0.05));
    BOOST_TEST(m.weight.value[1] * sd == -1.0, boost::test_tools::tolerance(0.05));
    BOOST_TEST(t.history().back().validation.pearson > 0.95);
    BOOST_TEST(t.history().back().validation.rmse < 0.45);
    const std::string csv = train::metrics_csv(t.history());
    BOOST_TEST(csv.starts_with("epoch,step,train_loss,train_phenotype,train_auxiliary,lr,val_mse,val_rmse,val_pearson,val_spearman"));
    BOOST_TEST(std::count(csv.begin(), csv.end(), '\n') == 31);
    BOOST_TEST(train::format_progress(t.progress()).find("step 210/210") != std::string::npos);
    BOOST_CHECK_THROW(t.step(), ShapeError);  // finished
}

BOOST_AUTO_TEST_CASE(early_stopping_and_the_best_epoch) {
    LinearRegression m = LinearRegression::make(20, 5, 3);
    m.y_val = {1, 2, 3, 4, 5};
    // Validation Pearson per epoch: 0.8, 1.0, NaN (constant), 0.8, -1.0.
    m.scripted = {{1, 3, 2, 5, 4}, {1, 2, 3, 4, 5}, {2, 2, 2, 2, 2}, {2, 1, 3, 5, 4}, {5, 4, 3, 2, 1}};
    train::TrainerOptions o;
    o.epochs = 5;
    o.batch_size = 8;
    o.patience = 2;
    train::Trainer<LinearRegression> t(m, o);
    std::vector<bool> best;
    t.on_epoch_end = [&](const train::EpochRecord& r) { best.push_back(r.best); };
    t.fit();
    BOOST_TEST(t.stopped_early());
    BOOST_TEST(t.epoch() == 4, "stopped after 2 epochs without improvement");
    BOOST_TEST(t.best_epoch() == 2);
    BOOST_TEST(t.best_pearson() == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST((best == std::vector<bool>{true, true, false, false}));
    BOOST_TEST(std::isnan(t.history()[2].validation.pearson));
}

BOOST_AUTO_TEST_CASE(a_non_finite_loss_stops_training_with_its_step) {
    LinearRegression m = LinearRegression::make(20, 5, 3);
    m.x_train[5][0] = std::numeric_limits<double>::infinity();
    train::TrainerOptions o;
    o.epochs = 2;
    o.batch_size = 20;
    train::Trainer<LinearRegression> t(m, o);
    BOOST_CHECK_EXCEPTION(t.step(), Error, [](const Error& e) {
        return std::string(e.what()).find("step 1 (epoch 1, batch 1): the loss is") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(the_gradient_seam_makes_two_ranks_train_as_one) {
    // Rank r of 2 runs in its own thread on its own copy of the model; the seam averages the gradients
    // weighted by the ranks' sample counts (an all-reduce). The weights then follow the single-rank run.
    for (std::size_t n : {37u, 33u}) {  // 33: the last batch holds one sample, so rank 1 has none
        train::TrainerOptions o;
        o.epochs = 3;
        o.batch_size = 8;
        o.lr = 0.05;
        LinearRegression single = LinearRegression::make(n, 10, 5);
        train::Trainer<LinearRegression> ts(single, o);
        std::vector<std::size_t> single_counts;
        ts.reduce_gradients = [&](auto&, std::size_t local) { single_counts.push_back(local); };
        ts.fit();

        LinearRegression models[2] = {LinearRegression::make(n, 10, 5), LinearRegression::make(n, 10, 5)};
        std::vector<double> shared(2 * 4);
        std::size_t counts[2] = {0, 0};
        std::barrier sync(2);
        auto run = [&](int r) {
            train::TrainerOptions ro = o;
            ro.rank = r;
            ro.world_size = 2;
            train::Trainer<LinearRegression> t(models[r], ro);
            t.reduce_gradients = [&, r](train::ParameterList<double>& params, std::size_t local) {
                std::size_t k = 0;
                for (auto& [name, p] : params)
                    for (index_t i = 0; i < p->grad.numel(); ++i) shared[static_cast<std::size_t>(r) * 4 + k++] = p->grad[i] * static_cast<double>(local);
                counts[r] = local;
                sync.arrive_and_wait();
                const double total = static_cast<double>(counts[0] + counts[1]);
                k = 0;
                for (auto& [name, p] : params)
                    for (index_t i = 0; i < p->grad.numel(); ++i, ++k) p->grad[i] = (shared[k] + shared[4 + k]) / total;
                sync.arrive_and_wait();
            };
            t.fit();
        };
        std::thread t1(run, 1);
        run(0);
        t1.join();
        for (int r = 0; r < 2; ++r) {
            for (index_t i = 0; i < 3; ++i) BOOST_TEST(models[r].weight.value[i] == single.weight.value[i], boost::test_tools::tolerance(1e-9));
            BOOST_TEST(models[r].bias.value[0] == single.bias.value[0], boost::test_tools::tolerance(1e-9));
        }
        BOOST_TEST(single_counts.size() == static_cast<std::size_t>(3 * ((n + 7) / 8)));
        BOOST_TEST(single_counts.back() == (n % 8 == 0 ? 8u : n % 8));
    }
}

BOOST_AUTO_TEST_CASE(checkpoint_round_trip_of_every_kind_and_its_errors) {
    LinearRegression m = LinearRegression::make(4, 2, 1);
    m.weight.value = Tensor<double>::from(Shape{3}, {0.25, -1.0 / 3.0, 1e-310});
    m.bias.value[0] = 42.0;
    AllKinds a;
    const fs::path path = temp_path("kinds.safetensors");
    const nlohmann::json config = {{"what", "test"}, {"n", 3}};
    io::save_checkpoint(path, m, config, a);

    LinearRegression m2 = LinearRegression::make(4, 2, 2);
    AllKinds b;
    b.i = 0;
    b.u = 0;
    b.d = b.ninf = b.nan = 0.0;
    b.v.clear();
    b.t.fill(0.0f);
    const io::CheckpointHeader h = io::load_checkpoint(path, m2, b);
    BOOST_TEST(h.celltx);
    BOOST_TEST(h.config == config);
    BOOST_TEST(same_bits(m2.weight.value, m.weight.value));
    BOOST_TEST(m2.bias.value[0] == 42.0);
    BOOST_TEST(b.i == -7);
    BOOST_TEST(b.u == 0xFEDCBA9876543210ull);
    BOOST_TEST(std::memcmp(&b.d, &a.d, sizeof(double)) == 0);
    BOOST_TEST((std::isinf(b.ninf) && b.ninf < 0));
    BOOST_TEST(std::isnan(b.nan));
    BOOST_TEST(b.v == a.v, boost::test_tools::per_element());
    BOOST_TEST(same_bits(b.t, a.t));
    // The weights are a PyTorch state_dict once the "state/" keys are set aside.
    const io::SafetensorsFile f(path);
    BOOST_TEST(f.load<double>("linear.bias")[0] == 42.0);
    BOOST_TEST(f.info("state/kinds.t").shape == (Shape{2, 2}));

    // A state the checkpoint does not hold: nothing is assigned.
    AllKinds c;
    c.extra = true;
    c.i = 5;
    BOOST_CHECK_EXCEPTION(io::load_checkpoint(path, m2, c), IoError, [](const IoError& e) {
        return std::string(e.what()).find("no state 'kinds.extra'") != std::string::npos;
    });
    BOOST_TEST(c.i == 5);
    // A tensor of another shape.
    AllKinds d;
    d.t = Tensor<float>(Shape{3});
    BOOST_CHECK_EXCEPTION(io::load_checkpoint(path, m2, d), IoError, [](const IoError& e) {
        return std::string(e.what()).find("'kinds.t' has shape [2,2], expected [3]") != std::string::npos;
    });
    // Two states with the same names.
    AllKinds e1, e2;
    BOOST_CHECK_EXCEPTION(io::save_checkpoint(temp_path("dup.safetensors"), m, config, e1, e2), IoError, [](const IoError& e) {
        return std::string(e.what()).find("both named 'kinds.i'") != std::string::npos;
    });
    BOOST_TEST(!fs::exists(temp_path("dup.safetensors")));
    // Weights without celltx metadata load as weights only; asking them for a trainer state is an error.
    const fs::path plain = temp_path("plain.safetensors");
    io::save_state_dict(m, plain);
    BOOST_TEST(!io::load_checkpoint(plain, m2).celltx);
    BOOST_CHECK_EXCEPTION(io::load_checkpoint(plain, m2, b), IoError, [](const IoError& e) {
        return std::string(e.what()).find("not a celltx checkpoint") != std::string::npos;
    });
    // A directory that does not exist: IoError, nothing written.
    BOOST_CHECK_THROW(io::save_checkpoint(temp_path("missing_dir") / "x.safetensors", m, config, a), IoError);
    io::write_text_atomic(temp_path("text.csv"), "a,b\n1,2\n");
    BOOST_TEST(fs::file_size(temp_path("text.csv")) == 8u);
}

BOOST_AUTO_TEST_CASE(resume_of_a_cell_graph_transformer_is_bit_identical) {
    // A small CGT with dropout 0.1 and a graph whose rows are sampled at rate 0.5: every random draw
    // is keyed by (seed, step), so the trainer's step count and seed restore them.
    CgtConfig cfg;
    cfg.num_genes = 40;
    cfg.d_model = 8;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.pert_heads = 2;
    cfg.dropout = 0.1;
    cfg.seed = 3;
    GraphRegularizerOptions gopt;
    gopt.row_rate = 0.5;
    gopt.seed = 3;
    std::vector<Edge> edges;
    CounterRng rng(99);
    for (std::uint64_t e = 0; e < 160; ++e)
        edges.push_back({static_cast<index_t>(rng.below(2 * e, 40)), static_cast<index_t>(rng.below(2 * e + 1, 40))});
    train::PerturbationSamples tr, val;
    for (std::uint64_t s = 0; s < 60; ++s) {
        auto& part = s < 45 ? tr : val;
        part.sets.push_back({static_cast<index_t>(rng.below(1000 + s, 40)), static_cast<index_t>(rng.below(2000 + s, 40))});
        part.labels.push_back(0.1 * rng.normal(3000 + s) - 0.02);
    }
    const AdditiveBaseline additive = AdditiveBaseline::fit(40, tr.sets, tr.labels, 1.0);
    train::TrainerOptions o;
    o.epochs = 3;
    o.batch_size = 10;  // 5 batches per epoch, the last of 5 samples
    o.lr = 3e-3;
    o.seed = 17;

    struct Run {
        CgtGi<float> model;
        train::GeneInteractionTask<CgtGi<float>> task;
        train::Trainer<train::GeneInteractionTask<CgtGi<float>>> trainer;
        Run(const CgtConfig& c, const GraphRegularizerOptions& g, const std::vector<Edge>& edges, const train::PerturbationSamples& tr,
            const train::PerturbationSamples& val, const AdditiveBaseline& add, const train::TrainerOptions& o)
            : model(c, g), task((model.add_graph(GeneGraph(c.num_genes, edges, {.self_loops = true}), {{1}, 1, 0.05}, "g"), model), tr, val,
                                &add),
              trainer(task, o) {}
    };
    const std::int64_t total = 15, half = 7;  // 7 = one epoch and two batches: the save lies inside an epoch
    Run a(cfg, gopt, edges, tr, val, additive, o);
    a.trainer.fit_steps(total);
    BOOST_TEST(a.trainer.finished());

    const fs::path path = temp_path("resume.safetensors");
    {
        Run b(cfg, gopt, edges, tr, val, additive, o);
        b.trainer.fit_steps(half);
        AdditiveBaseline add = additive;
        io::save_checkpoint(path, b.model, {{"test", "resume"}}, b.trainer, add);
    }
    CgtConfig other = cfg;
    other.seed = 12345;  // a differently initialised model: the load must overwrite every parameter
    Run c(other, gopt, edges, tr, val, additive, o);
    AdditiveBaseline add;
    io::load_checkpoint(path, c.model, c.trainer, add);
    BOOST_TEST(c.trainer.step_count() == half);
    BOOST_TEST(c.trainer.epoch() == 1);
    BOOST_TEST(c.trainer.batch() == 2);
    BOOST_TEST(add.gene_effects() == additive.gene_effects(), boost::test_tools::per_element());
    c.trainer.fit_steps(total - half);
    BOOST_TEST(c.trainer.finished());

    // Bit-identical: every parameter, every optimiser moment and step count, the schedule, the history.
    const auto pa = train::collect_parameters<float>(a.model), pc = train::collect_parameters<float>(c.model);
    BOOST_TEST_REQUIRE(pa.size() == pc.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < pa.size(); ++i)
        if (!same_bits(pa[i].second->value, pc[i].second->value)) {
            ++differing;
            BOOST_TEST_MESSAGE("differs: " << pa[i].first);
        }
    BOOST_TEST(differing == 0u);
    std::vector<Tensor<float>> ma, mc;
    std::vector<std::int64_t> sa, sc;
    a.trainer.optimizer().visit_state([&](const std::string&, auto& v) {
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(v)>, std::int64_t>) sa.push_back(v);
        else ma.push_back(v);
    });
    c.trainer.optimizer().visit_state([&](const std::string&, auto& v) {
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(v)>, std::int64_t>) sc.push_back(v);
        else mc.push_back(v);
    });
    BOOST_TEST(sa == sc, boost::test_tools::per_element());
    BOOST_TEST(sa.front() == total);
    BOOST_TEST_REQUIRE(ma.size() == mc.size());
    for (std::size_t i = 0; i < ma.size(); ++i) BOOST_TEST(same_bits(ma[i], mc[i]));
    BOOST_TEST(a.trainer.schedule().lr() == c.trainer.schedule().lr());
    BOOST_TEST_REQUIRE(a.trainer.history().size() == 3u);
    BOOST_TEST_REQUIRE(c.trainer.history().size() == 3u);
    for (std::size_t e = 0; e < 3; ++e) {
        BOOST_TEST(a.trainer.history()[e].train_loss == c.trainer.history()[e].train_loss);
        BOOST_TEST(a.trainer.history()[e].validation.pearson == c.trainer.history()[e].validation.pearson);
        BOOST_TEST(a.trainer.history()[e].best == c.trainer.history()[e].best);
    }
    BOOST_TEST(a.trainer.best_epoch() == c.trainer.best_epoch());
    // The model trained: its graph term and loss moved, and the saved run was mid-epoch.
    BOOST_TEST(a.trainer.history().front().train_loss != a.trainer.history().back().train_loss);

    // A checkpoint of other data is refused (the training set changed size).
    train::PerturbationSamples fewer = tr;
    fewer.sets.pop_back();
    fewer.labels.pop_back();
    Run d(cfg, gopt, edges, fewer, val, additive, o);
    AdditiveBaseline add2;
    BOOST_CHECK_EXCEPTION(io::load_checkpoint(path, d.model, d.trainer, add2), ShapeError, [](const ShapeError& e) {
        return std::string(e.what()).find("trained on 45 samples but the model now has 44") != std::string::npos;
    });
}

BOOST_AUTO_TEST_SUITE_END()
