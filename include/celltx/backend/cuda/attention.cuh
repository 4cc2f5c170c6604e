#pragma once
// Memory-efficient multi-head attention on the GPU (FlashAttention-2's online softmax and its
// recompute-from-LSE backward), laid out for the narrow heads of the CGT (head width 8):
//  - A "row" is one (batch item, head, token) of the operand a kernel owns: query rows in the
//    forward and the dQ pass, key rows in the dK/dV pass. Each row belongs to a group of
//    `tpr` = 1..32 lanes of one warp, each lane holding 8 of the head's dimensions in registers
//    (tpr = 1 for widths up to 8: one thread owns a whole query row, its output accumulator and its
//    running softmax). Head widths up to 256; a width that is not a multiple of 8 is zero-padded.
//  - A block of 128 threads owns `hb` heads × `rb` rows (hb·rb·tpr = 128): several heads per block,
//    so a short sequence still fills the block. It streams the other operand through shared memory
//    in tiles (keys and values of its heads' kv heads; or queries, dO, LSE and D of its kv heads'
//    query heads), and every row scores 8 tile rows at a time in registers: one online-softmax
//    rescale (backend/math/softmax.hpp) per 8 scores.
//  - Dropout draws the mask of element (b, h, i, j) from Philox at counter
//    ops::attention_element_index (the CPU's rule), so the CPU and the GPU drop the same elements.
//  - Backward without atomics: D_i − c_i = rowsum(dO ∘ O) − c_i first, then one pass over query rows
//    (dQ, streaming keys) and one over key rows (dK and dV, streaming queries); each output element
//    is owned by one thread and summed in a fixed order, so the results are deterministic. It
//    recomputes the scores twice (once per pass) instead of adding dQ with atomics.
//  - The graph hook: c_i·P_ij joins the score gradient through D_i − c_i; the sparse −W_ij part runs
//    after, edge by edge in the CPU's order (the dK side through a stable sort of the edges by key).
// Scores are computed in FP32 (or FP64) on the CUDA cores; no tensor cores yet (docs/cuda.md).
#include <cstdint>
#include <limits>
#include "celltx/backend/attention_checks.hpp"
#include "celltx/backend/cuda/indexing.cuh"
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cuda_detail::attention_gpu {

inline constexpr int threads = 128;
inline constexpr int lane_dims = 8;      ///< head dimensions per lane
inline constexpr int score_chunk = 8;    ///< scores per online-softmax step, in registers
inline constexpr std::size_t tile_bytes = 40 * 1024;  ///< shared memory per block (below the 48 KB default)

/// The block layout of one launch (host-side choice, see the header comment).
struct Layout {
    int tpr = 1;   ///< lanes per row (power of two)
    int hb = 1;    ///< heads per block (divides the row operand's head count)
    int rb = 128;  ///< rows per block
    int tile = 1;  ///< rows of the streamed operand per tile
};

/// Lanes per row for head width dh (8 dimensions per lane); dh <= 256.
inline int lanes_per_row(index_t dh) {
    require(dh <= 32 * lane_dims, "CUDA attention: head width {} exceeds the supported 256", dh);
    int tpr = 1;
    while (tpr * lane_dims < dh) tpr *= 2;
    return tpr;
}

/// hb = the largest divisor of `heads` that is at most min(max_hb, 8, groups); rb = groups / hb.
inline Layout make_layout(index_t dh, index_t heads, index_t max_hb = 8) {
    Layout l;
    l.tpr = lanes_per_row(dh);
    const int groups = threads / l.tpr;
    const int cap = static_cast<int>(std::max<index_t>(1, std::min<index_t>({max_hb, 8, groups})));
    for (int c = cap; c >= 1; --c)
        if (heads % c == 0) {
            l.hb = c;
            break;
        }
    l.rb = groups / l.hb;
    return l;
}

/// The arguments of every attention kernel (passed by value).
template <class T>
struct Args {
    index_t batch, tq, tk, hq, hkv, dh, group;
    T scale;
    const T* q;
    index_t ldq;
    const T* k;
    index_t ldk;
    const T* v;
    index_t ldv;
    const T* o;
    index_t ldo;
    const T* dout;
    index_t ldg;
    const T* lse;
    const T* dc;  ///< [batch, hq, tq]: D_i − c_i (backward)
    T* out;       ///< O (forward), dQ or dK
    index_t ld_out;
    T* out2;      ///< dV
    index_t ld_out2;
    T* lse_out;
    bool drop;
    PhiloxStream rng;
    std::uint32_t threshold;
    T keep_scale;
    Layout layout;
};

template <class T>
__device__ inline T neg_inf() {
    return -std::numeric_limits<T>::infinity();
}

/// The keep factors of elements first .. first+7 (consecutive counters), from the 2-3 Philox blocks
/// that hold them.
template <class T>
__device__ inline void dropout_chunk(const PhiloxStream& rng, std::uint64_t first, std::uint32_t threshold, T keep, T (&f)[score_chunk]) {
    std::uint32_t bits[12];
    const std::uint64_t b0 = first >> 2;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        std::uint32_t w[4];
        rng.block(b0 + static_cast<std::uint64_t>(k), w);
#pragma unroll
        for (int x = 0; x < 4; ++x) bits[4 * k + x] = w[x];
    }
    const int off = static_cast<int>(first & 3);
#pragma unroll
    for (int u = 0; u < score_chunk; ++u) f[u] = math::dropout_factor(bits[off + u], threshold, keep);
}

