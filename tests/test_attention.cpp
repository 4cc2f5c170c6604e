// Memory-efficient multi-head attention: the blockwise kernels against a dense double reference
// (values, LSE, gradients, dropout, graph hook), the layer against finite differences in every
// layout and against PyTorch fixtures, thread-count independence, and the memory bound at CGT size.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "celltx/backend/ops.hpp"
#include "celltx/core/concepts.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/testing/compare.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "threads.hpp"

using namespace celltx;
using celltx::testing::random_tensor;
using celltx::testing::relative_difference;
using nn::AttentionConfig;
using nn::AttentionLayout;
using nn::MultiHeadAttention;
using ops::AttentionDims;
using ops::AttentionDropout;

namespace {

// ---- dense double reference: materialises every tq×tk matrix, straight from the definitions ----

index_t at(index_t tokens, index_t heads, index_t dh, index_t b, index_t t, index_t h, index_t e) {
    return ((b * tokens + t) * heads + h) * dh + e;
}

struct Dense {
    Tensor<double> o, lse, logp, mask;  // logp, mask: [B, hq, tq, tk]; mask holds keep/(1-p) or 0
};

Dense dense_forward(const AttentionDims& d, const Tensor<double>& q, const Tensor<double>& k, const Tensor<double>& v,
                    const AttentionDropout& drop) {
    Dense r{Tensor<double>(Shape{d.batch, d.tq, d.hq, d.dh}), Tensor<double>(Shape{d.batch, d.hq, d.tq}),
            Tensor<double>(Shape{d.batch, d.hq, d.tq, d.tk}), Tensor<double>(Shape{d.batch, d.hq, d.tq, d.tk})};
    const double scale = d.softmax_scale();
    std::vector<double> s(static_cast<std::size_t>(d.tk));
    for (index_t b = 0; b < d.batch; ++b)
        for (index_t h = 0; h < d.hq; ++h) {
            const index_t g = h / d.group();
            for (index_t i = 0; i < d.tq; ++i) {
                double mx = -std::numeric_limits<double>::infinity();
                for (index_t j = 0; j < d.tk; ++j) {
                    double acc = 0;
                    for (index_t e = 0; e < d.dh; ++e) acc += q[at(d.tq, d.hq, d.dh, b, i, h, e)] * k[at(d.tk, d.hkv, d.dh, b, j, g, e)];
                    s[j] = scale * acc;
                    mx = std::max(mx, s[j]);
                }
                double sum = 0;
                for (index_t j = 0; j < d.tk; ++j) sum += std::exp(s[j] - mx);
                const double lse = d.tk ? mx + std::log(sum) : -std::numeric_limits<double>::infinity();
                r.lse(b, h, i) = lse;
                for (index_t j = 0; j < d.tk; ++j) {
                    r.logp(b, h, i, j) = s[j] - lse;
                    r.mask(b, h, i, j) = ops::attention_dropout_keep(drop, d, b, h, i, j) ? 1.0 / (1.0 - drop.p) : 0.0;
                    const double pm = std::exp(s[j] - lse) * r.mask(b, h, i, j);
                    for (index_t e = 0; e < d.dh; ++e) r.o[at(d.tq, d.hq, d.dh, b, i, h, e)] += pm * v[at(d.tk, d.hkv, d.dh, b, j, g, e)];
                }
            }
        }
    return r;
}

struct DenseGrads {
    Tensor<double> dq, dk, dv;
};

/// dL/dS_ij = P_ij (dP_ij − Σ_l P_il dP_il) + c_i P_ij − W_ij with dP_ij = M_ij dO_i·v_j.
DenseGrads dense_backward(const AttentionDims& d, const Tensor<double>& q, const Tensor<double>& k, const Tensor<double>& v,
                          const Dense& f, const Tensor<double>& dout, const ops::GraphHook<double>* hook) {
    DenseGrads r{Tensor<double>(q.shape()), Tensor<double>(k.shape()), Tensor<double>(v.shape())};
    const double scale = d.softmax_scale();
    Tensor<double> W(Shape{d.hq, d.tq, d.tk});
    if (hook)
        for (const auto& t : hook->terms)
            for (index_t i = 0; i < d.tq; ++i)
                for (index_t e = t.row_ptr[i]; e < t.row_ptr[i + 1]; ++e) W(t.head, i, t.col[e]) += t.value[e];
    std::vector<double> dp(static_cast<std::size_t>(d.tk));
    for (index_t b = 0; b < d.batch; ++b)
        for (index_t h = 0; h < d.hq; ++h) {
            const index_t g = h / d.group();
            for (index_t i = 0; i < d.tq; ++i) {
                double rowdot = 0;
                for (index_t j = 0; j < d.tk; ++j) {
                    double acc = 0;
                    for (index_t e = 0; e < d.dh; ++e) acc += dout[at(d.tq, d.hq, d.dh, b, i, h, e)] * v[at(d.tk, d.hkv, d.dh, b, j, g, e)];
                    dp[j] = f.mask(b, h, i, j) * acc;
                    rowdot += std::exp(f.logp(b, h, i, j)) * dp[j];
                }
                const double c = hook && hook->coef ? hook->coef[(b * d.hq + h) * d.tq + i] : 0.0;
                for (index_t j = 0; j < d.tk; ++j) {
                    const double p = std::exp(f.logp(b, h, i, j));
                    const double ds = p * (dp[j] - rowdot) + c * p - W(h, i, j);
                    for (index_t e = 0; e < d.dh; ++e) {
                        r.dq[at(d.tq, d.hq, d.dh, b, i, h, e)] += scale * ds * k[at(d.tk, d.hkv, d.dh, b, j, g, e)];
                        r.dk[at(d.tk, d.hkv, d.dh, b, j, g, e)] += scale * ds * q[at(d.tq, d.hq, d.dh, b, i, h, e)];
                        r.dv[at(d.tk, d.hkv, d.dh, b, j, g, e)] += p * f.mask(b, h, i, j) * dout[at(d.tq, d.hq, d.dh, b, i, h, e)];
                    }
                }
            }
        }
    return r;
}

// ---- the kernels, on operands stored with padding between tokens (ld > heads*dh) ----

/// [B*T, heads*dh + pad] copy of a contiguous [B,T,heads,dh] tensor; the padding holds NaN so a
/// kernel that reads it poisons its result.
template <class T>
Tensor<T> padded(const Tensor<double>& x, index_t rows, index_t width, index_t pad) {
    Tensor<T> out = Tensor<T>::full(Shape{rows, width + pad}, std::numeric_limits<T>::quiet_NaN());
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < width; ++c) out[r * (width + pad) + c] = static_cast<T>(x[r * width + c]);
    return out;
}
Tensor<double> unpadded(const auto& x, index_t rows, index_t width, index_t pad) {
    Tensor<double> out(Shape{rows, width});
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < width; ++c) out[r * width + c] = static_cast<double>(x[r * (width + pad) + c]);
    return out;
}

