#pragma once
// The fused Adam/AdamW update on the GPU: one thread per element, the element update of
// backend/math/adam.hpp (the CPU's).
#include "celltx/backend/cuda/launch.cuh"
#include "celltx/backend/math/adam.hpp"

namespace celltx::cuda_detail {

template <class T>
__global__ void adam_kernel(ops::AdamStep<T> s, T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                            T* __restrict__ vmax, index_t n) {
    for (index_t i = thread_index(); i < n; i += grid_stride()) {
        T wi = w[i], mi = m[i], vi = v[i];
        math::adam_element(s, wi, g[i], mi, vi, s.amsgrad ? vmax + i : nullptr);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
    }
}

} // namespace celltx::cuda_detail

namespace celltx::cuda_kernels {

/// The GPU's optimiser kernels (see backend/ops.hpp).
struct optimizer {
    template <Scalar T>
    static void adam_update(const ops::AdamStep<T>& step, T* w, const T* g, T* m, T* v, T* vmax, index_t n) {
        using namespace cuda_detail;
        CELLTX_CUDA_LAUNCH(blocks_for(n, 256), 256, 0, adam_kernel<T>, step, w, g, m, v, vmax, n);
    }
};

} // namespace celltx::cuda_kernels