/// This thread's row: head and token of the row operand, its lane and whether the row exists.
struct RowOf {
    index_t head, row;
    int lane;
    bool valid;
};
__device__ inline RowOf row_of(const Layout& l, index_t rows) {
    const int rg = threadIdx.x / l.tpr;
    RowOf r;
    r.lane = threadIdx.x % l.tpr;
    r.head = static_cast<index_t>(blockIdx.y) * l.hb + rg % l.hb;
    const index_t raw = static_cast<index_t>(blockIdx.x) * l.rb + rg / l.hb;
    r.valid = raw < rows;
    r.row = r.valid ? raw : rows - 1;  // an idle row computes on the last one (the lanes of a warp shuffle together) and writes nothing
    return r;
}

/// Loads this lane's 8 dimensions of a heads operand row (zero beyond dh), times `mul`.
template <class T>
__device__ inline void load_lane(const T* row, index_t dh, int lane, T mul, T (&x)[lane_dims]) {
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) {
        const index_t c = static_cast<index_t>(lane) * lane_dims + e;
        x[e] = c < dh ? mul * row[c] : T(0);
    }
}

/// Σ_e a[e]·b[e] over this lane's dimensions, then over the row's lanes.
template <class T>
__device__ inline T row_dot(const T (&a)[lane_dims], const T* b, int tpr) {
    T s = T(0);
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) s += a[e] * b[e];
    return group_sum(s, tpr);
}

/// Copies rows [r0, r0+n) of `heads` consecutive heads (from head h0) of a heads operand into a
/// shared tile [n][heads][dhp], zero-padded beyond dh.
template <class T>
__device__ inline void load_tile(T* tile, const T* src, index_t ld, index_t tokens, index_t b, index_t r0, int n, index_t h0, int heads, index_t dh,
                                 int dhp) {
    const int total = n * heads * dhp;
    for (int x = threadIdx.x; x < total; x += blockDim.x) {
        const int e = x % dhp, hh = (x / dhp) % heads, r = x / (dhp * heads);
        tile[x] = e < dh ? src[(b * tokens + r0 + r) * ld + (h0 + hh) * dh + e] : T(0);
    }
}

