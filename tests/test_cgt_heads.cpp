// The CGT perturbation side: PerturbationBatch / PerturbedRows (rows on demand), the Type I
// CrossAttentionTransform, the Type II readouts (gene interaction, fitness, expression, gene set),
// the non-equivariant head and the masked multi-task loss.
//  - parity with PyTorch fixtures (tools/fixtures/make_cgt_heads.py, cgt_ref.py), float64 and float32;
//  - gradient checks in double (duplicates, an empty set, eval and training with dropout);
//  - rows on demand: the GI-only path equals the all-rows path (outputs and every gradient) and
//    allocates far less than B×N×d;
//  - the loss against closed forms and finite differences, and its masking.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>
#include "celltx/core/concepts.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/policies/loss/multitask_loss.hpp"
#include "celltx/policies/perturbation/concept.hpp"
#include "celltx/policies/perturbation/cross_attention_transform.hpp"
#include "celltx/policies/readout/concept.hpp"
#include "celltx/policies/readout/expression.hpp"
#include "celltx/policies/readout/fitness.hpp"
#include "celltx/policies/readout/gene_interaction.hpp"
#include "celltx/policies/readout/gene_set.hpp"
#include "celltx/policies/readout/non_equivariant.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "celltx/testing/policy_gradcheck.hpp"

using namespace celltx;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;

namespace {

// ---------------------------------------------------------------------------------------------
// Compile-time checks: every policy satisfies its concept, and a policy of the wrong family does not.
static_assert(ReadoutPolicy<GeneInteractionReadout> && ReadoutPolicy<GeneInteractionReadout, double>);
static_assert(ReadoutPolicy<FitnessReadout> && ReadoutPolicy<ExpressionReadout> && ReadoutPolicy<GeneSetReadout, double>);
static_assert(NonEquivariantHeadPolicy<NonEquivariantHead> && NonEquivariantHeadPolicy<NonEquivariantHead, double>);
static_assert(!ReadoutPolicy<NonEquivariantHead>, "the non-equivariant head reads H_genes: not a Type II readout");
static_assert(!NonEquivariantHeadPolicy<GeneInteractionReadout>);
static_assert(PerturbationPolicy<CrossAttentionTransform> && PerturbationPolicy<CrossAttentionTransform, double>);
static_assert(!PerturbationPolicy<GeneInteractionReadout> && !ReadoutPolicy<CrossAttentionTransform>);
struct NoRows {  // a readout that forgets to declare its rows
    template <Scalar T, Backend B>
    using module = GeneInteractionReadout::module<T, B>;
};
static_assert(!ReadoutPolicy<NoRows>);
static_assert(rows_needed_by<GeneInteractionReadout> == RowNeedSet(RowNeed::perturbed));
static_assert(rows_needed_by<GeneInteractionReadout, GeneSetReadout> == (RowNeed::perturbed | RowNeed::gene_sets));
static_assert(rows_needed_by<GeneInteractionReadout, FitnessReadout>.contains(RowNeed::all));

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

io::SafetensorsFile fixture(const std::string& name) {
    return io::SafetensorsFile(std::string(CELLTX_FIXTURE_DIR) + "/cgt_heads_" + name + ".safetensors");
}

double floor_of(const double* p, index_t n, double fraction) {
    double m = 0.0;
    for (index_t i = 0; i < n; ++i) m = std::max(m, std::abs(p[i]));
    return std::max(fraction * m, 1e-300);
}

/// Relative difference of a computed tensor (any precision, any shape of the same size) and a reference.
template <class T>
testing::Difference diff(const Tensor<T>& got, const Tensor<double>& ref, double floor_fraction = 1e-6) {
    if (got.numel() != ref.numel()) return {std::numeric_limits<double>::infinity(), -1, 0, 0};
    return relative_difference(got.data(), ref.data(), ref.numel(), floor_of(ref.data(), ref.numel(), floor_fraction));
}

std::vector<index_t> as_indices(const Tensor<double>& t) {
    std::vector<index_t> v(static_cast<std::size_t>(t.numel()));
    for (index_t i = 0; i < t.numel(); ++i) v[static_cast<std::size_t>(i)] = static_cast<index_t>(t[i]);
    return v;
}

PerturbationBatch fixture_batch(const io::SafetensorsFile& f) {
    PerturbationBatch b;
    b.indices = as_indices(f.load<double>("batch.indices"));
    b.offsets = as_indices(f.load<double>("batch.offsets"));
    return b;
}

CgtConfig small_config(index_t N, index_t d, int pert_heads, double dropout = 0.1) {
    CgtConfig c;
    c.num_genes = N;
    c.d_model = d;
    c.pert_heads = pert_heads;
    c.dropout = dropout;
    return c;
}

/// Loads every parameter of `m` from key `key_prefix + name`, and checks that the module's names
/// under `state_prefix` are exactly the fixture's.
template <class T, class M>
void load_parameters(M& m, const io::SafetensorsFile& f, const std::string& key_prefix, const std::string& state_prefix) {
    std::set<std::string> visited, stored;
    m.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        const std::string key = key_prefix + std::string(name);
        visited.insert(key);
        BOOST_REQUIRE_MESSAGE(f.contains(key), f.path() << " has no tensor " << key);
        Tensor<T> v = f.load<T>(key);
        BOOST_REQUIRE_MESSAGE(v.shape() == p.shape(), key << ": fixture " << v.shape().str() << " vs module " << p.shape().str());
        p.value = std::move(v);
    });
    for (const auto& ti : f.tensors())
        if (ti.name.rfind(key_prefix + state_prefix, 0) == 0) stored.insert(ti.name);
    BOOST_TEST(visited == stored, key_prefix + state_prefix << ": the module's parameter names differ from the PyTorch state_dict");
}

