#pragma once
// The attention at head width 8 in float on AVX2 / AVX-512 CPUs (the CGT's 8 heads of a 64-wide
// model): a GEMM-shaped block product of width 8 wastes most of the machine, so these kernels keep
// a vector of scores in a register (W queries against one key, or one query against W keys), 8 FMAs
// per score vector, in base 2 (the queries carry log2 e, so the exponential is vexp2_softmax, whose
// range reduction is exact; the backward's −LSE and −(D − c) enter as FMA addends). Keys and values
// are packed once per call, transposed in tiles of 16 keys, per (batch item, kv head).
//  - forward: tasks are (batch item, head, 64 query rows); W rows in vector lanes sweep the keys,
//    16 keys per step (independent score chains), each key's K and V entries broadcast; the online
//    softmax keeps per-lane sums and a per-lane reference maximum, moved only when a score passes
//    it by 2^8;
//  - backward, from the forward's LSE, in one sweep of the scores: tasks (batch item, kv head, range
//    of keys) loop over tiles of 64 keys × 64 queries of the group's heads, four queries per step; a
//    tile's dS goes through L1 once, giving dK, dV (kept in registers) and each query's part of dQ
//    (per range, summed over the ranges in order afterwards).
// Each sum runs in a fixed order, so results do not depend on the thread count. The graph hook's
// dense part enters through D_i − c_i; its sparse part is the generic kernel's edge pass.
// Dropout draws the generic kernel's masks (the same bits, CUDA's too) where they are used: the
// forward evaluates Philox with a counter per lane (one row each), 4 keys per evaluation; the
// backward draws each query row's 64 keys of a tile in lanes into a tile of factors.
// Anything else (double, other widths, other CPUs, empty operands) takes the generic path.
#include <algorithm>
#include <cmath>
#include <limits>
#include "celltx/backend/attention_checks.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/cpu/simd.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail::small_head {

using ops::AttentionDims;
using ops::AttentionDropout;
using ops::HeadsRef;

inline constexpr index_t rows_per_task = 64;  // query rows per forward task and per backward tile
inline constexpr index_t keys_per_task = 64;  // keys per backward tile

/// Whether the head-width-8 kernels take this call.
inline bool applies(const AttentionDims& d) {
    return CELLTX_SIMD && simd_level() != SimdLevel::none && d.dh == 8 && d.tq > 0 && d.tk > 0;
}

/// The kernels' form of a dropout (its Philox stream, integer threshold, float factor).
inline AttentionDropout8 dropout_of(const AttentionDropout& drop) {
    return {drop.rng().philox_stream(), ops::keep_threshold(drop.p), static_cast<float>(1.0 / (1.0 - drop.p))};
}

inline index_t padded_keys(index_t tk) { return (tk + 15) / 16 * 16; }

/// K and V of every (batch item, kv head) in AttentionPack8's tiles of 16 keys, padded with zeros:
/// 16·tkpad floats each.
inline Tensor<float> pack_keys(const AttentionDims& d, HeadsRef<const float> k, HeadsRef<const float> v) {
    const index_t tkpad = padded_keys(d.tk), per = 16 * tkpad;
    Tensor<float> pack = Tensor<float>::uninitialized(Shape{d.batch * d.hkv * per});
    parallel_for(d.batch * d.hkv, [&](index_t task) {
        const index_t b = task / d.hkv, g = task % d.hkv;
        float* tiles = pack.data() + task * per;
        for (index_t j = 0; j < tkpad; ++j) {
            const bool key = j < d.tk;
            const float* kj = k.data + (b * d.tk + j) * k.ld + g * 8;
            const float* vj = v.data + (b * d.tk + j) * v.ld + g * 8;
            float* kt = tiles + (j >> 4) * 256 + (j & 15);
            for (index_t e = 0; e < 8; ++e) {
                kt[e * 16] = key ? kj[e] : 0.0f;
                kt[128 + e * 16] = key ? vj[e] : 0.0f;
            }
        }
    }, d.batch * d.hkv * d.tk < 4096 ? d.batch * d.hkv + 1 : 2);
    return pack;
}

inline AttentionPack8 pack_of(const Tensor<float>& pack, const AttentionDims& d, index_t b, index_t g) {
    const index_t tkpad = padded_keys(d.tk);
    return {pack.data() + (b * d.hkv + g) * 16 * tkpad, d.tk, tkpad};
}

