// The State Transition model (models/state_transition.hpp): parity with the PyTorch reference
// (tools/fixtures/make_state_model.py, state_ref.StateTransitionRef) for both backbones with the
// confidence token, the gene decoder, the batch encoder, both residual modes and no residual —
// forward, every loss term, and the gradient of the total loss w.r.t. every parameter and input —
// in float64 and float32; central differences of every new layer and of the whole model (eval and
// training); permutation equivariance; other set lengths; the parameter counts of the state_sm /
// state / pertsets configurations; GPT-2 Conv1D weights through load and save; frozen embeddings.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "celltx/core/concepts.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/nn/confidence_head.hpp"
#include "celltx/nn/conv1d.hpp"
#include "celltx/nn/latent_to_gene_decoder.hpp"
#include "celltx/nn/gpt2_block.hpp"
#include "celltx/nn/llama_layer.hpp"
#include "celltx/policies/backbone/gpt2_backbone.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"

using namespace celltx;
using celltx::testing::gradcheck;
using celltx::testing::gradcheck_layer;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;

namespace {

// The three fixture configurations (tools/fixtures/make_state_model.py).
template <class T>
using LlamaModel = StateTransition<T, cpu, LlamaBackbone, EnergyLoss, ConfidenceToken, GeneDecoder, BatchEmbedding>;
template <class T>
using Gpt2Model = StateTransition<T, cpu, GPT2Backbone, CombinedLoss, ConfidenceToken>;
template <class T>
using NoResModel = StateTransition<T, cpu, LlamaBackbone, SinkhornLoss>;

static_assert(BackbonePolicy<LlamaBackbone, double> && BackbonePolicy<GPT2Backbone, float>);
static_assert(!BackbonePolicy<EnergyLoss> && !SetLossPolicy<LlamaBackbone> && !StateOption<EnergyLoss>);
static_assert(DistinctStateOptions<ConfidenceToken, GeneDecoder> && !DistinctStateOptions<GeneDecoder, ConfidenceToken, GeneDecoder>);
static_assert(Layer<nn::LlamaLayer<double>, double> && Layer<nn::GPT2Block<float>, float> && Layer<nn::Conv1D<double>, double> &&
              Layer<nn::ConfidenceHead<double>, double> && Layer<nn::LatentToGeneDecoder<float>, float>);

StateConfig llama_config() {
    StateConfig c;
    c.input_dim = c.output_dim = 12;
    c.pert_dim = 7;
    c.hidden = 16;
    c.n_encoder_layers = 3;
    c.n_decoder_layers = 2;
    c.cell_set_len = 5;
    c.batch_dim = 3;
    c.apply_relu = false;
    c.gene_dim = 9;
    c.decoder_hidden = {10, 8};
    c.l1_lambda = 0.05;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    c.backbone.kv_heads = 2;
    c.backbone.head_dim = 6;
    c.backbone.intermediate = 24;
    return c;
}
StateConfig gpt2_config() {
    StateConfig c;
    c.input_dim = c.output_dim = 16;
    c.pert_dim = 7;
    c.hidden = 16;
    c.n_encoder_layers = 2;
    c.n_decoder_layers = 2;
    c.cell_set_len = 5;
    c.output_space = OutputSpace::all;
    c.use_basal_projection = false;
    c.l1_lambda = 0.02;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    return c;
}
StateConfig nores_config() {
    StateConfig c;
    c.input_dim = 12;
    c.output_dim = 10;
    c.pert_dim = 7;
    c.hidden = 16;
    c.n_encoder_layers = 2;
    c.n_decoder_layers = 1;
    c.cell_set_len = 5;
    c.predict_residual = false;
    c.backbone.layers = 1;
    c.backbone.heads = 2;
    c.backbone.kv_heads = 1;
    c.backbone.head_dim = 8;
    c.backbone.intermediate = 20;
    return c;
}

std::string fixture_path(const std::string& name) { return std::string(CELLTX_FIXTURE_DIR) + "/state_model_" + name + ".safetensors"; }

template <class M>
io::LoadReport load_checkpoint(M& m, const std::string& name) {
    io::LoadOptions opt;
    opt.ignore = M::is_frozen_key;
    return io::load_state_dict(m, fixture_path(name), opt);
}

double max_abs(const Tensor<double>& t) {
    double m = 0.0;
    for (index_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t[i]));
    return m;
}

/// Relative difference with the floor at `fraction` of the reference's largest magnitude (entries
/// far below the tensor's scale are judged absolutely).
template <class A>
testing::Difference diff(const Tensor<A>& got, const Tensor<double>& ref, double fraction = 1e-6) {
    if (got.numel() != ref.numel()) return {std::numeric_limits<double>::infinity(), -1, 0.0, 0.0};
    return relative_difference(got.data(), ref.data(), ref.numel(), std::max(fraction * max_abs(ref), 1e-300));
}

double scalar(const io::SafetensorsFile& f, const std::string& name) { return f.load<double>(name)[0]; }
double rel(double a, double b) { return std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-12}); }

struct ParityErrors {
    double forward = 0.0, loss = 0.0, grad = 0.0;
    double grad_vs_f64 = 0.0;  ///< float32 only: against the float64 fixture (the exact gradient)
};