// ---- forward -------------------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(threads) forward_kernel(Args<T> a) {
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const Layout& l = a.layout;
    const int dhp = l.tpr * lane_dims;
    const index_t b = blockIdx.z;
    const RowOf me = row_of(l, a.tq);
    const index_t h0 = static_cast<index_t>(blockIdx.y) * l.hb;
    const index_t kv0 = h0 / a.group;
    const int nkv = static_cast<int>((h0 + l.hb - 1) / a.group - kv0 + 1), slot = static_cast<int>(me.head / a.group - kv0);
    T* ks = reinterpret_cast<T*>(shared_raw);
    T* vs = ks + static_cast<std::size_t>(l.tile) * nkv * dhp;

    T q[lane_dims], acc[lane_dims];
    load_lane(a.q + (b * a.tq + me.row) * a.ldq + me.head * a.dh, a.dh, me.lane, a.scale, q);  // scaled once, as on the CPU
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) acc[e] = T(0);
    T mx = neg_inf<T>(), sum = T(0);
    const std::uint64_t row_counter = static_cast<std::uint64_t>(((b * a.hq + me.head) * a.tq + me.row) * a.tk);

    for (index_t j0 = 0; j0 < a.tk; j0 += l.tile) {
        const int n = static_cast<int>(imin(l.tile, a.tk - j0));
        __syncthreads();
        load_tile(ks, a.k, a.ldk, a.tk, b, j0, n, kv0, nkv, a.dh, dhp);
        load_tile(vs, a.v, a.ldv, a.tk, b, j0, n, kv0, nkv, a.dh, dhp);
        __syncthreads();
        for (int c0 = 0; c0 < n; c0 += score_chunk) {
            T s[score_chunk];
            T cmax = neg_inf<T>();
#pragma unroll
            for (int u = 0; u < score_chunk; ++u) {
                const int r = c0 + u < n ? c0 + u : n - 1;
                const T dot = row_dot(q, ks + (static_cast<std::size_t>(r) * nkv + slot) * dhp + me.lane * lane_dims, l.tpr);
                s[u] = c0 + u < n ? dot : neg_inf<T>();
                cmax = s[u] > cmax ? s[u] : cmax;
            }
            const T corr = math::online_softmax_rescale(mx, sum, cmax);
            T f[score_chunk];
            if (a.drop) dropout_chunk(a.rng, row_counter + static_cast<std::uint64_t>(j0 + c0), a.threshold, a.keep_scale, f);
#pragma unroll
            for (int e = 0; e < lane_dims; ++e) acc[e] *= corr;
#pragma unroll
            for (int u = 0; u < score_chunk; ++u) {
                if (c0 + u >= n) break;
                const T p = std::exp(s[u] - mx);
                sum += p;  // the normaliser uses the probabilities before dropout
                const T pd = a.drop ? p * f[u] : p;
                const T* vr = vs + (static_cast<std::size_t>(c0 + u) * nkv + slot) * dhp + me.lane * lane_dims;
#pragma unroll
                for (int e = 0; e < lane_dims; ++e) acc[e] += pd * vr[e];
            }
        }
    }
    if (!me.valid) return;
    T* orow = a.out + (b * a.tq + me.row) * a.ld_out + me.head * a.dh;
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) {
        const index_t c = static_cast<index_t>(me.lane) * lane_dims + e;
        if (c < a.dh) orow[c] = a.tk == 0 ? T(0) : acc[e] / sum;
    }
    if (me.lane == 0) a.lse_out[(b * a.hq + me.head) * a.tq + me.row] = a.tk == 0 ? neg_inf<T>() : math::online_softmax_lse(mx, sum);
}

// ---- backward ------------------------------------------------------------------------------------

/// dc[b, h, i] = Σ_e O·dO − c (the CPU's D_i − c_i), one thread per query row.
template <class T>
__global__ void delta_kernel(Args<T> a, const T* coef, T* dc) {
    const index_t rows = a.batch * a.hq * a.tq;
    for (index_t x = thread_index(); x < rows; x += grid_stride()) {
        const index_t i = x % a.tq, h = (x / a.tq) % a.hq, b = x / (a.tq * a.hq);
        const T* orow = a.o + (b * a.tq + i) * a.ldo + h * a.dh;
        const T* grow = a.dout + (b * a.tq + i) * a.ldg + h * a.dh;
        T s = T(0);
        for (index_t e = 0; e < a.dh; ++e) s += orow[e] * grow[e];
        dc[x] = coef ? s - coef[x] : s;
    }
}

