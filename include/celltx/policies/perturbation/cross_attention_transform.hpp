#pragma once
// CrossAttentionTransform: the CGT Type I perturbation transform (spec "Type I"; cgt_ref.py
// PerturbationTransform), computing only the rows of H_pert the readouts ask for.
// For each sample b and each requested gene row h_g:
//   a = CrossAttn(h_g; keys = values = H_genes[S_b])   (nn.MultiheadAttention math, packed in_proj)
//   x = LN1(h_g + Dropout(a));   H_pert[b, g] = LN2(x + Dropout(FFN(x)))
// S_b keeps duplicates (a gene listed twice is two keys); an empty S_b gives a = 0 exactly (no
// out_proj bias), LN1/FFN/LN2 still apply.
//  - module<T,B>(cfg): width cfg.d_model, cfg.pert_heads heads, dropout cfg.dropout;
//  - forward(H_genes [N,d], batch, need, sets, ctx) -> PerturbedRows (layout of PerturbedRows::layout);
//    keys/values are projected once per distinct perturbed gene, queries only for the requested
//    rows, every Linear/LayerNorm runs as one GEMM/pass over the concatenated ragged rows;
//  - backward(dRows, dH_genes) ASSIGNS parameter gradients and ADDS into dH_genes, through the
//    query/residual rows and through the key/value rows (empty dH_genes: no input gradient);
//  - names perturbation_transform.{cross_attn.{in_proj_weight,in_proj_bias,out_proj.*},ffn.0,ffn.3,norm1,norm2}.*
// Memory: O(rows·d), never B·N·N: forward keeps about 10 values per computed row and feature (the
// FFN's 4d-wide hidden layer only as its pre-activation; GELU and its dropout are recomputed in
// backward); the all-rows path is therefore O(B·N·d). Dropout masks are addressed by
// (sample, gene, element), not by row position, so a row gets the same mask whichever other rows
// are computed: the sparse and the all-rows paths agree also in training.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>
#include "celltx/backend/cpu/activation.hpp"
#include "celltx/backend/cpu/parallel.hpp"
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbation_batch.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

namespace perturbation_detail {

/// Keep factor (0 or 1/(1−p)) of element `index` in `rng`: kept iff uniform > p, as nn::Dropout.
template <class T>
struct RowMask {
    CounterRng rng;
    double p = 0.0;
    T scale = T(1);
    std::uint64_t cached = ~std::uint64_t{0};
    std::array<std::uint32_t, 4> bits{};

    T operator()(std::uint64_t index) {
        if ((index >> 2) != cached) {
            cached = index >> 2;
            bits = rng.bits(cached);
        }
        return uint_to_unit(bits[index & 3]) > p ? scale : T(0);
    }
};

} // namespace perturbation_detail

struct CrossAttentionTransform {
    static constexpr const char* name = "CrossAttentionTransform";

    template <Scalar T, Backend B = cpu>
    class module {
        static_assert(!B::is_device, "CrossAttentionTransform: only the CPU backend is implemented");

    public:
        module() = default;
        explicit module(const CgtConfig& cfg)
            : in_proj_weight(Shape{3 * cfg.d_model, cfg.d_model}),
              in_proj_bias(Shape{3 * cfg.d_model}),
              out_proj(cfg.d_model, cfg.d_model),
              ffn0(cfg.d_model, 4 * cfg.d_model),
              ffn3(4 * cfg.d_model, cfg.d_model),
              norm1(cfg.d_model),
              norm2(cfg.d_model),
              d_(cfg.d_model),
              heads_(cfg.pert_heads),
              p_(cfg.dropout) {
            require(cfg.d_model >= 1 && cfg.pert_heads >= 1 && cfg.d_model % cfg.pert_heads == 0,
                    "CrossAttentionTransform: d_model {} is not a positive multiple of pert_heads {}", cfg.d_model, cfg.pert_heads);
            require(cfg.dropout >= 0.0 && cfg.dropout < 1.0, "CrossAttentionTransform: dropout {} is outside [0, 1)", cfg.dropout);
        }

        index_t d_model() const noexcept { return d_; }
        index_t num_heads() const noexcept { return heads_; }
        double dropout() const noexcept { return p_; }

