// One instruction set's vector kernels; included by simd.hpp once per set, inside a target region,
// with CELLTX_SIMD_NS (the namespace) and CELLTX_SIMD_W (floats per vector: 8 or 16) defined.
// No include guard on purpose.

namespace celltx::cpu_detail::CELLTX_SIMD_NS {

inline constexpr int W = CELLTX_SIMD_W;

#if CELLTX_SIMD_W == 16
using vf = __m512;
using vi = __m512i;
inline vf vset(float a) { return _mm512_set1_ps(a); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf a) { _mm512_storeu_ps(p, a); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }   // a·b + c
inline vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } // c − a·b
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
/// min(a, b) that returns b where b is NaN.
inline vf vmin_keep_nan(vf a, vf b) { return _mm512_min_ps(a, b); }
inline vf vabs(vf a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
/// a where a >= lo or a is NaN, else 0.
inline vf vzero_below(vf y, vf x, vf lo) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), y); }
/// neg where x < 0, else pos.
inline vf vselect_negative(vf x, vf neg, vf pos) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), pos, neg); }
inline vi vround_int(vf a) { return _mm512_cvtps_epi32(a); }
inline vf vto_float(vi a) { return _mm512_cvtepi32_ps(a); }
inline vf vpow2(vi n) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23)); }
inline float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
/// Whether a > b in any lane.
inline bool vany_greater(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) != 0; }
#else
using vf = __m256;
using vi = __m256i;
inline vf vset(float a) { return _mm256_set1_ps(a); }
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf a) { _mm256_storeu_ps(p, a); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vmin_keep_nan(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vabs(vf a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
inline vf vzero_below(vf y, vf x, vf lo) { return _mm256_and_ps(y, _mm256_cmp_ps(x, lo, _CMP_NLT_UQ)); }
inline vf vselect_negative(vf x, vf neg, vf pos) { return _mm256_blendv_ps(pos, neg, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ)); }
inline vi vround_int(vf a) { return _mm256_cvtps_epi32(a); }
inline vf vto_float(vi a) { return _mm256_cvtepi32_ps(a); }
inline vf vpow2(vi n) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23)); }
inline float vhsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/// Whether a > b in any lane.
inline bool vany_greater(vf a, vf b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)) != 0; }
inline float vhmax(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/// exp(x) lane-wise: x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-6 minimax polynomial (relative
/// error 2e-9 before rounding), times 2^n built in the exponent bits.
inline vf vexp(vf x) {
    const vf lo = vset(-87.33654f);  // ln(FLT_MIN): below it the result would be subnormal; 0 instead
    x = vmin_keep_nan(vset(88.3762626f), x);
    const vi ni = vround_int(vmul(x, vset(1.44269504088896341f)));
    const vf n = vto_float(ni);
    vf r = vfnma(n, vset(0.693359375f), x);  // ln2 split in two: n·ln2_hi is exact
    r = vfnma(n, vset(-2.12194440e-4f), r);
    vf p = vset(0.00139421598337f);
    p = vfma(p, r, vset(0.00837596822631f));
    p = vfma(p, r, vset(0.0416663401422f));
    p = vfma(p, r, vset(0.166664053026f));
    p = vfma(p, r, vset(0.500000005002f));
    p = vfma(p, r, vset(1.00000004004f));
    p = vfma(p, r, vset(1.0f));
    return vzero_below(vmul(p, vpow2(ni)), x, lo);
}

/// 2^x for the softmax kernels, which keep scores in base-2 units (the queries carry log2(e)), so
/// that the range reduction is two exact subtractions: adding 1.5·2^(23−b) rounds x to k/2^b
/// (k = n·2^b + i in the sum's low mantissa bits), r = x − k/2^b, |r| <= 2^−(b+1). Then
/// 2^x = 2^n · 2^(i/2^b) · 2^r: the middle factor from a table of 2^b entries held in one register
/// (a lane permute; b = 4 with 16 lanes, 3 with 8), 2^n added into its exponent bits, and 2^r by
/// Taylor's polynomial (degree 3 for b = 4, 4 for b = 3: below 1e-8 relative). Four or five FMA-unit
/// operations instead of the seven of a full-range polynomial: the attention's inner loops are
/// bound by those units. Arguments are s − max or s − lse: at most a few units above 0, −inf for
/// padding; below −126 (−inf included) it gives about 1.2e-38 instead of 0; above 127 it is not defined.
inline vf vexp2_softmax(vf x) {
    x = vmax(x, vset(-126.0f));
#if CELLTX_SIMD_W == 16
    constexpr int b = 4;
    const vf table = _mm512_setr_ps(1.0f, 1.0442737824274138f, 1.0905077326652577f, 1.1387886347566916f, 1.189207115002721f, 1.241857812073484f, 1.2968395546510096f, 1.3542555469368927f, 1.4142135623730951f, 1.4768261459394993f, 1.5422108254079407f, 1.6104903319492543f, 1.681792830507429f, 1.7562521603732995f, 1.8340080864093424f, 1.9152065613971474f);
#else
    constexpr int b = 3;
    const vf table = _mm256_setr_ps(1.0f, 1.0905077326652577f, 1.189207115002721f, 1.2968395546510096f, 1.4142135623730951f, 1.5422108254079407f, 1.681792830507429f, 1.8340080864093424f);
#endif
    const vf magic = vset(1.5f * static_cast<float>(1 << (23 - b)));
    const vf t = vadd(x, magic);
    const vf r = vsub(x, vsub(t, magic));
    // 2^r − 1 = r·(ln2 + r·(ln2²/2 + r·(ln2³/6 [+ r·ln2⁴/24])))
#if CELLTX_SIMD_W == 16
    vf q = vfma(vset(0.0555041086648216f), r, vset(0.240226506959101f));
#else
    vf q = vfma(vset(0.00961812910762848f), r, vset(0.0555041086648216f));
    q = vfma(q, r, vset(0.240226506959101f));
#endif
    q = vfma(q, r, vset(0.693147180559945f));
    q = vmul(q, r);
#if CELLTX_SIMD_W == 16
    const __m512i tb = _mm512_castps_si512(t);
    const __m512i n23 = _mm512_and_si512(_mm512_slli_epi32(tb, 23 - b), _mm512_set1_epi32(static_cast<int>(0xff800000u)));
    const vf f = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(_mm512_permutexvar_ps(tb, table)), n23));
#else
    const __m256i tb = _mm256_castps_si256(t);
    const __m256i n23 = _mm256_and_si256(_mm256_slli_epi32(tb, 23 - b), _mm256_set1_epi32(static_cast<int>(0xff800000u)));
    const vf f = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(_mm256_permutevar8x32_ps(table, tb)), n23));
#endif
    return vfma(f, q, f);
}

