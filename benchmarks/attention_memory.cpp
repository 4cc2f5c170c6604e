// Memory and time of one multi-head attention layer at the Cell Graph Transformer's size
// (T = N+1 = 6608 tokens, d = 64, 8 heads, separate q/k/v/out projections, float): forward +
// backward, in eval and in training (dropout 0.1 on the probabilities). Prints the wall time, the
// peak bytes held by Tensors (memory_stats) and the process's peak RSS (getrusage).
//   attention_memory [T] [d] [heads] [repeats]
#include <sys/resource.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/nn/attention.hpp"

using namespace celltx;

int main(int argc, char** argv) {
    const index_t T = argc > 1 ? std::atoll(argv[1]) : 6608, d = argc > 2 ? std::atoll(argv[2]) : 64,
                  H = argc > 3 ? std::atoll(argv[3]) : 8;
    const int repeats = argc > 4 ? std::atoi(argv[4]) : 3;
    nn::AttentionConfig cfg;
    cfg.d_model = d;
    cfg.num_heads = H;
    cfg.dropout = 0.1;
    Generator g(1);
    auto x = Tensor<float>::uninitialized(Shape{1, T, d}), dy = Tensor<float>::uninitialized(Shape{1, T, d});
    for (index_t i = 0; i < x.numel(); ++i) {
        x[i] = static_cast<float>(g.normal());
        dy[i] = static_cast<float>(1e-3 * g.normal());
    }
    fmt::print("attention layer T={} d={} heads={} float, {} threads\n", T, d, H, cpu_detail::max_threads());
    fmt::print("a dense T x T float matrix per head would be {:.1f} MB ({:.2f} GB for the {} heads)\n",
               4.0 * T * T / 1e6, 4.0 * T * T * H / 1e9, H);
    for (bool training : {false, true}) {
        nn::MultiHeadAttention<float> m(cfg);
        m.reset_parameters(g);
        auto& stats = memory_stats<cpu>();
        stats.reset_peak();
        const std::size_t base = stats.live.load();
        double fwd = 1e30, bwd = 1e30;
        for (int r = 0; r < repeats; ++r) {
            const Context ctx = training ? Context::train(7, static_cast<std::uint64_t>(r)) : Context::eval();
            auto t0 = std::chrono::steady_clock::now();
            auto y = m.forward(x.cview(), ctx);
            auto t1 = std::chrono::steady_clock::now();
            Tensor<float> dx(x.shape());
            m.backward(dy.cview(), dx.view());
            auto t2 = std::chrono::steady_clock::now();
            fwd = std::min(fwd, std::chrono::duration<double>(t1 - t0).count());
            bwd = std::min(bwd, std::chrono::duration<double>(t2 - t1).count());
        }
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        fmt::print("{:8s}: forward {:.3f} s, backward {:.3f} s (best of {}); tensor peak {:.1f} MB above the inputs and weights; "
                   "process peak RSS {:.1f} MB\n",
                   training ? "training" : "eval", fwd, bwd, repeats, (stats.peak.load() - base) / 1e6, ru.ru_maxrss / 1024.0);
    }
    return 0;
}
