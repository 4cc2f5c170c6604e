#pragma once
// Mlp: the spec's build_mlp(in, out, hidden, n_layers, dropout, activation) as an nn.Sequential.
// n == 1: Linear(in,out); otherwise Linear(in,h), act, Dropout, (n-2) x [Linear(h,h), act, Dropout],
// Linear(h,out). state_dict names are the Sequential indices: linear k is "{3k}.weight"/"{3k}.bias".
// Also the CGT FFN (Mlp(d, d, 4d, 2)) and GI head (Mlp(2d, 1, d, 2, p, relu)).
// Dropout k draws from stream CounterRng(0, stream).substream(k).stream(), so Mlps built with
// different base streams never share masks. Layer contract of nn/linear.hpp.
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/nn/activation.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/linear.hpp"

namespace celltx::nn {

/// The ops an Mlp calls on backend B.
template <class B, class T>
concept MlpOps = LinearOps<B, T> && ActivationOps<B, T> && DropoutOps<B, T>;

template <Scalar T, Backend B = cpu>
class Mlp {
public:
    Mlp() = default;
    Mlp(index_t in, index_t out, index_t hidden, int n_layers, double dropout = 0.1,
        ActivationKind activation = ActivationKind::gelu, std::uint64_t stream = 0)
        : activation_(activation) {
        require(n_layers >= 1, "Mlp: n_layers={} must be >= 1", n_layers);
        if (n_layers == 1) {
            linears.emplace_back(in, out);
            return;
        }
        linears.emplace_back(in, hidden);
        for (int k = 0; k < n_layers - 2; ++k) linears.emplace_back(hidden, hidden);
        linears.emplace_back(hidden, out);
        for (int k = 0; k < n_layers - 1; ++k) {
            activations.emplace_back(activation);
            dropouts.emplace_back(dropout, CounterRng(0, stream).substream(static_cast<std::uint64_t>(k)).stream());
        }
    }

    int n_layers() const noexcept { return static_cast<int>(linears.size()); }
    index_t in_features() const noexcept { return linears.front().in_features(); }
    index_t out_features() const noexcept { return linears.back().out_features(); }
    ActivationKind activation() const noexcept { return activation_; }

    /// nn.Linear's default initialisation for every Linear, in Sequential order.
    void reset_parameters(Generator& g) {
        for (auto& l : linears) l.reset_parameters(g);
    }

    /// x [..., in] -> y [..., out]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) { return chain(linears[0].forward(x, ctx), ctx); }
    /// As above, the first Linear keeping x itself as its saved input (no copy).
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) { return chain(linears[0].forward(std::move(x), ctx), ctx); }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> g;  // gradient w.r.t. the output of the block being visited
        for (std::size_t k = linears.size(); k-- > 1;) {
            Tensor<T, B> d(dropouts[k - 1].last_shape());
            linears[k].backward(k + 1 == linears.size() ? dy : g.cview(), d.view());
            if (dropouts[k - 1].active()) {  // without a mask the dropout's backward is the identity
                Tensor<T, B> a(d.shape());
                dropouts[k - 1].backward(d.cview(), a.view());
                d = std::move(a);
            }
            Tensor<T, B> h(d.shape());
            activations[k - 1].backward(d.cview(), h.view());
            g = std::move(h);
        }
        linears[0].backward(linears.size() == 1 ? dy : g.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        for (std::size_t k = 0; k < linears.size(); ++k) linears[k].visit_parameters(f, prefix + std::to_string(3 * k) + ".");
    }

    std::vector<Linear<T, B>> linears;
    std::vector<Activation<T, B>> activations;
    std::vector<Dropout<T, B>> dropouts;

private:
    /// The layers after the first: every intermediate is handed on, and kept by the layer that saves it.
    Tensor<T, B> chain(Tensor<T, B> h, const Context& ctx) {
        for (std::size_t k = 1; k < linears.size(); ++k) {
            h = activations[k - 1].forward(std::move(h), ctx);
            h = dropouts[k - 1].forward(std::move(h), ctx);
            h = linears[k].forward(std::move(h), ctx);
        }
        return h;
    }

    ActivationKind activation_ = ActivationKind::gelu;
};

} // namespace celltx::nn