/// Loads checkpoint `name`, runs the fixture's inputs in precision T (train_step, or forward +
/// loss + backward), and returns the largest relative errors of the outputs, the loss terms and
/// the gradients (every parameter and both inputs). Every parameter must have a fixture gradient.
/// Outputs are compared element-wise (floor 1e-6 of the tensor's scale). Gradients too in float64;
/// in float32 relative to each tensor's largest entry, because PyTorch's own float32 gradients
/// are only that accurate: against the float64 ones they differ by up to 1.1e-4 of a tensor's
/// scale but by 3% on entries 1000 times smaller (softmax and energy-distance cancellations).
template <class M>
ParityErrors parity(const std::string& name, M& m, bool via_train_step) {
    using T = typename M::value_type;
    constexpr bool f64 = std::is_same_v<T, double>;
    const double grad_floor = f64 ? 1e-6 : 1.0;
    const auto report = load_checkpoint(m, name);
    BOOST_TEST(report.missing.empty());
    const io::SafetensorsFile f(fixture_path(name + (f64 ? "_f64" : "_f32"))), exact(fixture_path(name + "_f64"));
    const Tensor<T> pert = f.load<T>("pert"), ctrl = f.load<T>("ctrl"), target = f.load<T>("target");
    std::vector<index_t> batch;
    if (f.contains("batch")) batch = f.load_values<index_t>("batch");
    Tensor<T> gene_target;
    if (f.contains("gene_target")) gene_target = f.load<T>("gene_target");
    Tensor<T> dpert(pert.shape()), dctrl(ctrl.shape());
    ParityErrors e;

    StatePrediction<T> out = m.forward(pert.cview(), ctrl.cview(), batch, Context::eval());
    StateLossValues v;
    if (via_train_step) {
        v = m.train_step(pert.cview(), ctrl.cview(), target.cview(), gene_target.cview(), batch, Context::eval());
    } else {
        v = m.loss(target.cview(), gene_target.cview());
        m.backward(dpert.view(), dctrl.view());
    }
    auto fwd = [&](const Tensor<T>& got, const char* key) {
        const auto d = diff(got, f.load<double>(key));
        BOOST_TEST_MESSAGE(name << " " << key << ": " << d.str());
        e.forward = std::max(e.forward, d.max_error);
    };
    fwd(out.pred, "pred");
    if constexpr (M::has_confidence_token) fwd(out.confidence, "conf");
    if constexpr (M::has_gene_decoder) fwd(out.genes, "genes");
    const std::map<std::string, double> terms{{"loss.total", v.total}, {"loss.main", v.main}, {"loss.decoder", v.decoder},
                                              {"loss.confidence", v.confidence}, {"loss.l1", v.l1}};
    for (const auto& [key, value] : terms)
        if (f.contains(key)) {
            BOOST_TEST_MESSAGE(name << " " << key << ": " << value << " vs " << scalar(f, key));
            e.loss = std::max(e.loss, rel(value, scalar(f, key)));
        }
    const Tensor<double> per_set = f.load<double>("loss.per_set");
    BOOST_TEST(static_cast<index_t>(v.per_set.size()) == per_set.numel());
    for (index_t b = 0; b < per_set.numel() && b < static_cast<index_t>(v.per_set.size()); ++b)
        e.loss = std::max(e.loss, rel(v.per_set[static_cast<std::size_t>(b)], per_set[b]));

    int params = 0;
    m.visit_parameters([&](const std::string& pname, Parameter<T>& p) {
        ++params;
        BOOST_TEST_REQUIRE(f.contains("grad." + pname), "no fixture gradient for " << pname);
        const auto d = diff(p.grad, f.load<double>("grad." + pname), grad_floor);
        if (d.max_error > e.grad) BOOST_TEST_MESSAGE(name << " grad." << pname << ": " << d.str());
        e.grad = std::max(e.grad, d.max_error);
        if (!f64) e.grad_vs_f64 = std::max(e.grad_vs_f64, diff(p.grad, exact.load<double>("grad." + pname), grad_floor).max_error);
    });
    BOOST_TEST(params == static_cast<int>(report.loaded.size()));
    if (!via_train_step) {
        for (const auto& [g, key] : {std::pair{&dpert, "grad.pert"}, std::pair{&dctrl, "grad.ctrl"}}) {
            e.grad = std::max(e.grad, diff(*g, f.load<double>(key), grad_floor).max_error);
            if (!f64) e.grad_vs_f64 = std::max(e.grad_vs_f64, diff(*g, exact.load<double>(key), grad_floor).max_error);
        }
    }
    return e;
}

template <class M>
void check_parity(const std::string& name, const StateConfig& cfg) {
    for (bool via_train_step : {false, true}) {
        M m(cfg);
        const ParityErrors e = parity(name, m, via_train_step);
        const bool f64 = std::is_same_v<typename M::value_type, double>;
        BOOST_TEST_MESSAGE(name << (f64 ? " float64" : " float32") << (via_train_step ? " train_step" : "") << ": forward " << e.forward
                                << ", loss " << e.loss << ", gradients " << e.grad
                                << (f64 ? "" : " (against float64: " + std::to_string(e.grad_vs_f64) + ")"));
        BOOST_TEST(e.forward <= (f64 ? 1e-10 : 1e-4), name << " forward error " << e.forward);
        BOOST_TEST(e.loss <= (f64 ? 1e-10 : 1e-4), name << " loss error " << e.loss);
        BOOST_TEST(e.grad <= (f64 ? 1e-8 : 1e-3), name << " gradient error " << e.grad);
        BOOST_TEST(e.grad_vs_f64 <= 1e-3, name << " float32 gradient error against float64 " << e.grad_vs_f64);
    }
}

// ---- concatenation helpers for gradchecks of multi-output modules ----

Tensor<double> concat(std::initializer_list<const Tensor<double>*> parts) {
    index_t n = 0;
    for (const auto* p : parts) n += p->numel();
    Tensor<double> out(Shape{n});
    index_t at = 0;
    for (const auto* p : parts)
        for (index_t i = 0; i < p->numel(); ++i) out[at++] = (*p)[i];
    return out;
}