/// Compares every parameter gradient of `m` with the fixture's "grad.<case>.<name>"; returns the max error.
template <class T, class M>
double check_grads(M& m, const io::SafetensorsFile& f, const std::string& c, double tol, double floor_fraction) {
    double worst = 0.0;
    m.visit_parameters([&](std::string_view name, Parameter<T>& p) {
        const std::string key = "grad." + c + "." + std::string(name);
        BOOST_REQUIRE_MESSAGE(f.contains(key), f.path() << " has no tensor " << key);
        const auto e = diff(p.grad, f.load<double>(key), floor_fraction);
        BOOST_TEST(e.within(tol), c << " " << key << ": " << e.str());
        worst = std::max(worst, e.max_error);
    });
    return worst;
}

struct Tol {
    double y, grad, floor;
};
/// Relative tolerances; entries below floor × the reference's largest magnitude are judged
/// absolutely (the key bias gets a gradient that is zero up to rounding: softmax ignores a shift
/// common to all scores).
template <class T>
Tol tolerances() {
    if constexpr (std::is_same_v<T, double>) return {1e-10, 1e-10, 1e-4};
    else return {1e-4, 1e-3, 1e-3};
}

/// Transform + one readout against the fixture case `c` (weights of the readout under "<c>.").
/// With R2 the loss also has Σ R2∘H_pert and the transform computes all rows; without it the
/// transform computes only what the readout declares.
template <class T, class Readout>
void equivariant_parity(const std::string& c, const io::SafetensorsFile& rf, const io::SafetensorsFile& gf, bool with_r2,
                        CgtConfig cfg, const std::string& head_prefix, const io::SafetensorsFile* grads_file = nullptr) {
    const io::SafetensorsFile& gfile = grads_file ? *grads_file : rf;
    const Tol tol = tolerances<T>();
    typename CrossAttentionTransform::template module<T> tr(cfg);
    typename Readout::template module<T> head(cfg);
    load_parameters<T>(tr, gf, "", "perturbation_transform.");
    load_parameters<T>(head, rf, (c == "gi_mean_only" ? std::string("gi_mean") : c) + ".", head_prefix);
    GeneSetList sets;
    if constexpr (std::is_same_v<Readout, GeneSetReadout>) {
        sets.indices = as_indices(rf.load<double>("gene_sets.genes"));
        sets.offsets = as_indices(rf.load<double>("gene_sets.offsets"));
        head.set_gene_sets(sets);
    }
    const Tensor<T> H = gf.load<T>("H_genes"), h_cls = gf.load<T>("h_cls");
    const PerturbationBatch batch = fixture_batch(gf);
    const RowNeedSet need = with_r2 ? RowNeedSet(RowNeed::all) : RowNeedSet(Readout::rows);
    PerturbedRows<T> rows = tr.forward(H.cview(), batch, need, &sets, Context::eval());
    BOOST_TEST(rows.all_rows == with_r2);
    Tensor<T> y = head.forward(h_cls.cview(), rows, batch, Context::eval());
    const auto ey = diff(y, gfile.load<double>(c + ".y"), tol.floor);
    BOOST_TEST(ey.within(tol.y), c << " y: " << ey.str());
    double eh = 0.0;
    if (with_r2) {
        const auto e = diff(rows.values, gf.load<double>("H_pert"), tol.floor);
        BOOST_TEST(e.within(tol.y), c << " H_pert: " << e.str());
        eh = e.max_error;
    }

    PerturbedRows<T> drows = rows.zeros_like();
    if (with_r2) drows.values = gf.load<T>("R2").reshape(Shape{rows.rows(), cfg.d_model});
    Tensor<T> dh_cls(h_cls.shape()), dH(H.shape());
    const Tensor<T> R = gfile.load<T>(c + ".R");
    head.backward(R.cview(), dh_cls.view(), drows);
    tr.backward(drows, dH.view());
    const double et = check_grads<T>(tr, gfile, c, tol.grad, tol.floor);
    const double eg = check_grads<T>(head, gfile, c, tol.grad, tol.floor);
    const auto eH = diff(dH, gfile.load<double>("grad." + c + ".H_genes"), tol.floor);
    const auto ec = diff(dh_cls, gfile.load<double>("grad." + c + ".h_cls"), tol.floor);
    BOOST_TEST(eH.within(tol.grad), c << " dH_genes: " << eH.str());
    BOOST_TEST(ec.within(tol.grad), c << " dh_cls: " << ec.str());
    BOOST_TEST_MESSAGE(fmt::format("{} ({}): max rel. error y {:.2e}, H_pert {:.2e}, transform grads {:.2e}, head grads {:.2e}, dH {:.2e}, dh_cls {:.2e}",
                                   c, sizeof(T) == 8 ? "f64" : "f32", ey.max_error, eh, et, eg, eH.max_error, ec.max_error));
}

void expect_gradcheck(const testing::GradcheckResult& r, const std::string& what) {
    BOOST_TEST_MESSAGE(what << ": " << r.summary());
    BOOST_TEST(r.ok, what << ": " << r.summary());
    BOOST_TEST(r.max_error <= 1e-6, what << ": " << r.summary());
}

template <class M>
void randomise(M& m, std::uint64_t seed, double scale = 0.4) {
    testing::randomize_parameters(m, seed, scale);
}

/// The batch of the gradient checks: a pair, one gene duplicated, an empty set, a triple sharing a
/// gene with the pair.
PerturbationBatch check_batch() { return PerturbationBatch::from_sets({{1, 4}, {2, 2}, {}, {6, 1, 3}}); }

