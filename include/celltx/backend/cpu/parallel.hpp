#pragma once
// Thread parallelism on the CPU. Work is split by index, and every random draw is addressed by
// index (CounterRng), so results do not depend on the thread count.
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "celltx/core/shape.hpp"

namespace celltx::cpu_detail {

/// Calls f(i) for i in [0, n), in parallel when n is large enough to pay for the threads.
template <class F>
void parallel_for(index_t n, F&& f, [[maybe_unused]] index_t min_parallel = 2) {
#ifdef _OPENMP
    if (n >= min_parallel && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(dynamic, 1)
        for (index_t i = 0; i < n; ++i) f(i);
        return;
    }
#endif
    for (index_t i = 0; i < n; ++i) f(i);
}

/// Calls f(i) for i in [0, n), then g(j) for j in [0, m), in one parallel region when `parallel`
/// (one fork and join instead of two; the loops are separated by a barrier, so g may read what f
/// wrote).
template <class F, class G>
void parallel_for_then(index_t n, F&& f, index_t m, G&& g, [[maybe_unused]] bool parallel = true) {
#ifdef _OPENMP
    if (parallel && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
        {
#pragma omp for schedule(dynamic, 1)
            for (index_t i = 0; i < n; ++i) f(i);
#pragma omp for schedule(dynamic, 1)
            for (index_t j = 0; j < m; ++j) g(j);
        }
        return;
    }
#endif
    for (index_t i = 0; i < n; ++i) f(i);
    for (index_t j = 0; j < m; ++j) g(j);
}

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

} // namespace celltx::cpu_detail
