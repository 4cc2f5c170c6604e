#pragma once
// Reductions on the CPU whose results the caller reads on the host: sums for loss values, column
// ranges, gradient norms. Each is accumulated in double, in a fixed order (fixed chunks, partial
// sums added in chunk order), so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/core/shape.hpp"

namespace celltx::cpu_detail {

/// Σ over [0, n) of f(i) in double, over fixed chunks added in order.
template <class F>
double chunked_sum(index_t n, F&& f) {
    constexpr index_t chunk = 16384;
    const index_t chunks = (n + chunk - 1) / chunk;
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    parallel_for(chunks, [&](index_t c) {
        double s = 0.0;
        for (index_t i = c * chunk, e = std::min(n, (c + 1) * chunk); i < e; ++i) s += f(i);
        partial[static_cast<std::size_t>(c)] = s;
    });
    double s = 0.0;
    for (double p : partial) s += p;
    return s;
}

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's reductions (see backend/ops.hpp for each contract).
struct reduction {
    template <Scalar T>
    static double sum_abs(const T* x, index_t n) {
        return cpu_detail::chunked_sum(n, [&](index_t i) { return std::abs(static_cast<double>(x[i])); });
    }

    template <Scalar T>
    static void row_sum_squares(const T* x, index_t rows, index_t cols, double* out) {
        cpu_detail::parallel_for(rows, [&](index_t r) {
            double s = 0.0;
            for (index_t c = 0; c < cols; ++c) s += static_cast<double>(x[r * cols + c]) * static_cast<double>(x[r * cols + c]);
            out[r] = s;
        }, rows * cols < 65536 ? rows + 1 : 2);
    }

    template <Scalar T>
    static void column_min_max(const T* x, index_t rows, index_t cols, T* lo, T* hi) {
        for (index_t r = 0; r < rows; ++r)
            for (index_t c = 0; c < cols; ++c) {
                const T v = x[r * cols + c];
                if (!std::isfinite(v)) continue;
                lo[c] = std::min(lo[c], v);
                hi[c] = std::max(hi[c], v);
            }
    }

    template <Scalar T>
    static double norm(const T* x, index_t n, double p) {
        if (std::isinf(p)) {  // the largest |x|; a NaN anywhere makes it NaN (torch's inf-norm)
            double m = 0.0;
            for (index_t i = 0; i < n; ++i) {
                const double a = std::abs(static_cast<double>(x[i]));
                if (std::isnan(a)) return a;
                if (a > m) m = a;
            }
            return m;
        }
        if (p == 2.0) return std::sqrt(cpu_detail::chunked_sum(n, [&](index_t i) { return static_cast<double>(x[i]) * static_cast<double>(x[i]); }));
        if (p == 1.0) return cpu_detail::chunked_sum(n, [&](index_t i) { return std::abs(static_cast<double>(x[i])); });
        return std::pow(cpu_detail::chunked_sum(n, [&](index_t i) { return std::pow(std::abs(static_cast<double>(x[i])), p); }), 1.0 / p);
    }
};

} // namespace celltx::cpu_kernels