struct KernelResult {
    Tensor<double> o, lse, dq, dk, dv;
};

template <class T>
KernelResult run_kernels(const AttentionDims& d, const Tensor<double>& q, const Tensor<double>& k, const Tensor<double>& v,
                         const Tensor<double>& dout, const AttentionDropout& drop, const ops::GraphHook<T>* hook = nullptr,
                         index_t pad = 3) {
    const index_t wq = d.hq * d.dh, wk = d.hkv * d.dh, rq = d.batch * d.tq, rk = d.batch * d.tk;
    auto qp = padded<T>(q, rq, wq, pad), kp = padded<T>(k, rk, wk, pad), vp = padded<T>(v, rk, wk, pad);
    auto gp = padded<T>(dout, rq, wq, pad);
    auto op = padded<T>(Tensor<double>(Shape{rq, wq}), rq, wq, pad);
    auto dqp = padded<T>(Tensor<double>::full(Shape{rq, wq}, 7.0), rq, wq, pad);  // garbage: the kernel assigns
    auto dkp = padded<T>(Tensor<double>::full(Shape{rk, wk}, 7.0), rk, wk, pad);
    auto dvp = padded<T>(Tensor<double>::full(Shape{rk, wk}, 7.0), rk, wk, pad);
    auto lse = Tensor<T>::uninitialized(Shape{d.batch, d.hq, d.tq});
    using CR = ops::HeadsRef<const T>;
    using R = ops::HeadsRef<T>;
    ops::attention_forward(cpu{}, d, CR{qp.data(), wq + pad}, CR{kp.data(), wk + pad}, CR{vp.data(), wk + pad}, R{op.data(), wq + pad},
                           lse.data(), drop);
    ops::attention_backward(cpu{}, d, CR{qp.data(), wq + pad}, CR{kp.data(), wk + pad}, CR{vp.data(), wk + pad},
                            CR{op.data(), wq + pad}, lse.data(), CR{gp.data(), wq + pad}, R{dqp.data(), wq + pad},
                            R{dkp.data(), wk + pad}, R{dvp.data(), wk + pad}, drop, hook);
    // The padding must be untouched (still NaN) in every output.
    for (auto* t : {&op, &dqp}) {
        for (index_t r = 0; r < rq; ++r)
            for (index_t c = wq; c < wq + pad; ++c) BOOST_REQUIRE(std::isnan((*t)[r * (wq + pad) + c]));
    }
    return {unpadded(op, rq, wq, pad), lse.template cast<double>(), unpadded(dqp, rq, wq, pad), unpadded(dkp, rk, wk, pad),
            unpadded(dvp, rk, wk, pad)};
}

/// Relative error; the data are O(1), so entries below `floor` are judged absolutely.
double max_error(const Tensor<double>& a, const Tensor<double>& b, double floor = 1e-3) {
    return relative_difference(a.data(), b.data(), std::min(a.numel(), b.numel()), floor).max_error;
}

struct KernelCase {
    AttentionDims d;
    double p;
};

/// Random operands of one case (tensor seeds seed .. seed + 3) and the dense reference's values and gradients.
struct ReferenceCase {
    Tensor<double> q, k, v, dout;
    AttentionDropout drop;
    Dense ref;
    DenseGrads g;
};
ReferenceCase reference_case(const KernelCase& c, std::uint64_t seed, std::uint64_t drop_seed, std::uint64_t drop_stream,
                             std::uint64_t drop_step) {
    const auto& d = c.d;
    ReferenceCase r{random_tensor(Shape{d.batch, d.tq, d.hq, d.dh}, seed, 1.2), random_tensor(Shape{d.batch, d.tk, d.hkv, d.dh}, seed + 1, 1.2),
                    random_tensor(Shape{d.batch, d.tk, d.hkv, d.dh}, seed + 2), random_tensor(Shape{d.batch, d.tq, d.hq, d.dh}, seed + 3),
                    AttentionDropout{c.p, drop_seed, drop_stream, drop_step}, {}, {}};
    r.ref = dense_forward(d, r.q, r.k, r.v, r.drop);
    r.g = dense_backward(d, r.q, r.k, r.v, r.ref, r.dout, nullptr);
    return r;
}

std::string describe(const KernelCase& c) {
    return fmt::format("B={} tq={} tk={} hq={} hkv={} dh={} p={}", c.d.batch, c.d.tq, c.d.tk, c.d.hq, c.d.hkv, c.d.dh, c.p);
}

/// A random CSR matrix [rows, cols] with about `density` of the entries, values in [0.01, 0.05]
/// (the size of λ·Ã; larger ones make the loss so big that finite differences lose digits).
struct Csr {
    std::vector<index_t> row_ptr{0}, col;
    std::vector<double> value;
};
Csr random_csr(index_t rows, index_t cols, double density, std::uint64_t seed) {
    Csr c;
    CounterRng rng(seed, 11);
    for (index_t i = 0; i < rows; ++i) {
        for (index_t j = 0; j < cols; ++j) {
            const auto idx = static_cast<std::uint64_t>(i * cols + j);
            if (rng.uniform(2 * idx) < density) {
                c.col.push_back(j);
                c.value.push_back(0.01 + 0.04 * rng.uniform(2 * idx + 1));
            }
        }
        c.row_ptr.push_back(static_cast<index_t>(c.col.size()));
    }
    return c;
}
template <class T>
ops::GraphTerm<T> term_of(index_t head, const Csr& c, const std::vector<T>& values) {
    return {head, c.row_ptr, c.col, values};
}
template <class T>
std::vector<T> scaled(const std::vector<double>& v, double s) {
    std::vector<T> out;
    for (double x : v) out.push_back(static_cast<T>(s * x));
    return out;
}

