#pragma once
// The cross-backend op harness (after ggml's test-backend-ops): every op of backend/ops.hpp is
// registered once (OpTests below), with a generator of cases (head widths 8 to 128, ragged and empty
// segments, grouped KV heads, odd sizes). For a backend B and scalar T, each case
//  1. draws fresh random inputs in double and rounds them to T; outputs the op assigns are poisoned
//     with NaN first, outputs it adds into are pre-filled with random values;
//  2. runs the op on B in T, the op on the CPU in double on the same (rounded) inputs — the
//     reference — and a naive implementation (plain loops) in T;
//  3. passes when the backend's normwise error against the reference is at most twice the naive
//     implementation's, plus a floor of a few units of T's rounding (an exact naive result leaves
//     the backend that floor), and every value the reference has is written (no NaN left).
// Ops with a backward (the attention, the norms, the activations, the gathers, the pairwise loss
// tiles, ...) are also checked on the CPU in double against central finite differences of their
// forward (check_backward). A backend that does not provide an op (its provides_* concept is false)
// lists it under missing_ops: the report says which ops a backend does not provide.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/backend/ops.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::testing {

// =================================================================================================
// Reports

struct OpCheck {
    std::string op, label, backend, scalar;
    bool implemented = true;
    bool ok = true;
    double error = 0.0, naive_error = 0.0, tolerance = 0.0;
    std::string detail;  ///< what failed
};

struct OpHarnessReport {
    std::vector<OpCheck> checks;
    std::vector<std::string> missing_ops;  ///< "op (scalar)" this backend lacks

    bool ok() const {
        return std::all_of(checks.begin(), checks.end(), [](const OpCheck& c) { return c.ok || !c.implemented; });
    }
    std::vector<const OpCheck*> failures() const {
        std::vector<const OpCheck*> f;
        for (const auto& c : checks)
            if (c.implemented && !c.ok) f.push_back(&c);
        return f;
    }
    std::string summary() const {
        std::size_t run = 0;
        for (const auto& c : checks) run += c.implemented;
        std::string s = fmt::format("{} checks run, {} failed, {} ops missing", run, failures().size(), missing_ops.size());
        for (const OpCheck* c : failures())
            s += fmt::format("\n  FAILED {} [{}] on {} ({}): error {:.3e} > tolerance {:.3e} (naive {:.3e}) {}", c->op, c->label, c->backend,
                             c->scalar, c->error, c->tolerance, c->naive_error, c->detail);
        for (const auto& n : missing_ops) s += "\n  missing: " + n;
        return s;
    }
};

// =================================================================================================
// The arrays of one op call

/// Inputs and outputs of one op call on the host: scalar arrays (in T) and index arrays. Which
/// output arrays the op assigns (poisoned) or adds into (pre-filled) is the op's choice in make().
template <class T>
struct OpArrays {
    std::vector<std::vector<T>> in, out;
    std::vector<std::vector<index_t>> idx;
    std::vector<double> host_out;  ///< results the op returns on the host (sums, norms, losses)

    template <class U>
    OpArrays<U> cast() const {
        OpArrays<U> r;
        for (const auto& v : in) r.in.emplace_back(v.begin(), v.end());
        for (const auto& v : out) r.out.emplace_back(v.begin(), v.end());
        r.idx = idx;
        r.host_out = host_out;
        return r;
    }
};

/// The same arrays in backend B's memory.
template <class T, class B>
struct StagedArrays {
    std::vector<Tensor<T, B>> in, out;
    std::vector<Tensor<index_t, B>> idx;
    std::vector<double> host_out;

    const T* i(std::size_t k) const { return in[k].data(); }
    T* o(std::size_t k) { return out[k].data(); }
    const index_t* x(std::size_t k) const { return idx[k].data(); }
};

namespace harness_detail {

template <class T, class B>
Tensor<T, B> stage(const std::vector<T>& v) {
    return from_host<T, B>(v.data(), Shape{static_cast<index_t>(v.size())});
}

/// Runs Op::call on backend B with the arrays in T; returns the outputs on the host in double.
template <class Op, class B, class T>
OpArrays<double> run_on(const typename Op::Case& c, const OpArrays<T>& a) {
    StagedArrays<T, B> s;
    for (const auto& v : a.in) s.in.push_back(stage<T, B>(v));
    for (const auto& v : a.out) s.out.push_back(stage<T, B>(v));
    for (const auto& v : a.idx) s.idx.push_back(stage<index_t, B>(v));
    Op::template call<B, T>(c, s);
    OpArrays<double> r;
    for (const auto& t : s.out) {
        const Tensor<T, cpu> h = to_host(t);
        r.out.emplace_back(h.data(), h.data() + h.numel());
    }
    r.host_out = s.host_out;
    return r;
}

/// max |a − ref| / max |ref| over the finite reference values (absolute when the reference is all zero); a NaN where the reference
/// is finite, or a non-finite value that differs from the reference's, is an error of +inf.
inline double normwise_error(std::span<const double> a, std::span<const double> ref, std::string* detail = nullptr) {
    if (a.size() != ref.size()) {
        if (detail) *detail = fmt::format("{} values for {} expected", a.size(), ref.size());
        return std::numeric_limits<double>::infinity();
    }
    double scale = 0.0;
    for (double r : ref)
        if (std::isfinite(r)) scale = std::max(scale, std::abs(r));
    if (scale == 0.0) scale = 1.0;  // an all-zero reference (e.g. dQ with one key per sample): absolute error
    double e = 0.0;
    std::size_t worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(ref[i]) || !std::isfinite(a[i])) {
            const bool same = (std::isnan(ref[i]) && std::isnan(a[i])) || a[i] == ref[i];
            if (!same) {
                if (detail) *detail = fmt::format("value {} at {} where the reference has {}", a[i], i, ref[i]);
                return std::numeric_limits<double>::infinity();
            }
            continue;
        }
        const double ei = std::abs(a[i] - ref[i]) / scale;
        if (ei > e) e = ei, worst = i;
    }
    // Where it is worst (printed only when a check fails): which element, and both values.
    if (detail && e > 0.0) *detail = fmt::format("error {:.3e}, worst at {} of {}: {} where the reference has {}", e, worst, a.size(), a[worst], ref[worst]);
    return e;
}

/// Fresh random values N(0, scale²) (or uniform in [lo, hi) when lo < hi) from (seed, stream).
inline std::vector<double> random_values(std::size_t n, std::uint64_t seed, std::uint64_t stream, double scale = 1.0) {
    CounterRng rng(seed, stream);
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = scale * rng.normal(i);
    return v;
}
inline std::vector<double> uniform_values(std::size_t n, std::uint64_t seed, std::uint64_t stream, double lo, double hi) {
    CounterRng rng(seed, stream);
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * rng.uniform(i);
    return v;
}
inline std::vector<double> poison(std::size_t n) { return std::vector<double>(n, std::numeric_limits<double>::quiet_NaN()); }

/// Offsets of `sizes` (a CSR pointer vector).
inline std::vector<index_t> offsets_of(const std::vector<index_t>& sizes) {
    std::vector<index_t> o(sizes.size() + 1, 0);
    for (std::size_t i = 0; i < sizes.size(); ++i) o[i + 1] = o[i] + sizes[i];
    return o;
}

template <class T>
constexpr double unit_roundoff() {
    return static_cast<double>(std::numeric_limits<T>::epsilon()) / 2.0;
}

} // namespace harness_detail

// =================================================================================================
// The ops. Each test type: `name`; `Case` and `cases()` (the generator); `label(case)`;
// `make(case, seed)` (inputs in double; outputs poisoned or pre-filled); `available<B, T>` (the op's
// provides_* concept); `call<B, T>(case, staged)` (the op through ops::); `naive<T>(case, arrays)`
// (plain loops in T, same semantics).

namespace op_tests {

using harness_detail::offsets_of;
using harness_detail::poison;
using harness_detail::random_values;
using harness_detail::uniform_values;

// ---- dense ---------------------------------------------------------------------------------------

struct Gemm {
    static constexpr const char* name = "gemm";
    struct Case {
        bool ta, tb;
        index_t m, n, k;
        double alpha, beta;
    };
    static std::vector<Case> cases() {
        return {{false, false, 7, 5, 3, 1.0, 0.0},   {false, true, 33, 17, 64, 0.7, 0.0}, {true, false, 20, 40, 9, 1.0, 1.0},
                {true, true, 13, 37, 45, -1.3, 0.5}, {false, false, 64, 130, 300, 1.0, 0.0}, {false, true, 5, 0, 7, 1.0, 0.0},
                {true, false, 6, 4, 0, 1.0, 0.5}};
    }
    static std::string label(const Case& c) {
        return fmt::format("{}{} m={} n={} k={} a={} b={}", c.ta ? "T" : "N", c.tb ? "T" : "N", c.m, c.n, c.k, c.alpha, c.beta);
    }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.m * c.k), seed, 1), random_values(static_cast<std::size_t>(c.k * c.n), seed, 2)};
        a.out = {c.beta == 0.0 ? poison(static_cast<std::size_t>(c.m * c.n)) : random_values(static_cast<std::size_t>(c.m * c.n), seed, 3)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_gemm<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::gemm(B{}, c.ta, c.tb, c.m, c.n, c.k, static_cast<T>(c.alpha), s.i(0), c.ta ? c.m : c.k, s.i(1), c.tb ? c.k : c.n,
                  static_cast<T>(c.beta), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& A = a.in[0];
        const auto& Bm = a.in[1];
        auto& C = a.out[0];
        for (index_t i = 0; i < c.m; ++i)
            for (index_t j = 0; j < c.n; ++j) {
                T s = 0;
                for (index_t p = 0; p < c.k; ++p)
                    s += A[static_cast<std::size_t>(c.ta ? p * c.m + i : i * c.k + p)] * Bm[static_cast<std::size_t>(c.tb ? j * c.k + p : p * c.n + j)];
                T& o = C[static_cast<std::size_t>(i * c.n + j)];
                o = static_cast<T>(c.alpha) * s + (c.beta == 0.0 ? T(0) : static_cast<T>(c.beta) * o);
            }
    }
};

// ---- element-wise --------------------------------------------------------------------------------

/// Shared shape of the one-array element-wise ops: n elements (odd sizes, a block boundary, empty).
struct ElementwiseCase {
    index_t n;
};
inline std::vector<ElementwiseCase> elementwise_cases() { return {{1}, {37}, {8193}, {0}}; }
inline std::string elementwise_label(const ElementwiseCase& c) { return fmt::format("n={}", c.n); }

struct Fill {
    static constexpr const char* name = "fill";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t) {
        OpArrays<double> a;
        a.out = {poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_fill<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::fill(B{}, s.o(0), c.n, static_cast<T>(-2.5));
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        std::fill(a.out[0].begin(), a.out[0].end(), T(-2.5));
    }
};

struct Scale {
    static constexpr const char* name = "scale";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.out = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_scale<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::scale(B{}, s.o(0), c.n, static_cast<T>(0.37));
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (auto& v : a.out[0]) v *= T(0.37);
    }
};

struct Accumulate {
    static constexpr const char* name = "accumulate";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        a.out = {random_values(static_cast<std::size_t>(c.n), seed, 2)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_accumulate<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::accumulate(B{}, s.i(0), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) a.out[0][i] += a.in[0][i];
    }
};

struct Axpby {
    static constexpr const char* name = "axpby";
    struct Case {
        index_t n;
        double a, b;
    };
    static std::vector<Case> cases() { return {{37, 0.5, 0.5}, {8193, -1.0, 1.0}, {5, 2.5, 0.0}, {0, 1.0, 1.0}}; }
    static std::string label(const Case& c) { return fmt::format("n={} a={} b={}", c.n, c.a, c.b); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        a.out = {c.b == 0.0 ? poison(static_cast<std::size_t>(c.n)) : random_values(static_cast<std::size_t>(c.n), seed, 2)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_axpby<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::axpby(B{}, c.n, static_cast<T>(c.a), s.i(0), static_cast<T>(c.b), s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i)
            a.out[0][i] = static_cast<T>(c.a) * a.in[0][i] + (c.b == 0.0 ? T(0) : static_cast<T>(c.b) * a.out[0][i]);
    }
};

struct ShiftDiv {
    static constexpr const char* name = "shift_div";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        a.out = {poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_shift_div<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::shift_div(B{}, s.i(0), static_cast<T>(0.0025), static_cast<T>(-3.2), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) a.out[0][i] = T(-3.2) + a.in[0][i] / T(0.0025);
    }
};

struct SignAxpy {
    static constexpr const char* name = "sign_axpy";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        std::vector<double> x = random_values(static_cast<std::size_t>(c.n), seed, 1);
        for (std::size_t i = 0; i < x.size(); i += 5) x[i] = 0.0;  // sign(0) = 0
        a.in = {x};
        a.out = {random_values(static_cast<std::size_t>(c.n), seed, 2)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_sign_axpy<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::sign_axpy(B{}, c.n, static_cast<T>(-0.75), s.i(0), s.o(0));
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) {
            const T x = a.in[0][i];
            a.out[0][i] += x > T(0) ? T(-0.75) : (x < T(0) ? T(0.75) : T(0));
        }
    }
};

/// [rows, n] matrices: odd widths, one row, no rows.
struct MatrixCase {
    index_t rows, n;
};
inline std::vector<MatrixCase> matrix_cases() { return {{1, 9}, {37, 64}, {300, 7}, {0, 5}, {4, 1}}; }
inline std::string matrix_label(const MatrixCase& c) { return fmt::format("{}x{}", c.rows, c.n); }

struct AddRowVector {
    static constexpr const char* name = "add_row_vector";
    using Case = MatrixCase;
    static std::vector<Case> cases() { return matrix_cases(); }
    static std::string label(const Case& c) { return matrix_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        a.out = {random_values(static_cast<std::size_t>(c.rows * c.n), seed, 2)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_add_row_vector<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::add_row_vector(B{}, s.o(0), s.i(0), c.rows, c.n);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t r = 0; r < c.rows; ++r)
            for (index_t j = 0; j < c.n; ++j) a.out[0][static_cast<std::size_t>(r * c.n + j)] += a.in[0][static_cast<std::size_t>(j)];
    }
};

struct ColumnSum {
    static constexpr const char* name = "column_sum";
    struct Case {
        index_t rows, n;
        bool accumulate;
    };
    static std::vector<Case> cases() {
        std::vector<Case> cs;
        for (const auto& m : matrix_cases()) cs.push_back({m.rows, m.n, false}), cs.push_back({m.rows, m.n, true});
        return cs;
    }
    static std::string label(const Case& c) { return fmt::format("{}x{}{}", c.rows, c.n, c.accumulate ? " accumulate" : ""); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.rows * c.n), seed, 1)};
        a.out = {c.accumulate ? random_values(static_cast<std::size_t>(c.n), seed, 2) : poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_column_sum<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::column_sum(B{}, s.i(0), c.rows, c.n, s.o(0), c.accumulate);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t j = 0; j < c.n; ++j) {
            T s = 0;
            for (index_t r = 0; r < c.rows; ++r) s += a.in[0][static_cast<std::size_t>(r * c.n + j)];
            T& o = a.out[0][static_cast<std::size_t>(j)];
            o = c.accumulate ? o + s : s;
        }
    }
};

