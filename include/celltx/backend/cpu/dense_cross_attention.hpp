#pragma once
// The Type I block over every gene of every sample on the CPU (ops::dense_cross_attention_block_*),
// fused. A task owns a block of genes and runs it for every sample: the block's 4d-wide FFN hidden
// layer lives in L2 and is never stored (the backward recomputes it), the small products go through
// the packed GEMM on the task's thread (each weight packed once per call: WeightOperand), and the
// element-wise work (attention over the few keys, residuals, both LayerNorms, bias and activation)
// happens while the rows are in cache, in vector kernels for float rows of a multiple of 16.
// With |S| keys, the output projection is applied to each value head by head once per sample
// (U[e, h] = W_o[:, h]·v_e^h), so a row's attention output costs |S|·heads·d multiply-adds, not d²,
// and the backward needs no saved attention output. In float at the CGT's head width (8) the
// attention runs with the block's genes in vector lanes (DenseAttentionRows: queries transposed once
// per task, a vector exp, no per-head scalar loops). The gradient partials of each task are summed
// in task order: results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>
#include "celltx/backend/cpu/elementwise.hpp"
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/cpu/ragged_attention.hpp"
#include "celltx/backend/cpu/simd.hpp"
#include "celltx/backend/math/norm.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cpu_detail {

/// Gene rows per task: a block's hidden layer (rows × 4d) and its gradient stay in L2.
inline constexpr index_t dense_block_rows = 128;

/// U [keys, heads, d]: U[e, h, o] = Σ_c W_o[o, h·dh + c]·v_e[h·dh + c], v_e = kv[e, d ..].
template <class T>
std::vector<T> value_projections(const ops::DenseCrossAttentionBlock& a, const T* kv, const T* out_w) {
    const index_t nh = a.heads, dh = a.dh, d = a.d_model(), E = a.key_offsets[a.batch];
    std::vector<T> U(static_cast<std::size_t>(E * nh * d));
    parallel_for(E, [&](index_t e) {
        const T* v = kv + e * 2 * d + d;
        for (index_t h = 0; h < nh; ++h) {
            T* u = U.data() + (e * nh + h) * d;
            for (index_t o = 0; o < d; ++o) {
                const T* wr = out_w + o * d + h * dh;
                T acc = 0;
                for (index_t c = 0; c < dh; ++c) acc += wr[c] * v[h * dh + c];
                u[o] = acc;
            }
        }
    }, E * nh * d * dh >= 131072 ? 2 : E + 1);
    return U;
}

