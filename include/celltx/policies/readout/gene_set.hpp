#pragma once
// GeneSetReadout: the gene-set (morphology) Type II readout (spec "Gene-set"): for each of m gene
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
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/nn/mlp.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbation_batch.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

struct GeneSetReadout {
    static constexpr const char* name = "GeneSetReadout";
    static constexpr RowNeed rows = RowNeed::gene_sets;

    template <Scalar T, Backend B = cpu>
    class module {
        static_assert(!B::is_device, "GeneSetReadout: only the CPU backend is implemented");

    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : mlp(cfg.d_model, 1, cfg.d_model, 2, cfg.dropout, ActivationKind::relu, mlp_stream), d_(cfg.d_model),
              num_genes_(cfg.num_genes) {}

        void set_gene_sets(GeneSetList sets) {
            sets.validate(num_genes_);
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
            entry_rows_.resize(sets_.genes.size() * static_cast<std::size_t>(Bn));
            Tensor<T, B> pooled(Shape{Bn * m, d});
            for (index_t b = 0; b < Bn; ++b)
                for (index_t s = 0; s < m; ++s) {
                    T* p = pooled.data() + (b * m + s) * d;
                    const T w = weight(s);
                    for (index_t e = sets_.offsets[static_cast<std::size_t>(s)]; e < sets_.offsets[static_cast<std::size_t>(s) + 1]; ++e) {
                        const index_t r = rows.row_of(b, sets_.genes[static_cast<std::size_t>(e)]);
                        entry_rows_[static_cast<std::size_t>(b) * sets_.genes.size() + static_cast<std::size_t>(e)] = r;
                        const T* v = rows.values.data() + r * d;
                        for (index_t c = 0; c < d; ++c) p[c] += w * v[c];
                    }
                }
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
            for (index_t b = 0; b < Bn; ++b)
                for (index_t s = 0; s < m; ++s) {
                    const T* g = dp.data() + (b * m + s) * d;
                    const T w = weight(s);
                    for (index_t e = sets_.offsets[static_cast<std::size_t>(s)]; e < sets_.offsets[static_cast<std::size_t>(s) + 1]; ++e) {
                        T* dst = dRows.values.data() + entry_rows_[static_cast<std::size_t>(b) * sets_.genes.size() + static_cast<std::size_t>(e)] * d;
                        for (index_t c = 0; c < d; ++c) dst[c] += w * g[c];
                    }
                }
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

        index_t d_ = 0, num_genes_ = 0;
        GeneSetList sets_;
        // Saved by forward.
        PerturbedRows<T, B> layout_;
        std::vector<index_t> entry_rows_;  // [B, entries of the sets]: the row each entry read
    };
};

} // namespace celltx