struct Copy2d {
    static constexpr const char* name = "copy_2d";
    struct Case {
        index_t rows, cols, ld_src, ld_dst;
    };
    static std::vector<Case> cases() { return {{5, 3, 7, 4}, {9, 8, 0, 16}, {1, 11, 11, 11}, {0, 3, 3, 3}, {6, 2, 2, 9}}; }
    static std::string label(const Case& c) { return fmt::format("{}x{} ld_src={} ld_dst={}", c.rows, c.cols, c.ld_src, c.ld_dst); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const index_t src_rows = c.ld_src == 0 ? 1 : c.rows;
        a.in = {random_values(static_cast<std::size_t>(std::max<index_t>(src_rows, 1) * std::max(c.ld_src, c.cols)), seed, 1)};
        a.out = {random_values(static_cast<std::size_t>(c.rows * c.ld_dst), seed, 2)};  // gaps between rows must survive
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_copy_2d<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::copy_2d(B{}, s.o(0), c.ld_dst, s.i(0), c.ld_src, c.rows, c.cols);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t r = 0; r < c.rows; ++r)
            for (index_t j = 0; j < c.cols; ++j)
                a.out[0][static_cast<std::size_t>(r * c.ld_dst + j)] = a.in[0][static_cast<std::size_t>(r * c.ld_src + j)];
    }
};

struct ScaleRows {
    static constexpr const char* name = "scale_rows";
    using Case = MatrixCase;
    static std::vector<Case> cases() { return matrix_cases(); }
    static std::string label(const Case& c) { return matrix_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        std::vector<double> f = random_values(static_cast<std::size_t>(c.rows), seed, 1);
        for (std::size_t r = 0; r < f.size(); r += 3) f[r] = 0.0;  // zero factors write exact zeros
        std::vector<double> x = random_values(static_cast<std::size_t>(c.rows * c.n), seed, 2);
        if (!x.empty()) x[0] = std::numeric_limits<double>::infinity();  // ... also over inf
        a.in = {f};
        a.out = {x};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_scale_rows<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::scale_rows(B{}, s.o(0), c.rows, c.n, s.i(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t r = 0; r < c.rows; ++r)
            for (index_t j = 0; j < c.n; ++j) {
                T& v = a.out[0][static_cast<std::size_t>(r * c.n + j)];
                const T f = a.in[0][static_cast<std::size_t>(r)];
                v = f == T(0) ? T(0) : v * f;
            }
    }
};

/// Value and derivative of each activation in T, written plainly.
template <class T>
T naive_activation(ActivationKind k, T x) {
    switch (k) {
        case ActivationKind::gelu: return T(0.5) * x * (T(1) + std::erf(x / std::sqrt(T(2))));
        case ActivationKind::gelu_tanh: {
            const T k0 = std::sqrt(T(2) / T(3.14159265358979323846));
            return T(0.5) * x * (T(1) + std::tanh(k0 * (x + T(0.044715) * x * x * x)));
        }
        case ActivationKind::relu: return x > T(0) ? x : T(0);
        case ActivationKind::silu: return x / (T(1) + std::exp(-x));
    }
    return x;
}
template <class T>
T naive_activation_derivative(ActivationKind k, T x) {
    switch (k) {
        case ActivationKind::gelu: {
            const T pdf = std::exp(-x * x / T(2)) / std::sqrt(T(2) * T(3.14159265358979323846));
            return T(0.5) * (T(1) + std::erf(x / std::sqrt(T(2)))) + x * pdf;
        }
        case ActivationKind::gelu_tanh: {
            const T k0 = std::sqrt(T(2) / T(3.14159265358979323846));
            const T t = std::tanh(k0 * (x + T(0.044715) * x * x * x));
            return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k0 * (T(1) + T(3) * T(0.044715) * x * x);
        }
        case ActivationKind::relu: return x > T(0) ? T(1) : T(0);
        case ActivationKind::silu: {
            const T s = T(1) / (T(1) + std::exp(-x));
            return s * (T(1) + x * (T(1) - s));
        }
    }
    return T(1);
}

struct ActivationCase {
    ActivationKind kind;
    index_t n;
};
inline std::vector<ActivationCase> activation_cases() {
    std::vector<ActivationCase> cs;
    for (ActivationKind k : {ActivationKind::gelu, ActivationKind::gelu_tanh, ActivationKind::relu, ActivationKind::silu})
        cs.push_back({k, 37}), cs.push_back({k, 8200});
    return cs;
}
inline const char* activation_label(ActivationKind k) {
    switch (k) {
        case ActivationKind::gelu: return "gelu";
        case ActivationKind::gelu_tanh: return "gelu_tanh";
        case ActivationKind::relu: return "relu";
        case ActivationKind::silu: return "silu";
    }
    return "?";
}

struct ActivationForward {
    static constexpr const char* name = "activation_forward";
    using Case = ActivationCase;
    static std::vector<Case> cases() { return activation_cases(); }
    static std::string label(const Case& c) { return fmt::format("{} n={}", activation_label(c.kind), c.n); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1, 2.0)};
        a.out = {poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_activation_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::activation_forward(B{}, c.kind, s.i(0), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) a.out[0][i] = naive_activation(c.kind, a.in[0][i]);
    }
};

struct ActivationBackward {
    static constexpr const char* name = "activation_backward";
    using Case = ActivationCase;
    static std::vector<Case> cases() { return activation_cases(); }
    static std::string label(const Case& c) { return fmt::format("{} n={}", activation_label(c.kind), c.n); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1, 2.0), random_values(static_cast<std::size_t>(c.n), seed, 2)};
        a.out = {random_values(static_cast<std::size_t>(c.n), seed, 3)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_activation_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::activation_backward(B{}, c.kind, s.i(0), s.i(1), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) a.out[0][i] += a.in[1][i] * naive_activation_derivative(c.kind, a.in[0][i]);
    }
};

struct SwigluForward {
    static constexpr const char* name = "swiglu_forward";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1, 2.0), random_values(static_cast<std::size_t>(c.n), seed, 2)};
        a.out = {poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_swiglu_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::swiglu_forward(B{}, s.i(0), s.i(1), s.o(0), c.n);
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) a.out[0][i] = naive_activation(ActivationKind::silu, a.in[0][i]) * a.in[1][i];
    }
};

struct SwigluBackward {
    static constexpr const char* name = "swiglu_backward";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return elementwise_cases(); }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto n = static_cast<std::size_t>(c.n);
        a.in = {random_values(n, seed, 1, 2.0), random_values(n, seed, 2), random_values(n, seed, 3)};
        a.out = {poison(n), poison(n)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_swiglu_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::swiglu_backward(B{}, s.i(0), s.i(1), s.i(2), s.o(0), s.o(1), c.n);
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        for (std::size_t i = 0; i < a.out[0].size(); ++i) {
            const T g = a.in[0][i], u = a.in[1][i], dh = a.in[2][i];
            a.out[0][i] = dh * u * naive_activation_derivative(ActivationKind::silu, g);
            a.out[1][i] = dh * naive_activation(ActivationKind::silu, g);
        }
    }
};

struct DropoutApply {
    static constexpr const char* name = "dropout_apply";
    struct Case {
        index_t n;
        double p;
        bool backward;
    };
    static std::vector<Case> cases() { return {{37, 0.1, false}, {8197, 0.3, false}, {37, 0.1, true}, {8197, 0.5, true}, {0, 0.2, false}}; }
    static std::string label(const Case& c) { return fmt::format("n={} p={}{}", c.n, c.p, c.backward ? " backward" : ""); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        a.out = {c.backward ? random_values(static_cast<std::size_t>(c.n), seed, 2) : poison(static_cast<std::size_t>(c.n))};
        return a;
    }
    static CounterRng rng() { return CounterRng(99, 7).substream(3); }
    template <class B, class T>
    static constexpr bool available = ops::provides_dropout_apply<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::dropout_apply(B{}, rng(), c.p, s.i(0), s.o(0), c.n, c.backward);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const CounterRng r = rng();
        const T scale = static_cast<T>(1.0 / (1.0 - c.p));
        for (std::size_t i = 0; i < a.out[0].size(); ++i) {
            const T m = r.uniform(i) > c.p ? scale : T(0);
            if (c.backward) a.out[0][i] += a.in[0][i] * m;
            else a.out[0][i] = a.in[0][i] * m;
        }
    }
};

/// Rows grouped by sample with genes: the shared ragged layout of the Type I ops.
struct RaggedLayout {
    std::vector<index_t> row_offsets, row_gene, key_offsets;
};
/// Samples with 0..3 keys and 0..4 rows (genes out of 50), from a seed.
inline RaggedLayout ragged_layout(index_t batch, std::uint64_t seed, bool empty_sample) {
    CounterRng rng(seed, 11);
    std::vector<index_t> rows, keys;
    RaggedLayout l;
    for (index_t b = 0; b < batch; ++b) {
        rows.push_back(empty_sample && b == 1 ? 0 : 1 + static_cast<index_t>(rng.below(2 * static_cast<std::uint64_t>(b), 4)));
        keys.push_back(empty_sample && b == 2 ? 0 : 1 + static_cast<index_t>(rng.below(2 * static_cast<std::uint64_t>(b) + 1, 3)));
    }
    l.row_offsets = offsets_of(rows);
    l.key_offsets = offsets_of(keys);
    for (index_t r = 0; r < l.row_offsets.back(); ++r) l.row_gene.push_back(static_cast<index_t>(rng.below(1000 + static_cast<std::uint64_t>(r), 50)));
    return l;
}

struct RowDropoutTest {
    static constexpr const char* name = "row_dropout";
    struct Case {
        index_t batch, width;
        double p;
    };
    static std::vector<Case> cases() { return {{4, 8, 0.3}, {7, 33, 0.1}, {1, 5, 0.5}}; }
    static std::string label(const Case& c) { return fmt::format("batch={} width={} p={}", c.batch, c.width, c.p); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        const RaggedLayout l = ragged_layout(c.batch, seed, c.batch > 2);
        OpArrays<double> a;
        a.out = {random_values(static_cast<std::size_t>(l.row_offsets.back() * c.width), seed, 1)};
        a.idx = {l.row_offsets, l.row_gene};
        return a;
    }
    static ops::RowDropout drop(const Case& c) { return {c.p, 5, 0x77, 3}; }
    template <class B, class T>
    static constexpr bool available = ops::provides_row_dropout<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const ops::RaggedRows rows{c.batch, s.idx[1].numel(), s.x(0), s.x(1)};
        ops::row_dropout(B{}, rows, drop(c), s.o(0), c.width);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& off = a.idx[0];
        const auto& gene = a.idx[1];
        const T scale = static_cast<T>(1.0 / (1.0 - c.p));
        for (index_t b = 0; b < c.batch; ++b) {
            const CounterRng r = drop(c).sample_rng(b);
            for (index_t row = off[static_cast<std::size_t>(b)]; row < off[static_cast<std::size_t>(b) + 1]; ++row)
                for (index_t j = 0; j < c.width; ++j) {
                    const double u = r.uniform(static_cast<std::uint64_t>(gene[static_cast<std::size_t>(row)] * c.width + j));
                    a.out[0][static_cast<std::size_t>(row * c.width + j)] *= u > c.p ? scale : T(0);
                }
        }
    }
};

// ---- normalisation -------------------------------------------------------------------------------

struct NormCase {
    index_t rows, d;
    bool affine;
};
inline std::vector<NormCase> norm_cases() { return {{1, 8}, {37, 64}, {5, 129}, {0, 16}, {300, 7, false}}; }
inline std::string norm_label(const NormCase& c) { return fmt::format("{}x{}{}", c.rows, c.d, c.affine ? "" : " no affine"); }

template <class T>
void naive_layer_norm(const std::vector<T>& x, const T* w, const T* b, index_t rows, index_t d, double eps, std::vector<T>& y,
                      std::vector<T>& xhat, std::vector<T>& rstd) {
    for (index_t r = 0; r < rows; ++r) {
        const T* xr = x.data() + r * d;
        T mean = 0;
        for (index_t j = 0; j < d; ++j) mean += xr[j];
        mean /= static_cast<T>(d);
        T var = 0;
        for (index_t j = 0; j < d; ++j) var += (xr[j] - mean) * (xr[j] - mean);
        var /= static_cast<T>(d);
        const T rs = T(1) / std::sqrt(var + static_cast<T>(eps));
        rstd[static_cast<std::size_t>(r)] = rs;
        for (index_t j = 0; j < d; ++j) {
            const T h = (xr[j] - mean) * rs;
            xhat[static_cast<std::size_t>(r * d + j)] = h;
            y[static_cast<std::size_t>(r * d + j)] = w ? h * w[j] + b[j] : h;
        }
    }
}

struct LayerNormForward {
    static constexpr const char* name = "layer_norm_forward";
    using Case = NormCase;
    static std::vector<Case> cases() { return norm_cases(); }
    static std::string label(const Case& c) { return norm_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        std::vector<double> x = random_values(static_cast<std::size_t>(c.rows * c.d), seed, 1, 3.0);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] += 5.0;  // an offset the mean must remove
        a.in = {x, uniform_values(static_cast<std::size_t>(c.d), seed, 2, 0.5, 1.5), random_values(static_cast<std::size_t>(c.d), seed, 3)};
        a.out = {poison(x.size()), poison(x.size()), poison(static_cast<std::size_t>(c.rows))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_layer_norm_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::layer_norm_forward(B{}, s.i(0), c.affine ? s.i(1) : nullptr, c.affine ? s.i(2) : nullptr, s.o(0), s.o(1), s.o(2), c.rows, c.d,
                                1e-5);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        naive_layer_norm(a.in[0], c.affine ? a.in[1].data() : nullptr, c.affine ? a.in[2].data() : nullptr, c.rows, c.d, 1e-5, a.out[0],
                         a.out[1], a.out[2]);
    }
};

struct LayerNormBackward {
    static constexpr const char* name = "layer_norm_backward";
    using Case = NormCase;
    static std::vector<Case> cases() { return norm_cases(); }
    static std::string label(const Case& c) { return norm_label(c); }
    /// Inputs: dy, xhat (rows normalised), rstd, w; outputs dx (added into), dw, db.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto n = static_cast<std::size_t>(c.rows * c.d);
        std::vector<double> x = random_values(n, seed, 2), xhat(n), rstd(static_cast<std::size_t>(c.rows)), y(n);
        naive_layer_norm<double>(x, nullptr, nullptr, c.rows, c.d, 1e-5, y, xhat, rstd);
        a.in = {random_values(n, seed, 1), xhat, rstd, uniform_values(static_cast<std::size_t>(c.d), seed, 3, 0.5, 1.5)};
        a.out = {random_values(n, seed, 4), poison(static_cast<std::size_t>(c.d)), poison(static_cast<std::size_t>(c.d))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_layer_norm_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::layer_norm_backward(B{}, s.i(0), s.i(1), s.i(2), c.affine ? s.i(3) : nullptr, c.rows, c.d, s.o(0), c.affine ? s.o(1) : nullptr,
                                 c.affine ? s.o(2) : nullptr);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& dy = a.in[0];
        const auto& xhat = a.in[1];
        const auto& rstd = a.in[2];
        const T* w = c.affine ? a.in[3].data() : nullptr;
        for (index_t r = 0; r < c.rows; ++r) {
            T sg = 0, sgh = 0;
            for (index_t j = 0; j < c.d; ++j) {
                const T g = w ? dy[static_cast<std::size_t>(r * c.d + j)] * w[j] : dy[static_cast<std::size_t>(r * c.d + j)];
                sg += g;
                sgh += g * xhat[static_cast<std::size_t>(r * c.d + j)];
            }
            sg /= static_cast<T>(c.d);
            sgh /= static_cast<T>(c.d);
            for (index_t j = 0; j < c.d; ++j) {
                const auto i = static_cast<std::size_t>(r * c.d + j);
                const T g = w ? dy[i] * w[j] : dy[i];
                a.out[0][i] += rstd[static_cast<std::size_t>(r)] * (g - sg - xhat[i] * sgh);
            }
        }
        if (!w) return;
        for (index_t j = 0; j < c.d; ++j) {
            T dw = 0, db = 0;
            for (index_t r = 0; r < c.rows; ++r) {
                dw += dy[static_cast<std::size_t>(r * c.d + j)] * xhat[static_cast<std::size_t>(r * c.d + j)];
                db += dy[static_cast<std::size_t>(r * c.d + j)];
            }
            a.out[1][static_cast<std::size_t>(j)] = dw;
            a.out[2][static_cast<std::size_t>(j)] = db;
        }
    }
};

