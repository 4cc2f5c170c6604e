#pragma once
// Element-wise CUDA kernels: grid-stride loops, one element (or one Philox block of four) per
// step, the per-element math of backend/math/ (the same functions the CPU kernels call). Dropout
// draws element i's bits exactly as CounterRng::uniform(i) does, so a CPU and a GPU run with the
// same seed drop the same elements. column_sum is the deterministic column reduction of
// backend/cuda/reduction.cuh.
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/cuda/reduction.cuh"
#include "celltx/backend/math/activation.hpp"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/core/rng.hpp"

namespace celltx::cuda_detail {

inline constexpr int elementwise_threads = 256;

template <class T>
__global__ void fill_kernel(T* x, index_t n, T v) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) x[i] = v;
}
template <class T>
__global__ void scale_kernel(T* x, index_t n, T a) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) x[i] *= a;
}
template <class T>
__global__ void accumulate_kernel(const T* src, T* dst, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) dst[i] += src[i];
}
template <class T>
__global__ void axpby_kernel(index_t n, T a, const T* x, T b, T* y) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) y[i] = b == T(0) ? a * x[i] : a * x[i] + b * y[i];
}
template <class T>
__global__ void shift_div_kernel(const T* x, T divisor, T offset, T* y, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) y[i] = offset + x[i] / divisor;
}
template <class T>
__global__ void sign_axpy_kernel(index_t n, T a, const T* x, T* y) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) y[i] += x[i] > T(0) ? a : (x[i] < T(0) ? -a : T(0));
}
template <class T>
__global__ void add_row_vector_kernel(T* Y, const T* b, index_t rows, index_t n) {
    for (index_t i = thread_index(); i < rows * n; i += grid_stride()) Y[i] += b[i % n];
}
template <class T>
__global__ void copy_2d_kernel(T* dst, index_t ld_dst, const T* src, index_t ld_src, index_t rows, index_t cols) {
    for (index_t i = thread_index(); i < rows * cols; i += grid_stride()) {
        const index_t r = i / cols, c = i % cols;
        dst[r * ld_dst + c] = src[r * ld_src + c];
    }
}
template <class T>
__global__ void scale_rows_kernel(T* x, index_t rows, index_t cols, const T* factor) {
    for (index_t i = thread_index(); i < rows * cols; i += grid_stride()) {
        const T f = factor[i / cols];
        if (f == T(0)) x[i] = T(0);
        else if (f != T(1)) x[i] *= f;
    }
}
template <ActivationKind K, class T>
__global__ void activation_forward_kernel(const T* x, T* y, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) y[i] = math::ActivationMath<K, T>::value(x[i]);
}
template <ActivationKind K, class T>
__global__ void activation_backward_kernel(const T* x, const T* dy, T* dx, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) dx[i] += dy[i] * math::ActivationMath<K, T>::derivative(x[i]);
}
template <class T>
__global__ void swiglu_forward_kernel(const T* g, const T* u, T* h, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) h[i] = math::swiglu_value(g[i], u[i]);
}
template <class T>
__global__ void swiglu_backward_kernel(const T* g, const T* u, const T* dh, T* dg, T* du, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) {
        T a, b;
        math::swiglu_gradients(g[i], u[i], dh[i], a, b);
        dg[i] = a;
        du[i] = b;
    }
}

/// One Philox block (four elements) per step: out[i] (= or +=) in[i]·mask(i).
template <class T>
__global__ void dropout_kernel(PhiloxStream rng, double p, T scale, const T* in, T* out, index_t n, bool backward) {
    const index_t blocks = (n + 3) / 4;
    for (index_t q = thread_index(); q < blocks; q += grid_stride()) {
        std::uint32_t bits[4];
        rng.block(static_cast<std::uint64_t>(q), bits);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const index_t i = q * 4 + l;
            if (i >= n) break;
            const T m = math::dropout_keeps(bits[l], p) ? scale : T(0);
            if (backward) out[i] += in[i] * m;
            else out[i] = in[i] * m;
        }
    }
}

