// The composed Cell Graph Transformer (models/cell_graph_transformer.hpp and the non-equivariant
// composition): parity with cgt_ref.py (tools/fixtures/make_cgt_model.py: N=300, d=32, L=3, H=4,
// nine graphs; eval forward and the gradient of every parameter, float64 and float32), the spec's
// parameter-count table, strict loading of a PyTorch state_dict, a bit-identical save/load round
// trip, gradient checks of a multi-readout and a propagation model, rows on demand at model level
// (the GI-only model never holds B×N×d values) and the training step.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>
#include <unistd.h>
#include "celltx/core/concepts.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/models/cgt_instantiations.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

using namespace celltx;
using celltx::testing::relative_difference;

namespace {

// ---------------------------------------------------------------------------------------------
// Compile-time composition checks.
using GiF = CgtGi<float>;
using ThreeReadouts = CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, FitnessReadout,
                                           ExpressionReadout, GeneSetReadout>;
using Propagated = CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, WithPropagation<>, GeneInteractionReadout>;
static_assert(GiF::rows_needed == RowNeedSet(RowNeed::perturbed), "a GI-only model computes the perturbed rows only");
static_assert(CgtGiFitness<float>::rows_needed.contains(RowNeed::all));
static_assert(Propagated::rows_needed.contains(RowNeed::all) && Propagated::has_propagation, "propagation needs every row");
static_assert(CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneSetReadout>::rows_needed ==
              RowNeedSet(RowNeed::gene_sets));
static_assert(PerturbationPolicy<WithPropagation<>> && PerturbationPolicy<WithPropagation<>, double>);
static_assert(!CgtComposition<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout,
                              GeneInteractionReadout>, "a readout listed twice");
static_assert(!CgtComposition<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform>, "no readout");
static_assert(!CgtComposition<float, cpu, PostNormEncoder, GeneEmbedding, CrossAttentionTransform, GeneInteractionReadout>,
              "policies in the wrong slots");
static_assert(!CgtComposition<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, NonEquivariantHead>,
              "the non-equivariant head is its own composition");
static_assert(NonEquivariantCgtComposition<double, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>);
static_assert(io::StateDictModule<GiF> && io::StateDictModule<CgtNonEquivariant<double>>);

const std::string fixture_dir = CELLTX_FIXTURE_DIR;
io::SafetensorsFile fixture(const std::string& name) { return io::SafetensorsFile(fixture_dir + "/cgt_model_" + name + ".safetensors"); }

// ---------------------------------------------------------------------------------------------
// The fixture's deterministic weights (mirrors make_cgt_model.py): a hash of (name, index).
std::uint64_t fnv1a64(std::string_view s) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
    return h;
}
std::uint64_t splitmix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/// u(name, i) in [-1, 1), a multiple of 2^-23 (exact in float).
double hash_uniform(std::uint64_t key, index_t i) {
    return static_cast<double>(splitmix64(key + static_cast<std::uint64_t>(i + 1) * 0x9E3779B97F4A7C15ull) >> 40) * 0x1p-23 - 1.0;
}
double hash_weight(std::string_view name, const Shape& s, double u) {
    if (name.find("gene_embedding") != std::string_view::npos || name.find("cls_token") != std::string_view::npos) return u;
    if (name.find("norm") != std::string_view::npos) return name.ends_with("weight") ? 1.0 + u / 4 : u / 4;
    if (name.ends_with("in_proj_weight")) return u / 4;
    if (s.rank() == 2) return std::ldexp(u, -(static_cast<int>(std::bit_width(static_cast<std::uint64_t>(s[1]))) - 1) / 2);
    return u / 8;
}
template <class T, class M>
void set_hash_weights(M& m) {
    m.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        const std::uint64_t key = fnv1a64(name);
        for (index_t i = 0; i < p.numel(); ++i) p.value[i] = static_cast<T>(hash_weight(name, p.shape(), hash_uniform(key, i)));
    });
}

// ---------------------------------------------------------------------------------------------
// The fixture's inputs.
struct Inputs {
    index_t N = 0, d = 0;
    int L = 0, H = 0, pert_heads = 0, graph_layer = 0;
    std::vector<std::vector<Edge>> graphs;
    std::vector<index_t> heads;
    std::vector<double> lambdas;
    PerturbationBatch batch;
    Tensor<double> y;
    double legacy_lambda = 0.0;
};

Inputs load_inputs() {
    const io::SafetensorsFile f = fixture("inputs");
    Inputs in;
    const auto& m = f.metadata();
    in.N = std::stoll(m.at("N")), in.d = std::stoll(m.at("d"));
    in.L = std::stoi(m.at("L")), in.H = std::stoi(m.at("H")), in.pert_heads = std::stoi(m.at("pert_heads"));
    in.graph_layer = std::stoi(m.at("graph_layer"));
    const auto edges = f.load_values<index_t>("graphs.edges"), offsets = f.load_values<index_t>("graphs.offsets");
    const std::size_t E = edges.size() / 2;
    for (std::size_t k = 0; k + 1 < offsets.size(); ++k) {
        std::vector<Edge> g;
        for (auto e = static_cast<std::size_t>(offsets[k]); e < static_cast<std::size_t>(offsets[k + 1]); ++e) g.push_back({edges[e], edges[E + e]});
        in.graphs.push_back(std::move(g));
    }
    in.heads = f.load_values<index_t>("graphs.head");
    in.lambdas = f.load_values<double>("graphs.lambda");
    in.batch.indices = f.load_values<index_t>("batch.indices");
    in.batch.offsets = f.load_values<index_t>("batch.offsets");
    in.y = f.load<double>("y");
    in.legacy_lambda = f.load_values<double>("legacy_lambda")[0];
    return in;
}

