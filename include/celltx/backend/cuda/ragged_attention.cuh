#pragma once
// Ragged cross-attention on the GPU (the CGT's Type I transform): every computed row attends to its
// sample's few keys (usually 2). The forward and the dQ pass run one thread per (row, head); the
// dK/dV pass runs one block per (sample, head), which walks the sample's rows in chunks: each
// thread computes one row's score gradient into shared memory, then each thread adds the chunk's
// rows, in row order, into the output columns it owns. No atomics; the order of every sum is the
// CPU's, and dropout draws the CPU's masks (sample b's stream, element gene·heads·tk + h·tk + j).
#include <limits>
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/math/softmax.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cuda_detail {

/// What the ragged kernels read besides the operands.
struct RaggedArgs {
    ops::RaggedCrossAttention a;
    CounterRng base;  ///< sample b's stream is base.substream(b)
    double p;
    bool drop;
};

/// score s_j = Σ_c (scale·q_c)·k_c of one (row, head) against key row `k` (the CPU's rounding order).
template <class T>
__device__ inline T ragged_score(const T* q, const T* k, index_t dh, T scale) {
    T acc = T(0);
    for (index_t c = 0; c < dh; ++c) acc += (scale * q[c]) * k[c];
    return acc;
}

template <class T>
__global__ void ragged_forward_kernel(RaggedArgs r, const T* q, const T* kv, T* o, T* lse, T scale, T keep) {
    const index_t H = r.a.heads, dh = r.a.dh, d = H * dh;
    for (index_t x = thread_index(); x < r.a.rows.rows * H; x += grid_stride()) {
        const index_t row = x / H, h = x % H;
        const index_t b = segment_of(r.a.rows.row_offsets, r.a.rows.batch, row);
        const index_t k0 = r.a.key_offsets[b], tk = r.a.key_offsets[b + 1] - k0;
        T* oh = o + row * d + h * dh;
        if (tk == 0) {
            for (index_t c = 0; c < dh; ++c) oh[c] = T(0);
            lse[x] = -std::numeric_limits<T>::infinity();
            continue;
        }
        const T* qh = q + row * d + h * dh;
        T mx = -std::numeric_limits<T>::infinity();
        for (index_t j = 0; j < tk; ++j) {
            const T s = ragged_score(qh, kv + (k0 + j) * 2 * d + h * dh, dh, scale);
            mx = mx < s ? s : mx;
        }
        T l = T(0);
        for (index_t j = 0; j < tk; ++j) l += std::exp(ragged_score(qh, kv + (k0 + j) * 2 * d + h * dh, dh, scale) - mx);
        lse[x] = math::online_softmax_lse(mx, l);
        for (index_t c = 0; c < dh; ++c) oh[c] = T(0);
        const PhiloxStream rng = r.base.substream(static_cast<std::uint64_t>(b)).philox_stream();
        const std::uint64_t base = static_cast<std::uint64_t>(r.a.rows.row_gene[row] * H * tk);
        for (index_t j = 0; j < tk; ++j) {
            T pj = std::exp(ragged_score(qh, kv + (k0 + j) * 2 * d + h * dh, dh, scale) - mx) / l;
            if (r.drop) pj *= math::dropout_keeps(rng.element_bits(base + static_cast<std::uint64_t>(h * tk + j)), r.p) ? keep : T(0);
            const T* v = kv + (k0 + j) * 2 * d + d + h * dh;
            for (index_t c = 0; c < dh; ++c) oh[c] += pj * v[c];
        }
    }
}

/// One (row, head): the keep factor of key j.
template <class T>
__device__ inline T ragged_keep(const RaggedArgs& r, const PhiloxStream& rng, std::uint64_t base, index_t h, index_t tk, index_t j, T keep) {
    return r.drop ? (math::dropout_keeps(rng.element_bits(base + static_cast<std::uint64_t>(h * tk + j)), r.p) ? keep : T(0)) : T(1);
}

/// dq (assigned) and D = Σ_j P_j·dP_j of each (row, head).
template <class T>
__global__ void ragged_dq_kernel(RaggedArgs r, const T* q, const T* kv, const T* lse, const T* dout, T* dq, T* D, T scale, T keep) {
    const index_t H = r.a.heads, dh = r.a.dh, d = H * dh;
    for (index_t x = thread_index(); x < r.a.rows.rows * H; x += grid_stride()) {
        const index_t row = x / H, h = x % H;
        const index_t b = segment_of(r.a.rows.row_offsets, r.a.rows.batch, row);
        const index_t k0 = r.a.key_offsets[b], tk = r.a.key_offsets[b + 1] - k0;
        T* dqr = dq + row * d + h * dh;
        for (index_t c = 0; c < dh; ++c) dqr[c] = T(0);
        if (tk == 0) {
            D[x] = T(0);
            continue;
        }
        const PhiloxStream rng = r.base.substream(static_cast<std::uint64_t>(b)).philox_stream();
        const std::uint64_t base = static_cast<std::uint64_t>(r.a.rows.row_gene[row] * H * tk);
        const T* qh = q + row * d + h * dh;
        const T* g = dout + row * d + h * dh;
        const T l = lse[x];
        T Dx = T(0);
        for (index_t j = 0; j < tk; ++j) {
            const T* k = kv + (k0 + j) * 2 * d + h * dh;
            const T* v = k + d;
            T gv = T(0);
            for (index_t c = 0; c < dh; ++c) gv += g[c] * v[c];
            const T pj = std::exp(ragged_score(qh, k, dh, scale) - l);
            Dx += pj * (ragged_keep(r, rng, base, h, tk, j, keep) * gv);
        }
        D[x] = Dx;
        for (index_t j = 0; j < tk; ++j) {
            const T* k = kv + (k0 + j) * 2 * d + h * dh;
            const T* v = k + d;
            T gv = T(0);
            for (index_t c = 0; c < dh; ++c) gv += g[c] * v[c];
            const T pj = std::exp(ragged_score(qh, k, dh, scale) - l);
            const T ds = pj * (ragged_keep(r, rng, base, h, tk, j, keep) * gv - Dx) * scale;
            for (index_t c = 0; c < dh; ++c) dqr[c] += ds * k[c];
        }
    }
}

inline constexpr int ragged_threads = 128;
inline constexpr int ragged_max_columns = 8;  ///< output columns per thread: 2·dh <= 8·128

/// dK and dV (assigned) of sample blockIdx.x, head blockIdx.y.
template <class T>
__global__ void __launch_bounds__(ragged_threads) ragged_dkv_kernel(RaggedArgs r, const T* q, const T* kv, const T* lse, const T* dout, const T* D,
                                                                    T* dkv, T scale, T keep) {
    __shared__ T ds_s[ragged_threads], pm_s[ragged_threads];
    const index_t H = r.a.heads, dh = r.a.dh, d = H * dh, b = blockIdx.x, h = blockIdx.y;
    const index_t k0 = r.a.key_offsets[b], tk = r.a.key_offsets[b + 1] - k0;
    const index_t R0 = r.a.rows.row_offsets[b], R1 = r.a.rows.row_offsets[b + 1];
    const PhiloxStream rng = r.base.substream(static_cast<std::uint64_t>(b)).philox_stream();
    for (index_t j = 0; j < tk; ++j) {
        const T* k = kv + (k0 + j) * 2 * d + h * dh;
        const T* v = k + d;
        T acc[ragged_max_columns];
#pragma unroll
        for (int u = 0; u < ragged_max_columns; ++u) acc[u] = T(0);
        for (index_t c0 = R0; c0 < R1; c0 += ragged_threads) {
            const index_t n = imin(ragged_threads, R1 - c0);
            __syncthreads();
            if (threadIdx.x < n) {
                const index_t row = c0 + threadIdx.x, x = row * H + h;
                const T* qh = q + row * d + h * dh;
                const T* g = dout + row * d + h * dh;
                T gv = T(0);
                for (index_t c = 0; c < dh; ++c) gv += g[c] * v[c];
                const T pj = std::exp(ragged_score(qh, k, dh, scale) - lse[x]);
                const T m = ragged_keep(r, rng, static_cast<std::uint64_t>(r.a.rows.row_gene[row] * H * tk), h, tk, j, keep);
                ds_s[threadIdx.x] = pj * (m * gv - D[x]) * scale;
                pm_s[threadIdx.x] = pj * m;
            }
            __syncthreads();
#pragma unroll
            for (int u = 0; u < ragged_max_columns; ++u) {
                const index_t c = threadIdx.x + static_cast<index_t>(u) * ragged_threads;
                if (c >= 2 * dh) break;
                for (index_t t = 0; t < n; ++t) {
                    const index_t row = c0 + t;
                    acc[u] += c < dh ? ds_s[t] * q[row * d + h * dh + c] : pm_s[t] * dout[row * d + h * dh + (c - dh)];
                }
            }
        }
#pragma unroll
        for (int u = 0; u < ragged_max_columns; ++u) {
            const index_t c = threadIdx.x + static_cast<index_t>(u) * ragged_threads;
            if (c >= 2 * dh) break;
            dkv[(k0 + j) * 2 * d + (c < dh ? h * dh + c : d + h * dh + (c - dh))] = acc[u];
        }
    }
}

inline RaggedArgs ragged_args(const ops::RaggedCrossAttention& a) {
    return {a, CounterRng(a.dropout.seed, a.dropout.stream).substream(a.dropout.step), a.dropout.p, a.dropout.active()};
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's ragged cross-attention (see backend/ops.hpp for each contract).
struct ragged_attention {
    template <Scalar T>
    static void ragged_cross_attention_forward(const ops::RaggedCrossAttention& a, const T* q, const T* kv, T* o, T* lse) {
        using namespace cuda_detail;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - a.dropout.p));
        CELLTX_CUDA_LAUNCH(blocks_for(a.rows.rows * a.heads, 128), 128, 0, ragged_forward_kernel<T>, ragged_args(a), q, kv, o, lse, scale, keep);
    }

    /// The sample's keys that no row attends to get dK = dV = 0; keys of samples past the batch are
    /// not written (there are none: key_offsets[batch] is the number of keys).
    template <Scalar T>
    static void ragged_cross_attention_backward(const ops::RaggedCrossAttention& a, const T* q, const T* kv, const T* lse, const T* dout, T* dq,
                                                T* dkv) {
        using namespace cuda_detail;
        require(2 * a.dh <= ragged_max_columns * ragged_threads, "CUDA ragged cross-attention: head width {} exceeds {}", a.dh,
                ragged_max_columns * ragged_threads / 2);
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - a.dropout.p));
        const RaggedArgs r = ragged_args(a);
        auto D = Tensor<T, cuda>::uninitialized(Shape{a.rows.rows * a.heads});
        CELLTX_CUDA_LAUNCH(blocks_for(a.rows.rows * a.heads, 128), 128, 0, ragged_dq_kernel<T>, r, q, kv, lse, dout, dq, D.data(), scale, keep);
        CELLTX_CUDA_LAUNCH(dim3(static_cast<unsigned>(a.rows.batch), static_cast<unsigned>(a.heads)), ragged_threads, 0, ragged_dkv_kernel<T>, r, q,
                           kv, lse, dout, D.data(), dkv, scale, keep);
    }
};

} // namespace celltx::cuda_kernels