template <class T>
void naive_rms_norm(const std::vector<T>& x, const std::vector<T>& w, index_t rows, index_t d, double eps, std::vector<T>& y,
                    std::vector<T>& n, std::vector<T>& rstd) {
    for (index_t r = 0; r < rows; ++r) {
        T ss = 0;
        for (index_t j = 0; j < d; ++j) ss += x[static_cast<std::size_t>(r * d + j)] * x[static_cast<std::size_t>(r * d + j)];
        const T rs = T(1) / std::sqrt(ss / static_cast<T>(d) + static_cast<T>(eps));
        rstd[static_cast<std::size_t>(r)] = rs;
        for (index_t j = 0; j < d; ++j) {
            const auto i = static_cast<std::size_t>(r * d + j);
            n[i] = x[i] * rs;
            y[i] = w[static_cast<std::size_t>(j)] * n[i];
        }
    }
}

struct RmsNormForward {
    static constexpr const char* name = "rms_norm_forward";
    using Case = NormCase;
    static std::vector<Case> cases() { return norm_cases(); }
    static std::string label(const Case& c) { return norm_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto n = static_cast<std::size_t>(c.rows * c.d);
        a.in = {random_values(n, seed, 1, 2.0), uniform_values(static_cast<std::size_t>(c.d), seed, 2, 0.5, 1.5)};
        a.out = {poison(n), poison(n), poison(static_cast<std::size_t>(c.rows))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_rms_norm_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::rms_norm_forward(B{}, s.i(0), s.i(1), s.o(0), s.o(1), s.o(2), c.rows, c.d, 1e-6);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        naive_rms_norm(a.in[0], a.in[1], c.rows, c.d, 1e-6, a.out[0], a.out[1], a.out[2]);
    }
};

struct RmsNormBackward {
    static constexpr const char* name = "rms_norm_backward";
    using Case = NormCase;
    static std::vector<Case> cases() { return norm_cases(); }
    static std::string label(const Case& c) { return norm_label(c); }
    /// Inputs: dy, n, rstd, w; outputs dx (added into), dw.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto n = static_cast<std::size_t>(c.rows * c.d);
        std::vector<double> x = random_values(n, seed, 2), w = uniform_values(static_cast<std::size_t>(c.d), seed, 3, 0.5, 1.5);
        std::vector<double> y(n), nrm(n), rstd(static_cast<std::size_t>(c.rows));
        naive_rms_norm<double>(x, w, c.rows, c.d, 1e-6, y, nrm, rstd);
        a.in = {random_values(n, seed, 1), nrm, rstd, w};
        a.out = {random_values(n, seed, 4), poison(static_cast<std::size_t>(c.d))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_rms_norm_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::rms_norm_backward(B{}, s.i(0), s.i(1), s.i(2), s.i(3), c.rows, c.d, s.o(0), s.o(1));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& dy = a.in[0];
        const auto& n = a.in[1];
        const auto& rstd = a.in[2];
        const auto& w = a.in[3];
        for (index_t r = 0; r < c.rows; ++r) {
            T sgn = 0;
            for (index_t j = 0; j < c.d; ++j) {
                const auto i = static_cast<std::size_t>(r * c.d + j);
                sgn += dy[i] * w[static_cast<std::size_t>(j)] * n[i];
            }
            sgn /= static_cast<T>(c.d);
            for (index_t j = 0; j < c.d; ++j) {
                const auto i = static_cast<std::size_t>(r * c.d + j);
                a.out[0][i] += rstd[static_cast<std::size_t>(r)] * (dy[i] * w[static_cast<std::size_t>(j)] - n[i] * sgn);
            }
        }
        for (index_t j = 0; j < c.d; ++j) {
            T s = 0;
            for (index_t r = 0; r < c.rows; ++r) s += dy[static_cast<std::size_t>(r * c.d + j)] * n[static_cast<std::size_t>(r * c.d + j)];
            a.out[1][static_cast<std::size_t>(j)] = s;
        }
    }
};

// ---- gathers, scatters, segments ----------------------------------------------------------------

struct GatherRows {
    static constexpr const char* name = "gather_rows";
    struct Case {
        index_t src_rows, n, dim;
    };
    static std::vector<Case> cases() { return {{10, 7, 8}, {50, 200, 33}, {5, 0, 4}, {3, 9, 1}}; }
    static std::string label(const Case& c) { return fmt::format("{} of {} rows of {}", c.n, c.src_rows, c.dim); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        CounterRng rng(seed, 5);
        std::vector<index_t> idx(static_cast<std::size_t>(c.n));
        for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<index_t>(rng.below(i, static_cast<std::uint64_t>(c.src_rows)));
        a.in = {random_values(static_cast<std::size_t>(c.src_rows * c.dim), seed, 1)};
        a.out = {poison(static_cast<std::size_t>(c.n * c.dim))};
        a.idx = {idx};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_gather_rows<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::gather_rows(B{}, s.i(0), s.x(0), c.n, c.dim, s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t i = 0; i < c.n; ++i)
            for (index_t j = 0; j < c.dim; ++j)
                a.out[0][static_cast<std::size_t>(i * c.dim + j)] = a.in[0][static_cast<std::size_t>(a.idx[0][static_cast<std::size_t>(i)] * c.dim + j)];
    }
};

struct ScatterAddRows {
    static constexpr const char* name = "scatter_add_rows";
    using Case = GatherRows::Case;
    static std::vector<Case> cases() { return GatherRows::cases(); }
    static std::string label(const Case& c) { return fmt::format("{} into {} rows of {}", c.n, c.src_rows, c.dim); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a = GatherRows::make(c, seed);  // repeated indices accumulate
        a.in = {random_values(static_cast<std::size_t>(c.n * c.dim), seed, 2)};
        a.out = {random_values(static_cast<std::size_t>(c.src_rows * c.dim), seed, 3)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_scatter_add_rows<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::scatter_add_rows(B{}, s.i(0), s.x(0), c.n, c.dim, s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t i = 0; i < c.n; ++i)
            for (index_t j = 0; j < c.dim; ++j)
                a.out[0][static_cast<std::size_t>(a.idx[0][static_cast<std::size_t>(i)] * c.dim + j)] += a.in[0][static_cast<std::size_t>(i * c.dim + j)];
    }
};

/// Segments over rows: ragged, with empty segments, with row lists (repeats) or the entries themselves.
struct SegmentCase {
    index_t segments, dim, x_rows, ld;
    bool row_list, weights, unique;
};
inline std::vector<SegmentCase> segment_cases() {
    return {{4, 8, 12, 8, true, true, false}, {6, 5, 0, 11, false, true, true}, {3, 16, 7, 16, true, false, false},
            {1, 3, 0, 3, false, false, true}, {0, 4, 2, 4, true, true, false}};
}
inline std::string segment_label(const SegmentCase& c) {
    return fmt::format("{} segments of width {}{}{}{} ld={}", c.segments, c.dim, c.row_list ? ", row list" : ", contiguous",
                       c.weights ? ", weighted" : "", c.unique ? ", unique rows" : "", c.ld);
}
/// offsets, rows (when a row list), the pooled x's rows, and weights.
inline void segment_arrays(const SegmentCase& c, std::uint64_t seed, OpArrays<double>& a, index_t& x_rows) {
    CounterRng rng(seed, 9);
    std::vector<index_t> sizes;
    for (index_t s = 0; s < c.segments; ++s) sizes.push_back(s % 3 == 1 ? 0 : static_cast<index_t>(rng.below(static_cast<std::uint64_t>(s), 4)) + 1);
    const std::vector<index_t> off = offsets_of(sizes);
    a.idx = {off};
    x_rows = c.row_list ? c.x_rows : off.back();
    if (c.row_list) {
        std::vector<index_t> rows(static_cast<std::size_t>(off.back()));
        for (std::size_t e = 0; e < rows.size(); ++e) rows[e] = static_cast<index_t>(rng.below(100 + e, static_cast<std::uint64_t>(c.x_rows)));
        a.idx.push_back(rows);
    }
}
template <class T, class B>
ops::SegmentPool<T> segment_pool_of(const SegmentCase& c, const StagedArrays<T, B>& s, std::size_t weight_input) {
    return {c.segments, c.dim, s.x(0), c.row_list ? s.x(1) : nullptr, c.weights ? s.i(weight_input) : nullptr, c.unique};
}
template <class T>
index_t naive_segment_row(const SegmentCase& c, const OpArrays<T>& a, index_t e) {
    return c.row_list ? a.idx[1][static_cast<std::size_t>(e)] : e;
}

struct SegmentPoolTest {
    static constexpr const char* name = "segment_pool";
    using Case = SegmentCase;
    static std::vector<Case> cases() { return segment_cases(); }
    static std::string label(const Case& c) { return segment_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        index_t x_rows = 0;
        segment_arrays(c, seed, a, x_rows);
        a.in = {random_values(static_cast<std::size_t>(x_rows * c.dim), seed, 1), uniform_values(static_cast<std::size_t>(c.segments), seed, 2, 0.1, 1.0)};
        std::vector<double> out = random_values(static_cast<std::size_t>(c.segments * c.ld), seed, 3);  // gaps must survive
        for (index_t s = 0; s < c.segments; ++s)
            for (index_t j = 0; j < c.dim; ++j) out[static_cast<std::size_t>(s * c.ld + j)] = std::numeric_limits<double>::quiet_NaN();
        a.out = {out};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_segment_pool<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::segment_pool(B{}, segment_pool_of(c, s, 1), s.i(0), s.o(0), c.ld);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& off = a.idx[0];
        for (index_t s = 0; s < c.segments; ++s)
            for (index_t j = 0; j < c.dim; ++j) {
                T sum = 0;
                for (index_t e = off[static_cast<std::size_t>(s)]; e < off[static_cast<std::size_t>(s) + 1]; ++e)
                    sum += a.in[0][static_cast<std::size_t>(naive_segment_row(c, a, e) * c.dim + j)];
                a.out[0][static_cast<std::size_t>(s * c.ld + j)] = c.weights ? sum * a.in[1][static_cast<std::size_t>(s)] : sum;
            }
    }
};

struct SegmentPoolBackward {
    static constexpr const char* name = "segment_pool_backward";
    using Case = SegmentCase;
    static std::vector<Case> cases() { return segment_cases(); }
    static std::string label(const Case& c) { return segment_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        index_t x_rows = 0;
        segment_arrays(c, seed, a, x_rows);
        a.in = {random_values(static_cast<std::size_t>(c.segments * c.ld), seed, 1), uniform_values(static_cast<std::size_t>(c.segments), seed, 2, 0.1, 1.0)};
        a.out = {random_values(static_cast<std::size_t>(x_rows * c.dim), seed, 3)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_segment_pool_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::segment_pool_backward(B{}, segment_pool_of(c, s, 1), s.i(0), c.ld, s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const auto& off = a.idx[0];
        for (index_t s = 0; s < c.segments; ++s)
            for (index_t e = off[static_cast<std::size_t>(s)]; e < off[static_cast<std::size_t>(s) + 1]; ++e)
                for (index_t j = 0; j < c.dim; ++j) {
                    const T g = a.in[0][static_cast<std::size_t>(s * c.ld + j)];
                    a.out[0][static_cast<std::size_t>(naive_segment_row(c, a, e) * c.dim + j)] += c.weights ? a.in[1][static_cast<std::size_t>(s)] * g : g;
                }
    }
};

// ---- attention -----------------------------------------------------------------------------------

struct AttentionCase {
    index_t batch, tq, tk, hq, hkv, dh;
    double dropout;
    bool hook;
};
inline std::vector<AttentionCase> attention_cases() {
    return {{1, 37, 37, 8, 8, 8, 0.0, true},   // the CGT's width, a graph term
            {2, 19, 23, 4, 2, 16, 0.1, false}, // grouped KV, dropout
            {1, 9, 0, 2, 2, 32, 0.0, false},   // no keys
            {2, 70, 140, 2, 1, 64, 0.0, false}, // more than one query and key block
            {1, 5, 300, 1, 1, 128, 0.0, false}, // head width 128
            {1, 13, 13, 3, 3, 24, 0.2, true},   // odd heads, dropout and a graph term
            {2, 70, 300, 4, 2, 8, 0.0, true},   // width 8, grouped KV: the CPU's vector kernels over several query and key blocks
            {1, 3, 17, 2, 2, 8, 0.0, false},    // width 8, keys not a whole vector
            {1, 21, 2100, 2, 1, 8, 0.0, true},  // width 8, three key ranges in the CPU's backward (partial dQ sums)
            {2, 70, 300, 4, 2, 8, 0.15, true},  // width 8 with dropout: rows start on word 0 of a Philox block (tk % 4 == 0)
            {1, 37, 75, 2, 2, 8, 0.3, false},   // width 8 with dropout: rows start at every word of a block (tk % 4 == 3)
            {1, 21, 2102, 2, 1, 8, 0.1, true}}; // width 8 with dropout, three key ranges, tk % 4 == 2
}
inline std::string attention_label(const AttentionCase& c) {
    return fmt::format("B={} tq={} tk={} heads={}/{} dh={}{}{}", c.batch, c.tq, c.tk, c.hq, c.hkv, c.dh,
                       c.dropout > 0 ? fmt::format(" p={}", c.dropout) : "", c.hook ? " graph" : "");
}
inline ops::AttentionDims attention_dims(const AttentionCase& c) { return {c.batch, c.tq, c.tk, c.hq, c.hkv, c.dh, 0.0}; }
inline ops::AttentionDropout attention_dropout(const AttentionCase& c) { return {c.dropout, 41, 0x55, 2}; }
/// A random CSR over tq rows and tk columns (rows with 0..3 edges), its values W and coefficients c.
struct GraphArrays {
    std::vector<index_t> row_ptr, col;
    std::vector<double> w, coef;
};
inline GraphArrays graph_arrays(const AttentionCase& c, std::uint64_t seed) {
    GraphArrays g;
    CounterRng rng(seed, 13);
    std::vector<index_t> deg;
    for (index_t i = 0; i < c.tq; ++i) deg.push_back(c.tk ? static_cast<index_t>(rng.below(static_cast<std::uint64_t>(i), 4)) : 0);
    g.row_ptr = offsets_of(deg);
    for (index_t e = 0; e < g.row_ptr.back(); ++e) g.col.push_back(static_cast<index_t>(rng.below(1000 + static_cast<std::uint64_t>(e), static_cast<std::uint64_t>(c.tk))));
    g.w = uniform_values(g.col.size(), seed, 14, 0.0, 0.5);
    g.coef.assign(static_cast<std::size_t>(c.batch * c.hq * c.tq), 0.0);
    for (index_t b = 0; b < c.batch; ++b)  // c_i = Σ_j W_ij on the term's head (0)
        for (index_t i = 0; i < c.tq; ++i)
            for (index_t e = g.row_ptr[static_cast<std::size_t>(i)]; e < g.row_ptr[static_cast<std::size_t>(i) + 1]; ++e)
                g.coef[static_cast<std::size_t>((b * c.hq) * c.tq + i)] += g.w[static_cast<std::size_t>(e)];
    return g;
}

/// The naive attention of one (b, h, i): scores, softmax, dropout, P·V, in T.
template <class T>
void naive_attention_row(const AttentionCase& c, const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v, index_t b,
                         index_t h, index_t i, std::vector<T>& p, T& lse, T* o) {
    const index_t hk = h / (c.hq / c.hkv), lq = c.hq * c.dh, lk = c.hkv * c.dh;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(c.dh)));
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < c.tk; ++j) {
        T s = 0;
        for (index_t e = 0; e < c.dh; ++e)
            s += q[static_cast<std::size_t>((b * c.tq + i) * lq + h * c.dh + e)] * k[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)];
        p[static_cast<std::size_t>(j)] = s * scale;
        mx = std::max(mx, p[static_cast<std::size_t>(j)]);
    }
    T l = 0;
    for (index_t j = 0; j < c.tk; ++j) l += (p[static_cast<std::size_t>(j)] = std::exp(p[static_cast<std::size_t>(j)] - mx));
    lse = c.tk ? mx + std::log(l) : -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < c.tk; ++j) p[static_cast<std::size_t>(j)] /= l;
    const ops::AttentionDims d = attention_dims(c);
    const ops::AttentionDropout drop = attention_dropout(c);
    const T keep = static_cast<T>(1.0 / (1.0 - c.dropout));
    for (index_t e = 0; e < c.dh; ++e) {
        T s = 0;
        for (index_t j = 0; j < c.tk; ++j) {
            const T m = ops::attention_dropout_keep(drop, d, b, h, i, j) ? (drop.active() ? keep : T(1)) : T(0);
            s += p[static_cast<std::size_t>(j)] * m * v[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)];
        }
        o[e] = s;
    }
}

