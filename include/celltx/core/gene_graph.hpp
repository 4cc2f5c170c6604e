#pragma once
// A gene graph as a CSR adjacency over the N genes of a universe: row i lists the columns j of the
// edges i -> j, sorted and unique. Semantics of the graph-regularised attention
// (docs/cell_graph_transformer.md): edges are directed as given and duplicates count once;
// GraphOptions can add the reverse of every edge (symmetrise) and a self-loop on every row (the
// reference data path does, so every row has degree >= 1). A is binary; the regulariser's target
// is Ã = A / (rowsum(A) + 1e-10), computed in T exactly as PyTorch does in that dtype.
// Depends on core only, so that models can use it if it moves next to them.
#include <algorithm>
#include <span>
#include <vector>
#include "celltx/core/backend.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

/// A directed edge src -> dst between rows of the universe.
struct Edge {
    index_t src = 0, dst = 0;
    friend bool operator==(const Edge&, const Edge&) = default;
};

struct GraphOptions {
    bool symmetrize = false;  ///< also add dst -> src for every edge
    bool self_loops = false;  ///< add i -> i for every row i
};

class GeneGraph {
public:
    GeneGraph() : row_ptr_(1, 0) {}

    /// Builds the CSR of `edges` over n nodes; an endpoint outside [0, n) throws ShapeError.
    GeneGraph(index_t n, std::span<const Edge> edges, GraphOptions opt = {}) : n_(n) {
        require(n >= 0, "GeneGraph: negative node count {}", n);
        for (std::size_t e = 0; e < edges.size(); ++e)
            require(edges[e].src >= 0 && edges[e].src < n && edges[e].dst >= 0 && edges[e].dst < n,
                    "GeneGraph: edge {} ({} -> {}) has an endpoint outside [0,{})", e, edges[e].src, edges[e].dst, n);
        // Counting sort by source row, then sort + unique inside each row.
        std::vector<index_t> count(static_cast<std::size_t>(n) + 1, 0);
        auto each = [&](auto&& f) {
            for (const Edge& e : edges) {
                f(e.src, e.dst);
                if (opt.symmetrize) f(e.dst, e.src);
            }
            if (opt.self_loops)
                for (index_t i = 0; i < n; ++i) f(i, i);
        };
        each([&](index_t s, index_t) { ++count[static_cast<std::size_t>(s) + 1]; });
        for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) count[i + 1] += count[i];
        std::vector<index_t> col(static_cast<std::size_t>(count.back()));
        std::vector<index_t> fill(count.begin(), count.end() - 1);
        each([&](index_t s, index_t d) { col[static_cast<std::size_t>(fill[static_cast<std::size_t>(s)]++)] = d; });
        input_edges_ = static_cast<index_t>(col.size());
        row_ptr_.assign(static_cast<std::size_t>(n) + 1, 0);
        col_.reserve(col.size());
        for (index_t i = 0; i < n; ++i) {
            auto b = col.begin() + count[static_cast<std::size_t>(i)], e = col.begin() + count[static_cast<std::size_t>(i) + 1];
            std::sort(b, e);
            col_.insert(col_.end(), b, std::unique(b, e));
            row_ptr_[static_cast<std::size_t>(i) + 1] = static_cast<index_t>(col_.size());
        }
        values_.assign(col_.size(), 1.0);
    }

    index_t num_nodes() const { return n_; }
    /// Number of distinct edges (the nnz_k of the spec's per-graph density nnz_k / N).
    index_t nnz() const { return static_cast<index_t>(col_.size()); }
    /// Edges given (after symmetrisation and self-loops) minus distinct edges.
    index_t duplicates() const { return input_edges_ - nnz(); }

    std::span<const index_t> row_ptr() const { return row_ptr_; }
    std::span<const index_t> col() const { return col_; }
    /// A's entries, aligned with col(): all 1.
    std::span<const double> values() const { return values_; }

    std::span<const index_t> neighbors(index_t i) const {
        check_row(i);
        return std::span<const index_t>(col_).subspan(static_cast<std::size_t>(row_ptr_[static_cast<std::size_t>(i)]),
                                                      static_cast<std::size_t>(degree(i)));
    }
    index_t degree(index_t i) const {
        check_row(i);
        return row_ptr_[static_cast<std::size_t>(i) + 1] - row_ptr_[static_cast<std::size_t>(i)];
    }
    bool has_edge(index_t i, index_t j) const {
        const auto r = neighbors(i);
        return std::binary_search(r.begin(), r.end(), j);
    }
    /// Rows with degree > 0 (the rows the regulariser samples from), ascending.
    std::vector<index_t> rows_with_edges() const {
        std::vector<index_t> rows;
        for (index_t i = 0; i < n_; ++i)
            if (degree(i) > 0) rows.push_back(i);
        return rows;
    }
    index_t num_rows_with_edges() const {
        index_t c = 0;
        for (index_t i = 0; i < n_; ++i) c += degree(i) > 0;
        return c;
    }
    /// Ã = A / (rowsum(A) + eps) aligned with col(), evaluated in T as torch does in that dtype.
    template <Scalar T = double>
    std::vector<T> normalized_values(double eps = 1e-10) const {
        std::vector<T> v(col_.size());
        for (index_t i = 0; i < n_; ++i) {
            const auto b = static_cast<std::size_t>(row_ptr_[static_cast<std::size_t>(i)]);
            const auto e = static_cast<std::size_t>(row_ptr_[static_cast<std::size_t>(i) + 1]);
            T rowsum = T(0);
            for (std::size_t k = b; k < e; ++k) rowsum += static_cast<T>(values_[k]);
            const T denom = rowsum + static_cast<T>(eps);
            for (std::size_t k = b; k < e; ++k) v[k] = static_cast<T>(values_[k]) / denom;
        }
        return v;
    }
    /// The distinct edges in CSR order (row-major, columns ascending).
    std::vector<Edge> edges() const {
        std::vector<Edge> out;
        out.reserve(col_.size());
        for (index_t i = 0; i < n_; ++i)
            for (index_t j : neighbors(i)) out.push_back({i, j});
        return out;
    }

private:
    void check_row(index_t i) const { require(i >= 0 && i < n_, "GeneGraph: row {} outside [0,{})", i, n_); }

    index_t n_ = 0, input_edges_ = 0;
    std::vector<index_t> row_ptr_, col_;
    std::vector<double> values_;
};

} // namespace celltx
