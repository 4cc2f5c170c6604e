#pragma once
// The fused Adam/AdamW update on the CPU (the element update of backend/math/adam.hpp): every element
// independent, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/math/adam.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cpu_kernels {

/// The CPU's optimiser kernels (see backend/ops.hpp).
struct optimizer {
    template <Scalar T>
    static void adam_update(const ops::AdamStep<T>& s, T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v,
                            T* __restrict vmax, index_t n) {
        constexpr index_t chunk = 16384;
        cpu_detail::parallel_for((n + chunk - 1) / chunk, [&](index_t c) {
            const index_t end = std::min(n, (c + 1) * chunk);
            for (index_t i = c * chunk; i < end; ++i) math::adam_element(s, w[i], g[i], m[i], v[i], s.amsgrad ? vmax + i : nullptr);
        });
    }
};

} // namespace celltx::cpu_kernels