/// A tiny model of type M: random weights (nn defaults), a positive bias before every final ReLU.
template <class M>
M tiny_model(const StateConfig& c, std::uint64_t seed) {
    M m(c);
    Generator g(seed);
    m.reset_parameters(g);
    if constexpr (M::has_confidence_token) m.confidence_token.confidence_projection.lin8.bias.value.fill(1.0);
    if constexpr (M::has_gene_decoder) m.gene_decoder.linears.back().bias.value.fill(1.0);
    return m;
}

StateConfig tiny_config() {
    StateConfig c;
    c.input_dim = c.output_dim = 5;
    c.pert_dim = 4;
    c.hidden = 12;
    c.n_encoder_layers = 2;
    c.n_decoder_layers = 2;
    c.cell_set_len = 3;
    c.batch_dim = 2;
    c.apply_relu = false;
    c.gene_dim = 4;
    c.decoder_hidden = {6};
    c.l1_lambda = 0.1;
    c.backbone.layers = 1;
    c.backbone.heads = 2;
    c.backbone.kv_heads = 1;
    c.backbone.head_dim = 3;
    c.backbone.intermediate = 12;
    return c;
}

/// Under Context::inference() the model predicts the bits of a keeping forward, holds no tensor
/// but its outputs (memory_stats), and loss()/backward() then throw; release_gradients frees every
/// gradient and the next training step assigns the same gradients again.
template <class M>
void check_inference_mode(const StateConfig& c, std::uint64_t seed) {
    M m = tiny_model<M>(c, seed);
    const index_t n = 2 * c.cell_set_len;
    const Tensor<double> pert = random_tensor(Shape{n, c.pert_dim}, seed + 1), ctrl = random_tensor(Shape{n, c.input_dim}, seed + 2);
    const Tensor<double> target = random_tensor(Shape{n, c.out_dim()}, seed + 3);
    std::vector<index_t> batch;
    if constexpr (M::has_batch_embedding)
        for (index_t i = 0; i < n; ++i) batch.push_back(i % c.batch_dim);
    const auto gradients = [&] {
        std::map<std::string, Tensor<double>> g;
        m.visit_parameters([&](const std::string& name, Parameter<double>& p) { g[name] = p.grad; });
        return g;
    };
    const auto bytes = [](const StatePrediction<double>& o) {
        return sizeof(double) * static_cast<std::size_t>(o.pred.numel() + o.confidence.numel() + o.genes.numel());
    };
    const auto names_inference = [](const Error& e) { return std::string(e.what()).find("Context::inference()") != std::string::npos; };

    const StatePrediction<double> kept = m.forward(pert.cview(), ctrl.cview(), batch, Context::eval());
    m.loss(target.cview());
    m.backward();
    const auto g_before = gradients();

    auto& stats = memory_stats<cpu>();
    std::size_t before = stats.live.load();
    StatePrediction<double> out = m.forward(pert.cview(), ctrl.cview(), batch, Context::inference());
    BOOST_TEST(stats.live.load() < before + bytes(out));  // what the keeping forward saved is released
    BOOST_TEST(std::memcmp(out.pred.data(), kept.pred.data(), sizeof(double) * kept.pred.numel()) == 0);
    BOOST_TEST(std::memcmp(out.confidence.data(), kept.confidence.data(), sizeof(double) * kept.confidence.numel()) == 0);
    BOOST_TEST(std::memcmp(out.genes.data(), kept.genes.data(), sizeof(double) * kept.genes.numel()) == 0);
    before = stats.live.load() - bytes(out);
    out = m.forward(pert.cview(), ctrl.cview(), batch, Context::inference());
    BOOST_TEST(stats.live.load() == before + bytes(out));  // the outputs, nothing else
    const std::size_t inference_held = stats.live.load() - before;
    out = m.forward(pert.cview(), ctrl.cview(), batch, Context::eval());
    BOOST_TEST(stats.live.load() - before > inference_held);  // a keeping forward holds its activations
    m.forward(pert.cview(), ctrl.cview(), batch, Context::inference());
    BOOST_CHECK_EXCEPTION(m.loss(target.cview()), Error, names_inference);
    BOOST_CHECK_EXCEPTION(m.backward(kept.pred.cview(), kept.confidence.cview(), kept.genes.cview()), Error, names_inference);

    release_gradients(m);
    m.visit_parameters([&](const std::string& name, Parameter<double>& p) { BOOST_TEST(p.grad.data() == nullptr, name); });
    m.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, batch, Context::eval());
    const auto g_after = gradients();
    BOOST_TEST(g_after.size() == g_before.size());
    for (const auto& [name, g] : g_before) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST(g_after.at(name).shape() == g.shape());
            BOOST_TEST(std::memcmp(g_after.at(name).data(), g.data(), sizeof(double) * g.numel()) == 0);
        }
    }
}

} // namespace

BOOST_AUTO_TEST_SUITE(state_model)

BOOST_AUTO_TEST_CASE(llama_with_confidence_decoder_and_batch_matches_pytorch) {
    check_parity<LlamaModel<double>>("llama", llama_config());
    check_parity<LlamaModel<float>>("llama", llama_config());
}

BOOST_AUTO_TEST_CASE(gpt2_all_space_with_confidence_matches_pytorch) {
    check_parity<Gpt2Model<double>>("gpt2", gpt2_config());
    check_parity<Gpt2Model<float>>("gpt2", gpt2_config());
}

BOOST_AUTO_TEST_CASE(no_residual_with_sinkhorn_matches_pytorch) {
    check_parity<NoResModel<double>>("nores", nores_config());
    check_parity<NoResModel<float>>("nores", nores_config());
}

