#pragma once
// GraphRegularizer: the CGT's graph-regularised attention (docs/cell_graph_transformer.md,
// "graph-regularised attention"), computed from a memory-efficient attention without any T×T matrix.
//  - K graphs over the N genes, stored as CSR (duplicates collapse) with Ã = A / (rowsum + 1e-10);
//    graph k has an assignment (layers, head, λ_k).
//  - Rows: row_rate r < 1 draws m = ⌊r·N⌋ rows uniformly without replacement among the rows of
//    positive degree (all of them when there are at most m), afresh for every (step, layer, graph)
//    from CounterRng(seed) — deterministic; r = 1 takes every row (degree-0 rows add nothing).
//  - L_k = Σ_{i∈rows} Σ_j Ã_ij (log Ã_ij − log(α_ij + 1e-8)), α = the layer's softmax BEFORE dropout
//    at row i+1, column j+1 (CLS row and column dropped, rows not renormalised); log α comes from
//    the attention's LSE and edge scores (MultiHeadAttention::edge_scores), so only edges are touched.
//  - Weights: density (default) w_k = λ_k / (nnz_k / N); legacy_global (the older runs' defective
//    factor) w_k = graph_reg_lambda·λ_k·N / (2K). A graph without edges has weight 0.
//  - Gradient: hook(layer) returns the GraphHook that adds, to dL/dS at row i+1,
//    w_k·(c_i·P_ij − W_ij) with W_ij = Ã_ij·α_ij/(α_ij + 1e-8), c_i = Σ_j W_ij: the exact derivative
//    of −Ã log(α + 1e-8) (P is the full softmax row, CLS column included).
// The attention must be batch 1 (the encoder runs once on the wild type): W depends on α, so one
// shared sparse W could not serve several batch items. evaluate(layer, ...) keeps that layer's
// terms until the next evaluate of the same layer; hook() spans point into them. The sampled rows'
// CSR is built on the host and uploaded; the edge scores, the KL and W stay in backend B's memory
// (ops::attention_edge_scores, ops::graph_kl_edges).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/gene_graph.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/attention.hpp"

namespace celltx {

/// How the per-graph values are weighted in the total.
enum class GraphNormalization {
    density,        ///< λ_k · L_k / (nnz_k / N)  (the spec's default)
    legacy_global,  ///< graph_reg_lambda · (Σ_k λ_k L_k) · N / (2K)  (0fed19eb runs; explicit opt-in only)
};

struct GraphRegularizerOptions {
    double row_rate = 1.0;                                    ///< in (0, 1]
    GraphNormalization normalization = GraphNormalization::density;
    double graph_reg_lambda = 1.0;                            ///< legacy_global only
    std::uint64_t seed = 0;                                   ///< row sampling
    double eps = 1e-10;                                       ///< Ã = A / (rowsum + eps)
};

/// Where graph k acts: one or more encoder layers (0-based), one head, its λ_k.
struct GraphAssignment {
    std::vector<int> layers;
    index_t head = 0;
    double lambda = 1e-3;
};

/// The ops the graph regulariser calls on backend B.
template <class B, class T>
concept GraphRegularizerOps = ops::provides_attention_edge_scores<B, T> && ops::provides_graph_kl_edges<B, T> && ops::provides_axpby<B, T>;

template <Scalar T, Backend B = cpu>
class GraphRegularizer {
public:
    static constexpr double log_eps = 1e-8;  ///< inside log(α + ε)

    explicit GraphRegularizer(index_t num_genes, GraphRegularizerOptions opt = {}) : n_(num_genes), opt_(opt) {
        require(num_genes >= 1, "GraphRegularizer: {} genes", num_genes);
        require(opt.row_rate > 0.0 && opt.row_rate <= 1.0, "GraphRegularizer: row_rate {} is outside (0, 1]", opt.row_rate);
        require(opt.eps >= 0.0, "GraphRegularizer: negative eps {}", opt.eps);
    }

