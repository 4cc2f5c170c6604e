// A small State Transition model (LLaMA backbone, energy loss, confidence token) trained on a
// synthetic perturbation task, then used at another set length and saved as a State checkpoint.
//
//   task:   32 "genes"; control cells ~ |N(0, 1)|; perturbation k (of 4) shifts genes 8k..8k+7 by +1.5
//           and halves the spread of the others. Each set: S cells of one perturbation, each paired
//           with a control cell; the target is an independent draw of perturbed cells (the loss
//           compares distributions, not cells).
//   train:  Adam (lr 1e-3), gradient clipping at 10, 16 sets of 32 cells per step.
//
// Usage: predict_state [--device cpu|cuda] [STEPS] [OUT.safetensors]
//   (on the CPU a model this small runs fastest with OMP_NUM_THREADS=1; --device cuda needs the
//   program compiled by nvcc, which CMake does when it finds the CUDA Toolkit, and a CUDA device)
// The program is one template over the backend (run<B>); celltx::main_on_device picks B from --device.
// Prints the loss as it falls, the predicted mean shift per perturbation at set length 50, and the
// confidence head's outputs; writes the checkpoint with io::save_state_dict (PyTorch-readable names).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>
#include <fmt/core.h>
#include "celltx/backend/device.hpp"
#include "celltx/io/arguments.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/clip_grad.hpp"

using namespace celltx;

namespace {

constexpr index_t genes = 32, perts = 4;

/// One batch: pert one-hots, control cells and independently drawn perturbed cells (targets).
struct Batch {
    Tensor<float> pert, ctrl, target;
};

float perturbed(index_t k, index_t gene, double z) {
    const bool hit = gene / (genes / perts) == k;
    return static_cast<float>(hit ? std::abs(z) + 1.5 : 0.5 * std::abs(z));
}

Batch make_batch(Generator& g, index_t sets, index_t cells) {
    Batch b{Tensor<float>(Shape{sets, cells, perts}), Tensor<float>::uninitialized(Shape{sets, cells, genes}),
            Tensor<float>::uninitialized(Shape{sets, cells, genes})};
    for (index_t s = 0; s < sets; ++s) {
        const auto k = static_cast<index_t>(g.below(perts));
        for (index_t c = 0; c < cells; ++c) {
            b.pert(s, c, k) = 1.0f;
            for (index_t j = 0; j < genes; ++j) {
                b.ctrl(s, c, j) = static_cast<float>(std::abs(g.normal()));
                b.target(s, c, j) = perturbed(k, j, g.normal());
            }
        }
    }
    return b;
}

template <Backend B>
int run(int argc, char** argv) {
    const int steps = argc > 1 ? io::parse_number<int>(argv[1], "STEPS", 1, 1000000) : 150;
    const std::string out = argc > 2 ? argv[2] : "state_example.safetensors";
    {  // fail before training, not after it, when the checkpoint cannot land where asked
        const auto dir = std::filesystem::path(out).parent_path();
        std::error_code ec;
        if (!dir.empty() && !std::filesystem::is_directory(dir, ec))
            throw IoError(fmt::format("{}: cannot save: the directory {} does not exist", out, dir.string()));
        if (std::filesystem::is_directory(out, ec)) throw IoError(fmt::format("{}: cannot save: the path is a directory", out));
    }

    StateConfig c;
    c.input_dim = c.output_dim = genes;
    c.pert_dim = perts;
    c.hidden = 32;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.dropout = 0.0;
    c.cell_set_len = 32;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    c.backbone.intermediate = 64;
    using Model = StateTransition<float, B, LlamaBackbone, EnergyLoss, ConfidenceToken>;
    Model model(c);
    Generator g(2024);
    model.reset_parameters(g);  // drawn on the host: every backend starts from the same weights
    train::Adam<float, B> adam(model, train::AdamOptions{.lr = 1e-3});
    const auto params = train::collect_parameters<float, B>(model);
    fmt::print("training on {}\n", B::name);

    for (int step = 0; step < steps; ++step) {
        const Batch b = make_batch(g, 16, c.cell_set_len);  // made on the host, copied to the backend
        const Tensor<float, B> pert = b.pert.to<B>(), ctrl = b.ctrl.to<B>(), target = b.target.to<B>();
        const StateLossValues v = model.train_step(pert.cview(), ctrl.cview(), target.cview(), {}, {},
                                                   Context::train(1, static_cast<std::uint64_t>(step)));
        train::clip_grad_norm(params, 10.0);
        adam.step();
        if (step % 25 == 0 || step + 1 == steps)
            fmt::print("step {:4d}: energy {:.4f}  confidence mse {:.4f}  total {:.4f}\n", step, v.main, v.confidence, v.total);
    }

    // Any set length at prediction: one set of 50 cells per perturbation.
    const index_t cells = 50;
    for (index_t k = 0; k < perts; ++k) {
        Tensor<float> pert(Shape{1, cells, perts}), ctrl = Tensor<float>::uninitialized(Shape{1, cells, genes});
        for (index_t i = 0; i < cells; ++i) {
            pert(0, i, k) = 1.0f;
            for (index_t j = 0; j < genes; ++j) ctrl(0, i, j) = static_cast<float>(std::abs(g.normal()));
        }
        const StatePrediction<float, B> on_backend = model.forward(pert.to<B>().cview(), ctrl.to<B>().cview(), {}, Context::inference());
        const Tensor<float> pred = to_host(on_backend.pred), confidence = to_host(on_backend.confidence);
        double hit = 0.0, other = 0.0, expect_hit = 0.0, expect_other = 0.0;
        for (index_t i = 0; i < cells; ++i)
            for (index_t j = 0; j < genes; ++j) {
                const bool on = j / (genes / perts) == k;
                (on ? hit : other) += pred(0, i, j) - ctrl(0, i, j);
                (on ? expect_hit : expect_other) += perturbed(k, j, g.normal()) - std::abs(g.normal());
            }
        const double n_hit = static_cast<double>(cells * genes / perts), n_other = static_cast<double>(cells * genes) - n_hit;
        fmt::print("perturbation {}: mean shift on its genes {:+.3f} (true {:+.3f}), elsewhere {:+.3f} (true {:+.3f}); confidence {:.3f}\n",
                   k, hit / n_hit, expect_hit / n_hit, other / n_other, expect_other / n_other, confidence[0]);
    }
    io::save_state_dict(model, out, {{"model", "celltx StateTransition example"}});
    fmt::print("saved {} ({} parameters)\n", out, parameter_count<float, B>(model));
    return 0;
}

} // namespace

int main(int argc, char** argv) try {
    return main_on_device(argc, argv, [&](auto backend) { return run<decltype(backend)>(argc, argv); });
} catch (const std::exception& e) {
    // Unwinding (instead of std::terminate) lets the writer remove its temporary file.
    std::fprintf(stderr, "predict_state: %s\n", e.what());
    return 1;
}
