#pragma once
// Element-wise CPU kernels: fills and scalings, row broadcasts and column sums, activations (value
// and derivative), the SwiGLU product, dropout masks; the per-element math is backend/math/'s, which
// the CUDA kernels run too. Work is split into fixed blocks of elements and every random draw is
// addressed by element index, so results never depend on the thread count.
#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/cpu/simd.hpp"
#include "celltx/backend/math/activation.hpp"
#include "celltx/backend/math/dropout.hpp"
#include "celltx/backend/types.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cpu_detail {

/// Elements per parallel block: a multiple of 4 so that one Philox block never straddles two blocks.
inline constexpr index_t elementwise_block = 8192;

/// Calls f(begin, end) over [0, n) in fixed blocks, in parallel.
template <class F>
void for_blocks(index_t n, F&& f) {
    const index_t blocks = (n + elementwise_block - 1) / elementwise_block;
    parallel_for(blocks, [&](index_t b) { f(b * elementwise_block, std::min(n, (b + 1) * elementwise_block)); });
}

/// Keep factor (0 or 1/(1−p)) of element `index` of `rng`: kept iff uniform > p, as nn::Dropout;
/// caches the last Philox block, since neighbouring elements share one.
template <class T>
struct KeepMask {
    CounterRng rng;
    double p = 0.0;
    T scale = T(1);
    std::uint64_t cached = ~std::uint64_t{0};
    std::array<std::uint32_t, 4> bits{};

    T operator()(std::uint64_t index) {
        if ((index >> 2) != cached) {
            cached = index >> 2;
            bits = rng.bits(cached);
        }
        return math::dropout_keeps(bits[index & 3], p) ? scale : T(0);
    }
};

