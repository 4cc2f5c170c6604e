#pragma once
// GeneInteractionReadout: the CGT Type II gene-interaction head (cgt_ref.py GIHead). It reads only
// the perturbed rows: z_b = mean (legacy) or sum (CgtConfig::gi_pooling) of H_pert[b, S_b]
// (duplicates count twice, an empty set gives 0), then ŷ_b = MLP([h_CLS ‖ z_b]) with
// MLP = Linear(2d,d) → ReLU → Dropout → Linear(d,1).
//  - forward(h_cls [d], rows, batch, ctx) -> [B, 1];
//  - backward(dY [B,1], dh_cls, dRows) ASSIGNS parameter gradients and ADDS into dh_cls (empty: skipped)
//    and into dRows.values;
//  - names perturbation_head.mlp.{0,3}.{weight,bias}.
#include <string>
#include <vector>
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbation_batch.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

struct GeneInteractionReadout {
    static constexpr const char* name = "GeneInteractionReadout";
    static constexpr RowNeed rows = RowNeed::perturbed;

    template <Scalar T, Backend B = cpu>
    class module {
        static_assert(!B::is_device, "GeneInteractionReadout: only the CPU backend is implemented");

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
            offsets_ = batch.offsets;
            entry_rows_.resize(batch.indices.size());
            Tensor<T, B> x(Shape{Bn, 2 * d});
            for (index_t b = 0; b < Bn; ++b) {
                T* xb = x.data() + b * 2 * d;
                std::copy_n(h_cls.data(), d, xb);
                const T w = weight(b);
                for (index_t e = offsets_[static_cast<std::size_t>(b)]; e < offsets_[static_cast<std::size_t>(b) + 1]; ++e) {
                    const index_t r = rows.row_of(b, batch.indices[static_cast<std::size_t>(e)]);
                    entry_rows_[static_cast<std::size_t>(e)] = r;
                    const T* v = rows.values.data() + r * d;
                    for (index_t c = 0; c < d; ++c) xb[d + c] += w * v[c];
                }
            }
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
                for (index_t b = 0; b < Bn; ++b)
                    for (index_t c = 0; c < d; ++c) dh_cls[c] += dx[b * 2 * d + c];
            }
            for (index_t b = 0; b < Bn; ++b) {
                const T w = weight(b);
                const T* g = dx.data() + b * 2 * d + d;
                for (index_t e = offsets_[static_cast<std::size_t>(b)]; e < offsets_[static_cast<std::size_t>(b) + 1]; ++e) {
                    T* dst = dRows.values.data() + entry_rows_[static_cast<std::size_t>(e)] * d;
                    for (index_t c = 0; c < d; ++c) dst[c] += w * g[c];
                }
            }
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            mlp.visit_parameters(f, join_name(prefix, "perturbation_head.mlp."));
        }

        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x67695F68656164ull;  // "gi_head"

        /// Pooling weight of every entry of set b: 1 (sum) or 1/|S_b| (mean; unused when empty).
        T weight(index_t b) const {
            const index_t n = offsets_[static_cast<std::size_t>(b) + 1] - offsets_[static_cast<std::size_t>(b)];
            return pooling_ == GiPooling::sum || n == 0 ? T(1) : T(1) / static_cast<T>(n);
        }

        index_t d_ = 0;
        GiPooling pooling_ = GiPooling::mean;
        // Saved by forward.
        PerturbedRows<T, B> layout_;
        std::vector<index_t> offsets_, entry_rows_;
    };
};

} // namespace celltx