inline void forward_rows(const AttentionPack8& kv, const float* q, index_t ldq, index_t rows, float scale, float* o, index_t ldo, float* lse,
                         const AttentionDropout8* drop, std::uint64_t row0) {
#if CELLTX_SIMD
    run_simd(simd_avx512::attn8_forward_rows, simd_avx2::attn8_forward_rows, kv, q, ldq, rows, scale, o, ldo, lse, drop, row0);
#endif
}

inline void backward_tile(const AttentionPack8& kv, index_t j0, index_t nkeys, const float* krows, index_t ldk, const float* qs,
                          const float* gs, const float* neg_lse2, const float* neg_dc, index_t i0, index_t i1, float* dkt, float* dvt,
                          float* dqp, float* ds_tile, const AttentionDropout8* drop, std::uint64_t first, float* mask_tile) {
#if CELLTX_SIMD
    run_simd(simd_avx512::attn8_backward_tile, simd_avx2::attn8_backward_tile, kv, j0, nkeys, krows, ldk, qs, gs, neg_lse2, neg_dc, i0,
             i1, dkt, dvt, dqp, ds_tile, drop, first, mask_tile);
#endif
}

/// Keys per dK/dV task of the backward: at least 1024 and at most 8 ranges per (batch item, kv head),
/// so that the per-range partial sums of dQ take at most 8× dQ's memory. A function of the shape
/// alone: the sums' order does not depend on the thread count.
inline index_t keys_per_range(index_t tk) {
    const index_t per = std::max<index_t>(1024, (tk + 7) / 8);
    return (per + keys_per_task - 1) / keys_per_task * keys_per_task;
}

/// O and LSE (applies() must hold).
inline void forward(const AttentionDims& d, HeadsRef<const float> q, HeadsRef<const float> k, HeadsRef<const float> v, HeadsRef<float> o,
                    float* lse, const AttentionDropout& dropout) {
    const Tensor<float> pack = pack_keys(d, k, v);
    const AttentionDropout8 drop = dropout_of(dropout);
    const AttentionDropout8* dp = dropout.active() ? &drop : nullptr;
    const float scale = static_cast<float>(d.softmax_scale());
    const index_t nqb = (d.tq + rows_per_task - 1) / rows_per_task, group = d.group();
    parallel_for(d.batch * d.hq * nqb, [&](index_t task) {
        const index_t b = task / (d.hq * nqb), h = (task / nqb) % d.hq, i0 = (task % nqb) * rows_per_task;
        const index_t rows = std::min(rows_per_task, d.tq - i0);
        forward_rows(pack_of(pack, d, b, h / group), q.data + (b * d.tq + i0) * q.ld + h * 8, q.ld, rows, scale,
                     o.data + (b * d.tq + i0) * o.ld + h * 8, o.ld, lse + (b * d.hq + h) * d.tq + i0, dp,
                     ops::attention_element_index(d, b, h, i0, 0));
    });
}