    /// Adds graph k (returned) over the N genes.
    index_t add_graph(GeneGraph graph, GraphAssignment a, std::string name = {}) {
        require(graph.num_nodes() == n_, "GraphRegularizer: graph '{}' has {} nodes, expected {}", name, graph.num_nodes(), n_);
        require(!a.layers.empty(), "GraphRegularizer: graph '{}' is assigned to no layer", name);
        for (int l : a.layers) require(l >= 0, "GraphRegularizer: graph '{}' has a negative layer {}", name, l);
        require(a.head >= 0, "GraphRegularizer: graph '{}' has a negative head {}", name, a.head);
        Graph g;
        g.name = name.empty() ? fmt::format("graph{}", graphs_.size()) : std::move(name);
        g.target = graph.normalized_values<T>(opt_.eps);
        g.assignment = std::move(a);
        g.graph = std::move(graph);
        graphs_.push_back(std::move(g));
        return static_cast<index_t>(graphs_.size()) - 1;
    }

    /// Adds a graph given as CSR over the N genes (row_ptr N+1 offsets, col the edge targets);
    /// columns may be unsorted and repeated (duplicates count once).
    index_t add_graph(std::span<const index_t> row_ptr, std::span<const index_t> col, GraphAssignment a, std::string name = {}) {
        require(static_cast<index_t>(row_ptr.size()) == n_ + 1, "GraphRegularizer: row_ptr has {} entries, expected N+1 = {}",
                row_ptr.size(), n_ + 1);
        require(row_ptr[0] == 0 && row_ptr[static_cast<std::size_t>(n_)] == static_cast<index_t>(col.size()),
                "GraphRegularizer: row_ptr must run from 0 to {} (the column count)", col.size());
        std::vector<Edge> edges;
        edges.reserve(col.size());
        for (index_t i = 0; i < n_; ++i) {
            require(row_ptr[static_cast<std::size_t>(i)] <= row_ptr[static_cast<std::size_t>(i) + 1],
                    "GraphRegularizer: row_ptr decreases at row {}", i);
            for (index_t e = row_ptr[static_cast<std::size_t>(i)]; e < row_ptr[static_cast<std::size_t>(i) + 1]; ++e)
                edges.push_back({i, col[static_cast<std::size_t>(e)]});
        }
        return add_graph(GeneGraph(n_, edges), std::move(a), std::move(name));
    }

    index_t num_genes() const noexcept { return n_; }
    index_t num_graphs() const noexcept { return static_cast<index_t>(graphs_.size()); }
    const GraphRegularizerOptions& options() const noexcept { return opt_; }
    const GeneGraph& graph(index_t k) const { return at(k).graph; }
    const std::string& name(index_t k) const { return at(k).name; }
    const GraphAssignment& assignment(index_t k) const { return at(k).assignment; }

    /// Whether some graph is assigned to `layer`.
    bool regularizes(int layer) const {
        for (const auto& g : graphs_)
            if (std::find(g.assignment.layers.begin(), g.assignment.layers.end(), layer) != g.assignment.layers.end()) return true;
        return false;
    }

    /// The factor w_k multiplying L_k in the total (see GraphNormalization).
    double weight(index_t k) const {
        const Graph& g = at(k);
        if (opt_.normalization == GraphNormalization::legacy_global)
            return opt_.graph_reg_lambda * g.assignment.lambda * static_cast<double>(n_) / (2.0 * static_cast<double>(graphs_.size()));
        if (g.graph.nnz() == 0) return 0.0;
        return g.assignment.lambda * static_cast<double>(n_) / static_cast<double>(g.graph.nnz());
    }

    /// The rows of graph k regularised at (step, layer), ascending: every row of positive degree
    /// when row_rate == 1, else ⌊row_rate·N⌋ of them drawn without replacement (partial Fisher-Yates
    /// on CounterRng(seed) keyed by step, layer and k).
    std::vector<index_t> sample_rows(index_t k, int layer, std::uint64_t step) const {
        std::vector<index_t> pos = at(k).graph.rows_with_edges();
        if (opt_.row_rate >= 1.0) return pos;
        const auto m = static_cast<std::size_t>(std::floor(opt_.row_rate * static_cast<double>(n_)));
        if (pos.size() <= m) return pos;
        const CounterRng rng = CounterRng(opt_.seed, row_stream).substream(step).substream(static_cast<std::uint64_t>(layer)).substream(
            static_cast<std::uint64_t>(k));
        for (std::size_t t = 0; t < m; ++t) {
            const std::size_t j = t + static_cast<std::size_t>(rng.below(t, pos.size() - t));
            std::swap(pos[t], pos[j]);
        }
        pos.resize(m);
        std::sort(pos.begin(), pos.end());
        return pos;
    }