BOOST_AUTO_TEST_CASE(prediction_at_other_set_lengths) {
    LlamaModel<double> m(llama_config());
    load_checkpoint(m, "llama");
    const io::SafetensorsFile f(fixture_path("llama_f64"));
    // 3 sets of 3 cells as rank-3 inputs (the config's cell_set_len is 5).
    const Tensor<double> pert = f.load<double>("s3.pert"), ctrl = f.load<double>("s3.ctrl");
    const std::vector<index_t> batch = f.load_values<index_t>("s3.batch");
    const auto out = m.forward(pert.reshaped(Shape{3, 3, 7}), ctrl.reshaped(Shape{3, 3, 12}), batch);
    BOOST_TEST(out.pred.shape() == (Shape{3, 3, 12}));
    BOOST_TEST(out.confidence.shape() == (Shape{3, 1}));
    BOOST_TEST(out.genes.shape() == (Shape{3, 3, 9}));
    const auto ep = diff(out.pred, f.load<double>("s3.pred")), ec = diff(out.confidence, f.load<double>("s3.conf")),
               eg = diff(out.genes, f.load<double>("s3.genes"));
    BOOST_TEST_MESSAGE("set length 3: pred " << ep.str() << "; conf " << ec.str() << "; genes " << eg.str());
    BOOST_TEST(ep.max_error <= 1e-10);
    BOOST_TEST(ec.max_error <= 1e-10);
    BOOST_TEST(eg.max_error <= 1e-10);
    // Flat inputs are split by cell_set_len: 9 cells are not sets of 5.
    BOOST_CHECK_THROW(m.forward(pert.cview(), ctrl.cview(), batch), ShapeError);
    // One set of 9 cells: its predictions agree with the cells' rows of a batch holding that set twice.
    const auto one = m.forward(pert.reshaped(Shape{1, 9, 7}), ctrl.reshaped(Shape{1, 9, 12}), batch);
    Tensor<double> p2(Shape{2, 9, 7}), c2(Shape{2, 9, 12});
    for (index_t i = 0; i < 2 * 63; ++i) p2[i] = pert[i % 63];
    for (index_t i = 0; i < 2 * 108; ++i) c2[i] = ctrl[i % 108];
    std::vector<index_t> b2 = batch;
    b2.insert(b2.end(), batch.begin(), batch.end());
    const auto two = m.forward(p2.cview(), c2.cview(), b2);
    double worst = 0.0;
    for (index_t i = 0; i < two.pred.numel(); ++i) worst = std::max(worst, std::abs(two.pred[i] - one.pred[i % one.pred.numel()]));
    BOOST_TEST(worst <= 1e-14);
}

BOOST_AUTO_TEST_CASE(permutation_equivariance_over_the_cells_of_a_set) {
    for (int model = 0; model < 2; ++model) {
        const io::SafetensorsFile f(fixture_path(model == 0 ? "llama_f64" : "gpt2_f64"));
        const Tensor<double> pert = f.load<double>("pert"), ctrl = f.load<double>("ctrl");
        const index_t S = 5, P = pert.size(1), I = ctrl.size(1);
        std::vector<index_t> batch = model == 0 ? f.load_values<index_t>("batch") : std::vector<index_t>{};
        const index_t perm[2][5] = {{3, 0, 4, 1, 2}, {1, 2, 0, 4, 3}};  // a different permutation per set
        Tensor<double> pp(pert.shape()), cp(ctrl.shape());
        std::vector<index_t> bp(batch.size());
        for (index_t b = 0; b < 2; ++b)
            for (index_t i = 0; i < S; ++i) {
                const index_t src = b * S + perm[b][i], dst = b * S + i;
                for (index_t k = 0; k < P; ++k) pp(dst, k) = pert(src, k);
                for (index_t k = 0; k < I; ++k) cp(dst, k) = ctrl(src, k);
                if (!batch.empty()) bp[static_cast<std::size_t>(dst)] = batch[static_cast<std::size_t>(src)];
            }
        auto check = [&](auto& m) {
            load_checkpoint(m, model == 0 ? "llama" : "gpt2");
            const auto a = m.forward(pert.cview(), ctrl.cview(), batch);
            const auto b = m.forward(pp.cview(), cp.cview(), bp);
            const index_t O = a.pred.size(1);
            double worst = 0.0;
            for (index_t s = 0; s < 2; ++s)
                for (index_t i = 0; i < S; ++i)
                    for (index_t k = 0; k < O; ++k)
                        worst = std::max(worst, std::abs(b.pred(s * S + i, k) - a.pred(s * S + perm[s][i], k)));
            for (index_t s = 0; s < 2; ++s) worst = std::max(worst, std::abs(a.confidence[s] - b.confidence[s]));
            BOOST_TEST_MESSAGE((model == 0 ? "llama" : "gpt2") << " permutation: max |difference| " << worst);
            BOOST_TEST(worst <= 1e-12);
        };
        if (model == 0) {
            LlamaModel<double> m(llama_config());
            check(m);
        } else {
            Gpt2Model<double> m(gpt2_config());
            check(m);
        }
    }
}