/// Σ a[i]·b[i] in 8 interleaved partial sums: independent chains the compiler can vectorise (one
/// chain of n dependent adds costs n latencies).
template <class T>
inline T dot8(const T* a, const T* b, index_t n) {
    T acc[8] = {};
    index_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
    T tail = 0;
    for (; i < n; ++i) tail += a[i] * b[i];
    return (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail;
}

/// Σ f(j) for j < n in double, in 4 interleaved partial sums.
template <class F>
inline double sum4(index_t n, F&& f) {
    double acc[4] = {};
    index_t j = 0;
    for (; j + 4 <= n; j += 4)
        for (int u = 0; u < 4; ++u) acc[u] += f(j + u);
    for (; j < n; ++j) acc[0] += f(j);
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

/// LayerNorm of one row in double (as the LayerNorm op): xhat and 1/σ saved, y = w·xhat + b.
template <class T>
inline void layer_norm_row(const T* x, const T* w, const T* b, index_t d, double eps, T* xhat, T* rstd, T* y) {
    const double mean = sum4(d, [&](index_t j) { return static_cast<double>(x[j]); }) / static_cast<double>(d);
    const double var = sum4(d, [&](index_t j) {
        const double c = x[j] - mean;
        return c * c;
    });
    const double rs = math::inverse_rms(var, static_cast<double>(d), eps);
    *rstd = static_cast<T>(rs);
    for (index_t j = 0; j < d; ++j) {
        const double h = (x[j] - mean) * rs;
        xhat[j] = static_cast<T>(h);
        y[j] = math::layer_norm_affine(h, w[j], b[j]);
    }
}

/// LayerNorm backward of one row: dx = rstd·(g − mean g − xhat·mean(g·xhat)), g = dy·w (assigned);
/// dw += dy·xhat and db += dy.
template <class T>
inline void layer_norm_row_backward(const T* dy, const T* xhat, T rstd, const T* w, index_t d, T* dx, T* dw, T* db) {
    for (index_t j = 0; j < d; ++j) {
        dw[j] += dy[j] * xhat[j];
        db[j] += dy[j];
    }
    const double sg = sum4(d, [&](index_t j) { return static_cast<double>(dy[j]) * w[j]; }) / static_cast<double>(d);
    const double sgh = sum4(d, [&](index_t j) { return static_cast<double>(dy[j]) * w[j] * xhat[j]; }) / static_cast<double>(d);
    for (index_t j = 0; j < d; ++j)
        dx[j] = static_cast<T>(math::layer_norm_input_grad(static_cast<double>(rstd), static_cast<double>(dy[j]) * w[j], sg, xhat[j], sgh));
}

/// A weight matrix as the B operand of the block's products: op(W) [k, n], packed once per op call
/// where the packed GEMM runs (the tasks make thousands of small products against it).
template <class T>
struct WeightOperand {
    bool trans;
    const T* w;
    index_t ldw, k, n;
    Tensor<float> packed;  // empty where the packed GEMM does not run (Tensor storage is 64-byte aligned, as its loads need)

    WeightOperand(bool trans_w, const T* w_, index_t ldw_, index_t k_, index_t n_) : trans(trans_w), w(w_), ldw(ldw_), k(k_), n(n_) {
#if CELLTX_PACKED_GEMM
        if constexpr (std::is_same_v<T, float>) {
            if (sgemm::available()) {
                packed = Tensor<float>::uninitialized(Shape{sgemm::packed_b_size(k, n)});
                sgemm::pack_b(trans, w, ldw, k, n, packed.data());
            }
        }
#endif
    }

    /// C [m, n] = A [m, k]·op(W) + beta·C on the calling thread: the same arithmetic as dense::gemm.
    void product(index_t m, const T* A, index_t lda, T beta, T* C, index_t ldc) const {
#if CELLTX_PACKED_GEMM
        if constexpr (std::is_same_v<T, float>) {
            if (!packed.empty() && static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >= packed_gemm_min_work) {  // as dense::gemm
                sgemm::run_packed_b(false, m, n, k, 1.0f, A, lda, packed.data(), beta, C, ldc);
                return;
            }
        }
#endif
        cpu_kernels::dense::gemm(false, trans, m, n, k, T(1), A, lda, w, ldw, beta, C, ldc);
    }
};

// Whole-block element-wise steps: the vector kernels (simd.hpp) for float rows whose width is a
// multiple of 16, else the scalar loops, row by row in the same order.

/// LayerNorm of `rows` contiguous rows of width d (y may be x).
template <class T>
inline void layer_norm_block(const T* x, index_t rows, index_t d, const T* w, const T* b, double eps, T* xhat, T* rstd, T* y) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_layer_norm_rows(x, rows, d, w, b, eps, xhat, rstd, y)) return;
    for (index_t i = 0; i < rows; ++i) layer_norm_row(x + i * d, w, b, d, eps, xhat + i * d, rstd + i, y + i * d);
}

/// LayerNorm backward of `rows` contiguous rows (dx may be dy); dw and db accumulate in row order.
template <class T>
inline void layer_norm_block_backward(const T* dy, const T* xhat, const T* rstd, const T* w, index_t rows, index_t d, T* dx, T* dw, T* db) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_layer_norm_rows_backward(dy, xhat, rstd, w, rows, d, dx, dw, db)) return;
    for (index_t i = 0; i < rows; ++i) layer_norm_row_backward(dy + i * d, xhat + i * d, rstd[i], w, d, dx + i * d, dw, db);
}

