// Trains a small genetic-interaction model on real data: Costanzo 2016 digenic interaction scores
// (DCell's DNA-repair GO:0006281 training file) over the 6,607-gene yeast universe.
//
//   model:  z = E[a] + E[b]            (a learned 32-wide embedding per gene; symmetric in the pair)
//           ŷ = MLP(z)                 (build_mlp: 32 -> 64 -> 64 -> 1, ReLU, dropout 0.1)
//   loss:   MSE on z-scored epsilon;  AdamW + cosine warm restarts + gradient clipping at 10.
//
// Usage: train_gi_mlp [DATA_DIR] [EPOCHS]   (DATA_DIR defaults to $CELLTX_DATA_DIR or ../shared/data)
// Prints the held-out MSE and Pearson correlation next to the predict-the-mean baseline.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>
#include <fmt/core.h>
#include "celltx/io/arguments.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/gi_labels.hpp"
#include "celltx/io/yeast_data.hpp"
#include "celltx/nn/embedding.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"
#include "celltx/train/lr_schedule.hpp"

using namespace celltx;

namespace {

/// The model: a pair embedding (sum of the two genes' rows) followed by an MLP.
struct PairModel {
    nn::Embedding<float> genes;
    nn::Mlp<float> head;
    PairModel(index_t num_genes, index_t dim)
        : genes(num_genes, dim), head(dim, 1, 64, 3, 0.1, ActivationKind::relu, /*stream*/ 1) {}

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        genes.visit_parameters(f, prefix + "genes.");
        head.visit_parameters(f, prefix + "head.");
    }
    /// pairs: 2 gene rows per sample -> predictions [B, 1]
    Tensor<float> forward(const std::vector<index_t>& pairs, const Context& ctx) {
        require(pairs.size() % 2 == 0, "PairModel: {} gene rows do not form pairs", pairs.size());
        const index_t b = static_cast<index_t>(pairs.size() / 2), d = genes.weight.value.size(1);
        Tensor<float> e = genes.forward(pairs, ctx);  // [2B, d]
        Tensor<float> z(Shape{b, d});
        for (index_t i = 0; i < b; ++i)
            for (index_t k = 0; k < d; ++k) z(i, k) = e(2 * i, k) + e(2 * i + 1, k);
        return head.forward(z.cview(), ctx);
    }
    void backward(const Tensor<float>& dy) {
        const index_t b = dy.size(0), d = genes.weight.value.size(1);
        Tensor<float> dz(Shape{b, d});
        head.backward(dy.cview(), dz.view());
        Tensor<float> de(Shape{2 * b, d});
        for (index_t i = 0; i < b; ++i)
            for (index_t k = 0; k < d; ++k) de(2 * i, k) = de(2 * i + 1, k) = dz(i, k);
        genes.backward(de.cview());
    }
};

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
    const double n = static_cast<double>(x.size());
    const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
    double sxy = 0, sxx = 0, syy = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

} // namespace