/// Φ(x), the standard normal CDF, lane-wise (GELU(x) = x·Φ(x)); `gauss` receives e^{-x²/2}, which
/// the tail computes for every lane anyway (φ = gauss/√(2π) then costs no second exp).
inline vf vnormal_cdf(vf x, vf& gauss) {
    const vf z = vmul(x, vset(0.70710678118654752f));
    const vf a = vabs(z);
    // |z| <= 0.875: erf(z) = z·P(z²).
    const vf s = vmul(z, z);
    vf ps = vset(8.69036890739e-5f);
    ps = vfma(ps, s, vset(-0.000821457088745f));
    ps = vfma(ps, s, vset(0.0052070489106f));
    ps = vfma(ps, s, vset(-0.0268617058312f));
    ps = vfma(ps, s, vset(0.112837352102f));
    ps = vfma(ps, s, vset(-0.376126362137f));
    ps = vfma(ps, s, vset(1.12837916689f));
    const vf small = vfma(vmul(z, ps), vset(0.5f), vset(0.5f));
    // |z| > 0.875: erfc(|z|) = e^{-z²}·R(t), t = 1/(1 + |z|), |x| clamped at 10·√2 (erfc(10) = 2e-45).
    // z² = x²/2 from x, not from the rounded z: its rounding would cost z²·ε of relative accuracy.
    const vf xc = vmin_keep_nan(vset(14.1421356f), vabs(x));
    const vf t = vdiv(vset(1.0f), vfma(xc, vset(0.70710678118654752f), vset(1.0f)));
    vf q = vset(-2.69647731953f);
    q = vfma(q, t, vset(9.1027043631f));
    q = vfma(q, t, vset(-12.6012906152f));
    q = vfma(q, t, vset(8.43104221577f));
    q = vfma(q, t, vset(-1.94598054737f));
    q = vfma(q, t, vset(-0.422301265047f));
    q = vfma(q, t, vset(-0.304590209591f));
    q = vfma(q, t, vset(0.282031446364f));
    q = vfma(q, t, vset(0.564368854265f));
    q = vfma(q, t, vset(0.564175269011f));
    q = vfma(q, t, vset(3.79134689938e-7f));
    const vf x2 = vmul(xc, xc);
    const vf hi = vmul(x2, vset(0.5f));
    const vf lo = vmul(vfma(xc, xc, vsub(vzero(), x2)), vset(0.5f));  // x²/2 − hi exactly: e^{-x²/2} = e^{-hi}·(1 − lo)
    gauss = vmul(vexp(vsub(vzero(), hi)), vsub(vset(1.0f), lo));
    const vf half_erfc = vmul(vmul(gauss, vset(0.5f)), q);
    const vf tail = vselect_negative(x, half_erfc, vsub(vset(1.0f), half_erfc));
#if CELLTX_SIMD_W == 16
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, vset(0.875f), _CMP_LE_OQ), tail, small);
#else
    return _mm256_blendv_ps(tail, small, _mm256_cmp_ps(a, vset(0.875f), _CMP_LE_OQ));
#endif
}
inline vf vnormal_cdf(vf x) {
    vf gauss;
    return vnormal_cdf(x, gauss);
}

/// GELU(v) and GELU'(v) = Φ(v) + v·φ(v), one exp. |v| beyond 10·√2 has φ = 0 (as the exact value
/// rounds), so ±inf gives a derivative of NaN (inf·0), as the scalar formula does.
inline void vgelu_both(vf v, vf& val, vf& der) {
    vf gauss;
    const vf cdf = vnormal_cdf(v, gauss);
    val = vmul(v, cdf);
    der = vfma(v, vmul(gauss, vset(0.39894228040143268f)), cdf);
}

/// Calls f(vector in, index) over [0, n) by whole vectors, the last one padded through a buffer so
/// that every element goes through the same arithmetic wherever it lies.
inline void gelu_forward(const float* x, float* y, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) {
        const vf v = vload(x + i);
        vstore(y + i, vmul(v, vnormal_cdf(v)));
    }
    if (i < n) {
        alignas(64) float buf[W] = {};
        for (index_t k = i; k < n; ++k) buf[k - i] = x[k];
        const vf v = vload(buf);
        vstore(buf, vmul(v, vnormal_cdf(v)));
        for (index_t k = i; k < n; ++k) y[k] = buf[k - i];
    }
}

/// GELU'(x) = Φ(x) + x·φ(x).
inline vf vgelu_derivative(vf v) {
    vf val, der;
    vgelu_both(v, val, der);
    return der;
}

/// y[i] = GELU(x[i]) and d[i] = GELU'(x[i]) with one Φ(x) per element (the values of gelu_forward
/// and of gelu_backward's derivative).
inline void gelu_value_and_derivative(const float* x, float* y, float* d, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) {
        vf val, der;
        vgelu_both(vload(x + i), val, der);
        vstore(y + i, val);
        vstore(d + i, der);
    }
    if (i < n) {
        alignas(64) float bx[W] = {}, by[W], bd[W];
        for (index_t k = i; k < n; ++k) bx[k - i] = x[k];
        vf val, der;
        vgelu_both(vload(bx), val, der);
        vstore(by, val);
        vstore(bd, der);
        for (index_t k = i; k < n; ++k) y[k] = by[k - i], d[k] = bd[k - i];
    }
}

inline void gelu_backward(const float* x, const float* dy, float* dx, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) vstore(dx + i, vfma(vload(dy + i), vgelu_derivative(vload(x + i)), vload(dx + i)));
    if (i < n) {
        alignas(64) float bx[W] = {}, bdy[W] = {}, bdx[W] = {};
        for (index_t k = i; k < n; ++k) bx[k - i] = x[k], bdy[k - i] = dy[k], bdx[k - i] = dx[k];
        vstore(bdx, vfma(vload(bdy), vgelu_derivative(vload(bx)), vload(bdx)));
        for (index_t k = i; k < n; ++k) dx[k] = bdx[k - i];
    }
}

/// SwiGLU (h = silu(g)·u, silu(g) = g·σ(g), σ(g) = 1/(1 + e^{-g})) over n floats, and its gradients
/// dg = dh·u·silu'(g), du = dh·silu(g), in the scalar formulas' order (math/activation.hpp).
inline vf vsigmoid(vf x) { return vdiv(vset(1.0f), vadd(vset(1.0f), vexp(vsub(vzero(), x)))); }
inline vf vswiglu(vf gv, vf uv) { return vmul(vmul(gv, vsigmoid(gv)), uv); }
inline void vswiglu_gradients(vf gv, vf uv, vf dv, vf& dgv, vf& duv) {
    const vf s = vsigmoid(gv), one = vset(1.0f);
    dgv = vmul(vmul(dv, uv), vmul(s, vfma(gv, vsub(one, s), one)));
    duv = vmul(dv, vmul(gv, s));
}
inline void swiglu_forward_array(const float* g, const float* u, float* h, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) vstore(h + i, vswiglu(vload(g + i), vload(u + i)));
    if (i < n) {
        alignas(64) float bg[W] = {}, bu[W] = {};
        for (index_t k = i; k < n; ++k) bg[k - i] = g[k], bu[k - i] = u[k];
        vstore(bg, vswiglu(vload(bg), vload(bu)));
        for (index_t k = i; k < n; ++k) h[k] = bg[k - i];
    }
}
inline void swiglu_backward_array(const float* g, const float* u, const float* dh, float* dg, float* du, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) {
        vf a, b;
        vswiglu_gradients(vload(g + i), vload(u + i), vload(dh + i), a, b);
        vstore(dg + i, a);
        vstore(du + i, b);
    }
    if (i < n) {
        alignas(64) float bg[W] = {}, bu[W] = {}, bd[W] = {};
        for (index_t k = i; k < n; ++k) bg[k - i] = g[k], bu[k - i] = u[k], bd[k - i] = dh[k];
        vf a, b;
        vswiglu_gradients(vload(bg), vload(bu), vload(bd), a, b);
        vstore(bg, a);
        vstore(bu, b);
        for (index_t k = i; k < n; ++k) dg[k] = bg[k - i], du[k] = bu[k - i];
    }
}

