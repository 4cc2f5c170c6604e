#pragma once
// Vector kernels for x86-64 CPUs with AVX2+FMA or AVX-512, chosen at run time whatever the build
// flags (the default build targets baseline x86-64, where these run nowhere else):
//  - vexp: exp of float lanes, a degree-6 polynomial after range reduction (about 1 ulp; inputs
//    below ln(FLT_MIN) give 0, NaN propagates, inputs above 88.376 saturate at 2.4e38);
//  - GELU with the exact erf, value and derivative (Φ from a polynomial near 0 and
//    erfc(z) = e^{-z²}·R(1/(1+z)) beyond, so the negative tail keeps its relative accuracy);
//  - SwiGLU and its gradients (σ through vexp); the Adam update;
//  - Philox4x32-10 blocks in lanes, bit for bit CounterRng::bits (the attention kernels' dropout
//    masks: consecutive blocks, or a counter per lane);
//  - the dense Type I block's row kernels: LayerNorm rows (in double, as the scalar rows), bias + GELU
//    fused, column sums;
//  - the attention at head width 8 (attention_small_head.hpp drives them).
// The bodies live in simd_isa.inl, compiled twice below: once for AVX2+FMA, once for AVX-512F.
// simd_level() says which one runs (CELLTX_CPU_SIMD=none|avx2|avx512 lowers it, for tests and
// comparisons). Callers keep a plain C++ path for other CPUs and for double.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include "celltx/backend/math/norm.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/shape.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(CELLTX_NO_SIMD)
#define CELLTX_SIMD 1
#include <immintrin.h>
#include <cmath>
#include <limits>
#else
#define CELLTX_SIMD 0
#endif

namespace celltx::cpu_detail {

enum class SimdLevel { none = 0, avx2 = 1, avx512 = 2 };

/// Keys and values of one (batch item, kv head) for the head-width-8 attention kernels, in tiles of
/// 16 keys: tile t holds K transposed ([e][16], 128 floats) then V likewise, keys zero-padded to tkpad
/// (a multiple of 16). A vector of keys reaches all 16 of its K and V rows by constant offsets from
/// one pointer, so a kernel's loop needs no register per row.
struct AttentionPack8 {
    const float* tiles = nullptr;
    index_t tk = 0, tkpad = 0;
};

/// Attention dropout for the head-width-8 kernels: score element e (ops::attention_element_index)
/// keeps keep_scale (1/(1 − p)) iff stream.element_bits(e) is at least threshold
/// (ops::keep_threshold): the generic kernel's masks.
struct AttentionDropout8 {
    PhiloxStream stream;
    std::uint32_t threshold = 0;
    float keep_scale = 1.0f;
};

/// K row e of the keys from j on (j % 16 + the vector width <= 16) is at attn8_keys(kv, j) + 16·e,
/// V row e at attn8_keys(kv, j) + 128 + 16·e.
inline const float* attn8_keys(const AttentionPack8& kv, index_t j) { return kv.tiles + (j >> 4) * 256 + (j & 15); }

/// One sample's attention over a block of gene rows for the dense Type I block, genes in vector lanes
/// (head width 8, d a multiple of 64): each row attends to the sample's tk keys.
struct DenseAttentionRows {
    const float* qt = nullptr;    // [d][ld]: the rows' queries times 1/√8, transposed; lanes from `rows` on are 0
    index_t ld = 0;               // lanes per transposed row: a multiple of 16, at least rows
    index_t rows = 0;
    const float* keys = nullptr;  // key j's K row at keys + j·key_stride
    index_t key_stride = 0;
    index_t tk = 0, heads = 0, d = 0;
    const float* u = nullptr;     // [tk][heads][d]: U[j, h] = W_o[:, h]·v_j^h
};

/// An Adam/AdamW step's coefficients in float (ops::AdamStep<float> without amsgrad).
struct AdamCoefficients {
    float neg_step, bc2_sqrt, b1, one_m_b1, b2, one_m_b2, eps, wd, decay;
    bool l2, decoupled;
};

/// The best level this CPU runs, lowered by CELLTX_CPU_SIMD when set.
inline SimdLevel detect_simd_level() {
#if CELLTX_SIMD
    __builtin_cpu_init();
    SimdLevel best = SimdLevel::none;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = SimdLevel::avx2;
    if (best == SimdLevel::avx2 && __builtin_cpu_supports("avx512f")) best = SimdLevel::avx512;
    if (const char* env = std::getenv("CELLTX_CPU_SIMD")) {
        SimdLevel want = best;
        if (std::strcmp(env, "none") == 0) want = SimdLevel::none;
        else if (std::strcmp(env, "avx2") == 0) want = SimdLevel::avx2;
        if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    }
    return best;
#else
    return SimdLevel::none;
#endif
}

/// The level the kernels use now (tests set it with set_simd_level to run every path).
inline SimdLevel& simd_level_ref() {
    static SimdLevel level = detect_simd_level();
    return level;
}
inline SimdLevel simd_level() { return simd_level_ref(); }

/// Sets the level (capped at what the CPU runs); returns the previous one. Not thread-safe: tests only.
inline SimdLevel set_simd_level(SimdLevel want) {
    const SimdLevel old = simd_level_ref();
    const SimdLevel cap = detect_simd_level();
    simd_level_ref() = static_cast<int>(want) < static_cast<int>(cap) ? want : cap;
    return old;
}

} // namespace celltx::cpu_detail