BOOST_AUTO_TEST_CASE(gradcheck_of_each_new_layer) {
    Generator g(5);
    {  // grouped KV heads and a head width that is not d/heads
        nn::LlamaLayerConfig c;
        c.d_model = 8;
        c.num_heads = 4;
        c.num_kv_heads = 2;
        c.head_dim = 3;
        c.intermediate = 10;
        nn::LlamaLayer<double> l(c);
        l.reset_parameters(g);
        for (auto* n : {&l.input_layernorm, &l.post_attention_layernorm})
            for (index_t i = 0; i < 8; ++i) n->weight.value[i] = 1.0 + 0.3 * g.normal();
        const auto r = gradcheck_layer(l, random_tensor(Shape{2, 5, 8}, 1));
        BOOST_TEST_MESSAGE("LlamaLayer " << r.summary());
        BOOST_TEST(r.ok, "LlamaLayer " << r.summary());
    }
    {
        nn::GPT2BlockConfig c;
        c.d_model = 8;
        c.num_heads = 2;
        c.inner = 12;
        nn::GPT2Block<double> b(c);
        b.reset_parameters(g);
        b.visit_parameters([&](const std::string&, Parameter<double>& p) {
            for (index_t i = 0; i < p.numel(); ++i) p.value[i] += 0.3 * g.normal();
        });
        const auto r = gradcheck_layer(b, random_tensor(Shape{2, 4, 8}, 2));
        BOOST_TEST_MESSAGE("GPT2Block " << r.summary());
        BOOST_TEST(r.ok, "GPT2Block " << r.summary());
    }
    {
        nn::Conv1D<double> c(5, 3);
        c.reset_parameters(g, 0.5);
        for (index_t i = 0; i < 3; ++i) c.bias.value[i] = g.normal();
        const auto r = gradcheck_layer(c, random_tensor(Shape{2, 4, 5}, 3));
        BOOST_TEST_MESSAGE("Conv1D " << r.summary());
        BOOST_TEST(r.ok, "Conv1D " << r.summary());
    }
    {
        nn::ConfidenceHead<double> h(12);
        h.reset_parameters(g);
        h.lin8.bias.value[0] = 1.0;  // stay on the positive side of the final ReLU
        const auto r = gradcheck_layer(h, random_tensor(Shape{3, 12}, 4));
        BOOST_TEST_MESSAGE("ConfidenceHead " << r.summary());
        BOOST_TEST(r.ok, "ConfidenceHead " << r.summary());
    }
    {
        nn::LatentToGeneDecoder<double> d(6, 5, {7, 4});
        d.reset_parameters(g);
        const auto r = gradcheck_layer(d, random_tensor(Shape{2, 3, 6}, 5));
        BOOST_TEST_MESSAGE("GeneDecoder " << r.summary());
        BOOST_TEST(r.ok, "GeneDecoder " << r.summary());
    }
    {  // the two backbones, two layers each
        BackboneConfig c;
        c.hidden = 8;
        c.layers = 2;
        c.heads = 2;
        c.kv_heads = 1;
        c.head_dim = 5;
        c.intermediate = 6;
        backbone::Llama<double> l(c);
        l.reset_parameters(g);
        const auto r = gradcheck_layer(l, random_tensor(Shape{2, 3, 8}, 6));
        BOOST_TEST_MESSAGE("LlamaBackbone " << r.summary());
        BOOST_TEST(r.ok, "LlamaBackbone " << r.summary());
        c.kv_heads = 0;
        c.head_dim = 0;
        c.intermediate = 0;
        backbone::GPT2<double> gp(c);
        gp.reset_parameters(g);
        gp.visit_parameters([&](const std::string&, Parameter<double>& p) {
            for (index_t i = 0; i < p.numel(); ++i) p.value[i] += 0.3 * g.normal();
        });
        const auto r2 = gradcheck_layer(gp, random_tensor(Shape{2, 3, 8}, 7));
        BOOST_TEST_MESSAGE("GPT2Backbone " << r2.summary());
        BOOST_TEST(r2.ok, "GPT2Backbone " << r2.summary());
    }
}

