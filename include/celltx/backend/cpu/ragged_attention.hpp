#pragma once
// Ragged cross-attention on the CPU (the CGT's Type I transform): every computed row attends to its
// sample's few keys (usually 2), one row at a time, with scores in a small local buffer; nothing of
// size rows × keys is kept. Tasks are samples (forward) or (sample, head) pairs (backward), each
// owning its rows' outputs, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
#include "celltx/backend/cpu/elementwise.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cpu_detail {

/// parallel_for's threshold for `tasks` tasks doing `work` multiply-adds in all: below about 2^17 a
/// parallel region costs more than it saves (and far more on a loaded machine).
inline index_t ragged_min_parallel(index_t tasks, double work) { return work < 131072.0 ? tasks + 1 : 2; }

/// Multiply-adds of the attention over every row.
inline double ragged_attention_work(const ops::RaggedCrossAttention& a) {
    double w = 0.0;
    for (index_t b = 0; b < a.rows.batch; ++b)
        w += static_cast<double>(a.rows.row_offsets[b + 1] - a.rows.row_offsets[b]) *
             static_cast<double>(a.key_offsets[b + 1] - a.key_offsets[b]);
    return w * static_cast<double>(a.d_model());
}

/// One query head's score against one key head: Σ_c (scale·q_c)·k_c, in this order in every scalar
/// kernel (forward and backward, ragged and dense), so that the backward's recomputed P is the
/// forward's. The dense block's vector path has its own (dense_head_score), shared the same way.
template <class T>
inline T key_score(const T* qh, const T* kh, index_t dh, T scale) {
    T acc = 0;
    for (index_t c = 0; c < dh; ++c) acc += (scale * qh[c]) * kh[c];
    return acc;
}

/// Softmax of one query head over tk keys (key j's head at kh + j·stride): e[j] = exp(s_j − max)
/// and l = Σ e; returns the LSE.
template <class T>
inline T few_key_softmax(const T* qh, const T* kh, index_t stride, index_t tk, index_t dh, T scale, T* e, T& l) {
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < tk; ++j) mx = std::max(mx, e[j] = key_score(qh, kh + j * stride, dh, scale));
    l = 0;
    for (index_t j = 0; j < tk; ++j) l += (e[j] = std::exp(e[j] - mx));
    return math::online_softmax_lse(mx, l);
}

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's ragged cross-attention (see backend/ops.hpp for each contract).
struct ragged_attention {
    template <Scalar T>
    static void ragged_cross_attention_forward(const ops::RaggedCrossAttention& a, const T* q, const T* kv, T* o, T* lse) {
        const index_t H = a.heads, dh = a.dh, d = H * dh;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - a.dropout.p));
        const bool drop = a.dropout.active();
        cpu_detail::parallel_for(a.rows.batch, [&](index_t b) {
            const index_t k0 = a.key_offsets[b], tk = a.key_offsets[b + 1] - k0;
            cpu_detail::KeepMask<T> mask{a.dropout.sample_rng(b), a.dropout.p, keep};
            std::vector<T> s(static_cast<std::size_t>(tk));
            for (index_t r = a.rows.row_offsets[b]; r < a.rows.row_offsets[b + 1]; ++r) {
                T* orow = o + r * d;
                if (tk == 0) {
                    std::fill_n(orow, d, T(0));
                    std::fill_n(lse + r * H, H, -std::numeric_limits<T>::infinity());
                    continue;
                }
                const std::uint64_t base = static_cast<std::uint64_t>(a.rows.row_gene[r] * H * tk);
                for (index_t h = 0; h < H; ++h) {
                    T l;
                    lse[r * H + h] = cpu_detail::few_key_softmax(q + r * d + h * dh, kv + k0 * 2 * d + h * dh, 2 * d, tk, dh, scale, s.data(), l);
                    T* oh = orow + h * dh;
                    std::fill_n(oh, dh, T(0));
                    for (index_t j = 0; j < tk; ++j) {
                        T pj = s[static_cast<std::size_t>(j)] / l;
                        if (drop) pj *= mask(base + static_cast<std::uint64_t>(h * tk + j));
                        const T* v = kv + (k0 + j) * 2 * d + d + h * dh;
                        for (index_t c = 0; c < dh; ++c) oh[c] += pj * v[c];
                    }
                }
            }
        }, cpu_detail::ragged_min_parallel(a.rows.batch, cpu_detail::ragged_attention_work(a)));
    }

    template <Scalar T>
    static void ragged_cross_attention_backward(const ops::RaggedCrossAttention& a, const T* q, const T* kv, const T* lse, const T* dout,
                                                T* dq, T* dkv) {
        const index_t H = a.heads, dh = a.dh, d = H * dh;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - a.dropout.p));
        const bool drop = a.dropout.active();
        std::fill_n(dq, a.rows.rows * d, T(0));
        std::fill_n(dkv, a.key_offsets[a.rows.batch] * 2 * d, T(0));
        cpu_detail::parallel_for(a.rows.batch * H, [&](index_t task) {
            const index_t b = task / H, h = task % H;
            const index_t k0 = a.key_offsets[b], tk = a.key_offsets[b + 1] - k0;
            if (tk == 0) return;
            cpu_detail::KeepMask<T> mask{a.dropout.sample_rng(b), a.dropout.p, keep};
            std::vector<T> p(static_cast<std::size_t>(tk)), dp(static_cast<std::size_t>(tk));
            for (index_t r = a.rows.row_offsets[b]; r < a.rows.row_offsets[b + 1]; ++r) {
                const std::uint64_t base = static_cast<std::uint64_t>(a.rows.row_gene[r] * H * tk + h * tk);
                const T* qh = q + r * d + h * dh;
                const T* g = dout + r * d + h * dh;
                const T l = lse[r * H + h];
                T D = 0;  // Σ_j P_j·dP_j
                for (index_t j = 0; j < tk; ++j) {
                    const T* k = kv + (k0 + j) * 2 * d + h * dh;
                    const T* v = k + d;
                    T gv = 0;
                    for (index_t c = 0; c < dh; ++c) gv += g[c] * v[c];
                    const T pj = std::exp(cpu_detail::key_score(qh, k, dh, scale) - l);
                    const T m = drop ? mask(base + static_cast<std::uint64_t>(j)) : T(1);
                    T* dv = dkv + (k0 + j) * 2 * d + d + h * dh;
                    for (index_t c = 0; c < dh; ++c) dv[c] += pj * m * g[c];
                    p[static_cast<std::size_t>(j)] = pj;
                    dp[static_cast<std::size_t>(j)] = m * gv;
                    D += pj * dp[static_cast<std::size_t>(j)];
                }
                T* dqr = dq + r * d + h * dh;
                for (index_t j = 0; j < tk; ++j) {
                    const T ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - D) * scale;
                    const T* k = kv + (k0 + j) * 2 * d + h * dh;
                    T* dk = dkv + (k0 + j) * 2 * d + h * dh;
                    for (index_t c = 0; c < dh; ++c) {
                        dqr[c] += ds * k[c];
                        dk[c] += ds * qh[c];
                    }
                }
            }
        }, cpu_detail::ragged_min_parallel(a.rows.batch * H, 2.0 * cpu_detail::ragged_attention_work(a)));
    }
};

} // namespace celltx::cpu_kernels
