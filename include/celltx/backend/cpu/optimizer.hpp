#pragma once
// The fused Adam/AdamW update on the CPU: every element independent, so the result does not depend
// on the thread count.
#include <algorithm>
#include <cmath>
#include "celltx/backend/cpu/parallel.hpp"
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
            for (index_t i = c * chunk; i < end; ++i) {
                T gi = g[i];
                if (s.l2) gi = gi + s.wd * w[i];
                if (s.decoupled) w[i] = w[i] * s.decay;
                m[i] = m[i] * s.b1;
                m[i] = m[i] + s.one_m_b1 * gi;
                v[i] = v[i] * s.b2;
                v[i] = v[i] + s.one_m_b2 * gi * gi;
                T second = v[i];
                if (s.amsgrad) {
                    // std::max would drop a NaN held in vmax; torch.maximum propagates it.
                    vmax[i] = (vmax[i] < second || std::isnan(second)) ? second : vmax[i];
                    second = vmax[i];
                }
                const T denom = std::sqrt(second) / s.bc2_sqrt + s.eps;
                w[i] = w[i] + s.neg_step * m[i] / denom;
            }
        });
    }
};

} // namespace celltx::cpu_kernels