struct AttentionForward {
    static constexpr const char* name = "attention_forward";
    using Case = AttentionCase;
    static std::vector<Case> cases() { return attention_cases(); }
    static std::string label(const Case& c) { return attention_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto nq = static_cast<std::size_t>(c.batch * c.tq * c.hq * c.dh), nk = static_cast<std::size_t>(c.batch * c.tk * c.hkv * c.dh);
        a.in = {random_values(nq, seed, 1), random_values(nk, seed, 2), random_values(nk, seed, 3)};
        a.out = {poison(nq), poison(static_cast<std::size_t>(c.batch * c.hq * c.tq))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_attention_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const index_t lq = c.hq * c.dh, lk = c.hkv * c.dh;
        ops::attention_forward(B{}, attention_dims(c), ops::HeadsRef<const T>{s.i(0), lq}, ops::HeadsRef<const T>{s.i(1), lk},
                               ops::HeadsRef<const T>{s.i(2), lk}, ops::HeadsRef<T>{s.o(0), lq}, s.o(1), attention_dropout(c));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        std::vector<T> p(static_cast<std::size_t>(c.tk));
        for (index_t b = 0; b < c.batch; ++b)
            for (index_t h = 0; h < c.hq; ++h)
                for (index_t i = 0; i < c.tq; ++i)
                    naive_attention_row(c, a.in[0], a.in[1], a.in[2], b, h, i, p, a.out[1][static_cast<std::size_t>((b * c.hq + h) * c.tq + i)],
                                        a.out[0].data() + (b * c.tq + i) * c.hq * c.dh + h * c.dh);
    }
};

struct AttentionBackward {
    static constexpr const char* name = "attention_backward";
    using Case = AttentionCase;
    static std::vector<Case> cases() { return attention_cases(); }
    static std::string label(const Case& c) { return attention_label(c); }
    /// Inputs q, k, v, o, lse (from the double forward), dout, W, coef; outputs dq, dk, dv; index arrays row_ptr, col.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> f = AttentionForward::make(c, seed);
        AttentionForward::naive(c, f);
        const GraphArrays g = graph_arrays(c, seed);
        OpArrays<double> a;
        const auto nq = f.in[0].size(), nk = f.in[1].size();
        a.in = {f.in[0], f.in[1], f.in[2], f.out[0], f.out[1], random_values(nq, seed, 4), g.w, g.coef};
        a.out = {poison(nq), poison(nk), poison(nk)};
        a.idx = {g.row_ptr, g.col};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_attention_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const index_t lq = c.hq * c.dh, lk = c.hkv * c.dh;
        ops::GraphHook<T> hook;
        if (c.hook) {
            hook.coef = s.i(7);
            hook.terms.push_back({0, std::span<const index_t>(s.x(0), static_cast<std::size_t>(s.idx[0].numel())),
                                  std::span<const index_t>(s.x(1), static_cast<std::size_t>(s.idx[1].numel())),
                                  std::span<const T>(s.i(6), static_cast<std::size_t>(s.in[6].numel()))});
        }
        ops::attention_backward(B{}, attention_dims(c), ops::HeadsRef<const T>{s.i(0), lq}, ops::HeadsRef<const T>{s.i(1), lk},
                                ops::HeadsRef<const T>{s.i(2), lk}, ops::HeadsRef<const T>{s.i(3), lq}, s.i(4),
                                ops::HeadsRef<const T>{s.i(5), lq}, ops::HeadsRef<T>{s.o(0), lq}, ops::HeadsRef<T>{s.o(1), lk},
                                ops::HeadsRef<T>{s.o(2), lk}, attention_dropout(c), c.hook ? &hook : nullptr);
    }
    /// The textbook backward: P from the scores, dP = dO·Vᵀ (dropped), dS = P∘(dP − D) + c·P − W.
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const index_t lq = c.hq * c.dh, lk = c.hkv * c.dh, group = c.hq / c.hkv;
        const auto& q = a.in[0];
        const auto& k = a.in[1];
        const auto& v = a.in[2];
        const auto& dout = a.in[5];
        auto& dq = a.out[0];
        auto& dk = a.out[1];
        auto& dv = a.out[2];
        std::fill(dq.begin(), dq.end(), T(0));
        std::fill(dk.begin(), dk.end(), T(0));
        std::fill(dv.begin(), dv.end(), T(0));
        const ops::AttentionDims d = attention_dims(c);
        const ops::AttentionDropout drop = attention_dropout(c);
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(c.dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - c.dropout));
        std::vector<T> p(static_cast<std::size_t>(c.tk)), dp(static_cast<std::size_t>(c.tk)), o(static_cast<std::size_t>(c.dh));
        for (index_t b = 0; b < c.batch; ++b)
            for (index_t h = 0; h < c.hq; ++h)
                for (index_t i = 0; i < c.tq; ++i) {
                    T lse;
                    naive_attention_row(c, q, k, v, b, h, i, p, lse, o.data());
                    const index_t hk = h / group;
                    T D = 0;
                    for (index_t j = 0; j < c.tk; ++j) {
                        const T m = ops::attention_dropout_keep(drop, d, b, h, i, j) ? (drop.active() ? keep : T(1)) : T(0);
                        T g = 0;
                        for (index_t e = 0; e < c.dh; ++e)
                            g += dout[static_cast<std::size_t>((b * c.tq + i) * lq + h * c.dh + e)] * v[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)];
                        dp[static_cast<std::size_t>(j)] = g * m;
                        D += p[static_cast<std::size_t>(j)] * dp[static_cast<std::size_t>(j)];
                        for (index_t e = 0; e < c.dh; ++e)
                            dv[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)] +=
                                p[static_cast<std::size_t>(j)] * m * dout[static_cast<std::size_t>((b * c.tq + i) * lq + h * c.dh + e)];
                    }
                    const T ci = c.hook ? a.in[7][static_cast<std::size_t>((b * c.hq + h) * c.tq + i)] : T(0);
                    for (index_t j = 0; j < c.tk; ++j) {
                        T ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - D) + ci * p[static_cast<std::size_t>(j)];
                        if (c.hook && h == 0)
                            for (index_t e = a.idx[0][static_cast<std::size_t>(i)]; e < a.idx[0][static_cast<std::size_t>(i) + 1]; ++e)
                                if (a.idx[1][static_cast<std::size_t>(e)] == j) ds -= a.in[6][static_cast<std::size_t>(e)];
                        for (index_t e = 0; e < c.dh; ++e) {
                            dq[static_cast<std::size_t>((b * c.tq + i) * lq + h * c.dh + e)] += scale * ds * k[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)];
                            dk[static_cast<std::size_t>((b * c.tk + j) * lk + hk * c.dh + e)] += scale * ds * q[static_cast<std::size_t>((b * c.tq + i) * lq + h * c.dh + e)];
                        }
                    }
                }
    }
};

struct AttentionEdgeScores {
    static constexpr const char* name = "attention_edge_scores";
    struct Case {
        AttentionCase att;
        bool log_probs;
    };
    static std::vector<Case> cases() {
        std::vector<Case> cs;
        for (const auto& a : attention_cases())
            if (a.tk > 0) cs.push_back({a, false}), cs.push_back({a, true});
        return cs;
    }
    static std::string label(const Case& c) { return attention_label(c.att) + (c.log_probs ? " log P" : " scores"); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> f = AttentionForward::make(c.att, seed);
        AttentionForward::naive(c.att, f);
        const GraphArrays g = graph_arrays(c.att, seed);
        OpArrays<double> a;
        a.in = {f.in[0], f.in[1], f.out[1], g.w};
        a.out = {poison(static_cast<std::size_t>(c.att.batch) * g.col.size())};
        a.idx = {g.row_ptr, g.col};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_attention_edge_scores<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const ops::GraphTerm<T> term{0, std::span<const index_t>(s.x(0), static_cast<std::size_t>(s.idx[0].numel())),
                                     std::span<const index_t>(s.x(1), static_cast<std::size_t>(s.idx[1].numel())),
                                     std::span<const T>(s.i(3), static_cast<std::size_t>(s.in[3].numel()))};
        ops::attention_edge_scores(B{}, attention_dims(c.att), ops::HeadsRef<const T>{s.i(0), c.att.hq * c.att.dh},
                                   ops::HeadsRef<const T>{s.i(1), c.att.hkv * c.att.dh}, term, s.o(0), c.log_probs ? s.i(2) : nullptr);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const AttentionCase& t = c.att;
        const index_t nnz = static_cast<index_t>(a.idx[1].size()), lq = t.hq * t.dh, lk = t.hkv * t.dh;
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(t.dh)));
        for (index_t b = 0; b < t.batch; ++b)
            for (index_t i = 0; i < t.tq; ++i)
                for (index_t e = a.idx[0][static_cast<std::size_t>(i)]; e < a.idx[0][static_cast<std::size_t>(i) + 1]; ++e) {
                    const index_t j = a.idx[1][static_cast<std::size_t>(e)];
                    T s = 0;
                    for (index_t x = 0; x < t.dh; ++x)
                        s += a.in[0][static_cast<std::size_t>((b * t.tq + i) * lq + x)] * a.in[1][static_cast<std::size_t>((b * t.tk + j) * lk + x)];
                    s *= scale;
                    if (c.log_probs) s -= a.in[2][static_cast<std::size_t>((b * t.hq) * t.tq + i)];
                    a.out[0][static_cast<std::size_t>(b * nnz + e)] = s;
                }
    }
};

struct GraphKlEdges {
    static constexpr const char* name = "graph_kl_edges";
    struct Case {
        index_t tq;
    };
    static std::vector<Case> cases() { return {{9}, {200}, {1}}; }
    static std::string label(const Case& c) { return fmt::format("tq={}", c.tq); }
    /// Inputs: target (rows sum to ≤ 1, some zeros), log α (≤ 0); outputs W, coef (added into); host: the loss.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        CounterRng rng(seed, 17);
        std::vector<index_t> deg;
        for (index_t i = 0; i < c.tq; ++i) deg.push_back(static_cast<index_t>(rng.below(static_cast<std::uint64_t>(i), 5)));
        const std::vector<index_t> rp = offsets_of(deg);
        std::vector<double> target = uniform_values(static_cast<std::size_t>(rp.back()), seed, 2, 0.0, 0.3);
        for (std::size_t e = 0; e < target.size(); e += 4) target[e] = 0.0;  // 0·log 0 = 0, no gradient
        std::vector<double> logp = uniform_values(target.size(), seed, 3, -12.0, -0.01);
        a.in = {target, logp};
        a.out = {poison(target.size()), random_values(static_cast<std::size_t>(c.tq), seed, 4)};
        a.idx = {rp};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_graph_kl_edges<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        s.host_out = {ops::graph_kl_edges(B{}, c.tq, s.x(0), s.i(0), s.i(1), static_cast<T>(0.7), 1e-8, s.o(0), s.o(1))};
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        double loss = 0.0;
        for (index_t i = 0; i < c.tq; ++i)
            for (index_t e = a.idx[0][static_cast<std::size_t>(i)]; e < a.idx[0][static_cast<std::size_t>(i) + 1]; ++e) {
                const T t = a.in[0][static_cast<std::size_t>(e)];
                if (t == T(0)) {
                    a.out[0][static_cast<std::size_t>(e)] = 0;
                    continue;
                }
                const T alpha = std::exp(a.in[1][static_cast<std::size_t>(e)]);
                loss += static_cast<double>(t * (std::log(t) - std::log(alpha + T(1e-8))));
                const T w = T(0.7) * (t * alpha / (alpha + T(1e-8)));
                a.out[0][static_cast<std::size_t>(e)] = w;
                a.out[1][static_cast<std::size_t>(i)] += w;
            }
        a.host_out = {loss};
    }
};

