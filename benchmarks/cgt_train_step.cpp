// Time and peak memory of the Cell Graph Transformer at the published size (N = 6607 genes, T = 6608
// tokens, d = 64, L = 6, H = 8, float), per configuration, each in its own process so that the peak
// RSS (getrusage ru_maxrss) is that configuration's:
//   cgt_train_step   ONE training step as the issue states it: dropout 0.1, KL(Ã‖α) on layer 1 / head 0
//                    for one graph (random, 20 edges per row, every row), Type I for B = 32 pairs (--batch), GI
//                    readout, MSE + graph term, clip at 10, AdamW
//   and the configurations of ../shared/anchors/torch_cgt_bench.py with the same shapes (dropout 0,
//   KL on the last layer / head 0 over half of the rows of a random graph of 15..25 edges per row,
//   |S_b| = 2 perturbed genes):
//   enc_fwd_infer    encoder forward under Context::inference() (the anchor's eval + no_grad), no graph term
//   enc_fwd_train    encoder forward in training mode with the graph term's value
//   enc_fwdbwd       encoder forward + backward of sum(H) + graph term
//   typeI_B8/32/128  Type I transform + GI readout forward + backward of MSE (H_genes and h_CLS take gradients),
//                    rows on demand (only the perturbed rows: what the model computes): a SHORTCUT
//   typeI_all_B8/32  the same over all B·N rows (the anchor's work; B = 128 would hold ~4 GB)
//   train_step       encoder + graph term + Type I over all B·N rows (B = 32, --batch) + readout + backward + Adam:
//                    exactly the anchor's train_step
//   train_step_rows_on_demand   the same with Type I on the perturbed rows only (the model's own
//                    train_step): a SHORTCUT, reported as its own row
//   sgemm_peak       the packed float GEMM alone (2048³, 2 threads): the machine's peak for this code
// Output: one JSON line per configuration (config, threads, reps, median_s, min_s, max_s, gemm_gflop,
// gflops_per_s, tensor_peak_mb, peak_rss_mb, rss_setup_mb), the torch script's field names where
// they exist, so that a script can put both side by side. FLOPs are counted as the torch script does
// (GEMM/matmul only, backward = 2x forward), for the work actually done: a rows-on-demand
// configuration counts the rows it computed, not the anchor's B·N.
//   cgt_train_step [--config NAME] [--reps 3] [--warmup 1] [--genes N] [--batch B]
//   (no --config: every configuration, one process each; --genes: a smaller universe, e.g. 64 for a smoke run;
//   --batch: the perturbation batch of the training-step configurations, cgt_train_step, train_step and
//   train_step_rows_on_demand, default 32; the typeI_* configurations carry theirs in their names)
// Every JSON line also names "genes" and "batch" (null where the configuration has no batch).
#include <sys/resource.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/io/arguments.hpp"
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

using namespace celltx;