    /// Value Σ_k w_k L_k over the graphs on `layer`, from the attention's last forward (self-
    /// attention over the N+1 tokens [CLS, genes], batch 1); prepares that layer's hook.
    double evaluate(int layer, const nn::MultiHeadAttention<T, B>& attn, const Context& ctx = {}) {
        require(layer >= 0, "GraphRegularizer: negative layer {}", layer);
        const ops::AttentionDims d = attn.dims();
        require(d.batch == 1, "GraphRegularizer: the regularised attention must be batch 1 (got {})", d.batch);
        require(d.tq == n_ + 1 && d.tk == n_ + 1, "GraphRegularizer: attention over {}x{} tokens, expected N+1 = {} (CLS + genes)",
                d.tq, d.tk, n_ + 1);
        LayerState& st = state(layer);
        st = LayerState{};
        st.coef = Tensor<T, B>(Shape{d.hq * d.tq});
        for (index_t k = 0; k < num_graphs(); ++k) {
            const Graph& g = graphs_[static_cast<std::size_t>(k)];
            const auto& ls = g.assignment.layers;
            if (std::find(ls.begin(), ls.end(), layer) == ls.end()) continue;
            require(g.assignment.head < d.hq, "GraphRegularizer: graph '{}' regularises head {} of a {}-head attention", g.name,
                    g.assignment.head, d.hq);
            Term t;
            t.graph = k;
            t.head = g.assignment.head;
            t.rows = sample_rows(k, layer, ctx.step);
            // CSR over the N+1 tokens: gene row i is token i+1, gene column j is key j+1; token 0 (CLS) has no edges.
            const auto rp = g.graph.row_ptr();
            const auto col = g.graph.col();
            std::vector<index_t> row_ptr(static_cast<std::size_t>(d.tq) + 1, 0), cols;
            std::vector<T> target;
            for (index_t i : t.rows) row_ptr[static_cast<std::size_t>(i) + 2] = rp[static_cast<std::size_t>(i) + 1] - rp[static_cast<std::size_t>(i)];
            for (std::size_t r = 1; r < row_ptr.size(); ++r) row_ptr[r] += row_ptr[r - 1];
            for (index_t i : t.rows)
                for (index_t e = rp[static_cast<std::size_t>(i)]; e < rp[static_cast<std::size_t>(i) + 1]; ++e) {
                    cols.push_back(col[static_cast<std::size_t>(e)] + 1);
                    target.push_back(g.target[static_cast<std::size_t>(e)]);
                }
            t.row_ptr = from_host<index_t, B>(row_ptr);
            t.col = from_host<index_t, B>(cols);
            t.target = from_host<T, B>(target);
            t.w = Tensor<T, B>::uninitialized(Shape{t.col.numel()});
            const Tensor<T, B> logp = attn.edge_scores(view_of(t, t.target), true);  // log α at the edges, [1, nnz]
            t.value = ops::graph_kl_edges(B{}, d.tq, t.row_ptr.data(), t.target.data(), logp.data(), static_cast<T>(weight(k)), log_eps,
                                          t.w.data(), st.coef.data() + t.head * d.tq);
            st.value += weight(k) * t.value;
            st.terms.push_back(std::move(t));
        }
        st.heads = d.hq;
        st.tokens = d.tq;
        st.valid = true;
        return st.value;
    }

