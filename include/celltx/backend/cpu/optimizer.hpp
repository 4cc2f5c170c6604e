#pragma once
// The fused Adam/AdamW update on the CPU (the element update of backend/math/adam.hpp): every element
// independent, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/cpu/simd.hpp"
#include "celltx/backend/math/adam.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cpu_kernels {

/// The CPU's optimiser kernels (see backend/ops.hpp).
struct optimizer {
    template <Scalar T>
    static void adam_update(const ops::AdamStep<T>& s, T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v,
                            T* __restrict vmax, index_t n) {
        constexpr index_t chunk = 16384;
        if constexpr (std::is_same_v<T, float>) {
            // Without amsgrad, the vector kernel (the scalar loop was bound by its sqrt and divisions).
            if (!s.amsgrad && cpu_detail::simd_level() != cpu_detail::SimdLevel::none) {
                const cpu_detail::AdamCoefficients c{s.neg_step, s.bc2_sqrt, s.b1, s.one_m_b1, s.b2, s.one_m_b2, s.eps, s.wd, s.decay, s.l2, s.decoupled};
                cpu_detail::parallel_for((n + chunk - 1) / chunk, [&](index_t k) {
                    const index_t b = k * chunk;
                    cpu_detail::simd_adam_update(c, w + b, g + b, m + b, v + b, std::min(n, b + chunk) - b);
                });
                return;
            }
        }
        cpu_detail::parallel_for((n + chunk - 1) / chunk, [&](index_t c) {
            const index_t end = std::min(n, (c + 1) * chunk);
            for (index_t i = c * chunk; i < end; ++i) math::adam_element(s, w[i], g[i], m[i], v[i], s.amsgrad ? vmax + i : nullptr);
        });
    }
};

} // namespace celltx::cpu_kernels
