#pragma once
// ExpressionReadout: the equivariant Type II readout (docs/cell_graph_transformer.md, readouts): one MLP shared by every
// gene row, ŷ[b, g] = MLP(H_pert[b, g]) with MLP = Linear(d,d) → ReLU → Dropout → Linear(d, out),
// out = cfg.expression_outputs. It reads all N rows.
//  - forward(h_cls (unused), rows (all-rows layout), batch, ctx) -> [B, N] (out == 1) or [B, N, out];
//  - backward(dY, dh_cls (untouched: ŷ does not depend on h_CLS), dRows) ASSIGNS parameter gradients
//    and ADDS into dRows.values;
//  - names expression_head.mlp.{0,3}.{weight,bias}.
#include <string>
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

struct ExpressionReadout {
    static constexpr const char* name = "ExpressionReadout";
    static constexpr RowNeed rows = RowNeed::all;

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : mlp(cfg.d_model, cfg.expression_outputs, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream),
              d_(cfg.d_model), out_(cfg.expression_outputs) {
            require(cfg.expression_outputs >= 1, "ExpressionReadout: expression_outputs {} must be >= 1", cfg.expression_outputs);
        }

        index_t outputs() const noexcept { return out_; }
        void reset_parameters(Generator& g) { mlp.reset_parameters(g); }

        /// All rows of H_pert -> ŷ [B, N] (or [B, N, out]).
        Tensor<T, B> forward(ConstView<T, B>, const PerturbedRows<T, B>& rows, const PerturbationBatch& batch, const Context& ctx = {}) {
            const index_t Bn = batch.batch_size();
            require(rows.all_rows && rows.d == d_ && rows.batch == Bn,
                    "ExpressionReadout: needs the all-rows layout of width {} for {} samples (got {} rows of width {} for {} samples)", d_,
                    Bn, rows.all_rows ? "all" : "sparse", rows.d, rows.batch);
            layout_ = rows.without_values();
            Tensor<T, B> y = mlp.forward(rows.values.cview(), ctx);  // [B·N, out]
            return std::move(y.reshape(out_shape()));
        }

        void backward(ConstView<T, B> dY, TensorView<T, B>, PerturbedRows<T, B>& dRows) {
            require(dY.shape() == out_shape(), "ExpressionReadout::backward: dY {} is not {}", dY.shape(), out_shape());
            require(dRows.same_layout(layout_) && dRows.values.shape() == (Shape{layout_.rows(), d_}),
                    "ExpressionReadout::backward: dRows does not have the layout of the forward's rows");
            mlp.backward(dY.reshaped(Shape{layout_.rows(), out_}), dRows.values.view());
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            mlp.visit_parameters(f, join_name(prefix, "expression_head.mlp."));
        }

        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x657870726865ull;  // "exprhe"

        Shape out_shape() const {
            return out_ == 1 ? Shape{layout_.batch, layout_.num_genes} : Shape{layout_.batch, layout_.num_genes, out_};
        }

        index_t d_ = 0, out_ = 1;
        PerturbedRows<T, B> layout_;  // saved by forward
    };
};

} // namespace celltx
