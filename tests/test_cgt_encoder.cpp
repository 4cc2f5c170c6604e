// CGT encoder side: the post-LN encoder layer, the graph-regularised attention (value and fused
// gradient against a dense double computation and finite differences), row sampling, the legacy
// normalisation, the encoder and embedding policies against cgt_ref.py fixtures (float64 and
// float32), the gene-feature projection, and the propagation layers (gradients, per-sample
// independence, memory linear in N).
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>
#include "celltx/core/concepts.hpp"
#include "celltx/core/gene_graph.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/nn/post_norm_encoder_layer.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/embedding/concept.hpp"
#include "celltx/policies/embedding/gene_embedding.hpp"
#include "celltx/policies/encoder/concept.hpp"
#include "celltx/policies/encoder/graph_regularizer.hpp"
#include "celltx/policies/encoder/post_norm_encoder.hpp"
#include "celltx/policies/encoder/propagation.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"

using namespace celltx;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;

// The policies satisfy their concepts; a policy of the wrong family does not.
static_assert(EncoderPolicy<PostNormEncoder>);
static_assert(EncoderPolicy<PostNormEncoder, double>);
static_assert(EmbeddingPolicy<GeneEmbedding>);
static_assert(EmbeddingPolicy<GeneEmbedding, double>);
static_assert(PropagationPolicy<Propagation>);
static_assert(!EncoderPolicy<GeneEmbedding>);
static_assert(!EncoderPolicy<Propagation>);
static_assert(!EmbeddingPolicy<PostNormEncoder>);
static_assert(Layer<nn::PostNormEncoderLayer<double>, double>);

namespace {

const std::string fixture_dir = CELLTX_FIXTURE_DIR;

CgtConfig small_config(index_t n, index_t d, int layers, int heads, double p = 0.1) {
    CgtConfig c;
    c.num_genes = n;
    c.d_model = d;
    c.num_layers = layers;
    c.num_heads = heads;
    c.dropout = p;
    return c;
}

/// Random LayerNorm affine parameters, so that the tests see non-trivial norms.
template <class M>
void randomize(M& m, std::uint64_t seed) {
    Generator g(seed);
    m.reset_parameters(g);
    CounterRng rng(seed, 99);
    std::uint64_t c = 0;
    m.visit_parameters([&](std::string_view name, Parameter<double>& p) {
        if (name.find("norm") == std::string_view::npos) return;
        const bool w = name.ends_with("weight");
        for (index_t i = 0; i < p.numel(); ++i) p.value[i] = (w ? 1.0 : 0.0) + 0.3 * (2 * rng.uniform(c++) - 1);
    });
}

/// A graph over n nodes with `edges` random edges from rows that are not multiples of `skip`
/// (those rows have degree 0), plus a few repeated edges.
std::vector<Edge> random_edges(index_t n, index_t edges, index_t skip, std::uint64_t seed) {
    CounterRng rng(seed, 5);
    std::vector<Edge> out;
    std::uint64_t c = 0;
    while (static_cast<index_t>(out.size()) < edges) {
        const auto s = static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(n)));
        const auto t = static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(n)));
        if (skip > 0 && s % skip == 0) continue;
        out.push_back({s, t});
    }
    for (index_t e = 0; e < std::min<index_t>(edges, 4); ++e) out.push_back(out[static_cast<std::size_t>(e)]);
    return out;
}

// ---- dense double reference of the graph term, straight from the definitions ----

struct DenseAttention {
    index_t T = 0, H = 0, dh = 0, d = 0;
    std::vector<double> q, k;  // [T, d] projections
    std::vector<double> P;     // [H, T, T] softmax (pre-dropout)
    double p(index_t h, index_t i, index_t j) const { return P[static_cast<std::size_t>((h * T + i) * T + j)]; }
};

DenseAttention dense_attention(nn::MultiHeadAttention<double>& a, const Tensor<double>& x) {
    DenseAttention r;
    r.T = x.size(-2), r.d = x.shape().last(), r.H = a.num_heads(), r.dh = a.head_dim();
    auto proj = [&](const nn::Linear<double>& l) {
        std::vector<double> y(static_cast<std::size_t>(r.T * r.d));
        for (index_t t = 0; t < r.T; ++t)
            for (index_t o = 0; o < r.d; ++o) {
                double s = l.bias.value[o];
                for (index_t c = 0; c < r.d; ++c) s += l.weight.value(o, c) * x[t * r.d + c];
                y[static_cast<std::size_t>(t * r.d + o)] = s;
            }
        return y;
    };
    r.q = proj(a.q_proj), r.k = proj(a.k_proj);
    r.P.assign(static_cast<std::size_t>(r.H * r.T * r.T), 0.0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(r.dh));
    for (index_t h = 0; h < r.H; ++h)
        for (index_t i = 0; i < r.T; ++i) {
            std::vector<double> s(static_cast<std::size_t>(r.T));
            double mx = -std::numeric_limits<double>::infinity();
            for (index_t j = 0; j < r.T; ++j) {
                double acc = 0;
                for (index_t e = 0; e < r.dh; ++e) acc += r.q[i * r.d + h * r.dh + e] * r.k[j * r.d + h * r.dh + e];
                s[j] = scale * acc;
                mx = std::max(mx, s[j]);
            }
            double sum = 0;
            for (index_t j = 0; j < r.T; ++j) sum += std::exp(s[j] - mx);
            for (index_t j = 0; j < r.T; ++j) r.P[static_cast<std::size_t>((h * r.T + i) * r.T + j)] = std::exp(s[j] - mx) / sum;
        }
    return r;
}

