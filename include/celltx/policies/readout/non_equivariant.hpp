#pragma once
// NonEquivariantHead: the head of the non-equivariant CGT (torchcell's non-equivariant model; the reference's
// NonEqHead). It replaces Type I + Type II: it reads H_genes itself, not H_pert, so a model built
// with it has no perturbation transform (marker: `reads_h_genes`, concept NonEquivariantHeadPolicy).
//   q_b = mean of H_genes[S_b] (duplicates count twice; 0 for an empty set)
//   z_b = MultiheadAttention(d, 4 heads)(query q_b; keys = values = all N gene rows), no residual/norm
//   ŷ_b = MLP([h_CLS ‖ z_b]), MLP = Linear(2d,d) → ReLU → Dropout → Linear(d,1)
// The keys are the same for every sample, so the B queries form one attention call (tq = B, tk = N).
//  - forward(h_cls [d], H_genes [N,d], batch, ctx) -> [B, 1];
//  - backward(dY [B,1], dh_cls, dH_genes) ASSIGNS parameter gradients and ADDS into dh_cls and
//    dH_genes (through the queries and the keys/values); either may be empty;
//  - names perturbation_head.cross_attn.{in_proj_weight,in_proj_bias,out_proj.*}, perturbation_head.mlp.{0,3}.*.
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/policies/readout/cls_input.hpp"

namespace celltx {

struct NonEquivariantHead {
    static constexpr const char* name = "NonEquivariantHead";
    static constexpr bool reads_h_genes = true;  // composed without a perturbation transform
    static constexpr index_t num_heads = 4;      // fixed in torchcell's model

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : cross_attn(attention_config(cfg)),
              mlp(2 * cfg.d_model, 1, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream),
              d_(cfg.d_model) {}

        index_t outputs() const noexcept { return 1; }

        /// nn.MultiheadAttention's init (xavier in_proj, zero biases, out_proj.weight as nn.Linear), then the MLP.
        void reset_parameters(Generator& g) {
            cross_attn.reset_parameters(g);
            mlp.reset_parameters(g);
        }

        Tensor<T, B> forward(ConstView<T, B> h_cls, ConstView<T, B> H, const PerturbationBatch& batch, const Context& ctx = {}) {
            const index_t d = d_, Bn = batch.batch_size();
            require(h_cls.numel() == d, "NonEquivariantHead: h_cls {} does not hold d = {} values", h_cls.shape(), d);
            require(H.rank() == 2 && H.size(1) == d, "NonEquivariantHead: H_genes {} is not [N, {}]", H.shape(), d);
            batch.validate(H.size(0), "PerturbationBatch");
            num_genes_ = H.size(0);
            std::vector<T> weights(static_cast<std::size_t>(Bn));
            for (index_t b = 0; b < Bn; ++b)
                weights[static_cast<std::size_t>(b)] = batch.set_size(b) > 0 ? T(1) / static_cast<T>(batch.set_size(b)) : T(0);
            offsets_ = from_host<index_t, B>(batch.offsets);
            genes_ = from_host<index_t, B>(batch.indices);
            weights_ = from_host<T, B>(weights);
            Tensor<T, B> q = Tensor<T, B>::uninitialized(Shape{Bn, d});  // mean of H_genes[S_b]
            ops::segment_pool(B{}, pool(), H.data(), q.data(), d);
            Tensor<T, B> z = cross_attn.forward_cross(q.cview(), H, ctx);  // [B, d]
            Tensor<T, B> x = readout_detail::broadcast_cls(h_cls, Bn, d);
            ops::copy_2d(B{}, x.data() + d, 2 * d, z.data(), d, Bn, d);
            return mlp.forward(x.cview(), ctx);
        }

        void backward(ConstView<T, B> dY, TensorView<T, B> dh_cls, TensorView<T, B> dH) {
            const index_t d = d_, Bn = offsets_.numel() - 1;
            require(dY.shape() == (Shape{Bn, 1}), "NonEquivariantHead::backward: dY {} is not [{}, 1]", dY.shape(), Bn);
            if (dH.data())
                require(dH.shape() == (Shape{num_genes_, d}), "NonEquivariantHead::backward: dH_genes {} is not [{}, {}]", dH.shape(),
                        num_genes_, d);
            Tensor<T, B> dx(Shape{Bn, 2 * d});
            mlp.backward(dY, dx.view());
            Tensor<T, B> dz = Tensor<T, B>::uninitialized(Shape{Bn, d});
            ops::copy_2d(B{}, dz.data(), d, dx.data() + d, 2 * d, Bn, d);
            if (dh_cls.data()) {
                require(dh_cls.numel() == d, "NonEquivariantHead::backward: dh_cls {} does not hold d = {} values", dh_cls.shape(), d);
                readout_detail::add_cls_gradient(dx, Bn, d, dh_cls);
            }
            Tensor<T, B> dq = dH.data() ? Tensor<T, B>(Shape{Bn, d}) : Tensor<T, B>();
            cross_attn.backward_cross(dz.cview(), dq.view(), dH);
            if (dH.data()) ops::segment_pool_backward(B{}, pool(), dq.data(), d, dH.data());
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            cross_attn.visit_parameters(f, join_name(prefix, "perturbation_head.cross_attn."));
            mlp.visit_parameters(f, join_name(prefix, "perturbation_head.mlp."));
        }

        nn::MultiHeadAttention<T, B> cross_attn;
        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x6E6F6E65715F6dull, attn_stream = 0x6E6F6E65715F61ull;  // "noneq_m", "noneq_a"

        static nn::AttentionConfig attention_config(const CgtConfig& cfg) {
            require(cfg.d_model % num_heads == 0, "NonEquivariantHead: d_model {} is not divisible by {} heads", cfg.d_model, num_heads);
            nn::AttentionConfig a;
            a.d_model = cfg.d_model;
            a.num_heads = num_heads;
            a.layout = nn::AttentionLayout::packed;
            a.dropout = cfg.dropout;
            a.dropout_stream = attn_stream;
            return a;
        }

        ops::SegmentPool<T> pool() const { return {offsets_.numel() - 1, d_, offsets_.data(), genes_.data(), weights_.data(), false}; }

        index_t d_ = 0, num_genes_ = 0;
        // Saved by forward: the batch's sets and their mean weights.
        Tensor<index_t, B> offsets_, genes_;
        Tensor<T, B> weights_;
    };
};

} // namespace celltx
