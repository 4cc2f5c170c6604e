#pragma once
// ConfidenceHead: state's ConfidenceToken.confidence_projection, the nn.Sequential
//   0 Linear(H, H/2), 1 LayerNorm, 2 GELU, 3 Dropout, 4 Linear(H/2, H/4), 5 LayerNorm, 6 GELU,
//   7 Dropout, 8 Linear(H/4, 1), 9 ReLU
// that maps the confidence token's final state [B, H] to one non-negative value per set [B, 1].
// state_dict names are the Sequential indices ("0.weight", "1.weight", "4.bias", "5.*", "8.*").
// Dropout k draws from CounterRng(0, stream).substream(k). Layer contract of nn/linear.hpp.
#include <cstdint>
#include <string>
#include "celltx/nn/activation.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"

namespace celltx::nn {

/// The ops a ConfidenceHead calls on backend B.
template <class B, class T>
concept ConfidenceHeadOps = LinearOps<B, T> && LayerNormOps<B, T> && ActivationOps<B, T> && DropoutOps<B, T>;

template <Scalar T, Backend B = cpu>
class ConfidenceHead {
public:
    ConfidenceHead() = default;
    explicit ConfidenceHead(index_t hidden, double dropout = 0.1, std::uint64_t stream = 0)
        : lin0(hidden, hidden / 2), ln1(hidden / 2), lin4(hidden / 2, hidden / 4), ln5(hidden / 4), lin8(hidden / 4, 1),
          drop3_(dropout, CounterRng(0, stream).substream(0).stream()),
          drop7_(dropout, CounterRng(0, stream).substream(1).stream()) {
        require(hidden >= 4, "ConfidenceHead: hidden size {} must be at least 4 (it narrows to H/4)", hidden);
    }

    index_t features() const noexcept { return lin0.in_features(); }

    void reset_parameters(Generator& g) {
        lin0.reset_parameters(g);
        ln1.reset_parameters(g);
        lin4.reset_parameters(g);
        ln5.reset_parameters(g);
        lin8.reset_parameters(g);
    }

    /// x [..., H] -> [..., 1]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        Tensor<T, B> h = drop3_.forward(gelu2_.forward(ln1.forward(lin0.forward(x, ctx).cview(), ctx).cview(), ctx).cview(), ctx);
        h = drop7_.forward(gelu6_.forward(ln5.forward(lin4.forward(h.cview(), ctx).cview(), ctx).cview(), ctx).cview(), ctx);
        return relu9_.forward(lin8.forward(h.cview(), ctx).cview(), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> d8(dy.shape());
        relu9_.backward(dy, d8.view());
        Tensor<T, B> h = back(lin8, d8.cview(), drop7_.last_shape());
        h = back(drop7_, h.cview());
        h = back(gelu6_, h.cview());
        h = back(ln5, h.cview());
        h = back(lin4, h.cview(), drop3_.last_shape());
        h = back(drop3_, h.cview());
        h = back(gelu2_, h.cview());
        h = back(ln1, h.cview());
        lin0.backward(h.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        lin0.visit_parameters(f, prefix + "0.");
        ln1.visit_parameters(f, prefix + "1.");
        lin4.visit_parameters(f, prefix + "4.");
        ln5.visit_parameters(f, prefix + "5.");
        lin8.visit_parameters(f, prefix + "8.");
    }

    Linear<T, B> lin0;
    LayerNorm<T, B> ln1;
    Linear<T, B> lin4;
    LayerNorm<T, B> ln5;
    Linear<T, B> lin8;

private:
    /// The input gradient of one shape-preserving stage (or one of input shape `in`).
    template <class L>
    static Tensor<T, B> back(L& layer, ConstView<T, B> dy, const Shape& in) {
        Tensor<T, B> dx(in);
        layer.backward(dy, dx.view());
        return dx;
    }
    template <class L>
    static Tensor<T, B> back(L& layer, ConstView<T, B> dy) {
        return back(layer, dy, dy.shape());
    }

    Dropout<T, B> drop3_, drop7_;
    Activation<T, B> gelu2_{ActivationKind::gelu}, gelu6_{ActivationKind::gelu}, relu9_{ActivationKind::relu};
};

} // namespace celltx::nn