/// Dense Ã [N, N] of a graph (row-normalised with eps 1e-10; duplicates collapse).
std::vector<double> dense_target(const std::vector<Edge>& edges, index_t n) {
    std::vector<double> A(static_cast<std::size_t>(n * n), 0.0);
    for (const Edge& e : edges) A[static_cast<std::size_t>(e.src * n + e.dst)] = 1.0;
    for (index_t i = 0; i < n; ++i) {
        double s = 0;
        for (index_t j = 0; j < n; ++j) s += A[i * n + j];
        for (index_t j = 0; j < n; ++j) A[i * n + j] /= s + 1e-10;
    }
    return A;
}

struct DenseGraph {
    std::vector<double> target;  // Ã [N, N]
    std::vector<index_t> rows;   // regularised rows
    index_t head = 0;
    double weight = 1.0;
};

/// Σ_k w_k Σ_{i∈rows} Σ_j xlogy(Ã, Ã) − Ã log(α + 1e-8), and its gradient dS [H, T, T] w.r.t. the
/// scaled scores through the full softmax (every column, CLS included).
double dense_graph_term(const DenseAttention& a, const std::vector<DenseGraph>& graphs, std::vector<double>* dS) {
    const index_t T = a.T, N = T - 1;
    if (dS) dS->assign(static_cast<std::size_t>(a.H * T * T), 0.0);
    double total = 0;
    for (const auto& g : graphs) {
        double L = 0;
        for (index_t i : g.rows)
            for (index_t j = 0; j < N; ++j) {
                const double t = g.target[i * N + j];
                if (t == 0) continue;
                const double alpha = a.p(g.head, i + 1, j + 1);
                L += t * std::log(t) - t * std::log(alpha + 1e-8);
                if (!dS) continue;
                // d/dS_{i+1,m} of −t·log(α + ε) = −t/(α+ε) · α (δ_{j+1,m} − P_{i+1,m})
                for (index_t m = 0; m < T; ++m) {
                    const double dalpha = alpha * ((m == j + 1 ? 1.0 : 0.0) - a.p(g.head, i + 1, m));
                    (*dS)[static_cast<std::size_t>((g.head * T + i + 1) * T + m)] += g.weight * (-t / (alpha + 1e-8)) * dalpha;
                }
            }
        total += g.weight * L;
    }
    return total;
}

/// Gradients of the q/k projections and of x from dS (dense chain rule).
struct DenseGrads {
    std::vector<double> dWq, dbq, dWk, dbk, dx;
};
DenseGrads dense_backward(const DenseAttention& a, nn::MultiHeadAttention<double>& m, const Tensor<double>& x,
                          const std::vector<double>& dS) {
    const index_t T = a.T, d = a.d, dh = a.dh;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
    std::vector<double> dq(static_cast<std::size_t>(T * d), 0.0), dk(static_cast<std::size_t>(T * d), 0.0);
    for (index_t h = 0; h < a.H; ++h)
        for (index_t i = 0; i < T; ++i)
            for (index_t j = 0; j < T; ++j) {
                const double g = scale * dS[static_cast<std::size_t>((h * T + i) * T + j)];
                for (index_t e = 0; e < dh; ++e) {
                    dq[i * d + h * dh + e] += g * a.k[j * d + h * dh + e];
                    dk[j * d + h * dh + e] += g * a.q[i * d + h * dh + e];
                }
            }
    DenseGrads r{std::vector<double>(static_cast<std::size_t>(d * d), 0.0), std::vector<double>(static_cast<std::size_t>(d), 0.0),
                 std::vector<double>(static_cast<std::size_t>(d * d), 0.0), std::vector<double>(static_cast<std::size_t>(d), 0.0),
                 std::vector<double>(static_cast<std::size_t>(T * d), 0.0)};
    for (index_t t = 0; t < T; ++t)
        for (index_t o = 0; o < d; ++o) {
            r.dbq[o] += dq[t * d + o];
            r.dbk[o] += dk[t * d + o];
            for (index_t c = 0; c < d; ++c) {
                r.dWq[o * d + c] += dq[t * d + o] * x[t * d + c];
                r.dWk[o * d + c] += dk[t * d + o] * x[t * d + c];
                r.dx[t * d + c] += dq[t * d + o] * m.q_proj.weight.value(o, c) + dk[t * d + o] * m.k_proj.weight.value(o, c);
            }
        }
    return r;
}

/// Relative difference with a floor: entries that cancel to ~0 (the key-bias gradient is exactly
/// zero: softmax ignores a shift shared by all keys) are judged on the given scale.
double max_rel(const std::vector<double>& a, const double* b, double floor) {
    return relative_difference(a.data(), b, static_cast<index_t>(a.size()), floor).max_error;
}

double max_abs(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s = std::max(s, std::abs(x));
    return s;
}

