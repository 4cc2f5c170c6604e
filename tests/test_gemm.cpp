// ops::gemm on the CPU: the packed AVX2/FMA float kernel (and the Eigen path for double and small
// products) against a float64 reference over shapes, transposes, alpha/beta and leading dimensions;
// beta = 0 ignores NaNs in C; columns past n are never touched; bits independent of the thread count.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/ops.hpp"
#include "celltx/core/rng.hpp"
#include "threads.hpp"

using namespace celltx;

namespace {
template <class T>
double check_case(index_t m, index_t n, index_t k, bool ta, bool tb, int ab, std::uint64_t seed, int& untouched_violations) {
    CounterRng rng(seed);
    std::uint64_t at = 0;
    auto draw = [&] { return static_cast<T>(2.0 * rng.uniform(at++) - 1.0); };
    const T alpha = ab == 2 ? T(-0.5) : T(1), beta = ab == 0 ? T(0) : (ab == 1 ? T(1) : T(0.25));
    const index_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
    std::vector<T> A(static_cast<std::size_t>((ta ? k : m) * lda)), B(static_cast<std::size_t>((tb ? n : k) * ldb)),
        C(static_cast<std::size_t>(m * ldc));
    for (auto& v : A) v = draw();
    for (auto& v : B) v = draw();
    for (auto& v : C) v = ab == 0 ? std::numeric_limits<T>::quiet_NaN() : draw();
    const std::vector<T> C0 = C;
    ops::gemm(cpu{}, ta, tb, m, n, k, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    double worst = 0;
    for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < ldc; ++j) {
            const T c = C[static_cast<std::size_t>(i * ldc + j)], c0 = C0[static_cast<std::size_t>(i * ldc + j)];
            if (j >= n) {
                if (!(std::isnan(c) && std::isnan(c0)) && c != c0) ++untouched_violations;
                continue;
            }
            double s = 0, sa = 0;
            for (index_t p = 0; p < k; ++p) {
                const double a = ta ? A[static_cast<std::size_t>(p * lda + i)] : A[static_cast<std::size_t>(i * lda + p)];
                const double b = tb ? B[static_cast<std::size_t>(j * ldb + p)] : B[static_cast<std::size_t>(p * ldb + j)];
                s += a * b;
                sa += std::abs(a * b);
            }
            const double bc = beta == T(0) ? 0.0 : static_cast<double>(beta) * c0;
            const double ref = static_cast<double>(alpha) * s + bc;
            const double e = std::abs(static_cast<double>(c) - ref) / (std::abs(static_cast<double>(alpha)) * sa + std::abs(bc) + 1e-30);
            worst = std::isfinite(e) ? std::max(worst, e) : std::numeric_limits<double>::infinity();
        }
    return worst;
}
} // namespace

BOOST_AUTO_TEST_SUITE(gemm)

BOOST_AUTO_TEST_CASE(float_and_double_match_a_float64_reference) {
    const index_t sizes[] = {1, 5, 7, 16, 17, 33, 150};
    const index_t ks[] = {1, 3, 256, 257, 600};
    double worst_f = 0, worst_d = 0;
    int untouched = 0, cases = 0;
    std::uint64_t seed = 1;
    for (index_t m : sizes)
        for (index_t n : sizes)
            for (index_t k : ks)
                for (int t = 0; t < 4; ++t) {
                    const int ab = static_cast<int>((m + n + k + t) % 3);
                    worst_f = std::max(worst_f, check_case<float>(m, n, k, t & 1, t & 2, ab, seed++, untouched));
                    if ((m * n) % 5 == 0) worst_d = std::max(worst_d, check_case<double>(m, n, k, t & 1, t & 2, ab, seed++, untouched));
                    ++cases;
                }
    BOOST_TEST_MESSAGE(cases << " float cases, worst relative error " << worst_f << " (float), " << worst_d << " (double)");
    BOOST_TEST(worst_f < 1e-5);   // relative to Σ|a·b|: a few float ulps per accumulated term
    BOOST_TEST(worst_d < 1e-13);
    BOOST_TEST(untouched == 0);
}