BOOST_AUTO_TEST_CASE(gradcheck_of_the_whole_model_outputs_and_training_loss) {
    using M = LlamaModel<double>;
    // The confidence term regresses onto the DETACHED main loss, so its gradient is not the
    // derivative of the loss value: it is left out here (weight 0) and checked against PyTorch's
    // autograd in the parity tests.
    StateConfig c = tiny_config();
    c.confidence_weight = 0.0;
    Tensor<double> pert = random_tensor(Shape{6, 4}, 11), ctrl = random_tensor(Shape{6, 5}, 12);
    const Tensor<double> target = random_tensor(Shape{6, 5}, 13), gene_target = random_tensor(Shape{6, 4}, 14, 0.5);
    const std::vector<index_t> batch{0, 1, 1, 0, 1, 0};
    for (const Context ctx : {Context::eval(), Context::train(77, 3)}) {  // training: dropout 0.1 everywhere
        M m = tiny_model<M>(c, 21);
        auto params = testing::parameters_of(m);
        // 1. every output (pred, confidence, genes) w.r.t. every parameter and both inputs
        const auto r = gradcheck(
            [&] {
                const auto o = m.forward(pert.cview(), ctrl.cview(), batch, ctx);
                return concat({&o.pred, &o.confidence, &o.genes});
            },
            [&](ConstView<double> dy, std::vector<TensorView<double>>& dx) {
                const index_t np = 6 * 5, nc = 2;
                m.backward(ConstView<double>(dy.data(), Shape{6, 5}), ConstView<double>(dy.data() + np, Shape{2, 1}),
                           ConstView<double>(dy.data() + np + nc, Shape{6, 4}), dx[0], dx[1]);
            },
            {&pert, &ctrl}, params);
        BOOST_TEST_MESSAGE((ctx.training ? "training " : "eval ") << "outputs " << r.summary());
        BOOST_TEST(r.ok, (ctx.training ? "training " : "eval ") << "outputs " << r.summary());
        // 2. the training loss (energy + decoder + confidence + L1) w.r.t. every parameter and both inputs
        const auto rl = gradcheck(
            [&] {
                m.forward(pert.cview(), ctrl.cview(), batch, ctx);
                return Tensor<double>::full(Shape{1}, m.loss(target.cview(), gene_target.cview()).total);
            },
            [&](ConstView<double> dy, std::vector<TensorView<double>>& dx) {
                Tensor<double> dp(pert.shape()), dc(ctrl.shape());
                m.backward(dp.view(), dc.view());
                for (auto& [name, p] : params)
                    for (index_t i = 0; i < p->numel(); ++i) p->grad[i] *= dy[0];
                for (index_t i = 0; i < dp.numel(); ++i) dx[0][i] += dy[0] * dp[i];
                for (index_t i = 0; i < dc.numel(); ++i) dx[1][i] += dy[0] * dc[i];
            },
            {&pert, &ctrl}, params);
        BOOST_TEST_MESSAGE((ctx.training ? "training " : "eval ") << "loss " << rl.summary());
        BOOST_TEST(rl.ok, (ctx.training ? "training " : "eval ") << "loss " << rl.summary());
    }
    {  // GPT-2, output space "all", ReLU, one-Linear basal encoder
        using G = Gpt2Model<double>;
        StateConfig cg = gpt2_config();
        cg.input_dim = cg.output_dim = 8;
        cg.hidden = 12;
        cg.pert_dim = 4;
        cg.cell_set_len = 3;
        cg.backbone.layers = 1;
        cg.backbone.heads = 2;
        G m = tiny_model<G>(cg, 31);
        m.project_out.linears.back().bias.value.fill(0.0);
        for (index_t i = 0; i < 8; ++i) m.final_up.bias.value[i] = 2.0;  // keep the output ReLU open
        Tensor<double> p = random_tensor(Shape{6, 4}, 15), x = random_tensor(Shape{6, 8}, 16);
        const auto r = gradcheck(
            [&] {
                const auto o = m.forward(p.cview(), x.cview());
                return concat({&o.pred, &o.confidence});
            },
            [&](ConstView<double> dy, std::vector<TensorView<double>>& dx) {
                m.backward(ConstView<double>(dy.data(), Shape{6, 8}), ConstView<double>(dy.data() + 48, Shape{2, 1}), {}, dx[0], dx[1]);
            },
            {&p, &x}, testing::parameters_of(m));
        BOOST_TEST_MESSAGE("gpt2 all-space outputs " << r.summary());
        BOOST_TEST(r.ok, "gpt2 all-space outputs " << r.summary());
    }
}

BOOST_AUTO_TEST_CASE(mse_loss_policy_and_gpt2_hidden_residual_gradcheck) {
    using M = StateTransition<double, cpu, GPT2Backbone, MseLoss, BatchEmbedding>;
    StateConfig c = tiny_config();
    c.backbone = BackboneConfig{};
    c.backbone.layers = 1;
    c.backbone.heads = 3;
    c.backbone.intermediate = 10;  // n_inner
    c.apply_relu = false;
    M m = tiny_model<M>(c, 61);
    Tensor<double> pert = random_tensor(Shape{2, 3, 4}, 62), ctrl = random_tensor(Shape{2, 3, 5}, 63);
    const Tensor<double> target = random_tensor(Shape{2, 3, 5}, 64);
    const std::vector<index_t> batch{1, 0, 1, 1, 0, 0};
    auto params = testing::parameters_of(m);
    // the MSE policy: mean (pred - target)^2 + L1, against its own definition
    const auto out = m.forward(pert.cview(), ctrl.cview(), batch);
    const StateLossValues v = m.loss(target.cview());
    double mse = 0.0, l1 = 0.0;
    for (index_t i = 0; i < target.numel(); ++i) {
        mse += (out.pred[i] - target[i]) * (out.pred[i] - target[i]);
        l1 += std::abs(out.pred[i] - ctrl[i]);
    }
    BOOST_TEST(std::abs(v.main - mse / 30.0) <= 1e-14);
    BOOST_TEST(std::abs(v.l1 - 0.1 * l1 / 30.0) <= 1e-14);
    const auto r = gradcheck(
        [&] {
            m.forward(pert.cview(), ctrl.cview(), batch);
            return Tensor<double>::full(Shape{1}, m.loss(target.cview()).total);
        },
        [&](ConstView<double> dy, std::vector<TensorView<double>>& dx) {
            Tensor<double> dp(pert.shape()), dc(ctrl.shape());
            m.backward(dp.view(), dc.view());
            for (auto& [name, p] : params)
                for (index_t i = 0; i < p->numel(); ++i) p->grad[i] *= dy[0];
            for (index_t i = 0; i < dp.numel(); ++i) dx[0][i] += dy[0] * dp[i];
            for (index_t i = 0; i < dc.numel(); ++i) dx[1][i] += dy[0] * dc[i];
        },
        {&pert, &ctrl}, params);
    BOOST_TEST_MESSAGE("gpt2 + mse loss " << r.summary());
    BOOST_TEST(r.ok, r.summary());
}

