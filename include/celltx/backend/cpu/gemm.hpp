#pragma once
// Row-major GEMM on the CPU.
//  - float on x86-64 CPUs with AVX2 and FMA (checked at run time, whatever the build flags): a packed
//    GEMM with a 6×16 FMA micro-kernel, which runs at this machine's peak (117 GFLOP/s a core; a
//    16-lane AVX-512 kernel measured the same on Zen 4). op(B) is packed, a transposed A too; a
//    row-major A is read in place. Eigen compiled for baseline x86-64 only has SSE2, and runs at
//    about half this speed; the State model spends three quarters of its step in GEMMs.
//  - double, other CPUs, and products of fewer than 2^15 multiply-adds: Eigen.
// The packed path splits C into tiles, one task each, and sums every element over k in the same
// fixed blocks of 256, so its results do not depend on the thread count (Eigen's k blocking does).
// Products below 2^23 multiply-adds run on one thread: a parallel region costs more than it saves
// there, and far more on a loaded machine, where a descheduled team member stalls the barrier.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>
#include "celltx/backend/cpu/eigen.hpp"
#include "celltx/backend/cpu/parallel.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(CELLTX_NO_PACKED_GEMM)
#define CELLTX_PACKED_GEMM 1
#include <immintrin.h>
#else
#define CELLTX_PACKED_GEMM 0
#endif

