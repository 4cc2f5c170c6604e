#pragma once
// FitnessReadout: an invariant Type II readout (docs/cell_graph_transformer.md, readouts): it reads all N
// rows of each sample, pools them by their mean and predicts ŷ_b = MLP([h_CLS ‖ mean_g H_pert[b, g]])
// with MLP = Linear(2d,d) → ReLU → Dropout → Linear(d, cfg.fitness_outputs).
//  - forward(h_cls [d], rows (all-rows layout), batch, ctx) -> [B, out];
//  - backward(dY [B,out], dh_cls, dRows) ASSIGNS parameter gradients and ADDS into dh_cls (empty:
//    skipped) and into every row of dRows.values;
//  - names fitness_head.mlp.{0,3}.{weight,bias}.
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"
#include "celltx/policies/readout/cls_input.hpp"

namespace celltx {

struct FitnessReadout {
    static constexpr const char* name = "FitnessReadout";
    static constexpr RowNeed rows = RowNeed::all;

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : mlp(2 * cfg.d_model, cfg.fitness_outputs, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream),
              d_(cfg.d_model), out_(cfg.fitness_outputs) {
            require(cfg.fitness_outputs >= 1, "FitnessReadout: fitness_outputs {} must be >= 1", cfg.fitness_outputs);
        }

        index_t outputs() const noexcept { return out_; }
        void reset_parameters(Generator& g) { mlp.reset_parameters(g); }

        /// h_cls [d] (or [1, d]) and all rows of H_pert -> ŷ [B, out].
        Tensor<T, B> forward(ConstView<T, B> h_cls, const PerturbedRows<T, B>& rows, const PerturbationBatch& batch,
                             const Context& ctx = {}) {
            const index_t d = d_, Bn = batch.batch_size(), N = rows.num_genes;
            require(h_cls.numel() == d, "FitnessReadout: h_cls {} does not hold d = {} values", h_cls.shape(), d);
            require(rows.all_rows && rows.d == d && rows.batch == Bn,
                    "FitnessReadout: needs the all-rows layout of width {} for {} samples (got {} rows of width {} for {} samples)", d, Bn,
                    rows.all_rows ? "all" : "sparse", rows.d, rows.batch);
            require(N >= 1, "FitnessReadout: no genes to pool");
            layout_ = rows.without_values();
            std::vector<index_t> offsets(static_cast<std::size_t>(Bn) + 1);
            for (index_t b = 0; b <= Bn; ++b) offsets[static_cast<std::size_t>(b)] = b * N;
            offsets_ = from_host<index_t, B>(offsets);
            weights_ = from_host<T, B>(std::vector<T>(static_cast<std::size_t>(Bn), T(1) / static_cast<T>(N)));
            Tensor<T, B> x = readout_detail::broadcast_cls(h_cls, Bn, d);  // [h_CLS ‖ mean_g H_pert[b, g]]
            ops::segment_pool(B{}, pool(), rows.values.data(), x.data() + d, 2 * d);
            return mlp.forward(x.cview(), ctx);
        }

        void backward(ConstView<T, B> dY, TensorView<T, B> dh_cls, PerturbedRows<T, B>& dRows) {
            const index_t d = d_, Bn = layout_.batch, N = layout_.num_genes;
            require(dY.shape() == (Shape{Bn, out_}), "FitnessReadout::backward: dY {} is not [{}, {}]", dY.shape(), Bn, out_);
            require(dRows.same_layout(layout_) && dRows.values.shape() == (Shape{layout_.rows(), d}),
                    "FitnessReadout::backward: dRows does not have the layout of the forward's rows");
            Tensor<T, B> dx(Shape{Bn, 2 * d});
            mlp.backward(dY, dx.view());
            if (dh_cls.data()) {
                require(dh_cls.numel() == d, "FitnessReadout::backward: dh_cls {} does not hold d = {} values", dh_cls.shape(), d);
                readout_detail::add_cls_gradient(dx, Bn, d, dh_cls);
            }
            (void)N;
            ops::segment_pool_backward(B{}, pool(), dx.data() + d, 2 * d, dRows.values.data());
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            mlp.visit_parameters(f, join_name(prefix, "fitness_head.mlp."));
        }

        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x666974686561ull;  // "fithea"

        /// Segment b = the N rows of sample b, weight 1/N.
        ops::SegmentPool<T> pool() const { return {layout_.batch, d_, offsets_.data(), nullptr, weights_.data(), true}; }

        index_t d_ = 0, out_ = 1;
        // Saved by forward.
        PerturbedRows<T, B> layout_;
        Tensor<index_t, B> offsets_;
        Tensor<T, B> weights_;
    };
};

} // namespace celltx
