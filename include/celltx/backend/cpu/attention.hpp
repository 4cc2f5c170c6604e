#pragma once
// Memory-efficient multi-head attention on the CPU (FlashAttention-2 style, in float or double).
//
// Operands are token-major, as a projection writes them: element (b, t, h, e) of a
// [batch, tokens, heads, dh] operand lives at data[(b*tokens + t)*ld + h*dh + e] (ld >= heads*dh, so a
// packed [B, T, 3d] projection can be read in place). Query head h reads kv head h / (hq/hkv).
//  - attention_forward: O = softmax(scale·Q Kᵀ) V, blockwise with an online softmax; saves only O and
//    LSE [batch, hq, tq] (log-sum-exp of each score row). Nothing of size tq×tk is ever allocated.
//  - attention_backward: ASSIGNS dQ, dK, dV by recomputing P from LSE.
//  - Dropout on the probabilities: the mask of element (b,h,i,j) is a pure function of
//    (seed, stream, step, ((b*hq+h)*tq+i)*tk+j) (attention_dropout_keep), so backward redraws it.
//  - tk == 0: O = 0, LSE = -inf, dQ = 0.
//  - GraphHook: adds c_i·P_ij − W_ij to dL/dS_ij (P before dropout), W sparse (CSR) per query head,
//    shared across the batch: the gradient of Σ W_ij·(−log P_ij) with c_i = Σ_j W_ij. The edge scores
//    (attention_edge_scores) give log P_ij = s_ij − LSE_i at the edges without any dense matrix.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>
#include "celltx/backend/attention_checks.hpp"
#include "celltx/backend/cpu/attention_small_head.hpp"
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail::attention_detail {

using ops::AttentionDims;
using ops::AttentionDropout;
using ops::GraphHook;
using ops::GraphTerm;
using ops::HeadsRef;
using ops::attention_element_index;
using ops::keep_threshold;
using namespace ops::attention_checks;

// Query x key block sizes: a 64×256 score block (64 KB in float) stays in L2 with its operands.
inline constexpr index_t fwd_block_q = 64, fwd_block_k = 256;
inline constexpr index_t bwd_block_q = 64, bwd_block_k = 128;

/// parallel_for's threshold: below about 2^18 multiply-adds a parallel region costs more than it
/// saves (and on a loaded machine far more). Either way each task computes the same bits.
inline index_t min_parallel_tasks(const AttentionDims& d, index_t tasks) {
    const double work = static_cast<double>(d.batch) * static_cast<double>(d.hq) * static_cast<double>(d.tq) *
                        static_cast<double>(std::max<index_t>(d.tk, 1)) * static_cast<double>(d.dh);
    return work < 262144.0 ? tasks + 1 : 2;
}

template <class T>
void check_term(const GraphTerm<T>& t, const AttentionDims& d) {
    check_term_shape(t, d);
    require(t.row_ptr[0] == 0 && t.row_ptr[d.tq] == t.nnz(), "attention graph hook: row_ptr must run from 0 to nnz = {}", t.nnz());
    for (index_t i = 0; i < d.tq; ++i)
        require(t.row_ptr[i] <= t.row_ptr[i + 1], "attention graph hook: row_ptr decreases at row {}", i);
    for (index_t e = 0; e < t.nnz(); ++e)
        require(t.col[e] >= 0 && t.col[e] < d.tk, "attention graph hook: column {} of edge {} out of range for tk = {}", t.col[e], e, d.tk);
}

/// Philox4x32-10 of `count` (<= 16) consecutive counters from `first_block`: exactly
/// CounterRng::bits. The AVX2 / AVX-512 build computes all 16 in vector lanes (the portable loop
/// below, vectorised by the compiler for the baseline ISA, took a third of a dropout training step).
inline void philox_blocks(const CounterRng& rng, std::uint64_t first_block, int count, std::uint32_t (&out)[64]) {
    const PhiloxStream stream = rng.philox_stream();
    if (simd_philox_blocks16(stream, first_block, out)) return;
    constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    std::uint32_t c0[16], c1[16], c2[16], c3[16];
    for (int l = 0; l < 16; ++l) {
        const std::uint64_t idx = first_block + static_cast<std::uint64_t>(l < count ? l : 0);
        c0[l] = static_cast<std::uint32_t>(idx);
        c1[l] = static_cast<std::uint32_t>(idx >> 32);
        c2[l] = stream.stream0;
        c3[l] = stream.stream1;
    }
    std::uint32_t k0 = stream.key0, k1 = stream.key1;
    for (int round = 0; round < 10; ++round) {
#ifdef _OPENMP
#pragma omp simd
#endif
        for (int l = 0; l < 16; ++l) {
            const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * c0[l];
            const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * c2[l];
            const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
            const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
            c1[l] = static_cast<std::uint32_t>(p1);
            c3[l] = static_cast<std::uint32_t>(p0);
            c0[l] = n0;
            c2[l] = n2;
        }
        k0 += w0;
        k1 += w1;
    }
    for (int l = 0; l < 16; ++l) out[4 * l] = c0[l], out[4 * l + 1] = c1[l], out[4 * l + 2] = c2[l], out[4 * l + 3] = c3[l];
}

/// out[c] = keep(first + c) ? keep_scale : 0 for c < n: one Philox block serves four neighbours.
template <class T>
void dropout_factors(const CounterRng& rng, std::uint32_t threshold, T keep_scale, std::uint64_t first, index_t n, T* out) {
    std::uint32_t bits[64];
    index_t c = 0;
    while (c < n) {
        const std::uint64_t idx = first + static_cast<std::uint64_t>(c), block = idx >> 2;
        const int count = static_cast<int>(std::min<std::uint64_t>(16, ((idx + static_cast<std::uint64_t>(n - c) + 3) >> 2) - block));
        philox_blocks(rng, block, count, bits);
        const index_t skip = static_cast<index_t>(idx & 3), len = std::min(n - c, 4 * static_cast<index_t>(count) - skip);
        for (index_t e = 0; e < len; ++e) out[c + e] = math::dropout_factor(bits[skip + e], threshold, keep_scale);
        c += len;
    }
}

/// rows x dh block of a heads operand starting at token t0 of batch item b, head h.
template <class T>
auto block(HeadsRef<T> x, index_t tokens, index_t b, index_t t0, index_t h, index_t rows, index_t dh) {
    return cpu_detail::mat(x.data + (b * tokens + t0) * x.ld + h * dh, rows, dh, x.ld);
}

/// Row t0 of head h of batch item b: the first of a block of rows `x.ld` apart.
template <class T>
T* head_rows(HeadsRef<T> x, index_t tokens, index_t b, index_t t0, index_t h, index_t dh) {
    return x.data + (b * tokens + t0) * x.ld + h * dh;
}

/// The block products, through the CPU's GEMM (the packed sgemm in float; Eigen otherwise).
template <class T>
void block_product(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, const T* B, index_t ldb,
                   T beta, T* C, index_t ldc) {
    cpu_kernels::dense::gemm(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/// The graph hook's −W_ij part for batch item b and kv head g: a sparse pass over the edges of the
/// group's query heads (dQ rows of those heads, dK rows of head g).
template <class T>
void graph_hook_edges(const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, HeadsRef<T> dq, HeadsRef<T> dk, const GraphHook<T>& hook,
                      index_t b, index_t g) {
    const index_t dh = d.dh, group = d.group();
    const T scale = static_cast<T>(d.softmax_scale());
    for (const auto& t : hook.terms) {
        if (t.head / group != g) continue;
        for (index_t i = 0; i < d.tq; ++i) {
            T* dqi = dq.data + (b * d.tq + i) * dq.ld + t.head * dh;
            const T* qi = q.data + (b * d.tq + i) * q.ld + t.head * dh;
            for (index_t e = t.row_ptr[i]; e < t.row_ptr[i + 1]; ++e) {
                const index_t j = t.col[e];
                const T w = scale * t.value[e];
                T* dkj = dk.data + (b * d.tk + j) * dk.ld + g * dh;
                const T* kj = k.data + (b * d.tk + j) * k.ld + g * dh;
                for (index_t c = 0; c < dh; ++c) {
                    dqi[c] -= w * kj[c];
                    dkj[c] -= w * qi[c];
                }
            }
        }
    }
}

} // namespace celltx::cpu_detail::attention_detail

namespace celltx::cpu_kernels {

/// The CPU's attention kernels (see backend/ops.hpp for each contract).
struct attention {
    using AttentionDims = ops::AttentionDims;
    using AttentionDropout = ops::AttentionDropout;
    template <class T>
    using HeadsRef = ops::HeadsRef<T>;
    template <class T>
    using GraphTerm = ops::GraphTerm<T>;
    template <class T>
    using GraphHook = ops::GraphHook<T>;


/// O = (softmax(scale·Q Kᵀ) ∘ M/(1−p)) V and LSE [batch, hq, tq] (of the scores, before dropout);
/// memory O((tq+tk)·d) plus one block of scratch per task.
template <Scalar T>
static void attention_forward(const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, HeadsRef<const T> v, HeadsRef<T> o,
                       T* lse, const AttentionDropout& drop = {}) {
    using namespace cpu_detail::attention_detail;
    using cpu_detail::mat;
    check_dims(d);
    check_dropout(drop);
    check_operand("Q", q, d.hq, d, d.tq);
    check_operand("K", k, d.hkv, d, d.tk);
    check_operand("V", v, d.hkv, d, d.tk);
    check_operand("O", o, d.hq, d, d.tq);
    require(lse != nullptr || d.batch * d.tq == 0, "attention_forward: LSE is null");
    if constexpr (std::is_same_v<T, float>) {
        if (cpu_detail::small_head::applies(d)) {
            cpu_detail::small_head::forward(d, q, k, v, o, lse, drop);
            return;
        }
    }
    const index_t nqb = (d.tq + fwd_block_q - 1) / fwd_block_q, dh = d.dh, group = d.group();
    const T scale = static_cast<T>(d.softmax_scale());
    const T keep_scale = static_cast<T>(1.0 / (1.0 - drop.p));
    const CounterRng rng = drop.rng();
    const std::uint32_t threshold = keep_threshold(drop.p);

    const index_t ntasks = d.batch * d.hq * nqb;
    cpu_detail::parallel_for(ntasks, [&](index_t task) {
        const index_t b = task / (d.hq * nqb), h = (task / nqb) % d.hq, i0 = (task % nqb) * fwd_block_q;
        const index_t m = std::min(fwd_block_q, d.tq - i0), hk = h / group;
        auto out = block(o, d.tq, b, i0, h, m, dh);
        T* lse_out = lse + (b * d.hq + h) * d.tq + i0;
        if (d.tk == 0) {  // no keys: nothing to attend to
            out.setZero();
            std::fill_n(lse_out, m, -std::numeric_limits<T>::infinity());
            return;
        }
        // Per-task scratch, counted by memory_stats like every other Tensor.
        auto scratch = Tensor<T>::uninitialized(Shape{2 * m * dh + m * fwd_block_k + 2 * m + fwd_block_k});
        T* p = scratch.data();
        auto qs = mat(p, m, dh, dh);
        auto acc = mat(p + m * dh, m, dh, dh);
        T* S = p + 2 * m * dh;
        T* mx = S + m * fwd_block_k;
        T* l = mx + m;
        T* factors = l + m;
        qs = scale * block(q, d.tq, b, i0, h, m, dh);  // scale the queries once instead of every score
        acc.setZero();
        std::fill_n(mx, m, -std::numeric_limits<T>::infinity());
        std::fill_n(l, m, T(0));
        for (index_t j0 = 0; j0 < d.tk; j0 += fwd_block_k) {
            const index_t n = std::min(fwd_block_k, d.tk - j0);
            auto s = mat(S, m, n, n);
            block_product(false, true, m, n, dh, T(1), qs.data(), dh, head_rows(k, d.tk, b, j0, hk, dh), k.ld, T(0), S, n);
            for (index_t r = 0; r < m; ++r) {
                auto row = s.row(r).array();
                const T corr = math::online_softmax_rescale(mx[r], l[r], row.maxCoeff());  // 0 on the first block
                row = (row - mx[r]).exp();
                l[r] += row.sum();  // the normaliser uses the probabilities before dropout
                acc.row(r) *= corr;
                if (drop.active()) {
                    dropout_factors(rng, threshold, keep_scale, attention_element_index(d, b, h, i0 + r, j0), n, factors);
                    row *= cpu_detail::mat(factors, 1, n, n).array();
                }
            }
            block_product(false, false, m, dh, n, T(1), S, n, head_rows(v, d.tk, b, j0, hk, dh), v.ld, T(1), acc.data(), dh);
        }
        for (index_t r = 0; r < m; ++r) {
            out.row(r) = acc.row(r) / l[r];
            lse_out[r] = math::online_softmax_lse(mx[r], l[r]);
        }
    }, min_parallel_tasks(d, ntasks));
}

/// dQ, dK, dV (ASSIGNED) from dO, by recomputing P from the saved LSE; optional graph hook.
/// Tasks are (batch item, kv head): each owns its dK, dV and the dQ of its query heads, so there
/// are no races and the summation order (hence every bit of the result) does not depend on the
/// number of threads.
template <Scalar T>
static void attention_backward(const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, HeadsRef<const T> v,
                        HeadsRef<const T> o, const T* lse, HeadsRef<const T> dout, HeadsRef<T> dq, HeadsRef<T> dk,
                        HeadsRef<T> dv, const AttentionDropout& drop = {}, const GraphHook<T>* hook = nullptr) {
    using namespace cpu_detail::attention_detail;
    using cpu_detail::mat;
    check_dims(d);
    check_dropout(drop);
    check_operand("Q", q, d.hq, d, d.tq);
    check_operand("K", k, d.hkv, d, d.tk);
    check_operand("V", v, d.hkv, d, d.tk);
    check_operand("O", o, d.hq, d, d.tq);
    check_operand("dO", dout, d.hq, d, d.tq);
    check_operand("dQ", dq, d.hq, d, d.tq);
    check_operand("dK", dk, d.hkv, d, d.tk);
    check_operand("dV", dv, d.hkv, d, d.tk);
    require(lse != nullptr || d.batch * d.tq == 0, "attention_backward: LSE is null");
    if (hook)
        for (const auto& t : hook->terms) check_term(t, d);
    const T* coef = hook ? hook->coef : nullptr;
    if constexpr (std::is_same_v<T, float>) {
        if (cpu_detail::small_head::applies(d)) {
            cpu_detail::small_head::backward(d, q, k, v, o, lse, dout, dq, dk, dv, coef, drop);
            if (hook)
                cpu_detail::parallel_for(d.batch * d.hkv, [&](index_t task) {
                    graph_hook_edges(d, q, k, dq, dk, *hook, task / d.hkv, task % d.hkv);
                }, min_parallel_tasks(d, d.batch * d.hkv));
            return;
        }
    }
    const index_t dh = d.dh, group = d.group();
    const T scale = static_cast<T>(d.softmax_scale());
    const T keep_scale = static_cast<T>(1.0 / (1.0 - drop.p));
    const CounterRng rng = drop.rng();
    const std::uint32_t threshold = keep_threshold(drop.p);

    cpu_detail::parallel_for(d.batch * d.hkv, [&](index_t task) {
        const index_t b = task / d.hkv, g = task % d.hkv;
        if (d.tq > 0)
            for (index_t hh = 0; hh < group; ++hh) block(dq, d.tq, b, 0, g * group + hh, d.tq, dh).setZero();
        if (d.tk > 0) {
            block(dk, d.tk, b, 0, g, d.tk, dh).setZero();
            block(dv, d.tk, b, 0, g, d.tk, dh).setZero();
        }
        if (d.tq == 0 || d.tk == 0) return;

        const index_t bq = bwd_block_q, bk = bwd_block_k, nblk = bq * bk;
        auto scratch = Tensor<T>::uninitialized(Shape{group * d.tq + bq * dh + 2 * bk * dh + (drop.active() ? 4 : 2) * nblk});
        T* dc = scratch.data();  // D_i − c_i per query row of each head of the group
        T* qs_p = dc + group * d.tq;
        T* dk_acc_p = qs_p + bq * dh;
        T* dv_acc_p = dk_acc_p + bk * dh;
        T* P = dv_acc_p + bk * dh;
        T* DS = P + nblk;
        T* MK = DS + nblk;   // dropout only: keep factors
        T* PD = MK + nblk;   // dropout only: dropped probabilities
        for (index_t hh = 0; hh < group; ++hh) {
            const index_t h = g * group + hh;
            for (index_t i = 0; i < d.tq; ++i) {
                const T* orow = o.data + (b * d.tq + i) * o.ld + h * dh;
                const T* grow = dout.data + (b * d.tq + i) * dout.ld + h * dh;
                T s = 0;
                for (index_t e = 0; e < dh; ++e) s += orow[e] * grow[e];
                dc[hh * d.tq + i] = coef ? s - coef[(b * d.hq + h) * d.tq + i] : s;
            }
        }
        for (index_t j0 = 0; j0 < d.tk; j0 += bk) {
            const index_t n = std::min(bk, d.tk - j0);
            const T* kb = head_rows(k, d.tk, b, j0, g, dh);
            const T* vb = head_rows(v, d.tk, b, j0, g, dh);
            auto dk_acc = mat(dk_acc_p, n, dh, dh);
            auto dv_acc = mat(dv_acc_p, n, dh, dh);
            dk_acc.setZero();
            dv_acc.setZero();
            for (index_t hh = 0; hh < group; ++hh) {
                const index_t h = g * group + hh;
                const T* lse_h = lse + (b * d.hq + h) * d.tq;
                for (index_t i0 = 0; i0 < d.tq; i0 += bq) {
                    const index_t m = std::min(bq, d.tq - i0);
                    auto qs = mat(qs_p, m, dh, dh);
                    qs = scale * block(q, d.tq, b, i0, h, m, dh);  // same rounding as the forward
                    const T* gb = head_rows(dout, d.tq, b, i0, h, dh);
                    auto p = mat(P, m, n, n);
                    auto ds = mat(DS, m, n, n);
                    block_product(false, true, m, n, dh, T(1), qs_p, dh, kb, k.ld, T(0), P, n);
                    for (index_t r = 0; r < m; ++r) p.row(r) = (p.row(r).array() - lse_h[i0 + r]).exp();
                    block_product(false, true, m, n, dh, T(1), gb, dout.ld, vb, v.ld, T(0), DS, n);  // dO Vᵀ: w.r.t. the dropped P
                    if (drop.active()) {
                        auto mk = mat(MK, m, n, n);
                        auto pd = mat(PD, m, n, n);
                        for (index_t r = 0; r < m; ++r)
                            dropout_factors(rng, threshold, keep_scale, attention_element_index(d, b, h, i0 + r, j0), n, MK + r * n);
                        pd = p.cwiseProduct(mk);
                        block_product(true, false, n, dh, m, T(1), PD, n, gb, dout.ld, T(1), dv_acc_p, dh);
                        ds = ds.cwiseProduct(mk);
                    } else {
                        block_product(true, false, n, dh, m, T(1), P, n, gb, dout.ld, T(1), dv_acc_p, dh);
                    }
                    // dS = P ∘ (dP − D_i + c_i)
                    for (index_t r = 0; r < m; ++r)
                        ds.row(r) = p.row(r).array() * (ds.row(r).array() - dc[hh * d.tq + i0 + r]);
                    block_product(false, false, m, dh, n, scale, DS, n, kb, k.ld, T(1), head_rows(dq, d.tq, b, i0, h, dh), dq.ld);
                    block_product(true, false, n, dh, m, T(1), DS, n, qs_p, dh, T(1), dk_acc_p, dh);  // qs already carries the scale
                }
            }
            block(dk, d.tk, b, j0, g, n, dh) = dk_acc;
            block(dv, d.tk, b, j0, g, n, dh) = dv_acc;
        }
        if (hook) graph_hook_edges(d, q, k, dq, dk, *hook, b, g);
    }, min_parallel_tasks(d, d.batch * d.hkv));
}

/// Scores s_ij = scale·q_i·k_j at the edges of `term` (its head), per batch item: out [batch, nnz].
/// With `lse` (the forward's [batch, hq, tq]) it writes log P_ij = s_ij − LSE_i instead.
template <Scalar T>
static void attention_edge_scores(const AttentionDims& d, HeadsRef<const T> q, HeadsRef<const T> k, const GraphTerm<T>& term,
                           T* out, const T* lse = nullptr) {
    using namespace cpu_detail::attention_detail;
    check_dims(d);
    check_operand("Q", q, d.hq, d, d.tq);
    check_operand("K", k, d.hkv, d, d.tk);
    check_term(term, d);
    const index_t nnz = term.nnz(), dh = d.dh, h = term.head, g = term.head / d.group();
    const T scale = static_cast<T>(d.softmax_scale());
    constexpr index_t rows_per_task = 256;
    const index_t nrb = (d.tq + rows_per_task - 1) / rows_per_task;
    cpu_detail::parallel_for(d.batch * nrb, [&](index_t task) {
        const index_t b = task / nrb, r0 = (task % nrb) * rows_per_task, r1 = std::min(d.tq, r0 + rows_per_task);
        for (index_t i = r0; i < r1; ++i) {
            const T* qi = q.data + (b * d.tq + i) * q.ld + h * dh;
            const T shift = lse ? lse[(b * d.hq + h) * d.tq + i] : T(0);
            for (index_t e = term.row_ptr[i]; e < term.row_ptr[i + 1]; ++e) {
                const T* kj = k.data + (b * d.tk + term.col[e]) * k.ld + g * dh;
                T s = 0;
                for (index_t c = 0; c < dh; ++c) s += (scale * qi[c]) * kj[c];  // scaled like the kernels' scores
                out[b * nnz + e] = s - shift;
            }
        }
    }, nnz * dh * d.batch < 262144 ? d.batch * nrb + 1 : 2);
}


    template <Scalar T>
    static double graph_kl_edges(index_t tq, const index_t* row_ptr, const T* target, const T* logp, T weight, double log_eps, T* w_out,
                                 T* coef) {
        double loss = 0.0;
        const T shift = static_cast<T>(log_eps);
        for (index_t i = 0; i < tq; ++i) {
            T c = T(0);
            for (index_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) {
                const T a = target[e];
                if (a == T(0)) {  // xlogy: 0·log 0 = 0, and no gradient
                    w_out[e] = T(0);
                    continue;
                }
                const T alpha = std::exp(logp[e]);
                const T shifted = alpha + shift;
                loss += static_cast<double>(a * (std::log(a) - std::log(shifted)));
                const T we = weight * (a * alpha / shifted);
                w_out[e] = we;
                c += we;
            }
            if (row_ptr[i + 1] > row_ptr[i]) coef[i] += c;
        }
        return loss;
    }
};

} // namespace celltx::cpu_kernels
