// Determinism of training (docs/reliability.md): the same seed and thread count give bit-identical
// weights after N training steps, for a small Cell Graph Transformer (graph-regularised attention,
// dropout, AdamW, clipping) and a small State Transition model (LLaMA backbone, energy loss,
// confidence token, dropout, Adam); another thread count gives weights within 1e-6 relative.
// Built without OpenMP there is one thread: the thread-count cases are reported skipped (never
// "passed" by comparing a run with itself) and the bit-identity cases still run.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/gene_graph.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"
#include "threads.hpp"

using namespace celltx;

namespace {

using Weights = std::map<std::string, Tensor<float>>;
using StateModel = StateTransition<float, cpu, LlamaBackbone, EnergyLoss, ConfidenceToken>;

template <class M>
Weights weights_of(M& m) {
    Weights w;
    m.visit_parameters([&](const auto& name, auto& p) { w.emplace(std::string(name), p.value); }, std::string{});
    return w;
}

/// Every tensor bit-identical (same names, shapes and bytes).
bool bit_identical(const Weights& a, const Weights& b) {
    if (a.size() != b.size()) return false;
    for (const auto& [name, t] : a) {
        const auto it = b.find(name);
        if (it == b.end() || !(it->second.shape() == t.shape()) || std::memcmp(t.data(), it->second.data(), t.bytes()) != 0) return false;
    }
    return true;
}

/// Largest relative difference over every weight, |a-b| / max(|a|, |b|) (with a 1e-6 floor).
double max_relative_difference(const Weights& a, const Weights& b) {
    double worst = 0.0;
    for (const auto& [name, t] : a) worst = std::max(worst, celltx::testing::relative_difference(t, b.at(name)).max_error);
    return worst;
}

/// A CGT over 500 genes (d 32, 2 layers, 4 heads, dropout 0.1, two graphs), trained `steps` AdamW
/// steps on 24 seeded gene sets of 1 to 3 genes.
Weights train_cgt(std::uint64_t seed, int steps) {
    const index_t N = 500;
    CgtConfig c;
    c.num_genes = N;
    c.d_model = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.pert_heads = 4;
    c.dropout = 0.1;
    c.seed = seed;
    GraphRegularizerOptions go;
    go.row_rate = 0.5;  // row sampling: random draws addressed by (seed, step, row)
    go.seed = seed;
    CgtGi<float> m(c, go);
    CounterRng rng(1234, 5);  // data: the same for every seed
    std::uint64_t draw = 0;
    for (index_t k = 0; k < 2; ++k) {
        std::vector<Edge> edges;
        for (int e = 0; e < 3000; ++e)
            edges.push_back({static_cast<index_t>(rng.below(draw++, N)), static_cast<index_t>(rng.below(draw++, N))});
        m.add_graph(GeneGraph(N, edges, {.symmetrize = true, .self_loops = true}), {{static_cast<int>(k)}, k, 1e-2}, fmt::format("g{}", k));
    }
    std::vector<std::vector<index_t>> sets;
    Tensor<float> y(Shape{24, 1});
    for (index_t b = 0; b < 24; ++b) {
        std::vector<index_t> s;
        const auto size = 1 + rng.below(draw++, 3);
        while (s.size() < size) {
            const auto g = static_cast<index_t>(rng.below(draw++, N));
            if (std::find(s.begin(), s.end(), g) == s.end()) s.push_back(g);
        }
        sets.push_back(s);
        y[b] = static_cast<float>(rng.normal(draw++));
    }
    const PerturbationBatch batch = PerturbationBatch::from_sets(sets);
    loss::MultiTaskLoss<float> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
    train::AdamW<float> opt(m, train::AdamWOptions{.lr = 3e-3, .weight_decay = 1e-4});
    for (int step = 0; step < steps; ++step)
        m.train_step(batch, {CgtTarget<float>{y.cview()}}, mse, Context::train(seed, static_cast<std::uint64_t>(step)), [&] {
            train::clip_grad_norm<float>(m, 1.0);
            opt.step();
        });
    return weights_of(m);
}

/// A State model (32 genes, hidden 32, 2 LLaMA layers, dropout 0.1) trained `steps` Adam steps on
/// seeded sets of 32 cells.
Weights train_state(std::uint64_t seed, int steps) {
    StateConfig c;
    c.input_dim = c.output_dim = 32;
    c.pert_dim = 4;
    c.hidden = 32;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.dropout = 0.1;
    c.cell_set_len = 32;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    c.backbone.intermediate = 64;
    c.backbone.attn_dropout = 0.1;
    StateModel m(c);
    Generator init(seed);
    m.reset_parameters(init);
    train::Adam<float> adam(m, train::AdamOptions{.lr = 1e-3});
    const auto params = train::collect_parameters<float>(m);
    Generator data(99);  // the same data for every seed
    for (int step = 0; step < steps; ++step) {
        const index_t sets = 4, cells = 32;
        Tensor<float> pert(Shape{sets, cells, 4}), ctrl(Shape{sets, cells, 32}), target(Shape{sets, cells, 32});
        for (index_t s = 0; s < sets; ++s) {
            const auto k = static_cast<index_t>(data.below(4));
            for (index_t i = 0; i < cells; ++i) {
                pert(s, i, k) = 1.0f;
                for (index_t j = 0; j < 32; ++j) {
                    ctrl(s, i, j) = static_cast<float>(std::abs(data.normal()));
                    target(s, i, j) = static_cast<float>(std::abs(data.normal()) + (j / 8 == k ? 1.5 : 0.0));
                }
            }
        }
        m.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, {}, Context::train(seed, static_cast<std::uint64_t>(step)));
        train::clip_grad_norm(params, 10.0);
        adam.step();
    }
    return weights_of(m);
}