/// c[b, h, i] = Σ over the terms of head h of Σ_j W_ij (times s).
std::vector<double> row_sums(const AttentionDims& d, const std::vector<std::pair<index_t, const Csr*>>& terms, double s) {
    std::vector<double> c(static_cast<std::size_t>(d.batch * d.hq * d.tq), 0.0);
    for (index_t b = 0; b < d.batch; ++b)
        for (const auto& [h, csr] : terms)
            for (index_t i = 0; i < d.tq; ++i)
                for (index_t e = csr->row_ptr[i]; e < csr->row_ptr[i + 1]; ++e) c[(b * d.hq + h) * d.tq + i] += s * csr->value[e];
    return c;
}

template <class T>
void load_parameters(MultiHeadAttention<T>& m, const io::SafetensorsFile& f, const std::string& prefix) {
    int n = 0;
    m.visit_parameters(
        [&](std::string_view name, Parameter<T>& p) {
            Tensor<T> t = f.load<T>(name);
            BOOST_REQUIRE_MESSAGE(t.shape() == p.shape(), fmt::format("{}: fixture {} vs layer {}", name, t.shape(), p.shape()));
            p.value = t;
            ++n;
        },
        prefix);
    BOOST_REQUIRE(n > 0);
}

AttentionConfig config(index_t d, index_t h, AttentionLayout layout, index_t hkv = 0, index_t dh = 0, bool bias = true, double p = 0.0) {
    AttentionConfig c;
    c.d_model = d;
    c.num_heads = h;
    c.num_kv_heads = hkv;
    c.head_dim = dh;
    c.bias = bias;
    c.layout = layout;
    c.dropout = p;
    c.dropout_stream = 17;
    return c;
}

const char* layout_name(AttentionLayout l) {
    switch (l) {
        case AttentionLayout::separate: return "separate";
        case AttentionLayout::packed: return "packed";
        case AttentionLayout::llama: return "llama";
        case AttentionLayout::gpt2: return "gpt2";
    }
    return "?";
}

void set_threads([[maybe_unused]] int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

} // namespace

BOOST_AUTO_TEST_SUITE(attention)

BOOST_AUTO_TEST_CASE(kernels_match_a_dense_reference) {
    const std::vector<KernelCase> cases{
        {{2, 70, 70, 2, 2, 8}, 0.0},      // T not a multiple of the 64-row query block
        {{1, 130, 300, 2, 1, 5}, 0.0},    // several query and key blocks, grouped KV heads
        {{2, 9, 1, 4, 2, 3}, 0.0},        // a single key
        {{2, 33, 270, 4, 2, 6}, 0.25},    // dropout, key blocks crossed, GQA
        {{1, 5, 8, 3, 3, 7, 0.5}, 0.1},   // explicit scale
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(describe(c)) {
            const auto& d = c.d;
            const auto [q, k, v, dout, drop, ref, g] = reference_case(c, 1, 99, 5, 3);

            const KernelResult r = run_kernels<double>(d, q, k, v, dout, drop);
            const double eo = max_error(r.o, ref.o), el = max_error(r.lse, ref.lse);
            const double eq = max_error(r.dq, g.dq), ek = max_error(r.dk, g.dk), ev = max_error(r.dv, g.dv);
            BOOST_TEST_MESSAGE(fmt::format("{}: double O {:.1e} LSE {:.1e} dQ {:.1e} dK {:.1e} dV {:.1e}", describe(c), eo, el, eq, ek, ev));
            BOOST_TEST(eo < 1e-12);
            BOOST_TEST(el < 1e-12);
            BOOST_TEST(eq < 1e-11);
            BOOST_TEST(ek < 1e-11);
            BOOST_TEST(ev < 1e-11);

            const KernelResult f = run_kernels<float>(d, q, k, v, dout, drop);
            const double fo = max_error(f.o, ref.o, 1e-2), fq = max_error(f.dq, g.dq, 1e-2), fk = max_error(f.dk, g.dk, 1e-2),
                         fv = max_error(f.dv, g.dv, 1e-2);
            BOOST_TEST_MESSAGE(fmt::format("{}: float  O {:.1e} dQ {:.1e} dK {:.1e} dV {:.1e}", describe(c), fo, fq, fk, fv));
            BOOST_TEST(fo < 2e-5);
            BOOST_TEST(max_error(f.lse, ref.lse, 1e-2) < 2e-6);
            BOOST_TEST(fq < 1e-4);
            BOOST_TEST(fk < 1e-4);
            BOOST_TEST(fv < 1e-4);
        }
    }
}

// The head-width-8 vector kernels draw the generic kernel's dropout masks where they use them (a
// Philox counter per row lane in the forward, 64 keys of a row in lanes in the backward): at each
// vector level, against the dense reference and against the generic float kernel (no vector level),
// where a single differing mask element would show as an error near 1e-2.
BOOST_AUTO_TEST_CASE(head_width_8_kernels_with_dropout_match_the_generic_kernel_at_every_vector_level) {
    const auto best = cpu_detail::detect_simd_level();
    if (best == cpu_detail::SimdLevel::none) {
        BOOST_TEST_MESSAGE("no AVX2: the head-width-8 kernels do not run on this CPU");
        return;
    }
    const std::vector<KernelCase> cases{
        {{2, 130, 260, 4, 2, 8}, 0.2},   // rows start on word 0 of a Philox block; 4 keys past the 16-key steps
        {{1, 67, 301, 2, 1, 8}, 0.1},    // tk % 4 == 1: rows start at every word of a block
        {{1, 20, 2050, 2, 2, 8}, 0.35},  // three key ranges in the backward, tk % 4 == 2
    };
    for (const auto& c : cases) {
        const auto& d = c.d;
        const auto [q, k, v, dout, drop, ref, g] = reference_case(c, 31, 7, 8, 9);
        const auto old = cpu_detail::set_simd_level(cpu_detail::SimdLevel::none);
        const KernelResult generic = run_kernels<float>(d, q, k, v, dout, drop);
        for (auto level : {cpu_detail::SimdLevel::avx2, cpu_detail::SimdLevel::avx512}) {
            if (static_cast<int>(level) > static_cast<int>(best)) continue;
            cpu_detail::set_simd_level(level);
            BOOST_TEST_CONTEXT(describe(c) << " vector level " << static_cast<int>(level)) {
                const KernelResult f = run_kernels<float>(d, q, k, v, dout, drop);
                const double fo = max_error(f.o, ref.o, 1e-2), fq = max_error(f.dq, g.dq, 1e-2), fk = max_error(f.dk, g.dk, 1e-2),
                             fv = max_error(f.dv, g.dv, 1e-2);
                const double go = max_error(f.o, generic.o, 1e-2), gq = max_error(f.dq, generic.dq, 1e-2),
                             gk = max_error(f.dk, generic.dk, 1e-2), gv = max_error(f.dv, generic.dv, 1e-2);
                BOOST_TEST_MESSAGE(fmt::format("{} level {}: vs dense O {:.1e} dQ {:.1e} dK {:.1e} dV {:.1e}; vs generic O {:.1e} dQ {:.1e} "
                                               "dK {:.1e} dV {:.1e}",
                                               describe(c), static_cast<int>(level), fo, fq, fk, fv, go, gq, gk, gv));
                BOOST_TEST(fo < 5e-5);  // sums in another order; one flipped mask element would give > 1e-2
                BOOST_TEST(max_error(f.lse, ref.lse, 1e-2) < 2e-6);
                BOOST_TEST(fq < 1e-4);
                BOOST_TEST(fk < 1e-4);
                BOOST_TEST(fv < 1e-4);
                BOOST_TEST(go < 1e-4);  // two float results, each within 5e-5 of the reference
                BOOST_TEST(gq < 1e-4);
                BOOST_TEST(gk < 1e-4);
                BOOST_TEST(gv < 1e-4);
            }
        }
        cpu_detail::set_simd_level(old);
    }
}

