#pragma once
// The backend-neutral types of the ops (backend/ops.hpp): what an op call describes, whichever
// backend runs it. Pointers inside them address the backend's memory unless a comment says host.
// The rules every backend must draw its random masks by (attention_dropout_keep, RowDropout::keep)
// live here too, so a CPU and a GPU run with the same seed draw the same masks.
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>
#include "celltx/core/rng.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

/// The element-wise nonlinearities the models use (PyTorch's nn.GELU(), nn.GELU('tanh'), nn.ReLU, nn.SiLU).
enum class ActivationKind { gelu, gelu_tanh, relu, silu };

} // namespace celltx

namespace celltx::ops {

// ---- attention ----------------------------------------------------------------------------------

/// Sizes of one attention call. scale == 0 means 1/sqrt(dh).
struct AttentionDims {
    index_t batch = 1, tq = 0, tk = 0, hq = 1, hkv = 1, dh = 1;
    double scale = 0.0;

    double softmax_scale() const { return scale != 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(dh)); }
    index_t group() const { return hq / hkv; }
};

/// A [batch, tokens, heads, dh] operand with `ld` elements between consecutive tokens: element
/// (b, t, h, e) at data[(b·tokens + t)·ld + h·dh + e].
template <class T>
struct HeadsRef {
    T* data = nullptr;
    index_t ld = 0;
};

/// Dropout on the attention probabilities: keep with probability 1−p, scale kept ones by 1/(1−p).
struct AttentionDropout {
    double p = 0.0;
    std::uint64_t seed = 0, stream = 0, step = 0;

    bool active() const noexcept { return p > 0.0; }
    /// The random stream of one (seed, stream, step): masks of different steps are independent.
    CounterRng rng() const noexcept { return CounterRng(seed, stream).substream(step); }
};

/// Flat index of score element (b, h, i, j): the counter its dropout draw is addressed by.
inline std::uint64_t attention_element_index(const AttentionDims& d, index_t b, index_t h, index_t i, index_t j) noexcept {
    return static_cast<std::uint64_t>(((b * d.hq + h) * d.tq + i) * d.tk + j);
}

/// Whether dropout keeps score element (b, h, i, j). Every backend's kernels use exactly this rule.
inline bool attention_dropout_keep(const AttentionDropout& drop, const AttentionDims& d, index_t b, index_t h, index_t i,
                                   index_t j) noexcept {
    return !drop.active() || drop.rng().uniform(attention_element_index(d, b, h, i, j)) > drop.p;
}

/// The integer form of "uniform(x) = (x+1)·2⁻³² > p": x >= floor(p·2³²) (exact: both sides are exact
/// in double; p < 1 keeps it below 2³²), so a kernel compares raw bits without a conversion.
inline std::uint32_t keep_threshold(double p) noexcept { return static_cast<std::uint32_t>(std::floor(p * 4294967296.0)); }

/// One sparse matrix W [tq, tk] for query head `head`, in CSR, shared by every batch item. The
/// spans address backend memory.
template <class T>
struct GraphTerm {
    index_t head = 0;
    std::span<const index_t> row_ptr;  ///< tq + 1 offsets, row_ptr[0] == 0
    std::span<const index_t> col;      ///< key index of each edge
    std::span<const T> value;          ///< W_ij of each edge

    constexpr index_t nnz() const noexcept { return static_cast<index_t>(col.size()); }
};

/// The graph-regularisation term fused into the score gradient: dL/dS_ij += c_i·P_ij − W_ij.
template <class T>
struct GraphHook {
    const T* coef = nullptr;            ///< c [batch, hq, tq] (every head; zero rows add nothing), or null
    std::vector<GraphTerm<T>> terms;    ///< W per head; a head may appear more than once (the terms add)

    bool empty() const noexcept { return coef == nullptr && terms.empty(); }
};

// ---- ragged rows (the CGT's Type I transform) ---------------------------------------------------

/// Rows grouped by sample: sample b owns rows [row_offsets[b], row_offsets[b+1]); row r holds gene
/// row_gene[r]. A row's dropout masks are addressed by (sample, gene), not by its position, so a
/// row draws the same mask whichever other rows are computed.
struct RaggedRows {
    index_t batch = 0, rows = 0;
    const index_t* row_offsets = nullptr;  ///< [batch + 1]
    const index_t* row_gene = nullptr;     ///< [rows]
};

/// Dropout of whole rows' elements: element c of row r (sample b, gene g) of a [rows, width]
/// matrix is kept iff uniform(g·width + c) > p in the stream sample_rng(b), and scaled by 1/(1−p).
struct RowDropout {
    double p = 0.0;
    std::uint64_t seed = 0, stream = 0, step = 0;

    bool active() const noexcept { return p > 0.0; }
    /// The stream of sample b: a pure function of (seed, stream, step, b).
    CounterRng sample_rng(index_t b) const noexcept {
        return CounterRng(seed, stream).substream(step).substream(static_cast<std::uint64_t>(b));
    }
};

