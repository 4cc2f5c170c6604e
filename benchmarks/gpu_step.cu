// Training steps on the GPU (celltx::cuda, float), the work of ../shared/anchors/torch_gpu_anchor.py
// per configuration, each in its own process so that the peak device memory is that configuration's:
//   train_B32          the CGT step: N = 6607 genes (T = 6608 tokens), d = 64, 6 post-LN layers, 8 heads,
//                      FFN 256, dropout 0; the graph KL on the last layer, head 0, over half of the rows
//                      of a random graph of 15..25 edges per row (λ = 0.1); Type I for B = 32 pairs of
//                      perturbed genes; the GI readout; MSE; Adam (lr 1e-3)
//   train_B256         the same at B = 256
//   train_B32_N20000   the same with 20,000 genes
//   prop2_B256         B = 256 plus 2 propagation layers (self-attention over each sample's N rows)
//   state_step         the State step: 16 sets × 128 cells, 2000 genes, hidden 512, 4 LLaMA layers
//                      (8 heads, SwiGLU 1376), 4-layer encoders, energy loss, Adam (lr 1e-4), the
//                      anchor's recipe (pert one-hot of width 2000, dropout 0, no clipping, uniform data)
// The CGT without propagation computes Type I only for the rows its readout reads (the anchor computes
// all B·N rows); with propagation every row is computed, as in the anchor. Timing: --warmup untimed
// steps, then --reps steps, each between two stream synchronisations; median, min and max seconds.
// Memory: peak_gpu_gb = the peak bytes of celltx's device tensors since the start (torch's
// max_memory_allocated); reserved_gpu_gb = the memory pool's high-water mark (torch's reserved).
// Output: one JSON line per configuration with the anchor's field names (config, median_s, min_s,
// max_s, peak_gpu_gb, device).
//   gpu_step [--config NAME] [--reps 5] [--warmup 2]     (no --config: every configuration, one process each)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <fmt/format.h>
#include "celltx/backend/ops.hpp"
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/train/adam.hpp"

using namespace celltx;
using gpu = celltx::cuda;

namespace {

const std::vector<std::string> kConfigs{"train_B32", "train_B256", "prop2_B256", "train_B32_N20000", "state_step"};

/// A random graph over n genes: lo..hi edges per row (duplicates collapse), as the anchor's adjacency.
GeneGraph random_graph(index_t n, index_t lo, index_t hi, std::uint64_t seed) {
    CounterRng rng(seed, 1);
    std::vector<Edge> e;
    std::uint64_t c = 0;
    for (index_t i = 0; i < n; ++i) {
        const index_t k = lo + static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(hi - lo + 1)));
        for (index_t j = 0; j < k; ++j) e.push_back({i, static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(n)))});
    }
    return GeneGraph(n, e);
}

/// B sets of 2 distinct random genes of n.
PerturbationBatch random_pairs(index_t B, index_t n, std::uint64_t seed) {
    CounterRng rng(seed, 2);
    std::vector<std::vector<index_t>> sets;
    std::uint64_t c = 0;
    for (index_t b = 0; b < B; ++b) {
        std::vector<index_t> s;
        while (s.size() < 2) {
            const auto g = static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(n)));
            if (std::find(s.begin(), s.end(), g) == s.end()) s.push_back(g);
        }
        sets.push_back(s);
    }
    return PerturbationBatch::from_sets(sets);
}

Tensor<float, gpu> random_labels(index_t B, std::uint64_t seed) {
    CounterRng rng(seed, 3);
    auto y = Tensor<float>::uninitialized(Shape{B, 1});
    for (index_t i = 0; i < B; ++i) y[i] = static_cast<float>(rng.normal(static_cast<std::uint64_t>(i)));
    return y.to<gpu>();
}

/// The CGT step of the anchor on the GPU, with Perturbation = CrossAttentionTransform or WithPropagation<>.
template <class Perturbation>
std::function<void(std::uint64_t)> cgt_step(index_t genes, index_t B, int propagation_layers) {
    using Model = CellGraphTransformer<float, gpu, GeneEmbedding, PostNormEncoder, Perturbation, GeneInteractionReadout>;
    struct State {
        std::unique_ptr<Model> model;
        std::unique_ptr<train::Adam<float, gpu>> adam;
        PerturbationBatch batch;
        Tensor<float, gpu> y;
        std::unique_ptr<loss::MultiTaskLoss<float, gpu>> mse;
    };
    auto s = std::make_shared<State>();
    CgtConfig c;  // d = 64, L = 6, H = 8, FFN 256, pert_heads = 8
    c.num_genes = genes;
    c.dropout = 0.0;
    c.seed = 1;
    c.propagation_layers = propagation_layers;
    GraphRegularizerOptions o;
    o.row_rate = 0.5;
    o.seed = 1;
    s->model = std::make_unique<Model>(c, o);
    s->model->add_graph(random_graph(genes, 15, 25, 7), {{c.num_layers - 1}, 0, 0.1}, "random");
    s->adam = std::make_unique<train::Adam<float, gpu>>(*s->model, train::AdamOptions{.lr = 1e-3});
    s->batch = random_pairs(B, genes, 15);
    s->y = random_labels(B, 16);
    s->mse = std::make_unique<loss::MultiTaskLoss<float, gpu>>(std::vector<loss::LossTask>{{"gi", 1.0, loss::PhenotypeLoss::mse}});
    return [s](std::uint64_t step) {
        s->model->train_step(s->batch, {CgtTarget<float, gpu>{s->y.cview()}}, *s->mse, Context::train(3, step), [&] { s->adam->step(); });
    };
}