BOOST_AUTO_TEST_CASE(dropout_mask_keeps_about_one_minus_p_and_depends_on_step_and_stream) {
    const AttentionDims d{2, 50, 60, 2, 2, 4};
    const AttentionDropout a{0.3, 1, 2, 3}, b{0.3, 1, 2, 4}, c{0.3, 1, 9, 3};
    index_t kept = 0, same_step = 0, same_stream = 0, n = 0;
    for (index_t bb = 0; bb < d.batch; ++bb)
        for (index_t h = 0; h < d.hq; ++h)
            for (index_t i = 0; i < d.tq; ++i)
                for (index_t j = 0; j < d.tk; ++j, ++n) {
                    const bool ka = ops::attention_dropout_keep(a, d, bb, h, i, j);
                    kept += ka;
                    same_step += ka == ops::attention_dropout_keep(b, d, bb, h, i, j);
                    same_stream += ka == ops::attention_dropout_keep(c, d, bb, h, i, j);
                }
    // The kernels' vectorised Philox path draws exactly the same mask, at any offset and length.
    const CounterRng rng = a.rng();
    std::vector<double> f(200);
    for (std::uint64_t first : {0ull, 1ull, 3ull, 6ull, 4095ull, (1ull << 33) + 2}) {
        for (index_t len : {1, 5, 63, 64, 65, 200}) {
            cpu_detail::attention_detail::dropout_factors(rng, ops::keep_threshold(a.p), 2.0, first, len, f.data());
            for (index_t c = 0; c < len; ++c)
                BOOST_REQUIRE(f[c] == (rng.uniform(first + static_cast<std::uint64_t>(c)) > a.p ? 2.0 : 0.0));
        }
    }
    const double frac = static_cast<double>(kept) / static_cast<double>(n);
    BOOST_TEST(std::abs(frac - 0.7) < 0.015);
    // Independent masks agree on 0.7² + 0.3² = 58% of the elements.
    BOOST_TEST(std::abs(static_cast<double>(same_step) / static_cast<double>(n) - 0.58) < 0.02);
    BOOST_TEST(std::abs(static_cast<double>(same_stream) / static_cast<double>(n) - 0.58) < 0.02);
}

BOOST_AUTO_TEST_CASE(no_keys_give_zero_output_minus_infinite_lse_and_zero_gradients) {
    const AttentionDims d{2, 5, 0, 2, 1, 4};
    auto q = random_tensor(Shape{2, 5, 2, 4}, 1), dout = random_tensor(Shape{2, 5, 2, 4}, 2);
    Tensor<double> k(Shape{2, 0, 1, 4}), v(Shape{2, 0, 1, 4});
    const KernelResult r = run_kernels<double>(d, q, k, v, dout, {0.2, 1, 2, 3});
    for (index_t i = 0; i < r.o.numel(); ++i) BOOST_REQUIRE(r.o[i] == 0.0);
    for (index_t i = 0; i < r.dq.numel(); ++i) BOOST_REQUIRE(r.dq[i] == 0.0);
    for (index_t i = 0; i < r.lse.numel(); ++i) BOOST_REQUIRE(r.lse[i] == -std::numeric_limits<double>::infinity());
    // And no queries: dK = dV = 0.
    const AttentionDims e{1, 0, 6, 2, 2, 3};
    auto k2 = random_tensor(Shape{1, 6, 2, 3}, 3), v2 = random_tensor(Shape{1, 6, 2, 3}, 4);
    Tensor<double> q2(Shape{1, 0, 2, 3});
    const KernelResult s = run_kernels<double>(e, q2, k2, v2, q2, {});
    for (index_t i = 0; i < s.dk.numel(); ++i) BOOST_REQUIRE(s.dk[i] == 0.0 && s.dv[i] == 0.0);
}

BOOST_AUTO_TEST_CASE(invalid_arguments_throw) {
    double x = 0;
    const ops::HeadsRef<const double> c{&x, 4};
    const ops::HeadsRef<double> m{&x, 4};
    BOOST_CHECK_THROW(ops::attention_forward(cpu{}, AttentionDims{1, 1, 1, 3, 2, 4}, c, c, c, m, &x), ShapeError);  // 3 % 2
    BOOST_CHECK_THROW(ops::attention_forward(cpu{}, AttentionDims{1, 1, 1, 2, 2, 4}, c, c, c, m, &x), ShapeError);  // ld < 8
    BOOST_CHECK_THROW(ops::attention_forward(cpu{}, AttentionDims{1, 1, 1, 1, 1, 4}, c, c, c, m, &x, {1.0}), ShapeError);
    const std::vector<index_t> rp{0, 1}, col{3};
    const std::vector<double> val{1.0};
    const ops::GraphTerm<double> bad{0, rp, col, val};  // column 3 >= tk = 1
    double out = 0;
    BOOST_CHECK_THROW(ops::attention_edge_scores(cpu{}, AttentionDims{1, 1, 1, 1, 1, 4}, c, c, bad, &out), ShapeError);
    BOOST_CHECK_THROW(MultiHeadAttention<double>(config(10, 3, AttentionLayout::separate)), ShapeError);
    BOOST_CHECK_THROW(MultiHeadAttention<double>(config(8, 4, AttentionLayout::llama, 3)), ShapeError);
}