namespace celltx::cpu_detail {

/// Below this many multiply-adds a float GEMM goes to Eigen, not the packed kernel.
inline constexpr double packed_gemm_min_work = 32768.0;
/// Below this many multiply-adds a GEMM runs on the calling thread only.
inline constexpr double gemm_parallel_work = 8388608.0;

/// C = alpha·A·B + beta·C through Eigen (beta == 0 ignores C).
template <class T, class A, class Bm>
void eigen_gemm(MatrixMap<T>& c, const A& a, const Bm& b, T alpha, T beta) {
    if (beta == T(0)) c.noalias() = alpha * (a * b);
    else {
        if (beta != T(1)) c *= beta;
        c.noalias() += alpha * (a * b);
    }
}

#if CELLTX_PACKED_GEMM
namespace sgemm {

inline constexpr index_t mr = 6, nr = 16;  // micro-tile: 12 accumulators of 8 floats
inline constexpr index_t kc = 256;         // k block: a 6×256 A panel and a 256×16 B panel fit L1
inline constexpr index_t tile_m = 192;     // a task's tile of C: its 192×256 A block stays in L2 (96 rows were 5% slower at k = 2048)
inline constexpr index_t tile_n = 256;

/// Whether this CPU runs the AVX2+FMA micro-kernel (asked once).
inline bool available() {
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return ok;
}

/// dst[p·ldd + c] = src[c·lds + p] for an 8×8 block (AVX transpose).
__attribute__((target("avx2,fma"))) inline void transpose8x8(const float* src, index_t lds, float* dst, index_t ldd) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

/// op(B) rows [p0, p0+kb), columns [j0, j0+cols) (cols <= nr) -> dst[p·nr + c], zero-padded to nr columns.
inline void pack_b_panel(bool trans, const float* B, index_t ldb, index_t p0, index_t kb, index_t j0, index_t cols, float* dst) {
    if (cols < nr) std::fill_n(dst, kb * nr, 0.0f);
    if (!trans) {
        if (cols == nr)  // a constant-size copy the compiler inlines: a library call per 64 bytes cost as much as the copy
            for (index_t p = 0; p < kb; ++p) std::memcpy(dst + p * nr, B + (p0 + p) * ldb + j0, nr * sizeof(float));
        else
            for (index_t p = 0; p < kb; ++p) std::memcpy(dst + p * nr, B + (p0 + p) * ldb + j0, static_cast<std::size_t>(cols) * sizeof(float));
        return;
    }
    // op(B)(p, j) = B[j·ldb + p]: a transpose, by 8×8 blocks where whole.
    index_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        const float* src = B + (j0 + c) * ldb + p0;
        index_t p = 0;
        for (; p + 8 <= kb; p += 8) transpose8x8(src + p, ldb, dst + p * nr + c, nr);
        for (; p < kb; ++p)
            for (index_t q = 0; q < 8; ++q) dst[p * nr + c + q] = src[q * ldb + p];
    }
    for (; c < cols; ++c) {
        const float* src = B + (j0 + c) * ldb + p0;
        for (index_t p = 0; p < kb; ++p) dst[p * nr + c] = src[p];
    }
}

/// A transposed (op(A)(r, p) = A[p·lda + r]): rows [i0, i0+rows) of op(A), columns [p0, p0+kb) ->
/// panels of mr rows stored by column (element (r, p) at p·mr + r), panel q at dst + q·mr·kb, the
/// last one zero-padded. Each row of A is read once, in order, into every whole panel. (A row-major
/// A needs no packing: the micro-kernel reads it in place.)
inline void pack_a_transposed(const float* A, index_t lda, index_t i0, index_t rows, index_t p0, index_t kb, float* dst) {
    const index_t whole = rows / mr * mr;
    for (index_t p = 0; p < kb; ++p) {
        const float* src = A + (p0 + p) * lda + i0;
        for (index_t ip = 0; ip < whole; ip += mr) std::memcpy(dst + ip * kb + p * mr, src + ip, mr * sizeof(float));
    }
    if (whole < rows) {
        float* d = dst + whole * kb;
        std::fill_n(d, kb * mr, 0.0f);
        for (index_t p = 0; p < kb; ++p)
            for (index_t r = 0; r < rows - whole; ++r) d[p * mr + r] = A[(p0 + p) * lda + i0 + whole + r];
    }
}

/// op(B) panels [first, last) of the k block [p0, p0+kb) -> panel jp at dst + jp·nr·kb (pack_b_panel's
/// layout). Row-major B is read row by row across the whole panels: each row's segment once, in order.
inline void pack_b_panels(bool trans, const float* B, index_t ldb, index_t p0, index_t kb, index_t n, index_t first, index_t last,
                          float* dst) {
    index_t jp = first;
    if (!trans) {
        const index_t whole_end = std::max(first, std::min(last, n / nr));
        for (index_t p = 0; p < kb; ++p) {
            const float* src = B + (p0 + p) * ldb;
            for (index_t q = first; q < whole_end; ++q) std::memcpy(dst + q * nr * kb + p * nr, src + q * nr, nr * sizeof(float));
        }
        jp = whole_end;
    }
    for (; jp < last; ++jp) pack_b_panel(trans, B, ldb, p0, kb, jp * nr, std::min(nr, n - jp * nr), dst + jp * nr * kb);
}

/// C[rows, cols] (rows <= mr, cols <= nr) = alpha·(a·b) (+ beta·C when read_c) over kb packed steps of
/// b. ByRow: a's rows are `lda` apart (row-major A read in place; rows past `rows` repeat the last one,
/// whose results are not stored); else a holds its columns packed (element (r, p) at p·mr + r).
template <bool ByRow>
__attribute__((target("avx2,fma"))) inline void kernel(index_t kb, const float* a, index_t lda, const float* b, float* C, index_t ldc,
                                                      index_t rows, index_t cols, float alpha, float beta, bool read_c) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    constexpr index_t step = ByRow ? 1 : mr;
    const auto row = [&](index_t r) { return ByRow ? a + std::min(r, rows - 1) * lda : a + r; };
    const float *a0 = row(0), *a1 = row(1), *a2 = row(2), *a3 = row(3), *a4 = row(4), *a5 = row(5);
    for (index_t p = 0; p < kb; ++p, b += nr) {
        const index_t o = p * step;
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 s = _mm256_broadcast_ss(a0 + o);
        c00 = _mm256_fmadd_ps(s, b0, c00);
        c01 = _mm256_fmadd_ps(s, b1, c01);
        s = _mm256_broadcast_ss(a1 + o);
        c10 = _mm256_fmadd_ps(s, b0, c10);
        c11 = _mm256_fmadd_ps(s, b1, c11);
        s = _mm256_broadcast_ss(a2 + o);
        c20 = _mm256_fmadd_ps(s, b0, c20);
        c21 = _mm256_fmadd_ps(s, b1, c21);
        s = _mm256_broadcast_ss(a3 + o);
        c30 = _mm256_fmadd_ps(s, b0, c30);
        c31 = _mm256_fmadd_ps(s, b1, c31);
        s = _mm256_broadcast_ss(a4 + o);
        c40 = _mm256_fmadd_ps(s, b0, c40);
        c41 = _mm256_fmadd_ps(s, b1, c41);
        s = _mm256_broadcast_ss(a5 + o);
        c50 = _mm256_fmadd_ps(s, b0, c50);
        c51 = _mm256_fmadd_ps(s, b1, c51);
    }
    alignas(32) float acc[mr * nr];
    const __m256 regs[mr * 2] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (rows == mr && cols == nr) {  // full tile: straight into C
        for (index_t r = 0; r < mr; ++r)
            for (index_t h = 0; h < 2; ++h) {
                float* c = C + r * ldc + 8 * h;
                __m256 v = regs[2 * r + h];
                if (alpha != 1.0f) v = _mm256_mul_ps(va, v);
                if (read_c) v = _mm256_add_ps(v, beta == 1.0f ? _mm256_loadu_ps(c) : _mm256_mul_ps(vb, _mm256_loadu_ps(c)));
                _mm256_storeu_ps(c, v);
            }
        return;
    }
    for (index_t i = 0; i < mr * 2; ++i) _mm256_store_ps(acc + 8 * i, regs[i]);
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < cols; ++c) {
            float v = acc[r * nr + c];
            if (alpha != 1.0f) v = alpha * v;
            if (read_c) v = v + (beta == 1.0f ? C[r * ldc + c] : beta * C[r * ldc + c]);
            C[r * ldc + c] = v;
        }
}

