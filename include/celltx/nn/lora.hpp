#pragma once
// LoraAdapter: a low-rank update beside a frozen projection (Hu et al. 2021; PEFT's LoraLayer):
//   y = base(x) + scaling · B A dropout(x),   scaling = alpha / rank,
// A = lora_A.weight [rank, in] and B = lora_B.weight [out, rank], PEFT's shapes and names for
// nn.Linear and for GPT-2's Conv1D alike (PEFT's fan_in_fan_out only transposes the merge).
// A starts as nn.Linear's default (kaiming_uniform, a = √5) and B at zero, so a fresh adapter
// leaves the model's function unchanged.
// The adapter does not own the projection: the layer holding it (MultiHeadAttention) adds
// delta(x) to its projection and passes the output gradient to backward(), which ASSIGNS the
// gradients of A and B and ADDS into dx (the layer contract of nn/linear.hpp). merge_into()
// folds scaling · B A into the base weight, PEFT's merge_and_unload.
#include <cstdint>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/init.hpp"

namespace celltx::nn {

/// PEFT's LoraConfig fields that celltx uses.
struct LoraConfig {
    index_t rank = 8;          ///< r
    double alpha = 8.0;        ///< lora_alpha; scaling = alpha / rank
    double dropout = 0.0;      ///< lora_dropout, on the adapter's input, in training
    std::uint64_t stream = 0x10a;  ///< base dropout stream (each adapter derives its own)

    double scaling() const { return alpha / static_cast<double>(rank); }
};

template <Scalar T, Backend B = cpu>
class LoraAdapter {
public:
    LoraAdapter() = default;
    LoraAdapter(index_t in, index_t out, const LoraConfig& c, std::uint64_t stream)
        : lora_A(Shape{c.rank, in}), lora_B(Shape{out, c.rank}), in_(in), out_(out), rank_(c.rank), scaling_(c.scaling()),
          drop_(c.dropout, stream) {
        require(c.rank >= 1 && in >= 1 && out >= 1, "LoraAdapter: rank {}, in {}, out {} must be positive", c.rank, in, out);
        require(c.alpha > 0.0, "LoraAdapter: alpha {} must be positive", c.alpha);
    }

    index_t in_features() const noexcept { return in_; }
    index_t out_features() const noexcept { return out_; }
    index_t rank() const noexcept { return rank_; }
    double scaling() const noexcept { return scaling_; }

    /// PEFT's init_lora_weights=True: A as nn.Linear's default, B = 0.
    void reset_parameters(Generator& g) {  // drawn on the host (nn/init.hpp): the same adapters on every backend
        init::linear_default(lora_A.value, g, in_);
        lora_B.value.zero();
    }

    /// scaling · B A dropout(x) for x [rows, in] (row-major, contiguous): [rows, out].
    Tensor<T, B> forward(const T* x, index_t rows, const Context& ctx = {}) {
        rows_ = rows;
        xd_ = drop_.forward(ConstView<T, B>(x, Shape{rows, in_}), ctx);
        xa_ = Tensor<T, B>::uninitialized(Shape{rows, rank_});
        ops::gemm(B{}, false, true, rows, rank_, in_, T(1), xd_.data(), in_, lora_A.value.data(), in_, T(0), xa_.data(), rank_);
        auto y = Tensor<T, B>::uninitialized(Shape{rows, out_});
        ops::gemm(B{}, false, true, rows, out_, rank_, static_cast<T>(scaling_), xa_.data(), rank_, lora_B.value.data(), rank_, T(0),
                  y.data(), out_);
        kept_ = ctx.keep_for_backward;
        if (!kept_) xd_ = xa_ = Tensor<T, B>();
        return y;
    }

    /// dy [rows, out] of the last forward: dA, dB assigned; dx [rows, in] += dL/dx (nullptr: not wanted).
    void backward(const T* dy, T* dx) {
        require(kept_, "LoraAdapter::backward: {}", nothing_kept_for_backward);
        const T s = static_cast<T>(scaling_);
        // dB = s · dyᵀ (x A ᵀ);  d(xa) = s · dy B;  dA = d(xa)ᵀ xd;  dxd = d(xa) A
        ops::gemm(B{}, true, false, out_, rank_, rows_, s, dy, out_, xa_.data(), rank_, T(0), lora_B.grad_for_backward().data(), rank_);
        Tensor<T, B> dxa = Tensor<T, B>::uninitialized(Shape{rows_, rank_});
        ops::gemm(B{}, false, false, rows_, rank_, out_, s, dy, out_, lora_B.value.data(), rank_, T(0), dxa.data(), rank_);
        ops::gemm(B{}, true, false, rank_, in_, rows_, T(1), dxa.data(), rank_, xd_.data(), in_, T(0), lora_A.grad_for_backward().data(), in_);
        if (dx) {
            Tensor<T, B> dxd = Tensor<T, B>::uninitialized(Shape{rows_, in_});
            ops::gemm(B{}, false, false, rows_, in_, rank_, T(1), dxa.data(), rank_, lora_A.value.data(), in_, T(0), dxd.data(), in_);
            drop_.backward(dxd.cview(), TensorView<T, B>(dx, Shape{rows_, in_}));
        }
    }

    /// W += scaling · B A into a weight stored [out, in] (nn.Linear) or, with transposed, [in, out]
    /// (Conv1D); `ld` is the weight's row stride and `w` points at this adapter's block.
    void merge_into(T* w, index_t ld, bool transposed) const {
        const T s = static_cast<T>(scaling_);
        if (!transposed) ops::gemm(B{}, false, false, out_, in_, rank_, s, lora_B.value.data(), rank_, lora_A.value.data(), in_, T(1), w, ld);
        else ops::gemm(B{}, true, true, in_, out_, rank_, s, lora_A.value.data(), in_, lora_B.value.data(), rank_, T(1), w, ld);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        f(join_name(prefix, "lora_A.weight"), lora_A);
        f(join_name(prefix, "lora_B.weight"), lora_B);
    }

    Parameter<T, B> lora_A;  ///< [rank, in]
    Parameter<T, B> lora_B;  ///< [out, rank]

private:
    index_t in_ = 0, out_ = 0, rank_ = 0;
    double scaling_ = 1.0;
    Dropout<T, B> drop_;
    index_t rows_ = 0;
    bool kept_ = false;
    Tensor<T, B> xd_, xa_;  // saved: dropout(x) and dropout(x) Aᵀ
};

} // namespace celltx::nn