// L = Σ R∘O + r·Σ_terms Σ_edges W_ij·(−log P_ij): the hook with (r·c, r·W) is its exact gradient.
BOOST_AUTO_TEST_CASE(graph_hook_gradients_match_dense_reference_and_finite_differences) {
    const AttentionDims d{2, 37, 41, 4, 2, 5};
    const Csr w1 = random_csr(d.tq, d.tk, 0.15, 1), w2 = random_csr(d.tq, d.tk, 0.2, 2), w3 = random_csr(d.tq, d.tk, 0.1, 3);
    const std::vector<std::pair<index_t, const Csr*>> terms{{1, &w1}, {2, &w2}, {2, &w3}};  // head 2 twice: the terms add
    for (double p : {0.0, 0.2}) {
        BOOST_TEST_CONTEXT("dropout " << p) {
            const AttentionDropout drop{p, 5, 6, 7};
            auto q = random_tensor(Shape{d.batch, d.tq, d.hq, d.dh}, 21, 1.3);
            auto k = random_tensor(Shape{d.batch, d.tk, d.hkv, d.dh}, 22, 1.3);
            auto v = random_tensor(Shape{d.batch, d.tk, d.hkv, d.dh}, 23);
            auto dout = random_tensor(Shape{d.batch, d.tq, d.hq, d.dh}, 24);

            // Dense reference of the hook's gradients (r = 1).
            const std::vector<double> c1 = row_sums(d, terms, 1.0);
            ops::GraphHook<double> hook{c1.data(), {}};
            for (const auto& [h, csr] : terms) hook.terms.push_back(term_of<double>(h, *csr, csr->value));
            const Dense ref = dense_forward(d, q, k, v, drop);
            const DenseGrads g = dense_backward(d, q, k, v, ref, dout, &hook);
            const KernelResult r = run_kernels<double>(d, q, k, v, dout, drop, &hook);
            const double eq = max_error(r.dq, g.dq), ek = max_error(r.dk, g.dk), ev = max_error(r.dv, g.dv);
            BOOST_TEST_MESSAGE(fmt::format("graph hook (p={}) vs dense: dQ {:.1e} dK {:.1e} dV {:.1e}", p, eq, ek, ev));
            BOOST_TEST(eq < 1e-11);
            BOOST_TEST(ek < 1e-11);
            BOOST_TEST(ev < 1e-11);
            // The sparse part alone changes the result (the test would notice a hook that is ignored).
            const KernelResult plain = run_kernels<double>(d, q, k, v, dout, drop);
            BOOST_TEST(max_error(plain.dq, g.dq) > 1e-2);

            // Value path: log P at the edges from the scores and the LSE, against the dense log-softmax.
            double worst = 0;
            for (const auto& [h, csr] : terms) {
                const index_t hh = h;
                Tensor<double> lp(Shape{d.batch, static_cast<index_t>(csr->col.size())});
                const auto qc = Tensor<double>::copy_of(q.cview()), kc = Tensor<double>::copy_of(k.cview());
                ops::attention_edge_scores(cpu{}, d, ops::HeadsRef<const double>{qc.data(), d.hq * d.dh},
                                           ops::HeadsRef<const double>{kc.data(), d.hkv * d.dh}, term_of<double>(h, *csr, csr->value),
                                           lp.data(), r.lse.data());
                for (index_t b = 0; b < d.batch; ++b)
                    for (index_t i = 0; i < d.tq; ++i)
                        for (index_t e = csr->row_ptr[i]; e < csr->row_ptr[i + 1]; ++e) {
                            const double want = ref.logp(b, hh, i, csr->col[e]);
                            worst = std::max(worst, std::abs(lp(b, e) - want) / std::max(1.0, std::abs(want)));
                        }
            }
            BOOST_TEST_MESSAGE(fmt::format("edge log-probabilities vs dense log-softmax: {:.1e}", worst));
            BOOST_TEST(worst < 1e-13);

            // Central differences of L through the kernels' forward and the edge-score value path.
            const index_t no = d.batch * d.tq * d.hq * d.dh;
            auto forward = [&] {
                Tensor<double> out(Shape{no + 1});
                auto o = Tensor<double>::uninitialized(Shape{d.batch, d.tq, d.hq, d.dh});
                auto lse = Tensor<double>::uninitialized(Shape{d.batch, d.hq, d.tq});
                const ops::HeadsRef<const double> qr{q.data(), d.hq * d.dh}, kr{k.data(), d.hkv * d.dh}, vr{v.data(), d.hkv * d.dh};
                ops::attention_forward(cpu{}, d, qr, kr, vr, ops::HeadsRef<double>{o.data(), d.hq * d.dh},
                                       lse.data(), drop);
                std::copy(o.data(), o.data() + no, out.data());
                for (const auto& [h, csr] : terms) {
                    Tensor<double> lp(Shape{d.batch, static_cast<index_t>(csr->col.size())});
                    ops::attention_edge_scores(cpu{}, d, qr, kr, term_of<double>(h, *csr, csr->value), lp.data(), lse.data());
                    for (index_t b = 0; b < d.batch; ++b)
                        for (std::size_t e = 0; e < csr->col.size(); ++e) out[no] -= csr->value[e] * lp(b, static_cast<index_t>(e));
                }
                return out;
            };
            auto backward = [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
                const double rr = dy[no];
                const std::vector<double> c = row_sums(d, terms, rr);
                std::vector<std::vector<double>> vals;
                for (const auto& [h, csr] : terms) vals.push_back(scaled<double>(csr->value, rr));
                ops::GraphHook<double> hk{c.data(), {}};
                for (std::size_t t = 0; t < terms.size(); ++t) hk.terms.push_back(term_of<double>(terms[t].first, *terms[t].second, vals[t]));
                auto go = Tensor<double>::uninitialized(Shape{d.batch, d.tq, d.hq, d.dh});
                std::copy(dy.data(), dy.data() + no, go.data());
                const KernelResult kr = run_kernels<double>(d, q, k, v, go, drop, &hk, 0);
                for (index_t i = 0; i < q.numel(); ++i) dxs[0][i] += kr.dq[i];
                for (index_t i = 0; i < k.numel(); ++i) dxs[1][i] += kr.dk[i], dxs[2][i] += kr.dv[i];
            };
            testing::GradcheckOptions opt;
            opt.max_entries = 400;
            const auto res = testing::gradcheck(forward, backward, {&q, &k, &v}, {}, opt);
            BOOST_TEST_MESSAGE("graph hook " << res.summary());
            BOOST_TEST(res.ok, res.summary());
        }
    }
}