CgtConfig config_of(const Inputs& in, GiPooling pool = GiPooling::mean) {
    CgtConfig c;
    c.num_genes = in.N;
    c.d_model = in.d;
    c.num_layers = in.L;
    c.num_heads = in.H;
    c.pert_heads = in.pert_heads;
    c.gi_pooling = pool;
    c.seed = 11;
    return c;
}

template <class Model>
void add_graphs(Model& m, const Inputs& in) {
    for (std::size_t k = 0; k < in.graphs.size(); ++k)
        m.add_graph(GeneGraph(in.N, in.graphs[k]), {{in.graph_layer}, in.heads[k], in.lambdas[k]}, "g" + std::to_string(k));
}

GraphRegularizerOptions legacy_options(double lambda) {
    GraphRegularizerOptions o;
    o.normalization = GraphNormalization::legacy_global;
    o.graph_reg_lambda = lambda;
    return o;
}

double max_abs(const double* p, index_t n) {
    double m = 0.0;
    for (index_t i = 0; i < n; ++i) m = std::max(m, std::abs(p[i]));
    return m;
}

/// Relative difference of any-precision values against a double reference, floor = fraction × max|ref|.
template <class T>
testing::Difference diff(const T* got, const Tensor<double>& ref, double fraction) {
    return relative_difference(got, ref.data(), ref.numel(), std::max(fraction * max_abs(ref.data(), ref.numel()), 1e-300));
}

/// Compares every parameter gradient with the fixture's strided sample ("<prefix>grad.<name>") and
/// its two projections ("<prefix>gradproj.<name>"). Floors: fraction × the largest stored gradient
/// entry (projection): some exact gradients are 0, e.g. the key biases', and theirs are round-off.
template <class T, class M>
double check_gradients(M& model, const io::SafetensorsFile& f, const std::string& prefix, double fraction, double tol, bool samples = true) {
    double gscale = 0.0;
    for (const auto& name : f.names())
        if (name.starts_with(prefix + "grad.")) {
            const Tensor<double> g = f.load<double>(name);
            gscale = std::max(gscale, max_abs(g.data(), g.numel()));
        }
    double pscale = 0.0;
    for (const auto& name : f.names())
        if (name.starts_with(prefix + "gradproj.")) {
            const Tensor<double> g = f.load<double>(name);
            pscale = std::max(pscale, max_abs(g.data(), g.numel()));
        }
    double worst = 0.0;
    std::size_t seen = 0;
    model.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        ++seen;
        const index_t n = p.numel();
        if (samples) {
            const std::string key = prefix + "grad." + std::string(name);
            BOOST_REQUIRE_MESSAGE(f.contains(key), f.path() << " has no " << key << " (a parameter name differs from torchcell's)");
            const index_t stride = (n + 255) / 256;
            std::vector<double> got;
            for (index_t i = 0; i < n; i += stride) got.push_back(static_cast<double>(p.grad[i]));
            const Tensor<double> want = f.load<double>(key);
            BOOST_REQUIRE_EQUAL(static_cast<index_t>(got.size()), want.numel());
            const auto e = relative_difference(got.data(), want.data(), want.numel(), fraction * gscale);
            BOOST_TEST(e.max_error <= tol, key << ": " << e.str());
            worst = std::max(worst, e.max_error);
        }
        const std::string pkey = prefix + "gradproj." + std::string(name);
        BOOST_REQUIRE_MESSAGE(f.contains(pkey), f.path() << " has no " << pkey);
        const auto want = f.load_values<double>(pkey);
        for (int j = 0; j < 2; ++j) {
            const std::uint64_t key = fnv1a64(std::string(name) + "#proj" + std::to_string(j));
            double s = 0.0;
            for (index_t i = 0; i < n; ++i) s += static_cast<double>(p.grad[i]) * hash_uniform(key, i);
            const double w = want[static_cast<std::size_t>(j)];
            const double e = std::abs(s - w) / std::max({std::abs(s), std::abs(w), fraction * pscale, 1e-300});
            BOOST_TEST(e <= tol, pkey << "[" << j << "]: " << s << " vs " << w);
            worst = std::max(worst, e);
        }
    });
    std::size_t stored = 0;
    for (const auto& name : f.names()) stored += name.starts_with(prefix + "gradproj.");
    BOOST_TEST(seen == stored, "the model has " << seen << " parameters, the fixture " << stored);
    return worst;
}