/// Calls f(Math{}) with the math struct of `kind`, so that the inner loops are specialised.
template <class T, class F>
void with_activation(ActivationKind kind, F&& f) {
    switch (kind) {
        case ActivationKind::gelu: f(math::ActivationMath<ActivationKind::gelu, T>{}); return;
        case ActivationKind::gelu_tanh: f(math::ActivationMath<ActivationKind::gelu_tanh, T>{}); return;
        case ActivationKind::relu: f(math::ActivationMath<ActivationKind::relu, T>{}); return;
        case ActivationKind::silu: f(math::ActivationMath<ActivationKind::silu, T>{}); return;
    }
}

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's element-wise ops (see backend/ops.hpp for each contract).
struct elementwise {
    template <Scalar T>
    static void fill(T* x, index_t n, T value) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) { std::fill(x + b, x + e, value); });
    }

    template <Scalar T>
    static void scale(T* x, index_t n, T a) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) x[i] *= a;
        });
    }

    template <Scalar T>
    static void accumulate(const T* src, T* dst, index_t n) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) dst[i] += src[i];
        });
    }

    template <Scalar T>
    static void axpby(index_t n, T a, const T* x, T b, T* y) {
        cpu_detail::for_blocks(n, [&](index_t lo, index_t hi) {
            if (b == T(0))
                for (index_t i = lo; i < hi; ++i) y[i] = a * x[i];
            else
                for (index_t i = lo; i < hi; ++i) y[i] = a * x[i] + b * y[i];
        });
    }

    template <Scalar T>
    static void shift_div(const T* x, T divisor, T offset, T* y, index_t n) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) y[i] = offset + x[i] / divisor;
        });
    }

    template <Scalar T>
    static void sign_axpy(index_t n, T a, const T* x, T* y) {
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) y[i] += x[i] > T(0) ? a : (x[i] < T(0) ? -a : T(0));
        });
    }

    template <Scalar T>
    static void add_row_vector(T* Y, const T* b, index_t rows, index_t n) {
        if (rows == 0 || n == 0) return;
        cpu_detail::mat(Y, rows, n, n).rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, n);
    }

    template <Scalar T>
    static void column_sum(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
        if (n == 0) return;
        auto o = cpu_detail::mat(out, 1, n, n);
        if (rows == 0) {
            if (!accumulate) o.setZero();
            return;
        }
        // Fixed chunks of rows summed row by row (contiguous, vectorised), the partial sums added in
        // chunk order: the result does not depend on the thread count.
        const index_t per = std::max<index_t>(64, (rows + 255) / 256), chunks = (rows + per - 1) / per;
        std::vector<T> partial(static_cast<std::size_t>(chunks * n), T(0));
        cpu_detail::parallel_for(chunks, [&](index_t c) {
            T* acc = partial.data() + c * n;
            for (index_t r = c * per, end = std::min(rows, (c + 1) * per); r < end; ++r) {
                const T* xr = X + r * n;
                for (index_t j = 0; j < n; ++j) acc[j] += xr[j];
            }
        }, static_cast<double>(rows) * static_cast<double>(n) < 262144.0 ? chunks + 1 : 2);
        for (index_t j = 0; j < n; ++j) {
            T s = accumulate ? out[j] : T(0);
            for (index_t c = 0; c < chunks; ++c) s += partial[static_cast<std::size_t>(c * n + j)];
            out[j] = s;
        }
    }

    template <Scalar T>
    static void copy_2d(T* dst, index_t ld_dst, const T* src, index_t ld_src, index_t rows, index_t cols) {
        for (index_t r = 0; r < rows; ++r) std::copy_n(src + r * ld_src, cols, dst + r * ld_dst);
    }

    template <Scalar T>
    static void scale_rows(T* x, index_t rows, index_t cols, const T* factor) {
        for (index_t r = 0; r < rows; ++r) {
            const T f = factor[r];
            if (f == T(0)) std::fill_n(x + r * cols, cols, T(0));
            else if (f != T(1))
                for (index_t c = 0; c < cols; ++c) x[r * cols + c] *= f;
        }
    }

    template <Scalar T>
    static void activation_forward(ActivationKind kind, const T* x, T* y, index_t n) {
        if constexpr (std::is_same_v<T, float>) {
            if (kind == ActivationKind::gelu && cpu_detail::simd_level() != cpu_detail::SimdLevel::none) {
                cpu_detail::for_blocks(n, [&](index_t b, index_t e) { cpu_detail::simd_gelu_forward(x + b, y + b, e - b); });
                return;
            }
        }
        cpu_detail::with_activation<T>(kind, [&](auto math) {
            cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
                for (index_t i = b; i < e; ++i) y[i] = math.value(x[i]);
            });
        });
    }

    template <Scalar T>
    static void activation_backward(ActivationKind kind, const T* x, const T* dy, T* dx, index_t n) {
        if constexpr (std::is_same_v<T, float>) {
            if (kind == ActivationKind::gelu && cpu_detail::simd_level() != cpu_detail::SimdLevel::none) {
                cpu_detail::for_blocks(n, [&](index_t b, index_t e) { cpu_detail::simd_gelu_backward(x + b, dy + b, dx + b, e - b); });
                return;
            }
        }
        cpu_detail::with_activation<T>(kind, [&](auto math) {
            cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
                for (index_t i = b; i < e; ++i) dx[i] += dy[i] * math.derivative(x[i]);
            });
        });
    }

    template <Scalar T>
    static void swiglu_forward(const T* g, const T* u, T* h, index_t n) {
        if constexpr (std::is_same_v<T, float>) {
            if (cpu_detail::simd_level() != cpu_detail::SimdLevel::none) {
                cpu_detail::for_blocks(n, [&](index_t b, index_t e) { cpu_detail::simd_swiglu_forward(g + b, u + b, h + b, e - b); });
                return;
            }
        }
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) h[i] = math::swiglu_value(g[i], u[i]);
        });
    }

    template <Scalar T>
    static void swiglu_backward(const T* g, const T* u, const T* dh, T* dg, T* du, index_t n) {
        if constexpr (std::is_same_v<T, float>) {
            if (cpu_detail::simd_level() != cpu_detail::SimdLevel::none) {
                cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
                    cpu_detail::simd_swiglu_backward(g + b, u + b, dh + b, dg + b, du + b, e - b);
                });
                return;
            }
        }
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            for (index_t i = b; i < e; ++i) math::swiglu_gradients(g[i], u[i], dh[i], dg[i], du[i]);
        });
    }

    template <Scalar T>
    static void dropout_apply(const CounterRng& rng, double p, const T* in, T* out, index_t n, bool backward) {
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        cpu_detail::for_blocks(n, [&](index_t b, index_t e) {
            // One Philox block gives the draws of 4 consecutive elements (as CounterRng::uniform(i) does).
            for (index_t q = b / 4; q * 4 < e; ++q) {
                const auto bits = rng.bits(static_cast<std::uint64_t>(q));
                for (int r = 0; r < 4; ++r) {
                    const index_t i = q * 4 + r;
                    if (i >= e) break;
                    const T m = math::dropout_keeps(bits[r], p) ? scale : T(0);
                    if (backward) out[i] += in[i] * m;
                    else out[i] = in[i] * m;
                }
            }
        });
    }

    template <Scalar T>
    static void row_dropout(const ops::RaggedRows& rows, const ops::RowDropout& drop, T* x, index_t width) {
        if (!drop.active()) return;
        const T scale = static_cast<T>(1.0 / (1.0 - drop.p));
        const double work = static_cast<double>(rows.rows) * static_cast<double>(width) * 8.0;
        cpu_detail::parallel_for(rows.batch, [&](index_t b) {
            cpu_detail::KeepMask<T> mask{drop.sample_rng(b), drop.p, scale};
            for (index_t r = rows.row_offsets[b]; r < rows.row_offsets[b + 1]; ++r) {
                const std::uint64_t base = static_cast<std::uint64_t>(rows.row_gene[r] * width);
                T* xr = x + r * width;
                for (index_t c = 0; c < width; ++c) xr[c] *= mask(base + static_cast<std::uint64_t>(c));
            }
        }, work < 131072.0 ? rows.batch + 1 : 2);
    }
};

} // namespace celltx::cpu_kernels
