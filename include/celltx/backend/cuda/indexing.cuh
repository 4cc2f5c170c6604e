#pragma once
// Gathers, scatters and segment pooling on the GPU. Scatters whose destination rows may repeat run
// without floating-point atomics: the destination indices are sorted stably (a radix sort of our
// own: CUB would bring CCCL's namespace `cuda`, which clashes with the tag celltx::cuda), and
// one thread per (destination row, column) adds that row's sources in index order. That is the
// CPU's order, so these sums are deterministic and equal to the CPU's bit for bit.
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/types.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cuda_detail {

template <class T>
__global__ void gather_rows_kernel(const T* src, const index_t* idx, index_t n, index_t dim, T* out) {
    for (index_t i = thread_index(); i < n * dim; i += grid_stride()) out[i] = src[idx[i / dim] * dim + i % dim];
}

/// One pass of a stable LSD radix sort: each block counts the 8-bit digit (at `shift`) of its tile of
/// 256 keys; hist[digit·tiles + tile].
template <class I>
__global__ void radix_histogram_kernel(const I* keys, index_t n, int shift, index_t tiles, unsigned* hist) {
    __shared__ unsigned counts[256];
    counts[threadIdx.x] = 0;
    __syncthreads();
    const index_t i = static_cast<index_t>(blockIdx.x) * 256 + threadIdx.x;
    if (i < n) atomicAdd(&counts[(static_cast<unsigned long long>(keys[i]) >> shift) & 255u], 1u);  // integer counts: exact in any order
    __syncthreads();
    hist[static_cast<index_t>(threadIdx.x) * tiles + blockIdx.x] = counts[threadIdx.x];
}

/// out = the exclusive prefix sums of in[0, len) (one block of 1024 threads).
template <class U>
__global__ void exclusive_scan_kernel(const U* in, U* out, index_t len) {
    __shared__ U part[1024];
    const index_t per = (len + 1023) / 1024, b0 = imin(len, threadIdx.x * per), b1 = imin(len, b0 + per);
    unsigned s = 0;
    for (index_t i = b0; i < b1; ++i) s += in[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int off = 1; off < 1024; off <<= 1) {
        const unsigned v = threadIdx.x >= static_cast<unsigned>(off) ? part[threadIdx.x - off] : 0u;
        __syncthreads();
        part[threadIdx.x] += v;
        __syncthreads();
    }
    unsigned run = threadIdx.x ? part[threadIdx.x - 1] : 0u;
    for (index_t i = b0; i < b1; ++i) {
        out[i] = run;
        run += in[i];
    }
}

/// Moves each key (and its value) of the tile to offset[digit·tiles + tile] + its rank among the
/// tile's keys of the same digit that come before it (stable).
template <class I>
__global__ void radix_scatter_kernel(const I* keys, const I* values, index_t n, int shift, index_t tiles, const unsigned* offset, I* keys_out,
                                     I* values_out) {
    __shared__ unsigned char digit[256];
    const index_t i = static_cast<index_t>(blockIdx.x) * 256 + threadIdx.x;
    const bool valid = i < n;
    const unsigned d = valid ? static_cast<unsigned>((static_cast<unsigned long long>(keys[i]) >> shift) & 255u) : 0u;
    digit[threadIdx.x] = static_cast<unsigned char>(d);
    __syncthreads();
    if (!valid) return;  // only the last tile has invalid slots, after every valid one
    unsigned rank = 0;
    for (unsigned t = 0; t < threadIdx.x; ++t) rank += digit[t] == d;
    const unsigned at = offset[static_cast<index_t>(d) * tiles + blockIdx.x] + rank;
    keys_out[at] = keys[i];
    values_out[at] = values[i];
}

template <class I>
__global__ void iota_kernel(I* x, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) x[i] = i;
}

/// A stable sort of n keys in [0, key_bound) (key_bound 0: in [0, 2^40), row indices of anything
/// that fits in memory): sorted holds the keys in order, order[p] the position in `keys` of
/// sorted[p]. An LSD radix sort, 8 bits per pass, integer counts only: deterministic.
struct SortedIndices {
    Tensor<index_t, cuda> sorted, order;
};