BOOST_AUTO_TEST_CASE(layer_gradcheck_in_every_layout_self_and_cross_eval_and_dropout) {
    struct Case {
        AttentionLayout layout;
        index_t hkv, dh;
        bool bias;
    };
    const std::vector<Case> cases{{AttentionLayout::separate, 0, 0, true},
                                  {AttentionLayout::packed, 0, 0, true},
                                  {AttentionLayout::packed, 0, 0, false},
                                  {AttentionLayout::llama, 1, 3, false},
                                  {AttentionLayout::gpt2, 0, 0, true}};
    for (const auto& c : cases)
        for (double p : {0.0, 0.3}) {
            BOOST_TEST_CONTEXT(layout_name(c.layout) << " bias " << c.bias << " dropout " << p) {
                MultiHeadAttention<double> m(config(8, 2, c.layout, c.hkv, c.dh, c.bias, p));
                Generator gen(3);
                m.reset_parameters(gen);
                // Non-zero biases, so that their gradients are checked against non-trivial values.
                m.visit_parameters([&](std::string_view, Parameter<double>& prm) {
                    if (prm.value.rank() == 1) init::normal(prm.value, gen, 0.0, 0.3);
                });
                const Context ctx = p > 0 ? Context::train(7, 2) : Context::eval();
                auto x = random_tensor(Shape{2, 5, 8}, 31);
                auto self = testing::gradcheck_layer(m, x, ctx);
                BOOST_TEST_MESSAGE(layout_name(c.layout) << " self p=" << p << ": " << self.summary());
                BOOST_TEST(self.ok, self.summary());
                BOOST_TEST(self.max_error <= 1e-6);

                auto x2 = random_tensor(Shape{6, 8}, 32);  // rank 2
                BOOST_TEST(testing::gradcheck_layer(m, x2, ctx).ok);

                for (index_t tk : {3, 0}) {
                    auto xq = random_tensor(Shape{2, 4, 8}, 33), xkv = random_tensor(Shape{2, tk, 8}, 34);
                    auto cross = testing::gradcheck([&] { return m.forward_cross(xq.cview(), xkv.cview(), ctx); },
                                                    [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
                                                        m.backward_cross(dy, dxs[0], dxs[1]);
                                                    },
                                                    {&xq, &xkv}, testing::parameters_of(m));
                    BOOST_TEST_MESSAGE(layout_name(c.layout) << " cross tk=" << tk << " p=" << p << ": " << cross.summary());
                    BOOST_TEST(cross.ok, cross.summary());
                    BOOST_TEST(cross.max_error <= 1e-6);
                }
            }
        }
}

BOOST_AUTO_TEST_CASE(cross_attention_without_keys_is_exactly_zero) {
    MultiHeadAttention<float> m(config(8, 2, AttentionLayout::packed));
    Generator g(1);
    m.reset_parameters(g);
    m.out_proj.bias.value.fill(0.5f);  // must NOT appear in the output
    auto xq = random_tensor<float>(Shape{3, 7, 8}, 1);
    Tensor<float> xkv(Shape{3, 0, 8});
    auto y = m.forward_cross(xq.cview(), xkv.cview(), Context::train(1, 1));
    BOOST_TEST(y.shape() == (Shape{3, 7, 8}));
    for (index_t i = 0; i < y.numel(); ++i) BOOST_REQUIRE(y[i] == 0.0f);
    auto dxq = Tensor<float>::full(xq.shape(), 1.5f);
    m.backward_cross(random_tensor<float>(y.shape(), 2).cview(), dxq.view(), xkv.view());
    for (index_t i = 0; i < dxq.numel(); ++i) BOOST_REQUIRE(dxq[i] == 1.5f);
    m.visit_parameters([](std::string_view, Parameter<float>& p) {
        for (index_t i = 0; i < p.numel(); ++i) BOOST_REQUIRE(p.grad[i] == 0.0f);
    });
    for (index_t i = 0; i < m.lse().numel(); ++i) BOOST_REQUIRE(m.lse()[i] == -std::numeric_limits<float>::infinity());
}

BOOST_AUTO_TEST_CASE(parameter_names_shapes_and_initialisation) {
    auto names = [](MultiHeadAttention<float>& m) {
        std::string s;
        m.visit_parameters([&](std::string_view n, Parameter<float>& p) { s += fmt::format("{}{} ", n, p.shape()); }, "a.");
        return s;
    };
    MultiHeadAttention<float> sep(config(16, 4, AttentionLayout::separate)), pk(config(16, 4, AttentionLayout::packed)),
        ll(config(16, 4, AttentionLayout::llama, 2, 6, false)), gp(config(16, 4, AttentionLayout::gpt2));
    BOOST_TEST(names(sep) == "a.q_proj.weight[16,16] a.q_proj.bias[16] a.k_proj.weight[16,16] a.k_proj.bias[16] "
                             "a.v_proj.weight[16,16] a.v_proj.bias[16] a.out_proj.weight[16,16] a.out_proj.bias[16] ");
    BOOST_TEST(names(pk) == "a.in_proj_weight[48,16] a.in_proj_bias[48] a.out_proj.weight[16,16] a.out_proj.bias[16] ");
    BOOST_TEST(names(ll) == "a.q_proj.weight[24,16] a.k_proj.weight[12,16] a.v_proj.weight[12,16] a.o_proj.weight[16,24] ");
    BOOST_TEST(names(gp) == "a.c_attn.weight[16,48] a.c_attn.bias[48] a.c_proj.weight[16,16] a.c_proj.bias[16] ");
    // CGT encoder attention at d=64: 4 × 4,160 parameters (cell_graph_transformer.md).
    static_assert(Layer<MultiHeadAttention<float>, float>);
    static_assert(Layer<MultiHeadAttention<double>, double>);
    MultiHeadAttention<float> cgt(config(64, 8, AttentionLayout::separate));
    BOOST_TEST(parameter_count<float>(cgt) == 4 * 4160);

    // nn.MultiheadAttention's init: xavier_uniform in_proj (bound sqrt(6/(d+3d))), zero biases,
    // out_proj.weight ~ U(±1/sqrt(d)).
    Generator g(4);
    pk.reset_parameters(g);
    const double xb = std::sqrt(6.0 / 64.0);
    float mx = 0;
    for (index_t i = 0; i < pk.in_proj_weight.numel(); ++i) mx = std::max(mx, std::abs(pk.in_proj_weight.value[i]));
    BOOST_TEST(mx <= xb);
    BOOST_TEST(mx > 0.9 * xb);
    for (index_t i = 0; i < 48; ++i) BOOST_REQUIRE(pk.in_proj_bias.value[i] == 0.0f);
    for (index_t i = 0; i < 16; ++i) BOOST_REQUIRE(pk.out_proj.bias.value[i] == 0.0f);
    sep.reset_parameters(g);
    mx = 0;
    for (index_t i = 0; i < sep.q_proj.weight.numel(); ++i) mx = std::max(mx, std::abs(sep.q_proj.weight.value[i]));
    BOOST_TEST(mx <= 0.25f);
    BOOST_TEST(mx > 0.2f);
}