/// dQ (assigned): query rows own their dQ; keys and values stream through shared memory.
template <class T>
__global__ void __launch_bounds__(threads) dq_kernel(Args<T> a) {
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const Layout& l = a.layout;
    const int dhp = l.tpr * lane_dims;
    const index_t b = blockIdx.z;
    const RowOf me = row_of(l, a.tq);
    const index_t h0 = static_cast<index_t>(blockIdx.y) * l.hb;
    const index_t kv0 = h0 / a.group;
    const int nkv = static_cast<int>((h0 + l.hb - 1) / a.group - kv0 + 1), slot = static_cast<int>(me.head / a.group - kv0);
    T* ks = reinterpret_cast<T*>(shared_raw);
    T* vs = ks + static_cast<std::size_t>(l.tile) * nkv * dhp;

    T q[lane_dims], g[lane_dims], acc[lane_dims];
    const index_t qrow = b * a.tq + me.row;
    load_lane(a.q + qrow * a.ldq + me.head * a.dh, a.dh, me.lane, a.scale, q);
    load_lane(a.dout + qrow * a.ldg + me.head * a.dh, a.dh, me.lane, T(1), g);
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) acc[e] = T(0);
    const index_t stat = (b * a.hq + me.head) * a.tq + me.row;
    const T lse = a.lse[stat], dc = a.dc[stat];
    const std::uint64_t row_counter = static_cast<std::uint64_t>(stat * a.tk);

    for (index_t j0 = 0; j0 < a.tk; j0 += l.tile) {
        const int n = static_cast<int>(imin(l.tile, a.tk - j0));
        __syncthreads();
        load_tile(ks, a.k, a.ldk, a.tk, b, j0, n, kv0, nkv, a.dh, dhp);
        load_tile(vs, a.v, a.ldv, a.tk, b, j0, n, kv0, nkv, a.dh, dhp);
        __syncthreads();
        for (int c0 = 0; c0 < n; c0 += score_chunk) {
            T f[score_chunk];
            if (a.drop) dropout_chunk(a.rng, row_counter + static_cast<std::uint64_t>(j0 + c0), a.threshold, a.keep_scale, f);
#pragma unroll
            for (int u = 0; u < score_chunk; ++u) {
                const int r = c0 + u < n ? c0 + u : n - 1;
                const T* kr = ks + (static_cast<std::size_t>(r) * nkv + slot) * dhp + me.lane * lane_dims;
                const T* vr = vs + (static_cast<std::size_t>(r) * nkv + slot) * dhp + me.lane * lane_dims;
                const T s = row_dot(q, kr, l.tpr);
                const T dp = row_dot(g, vr, l.tpr);
                if (c0 + u >= n) continue;
                const T p = std::exp(s - lse);
                const T ds = p * ((a.drop ? dp * f[u] : dp) - dc);
#pragma unroll
                for (int e = 0; e < lane_dims; ++e) acc[e] += ds * kr[e];
            }
        }
    }
    if (!me.valid) return;
    T* out = a.out + qrow * a.ld_out + me.head * a.dh;
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) {
        const index_t c = static_cast<index_t>(me.lane) * lane_dims + e;
        if (c < a.dh) out[c] = a.scale * acc[e];
    }
}

/// dK and dV (assigned): key rows (of kv heads) own them; the queries, dO, LSE and D − c of their
/// query heads stream through shared memory.
template <class T>
__global__ void __launch_bounds__(threads) dkv_kernel(Args<T> a) {
    extern __shared__ __align__(16) unsigned char shared_raw[];
    const Layout& l = a.layout;
    const int dhp = l.tpr * lane_dims;
    const index_t b = blockIdx.z;
    const RowOf me = row_of(l, a.tk);  // me.head is a kv head, me.row a key
    const index_t g0 = static_cast<index_t>(blockIdx.y) * l.hb;
    const int nq = static_cast<int>(l.hb * a.group);  // query heads of the block's kv heads, from g0·group
    const index_t qh0 = g0 * a.group;
    T* qs = reinterpret_cast<T*>(shared_raw);
    T* gs = qs + static_cast<std::size_t>(l.tile) * nq * dhp;
    T* stats = gs + static_cast<std::size_t>(l.tile) * nq * dhp;  // [tile][nq][2]: LSE, D − c

    T k[lane_dims], v[lane_dims], dk[lane_dims], dv[lane_dims];
    const index_t krow = b * a.tk + me.row;
    load_lane(a.k + krow * a.ldk + me.head * a.dh, a.dh, me.lane, T(1), k);
    load_lane(a.v + krow * a.ldv + me.head * a.dh, a.dh, me.lane, T(1), v);
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) dk[e] = dv[e] = T(0);

    for (index_t i0 = 0; i0 < a.tq; i0 += l.tile) {
        const int n = static_cast<int>(imin(l.tile, a.tq - i0));
        __syncthreads();
        // queries (scaled, as in the forward) and dO
        for (int x = threadIdx.x; x < n * nq * dhp; x += blockDim.x) {
            const int e = x % dhp, hh = (x / dhp) % nq, r = x / (dhp * nq);
            const index_t row = b * a.tq + i0 + r, h = qh0 + hh;
            qs[x] = e < a.dh ? a.scale * a.q[row * a.ldq + h * a.dh + e] : T(0);
            gs[x] = e < a.dh ? a.dout[row * a.ldg + h * a.dh + e] : T(0);
        }
        for (int x = threadIdx.x; x < n * nq; x += blockDim.x) {
            const int hh = x % nq, r = x / nq;
            const index_t stat = (b * a.hq + qh0 + hh) * a.tq + i0 + r;
            stats[2 * x] = a.lse[stat];
            stats[2 * x + 1] = a.dc[stat];
        }
        __syncthreads();
        for (int hh = 0; hh < a.group; ++hh) {
            const index_t h = me.head * a.group + hh;
            const int slot = static_cast<int>(h - qh0);
            const std::uint64_t base = static_cast<std::uint64_t>(((b * a.hq + h) * a.tq + i0) * a.tk + me.row);
            for (int r = 0; r < n; ++r) {
                const T* qr = qs + (static_cast<std::size_t>(r) * nq + slot) * dhp + me.lane * lane_dims;
                const T* gr = gs + (static_cast<std::size_t>(r) * nq + slot) * dhp + me.lane * lane_dims;
                const T s = row_dot(k, qr, l.tpr);
                const T dp = row_dot(v, gr, l.tpr);
                const T p = std::exp(s - stats[2 * (r * nq + slot)]);
                const T m = a.drop ? math::dropout_factor(a.rng.element_bits(base + static_cast<std::uint64_t>(r) * a.tk), a.threshold, a.keep_scale)
                                   : T(1);
                const T pm = p * m;
                const T ds = p * (dp * m - stats[2 * (r * nq + slot) + 1]);
#pragma unroll
                for (int e = 0; e < lane_dims; ++e) {
                    dv[e] += pm * gr[e];
                    dk[e] += ds * qr[e];
                }
            }
        }
    }
    if (!me.valid) return;
    T* dkr = a.out + krow * a.ld_out + me.head * a.dh;
    T* dvr = a.out2 + krow * a.ld_out2 + me.head * a.dh;