struct RaggedCase {
    index_t batch, heads, dh;
    double dropout;
};
inline std::vector<RaggedCase> ragged_cases() { return {{5, 8, 8, 0.0}, {4, 2, 16, 0.3}, {3, 1, 64, 0.0}, {6, 4, 32, 0.1}}; }
inline std::string ragged_label(const RaggedCase& c) {
    return fmt::format("batch={} heads={} dh={}{} (an empty sample, a sample without keys)", c.batch, c.heads, c.dh,
                       c.dropout > 0 ? fmt::format(" p={}", c.dropout) : "");
}
inline ops::RowDropout ragged_dropout(const RaggedCase& c) { return {c.dropout, 29, 0x7065727431ull, 4}; }
template <class T, class B>
ops::RaggedCrossAttention ragged_attention_of(const RaggedCase& c, const StagedArrays<T, B>& s) {
    return {{c.batch, s.idx[1].numel(), s.x(0), s.x(1)}, s.x(2), c.heads, c.dh, ragged_dropout(c)};
}
/// Naive forward of one row: scores against its sample's keys, softmax, dropout, P·V.
template <class T>
void naive_ragged_row(const RaggedCase& c, const OpArrays<T>& a, index_t b, index_t r, std::vector<T>& p, index_t h, T& lse, T* o) {
    const index_t d = c.heads * c.dh, k0 = a.idx[2][static_cast<std::size_t>(b)], tk = a.idx[2][static_cast<std::size_t>(b) + 1] - k0;
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(c.dh)));
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < tk; ++j) {
        T s = 0;
        for (index_t e = 0; e < c.dh; ++e) s += a.in[0][static_cast<std::size_t>(r * d + h * c.dh + e)] * a.in[1][static_cast<std::size_t>((k0 + j) * 2 * d + h * c.dh + e)];
        p[static_cast<std::size_t>(j)] = s * scale;
        mx = std::max(mx, p[static_cast<std::size_t>(j)]);
    }
    T l = 0;
    for (index_t j = 0; j < tk; ++j) l += (p[static_cast<std::size_t>(j)] = std::exp(p[static_cast<std::size_t>(j)] - mx));
    lse = tk ? mx + std::log(l) : -std::numeric_limits<T>::infinity();
    const CounterRng rng = ragged_dropout(c).sample_rng(b);
    const T keep = static_cast<T>(1.0 / (1.0 - c.dropout));
    const std::uint64_t base = static_cast<std::uint64_t>(a.idx[1][static_cast<std::size_t>(r)] * c.heads * tk + h * tk);
    for (index_t j = 0; j < tk; ++j) {
        p[static_cast<std::size_t>(j)] /= l;
        if (c.dropout > 0) p[static_cast<std::size_t>(j)] *= rng.uniform(base + static_cast<std::uint64_t>(j)) > c.dropout ? keep : T(0);
    }
    for (index_t e = 0; e < c.dh; ++e) {
        T s = 0;
        for (index_t j = 0; j < tk; ++j) s += p[static_cast<std::size_t>(j)] * a.in[1][static_cast<std::size_t>((k0 + j) * 2 * d + d + h * c.dh + e)];
        o[e] = s;
    }
}

struct RaggedCrossAttentionForward {
    static constexpr const char* name = "ragged_cross_attention_forward";
    using Case = RaggedCase;
    static std::vector<Case> cases() { return ragged_cases(); }
    static std::string label(const Case& c) { return ragged_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        const RaggedLayout l = ragged_layout(c.batch, seed, true);
        const index_t d = c.heads * c.dh, R = l.row_offsets.back(), E = l.key_offsets.back();
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(R * d), seed, 1), random_values(static_cast<std::size_t>(E * 2 * d), seed, 2)};
        a.out = {poison(static_cast<std::size_t>(R * d)), poison(static_cast<std::size_t>(R * c.heads))};
        a.idx = {l.row_offsets, l.row_gene, l.key_offsets};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_ragged_cross_attention_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::ragged_cross_attention_forward(B{}, ragged_attention_of(c, s), s.i(0), s.i(1), s.o(0), s.o(1));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const index_t d = c.heads * c.dh;
        std::vector<T> p(8);
        for (index_t b = 0; b < c.batch; ++b)
            for (index_t r = a.idx[0][static_cast<std::size_t>(b)]; r < a.idx[0][static_cast<std::size_t>(b) + 1]; ++r)
                for (index_t h = 0; h < c.heads; ++h)
                    naive_ragged_row(c, a, b, r, p, h, a.out[1][static_cast<std::size_t>(r * c.heads + h)], a.out[0].data() + r * d + h * c.dh);
    }
};

struct RaggedCrossAttentionBackward {
    static constexpr const char* name = "ragged_cross_attention_backward";
    using Case = RaggedCase;
    static std::vector<Case> cases() { return ragged_cases(); }
    static std::string label(const Case& c) { return ragged_label(c); }
    /// Inputs q, kv, lse (from the double forward), dout; outputs dq, dkv.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> f = RaggedCrossAttentionForward::make(c, seed);
        RaggedCrossAttentionForward::naive(c, f);
        OpArrays<double> a;
        a.in = {f.in[0], f.in[1], f.out[1], random_values(f.in[0].size(), seed, 3)};
        a.out = {poison(f.in[0].size()), poison(f.in[1].size())};
        a.idx = f.idx;
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_ragged_cross_attention_backward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::ragged_cross_attention_backward(B{}, ragged_attention_of(c, s), s.i(0), s.i(1), s.i(2), s.i(3), s.o(0), s.o(1));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const index_t d = c.heads * c.dh;
        auto& dq = a.out[0];
        auto& dkv = a.out[1];
        std::fill(dq.begin(), dq.end(), T(0));
        std::fill(dkv.begin(), dkv.end(), T(0));
        const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(c.dh)));
        const T keep = static_cast<T>(1.0 / (1.0 - c.dropout));
        std::vector<T> p(8), pd(8), o(static_cast<std::size_t>(c.dh));
        for (index_t b = 0; b < c.batch; ++b) {
            const index_t k0 = a.idx[2][static_cast<std::size_t>(b)], tk = a.idx[2][static_cast<std::size_t>(b) + 1] - k0;
            const CounterRng rng = ragged_dropout(c).sample_rng(b);
            for (index_t r = a.idx[0][static_cast<std::size_t>(b)]; r < a.idx[0][static_cast<std::size_t>(b) + 1]; ++r)
                for (index_t h = 0; h < c.heads; ++h) {
                    T lse;
                    naive_ragged_row(c, a, b, r, pd, h, lse, o.data());  // pd: dropped probabilities
                    const std::uint64_t base = static_cast<std::uint64_t>(a.idx[1][static_cast<std::size_t>(r)] * c.heads * tk + h * tk);
                    T D = 0;
                    std::vector<T> dp(static_cast<std::size_t>(tk));
                    for (index_t j = 0; j < tk; ++j) {
                        const T m = c.dropout > 0 ? (rng.uniform(base + static_cast<std::uint64_t>(j)) > c.dropout ? keep : T(0)) : T(1);
                        T g = 0;
                        for (index_t e = 0; e < c.dh; ++e)
                            g += a.in[3][static_cast<std::size_t>(r * d + h * c.dh + e)] * a.in[1][static_cast<std::size_t>((k0 + j) * 2 * d + d + h * c.dh + e)];
                        dp[static_cast<std::size_t>(j)] = g * m;
                        for (index_t e = 0; e < c.dh; ++e)
                            dkv[static_cast<std::size_t>((k0 + j) * 2 * d + d + h * c.dh + e)] += pd[static_cast<std::size_t>(j)] * a.in[3][static_cast<std::size_t>(r * d + h * c.dh + e)];
                    }
                    // The probabilities before dropout, from the scores (a dropped entry has no pd to divide).
                    T mx = -std::numeric_limits<T>::infinity();
                    for (index_t j = 0; j < tk; ++j) {
                        T s = 0;
                        for (index_t e = 0; e < c.dh; ++e) s += a.in[0][static_cast<std::size_t>(r * d + h * c.dh + e)] * a.in[1][static_cast<std::size_t>((k0 + j) * 2 * d + h * c.dh + e)];
                        p[static_cast<std::size_t>(j)] = s * scale;
                        mx = std::max(mx, p[static_cast<std::size_t>(j)]);
                    }
                    T l = 0;
                    for (index_t j = 0; j < tk; ++j) l += (p[static_cast<std::size_t>(j)] = std::exp(p[static_cast<std::size_t>(j)] - mx));
                    for (index_t j = 0; j < tk; ++j) p[static_cast<std::size_t>(j)] /= l;
                    for (index_t j = 0; j < tk; ++j) D += p[static_cast<std::size_t>(j)] * dp[static_cast<std::size_t>(j)];
                    for (index_t j = 0; j < tk; ++j) {
                        const T ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - D) * scale;
                        for (index_t e = 0; e < c.dh; ++e) {
                            dq[static_cast<std::size_t>(r * d + h * c.dh + e)] += ds * a.in[1][static_cast<std::size_t>((k0 + j) * 2 * d + h * c.dh + e)];
                            dkv[static_cast<std::size_t>((k0 + j) * 2 * d + h * c.dh + e)] += ds * a.in[0][static_cast<std::size_t>(r * d + h * c.dh + e)];
                        }
                    }
                }
        }
    }
};

// ---- pairwise tiles of the distribution losses ----------------------------------------------------

struct PairwiseCase {
    index_t sets, n, m, d, block;
};
inline std::vector<PairwiseCase> pairwise_cases() { return {{2, 7, 9, 3, 4}, {1, 33, 20, 16, 256}, {3, 5, 5, 1, 2}, {1, 1, 40, 8, 16}}; }
inline std::string pairwise_label(const PairwiseCase& c) {
    return fmt::format("sets={} n={} m={} d={} block={}", c.sets, c.n, c.m, c.d, c.block);
}
template <class T>
ops::PointPairs<T> point_pairs(const PairwiseCase& c, const T* x, const T* y) {
    ops::PointPairs<T> p;
    p.x = x, p.y = y, p.sets = c.sets, p.n = c.n, p.m = c.m, p.d = c.d, p.block = c.block;
    return p;
}
/// d2 in the expanded form the kernels use: (‖x‖² − 2x·y) + ‖y‖².
template <class T>
T naive_sqdist(const PairwiseCase& c, const std::vector<T>& x, const std::vector<T>& y, index_t b, index_t i, index_t j) {
    T xx = 0, yy = 0, xy = 0;
    for (index_t e = 0; e < c.d; ++e) {
        const T xv = x[static_cast<std::size_t>((b * c.n + i) * c.d + e)], yv = y[static_cast<std::size_t>((b * c.m + j) * c.d + e)];
        xx += xv * xv;
        yy += yv * yv;
        xy += xv * yv;
    }
    return (xx - T(2) * xy) + yy;
}
inline OpArrays<double> pairwise_points(const PairwiseCase& c, std::uint64_t seed) {
    OpArrays<double> a;
    std::vector<double> x = random_values(static_cast<std::size_t>(c.sets * c.n * c.d), seed, 1);
    std::vector<double> y = random_values(static_cast<std::size_t>(c.sets * c.m * c.d), seed, 2);
    if (c.m > 1) std::copy_n(x.begin(), c.d, y.begin());  // a coincident pair: the clamp
    a.in = {x, y};
    return a;
}

struct PairwiseSqdist {
    static constexpr const char* name = "pairwise_sqdist";
    using Case = PairwiseCase;
    static std::vector<Case> cases() { return pairwise_cases(); }
    static std::string label(const Case& c) { return pairwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a = pairwise_points(c, seed);
        a.out = {poison(static_cast<std::size_t>(c.sets * c.n * c.m))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_pairwise_sqdist<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::pairwise_sqdist(B{}, point_pairs<T>(c, s.i(0), s.i(1)), s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t b = 0; b < c.sets; ++b)
            for (index_t i = 0; i < c.n; ++i)
                for (index_t j = 0; j < c.m; ++j) a.out[0][static_cast<std::size_t>((b * c.n + i) * c.m + j)] = naive_sqdist(c, a.in[0], a.in[1], b, i, j);
    }
};

struct PairwiseDistanceSum {
    static constexpr const char* name = "pairwise_distance_sum";
    using Case = PairwiseCase;
    static std::vector<Case> cases() { return pairwise_cases(); }
    static std::string label(const Case& c) { return pairwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) { return pairwise_points(c, seed); }
    template <class B, class T>
    static constexpr bool available = ops::provides_pairwise_distance_sum<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        s.host_out.assign(static_cast<std::size_t>(c.sets), std::numeric_limits<double>::quiet_NaN());
        ops::pairwise_distance_sum(B{}, point_pairs<T>(c, s.i(0), s.i(1)), static_cast<T>(1e-8), s.host_out.data());
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        a.host_out.assign(static_cast<std::size_t>(c.sets), 0.0);
        for (index_t b = 0; b < c.sets; ++b) {
            T s = 0;
            for (index_t i = 0; i < c.n; ++i)
                for (index_t j = 0; j < c.m; ++j) s += std::sqrt(std::max(naive_sqdist(c, a.in[0], a.in[1], b, i, j), T(1e-8)));
            a.host_out[static_cast<std::size_t>(b)] = static_cast<double>(s);
        }
    }
};

struct PairwiseDistanceGrad {
    static constexpr const char* name = "pairwise_distance_grad";
    using Case = PairwiseCase;
    static std::vector<Case> cases() { return pairwise_cases(); }
    static std::string label(const Case& c) { return pairwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a = pairwise_points(c, seed);
        std::vector<double> coef = random_values(static_cast<std::size_t>(c.sets), seed, 3);
        if (c.sets > 1) coef[1] = 0.0;  // a skipped set
        a.in.push_back(coef);
        a.out = {random_values(static_cast<std::size_t>(c.sets * c.n * c.d), seed, 4)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_pairwise_distance_grad<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const Tensor<T, cpu> coef = to_host(s.in[2]);  // the per-set coefficients are a host array
        ops::pairwise_distance_grad(B{}, point_pairs<T>(c, s.i(0), s.i(1)), static_cast<T>(1e-8), coef.data(), s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t b = 0; b < c.sets; ++b) {
            const T cb = a.in[2][static_cast<std::size_t>(b)];
            if (cb == T(0)) continue;
            for (index_t i = 0; i < c.n; ++i)
                for (index_t j = 0; j < c.m; ++j) {
                    const T d2 = naive_sqdist(c, a.in[0], a.in[1], b, i, j);
                    if (d2 < T(1e-8)) continue;
                    const T w = cb / std::sqrt(d2);
                    for (index_t e = 0; e < c.d; ++e)
                        a.out[0][static_cast<std::size_t>((b * c.n + i) * c.d + e)] +=
                            w * (a.in[0][static_cast<std::size_t>((b * c.n + i) * c.d + e)] - a.in[1][static_cast<std::size_t>((b * c.m + j) * c.d + e)]);
                }
        }
    }
};

template <class T>
T naive_softmin_lse(const PairwiseCase& c, const std::vector<T>& x, const std::vector<T>& y, const std::vector<T>& h, T eps, index_t b, index_t i) {
    T mx = -std::numeric_limits<T>::infinity();
    std::vector<T> z(static_cast<std::size_t>(c.m));
    for (index_t j = 0; j < c.m; ++j) {
        z[static_cast<std::size_t>(j)] = h[static_cast<std::size_t>(b * c.m + j)] - (T(0.5) * naive_sqdist(c, x, y, b, i, j)) / eps;
        mx = std::max(mx, z[static_cast<std::size_t>(j)]);
    }
    T s = 0;
    for (T v : z) s += std::exp(v - mx);
    return std::log(s) + mx;
}

struct PairwiseSoftmin {
    static constexpr const char* name = "pairwise_softmin";
    using Case = PairwiseCase;
    static std::vector<Case> cases() { return pairwise_cases(); }
    static std::string label(const Case& c) { return pairwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a = pairwise_points(c, seed);
        a.in.push_back(random_values(static_cast<std::size_t>(c.sets * c.m), seed, 3));
        a.out = {poison(static_cast<std::size_t>(c.sets * c.n)), poison(static_cast<std::size_t>(c.sets * c.n))};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_pairwise_softmin<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::pairwise_softmin(B{}, point_pairs<T>(c, s.i(0), s.i(1)), static_cast<T>(0.3), s.i(2), s.o(0), s.o(1));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t b = 0; b < c.sets; ++b)
            for (index_t i = 0; i < c.n; ++i) {
                const T l = naive_softmin_lse(c, a.in[0], a.in[1], a.in[2], T(0.3), b, i);
                a.out[1][static_cast<std::size_t>(b * c.n + i)] = l;
                a.out[0][static_cast<std::size_t>(b * c.n + i)] = -T(0.3) * l;
            }
    }
};

