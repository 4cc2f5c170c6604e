// What the gene_interaction program is made of: the additive ridge baseline on a small exact case
// (solved with rational arithmetic in Python) and its leave-one-out selection against brute-force
// refits; the query reader (DCell formats, line numbers in errors); the CGT configuration as JSON and
// inferred from a PyTorch state_dict, whose predictions through predict_gene_interactions match the
// reference model's; the residual task (predictions = baseline + model); the task and the trainer on
// a device backend (testing::emulated_device: the program's --device path without a GPU), bit-identical
// to the CPU, with checkpoints that move between the two.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>
#include <unistd.h>
#include "celltx/io/cgt_json.hpp"
#include "celltx/io/checkpoint.hpp"
#include "celltx/io/gi_labels.hpp"
#include "celltx/models/additive_baseline.hpp"
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/testing/emulated_device.hpp"
#include "celltx/train/gene_interaction_task.hpp"

using namespace celltx;
namespace fs = std::filesystem;

namespace {

fs::path write_temp(const std::string& name, const std::string& text) {
    const fs::path dir = fs::temp_directory_path() / fmt::format("celltx_gi_{}", ::getpid());
    fs::create_directories(dir);
    std::ofstream(dir / name) << text;
    return dir / name;
}

io::GeneUniverse small_universe() {
    return io::GeneUniverse::from_names({"YAL001C", "YBR002W", "YCL003C", "YDR004W"}, {"TFC3", "RER2", "", "RAD57"});
}

bool message_has(const std::exception& e, const std::string& s) { return std::string(e.what()).find(s) != std::string::npos; }

/// The gene_interaction program's model type on backend B.
template <Backend B>
using GiModel = CellGraphTransformer<float, B, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;

/// A small GI model with a graph-regularised head (sampled rows) and dropout: every random draw of a step.
template <Backend B>
GiModel<B> small_gi_model() {
    CgtConfig cfg;
    cfg.num_genes = 12;
    cfg.d_model = 8;
    cfg.num_layers = 2;
    cfg.num_heads = 2;
    cfg.pert_heads = 2;
    cfg.dropout = 0.1;
    cfg.seed = 3;
    GraphRegularizerOptions gopt;
    gopt.row_rate = 0.5;
    gopt.seed = 3;
    GiModel<B> m(cfg, gopt);
    std::vector<Edge> edges;
    for (index_t i = 0; i < 12; ++i) edges.push_back({i, (i * 5 + 1) % 12}), edges.push_back({i, (i + 1) % 12});
    m.add_graph(GeneGraph(12, edges, {.symmetrize = false, .self_loops = true}), {{1}, 1, 0.05}, "ring");
    return m;
}

/// Every parameter value (or the optimiser's state) of a model, read on the host, in visiting order.
template <Backend B, class M>
std::vector<std::vector<float>> host_weights(M& m) {
    std::vector<std::vector<float>> out;
    m.visit_parameters([&](std::string_view, Parameter<float, B>& p) {
        const Tensor<float> h = to_host(p.value);
        out.emplace_back(h.data(), h.data() + h.numel());
    }, std::string{});
    return out;
}
template <Backend B, class Tr>
std::vector<std::vector<float>> host_moments(Tr& trainer) {
    std::vector<std::vector<float>> out;
    trainer.optimizer().visit_state([&](const std::string&, auto& v) {
        if constexpr (!std::is_integral_v<std::remove_cvref_t<decltype(v)>>) {
            const Tensor<float> h = to_host(v);
            out.emplace_back(h.data(), h.data() + h.numel());
        }
    });
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(gene_interaction)

BOOST_AUTO_TEST_CASE(additive_ridge_baseline_exact) {
    // min Σ (y - b - Σ_S a)² + λ Σ a²,  λ = 1/2; gene 0 listed twice in sample 3; gene 3 never seen.
    // Exact solution (Python fractions): b = -53/410, a = (376/410, 78/410, 150/410), a_3 = 0.
    const std::vector<std::vector<index_t>> sets{{0, 1}, {0, 2}, {1, 2}, {0, 0}, {2}};
    const std::vector<double> y{1.0, 2.0, 0.5, 1.5, -0.5};
    const AdditiveBaseline m = AdditiveBaseline::fit(4, sets, y, 0.5);
    BOOST_TEST(m.intercept() == -0.12926829268292683, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(m.gene_effects()[0] == 0.9170731707317074, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(m.gene_effects()[1] == 0.1902439024390244, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(m.gene_effects()[2] == 0.36585365853658536, boost::test_tools::tolerance(1e-13));
    BOOST_TEST(m.gene_effects()[3] == 0.0);
    BOOST_TEST(m.predict(std::vector<index_t>{0, 3}) == -0.12926829268292683 + 0.9170731707317074, boost::test_tools::tolerance(1e-13));
    // Leave-one-out residuals by brute-force refits (Python fractions): 0.0523..., 1.5219..., 1/6, -0.6363..., -1.7976...
    const auto loo = AdditiveBaseline::loo_residuals(4, sets, y, 0.5);
    const std::vector<double> want{0.05232558139534884, 1.5219298245614035, 0.16666666666666666, -0.6363636363636364, -1.7976190476190477};
    BOOST_TEST_REQUIRE(loo.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) BOOST_TEST(loo[i] == want[i], boost::test_tools::tolerance(1e-12));
    // Errors name what is wrong.
    BOOST_CHECK_EXCEPTION(AdditiveBaseline::fit(4, sets, y, 0.0), ShapeError, [](const ShapeError& e) { return message_has(e, "λ = 0"); });
    BOOST_CHECK_EXCEPTION(AdditiveBaseline::fit(2, sets, y, 1.0), ShapeError,
                          [](const ShapeError& e) { return message_has(e, "sample 1 has gene index 2 outside [0, 2)"); });
    BOOST_CHECK_THROW(AdditiveBaseline::fit(4, sets, std::vector<double>{1.0}, 1.0), ShapeError);
}

BOOST_AUTO_TEST_CASE(leave_one_out_selection_matches_refits) {
    // 12 genes, 60 random pairs: the PRESS score of every λ equals the mean squared error of 60 refits.
    CounterRng rng(5);
    std::vector<std::vector<index_t>> sets;
    std::vector<double> y;
    for (std::uint64_t n = 0; n < 60; ++n) {
        const auto a = static_cast<index_t>(rng.below(3 * n, 12)), b = static_cast<index_t>(rng.below(3 * n + 1, 12));
        sets.push_back({a, b});
        y.push_back(0.1 * a - 0.05 * b + rng.normal(3 * n + 2));
    }
    const std::vector<double> grid{0.1, 1.0, 10.0, 100.0};
    RidgeSelection sel;
    const AdditiveBaseline best = AdditiveBaseline::fit_loo(12, sets, y, grid, &sel);
    BOOST_TEST_REQUIRE(sel.loo_mse.size() == grid.size());
    std::size_t argmin = 0;
    for (std::size_t k = 0; k < grid.size(); ++k) {
        double press = 0;
        for (std::size_t n = 0; n < sets.size(); ++n) {
            std::vector<std::vector<index_t>> s2;
            std::vector<double> y2;
            for (std::size_t m = 0; m < sets.size(); ++m)
                if (m != n) {
                    s2.push_back(sets[m]);
                    y2.push_back(y[m]);
                }
            const double r = y[n] - AdditiveBaseline::fit(12, s2, y2, grid[k]).predict(sets[n]);
            press += r * r;
        }
        BOOST_TEST(sel.loo_mse[k] == press / 60.0, boost::test_tools::tolerance(1e-10));
        if (sel.loo_mse[k] <= sel.loo_mse[argmin]) argmin = k;
    }
    BOOST_TEST(sel.lambda == grid[argmin]);
    BOOST_TEST(best.lambda() == grid[argmin]);
}

BOOST_AUTO_TEST_CASE(query_reader_formats_and_errors) {
    const auto u = small_universe();
    const fs::path p = write_temp("queries.txt", "2 YAL001C YBR002W 0.25\n\nYCL003C RAD57 -2.0\n2 TFC3 YDR004W\nYAL001C YCL003C\n");
    const auto q = io::read_gi_queries(p, u);
    BOOST_TEST_REQUIRE(q.size() == 4u);
    BOOST_TEST(q[0].label == 0.25);
    BOOST_TEST((q[0].genes == std::vector<index_t>{0, 1}));
    BOOST_TEST(q[1].line == 3u);
    BOOST_TEST(q[1].label == -2.0);
    BOOST_TEST(q[1].names[1] == "RAD57", "names are kept as written");
    BOOST_TEST((q[1].genes == std::vector<index_t>{2, 3}));
    BOOST_TEST(std::isnan(q[2].label));
    BOOST_TEST((q[2].genes == std::vector<index_t>{0, 3}));
    BOOST_TEST(std::isnan(q[3].label));
    const fs::path bad = write_temp("bad.txt", "2 YAL001C YBR002W 0.1\n2 YAL001C YZZ999W\n");
    BOOST_CHECK_EXCEPTION(io::read_gi_queries(bad, u), IoError, [&](const IoError& e) {
        return message_has(e, bad.string() + ":2: gene 'YZZ999W' is not in the universe of 4 genes");
    });
    const fs::path count = write_temp("count.txt", "3 YAL001C YBR002W\n");
    BOOST_CHECK_EXCEPTION(io::read_gi_queries(count, u), IoError, [&](const IoError& e) {
        return message_has(e, count.string() + ":1: gene count 3 needs 4 fields");
    });
}

BOOST_AUTO_TEST_CASE(cgt_configuration_as_json) {
    CgtConfig c;
    c.num_genes = 6607;
    c.d_model = 48;
    c.num_layers = 3;
    c.num_heads = 6;
    c.pert_heads = 4;
    c.dropout = 0.05;
    c.gi_pooling = GiPooling::sum;
    c.seed = 0xFFFFFFFFFFFFFFFFull;
    const nlohmann::json j = io::cgt_config_to_json(c);
    const CgtConfig r = io::cgt_config_from_json(nlohmann::json::parse(j.dump()));
    BOOST_TEST(r.num_genes == c.num_genes);
    BOOST_TEST(r.d_model == 48);
    BOOST_TEST(r.num_layers == 3);
    BOOST_TEST(r.num_heads == 6);
    BOOST_TEST(r.pert_heads == 4);
    BOOST_TEST(r.dropout == 0.05);
    BOOST_TEST((r.gi_pooling == GiPooling::sum));
    BOOST_TEST(r.seed == c.seed);
    nlohmann::json missing = j;
    missing.erase("d_model");
    BOOST_CHECK_EXCEPTION(io::cgt_config_from_json(missing, "run/config.json"), Error,
                          [](const Error& e) { return message_has(e, "run/config.json: the field 'd_model' is missing"); });
    nlohmann::json bad = j;
    bad["num_heads"] = 5;
    BOOST_CHECK_EXCEPTION(io::cgt_config_from_json(bad), Error, [](const Error& e) { return message_has(e, "'num_heads' is 5 (must divide d_model)"); });
    bad = j;
    bad["gi_pooling"] = "max";
    BOOST_CHECK_EXCEPTION(io::cgt_config_from_json(bad), Error, [](const Error& e) { return message_has(e, "'max' is not 'mean' or 'sum'"); });
}

BOOST_AUTO_TEST_CASE(pytorch_weights_predict_like_the_reference) {
    // cgt_model_tiny_state.safetensors is torch's own state_dict of a CGTRef (N=16, d=8, L=2, H=2,
    // Type I heads 2, sum pooling); tiny_outputs holds its float64 eval predictions. Sizes come from
    // the shapes, head counts from the caller; the weights load through the checkpoint loader.
    const std::string dir = CELLTX_FIXTURE_DIR;
    const io::SafetensorsFile weights(dir + "/cgt_model_tiny_state.safetensors");
    const io::SafetensorsFile outs(dir + "/cgt_model_tiny_outputs.safetensors");
    CgtConfig cfg = io::infer_cgt_config(weights, 2, 2);
    BOOST_TEST(cfg.num_genes == 16);
    BOOST_TEST(cfg.d_model == 8);
    BOOST_TEST(cfg.num_layers == 2);
    BOOST_TEST(cfg.propagation_layers == 0);
    cfg.gi_pooling = GiPooling::sum;
    CgtGi<float> model(cfg);
    BOOST_TEST(!io::load_checkpoint(weights.path(), model).celltx);
    const auto idx = outs.load_values<index_t>("batch.indices"), off = outs.load_values<index_t>("batch.offsets");
    std::vector<std::vector<index_t>> sets;
    for (std::size_t b = 0; b + 1 < off.size(); ++b) sets.emplace_back(idx.begin() + off[b], idx.begin() + off[b + 1]);
    const train::LabelScaler identity;
    const std::vector<double> p = train::predict_gene_interactions(model, sets, identity);
    const auto want = outs.load_values<double>("pred");
    BOOST_TEST_REQUIRE(p.size() == want.size());
    for (std::size_t i = 0; i < p.size(); ++i) BOOST_TEST(std::abs(p[i] - want[i]) <= 1e-4 * std::max(1.0, std::abs(want[i])));
    // With label statistics and an additive baseline: mean + sd·model + baseline.
    const auto scaler = train::LabelScaler::fit(std::vector<double>{-1.0, 3.0}, 1);  // mean 1, sd 2
    AdditiveBaseline add = AdditiveBaseline::fit(16, std::vector<std::vector<index_t>>{{1, 4}, {2, 15}, {4}}, std::vector<double>{0.5, -0.25, 1.0}, 1.0);
    const std::vector<double> q = train::predict_gene_interactions(model, sets, scaler, &add);
    for (std::size_t i = 0; i < q.size(); ++i) BOOST_TEST(q[i] == 1.0 + 2.0 * p[i] + add.predict(sets[i]), boost::test_tools::tolerance(1e-12));
    // Heads that do not divide d, a file that is not a CGT.
    BOOST_CHECK_THROW(io::infer_cgt_config(weights, 3, 2), Error);
    const io::SafetensorsFile other(dir + "/layers_linear.safetensors");
    BOOST_CHECK_THROW(io::infer_cgt_config(other, 2, 2), IoError);
}

BOOST_AUTO_TEST_CASE(residual_task_targets_and_validation) {
    CgtConfig cfg;
    cfg.num_genes = 10;
    cfg.d_model = 8;
    cfg.num_layers = 1;
    cfg.num_heads = 2;
    cfg.pert_heads = 2;
    CgtGi<float> model(cfg);
    train::PerturbationSamples tr{{{0, 1}, {2, 3}, {4, 5}, {1, 2}}, {0.1, -0.2, 0.3, 0.05}};
    train::PerturbationSamples val{{{0, 2}, {3, 5}}, {0.0, 0.2}};
    const AdditiveBaseline add = AdditiveBaseline::fit(10, tr.sets, tr.labels, 0.1);
    train::GeneInteractionTask<CgtGi<float>> task(model, tr, val, &add);
    const auto t = task.train_labels();
    for (std::size_t n = 0; n < 4; ++n) BOOST_TEST(t[n] == tr.labels[n] - add.predict(tr.sets[n]), boost::test_tools::tolerance(1e-15));
    const auto scaler = train::LabelScaler::fit(t, 1);
    const train::Evaluation e = task.validate(scaler);
    const auto raw = model.forward(PerturbationBatch::from_sets(val.sets), Context::eval());
    for (std::size_t n = 0; n < 2; ++n)
        BOOST_TEST(e.prediction[n] == add.predict(val.sets[n]) + scaler.inverse(raw.predictions[0][static_cast<index_t>(n)]),
                   boost::test_tools::tolerance(1e-12));
    BOOST_TEST(e.truth == val.labels, boost::test_tools::per_element());
    train::PerturbationSamples unlabeled{{{0, 1}}, {std::numeric_limits<double>::quiet_NaN()}};
    BOOST_CHECK_EXCEPTION((train::GeneInteractionTask<CgtGi<float>>(model, tr, unlabeled)), ShapeError,
                          [](const ShapeError& e) { return message_has(e, "validation sample 0 has label nan"); });
}

BOOST_AUTO_TEST_CASE(task_and_trainer_on_a_device_backend_are_bit_identical_to_the_cpu) {
    // What `gene_interaction train --device cuda` runs, on a backend with device semantics and the
    // CPU's kernels: targets uploaded, predictions downloaded, checkpoints through host copies.
    using Dev = testing::emulated_device;
    train::PerturbationSamples tr, val;
    for (index_t i = 0; i < 12; ++i)
        for (index_t j = i + 1; j < 12; j += 3) {
            auto& s = (i + j) % 5 == 0 ? val : tr;
            s.sets.push_back({i, j});
            s.labels.push_back(0.1 * std::sin(static_cast<double>(3 * i + j)) + 0.02 * static_cast<double>(i));
        }
    BOOST_REQUIRE(tr.size() >= 16 && val.size() >= 3);
    const AdditiveBaseline add = AdditiveBaseline::fit(12, tr.sets, tr.labels, 0.1);
    train::TrainerOptions o;
    o.epochs = 3;
    o.batch_size = 6;
    o.lr = 3e-3;
    o.seed = 7;
    auto host = small_gi_model<cpu>();
    auto dev = small_gi_model<Dev>();
    BOOST_TEST((host_weights<cpu>(host) == host_weights<Dev>(dev)), "the same initial weights");
    train::GeneInteractionTask<GiModel<cpu>> th(host, tr, val, &add);
    train::GeneInteractionTask<GiModel<Dev>> td(dev, tr, val, &add);
    train::Trainer<decltype(th)> trh(th, o);
    train::Trainer<decltype(td)> trd(td, o);
    const std::int64_t half = trh.total_steps() / 2;
    BOOST_REQUIRE(half >= 3);
    for (std::int64_t k = 0; k < half; ++k) {
        const train::StepLoss a = trh.step(), b = trd.step();
        BOOST_TEST(a.total == b.total, "step " << k);
        BOOST_TEST(a.auxiliary == b.auxiliary, "step " << k);
        BOOST_TEST(trh.last_gradient_norm() == trd.last_gradient_norm(), "step " << k);
    }
    BOOST_TEST((host_weights<cpu>(host) == host_weights<Dev>(dev)));
    BOOST_TEST((host_moments<cpu>(trh) == host_moments<Dev>(trd)));
    BOOST_TEST(trh.history().back().validation.pearson == trd.history().back().validation.pearson);
    const auto scaler = trh.label_scaler();
    BOOST_TEST(train::predict_gene_interactions(host, val.sets, scaler, &add) == train::predict_gene_interactions(dev, val.sets, scaler, &add),
               boost::test_tools::per_element());

    // The device run's checkpoint resumes on the CPU and the CPU's on the device, bit-identically.
    const fs::path from_dev = write_temp("gi_from_device.safetensors", ""), from_host = write_temp("gi_from_host.safetensors", "");
    io::save_checkpoint(from_dev, dev, nlohmann::json::object(), trd);
    io::save_checkpoint(from_host, host, nlohmann::json::object(), trh);
    auto host2 = small_gi_model<cpu>();
    auto dev2 = small_gi_model<Dev>();
    train::GeneInteractionTask<GiModel<cpu>> th2(host2, tr, val, &add);
    train::GeneInteractionTask<GiModel<Dev>> td2(dev2, tr, val, &add);
    train::Trainer<decltype(th2)> trh2(th2, o);
    train::Trainer<decltype(td2)> trd2(td2, o);
    io::load_checkpoint(from_dev, host2, trh2);
    io::load_checkpoint(from_host, dev2, trd2);
    BOOST_TEST((host_weights<cpu>(host2) == host_weights<cpu>(host)));
    BOOST_TEST((host_weights<Dev>(dev2) == host_weights<cpu>(host)));
    BOOST_TEST((host_moments<Dev>(trd2) == host_moments<cpu>(trh)));
    while (!trh.finished()) {
        const double a = trh.step().total, b = trh2.step().total, c = trd2.step().total;
        BOOST_TEST(a == b);
        BOOST_TEST(a == c);
    }
    BOOST_TEST(trd2.finished());
    BOOST_TEST((host_weights<cpu>(host2) == host_weights<cpu>(host)));
    BOOST_TEST((host_weights<Dev>(dev2) == host_weights<cpu>(host)));
    fs::remove(from_dev);
    fs::remove(from_host);
}

BOOST_AUTO_TEST_SUITE_END()