/// x[r, c] *= keep factor of element gene(r)·width + c in sample b(r)'s stream.
template <class T>
__global__ void row_dropout_kernel(ops::RaggedRows rows, CounterRng base, double p, T scale, T* x, index_t width) {
    for (index_t i = thread_index(); i < rows.rows * width; i += grid_stride()) {
        const index_t r = i / width, c = i % width;
        const index_t b = segment_of(rows.row_offsets, rows.batch, r);
        const PhiloxStream s = base.substream(static_cast<std::uint64_t>(b)).philox_stream();
        const std::uint64_t e = static_cast<std::uint64_t>(rows.row_gene[r] * width + c);
        x[i] *= math::dropout_keeps(s.element_bits(e), p) ? scale : T(0);
    }
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's element-wise ops (see backend/ops.hpp for each contract).
struct elementwise {
    template <Scalar T>
    static void fill(T* x, index_t n, T value) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, fill_kernel<T>, x, n, value);
    }

    template <Scalar T>
    static void scale(T* x, index_t n, T a) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, scale_kernel<T>, x, n, a);
    }

    template <Scalar T>
    static void accumulate(const T* src, T* dst, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, accumulate_kernel<T>, src, dst, n);
    }

    template <Scalar T>
    static void axpby(index_t n, T a, const T* x, T b, T* y) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, axpby_kernel<T>, n, a, x, b, y);
    }

    template <Scalar T>
    static void shift_div(const T* x, T divisor, T offset, T* y, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, shift_div_kernel<T>, x, divisor, offset, y, n);
    }

    template <Scalar T>
    static void sign_axpy(index_t n, T a, const T* x, T* y) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, sign_axpy_kernel<T>, n, a, x, y);
    }

    template <Scalar T>
    static void add_row_vector(T* Y, const T* b, index_t rows, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(rows * n, elementwise_threads), elementwise_threads, 0, add_row_vector_kernel<T>, Y, b, rows, n);
    }

    template <Scalar T>
    static void column_sum(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
        cuda_detail::column_reduce(rows, n, cuda_detail::ColumnValue<T>{X, n}, out, accumulate);
    }

    template <Scalar T>
    static void copy_2d(T* dst, index_t ld_dst, const T* src, index_t ld_src, index_t rows, index_t cols) {
        using namespace cuda_detail;
        if (ld_src != 0 && ld_src == cols && ld_dst == cols) {  // one contiguous block
            if (rows * cols > 0)
                CELLTX_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(rows * cols) * sizeof(T), cudaMemcpyDeviceToDevice, cuda_stream()));
            return;
        }
        CELLTX_CUDA_LAUNCH(blocks_for(rows * cols, elementwise_threads), elementwise_threads, 0, copy_2d_kernel<T>, dst, ld_dst, src, ld_src, rows,
                           cols);
    }

    template <Scalar T>
    static void scale_rows(T* x, index_t rows, index_t cols, const T* factor) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(rows * cols, elementwise_threads), elementwise_threads, 0, scale_rows_kernel<T>, x, rows, cols, factor);
    }

    template <Scalar T>
    static void activation_forward(ActivationKind kind, const T* x, T* y, index_t n) {
        using namespace cuda_detail;
        const unsigned g = blocks_for(n, elementwise_threads);
        switch (kind) {
            case ActivationKind::gelu: CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_forward_kernel<ActivationKind::gelu, T>, x, y, n); return;
            case ActivationKind::gelu_tanh:
                CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_forward_kernel<ActivationKind::gelu_tanh, T>, x, y, n);
                return;
            case ActivationKind::relu: CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_forward_kernel<ActivationKind::relu, T>, x, y, n); return;
            case ActivationKind::silu: CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_forward_kernel<ActivationKind::silu, T>, x, y, n); return;
        }
    }

    template <Scalar T>
    static void activation_backward(ActivationKind kind, const T* x, const T* dy, T* dx, index_t n) {
        using namespace cuda_detail;
        const unsigned g = blocks_for(n, elementwise_threads);
        switch (kind) {
            case ActivationKind::gelu:
                CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_backward_kernel<ActivationKind::gelu, T>, x, dy, dx, n);
                return;
            case ActivationKind::gelu_tanh:
                CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_backward_kernel<ActivationKind::gelu_tanh, T>, x, dy, dx, n);
                return;
            case ActivationKind::relu:
                CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_backward_kernel<ActivationKind::relu, T>, x, dy, dx, n);
                return;
            case ActivationKind::silu:
                CELLTX_CUDA_LAUNCH(g, elementwise_threads, 0, activation_backward_kernel<ActivationKind::silu, T>, x, dy, dx, n);
                return;
        }
    }

    template <Scalar T>
    static void swiglu_forward(const T* g, const T* u, T* h, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, swiglu_forward_kernel<T>, g, u, h, n);
    }

    template <Scalar T>
    static void swiglu_backward(const T* g, const T* u, const T* dh, T* dg, T* du, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, elementwise_threads), elementwise_threads, 0, swiglu_backward_kernel<T>, g, u, dh, dg, du, n);
    }

    template <Scalar T>
    static void dropout_apply(const CounterRng& rng, double p, const T* in, T* out, index_t n, bool backward) {
        using namespace cuda_detail;
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        CELLTX_CUDA_LAUNCH(blocks_for((n + 3) / 4, elementwise_threads), elementwise_threads, 0, dropout_kernel<T>, rng.philox_stream(), p, scale, in,
                           out, n, backward);
    }

    template <Scalar T>
    static void row_dropout(const ops::RaggedRows& rows, const ops::RowDropout& drop, T* x, index_t width) {
        using namespace cuda_detail;
        if (!drop.active()) return;
        const T scale = static_cast<T>(1.0 / (1.0 - drop.p));
        const CounterRng base = CounterRng(drop.seed, drop.stream).substream(drop.step);  // sample b: base.substream(b) = drop.sample_rng(b)
        CELLTX_CUDA_LAUNCH(blocks_for(rows.rows * width, elementwise_threads), elementwise_threads, 0, row_dropout_kernel<T>, rows, base, drop.p, scale,
                           x, width);
    }
};

} // namespace celltx::cuda_kernels