BOOST_AUTO_TEST_CASE(a_detached_decoder_trains_only_itself) {
    using M = LlamaModel<double>;
    const Tensor<double> pert = random_tensor(Shape{6, 4}, 71), ctrl = random_tensor(Shape{6, 5}, 72);
    const Tensor<double> target = random_tensor(Shape{6, 5}, 73), genes = random_tensor(Shape{6, 4}, 74, 0.5);
    const std::vector<index_t> batch{0, 1, 1, 0, 1, 0};
    for (bool detach : {true, false}) {
        StateConfig c = tiny_config();
        c.detach_decoder = detach;
        M m = tiny_model<M>(c, 75);
        auto grads = [&](bool with_genes) {
            m.forward(pert.cview(), ctrl.cview(), batch);
            m.loss(target.cview(), with_genes ? genes.cview() : ConstView<double>());
            Tensor<double> dp(pert.shape());
            m.backward(dp.view(), {});
            std::map<std::string, Tensor<double>> g{{"pert", dp}};
            m.visit_parameters([&](const std::string& name, Parameter<double>& p) { g[name] = p.grad; });
            return g;
        };
        const auto without = grads(false), with = grads(true);
        double below = 0.0, decoder = 0.0, decoder_without = 0.0;
        for (const auto& [name, g] : with) {
            const double d = relative_difference(g, without.at(name)).max_error;
            if (name.starts_with("gene_decoder.")) {
                decoder = std::max(decoder, max_abs(g));
                decoder_without = std::max(decoder_without, max_abs(without.at(name)));
            } else {
                below = std::max(below, d);
            }
        }
        BOOST_TEST(decoder > 0.0);
        BOOST_TEST(decoder_without == 0.0);  // no gene target: the decoder's gradients are assigned zero
        if (detach) BOOST_TEST(below == 0.0);
        else BOOST_TEST(below > 1e-6);
    }
}

BOOST_AUTO_TEST_CASE(dropout_masks_follow_the_context) {
    using M = LlamaModel<double>;
    M m = tiny_model<M>(tiny_config(), 41);
    const Tensor<double> pert = random_tensor(Shape{6, 4}, 42), ctrl = random_tensor(Shape{6, 5}, 43);
    const std::vector<index_t> batch{0, 1, 0, 0, 1, 1};
    const auto a = m.forward(pert.cview(), ctrl.cview(), batch, Context::train(9, 1));
    const auto b = m.forward(pert.cview(), ctrl.cview(), batch, Context::train(9, 1));
    const auto c = m.forward(pert.cview(), ctrl.cview(), batch, Context::train(9, 2));
    const auto e1 = m.forward(pert.cview(), ctrl.cview(), batch, Context::eval());
    const auto e2 = m.forward(pert.cview(), ctrl.cview(), batch, Context::eval());
    BOOST_TEST(relative_difference(a.pred, b.pred).max_error == 0.0);
    BOOST_TEST(relative_difference(a.pred, c.pred).max_error > 1e-3);
    BOOST_TEST(relative_difference(a.pred, e1.pred).max_error > 1e-3);
    BOOST_TEST(relative_difference(e1.pred, e2.pred).max_error == 0.0);
}

BOOST_AUTO_TEST_CASE(inference_mode_keeps_nothing_and_predicts_the_same_bits) {
    check_inference_mode<LlamaModel<double>>(llama_config(), 101);  // confidence token, gene decoder, batch encoder
    check_inference_mode<Gpt2Model<double>>(gpt2_config(), 111);    // output space 'all', combined loss
    check_inference_mode<NoResModel<double>>(nores_config(), 121);  // Sinkhorn loss, no residual
}

BOOST_AUTO_TEST_CASE(parameter_counts_of_the_published_configurations) {
    // state_ref.py's printout with 2000 genes and pert_dim 2024.
    struct Expected {
        index_t trainable, backbone, frozen;
    };
    auto count = [](auto& m, const std::string& prefix) {
        index_t n = 0;
        m.visit_parameters([&](const std::string& name, Parameter<float>& p) {
            if (name.starts_with(prefix)) n += p.numel();
        });
        return n;
    };
    auto check = [&](auto& m, Expected e, const char* what) {
        const index_t all = parameter_count<float>(m), dec = count(m, "gene_decoder.");
        BOOST_TEST(all - dec == e.trainable, what << " trainable " << all - dec);
        BOOST_TEST(count(m, "transformer_backbone.") == e.backbone, what);
        BOOST_TEST(m.frozen_parameter_count() == e.frozen, what);
        return dec;
    };
    {
        StateConfig c = StateConfig::state(2000, 2024);
        c.gene_dim = 2000;  // LatentToGeneDecoder(2000 -> [1024, 1024, 512] -> 2000)
        StateTransition<float, cpu, LlamaBackbone, EnergyLoss, GeneDecoder> m(c);
        BOOST_TEST(check(m, {70'579'184, 62'017'080, 22'272'000}, "state") == 4'654'544);
    }
    {
        StateTransition<float, cpu, LlamaBackbone, EnergyLoss> m(StateConfig::state_sm(2000, 2024));
        check(m, {35'672'432, 28'907'424, 21'504'000}, "state_sm");
    }
    {
        StateTransition<float, cpu, GPT2Backbone, EnergyLoss> m(StateConfig::pertsets(2000, 2024));
        check(m, {12'988'832, 10'362'832, 16'652'560}, "pertsets");
    }
}

