#pragma once
// Embedding(num, dim) (nn.Embedding; state_dict `weight` [num, dim]): forward(indices) gathers rows
// into [n, dim]; backward(dy) ASSIGNS weight.grad by scatter-add (duplicate indices accumulate).
// It takes indices, not a tensor, so it has no input gradient; otherwise the contract of nn/linear.hpp.
#include <span>
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"

namespace celltx::nn {

/// The ops an Embedding calls on backend B.
template <class B, class T>
concept EmbeddingOps = ops::provides_gather_rows<B, T> && ops::provides_scatter_add_rows<B, T>;

template <Scalar T, Backend B = cpu>
class Embedding {
public:
    Embedding() = default;
    Embedding(index_t num_embeddings, index_t dim) : weight(Shape{num_embeddings, dim}), num_(num_embeddings), dim_(dim) {
        require(num_embeddings >= 0 && dim > 0, "Embedding: needs num >= 0 and dim > 0 (got {}, {})", num_embeddings, dim);
    }

    index_t num_embeddings() const noexcept { return num_; }
    index_t dim() const noexcept { return dim_; }

    /// nn.Embedding's initialisation N(0, 1); models that use N(0, 0.02) pass std.
    void reset_parameters(Generator& g, double std = 1.0) {
        init::normal(weight.value, g, 0.0, std);
    }

    /// indices (n) -> rows of weight [n, dim]. An index outside [0, num) throws ShapeError.
    Tensor<T, B> forward(std::span<const index_t> indices, const Context& ctx = {}) {
        const index_t n = static_cast<index_t>(indices.size());
        for (index_t i = 0; i < n; ++i)
            require(indices[i] >= 0 && indices[i] < num_, "Embedding: index {} (at position {}) is out of range [0, {})",
                    indices[i], i, num_);
        indices_ = from_host<index_t, B>(indices.data(), Shape{n});
        auto y = Tensor<T, B>::uninitialized(Shape{n, dim_});
        ops::gather_rows(B{}, weight.value.data(), indices_.data(), n, dim_, y.data());
        kept_ = ctx.keep_for_backward;
        if (!kept_) indices_ = Tensor<index_t, B>();
        return y;
    }

    /// dy [n, dim] (any shape with n*dim elements ending in dim) -> weight.grad (assigned).
    void backward(ConstView<T, B> dy) {
        require(kept_, "Embedding::backward: {}", nothing_kept_for_backward);
        const index_t n = indices_.numel();
        require(dy.numel() == n * dim_ && dy.shape().last() == dim_, "Embedding::backward: dy {} does not match the output [{},{}]",
                dy.shape(), n, dim_);
        weight.grad_for_backward().zero();
        ops::scatter_add_rows(B{}, dy.data(), indices_.data(), n, dim_, weight.grad_for_backward().data());
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "weight"), weight);
    }

    Parameter<T, B> weight;

private:
    index_t num_ = 0, dim_ = 0;
    bool kept_ = false;
    Tensor<index_t, B> indices_;  // saved by forward
};

} // namespace celltx::nn
