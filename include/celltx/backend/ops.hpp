#pragma once
// The one door to the kernels. Every op is declared here once, with its contract; a backend is a
// tag type B and a specialisation ops::kernels<B> whose static members implement the ops
// (backend/cpu/kernels.hpp, backend/cuda/kernels.cuh). Code above backend/ calls `ops::op(B{}, ...)`
// and never includes a backend's own headers.
//  - provides_op<B, T> says whether backend B implements `op` for scalar T. The policies' concepts
//    require the ops they call, so a model type whose backend lacks one is rejected in one line
//    naming it: "required for the satisfaction of 'provides_gemm<B, T>' [with B = ...]".
//  - Pointers address the backend's memory unless the comment says host. Sizes are runtime values.
//  - "assigns" / "adds" say whether an output is overwritten or accumulated into; every op writes
//    every element it assigns, also when inputs are empty.
//  - kernels<B> is looked up when a layer is instantiated, not where it is defined, so the order of
//    includes does not matter: a backend's header only has to be included before its models are used.
// The CPU backend is always included (it defines what is correct); the CUDA backend when nvcc compiles.
#include <concepts>
#include <cstdint>
#include "celltx/backend/types.hpp"
#include "celltx/core/backend.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/shape.hpp"

namespace celltx::ops {

/// A backend's kernels. The primary template is empty: a backend tag without a specialisation
/// implements nothing, and every provides_* concept is false for it.
template <class B>
struct kernels {};

// =================================================================================================
// Dense

/// C[m,n] = alpha·op(A)·op(B) + beta·C, all row-major; op(X) = X or Xᵀ. A is [m,k] ([k,m] when
/// trans_a), B is [k,n] ([n,k] when trans_b); beta == 0 ignores C (NaN in C does not propagate).
template <class B, class T>
concept provides_gemm = requires(bool t, index_t i, T s, const T* a, T* c) { kernels<B>::gemm(t, t, i, i, i, s, a, i, a, i, s, c, i); };
template <Backend B, Scalar T>
    requires provides_gemm<B, T>
void gemm(B, bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, const T* Bm, index_t ldb,
          T beta, T* C, index_t ldc) {
    kernels<B>::gemm(trans_a, trans_b, m, n, k, alpha, A, lda, Bm, ldb, beta, C, ldc);
}

// =================================================================================================
// Element-wise

/// x[i] = value for n elements.
template <class B, class T>
concept provides_fill = requires(T* x, index_t n, T v) { kernels<B>::fill(x, n, v); };
template <Backend B, Scalar T>
    requires provides_fill<B, T>
void fill(B, T* x, index_t n, T value) {
    kernels<B>::fill(x, n, value);
}

/// x[i] *= a for n elements.
template <class B, class T>
concept provides_scale = requires(T* x, index_t n, T a) { kernels<B>::scale(x, n, a); };
template <Backend B, Scalar T>
    requires provides_scale<B, T>
void scale(B, T* x, index_t n, T a) {
    kernels<B>::scale(x, n, a);
}

/// dst[i] += src[i] for n elements.
template <class B, class T>
concept provides_accumulate = requires(const T* s, T* d, index_t n) { kernels<B>::accumulate(s, d, n); };
template <Backend B, Scalar T>
    requires provides_accumulate<B, T>
void accumulate(B, const T* src, T* dst, index_t n) {
    kernels<B>::accumulate(src, dst, n);
}

/// y[i] = a·x[i] + b·y[i] for n elements (b == 0 ignores y).
template <class B, class T>
concept provides_axpby = requires(index_t n, T a, const T* x, T* y) { kernels<B>::axpby(n, a, x, a, y); };
template <Backend B, Scalar T>
    requires provides_axpby<B, T>
void axpby(B, index_t n, T a, const T* x, T b, T* y) {
    kernels<B>::axpby(n, a, x, b, y);
}

/// y[i] = offset + x[i] / divisor for n elements (divided, not multiplied by a reciprocal: the
/// Sinkhorn potentials round exactly as the reference's).
template <class B, class T>
concept provides_shift_div = requires(const T* x, T* y, index_t n, T s) { kernels<B>::shift_div(x, s, s, y, n); };
template <Backend B, Scalar T>
    requires provides_shift_div<B, T>
void shift_div(B, const T* x, T divisor, T offset, T* y, index_t n) {
    kernels<B>::shift_div(x, divisor, offset, y, n);
}

/// y[i] += a·sign(x[i]) for n elements, sign(0) = 0 (the subgradient of |x| PyTorch uses).
template <class B, class T>
concept provides_sign_axpy = requires(index_t n, T a, const T* x, T* y) { kernels<B>::sign_axpy(n, a, x, y); };
template <Backend B, Scalar T>
    requires provides_sign_axpy<B, T>
void sign_axpy(B, index_t n, T a, const T* x, T* y) {
    kernels<B>::sign_axpy(n, a, x, y);
}

/// Y[r, :] += b for every row r of a [rows, n] matrix.
template <class B, class T>
concept provides_add_row_vector = requires(T* y, const T* b, index_t i) { kernels<B>::add_row_vector(y, b, i, i); };
template <Backend B, Scalar T>
    requires provides_add_row_vector<B, T>
void add_row_vector(B, T* Y, const T* b, index_t rows, index_t n) {
    kernels<B>::add_row_vector(Y, b, rows, n);
}

/// out[:] (assigned, or added into when `accumulate`) = the column sums of a [rows, n] matrix.
template <class B, class T>
concept provides_column_sum = requires(const T* x, index_t i, T* o, bool a) { kernels<B>::column_sum(x, i, i, o, a); };
template <Backend B, Scalar T>
    requires provides_column_sum<B, T>
void column_sum(B, const T* X, index_t rows, index_t n, T* out, bool accumulate = false) {
    kernels<B>::column_sum(X, rows, n, out, accumulate);
}

/// dst[r·ld_dst + c] = src[r·ld_src + c] for r < rows, c < cols; ld_src == 0 copies the one row
/// `src` into every row (a broadcast).
template <class B, class T>
concept provides_copy_2d = requires(T* d, const T* s, index_t i) { kernels<B>::copy_2d(d, i, s, i, i, i); };
template <Backend B, Scalar T>
    requires provides_copy_2d<B, T>
void copy_2d(B, T* dst, index_t ld_dst, const T* src, index_t ld_src, index_t rows, index_t cols) {
    kernels<B>::copy_2d(dst, ld_dst, src, ld_src, rows, cols);
}

/// x[r, :] *= factor[r] for every row of a [rows, cols] matrix; a zero factor writes exact zeros
/// (also over inf or NaN).
template <class B, class T>
concept provides_scale_rows = requires(T* x, const T* f, index_t i) { kernels<B>::scale_rows(x, i, i, f); };
template <Backend B, Scalar T>
    requires provides_scale_rows<B, T>
void scale_rows(B, T* x, index_t rows, index_t cols, const T* factor) {
    kernels<B>::scale_rows(x, rows, cols, factor);
}

/// y[i] = f(x[i]) for n elements.
template <class B, class T>
concept provides_activation_forward = requires(ActivationKind k, const T* x, T* y, index_t n) { kernels<B>::activation_forward(k, x, y, n); };
template <Backend B, Scalar T>
    requires provides_activation_forward<B, T>
void activation_forward(B, ActivationKind kind, const T* x, T* y, index_t n) {
    kernels<B>::activation_forward(kind, x, y, n);
}

/// dx[i] += dy[i]·f'(x[i]) for n elements.
template <class B, class T>
concept provides_activation_backward = requires(ActivationKind k, const T* x, T* d, index_t n) {
    kernels<B>::activation_backward(k, x, x, d, n);
};
template <Backend B, Scalar T>
    requires provides_activation_backward<B, T>
void activation_backward(B, ActivationKind kind, const T* x, const T* dy, T* dx, index_t n) {
    kernels<B>::activation_backward(kind, x, dy, dx, n);
}

/// SwiGLU's gated product h = silu(g)·u (assigned).
template <class B, class T>
concept provides_swiglu_forward = requires(const T* g, T* h, index_t n) { kernels<B>::swiglu_forward(g, g, h, n); };
template <Backend B, Scalar T>
    requires provides_swiglu_forward<B, T>
void swiglu_forward(B, const T* g, const T* u, T* h, index_t n) {
    kernels<B>::swiglu_forward(g, u, h, n);
}

/// Gradients of h = silu(g)·u: dg = dh·u·silu'(g), du = dh·silu(g) (both assigned).
template <class B, class T>
concept provides_swiglu_backward = requires(const T* g, T* d, index_t n) { kernels<B>::swiglu_backward(g, g, g, d, d, n); };
template <Backend B, Scalar T>
    requires provides_swiglu_backward<B, T>
void swiglu_backward(B, const T* g, const T* u, const T* dh, T* dg, T* du, index_t n) {
    kernels<B>::swiglu_backward(g, u, dh, dg, du, n);
}

/// Dropout with the mask of nn::Dropout: element i is kept iff rng.uniform(i) > p, kept elements are
/// scaled by 1/(1−p). backward == false: out[i] = in[i]·m[i] (assigned); true: out[i] += in[i]·m[i].
template <class B, class T>
concept provides_dropout_apply = requires(const CounterRng& r, double p, const T* x, T* y, index_t n, bool b) {
    kernels<B>::dropout_apply(r, p, x, y, n, b);
};
template <Backend B, Scalar T>
    requires provides_dropout_apply<B, T>
void dropout_apply(B, const CounterRng& rng, double p, const T* in, T* out, index_t n, bool backward) {
    kernels<B>::dropout_apply(rng, p, in, out, n, backward);
}

/// x[r, c] *= keep factor of RowDropout for the [rows.rows, width] matrix x (its own adjoint).
template <class B, class T>
concept provides_row_dropout = requires(const RaggedRows& r, const RowDropout& d, T* x, index_t w) { kernels<B>::row_dropout(r, d, x, w); };
template <Backend B, Scalar T>
    requires provides_row_dropout<B, T>
void row_dropout(B, const RaggedRows& rows, const RowDropout& drop, T* x, index_t width) {
    kernels<B>::row_dropout(rows, drop, x, width);
}

// =================================================================================================
// Normalisation (row statistics accumulated in double whatever T is)

/// LayerNorm forward over the rows of [rows, d]: xhat = (x − mean)·rstd (biased variance),
/// y = xhat·w + b (w, b null: no affine). Saves xhat [rows, d] and rstd [rows] (all assigned).
template <class B, class T>
concept provides_layer_norm_forward = requires(const T* x, T* y, index_t i, double e) {
    kernels<B>::layer_norm_forward(x, x, x, y, y, y, i, i, e);
};
template <Backend B, Scalar T>
    requires provides_layer_norm_forward<B, T>
void layer_norm_forward(B, const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd, index_t rows, index_t d, double eps) {
    kernels<B>::layer_norm_forward(x, w, b, y, xhat, rstd, rows, d, eps);
}

/// LayerNorm backward. With g = dy·w: dx += rstd·(g − mean(g) − xhat·mean(g·xhat)) (dx may be null);
/// dw = Σ_rows dy·xhat and db = Σ_rows dy are assigned when w is given.
template <class B, class T>
concept provides_layer_norm_backward = requires(const T* x, T* y, index_t i) { kernels<B>::layer_norm_backward(x, x, x, x, i, i, y, y, y); };
template <Backend B, Scalar T>
    requires provides_layer_norm_backward<B, T>
void layer_norm_backward(B, const T* dy, const T* xhat, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw, T* db) {
    kernels<B>::layer_norm_backward(dy, xhat, rstd, w, rows, d, dx, dw, db);
}

/// RMSNorm forward (HF LlamaRMSNorm): n = x·rsqrt(mean(x²) + eps) rounded to T, y = w·n. Saves n
/// [rows, d] and rstd [rows].
template <class B, class T>
concept provides_rms_norm_forward = requires(const T* x, T* y, index_t i, double e) { kernels<B>::rms_norm_forward(x, x, y, y, y, i, i, e); };
template <Backend B, Scalar T>
    requires provides_rms_norm_forward<B, T>
void rms_norm_forward(B, const T* x, const T* w, T* y, T* n, T* rstd, index_t rows, index_t d, double eps) {
    kernels<B>::rms_norm_forward(x, w, y, n, rstd, rows, d, eps);
}

/// RMSNorm backward. With g = dy·w: dx += rstd·(g − n·mean(g·n)) (dx may be null); dw = Σ_rows dy·n
/// is assigned.
template <class B, class T>
concept provides_rms_norm_backward = requires(const T* x, T* y, index_t i) { kernels<B>::rms_norm_backward(x, x, x, x, i, i, y, y); };
template <Backend B, Scalar T>
    requires provides_rms_norm_backward<B, T>
void rms_norm_backward(B, const T* dy, const T* n, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw) {
    kernels<B>::rms_norm_backward(dy, n, rstd, w, rows, d, dx, dw);
}

// =================================================================================================
// Gathers, scatters, segments

/// out[i, :] = src[idx[i], :] for i < n, rows of width dim (idx already range-checked).
template <class B, class T>
concept provides_gather_rows = requires(const T* s, const index_t* idx, index_t i, T* o) { kernels<B>::gather_rows(s, idx, i, i, o); };
template <Backend B, Scalar T>
    requires provides_gather_rows<B, T>
void gather_rows(B, const T* src, const index_t* idx, index_t n, index_t dim, T* out) {
    kernels<B>::gather_rows(src, idx, n, dim, out);
}

/// dst[idx[i], :] += src[i, :] for i < n; repeated indices accumulate (in index order on the CPU).
template <class B, class T>
concept provides_scatter_add_rows = requires(const T* s, const index_t* idx, index_t i, T* d) { kernels<B>::scatter_add_rows(s, idx, i, i, d); };
template <Backend B, Scalar T>
    requires provides_scatter_add_rows<B, T>
void scatter_add_rows(B, const T* src, const index_t* idx, index_t n, index_t dim, T* dst) {
    kernels<B>::scatter_add_rows(src, idx, n, dim, dst);
}

/// out[s·ld_out + c] = SegmentPool's sum of segment s (assigned; an empty segment gives 0).
template <class B, class T>
concept provides_segment_pool = requires(const SegmentPool<T>& p, const T* x, T* o, index_t ld) { kernels<B>::segment_pool(p, x, o, ld); };
template <Backend B, Scalar T>
    requires provides_segment_pool<B, T>
void segment_pool(B, const SegmentPool<T>& pool, const T* x, T* out, index_t ld_out) {
    kernels<B>::segment_pool(pool, x, out, ld_out);
}

/// The adjoint of segment_pool: dx[row(e), :] += weight[s]·dout[s·ld_dout, :] for every entry e of
/// every segment s.
template <class B, class T>
concept provides_segment_pool_backward = requires(const SegmentPool<T>& p, const T* d, index_t ld, T* dx) {
    kernels<B>::segment_pool_backward(p, d, ld, dx);
};
template <Backend B, Scalar T>
    requires provides_segment_pool_backward<B, T>
void segment_pool_backward(B, const SegmentPool<T>& pool, const T* dout, index_t ld_dout, T* dx) {
    kernels<B>::segment_pool_backward(pool, dout, ld_dout, dx);
}

// =================================================================================================
// Attention (memory-efficient: nothing of size tq×tk is ever allocated)

/// O = (softmax(scale·Q Kᵀ) ∘ M/(1−p)) V and LSE [batch, hq, tq] (of the scores, before dropout),
/// both assigned; query head h reads kv head h / (hq/hkv). tk == 0: O = 0, LSE = −inf.
template <class B, class T>
concept provides_attention_forward = requires(const AttentionDims& d, HeadsRef<const T> c, HeadsRef<T> o, T* l, const AttentionDropout& p) {
    kernels<B>::attention_forward(d, c, c, c, o, l, p);
};
template <Backend B, Scalar T>
    requires provides_attention_forward<B, T>
void attention_forward(B, const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, HeadsRef<const T> v, HeadsRef<T> o, T* lse,
                       const AttentionDropout& drop = {}) {
    kernels<B>::attention_forward(d, q, k, v, o, lse, drop);
}

/// dQ, dK, dV (assigned) from dO, recomputing P from the saved LSE; the optional graph hook adds
/// c_i·P_ij − W_ij (P before dropout) to the score gradient.
template <class B, class T>
concept provides_attention_backward = requires(const AttentionDims& d, HeadsRef<const T> c, const T* l, HeadsRef<T> o,
                                               const AttentionDropout& p, const GraphHook<T>* h) {
    kernels<B>::attention_backward(d, c, c, c, c, l, c, o, o, o, p, h);
};
template <Backend B, Scalar T>
    requires provides_attention_backward<B, T>
void attention_backward(B, const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, HeadsRef<const T> v, HeadsRef<const T> o,
                        const T* lse, HeadsRef<const T> dout, HeadsRef<T> dq, HeadsRef<T> dk, HeadsRef<T> dv, const AttentionDropout& drop = {},
                        const GraphHook<T>* hook = nullptr) {
    kernels<B>::attention_backward(d, q, k, v, o, lse, dout, dq, dk, dv, drop, hook);
}

/// Scores s_ij = scale·q_i·k_j at the edges of `term` (its head), per batch item: out [batch, nnz]
/// (assigned). With `lse` (the forward's [batch, hq, tq]) it writes log P_ij = s_ij − LSE_i.
template <class B, class T>
concept provides_attention_edge_scores = requires(const AttentionDims& d, HeadsRef<const T> c, const GraphTerm<T>& t, T* o) {
    kernels<B>::attention_edge_scores(d, c, c, t, o, static_cast<const T*>(nullptr));
};
template <Backend B, Scalar T>
    requires provides_attention_edge_scores<B, T>
void attention_edge_scores(B, const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, const GraphTerm<T>& term, T* out,
                           const T* lse = nullptr) {
    kernels<B>::attention_edge_scores(d, q, k, term, out, lse);
}

/// The graph regulariser's KL at the edges of one term (CSR row_ptr over tq rows): for edge e of
/// row i with target a = Ã_e and α = exp(logp_e): loss += a·(log a − log(α + log_eps)),
/// w_out[e] = weight·a·α/(α + log_eps) (assigned; 0 where a == 0) and coef[i] += Σ_e w_out[e].
/// Returns the unweighted loss (host).
template <class B, class T>
concept provides_graph_kl_edges = requires(index_t i, const index_t* rp, const T* a, T w, double e, T* o) {
    { kernels<B>::graph_kl_edges(i, rp, a, a, w, e, o, o) } -> std::convertible_to<double>;
};
template <Backend B, Scalar T>
    requires provides_graph_kl_edges<B, T>
double graph_kl_edges(B, index_t tq, const index_t* row_ptr, const T* target, const T* logp, T weight, double log_eps, T* w_out,
                      T* coef) {
    return kernels<B>::graph_kl_edges(tq, row_ptr, target, logp, weight, log_eps, w_out, coef);
}

/// RaggedCrossAttention forward: q [rows, d], kv [keys, 2d] -> o [rows, d], lse [rows, heads] (assigned).
template <class B, class T>
concept provides_ragged_cross_attention_forward = requires(const RaggedCrossAttention& a, const T* q, T* o) {
    kernels<B>::ragged_cross_attention_forward(a, q, q, o, o);
};
template <Backend B, Scalar T>
    requires provides_ragged_cross_attention_forward<B, T>
void ragged_cross_attention_forward(B, const RaggedCrossAttention& a, const T* q, const T* kv, T* o, T* lse) {
    kernels<B>::ragged_cross_attention_forward(a, q, kv, o, lse);
}

/// RaggedCrossAttention backward: dq [rows, d] and dkv [keys, 2d] (assigned) from dO, recomputing
/// the probabilities from the forward's LSE.
template <class B, class T>
concept provides_ragged_cross_attention_backward = requires(const RaggedCrossAttention& a, const T* q, T* o) {
    kernels<B>::ragged_cross_attention_backward(a, q, q, q, q, o, o);
};
template <Backend B, Scalar T>
    requires provides_ragged_cross_attention_backward<B, T>
void ragged_cross_attention_backward(B, const RaggedCrossAttention& a, const T* q, const T* kv, const T* lse, const T* dout, T* dq, T* dkv) {
    kernels<B>::ragged_cross_attention_backward(a, q, kv, lse, dout, dq, dkv);
}

/// DenseCrossAttentionBlock forward (optional: a fused op; without it the transform composes the ops
/// above): H, q [genes, d], kv [keys, 2d] -> y [rows, d] and `saved` (assigned).
template <class B, class T>
concept provides_dense_cross_attention_block_forward =
    requires(const DenseCrossAttentionBlock& a, const T* x, T* y, DenseCrossAttentionBlockWeights<T> w, DenseCrossAttentionBlockSaved<T> s) {
        kernels<B>::dense_cross_attention_block_forward(a, x, x, x, w, y, s);
    };
template <Backend B, Scalar T>
    requires provides_dense_cross_attention_block_forward<B, T>
void dense_cross_attention_block_forward(B, const DenseCrossAttentionBlock& a, const T* H, const T* q, const T* kv,
                                         DenseCrossAttentionBlockWeights<T> w, T* y, DenseCrossAttentionBlockSaved<T> saved) {
    kernels<B>::dense_cross_attention_block_forward(a, H, q, kv, w, y, saved);
}

/// DenseCrossAttentionBlock backward from dy [rows, d]: dq [genes, d] and dkv [keys, 2d] and the
/// parameter gradients are assigned; dH [genes, d] ADDS the residual path's gradient (the query
/// path is dq's: the caller owns the query projection).
template <class B, class T>
concept provides_dense_cross_attention_block_backward =
    requires(const DenseCrossAttentionBlock& a, const T* x, T* y, DenseCrossAttentionBlockWeights<T> w, DenseCrossAttentionBlockSaved<T> s,
             DenseCrossAttentionBlockGrads<T> g) { kernels<B>::dense_cross_attention_block_backward(a, x, x, x, w, s, x, y, y, y, g); };
template <Backend B, Scalar T>
    requires provides_dense_cross_attention_block_backward<B, T>
void dense_cross_attention_block_backward(B, const DenseCrossAttentionBlock& a, const T* H, const T* q, const T* kv,
                                          DenseCrossAttentionBlockWeights<T> w, DenseCrossAttentionBlockSaved<T> saved, const T* dy, T* dq,
                                          T* dH, T* dkv, DenseCrossAttentionBlockGrads<T> grads) {
    kernels<B>::dense_cross_attention_block_backward(a, H, q, kv, w, saved, dy, dq, dH, dkv, grads);
}

// =================================================================================================
// Pairwise tiles of the distribution losses (blockwise: nothing of size n×m unless PointPairs::d2)

/// out [sets, n, m] = d2 of every pair, d2_ij = (‖x_i‖² − 2 x_i·y_j) + ‖y_j‖², tile by tile as the
/// other pairwise kernels compute it.
template <class B, class T>
concept provides_pairwise_sqdist = requires(const PointPairs<T>& p, T* o) { kernels<B>::pairwise_sqdist(p, o); };
template <Backend B, Scalar T>
    requires provides_pairwise_sqdist<B, T>
void pairwise_sqdist(B, const PointPairs<T>& p, T* out) {
    kernels<B>::pairwise_sqdist(p, out);
}

/// sums[b] (host, assigned) = Σ_ij sqrt(max(d2_ij, min_sq)), accumulated in double.
template <class B, class T>
concept provides_pairwise_distance_sum = requires(const PointPairs<T>& p, T m, double* s) { kernels<B>::pairwise_distance_sum(p, m, s); };
template <Backend B, Scalar T>
    requires provides_pairwise_distance_sum<B, T>
void pairwise_distance_sum(B, const PointPairs<T>& p, T min_sq, double* sums) {
    kernels<B>::pairwise_distance_sum(p, min_sq, sums);
}

/// grad[b, i, :] += coef[b]·Σ_j [d2_ij >= min_sq] (x_i − y_j)/sqrt(d2_ij); coef is a host array
/// [sets]; sets with coef 0 are skipped (they add nothing, not 0·NaN).
template <class B, class T>
concept provides_pairwise_distance_grad = requires(const PointPairs<T>& p, T m, const T* c, T* g) {
    kernels<B>::pairwise_distance_grad(p, m, c, g);
};
template <Backend B, Scalar T>
    requires provides_pairwise_distance_grad<B, T>
void pairwise_distance_grad(B, const PointPairs<T>& p, T min_sq, const T* coef, T* grad) {
    kernels<B>::pairwise_distance_grad(p, min_sq, coef, grad);
}

/// Sinkhorn's soft-min with cost ½d2: lse[b, i] = log Σ_j exp(h[b, j] − ½d2_ij/eps),
/// out[b, i] = −eps·lse[b, i] (assigned; lse may be null). h is [sets, m].
template <class B, class T>
concept provides_pairwise_softmin = requires(const PointPairs<T>& p, T e, const T* h, T* o) { kernels<B>::pairwise_softmin(p, e, h, o, o); };
template <Backend B, Scalar T>
    requires provides_pairwise_softmin<B, T>
void pairwise_softmin(B, const PointPairs<T>& p, T eps, const T* h, T* out, T* lse = nullptr) {
    kernels<B>::pairwise_softmin(p, eps, h, out, lse);
}

/// grad[b, i, :] += coef[b]·Σ_j P_ij (x_i − y_j), P_ij = exp(h[b, j] − ½d2_ij/eps − lse[b, i]); coef
/// is a host array [sets]; sets with coef 0 are skipped.
template <class B, class T>
concept provides_pairwise_softmin_grad = requires(const PointPairs<T>& p, T e, const T* h, T* g) {
    kernels<B>::pairwise_softmin_grad(p, e, h, h, h, g);
};
template <Backend B, Scalar T>
    requires provides_pairwise_softmin_grad<B, T>
void pairwise_softmin_grad(B, const PointPairs<T>& p, T eps, const T* h, const T* lse, const T* coef, T* grad) {
    kernels<B>::pairwise_softmin_grad(p, eps, h, lse, coef, grad);
}

// =================================================================================================
// Reductions (results on the host)

/// Σ_i |x[i]| in double.
template <class B, class T>
concept provides_sum_abs = requires(const T* x, index_t n) { { kernels<B>::sum_abs(x, n) } -> std::convertible_to<double>; };
template <Backend B, Scalar T>
    requires provides_sum_abs<B, T>
double sum_abs(B, const T* x, index_t n) {
    return kernels<B>::sum_abs(x, n);
}

/// out[r] (host) = Σ_c x[r, c]² in double, for the rows of a [rows, cols] matrix.
template <class B, class T>
concept provides_row_sum_squares = requires(const T* x, index_t i, double* o) { kernels<B>::row_sum_squares(x, i, i, o); };
template <Backend B, Scalar T>
    requires provides_row_sum_squares<B, T>
void row_sum_squares(B, const T* x, index_t rows, index_t cols, double* out) {
    kernels<B>::row_sum_squares(x, rows, cols, out);
}

/// lo[c], hi[c] (host) = min and max over the rows of column c of [rows, cols], non-finite values
/// left out (+inf / −inf when a column has none). Accumulates into lo/hi as given.
template <class B, class T>
concept provides_column_min_max = requires(const T* x, index_t i, T* o) { kernels<B>::column_min_max(x, i, i, o, o); };
template <Backend B, Scalar T>
    requires provides_column_min_max<B, T>
void column_min_max(B, const T* x, index_t rows, index_t cols, T* lo, T* hi) {
    kernels<B>::column_min_max(x, rows, cols, lo, hi);
}

/// The p-norm of n values accumulated in double (p = inf: the largest |x|; NaN propagates).
template <class B, class T>
concept provides_norm = requires(const T* x, index_t n, double p) { { kernels<B>::norm(x, n, p) } -> std::convertible_to<double>; };
template <Backend B, Scalar T>
    requires provides_norm<B, T>
double norm(B, const T* x, index_t n, double p) {
    return kernels<B>::norm(x, n, p);
}

// =================================================================================================
// Optimiser

/// One fused Adam/AdamW update of n elements (AdamStep); vmax may be null without amsgrad.
template <class B, class T>
concept provides_adam_update = requires(const AdamStep<T>& s, T* w, const T* g, index_t n) { kernels<B>::adam_update(s, w, g, w, w, w, n); };
template <Backend B, Scalar T>
    requires provides_adam_update<B, T>
void adam_update(B, const AdamStep<T>& step, T* w, const T* g, T* m, T* v, T* vmax, index_t n) {
    kernels<B>::adam_update(step, w, g, m, v, vmax, n);
}

} // namespace celltx::ops

#include "celltx/backend/cpu/kernels.hpp"
#if defined(__CUDACC__)
#include "celltx/backend/cuda/kernels.cuh"
#endif