std::function<void(std::uint64_t)> state_step() {
    constexpr index_t sets = 16, cells = 128, genes = 2000;
    using Model = StateTransition<float, gpu, LlamaBackbone, EnergyLoss>;
    struct State {
        std::unique_ptr<Model> model;
        std::unique_ptr<train::Adam<float, gpu>> adam;
        Tensor<float, gpu> pert, ctrl, target;
    };
    auto s = std::make_shared<State>();
    StateConfig c;
    c.input_dim = c.output_dim = genes;
    c.pert_dim = genes;
    c.hidden = 512;
    c.cell_set_len = cells;
    c.dropout = 0.0;
    c.backbone.layers = 4;
    c.backbone.heads = 8;
    c.backbone.intermediate = 1376;
    s->model = std::make_unique<Model>(c);
    Generator g(1);
    s->model->reset_parameters(g);
    s->adam = std::make_unique<train::Adam<float, gpu>>(*s->model, train::AdamOptions{.lr = 1e-4});
    auto pert = Tensor<float>(Shape{sets * cells, genes});
    auto ctrl = Tensor<float>::uninitialized(Shape{sets * cells, genes}), target = Tensor<float>::uninitialized(Shape{sets * cells, genes});
    for (index_t b = 0; b < sets; ++b) {  // torch.rand data, one perturbation per set
        const auto p = static_cast<index_t>(g.below(static_cast<std::uint64_t>(genes)));
        for (index_t i = b * cells; i < (b + 1) * cells; ++i) pert(i, p) = 1.0f;
    }
    for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = static_cast<float>(g.uniform());
    for (index_t i = 0; i < target.numel(); ++i) target[i] = static_cast<float>(g.uniform());
    s->pert = pert.to<gpu>(), s->ctrl = ctrl.to<gpu>(), s->target = target.to<gpu>();
    return [s](std::uint64_t step) {
        s->model->train_step(s->pert.cview(), s->ctrl.cview(), s->target.cview(), {}, {}, Context::train(1, step));
        s->adam->step();
    };
}

double pool_reserved_high_gb() {
    if (!cuda_detail::memory_pool_enabled()) return 0.0;
    int dev = 0;
    CELLTX_CUDA_CHECK(cudaGetDevice(&dev));
    cudaMemPool_t pool = nullptr;
    CELLTX_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    std::uint64_t high = 0;
    CELLTX_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &high));
    return static_cast<double>(high) / double(1ull << 30);
}

int run_config(const std::string& name, int reps, int warmup) {
    std::function<void(std::uint64_t)> step;
    if (name == "train_B32") step = cgt_step<CrossAttentionTransform>(6607, 32, 0);
    else if (name == "train_B256") step = cgt_step<CrossAttentionTransform>(6607, 256, 0);
    else if (name == "train_B32_N20000") step = cgt_step<CrossAttentionTransform>(20000, 32, 0);
    else if (name == "prop2_B256") step = cgt_step<WithPropagation<>>(6607, 256, 2);
    else if (name == "state_step") step = state_step();
    else {
        std::fprintf(stderr, "gpu_step: unknown config %s (one of train_B32, train_B256, prop2_B256, train_B32_N20000, state_step)\n", name.c_str());
        return 2;
    }
    std::uint64_t n = 0;
    for (int w = 0; w < warmup; ++w) step(n++);
    cuda_synchronize();
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        step(n++);
        cuda_synchronize();
        ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<double> sorted = ts;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.size() % 2 ? sorted[sorted.size() / 2] : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
    fmt::print(fmt::runtime("{{\"config\": \"{}\", \"median_s\": {:.5f}, \"min_s\": {:.5f}, \"max_s\": {:.5f}, \"reps\": {}, \"warmup\": {}, "
                            "\"peak_gpu_gb\": {:.4f}, \"reserved_gpu_gb\": {:.4f}, \"device\": \"{}\", \"impl\": \"celltx fp32\"}}\n"),
               name, median, sorted.front(), sorted.back(), reps, warmup, static_cast<double>(memory_stats<gpu>().peak.load()) / double(1ull << 30),
               pool_reserved_high_gb(), cuda_device_properties().name);
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) try {
    std::string config;
    int reps = 5, warmup = 2;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) throw Error(fmt::format(fmt::runtime("gpu_step: {} needs a value"), a));
        if (a == "--config") config = argv[++i];
        else if (a == "--reps") reps = std::atoi(argv[++i]);
        else if (a == "--warmup") warmup = std::atoi(argv[++i]);
        else throw Error(fmt::format(fmt::runtime("gpu_step: unknown argument {} (use --config NAME, --reps N, --warmup N)"), a));
    }
    if (!cuda_device_available()) {
        std::fprintf(stderr, "gpu_step: no CUDA device\n");
        return 77;
    }
    if (!config.empty()) return run_config(config, std::max(reps, 1), std::max(warmup, 0));
    int failures = 0;
    for (const auto& c : kConfigs) {  // one process per configuration: each peak is its own
        const std::string cmd = fmt::format(fmt::runtime("\"{}\" --config {} --reps {} --warmup {}"), argv[0], c, reps, warmup);
        if (std::system(cmd.c_str()) != 0) {
            fmt::print(fmt::runtime("{{\"config\": \"{}\", \"failed\": true}}\n"), c);
            ++failures;
        }
        std::fflush(stdout);
    }
    return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_step: %s\n", e.what());
    return 1;
}