struct PairwiseSoftminGrad {
    static constexpr const char* name = "pairwise_softmin_grad";
    using Case = PairwiseCase;
    static std::vector<Case> cases() { return pairwise_cases(); }
    static std::string label(const Case& c) { return pairwise_label(c); }
    /// Inputs x, y, h, lse (from the double soft-min), coef; output grad (added into).
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> f = PairwiseSoftmin::make(c, seed);
        PairwiseSoftmin::naive(c, f);
        OpArrays<double> a;
        std::vector<double> coef = random_values(static_cast<std::size_t>(c.sets), seed, 4);
        if (c.sets > 2) coef[2] = 0.0;
        a.in = {f.in[0], f.in[1], f.in[2], f.out[1], coef};
        a.out = {random_values(f.in[0].size(), seed, 5)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_pairwise_softmin_grad<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const Tensor<T, cpu> coef = to_host(s.in[4]);
        ops::pairwise_softmin_grad(B{}, point_pairs<T>(c, s.i(0), s.i(1)), static_cast<T>(0.3), s.i(2), s.i(3), coef.data(), s.o(0));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        for (index_t b = 0; b < c.sets; ++b) {
            const T cb = a.in[4][static_cast<std::size_t>(b)];
            if (cb == T(0)) continue;
            for (index_t i = 0; i < c.n; ++i)
                for (index_t j = 0; j < c.m; ++j) {
                    const T p = std::exp(a.in[2][static_cast<std::size_t>(b * c.m + j)] - (T(0.5) * naive_sqdist(c, a.in[0], a.in[1], b, i, j)) / T(0.3) -
                                         a.in[3][static_cast<std::size_t>(b * c.n + i)]);
                    for (index_t e = 0; e < c.d; ++e)
                        a.out[0][static_cast<std::size_t>((b * c.n + i) * c.d + e)] +=
                            cb * p * (a.in[0][static_cast<std::size_t>((b * c.n + i) * c.d + e)] - a.in[1][static_cast<std::size_t>((b * c.m + j) * c.d + e)]);
                }
        }
    }
};

// ---- reductions ----------------------------------------------------------------------------------

struct SumAbs {
    static constexpr const char* name = "sum_abs";
    using Case = ElementwiseCase;
    static std::vector<Case> cases() { return {{1}, {37}, {40000}, {0}}; }
    static std::string label(const Case& c) { return elementwise_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_sum_abs<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        s.host_out = {ops::sum_abs(B{}, s.i(0), c.n)};
    }
    template <class T>
    static void naive(const Case&, OpArrays<T>& a) {
        T s = 0;
        for (T v : a.in[0]) s += std::abs(v);
        a.host_out = {static_cast<double>(s)};
    }
};

struct RowSumSquares {
    static constexpr const char* name = "row_sum_squares";
    using Case = MatrixCase;
    static std::vector<Case> cases() { return matrix_cases(); }
    static std::string label(const Case& c) { return matrix_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.rows * c.n), seed, 1)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_row_sum_squares<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        s.host_out.assign(static_cast<std::size_t>(c.rows), std::numeric_limits<double>::quiet_NaN());
        ops::row_sum_squares(B{}, s.i(0), c.rows, c.n, s.host_out.data());
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        a.host_out.assign(static_cast<std::size_t>(c.rows), 0.0);
        for (index_t r = 0; r < c.rows; ++r) {
            T s = 0;
            for (index_t j = 0; j < c.n; ++j) s += a.in[0][static_cast<std::size_t>(r * c.n + j)] * a.in[0][static_cast<std::size_t>(r * c.n + j)];
            a.host_out[static_cast<std::size_t>(r)] = static_cast<double>(s);
        }
    }
};

struct ColumnMinMax {
    static constexpr const char* name = "column_min_max";
    using Case = MatrixCase;
    static std::vector<Case> cases() { return matrix_cases(); }
    static std::string label(const Case& c) { return matrix_label(c); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        std::vector<double> x = random_values(static_cast<std::size_t>(c.rows * c.n), seed, 1);
        for (std::size_t i = 0; i < x.size(); i += 7) x[i] = i % 2 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
        a.in = {x};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_column_min_max<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        std::vector<T> lo(static_cast<std::size_t>(c.n), std::numeric_limits<T>::infinity()), hi(lo.size(), -std::numeric_limits<T>::infinity());
        ops::column_min_max(B{}, s.i(0), c.rows, c.n, lo.data(), hi.data());
        s.host_out.assign(lo.begin(), lo.end());
        s.host_out.insert(s.host_out.end(), hi.begin(), hi.end());
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        std::vector<double> lo(static_cast<std::size_t>(c.n), std::numeric_limits<double>::infinity()), hi(lo.size(), -std::numeric_limits<double>::infinity());
        for (index_t r = 0; r < c.rows; ++r)
            for (index_t j = 0; j < c.n; ++j) {
                const T v = a.in[0][static_cast<std::size_t>(r * c.n + j)];
                if (!std::isfinite(v)) continue;
                lo[static_cast<std::size_t>(j)] = std::min(lo[static_cast<std::size_t>(j)], static_cast<double>(v));
                hi[static_cast<std::size_t>(j)] = std::max(hi[static_cast<std::size_t>(j)], static_cast<double>(v));
            }
        a.host_out = lo;
        a.host_out.insert(a.host_out.end(), hi.begin(), hi.end());
    }
};

struct Norm {
    static constexpr const char* name = "norm";
    struct Case {
        index_t n;
        double p;
    };
    static std::vector<Case> cases() {
        return {{37, 2.0}, {40000, 2.0}, {1000, 1.0}, {1000, 3.0}, {1000, std::numeric_limits<double>::infinity()}, {0, 2.0}};
    }
    static std::string label(const Case& c) { return fmt::format("n={} p={}", c.n, c.p); }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        a.in = {random_values(static_cast<std::size_t>(c.n), seed, 1)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_norm<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        s.host_out = {ops::norm(B{}, s.i(0), c.n, c.p)};
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        T s = 0;
        for (T v : a.in[0]) s = std::isinf(c.p) ? std::max(s, std::abs(v)) : s + static_cast<T>(std::pow(std::abs(v), c.p));
        a.host_out = {std::isinf(c.p) ? static_cast<double>(s) : std::pow(static_cast<double>(s), 1.0 / c.p)};
    }
};

// ---- optimiser -----------------------------------------------------------------------------------

struct AdamUpdate {
    static constexpr const char* name = "adam_update";
    struct Case {
        index_t n;
        bool decoupled, amsgrad, l2;
    };
    static std::vector<Case> cases() { return {{37, true, false, false}, {20000, false, false, true}, {101, true, true, false}, {0, false, false, false}}; }
    static std::string label(const Case& c) {
        return fmt::format("n={}{}{}{}", c.n, c.decoupled ? " AdamW" : " Adam", c.amsgrad ? " amsgrad" : "", c.l2 ? " L2" : "");
    }
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a;
        const auto n = static_cast<std::size_t>(c.n);
        a.in = {random_values(n, seed, 1)};
        std::vector<double> v = uniform_values(n, seed, 4, 0.0, 0.2), vmax = uniform_values(n, seed, 5, 0.0, 0.2);
        a.out = {random_values(n, seed, 2), random_values(n, seed, 3, 0.1), v, vmax};
        return a;
    }
    template <class T>
    static ops::AdamStep<T> step(const Case& c) {
        ops::AdamStep<T> s;
        s.neg_step = static_cast<T>(-1e-2 / (1.0 - std::pow(0.9, 3.0)));
        s.bc2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(0.999, 3.0)));
        s.b1 = T(0.9), s.one_m_b1 = static_cast<T>(1.0 - 0.9), s.b2 = T(0.999), s.one_m_b2 = static_cast<T>(1.0 - 0.999);
        s.eps = T(1e-8), s.wd = T(0.01), s.decay = static_cast<T>(1.0 - 1e-2 * 0.01);
        s.l2 = c.l2, s.decoupled = c.decoupled, s.amsgrad = c.amsgrad;
        return s;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_adam_update<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        ops::adam_update(B{}, step<T>(c), s.o(0), s.i(0), s.o(1), s.o(2), c.amsgrad ? s.o(3) : nullptr, c.n);
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const ops::AdamStep<T> s = step<T>(c);
        for (std::size_t i = 0; i < a.in[0].size(); ++i) {
            T& w = a.out[0][i];
            T& m = a.out[1][i];
            T& v = a.out[2][i];
            T& vmax = a.out[3][i];
            T g = a.in[0][i];
            if (s.l2) g += s.wd * w;
            if (s.decoupled) w *= s.decay;
            m = s.b1 * m + s.one_m_b1 * g;
            v = s.b2 * v + s.one_m_b2 * g * g;
            T second = v;
            if (s.amsgrad) {
                vmax = std::max(vmax, v);
                second = vmax;
            }
            w += s.neg_step * m / (std::sqrt(second) / s.bc2_sqrt + s.eps);
        }
    }
};

// ---- the fused dense Type I block (optional) ------------------------------------------------------

struct DenseBlockCase {
    index_t batch, genes, heads, dh;
};
/// 130 genes: more than one task's 128 gene rows; sample 1 has no keys.
/// The last case is the CGT's shape (8 heads of width 8): the CPU's vector path, genes in lanes.
inline std::vector<DenseBlockCase> dense_block_cases() { return {{3, 37, 2, 4}, {2, 130, 4, 8}, {3, 130, 8, 8}}; }
inline std::string dense_block_label(const DenseBlockCase& c) {
    return fmt::format("batch={} genes={} heads={} dh={} (a sample without keys)", c.batch, c.genes, c.heads, c.dh);
}
inline ops::DenseCrossAttentionBlock dense_block_of(const DenseBlockCase& c, const index_t* key_offsets) {
    ops::DenseCrossAttentionBlock a;
    a.batch = c.batch, a.genes = c.genes, a.heads = c.heads, a.dh = c.dh, a.ff = 4 * c.heads * c.dh;
    a.key_offsets = key_offsets;
    return a;
}
/// Inputs H, q, kv, then the ten parameters (in DenseCrossAttentionBlockWeights' order); idx: the key offsets.
inline OpArrays<double> dense_block_inputs(const DenseBlockCase& c, std::uint64_t seed) {
    const index_t d = c.heads * c.dh, ff = 4 * d, N = c.genes;
    std::vector<index_t> keys;
    for (index_t b = 0; b < c.batch; ++b) keys.push_back(b == 1 ? 0 : 1 + b % 3);
    OpArrays<double> a;
    a.idx = {offsets_of(keys)};
    const auto E = static_cast<std::size_t>(a.idx[0].back());
    const auto n = [](index_t k) { return static_cast<std::size_t>(k); };
    const double wd = 1.0 / std::sqrt(static_cast<double>(d)), wf = 1.0 / std::sqrt(static_cast<double>(ff));
    a.in = {random_values(n(N * d), seed, 1),          random_values(n(N * d), seed, 2),         random_values(E * n(2 * d), seed, 3),
            random_values(n(d * d), seed, 4, wd),      random_values(n(d), seed, 5, 0.1),        uniform_values(n(d), seed, 6, 0.5, 1.5),
            random_values(n(d), seed, 7, 0.1),         random_values(n(ff * d), seed, 8, wd),    random_values(n(ff), seed, 9, 0.1),
            random_values(n(d * ff), seed, 10, wf),    random_values(n(d), seed, 11, 0.1),       uniform_values(n(d), seed, 12, 0.5, 1.5),
            random_values(n(d), seed, 13, 0.1)};
    return a;
}
template <class T>
ops::DenseCrossAttentionBlockWeights<T> dense_block_weights(const T* const* w) {
    return {w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9]};
}

/// The block row by row in plain loops: softmax over the keys, P·V, then the output projection as a
/// d×d product (where the kernel projects each value per head), LN1, FFN with the exact-erf GELU, LN2.
/// Outputs as the op's: y, lse, xhat1, rstd1, xhat2, rstd2.
template <class T>
void naive_dense_block(const DenseBlockCase& c, OpArrays<T>& a) {
    const index_t N = c.genes, H = c.heads, dh = c.dh, d = H * dh, ff = 4 * d, R = c.batch * N;
    const std::vector<index_t>& ko = a.idx[0];
    const auto& Hg = a.in[0];
    const auto& q = a.in[1];
    const auto& kv = a.in[2];
    const auto &wo = a.in[3], &bo = a.in[4], &w0 = a.in[7], &b0 = a.in[8], &w3 = a.in[9], &b3 = a.in[10];
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
    std::vector<T> r1(static_cast<std::size_t>(R * d)), x1(r1.size()), r2(r1.size()), o(static_cast<std::size_t>(d)), p, hid(static_cast<std::size_t>(ff));
    for (index_t b = 0; b < c.batch; ++b) {
        const index_t k0 = ko[static_cast<std::size_t>(b)], tk = ko[static_cast<std::size_t>(b) + 1] - k0;
        p.assign(static_cast<std::size_t>(tk), T(0));
        for (index_t g = 0; g < N; ++g) {
            const index_t r = b * N + g;
            std::fill(o.begin(), o.end(), T(0));
            for (index_t h = 0; h < H; ++h) {
                T mx = -std::numeric_limits<T>::infinity(), l = 0;
                for (index_t j = 0; j < tk; ++j) {
                    T s = 0;
                    for (index_t e = 0; e < dh; ++e) s += q[static_cast<std::size_t>(g * d + h * dh + e)] * kv[static_cast<std::size_t>((k0 + j) * 2 * d + h * dh + e)];
                    p[static_cast<std::size_t>(j)] = s * scale;
                    mx = std::max(mx, p[static_cast<std::size_t>(j)]);
                }
                for (index_t j = 0; j < tk; ++j) l += (p[static_cast<std::size_t>(j)] = std::exp(p[static_cast<std::size_t>(j)] - mx));
                a.out[1][static_cast<std::size_t>(r * H + h)] = tk ? mx + std::log(l) : -std::numeric_limits<T>::infinity();
                for (index_t j = 0; j < tk; ++j)
                    for (index_t e = 0; e < dh; ++e)
                        o[static_cast<std::size_t>(h * dh + e)] += p[static_cast<std::size_t>(j)] / l * kv[static_cast<std::size_t>((k0 + j) * 2 * d + d + h * dh + e)];
            }
            for (index_t i = 0; i < d; ++i) {
                T ai = 0;
                if (tk) {
                    ai = bo[static_cast<std::size_t>(i)];
                    for (index_t e = 0; e < d; ++e) ai += wo[static_cast<std::size_t>(i * d + e)] * o[static_cast<std::size_t>(e)];
                }
                r1[static_cast<std::size_t>(r * d + i)] = Hg[static_cast<std::size_t>(g * d + i)] + ai;
            }
        }
    }
    naive_layer_norm(r1, a.in[5].data(), a.in[6].data(), R, d, 1e-5, x1, a.out[2], a.out[3]);
    for (index_t r = 0; r < R; ++r) {
        for (index_t j = 0; j < ff; ++j) {
            T v = b0[static_cast<std::size_t>(j)];
            for (index_t i = 0; i < d; ++i) v += w0[static_cast<std::size_t>(j * d + i)] * x1[static_cast<std::size_t>(r * d + i)];
            hid[static_cast<std::size_t>(j)] = T(0.5) * v * (T(1) + std::erf(v / std::sqrt(T(2))));
        }
        for (index_t i = 0; i < d; ++i) {
            T v = b3[static_cast<std::size_t>(i)];
            for (index_t j = 0; j < ff; ++j) v += w3[static_cast<std::size_t>(i * ff + j)] * hid[static_cast<std::size_t>(j)];
            r2[static_cast<std::size_t>(r * d + i)] = x1[static_cast<std::size_t>(r * d + i)] + v;
        }
    }
    naive_layer_norm(r2, a.in[11].data(), a.in[12].data(), R, d, 1e-5, a.out[0], a.out[4], a.out[5]);
}