namespace {

index_t kGenes = 6607;  // --genes
index_t kBatch = 32;    // --batch: the training-step configurations' perturbation batch
constexpr index_t kD = 64, kFF = 4 * kD;
constexpr int kLayers = 6, kHeads = 8;
using Model = CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;

/// The configurations that --batch sets.
bool takes_batch(const std::string& name) {
    return name == "cgt_train_step" || name == "train_step" || name == "train_step_rows_on_demand";
}

const std::vector<std::string> kConfigs{"sgemm_peak", "cgt_train_step", "enc_fwd_infer", "enc_fwd_train", "enc_fwdbwd",
                                        "typeI_B8",   "typeI_B32",      "typeI_B128",    "typeI_all_B8",  "typeI_all_B32",
                                        "train_step", "train_step_rows_on_demand"};

double rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

double enc_fwd_flops() {
    const double T = kGenes + 1, d = kD, ff = kFF;
    return kLayers * (4 * T * T * d + 2 * T * (4 * d * d) + 2 * T * (2 * d * ff));
}
/// Type I + GI readout forward for B samples of k = 2 genes, computing `rows` rows per sample (N: all).
double typeI_fwd_flops(double B, double rows = -1) {
    const double n = rows < 0 ? static_cast<double>(kGenes) : rows, d = kD, ff = kFF, k = 2;
    return B * (2 * n * d * d + 2 * k * 2 * d * d + 2 * 2 * n * k * d + 2 * n * d * d + 2 * n * 2 * d * ff + 2 * (2 * d * d + d));
}

CgtConfig published(double dropout) {
    CgtConfig c;  // N = 6607, d = 64, L = 6, H = 8, pert_heads = 8
    c.num_genes = kGenes;
    c.dropout = dropout;
    c.seed = 1;
    return c;
}

/// A random graph over the genes: `lo`..`hi` distinct-ish edges per row (duplicates collapse).
GeneGraph random_graph(index_t lo, index_t hi, std::uint64_t seed) {
    CounterRng rng(seed, 1);
    std::vector<Edge> e;
    std::uint64_t c = 0;
    for (index_t i = 0; i < kGenes; ++i) {
        const index_t k = lo + static_cast<index_t>(rng.below(c++, static_cast<std::uint64_t>(hi - lo + 1)));
        for (index_t j = 0; j < k; ++j) e.push_back({i, static_cast<index_t>(rng.below(c++, kGenes))});
    }
    return GeneGraph(kGenes, e);
}

/// B sets of `size` distinct random genes.
PerturbationBatch random_batch(index_t B, index_t size, std::uint64_t seed) {
    CounterRng rng(seed, 2);
    std::vector<std::vector<index_t>> sets;
    std::uint64_t c = 0;
    for (index_t b = 0; b < B; ++b) {
        std::vector<index_t> s;
        while (static_cast<index_t>(s.size()) < size) {
            const auto g = static_cast<index_t>(rng.below(c++, kGenes));
            if (std::find(s.begin(), s.end(), g) == s.end()) s.push_back(g);
        }
        sets.push_back(s);
    }
    return PerturbationBatch::from_sets(sets);
}

Tensor<float> random_labels(index_t B, std::uint64_t seed) {
    CounterRng rng(seed, 3);
    auto y = Tensor<float>::uninitialized(Shape{B, 1});
    for (index_t i = 0; i < B; ++i) y[i] = static_cast<float>(rng.normal(static_cast<std::uint64_t>(i)));
    return y;
}

/// The regularised graph's size and the edges of the rows the last step used (the anchor's adj_edges_used).
std::string graph_fields(Model& m, int layer) {
    const auto& reg = m.graph_regularizer();
    index_t used = 0;
    for (index_t r : reg.last_rows(0, layer)) used += reg.graph(0).degree(r);
    return fmt::format(", \"graph_edges\": {}, \"kl_rows\": {}, \"adj_edges_used\": {}", reg.graph(0).nnz(), reg.last_rows(0, layer).size(), used);
}

struct Bench {
    std::function<void(std::uint64_t)> run;  // one repetition (argument: step)
    double flops = 0.0;
    std::function<std::string()> extra = [] { return std::string(); };  // more JSON fields, after the runs
};

int run_config(const std::string& name, int reps, int warmup) {
    std::unique_ptr<Model> model;
    std::unique_ptr<train::AdamW<float>> adamw;
    std::unique_ptr<train::Adam<float>> adam;
    std::unique_ptr<CrossAttentionTransform::module<float>> typeI;
    std::unique_ptr<GeneInteractionReadout::module<float>> readout;
    Tensor<float> genes, cls, y;
    PerturbationBatch batch;
    index_t rows_computed = 0;
    loss::MultiTaskLoss<float> mse({{"gi", 1.0, loss::PhenotypeLoss::mse}});
    Bench b;

    auto torch_like_model = [&] {  // the anchor's encoder: dropout 0, KL on the last layer, head 0, half of the rows
        GraphRegularizerOptions o;
        o.row_rate = 0.5;
        o.seed = 1;
        model = std::make_unique<Model>(published(0.0), o);
        model->add_graph(random_graph(15, 25, 7), {{kLayers - 1}, 0, 0.1}, "random");
    };
    if (name == "sgemm_peak") {
        const index_t n = std::min<index_t>(2048, 16 * kGenes);  // --genes shrinks it for a smoke run
        genes = Tensor<float>::full(Shape{n, n}, 0.5f);
        cls = Tensor<float>::full(Shape{n, n}, 0.25f);
        y = Tensor<float>(Shape{n, n});
        b.run = [&, n](std::uint64_t) {
            ops::gemm(cpu{}, false, false, n, n, n, 1.0f, genes.data(), n, cls.data(), n, 0.0f, y.data(), n);
        };
        b.flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
    } else if (name == "cgt_train_step") {
        model = std::make_unique<Model>(published(0.1));
        model->add_graph(random_graph(20, 20, 5), {{1}, 0, 1e-3}, "random20");
        adamw = std::make_unique<train::AdamW<float>>(*model, train::AdamWOptions{.lr = 5e-4, .weight_decay = 1e-8});
        batch = random_batch(kBatch, 2, 11);
        y = random_labels(kBatch, 12);
        b.run = [&](std::uint64_t step) {
            model->train_step(batch, {CgtTarget<float>{y.cview()}}, mse, Context::train(3, step), [&] {
                train::clip_grad_norm<float>(*model, 10.0);
                adamw->step();
            });
        };
        b.flops = 3 * (enc_fwd_flops() + typeI_fwd_flops(static_cast<double>(kBatch), 2));  // the model's step: the perturbed rows
        b.extra = [&] { return fmt::format(", \"params\": {}{}", parameter_count<float>(*model), graph_fields(*model, 1)); };
    } else if (name.starts_with("enc_")) {
        torch_like_model();
        const bool train = name != "enc_fwd_infer", backward = name == "enc_fwdbwd";
        b.run = [&, train, backward](std::uint64_t step) {
            const Context ctx = train ? Context::train(3, step) : Context::inference();  // infer: the anchor's no_grad
            const Tensor<float> X = model->embedding.forward(ctx);
            const Tensor<float> H = model->encoder.forward(X.cview(), ctx, train ? &model->graph_regularizer() : nullptr);
            if (!backward) return;
            const Tensor<float> dH = Tensor<float>::full(H.shape(), 1.0f);
            Tensor<float> dX(X.shape());
            model->encoder.backward(dH.cview(), dX.view());
            model->embedding.backward(dX.cview());
        };
        b.flops = (backward ? 3 : 1) * enc_fwd_flops();
        if (train) b.extra = [&] { return graph_fields(*model, kLayers - 1); };
    } else if (name.starts_with("typeI_")) {
        // typeI_B*: the rows the GI readout reads (what the model computes); typeI_all_B*: all B·N rows,
        // the work the anchor does. gemm_gflop counts the rows each computes.
        const bool all_rows = name.starts_with("typeI_all_");
        const index_t B = std::stoll(name.substr(name.find('B') + 1));
        CgtConfig c = published(0.0);
        typeI = std::make_unique<CrossAttentionTransform::module<float>>(c);
        readout = std::make_unique<GeneInteractionReadout::module<float>>(c);
        Generator g(2);
        typeI->reset_parameters(g);
        readout->reset_parameters(g);
        genes = Tensor<float>::uninitialized(Shape{kGenes, kD});
        cls = Tensor<float>::uninitialized(Shape{kD});
        for (index_t i = 0; i < genes.numel(); ++i) genes[i] = static_cast<float>(0.5 * g.normal());
        for (index_t i = 0; i < kD; ++i) cls[i] = static_cast<float>(g.normal());
        batch = random_batch(B, 2, 13);
        y = random_labels(B, 14);
        b.run = [&, all_rows](std::uint64_t step) {
            const Context ctx = Context::train(3, step);
            const auto rows = typeI->forward(genes.cview(), batch, all_rows ? RowNeed::all : RowNeed::perturbed, nullptr, ctx);
            rows_computed = rows.rows();
            const Tensor<float> pred = readout->forward(cls.cview(), rows, batch, ctx);
            const std::vector<loss::TaskTarget<float>> t{{pred.cview(), y.cview()}};
            mse.forward(std::span<const loss::TaskTarget<float>>(t));
            Tensor<float> dpred(pred.shape()), dgenes(genes.shape()), dcls(cls.shape());
            const Tensor<float> one = Tensor<float>::full(Shape{}, 1.0f);
            const std::vector<TensorView<float>> dv{dpred.view()};
            mse.backward(one.cview(), std::span<const TensorView<float>>(dv));
            auto drows = rows.zeros_like();
            readout->backward(dpred.cview(), dcls.view(), drows);
            typeI->backward(drows, dgenes.view());
        };
        b.flops = 3 * typeI_fwd_flops(static_cast<double>(B), all_rows ? -1.0 : 2.0);  // the rows computed
        b.extra = [&] { return fmt::format(", \"rows_computed\": {}, \"rows_all\": {}", rows_computed, batch.batch_size() * kGenes); };
    } else if (name == "train_step_rows_on_demand") {
        torch_like_model();
        adam = std::make_unique<train::Adam<float>>(*model, train::AdamOptions{.lr = 1e-3});
        batch = random_batch(kBatch, 2, 15);
        y = random_labels(kBatch, 16);
        b.run = [&](std::uint64_t step) {
            model->train_step(batch, {CgtTarget<float>{y.cview()}}, mse, Context::train(3, step), [&] { adam->step(); });
        };
        b.flops = 3 * (enc_fwd_flops() + typeI_fwd_flops(static_cast<double>(kBatch), 2));
        b.extra = [&] { return fmt::format(", \"params\": {}{}", parameter_count<float>(*model), graph_fields(*model, kLayers - 1)); };
    } else if (name == "train_step") {
        // The anchor's step, part by part: the model's forward/backward with Type I over every row.
        torch_like_model();
        adam = std::make_unique<train::Adam<float>>(*model, train::AdamOptions{.lr = 1e-3});
        batch = random_batch(kBatch, 2, 15);
        y = random_labels(kBatch, 16);
        b.run = [&](std::uint64_t step) {
            const Context ctx = Context::train(3, step);
            const index_t N = kGenes;
            const Tensor<float> X = model->embedding.forward(ctx);
            const Tensor<float> H = model->encoder.forward(X.cview(), ctx, &model->graph_regularizer());
            const ConstView<float> h_cls = H.cview().slice(0, 1), genes_h = H.cview().slice(1, N);
            const auto rows = model->perturbation.forward(genes_h, batch, RowNeed::all, nullptr, ctx);
            rows_computed = rows.rows();
            auto& gi = model->readout<0>();
            const Tensor<float> pred = gi.forward(h_cls, rows, batch, ctx);
            const std::vector<loss::TaskTarget<float>> t{{pred.cview(), y.cview()}};
            mse.forward(std::span<const loss::TaskTarget<float>>(t));
            Tensor<float> dpred(pred.shape()), dH(Shape{N + 1, kD}), dX(X.shape());
            const Tensor<float> one = Tensor<float>::full(Shape{}, 1.0f);
            const std::vector<TensorView<float>> dv{dpred.view()};
            mse.backward(one.cview(), std::span<const TensorView<float>>(dv));
            auto drows = rows.zeros_like();
            gi.backward(dpred.cview(), dH.view().slice(0, 1), drows);
            model->perturbation.backward(drows, dH.view().slice(1, N));
            model->encoder.backward(dH.cview(), dX.view());
            model->embedding.backward(dX.cview());
            adam->step();
        };
        b.flops = 3 * (enc_fwd_flops() + typeI_fwd_flops(static_cast<double>(kBatch)));
        b.extra = [&] { return fmt::format(", \"params\": {}{}", parameter_count<float>(*model), graph_fields(*model, kLayers - 1)); };
    } else {
        std::fprintf(stderr, "unknown config %s\n", name.c_str());
        return 2;
    }

    const double rss_setup = rss_mb();
    std::uint64_t step = 0;
    for (int w = 0; w < warmup; ++w) b.run(step++);
    auto& stats = memory_stats<cpu>();
    stats.reset_peak();
    std::vector<double> ts;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        b.run(step++);
        ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<double> sorted = ts;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t mid = sorted.size() / 2;  // an even count takes the mean of the middle two, as Python's statistics.median
    const double median = sorted.size() % 2 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
    const std::string batch_json = batch.batch_size() > 0 ? fmt::format("{}", batch.batch_size()) : std::string("null");
    fmt::print("{{\"config\": \"{}\", \"genes\": {}, \"batch\": {}, \"threads\": {}, \"reps\": {}, \"warmup\": {}, \"median_s\": {:.4f}, "
               "\"min_s\": {:.4f}, \"max_s\": {:.4f}, \"gemm_gflop\": {:.3f}, \"gflops_per_s\": {:.2f}, \"tensor_peak_mb\": {:.1f}, "
               "\"peak_rss_mb\": {:.1f}, \"rss_setup_mb\": {:.1f}{}}}\n",
               name, kGenes, batch_json, cpu_detail::max_threads(), reps, warmup, median, sorted.front(), sorted.back(), b.flops / 1e9, b.flops / median / 1e9,
               static_cast<double>(stats.peak.load()) / 1e6, rss_mb(), rss_setup, b.extra());
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) try {
    io::CommandLine args(argc, argv, 1);
    if (args.help()) {
        fmt::print("usage: cgt_train_step [--config NAME] [--reps N] [--warmup N] [--genes N] [--batch B]\n"
                   "configurations: {}\n(see the header of benchmarks/cgt_train_step.cpp)\n", fmt::join(kConfigs, ", "));
        return 0;
    }
    // "--name VALUE" as a T in [lo, hi] into `out`; true when given. A bad value is a usage error.
    const auto number = [&args]<class T>(const std::string& name, T& out, T lo, T hi) {
        const auto v = args.value(name);
        if (!v) return false;
        try {
            out = io::parse_number<T>(*v, name, lo, hi);
        } catch (const io::UsageError&) {
            throw;
        } catch (const Error& e) {
            throw io::UsageError(e.what());
        }
        return true;
    };
    std::string config;
    int reps = 3, warmup = 1;
    args.get("--config", config);
    number("--reps", reps, 1, 1000000);
    number("--warmup", warmup, 0, 1000000);
    number("--genes", kGenes, index_t{32}, index_t{10000000});  // the random graphs have up to 25 edges per row
    const bool batch_given = number("--batch", kBatch, index_t{1}, index_t{65536});
    args.finish();
    if (!config.empty() && std::find(kConfigs.begin(), kConfigs.end(), config) == kConfigs.end())
        throw io::UsageError(fmt::format("--config: '{}' is not one of {}", config, fmt::join(kConfigs, ", ")));
    if (batch_given && !config.empty() && !takes_batch(config))
        throw io::UsageError(fmt::format("--batch is for cgt_train_step, train_step and train_step_rows_on_demand, not {}{}", config,
                                         config.starts_with("typeI_") ? " (its batch is in its name)" : ""));
    if (!config.empty()) return run_config(config, reps, warmup);
    // Driver: one process per configuration, so that each ru_maxrss is its own.
    fmt::print("# celltx CGT, N={} (T={}), d={}, L={}, H={}, float, {} threads; encoder forward GEMM {:.2f} GFLOP; training-step batch {}\n",
               kGenes, kGenes + 1, kD, kLayers, kHeads, cpu_detail::max_threads(), enc_fwd_flops() / 1e9, kBatch);
    std::fflush(stdout);
    int failures = 0;
    for (const auto& c : kConfigs) {
        const std::string batch_opt = takes_batch(c) ? fmt::format(" --batch {}", kBatch) : std::string();
        const std::string cmd = fmt::format("\"{}\" --config {} --reps {} --warmup {} --genes {}{}", argv[0], c, reps, warmup, kGenes, batch_opt);
        if (std::system(cmd.c_str()) != 0) {
            fmt::print("{{\"config\": \"{}\", \"failed\": true}}\n", c);
            ++failures;
        }
        std::fflush(stdout);
    }
    return failures == 0 ? 0 : 1;
} catch (const io::UsageError& e) {
    std::fprintf(stderr, "cgt_train_step: %s (see --help)\n", e.what());
    return 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "cgt_train_step: %s\n", e.what());
    return 1;
}