#pragma unroll
    for (int e = 0; e < lane_dims; ++e) {
        const index_t c = static_cast<index_t>(me.lane) * lane_dims + e;
        if (c < a.dh) {
            dkr[c] = dk[e];
            dvr[c] = dv[e];
        }
    }
}

// ---- graph hook, edge scores, KL -----------------------------------------------------------------

/// The smallest (position·4 + kind) of a malformed graph term in *bad (kind 1: row_ptr[0] or
/// row_ptr[tq] wrong, 2: row_ptr decreases, 3: column out of range); untouched when valid.
template <class I>
__global__ void check_term_kernel(const I* row_ptr, const index_t* col, index_t tq, index_t nnz, index_t tk,
                                         unsigned long long* bad) {
    for (index_t x = thread_index(); x < tq + nnz; x += grid_stride()) {
        unsigned long long code = ~0ull;
        if (x == 0 && (row_ptr[0] != 0 || row_ptr[tq] != nnz)) code = 1;
        else if (x < tq && row_ptr[x] > row_ptr[x + 1]) code = static_cast<unsigned long long>(x) * 4 + 2;
        else if (x >= tq && (col[x - tq] < 0 || col[x - tq] >= tk)) code = static_cast<unsigned long long>(x - tq) * 4 + 3;
        if (code != ~0ull) atomicMin(bad, code);
    }
}

/// dq[b, i, head] −= Σ_e (scale·W_e)·k[b, col_e, g] over row i's edges, in edge order.
template <class T>
__global__ void hook_dq_kernel(Args<T> a, ops::GraphTerm<T> t, T* dq, index_t ldq) {
    const index_t g = t.head / a.group;
    for (index_t x = thread_index(); x < a.batch * a.tq * a.dh; x += grid_stride()) {
        const index_t c = x % a.dh, i = (x / a.dh) % a.tq, b = x / (a.dh * a.tq);
        T acc = dq[(b * a.tq + i) * ldq + t.head * a.dh + c];
        for (index_t e = t.row_ptr[i]; e < t.row_ptr[i + 1]; ++e) {
            const T w = a.scale * t.value[e];
            acc -= w * a.k[(b * a.tk + t.col[e]) * a.ldk + g * a.dh + c];
        }
        dq[(b * a.tq + i) * ldq + t.head * a.dh + c] = acc;
    }
}

/// dk[b, j, g] −= Σ_e (scale·W_e)·q[b, row_e, head] over the edges of key j (sorted by key, in edge order).
template <class T>
__global__ void hook_dk_kernel(Args<T> a, ops::GraphTerm<T> t, const index_t* sorted, const index_t* order, T* dk, index_t ldk) {
    const index_t g = t.head / a.group, nnz = t.nnz();
    for (index_t x = thread_index(); x < a.batch * nnz * a.dh; x += grid_stride()) {
        const index_t c = x % a.dh, p = (x / a.dh) % nnz, b = x / (a.dh * nnz), j = sorted[p];
        if (p > 0 && sorted[p - 1] == j) continue;
        T acc = dk[(b * a.tk + j) * ldk + g * a.dh + c];
        for (index_t r = p; r < nnz && sorted[r] == j; ++r) {
            const index_t e = order[r], i = segment_of(t.row_ptr.data(), a.tq, e);
            const T w = a.scale * t.value[e];
            acc -= w * a.q[(b * a.tq + i) * a.ldq + t.head * a.dh + c];
        }
        dk[(b * a.tk + j) * ldk + g * a.dh + c] = acc;
    }
}

