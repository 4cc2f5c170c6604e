#pragma once
// Rows on demand. Every op of the Type I transform after the cross-attention is row-wise, so row
// (b, g) of H_pert depends only on H_genes[g] and H_genes[S_b]: a model computes only the rows its
// readouts read.
//  - RowNeed: what one readout reads (the perturbed rows S_b, all N rows, or the genes of its gene
//    sets); RowNeedSet: the union over a model's readouts, computable at compile time.
//  - PerturbedRows<T, B>: H_pert restricted to the computed rows. all_rows: values is [B·N, d]
//    (= [B, N, d]), row of (b, g) = b·N + g; otherwise sample b owns rows [offsets[b], offsets[b+1])
//    holding the sorted unique genes genes[offsets[b] ..]. Gradients travel in the same layout.
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>
#include "celltx/core/tensor.hpp"
#include "celltx/core/ragged.hpp"

namespace celltx {

/// Which rows of H_pert a readout reads.
enum class RowNeed : unsigned { perturbed = 1u, all = 2u, gene_sets = 4u };

/// A set of RowNeeds (a bit set). `RowNeedSet{} | R1::rows | R2::rows` is a constant expression.
struct RowNeedSet {
    unsigned bits = 0;

    constexpr RowNeedSet() = default;
    constexpr RowNeedSet(RowNeed n) : bits(static_cast<unsigned>(n)) {}  // NOLINT: implicit on purpose

    constexpr bool contains(RowNeed n) const noexcept { return (bits & static_cast<unsigned>(n)) != 0; }
    constexpr bool empty() const noexcept { return bits == 0; }
    friend constexpr RowNeedSet operator|(RowNeedSet a, RowNeedSet b) noexcept {
        RowNeedSet s;
        s.bits = a.bits | b.bits;
        return s;
    }
    friend constexpr bool operator==(RowNeedSet a, RowNeedSet b) noexcept { return a.bits == b.bits; }
};
constexpr RowNeedSet operator|(RowNeed a, RowNeed b) noexcept { return RowNeedSet(a) | RowNeedSet(b); }

template <Scalar T, Backend B = cpu>
struct PerturbedRows {
    index_t batch = 0, num_genes = 0, d = 0;
    bool all_rows = false;
    std::vector<index_t> offsets;  ///< batch+1 row offsets per sample (all_rows: b·N)
    std::vector<index_t> genes;    ///< sparse layout: the sorted unique genes of each sample; all_rows: empty
    Tensor<T, B> values;           ///< [rows, d]

    /// The layout that `need` asks for (values zero): all N rows if it contains RowNeed::all; else per
    /// sample the unique genes of S_b (RowNeed::perturbed) and of every gene set (RowNeed::gene_sets).
    static PerturbedRows layout(const PerturbationBatch& batch, index_t num_genes, index_t d, RowNeedSet need,
                                const GeneSetList* sets = nullptr) {
        require(!need.contains(RowNeed::gene_sets) || sets != nullptr, "PerturbedRows: gene-set rows requested without a GeneSetList");
        PerturbedRows r;
        r.batch = batch.batch_size();
        r.num_genes = num_genes;
        r.d = d;
        r.all_rows = need.contains(RowNeed::all);
        r.offsets.assign(static_cast<std::size_t>(r.batch) + 1, 0);
        if (r.all_rows) {
            for (index_t b = 0; b <= r.batch; ++b) r.offsets[static_cast<std::size_t>(b)] = b * num_genes;
        } else {
            const std::vector<index_t> set_genes = need.contains(RowNeed::gene_sets) ? sets->unique_indices() : std::vector<index_t>{};
            std::vector<index_t> mine;
            for (index_t b = 0; b < r.batch; ++b) {
                mine.assign(set_genes.begin(), set_genes.end());
                if (need.contains(RowNeed::perturbed)) {
                    const auto s = batch.set(b);
                    mine.insert(mine.end(), s.begin(), s.end());
                }
                std::sort(mine.begin(), mine.end());
                mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
                r.genes.insert(r.genes.end(), mine.begin(), mine.end());
                r.offsets[static_cast<std::size_t>(b) + 1] = static_cast<index_t>(r.genes.size());
            }
        }
        r.values = Tensor<T, B>(Shape{r.offsets.back(), d});
        return r;
    }

    /// The same layout with zero values (the gradient buffer the readouts add into).
    PerturbedRows zeros_like() const {
        PerturbedRows r;
        r.batch = batch, r.num_genes = num_genes, r.d = d, r.all_rows = all_rows;
        r.offsets = offsets;
        r.genes = genes;
        r.values = Tensor<T, B>(Shape{rows(), d});
        return r;
    }
    /// The layout alone (no values): what a module saves to check its backward's dRows.
    PerturbedRows without_values() const {
        PerturbedRows r;
        r.batch = batch, r.num_genes = num_genes, r.d = d, r.all_rows = all_rows;
        r.offsets = offsets;
        r.genes = genes;
        return r;
    }
    bool same_layout(const PerturbedRows& o) const {
        return batch == o.batch && num_genes == o.num_genes && d == o.d && all_rows == o.all_rows && offsets == o.offsets &&
               genes == o.genes;
    }

    index_t rows() const noexcept { return offsets.empty() ? 0 : offsets.back(); }
    index_t rows(index_t b) const { return offsets[static_cast<std::size_t>(b) + 1] - offsets[static_cast<std::size_t>(b)]; }
    /// The gene of row `row` (of sample b).
    index_t gene_of_row(index_t b, index_t row) const {
        return all_rows ? row - b * num_genes : genes[static_cast<std::size_t>(row)];
    }
    /// Row of (b, gene), or -1 when it was not computed.
    index_t find(index_t b, index_t gene) const {
        if (b < 0 || b >= batch || gene < 0 || gene >= num_genes) return -1;
        if (all_rows) return b * num_genes + gene;
        const auto first = genes.begin() + offsets[static_cast<std::size_t>(b)];
        const auto last = genes.begin() + offsets[static_cast<std::size_t>(b) + 1];
        const auto it = std::lower_bound(first, last, gene);
        return it != last && *it == gene ? static_cast<index_t>(it - genes.begin()) : -1;
    }
    /// Row of (b, gene); throws if that row was not computed.
    index_t row_of(index_t b, index_t gene) const {
        const index_t r = find(b, gene);
        require(r >= 0, "PerturbedRows: row (sample {}, gene {}) was not computed ({} layout; a readout reads a row it did not declare)",
                b, gene, all_rows ? "all-rows" : "sparse");
        return r;
    }
};

} // namespace celltx