BOOST_AUTO_TEST_CASE(gpt2_conv1d_weights_load_and_save_as_in_out) {
    const std::string src = fixture_path("gpt2");
    const io::SafetensorsFile orig(src);
    Gpt2Model<double> m(gpt2_config());
    load_checkpoint(m, "gpt2");
    // The checkpoint's [in, out] matrices are the parameters as they are, and mean y = x·W + b.
    const Tensor<double> W = orig.load<double>("transformer_backbone.h.1.mlp.c_fc.weight"),
                         b = orig.load<double>("transformer_backbone.h.1.mlp.c_fc.bias");
    BOOST_TEST(W.shape() == (Shape{16, 64}));
    BOOST_TEST(orig.info("transformer_backbone.h.0.attn.c_attn.weight").shape == (Shape{16, 48}));
    const Tensor<double> x = random_tensor(Shape{3, 16}, 51);
    const Tensor<double> y = m.transformer_backbone.h[1].mlp.c_fc.apply(x.cview());
    double worst = 0.0;
    for (index_t r = 0; r < 3; ++r)
        for (index_t j = 0; j < 64; ++j) {
            double acc = b[j];
            for (index_t i = 0; i < 16; ++i) acc += x(r, i) * W(i, j);
            worst = std::max(worst, std::abs(acc - y(r, j)));
        }
    BOOST_TEST(worst <= 1e-14);

    // Saved back: every tensor (Conv1D ones [in, out]) bit-identical to the original checkpoint.
    const auto out = std::filesystem::temp_directory_path() / "celltx_state_gpt2_roundtrip.safetensors";
    io::save_state_dict(m, out);
    {
        const io::SafetensorsFile saved(out);
        int conv = 0;
        for (const auto& ti : saved.tensors()) {
            BOOST_TEST_REQUIRE(orig.contains(ti.name));
            BOOST_TEST(ti.shape == orig.info(ti.name).shape, ti.name);
            const Tensor<double> a = saved.load<double>(ti.name), o = orig.load<double>(ti.name);
            BOOST_TEST(relative_difference(a, o).max_error == 0.0, ti.name);
            if (ti.name.find(".c_") != std::string::npos && ti.name.ends_with(".weight")) ++conv;
        }
        BOOST_TEST(conv == 8);  // c_attn, attn.c_proj, c_fc, mlp.c_proj in two blocks
        BOOST_TEST(saved.tensors().size() + 2 == orig.tensors().size());  // all but wte, wpe
        // and it loads back strictly, without any ignore rule, to the same predictions
        Gpt2Model<double> m2(gpt2_config());
        io::load_state_dict(m2, saved);
        const io::SafetensorsFile f(fixture_path("gpt2_f64"));
        const Tensor<double> pert = f.load<double>("pert"), ctrl = f.load<double>("ctrl");
        const auto p1 = m.forward(pert.cview(), ctrl.cview()), p2 = m2.forward(pert.cview(), ctrl.cview());
        BOOST_TEST(relative_difference(p1.pred, p2.pred).max_error == 0.0);
        BOOST_TEST(diff(p2.pred, f.load<double>("pred")).max_error <= 1e-10);
    }
    std::filesystem::remove(out);
}

BOOST_AUTO_TEST_CASE(loader_ignores_the_frozen_embeddings) {
    BOOST_TEST(LlamaModel<float>::is_frozen_key("transformer_backbone.embed_tokens.weight"));
    BOOST_TEST(!LlamaModel<float>::is_frozen_key("embed_tokens.weight"));
    BOOST_TEST(!LlamaModel<float>::is_frozen_key("transformer_backbone.wte.weight"));
    BOOST_TEST(Gpt2Model<float>::is_frozen_key("transformer_backbone.wte.weight"));
    BOOST_TEST(Gpt2Model<float>::is_frozen_key("transformer_backbone.wpe.weight"));
    BOOST_TEST(!Gpt2Model<float>::is_frozen_key("transformer_backbone.ln_f.weight"));
    {
        LlamaModel<float> m(llama_config());
        BOOST_CHECK_EXCEPTION(io::load_state_dict(m, fixture_path("llama")), IoError,
                              [](const IoError& e) { return std::string(e.what()).find("embed_tokens") != std::string::npos; });
        const auto r = load_checkpoint(m, "llama");
        BOOST_TEST(r.ignored == std::vector<std::string>{"transformer_backbone.embed_tokens.weight"});
        BOOST_TEST(r.unexpected.empty());
        BOOST_TEST(r.missing.empty());
    }
    {
        Gpt2Model<float> m(gpt2_config());
        BOOST_CHECK_THROW(io::load_state_dict(m, fixture_path("gpt2")), IoError);
        const auto r = load_checkpoint(m, "gpt2");
        BOOST_TEST(r.ignored == (std::vector<std::string>{"transformer_backbone.wpe.weight", "transformer_backbone.wte.weight"}));
        // a GPT-2 checkpoint is not a LLaMA one: the ignore rule only covers the frozen embeddings
        LlamaModel<float> wrong(llama_config());
        BOOST_CHECK_THROW(load_checkpoint(wrong, "gpt2"), IoError);
    }
}

BOOST_AUTO_TEST_CASE(invalid_configurations_are_rejected) {
    StateConfig c = llama_config();
    c.batch_dim = 0;  // the type lists BatchEmbedding
    BOOST_CHECK_THROW(LlamaModel<double>{c}, ShapeError);
    StateConfig g = gpt2_config();
    g.output_dim = 8;  // "all" adds ctrl to the output
    BOOST_CHECK_THROW(Gpt2Model<double>{g}, ShapeError);
    StateConfig n = nores_config();
    n.batch_dim = 2;  // read by the BatchEmbedding option alone: a model type without it ignores it
    BOOST_TEST(parameter_count<double>(*std::make_unique<NoResModel<double>>(n)) ==
               parameter_count<double>(*std::make_unique<NoResModel<double>>(nores_config())));
    n = nores_config();
    n.l1_lambda = 0.1;  // output_dim 10 != input_dim 12
    BOOST_CHECK_THROW(NoResModel<double>{n}, ShapeError);
    NoResModel<double> m(nores_config());
    const Tensor<double> pert = random_tensor(Shape{10, 7}, 1), ctrl = random_tensor(Shape{10, 11}, 2);
    BOOST_CHECK_THROW(m.forward(pert.cview(), ctrl.cview()), ShapeError);  // ctrl is not input_dim wide
    BOOST_CHECK_THROW(m.backward(), ShapeError);                             // no loss() yet
}

BOOST_AUTO_TEST_SUITE_END()