/// y = w·xhat + b over `rows` rows of width d: LayerNorm's output again from its saved xhat.
template <class T>
inline void layer_norm_affine_block(const T* xhat, const T* w, const T* b, index_t rows, index_t d, T* y) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_layer_norm_affine_rows(xhat, w, b, rows, d, y)) return;
    for (index_t i = 0; i < rows; ++i)
        for (index_t o = 0; o < d; ++o) y[i * d + o] = math::layer_norm_affine(static_cast<double>(xhat[i * d + o]), w[o], b[o]);
}

/// y[i, j] = res[i, j] + (y[i, j] + bias[j]): a residual around a biased product.
template <class T>
inline void add_bias_and_residual_block(T* y, const T* bias, const T* res, index_t rows, index_t cols) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_add_bias_and_residual_rows(y, bias, res, rows, cols)) return;
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) y[i * cols + j] = res[i * cols + j] + (y[i * cols + j] + bias[j]);
}

/// x[i, j] = act(x[i, j] + bias[j]) over rows × cols.
template <class T>
inline void bias_activation_block(ActivationKind kind, T* x, const T* bias, index_t rows, index_t cols) {
    if constexpr (std::is_same_v<T, float>)
        if (kind == ActivationKind::gelu && simd_bias_gelu_rows(x, bias, rows, cols)) return;
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) x[i * cols + j] += bias[j];
    cpu_kernels::elementwise::activation_forward(kind, x, x, rows * cols);
}

/// v = pre[i, j] + bias[j]: hid = act(v) and pre := act'(v), one Φ per element where the vector GELU runs.
template <class T>
inline void bias_activation_value_and_derivative_block(ActivationKind kind, T* pre, const T* bias, T* hid, index_t rows, index_t cols) {
    if constexpr (std::is_same_v<T, float>) {
        if (kind == ActivationKind::gelu && simd_bias_gelu_value_and_derivative_rows(pre, bias, hid, rows, cols)) return;
        for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) pre[i * cols + j] += bias[j];
        if (kind == ActivationKind::gelu && simd_gelu_value_and_derivative(pre, hid, pre, rows * cols)) return;
    } else {
        for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) pre[i * cols + j] += bias[j];
    }
    with_activation<T>(kind, [&](auto math) {
        for (index_t e = 0; e < rows * cols; ++e) {
            hid[e] = math.value(pre[e]);
            pre[e] = math.derivative(pre[e]);
        }
    });
}

/// out = a·b element-wise and colsum[j] += Σ_i out[i, j] (out may be a or b).
template <class T>
inline void multiply_and_sum_columns(const T* a, const T* b, T* out, index_t rows, index_t cols, T* colsum) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_multiply_rows_and_sum_columns(a, b, out, rows, cols, colsum)) return;
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) {
            out[i * cols + j] = a[i * cols + j] * b[i * cols + j];
            colsum[j] += out[i * cols + j];
        }
}

/// colsum[j] += Σ_i x[i, j], in row order.
template <class T>
inline void sum_columns_block(const T* x, index_t rows, index_t cols, T* colsum) {
    if constexpr (std::is_same_v<T, float>)
        if (simd_sum_columns(x, rows, cols, colsum)) return;
    for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) colsum[j] += x[i * cols + j];
}

/// Whether the block's attention runs with genes in vector lanes (DenseAttentionRows): float, head
/// width 8, d a multiple of 64, on a CPU with the vector kernels.
template <class T>
inline bool dense_attention_in_lanes(index_t dh, index_t d) {
    return std::is_same_v<T, float> && CELLTX_SIMD && simd_level() != SimdLevel::none && dh == 8 && d % 64 == 0;
}

