#pragma once
// One element of the fused Adam/AdamW update (ops::AdamStep), on every backend.
#include <cmath>
#include "celltx/backend/types.hpp"
#include "celltx/core/host_device.hpp"

namespace celltx::math {

/// Updates w, m, v (and *vmax with amsgrad; null otherwise) of one element with gradient g.
template <class T>
CELLTX_HOST_DEVICE inline void adam_element(const ops::AdamStep<T>& s, T& w, T g, T& m, T& v, T* vmax) {
    if (s.l2) g = g + s.wd * w;
    if (s.decoupled) w = w * s.decay;
    m = m * s.b1;
    m = m + s.one_m_b1 * g;
    v = v * s.b2;
    v = v + s.one_m_b2 * g * g;
    T second = v;
    if (s.amsgrad) {
        // std::max would drop a NaN held in vmax; torch.maximum propagates it.
        *vmax = (*vmax < second || std::isnan(second)) ? second : *vmax;
        second = *vmax;
    }
    const T denom = std::sqrt(second) / s.bc2_sqrt + s.eps;
    w = w + s.neg_step * m / denom;
}

} // namespace celltx::math
