#pragma once
// Thread counts in tests. Tests that compare thread counts carry the decorator
// *celltx_test::needs_openmp(): built without OpenMP (CELLTX_OPENMP=OFF, the sanitizer preset) there
// is only one thread, and such a test is reported skipped, never passed by comparing a run with itself.
#include <string>
#include <boost/test/unit_test.hpp>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace celltx_test {

inline constexpr bool have_openmp =
#ifdef _OPENMP
    true;
#else
    false;
#endif

inline int thread_count() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
inline void set_thread_count([[maybe_unused]] int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

/// Sets the thread count for a scope.
class ScopedThreads {
public:
    explicit ScopedThreads(int n) : saved_(thread_count()) { set_thread_count(n); }
    ~ScopedThreads() { set_thread_count(saved_); }
    ScopedThreads(const ScopedThreads&) = delete;
    ScopedThreads& operator=(const ScopedThreads&) = delete;

private:
    int saved_;
};

/// Boost.Test precondition: the test needs OpenMP threads (else it is reported skipped).
inline auto needs_openmp() {
    return boost::unit_test::precondition([](boost::unit_test::test_unit_id) {
        boost::test_tools::assertion_result r(have_openmp);
        if (!have_openmp) r.message() << "built without OpenMP (CELLTX_OPENMP=OFF): one thread only, nothing to compare";
        return r;
    });
}

} // namespace celltx_test