/// Adam/AdamW without amsgrad over n floats: math::adam_element's formula, term by term (sqrt and
/// division correctly rounded, as the scalar ones); the last partial vector goes through a buffer.
inline void adam_vector(const AdamCoefficients& c, vf& w, vf g, vf& m, vf& v) {
    if (c.l2) g = vadd(g, vmul(vset(c.wd), w));
    if (c.decoupled) w = vmul(w, vset(c.decay));
    m = vadd(vmul(m, vset(c.b1)), vmul(vset(c.one_m_b1), g));
    v = vadd(vmul(v, vset(c.b2)), vmul(vmul(vset(c.one_m_b2), g), g));
    const vf denom = vadd(vdiv(vsqrt(v), vset(c.bc2_sqrt)), vset(c.eps));
    w = vadd(w, vdiv(vmul(vset(c.neg_step), m), denom));
}
inline void adam_update_array(const AdamCoefficients& c, float* w, const float* g, float* m, float* v, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) {
        vf wv = vload(w + i), mv = vload(m + i), vv = vload(v + i);
        adam_vector(c, wv, vload(g + i), mv, vv);
        vstore(w + i, wv);
        vstore(m + i, mv);
        vstore(v + i, vv);
    }
    if (i < n) {
        alignas(64) float bw[W] = {}, bg[W] = {}, bm[W] = {}, bv[W] = {};
        for (index_t k = i; k < n; ++k) bw[k - i] = w[k], bg[k - i] = g[k], bm[k - i] = m[k], bv[k - i] = v[k];
        vf wv = vload(bw), mv = vload(bm), vv = vload(bv);
        adam_vector(c, wv, vload(bg), mv, vv);
        vstore(bw, wv);
        vstore(bm, mv);
        vstore(bv, vv);
        for (index_t k = i; k < n; ++k) w[k] = bw[k - i], m[k] = bm[k - i], v[k] = bv[k - i];
    }
}

inline void exp2_softmax_array(const float* x, float* y, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) vstore(y + i, vexp2_softmax(vload(x + i)));
    if (i < n) {
        alignas(64) float buf[W] = {};
        for (index_t k = i; k < n; ++k) buf[k - i] = x[k];
        vstore(buf, vexp2_softmax(vload(buf)));
        for (index_t k = i; k < n; ++k) y[k] = buf[k - i];
    }
}

inline void exp_array(const float* x, float* y, index_t n) {
    index_t i = 0;
    for (; i + W <= n; i += W) vstore(y + i, vexp(vload(x + i)));
    if (i < n) {
        alignas(64) float buf[W] = {};
        for (index_t k = i; k < n; ++k) buf[k - i] = x[k];
        vstore(buf, vexp(vload(buf)));
        for (index_t k = i; k < n; ++k) y[k] = buf[k - i];
    }
}


// =================================================================================================
// Row kernels of the dense Type I block (float rows, cols a multiple of 16). LayerNorm keeps the
// library's convention: row statistics and each element's formula in double, rounded once to float.

#if CELLTX_SIMD_W == 16
using vd = __m512d;  // W/2 doubles, converted from W/2 floats
inline vd vdload(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
inline void vdstore(float* p, vd a) { _mm256_storeu_ps(p, _mm512_cvtpd_ps(a)); }
inline vd vdset(double a) { return _mm512_set1_pd(a); }
inline vd vdadd(vd a, vd b) { return _mm512_add_pd(a, b); }
inline vd vdsub(vd a, vd b) { return _mm512_sub_pd(a, b); }
inline vd vdmul(vd a, vd b) { return _mm512_mul_pd(a, b); }
inline vd vdfma(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
inline double vdhsum(vd a) { return _mm512_reduce_add_pd(a); }
#else
using vd = __m256d;
inline vd vdload(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
inline void vdstore(float* p, vd a) { _mm_storeu_ps(p, _mm256_cvtpd_ps(a)); }
inline vd vdset(double a) { return _mm256_set1_pd(a); }
inline vd vdadd(vd a, vd b) { return _mm256_add_pd(a, b); }
inline vd vdsub(vd a, vd b) { return _mm256_sub_pd(a, b); }
inline vd vdmul(vd a, vd b) { return _mm256_mul_pd(a, b); }
inline vd vdfma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
inline double vdhsum(vd a) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
#endif
inline constexpr int WD = W / 2;

/// LayerNorm of `rows` rows of d floats: xhat and 1/σ saved, y = w·xhat + b (y may be x).
inline void layer_norm_rows(const float* x, index_t rows, index_t d, const float* w, const float* b, double eps, float* xhat, float* rstd,
                            float* y) {
    const double inv_d = 1.0 / static_cast<double>(d);
    for (index_t r = 0; r < rows; ++r) {
        const float* xr = x + r * d;
        vd s0 = vdset(0.0), s1 = s0;
        for (index_t j = 0; j < d; j += W) s0 = vdadd(s0, vdload(xr + j)), s1 = vdadd(s1, vdload(xr + j + WD));
        const vd mean = vdset(vdhsum(vdadd(s0, s1)) * inv_d);
        s0 = vdset(0.0), s1 = s0;
        for (index_t j = 0; j < d; j += W) {
            const vd c0 = vdsub(vdload(xr + j), mean), c1 = vdsub(vdload(xr + j + WD), mean);
            s0 = vdfma(c0, c0, s0), s1 = vdfma(c1, c1, s1);
        }
        const double rs = math::inverse_rms(vdhsum(vdadd(s0, s1)), static_cast<double>(d), eps);
        rstd[r] = static_cast<float>(rs);
        const vd vr = vdset(rs);
        float* hr = xhat + r * d;
        float* yr = y + r * d;
        for (index_t j = 0; j < d; j += WD) {
            const vd h = vdmul(vdsub(vdload(xr + j), mean), vr);
            vdstore(hr + j, h);
            vdstore(yr + j, vdfma(h, vdload(w + j), vdload(b + j)));
        }
    }
}

/// LayerNorm backward of `rows` rows: dx = rstd·(g − mean g − xhat·mean(g·xhat)), g = dy·w (assigned;
/// dx may be dy); dw += Σ dy·xhat and db += Σ dy over the rows, in row order.
inline void layer_norm_rows_backward(const float* dy, const float* xhat, const float* rstd, const float* w, index_t rows, index_t d, float* dx,
                                     float* dw, float* db) {
    const double inv_d = 1.0 / static_cast<double>(d);
    for (index_t r = 0; r < rows; ++r) {
        const float* g = dy + r * d;
        const float* h = xhat + r * d;
        for (index_t j = 0; j < d; j += W) {
            const vf gv = vload(g + j);
            vstore(dw + j, vfma(gv, vload(h + j), vload(dw + j)));
            vstore(db + j, vadd(vload(db + j), gv));
        }
        vd sg = vdset(0.0), sgh = sg;
        for (index_t j = 0; j < d; j += WD) {
            const vd gw = vdmul(vdload(g + j), vdload(w + j));
            sg = vdadd(sg, gw);
            sgh = vdfma(gw, vdload(h + j), sgh);
        }
        const vd mg = vdset(vdhsum(sg) * inv_d), mgh = vdset(vdhsum(sgh) * inv_d), rs = vdset(static_cast<double>(rstd[r]));
        float* o = dx + r * d;
        for (index_t j = 0; j < d; j += WD) {
            const vd gw = vdmul(vdload(g + j), vdload(w + j));
            vdstore(o + j, vdmul(rs, vdsub(vdsub(gw, mg), vdmul(vdload(h + j), mgh))));
        }
    }
}

/// y = w·xhat + b over rows of d (LayerNorm's output from its saved xhat), in double, rounded once.
inline void layer_norm_affine_rows(const float* xhat, const float* w, const float* b, index_t rows, index_t d, float* y) {
    for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < d; j += WD) vdstore(y + r * d + j, vdfma(vdload(xhat + r * d + j), vdload(w + j), vdload(b + j)));
}

/// y[r, j] = res[r, j] + (y[r, j] + bias[j]) over rows × cols.
inline void add_bias_and_residual_rows(float* y, const float* bias, const float* res, index_t rows, index_t cols) {
    for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; j += W)
            vstore(y + r * cols + j, vadd(vload(res + r * cols + j), vadd(vload(y + r * cols + j), vload(bias + j))));
}

/// x[r, j] = GELU(x[r, j] + bias[j]) over rows × cols (ld = cols).
inline void bias_gelu_rows(float* x, const float* bias, index_t rows, index_t cols) {
    for (index_t r = 0; r < rows; ++r) {
        float* xr = x + r * cols;
        for (index_t j = 0; j < cols; j += W) {
            const vf v = vadd(vload(xr + j), vload(bias + j));
            vstore(xr + j, vmul(v, vnormal_cdf(v)));
        }
    }
}

/// v = pre[r, j] + bias[j]: hid = GELU(v) and pre := GELU'(v), one Φ and one exp per element.
inline void bias_gelu_value_and_derivative_rows(float* pre, const float* bias, float* hid, index_t rows, index_t cols) {
    for (index_t r = 0; r < rows; ++r) {
        float* pr = pre + r * cols;
        float* hr = hid + r * cols;
        for (index_t j = 0; j < cols; j += W) {
            vf val, der;
            vgelu_both(vadd(vload(pr + j), vload(bias + j)), val, der);
            vstore(hr + j, val);
            vstore(pr + j, der);
        }
    }
}

/// out = a·b element-wise over rows × cols, and colsum[j] += out[r, j] in row order.
inline void multiply_rows_and_sum_columns(const float* a, const float* b, float* out, index_t rows, index_t cols, float* colsum) {
    for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; j += W) {
            const vf v = vmul(vload(a + r * cols + j), vload(b + r * cols + j));
            vstore(out + r * cols + j, v);
            vstore(colsum + j, vadd(vload(colsum + j), v));
        }
}

