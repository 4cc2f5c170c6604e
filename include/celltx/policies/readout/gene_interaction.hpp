#pragma once
// GeneInteractionReadout: the CGT Type II gene-interaction head (the reference's GIHead; docs/cell_graph_transformer.md). It reads only
// the perturbed rows: z_b = mean (legacy) or sum (CgtConfig::gi_pooling) of H_pert[b, S_b]
// (duplicates count twice, an empty set gives 0), then ŷ_b = MLP([h_CLS ‖ z_b]) with
// MLP = Linear(2d,d) → ReLU → Dropout → Linear(d,1).
//  - forward(h_cls [d], rows, batch, ctx) -> [B, 1];
//  - backward(dY [B,1], dh_cls, dRows) ASSIGNS parameter gradients and ADDS into dh_cls (empty: skipped)
//    and into dRows.values;
//  - names perturbation_head.mlp.{0,3}.{weight,bias}.
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/readout/cls_input.hpp"
#include "celltx/policies/readout/concept.hpp"

namespace celltx {

struct GeneInteractionReadout {
    static constexpr const char* name = "GeneInteractionReadout";
    static constexpr RowNeed rows = RowNeed::perturbed;

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : mlp(2 * cfg.d_model, 1, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream), d_(cfg.d_model),
              pooling_(cfg.gi_pooling) {}

        GiPooling pooling() const noexcept { return pooling_; }
        index_t outputs() const noexcept { return 1; }
        void reset_parameters(Generator& g) { mlp.reset_parameters(g); }

        /// h_cls [d] (or [1, d]) and the perturbed rows of H_pert -> ŷ [B, 1].
        Tensor<T, B> forward(ConstView<T, B> h_cls, const PerturbedRows<T, B>& rows, const PerturbationBatch& batch,
                             const Context& ctx = {}) {
            const index_t d = d_, Bn = batch.batch_size();
            require(h_cls.numel() == d, "GeneInteractionReadout: h_cls {} does not hold d = {} values", h_cls.shape(), d);
            require(rows.d == d && rows.batch == Bn, "GeneInteractionReadout: rows of width {} for {} samples, expected width {} for {}",
                    rows.d, rows.batch, d, Bn);
            layout_ = rows.without_values();
            // Pool the rows of each sample's entries: segment b = weight_b · Σ_{e ∈ S_b} H_pert[b, S_b[e]].
            std::vector<index_t> entry_rows(batch.indices.size());
            std::vector<T> weights(static_cast<std::size_t>(Bn));
            for (index_t b = 0; b < Bn; ++b) {
                weights[static_cast<std::size_t>(b)] = weight(batch.set_size(b));
                for (index_t e = batch.offsets[static_cast<std::size_t>(b)]; e < batch.offsets[static_cast<std::size_t>(b) + 1]; ++e)
                    entry_rows[static_cast<std::size_t>(e)] = rows.row_of(b, batch.indices[static_cast<std::size_t>(e)]);
            }
            offsets_ = from_host<index_t, B>(batch.offsets);
            entry_rows_ = from_host<index_t, B>(entry_rows);
            weights_ = from_host<T, B>(weights);
            Tensor<T, B> x = readout_detail::broadcast_cls(h_cls, Bn, d);  // [h_CLS ‖ z_b]
            ops::segment_pool(B{}, pool(), rows.values.data(), x.data() + d, 2 * d);
            return mlp.forward(x.cview(), ctx);
        }

        void backward(ConstView<T, B> dY, TensorView<T, B> dh_cls, PerturbedRows<T, B>& dRows) {
            const index_t d = d_, Bn = layout_.batch;
            require(dY.shape() == (Shape{Bn, 1}), "GeneInteractionReadout::backward: dY {} is not [{}, 1]", dY.shape(), Bn);
            require(dRows.same_layout(layout_) && dRows.values.shape() == (Shape{layout_.rows(), d}),
                    "GeneInteractionReadout::backward: dRows does not have the layout of the forward's rows");
            Tensor<T, B> dx(Shape{Bn, 2 * d});
            mlp.backward(dY, dx.view());
            if (dh_cls.data()) {
                require(dh_cls.numel() == d, "GeneInteractionReadout::backward: dh_cls {} does not hold d = {} values", dh_cls.shape(), d);
                readout_detail::add_cls_gradient(dx, Bn, d, dh_cls);
            }
            ops::segment_pool_backward(B{}, pool(), dx.data() + d, 2 * d, dRows.values.data());
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            mlp.visit_parameters(f, join_name(prefix, "perturbation_head.mlp."));
        }

        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x67695F68656164ull;  // "gi_head"

        /// Pooling weight of a set of n entries: 1 (sum) or 1/n (mean; unused when empty).
        T weight(index_t n) const { return pooling_ == GiPooling::sum || n == 0 ? T(1) : T(1) / static_cast<T>(n); }
        ops::SegmentPool<T> pool() const {
            return {offsets_.numel() - 1, d_, offsets_.data(), entry_rows_.data(), weights_.data(), false};
        }

        index_t d_ = 0;
        GiPooling pooling_ = GiPooling::mean;
        // Saved by forward.
        PerturbedRows<T, B> layout_;
        Tensor<index_t, B> offsets_, entry_rows_;
        Tensor<T, B> weights_;
    };
};

} // namespace celltx