bool message_contains(const std::exception& e, const std::string& s) { return std::string(e.what()).find(s) != std::string::npos; }

/// Transform gradient check: input H, output the computed rows (as one tensor), dL/drows = R.
testing::GradcheckResult gradcheck_transform(RowNeedSet need, const GeneSetList* sets, const Context& ctx, double dropout) {
    const index_t N = 7, d = 8;
    CrossAttentionTransform::module<double> tr(small_config(N, d, 2, dropout));
    randomise(tr, 11);
    Tensor<double> H = random_tensor(Shape{N, d}, 12);
    return testing::gradcheck_transform(tr, H, check_batch(), need, sets, ctx);
}

/// Readout gradient check on the check batch over N = 7 genes of width 8.
template <class Readout>
testing::GradcheckResult gradcheck_readout(typename Readout::template module<double>& head, RowNeedSet need, const GeneSetList* sets,
                                           const Context& ctx) {
    return testing::gradcheck_readout(head, check_batch(), 7, 8, need, sets, ctx);
}

} // namespace

BOOST_AUTO_TEST_SUITE(cgt_heads)

BOOST_AUTO_TEST_CASE(index_sets_validation_names_set_and_index) {
    const PerturbationBatch b = PerturbationBatch::from_sets({{3, 17}, {5, 5}, {}, {17, 8, 21}});
    BOOST_TEST(b.batch_size() == 4);
    BOOST_TEST(b.total() == 7);
    BOOST_TEST(b.set_size(2) == 0);
    BOOST_TEST(b.set(3)[2] == 21);
    BOOST_CHECK_NO_THROW(b.validate(30));
    try {
        b.validate(20, "PerturbationBatch");
        BOOST_ERROR("gene 21 >= 20 was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(message_contains(e, "PerturbationBatch: set 3 entry 2 has index 21"), e.what());
    }
    PerturbationBatch neg = PerturbationBatch::from_sets({{1}, {0, -2}});
    try {
        neg.validate(10);
        BOOST_ERROR("a negative index was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(message_contains(e, "IndexSets: set 1 entry 1 has index -2"), e.what());
    }
    PerturbationBatch bad = b;
    bad.offsets[2] = 1;  // offsets decrease
    BOOST_CHECK_THROW(bad.validate(30), ShapeError);
    bad = b;
    bad.offsets.back() = 6;
    BOOST_CHECK_THROW(bad.validate(30), ShapeError);
    BOOST_TEST(PerturbationBatch{}.batch_size() == 0);  // no sets: valid, and a model rejects it as an empty batch
    bad = b;
    bad.offsets.clear();
    BOOST_CHECK_THROW(bad.validate(30), ShapeError);
    BOOST_CHECK_THROW(b.set(4), ShapeError);

    GeneSetList sets = GeneSetList::from_sets({{1, 4, 9}, {}, {7, 7, 12}});
    BOOST_TEST(sets.size() == 3);
    BOOST_TEST((sets.unique_indices() == std::vector<index_t>{1, 4, 7, 9, 12}));
    try {
        sets.validate(10, "GeneSetList");
        BOOST_ERROR("gene 12 >= 10 was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(message_contains(e, "GeneSetList: set 2 entry 2 has index 12"), e.what());
    }
}

BOOST_AUTO_TEST_CASE(perturbed_rows_layouts) {
    const PerturbationBatch b = PerturbationBatch::from_sets({{17, 3}, {5, 5}, {}, {17, 8, 21}});
    const GeneSetList sets = GeneSetList::from_sets({{4, 3}, {}});
    auto pert = PerturbedRows<float>::layout(b, 30, 4, RowNeed::perturbed);
    BOOST_TEST(!pert.all_rows);
    BOOST_TEST((pert.offsets == std::vector<index_t>{0, 2, 3, 3, 6}));
    BOOST_TEST((pert.genes == std::vector<index_t>{3, 17, 5, 8, 17, 21}));  // sorted unique per sample
    BOOST_TEST(pert.values.shape() == (Shape{6, 4}));
    BOOST_TEST(pert.row_of(3, 17) == 4);
    BOOST_TEST(pert.find(2, 17) == -1);
    BOOST_CHECK_THROW(pert.row_of(0, 5), ShapeError);

    auto both = PerturbedRows<float>::layout(b, 30, 4, RowNeed::perturbed | RowNeed::gene_sets, &sets);
    BOOST_TEST((both.offsets == std::vector<index_t>{0, 3, 6, 8, 13}));
    BOOST_TEST((both.genes == std::vector<index_t>{3, 4, 17, 3, 4, 5, 3, 4, 3, 4, 8, 17, 21}));
    BOOST_CHECK_THROW(PerturbedRows<float>::layout(b, 30, 4, RowNeed::gene_sets), ShapeError);  // no sets given

    auto all = PerturbedRows<float>::layout(b, 30, 4, RowNeed::all | RowNeed::perturbed);
    BOOST_TEST(all.all_rows);
    BOOST_TEST(all.rows() == 120);
    BOOST_TEST(all.row_of(2, 7) == 67);
    BOOST_TEST(all.zeros_like().same_layout(all));
    BOOST_TEST(!all.same_layout(pert));
}

BOOST_AUTO_TEST_CASE(transform_and_gi_parity_with_pytorch) {
    const auto gi = fixture("gi"), only = fixture("gi_only");
    CgtConfig cfg = small_config(30, 16, 4);
    for (GiPooling pool : {GiPooling::mean, GiPooling::sum}) {
        cfg.gi_pooling = pool;
        const std::string c = pool == GiPooling::mean ? "gi_mean" : "gi_sum";
        equivariant_parity<double, GeneInteractionReadout>(c, gi, gi, true, cfg, "perturbation_head.");
        equivariant_parity<float, GeneInteractionReadout>(c, gi, gi, true, cfg, "perturbation_head.");
    }
    // The GI-only path (perturbed rows only) against PyTorch's full computation.
    cfg.gi_pooling = GiPooling::mean;
    equivariant_parity<double, GeneInteractionReadout>("gi_mean_only", gi, gi, false, cfg, "perturbation_head.", &only);
    equivariant_parity<float, GeneInteractionReadout>("gi_mean_only", gi, gi, false, cfg, "perturbation_head.", &only);
}

BOOST_AUTO_TEST_CASE(fitness_expression_gene_set_parity_with_torch_modules) {
    const auto gi = fixture("gi"), rf = fixture("readouts");
    CgtConfig cfg = small_config(30, 16, 4);
    cfg.fitness_outputs = 2;
    equivariant_parity<double, FitnessReadout>("fitness", rf, gi, true, cfg, "fitness_head.");
    equivariant_parity<float, FitnessReadout>("fitness", rf, gi, true, cfg, "fitness_head.");
    equivariant_parity<double, ExpressionReadout>("expression", rf, gi, true, cfg, "expression_head.");
    equivariant_parity<float, ExpressionReadout>("expression", rf, gi, true, cfg, "expression_head.");
    equivariant_parity<double, GeneSetReadout>("gene_set", rf, gi, true, cfg, "gene_set_head.");
    equivariant_parity<float, GeneSetReadout>("gene_set", rf, gi, true, cfg, "gene_set_head.");
}

template <class T>
void noneq_parity() {
    const auto f = fixture("noneq");
    const Tol tol = tolerances<T>();
    NonEquivariantHead::module<T> head(small_config(30, 16, 4));
    load_parameters<T>(head, f, "noneq.", "perturbation_head.");
    const Tensor<T> H = f.load<T>("H_genes"), h_cls = f.load<T>("h_cls");
    const PerturbationBatch batch = fixture_batch(f);
    Tensor<T> y = head.forward(h_cls.cview(), H.cview(), batch, Context::eval());
    const auto ey = diff(y, f.load<double>("noneq.y"), tol.floor);
    BOOST_TEST(ey.within(tol.y), "noneq y: " << ey.str());
    Tensor<T> dh_cls(h_cls.shape()), dH(H.shape());
    head.backward(f.load<T>("noneq.R").cview(), dh_cls.view(), dH.view());
    const double eg = check_grads<T>(head, f, "noneq", tol.grad, tol.floor);
    const auto eH = diff(dH, f.load<double>("grad.noneq.H_genes"), tol.floor);
    const auto ec = diff(dh_cls, f.load<double>("grad.noneq.h_cls"), tol.floor);
    BOOST_TEST(eH.within(tol.grad), "noneq dH_genes: " << eH.str());
    BOOST_TEST(ec.within(tol.grad), "noneq dh_cls: " << ec.str());
    BOOST_TEST_MESSAGE(fmt::format("noneq ({}): max rel. error y {:.2e}, grads {:.2e}, dH {:.2e}, dh_cls {:.2e}", sizeof(T) == 8 ? "f64" : "f32",
                                   ey.max_error, eg, eH.max_error, ec.max_error));
}

BOOST_AUTO_TEST_CASE(non_equivariant_head_parity_with_pytorch) {
    noneq_parity<double>();
    noneq_parity<float>();
}

BOOST_AUTO_TEST_CASE(transform_gradcheck_duplicates_empty_set_eval_and_dropout) {
    const GeneSetList sets = GeneSetList::from_sets({{0, 5}, {5}});
    expect_gradcheck(gradcheck_transform(RowNeed::all, nullptr, Context::eval(), 0.1), "transform all rows, eval");
    expect_gradcheck(gradcheck_transform(RowNeed::perturbed | RowNeed::gene_sets, &sets, Context::eval(), 0.1),
                     "transform perturbed + gene-set rows, eval");
    expect_gradcheck(gradcheck_transform(RowNeed::all, nullptr, Context::train(7, 3), 0.3), "transform all rows, training p=0.3");
    expect_gradcheck(gradcheck_transform(RowNeed::perturbed, nullptr, Context::train(7, 4), 0.3), "transform perturbed rows, training p=0.3");
}

BOOST_AUTO_TEST_CASE(readout_gradchecks) {
    const index_t N = 7, d = 8;
    CgtConfig cfg = small_config(N, d, 2, 0.3);
    for (GiPooling pool : {GiPooling::mean, GiPooling::sum})
        for (bool train : {false, true}) {
            cfg.gi_pooling = pool;
            GeneInteractionReadout::module<double> gi(cfg);
            randomise(gi, 31);
            // The GI readout reads a sparse layout and, unchanged, an all-rows one.
            for (RowNeedSet need : {RowNeedSet(RowNeed::perturbed), RowNeedSet(RowNeed::all)})
                expect_gradcheck(gradcheck_readout<GeneInteractionReadout>(gi, need, nullptr, train ? Context::train(5, 1) : Context::eval()),
                                 fmt::format("GI readout ({}, {}, {})", pool == GiPooling::mean ? "mean" : "sum",
                                             need.contains(RowNeed::all) ? "all rows" : "perturbed rows", train ? "training" : "eval"));
        }
    cfg.fitness_outputs = 3;
    cfg.expression_outputs = 3;
    FitnessReadout::module<double> fit(cfg);
    randomise(fit, 32);
    expect_gradcheck(gradcheck_readout<FitnessReadout>(fit, RowNeed::all, nullptr, Context::eval()), "fitness readout");
    expect_gradcheck(gradcheck_readout<FitnessReadout>(fit, RowNeed::all, nullptr, Context::train(5, 2)), "fitness readout, training");
    ExpressionReadout::module<double> expr(cfg);
    randomise(expr, 33);
    expect_gradcheck(gradcheck_readout<ExpressionReadout>(expr, RowNeed::all, nullptr, Context::eval()), "expression readout [B,N,3]");
    cfg.expression_outputs = 1;
    ExpressionReadout::module<double> expr1(cfg);
    randomise(expr1, 34);
    expect_gradcheck(gradcheck_readout<ExpressionReadout>(expr1, RowNeed::all, nullptr, Context::train(5, 3)), "expression readout [B,N], training");
    const GeneSetList sets = GeneSetList::from_sets({{0, 5, 5}, {}, {3}, {6, 2, 1, 0}});
    GeneSetReadout::module<double> gs(cfg);
    randomise(gs, 35);
    gs.set_gene_sets(sets);
    expect_gradcheck(gradcheck_readout<GeneSetReadout>(gs, RowNeed::gene_sets, &sets, Context::eval()), "gene-set readout");
    expect_gradcheck(gradcheck_readout<GeneSetReadout>(gs, RowNeed::all, &sets, Context::train(5, 4)), "gene-set readout, all rows, training");

    // A readout that reads a row its layout does not hold fails loudly.
    PerturbedRows<double> only_pert = PerturbedRows<double>::layout(check_batch(), N, d, RowNeed::perturbed);
    Tensor<double> h(Shape{d});
    BOOST_CHECK_THROW(gs.forward(h.cview(), only_pert, check_batch()), ShapeError);
    BOOST_CHECK_THROW(fit.forward(h.cview(), only_pert, check_batch()), ShapeError);
}

BOOST_AUTO_TEST_CASE(non_equivariant_head_gradcheck) {
    const index_t N = 7, d = 8;
    NonEquivariantHead::module<double> head(small_config(N, d, 2, 0.3));
    randomise(head, 41);
    const PerturbationBatch batch = check_batch();
    Tensor<double> H = random_tensor(Shape{N, d}, 42), h_cls = random_tensor(Shape{d}, 43);
    for (const Context& ctx : {Context::eval(), Context::train(9, 1)}) {
        auto r = testing::gradcheck([&] { return head.forward(h_cls.cview(), H.cview(), batch, ctx); },
                                    [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) { head.backward(dy, dxs[0], dxs[1]); },
                                    {&h_cls, &H}, testing::parameters_of(head));
        expect_gradcheck(r, ctx.training ? "non-equivariant head, training" : "non-equivariant head, eval");
    }
    BOOST_TEST(parameter_count<double>(head) == 4 * d * d + 4 * d + 2 * d * d + 2 * d + 1);
}

BOOST_AUTO_TEST_CASE(parameter_counts_match_the_spec_table) {
    CgtConfig cfg;  // d = 64, pert_heads = 8
    CrossAttentionTransform::module<float> tr(cfg);
    GeneInteractionReadout::module<float> gi(cfg);
    NonEquivariantHead::module<float> ne(cfg);
    BOOST_TEST(parameter_count<float>(tr) == 49984);
    BOOST_TEST(parameter_count<float>(gi) == 8321);
    BOOST_TEST(parameter_count<float>(ne) == 24961);
    std::vector<std::string> names;
    tr.visit_parameters([&](std::string_view n, Parameter<float>&) { names.emplace_back(n); });
    BOOST_TEST((names == std::vector<std::string>{"perturbation_transform.cross_attn.in_proj_weight", "perturbation_transform.cross_attn.in_proj_bias",
                                                  "perturbation_transform.cross_attn.out_proj.weight", "perturbation_transform.cross_attn.out_proj.bias",
                                                  "perturbation_transform.ffn.0.weight", "perturbation_transform.ffn.0.bias",
                                                  "perturbation_transform.ffn.3.weight", "perturbation_transform.ffn.3.bias",
                                                  "perturbation_transform.norm1.weight", "perturbation_transform.norm1.bias",
                                                  "perturbation_transform.norm2.weight", "perturbation_transform.norm2.bias"}));
    // reset_parameters: xavier-uniform in_proj within its bound, zero in_proj and out_proj biases.
    Generator g(3);
    tr.reset_parameters(g);
    const double bound = std::sqrt(6.0 / (64.0 + 192.0));
    float mx = 0.0f;
    for (index_t i = 0; i < tr.in_proj_weight.numel(); ++i) mx = std::max(mx, std::abs(tr.in_proj_weight.value[i]));
    BOOST_TEST(mx <= bound);
    BOOST_TEST(mx > 0.9 * bound);
    for (index_t i = 0; i < tr.in_proj_bias.numel(); ++i) BOOST_TEST(tr.in_proj_bias.value[i] == 0.0f);
    for (index_t i = 0; i < 64; ++i) BOOST_TEST(tr.out_proj.bias.value[i] == 0.0f);
}

BOOST_AUTO_TEST_CASE(empty_sets_give_zero_attention_and_still_apply_ln_ffn_ln) {
    // Every set empty: H_pert[b, g] = LN2(x + FFN(x)), x = LN1(h_g), computed here directly.
    const index_t N = 5, d = 8;
    CrossAttentionTransform::module<double> tr(small_config(N, d, 2));
    randomise(tr, 51);
    const Tensor<double> H = random_tensor(Shape{N, d}, 52);
    const PerturbationBatch batch = PerturbationBatch::from_sets({{}, {}});
    auto rows = tr.forward(H.cview(), batch, RowNeed::all, nullptr, Context::eval());
    auto ln = [&](const std::vector<double>& x, const nn::LayerNorm<double>& n) {
        double mean = 0, var = 0;
        for (double v : x) mean += v / static_cast<double>(d);
        for (double v : x) var += (v - mean) * (v - mean) / static_cast<double>(d);
        std::vector<double> y(x.size());
        for (index_t j = 0; j < d; ++j) y[j] = (x[j] - mean) / std::sqrt(var + 1e-5) * n.weight.value[j] + n.bias.value[j];
        return y;
    };
    auto lin = [](const std::vector<double>& x, const nn::Linear<double>& l) {
        std::vector<double> y(static_cast<std::size_t>(l.out_features()));
        for (index_t o = 0; o < l.out_features(); ++o) {
            y[o] = l.bias.value[o];
            for (index_t i = 0; i < l.in_features(); ++i) y[o] += l.weight.value(o, i) * x[i];
        }
        return y;
    };
    double worst = 0.0;
    for (index_t b = 0; b < 2; ++b)
        for (index_t g = 0; g < N; ++g) {
            std::vector<double> h(H.data() + g * d, H.data() + (g + 1) * d);
            const auto x = ln(h, tr.norm1);
            auto f = lin(x, tr.ffn0);
            for (double& v : f) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
            f = lin(f, tr.ffn3);
            for (index_t j = 0; j < d; ++j) f[j] += x[j];
            const auto y = ln(f, tr.norm2);
            for (index_t j = 0; j < d; ++j) worst = std::max(worst, std::abs(y[j] - rows.values(rows.row_of(b, g), j)));
        }
    BOOST_TEST(worst < 1e-12, "empty sets: max abs error " << worst);
    // No keys anywhere: the attention's parameters get exactly zero gradient.
    auto drows = rows.zeros_like();
    drows.values = random_tensor(rows.values.shape(), 53);
    Tensor<double> dH(H.shape());
    tr.backward(drows, dH.view());
    for (auto* p : {&tr.in_proj_weight, &tr.in_proj_bias, &tr.out_proj.weight, &tr.out_proj.bias})
        for (index_t i = 0; i < p->numel(); ++i) BOOST_REQUIRE(p->grad[i] == 0.0);
    // A dRows of another layout is rejected.
    auto wrong = PerturbedRows<double>::layout(batch, N, d, RowNeed::perturbed);
    BOOST_CHECK_THROW(tr.backward(wrong, dH.view()), ShapeError);
}

/// GI readout on the sparse path vs on the all-rows path: y, every parameter gradient, dH_genes, dh_cls.
template <class Readout>
double sparse_vs_all_rows(const Context& ctx, CgtConfig cfg, const PerturbationBatch& batch, const GeneSetList* sets) {
    const index_t N = cfg.num_genes, d = cfg.d_model;
    struct Run {
        Tensor<double> y, dH, dh_cls;
        std::map<std::string, Tensor<double>> grads;
        index_t rows = 0;
    };
    const Tensor<double> H = random_tensor(Shape{N, d}, 61), h_cls = random_tensor(Shape{d}, 62);
    auto run = [&](RowNeedSet need) {
        CrossAttentionTransform::module<double> tr(cfg);
        typename Readout::template module<double> head(cfg);
        randomise(tr, 63);
        randomise(head, 64);
        if constexpr (std::is_same_v<Readout, GeneSetReadout>) head.set_gene_sets(*sets);
        Run r;
        auto rows = tr.forward(H.cview(), batch, need, sets, ctx);
        r.rows = rows.rows();
        r.y = head.forward(h_cls.cview(), rows, batch, ctx);
        auto drows = rows.zeros_like();
        r.dH = Tensor<double>(H.shape());
        r.dh_cls = Tensor<double>(h_cls.shape());
        const Tensor<double> dy = random_tensor(r.y.shape(), 65);
        head.backward(dy.cview(), r.dh_cls.view(), drows);
        tr.backward(drows, r.dH.view());
        tr.visit_parameters([&](std::string_view n, Parameter<double>& p) { r.grads[std::string(n)] = p.grad; });
        head.visit_parameters([&](std::string_view n, Parameter<double>& p) { r.grads[std::string(n)] = p.grad; });
        return r;
    };
    const Run sparse = run(RowNeedSet(Readout::rows)), all = run(RowNeed::all);
    BOOST_TEST(all.rows == batch.batch_size() * N);
    BOOST_TEST(sparse.rows < all.rows / 2);
    double worst = std::max({relative_difference(sparse.y, all.y, 1e-6).max_error, relative_difference(sparse.dH, all.dH, 1e-6).max_error,
                             relative_difference(sparse.dh_cls, all.dh_cls, 1e-6).max_error});
    for (const auto& [n, g] : all.grads) {
        // Normwise per tensor: the key bias's gradient is zero up to rounding (softmax ignores a shift).
        double scale = 1e-6;
        for (index_t i = 0; i < g.numel(); ++i) scale = std::max(scale, std::abs(g[i]));
        const auto e = relative_difference(sparse.grads.at(n), g, scale);
        BOOST_TEST(e.max_error <= 1e-12, n << ": " << e.str());
        worst = std::max(worst, e.max_error);
    }
    BOOST_TEST(worst <= 1e-12);
    return worst;
}

BOOST_AUTO_TEST_CASE(rows_on_demand_equal_the_all_rows_path) {
    CgtConfig cfg = small_config(40, 16, 4, 0.2);
    const PerturbationBatch batch = PerturbationBatch::from_sets({{3, 17}, {5, 5}, {}, {17, 8, 21}, {39}});
    const GeneSetList sets = GeneSetList::from_sets({{1, 4, 9}, {}, {7, 7, 12, 28}});
    for (GiPooling pool : {GiPooling::mean, GiPooling::sum}) {
        cfg.gi_pooling = pool;
        const double e_eval = sparse_vs_all_rows<GeneInteractionReadout>(Context::eval(), cfg, batch, nullptr);
        const double e_train = sparse_vs_all_rows<GeneInteractionReadout>(Context::train(17, 5), cfg, batch, nullptr);
        BOOST_TEST_MESSAGE(fmt::format("GI ({}) sparse vs all rows: max rel. difference eval {:.2e}, training {:.2e}",
                                       pool == GiPooling::mean ? "mean" : "sum", e_eval, e_train));
    }
    const double e_gs = sparse_vs_all_rows<GeneSetReadout>(Context::train(17, 6), cfg, batch, &sets);
    BOOST_TEST_MESSAGE(fmt::format("gene-set readout sparse vs all rows (training): max rel. difference {:.2e}", e_gs));
}

BOOST_AUTO_TEST_CASE(gi_only_path_allocates_far_less_than_b_n_d) {
    const index_t N = 2000, d = 32, Bn = 8;
    CgtConfig cfg = small_config(N, d, 4);
    std::vector<std::vector<index_t>> sets;
    CounterRng rng(71);
    for (index_t b = 0; b < Bn; ++b) {
        std::vector<index_t> s;
        for (index_t k = 0; k <= b % 3; ++k) s.push_back(static_cast<index_t>(rng.below(static_cast<std::uint64_t>(b * 3 + k), N)));
        sets.push_back(s);
    }
    const PerturbationBatch batch = PerturbationBatch::from_sets(sets);
    const Tensor<float> H = random_tensor<float>(Shape{N, d}, 72), h_cls = random_tensor<float>(Shape{d}, 73);
    const double bnd_bytes = static_cast<double>(Bn * N * d) * sizeof(float);
    auto peak_of = [&](RowNeedSet need, Tensor<float>& y, Tensor<float>& dH) {
        CrossAttentionTransform::module<float> tr(cfg);
        GeneInteractionReadout::module<float> gi(cfg);
        Generator g(74);
        tr.reset_parameters(g);
        gi.reset_parameters(g);
        Tensor<float> dh_cls(Shape{d});
        const Tensor<float> dy = random_tensor<float>(Shape{Bn, 1}, 75);
        auto& stats = memory_stats<cpu>();
        stats.reset_peak();
        const std::size_t before = stats.live.load();
        {
            auto rows = tr.forward(H.cview(), batch, need, nullptr, Context::train(3, 1));
            y = gi.forward(h_cls.cview(), rows, batch, Context::train(3, 1));
            auto drows = rows.zeros_like();
            gi.backward(dy.cview(), dh_cls.view(), drows);
            tr.backward(drows, dH.view());
        }
        return static_cast<double>(stats.peak.load() - before);
    };
    Tensor<float> y_sparse, y_all, dH_sparse(Shape{N, d}), dH_all(Shape{N, d});
    const double sparse = peak_of(RowNeed::perturbed, y_sparse, dH_sparse);
    const double all = peak_of(RowNeed::all, y_all, dH_all);
    BOOST_TEST_MESSAGE(fmt::format("N={} B={} d={}: B*N*d = {:.0f} KB; tensor peak of forward+backward: GI-only {:.1f} KB, all rows {:.0f} KB",
                                   N, Bn, d, bnd_bytes / 1024, sparse / 1024, all / 1024));
    BOOST_TEST(sparse < 0.05 * bnd_bytes);
    BOOST_TEST(all > bnd_bytes);  // the measurement sees the B×N×d buffers when they exist
    BOOST_TEST(relative_difference(y_sparse, y_all, 1e-3).max_error < 1e-5);
    BOOST_TEST(relative_difference(dH_sparse, dH_all, 1e-3).max_error < 1e-4);
}

BOOST_AUTO_TEST_CASE(multitask_loss_values_masks_and_gradients) {
    using loss::PhenotypeLoss;
    loss::MultiTaskLoss<double> mtl({{"gi", 2.0, PhenotypeLoss::mse}, {"fitness", 0.5, PhenotypeLoss::log_cosh}, {"none", 3.0, PhenotypeLoss::mse}});
    Tensor<double> p_gi = Tensor<double>::from(Shape{4, 1}, {0.3, -1.2, 0.7, 2.0});
    const Tensor<double> y_gi = Tensor<double>::from(Shape{4, 1}, {0.1, 0.4, kNaN, 1.5});
    Tensor<double> p_fit = Tensor<double>::from(Shape{4, 3}, {0.5, 1.0, -2.0, 0.2, 0.3, 0.4, 3.0, -3.0, 1.0, 0.0, 9.0, 9.0});
    const Tensor<double> y_fit = Tensor<double>::from(Shape{4, 3}, {0.0, 1.5, -1.0, kNaN, 0.1, 1.4, 2.0, -2.5, 0.0, 5.0, 5.0, 5.0});
    const Tensor<double> m_fit = Tensor<double>::from(Shape{4}, {1, 1, 1, 0});  // sample 3 has no fitness label
    Tensor<double> p_none = Tensor<double>::from(Shape{4}, {1, 2, 3, 4});
    const Tensor<double> y_none = Tensor<double>::full(Shape{4}, kNaN);
    auto total = [&] {
        return mtl.forward({{p_gi.cview(), y_gi.cview()}, {p_fit.cview(), y_fit.cview(), m_fit.cview()}, {p_none.cview(), y_none.cview()}})[0];
    };
    const double L = total();
    // Closed forms: GI = mean over samples 0, 1, 3 of r²; fitness = mean over samples 0, 1, 2 of the mean
    // log cosh over each sample's labelled outputs (sample 1 has two).
    const double gi = (0.2 * 0.2 + 1.6 * 1.6 + 0.5 * 0.5) / 3.0;
    auto lc = [](double r) { return std::log(std::cosh(r)); };
    const double fit = ((lc(0.5) + lc(-0.5) + lc(-1.0)) / 3.0 + (lc(0.2) + lc(-1.0)) / 2.0 + (lc(1.0) + lc(-0.5) + lc(1.0)) / 3.0) / 3.0;
    BOOST_TEST(std::abs(mtl.task_value(0) - gi) < 1e-14);
    BOOST_TEST(std::abs(mtl.task_value(1) - fit) < 1e-14);
    BOOST_TEST(mtl.task_value(2) == 0.0);
    BOOST_TEST(mtl.labelled_samples(0) == 3);
    BOOST_TEST(mtl.labelled_samples(1) == 3);
    BOOST_TEST(mtl.labelled_samples(2) == 0);
    BOOST_TEST(std::abs(L - (2.0 * gi + 0.5 * fit)) < 1e-14);

    // Gradients (added, scaled by dloss) against central differences; unlabelled entries exactly 0.
    const double s = 1.5;
    Tensor<double> dgi = Tensor<double>::full(p_gi.shape(), 10.0), dfit = Tensor<double>::full(p_fit.shape(), 10.0),
                   dnone = Tensor<double>::full(p_none.shape(), 10.0);
    mtl.backward(Tensor<double>::full(Shape{}, s).cview(), {dgi.view(), dfit.view(), dnone.view()});
    double worst = 0.0;
    for (auto [p, g] : {std::pair{&p_gi, &dgi}, std::pair{&p_fit, &dfit}, std::pair{&p_none, &dnone}})
        for (index_t i = 0; i < p->numel(); ++i) {
            const double v = (*p)[i], h = 1e-6;
            (*p)[i] = v + h;
            const double lp = total();
            (*p)[i] = v - h;
            const double lm = total();
            (*p)[i] = v;
            const double fd = s * (lp - lm) / (2 * h), an = (*g)[i] - 10.0;
            worst = std::max(worst, std::abs(fd - an) / std::max(std::abs(fd), 1e-2));
        }
    BOOST_TEST(worst < 1e-8, "loss gradient vs finite differences: " << worst);
    BOOST_TEST_MESSAGE("multi-task loss gradient vs finite differences: max rel. error " << worst);
    BOOST_TEST(dgi[2] == 10.0);                                          // NaN label
    for (index_t k = 0; k < 3; ++k) BOOST_TEST(dfit[9 + k] == 10.0);     // masked sample
    BOOST_TEST(dfit[3] == 10.0);                                         // NaN output of a labelled sample
    for (index_t i = 0; i < 4; ++i) BOOST_TEST(dnone[i] == 10.0);        // task without labels

    // A missing label adds no value: any prediction there (even NaN) leaves the loss unchanged.
    p_gi[2] = kNaN;
    p_fit[10] = 1e6;
    p_none[0] = kNaN;
    BOOST_TEST(total() == L);
}

BOOST_AUTO_TEST_CASE(log_cosh_is_stable_and_float_agrees) {
    using loss::PhenotypeLoss;
    loss::MultiTaskLoss<float> mtl({{"t", 1.0, PhenotypeLoss::log_cosh}});
    const Tensor<float> p = Tensor<float>::from(Shape{3}, {800.0f, -800.0f, 1e-4f}), y(Shape{3});
    const double L = mtl.forward({{p.cview(), y.cview()}})[0];
    BOOST_TEST(std::isfinite(std::log(std::cosh(800.0))) == false);  // the naive form overflows
    const double expect = (2.0 * (800.0 - std::log(2.0)) + 0.5e-8) / 3.0;
    BOOST_TEST(std::abs(L - expect) / expect < 1e-6);
    Tensor<float> g(Shape{3});
    mtl.backward(Tensor<float>::full(Shape{}, 1.0f).cview(), {g.view()});
    BOOST_TEST(std::abs(g[0] - 1.0f / 3.0f) < 1e-7f);
    BOOST_TEST(std::abs(g[1] + 1.0f / 3.0f) < 1e-7f);
    BOOST_TEST(std::abs(g[2] - std::tanh(1e-4f) / 3.0f) < 1e-10f);
    BOOST_TEST(loss::phenotype_loss_value(PhenotypeLoss::log_cosh, 0.0) == 0.0);
    BOOST_TEST(std::abs(loss::phenotype_loss_value(PhenotypeLoss::log_cosh, 0.3) - std::log(std::cosh(0.3))) < 1e-16);
    BOOST_CHECK_THROW(loss::parse_phenotype_loss("huber"), ShapeError);
    BOOST_TEST((loss::parse_phenotype_loss("logcosh") == PhenotypeLoss::log_cosh));
    // Shape errors name the task.
    const Tensor<float> bad(Shape{2});
    try {
        mtl.forward({{p.cview(), bad.cview()}});
        BOOST_ERROR("a label of the wrong shape was accepted");
    } catch (const ShapeError& e) {
        BOOST_TEST(message_contains(e, "task 't'"), e.what());
    }
}

BOOST_AUTO_TEST_SUITE_END()