/// colsum[j] += x[r, j] over rows, in row order.
inline void sum_columns(const float* x, index_t rows, index_t cols, float* colsum) {
    for (index_t j = 0; j < cols; j += W) {
        vf acc = vload(colsum + j);
        for (index_t r = 0; r < rows; ++r) acc = vadd(acc, vload(x + r * cols + j));
        vstore(colsum + j, acc);
    }
}

// ---- Philox4x32-10 in vector lanes (core/rng.hpp's philox4x32_rounds, bit for bit): one counter
// per 32-bit lane. hi(a·m) comes from two 32x32->64 products (even and odd lanes), lo from mullo.
#if CELLTX_SIMD_W == 16
using lane_mask = __mmask16;
inline vi philox_mul(vi a, vi m, vi& lo) {
    lo = _mm512_mullo_epi32(a, m);
    const vi even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
    const vi odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}
inline vi philox_xor3(vi a, vi b, vi c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }  // a ^ b ^ c in one instruction
inline vi philox_set(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
inline vi philox_lane_index() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
/// The counters lo + lane and, carrying into them, hi.
inline void philox_counters(std::uint64_t first, vi& c0, vi& c1) {
    const vi lo = philox_set(static_cast<std::uint32_t>(first)), hi = philox_set(static_cast<std::uint32_t>(first >> 32));
    c0 = _mm512_add_epi32(lo, philox_lane_index());
    c1 = _mm512_mask_add_epi32(hi, _mm512_cmplt_epu32_mask(c0, lo), hi, philox_set(1));  // + 1 where the low word wrapped
}
/// The 64-bit counters (hi, lo) of every lane plus one.
inline void philox_increment(vi& lo, vi& hi) {
    lo = _mm512_add_epi32(lo, philox_set(1));
    hi = _mm512_mask_add_epi32(hi, _mm512_cmpeq_epi32_mask(lo, _mm512_setzero_si512()), hi, philox_set(1));
}
inline void philox_store(std::uint32_t* p, vi a) { _mm512_storeu_si512(p, a); }
inline vi philox_load(const std::uint32_t* p) { return _mm512_loadu_si512(p); }
inline lane_mask lanes_equal(vi a, vi b) { return _mm512_cmpeq_epi32_mask(a, b); }
/// b in the lanes of m, a elsewhere.
inline vi lanes_blend(lane_mask m, vi a, vi b) { return _mm512_mask_blend_epi32(m, a, b); }
/// keep where bits >= threshold (unsigned), else 0: the dropout factor (math::dropout_factor).
inline vf dropout_factor_lanes(vi bits, vi threshold, vf keep) { return _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(bits, threshold), keep); }
/// Words w of blocks l (c_w's lanes) in element order: out[q] holds elements 16q .. 16q + 15, that
/// is word e & 3 of block e >> 2 in lane e & 15. A 4x4 transpose within each 128-bit lane gives
/// each block's 4 words together, a 4x4 transpose of the 128-bit lanes puts the blocks in order.
inline void philox_element_order(vi c0, vi c1, vi c2, vi c3, vi (&out)[4]) {
    const vi t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
    const vi t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
    const vi r0 = _mm512_unpacklo_epi64(t0, t2), r1 = _mm512_unpackhi_epi64(t0, t2);  // blocks 4L, 4L + 1 in 128-bit lane L
    const vi r2 = _mm512_unpacklo_epi64(t1, t3), r3 = _mm512_unpackhi_epi64(t1, t3);  // blocks 4L + 2, 4L + 3
    const vi u0 = _mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm512_shuffle_i32x4(r2, r3, _MM_SHUFFLE(1, 0, 1, 0));
    const vi u2 = _mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(3, 2, 3, 2)), u3 = _mm512_shuffle_i32x4(r2, r3, _MM_SHUFFLE(3, 2, 3, 2));
    out[0] = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0));
    out[1] = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
    out[2] = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(2, 0, 2, 0));
    out[3] = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(3, 1, 3, 1));
}
#else
using lane_mask = __m256i;
inline vi philox_mul(vi a, vi m, vi& lo) {
    lo = _mm256_mullo_epi32(a, m);
    const vi even = _mm256_srli_epi64(_mm256_mul_epu32(a, m), 32);
    const vi odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    return _mm256_blend_epi32(even, odd, 0xAA);
}
inline vi philox_xor3(vi a, vi b, vi c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
inline vi philox_set(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
inline vi philox_lane_index() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline void philox_counters(std::uint64_t first, vi& c0, vi& c1) {
    const vi lo = philox_set(static_cast<std::uint32_t>(first));
    c0 = _mm256_add_epi32(lo, philox_lane_index());
    const vi sign = philox_set(0x80000000u);  // unsigned c0 < lo as a signed compare of flipped values
    const vi carry = _mm256_cmpgt_epi32(_mm256_xor_si256(lo, sign), _mm256_xor_si256(c0, sign));
    c1 = _mm256_sub_epi32(philox_set(static_cast<std::uint32_t>(first >> 32)), carry);  // carry is -1 where it wraps
}
inline void philox_increment(vi& lo, vi& hi) {
    lo = _mm256_add_epi32(lo, philox_set(1));
    hi = _mm256_sub_epi32(hi, _mm256_cmpeq_epi32(lo, _mm256_setzero_si256()));  // -1 where lo wrapped to 0
}
inline void philox_store(std::uint32_t* p, vi a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
inline vi philox_load(const std::uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline lane_mask lanes_equal(vi a, vi b) { return _mm256_cmpeq_epi32(a, b); }
inline vi lanes_blend(lane_mask m, vi a, vi b) { return _mm256_blendv_epi8(a, b, m); }
inline vf dropout_factor_lanes(vi bits, vi threshold, vf keep) {
    const vi kept = _mm256_cmpeq_epi32(_mm256_max_epu32(bits, threshold), bits);  // bits >= threshold, unsigned
    return _mm256_and_ps(_mm256_castsi256_ps(kept), keep);
}
/// Words w of blocks l (c_w's lanes) in element order: out[q] holds elements 8q .. 8q + 7.
inline void philox_element_order(vi c0, vi c1, vi c2, vi c3, vi (&out)[4]) {
    const vi t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    const vi t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    const vi r0 = _mm256_unpacklo_epi64(t0, t2), r1 = _mm256_unpackhi_epi64(t0, t2);  // blocks 4L, 4L + 1 in 128-bit lane L
    const vi r2 = _mm256_unpacklo_epi64(t1, t3), r3 = _mm256_unpackhi_epi64(t1, t3);
    out[0] = _mm256_permute2x128_si256(r0, r1, 0x20);
    out[1] = _mm256_permute2x128_si256(r2, r3, 0x20);
    out[2] = _mm256_permute2x128_si256(r0, r1, 0x31);
    out[3] = _mm256_permute2x128_si256(r2, r3, 0x31);
}
#endif

/// The round keys of a stream's Philox4x32-10, broadcast once for many evaluations.
struct PhiloxRoundKeys {
    vi k0[10], k1[10];
    explicit PhiloxRoundKeys(const PhiloxStream& stream) {
        std::uint32_t key0 = stream.key0, key1 = stream.key1;
        for (int round = 0; round < 10; ++round) {
            k0[round] = philox_set(key0);
            k1[round] = philox_set(key1);
            key0 += 0x9E3779B9u;
            key1 += 0xBB67AE85u;
        }
    }
};

/// The ten Philox4x32-10 rounds on the counters (c0, c1, c2, c3) of every lane.
inline void philox_rounds(vi& c0, vi& c1, vi& c2, vi& c3, const PhiloxRoundKeys& keys) {
    const vi m0 = philox_set(0xD2511F53u), m1 = philox_set(0xCD9E8D57u);
    for (int round = 0; round < 10; ++round) {
        vi lo0, lo1;
        const vi hi0 = philox_mul(c0, m0, lo0), hi1 = philox_mul(c2, m1, lo1);
        c0 = philox_xor3(hi1, c1, keys.k0[round]);
        c2 = philox_xor3(hi0, c3, keys.k1[round]);
        c1 = lo1;
        c3 = lo0;
    }
}

/// The 16 Philox blocks first_block .. first_block + 15 of `stream` as 64 words in element order:
/// words[n] holds elements n·W .. n·W + W − 1 (word e & 3 of block first_block + (e >> 2)).
inline void philox_blocks16_in_order(const PhiloxStream& stream, const PhiloxRoundKeys& keys, std::uint64_t first_block,
                                     vi (&words)[64 / W]) {
    for (int part = 0; part < 16 / W; ++part) {
        vi c0, c1, c2 = philox_set(stream.stream0), c3 = philox_set(stream.stream1);
        philox_counters(first_block + static_cast<std::uint64_t>(part * W), c0, c1);
        philox_rounds(c0, c1, c2, c3, keys);
        vi v[4];
        philox_element_order(c0, c1, c2, c3, v);
        for (int q = 0; q < 4; ++q) words[4 * part + q] = v[q];
    }
}

/// The 128 bits of the 16 Philox blocks first_block .. first_block + 15 of `stream`, in element
/// order: out[4·l + w] is word w of block first_block + l.
inline void philox_blocks16(const PhiloxStream& stream, std::uint64_t first_block, std::uint32_t* out) {
    vi words[64 / W];
    philox_blocks16_in_order(stream, PhiloxRoundKeys(stream), first_block, words);
    for (int n = 0; n < 64 / W; ++n) philox_store(out + n * W, words[n]);
}

// ---- Attention dropout at head width 8: the generic kernel's masks (element e of the stream is
// kept iff word e & 3 of block e >> 2 is at least the threshold), drawn where the kernels need them.

/// The forward's factors for W query rows in lanes, keys in order four at a time: lane r is the
/// row whose key 0 is stream element row0 + r·tk. One Philox evaluation (a counter per lane) gives
/// the next 4 keys of every row. A row whose key 0 is not word 0 of its block (tk % 4 != 0) takes
/// its 4 words from this block and the next one's, which the next call evaluates anyway.
class Attn8RowDropout {
public:
    Attn8RowDropout(const AttentionDropout8& drop, std::uint64_t row0, index_t tk)
        : keys_(drop.stream), ctr2_(philox_set(drop.stream.stream0)), ctr3_(philox_set(drop.stream.stream1)),
          threshold_(philox_set(drop.threshold)), keep_(vset(drop.keep_scale)) {
        alignas(64) std::uint32_t lo[W], hi[W], off[W];
        for (int r = 0; r < W; ++r) {
            const std::uint64_t e = row0 + static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(tk);
            lo[r] = static_cast<std::uint32_t>(e >> 2);
            hi[r] = static_cast<std::uint32_t>(e >> 34);
            off[r] = static_cast<std::uint32_t>(e & 3);
            aligned_ = aligned_ && off[r] == 0;
        }
        lo_ = philox_load(lo);
        hi_ = philox_load(hi);
        if (!aligned_) {
            const vi o = philox_load(off);
            off1_ = lanes_equal(o, philox_set(1));
            off2_ = lanes_equal(o, philox_set(2));
            off3_ = lanes_equal(o, philox_set(3));
            evaluate(prev_);
        }
    }

    /// The factors (keep_scale or 0) of the next 4 keys of every row, into f[0..3].
    void next4(vf* f) {
        vi cur[4];
        evaluate(cur);
        if (aligned_) {
            for (int w = 0; w < 4; ++w) f[w] = dropout_factor_lanes(cur[w], threshold_, keep_);
            return;
        }
        const vi x[8] = {prev_[0], prev_[1], prev_[2], prev_[3], cur[0], cur[1], cur[2], cur[3]};
        for (int w = 0; w < 4; ++w) {  // word off + w of the two blocks, per lane
            const vi bits = lanes_blend(off3_, lanes_blend(off2_, lanes_blend(off1_, x[w], x[w + 1]), x[w + 2]), x[w + 3]);
            f[w] = dropout_factor_lanes(bits, threshold_, keep_);
        }
        for (int w = 0; w < 4; ++w) prev_[w] = cur[w];
    }

private:
    void evaluate(vi (&c)[4]) {
        c[0] = lo_, c[1] = hi_, c[2] = ctr2_, c[3] = ctr3_;
        philox_rounds(c[0], c[1], c[2], c[3], keys_);
        philox_increment(lo_, hi_);
    }

    PhiloxRoundKeys keys_;
    vi ctr2_, ctr3_, threshold_;
    vf keep_;
    vi lo_, hi_;  // the next block's counter per lane
    vi prev_[4] = {};
    lane_mask off1_{}, off2_{}, off3_{};
    bool aligned_ = true;
};

/// The factors of the 64 stream elements from e into out[64] (one query row's keys of a backward
/// tile): 16 blocks in lanes, put in element order in registers; a 17th block when e % 4 != 0.
inline void attn8_dropout_factors64(const AttentionDropout8& drop, const PhiloxRoundKeys& keys, std::uint64_t e, float* out) {
    const vi threshold = philox_set(drop.threshold);
    const vf keep = vset(drop.keep_scale);
    vi words[64 / W];
    philox_blocks16_in_order(drop.stream, keys, e >> 2, words);
    const int skip = static_cast<int>(e & 3);
    if (skip == 0) {
        for (int n = 0; n < 64 / W; ++n) vstore(out + n * W, dropout_factor_lanes(words[n], threshold, keep));
        return;
    }
    alignas(64) std::uint32_t bits[68 + W];  // the 16 blocks, the 17th, and room for the last load
    for (int n = 0; n < 64 / W; ++n) philox_store(bits + n * W, words[n]);
    std::uint32_t last[4];
    drop.stream.block((e >> 2) + 16, last);
    std::copy(last, last + 4, bits + 64);
    for (int c = 0; c < 64; c += W) vstore(out + c, dropout_factor_lanes(philox_load(bits + skip + c), threshold, keep));
}

// =================================================================================================
// Attention at head width 8 (float). Keys and values of one (batch item, kv head) come packed and
// transposed in tiles of 16 keys (AttentionPack8, attn8_keys), padded with zeros to tkpad (a
// multiple of 16). Scores are s = Σ_e (scale·log2 e·q_e)·K[e], 8 multiply-adds in the order
// e = 0..7; the forward keeps W query rows in lanes and broadcasts each key, the backward keeps W
// keys in lanes and broadcasts each query.

/// How far (in base 2) a score may pass its row's reference maximum before the sums are rescaled:
/// p stays below 2^8, far from overflow, and the common step needs no maximum update.
inline constexpr float attn8_rescale_margin = 8.0f;

/// NK keys from j against W query rows in lanes (attn8_forward_rows): the online softmax's sums
/// (acc, l) and maxima (m) per lane. With Drop, key j + t's probabilities enter P·V times the
/// dropout factors f[t]; the sum l takes them undropped.
template <int NK, bool Drop>
inline void attn8_forward_keys(const AttentionPack8& kv, index_t j, const vf (&qt)[8], vf (&acc)[8], vf& l, vf& m,
                               [[maybe_unused]] const vf* f) {
    const float* kj[NK];
    vf s[NK];
    for (int t = 0; t < NK; ++t) {
        kj[t] = attn8_keys(kv, j + t);
        s[t] = vmul(qt[0], vset(kj[t][0]));
    }
    for (int e = 1; e < 8; ++e)
        for (int t = 0; t < NK; ++t) s[t] = vfma(qt[e], vset(kj[t][16 * e]), s[t]);
    vf mx = s[0];
    for (int t = 1; t < NK; ++t) mx = vmax(mx, s[t]);
    if (vany_greater(mx, vadd(m, vset(attn8_rescale_margin)))) {  // rare after the first keys (m = −inf)
        const vf mn = vmax(m, mx);
        const vf corr = vexp2_softmax(vsub(m, mn));  // about 1e-38 on the first keys, against sums of 0
        for (int e = 0; e < 8; ++e) acc[e] = vmul(acc[e], corr);
        l = vmul(l, corr);
        m = mn;
    }
    for (int t = 0; t < NK; ++t) {
        const vf p = vexp2_softmax(vsub(s[t], m));
        l = vadd(l, p);
        vf pd = p;
        if constexpr (Drop) pd = vmul(p, f[t]);
        for (int e = 0; e < 8; ++e) acc[e] = vfma(pd, vset(kj[t][128 + 16 * e]), acc[e]);
    }
}

inline constexpr int attn8_forward_keys_per_step = 16;  // independent score chains per step (2, 4, 8, 32 were slower)

/// O and LSE of `rows` query rows of one head: q row r at q + r·ldq (8 floats), o likewise; lse[r]
/// (natural log; the sweep keeps scores and maxima in base 2). The queries lie in vector lanes (W
/// rows at a time, transposed once); each key's 16 entries are broadcast operands, so the
/// accumulators of P·V, the sums and the maxima are per lane: no horizontal operation in the loop.
/// With Drop, row r's key j is dropout stream element row0 + r·tk + j.
template <bool Drop>
inline void attn8_forward_rows_impl(const AttentionPack8& kv, const float* q, index_t ldq, index_t rows, float scale, float* o,
                                    index_t ldo, float* lse, const AttentionDropout8* drop, std::uint64_t row0) {
    const float scale2 = scale * 1.44269504088896341f;
    constexpr int NK = attn8_forward_keys_per_step;
    for (index_t r0 = 0; r0 < rows; r0 += W) {
        const index_t n = std::min<index_t>(W, rows - r0);
        alignas(64) float buf[8 * W] = {};
        for (index_t r = 0; r < n; ++r)
            for (int e = 0; e < 8; ++e) buf[e * W + r] = scale2 * q[(r0 + r) * ldq + e];
        vf qt[8], acc[8];
        for (int e = 0; e < 8; ++e) qt[e] = vload(buf + e * W), acc[e] = vzero();
        vf l = vzero(), m = vset(-std::numeric_limits<float>::infinity());
        index_t j = 0;
        if constexpr (Drop) {
            Attn8RowDropout masks(*drop, row0 + static_cast<std::uint64_t>(r0) * static_cast<std::uint64_t>(kv.tk), kv.tk);
            vf f[NK];
            for (; j + NK <= kv.tk; j += NK) {
                for (int t = 0; t < NK; t += 4) masks.next4(f + t);
                attn8_forward_keys<NK, true>(kv, j, qt, acc, l, m, f);
            }
            for (; j < kv.tk; ++j) {  // j starts a multiple of 4
                if ((j & 3) == 0) masks.next4(f);
                attn8_forward_keys<1, true>(kv, j, qt, acc, l, m, f + (j & 3));
            }
        } else {
            for (; j + NK <= kv.tk; j += NK) attn8_forward_keys<NK, false>(kv, j, qt, acc, l, m, nullptr);
            for (; j < kv.tk; ++j) attn8_forward_keys<1, false>(kv, j, qt, acc, l, m, nullptr);
        }
        for (int e = 0; e < 8; ++e) vstore(buf + e * W, vdiv(acc[e], l));
        alignas(64) float lb[W], mb[W];
        vstore(lb, l);
        vstore(mb, m);
        for (index_t r = 0; r < n; ++r) {
            for (int e = 0; e < 8; ++e) o[(r0 + r) * ldo + e] = buf[e * W + r];
            lse[r0 + r] = (mb[r] + std::log2(lb[r])) * 0.693147180559945309f;
        }
    }
}

/// attn8_forward_rows_impl, with dropout when drop is not null.
inline void attn8_forward_rows(const AttentionPack8& kv, const float* q, index_t ldq, index_t rows, float scale, float* o, index_t ldo,
                               float* lse, const AttentionDropout8* drop, std::uint64_t row0) {
    if (drop)
        attn8_forward_rows_impl<true>(kv, q, ldq, rows, scale, o, ldo, lse, drop, row0);
    else
        attn8_forward_rows_impl<false>(kv, q, ldq, rows, scale, o, ldo, lse, nullptr, 0);
}

/// dq rows of QR queries from a tile of dS (row r at tile + r·64, its first nkeys entries) and the
/// keys' rows (8 floats each, krows + j·ldk): one 256-bit FMA per (query, key), ADDED into dqp [QR][8].
template <int QR>
inline void attn8_dq_from_tile(const float* tile, index_t nkeys, const float* krows, index_t ldk, float* dqp) {
    __m256 acc[QR];
    for (int r = 0; r < QR; ++r) acc[r] = _mm256_loadu_ps(dqp + r * 8);
    for (index_t j = 0; j < nkeys; ++j) {
        const __m256 kr = _mm256_loadu_ps(krows + j * ldk);
        for (int r = 0; r < QR; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(tile + r * 64 + j), kr, acc[r]);
    }
    for (int r = 0; r < QR; ++r) _mm256_storeu_ps(dqp + r * 8, acc[r]);
}

/// NQ consecutive queries (from i) against one vector of keys (K rows at kt + 16·e, V rows at
/// kt + 128 + 16·e): dS into ds_row (query i + n at ds_row + 64·n), dK and dV ADDED into the
/// registers dk, dv. The NQ queries share each load of K and V. With Drop, the dropout factors lie
/// at mask_row like dS: dP = factor·(dO·V) and dV takes the dropped P.
template <int NQ, bool Drop>
inline void attn8_tile_queries(const float* kt, const float* qs, const float* gs, const float* neg_lse, const float* neg_dc, index_t i,
                               float* ds_row, [[maybe_unused]] const float* mask_row, vf (&dk)[8], vf (&dv)[8]) {
    vf s[NQ], dp[NQ];
    for (int n = 0; n < NQ; ++n) s[n] = vset(neg_lse[i + n]), dp[n] = Drop ? vzero() : vset(neg_dc[i + n]);  // s − lse, dP − dc from the start
    for (int e = 0; e < 8; ++e) {
        const vf k = vload(kt + 16 * e);
        for (int n = 0; n < NQ; ++n) s[n] = vfma(vset(qs[(i + n) * 8 + e]), k, s[n]);
    }
    vf p[NQ];
    for (int n = 0; n < NQ; ++n) p[n] = vexp2_softmax(s[n]);
    for (int e = 0; e < 8; ++e) {
        const vf v = vload(kt + 128 + 16 * e);
        for (int n = 0; n < NQ; ++n) dp[n] = vfma(vset(gs[(i + n) * 8 + e]), v, dp[n]);
    }
    for (int n = 0; n < NQ; ++n) {
        vf pd = p[n];
        if constexpr (Drop) {
            const vf f = vload(mask_row + 64 * n);
            dp[n] = vfma(dp[n], f, vset(neg_dc[i + n]));
            pd = vmul(p[n], f);
        }
        const vf ds = vmul(p[n], dp[n]);
        vstore(ds_row + 64 * n, ds);
        const float* qi = qs + (i + n) * 8;
        const float* gi = gs + (i + n) * 8;
        for (int e = 0; e < 8; ++e) {
            dv[e] = vfma(pd, vset(gi[e]), dv[e]);
            dk[e] = vfma(ds, vset(qi[e]), dk[e]);
        }
    }
}

/// The backward of one tile in one sweep of the scores: keys [j0, j0 + nkeys) (j0 a multiple of 64,
/// nkeys <= 64) against the queries [i0, i1) (at most 64) of one head. dK, dV are ADDED into dkt/dvt
/// [8][64] (e-major, key j0 + c at column c); Σ_j dS_ij K_j is ADDED into dqp [tq][8] (the caller
/// scales it). qs: the head's queries times scale·log2 e, packed [tq][8] (so dK comes out times
/// log2 e); gs: its dO [tq][8]; neg_lse: −(the LSE in base 2), neg_dc: −(D − c) [tq]; krows: the keys'
/// rows (key j0 at krows). dS = P·(dP − D + c) goes through ds_tile [64][64] once per key vector,
/// and dQ reads it back a row of queries at a time. With Drop, (query i, key j0) is dropout stream
/// element first + (i − i0)·tk, and the tile's factors go through mask_tile [64][64] first.
template <bool Drop>
inline void attn8_backward_tile_impl(const AttentionPack8& kv, index_t j0, index_t nkeys, const float* krows, index_t ldk, const float* qs,
                                     const float* gs, const float* neg_lse, const float* neg_dc, index_t i0, index_t i1, float* dkt,
                                     float* dvt, float* dqp, float* ds_tile, const AttentionDropout8* drop, std::uint64_t first,
                                     float* mask_tile) {
    if constexpr (Drop) {
        const PhiloxRoundKeys keys(drop->stream);
        for (index_t i = i0; i < i1; ++i)
            attn8_dropout_factors64(*drop, keys, first + static_cast<std::uint64_t>(i - i0) * static_cast<std::uint64_t>(kv.tk),
                                    mask_tile + (i - i0) * 64);
    }
    for (index_t c = 0; c * W < nkeys; ++c) {
        const index_t j = j0 + c * W;
        const float* kt = attn8_keys(kv, j);
        vf dk[8], dv[8];
        for (int e = 0; e < 8; ++e) {
            dk[e] = vload(dkt + e * 64 + c * W);
            dv[e] = vload(dvt + e * 64 + c * W);
        }
        float* ds_col = ds_tile + c * W;
        const float* mask_col = Drop ? mask_tile + c * W : nullptr;
        index_t i = i0;
        for (; i + 4 <= i1; i += 4)
            attn8_tile_queries<4, Drop>(kt, qs, gs, neg_lse, neg_dc, i, ds_col + (i - i0) * 64, Drop ? mask_col + (i - i0) * 64 : nullptr, dk, dv);
        for (; i < i1; ++i)
            attn8_tile_queries<1, Drop>(kt, qs, gs, neg_lse, neg_dc, i, ds_col + (i - i0) * 64, Drop ? mask_col + (i - i0) * 64 : nullptr, dk, dv);
        for (int e = 0; e < 8; ++e) {
            vstore(dkt + e * 64 + c * W, dk[e]);
            vstore(dvt + e * 64 + c * W, dv[e]);
        }
    }
    constexpr int QR = 8;  // accumulators: without AVX-512VL, 256-bit code has 16 registers in either set
    const index_t rows = i1 - i0;
    index_t r = 0;
    for (; r + QR <= rows; r += QR) attn8_dq_from_tile<QR>(ds_tile + r * 64, nkeys, krows, ldk, dqp + (i0 + r) * 8);
    for (; r < rows; ++r) attn8_dq_from_tile<1>(ds_tile + r * 64, nkeys, krows, ldk, dqp + (i0 + r) * 8);
}

/// attn8_backward_tile_impl, with dropout when drop is not null.
inline void attn8_backward_tile(const AttentionPack8& kv, index_t j0, index_t nkeys, const float* krows, index_t ldk, const float* qs,
                                const float* gs, const float* neg_lse, const float* neg_dc, index_t i0, index_t i1, float* dkt, float* dvt,
                                float* dqp, float* ds_tile, const AttentionDropout8* drop, std::uint64_t first, float* mask_tile) {
    if (drop)
        attn8_backward_tile_impl<true>(kv, j0, nkeys, krows, ldk, qs, gs, neg_lse, neg_dc, i0, i1, dkt, dvt, dqp, ds_tile, drop, first,
                                       mask_tile);
    else
        attn8_backward_tile_impl<false>(kv, j0, nkeys, krows, ldk, qs, gs, neg_lse, neg_dc, i0, i1, dkt, dvt, dqp, ds_tile, nullptr, 0,
                                        nullptr);
}


// =================================================================================================
// The dense Type I block's attention (DenseAttentionRows): a block of gene rows of one sample, the
// genes in vector lanes, against the sample's few keys. Per lane the arithmetic is the ragged
// kernels': scores Σ_c (q_c/√8)·k_c, softmax over the keys, the output Σ_{h,j} p_hj·U[j, h].

/// The scores of the lanes [v, v + W) against key j in head h: Σ_c (q_c/√8)·k_c, the same arithmetic
/// in the forward and in the backward's recomputation.
inline vf dense_head_score(const DenseAttentionRows& a, index_t h, index_t j, index_t v) {
    const float* k = a.keys + j * a.key_stride + h * 8;
    const float* qt = a.qt + (h * 8) * a.ld + v;
    vf sc = vmul(vload(qt), vset(k[0]));
    for (int c = 1; c < 8; ++c) sc = vfma(vload(qt + c * a.ld), vset(k[c]), sc);
    return sc;
}

/// x[i] += Σ_{h,j} P_hj(i)·U[j, h] for each row i < rows; m, l [heads][ld]: each row's maximum score
/// and Σ exp(s − m) per head (the caller forms the LSE); p: scratch of heads·tk·ld floats.
inline void dense_attention_forward_rows(const DenseAttentionRows& a, float* x, float* m, float* l, float* p) {
    const index_t ld = a.ld, tk = a.tk, d = a.d;
    for (index_t h = 0; h < a.heads; ++h) {
        float* ph = p + h * tk * ld;
        for (index_t v = 0; v < ld; v += W) {
            vf mx = vset(-std::numeric_limits<float>::infinity());
            for (index_t j = 0; j < tk; ++j) {
                const vf sc = dense_head_score(a, h, j, v);
                vstore(ph + j * ld + v, sc);
                mx = vmax(mx, sc);
            }
            vf sum = vzero();
            for (index_t j = 0; j < tk; ++j) {
                const vf e = vexp(vsub(vload(ph + j * ld + v), mx));
                vstore(ph + j * ld + v, e);
                sum = vadd(sum, e);
            }
            for (index_t j = 0; j < tk; ++j) vstore(ph + j * ld + v, vdiv(vload(ph + j * ld + v), sum));
            vstore(m + h * ld + v, mx);
            vstore(l + h * ld + v, sum);
        }
    }
    for (index_t i = 0; i < a.rows; ++i) {
        float* xr = x + i * d;
        for (index_t o = 0; o < d; o += 4 * W) {
            vf acc[4];
            for (int t = 0; t < 4; ++t) acc[t] = vload(xr + o + t * W);
            for (index_t h = 0; h < a.heads; ++h)
                for (index_t j = 0; j < tk; ++j) {
                    const vf pv = vset(p[(h * tk + j) * ld + i]);
                    const float* u = a.u + (j * a.heads + h) * d + o;
                    for (int t = 0; t < 4; ++t) acc[t] = vfma(pv, vload(u + t * W), acc[t]);
                }
            for (int t = 0; t < 4; ++t) vstore(xr + o + t * W, acc[t]);
        }
    }
}

/// The backward of dense_attention_forward_rows for one sample, given da [rows][d] (the gradient of
/// the attention output), dat = daᵀ [d][ld] and lset [heads][ld] (the forward's LSE, 0 past rows):
/// ADDS Σ_j dS_ij k_j into dqt [d][ld] (dS without the 1/√8: the caller scales), P·da into du
/// [tk][heads][d] and dSᵀ·(q/√8) into key j's dk row (dk + j·dk_stride). scratch: 2·tk·ld floats.
inline void dense_attention_backward_rows(const DenseAttentionRows& a, const float* da, const float* dat, const float* lset, float* dqt,
                                          float* du, float* dk, index_t dk_stride, float* scratch) {
    const index_t ld = a.ld, tk = a.tk, d = a.d;
    float* P = scratch;
    float* DS = scratch + tk * ld;
    for (index_t h = 0; h < a.heads; ++h) {
        for (index_t v = 0; v < ld; v += W) {
            const vf lv = vload(lset + h * ld + v);
            vf D = vzero();
            for (index_t j = 0; j < tk; ++j) {
                const vf pj = vexp(vsub(dense_head_score(a, h, j, v), lv));
                const float* u = a.u + (j * a.heads + h) * d;
                vf g0 = vzero(), g1 = vzero();  // dP = da·U[j, h], two chains
                for (index_t o = 0; o < d; o += 2) {
                    g0 = vfma(vload(dat + o * ld + v), vset(u[o]), g0);
                    g1 = vfma(vload(dat + (o + 1) * ld + v), vset(u[o + 1]), g1);
                }
                const vf g = vadd(g0, g1);
                vstore(P + j * ld + v, pj);
                vstore(DS + j * ld + v, g);
                D = vfma(pj, g, D);
            }
            for (index_t j = 0; j < tk; ++j) vstore(DS + j * ld + v, vmul(vload(P + j * ld + v), vsub(vload(DS + j * ld + v), D)));
            for (int c = 0; c < 8; ++c) {
                float* q = dqt + (h * 8 + c) * ld + v;
                vf acc = vload(q);
                for (index_t j = 0; j < tk; ++j) acc = vfma(vload(DS + j * ld + v), vset(a.keys[j * a.key_stride + h * 8 + c]), acc);
                vstore(q, acc);
            }
        }
        for (index_t j = 0; j < tk; ++j) {
            float* duj = du + (j * a.heads + h) * d;
            for (index_t o = 0; o < d; o += 4 * W) {
                vf acc[4];
                for (int t = 0; t < 4; ++t) acc[t] = vload(duj + o + t * W);
                for (index_t i = 0; i < a.rows; ++i) {
                    const vf pv = vset(P[j * ld + i]);
                    for (int t = 0; t < 4; ++t) acc[t] = vfma(pv, vload(da + i * d + o + t * W), acc[t]);
                }
                for (int t = 0; t < 4; ++t) vstore(duj + o + t * W, acc[t]);
            }
            float* dkj = dk + j * dk_stride + h * 8;
            for (int c = 0; c < 8; ++c) {
                vf acc = vzero();
                for (index_t v = 0; v < ld; v += W) acc = vfma(vload(DS + j * ld + v), vload(a.qt + (h * 8 + c) * ld + v), acc);
                dkj[c] += vhsum(acc);
            }
        }
    }
}


} // namespace celltx::cpu_detail::CELLTX_SIMD_NS
