// The State Transition model on the CPU, timed the way the PyTorch anchor times it
// (/work/shared/anchors/torch_cgt_bench.py, configs state_step and state_fwd): median, min and max
// wall time of --reps runs after --warmup untimed runs, peak RSS of the process, and the peak bytes
// held by Tensors during the runs (memory_stats<cpu>: weights, gradients, Adam state, data and every
// saved activation); also the median CPU seconds of a run (all threads), which says how much of the
// wall time a loaded machine took away.
//   step (default): forward + energy loss + backward [+ gradient clipping] + Adam, as state trains;
//   --fwd: forward + energy loss only, under Context::inference() with the gradients released and no
//   optimiser (the anchor: a dropout-free model under no_grad, no optimiser built).
// Size: B = 16 sets of S = 128 cells, 2000 genes in and out, H = 512, 4 LLaMA layers (8 heads,
// intermediate 1376), 4-layer encoders and decoder, float.
// Recipe: by default state's (one-hot pert_dim genes + 24, dropout 0.1, clipping at 10, Adam lr 1e-4,
// log1p-like data); --anchor is the anchor's (pert_dim = genes, dropout 0, no clipping, Adam lr
// 1e-4, uniform data, one perturbation per set). Prints `# ` comment lines, then one JSON line.
//   state_step [--fwd] [--anchor] [--reps N] [--warmup N] [--sets B] [--cells S] [--genes G]
//              [--hidden H] [--layers L] [--pert-dim P] [--dropout p] [--clip c] [--lr x]
#include <sys/resource.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

using namespace celltx;

namespace {

struct Options {
    bool fwd = false, anchor = false;
    int reps = 3, warmup = 1;
    index_t sets = 16, cells = 128, genes = 2000, hidden = 512, pert_dim = -1;
    int layers = 4;
    double dropout = -1.0, clip = -1.0, lr = 1e-4;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        const auto value = [&]() -> const char* {
            require(i + 1 < argc, "state_step: {} needs a value", a);
            return argv[++i];
        };
        if (a == "--fwd") o.fwd = true;
        else if (a == "--anchor") o.anchor = true;
        else if (a == "--reps") o.reps = std::atoi(value());
        else if (a == "--warmup") o.warmup = std::atoi(value());
        else if (a == "--sets") o.sets = std::atoll(value());
        else if (a == "--cells") o.cells = std::atoll(value());
        else if (a == "--genes") o.genes = std::atoll(value());
        else if (a == "--hidden") o.hidden = std::atoll(value());
        else if (a == "--layers") o.layers = std::atoi(value());
        else if (a == "--pert-dim") o.pert_dim = std::atoll(value());
        else if (a == "--dropout") o.dropout = std::atof(value());
        else if (a == "--clip") o.clip = std::atof(value());
        else if (a == "--lr") o.lr = std::atof(value());
        else throw ShapeError(fmt::format("state_step: unknown option '{}' (see the header of benchmarks/state_step.cpp)", a));
    }
    // Unset options take the recipe's value: the anchor's, or state's.
    if (o.pert_dim < 0) o.pert_dim = o.anchor ? o.genes : o.genes + 24;
    if (o.dropout < 0.0) o.dropout = o.anchor ? 0.0 : 0.1;
    if (o.clip < 0.0) o.clip = o.anchor ? 0.0 : 10.0;  // 0: no clipping
    require(o.reps >= 1 && o.warmup >= 0, "state_step: --reps {} must be >= 1 and --warmup {} >= 0", o.reps, o.warmup);
    return o;
}

/// User + system CPU seconds of the whole process so far (all threads).
double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

long minor_faults() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double peak_rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

} // namespace

