#pragma once
// ConfidenceToken (option): state's ConfidenceToken, a learned [1, 1, H] token appended AFTER the
// S cells of every set, and the head (nn::ConfidenceHead) that reads its final state back into one
// non-negative confidence per set [B, 1]. state_dict names (under "confidence_token."):
// `confidence_token` and `confidence_projection.{0,1,4,5,8}.*`.
// The module splits the work around the backbone:
//  - append(x [B, S, H]) -> [B, S+1, H];                        backward_append(dseq, dx) assigns the token's
//    gradient (Σ over sets) and ADDS the cells' part into dx;
//  - split(h [B, S+1, H], ctx, cells) -> confidence [B, 1], cells = h[:, :S];
//    backward_split(dconf, dcells) assigns the head's gradients and returns dh [B, S+1, H].
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/confidence_head.hpp"
#include "celltx/nn/init.hpp"
#include "celltx/policies/state/option.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx {

namespace state_parts {

template <Scalar T, Backend B = cpu>
class ConfidenceTokenModule {
public:
    static constexpr std::uint64_t dropout_stream = 4;

    ConfidenceTokenModule() = default;
    ConfidenceTokenModule(index_t hidden, double dropout = 0.1, std::uint64_t stream = 0)
        : confidence_token(Shape{1, 1, hidden}), confidence_projection(hidden, dropout, stream), h_(hidden) {}
    /// Width StateConfig::hidden, dropout StateConfig::dropout.
    explicit ConfidenceTokenModule(const StateConfig& c) : ConfidenceTokenModule(c.hidden, c.dropout, dropout_stream) {}

    /// torch.randn for the token, nn defaults for the head.
    void reset_parameters(Generator& g) {
        init::normal(confidence_token.value, g, 0.0, 1.0);
        confidence_projection.reset_parameters(g);
    }

    /// x [B, S, H] -> [B, S+1, H], the token last in every set.
    Tensor<T, B> append(ConstView<T, B> x) const {
        require(x.rank() == 3 && x.size(2) == h_, "ConfidenceToken: input {} is not [B, S, {}]", x.shape(), h_);
        const index_t sets = x.size(0), s = x.size(1);
        auto out = Tensor<T, B>::uninitialized(Shape{sets, s + 1, h_});
        ops::copy_2d(B{}, out.data(), (s + 1) * h_, x.data(), s * h_, sets, s * h_);
        ops::copy_2d(B{}, out.data() + s * h_, (s + 1) * h_, confidence_token.value.data(), index_t{0}, sets, h_);
        return out;
    }

    /// Token gradient (assigned) from dseq [B, S+1, H]; dx [B, S, H] += the cells' part.
    void backward_append(ConstView<T, B> dseq, TensorView<T, B> dx) {
        require(dseq.rank() == 3 && dseq.size(2) == h_ && dseq.size(1) >= 1, "ConfidenceToken::backward_append: dseq {} is not [B, S+1, {}]",
                dseq.shape(), h_);
        const index_t sets = dseq.size(0), s = dseq.size(1) - 1;
        Tensor<T, B> dtok = Tensor<T, B>::uninitialized(Shape{sets, h_});
        ops::copy_2d(B{}, dtok.data(), h_, dseq.data() + s * h_, (s + 1) * h_, sets, h_);
        ops::column_sum(B{}, dtok.data(), sets, h_, confidence_token.grad_for_backward().data());
        if (!dx.data()) return;
        require(dx.shape() == (Shape{sets, s, h_}), "ConfidenceToken::backward_append: dx {} is not [{}, {}, {}]", dx.shape(), sets, s, h_);
        Tensor<T, B> dcells = Tensor<T, B>::uninitialized(dx.shape());
        ops::copy_2d(B{}, dcells.data(), s * h_, dseq.data(), (s + 1) * h_, sets, s * h_);
        ops::accumulate(B{}, dcells.data(), dx.data(), dcells.numel());
    }

    /// h [B, S+1, H] -> confidence [B, 1]; `cells` receives h[:, :S] as [B, S, H].
    Tensor<T, B> split(ConstView<T, B> h, const Context& ctx, Tensor<T, B>& cells) {
        require(h.rank() == 3 && h.size(2) == h_ && h.size(1) >= 1, "ConfidenceToken::split: h {} is not [B, S+1, {}]", h.shape(), h_);
        const index_t sets = h.size(0), s = h.size(1) - 1;
        cells = Tensor<T, B>::uninitialized(Shape{sets, s, h_});
        auto tok = Tensor<T, B>::uninitialized(Shape{sets, h_});
        ops::copy_2d(B{}, cells.data(), s * h_, h.data(), (s + 1) * h_, sets, s * h_);
        ops::copy_2d(B{}, tok.data(), h_, h.data() + s * h_, (s + 1) * h_, sets, h_);
        return confidence_projection.forward(tok.cview(), ctx);
    }

    /// Head gradients (assigned) from dconf [B, 1]; returns dh [B, S+1, H] with dcells [B, S, H]
    /// in the cells' rows and the head's input gradient in the token's row.
    Tensor<T, B> backward_split(ConstView<T, B> dconf, ConstView<T, B> dcells) {
        require(dcells.rank() == 3 && dcells.size(2) == h_, "ConfidenceToken::backward_split: dcells {} is not [B, S, {}]", dcells.shape(),
                h_);
        const index_t sets = dcells.size(0), s = dcells.size(1);
        Tensor<T, B> dtok(Shape{sets, h_});
        confidence_projection.backward(dconf, dtok.view());
        auto dh = Tensor<T, B>::uninitialized(Shape{sets, s + 1, h_});
        ops::copy_2d(B{}, dh.data(), (s + 1) * h_, dcells.data(), s * h_, sets, s * h_);
        ops::copy_2d(B{}, dh.data() + s * h_, (s + 1) * h_, dtok.data(), h_, sets, h_);
        return dh;
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "confidence_token"), confidence_token);
        confidence_projection.visit_parameters(f, prefix + "confidence_projection.");
    }

    Parameter<T, B> confidence_token;  ///< [1, 1, H]
    nn::ConfidenceHead<T, B> confidence_projection;

private:
    index_t h_ = 0;
};

} // namespace state_parts

/// Option: append a learned confidence token and predict one confidence per set.
struct ConfidenceToken {
    static constexpr StateOptionKind option = StateOptionKind::confidence_token;
    template <Scalar T, Backend B>
    using module = state_parts::ConfidenceTokenModule<T, B>;
};

} // namespace celltx