        /// cgt_ref's init: xavier_uniform in_proj_weight, zero in_proj_bias, out_proj as nn.Linear with
        /// its bias zeroed (nn.MultiheadAttention), LayerNorms (1, 0), FFN Linears as nn.Linear.
        void reset_parameters(Generator& g) {
            init::xavier_uniform(in_proj_weight.value, g, 3 * d_, d_);
            in_proj_bias.value.zero();
            out_proj.reset_parameters(g);
            out_proj.bias.value.zero();
            ffn0.reset_parameters(g);
            ffn3.reset_parameters(g);
            norm1.reset_parameters(g);
            norm2.reset_parameters(g);
        }

        /// H_genes [N, d] -> the rows of H_pert that `need` asks for.
        PerturbedRows<T, B> forward(ConstView<T, B> H, const PerturbationBatch& batch, RowNeedSet need,
                                    const GeneSetList* sets = nullptr, const Context& ctx = {}) {
            require(H.rank() == 2 && H.size(1) == d_, "CrossAttentionTransform: H_genes {} is not [N, {}]", H.shape(), d_);
            const index_t N = H.size(0), d = d_;
            batch.validate(N);
            if (need.contains(RowNeed::gene_sets)) {
                require(sets != nullptr, "CrossAttentionTransform: gene-set rows requested without a GeneSetList");
                sets->validate(N);
            }
            PerturbedRows<T, B> out = PerturbedRows<T, B>::layout(batch, N, d, need, sets);
            layout_ = out.without_values();
            num_genes_ = N;
            key_offsets_ = batch.offsets;
            const index_t R = out.rows(), Bn = out.batch;
            row_gene_.resize(static_cast<std::size_t>(R));
            for (index_t b = 0; b < Bn; ++b)
                for (index_t r = out.offsets[static_cast<std::size_t>(b)]; r < out.offsets[static_cast<std::size_t>(b) + 1]; ++r)
                    row_gene_[static_cast<std::size_t>(r)] = out.gene_of_row(b, r);

            // Distinct perturbed genes (projected once) and each set entry's slot among them.
            key_genes_ = batch.indices;
            std::sort(key_genes_.begin(), key_genes_.end());
            key_genes_.erase(std::unique(key_genes_.begin(), key_genes_.end()), key_genes_.end());
            key_slot_.resize(batch.indices.size());
            for (std::size_t e = 0; e < batch.indices.size(); ++e)
                key_slot_[e] = std::lower_bound(key_genes_.begin(), key_genes_.end(), batch.indices[e]) - key_genes_.begin();

            drop_ = ctx.training && p_ > 0.0;
            seed_ = ctx.seed;
            step_ = ctx.step;

            // Queries of the requested rows; keys and values of the distinct perturbed genes.
            hq_ = gather(H.data(), row_gene_);
            q_ = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, true, R, d, d, T(1), hq_.data(), d, in_proj_weight.value.data(), d, T(0), q_.data(), d);
            ops::add_row_vector(B{}, q_.data(), in_proj_bias.value.data(), R, d);
            hkv_ = gather(H.data(), key_genes_);
            const index_t P = static_cast<index_t>(key_genes_.size()), E = batch.total();
            Tensor<T, B> kv_unique = Tensor<T, B>::uninitialized(Shape{P, 2 * d});
            ops::gemm(B{}, false, true, P, 2 * d, d, T(1), hkv_.data(), d, in_proj_weight.value.data() + d * d, d, T(0),
                      kv_unique.data(), 2 * d);
            ops::add_row_vector(B{}, kv_unique.data(), in_proj_bias.value.data() + d, P, 2 * d);
            kv_ = Tensor<T, B>::uninitialized(Shape{E, 2 * d});  // per set entry, in batch order: [K | V]
            for (index_t e = 0; e < E; ++e)
                std::copy_n(kv_unique.data() + key_slot_[static_cast<std::size_t>(e)] * 2 * d, 2 * d, kv_.data() + e * 2 * d);

            // Attention, output projection (zero for empty sets), residual dropout.
            o_ = Tensor<T, B>::uninitialized(Shape{R, d});
            lse_ = Tensor<T, B>::uninitialized(Shape{R, heads_});
            attention_forward(out);
            Tensor<T, B> a = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, true, R, d, d, T(1), o_.data(), d, out_proj.weight.value.data(), d, T(0), a.data(), d);
            ops::add_row_vector(B{}, a.data(), out_proj.bias.value.data(), R, d);
            zero_empty_samples(a, out);
            if (drop_) apply_row_dropout(a, out, stream_attn_out);
            for (index_t i = 0; i < R * d; ++i) a[i] += hq_[i];  // h + Dropout(attn)