/// One k block [p0, p0 + kbk) of C's tile rows [i0, i0 + rows) × columns [j0, j0 + cols): the
/// micro-kernel over the tile's panels. A row-major A is read in place; a transposed one from its
/// packed k block `ap_block` (panel of row i at + i·kbk). `bp_block` is packed op(B)'s k block.
/// The first block applies beta, later ones accumulate: every element sums the same blocks in order.
inline void tile_k_block(bool trans_a, const float* A, index_t lda, const float* ap_block, const float* bp_block, index_t m, index_t n,
                         index_t i0, index_t rows, index_t j0, index_t cols, index_t p0, index_t kbk, float alpha, float beta, float* C,
                         index_t ldc) {
    const bool read_c = p0 > 0 || beta != 0.0f;
    const float b_eff = p0 > 0 ? 1.0f : beta;
    for (index_t jc = j0; jc < j0 + cols; jc += nr) {
        const float* bpanel = bp_block + jc * kbk;
        const index_t cc = std::min(nr, n - jc);
        for (index_t ic = i0; ic < i0 + rows; ic += mr) {
            float* c = C + ic * ldc + jc;
            if (trans_a) kernel<false>(kbk, ap_block + ic * kbk, 0, bpanel, c, ldc, std::min(mr, m - ic), cc, alpha, b_eff, read_c);
            else kernel<true>(kbk, A + ic * lda + p0, lda, bpanel, c, ldc, std::min(mr, m - ic), cc, alpha, b_eff, read_c);
        }
    }
}

/// The packed GEMM: op(B), and op(A) when transposed, are packed whole (k blocks of micro-panels); a
/// row-major A is read in place. Then tasks of 192×256 tiles of C run the micro-kernel; fine tasks
/// keep both threads busy when one is late.
inline void run(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, float alpha, const float* A, index_t lda,
                const float* B, index_t ldb, float beta, float* C, index_t ldc) {
    const index_t a_panels = (m + mr - 1) / mr, b_panels = (n + nr - 1) / nr;
    const index_t mpad = a_panels * mr, npad = b_panels * nr, kblocks = (k + kc - 1) / kc;
    // Block kb of packed op(A) starts at kb·kc·mpad, its panel ip at + ip·mr·kbk (op(B) likewise).
    const index_t a_size = trans_a ? (k * mpad + nr - 1) / nr * nr : 0;  // keeps op(B) 64-byte aligned
    auto packed = Tensor<float>::uninitialized(Shape{a_size + k * npad});
    float* const ap = packed.data();
    float* const bp = ap + a_size;

    constexpr index_t group = 8;  // micro-panels per packing task
    const index_t a_groups = trans_a ? (a_panels + group - 1) / group : 0, b_groups = (b_panels + group - 1) / group;
    const auto pack = [&](index_t t) {
        const index_t kb = t / (a_groups + b_groups), g = t % (a_groups + b_groups), p0 = kb * kc, kbk = std::min(kc, k - p0);
        if (g < a_groups) {
            const index_t i0 = g * group * mr, rows = std::min(group * mr, m - i0);
            pack_a_transposed(A, lda, i0, rows, p0, kbk, ap + p0 * mpad + i0 * kbk);
        } else {
            const index_t first = (g - a_groups) * group, last = std::min(b_panels, first + group);
            pack_b_panels(trans_b, B, ldb, p0, kbk, n, first, last, bp + p0 * npad);
        }
    };
    const index_t row_tiles = (m + tile_m - 1) / tile_m, col_tiles = (n + tile_n - 1) / tile_n;
    const auto compute = [&](index_t t) {
        const index_t i0 = (t / col_tiles) * tile_m, rows = std::min(tile_m, m - i0);
        const index_t j0 = (t % col_tiles) * tile_n, cols = std::min(tile_n, n - j0);
        for (index_t p0 = 0; p0 < k; p0 += kc)
            tile_k_block(trans_a, A, lda, ap + p0 * mpad, bp + p0 * npad, m, n, i0, rows, j0, cols, p0, std::min(kc, k - p0), alpha, beta, C, ldc);
    };
    const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
    parallel_for_then(kblocks * (a_groups + b_groups), pack, row_tiles * col_tiles, compute, work >= gemm_parallel_work);
}