inline SortedIndices stable_sort_indices(const index_t* keys, index_t n, index_t key_bound = 0) {
    require(n < (index_t{1} << 31), "CUDA scatter: {} indices exceed the sort's 2^31 limit", n);
    SortedIndices s{Tensor<index_t, cuda>::uninitialized(Shape{n}), Tensor<index_t, cuda>::uninitialized(Shape{n})};
    if (n == 0) return s;
    int bits = 40;
    if (key_bound > 0) {
        bits = 0;
        while (bits < 63 && (index_t{1} << bits) < key_bound) ++bits;
    }
    const int passes = std::max(1, (bits + 7) / 8);
    const index_t tiles = (n + 255) / 256;
    auto hist = Tensor<index_t, cuda>::uninitialized(Shape{(256 * tiles + 1) / 2});  // unsigned counts, two per index_t
    auto offset = Tensor<index_t, cuda>::uninitialized(Shape{(256 * tiles + 1) / 2});
    auto* h = reinterpret_cast<unsigned*>(hist.data());
    auto* o = reinterpret_cast<unsigned*>(offset.data());
    auto k_tmp = Tensor<index_t, cuda>::uninitialized(Shape{n}), v_tmp = Tensor<index_t, cuda>::uninitialized(Shape{n});
    auto v0 = Tensor<index_t, cuda>::uninitialized(Shape{n});
    CELLTX_CUDA_LAUNCH(blocks_for(n, 256), 256, 0, iota_kernel<index_t>, v0.data(), n);
    // Ping-pong so that the last pass writes s.sorted / s.order.
    const index_t* k_in = keys;
    const index_t* v_in = v0.data();
    for (int pass = 0; pass < passes; ++pass) {
        const bool last_to_s = (passes - 1 - pass) % 2 == 0;
        index_t* k_out = last_to_s ? s.sorted.data() : k_tmp.data();
        index_t* v_out = last_to_s ? s.order.data() : v_tmp.data();
        CELLTX_CUDA_LAUNCH(static_cast<unsigned>(tiles), 256, 0, radix_histogram_kernel<index_t>, k_in, n, 8 * pass, tiles, h);
        CELLTX_CUDA_LAUNCH(1, 1024, 0, exclusive_scan_kernel<unsigned>, h, o, 256 * tiles);
        CELLTX_CUDA_LAUNCH(static_cast<unsigned>(tiles), 256, 0, radix_scatter_kernel<index_t>, k_in, v_in, n, 8 * pass, tiles, o, k_out, v_out);
        k_in = k_out;
        v_in = v_out;
    }
    return s;
}

/// dst[key, c] += Σ src rows of the key's run (in sorted = index order); one thread per (position of
/// a run's start, column).
template <class T>
__global__ void scatter_add_sorted_kernel(const T* src, const index_t* sorted, const index_t* order, index_t n, index_t dim, T* dst) {
    for (index_t i = thread_index(); i < n * dim; i += grid_stride()) {
        const index_t p = i / dim, c = i % dim, key = sorted[p];
        if (p > 0 && sorted[p - 1] == key) continue;
        T acc = dst[key * dim + c];
        for (index_t q = p; q < n && sorted[q] == key; ++q) acc += src[order[q] * dim + c];
        dst[key * dim + c] = acc;
    }
}

template <class T>
__global__ void segment_pool_kernel(ops::SegmentPool<T> p, const T* x, T* out, index_t ld_out) {
    const index_t d = p.dim;
    for (index_t i = thread_index(); i < p.segments * d; i += grid_stride()) {
        const index_t s = i / d, c = i % d;
        T o = T(0);
        for (index_t e = p.offsets[s]; e < p.offsets[s + 1]; ++e) o += x[(p.rows ? p.rows[e] : e) * d + c];
        if (p.weights) o *= p.weights[s];
        out[s * ld_out + c] = o;
    }
}

