#pragma once
// Numeric comparisons for tests: relative error with a floor, so tiny entries are judged absolutely.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <fmt/format.h>
#include "celltx/core/tensor.hpp"

namespace celltx::testing {

struct Difference {
    double max_error = 0.0;  ///< max |a-b| / max(|a|, |b|, floor); +inf for a NaN or a shape mismatch
    index_t worst_index = -1;
    double a = 0.0, b = 0.0;
    bool within(double tol) const { return max_error <= tol; }
    std::string str() const { return fmt::format("max error {:.3e} at flat index {} ({:.10g} vs {:.10g})", max_error, worst_index, a, b); }
};

/// Element-wise relative difference of two host arrays of any scalar types.
template <class A, class B>
Difference relative_difference(const A* a, const B* b, index_t n, double floor = 1e-6) {
    Difference d;
    for (index_t i = 0; i < n; ++i) {
        const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
        double e = std::abs(x - y) / std::max({std::abs(x), std::abs(y), floor});
        if (!std::isfinite(x) || !std::isfinite(y)) e = (x == y) ? 0.0 : std::numeric_limits<double>::infinity();
        if (e > d.max_error || d.worst_index < 0) {
            if (e > d.max_error || d.worst_index < 0) d = {e, i, x, y};
        }
    }
    return d;
}

template <class A, class B, Backend BA, Backend BB>
Difference relative_difference(const Tensor<A, BA>& a, const Tensor<B, BB>& b, double floor = 1e-6) {
    if (!(a.shape() == b.shape())) return {std::numeric_limits<double>::infinity(), -1, 0, 0};
    return relative_difference(a.data(), b.data(), a.numel(), floor);
}
template <class A, class B>
Difference relative_difference(ConstView<A> a, ConstView<B> b, double floor = 1e-6) {
    if (!(a.shape() == b.shape())) return {std::numeric_limits<double>::infinity(), -1, 0, 0};
    return relative_difference(a.data(), b.data(), a.numel(), floor);
}

} // namespace celltx::testing