/// Loads every parameter of `m` (names under prefix) from a fixture, converting to T.
template <class T, class M>
void load_parameters(M& m, const io::SafetensorsFile& f) {
    m.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        BOOST_REQUIRE_MESSAGE(f.contains(name), "fixture lacks " << name);
        f.load_into<T>(name, p.value.view());
    });
}

double max_abs(const Tensor<double>& t) {
    double s = 0;
    for (index_t i = 0; i < t.numel(); ++i) s = std::max(s, std::abs(t[i]));
    return s;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cgt_encoder)

BOOST_AUTO_TEST_CASE(parameter_names_counts_and_initialisation) {
    // Spec table: 49,984 per encoder layer at d=64 (4×4,160 + 2×128 + 33,088).
    nn::PostNormEncoderLayer<float> layer(64, 8, 0.1);
    BOOST_TEST(parameter_count<float>(layer) == 49984);
    std::vector<std::string> names;
    layer.visit_parameters([&](std::string_view n, Parameter<float>&) { names.emplace_back(n); }, "x.");
    const std::vector<std::string> want{"x.q_proj.weight", "x.q_proj.bias", "x.k_proj.weight", "x.k_proj.bias",
                                        "x.v_proj.weight", "x.v_proj.bias", "x.out_proj.weight", "x.out_proj.bias",
                                        "x.norm1.weight", "x.norm1.bias", "x.norm2.weight", "x.norm2.bias",
                                        "x.ffn.0.weight", "x.ffn.0.bias", "x.ffn.3.weight", "x.ffn.3.bias"};
    BOOST_TEST(names == want, boost::test_tools::per_element());

    CgtConfig cfg;  // N=6607, d=64, L=6, H=8
    PostNormEncoder::module<float> enc(cfg);
    BOOST_TEST(parameter_count<float>(enc) == 299904);
    std::set<std::string> enc_names;
    enc.visit_parameters([&](std::string_view n, Parameter<float>&) { enc_names.emplace(n); });
    BOOST_TEST(enc_names.count("transformer_layers.0.q_proj.weight") == 1u);
    BOOST_TEST(enc_names.count("transformer_layers.5.ffn.3.bias") == 1u);
    BOOST_TEST(enc_names.size() == 6u * 16u);

    GeneEmbedding::module<float> emb(cfg);
    BOOST_TEST(parameter_count<float>(emb) == 422848 + 64);
    Generator g(11);
    emb.reset_parameters(g);
    double s2 = 0;
    for (index_t i = 0; i < emb.gene_embedding.numel(); ++i) s2 += double(emb.gene_embedding.value[i]) * emb.gene_embedding.value[i];
    BOOST_TEST(std::sqrt(s2 / double(emb.gene_embedding.numel())) == 0.02, boost::test_tools::tolerance(0.02));

    CgtConfig pc = cfg;
    pc.propagation_layers = 2;
    Propagation::module<float> prop(pc);
    BOOST_TEST(parameter_count<float>(prop) == 2 * 49984);
    std::set<std::string> prop_names;
    prop.visit_parameters([&](std::string_view n, Parameter<float>&) { prop_names.emplace(n); });
    BOOST_TEST(prop_names.count("propagation_layers.1.norm2.weight") == 1u);
}