/// out[b, e] = Σ_c (scale·q_c)·k_c at edge e (minus LSE_i when given).
template <class T>
__global__ void edge_scores_kernel(Args<T> a, ops::GraphTerm<T> t, T* out) {
    const index_t nnz = t.nnz(), g = t.head / a.group;
    for (index_t x = thread_index(); x < a.batch * nnz; x += grid_stride()) {
        const index_t e = x % nnz, b = x / nnz, i = segment_of(t.row_ptr.data(), a.tq, e);
        const T* qi = a.q + (b * a.tq + i) * a.ldq + t.head * a.dh;
        const T* kj = a.k + (b * a.tk + t.col[e]) * a.ldk + g * a.dh;
        T s = T(0);
        for (index_t c = 0; c < a.dh; ++c) s += (a.scale * qi[c]) * kj[c];
        out[x] = s - (a.lse ? a.lse[(b * a.hq + t.head) * a.tq + i] : T(0));
    }
}

/// The graph KL at the edges of each row (one thread per row); partial[block] = the block's loss.
template <class T>
__global__ void graph_kl_kernel(index_t tq, const index_t* row_ptr, const T* target, const T* logp, T weight, T shift, T* w_out, T* coef,
                                double* partial) {
    __shared__ double shared[32];
    double loss = 0.0;
    for (index_t i = thread_index(); i < tq; i += grid_stride()) {
        T c = T(0);
        for (index_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) {
            const T at = target[e];
            if (at == T(0)) {  // xlogy: 0·log 0 = 0, and no gradient
                w_out[e] = T(0);
                continue;
            }
            const T alpha = std::exp(logp[e]);
            const T shifted = alpha + shift;
            loss += static_cast<double>(at * (std::log(at) - std::log(shifted)));
            const T we = weight * (at * alpha / shifted);
            w_out[e] = we;
            c += we;
        }
        if (row_ptr[i + 1] > row_ptr[i]) coef[i] += c;
    }
    const double s = block_sum(loss, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

template <class T>
Args<T> make_args(const ops::AttentionDims& d) {
    Args<T> a{};
    a.batch = d.batch, a.tq = d.tq, a.tk = d.tk, a.hq = d.hq, a.hkv = d.hkv, a.dh = d.dh, a.group = d.group();
    a.scale = static_cast<T>(d.softmax_scale());
    return a;
}

template <class T>
void set_dropout(Args<T>& a, const ops::AttentionDropout& drop) {
    a.drop = drop.active();
    a.rng = drop.rng().philox_stream();
    a.threshold = ops::keep_threshold(drop.p);
    a.keep_scale = static_cast<T>(1.0 / (1.0 - drop.p));
}

/// The tile rows that fit tile_bytes when each costs `row_bytes` (at least 1, at most 256).
inline int tile_rows(std::size_t row_bytes) { return static_cast<int>(std::clamp<std::size_t>(tile_bytes / std::max<std::size_t>(row_bytes, 1), 1, 256)); }

/// Validates a graph term's row pointers and columns on the device (one small download).
template <class T>
void check_term(const ops::GraphTerm<T>& t, const ops::AttentionDims& d) {
    ops::attention_checks::check_term_shape(t, d);
    auto bad = Tensor<index_t, cuda>::uninitialized(Shape{1});
    CELLTX_CUDA_CHECK(cudaMemsetAsync(bad.data(), 0xff, sizeof(index_t), cuda_stream()));
    CELLTX_CUDA_LAUNCH(blocks_for(d.tq + t.nnz(), 256), 256, 0, check_term_kernel<index_t>, t.row_ptr.data(), t.col.data(), d.tq, t.nnz(), d.tk,
                       reinterpret_cast<unsigned long long*>(bad.data()));
    unsigned long long code = 0;
    storage_traits<cuda>::download(&code, bad.data(), sizeof(code));
    if (code == ~0ull) return;
    const index_t where = static_cast<index_t>(code / 4);
    switch (code % 4) {
        case 1: throw ShapeError(fmt::format(fmt::runtime("attention graph hook: row_ptr must run from 0 to nnz = {}"), t.nnz()));
        case 2: throw ShapeError(fmt::format(fmt::runtime("attention graph hook: row_ptr decreases at row {}"), where));
        default:
            throw ShapeError(fmt::format(fmt::runtime("attention graph hook: the column of edge {} is out of range for tk = {}"), where, d.tk));
    }
}

} // namespace celltx::cuda_detail::attention_gpu

namespace celltx::cuda_kernels {

/// The GPU's attention kernels (see backend/ops.hpp for each contract).
struct attention {
    template <Scalar T>
    static void attention_forward(const ops::AttentionDims& d, ops::HeadsRef<const T> q, ops::HeadsRef<const T> k, ops::HeadsRef<const T> v,
                                  ops::HeadsRef<T> o, T* lse, const ops::AttentionDropout& drop = {}) {
        using namespace cuda_detail::attention_gpu;
        using namespace ops::attention_checks;
        check_dims(d);
        check_dropout(drop);
        check_operand("Q", q, d.hq, d, d.tq);
        check_operand("K", k, d.hkv, d, d.tk);
        check_operand("V", v, d.hkv, d, d.tk);
        check_operand("O", o, d.hq, d, d.tq);
        require(lse != nullptr || d.batch * d.tq == 0, "attention_forward: LSE is null");
        if (d.batch == 0 || d.tq == 0) return;
        Args<T> a = make_args<T>(d);
        a.q = q.data, a.ldq = q.ld, a.k = k.data, a.ldk = k.ld, a.v = v.data, a.ldv = v.ld, a.out = o.data, a.ld_out = o.ld, a.lse_out = lse;
        set_dropout(a, drop);
        a.layout = make_layout(d.dh, d.hq);
        const index_t nkv = (a.layout.hb - 1) / a.group + 2;  // kv heads a block may span (upper bound)
        a.layout.tile = tile_rows(2 * static_cast<std::size_t>(nkv) * a.layout.tpr * lane_dims * sizeof(T));
        const std::size_t smem = 2 * static_cast<std::size_t>(a.layout.tile) * nkv * a.layout.tpr * lane_dims * sizeof(T);
        const dim3 grid(static_cast<unsigned>((d.tq + a.layout.rb - 1) / a.layout.rb), static_cast<unsigned>(d.hq / a.layout.hb),
                        static_cast<unsigned>(d.batch));
        CELLTX_CUDA_LAUNCH(grid, threads, smem, forward_kernel<T>, a);
    }

    template <Scalar T>
    static void attention_backward(const ops::AttentionDims& d, ops::HeadsRef<const T> q, ops::HeadsRef<const T> k, ops::HeadsRef<const T> v,
                                   ops::HeadsRef<const T> o, const T* lse, ops::HeadsRef<const T> dout, ops::HeadsRef<T> dq, ops::HeadsRef<T> dk,
                                   ops::HeadsRef<T> dv, const ops::AttentionDropout& drop = {}, const ops::GraphHook<T>* hook = nullptr) {
        using namespace cuda_detail;
        using namespace cuda_detail::attention_gpu;
        using namespace ops::attention_checks;
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
        if (d.batch == 0) return;
        Args<T> a = make_args<T>(d);
        a.q = q.data, a.ldq = q.ld, a.k = k.data, a.ldk = k.ld, a.v = v.data, a.ldv = v.ld, a.o = o.data, a.ldo = o.ld;
        a.dout = dout.data, a.ldg = dout.ld, a.lse = lse;
        set_dropout(a, drop);
        auto dc = Tensor<T, cuda>::uninitialized(Shape{d.batch * d.hq * d.tq});
        a.dc = dc.data();
        if (d.tq > 0) {
            CELLTX_CUDA_LAUNCH(blocks_for(d.batch * d.hq * d.tq, 256), 256, 0, delta_kernel<T>, a, hook ? hook->coef : static_cast<const T*>(nullptr),
                               dc.data());
            Args<T> aq = a;
            aq.out = dq.data, aq.ld_out = dq.ld;
            aq.layout = make_layout(d.dh, d.hq);
            const index_t nkv = (aq.layout.hb - 1) / a.group + 2;
            aq.layout.tile = tile_rows(2 * static_cast<std::size_t>(nkv) * aq.layout.tpr * lane_dims * sizeof(T));
            const std::size_t smem = 2 * static_cast<std::size_t>(aq.layout.tile) * nkv * aq.layout.tpr * lane_dims * sizeof(T);
            const dim3 grid(static_cast<unsigned>((d.tq + aq.layout.rb - 1) / aq.layout.rb), static_cast<unsigned>(d.hq / aq.layout.hb),
                            static_cast<unsigned>(d.batch));
            CELLTX_CUDA_LAUNCH(grid, threads, smem, dq_kernel<T>, aq);
        }
        if (d.tk > 0) {
            Args<T> akv = a;
            akv.out = dk.data, akv.ld_out = dk.ld, akv.out2 = dv.data, akv.ld_out2 = dv.ld;
            const std::size_t head_bytes = static_cast<std::size_t>(a.group) * (2 * lanes_per_row(d.dh) * lane_dims + 2) * sizeof(T);
            akv.layout = make_layout(d.dh, d.hkv, static_cast<index_t>(tile_bytes / head_bytes));
            // Each streamed row holds the queries and dO of hb·group query heads (and their two statistics).
            const index_t nq = akv.layout.hb * a.group;
            akv.layout.tile = tile_rows(static_cast<std::size_t>(nq) * (2 * akv.layout.tpr * lane_dims + 2) * sizeof(T));
            const std::size_t smem = static_cast<std::size_t>(akv.layout.tile) * nq * (2 * akv.layout.tpr * lane_dims + 2) * sizeof(T);
            require(smem <= 48 * 1024, "CUDA attention: {} query heads per kv head need more shared memory than a block has", a.group);
            const dim3 grid(static_cast<unsigned>((d.tk + akv.layout.rb - 1) / akv.layout.rb), static_cast<unsigned>(d.hkv / akv.layout.hb),
                            static_cast<unsigned>(d.batch));
            CELLTX_CUDA_LAUNCH(grid, threads, smem, dkv_kernel<T>, akv);
        }
        if (!hook) return;
        // The −W_ij part, term by term (the CPU's order), after the dense gradients.
        for (const auto& t : hook->terms) {
            if (t.nnz() == 0) continue;
            CELLTX_CUDA_LAUNCH(blocks_for(d.batch * d.tq * d.dh, 256), 256, 0, hook_dq_kernel<T>, a, t, dq.data, dq.ld);
            const SortedIndices by_key = stable_sort_indices(t.col.data(), t.nnz(), d.tk);
            CELLTX_CUDA_LAUNCH(blocks_for(d.batch * t.nnz() * d.dh, 256), 256, 0, hook_dk_kernel<T>, a, t, by_key.sorted.data(), by_key.order.data(),
                               dk.data, dk.ld);
        }
    }

    template <Scalar T>
    static void attention_edge_scores(const ops::AttentionDims& d, ops::HeadsRef<const T> q, ops::HeadsRef<const T> k, const ops::GraphTerm<T>& term,
                                      T* out, const T* lse = nullptr) {
        using namespace cuda_detail;
        using namespace cuda_detail::attention_gpu;
        using namespace ops::attention_checks;
        check_dims(d);
        check_operand("Q", q, d.hq, d, d.tq);
        check_operand("K", k, d.hkv, d, d.tk);
        check_term(term, d);
        Args<T> a = make_args<T>(d);
        a.q = q.data, a.ldq = q.ld, a.k = k.data, a.ldk = k.ld, a.lse = lse;
        CELLTX_CUDA_LAUNCH(blocks_for(d.batch * term.nnz(), 256), 256, 0, edge_scores_kernel<T>, a, term, out);
    }

    template <Scalar T>
    static double graph_kl_edges(index_t tq, const index_t* row_ptr, const T* target, const T* logp, T weight, double log_eps, T* w_out, T* coef) {
        using namespace cuda_detail;
        if (tq == 0) return 0.0;
        const unsigned blocks = std::min<unsigned>(blocks_for(tq, 256), 1024);
        auto partial = Tensor<double, cuda>::uninitialized(Shape{static_cast<index_t>(blocks)});
        CELLTX_CUDA_LAUNCH(blocks, 256, 0, attention_gpu::graph_kl_kernel<T>, tq, row_ptr, target, logp, weight, static_cast<T>(log_eps), w_out, coef,
                           partial.data());
        const Tensor<double, cpu> h = to_host(partial);
        double loss = 0.0;
        for (index_t i = 0; i < h.numel(); ++i) loss += h[i];
        return loss;
    }
};

} // namespace celltx::cuda_kernels