/// Cross-attention of ragged rows against their sample's few keys (nn.MultiheadAttention math):
/// row r of sample b attends to the keys [key_offsets[b], key_offsets[b+1]) of a [keys, 2d] matrix
/// holding [K | V] per key. A sample without keys gives O = 0, LSE = −inf. Dropout on the
/// probabilities addresses element (h, j) of row r as gene·heads·tk + h·tk + j in sample_rng(b).
struct RaggedCrossAttention {
    RaggedRows rows;
    const index_t* key_offsets = nullptr;  ///< [batch + 1]
    index_t heads = 1, dh = 1;             ///< d = heads·dh
    RowDropout dropout;                    ///< on the probabilities

    constexpr index_t d_model() const noexcept { return heads * dh; }
};

/// The Type I block over every gene of every sample, without dropout (a fused op a backend may
/// provide; the transform composes the ragged ops otherwise). Row (b, g), g < genes, of sample b:
///   a = sample b has keys ? out_w·MHA(q[g]; K, V of keys [key_offsets[b], key_offsets[b+1])) + out_b : 0
///   x = LN1(H[g] + a);   y[b·genes + g] = LN2(x + ffn3_w·act(ffn0_w·x + ffn0_b) + ffn3_b)
/// with q the projected queries of the genes [genes, d] and kv the projected [K | V] per key [keys, 2d].
struct DenseCrossAttentionBlock {
    index_t batch = 0, genes = 0, heads = 1, dh = 1, ff = 0;
    const index_t* key_offsets = nullptr;  ///< [batch + 1]
    ActivationKind activation = ActivationKind::gelu;
    double eps1 = 1e-5, eps2 = 1e-5;  ///< of LN1 and LN2

    constexpr index_t d_model() const noexcept { return heads * dh; }
    constexpr index_t rows() const noexcept { return batch * genes; }
};
/// The block's parameters (PyTorch layouts: Linear weights [out, in]).
template <class T>
struct DenseCrossAttentionBlockWeights {
    const T *out_w, *out_b, *norm1_w, *norm1_b, *ffn0_w, *ffn0_b, *ffn3_w, *ffn3_b, *norm2_w, *norm2_b;
};
/// Their gradients (assigned by the backward).
template <class T>
struct DenseCrossAttentionBlockGrads {
    T *out_w, *out_b, *norm1_w, *norm1_b, *ffn0_w, *ffn0_b, *ffn3_w, *ffn3_b, *norm2_w, *norm2_b;
};
/// What the forward keeps for the backward, O(rows·d): the LSE per row and head [rows, heads], and
/// per LayerNorm the normalised input [rows, d] and 1/σ [rows]. The FFN's hidden layer is recomputed.
template <class T>
struct DenseCrossAttentionBlockSaved {
    T *lse, *xhat1, *rstd1, *xhat2, *rstd2;
};

// ---- segments (readouts' pooling) ---------------------------------------------------------------

/// Pooling of rows into segments: segment s = weight[s] · Σ_{e ∈ [offsets[s], offsets[s+1])} x[row(e)]
/// with row(e) = rows[e] (or e when rows is null) and weight[s] = 1 when weights is null.
template <class T>
struct SegmentPool {
    index_t segments = 0, dim = 0;
    const index_t* offsets = nullptr;  ///< [segments + 1]
    const index_t* rows = nullptr;     ///< [offsets[segments]] or null (rows are the entries themselves)
    const T* weights = nullptr;        ///< [segments] or null
    bool unique_rows = false;          ///< no row appears twice (its backward may run in parallel)
};

// ---- distribution losses ------------------------------------------------------------------------

/// The operands of a pairwise kernel: rows of X against rows of Y, set by set.
template <class T>
struct PointPairs {
    const T* x = nullptr;   ///< X [sets, n, d], row-major
    const T* y = nullptr;   ///< Y [sets, m, d], row-major
    index_t sets = 0, n = 0, m = 0, d = 0;
    index_t block = 256;    ///< tile edge (rows of X and rows of Y per tile)
    const T* d2 = nullptr;  ///< optional [sets, n, m] from pairwise_sqdist (same block): read instead of recomputed
};

// ---- optimiser ----------------------------------------------------------------------------------

/// The scalars of one Adam/AdamW update of one parameter (formed in double and rounded to T once,
/// as torch passes Python floats to its kernels). Per element:
///   g += wd·w (l2);  w *= decay (decoupled);  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;
///   v̂ = max(v̂, v) (amsgrad, NaN propagates);  w += neg_step · m / (sqrt(v̂ or v) / bc2_sqrt + eps).
template <class T>
struct AdamStep {
    T neg_step{}, bc2_sqrt{}, b1{}, one_m_b1{}, b2{}, one_m_b2{}, eps{}, wd{}, decay{};
    bool l2 = false, decoupled = false, amsgrad = false;
};

} // namespace celltx::ops