/// dQ, dK, dV (assigned; applies() must hold); coef: the graph hook's c_i [batch, hq, tq] or null;
/// dropout: the forward's.
/// The hook's sparse part is left to the caller.
inline void backward(const AttentionDims& d, HeadsRef<const float> q, HeadsRef<const float> k, HeadsRef<const float> v,
                     HeadsRef<const float> o, const float* lse, HeadsRef<const float> dout, HeadsRef<float> dq, HeadsRef<float> dk,
                     HeadsRef<float> dv, const float* coef, const AttentionDropout& dropout) {
    const Tensor<float> pack = pack_keys(d, k, v);
    const AttentionDropout8 drop = dropout_of(dropout);
    const AttentionDropout8* dp = dropout.active() ? &drop : nullptr;
    const float scale = static_cast<float>(d.softmax_scale());
    const index_t group = d.group();
    // Per (batch item, head): the queries times scale·log2 e and dO packed [tq][8], −(D_i − c_i) [tq] and
    // −LSE in base 2 [tq] (the kernels' scores are in base 2; both enter as an FMA's addend).
    const index_t per_head = 18 * d.tq;
    constexpr float log2e = 1.44269504088896341f;
    Tensor<float> qpack = Tensor<float>::uninitialized(Shape{d.batch * d.hq * per_head});
    parallel_for(d.batch * d.hq, [&](index_t task) {
        const index_t b = task / d.hq, h = task % d.hq;
        float* qs = qpack.data() + task * per_head;
        float* gs = qs + 8 * d.tq;
        float* dc = gs + 8 * d.tq;
        float* lse2 = dc + d.tq;
        for (index_t i = 0; i < d.tq; ++i) {
            lse2[i] = -(lse[task * d.tq + i] * log2e);
            const float* qi = q.data + (b * d.tq + i) * q.ld + h * 8;
            const float* gi = dout.data + (b * d.tq + i) * dout.ld + h * 8;
            const float* oi = o.data + (b * d.tq + i) * o.ld + h * 8;
            float s = 0.0f;
            for (index_t e = 0; e < 8; ++e) {
                qs[i * 8 + e] = (scale * log2e) * qi[e];
                gs[i * 8 + e] = gi[e];
                s += oi[e] * gi[e];
            }
            dc[i] = -(coef ? s - coef[task * d.tq + i] : s);
        }
    }, d.batch * d.hq * d.tq < 4096 ? d.batch * d.hq + 1 : 2);

    // One sweep of the scores gives dQ, dK and dV. A task owns a range of keys of one (batch item,
    // kv head): it assigns their dK, dV and adds each query's Σ_j dS_ij K_j over the range into the
    // range's own partial dQ; a second pass sums the ranges in order.
    const index_t per_range = keys_per_range(d.tk), nr = (d.tk + per_range - 1) / per_range;
    const index_t dq_per_head = 8 * d.tq;
    Tensor<float> dq_partial(Shape{d.batch * d.hq * nr * dq_per_head});
    parallel_for(d.batch * d.hkv * nr, [&](index_t task) {
        const index_t b = task / (d.hkv * nr), g = (task / nr) % d.hkv, r = task % nr;
        const index_t k0 = r * per_range, k1 = std::min(d.tk, k0 + per_range);
        const AttentionPack8 kv = pack_of(pack, d, b, g);
        alignas(64) float dkt[8 * 64], dvt[8 * 64], ds_tile[64 * 64], mask_tile[64 * 64];
        for (index_t j0 = k0; j0 < k1; j0 += keys_per_task) {
            const index_t n = std::min(keys_per_task, k1 - j0);
            std::fill(dkt, dkt + 8 * 64, 0.0f);
            std::fill(dvt, dvt + 8 * 64, 0.0f);
            const float* krows = k.data + (b * d.tk + j0) * k.ld + g * 8;
            for (index_t hh = 0; hh < group; ++hh) {
                const index_t h = g * group + hh;
                const float* qs = qpack.data() + (b * d.hq + h) * per_head;
                const float *gs = qs + 8 * d.tq, *neg_dc = gs + 8 * d.tq, *neg_lse2 = neg_dc + d.tq;  // qpack's layout
                float* dqp = dq_partial.data() + ((b * d.hq + h) * nr + r) * dq_per_head;
                for (index_t i0 = 0; i0 < d.tq; i0 += rows_per_task)
                    backward_tile(kv, j0, n, krows, k.ld, qs, gs, neg_lse2, neg_dc, i0, std::min(d.tq, i0 + rows_per_task), dkt, dvt, dqp,
                                  ds_tile, dp, ops::attention_element_index(d, b, h, i0, j0), mask_tile);
            }
            for (index_t c = 0; c < n; ++c) {
                float* dkj = dk.data + (b * d.tk + j0 + c) * dk.ld + g * 8;
                float* dvj = dv.data + (b * d.tk + j0 + c) * dv.ld + g * 8;
                // dK accumulated against the queries times log2 e: back to natural units.
                for (index_t e = 0; e < 8; ++e) dkj[e] = dkt[e * 64 + c] * 0.693147180559945309f, dvj[e] = dvt[e * 64 + c];
            }
        }
    });
    parallel_for(d.batch * d.hq, [&](index_t task) {
        const index_t b = task / d.hq, h = task % d.hq;
        const float* part = dq_partial.data() + task * nr * dq_per_head;
        for (index_t i = 0; i < d.tq; ++i) {
            float* dqi = dq.data + (b * d.tq + i) * dq.ld + h * 8;
            for (index_t e = 0; e < 8; ++e) {
                float s = part[i * 8 + e];
                for (index_t r = 1; r < nr; ++r) s += part[r * dq_per_head + i * 8 + e];
                dqi[e] = scale * s;
            }
        }
    });
}

} // namespace celltx::cpu_detail::small_head