/// The queries of gene rows [g0, g0 + rows) times `scale`, transposed for DenseAttentionRows:
/// [d][ld], lanes from `rows` on 0.
template <class T>
inline std::vector<float> transposed_queries(const T* q, index_t g0, index_t rows, index_t d, index_t ld, T scale) {
    std::vector<float> qt(static_cast<std::size_t>(d * ld), 0.0f);
    for (index_t i = 0; i < rows; ++i)
        for (index_t o = 0; o < d; ++o) qt[static_cast<std::size_t>(o * ld + i)] = static_cast<float>(scale * q[(g0 + i) * d + o]);
    return qt;
}

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's fused dense Type I block (see backend/ops.hpp for the contracts).
struct dense_cross_attention {
    template <Scalar T>
    static void dense_cross_attention_block_forward(const ops::DenseCrossAttentionBlock& a, const T* H, const T* q, const T* kv,
                                                    ops::DenseCrossAttentionBlockWeights<T> w, T* y, ops::DenseCrossAttentionBlockSaved<T> s) {
        using namespace cpu_detail;
        const index_t N = a.genes, nh = a.heads, dh = a.dh, d = a.d_model(), ff = a.ff, Bn = a.batch;
        if (N == 0 || Bn == 0) return;
        const std::vector<T> U = value_projections(a, kv, w.out_w);
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
        index_t max_keys = 0;
        for (index_t b = 0; b < Bn; ++b) max_keys = std::max(max_keys, a.key_offsets[b + 1] - a.key_offsets[b]);
        const index_t C = dense_block_rows, tasks = (N + C - 1) / C;
        const bool lanes = dense_attention_in_lanes<T>(dh, d);
        const WeightOperand<T> w0t(true, w.ffn0_w, d, d, ff), w3t(true, w.ffn3_w, ff, ff, d);  // x·W0ᵀ, h·W3ᵀ
        parallel_for(tasks, [&](index_t t) {
            const index_t g0 = t * C, c = std::min(C, N - g0);
            std::vector<T> x1(static_cast<std::size_t>(c * d)), hid(static_cast<std::size_t>(c * ff)), f(static_cast<std::size_t>(c * d)),
                sc(static_cast<std::size_t>(std::max<index_t>(max_keys, 1)));
            // The vector path: the block's queries transposed once (genes in lanes), softmax statistics per head.
            const index_t ld = C;
            std::vector<float> qt, ml, pbuf;
            if (lanes) {
                qt = transposed_queries(q, g0, c, d, ld, scale);
                ml.resize(static_cast<std::size_t>(2 * nh * ld));
                pbuf.resize(static_cast<std::size_t>(nh * std::max<index_t>(max_keys, 1) * ld));
            }
            for (index_t b = 0; b < Bn; ++b) {
                const index_t k0 = a.key_offsets[b], tk = a.key_offsets[b + 1] - k0, r0 = b * N + g0;
                // x1 = H[g] + attention (then LN1's output); the LSE per head.
                for (index_t i = 0; i < c; ++i) std::copy_n(H + (g0 + i) * d, d, x1.data() + i * d);
                if (tk == 0) {
                    std::fill_n(s.lse + r0 * nh, c * nh, -std::numeric_limits<T>::infinity());
                } else if (lanes) {  // T is float here (dense_attention_in_lanes)
                    if constexpr (std::is_same_v<T, float>) {
                        const DenseAttentionRows rows{qt.data(), ld, c, kv + k0 * 2 * d, 2 * d, tk, nh, d, U.data() + k0 * nh * d};
                        simd_dense_attention_forward(rows, x1.data(), ml.data(), ml.data() + nh * ld, pbuf.data());
                    }
                    for (index_t i = 0; i < c; ++i)
                        for (index_t h = 0; h < nh; ++h)
                            s.lse[(r0 + i) * nh + h] = static_cast<T>(
                                math::online_softmax_lse(ml[static_cast<std::size_t>(h * ld + i)], ml[static_cast<std::size_t>((nh + h) * ld + i)]));
                } else {
                    for (index_t i = 0; i < c; ++i) {
                        const index_t g = g0 + i;
                        T* xr = x1.data() + i * d;
                        for (index_t h = 0; h < nh; ++h) {
                            T l;
                            s.lse[(r0 + i) * nh + h] =
                                few_key_softmax(q + g * d + h * dh, kv + k0 * 2 * d + h * dh, 2 * d, tk, dh, scale, sc.data(), l);
                            for (index_t j = 0; j < tk; ++j) {
                                const T p = sc[static_cast<std::size_t>(j)] / l;
                                const T* u = U.data() + ((k0 + j) * nh + h) * d;
                                for (index_t o = 0; o < d; ++o) xr[o] += p * u[o];
                            }
                        }
                    }
                }
                if (tk > 0) elementwise::add_row_vector(x1.data(), w.out_b, c, d);
                layer_norm_block(x1.data(), c, d, w.norm1_w, w.norm1_b, a.eps1, s.xhat1 + r0 * d, s.rstd1 + r0, x1.data());
                w0t.product(c, x1.data(), d, T(0), hid.data(), ff);
                bias_activation_block(a.activation, hid.data(), w.ffn0_b, c, ff);
                w3t.product(c, hid.data(), ff, T(0), f.data(), d);
                add_bias_and_residual_block(f.data(), w.ffn3_b, x1.data(), c, d);
                layer_norm_block(f.data(), c, d, w.norm2_w, w.norm2_b, a.eps2, s.xhat2 + r0 * d, s.rstd2 + r0, y + r0 * d);
            }
        });
    }