/// The forward's naive is naive_dense_block. The backward's naive is the CPU kernel in T (so the
/// harness checks its float run against float64); its independent reference is finite differences
/// (check_backward_ops), tests/test_cgt_heads.cpp compares the transform with the ragged ops' path
/// in double within 1e-12, and tests/test_ops.cpp checks the CPU's float vector path against its
/// scalar path.
struct DenseCrossAttentionBlockForward {
    static constexpr const char* name = "dense_cross_attention_block_forward";
    static constexpr bool optional = true;
    using Case = DenseBlockCase;
    static std::vector<Case> cases() { return dense_block_cases(); }
    static std::string label(const Case& c) { return dense_block_label(c); }
    /// Outputs: y, lse, xhat1, rstd1, xhat2, rstd2.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> a = dense_block_inputs(c, seed);
        const auto R = static_cast<std::size_t>(c.batch * c.genes), d = static_cast<std::size_t>(c.heads * c.dh);
        a.out = {poison(R * d), poison(R * static_cast<std::size_t>(c.heads)), poison(R * d), poison(R), poison(R * d), poison(R)};
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_dense_cross_attention_block_forward<B, T>;
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const T* w[10];
        for (std::size_t k = 0; k < 10; ++k) w[k] = s.i(3 + k);
        ops::dense_cross_attention_block_forward(B{}, dense_block_of(c, s.x(0)), s.i(0), s.i(1), s.i(2), dense_block_weights<T>(w), s.o(0),
                                                 ops::DenseCrossAttentionBlockSaved<T>{s.o(1), s.o(2), s.o(3), s.o(4), s.o(5)});
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        naive_dense_block(c, a);
    }
};

struct DenseCrossAttentionBlockBackward {
    static constexpr const char* name = "dense_cross_attention_block_backward";
    static constexpr bool optional = true;
    using Case = DenseBlockCase;
    static std::vector<Case> cases() { return dense_block_cases(); }
    static std::string label(const Case& c) { return dense_block_label(c); }
    /// Inputs: H, q, kv, the ten parameters, the forward's saved five (from the double forward), dy.
    /// Outputs: dq, dH (added into), dkv, the ten gradients.
    static OpArrays<double> make(const Case& c, std::uint64_t seed) {
        OpArrays<double> f = DenseCrossAttentionBlockForward::make(c, seed);
        DenseCrossAttentionBlockForward::naive(c, f);
        OpArrays<double> a;
        a.idx = f.idx;
        a.in = f.in;
        for (std::size_t k = 1; k < 6; ++k) a.in.push_back(f.out[k]);
        a.in.push_back(random_values(f.out[0].size(), seed, 20));
        a.out = {poison(f.in[1].size()), random_values(f.in[0].size(), seed, 21), poison(f.in[2].size())};
        for (std::size_t k = 3; k < 13; ++k) a.out.push_back(poison(f.in[k].size()));
        return a;
    }
    template <class B, class T>
    static constexpr bool available = ops::provides_dense_cross_attention_block_backward<B, T>;
    template <class T>
    static ops::DenseCrossAttentionBlockGrads<T> grads(T* const* g) {
        return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]};
    }
    template <class B, class T>
    static void call(const Case& c, StagedArrays<T, B>& s) {
        const T* w[10];
        T* g[10];
        for (std::size_t k = 0; k < 10; ++k) w[k] = s.i(3 + k), g[k] = s.o(3 + k);
        // The saved arrays are read only; the struct holds them as T*.
        const auto saved = ops::DenseCrossAttentionBlockSaved<T>{const_cast<T*>(s.i(13)), const_cast<T*>(s.i(14)), const_cast<T*>(s.i(15)),
                                                                 const_cast<T*>(s.i(16)), const_cast<T*>(s.i(17))};
        ops::dense_cross_attention_block_backward(B{}, dense_block_of(c, s.x(0)), s.i(0), s.i(1), s.i(2), dense_block_weights<T>(w), saved,
                                                  s.i(18), s.o(0), s.o(1), s.o(2), grads<T>(g));
    }
    template <class T>
    static void naive(const Case& c, OpArrays<T>& a) {
        const T* w[10];
        T* g[10];
        for (std::size_t k = 0; k < 10; ++k) w[k] = a.in[3 + k].data(), g[k] = a.out[3 + k].data();
        const auto saved = ops::DenseCrossAttentionBlockSaved<T>{a.in[13].data(), a.in[14].data(), a.in[15].data(), a.in[16].data(), a.in[17].data()};
        ops::dense_cross_attention_block_backward(cpu{}, dense_block_of(c, a.idx[0].data()), a.in[0].data(),
                                                                                    a.in[1].data(), a.in[2].data(), dense_block_weights<T>(w), saved,
                                                                                    a.in[18].data(), a.out[0].data(), a.out[1].data(),
                                                                                    a.out[2].data(), grads<T>(g));
    }
};

} // namespace op_tests

/// Every op of backend/ops.hpp, once.
using OpTests = std::tuple<
    op_tests::Gemm, op_tests::Fill, op_tests::Scale, op_tests::Accumulate, op_tests::Axpby, op_tests::ShiftDiv, op_tests::SignAxpy,
    op_tests::AddRowVector, op_tests::ColumnSum, op_tests::Copy2d, op_tests::ScaleRows, op_tests::ActivationForward,
    op_tests::ActivationBackward, op_tests::SwigluForward, op_tests::SwigluBackward, op_tests::DropoutApply, op_tests::RowDropoutTest,
    op_tests::LayerNormForward, op_tests::LayerNormBackward, op_tests::RmsNormForward, op_tests::RmsNormBackward, op_tests::GatherRows,
    op_tests::ScatterAddRows, op_tests::SegmentPoolTest, op_tests::SegmentPoolBackward, op_tests::AttentionForward,
    op_tests::AttentionBackward, op_tests::AttentionEdgeScores, op_tests::GraphKlEdges, op_tests::RaggedCrossAttentionForward,
    op_tests::RaggedCrossAttentionBackward, op_tests::DenseCrossAttentionBlockForward, op_tests::DenseCrossAttentionBlockBackward,
    op_tests::PairwiseSqdist, op_tests::PairwiseDistanceSum, op_tests::PairwiseDistanceGrad,
    op_tests::PairwiseSoftmin, op_tests::PairwiseSoftminGrad, op_tests::SumAbs, op_tests::RowSumSquares, op_tests::ColumnMinMax,
    op_tests::Norm, op_tests::AdamUpdate>;

/// The names of the registered ops (the harness test checks them against backend/ops.hpp).
inline std::vector<std::string> registered_op_names() {
    std::vector<std::string> names;
    std::apply([&](auto... op) { (names.emplace_back(decltype(op)::name), ...); }, OpTests{});
    return names;
}

struct OpHarnessOptions {
    std::uint64_t seed = 20261127;
    double naive_factor = 2.0;  ///< the backend may err this many times the naive implementation
    double ulp_floor = 8.0;     ///< plus this many units of T's rounding (normwise)
};

namespace harness_detail {

/// An op marked `static constexpr bool optional = true` (a fused op) may be missing from a backend.
template <class Op>
constexpr bool optional_op = requires { requires Op::optional; };

template <class Op, class B, class T>
void check_op(OpHarnessReport& rep, const OpHarnessOptions& opt) {
    const std::string scalar = std::is_same_v<T, float> ? "float" : "double";
    if constexpr (!Op::template available<B, T> && optional_op<Op>) {
        return;  // a fused op the backend may leave out: its callers compose the ops above instead
    } else if constexpr (!Op::template available<B, T>) {
        rep.missing_ops.push_back(fmt::format("{} ({})", Op::name, scalar));
        OpCheck c;
        c.op = Op::name, c.backend = B::name, c.scalar = scalar, c.implemented = false, c.ok = false;
        rep.checks.push_back(c);
    } else {
        std::uint64_t k = 0;
        for (const auto& cs : Op::cases()) {
            OpCheck chk;
            chk.op = Op::name, chk.label = Op::label(cs), chk.backend = B::name, chk.scalar = scalar;
            try {
                const OpArrays<double> base = Op::make(cs, opt.seed + 7919 * k++);
                const OpArrays<T> at = base.template cast<T>();  // inputs rounded to T: the reference sees the same values
                const OpArrays<double> a64 = at.template cast<double>();
                const OpArrays<double> ref = run_on<Op, cpu, double>(cs, a64);
                const OpArrays<double> got = run_on<Op, B, T>(cs, at);
                OpArrays<T> nt = at;
                Op::template naive<T>(cs, nt);
                const OpArrays<double> naive = nt.template cast<double>();
                const double floor = opt.ulp_floor * unit_roundoff<T>();
                auto compare = [&](const std::vector<double>& g, const std::vector<double>& r, const std::vector<double>& n, const std::string& what) {
                    std::string detail;
                    const double e = normwise_error(g, r, &detail);
                    const double en = normwise_error(n, r);
                    const double tol = opt.naive_factor * (std::isfinite(en) ? en : 0.0) + floor;
                    if (!(e <= tol)) {
                        chk.ok = false;
                        chk.detail += fmt::format("[{}: {}] ", what, detail.empty() ? fmt::format("error {:.3e}", e) : detail);
                    }
                    if (e > chk.error || !std::isfinite(e)) chk.error = e;
                    chk.naive_error = std::max(chk.naive_error, std::isfinite(en) ? en : 0.0);
                    chk.tolerance = std::max(chk.tolerance, tol);
                };
                for (std::size_t o = 0; o < ref.out.size(); ++o) compare(got.out[o], ref.out[o], naive.out[o], fmt::format("output {}", o));
                if (!ref.host_out.empty() || !got.host_out.empty()) compare(got.host_out, ref.host_out, naive.host_out, "host result");
            } catch (const std::exception& e) {
                chk.ok = false;
                chk.detail = fmt::format("threw: {}", e.what());
            }
            rep.checks.push_back(std::move(chk));
        }
    }
}

} // namespace harness_detail

/// Runs every registered op on backend B in T against the float64 CPU reference and the naive
/// implementation in T.
template <Backend B, Scalar T>
OpHarnessReport run_op_harness(const OpHarnessOptions& opt = {}) {
    OpHarnessReport rep;
    std::apply([&](auto... op) { (harness_detail::check_op<decltype(op), B, T>(rep, opt), ...); }, OpTests{});
    return rep;
}

// =================================================================================================
// Backward ops against central finite differences (CPU, double)

namespace harness_detail {

/// max over the checked entries of |fd − analytic| / max(|fd|, |analytic|, floor), where fd is the
/// central difference of loss() in each input entry (at most `max_entries` per input, evenly spaced)
/// and floor = 1e-2 of the input's largest gradient entry (at least 1e-6): entries far below the
/// gradient's scale are judged absolutely, since a difference quotient cannot resolve them.
inline double fd_error(std::vector<std::vector<double>*> inputs, const std::vector<std::vector<double>>& analytic,
                       const std::function<double()>& loss, std::string& worst, double step = 1e-6, std::size_t max_entries = 40) {
    double err = 0.0;
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        std::vector<double>& x = *inputs[k];
        if (analytic[k].size() != x.size()) {
            worst = fmt::format("input {}: {} gradient entries for {} values", k, analytic[k].size(), x.size());
            return std::numeric_limits<double>::infinity();
        }
        double floor = 1e-6;
        for (double g : analytic[k])
            if (std::isfinite(g)) floor = std::max(floor, 1e-2 * std::abs(g));
        const std::size_t stride = x.size() > max_entries ? (x.size() + max_entries - 1) / max_entries : 1;
        for (std::size_t i = 0; i < x.size(); i += stride) {
            const double v = x[i];
            x[i] = v + step;
            const double lp = loss();
            x[i] = v - step;
            const double lm = loss();
            x[i] = v;
            const double fd = (lp - lm) / (2.0 * step), an = analytic[k][i];
            const double e = std::abs(fd - an) / std::max({std::abs(fd), std::abs(an), floor});
            if (!(e <= err)) {
                err = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
                worst = fmt::format("input {}[{}]: analytic {:.10g}, numeric {:.10g}", k, i, an, fd);
            }
        }
    }
    return err;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}
inline std::size_t sz(index_t n) { return static_cast<std::size_t>(n); }

} // namespace harness_detail