/// Floats op(B) [k, n] takes packed (pack_b's layout, as run packs it).
inline index_t packed_b_size(index_t k, index_t n) { return k * ((n + nr - 1) / nr * nr); }

/// op(B) [k, n] packed once for several run_packed_b calls: k blocks of zero-padded micro-panels.
inline void pack_b(bool trans_b, const float* B, index_t ldb, index_t k, index_t n, float* dst) {
    const index_t npad = (n + nr - 1) / nr * nr;
    for (index_t p0 = 0; p0 < k; p0 += kc) pack_b_panels(trans_b, B, ldb, p0, std::min(kc, k - p0), n, 0, npad / nr, dst + p0 * npad);
}

/// C = alpha·op(A)·B + beta·C on the calling thread, with B packed by pack_b: a product repeated
/// against one weight matrix packs it once. Each element sums over the same k blocks in the same
/// order as run, so the results are run's, bit for bit.
inline void run_packed_b(bool trans_a, index_t m, index_t n, index_t k, float alpha, const float* A, index_t lda, const float* bp, float beta,
                         float* C, index_t ldc) {
    const index_t mpad = (m + mr - 1) / mr * mr, npad = (n + nr - 1) / nr * nr;
    thread_local std::vector<float> apack;  // a transposed A's k block (a row-major A is read in place)
    if (trans_a && apack.size() < static_cast<std::size_t>(mpad * kc)) apack.resize(static_cast<std::size_t>(mpad * kc));
    for (index_t p0 = 0; p0 < k; p0 += kc) {
        const index_t kbk = std::min(kc, k - p0);
        if (trans_a) pack_a_transposed(A, lda, 0, m, p0, kbk, apack.data());
        tile_k_block(trans_a, A, lda, apack.data(), bp + p0 * npad, m, n, 0, m, 0, n, p0, kbk, alpha, beta, C, ldc);
    }
}

} // namespace sgemm
#endif

} // namespace celltx::cpu_detail

namespace celltx::cpu_kernels {

/// The CPU's dense products (ops::gemm).
struct dense {
    template <Scalar T>
    static void gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda, const T* B,
                     index_t ldb, T beta, T* C, index_t ldc) {
        using namespace cpu_detail;
        auto c = mat(C, m, n, ldc);
        if (m == 0 || n == 0) return;
        if (k == 0) {
            if (beta == T(0)) c.setZero(); else c *= beta;
            return;
        }
#if CELLTX_PACKED_GEMM
        if constexpr (std::is_same_v<T, float>) {
            if (static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >= packed_gemm_min_work && sgemm::available()) {
                sgemm::run(trans_a, trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
                return;
            }
        }
#endif
        const auto a = mat(A, trans_a ? k : m, trans_a ? m : k, lda);
        const auto b = mat(B, trans_b ? n : k, trans_b ? k : n, ldb);
        if (!trans_a && !trans_b) eigen_gemm(c, a, b, alpha, beta);
        else if (!trans_a && trans_b) eigen_gemm(c, a, b.transpose(), alpha, beta);
        else if (trans_a && !trans_b) eigen_gemm(c, a.transpose(), b, alpha, beta);
        else eigen_gemm(c, a.transpose(), b.transpose(), alpha, beta);
    }
};

} // namespace celltx::cpu_kernels