BOOST_AUTO_TEST_CASE(parity_with_pytorch_fixtures) {
    struct Fixture {
        const char* file;
        const char* prefix;
        AttentionConfig cfg;
        bool cross;
    };
    const std::vector<Fixture> fixtures{
        {"attention_separate", "attn.", config(16, 4, AttentionLayout::separate), false},
        {"attention_packed_self", "mha.", config(16, 4, AttentionLayout::packed), false},
        {"attention_packed_cross", "mha.", config(16, 4, AttentionLayout::packed), true},
        {"attention_llama", "self_attn.", config(16, 4, AttentionLayout::llama, 2, 6, false), false},
        {"attention_gpt2", "attn.", config(16, 4, AttentionLayout::gpt2), false},
    };
    // Errors are relative, with a floor of rel_floor·(the largest reference value of the fixture)
    // (at least abs_floor): entries that cancel to ~0, such as the key-bias gradient (exactly zero:
    // softmax ignores a shift shared by all keys), are judged on the scale of the whole layer.
    auto run = [](const Fixture& fx, auto zero, double tol_y, double tol_g, double rel_floor, double abs_floor) {
        using T = decltype(zero);
        const io::SafetensorsFile f(std::string(CELLTX_FIXTURE_DIR) + "/" + fx.file + ".safetensors");
        MultiHeadAttention<T> m(fx.cfg);
        load_parameters(m, f, fx.prefix);
        const Tensor<T> dy = f.load<T>("dy");
        Tensor<T> y;
        std::vector<std::pair<std::string, Tensor<T>>> grads;
        if (fx.cross) {
            const Tensor<T> xq = f.load<T>("xq"), xkv = f.load<T>("xkv");
            y = m.forward_cross(xq.cview(), xkv.cview());
            Tensor<T> dxq(xq.shape()), dxkv(xkv.shape());
            m.backward_cross(dy.cview(), dxq.view(), dxkv.view());
            grads = {{"dxq", std::move(dxq)}, {"dxkv", std::move(dxkv)}};
        } else {
            const Tensor<T> x = f.load<T>("x");
            y = m.forward(x.cview());
            Tensor<T> dx(x.shape());
            m.backward(dy.cview(), dx.view());
            grads = {{"dx", std::move(dx)}};
        }
        m.visit_parameters([&](std::string_view n, Parameter<T>& p) { grads.emplace_back("grad." + std::string(n), p.grad); },
                           fx.prefix);
        auto scale_of = [](const Tensor<double>& t) {
            double s = 0;
            for (index_t i = 0; i < t.numel(); ++i) s = std::max(s, std::abs(t[i]));
            return s;
        };
        double gscale = 0;
        for (const auto& [name, g] : grads) gscale = std::max(gscale, scale_of(f.load<double>(name)));
        const Tensor<double> yref = f.load<double>("y");
        const auto ey = relative_difference(y, yref, std::max(rel_floor * scale_of(yref), abs_floor));
        BOOST_TEST(ey.max_error < tol_y, fmt::format("{} y: {}", fx.file, ey.str()));
        double worst = 0;
        for (const auto& [name, g] : grads) {
            const auto e = relative_difference(g, f.load<double>(name), std::max(rel_floor * gscale, abs_floor));
            BOOST_TEST(e.max_error < tol_g, fmt::format("{} {}: {}", fx.file, name, e.str()));
            worst = std::max(worst, e.max_error);
        }
        BOOST_TEST_MESSAGE(fmt::format("{} {}: y {:.1e}, gradients {:.1e}", fx.file, sizeof(T) == 8 ? "float64" : "float32",
                                       ey.max_error, worst));
    };
    for (const auto& fx : fixtures) {
        run(fx, 0.0, 1e-10, 1e-10, 1e-4, 1e-6);
        run(fx, 0.0f, 1e-4, 1e-3, 1e-2, 1e-3);
    }
}