constexpr int steps = 4;

} // namespace

BOOST_AUTO_TEST_SUITE(determinism)

BOOST_AUTO_TEST_CASE(cgt_same_seed_and_threads_give_bit_identical_weights) {
    for (int threads : celltx_test::have_openmp ? std::vector<int>{1, 2} : std::vector<int>{1}) {
        celltx_test::ScopedThreads t(threads);
        BOOST_TEST_CONTEXT(threads << " thread(s)") {
            const Weights a = train_cgt(7, steps), b = train_cgt(7, steps);
            BOOST_TEST(bit_identical(a, b));
            // The comparison can fail: training moved the weights, and another seed gives others.
            BOOST_TEST(!bit_identical(a, train_cgt(7, 0)));
            BOOST_TEST(!bit_identical(a, train_cgt(8, steps)));
        }
    }
}

BOOST_AUTO_TEST_CASE(cgt_thread_counts_agree_within_1e_6, *celltx_test::needs_openmp()) {
    Weights one, two, three;
    {
        celltx_test::ScopedThreads t(1);
        one = train_cgt(7, steps);
    }
    {
        celltx_test::ScopedThreads t(2);
        two = train_cgt(7, steps);
    }
    {
        celltx_test::ScopedThreads t(3);
        three = train_cgt(7, steps);
    }
    const double d12 = max_relative_difference(one, two), d13 = max_relative_difference(one, three);
    BOOST_TEST_MESSAGE(fmt::format("CGT after {} steps: 1 vs 2 threads {:.2e} ({}), 1 vs 3 threads {:.2e} ({})", steps, d12,
                                   bit_identical(one, two) ? "bit-identical" : "not bit-identical", d13,
                                   bit_identical(one, three) ? "bit-identical" : "not bit-identical"));
    BOOST_TEST(d12 <= 1e-6);
    BOOST_TEST(d13 <= 1e-6);
}

BOOST_AUTO_TEST_CASE(state_same_seed_and_threads_give_bit_identical_weights) {
    for (int threads : celltx_test::have_openmp ? std::vector<int>{1, 2} : std::vector<int>{1}) {
        celltx_test::ScopedThreads t(threads);
        BOOST_TEST_CONTEXT(threads << " thread(s)") {
            const Weights a = train_state(3, steps), b = train_state(3, steps);
            BOOST_TEST(bit_identical(a, b));
            BOOST_TEST(!bit_identical(a, train_state(3, 0)));
            BOOST_TEST(!bit_identical(a, train_state(4, steps)));
        }
    }
}

BOOST_AUTO_TEST_CASE(state_thread_counts_agree_within_1e_6, *celltx_test::needs_openmp()) {
    Weights one, two, three;
    {
        celltx_test::ScopedThreads t(1);
        one = train_state(3, steps);
    }
    {
        celltx_test::ScopedThreads t(2);
        two = train_state(3, steps);
    }
    {
        celltx_test::ScopedThreads t(3);
        three = train_state(3, steps);
    }
    const double d12 = max_relative_difference(one, two), d13 = max_relative_difference(one, three);
    BOOST_TEST_MESSAGE(fmt::format("State after {} steps: 1 vs 2 threads {:.2e} ({}), 1 vs 3 threads {:.2e} ({})", steps, d12,
                                   bit_identical(one, two) ? "bit-identical" : "not bit-identical", d13,
                                   bit_identical(one, three) ? "bit-identical" : "not bit-identical"));
    BOOST_TEST(d12 <= 1e-6);
    BOOST_TEST(d13 <= 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()