BOOST_AUTO_TEST_CASE(large_products_are_bit_identical_for_one_and_two_threads, *celltx_test::needs_openmp()) {
#ifdef _OPENMP
    struct S { index_t m, n, k; bool ta, tb; } shapes[] = {{700, 333, 900, false, true}, {257, 1000, 513, true, false}, {97, 97, 4000, true, true}};
    const int before = omp_get_max_threads();
    for (auto s : shapes) {
        CounterRng rng(9);
        std::vector<float> A(static_cast<std::size_t>(s.m * s.k)), B(static_cast<std::size_t>(s.k * s.n)), C1(static_cast<std::size_t>(s.m * s.n)),
            C2(C1.size());
        for (std::size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(rng.normal(i));
        for (std::size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(rng.normal(A.size() + i));
        for (int t : {1, 2}) {
            omp_set_num_threads(t);
            ops::gemm(cpu{}, s.ta, s.tb, s.m, s.n, s.k, 0.7f, A.data(), s.ta ? s.m : s.k, B.data(), s.tb ? s.k : s.n, 0.0f,
                      (t == 1 ? C1 : C2).data(), s.n);
        }
        BOOST_TEST(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
    }
    omp_set_num_threads(before);
#else
    BOOST_TEST_MESSAGE("built without OpenMP: one thread only");
#endif
}

// A weight packed once (sgemm::pack_b, as the dense Type I block does) and multiplied by
// run_packed_b gives ops::gemm's bits: the same micro-kernel over the same k blocks. ops::gemm itself
// is checked against float64 above.
BOOST_AUTO_TEST_CASE(a_b_operand_packed_once_gives_the_bits_of_ops_gemm) {
#if CELLTX_PACKED_GEMM
    if (!cpu_detail::sgemm::available()) {
        BOOST_TEST_MESSAGE("no AVX2+FMA: the packed kernel does not run here");
        return;
    }
    struct S { index_t m, n, k; bool ta, tb; float beta; } shapes[] = {
        {128, 256, 64, false, true, 0.0f}, {79, 64, 256, false, false, 1.0f}, {7, 40, 300, true, false, 0.5f}, {64, 33, 257, true, true, 0.0f}};
    for (auto s : shapes) {
        CounterRng rng(11);
        const index_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
        std::vector<float> A(static_cast<std::size_t>(s.m * s.k)), B(static_cast<std::size_t>(s.k * s.n)), C0(static_cast<std::size_t>(s.m * s.n));
        for (std::size_t i = 0; i < A.size(); ++i) A[i] = static_cast<float>(rng.normal(i));
        for (std::size_t i = 0; i < B.size(); ++i) B[i] = static_cast<float>(rng.normal(A.size() + i));
        for (std::size_t i = 0; i < C0.size(); ++i) C0[i] = static_cast<float>(rng.normal(A.size() + B.size() + i));
        std::vector<float> C1 = C0, C2 = C0;
        ops::gemm(cpu{}, s.ta, s.tb, s.m, s.n, s.k, 1.0f, A.data(), lda, B.data(), ldb, s.beta, C1.data(), s.n);
        auto packed = Tensor<float>::uninitialized(Shape{cpu_detail::sgemm::packed_b_size(s.k, s.n)});  // 64-byte aligned
        cpu_detail::sgemm::pack_b(s.tb, B.data(), ldb, s.k, s.n, packed.data());
        cpu_detail::sgemm::run_packed_b(s.ta, s.m, s.n, s.k, 1.0f, A.data(), lda, packed.data(), s.beta, C2.data(), s.n);
        BOOST_TEST(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
    }
#else
    BOOST_TEST_MESSAGE("built without the packed GEMM");
#endif
}

BOOST_AUTO_TEST_SUITE_END()