/// Each backward op (the activations, SwiGLU, dropout, the norms, bias/column sums, gathers,
/// segments, attention with a graph term, ragged cross-attention, the graph KL, the pairwise loss
/// tiles, |x|) against central finite differences of its forward, on the CPU in double.
inline OpHarnessReport check_backward_ops(const OpHarnessOptions& opt = {}, double tolerance = 1e-6) {
    using namespace harness_detail;
    using namespace op_tests;
    OpHarnessReport rep;
    const cpu B{};
    std::uint64_t seed = opt.seed;
    auto record = [&](const std::string& op, const std::string& label, const std::function<double(std::string&)>& run) {
        OpCheck c;
        c.op = op + " (backward vs finite differences)", c.label = label, c.backend = "cpu", c.scalar = "double", c.tolerance = tolerance;
        try {
            c.error = run(c.detail);
            c.ok = c.error <= tolerance;
        } catch (const std::exception& e) {
            c.ok = false;
            c.error = std::numeric_limits<double>::infinity();
            c.detail = fmt::format("threw: {}", e.what());
        }
        rep.checks.push_back(std::move(c));
        ++seed;
    };

    for (const ActivationKind k : {ActivationKind::gelu, ActivationKind::gelu_tanh, ActivationKind::relu, ActivationKind::silu})
        record("activation_backward", activation_label(k), [&](std::string& w) {
            const index_t n = 23;
            std::vector<double> x = random_values(sz(n), seed, 1, 2.0), R = random_values(sz(n), seed, 2), y(sz(n)), dx(sz(n), 0.0);
            for (double& v : x)
                if (std::abs(v) < 1e-3) v = 0.5;  // away from ReLU's kink
            ops::activation_backward(B, k, x.data(), R.data(), dx.data(), n);
            return fd_error({&x}, {dx}, [&] { ops::activation_forward(B, k, x.data(), y.data(), n); return dot(R, y); }, w);
        });
    record("swiglu_backward", "n=29", [&](std::string& w) {
        const index_t n = 29;
        std::vector<double> g = random_values(sz(n), seed, 1, 2.0), u = random_values(sz(n), seed, 2), R = random_values(sz(n), seed, 3);
        std::vector<double> h(sz(n)), dg(sz(n)), du(sz(n));
        ops::swiglu_backward(B, g.data(), u.data(), R.data(), dg.data(), du.data(), n);
        return fd_error({&g, &u}, {dg, du}, [&] { ops::swiglu_forward(B, g.data(), u.data(), h.data(), n); return dot(R, h); }, w);
    });
    record("dropout_apply", "backward of p=0.3", [&](std::string& w) {
        const index_t n = 41;
        const CounterRng rng(5, 6);
        std::vector<double> x = random_values(sz(n), seed, 1), R = random_values(sz(n), seed, 2), y(sz(n)), dx(sz(n), 0.0);
        ops::dropout_apply(B, rng, 0.3, R.data(), dx.data(), n, true);
        return fd_error({&x}, {dx}, [&] { ops::dropout_apply(B, rng, 0.3, x.data(), y.data(), n, false); return dot(R, y); }, w);
    });
    record("row_dropout", "its own adjoint, p=0.4", [&](std::string& w) {
        const RaggedLayout l = ragged_layout(5, seed, true);
        const index_t width = 6, R_ = l.row_offsets.back();
        const ops::RaggedRows rows{5, R_, l.row_offsets.data(), l.row_gene.data()};
        const ops::RowDropout drop{0.4, 3, 4, 5};
        std::vector<double> x = random_values(sz(R_ * width), seed, 1), R = random_values(x.size(), seed, 2), dx = R;
        ops::row_dropout(B, rows, drop, dx.data(), width);
        return fd_error({&x}, {dx}, [&] { std::vector<double> y = x; ops::row_dropout(B, rows, drop, y.data(), width); return dot(R, y); }, w);
    });
    record("layer_norm_backward", "7x9, affine", [&](std::string& w) {
        const index_t rows = 7, d = 9;
        std::vector<double> x = random_values(sz(rows * d), seed, 1, 2.0), g = uniform_values(sz(d), seed, 2, 0.5, 1.5), b = random_values(sz(d), seed, 3);
        std::vector<double> R = random_values(x.size(), seed, 4), y(x.size()), xhat(x.size()), rstd(sz(rows)), dx(x.size(), 0.0), dg(sz(d)), db(sz(d));
        auto fwd = [&] { ops::layer_norm_forward(B, x.data(), g.data(), b.data(), y.data(), xhat.data(), rstd.data(), rows, d, 1e-5); };
        fwd();
        ops::layer_norm_backward(B, R.data(), xhat.data(), rstd.data(), g.data(), rows, d, dx.data(), dg.data(), db.data());
        return fd_error({&x, &g, &b}, {dx, dg, db}, [&] { fwd(); return dot(R, y); }, w);
    });
    record("rms_norm_backward", "6x11", [&](std::string& w) {
        const index_t rows = 6, d = 11;
        std::vector<double> x = random_values(sz(rows * d), seed, 1, 2.0), g = uniform_values(sz(d), seed, 2, 0.5, 1.5);
        std::vector<double> R = random_values(x.size(), seed, 4), y(x.size()), n(x.size()), rstd(sz(rows)), dx(x.size(), 0.0), dg(sz(d));
        auto fwd = [&] { ops::rms_norm_forward(B, x.data(), g.data(), y.data(), n.data(), rstd.data(), rows, d, 1e-6); };
        fwd();
        ops::rms_norm_backward(B, R.data(), n.data(), rstd.data(), g.data(), rows, d, dx.data(), dg.data());
        return fd_error({&x, &g}, {dx, dg}, [&] { fwd(); return dot(R, y); }, w);
    });
    record("column_sum", "the adjoint of add_row_vector, 8x5", [&](std::string& w) {
        const index_t rows = 8, n = 5;
        std::vector<double> b = random_values(sz(n), seed, 1), Y0 = random_values(sz(rows * n), seed, 2), R = random_values(Y0.size(), seed, 3), db(sz(n));
        ops::column_sum(B, R.data(), rows, n, db.data(), false);
        return fd_error({&b}, {db}, [&] { std::vector<double> Y = Y0; ops::add_row_vector(B, Y.data(), b.data(), rows, n); return dot(R, Y); }, w);
    });
    record("scatter_add_rows", "the adjoint of gather_rows, repeated rows", [&](std::string& w) {
        const std::vector<index_t> idx{3, 0, 3, 5, 1, 3};
        const index_t n = 6, dim = 4, src_rows = 7;
        std::vector<double> src = random_values(sz(src_rows * dim), seed, 1), R = random_values(sz(n * dim), seed, 2), y(R.size()), dsrc(src.size(), 0.0);
        ops::scatter_add_rows(B, R.data(), idx.data(), n, dim, dsrc.data());
        return fd_error({&src}, {dsrc}, [&] { ops::gather_rows(B, src.data(), idx.data(), n, dim, y.data()); return dot(R, y); }, w);
    });
    for (const SegmentCase& sc : segment_cases())
        record("segment_pool_backward", segment_label(sc), [&](std::string& w) {
            OpArrays<double> a = SegmentPoolBackward::make(sc, seed);
            index_t x_rows = 0;
            OpArrays<double> idx;
            segment_arrays(sc, seed, idx, x_rows);
            const ops::SegmentPool<double> pool{sc.segments, sc.dim, idx.idx[0].data(), sc.row_list ? idx.idx[1].data() : nullptr,
                                                sc.weights ? a.in[1].data() : nullptr, sc.unique};
            std::vector<double> x = random_values(sz(x_rows * sc.dim), seed, 5), R = random_values(sz(sc.segments * sc.ld), seed, 6);
            std::vector<double> out(R.size(), 0.0), dx(x.size(), 0.0);
            ops::segment_pool_backward(B, pool, R.data(), sc.ld, dx.data());
            return fd_error({&x}, {dx}, [&] {
                std::fill(out.begin(), out.end(), 0.0);
                ops::segment_pool(B, pool, x.data(), out.data(), sc.ld);
                return dot(R, out);
            }, w);
        });
    for (const AttentionCase& ac : attention_cases()) {
        if (ac.batch * ac.tq * ac.tk * ac.hq > 20000) continue;  // finite differences re-run the forward per entry
        record("attention_backward", attention_label(ac), [&](std::string& w) {
            OpArrays<double> a = AttentionBackward::make(ac, seed);
            std::vector<double> q = a.in[0], k = a.in[1], v = a.in[2], R = a.in[5];
            const ops::AttentionDims d = attention_dims(ac);
            const index_t lq = ac.hq * ac.dh, lk = ac.hkv * ac.dh;
            const std::vector<index_t>& rp = a.idx[0];
            const std::vector<index_t>& col = a.idx[1];
            const std::vector<double>& W = a.in[6];
            const ops::GraphTerm<double> term{0, std::span<const index_t>(rp), std::span<const index_t>(col), std::span<const double>(W)};
            std::vector<double> o(q.size()), lse(sz(ac.batch * ac.hq * ac.tq)), lp(sz(ac.batch) * col.size());
            auto fwd = [&] {
                ops::attention_forward(B, d, ops::HeadsRef<const double>{q.data(), lq}, ops::HeadsRef<const double>{k.data(), lk},
                                       ops::HeadsRef<const double>{v.data(), lk}, ops::HeadsRef<double>{o.data(), lq}, lse.data(), attention_dropout(ac));
            };
            // L = <R, O> + Σ_b Σ_e W_e·(−log P_e): the graph term whose gradient the hook fuses in.
            auto loss = [&] {
                fwd();
                double l = dot(R, o);
                if (ac.hook) {
                    ops::attention_edge_scores(B, d, ops::HeadsRef<const double>{q.data(), lq}, ops::HeadsRef<const double>{k.data(), lk}, term,
                                               lp.data(), lse.data());
                    for (index_t b = 0; b < ac.batch; ++b)
                        for (std::size_t e = 0; e < col.size(); ++e) l -= W[e] * lp[sz(b) * col.size() + e];
                }
                return l;
            };
            fwd();
            ops::GraphHook<double> hook{a.in[7].data(), {term}};
            std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
            ops::attention_backward(B, d, ops::HeadsRef<const double>{q.data(), lq}, ops::HeadsRef<const double>{k.data(), lk},
                                    ops::HeadsRef<const double>{v.data(), lk}, ops::HeadsRef<const double>{o.data(), lq}, lse.data(),
                                    ops::HeadsRef<const double>{R.data(), lq}, ops::HeadsRef<double>{dq.data(), lq}, ops::HeadsRef<double>{dk.data(), lk},
                                    ops::HeadsRef<double>{dv.data(), lk}, attention_dropout(ac), ac.hook ? &hook : nullptr);
            return fd_error({&q, &k, &v}, {dq, dk, dv}, loss, w);
        });
    }
    for (const RaggedCase& rc : ragged_cases())
        record("ragged_cross_attention_backward", ragged_label(rc), [&](std::string& w) {
            OpArrays<double> a = RaggedCrossAttentionForward::make(rc, seed);
            std::vector<double> q = a.in[0], kv = a.in[1], R = random_values(q.size(), seed, 7), o(q.size()), lse(a.out[1].size());
            const ops::RaggedCrossAttention att{{rc.batch, static_cast<index_t>(a.idx[1].size()), a.idx[0].data(), a.idx[1].data()}, a.idx[2].data(),
                                                rc.heads, rc.dh, ragged_dropout(rc)};
            auto loss = [&] { ops::ragged_cross_attention_forward(B, att, q.data(), kv.data(), o.data(), lse.data()); return dot(R, o); };
            loss();
            std::vector<double> dq(q.size()), dkv(kv.size());
            ops::ragged_cross_attention_backward(B, att, q.data(), kv.data(), lse.data(), R.data(), dq.data(), dkv.data());
            return fd_error({&q, &kv}, {dq, dkv}, loss, w);
        });
    record("graph_kl_edges", "d loss / d log α = −W (weight 1)", [&](std::string& w) {
        OpArrays<double> a = GraphKlEdges::make({17}, seed);
        std::vector<double> logp = a.in[1], W(logp.size()), coef(17, 0.0);
        ops::graph_kl_edges(B, 17, a.idx[0].data(), a.in[0].data(), logp.data(), 1.0, 1e-8, W.data(), coef.data());
        for (double& x : W) x = -x;
        return fd_error({&logp}, {W}, [&] { std::vector<double> w2(W.size()), c2(17, 0.0); return ops::graph_kl_edges(B, 17, a.idx[0].data(), a.in[0].data(), logp.data(), 1.0, 1e-8, w2.data(), c2.data()); }, w);
    });
    for (const PairwiseCase& pc : pairwise_cases()) {
        record("pairwise_distance_grad", pairwise_label(pc), [&](std::string& w) {
            OpArrays<double> a = PairwiseDistanceGrad::make(pc, seed);
            std::vector<double> x = a.in[0];
            const std::vector<double>& y = a.in[1];
            const std::vector<double>& coef = a.in[2];
            std::vector<double> gx(x.size(), 0.0), sums(sz(pc.sets));
            ops::pairwise_distance_grad(B, point_pairs<double>(pc, x.data(), y.data()), 1e-8, coef.data(), gx.data());
            // The loss sums up to 660 distances (about 4e3): a step of 1e-6 would leave rounding
            // of ~1e-5 relative in the differences; the distances' curvature allows 1e-4.
            return fd_error({&x}, {gx}, [&] {
                ops::pairwise_distance_sum(B, point_pairs<double>(pc, x.data(), y.data()), 1e-8, sums.data());
                return dot(coef, sums);
            }, w, 1e-4);
        });
        record("pairwise_softmin_grad", pairwise_label(pc), [&](std::string& w) {
            OpArrays<double> a = PairwiseSoftminGrad::make(pc, seed);
            std::vector<double> x = a.in[0];
            const std::vector<double>& y = a.in[1];
            const std::vector<double>& h = a.in[2];
            const std::vector<double>& coef = a.in[4];
            std::vector<double> out(sz(pc.sets * pc.n)), lse(out.size()), gx(x.size(), 0.0);
            ops::pairwise_softmin(B, point_pairs<double>(pc, x.data(), y.data()), 0.3, h.data(), out.data(), lse.data());
            ops::pairwise_softmin_grad(B, point_pairs<double>(pc, x.data(), y.data()), 0.3, h.data(), lse.data(), coef.data(), gx.data());
            return fd_error({&x}, {gx}, [&] {
                ops::pairwise_softmin(B, point_pairs<double>(pc, x.data(), y.data()), 0.3, h.data(), out.data(), lse.data());
                double l = 0.0;
                for (index_t b = 0; b < pc.sets; ++b)
                    for (index_t i = 0; i < pc.n; ++i) l += coef[sz(b)] * out[sz(b * pc.n + i)];
                return l;
            }, w);
        });
    }
    record("sign_axpy", "the gradient of sum_abs", [&](std::string& w) {
        std::vector<double> x = random_values(33, seed, 1), g(33, 0.0);
        ops::sign_axpy(B, 33, 1.0, x.data(), g.data());
        return fd_error({&x}, {g}, [&] { return ops::sum_abs(B, x.data(), 33); }, w);
    });
    // Last, so that the checks above keep the seeds they were tuned with.
    for (const DenseBlockCase& dc : {DenseBlockCase{3, 37, 2, 4}, DenseBlockCase{2, 130, 1, 4}})  // 130 genes: two tasks' partials
        record("dense_cross_attention_block_backward", dense_block_label(dc), [&](std::string& w) {
            OpArrays<double> a = DenseCrossAttentionBlockForward::make(dc, seed);
            const ops::DenseCrossAttentionBlock blk = dense_block_of(dc, a.idx[0].data());
            std::vector<double> R = random_values(a.out[0].size(), seed, 30);
            const auto weights = [&] {
                const double* p[10];
                for (std::size_t k = 0; k < 10; ++k) p[k] = a.in[3 + k].data();
                return dense_block_weights<double>(p);
            };
            const auto saved = ops::DenseCrossAttentionBlockSaved<double>{a.out[1].data(), a.out[2].data(), a.out[3].data(), a.out[4].data(),
                                                                          a.out[5].data()};
            auto loss = [&] {
                ops::dense_cross_attention_block_forward(B, blk, a.in[0].data(), a.in[1].data(), a.in[2].data(), weights(), a.out[0].data(), saved);
                return dot(R, a.out[0]);
            };
            loss();
            std::vector<std::vector<double>> grad(13);
            for (std::size_t k = 0; k < 13; ++k) grad[k].assign(a.in[k].size(), 0.0);  // dH is added into
            double* g[10];
            for (std::size_t k = 0; k < 10; ++k) g[k] = grad[3 + k].data();
            ops::dense_cross_attention_block_backward(B, blk, a.in[0].data(), a.in[1].data(), a.in[2].data(), weights(), saved, R.data(),
                                                      grad[1].data(), grad[0].data(), grad[2].data(), DenseCrossAttentionBlockBackward::grads<double>(g));
            std::vector<std::vector<double>*> inputs;
            for (auto& x : a.in) inputs.push_back(&x);
            return fd_error(inputs, grad, loss, w);
        });
    return rep;
}

} // namespace celltx::testing