    /// Weighted value of `layer` from its last evaluate (0 when none).
    double layer_value(int layer) const {
        const LayerState* st = find(layer);
        return st && st->valid ? st->value : 0.0;
    }
    /// Unweighted L_k of graph k at `layer` from its last evaluate (0 when not evaluated there).
    double graph_value(index_t k, int layer) const {
        if (const LayerState* st = find(layer))
            for (const auto& t : st->terms)
                if (t.graph == k) return t.value;
        return 0.0;
    }
    /// The rows graph k used at `layer` in its last evaluate.
    std::vector<index_t> last_rows(index_t k, int layer) const {
        if (const LayerState* st = find(layer))
            for (const auto& t : st->terms)
                if (t.graph == k) return t.rows;
        return {};
    }

    /// The hook that fuses scale × d(layer value)/d(scores) into that layer's attention backward.
    /// Its spans point into this object: keep it alive and do not evaluate `layer` again until the
    /// backward has run. Empty when `layer` was not evaluated.
    ops::GraphHook<T> hook(int layer, double scale = 1.0) {
        LayerState* st = find(layer);
        if (!st || !st->valid) return {};
        ops::GraphHook<T> h;
        const T s = static_cast<T>(scale);
        st->scaled_coef = Tensor<T, B>::uninitialized(st->coef.shape());
        ops::axpby(B{}, st->coef.numel(), s, st->coef.data(), T(0), st->scaled_coef.data());
        h.coef = st->scaled_coef.data();
        for (auto& t : st->terms) {
            t.scaled_w = Tensor<T, B>::uninitialized(t.w.shape());
            ops::axpby(B{}, t.w.numel(), s, t.w.data(), T(0), t.scaled_w.data());
            h.terms.push_back(view_of(t, t.scaled_w));
        }
        return h;
    }

private:
    static constexpr std::uint64_t row_stream = 0x67726170685F7265ull;  // "graph_re": row sampling's own stream

    struct Graph {
        std::string name;
        GeneGraph graph;
        std::vector<T> target;  // Ã aligned with graph.col()
        GraphAssignment assignment;
    };
    struct Term {  // one graph on one layer: the sampled rows' edges over the N+1 tokens (backend memory)
        index_t graph = 0, head = 0;
        std::vector<index_t> rows;                 // the sampled gene rows (host)
        Tensor<index_t, B> row_ptr, col;           // CSR over the tq tokens
        Tensor<T, B> target, w, scaled_w;          // Ã, W, and W times the backward's scale, per edge
        double value = 0.0;
    };
    struct LayerState {
        std::vector<Term> terms;
        Tensor<T, B> coef, scaled_coef;  // c [heads, tokens] (batch 1)
        index_t heads = 0, tokens = 0;
        double value = 0.0;
        bool valid = false;
    };

    static ops::GraphTerm<T> view_of(const Term& t, const Tensor<T, B>& values) {
        return {t.head, std::span<const index_t>(t.row_ptr.data(), static_cast<std::size_t>(t.row_ptr.numel())),
                std::span<const index_t>(t.col.data(), static_cast<std::size_t>(t.col.numel())),
                std::span<const T>(values.data(), static_cast<std::size_t>(values.numel()))};
    }
    const Graph& at(index_t k) const {
        require(k >= 0 && k < num_graphs(), "GraphRegularizer: graph {} out of range [0, {})", k, num_graphs());
        return graphs_[static_cast<std::size_t>(k)];
    }
    LayerState& state(int layer) {
        if (static_cast<std::size_t>(layer) >= layers_.size()) layers_.resize(static_cast<std::size_t>(layer) + 1);
        return layers_[static_cast<std::size_t>(layer)];
    }
    LayerState* find(int layer) {
        return layer >= 0 && static_cast<std::size_t>(layer) < layers_.size() ? &layers_[static_cast<std::size_t>(layer)] : nullptr;
    }
    const LayerState* find(int layer) const {
        return layer >= 0 && static_cast<std::size_t>(layer) < layers_.size() ? &layers_[static_cast<std::size_t>(layer)] : nullptr;
    }

    index_t n_ = 0;
    GraphRegularizerOptions opt_;
    std::vector<Graph> graphs_;
    std::vector<LayerState> layers_;
};

} // namespace celltx