BOOST_AUTO_TEST_CASE(fused_graph_value_and_gradient_match_a_dense_double_computation) {
    // One attention over T = N+1 tokens; four graphs, three of them on head 1, with degree-0 rows,
    // repeated input edges (one graph given as an unsorted CSR with repeats), row sampling on.
    const index_t N = 12, T = N + 1, d = 8, H = 2;
    nn::AttentionConfig ac;
    ac.d_model = d, ac.num_heads = H;
    nn::MultiHeadAttention<double> attn(ac);
    Generator g(3);
    attn.reset_parameters(g);
    const Tensor<double> x = random_tensor(Shape{T, d}, 17, 1.5);

    for (const double rate : {1.0, 0.5}) {
        GraphRegularizerOptions opt;
        opt.row_rate = rate;
        opt.seed = 5;
        GraphRegularizer<double> reg(N, opt);
        const std::vector<std::vector<Edge>> edges{random_edges(N, 30, 4, 1), random_edges(N, 20, 3, 2), random_edges(N, 40, 0, 3),
                                                   random_edges(N, 10, 2, 4)};
        reg.add_graph(GeneGraph(N, edges[0]), {{0}, 1, 0.7});
        reg.add_graph(GeneGraph(N, edges[1]), {{0}, 0, 0.3});
        {  // graph 2 as a raw CSR: rows in order, columns unsorted, repeats kept
            std::vector<index_t> row_ptr(static_cast<std::size_t>(N) + 1, 0), col;
            for (index_t i = 0; i < N; ++i) {
                for (auto it = edges[2].rbegin(); it != edges[2].rend(); ++it)
                    if (it->src == i) col.push_back(it->dst);
                row_ptr[static_cast<std::size_t>(i) + 1] = static_cast<index_t>(col.size());
            }
            reg.add_graph(row_ptr, col, {{0, 3}, 1, 0.2});
            BOOST_TEST(reg.graph(2).nnz() < static_cast<index_t>(col.size()));  // the repeats collapsed
        }
        reg.add_graph(GeneGraph(N, edges[3]), {{0}, 1, 1.1});

        attn.forward(x.cview(), Context::eval());
        const Context ctx{false, 0, 7};
        const double fused = reg.evaluate(0, attn, ctx);

        std::vector<DenseGraph> dense;
        for (index_t k = 0; k < 4; ++k) {
            const auto rows = reg.last_rows(k, 0);
            BOOST_TEST(rows == reg.sample_rows(k, 0, 7));
            if (rate < 1) BOOST_TEST(static_cast<index_t>(rows.size()) == index_t(rate * N));
            for (index_t i : rows) BOOST_TEST(reg.graph(k).degree(i) > 0);
            dense.push_back({dense_target(edges[static_cast<std::size_t>(k)], N), rows, reg.assignment(k).head, reg.weight(k)});
            BOOST_TEST(reg.weight(k) == reg.assignment(k).lambda * double(N) / double(reg.graph(k).nnz()));
        }
        const DenseAttention da = dense_attention(attn, x);
        std::vector<double> dS;
        const double ref = dense_graph_term(da, dense, &dS);
        BOOST_TEST(std::abs(fused - ref) / std::abs(ref) < 1e-12, "value " << fused << " vs dense " << ref);
        BOOST_TEST(std::abs(reg.layer_value(0) - fused) == 0.0);

        // Gradient: only the graph term (dy = 0), fused into the attention backward.
        const double scale = 0.75;
        for (double& v : dS) v *= scale;
        const DenseGrads want = dense_backward(da, attn, x, dS);
        Tensor<double> dy(Shape{T, d}), dx(Shape{T, d});
        attn.set_graph_hook(reg.hook(0, scale));
        attn.backward(dy.cview(), dx.view());
        const double fl = 1e-4 * std::max({max_abs(want.dWq), max_abs(want.dWk), max_abs(want.dx)});
        const double e = std::max({max_rel(want.dWq, attn.q_proj.weight.grad.data(), fl), max_rel(want.dbq, attn.q_proj.bias.grad.data(), fl),
                                   max_rel(want.dWk, attn.k_proj.weight.grad.data(), fl), max_rel(want.dbk, attn.k_proj.bias.grad.data(), fl),
                                   max_rel(want.dx, dx.data(), fl)});
        BOOST_TEST_MESSAGE("row_rate " << rate << ": value rel. error " << std::abs(fused - ref) / std::abs(ref)
                                       << ", gradient max rel. error " << e);
        BOOST_TEST(e < 1e-10);
        BOOST_TEST(max_abs(attn.v_proj.weight.grad) == 0.0);  // the term does not depend on V
    }
}

BOOST_AUTO_TEST_CASE(row_sampling_is_seeded_fresh_per_call_and_without_repeats) {
    const index_t N = 60;
    GraphRegularizerOptions opt;
    opt.row_rate = 0.25;
    opt.seed = 42;
    GraphRegularizer<float> reg(N, opt), same(N, opt);
    opt.seed = 43;
    GraphRegularizer<float> other_seed(N, opt);
    const GeneGraph gr(N, random_edges(N, 150, 3, 9));  // rows 0, 3, 6, ... have degree 0
    for (auto* r : {&reg, &same, &other_seed}) {
        r->add_graph(gr, {{0, 1}, 0, 1.0});
        r->add_graph(gr, {{1}, 1, 1.0});
    }
    const auto m = static_cast<std::size_t>(std::floor(0.25 * N));
    auto check = [&](const std::vector<index_t>& rows) {
        BOOST_TEST(rows.size() == m);
        BOOST_TEST(std::set<index_t>(rows.begin(), rows.end()).size() == rows.size());  // no repeats
        for (index_t i : rows) BOOST_TEST(gr.degree(i) > 0);
    };
    const auto base = reg.sample_rows(0, 0, 1);
    check(base);
    BOOST_TEST(base == same.sample_rows(0, 0, 1));                 // identical for identical (seed, step)
    BOOST_TEST(base != reg.sample_rows(0, 0, 2));                  // fresh per step
    BOOST_TEST(base != reg.sample_rows(0, 1, 1));                  // ... per layer
    BOOST_TEST(base != reg.sample_rows(1, 0, 1));                  // ... per graph
    BOOST_TEST(base != other_seed.sample_rows(0, 0, 1));           // ... per seed
    // Every row of positive degree is drawn about equally often over many steps.
    std::vector<int> hits(static_cast<std::size_t>(N), 0);
    const int steps = 2000;
    for (int s = 0; s < steps; ++s) {
        const auto rows = reg.sample_rows(1, 1, static_cast<std::uint64_t>(s));
        check(rows);
        for (index_t i : rows) ++hits[static_cast<std::size_t>(i)];
    }
    const double expect = steps * double(m) / double(gr.num_rows_with_edges());
    for (index_t i = 0; i < N; ++i) {
        if (gr.degree(i) == 0) BOOST_TEST(hits[static_cast<std::size_t>(i)] == 0);
        else BOOST_TEST(std::abs(hits[static_cast<std::size_t>(i)] - expect) < 5 * std::sqrt(expect));
    }
    // m at least the rows with edges: all of them; rate 1: all of them.
    GraphRegularizerOptions big;
    big.row_rate = 0.9;
    GraphRegularizer<float> r2(N, big);
    r2.add_graph(gr, {{0}, 0, 1.0});
    BOOST_TEST(r2.sample_rows(0, 0, 3) == gr.rows_with_edges());
    GraphRegularizer<float> r3(N);
    r3.add_graph(gr, {{0}, 0, 1.0});
    BOOST_TEST(r3.sample_rows(0, 0, 3) == gr.rows_with_edges());
    BOOST_CHECK_THROW(GraphRegularizer<float>(N, GraphRegularizerOptions{0.0}), ShapeError);
}