            Tensor<T, B> x = norm1.forward(a.cview(), ctx);
            pre_ = ffn0.forward(x.cview(), ctx);  // FFN hidden pre-activation: all the FFN keeps of width 4d
            Tensor<T, B> f = ffn3.apply(hidden(out).cview());
            if (drop_) apply_row_dropout(f, out, stream_ffn_out);
            for (index_t i = 0; i < R * d; ++i) f[i] += x[i];  // x + Dropout(FFN(x))
            out.values = norm2.forward(f.cview(), ctx);
            return out;
        }

        /// dRows: gradient w.r.t. the rows of the last forward (same layout). dH_genes [N, d] += dL/dH_genes.
        void backward(const PerturbedRows<T, B>& dRows, TensorView<T, B> dH) {
            require(dRows.same_layout(layout_), "CrossAttentionTransform::backward: dRows does not have the layout of the last forward");
            const index_t R = layout_.rows(), d = d_;
            require(dRows.values.shape() == (Shape{R, d}), "CrossAttentionTransform::backward: dRows.values {} is not [{}, {}]",
                    dRows.values.shape(), R, d);
            if (dH.data())
                require(dH.shape() == (Shape{num_genes_, d}), "CrossAttentionTransform::backward: dH_genes {} is not [{}, {}]", dH.shape(),
                        num_genes_, d);

            Tensor<T, B> dx(Shape{R, d});
            norm2.backward(dRows.values.cview(), dx.view());
            {
                Tensor<T, B> df = dx;  // dx keeps the residual branch
                if (drop_) apply_row_dropout(df, layout_, stream_ffn_out);
                // ffn.3 from the recomputed hidden activation g: dW = dfᵀ g, db = Σ df; then dg = df W into g's buffer.
                Tensor<T, B> g = hidden(layout_);
                ops::gemm(B{}, true, false, d, 4 * d, R, T(1), df.data(), d, g.data(), 4 * d, T(0), ffn3.weight.grad.data(), 4 * d);
                ops::column_sum(B{}, df.data(), R, d, ffn3.bias.grad.data());
                ops::gemm(B{}, false, false, R, 4 * d, d, T(1), df.data(), d, ffn3.weight.value.data(), 4 * d, T(0), g.data(), 4 * d);
                if (drop_) apply_row_dropout(g, layout_, stream_ffn_hidden);
                const T* pre = pre_.data();
                T* dg = g.data();
                cpu_detail::for_blocks(g.numel(), [&](index_t b0, index_t e0) {
                    for (index_t i = b0; i < e0; ++i) dg[i] *= cpu_detail::Gelu<T>::derivative(pre[i]);
                });
                ffn0.backward(g.cview(), dx.view());
            }
            Tensor<T, B> dr1(Shape{R, d});
            norm1.backward(dx.cview(), dr1.view());
            Tensor<T, B> dhq = dr1;  // residual branch: gradient w.r.t. the query rows h_g
            if (drop_) apply_row_dropout(dr1, layout_, stream_attn_out);
            zero_empty_samples(dr1, layout_);  // the attention output of an empty set is a constant

            // out_proj: dW = dAᵀ O, db = Σ dA (assigned); dO = dA W.
            ops::gemm(B{}, true, false, d, d, R, T(1), dr1.data(), d, o_.data(), d, T(0), out_proj.weight.grad.data(), d);
            ops::column_sum(B{}, dr1.data(), R, d, out_proj.bias.grad.data());
            Tensor<T, B> dO = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, false, R, d, d, T(1), dr1.data(), d, out_proj.weight.value.data(), d, T(0), dO.data(), d);

            const index_t E = static_cast<index_t>(key_slot_.size()), P = static_cast<index_t>(key_genes_.size());
            Tensor<T, B> dq(Shape{R, d}), dkv(Shape{E, 2 * d});
            attention_backward(dO, dq, dkv);

            // Query projection: dWq = dQᵀ h, dbq = Σ dQ; dh += dQ Wq.
            T* gw = in_proj_weight.grad.data();
            T* gb = in_proj_bias.grad.data();
            ops::gemm(B{}, true, false, d, d, R, T(1), dq.data(), d, hq_.data(), d, T(0), gw, d);
            ops::column_sum(B{}, dq.data(), R, d, gb);
            ops::gemm(B{}, false, false, R, d, d, T(1), dq.data(), d, in_proj_weight.value.data(), d, T(1), dhq.data(), d);
            // Key/value projection of the distinct genes: sum the set entries' gradients per gene first.
            Tensor<T, B> dkv_unique(Shape{P, 2 * d});
            for (index_t e = 0; e < E; ++e) {
                T* dst = dkv_unique.data() + key_slot_[static_cast<std::size_t>(e)] * 2 * d;
                const T* src = dkv.data() + e * 2 * d;
                for (index_t c = 0; c < 2 * d; ++c) dst[c] += src[c];
            }
            ops::gemm(B{}, true, false, 2 * d, d, P, T(1), dkv_unique.data(), 2 * d, hkv_.data(), d, T(0), gw + d * d, d);
            ops::column_sum(B{}, dkv_unique.data(), P, 2 * d, gb + d);
            if (!dH.data()) return;
            Tensor<T, B> dhkv = Tensor<T, B>::uninitialized(Shape{P, d});
            ops::gemm(B{}, false, false, P, d, 2 * d, T(1), dkv_unique.data(), 2 * d, in_proj_weight.value.data() + d * d, d, T(0),
                      dhkv.data(), d);
            scatter_add(dhq, row_gene_, dH);
            scatter_add(dhkv, key_genes_, dH);
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            const std::string p = join_name(prefix, "perturbation_transform.");
            f(p + "cross_attn.in_proj_weight", in_proj_weight);
            f(p + "cross_attn.in_proj_bias", in_proj_bias);
            out_proj.visit_parameters(f, p + "cross_attn.out_proj.");
            ffn0.visit_parameters(f, p + "ffn.0.");
            ffn3.visit_parameters(f, p + "ffn.3.");
            norm1.visit_parameters(f, p + "norm1.");
            norm2.visit_parameters(f, p + "norm2.");
        }

        Parameter<T, B> in_proj_weight, in_proj_bias;  ///< packed [Wq; Wk; Wv] [3d, d] and [bq; bk; bv]
        nn::Linear<T, B> out_proj, ffn0, ffn3;
        nn::LayerNorm<T, B> norm1, norm2;

    private:
        // Dropout streams: attention probabilities, attention output, FFN hidden, FFN output.
        static constexpr std::uint64_t stream_probs = 0x7065727431ull, stream_attn_out = 0x7065727432ull,
                                       stream_ffn_hidden = 0x7065727433ull, stream_ffn_out = 0x7065727434ull;

        /// parallel_for's threshold for `tasks` tasks doing `work` multiply-adds in all: below about
        /// 2^17 a parallel region costs more than it saves (and far more on a loaded machine).
        static index_t min_parallel(index_t tasks, double work) { return work < 131072.0 ? tasks + 1 : 2; }
        /// Multiply-adds of the attention over the computed rows.
        double attention_work(const PerturbedRows<T, B>& rows) const {
            double w = 0.0;
            for (index_t b = 0; b < rows.batch; ++b)
                w += static_cast<double>(rows.rows(b)) *
                     static_cast<double>(key_offsets_[static_cast<std::size_t>(b) + 1] - key_offsets_[static_cast<std::size_t>(b)]);
            return w * static_cast<double>(d_);
        }

        /// The mask stream of sample b: independent of which rows are computed.
        CounterRng sample_rng(std::uint64_t stream, index_t b) const {
            return CounterRng(seed_, stream).substream(step_).substream(static_cast<std::uint64_t>(b));
        }

        Tensor<T, B> gather(const T* H, const std::vector<index_t>& genes) const {
            const index_t n = static_cast<index_t>(genes.size());
            Tensor<T, B> out = Tensor<T, B>::uninitialized(Shape{n, d_});
            cpu_detail::parallel_for(n, [&](index_t r) { std::copy_n(H + genes[static_cast<std::size_t>(r)] * d_, d_, out.data() + r * d_); },
                                     n * d_ < 65536 ? n + 1 : 2);
            return out;
        }
        /// dH[genes[r]] += src[r]; serial, so the summation order is fixed.
        void scatter_add(const Tensor<T, B>& src, const std::vector<index_t>& genes, TensorView<T, B> dH) const {
            for (std::size_t r = 0; r < genes.size(); ++r) {
                T* dst = dH.data() + genes[r] * d_;
                const T* s = src.data() + static_cast<index_t>(r) * d_;
                for (index_t c = 0; c < d_; ++c) dst[c] += s[c];
            }
        }
        /// The FFN's hidden activation Dropout(GELU(pre)) of the computed rows, recomputed from pre_.
        Tensor<T, B> hidden(const PerturbedRows<T, B>& rows) const {
            Tensor<T, B> g = Tensor<T, B>::uninitialized(pre_.shape());
            ops::activation_forward(B{}, ActivationKind::gelu, pre_.data(), g.data(), pre_.numel());
            if (drop_) apply_row_dropout(g, rows, stream_ffn_hidden);
            return g;
        }
        void zero_empty_samples(Tensor<T, B>& a, const PerturbedRows<T, B>& rows) const {
            for (index_t b = 0; b < rows.batch; ++b)
                if (key_offsets_[static_cast<std::size_t>(b) + 1] == key_offsets_[static_cast<std::size_t>(b)])
                    std::fill(a.data() + rows.offsets[static_cast<std::size_t>(b)] * d_,
                              a.data() + rows.offsets[static_cast<std::size_t>(b) + 1] * d_, T(0));
        }
        /// Row-addressed dropout of a [rows, w] tensor: element c of row (b, g) draws counter g·w + c
        /// of sample b's stream; x *= mask (the forward, and the backward of the gradient alike).
        void apply_row_dropout(Tensor<T, B>& x, const PerturbedRows<T, B>& rows, std::uint64_t stream) const {
            const index_t w = x.shape().last();
            const T scale = static_cast<T>(1.0 / (1.0 - p_));
            cpu_detail::parallel_for(rows.batch, [&](index_t b) {
                perturbation_detail::RowMask<T> mask{sample_rng(stream, b), p_, scale};
                for (index_t r = rows.offsets[static_cast<std::size_t>(b)]; r < rows.offsets[static_cast<std::size_t>(b) + 1]; ++r) {
                    const std::uint64_t base = static_cast<std::uint64_t>(row_gene_[static_cast<std::size_t>(r)] * w);
                    T* xr = x.data() + r * w;
                    for (index_t c = 0; c < w; ++c) xr[c] *= mask(base + static_cast<std::uint64_t>(c));
                }
            }, min_parallel(rows.batch, static_cast<double>(x.numel()) * 8.0));
        }

        /// Ragged cross-attention, one row at a time against its sample's few keys: O [R, d] and the
        /// log-sum-exp LSE [R, heads] of each score row (before dropout).
        void attention_forward(const PerturbedRows<T, B>& rows) {
            const index_t d = d_, H = heads_, dh = d / H;
            const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
            const T keep = static_cast<T>(1.0 / (1.0 - p_));
            cpu_detail::parallel_for(rows.batch, [&](index_t b) {
                const index_t k0 = key_offsets_[static_cast<std::size_t>(b)], tk = key_offsets_[static_cast<std::size_t>(b) + 1] - k0;
                perturbation_detail::RowMask<T> mask{sample_rng(stream_probs, b), p_, keep};
                std::vector<T> s(static_cast<std::size_t>(tk));
                for (index_t r = rows.offsets[static_cast<std::size_t>(b)]; r < rows.offsets[static_cast<std::size_t>(b) + 1]; ++r) {
                    T* orow = o_.data() + r * d;
                    if (tk == 0) {
                        std::fill_n(orow, d, T(0));
                        std::fill_n(lse_.data() + r * H, H, -std::numeric_limits<T>::infinity());
                        continue;
                    }
                    const std::uint64_t base = static_cast<std::uint64_t>(row_gene_[static_cast<std::size_t>(r)] * H * tk);
                    for (index_t h = 0; h < H; ++h) {
                        const T* q = q_.data() + r * d + h * dh;
                        T mx = -std::numeric_limits<T>::infinity();
                        for (index_t j = 0; j < tk; ++j) {
                            const T* k = kv_.data() + (k0 + j) * 2 * d + h * dh;
                            T acc = 0;
                            for (index_t c = 0; c < dh; ++c) acc += (scale * q[c]) * k[c];
                            s[static_cast<std::size_t>(j)] = acc;
                            mx = std::max(mx, acc);
                        }
                        T l = 0;
                        for (index_t j = 0; j < tk; ++j) l += (s[static_cast<std::size_t>(j)] = std::exp(s[static_cast<std::size_t>(j)] - mx));
                        lse_[r * H + h] = mx + std::log(l);
                        T* o = orow + h * dh;
                        std::fill_n(o, dh, T(0));
                        for (index_t j = 0; j < tk; ++j) {
                            T pj = s[static_cast<std::size_t>(j)] / l;
                            if (drop_) pj *= mask(base + static_cast<std::uint64_t>(h * tk + j));
                            const T* v = kv_.data() + (k0 + j) * 2 * d + d + h * dh;
                            for (index_t c = 0; c < dh; ++c) o[c] += pj * v[c];
                        }
                    }
                }
            }, min_parallel(rows.batch, attention_work(rows)));
        }

        /// dQ [R, d] and d[K|V] [E, 2d] (both zero on entry) from dO, recomputing P from the LSE. A
        /// task is one (sample, head): it owns that head's columns of its rows and keys, so the result
        /// does not depend on the thread count.
        void attention_backward(const Tensor<T, B>& dO, Tensor<T, B>& dq, Tensor<T, B>& dkv) const {
            const index_t d = d_, H = heads_, dh = d / H;
            const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
            const T keep = static_cast<T>(1.0 / (1.0 - p_));
            cpu_detail::parallel_for(layout_.batch * H, [&](index_t task) {
                const index_t b = task / H, h = task % H;
                const index_t k0 = key_offsets_[static_cast<std::size_t>(b)], tk = key_offsets_[static_cast<std::size_t>(b) + 1] - k0;
                if (tk == 0) return;
                perturbation_detail::RowMask<T> mask{sample_rng(stream_probs, b), p_, keep};
                std::vector<T> p(static_cast<std::size_t>(tk)), dp(static_cast<std::size_t>(tk));
                for (index_t r = layout_.offsets[static_cast<std::size_t>(b)]; r < layout_.offsets[static_cast<std::size_t>(b) + 1]; ++r) {
                    const std::uint64_t base = static_cast<std::uint64_t>(row_gene_[static_cast<std::size_t>(r)] * H * tk + h * tk);
                    const T* q = q_.data() + r * d + h * dh;
                    const T* g = dO.data() + r * d + h * dh;
                    const T lse = lse_[r * H + h];
                    T D = 0;  // Σ_j P_j·dP_j
                    for (index_t j = 0; j < tk; ++j) {
                        const T* k = kv_.data() + (k0 + j) * 2 * d + h * dh;
                        const T* v = k + d;
                        T sc = 0, gv = 0;
                        for (index_t c = 0; c < dh; ++c) {
                            sc += (scale * q[c]) * k[c];
                            gv += g[c] * v[c];
                        }
                        const T pj = std::exp(sc - lse);
                        const T m = drop_ ? mask(base + static_cast<std::uint64_t>(j)) : T(1);
                        T* dv = dkv.data() + (k0 + j) * 2 * d + d + h * dh;
                        for (index_t c = 0; c < dh; ++c) dv[c] += pj * m * g[c];
                        p[static_cast<std::size_t>(j)] = pj;
                        dp[static_cast<std::size_t>(j)] = m * gv;
                        D += pj * dp[static_cast<std::size_t>(j)];
                    }
                    T* dqr = dq.data() + r * d + h * dh;
                    for (index_t j = 0; j < tk; ++j) {
                        const T ds = p[static_cast<std::size_t>(j)] * (dp[static_cast<std::size_t>(j)] - D) * scale;
                        const T* k = kv_.data() + (k0 + j) * 2 * d + h * dh;
                        T* dk = dkv.data() + (k0 + j) * 2 * d + h * dh;
                        for (index_t c = 0; c < dh; ++c) {
                            dqr[c] += ds * k[c];
                            dk[c] += ds * q[c];
                        }
                    }
                }
            }, min_parallel(layout_.batch * H, 2.0 * attention_work(layout_)));
        }

        index_t d_ = 0, heads_ = 1;
        double p_ = 0.0;
        // Saved by forward.
        PerturbedRows<T, B> layout_;         // the rows of the last forward (values empty)
        index_t num_genes_ = 0;
        std::vector<index_t> key_offsets_;   // the batch's offsets: sample b's keys are kv_ rows [o_b, o_b+1)
        std::vector<index_t> row_gene_;      // gene of each computed row
        std::vector<index_t> key_genes_;     // distinct perturbed genes, sorted
        std::vector<index_t> key_slot_;      // slot in key_genes_ of each set entry
        bool drop_ = false;
        std::uint64_t seed_ = 0, step_ = 0;
        Tensor<T, B> hq_, q_, hkv_, kv_, o_, lse_, pre_;
    };
};

} // namespace celltx
