#pragma once
// GeneSetReadout: the gene-set (morphology) Type II readout (docs/cell_graph_transformer.md, readouts): for each of m gene
// sets G_s (e.g. GO-slim terms) p[b, s] = mean_{g ∈ G_s} H_pert[b, g] (an empty set pools to 0,
// a duplicate counts twice), then one MLP shared by the sets, ŷ[b, s] = MLP(p[b, s]) with
// MLP = Linear(d,d) → ReLU → Dropout → Linear(d,1). It reads only the genes of its sets.
//  - set_gene_sets(GeneSetList) before the first forward; gene_sets() is what the transform needs;
//  - forward(h_cls (unused), rows, batch, ctx) -> [B, m];
//  - backward(dY [B,m], dh_cls (untouched), dRows) ASSIGNS parameter gradients and ADDS into dRows.values;
//  - names gene_set_head.mlp.{0,3}.{weight,bias}.
#include <string>
#include <utility>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

struct GeneSetReadout {
    static constexpr const char* name = "GeneSetReadout";
    static constexpr RowNeed rows = RowNeed::gene_sets;

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : mlp(cfg.d_model, 1, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream), d_(cfg.d_model),
              num_genes_(cfg.num_genes) {}

        void set_gene_sets(GeneSetList sets) {
            sets.validate(num_genes_, "GeneSetList");
            sets_ = std::move(sets);
        }
        const GeneSetList& gene_sets() const noexcept { return sets_; }
        index_t outputs() const noexcept { return sets_.size(); }
        void reset_parameters(Generator& g) { mlp.reset_parameters(g); }

        /// The rows of H_pert holding the genes of the sets -> ŷ [B, m].
        Tensor<T, B> forward(ConstView<T, B>, const PerturbedRows<T, B>& rows, const PerturbationBatch& batch, const Context& ctx = {}) {
            const index_t d = d_, Bn = batch.batch_size(), m = sets_.size();
            require(rows.d == d && rows.batch == Bn, "GeneSetReadout: rows of width {} for {} samples, expected width {} for {}", rows.d,
                    rows.batch, d, Bn);
            require(rows.num_genes == num_genes_, "GeneSetReadout: rows over {} genes, the sets index {} genes", rows.num_genes, num_genes_);
            layout_ = rows.without_values();
            // Segment (b, s) pools the rows of sample b holding the genes of set s, weight 1/|G_s|.
            const std::size_t entries = sets_.indices.size();
            std::vector<index_t> offsets(static_cast<std::size_t>(Bn * m) + 1, 0), entry_rows(entries * static_cast<std::size_t>(Bn));
            std::vector<T> weights(static_cast<std::size_t>(Bn * m));
            for (index_t b = 0; b < Bn; ++b)
                for (index_t s = 0; s < m; ++s) {
                    const std::size_t seg = static_cast<std::size_t>(b * m + s);
                    offsets[seg + 1] = static_cast<index_t>(static_cast<std::size_t>(b) * entries) + sets_.offsets[static_cast<std::size_t>(s) + 1];
                    weights[seg] = weight(s);
                    for (index_t e = sets_.offsets[static_cast<std::size_t>(s)]; e < sets_.offsets[static_cast<std::size_t>(s) + 1]; ++e)
                        entry_rows[static_cast<std::size_t>(b) * entries + static_cast<std::size_t>(e)] =
                            rows.row_of(b, sets_.indices[static_cast<std::size_t>(e)]);
                }
            offsets_ = from_host<index_t, B>(offsets);
            entry_rows_ = from_host<index_t, B>(entry_rows);
            weights_ = from_host<T, B>(weights);
            Tensor<T, B> pooled = Tensor<T, B>::uninitialized(Shape{Bn * m, d});
            ops::segment_pool(B{}, pool(), rows.values.data(), pooled.data(), d);
            Tensor<T, B> y = mlp.forward(pooled.cview(), ctx);  // [B·m, 1]
            return std::move(y.reshape(Shape{Bn, m}));
        }

        void backward(ConstView<T, B> dY, TensorView<T, B>, PerturbedRows<T, B>& dRows) {
            const index_t d = d_, Bn = layout_.batch, m = sets_.size();
            require(dY.shape() == (Shape{Bn, m}), "GeneSetReadout::backward: dY {} is not [{}, {}]", dY.shape(), Bn, m);
            require(dRows.same_layout(layout_) && dRows.values.shape() == (Shape{layout_.rows(), d}),
                    "GeneSetReadout::backward: dRows does not have the layout of the forward's rows");
            Tensor<T, B> dp(Shape{Bn * m, d});
            mlp.backward(dY.reshaped(Shape{Bn * m, 1}), dp.view());
            ops::segment_pool_backward(B{}, pool(), dp.data(), d, dRows.values.data());
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            mlp.visit_parameters(f, join_name(prefix, "gene_set_head.mlp."));
        }

        nn::Mlp<T, B> mlp;

    private:
        static constexpr std::uint64_t mlp_stream = 0x67656E65736574ull;  // "geneset"

        T weight(index_t s) const {
            const index_t n = sets_.set_size(s);
            return n == 0 ? T(0) : T(1) / static_cast<T>(n);
        }

        ops::SegmentPool<T> pool() const { return {offsets_.numel() - 1, d_, offsets_.data(), entry_rows_.data(), weights_.data(), false}; }

        index_t d_ = 0, num_genes_ = 0;
        GeneSetList sets_;
        // Saved by forward.
        PerturbedRows<T, B> layout_;
        Tensor<index_t, B> offsets_, entry_rows_;  // segments (b, s); the row each entry of each sample read
        Tensor<T, B> weights_;
    };
};

} // namespace celltx
