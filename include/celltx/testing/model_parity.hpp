#pragma once
// The same training step of both model families on any backend, read back to the host: the
// cross-backend check of whole models (the op harness checks the ops one by one). Each scenario
// builds its model from a seed (initialisation is drawn on the host, so every backend starts from
// the same bits), runs one training forward with dropout, the loss and the backward, then one
// clipped AdamW step, and returns the loss, the outputs, every parameter gradient and every
// parameter after the step, by state_dict name.
//  - cgt_scenario: a CellGraphTransformer with a graph-regularised head, a propagation layer and
//    all four readouts (GI, fitness, expression, gene sets) under a masked multi-task loss, over a
//    batch with a duplicated gene and an empty set;
//  - state_scenario: a State model with the LLaMA backbone (grouped KV heads), the combined
//    Sinkhorn + energy loss, the confidence token, the gene decoder, the batch embedding and L1.
// compare_runs gives the largest normwise difference of two runs (0 when bit-identical).
// The CPU runs (float and double) can be compiled once per program: define
// CELLTX_EXTERN_PARITY_SCENARIOS in every translation unit and CELLTX_DEFINE_PARITY_SCENARIOS in
// exactly one (tests/parity_scenarios.cpp), before this header.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include "celltx/core/gene_graph.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

namespace celltx::testing {

/// One training step, on the host.
struct ModelRun {
    double loss = 0.0;
    std::map<std::string, std::vector<double>> outputs, grads, weights;
};

namespace parity_detail {

template <class T, Backend B>
std::vector<double> host_values(const Tensor<T, B>& t) {
    const Tensor<T, cpu> h = to_host(t);
    return std::vector<double>(h.data(), h.data() + h.numel());
}

/// Host values in [lo, hi) (NaN where `nan_every` hits), uploaded to backend B.
template <Scalar T, Backend B>
Tensor<T, B> random_on(Shape s, std::uint64_t seed, double lo, double hi, index_t nan_every = 0) {
    auto h = Tensor<T, cpu>::uninitialized(s);
    CounterRng rng(seed, 31);
    for (index_t i = 0; i < h.numel(); ++i)
        h[i] = nan_every && i % nan_every == 1 ? std::numeric_limits<T>::quiet_NaN()
                                                : static_cast<T>(lo + (hi - lo) * rng.uniform(static_cast<std::uint64_t>(i)));
    return h.template to<B>();
}

template <Scalar T, Backend B, class M>
void collect(M& model, ModelRun& run, bool gradients) {
    model.visit_parameters([&](std::string_view name, Parameter<T, B>& p) {
        (gradients ? run.grads : run.weights)[std::string(name)] = host_values(gradients ? p.grad : p.value);
    });
}

/// One clipped AdamW step over every parameter.
template <Scalar T, Backend B, class M>
void adamw_step(M& model) {
    train::AdamW<T, B> opt(model, train::AdamWOptions{1e-2, 0.9, 0.999, 1e-8, 1e-2, false});
    train::clip_grad_norm<T, B>(model, 0.5);
    opt.step();
}

} // namespace parity_detail

/// The CGT scenario (see the header comment) on backend B in T.
template <Scalar T, Backend B>
ModelRun cgt_scenario(std::uint64_t seed = 5) {
    using namespace parity_detail;
    using Model = CellGraphTransformer<T, B, GeneEmbedding, PostNormEncoder, WithPropagation<>, GeneInteractionReadout, FitnessReadout,
                                       ExpressionReadout, GeneSetReadout>;
    CgtConfig cfg;
    cfg.num_genes = 24;
    cfg.d_model = 16;
    cfg.num_layers = 2;
    cfg.num_heads = 4;
    cfg.pert_heads = 4;
    cfg.dropout = 0.1;
    cfg.propagation_layers = 1;
    cfg.fitness_outputs = 2;
    cfg.seed = seed;
    Model m(cfg);
    std::vector<Edge> edges;
    for (index_t i = 0; i < 24; ++i) edges.push_back({i, (i * 5 + 3) % 24}), edges.push_back({i, (i + 1) % 24});
    m.add_graph(GeneGraph(24, edges, {.symmetrize = true, .self_loops = true}), {{1}, 2, 0.05}, "ring");
    m.set_gene_sets(GeneSetList::from_sets({{1, 4, 9}, {}, {7, 7, 12, 23}}));
    const PerturbationBatch batch = PerturbationBatch::from_sets({{3, 9}, {5, 5}, {}, {20, 1, 3}});
    const Context ctx = Context::train(seed, 2);
    auto out = m.forward(batch, ctx);

    loss::MultiTaskLoss<T, B> mt({{"gi", 1.0, loss::PhenotypeLoss::mse},
                                  {"fitness", 0.5, loss::PhenotypeLoss::log_cosh},
                                  {"expression", 0.2, loss::PhenotypeLoss::mse},
                                  {"gene_sets", 0.3, loss::PhenotypeLoss::mse}});
    std::vector<Tensor<T, B>> labels;
    for (std::size_t k = 0; k < Model::num_readouts; ++k)
        labels.push_back(random_on<T, B>(out.predictions[k].shape(), seed + 10 + k, -1.0, 1.0, k == 2 ? 7 : 0));
    ModelRun run;
    run.loss = m.loss_backward(out, {CgtTarget<T, B>{labels[0].cview()}, CgtTarget<T, B>{labels[1].cview()},
                                     CgtTarget<T, B>{labels[2].cview()}, CgtTarget<T, B>{labels[3].cview()}},
                               mt)
                   .total;
    for (std::size_t k = 0; k < Model::num_readouts; ++k) run.outputs["prediction" + std::to_string(k)] = host_values(out.predictions[k]);
    run.outputs["H_genes"] = host_values(out.H_genes);
    run.outputs["H_pert"] = host_values(out.H_pert.values);
    run.outputs["graph_loss"] = {out.graph_loss};
    collect<T, B>(m, run, true);
    adamw_step<T, B>(m);
    collect<T, B>(m, run, false);
    return run;
}

/// The State scenario (see the header comment) on backend B in T.
template <Scalar T, Backend B>
ModelRun state_scenario(std::uint64_t seed = 6) {
    using namespace parity_detail;
    StateConfig c;
    c.input_dim = c.output_dim = 12;
    c.pert_dim = 7;
    c.hidden = 16;
    c.n_encoder_layers = 2;
    c.n_decoder_layers = 2;
    c.cell_set_len = 5;
    c.batch_dim = 3;
    c.gene_dim = 9;
    c.decoder_hidden = {10, 8};
    c.l1_lambda = 0.05;
    c.dropout = 0.1;
    c.blur = 0.5;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    c.backbone.kv_heads = 2;
    c.backbone.head_dim = 6;
    c.backbone.intermediate = 24;
    c.backbone.attn_dropout = 0.1;
    StateTransition<T, B, LlamaBackbone, CombinedLoss, ConfidenceToken, GeneDecoder, BatchEmbedding> m(c);
    Generator g(seed);
    m.reset_parameters(g);
    const index_t cells = 3 * 5;
    const Tensor<T, B> pert = random_on<T, B>(Shape{cells, 7}, seed + 1, -1.0, 1.0), ctrl = random_on<T, B>(Shape{cells, 12}, seed + 2, -1.0, 1.0);
    const Tensor<T, B> target = random_on<T, B>(Shape{cells, 12}, seed + 3, -1.0, 1.0), genes = random_on<T, B>(Shape{cells, 9}, seed + 4, 0.0, 2.0);
    std::vector<index_t> batch(static_cast<std::size_t>(cells));
    for (index_t i = 0; i < cells; ++i) batch[static_cast<std::size_t>(i)] = i % 3;
    const auto out = m.forward(pert.cview(), ctrl.cview(), batch, Context::train(seed, 4));
    ModelRun run;
    run.loss = m.loss(target.cview(), genes.cview()).total;
    m.backward();
    run.outputs["pred"] = host_values(out.pred);
    run.outputs["confidence"] = host_values(out.confidence);
    run.outputs["genes"] = host_values(out.genes);
    collect<T, B>(m, run, true);
    adamw_step<T, B>(m);
    collect<T, B>(m, run, false);
    return run;
}

/// The largest normwise difference between two runs (loss, outputs, gradients, stepped weights),
/// and where it is; +inf when they hold different names or shapes. Each tensor is measured against
/// its own largest entry, but at least 1e-3 of the largest entry of its kind, so that a tensor whose
/// exact value is 0 (the key bias's gradient, softmax being blind to it) is not judged by its noise.
inline double compare_runs(const ModelRun& a, const ModelRun& ref, std::string* where = nullptr) {
    double worst = std::abs(a.loss - ref.loss) / std::max(std::abs(ref.loss), 1e-300);
    if (where) *where = "loss";
    auto one = [&](const std::map<std::string, std::vector<double>>& x, const std::map<std::string, std::vector<double>>& r, const char* kind) {
        if (x.size() != r.size()) {
            worst = std::numeric_limits<double>::infinity();
            if (where) *where = fmt::format("{}: {} entries vs {}", kind, x.size(), r.size());
            return;
        }
        double kind_scale = 0.0;
        for (const auto& [name, rv] : r)
            for (double v : rv)
                if (std::isfinite(v)) kind_scale = std::max(kind_scale, std::abs(v));
        for (const auto& [name, rv] : r) {
            const auto it = x.find(name);
            if (it == x.end() || it->second.size() != rv.size()) {
                worst = std::numeric_limits<double>::infinity();
                if (where) *where = fmt::format("{} {} missing or of another size", kind, name);
                return;
            }
            double scale = 1e-3 * kind_scale, e = 0.0;
            for (double v : rv) scale = std::max(scale, std::isfinite(v) ? std::abs(v) : 0.0);
            for (std::size_t i = 0; i < rv.size(); ++i) {
                const double d = std::abs(it->second[i] - rv[i]);
                e = std::max(e, std::isnan(d) && !(std::isnan(it->second[i]) && std::isnan(rv[i])) ? std::numeric_limits<double>::infinity()
                                                                                                  : (std::isnan(d) ? 0.0 : d / std::max(scale, 1e-300)));
            }
            if (e > worst) {
                worst = e;
                if (where) *where = fmt::format("{} {}", kind, name);
            }
        }
    };
    one(a.outputs, ref.outputs, "output");
    one(a.grads, ref.grads, "gradient");
    one(a.weights, ref.weights, "weight after the step");
    return worst;
}

#define CELLTX_PARITY_SCENARIO_LIST(X) \
    X(cgt_scenario, float)                \
    X(cgt_scenario, double)               \
    X(state_scenario, float)              \
    X(state_scenario, double)
#if defined(CELLTX_DEFINE_PARITY_SCENARIOS)
#define CELLTX_PARITY_INSTANTIATE(f, T) template ModelRun f<T, cpu>(std::uint64_t);
CELLTX_PARITY_SCENARIO_LIST(CELLTX_PARITY_INSTANTIATE)
#undef CELLTX_PARITY_INSTANTIATE
#elif defined(CELLTX_EXTERN_PARITY_SCENARIOS)
#define CELLTX_PARITY_EXTERN(f, T) extern template ModelRun f<T, cpu>(std::uint64_t);
CELLTX_PARITY_SCENARIO_LIST(CELLTX_PARITY_EXTERN)
#undef CELLTX_PARITY_EXTERN
#endif

} // namespace celltx::testing