int main(int argc, char** argv) try {
    const Options o = parse(argc, argv);
    StateConfig c;
    c.input_dim = c.output_dim = o.genes;
    c.pert_dim = o.pert_dim;
    c.hidden = o.hidden;
    c.cell_set_len = o.cells;
    c.dropout = o.dropout;
    c.backbone.layers = o.layers;
    c.backbone.heads = 8;
    c.backbone.intermediate = 1376;
    using Model = StateTransition<float, cpu, LlamaBackbone, EnergyLoss>;
    Model model(c);
    Generator g(1);
    model.reset_parameters(g);
    // --fwd predicts only, as the anchor's no_grad forward: no optimiser state, no gradients.
    std::optional<train::Adam<float>> adam;
    if (o.fwd) release_gradients(model);
    else adam.emplace(model, train::AdamOptions{.lr = o.lr});
    const auto params = train::collect_parameters<float>(model);

    const index_t n = o.sets * o.cells;
    auto pert = Tensor<float>(Shape{n, o.pert_dim});
    auto ctrl = Tensor<float>::uninitialized(Shape{n, o.genes}), target = Tensor<float>::uninitialized(Shape{n, o.genes});
    if (o.anchor) {  // torch.rand data, one perturbation per set
        for (index_t b = 0; b < o.sets; ++b) {
            const auto p = static_cast<index_t>(g.below(static_cast<std::uint64_t>(o.pert_dim)));
            for (index_t i = b * o.cells; i < (b + 1) * o.cells; ++i) pert(i, p) = 1.0f;
        }
        for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = static_cast<float>(g.uniform());
        for (index_t i = 0; i < target.numel(); ++i) target[i] = static_cast<float>(g.uniform());
    } else {  // one-hot per cell, log1p-normalised-expression-like values
        for (index_t i = 0; i < n; ++i) pert(i, static_cast<index_t>(g.below(static_cast<std::uint64_t>(o.pert_dim)))) = 1.0f;
        for (index_t i = 0; i < ctrl.numel(); ++i) {
            ctrl[i] = static_cast<float>(std::log1p(-std::log(g.uniform())));
            target[i] = static_cast<float>(std::log1p(-1.2 * std::log(g.uniform())));
        }
    }
    const std::string config = o.fwd ? "state_fwd" : "state_step";
    fmt::print("# celltx {}: {} sets x {} cells, {} genes, pert_dim {}, H {}, {} LLaMA layers (8 heads, intermediate 1376), "
               "dropout {}, energy loss{}, float, {} threads; {:.2f} M parameters; {} data\n",
               config, o.sets, o.cells, o.genes, o.pert_dim, o.hidden, o.layers, o.dropout,
               o.fwd ? "" : (o.clip > 0.0 ? fmt::format(", clip {}, Adam lr {}", o.clip, o.lr) : fmt::format(", no clip, Adam lr {}", o.lr)),
               cpu_detail::max_threads(), static_cast<double>(parameter_count<float>(model)) / 1e6, o.anchor ? "anchor (uniform)" : "state-like");

    loss::EnergyDistance<float> energy;  // --fwd: the loss value only (under Context::inference(), it keeps nothing)
    const Shape sets{o.sets, o.cells, o.genes};
    std::uint64_t step = 0;
    double loss_value = 0.0;
    const auto run = [&] {
        if (o.fwd) {
            const StatePrediction<float> p = model.forward(pert.cview(), ctrl.cview(), {}, Context::inference());
            const Tensor<float> per_set = energy.forward(p.pred.cview().reshaped(sets), target.cview().reshaped(sets), Context::inference());
            double s = 0.0;
            for (index_t b = 0; b < per_set.numel(); ++b) s += static_cast<double>(per_set[b]);
            loss_value = s / static_cast<double>(per_set.numel());
        } else {
            const StateLossValues v = model.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, {}, Context::train(7, step++));
            if (o.clip > 0.0) train::clip_grad_norm(params, o.clip);
            adam->step();
            loss_value = v.total;
        }
    };

    auto& stats = memory_stats<cpu>();
    const std::size_t fixed = stats.live.load();  // weights, gradients, Adam state and data: what every run keeps
    for (int w = 0; w < o.warmup; ++w) run();
    stats.reset_peak();
    std::vector<double> times, cpu;
    const long faults0 = minor_faults();
    for (int r = 0; r < o.reps; ++r) {
        const double c0 = cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        run();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        cpu.push_back(cpu_seconds() - c0);
        fmt::print("# rep {}: {:.3f} s ({:.3f} CPU s), loss {:.5f}\n", r, times.back(), cpu.back(), loss_value);
    }
    const double faults = static_cast<double>(minor_faults() - faults0) / o.reps;
    const auto [tmin, tmax] = std::minmax_element(times.begin(), times.end());
    std::vector<double> rounded;
    for (double t : times) rounded.push_back(std::round(t * 1e4) / 1e4);
    fmt::print("{{\"config\": \"{}\", \"impl\": \"celltx\", \"threads\": {}, \"reps\": {}, \"warmup\": {}, \"median_s\": {:.4f}, "
               "\"min_s\": {:.4f}, \"max_s\": {:.4f}, \"times_s\": [{}], \"cpu_median_s\": {:.4f}, \"minor_faults_per_iter\": {:.0f}, \"peak_rss_mb\": {:.1f}, \"tensor_peak_mb\": {:.1f}, "
               "\"tensor_fixed_mb\": {:.1f}, \"params\": {}, \"pert_dim\": {}, \"dropout\": {}, \"clip\": {}, \"anchor_recipe\": {}, "
               "\"loss\": {:.6f}}}\n",
               config, cpu_detail::max_threads(), o.reps, o.warmup, median(times), *tmin, *tmax, fmt::join(rounded, ", "), median(cpu), faults,
               peak_rss_mb(), static_cast<double>(stats.peak.load()) / 1e6, static_cast<double>(fixed) / 1e6,
               parameter_count<float>(model), o.pert_dim, o.dropout, o.fwd ? 0.0 : o.clip, o.anchor ? "true" : "false", loss_value);
    return 0;
} catch (const std::exception& e) {
    fmt::print(stderr, "state_step: {}\n", e.what());
    return 1;
}