BOOST_AUTO_TEST_CASE(layer_graph_hook_and_edge_scores_are_consistent) {
    // The hook through the layer: L = Σ R∘y + r·Σ W (−log P) with log P from edge_scores(.., true).
    MultiHeadAttention<double> m(config(8, 2, AttentionLayout::separate, 0, 0, true, 0.2));
    Generator g(9);
    m.reset_parameters(g);
    const index_t T = 6;
    const Csr w = random_csr(T, T, 0.4, 5);
    const Context ctx = Context::train(3, 1);
    auto x = random_tensor(Shape{1, T, 8}, 40, 2.0);
    const index_t ny = T * 8;
    auto forward = [&] {
        auto y = m.forward(x.cview(), ctx);
        Tensor<double> out(Shape{ny + 1});
        std::copy(y.data(), y.data() + ny, out.data());
        auto lp = m.edge_scores(term_of<double>(1, w, w.value), true);
        for (index_t e = 0; e < lp.numel(); ++e) out[ny] -= w.value[e] * lp[e];
        return out;
    };
    std::vector<double> c, vals;
    auto backward = [&](ConstView<double> dy, std::vector<TensorView<double>>& dxs) {
        const double r = dy[ny];
        const AttentionDims d{1, T, T, 2, 2, 4};
        c = row_sums(d, {{1, &w}}, r);
        vals = scaled<double>(w.value, r);
        m.set_graph_hook({c.data(), {term_of<double>(1, w, vals)}});
        m.backward(dy.slice(0, ny).reshaped(Shape{1, T, 8}), dxs[0]);
    };
    const auto res = testing::gradcheck(forward, backward, {&x}, testing::parameters_of(m));
    BOOST_TEST_MESSAGE("layer with graph hook " << res.summary());
    BOOST_TEST(res.ok, res.summary());
    // LSE exposure: [B, H, T], and consistent with the edge scores.
    m.forward(x.cview(), ctx);
    BOOST_TEST(m.lse().shape() == (Shape{1, 2, T}));
    auto s = m.edge_scores(term_of<double>(1, w, w.value));
    auto lp = m.edge_scores(term_of<double>(1, w, w.value), true);
    for (index_t i = 0; i < T; ++i)
        for (index_t e = w.row_ptr[i]; e < w.row_ptr[i + 1]; ++e) BOOST_TEST(std::abs(s[e] - m.lse()(0, 1, i) - lp[e]) < 1e-14);
}

BOOST_AUTO_TEST_CASE(results_do_not_depend_on_the_thread_count, *celltx_test::needs_openmp()) {
    MultiHeadAttention<float> m(config(32, 4, AttentionLayout::llama, 2, 0, false, 0.1));
    Generator g(2);
    m.reset_parameters(g);
    auto x = random_tensor<float>(Shape{2, 150, 32}, 50);
    auto dy = random_tensor<float>(Shape{2, 150, 32}, 51);
    const Csr w = random_csr(150, 150, 0.05, 8);
    std::vector<float> c(2 * 4 * 150, 0.25f), vals = scaled<float>(w.value, 1.0);
    auto run = [&](int threads) {
        set_threads(threads);
        auto y = m.forward(x.cview(), Context::train(4, 9));
        Tensor<float> dx(x.shape());
        m.set_graph_hook({c.data(), {term_of<float>(3, w, vals)}});
        m.backward(dy.cview(), dx.view());
        std::vector<Tensor<float>> out{y, dx, Tensor<float>::copy_of(m.lse())};
        m.visit_parameters([&](std::string_view, Parameter<float>& p) { out.push_back(p.grad); });
        return out;
    };
    const auto one = run(1), two = run(2);
    set_threads(2);
    for (std::size_t t = 0; t < one.size(); ++t)
        for (index_t i = 0; i < one[t].numel(); ++i) BOOST_REQUIRE(one[t][i] == two[t][i]);
}

// CGT encoder size: T = N+1 = 6608 tokens, d = 64, 8 heads. A T×T float matrix per head would be
// 175 MB (1.4 GB per layer); the whole forward+backward must stay far below one of them.
BOOST_AUTO_TEST_CASE(memory_stays_linear_in_T_at_cgt_size) {
    const index_t T = 6608, d = 64, H = 8;
    MultiHeadAttention<float> m(config(d, H, AttentionLayout::separate, 0, 0, true, 0.1));
    Generator g(6);
    m.reset_parameters(g);
    auto x = random_tensor<float>(Shape{1, T, d}, 60);
    auto dy = random_tensor<float>(Shape{1, T, d}, 61, 1e-3);
    auto& stats = memory_stats<cpu>();
    stats.reset_peak();
    const std::size_t before = stats.live.load();
    auto y = m.forward(x.cview(), Context::eval());
    Tensor<float> dx(x.shape());
    m.backward(dy.cview(), dx.view());
    const double peak_mb = static_cast<double>(stats.peak.load() - before) / 1e6;
    BOOST_TEST_MESSAGE(fmt::format("T={} d={} H={}: tensor peak {:.1f} MB above the inputs", T, d, H, peak_mb));
    BOOST_TEST(peak_mb < 64.0);

    // Spot-check three output rows against a direct double computation over all 6608 keys.
    const index_t dh = d / H;
    auto lin = [&](const nn::Linear<float>& l, index_t row) {
        std::vector<double> out(static_cast<std::size_t>(d));
        for (index_t o = 0; o < d; ++o) {
            double s = l.bias.value[o];
            for (index_t c = 0; c < d; ++c) s += static_cast<double>(l.weight.value(o, c)) * x(0, row, c);
            out[o] = s;
        }
        return out;
    };
    std::vector<std::vector<double>> K, V;
    for (index_t j = 0; j < T; ++j) K.push_back(lin(m.k_proj, j)), V.push_back(lin(m.v_proj, j));
    double worst = 0;
    for (index_t i : {index_t{0}, index_t{3333}, T - 1}) {
        const auto q = lin(m.q_proj, i);
        std::vector<double> ctx(static_cast<std::size_t>(d), 0.0), s(static_cast<std::size_t>(T));
        for (index_t h = 0; h < H; ++h) {
            double mx = -1e300, sum = 0;
            for (index_t j = 0; j < T; ++j) {
                double a = 0;
                for (index_t e = 0; e < dh; ++e) a += q[h * dh + e] * K[j][h * dh + e];
                s[j] = a / std::sqrt(static_cast<double>(dh));
                mx = std::max(mx, s[j]);
            }
            for (index_t j = 0; j < T; ++j) sum += s[j] = std::exp(s[j] - mx);
            for (index_t j = 0; j < T; ++j)
                for (index_t e = 0; e < dh; ++e) ctx[h * dh + e] += s[j] / sum * V[j][h * dh + e];
        }
        for (index_t o = 0; o < d; ++o) {
            double want = m.out_proj.bias.value[o];
            for (index_t c = 0; c < d; ++c) want += static_cast<double>(m.out_proj.weight.value(o, c)) * ctx[c];
            worst = std::max(worst, std::abs(y(0, i, o) - want) / std::max(1.0, std::abs(want)));
        }
    }
    BOOST_TEST_MESSAGE(fmt::format("spot-checked rows vs double: {:.1e}", worst));
    BOOST_TEST(worst < 1e-4);
}

BOOST_AUTO_TEST_SUITE_END()