int main(int argc, char** argv) try {
    const auto data = io::YeastData::locate(argc > 1 ? argv[1] : "");
    const int epochs = argc > 2 ? io::parse_number<int>(argv[2], "EPOCHS", 1, 100000) : 30;
    const auto universe = io::GeneUniverse::from_table(data.genes_table());
    const auto labels = io::read_gi_labels(data.gi_train("GO:0006281"), universe);
    const auto& recs = labels.records;
    // The model embeds pairs: every record must name exactly two genes.
    for (const auto& r : recs)
        if (r.genes.size() != 2)
            throw Error(fmt::format("{}:{}: a record of {} gene(s); this model is trained on gene pairs", data.gi_train("GO:0006281").string(),
                                    r.line, r.genes.size()));
    if (recs.size() < 10) throw Error(fmt::format("{}: {} records; the 90/10 split needs at least 10", data.gi_train("GO:0006281").string(), recs.size()));
    fmt::print("data: {} genes, {} labelled pairs from {}\n", universe.size(), recs.size(), data.gi_train("GO:0006281").string());

    // Seeded 90/10 split; labels z-scored with the training statistics.
    std::vector<std::size_t> order(recs.size());
    std::iota(order.begin(), order.end(), 0);
    Generator shuffle(2026);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[shuffle.below(i)]);
    const std::size_t n_val = recs.size() / 10;
    std::vector<std::size_t> val(order.begin(), order.begin() + n_val), train(order.begin() + n_val, order.end());
    double mean = 0, var = 0;
    for (auto i : train) mean += recs[i].label;
    mean /= static_cast<double>(train.size());
    for (auto i : train) var += (recs[i].label - mean) * (recs[i].label - mean);
    const double sd = std::sqrt(var / static_cast<double>(train.size()));

    PairModel model(universe.size(), 32);
    Generator init(7);
    model.genes.reset_parameters(init, 0.1);
    model.head.reset_parameters(init);
    train::AdamW<float> opt(model, train::AdamWOptions{.lr = 1e-3, .weight_decay = 1e-4});
    const index_t batch = 256;
    const auto steps_per_epoch = static_cast<std::int64_t>((train.size() + batch - 1) / batch);
    train::CosineAnnealingWarmupRestarts sched({.first_cycle_steps = steps_per_epoch * 10, .max_lr = 2e-3, .min_lr = 1e-5,
                                               .warmup_steps = steps_per_epoch, .gamma = 0.8});

    auto evaluate = [&](const std::vector<std::size_t>& idx) {
        std::vector<index_t> pairs;
        std::vector<double> pred, truth;
        for (auto i : idx) pairs.insert(pairs.end(), recs[i].genes.begin(), recs[i].genes.end());
        auto y = model.forward(pairs, Context::eval());
        double mse = 0;
        for (std::size_t k = 0; k < idx.size(); ++k) {
            pred.push_back(y[static_cast<index_t>(k)] * sd + mean);
            truth.push_back(recs[idx[k]].label);
            mse += (pred.back() - truth.back()) * (pred.back() - truth.back());
        }
        return std::pair{mse / static_cast<double>(idx.size()), pearson(pred, truth)};
    };

    std::uint64_t step = 0;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        for (std::size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[shuffle.below(i)]);
        double loss_sum = 0;
        for (std::size_t s = 0; s < train.size(); s += batch) {
            const std::size_t e = std::min(train.size(), s + batch);
            std::vector<index_t> pairs;
            std::vector<float> target;
            for (std::size_t k = s; k < e; ++k) {
                const auto& r = recs[train[k]];
                pairs.insert(pairs.end(), r.genes.begin(), r.genes.end());
                target.push_back(static_cast<float>((r.label - mean) / sd));
            }
            auto y = model.forward(pairs, Context::train(11, step++));
            const auto b = static_cast<index_t>(target.size());
            Tensor<float> dy(Shape{b, 1});
            for (index_t k = 0; k < b; ++k) {
                const float diff = y[k] - target[static_cast<std::size_t>(k)];
                loss_sum += static_cast<double>(diff) * diff;
                dy[k] = 2.0f * diff / static_cast<float>(b);
            }
            model.backward(dy);
            train::clip_grad_norm<float>(model, 10.0);
            opt.set_lr(sched.lr());
            opt.step();
            sched.step();
        }
        if (epoch == 1 || epoch % 5 == 0 || epoch == epochs) {
            const auto [vmse, vr] = evaluate(val);
            fmt::print("epoch {:3d}  train loss (z-scored) {:.4f}  held-out MSE {:.5f}  Pearson {:.3f}\n", epoch,
                       loss_sum / static_cast<double>(train.size()), vmse, vr);
        }
    }
    double base = 0;
    for (auto i : val) base += (recs[i].label - mean) * (recs[i].label - mean);
    const auto [vmse, vr] = evaluate(val);
    fmt::print("held-out ({} pairs): MSE {:.5f} vs {:.5f} predicting the training mean; Pearson {:.3f}\n", val.size(), vmse,
               base / static_cast<double>(val.size()), vr);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "train_gi_mlp: %s\n", e.what());
    return 1;
}