#if CELLTX_SIMD
// AVX2 + FMA: 8 lanes.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define CELLTX_SIMD_NS simd_avx2
#define CELLTX_SIMD_W 8
#include "celltx/backend/cpu/simd_isa.inl"
#undef CELLTX_SIMD_NS
#undef CELLTX_SIMD_W
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// AVX-512F: 16 lanes.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
#define CELLTX_SIMD_NS simd_avx512
#define CELLTX_SIMD_W 16
#include "celltx/backend/cpu/simd_isa.inl"
#undef CELLTX_SIMD_NS
#undef CELLTX_SIMD_W
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace celltx::cpu_detail {

// The array kernels at the best level this CPU runs; each returns false when no vector level runs
// (the caller then loops).
#if CELLTX_SIMD
/// Calls the AVX-512 or the AVX2 build of one simd_isa.inl kernel, as simd_level() says.
template <class... A>
inline bool run_simd(void (*avx512)(A...), void (*avx2)(A...), std::type_identity_t<A>... args) {
    switch (simd_level()) {
        case SimdLevel::avx512: avx512(args...); return true;
        case SimdLevel::avx2: avx2(args...); return true;
        default: return false;
    }
}

/// y[i] = GELU(x[i]) (exact erf) for n floats.
inline bool simd_gelu_forward(const float* x, float* y, index_t n) { return run_simd(simd_avx512::gelu_forward, simd_avx2::gelu_forward, x, y, n); }
/// y[i] = GELU(x[i]) and d[i] = GELU'(x[i]) for n floats, one Φ per element.
inline bool simd_gelu_value_and_derivative(const float* x, float* y, float* d, index_t n) {
    return run_simd(simd_avx512::gelu_value_and_derivative, simd_avx2::gelu_value_and_derivative, x, y, d, n);
}
/// dx[i] += dy[i]·GELU'(x[i]) for n floats.
inline bool simd_gelu_backward(const float* x, const float* dy, float* dx, index_t n) {
    return run_simd(simd_avx512::gelu_backward, simd_avx2::gelu_backward, x, dy, dx, n);
}
/// The 16 Philox4x32-10 blocks first_block .. first_block + 15 of a stream, element order:
/// out[4·l + w] = word w of block first_block + l (CounterRng::bits).
inline bool simd_philox_blocks16(const PhiloxStream& stream, std::uint64_t first_block, std::uint32_t* out) {
    return run_simd(simd_avx512::philox_blocks16, simd_avx2::philox_blocks16, stream, first_block, out);
}
/// The Adam/AdamW update (without amsgrad) of n floats.
inline bool simd_adam_update(const AdamCoefficients& c, float* w, const float* g, float* m, float* v, index_t n) {
    return run_simd(simd_avx512::adam_update_array, simd_avx2::adam_update_array, c, w, g, m, v, n);
}
/// h = silu(g)·u, and SwiGLU's gradients dg, du, for n floats (exp through vexp).
inline bool simd_swiglu_forward(const float* g, const float* u, float* h, index_t n) {
    return run_simd(simd_avx512::swiglu_forward_array, simd_avx2::swiglu_forward_array, g, u, h, n);
}
inline bool simd_swiglu_backward(const float* g, const float* u, const float* dh, float* dg, float* du, index_t n) {
    return run_simd(simd_avx512::swiglu_backward_array, simd_avx2::swiglu_backward_array, g, u, dh, dg, du, n);
}
/// y[i] = 2^x[i] through the softmax kernels' vexp2_softmax.
inline bool simd_exp2_softmax(const float* x, float* y, index_t n) { return run_simd(simd_avx512::exp2_softmax_array, simd_avx2::exp2_softmax_array, x, y, n); }
/// y[i] = exp(x[i]) through vexp (tests measure its error).
inline bool simd_exp(const float* x, float* y, index_t n) { return run_simd(simd_avx512::exp_array, simd_avx2::exp_array, x, y, n); }
/// The dense Type I block's attention forward over a block of rows (see simd_isa.inl).
inline bool simd_dense_attention_forward(const DenseAttentionRows& a, float* x, float* m, float* l, float* p) {
    return run_simd(simd_avx512::dense_attention_forward_rows, simd_avx2::dense_attention_forward_rows, a, x, m, l, p);
}
/// The dense Type I block's attention backward over a block of rows (see simd_isa.inl).
inline bool simd_dense_attention_backward(const DenseAttentionRows& a, const float* da, const float* dat, const float* lset, float* dqt,
                                          float* du, float* dk, index_t dk_stride, float* scratch) {
    return run_simd(simd_avx512::dense_attention_backward_rows, simd_avx2::dense_attention_backward_rows, a, da, dat, lset, dqt, du, dk,
                    dk_stride, scratch);
}
// The dense Type I block's row kernels (simd_isa.inl): rows of `cols` floats, cols a multiple of 16;
// false for other widths too.
inline bool simd_layer_norm_rows(const float* x, index_t rows, index_t d, const float* w, const float* b, double eps, float* xhat, float* rstd,
                                 float* y) {
    return d % 16 == 0 && run_simd(simd_avx512::layer_norm_rows, simd_avx2::layer_norm_rows, x, rows, d, w, b, eps, xhat, rstd, y);
}
inline bool simd_layer_norm_rows_backward(const float* dy, const float* xhat, const float* rstd, const float* w, index_t rows, index_t d,
                                          float* dx, float* dw, float* db) {
    return d % 16 == 0 &&
           run_simd(simd_avx512::layer_norm_rows_backward, simd_avx2::layer_norm_rows_backward, dy, xhat, rstd, w, rows, d, dx, dw, db);
}
inline bool simd_layer_norm_affine_rows(const float* xhat, const float* w, const float* b, index_t rows, index_t d, float* y) {
    return d % 16 == 0 && run_simd(simd_avx512::layer_norm_affine_rows, simd_avx2::layer_norm_affine_rows, xhat, w, b, rows, d, y);
}
inline bool simd_add_bias_and_residual_rows(float* y, const float* bias, const float* res, index_t rows, index_t cols) {
    return cols % 16 == 0 && run_simd(simd_avx512::add_bias_and_residual_rows, simd_avx2::add_bias_and_residual_rows, y, bias, res, rows, cols);
}
inline bool simd_bias_gelu_rows(float* x, const float* bias, index_t rows, index_t cols) {
    return cols % 16 == 0 && run_simd(simd_avx512::bias_gelu_rows, simd_avx2::bias_gelu_rows, x, bias, rows, cols);
}
inline bool simd_bias_gelu_value_and_derivative_rows(float* pre, const float* bias, float* hid, index_t rows, index_t cols) {
    return cols % 16 == 0 && run_simd(simd_avx512::bias_gelu_value_and_derivative_rows, simd_avx2::bias_gelu_value_and_derivative_rows, pre,
                                      bias, hid, rows, cols);
}
inline bool simd_multiply_rows_and_sum_columns(const float* a, const float* b, float* out, index_t rows, index_t cols, float* colsum) {
    return cols % 16 == 0 && run_simd(simd_avx512::multiply_rows_and_sum_columns, simd_avx2::multiply_rows_and_sum_columns, a, b, out, rows,
                                      cols, colsum);
}
inline bool simd_sum_columns(const float* x, index_t rows, index_t cols, float* colsum) {
    return cols % 16 == 0 && run_simd(simd_avx512::sum_columns, simd_avx2::sum_columns, x, rows, cols, colsum);
}
#else
inline bool simd_layer_norm_rows(const float*, index_t, index_t, const float*, const float*, double, float*, float*, float*) { return false; }
inline bool simd_layer_norm_rows_backward(const float*, const float*, const float*, const float*, index_t, index_t, float*, float*, float*) {
    return false;
}
inline bool simd_layer_norm_affine_rows(const float*, const float*, const float*, index_t, index_t, float*) { return false; }
inline bool simd_add_bias_and_residual_rows(float*, const float*, const float*, index_t, index_t) { return false; }
inline bool simd_bias_gelu_rows(float*, const float*, index_t, index_t) { return false; }
inline bool simd_bias_gelu_value_and_derivative_rows(float*, const float*, float*, index_t, index_t) { return false; }
inline bool simd_multiply_rows_and_sum_columns(const float*, const float*, float*, index_t, index_t, float*) { return false; }
inline bool simd_sum_columns(const float*, index_t, index_t, float*) { return false; }
inline bool simd_gelu_forward(const float*, float*, index_t) { return false; }
inline bool simd_swiglu_forward(const float*, const float*, float*, index_t) { return false; }
inline bool simd_adam_update(const AdamCoefficients&, float*, const float*, float*, float*, index_t) { return false; }
inline bool simd_philox_blocks16(const PhiloxStream&, std::uint64_t, std::uint32_t*) { return false; }
inline bool simd_swiglu_backward(const float*, const float*, const float*, float*, float*, index_t) { return false; }
inline bool simd_gelu_value_and_derivative(const float*, float*, float*, index_t) { return false; }
inline bool simd_gelu_backward(const float*, const float*, float*, index_t) { return false; }
inline bool simd_exp2_softmax(const float*, float*, index_t) { return false; }
inline bool simd_exp(const float*, float*, index_t) { return false; }
inline bool simd_dense_attention_forward(const DenseAttentionRows&, float*, float*, float*, float*) { return false; }
inline bool simd_dense_attention_backward(const DenseAttentionRows&, const float*, const float*, const float*, float*, float*, float*, index_t,
                                          float*) {
    return false;
}
#endif

} // namespace celltx::cpu_detail