/// Every parameter value of a model, by name (for bitwise comparisons).
template <class T, class M>
std::map<std::string, Tensor<T>> values_of(M& m) {
    std::map<std::string, Tensor<T>> out;
    m.visit_parameters([&](std::string_view n, Parameter<T>& p) { out.emplace(std::string(n), p.value); });
    return out;
}
template <class T, class M>
std::map<std::string, Tensor<T>> grads_of(M& m) {
    std::map<std::string, Tensor<T>> out;
    m.visit_parameters([&](std::string_view n, Parameter<T>& p) { out.emplace(std::string(n), p.grad); });
    return out;
}
template <class T>
bool bit_identical(const Tensor<T>& a, const Tensor<T>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

CgtConfig tiny_config(index_t N, index_t d, int L, int H, int pert_heads, double dropout = 0.1) {
    CgtConfig c;
    c.num_genes = N;
    c.d_model = d;
    c.num_layers = L;
    c.num_heads = H;
    c.pert_heads = pert_heads;
    c.dropout = dropout;
    return c;
}

std::vector<Edge> random_edges(index_t n, index_t count, std::uint64_t seed) {
    CounterRng rng(seed, 3);
    std::vector<Edge> e;
    for (index_t k = 0; k < count; ++k)
        e.push_back({static_cast<index_t>(rng.below(static_cast<std::uint64_t>(2 * k), static_cast<std::uint64_t>(n))),
                     static_cast<index_t>(rng.below(static_cast<std::uint64_t>(2 * k + 1), static_cast<std::uint64_t>(n)))});
    return e;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cgt_model)

BOOST_AUTO_TEST_CASE(names_seeded_init_and_configuration_checks) {
    CgtConfig cfg = tiny_config(20, 8, 2, 2, 2);
    cfg.seed = 5;
    CgtGi<float> m(cfg);
    std::vector<std::string> names;
    m.visit_parameters([&](std::string_view n, Parameter<float>&) { names.emplace_back(n); });
    std::vector<std::string> want{"gene_embedding.weight", "cls_token"};
    for (int l = 0; l < 2; ++l)
        for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj", "norm1", "norm2", "ffn.0", "ffn.3"})
            for (const char* w : {"weight", "bias"}) want.push_back("transformer_layers." + std::to_string(l) + "." + p + "." + w);
    for (const char* p : {"cross_attn.in_proj_weight", "cross_attn.in_proj_bias", "cross_attn.out_proj.weight", "cross_attn.out_proj.bias",
                          "ffn.0.weight", "ffn.0.bias", "ffn.3.weight", "ffn.3.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"})
        want.push_back(std::string("perturbation_transform.") + p);
    for (const char* p : {"mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias"}) want.push_back(std::string("perturbation_head.") + p);
    std::vector<std::string> sorted_names = names, sorted_want = want;
    std::sort(sorted_names.begin(), sorted_names.end());
    std::sort(sorted_want.begin(), sorted_want.end());
    BOOST_TEST(sorted_names == sorted_want, "the model's names are torchcell's state_dict keys");
    BOOST_TEST(names.front() == "gene_embedding.weight");
    BOOST_TEST(names.back() == "perturbation_head.mlp.3.bias");

    // Seeded: the same seed gives the same parameters, another seed others; the reference's distributions.
    CgtGi<float> same(cfg);
    cfg.seed = 6;
    CgtGi<float> other(cfg);
    const auto a = values_of<float>(m), b = values_of<float>(same), c = values_of<float>(other);
    for (const auto& [n, v] : a) {
        BOOST_TEST(bit_identical(v, b.at(n)), n);
        // LayerNorms start at (1, 0) and the Type I attention biases at 0; everything else is drawn.
        const bool constant = n.find("norm") != std::string::npos || n.starts_with("perturbation_transform.cross_attn.in_proj_bias") ||
                              n.starts_with("perturbation_transform.cross_attn.out_proj.bias");
        if (!constant) BOOST_TEST(!bit_identical(v, c.at(n)), n << " does not depend on the seed");
    }
    double s2 = 0.0;
    for (index_t i = 0; i < m.embedding.gene_embedding.numel(); ++i) s2 += std::pow(m.embedding.gene_embedding.value[i], 2.0);
    const double std_emb = std::sqrt(s2 / static_cast<double>(m.embedding.gene_embedding.numel()));
    BOOST_TEST(std::abs(std_emb - 0.02) < 0.004, "gene_embedding std " << std_emb << ", N(0, 0.02) expected");
    for (index_t i = 0; i < m.perturbation.in_proj_bias.numel(); ++i) BOOST_TEST(m.perturbation.in_proj_bias.value[i] == 0.0f);
    BOOST_TEST(m.encoder.layers[1].norm2.weight.value[3] == 1.0f);

    // Whether a model propagates is its type; how many layers, the config (read by WithPropagation
    // alone): a GI model ignores propagation_layers, a Propagated one with 0 layers is Type I only.
    CgtConfig with_layers = cfg;
    with_layers.propagation_layers = 1;
    BOOST_TEST(parameter_count<float>(*std::make_unique<CgtGi<float>>(with_layers)) == parameter_count<float>(m));
    BOOST_TEST(std::make_unique<Propagated>(cfg)->perturbation.propagation.num_layers() == 0);
    // Graphs outside the encoder.
    CgtGi<float> g(cfg);
    BOOST_CHECK_THROW(g.add_graph(GeneGraph(20, random_edges(20, 30, 1)), {{2}, 0, 1e-3}), ShapeError);  // layer 2 of a 2-layer encoder
    BOOST_CHECK_THROW(g.add_graph(GeneGraph(20, random_edges(20, 30, 1)), {{1}, 2, 1e-3}), ShapeError);  // head 2 of 2
    BOOST_TEST(g.graph_regularizer().num_graphs() == 0);
    // Added to the regulariser directly, the assignment is still checked at the forward.
    g.graph_regularizer().add_graph(GeneGraph(20, random_edges(20, 30, 1)), {{2}, 0, 1e-3});
    BOOST_CHECK_THROW(g.forward(PerturbationBatch::from_sets({{1, 2}})), ShapeError);
    BOOST_CHECK_THROW(m.forward(PerturbationBatch::from_sets({{1, 20}})), ShapeError);
    BOOST_CHECK_THROW(m.backward({Tensor<float>(Shape{1, 1}).cview()}), ShapeError);  // backward before forward
    BOOST_CHECK_THROW(m.set_gene_sets(GeneSetList::from_sets({{1}})), ShapeError);    // no gene-set readout
}

BOOST_AUTO_TEST_CASE(parameter_counts_match_the_spec_table) {
    CgtConfig cfg;  // N = 6607, d = 64, L = 6, H = 8, pert_heads = 8
    CgtGi<float> eq(cfg);
    CgtNonEquivariant<float> ne(cfg);
    std::map<std::string, index_t> parts;
    eq.visit_parameters([&](std::string_view n, Parameter<float>& p) { parts[std::string(n.substr(0, n.find('.')))] += p.numel(); });
    BOOST_TEST(parts["gene_embedding"] == 422848);
    BOOST_TEST(parts["cls_token"] == 64);
    BOOST_TEST(parts["transformer_layers"] == 299904);
    BOOST_TEST(parameter_count<float>(eq.encoder.layers[0]) == 49984);
    BOOST_TEST(parts["perturbation_transform"] == 49984);
    BOOST_TEST(parts["perturbation_head"] == 8321);
    BOOST_TEST(parameter_count<float>(ne.head) == 24961);
    BOOST_TEST(parameter_count<float>(eq) == 781121);
    BOOST_TEST(parameter_count<float>(ne) == 747777);
    // The best published runs: d = 180, L = 8, H = 9 (and 9 Type I heads).
    cfg.d_model = 180, cfg.num_layers = 8, cfg.num_heads = 9, cfg.pert_heads = 9;
    CgtGi<float> big(cfg);
    BOOST_TEST(parameter_count<float>(big) == 4774861);
}

BOOST_AUTO_TEST_CASE(parity_with_cgt_ref_gi_mean_float64_and_float32) {
    const Inputs in = load_inputs();
    const io::SafetensorsFile ref = fixture("gi"), enc = fixture("gi_encoder");
    auto run = [&](auto zero, double tol_y, double tol_g, double fy, double fg) {
        using T = decltype(zero);
        CgtGi<T> m(config_of(in));
        set_hash_weights<T>(m);
        add_graphs(m, in);
        const auto out = m.forward(in.batch, Context::eval());
        // Forward: prediction, h_CLS, H_genes, H_pert (the perturbed rows it computed), graph loss and per-graph KL.
        const auto e_pred = diff(out.predictions[0].data(), ref.load<double>("pred"), fy);
        const auto e_cls = diff(out.h_cls.data(), enc.load<double>("h_CLS"), fy);
        const auto e_genes = diff(out.H_genes.data(), enc.load<double>("H_genes"), fy);
        BOOST_TEST((out.H_pert.genes == ref.load_values<index_t>("H_pert.genes")));
        BOOST_TEST((out.H_pert.offsets == ref.load_values<index_t>("H_pert.offsets")));
        const auto e_pert = diff(out.H_pert.values.data(), ref.load<double>("H_pert.values"), fy);
        const double gl = ref.load_values<double>("graph_loss")[0];
        double e_graph = std::abs(out.graph_loss - gl) / gl;
        const auto kl = ref.load_values<double>("graph_value");
        for (index_t k = 0; k < m.graph_regularizer().num_graphs(); ++k)
            e_graph = std::max(e_graph, std::abs(m.graph_regularizer().graph_value(k, in.graph_layer) - kl[static_cast<std::size_t>(k)]) /
                                            kl[static_cast<std::size_t>(k)]);
        for (const auto* e : {&e_pred, &e_cls, &e_genes, &e_pert}) BOOST_TEST(e->max_error <= tol_y, e->str());
        BOOST_TEST(e_graph <= tol_y, "graph loss " << out.graph_loss << " vs " << gl);
        // Gradients of L = MSE(pred, y) + graph_loss through the model's own loss helper.
        loss::MultiTaskLoss<T> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
        const Tensor<T> y = in.y.template cast<T>();
        const CgtLossValues v = m.loss_backward(out, {CgtTarget<T>{y.cview()}}, mse);
        BOOST_TEST(v.graph == out.graph_loss);
        BOOST_TEST(std::abs(v.total - v.phenotype - v.graph) <= 1e-12 * v.total);
        const double e_grad = check_gradients<T>(m, ref, "", fg, tol_g);
        BOOST_TEST_MESSAGE(fmt::format("GI mean {}: pred {:.2e}, h_CLS {:.2e}, H_genes {:.2e}, H_pert {:.2e}, graph {:.2e}, gradients {:.2e}",
                                       sizeof(T) == 8 ? "float64" : "float32", e_pred.max_error, e_cls.max_error, e_genes.max_error,
                                       e_pert.max_error, e_graph, e_grad));
    };
    run(0.0, 1e-10, 1e-10, 1e-6, 1e-4);
    run(0.0f, 1e-4, 1e-3, 1e-2, 1e-2);
}

BOOST_AUTO_TEST_CASE(parity_sum_pooling_and_legacy_normalisation) {
    const Inputs in = load_inputs();
    const io::SafetensorsFile ref = fixture("gi_sum");
    loss::MultiTaskLoss<double> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
    {
        CgtGi<double> m(config_of(in, GiPooling::sum));
        set_hash_weights<double>(m);
        add_graphs(m, in);
        const auto out = m.forward(in.batch);
        const auto e = diff(out.predictions[0].data(), ref.load<double>("sum.pred"), 1e-6);
        BOOST_TEST(e.max_error <= 1e-10, e.str());
        m.loss_backward(out, {CgtTarget<double>{in.y.cview()}}, mse);
        const double eg = check_gradients<double>(m, ref, "sum.", 1e-4, 1e-10);
        BOOST_TEST_MESSAGE(fmt::format("GI sum float64: pred {:.2e}, gradients {:.2e}", e.max_error, eg));
    }
    {  // The older runs' N/(2K)·graph_reg_lambda factor, selected by name.
        CgtGi<double> m(config_of(in), legacy_options(in.legacy_lambda));
        set_hash_weights<double>(m);
        add_graphs(m, in);
        const auto out = m.forward(in.batch);
        const double want = ref.load_values<double>("legacy.graph_loss")[0];
        const double e = std::abs(out.graph_loss - want) / want;
        BOOST_TEST(e <= 1e-10, "legacy graph loss " << out.graph_loss << " vs " << want);
        m.loss_backward(out, {CgtTarget<double>{in.y.cview()}}, mse);
        const double eg = check_gradients<double>(m, ref, "legacy.", 1e-6, 1e-10, false);
        BOOST_TEST_MESSAGE(fmt::format("legacy normalisation float64: graph loss {:.2e}, gradient projections {:.2e}", e, eg));
        // ... and it is not the default: the density normalisation gives another value.
        CgtGi<double> d(config_of(in));
        set_hash_weights<double>(d);
        add_graphs(d, in);
        BOOST_TEST(std::abs(d.forward(in.batch).graph_loss - want) > 0.1 * want);
    }
}

BOOST_AUTO_TEST_CASE(all_rows_composition_gives_the_same_rows_prediction_and_gradients) {
    // GI + Fitness computes all B×N rows: its H_pert matches the reference at sampled genes, and its GI
    // prediction and (with the fitness output unused) every shared gradient equal the GI-only model's.
    const Inputs in = load_inputs();
    const io::SafetensorsFile ref = fixture("gi");
    CgtGiFitness<double> all(config_of(in));
    CgtGi<double> sparse(config_of(in));
    set_hash_weights<double>(all);
    set_hash_weights<double>(sparse);
    add_graphs(all, in);
    add_graphs(sparse, in);
    const auto oa = all.forward(in.batch);
    const auto os = sparse.forward(in.batch);
    BOOST_TEST(oa.H_pert.all_rows);
    BOOST_TEST(oa.H_pert.rows() == in.batch.batch_size() * in.N);
    BOOST_TEST(os.H_pert.rows() == static_cast<index_t>(ref.load_values<index_t>("H_pert.genes").size()));
    const Tensor<double> sampled = ref.load<double>("H_pert.sampled");  // [B, G, d]
    const auto genes = ref.load_values<index_t>("H_pert.sampled_genes");
    Tensor<double> got(sampled.shape());
    for (index_t b = 0; b < in.batch.batch_size(); ++b)
        for (std::size_t g = 0; g < genes.size(); ++g)
            std::copy_n(oa.H_pert.values.data() + oa.H_pert.row_of(b, genes[g]) * in.d, in.d,
                        got.data() + (b * static_cast<index_t>(genes.size()) + static_cast<index_t>(g)) * in.d);
    const auto e_rows = diff(got.data(), sampled, 1e-6);
    BOOST_TEST(e_rows.max_error <= 1e-10, e_rows.str());
    BOOST_TEST(relative_difference(oa.predictions[0], os.predictions[0], 1e-6).max_error <= 1e-12);
    BOOST_TEST((oa.predictions[1].shape() == Shape{in.batch.batch_size(), 1}));
    const Tensor<double> dy = testing::random_tensor(Shape{in.batch.batch_size(), 1}, 9);
    all.backward({dy.cview(), ConstView<double>{}});
    sparse.backward({dy.cview()});
    const auto ga = grads_of<double>(all), gs = grads_of<double>(sparse);
    double worst = 0.0;
    // Normwise per tensor, so that elementwise relative errors of a gradient that is zero up to rounding
    // measure nothing but summation order.
    std::string worst_name;
    double model_scale = 0.0;  // the largest gradient element of the model
    for (const auto& [n, g] : gs)
        for (index_t i = 0; i < g.numel(); ++i) model_scale = std::max(model_scale, std::abs(g[i]));
    for (const auto& [n, g] : gs) {
        // A key bias's gradient is zero up to rounding (softmax ignores a shift): judged against the model's scale.
        double scale = std::max(1e-8, 1e-6 * model_scale);
        for (index_t i = 0; i < g.numel(); ++i) scale = std::max(scale, std::abs(g[i]));
        const double e = relative_difference(ga.at(n), g, scale).max_error;
        if (e > worst) worst = e, worst_name = n;
    }
    BOOST_TEST(worst <= 1e-10, "all-rows vs GI-only gradients (summation order only): " << worst << " at " << worst_name);
    for (const auto& [n, g] : ga)
        if (n.starts_with("fitness_head."))
            for (index_t i = 0; i < g.numel(); ++i) BOOST_REQUIRE(g[i] == 0.0);  // unused readout: zero, assigned
}

BOOST_AUTO_TEST_CASE(inference_forward_keeps_nothing_and_predicts_the_same_bits) {
    // The GI-only model (perturbed rows), GI + fitness (all rows: the dense Type I block) and the
    // non-equivariant head: the eval forward's predictions bit for bit; nothing held once the
    // outputs are gone; no graph term (a training loss); backward refuses.
    const Inputs in = load_inputs();
    const auto names_inference = [](const Error& e) { return std::string(e.what()).find("Context::inference()") != std::string::npos; };
    auto check = [&](auto& m, auto predictions) {
        set_hash_weights<double>(m);
        add_graphs(m, in);
        const auto kept = m.forward(in.batch, Context::eval());
        BOOST_TEST(kept.graph_loss > 0.0);
        auto& stats = memory_stats<cpu>();
        m.forward(in.batch, Context::inference());  // frees what the eval forward saved
        const std::size_t before = stats.live.load();
        {
            const auto out = m.forward(in.batch, Context::inference());
            BOOST_TEST(out.graph_loss == 0.0);
            const auto got = predictions(out), want = predictions(kept);
            BOOST_TEST(got.size() == want.size());
            for (std::size_t k = 0; k < got.size(); ++k) BOOST_TEST(bit_identical(*got[k], *want[k]));
            BOOST_TEST(bit_identical(out.H_genes, kept.H_genes));
        }
        BOOST_TEST(stats.live.load() == before);
    };
    const Tensor<double> dy = testing::random_tensor(Shape{in.batch.batch_size(), 1}, 9);
    CgtGi<double> gi(config_of(in));
    check(gi, [](const auto& o) { return std::vector<const Tensor<double>*>{&o.predictions[0]}; });
    BOOST_CHECK_EXCEPTION(gi.backward({dy.cview()}), Error, names_inference);
    CgtGiFitness<double> all(config_of(in));
    check(all, [](const auto& o) { return std::vector<const Tensor<double>*>{&o.predictions[0], &o.predictions[1], &o.H_pert.values}; });
    BOOST_CHECK_EXCEPTION(all.backward({dy.cview(), ConstView<double>{}}), Error, names_inference);
    CgtNonEquivariant<double> ne(config_of(in));
    check(ne, [](const auto& o) { return std::vector<const Tensor<double>*>{&o.prediction}; });
    BOOST_CHECK_EXCEPTION(ne.backward(dy.cview()), Error, names_inference);
    // A keeping forward afterwards trains as before.
    gi.forward(in.batch, Context::eval());
    BOOST_CHECK_NO_THROW(gi.backward({dy.cview()}));
}

BOOST_AUTO_TEST_CASE(non_equivariant_composition_parity_float64_and_float32) {
    const Inputs in = load_inputs();
    const io::SafetensorsFile ref = fixture("noneq");
    auto run = [&](auto zero, double tol_y, double tol_g, double fy, double fg) {
        using T = decltype(zero);
        CgtNonEquivariant<T> m(config_of(in));
        set_hash_weights<T>(m);
        add_graphs(m, in);
        const auto out = m.forward(in.batch, Context::eval());
        const auto e = diff(out.prediction.data(), ref.load<double>("pred"), fy);
        BOOST_TEST(e.max_error <= tol_y, e.str());
        const double gl = ref.load_values<double>("graph_loss")[0];
        BOOST_TEST(std::abs(out.graph_loss - gl) / gl <= tol_y);
        loss::MultiTaskLoss<T> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
        const Tensor<T> y = in.y.template cast<T>();
        m.loss_backward(out, CgtTarget<T>{y.cview()}, mse);
        const double eg = check_gradients<T>(m, ref, "", fg, tol_g);
        BOOST_TEST_MESSAGE(fmt::format("non-equivariant {}: pred {:.2e}, gradients {:.2e}", sizeof(T) == 8 ? "float64" : "float32",
                                       e.max_error, eg));
    };
    run(0.0, 1e-10, 1e-10, 1e-6, 1e-4);
    run(0.0f, 1e-4, 1e-3, 1e-2, 1e-2);
}

BOOST_AUTO_TEST_CASE(strict_load_of_a_pytorch_state_dict) {
    // cgt_model_tiny_state.safetensors is exactly torch's state_dict() (float32) of a CGTRef.
    const std::string path = fixture_dir + "/cgt_model_tiny_state.safetensors";
    const io::SafetensorsFile outs = fixture("tiny_outputs");
    const auto& meta = outs.metadata();
    CgtConfig cfg = tiny_config(std::stoll(meta.at("N")), std::stoll(meta.at("d")), std::stoi(meta.at("L")), std::stoi(meta.at("H")),
                                std::stoi(meta.at("pert_heads")));
    cfg.gi_pooling = GiPooling::sum;
    const auto ei = outs.load_values<index_t>("edges");
    std::vector<Edge> edges;
    for (std::size_t e = 0; e < ei.size() / 2; ++e) edges.push_back({ei[e], ei[ei.size() / 2 + e]});
    PerturbationBatch batch;
    batch.indices = outs.load_values<index_t>("batch.indices");
    batch.offsets = outs.load_values<index_t>("batch.offsets");
    auto run = [&](auto zero, double tol, double floor) {
        using T = decltype(zero);
        CgtGi<T> m(cfg);
        const io::LoadReport r = io::load_state_dict(m, path);  // strict by default
        BOOST_TEST(r.loaded.size() == io::SafetensorsFile(path).tensors().size());
        BOOST_TEST(r.missing.empty());
        BOOST_TEST(r.unexpected.empty());
        m.add_graph(GeneGraph(cfg.num_genes, edges), {{0, 1}, 1, 0.1}, "physical");
        const auto out = m.forward(batch);
        const auto e = diff(out.predictions[0].data(), outs.load<double>("pred"), floor);
        const auto ec = diff(out.h_cls.data(), outs.load<double>("h_CLS"), floor);
        const double gl = outs.load_values<double>("graph_loss")[0];
        BOOST_TEST(e.max_error <= tol, e.str());
        BOOST_TEST(ec.max_error <= tol, ec.str());
        BOOST_TEST(std::abs(out.graph_loss - gl) / gl <= tol);
    };
    run(0.0, 1e-10, 1e-6);
    run(0.0f, 1e-4, 1e-2);
    // A state_dict that lacks the fitness head, or holds the equivariant head for a non-equivariant model: strict loads refuse.
    CgtGiFitness<double> more(cfg);
    BOOST_CHECK_EXCEPTION(io::load_state_dict(more, path), IoError,
                          [](const IoError& e) { return std::string(e.what()).find("fitness_head.mlp.0.weight") != std::string::npos; });
    io::LoadOptions lenient;
    lenient.strict = false;
    BOOST_TEST(io::load_state_dict(more, path, lenient).missing.size() == 4u);
    CgtNonEquivariant<double> ne(cfg);
    BOOST_CHECK_EXCEPTION(io::load_state_dict(ne, path), IoError, [](const IoError& e) {
        const std::string w = e.what();
        return w.find("Unexpected") != std::string::npos && w.find("perturbation_transform.cross_attn.in_proj_weight") != std::string::npos &&
               w.find("perturbation_head.cross_attn.in_proj_weight") != std::string::npos;
    });
}

BOOST_AUTO_TEST_CASE(save_load_round_trip_is_bit_identical) {
    CgtConfig cfg = tiny_config(30, 16, 2, 4, 4);
    cfg.seed = 3;
    CgtGiFitness<float> a(cfg);
    a.add_graph(GeneGraph(30, random_edges(30, 60, 2)), {{1}, 0, 1e-2});
    cfg.seed = 4;
    CgtGiFitness<float> b(cfg);
    b.add_graph(GeneGraph(30, random_edges(30, 60, 2)), {{1}, 0, 1e-2});
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("celltx_cgt_roundtrip_" + std::to_string(::getpid()) + ".safetensors");
    io::save_state_dict(a, path, {{"model", "CellGraphTransformer"}});
    const io::LoadReport r = io::load_state_dict(b, path);
    std::filesystem::remove(path);
    const auto va = values_of<float>(a), vb = values_of<float>(b);
    BOOST_TEST(r.loaded.size() == va.size());
    for (const auto& [n, v] : va) BOOST_TEST(bit_identical(v, vb.at(n)), n);
    const PerturbationBatch batch = PerturbationBatch::from_sets({{1, 2}, {}, {29, 29}});
    const auto oa = a.forward(batch, Context::train(7, 2)), ob = b.forward(batch, Context::train(7, 2));
    for (std::size_t k = 0; k < 2; ++k) BOOST_TEST(bit_identical(oa.predictions[k], ob.predictions[k]));
    BOOST_TEST(oa.graph_loss == ob.graph_loss);
}

BOOST_AUTO_TEST_CASE(fitness_expression_gene_set_and_propagation_models_pass_gradcheck) {
    // Every prediction and the graph term in one output vector: L = Σ R∘[ŷ_1, ŷ_2, ŷ_3, graph_loss].
    auto check = [](auto& model, const PerturbationBatch& batch, const Context& ctx, const char* what) {
        std::vector<Shape> shapes;
        auto forward = [&] {
            const auto out = model.forward(batch, ctx);
            index_t n = 1;
            for (const auto& p : out.predictions) n += p.numel();
            Tensor<double> y(Shape{n});
            index_t o = 0;
            shapes.clear();
            for (const auto& p : out.predictions) {
                std::copy_n(p.data(), p.numel(), y.data() + o);
                o += p.numel();
                shapes.push_back(p.shape());
            }
            y[o] = out.graph_loss;
            return y;
        };
        auto backward = [&](ConstView<double> dy, std::vector<TensorView<double>>&) {
            std::vector<ConstView<double>> d;
            index_t o = 0;
            for (const Shape& s : shapes) {
                d.emplace_back(dy.data() + o, s);
                o += s.numel();
            }
            model.backward(std::span<const ConstView<double>>(d), dy[o]);
        };
        const auto r = testing::gradcheck(forward, backward, {}, testing::parameters_of(model));
        BOOST_TEST(r.ok, what << ": " << r.summary());
        BOOST_TEST_MESSAGE(what << ": " << r.summary());
    };
    const index_t N = 12;
    const PerturbationBatch batch = PerturbationBatch::from_sets({{1, 4}, {}, {7, 7, 11}, {0}});
    CgtConfig cfg = tiny_config(N, 8, 2, 2, 2);
    cfg.fitness_outputs = 2;
    GraphRegularizerOptions opt;
    opt.row_rate = 0.5;  // rows drawn per step: fixed within one context, so finite differences see the same rows
    ThreeReadouts three(cfg, opt);
    set_hash_weights<double>(three);
    three.add_graph(GeneGraph(N, random_edges(N, 30, 4)), {{0}, 0, 0.3});
    three.add_graph(GeneGraph(N, random_edges(N, 20, 5), {.symmetrize = false, .self_loops = true}), {{0, 1}, 1, 0.2});
    three.set_gene_sets(GeneSetList::from_sets({{1, 4, 9}, {}, {7, 7, 2}}));
    const auto out = three.forward(batch);
    BOOST_TEST((out.predictions[0].shape() == Shape{4, 2}));
    BOOST_TEST((out.predictions[1].shape() == Shape{4, N}));
    BOOST_TEST((out.predictions[2].shape() == Shape{4, 3}));
    BOOST_TEST(out.H_pert.all_rows);
    BOOST_TEST(out.graph_loss > 0.0);
    check(three, batch, Context::eval(), "Fitness + Expression + GeneSet, eval");
    check(three, batch, Context::train(5, 3), "Fitness + Expression + GeneSet, training (dropout, sampled rows)");

    cfg.propagation_layers = 1;
    Propagated prop(cfg);
    set_hash_weights<double>(prop);
    prop.add_graph(GeneGraph(N, random_edges(N, 30, 6)), {{1}, 1, 0.3});
    std::set<std::string> names;
    prop.visit_parameters([&](std::string_view n, Parameter<double>&) { names.emplace(n); });
    BOOST_TEST(names.count("propagation_layers.0.q_proj.weight") == 1u);
    check(prop, batch, Context::eval(), "WithPropagation + GI, eval");
    check(prop, batch, Context::train(8, 1), "WithPropagation + GI, training");
}

BOOST_AUTO_TEST_CASE(gi_only_model_never_allocates_b_n_d) {
    const index_t N = 1000, d = 16, Bn = 256;
    CgtConfig cfg = tiny_config(N, d, 1, 2, 2);
    std::vector<std::vector<index_t>> sets;
    CounterRng rng(21);
    for (index_t b = 0; b < Bn; ++b) {
        std::vector<index_t> s;
        for (index_t k = 0; k <= b % 3; ++k) s.push_back(static_cast<index_t>(rng.below(static_cast<std::uint64_t>(3 * b + k), N)));
        sets.push_back(s);
    }
    const PerturbationBatch batch = PerturbationBatch::from_sets(sets);
    const double bnd = static_cast<double>(Bn * N * d) * sizeof(float);
    const Tensor<float> dy = testing::random_tensor<float>(Shape{Bn, 1}, 22);
    auto peak = [&](auto& model, auto& dpreds) {
        model.add_graph(GeneGraph(N, random_edges(N, 3000, 23)), {{0}, 0, 1e-3});
        auto& stats = memory_stats<cpu>();
        stats.reset_peak();
        const std::size_t before = stats.live.load();
        {
            const auto out = model.forward(batch, Context::train(1, 1));
            model.backward(dpreds);
        }
        return static_cast<double>(stats.peak.load() - before);
    };
    CgtGi<float> gi(cfg);
    CgtGiFitness<float> all(cfg);
    std::vector<ConstView<float>> d1{dy.cview()}, d2{dy.cview(), ConstView<float>{}};
    const double p_gi = peak(gi, d1);
    const double p_all = peak(all, d2);
    BOOST_TEST_MESSAGE(fmt::format("N={} d={} B={}: B·N·d = {:.1f} MB; tensor peak of forward+backward: GI-only {:.2f} MB, GI+Fitness {:.1f} MB",
                                   N, d, Bn, bnd / 1e6, p_gi / 1e6, p_all / 1e6));
    BOOST_TEST(p_gi < 0.25 * bnd, "the GI-only model's peak " << p_gi << " B reaches the order of B·N·d = " << bnd << " B");
    BOOST_TEST(p_all > bnd);  // the measurement sees B×N×d buffers when a readout needs them
}

BOOST_AUTO_TEST_CASE(train_step_equals_the_manual_step_and_masks_missing_labels) {
    CgtConfig cfg = tiny_config(24, 8, 2, 2, 2);
    cfg.seed = 9;
    const PerturbationBatch batch = PerturbationBatch::from_sets({{1, 4}, {3}, {}, {7, 7, 20}, {23, 0}});
    Tensor<double> y = Tensor<double>::from(Shape{5, 1}, {0.5, -1.0, 0.25, 1.5, -0.5});
    loss::MultiTaskLoss<double> mse({{"gi", 1.0, loss::PhenotypeLoss::log_cosh}});
    auto make = [&] {
        auto m = std::make_unique<CgtGi<double>>(cfg);
        m->add_graph(GeneGraph(24, random_edges(24, 50, 31), {.symmetrize = true, .self_loops = true}), {{1}, 1, 1e-2});
        return m;
    };
    auto a = make(), b = make();
    train::AdamW<double> opt_a(train::collect_parameters<double>(*a), {.lr = 1e-2, .weight_decay = 1e-8});
    train::AdamW<double> opt_b(train::collect_parameters<double>(*b), {.lr = 1e-2, .weight_decay = 1e-8});
    std::vector<double> losses;
    for (std::uint64_t step = 0; step < 25; ++step) {
        const Context ctx = Context::train(13, step);
        const auto s = a->train_step(batch, {CgtTarget<double>{y.cview()}}, mse, ctx, [&] {
            train::clip_grad_norm<double>(*a, 10.0);
            opt_a.step();
        });
        losses.push_back(s.loss.total);
        // The same step written out: forward -> loss -> backward -> clip -> AdamW.
        const auto out = b->forward(batch, ctx);
        const CgtLossValues v = b->loss_backward(out, {CgtTarget<double>{y.cview()}}, mse);
        train::clip_grad_norm<double>(*b, 10.0);
        opt_b.step();
        BOOST_REQUIRE(v.total == s.loss.total);
    }
    const auto va = values_of<double>(*a), vb = values_of<double>(*b);
    for (const auto& [n, v] : va) BOOST_TEST(bit_identical(v, vb.at(n)), n);
    BOOST_TEST(losses.back() < 0.5 * losses.front(), "training loss " << losses.front() << " -> " << losses.back());

    // A missing label (NaN) adds neither value nor gradient: equal to the batch without that sample
    // (in eval mode: dropout masks are addressed by the sample's position).
    auto c = make(), e = make();
    Tensor<double> y_nan = y;
    y_nan[1] = std::numeric_limits<double>::quiet_NaN();
    const auto oc = c->forward(batch, Context::eval());
    const CgtLossValues vc = c->loss_backward(oc, {CgtTarget<double>{y_nan.cview()}}, mse);
    const PerturbationBatch without = PerturbationBatch::from_sets({{1, 4}, {}, {7, 7, 20}, {23, 0}});
    const Tensor<double> y_without = Tensor<double>::from(Shape{4, 1}, {0.5, 0.25, 1.5, -0.5});
    const auto oe = e->forward(without, Context::eval());
    const CgtLossValues ve = e->loss_backward(oe, {CgtTarget<double>{y_without.cview()}}, mse);
    BOOST_TEST(std::abs(vc.phenotype - ve.phenotype) <= 1e-12 * std::abs(ve.phenotype));
    const auto gc = grads_of<double>(*c), ge = grads_of<double>(*e);
    double worst = 0.0;
    for (const auto& [n, g] : gc) worst = std::max(worst, relative_difference(g, ge.at(n), 1e-8).max_error);
    BOOST_TEST(worst <= 1e-10, "masked label vs dropped sample: gradients differ by " << worst);
}

BOOST_AUTO_TEST_SUITE_END()
