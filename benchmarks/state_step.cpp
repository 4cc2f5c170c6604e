// One State Transition training step on the CPU at the size of the note: B = 16 sets of
// S = 128 cells, 2000 genes in and out (pert_dim 2024, one-hot), H = 512, 4 LLaMA layers (8 heads,
// intermediate 1376), 4-layer encoders and decoder, dropout 0.1, energy loss, float; the step is
// forward + loss + backward + gradient clipping (10) + Adam (lr 1e-4), as state trains.
// Prints the wall time of each step, the peak bytes held by Tensors during the step
// (memory_stats<cpu>: weights, gradients, Adam state, data and every saved activation) and the
// process's peak RSS.
//   state_step [steps] [sets] [cells] [genes] [hidden]
#include <sys/resource.h>
#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

using namespace celltx;

int main(int argc, char** argv) {
    const int steps = argc > 1 ? std::atoi(argv[1]) : 2;
    const index_t sets = argc > 2 ? std::atoll(argv[2]) : 16, cells = argc > 3 ? std::atoll(argv[3]) : 128,
                  genes = argc > 4 ? std::atoll(argv[4]) : 2000, hidden = argc > 5 ? std::atoll(argv[5]) : 512;
    const index_t pert_dim = genes + 24;

    StateConfig c;
    c.input_dim = c.output_dim = genes;
    c.pert_dim = pert_dim;
    c.hidden = hidden;
    c.cell_set_len = cells;
    c.backbone.layers = 4;
    c.backbone.heads = 8;
    c.backbone.intermediate = 1376;
    using Model = StateTransition<float, cpu, LlamaBackbone, EnergyLoss>;
    Model model(c);
    Generator g(1);
    model.reset_parameters(g);
    train::Adam<float> adam(model, train::AdamOptions{.lr = 1e-4});
    const auto params = train::collect_parameters<float>(model);

    const index_t n = sets * cells;
    auto pert = Tensor<float>(Shape{n, pert_dim});
    auto ctrl = Tensor<float>::uninitialized(Shape{n, genes}), target = Tensor<float>::uninitialized(Shape{n, genes});
    for (index_t i = 0; i < n; ++i) pert(i, static_cast<index_t>(g.below(static_cast<std::uint64_t>(pert_dim)))) = 1.0f;
    for (index_t i = 0; i < ctrl.numel(); ++i) {  // log1p-normalised-expression-like values
        ctrl[i] = static_cast<float>(std::log1p(-std::log(g.uniform())));
        target[i] = static_cast<float>(std::log1p(-1.2 * std::log(g.uniform())));
    }
    fmt::print("State Transition step: {} sets x {} cells, {} genes, pert_dim {}, H {}, {} LLaMA layers ({} heads, "
               "intermediate {}), energy loss, float, {} threads; {:.2f} M parameters\n",
               sets, cells, genes, pert_dim, hidden, c.backbone.layers, c.backbone.heads, c.backbone.intermediate,
               cpu_detail::max_threads(), parameter_count<float>(model) / 1e6);

    auto& stats = memory_stats<cpu>();
    const std::size_t fixed = stats.live.load();  // before any forward: what every step keeps
    for (int s = 0; s < steps; ++s) {
        stats.reset_peak();
        const auto t0 = std::chrono::steady_clock::now();
        const StateLossValues v = model.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, {}, Context::train(7, static_cast<std::uint64_t>(s)));
        const auto t1 = std::chrono::steady_clock::now();
        train::clip_grad_norm(params, 10.0);
        adam.step();
        const auto t2 = std::chrono::steady_clock::now();
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        fmt::print("step {}: loss {:.5f}; forward+loss+backward {:.2f} s, clip+Adam {:.2f} s; tensor peak {:.0f} MB "
                   "(weights, gradients, Adam state and data: {:.0f} MB); peak RSS {:.0f} MB\n",
                   s, v.total, std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count(),
                   stats.peak.load() / 1e6, fixed / 1e6, ru.ru_maxrss / 1024.0);
    }
    return 0;
}