BOOST_AUTO_TEST_CASE(legacy_normalisation_is_a_named_option) {
    const index_t N = 10, d = 8;
    nn::AttentionConfig ac;
    ac.d_model = d, ac.num_heads = 2;
    nn::MultiHeadAttention<double> attn(ac);
    Generator g(8);
    attn.reset_parameters(g);
    attn.forward(random_tensor(Shape{N + 1, d}, 3).cview());
    GraphRegularizerOptions legacy;
    legacy.normalization = GraphNormalization::legacy_global;
    legacy.graph_reg_lambda = 0.4;
    BOOST_TEST((GraphRegularizerOptions{}.normalization == GraphNormalization::density));  // never the default
    GraphRegularizer<double> fixed(N), old(N, legacy);
    const GeneGraph a(N, random_edges(N, 25, 0, 1)), b(N, random_edges(N, 12, 2, 2)), c(N, random_edges(N, 7, 0, 3));
    for (auto* r : {&fixed, &old}) {
        r->add_graph(a, {{0}, 0, 0.5});
        r->add_graph(b, {{0}, 1, 0.25});
        r->add_graph(c, {{1}, 1, 2.0});  // another layer: counts in K, adds nothing here
    }
    const double vf = fixed.evaluate(0, attn), vl = old.evaluate(0, attn);
    const double La = fixed.graph_value(0, 0), Lb = fixed.graph_value(1, 0);
    BOOST_TEST(La > 0.0);
    BOOST_TEST(Lb > 0.0);
    BOOST_TEST(old.graph_value(0, 0) == La);
    BOOST_TEST(vf == 0.5 * La / (a.nnz() / double(N)) + 0.25 * Lb / (b.nnz() / double(N)), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(vl == 0.4 * (0.5 * La + 0.25 * Lb) * double(N) / (2.0 * 3.0), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(old.weight(2) == 0.4 * 2.0 * N / 6.0, boost::test_tools::tolerance(1e-15));
}

BOOST_AUTO_TEST_CASE(encoder_layer_gradcheck_with_and_without_graph_term_eval_and_training) {
    const index_t N = 6, T = N + 1, d = 8, H = 2;
    nn::PostNormEncoderLayer<double> layer(d, H, 0.2, 7);
    randomize(layer, 1);
    GraphRegularizerOptions opt;
    opt.row_rate = 0.5;
    opt.seed = 3;
    GraphRegularizer<double> reg(N, opt);
    reg.add_graph(GeneGraph(N, random_edges(N, 14, 4, 5)), {{0}, 1, 0.8});
    reg.add_graph(GeneGraph(N, random_edges(N, 9, 0, 6), {false, true}), {{0}, 1, 0.5});
    reg.add_graph(GeneGraph(N, random_edges(N, 10, 0, 7)), {{0}, 0, 0.3});
    for (const Context ctx : {Context::eval(), Context::train(5, 2)}) {
        auto x = random_tensor(Shape{T, d}, 21, 1.3);
        const auto plain = testing::gradcheck_layer(layer, x, ctx);
        BOOST_TEST_MESSAGE("layer, training=" << ctx.training << ": " << plain.summary());
        BOOST_TEST(plain.ok, plain.summary());

        // Loss Σ R∘y + r·graph: the graph value rides as an extra output; its R entry scales the hook.
        const index_t ny = T * d;
        auto forward = [&] {
            auto y = layer.forward(x.cview(), ctx);
            Tensor<double> out(Shape{ny + 1});
            std::copy(y.data(), y.data() + ny, out.data());
            out[ny] = reg.evaluate(0, layer.attn, ctx);
            return out;
        };
        auto backward = [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
            layer.set_graph_hook(reg.hook(0, dy[ny]));
            layer.backward(dy.slice(0, ny).reshaped(Shape{T, d}), dxs[0]);
        };
        const auto res = testing::gradcheck(forward, backward, {&x}, testing::parameters_of(layer));
        BOOST_TEST_MESSAGE("layer + graph term, training=" << ctx.training << ": " << res.summary());
        BOOST_TEST(res.ok, res.summary());
    }
}

BOOST_AUTO_TEST_CASE(encoder_with_a_graph_on_two_layers_matches_dense_value_and_finite_differences) {
    const index_t N = 7, d = 8;
    PostNormEncoder::module<double> enc(small_config(N, d, 2, 2, 0.15));
    randomize(enc, 2);
    GraphRegularizerOptions opt;
    opt.row_rate = 0.3;  // 2 of the 4 rows with edges of graph 0
    opt.seed = 9;
    GraphRegularizer<double> reg(N, opt);
    const std::vector<std::vector<Edge>> edges{random_edges(N, 16, 3, 11), random_edges(N, 12, 0, 12)};
    reg.add_graph(GeneGraph(N, edges[0]), {{0, 1}, 1, 0.6});
    reg.add_graph(GeneGraph(N, edges[1]), {{1}, 0, 0.4});

    // Value: per layer, the dense term from that layer's input.
    const Tensor<double> X = random_tensor(Shape{N + 1, d}, 31, 1.2);
    const Context ctx{false, 0, 4};
    const Tensor<double> Hout = enc.forward(X.cview(), ctx, &reg);
    // A second encoder with the same weights yields each layer's input.
    PostNormEncoder::module<double> twin(small_config(N, d, 2, 2, 0.15));
    std::vector<Parameter<double>*> src;
    enc.visit_parameters([&](std::string_view, Parameter<double>& p) { src.push_back(&p); });
    std::size_t next = 0;
    twin.visit_parameters([&](std::string_view, Parameter<double>& p) { p.value = src[next++]->value; });
    double dense_total = 0;
    Tensor<double> h = X;
    for (int l = 0; l < 2; ++l) {
        std::vector<DenseGraph> dg;
        for (index_t k = 0; k < 2; ++k) {
            const auto& ls = reg.assignment(k).layers;
            if (std::find(ls.begin(), ls.end(), l) == ls.end()) continue;
            dg.push_back({dense_target(edges[static_cast<std::size_t>(k)], N), reg.sample_rows(k, l, 4), reg.assignment(k).head, reg.weight(k)});
        }
        dense_total += dense_graph_term(dense_attention(enc.layers[static_cast<std::size_t>(l)].attn, h), dg, nullptr);
        h = twin.layers[static_cast<std::size_t>(l)].forward(h.cview(), ctx);
    }
    BOOST_TEST(reg.last_rows(0, 0) != reg.last_rows(0, 1));  // drawn afresh per layer
    BOOST_TEST(std::abs(enc.graph_loss() - dense_total) / dense_total < 1e-12, enc.graph_loss() << " vs dense " << dense_total);
    BOOST_TEST(relative_difference(Hout, h).max_error == 0.0);

    for (const Context c : {Context{false, 0, 4}, Context{true, 8, 4}}) {
        auto x = X;
        const index_t ny = (N + 1) * d;
        auto forward = [&] {
            auto y = enc.forward(x.cview(), c, &reg);
            Tensor<double> out(Shape{ny + 1});
            std::copy(y.data(), y.data() + ny, out.data());
            out[ny] = enc.graph_loss();
            return out;
        };
        auto backward = [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
            enc.backward(dy.slice(0, ny).reshaped(Shape{N + 1, d}), dxs[0], dy[ny]);
        };
        const auto res = testing::gradcheck(forward, backward, {&x}, testing::parameters_of(enc));
        BOOST_TEST_MESSAGE("encoder + graph on two layers, training=" << c.training << ": " << res.summary());
        BOOST_TEST(res.ok, res.summary());
    }
}

BOOST_AUTO_TEST_CASE(parity_with_cgt_ref_fixtures_float64_and_float32) {
    const io::SafetensorsFile fixed(fixture_dir + "/cgt_encoder_fixed.safetensors");
    const io::SafetensorsFile legacy(fixture_dir + "/cgt_encoder_legacy.safetensors");
    const index_t N = std::stoll(fixed.metadata().at("N")), d = std::stoll(fixed.metadata().at("d"));
    const int L = std::stoi(fixed.metadata().at("L")), H = std::stoi(fixed.metadata().at("H")),
              K = std::stoi(fixed.metadata().at("graphs"));
    const CgtConfig cfg = small_config(N, d, L, H);

    auto run = [&](auto zero, const io::SafetensorsFile& ref, double tol_y, double tol_g) {
        using T = decltype(zero);
        const bool is_legacy = ref.metadata().at("reg_mode") == "legacy";
        GeneEmbedding::module<T> emb(cfg);
        PostNormEncoder::module<T> enc(cfg);
        load_parameters<T>(emb, fixed);
        load_parameters<T>(enc, fixed);
        GraphRegularizerOptions opt;
        if (is_legacy) {
            opt.normalization = GraphNormalization::legacy_global;
            opt.graph_reg_lambda = std::stod(ref.metadata().at("graph_reg_lambda"));
        }
        GraphRegularizer<T> reg(N, opt);
        for (int k = 0; k < K; ++k) {
            const std::string p = "graph." + std::to_string(k) + ".";
            const auto ei = fixed.load_values<index_t>(p + "edge_index");
            const std::size_t E = ei.size() / 2;
            std::vector<Edge> edges;
            for (std::size_t e = 0; e < E; ++e) edges.push_back({ei[e], ei[E + e]});
            const auto layers = fixed.load_values<int>(p + "layers");
            reg.add_graph(GeneGraph(N, edges), {layers, fixed.load_values<index_t>(p + "head")[0], fixed.load_values<double>(p + "lambda")[0]});
        }
        const Context ctx = Context::eval();
        const Tensor<T> X = emb.forward(ctx);
        const Tensor<T> Hout = enc.forward(X.cview(), ctx, &reg);
        const Tensor<T> R = fixed.load<T>("R");
        Tensor<T> dX(X.shape());
        enc.backward(R.cview(), dX.view());
        emb.backward(dX.cview());

        // Forward: H against h_CLS / H_genes, the graph loss and its per-layer parts.
        Tensor<double> Href(Shape{N + 1, d});
        fixed.load_into<double>("h_CLS", Href.view().slice(0, 1).reshaped(Shape{d}));
        fixed.load_into<double>("H_genes", Href.view().slice(1, N));
        const double ey = relative_difference(Hout, Href, 1e-2).max_error;
        const Tensor<double> per_layer = ref.load<double>("graph_loss_layer");
        double eg = std::abs(enc.graph_loss() - ref.load<double>("graph_loss")[0]) / std::abs(ref.load<double>("graph_loss")[0]);
        for (int l = 0; l < L; ++l) eg = std::max(eg, std::abs(reg.layer_value(l) - per_layer[l]) / std::abs(per_layer[l]));
        BOOST_TEST(ey < tol_y, "H: " << relative_difference(Hout, Href, 1e-2).str());
        BOOST_TEST(eg < tol_y, "graph loss " << enc.graph_loss() << " vs " << ref.load<double>("graph_loss")[0]);
        // Gradients of every parameter (embedding and encoder). Floor: rel_floor × the largest reference
        // gradient of the file (the key biases' exact gradient is 0: their entries are round-off).
        double gscale = 0;
        for (const auto& name : ref.names())
            if (name.starts_with("grad.")) gscale = std::max(gscale, max_abs(ref.load<double>(name)));
        const double floor = (sizeof(T) == 8 ? 1e-4 : 1e-2) * gscale;
        double worst = 0;
        auto compare = [&](std::string_view name, Parameter<T>& p) {
            const Tensor<double> want = ref.load<double>("grad." + std::string(name));
            const auto e = relative_difference(p.grad, want, floor);
            BOOST_TEST(e.max_error < tol_g, name << ": " << e.str());
            worst = std::max(worst, e.max_error);
        };
        emb.visit_parameters(compare);
        enc.visit_parameters(compare);
        BOOST_TEST_MESSAGE((is_legacy ? "legacy" : "fixed") << (sizeof(T) == 8 ? " float64" : " float32") << ": H " << ey
                                                             << ", graph loss " << eg << ", gradients " << worst);
    };
    for (const auto* ref : {&fixed, &legacy}) {
        run(0.0, *ref, 1e-10, 1e-10);
        run(0.0f, *ref, 1e-4, 1e-3);
    }
}

BOOST_AUTO_TEST_CASE(gene_embedding_learned_rows_and_feature_projection) {
    // Learned: X = [cls; E], backward splits dX.
    CgtConfig cfg = small_config(5, 4, 1, 1);
    GeneEmbedding::module<double> emb(cfg);
    Generator g(2);
    emb.reset_parameters(g);
    const Tensor<double> X = emb.forward();
    BOOST_TEST((X.shape() == Shape{6, 4}));
    for (index_t c = 0; c < 4; ++c) {
        BOOST_TEST(X(0, c) == emb.cls_token.value(0, c));
        for (index_t i = 0; i < 5; ++i) BOOST_TEST(X(i + 1, c) == emb.gene_embedding.value(i, c));
    }
    const Tensor<double> dX = random_tensor(Shape{6, 4}, 4);
    emb.backward(dX.cview());
    BOOST_TEST(emb.cls_token.grad(0, 3) == dX(0, 3));
    BOOST_TEST(emb.gene_embedding.grad(4, 2) == dX(5, 2));

    // Features of width d: used as they are, no gene_embedding parameter.
    cfg.gene_feature_dim = 4;
    GeneEmbedding::module<double> same(cfg);
    BOOST_TEST(parameter_count<double>(same) == 4);
    BOOST_CHECK_THROW(same.forward(), ShapeError);
    BOOST_CHECK_THROW(same.set_gene_features(Tensor<double>(Shape{5, 3})), ShapeError);
    const Tensor<double> F4 = random_tensor(Shape{5, 4}, 6);
    same.set_gene_features(F4);
    const Tensor<double> X4 = same.forward();
    BOOST_TEST(X4(3, 1) == F4(2, 1));

    // Features of another width: the projection, against PyTorch (float64 and float32).
    const io::SafetensorsFile f(fixture_dir + "/cgt_encoder_features.safetensors");
    CgtConfig fc = small_config(std::stoll(f.metadata().at("N")), std::stoll(f.metadata().at("d")), 1, 1);
    fc.gene_feature_dim = std::stoll(f.metadata().at("f"));
    auto run = [&](auto zero, double tol_y, double tol_g) {
        using T = decltype(zero);
        GeneEmbedding::module<T> m(fc);
        std::vector<std::string> names;
        m.visit_parameters([&](std::string_view n, Parameter<T>&) { names.emplace_back(n); });
        BOOST_TEST(names.size() == 9u);  // cls_token + 4 × (weight, bias)
        BOOST_TEST((std::find(names.begin(), names.end(), "gene_embedding.weight") == names.end()));
        load_parameters<T>(m, f);
        m.set_gene_features(f.load<T>("features"));
        const Tensor<T> Xp = m.forward(Context::eval());
        const double ey = relative_difference(Xp, f.load<double>("X"), 1e-3).max_error;
        BOOST_TEST(ey < tol_y);
        const Tensor<T> R = f.load<T>("R");
        m.backward(R.cview());
        double worst = 0;
        m.visit_parameters([&](std::string_view name, Parameter<T>& p) {
            const Tensor<double> want = f.load<double>("grad." + std::string(name));
            worst = std::max(worst, relative_difference(p.grad, want, std::max(1e-2 * max_abs(want), 1e-8)).max_error);
        });
        BOOST_TEST(worst < tol_g);
        BOOST_TEST_MESSAGE("feature projection " << (sizeof(T) == 8 ? "float64" : "float32") << ": X " << ey << ", gradients " << worst);
    };
    run(0.0, 1e-10, 1e-10);
    run(0.0f, 1e-4, 1e-3);

    // Finite differences through the projection, eval and training (dropout).
    GeneEmbedding::module<double> m(fc);
    randomize(m, 4);
    m.set_gene_features(random_tensor(Shape{fc.num_genes, fc.gene_feature_dim}, 8, 1.5));
    for (const Context ctx : {Context::eval(), Context::train(3, 1)}) {
        const auto res = testing::gradcheck([&] { return m.forward(ctx); },
                                            [&](ConstView<double> dy, std::vector<TensorView<double>>&) { m.backward(dy); }, {},
                                            testing::parameters_of(m));
        BOOST_TEST_MESSAGE("feature projection, training=" << ctx.training << ": " << res.summary());
        BOOST_TEST(res.ok, res.summary());
    }
}

BOOST_AUTO_TEST_CASE(propagation_gradients_and_per_sample_independence) {
    CgtConfig cfg = small_config(5, 8, 0, 2, 0.2);
    cfg.propagation_layers = 2;
    Propagation::module<double> prop(cfg);
    randomize(prop, 6);
    for (const Context ctx : {Context::eval(), Context::train(2, 3)}) {
        const auto res = testing::gradcheck_layer(prop, random_tensor(Shape{2, 5, 8}, 12, 1.5), ctx);
        BOOST_TEST_MESSAGE("propagation, training=" << ctx.training << ": " << res.summary());
        BOOST_TEST(res.ok, res.summary());
    }
    // Sample b attends only within itself: the batched output equals the single-sample one.
    const Tensor<double> Hp = random_tensor(Shape{3, 5, 8}, 13);
    const Tensor<double> all = prop.forward(Hp.cview());
    for (index_t b = 0; b < 3; ++b) {
        Tensor<double> one = prop.forward(Hp.cview().slice(b, 1));
        BOOST_TEST(relative_difference(one.cview(), all.cview().slice(b, 1), 1e-12).max_error < 1e-13);
    }
    CgtConfig none = cfg;
    none.propagation_layers = 0;
    Propagation::module<double> id(none);
    BOOST_TEST(relative_difference(id.forward(Hp.cview()), Hp).max_error == 0.0);
}

BOOST_AUTO_TEST_CASE(propagation_memory_is_linear_in_N) {
    // B=4, N=2000, d=32, H=4: PyTorch's dense attention would hold B·H·N² = 64M floats (256 MB) per
    // layer; forward + backward here stay far below that, and the peak doubles (not quadruples)
    // from N=1000 to N=2000.
    const index_t B = 4, d = 32;
    auto peak_of = [&](index_t N) {
        CgtConfig cfg = small_config(N, d, 0, 4, 0.1);
        cfg.propagation_layers = 1;
        Propagation::module<float> prop(cfg);
        Generator g(1);
        prop.reset_parameters(g);
        const Tensor<float> Hp = random_tensor<float>(Shape{B, N, d}, 14);
        const Tensor<float> dY = random_tensor<float>(Shape{B, N, d}, 15, 1e-2);
        auto& stats = memory_stats<cpu>();
        stats.reset_peak();
        const std::size_t before = stats.live.load();
        const Tensor<float> Y = prop.forward(Hp.cview(), Context::train(1, 0));
        Tensor<float> dH(Hp.shape());
        prop.backward(dY.cview(), dH.view());
        double s = 0;
        for (index_t i = 0; i < dH.numel(); ++i) s += std::abs(dH[i]);
        BOOST_TEST(std::isfinite(s));
        BOOST_TEST(s > 0.0);
        return static_cast<double>(stats.peak.load() - before);
    };
    const double p1 = peak_of(1000), p2 = peak_of(2000);
    const double dense = static_cast<double>(B * 4 * 2000 * 2000) * sizeof(float);
    BOOST_TEST_MESSAGE("propagation B=4 d=32 H=4: tensor peak " << p1 / 1e6 << " MB at N=1000, " << p2 / 1e6
                                                                << " MB at N=2000; dense probabilities " << dense / 1e6 << " MB");
    BOOST_TEST(p2 < dense / 4);
    BOOST_TEST(p2 / p1 < 2.2);
}

BOOST_AUTO_TEST_SUITE_END()