/// The adjoint when no row repeats: one thread per (segment, column), each writing its own rows.
template <class T>
__global__ void segment_pool_backward_unique_kernel(ops::SegmentPool<T> p, const T* dout, index_t ld_dout, T* dx) {
    const index_t d = p.dim;
    for (index_t i = thread_index(); i < p.segments * d; i += grid_stride()) {
        const index_t s = i / d, c = i % d;
        const T w = p.weights ? p.weights[s] : T(1);
        const T g = dout[s * ld_dout + c];
        for (index_t e = p.offsets[s]; e < p.offsets[s + 1]; ++e) dx[(p.rows ? p.rows[e] : e) * d + c] += w * g;
    }
}

/// The adjoint when rows repeat: entries sorted by row; one thread per (run start, column) adds the
/// run's w·g in entry order (the CPU's order: segments in order, entries in order).
template <class T>
__global__ void segment_pool_backward_sorted_kernel(ops::SegmentPool<T> p, const index_t* sorted, const index_t* order, index_t entries,
                                                    const T* dout, index_t ld_dout, T* dx) {
    const index_t d = p.dim;
    for (index_t i = thread_index(); i < entries * d; i += grid_stride()) {
        const index_t q0 = i / d, c = i % d, row = sorted[q0];
        if (q0 > 0 && sorted[q0 - 1] == row) continue;
        T acc = dx[row * d + c];
        for (index_t q = q0; q < entries && sorted[q] == row; ++q) {
            const index_t e = order[q], s = segment_of(p.offsets, p.segments, e);
            const T w = p.weights ? p.weights[s] : T(1);
            acc += w * dout[s * ld_dout + c];
        }
        dx[row * d + c] = acc;
    }
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's gathers, scatters and segment ops (see backend/ops.hpp for each contract).
struct indexing {
    template <Scalar T>
    static void gather_rows(const T* src, const index_t* idx, index_t n, index_t dim, T* out) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n * dim, 256), 256, 0, gather_rows_kernel<T>, src, idx, n, dim, out);
    }

    template <Scalar T>
    static void scatter_add_rows(const T* src, const index_t* idx, index_t n, index_t dim, T* dst) {
        using namespace cuda_detail;
        if (n == 0 || dim == 0) return;
        const SortedIndices s = stable_sort_indices(idx, n);
        CELLTX_CUDA_LAUNCH(blocks_for(n * dim, 256), 256, 0, scatter_add_sorted_kernel<T>, src, s.sorted.data(), s.order.data(), n, dim, dst);
    }

    template <Scalar T>
    static void segment_pool(const ops::SegmentPool<T>& p, const T* x, T* out, index_t ld_out) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(p.segments * p.dim, 256), 256, 0, segment_pool_kernel<T>, p, x, out, ld_out);
    }

    /// Rows that may repeat (rows given, unique_rows false) cost one read of the entry count (a
    /// wait for the stream) and a sort.
    template <Scalar T>
    static void segment_pool_backward(const ops::SegmentPool<T>& p, const T* dout, index_t ld_dout, T* dx) {
        using namespace cuda_detail;
        if (p.segments == 0 || p.dim == 0) return;
        if (p.unique_rows || !p.rows) {
            CELLTX_CUDA_LAUNCH(blocks_for(p.segments * p.dim, 256), 256, 0, segment_pool_backward_unique_kernel<T>, p, dout, ld_dout, dx);
            return;
        }
        index_t entries = 0;
        storage_traits<cuda>::download(&entries, p.offsets + p.segments, sizeof(index_t));
        if (entries == 0) return;
        const SortedIndices s = stable_sort_indices(p.rows, entries);
        CELLTX_CUDA_LAUNCH(blocks_for(entries * p.dim, 256), 256, 0, segment_pool_backward_sorted_kernel<T>, p, s.sorted.data(), s.order.data(),
                           entries, dout, ld_dout, dx);
    }
};

} // namespace celltx::cuda_kernels
