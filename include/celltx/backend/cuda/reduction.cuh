#pragma once
// Reductions on the GPU, all deterministic (fixed partitions that depend on the sizes only, fixed
// combination orders, no floating-point atomics), accumulated in double whatever T is:
//  - column reductions of a [rows, n] matrix (column_sum, the norms' parameter gradients): blocks of
//    32 columns × a fixed chunk of rows, then the chunks' partial sums in chunk order;
//  - full reductions whose result the host reads (sum_abs, norm): fixed chunks of 16384 elements,
//    each reduced by one block in a fixed tree; the chunk sums are added on the host in order;
//  - row_sum_squares (one warp per row) and column_min_max (order-free: min and max).
#include <cmath>
#include <limits>
#include <vector>
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/core/tensor.hpp"

namespace celltx::cuda_detail {

/// x[r·n + c] as double.
template <class T>
struct ColumnValue {
    const T* x;
    index_t n;
    __device__ double operator()(index_t r, index_t c) const { return static_cast<double>(x[r * n + c]); }
};

/// a[r·n + c]·b[r·n + c] in double.
template <class T>
struct ColumnProduct {
    const T* a;
    const T* b;
    index_t n;
    __device__ double operator()(index_t r, index_t c) const { return static_cast<double>(a[r * n + c]) * static_cast<double>(b[r * n + c]); }
};

inline constexpr int column_block_x = 32, column_block_y = 8;

/// partial[chunk·n + c] = Σ over the chunk's rows of load(r, c). Block (32, 8), grid (⌈n/32⌉, chunks).
template <class Load>
__global__ void column_partial_kernel(index_t rows, index_t n, index_t rows_per_chunk, Load load, double* partial) {
    __shared__ double acc_shared[column_block_y][column_block_x + 1];
    const index_t c = static_cast<index_t>(blockIdx.x) * column_block_x + threadIdx.x;
    const index_t r0 = static_cast<index_t>(blockIdx.y) * rows_per_chunk, r1 = imin(rows, r0 + rows_per_chunk);
    double acc = 0.0;
    if (c < n)
        for (index_t r = r0 + threadIdx.y; r < r1; r += column_block_y) acc += load(r, c);
    acc_shared[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        double s = 0.0;
        for (int k = 0; k < column_block_y; ++k) s += acc_shared[k][threadIdx.x];
        partial[static_cast<index_t>(blockIdx.y) * n + c] = s;
    }
}

/// out[c] (= or +=) Σ_chunks partial[chunk·n + c], in chunk order.
template <class T>
__global__ void column_finish_kernel(index_t n, index_t chunks, const double* partial, T* out, bool accumulate) {
    for (index_t c = thread_index(); c < n; c += grid_stride()) {
        double s = 0.0;
        for (index_t k = 0; k < chunks; ++k) s += partial[k * n + c];
        out[c] = accumulate ? out[c] + static_cast<T>(s) : static_cast<T>(s);
    }
}

/// out[c] = Σ_r load(r, c) over a [rows, n] matrix (accumulate: out[c] += that), in double.
template <class T, class Load>
void column_reduce(index_t rows, index_t n, Load load, T* out, bool accumulate) {
    if (n == 0) return;
    const index_t rows_per_chunk = std::max<index_t>(64, (rows + 1023) / 1024);
    const index_t chunks = std::max<index_t>(1, (rows + rows_per_chunk - 1) / rows_per_chunk);
    auto partial = Tensor<double, cuda>::uninitialized(Shape{chunks * n});
    if (rows == 0) partial.zero();
    else
        CELLTX_CUDA_LAUNCH(dim3(static_cast<unsigned>((n + column_block_x - 1) / column_block_x), static_cast<unsigned>(chunks)),
                           dim3(column_block_x, column_block_y), 0, column_partial_kernel<Load>, rows, n, rows_per_chunk, load, partial.data());
    CELLTX_CUDA_LAUNCH(blocks_for(n, 128), 128, 0, column_finish_kernel<T>, n, chunks, partial.data(), out, accumulate);
}

inline constexpr index_t reduce_chunk = 16384;
inline constexpr int reduce_threads = 256;

/// What a full reduction adds up per element.
enum class ElementMeasure { abs, square, abs_pow };

/// partial[block] = Σ over the block's chunk of measure(x[i]) in double.
template <class T>
__global__ void chunk_sum_kernel(const T* x, index_t n, ElementMeasure measure, double p, double* partial) {
    __shared__ double shared[32];
    const index_t b0 = static_cast<index_t>(blockIdx.x) * reduce_chunk, b1 = imin(n, b0 + reduce_chunk);
    double acc = 0.0;
    for (index_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        const double v = static_cast<double>(x[i]);
        acc += measure == ElementMeasure::abs ? fabs(v) : (measure == ElementMeasure::square ? v * v : pow(fabs(v), p));
    }
    const double s = block_sum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/// partial[block] = the largest |x| of the block's chunk; NaN when the chunk holds a NaN.
template <class T>
__global__ void chunk_max_abs_kernel(const T* x, index_t n, double* partial) {
    __shared__ double shared[reduce_threads];
    const index_t b0 = static_cast<index_t>(blockIdx.x) * reduce_chunk, b1 = imin(n, b0 + reduce_chunk);
    double m = 0.0;
    for (index_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        const double a = fabs(static_cast<double>(x[i]));
        m = (a > m || isnan(a)) ? a : m;  // NaN sticks
    }
    shared[threadIdx.x] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        double r = 0.0;
        for (int t = 0; t < static_cast<int>(blockDim.x); ++t) r = (shared[t] > r || isnan(shared[t])) ? shared[t] : r;
        partial[blockIdx.x] = r;
    }
}

/// The per-chunk partials of a full reduction, on the host.
template <class T>
std::vector<double> chunk_partials(const T* x, index_t n, ElementMeasure measure, double p, bool max_abs) {
    const index_t chunks = (n + reduce_chunk - 1) / reduce_chunk;
    if (chunks == 0) return {};
    auto partial = Tensor<double, cuda>::uninitialized(Shape{chunks});
    if (max_abs) CELLTX_CUDA_LAUNCH(static_cast<unsigned>(chunks), reduce_threads, 0, chunk_max_abs_kernel<T>, x, n, partial.data());
    else CELLTX_CUDA_LAUNCH(static_cast<unsigned>(chunks), reduce_threads, 0, chunk_sum_kernel<T>, x, n, measure, p, partial.data());
    const Tensor<double, cpu> h = to_host(partial);
    return std::vector<double>(h.data(), h.data() + h.numel());
}

/// out[r] = Σ_c x[r, c]² in double: one warp per row.
template <class T>
__global__ void row_sum_squares_kernel(const T* x, index_t rows, index_t cols, double* out) {
    const index_t warps = grid_stride() / 32;
    for (index_t r = thread_index() / 32; r < rows; r += warps) {
        double s = 0.0;
        for (index_t c = threadIdx.x & 31; c < cols; c += 32) {
            const double v = static_cast<double>(x[r * cols + c]);
            s += v * v;
        }
        s = warp_sum(s);
        if ((threadIdx.x & 31) == 0) out[r] = s;
    }
}

/// lo/hi [chunk·cols + c] = min/max over the chunk's rows of the finite values of column c (±inf if none).
template <class T>
__global__ void column_min_max_partial_kernel(const T* x, index_t rows, index_t cols, index_t rows_per_chunk, T* lo, T* hi) {
    const index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const index_t r0 = static_cast<index_t>(blockIdx.y) * rows_per_chunk, r1 = imin(rows, r0 + rows_per_chunk);
    T l = std::numeric_limits<T>::infinity(), h = -std::numeric_limits<T>::infinity();
    for (index_t r = r0; r < r1; ++r) {
        const T v = x[r * cols + c];
        if (!isfinite(v)) continue;
        l = v < l ? v : l;
        h = v > h ? v : h;
    }
    lo[static_cast<index_t>(blockIdx.y) * cols + c] = l;
    hi[static_cast<index_t>(blockIdx.y) * cols + c] = h;
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's reductions (see backend/ops.hpp for each contract).
struct reduction {
    template <Scalar T>
    static double sum_abs(const T* x, index_t n) {
        double s = 0.0;
        for (double p : cuda_detail::chunk_partials(x, n, cuda_detail::ElementMeasure::abs, 1.0, false)) s += p;
        return s;
    }

    template <Scalar T>
    static void row_sum_squares(const T* x, index_t rows, index_t cols, double* out) {
        if (rows == 0) return;
        auto d = Tensor<double, cuda>::uninitialized(Shape{rows});
        CELLTX_CUDA_LAUNCH(cuda_detail::blocks_for(rows * 32, 256), 256, 0, cuda_detail::row_sum_squares_kernel<T>, x, rows, cols, d.data());
        storage_traits<cuda>::download(out, d.data(), static_cast<std::size_t>(rows) * sizeof(double));
    }

    template <Scalar T>
    static void column_min_max(const T* x, index_t rows, index_t cols, T* lo, T* hi) {
        if (rows == 0 || cols == 0) return;
        const index_t per = std::max<index_t>(256, (rows + 255) / 256), chunks = (rows + per - 1) / per;
        auto l = Tensor<T, cuda>::uninitialized(Shape{chunks * cols}), h = Tensor<T, cuda>::uninitialized(Shape{chunks * cols});
        CELLTX_CUDA_LAUNCH(dim3(static_cast<unsigned>((cols + 127) / 128), static_cast<unsigned>(chunks)), 128, 0,
                           cuda_detail::column_min_max_partial_kernel<T>, x, rows, cols, per, l.data(), h.data());
        const Tensor<T, cpu> lh = to_host(l), hh = to_host(h);
        for (index_t k = 0; k < chunks; ++k)
            for (index_t c = 0; c < cols; ++c) {
                lo[c] = std::min(lo[c], lh[k * cols + c]);
                hi[c] = std::max(hi[c], hh[k * cols + c]);
            }
    }

    template <Scalar T>
    static double norm(const T* x, index_t n, double p) {
        using cuda_detail::ElementMeasure;
        if (std::isinf(p)) {
            double m = 0.0;
            for (double a : cuda_detail::chunk_partials(x, n, ElementMeasure::abs, p, true)) {
                if (std::isnan(a)) return a;
                if (a > m) m = a;
            }
            return m;
        }
        const ElementMeasure measure = p == 2.0 ? ElementMeasure::square : (p == 1.0 ? ElementMeasure::abs : ElementMeasure::abs_pow);
        double s = 0.0;
        for (double part : cuda_detail::chunk_partials(x, n, measure, p, false)) s += part;
        return p == 2.0 ? std::sqrt(s) : (p == 1.0 ? s : std::pow(s, 1.0 / p));
    }
};

} // namespace celltx::cuda_kernels
