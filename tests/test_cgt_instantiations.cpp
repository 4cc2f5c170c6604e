// The explicit instantiations of models/cgt_instantiations.hpp: the test executable is compiled with
// CELLTX_EXTERN_CGT_INSTANTIATIONS, and this file defines the common Cell Graph Transformer types
// once. The suite checks that each float model agrees with its double twin built from the same seed
// (float parameters are the rounded double draws).
#define CELLTX_DEFINE_CGT_INSTANTIATIONS
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <string>
#include <utility>
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/testing/compare.hpp"


using namespace celltx;

namespace {

CgtConfig small() {
    CgtConfig c;
    c.num_genes = 40;
    c.d_model = 16;
    c.num_layers = 2;
    c.num_heads = 4;
    c.pert_heads = 4;
    c.seed = 17;
    return c;
}

/// The graph both twins regularise with: a ring and its chords.
GeneGraph ring(index_t n) {
    std::vector<Edge> e;
    for (index_t i = 0; i < n; ++i) e.push_back({i, (i + 1) % n}), e.push_back({i, (i * 7 + 3) % n});
    return GeneGraph(n, e, {.symmetrize = false, .self_loops = true});
}

template <class F, class D>
double float_vs_double(F& f, D& d) {
    f.add_graph(ring(40), {{1}, 2, 0.05});
    d.add_graph(ring(40), {{1}, 2, 0.05});
    const PerturbationBatch batch = PerturbationBatch::from_sets({{3, 9}, {}, {39, 39, 0}});
    const auto of = f.forward(batch);
    const auto od = d.forward(batch);
    double worst = std::abs(of.graph_loss - od.graph_loss) / od.graph_loss;
    if constexpr (requires { of.predictions; }) {
        for (std::size_t k = 0; k < of.predictions.size(); ++k)
            worst = std::max(worst, testing::relative_difference(of.predictions[k], od.predictions[k], 1e-2).max_error);
    } else {
        worst = std::max(worst, testing::relative_difference(of.prediction, od.prediction, 1e-2).max_error);
    }
    return std::max(worst, testing::relative_difference(of.H_genes, od.H_genes, 1e-2).max_error);
}

} // namespace

BOOST_AUTO_TEST_SUITE(cgt_instantiations)

BOOST_AUTO_TEST_CASE(each_float_model_agrees_with_its_double_twin) {
    CgtGi<float> gf(small());
    CgtGi<double> gd(small());
    CgtGiFitness<float> ff(small());
    CgtGiFitness<double> fd(small());
    CgtNonEquivariant<float> nf(small());
    CgtNonEquivariant<double> nd(small());
    const std::pair<const char*, double> results[] = {
        {"GI", float_vs_double(gf, gd)}, {"GI + Fitness", float_vs_double(ff, fd)}, {"non-equivariant", float_vs_double(nf, nd)}};
    for (const auto& [name, e] : results) {
        BOOST_TEST(e < 1e-4, name << ": float vs double " << e);
        BOOST_TEST_MESSAGE(name << ": float vs double, max relative difference of H_genes, predictions and graph loss " << e);
    }
}

BOOST_AUTO_TEST_SUITE_END()
