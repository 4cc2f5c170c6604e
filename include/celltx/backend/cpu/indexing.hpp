#pragma once
// Gathers, scatters and segment pooling on the CPU: embedding lookups, the readouts' pooling of
// perturbed rows, the Type I transform's key/value gathers. Scatters whose rows may repeat run in
// index order on one thread, so the summation order (hence every bit) is fixed.
#include <algorithm>
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/types.hpp"

namespace celltx::cpu_kernels {

/// The CPU's gathers, scatters and segment ops (see backend/ops.hpp for each contract).
struct indexing {
    template <Scalar T>
    static void gather_rows(const T* src, const index_t* idx, index_t n, index_t dim, T* out) {
        cpu_detail::parallel_for(n, [&](index_t i) { std::copy_n(src + idx[i] * dim, dim, out + i * dim); }, n * dim < 65536 ? n + 1 : 2);
    }

    template <Scalar T>
    static void scatter_add_rows(const T* src, const index_t* idx, index_t n, index_t dim, T* dst) {
        for (index_t i = 0; i < n; ++i) {
            T* d = dst + idx[i] * dim;
            const T* s = src + i * dim;
            for (index_t c = 0; c < dim; ++c) d[c] += s[c];
        }
    }

    template <Scalar T>
    static void segment_pool(const ops::SegmentPool<T>& p, const T* x, T* out, index_t ld_out) {
        const index_t d = p.dim;
        const double work = static_cast<double>(p.offsets[p.segments]) * static_cast<double>(d);
        cpu_detail::parallel_for(p.segments, [&](index_t s) {
            T* o = out + s * ld_out;
            std::fill_n(o, d, T(0));
            for (index_t e = p.offsets[s]; e < p.offsets[s + 1]; ++e) {
                const T* v = x + (p.rows ? p.rows[e] : e) * d;
                for (index_t c = 0; c < d; ++c) o[c] += v[c];
            }
            if (p.weights)
                for (index_t c = 0; c < d; ++c) o[c] *= p.weights[s];
        }, work < 65536.0 ? p.segments + 1 : 2);
    }

    template <Scalar T>
    static void segment_pool_backward(const ops::SegmentPool<T>& p, const T* dout, index_t ld_dout, T* dx) {
        const index_t d = p.dim;
        const auto one = [&](index_t s) {
            const T* g = dout + s * ld_dout;
            const T w = p.weights ? p.weights[s] : T(1);
            for (index_t e = p.offsets[s]; e < p.offsets[s + 1]; ++e) {
                T* dst = dx + (p.rows ? p.rows[e] : e) * d;
                for (index_t c = 0; c < d; ++c) dst[c] += w * g[c];
            }
        };
        if (!p.unique_rows && p.rows) {  // rows may repeat: one thread, entry order
            for (index_t s = 0; s < p.segments; ++s) one(s);
            return;
        }
        const double work = static_cast<double>(p.offsets[p.segments]) * static_cast<double>(d);
        cpu_detail::parallel_for(p.segments, one, work < 65536.0 ? p.segments + 1 : 2);
    }
};

} // namespace celltx::cpu_kernels