    template <Scalar T>
    static void dense_cross_attention_block_backward(const ops::DenseCrossAttentionBlock& a, const T* H, const T* q, const T* kv,
                                                     ops::DenseCrossAttentionBlockWeights<T> w, ops::DenseCrossAttentionBlockSaved<T> s,
                                                     const T* dy, T* dq, T* dH, T* dkv, ops::DenseCrossAttentionBlockGrads<T> grads) {
        using namespace cpu_detail;
        (void)H;
        const index_t N = a.genes, nh = a.heads, dh = a.dh, d = a.d_model(), ff = a.ff, Bn = a.batch;
        const index_t E = Bn > 0 ? a.key_offsets[Bn] : 0;
        const std::vector<T> U = value_projections(a, kv, w.out_w);
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
        index_t max_keys = 0;
        for (index_t b = 0; b < Bn; ++b) max_keys = std::max(max_keys, a.key_offsets[b + 1] - a.key_offsets[b]);
        // One partial per task, summed in task order: [ffn0_w | ffn0_b | ffn3_w | ffn3_b | norm1 w, b | norm2 w, b | out_b | dU | dK].
        const index_t o_w0 = 0, o_b0 = o_w0 + ff * d, o_w3 = o_b0 + ff, o_b3 = o_w3 + d * ff, o_n1w = o_b3 + d, o_n1b = o_n1w + d,
                      o_n2w = o_n1b + d, o_n2b = o_n2w + d, o_ob = o_n2b + d, o_dU = o_ob + d, o_dK = o_dU + E * nh * d, P = o_dK + E * d;
        const index_t C = dense_block_rows, tasks = N > 0 ? (N + C - 1) / C : 0;
        const bool lanes = dense_attention_in_lanes<T>(dh, d);
        // x·W0ᵀ (the recomputed hidden layer), dr·W3 and dpre·W0.
        const WeightOperand<T> w0t(true, w.ffn0_w, d, d, ff), w3(false, w.ffn3_w, ff, d, ff), w0(false, w.ffn0_w, d, ff, d);
        std::vector<T> partial(static_cast<std::size_t>(tasks * P), T(0));
        parallel_for(tasks, [&](index_t t) {
            T* pt = partial.data() + t * P;
            const index_t g0 = t * C, c = std::min(C, N - g0);
            const std::size_t cd = static_cast<std::size_t>(c * d), cf = static_cast<std::size_t>(c * ff);
            std::vector<T> x1(cd), dr(cd), pre(cf), hid(cf), dhid(cf), p(static_cast<std::size_t>(std::max<index_t>(max_keys, 1))),
                dp(p.size());
            std::fill_n(dq + g0 * d, c * d, T(0));
            // The vector path: queries, the attention output's gradient and the LSE transposed (genes in
            // lanes); dQ accumulates transposed over the samples.
            const index_t ld = C;
            std::vector<float> qt, dat, lset, dqt, scratch;
            if (lanes) {
                qt = transposed_queries(q, g0, c, d, ld, scale);
                dat.assign(qt.size(), 0.0f);
                dqt.assign(qt.size(), 0.0f);
                lset.assign(static_cast<std::size_t>(nh * ld), 0.0f);
                scratch.resize(static_cast<std::size_t>(2 * std::max<index_t>(max_keys, 1) * ld));
            }
            for (index_t b = 0; b < Bn; ++b) {
                const index_t k0 = a.key_offsets[b], tk = a.key_offsets[b + 1] - k0, r0 = b * N + g0;
                // LN2 backward (into dr: the gradient of x + FFN(x)), and x = LN1's output from its saved xhat.
                layer_norm_block_backward(dy + r0 * d, s.xhat2 + r0 * d, s.rstd2 + r0, w.norm2_w, c, d, dr.data(), pt + o_n2w, pt + o_n2b);
                layer_norm_affine_block(s.xhat1 + r0 * d, w.norm1_w, w.norm1_b, c, d, x1.data());
                // FFN: recompute the hidden layer (hid = act(pre) and pre := act'(pre) in one pass), then
                // ffn.3 and ffn.0 backward; dr += dpre·W0 makes it the gradient of LN1's output.
                w0t.product(c, x1.data(), d, T(0), pre.data(), ff);
                bias_activation_value_and_derivative_block(a.activation, pre.data(), w.ffn0_b, hid.data(), c, ff);
                dense::gemm(true, false, d, ff, c, T(1), dr.data(), d, hid.data(), ff, T(1), pt + o_w3, ff);
                w3.product(c, dr.data(), d, T(0), dhid.data(), ff);
                multiply_and_sum_columns(dhid.data(), pre.data(), hid.data(), c, ff, pt + o_b0);  // hid becomes dpre
                sum_columns_block(dr.data(), c, d, pt + o_b3);
                dense::gemm(true, false, ff, d, c, T(1), hid.data(), ff, x1.data(), d, T(1), pt + o_w0, d);
                w0.product(c, hid.data(), ff, T(1), dr.data(), d);
                // LN1 backward in place (dr becomes the gradient of H[g] + a), the residual into dH, then the
                // attention: per row on the scalar path, or once for the block with genes in lanes (da and
                // the LSE transposed).
                layer_norm_block_backward(dr.data(), s.xhat1 + r0 * d, s.rstd1 + r0, w.norm1_w, c, d, dr.data(), pt + o_n1w, pt + o_n1b);
                elementwise::accumulate(dr.data(), dH + g0 * d, c * d);
                if (tk == 0) continue;  // no keys: the attention output is the constant 0
                sum_columns_block(dr.data(), c, d, pt + o_ob);
                for (index_t i = 0; i < c; ++i) {
                    const index_t g = g0 + i, r = r0 + i;
                    const T* da = dr.data() + i * d;
                    if (lanes) {
                        for (index_t o = 0; o < d; ++o) dat[static_cast<std::size_t>(o * ld + i)] = static_cast<float>(da[o]);
                        for (index_t h = 0; h < nh; ++h) lset[static_cast<std::size_t>(h * ld + i)] = static_cast<float>(s.lse[r * nh + h]);
                        continue;
                    }
                    for (index_t h = 0; h < nh; ++h) {
                        const T* qh = q + g * d + h * dh;
                        const T l = s.lse[r * nh + h];
                        T D = 0;
                        for (index_t j = 0; j < tk; ++j) {
                            const T pj = std::exp(key_score(qh, kv + (k0 + j) * 2 * d + h * dh, dh, scale) - l);
                            const T* u = U.data() + ((k0 + j) * nh + h) * d;
                            T* du = pt + o_dU + ((k0 + j) * nh + h) * d;
                            const T g_u = dot8(da, u, d);
                            for (index_t o = 0; o < d; ++o) du[o] += pj * da[o];
                            p[static_cast<std::size_t>(j)] = pj;
                            dp[static_cast<std::size_t>(j)] = g_u;
                            D += pj * g_u;
                        }
                        T* dqh = dq + g * d + h * dh;
                        for (index_t j = 0; j < tk; ++j) {
                            const T ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - D) * scale;
                            const T* k = kv + (k0 + j) * 2 * d + h * dh;
                            T* dk = pt + o_dK + (k0 + j) * d + h * dh;
                            for (index_t cc = 0; cc < dh; ++cc) {
                                dqh[cc] += ds * k[cc];
                                dk[cc] += ds * qh[cc];
                            }
                        }
                    }
                }
                if constexpr (std::is_same_v<T, float>) {  // lanes implies float (dense_attention_in_lanes)
                    if (lanes && tk > 0) {
                        const DenseAttentionRows rows{qt.data(), ld, c, kv + k0 * 2 * d, 2 * d, tk, nh, d, U.data() + k0 * nh * d};
                        simd_dense_attention_backward(rows, dr.data(), dat.data(), lset.data(), dqt.data(), pt + o_dU + k0 * nh * d,
                                                      pt + o_dK + k0 * d, d, scratch.data());
                    }
                }
            }
            if (lanes)
                for (index_t i = 0; i < c; ++i)
                    for (index_t o = 0; o < d; ++o) dq[(g0 + i) * d + o] += scale * static_cast<T>(dqt[static_cast<std::size_t>(o * ld + i)]);
        });
        // The tasks' partials, summed in task order (each element by one thread).
        std::vector<T> total(static_cast<std::size_t>(P));
        const index_t chunk = 4096;
        parallel_for((P + chunk - 1) / chunk, [&](index_t ci) {
            const index_t e0 = ci * chunk, e1 = std::min(P, e0 + chunk);
            for (index_t e = e0; e < e1; ++e) {
                double acc = 0.0;
                for (index_t t = 0; t < tasks; ++t) acc += partial[static_cast<std::size_t>(t * P + e)];
                total[static_cast<std::size_t>(e)] = static_cast<T>(acc);
            }
        }, P >= 65536 ? 2 : P + 1);
        const T* tot = total.data();
        std::copy_n(tot + o_w0, ff * d, grads.ffn0_w);
        std::copy_n(tot + o_b0, ff, grads.ffn0_b);
        std::copy_n(tot + o_w3, d * ff, grads.ffn3_w);
        std::copy_n(tot + o_b3, d, grads.ffn3_b);
        std::copy_n(tot + o_n1w, d, grads.norm1_w);
        std::copy_n(tot + o_n1b, d, grads.norm1_b);
        std::copy_n(tot + o_n2w, d, grads.norm2_w);
        std::copy_n(tot + o_n2b, d, grads.norm2_b);
        std::copy_n(tot + o_ob, d, grads.out_b);
        // Through U[e, h] = W_o[:, h]·v_e^h: dW_o[o, h·dh + c] = Σ_e dU[e, h, o]·v_e[h·dh + c]; dv_e[h·dh + c] = Σ_o W_o[o, h·dh + c]·dU[e, h, o].
        const T* dU = tot + o_dU;
        std::fill_n(grads.out_w, d * d, T(0));
        for (index_t e = 0; e < E; ++e) {
            const T* v = kv + e * 2 * d + d;
            T* dk = dkv + e * 2 * d;
            T* dv = dk + d;
            std::copy_n(tot + o_dK + e * d, d, dk);
            std::fill_n(dv, d, T(0));
            for (index_t h = 0; h < nh; ++h) {
                const T* du = dU + (e * nh + h) * d;
                for (index_t o = 0; o < d; ++o) {
                    T* gw = grads.out_w + o * d + h * dh;
                    const T* wr = w.out_w + o * d + h * dh;
                    for (index_t cc = 0; cc < dh; ++cc) {
                        gw[cc] += du[o] * v[h * dh + cc];
                        dv[h * dh + cc] += wr[cc] * du[o];
                    }
                }
            }
        }
    }
};

} // namespace celltx::cpu_kernels
