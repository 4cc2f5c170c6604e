#pragma once
// CrossAttentionTransform: the CGT Type I perturbation transform (docs/cell_graph_transformer.md;
// the reference's PerturbationTransform), computing only the rows of H_pert the readouts ask for.
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
// All rows without dropout (evaluation, or p = 0) run as one fused op where the backend has it
// (ops::dense_cross_attention_block_*): queries projected once per gene, and per row only the
// LSE and the two LayerNorms' statistics kept (about 2d + heads + 2 values; the hidden layer is
// recomputed in backward).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/ragged.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/policies/cgt_config.hpp"
#include "celltx/policies/perturbation/perturbed_rows.hpp"

namespace celltx {

struct CrossAttentionTransform {
    static constexpr const char* name = "CrossAttentionTransform";

    template <Scalar T, Backend B = cpu>
    class module {
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

        /// The reference's init: xavier_uniform in_proj_weight, zero in_proj_bias, out_proj as nn.Linear with
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
            batch.validate(N, "PerturbationBatch");
            if (need.contains(RowNeed::gene_sets)) {
                require(sets != nullptr, "CrossAttentionTransform: gene-set rows requested without a GeneSetList");
                sets->validate(N, "GeneSetList");
            }
            PerturbedRows<T, B> out = PerturbedRows<T, B>::layout(batch, N, d, need, sets);
            layout_ = out.without_values();
            num_genes_ = N;
            dense_ = out.all_rows && !(ctx.training && p_ > 0.0) && has_dense_block;
            kept_ = false;  // until this forward has finished
            const bool keep = ctx.keep_for_backward;
            if constexpr (has_dense_block) {
                if (dense_) {
                    forward_dense(H, batch, out);
                    if (!keep) release_activations();
                    kept_ = keep;
                    return out;
                }
            }
            plan(out, batch, ctx);
            const index_t R = out.rows();
            xhat1_ = rstd1_ = xhat2_ = rstd2_ = Tensor<T, B>();

            // Queries of the requested rows; keys and values of the distinct perturbed genes, then per set entry.
            hq_ = gather(H.data(), row_gene_, d);
            q_ = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, true, R, d, d, T(1), hq_.data(), d, in_proj_weight.value.data(), d, T(0), q_.data(), d);
            ops::add_row_vector(B{}, q_.data(), in_proj_bias.value.data(), R, d);
            project_keys(H, batch);  // kv_ [E, 2d]: [K | V] per set entry, in batch order

            // Attention, output projection (zero for empty sets), residual dropout.
            o_ = Tensor<T, B>::uninitialized(Shape{R, d});
            lse_ = Tensor<T, B>::uninitialized(Shape{R, heads_});
            ops::ragged_cross_attention_forward(B{}, attention(), q_.data(), kv_.data(), o_.data(), lse_.data());
            Tensor<T, B> a = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, true, R, d, d, T(1), o_.data(), d, out_proj.weight.value.data(), d, T(0), a.data(), d);
            ops::add_row_vector(B{}, a.data(), out_proj.bias.value.data(), R, d);
            ops::scale_rows(B{}, a.data(), R, d, has_keys_.data());
            row_dropout(a, stream_attn_out);
            ops::accumulate(B{}, hq_.data(), a.data(), R * d);  // h + Dropout(attn)

            Tensor<T, B> x = norm1.forward(a.cview(), ctx);
            pre_ = ffn0.forward(x.cview(), ctx);  // FFN hidden pre-activation: all the FFN keeps of width 4d
            Tensor<T, B> f = ffn3.apply(hidden().cview());
            row_dropout(f, stream_ffn_out);
            ops::accumulate(B{}, x.data(), f.data(), R * d);  // x + Dropout(FFN(x))
            out.values = norm2.forward(f.cview(), ctx);
            if (!keep) release_activations();
            kept_ = keep;
            return out;
        }

        /// dRows: gradient w.r.t. the rows of the last forward (same layout). dH_genes [N, d] += dL/dH_genes.
        void backward(const PerturbedRows<T, B>& dRows, TensorView<T, B> dH) {
            require(kept_, "CrossAttentionTransform::backward: {}", nothing_kept_for_backward);
            require(dRows.same_layout(layout_), "CrossAttentionTransform::backward: dRows does not have the layout of the last forward");
            const index_t R = layout_.rows(), d = d_;
            require(dRows.values.shape() == (Shape{R, d}), "CrossAttentionTransform::backward: dRows.values {} is not [{}, {}]",
                    dRows.values.shape(), R, d);
            if (dH.data())
                require(dH.shape() == (Shape{num_genes_, d}), "CrossAttentionTransform::backward: dH_genes {} is not [{}, {}]", dH.shape(),
                        num_genes_, d);
            if constexpr (has_dense_block) {
                if (dense_) {
                    backward_dense(dRows, dH);
                    return;
                }
            }

            Tensor<T, B> dx(Shape{R, d});
            norm2.backward(dRows.values.cview(), dx.view());
            {
                Tensor<T, B> df = dx;  // dx keeps the residual branch
                row_dropout(df, stream_ffn_out);
                // ffn.3 from the recomputed hidden activation g: dW = dfᵀ g, db = Σ df; then dg = df W.
                Tensor<T, B> g = hidden();
                ops::gemm(B{}, true, false, d, 4 * d, R, T(1), df.data(), d, g.data(), 4 * d, T(0), ffn3.weight.grad_for_backward().data(), 4 * d);
                ops::column_sum(B{}, df.data(), R, d, ffn3.bias.grad_for_backward().data());
                ops::gemm(B{}, false, false, R, 4 * d, d, T(1), df.data(), d, ffn3.weight.value.data(), 4 * d, T(0), g.data(), 4 * d);
                row_dropout(g, stream_ffn_hidden);
                Tensor<T, B> dpre(pre_.shape());
                ops::activation_backward(B{}, ActivationKind::gelu, pre_.data(), g.data(), dpre.data(), pre_.numel());
                ffn0.backward(dpre.cview(), dx.view());
            }
            Tensor<T, B> dr1(Shape{R, d});
            norm1.backward(dx.cview(), dr1.view());
            Tensor<T, B> dhq = dr1;  // residual branch: gradient w.r.t. the query rows h_g
            row_dropout(dr1, stream_attn_out);
            ops::scale_rows(B{}, dr1.data(), R, d, has_keys_.data());  // the attention output of an empty set is a constant

            // out_proj: dW = dAᵀ O, db = Σ dA (assigned); dO = dA W.
            ops::gemm(B{}, true, false, d, d, R, T(1), dr1.data(), d, o_.data(), d, T(0), out_proj.weight.grad_for_backward().data(), d);
            ops::column_sum(B{}, dr1.data(), R, d, out_proj.bias.grad_for_backward().data());
            Tensor<T, B> dO = Tensor<T, B>::uninitialized(Shape{R, d});
            ops::gemm(B{}, false, false, R, d, d, T(1), dr1.data(), d, out_proj.weight.value.data(), d, T(0), dO.data(), d);

            const index_t E = key_slot_.numel();
            Tensor<T, B> dq = Tensor<T, B>::uninitialized(Shape{R, d}), dkv = Tensor<T, B>::uninitialized(Shape{E, 2 * d});
            ops::ragged_cross_attention_backward(B{}, attention(), q_.data(), kv_.data(), lse_.data(), dO.data(), dq.data(), dkv.data());

            // Query projection: dWq = dQᵀ h, dbq = Σ dQ; dh += dQ Wq.
            ops::gemm(B{}, true, false, d, d, R, T(1), dq.data(), d, hq_.data(), d, T(0), in_proj_weight.grad_for_backward().data(), d);
            ops::column_sum(B{}, dq.data(), R, d, in_proj_bias.grad_for_backward().data());
            ops::gemm(B{}, false, false, R, d, d, T(1), dq.data(), d, in_proj_weight.value.data(), d, T(1), dhq.data(), d);
            if (dH.data()) ops::scatter_add_rows(B{}, dhq.data(), row_gene_.data(), R, d, dH.data());
            key_value_backward(dkv, dH);
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
        /// Whether backend B has the fused dense block (all rows, no dropout); otherwise the ragged ops run.
        static constexpr bool has_dense_block =
            ops::provides_dense_cross_attention_block_forward<B, T> && ops::provides_dense_cross_attention_block_backward<B, T>;

        /// The key/value projection's backward from dkv [set entries, 2d]: the entries' gradients summed per
        /// distinct gene, dW_{k,v} = dKVᵀ h and db_{k,v} = Σ dKV (assigned), dh += dKV W_{k,v}.
        void key_value_backward(const Tensor<T, B>& dkv, TensorView<T, B> dH) {
            const index_t d = d_, E = key_slot_.numel(), P = key_genes_.numel();
            Tensor<T, B> dkv_unique(Shape{P, 2 * d});
            ops::scatter_add_rows(B{}, dkv.data(), key_slot_.data(), E, 2 * d, dkv_unique.data());
            ops::gemm(B{}, true, false, 2 * d, d, P, T(1), dkv_unique.data(), 2 * d, hkv_.data(), d, T(0), in_proj_weight.grad_for_backward().data() + d * d, d);
            ops::column_sum(B{}, dkv_unique.data(), P, 2 * d, in_proj_bias.grad_for_backward().data() + d);
            if (!dH.data()) return;
            Tensor<T, B> dhkv = Tensor<T, B>::uninitialized(Shape{P, d});
            ops::gemm(B{}, false, false, P, d, 2 * d, T(1), dkv_unique.data(), 2 * d, in_proj_weight.value.data() + d * d, d, T(0),
                      dhkv.data(), d);
            ops::scatter_add_rows(B{}, dhkv.data(), key_genes_.data(), P, d, dH.data());
        }

        /// Projected keys and values of the distinct perturbed genes, one [K | V] row per set entry (kv_).
        void project_keys(ConstView<T, B> H, const PerturbationBatch& batch) {
            const index_t d = d_;
            std::vector<index_t> key_genes = batch.unique_indices();
            std::vector<index_t> key_slot(batch.indices.size());
            for (std::size_t e = 0; e < batch.indices.size(); ++e)
                key_slot[e] = std::lower_bound(key_genes.begin(), key_genes.end(), batch.indices[e]) - key_genes.begin();
            key_genes_ = from_host<index_t, B>(key_genes);
            key_slot_ = from_host<index_t, B>(key_slot);
            const index_t P = key_genes_.numel();
            hkv_ = gather(H.data(), key_genes_, d);
            Tensor<T, B> kv_unique = Tensor<T, B>::uninitialized(Shape{P, 2 * d});
            ops::gemm(B{}, false, true, P, 2 * d, d, T(1), hkv_.data(), d, in_proj_weight.value.data() + d * d, d, T(0), kv_unique.data(), 2 * d);
            ops::add_row_vector(B{}, kv_unique.data(), in_proj_bias.value.data() + d, P, 2 * d);
            kv_ = gather(kv_unique.data(), key_slot_, 2 * d);
        }

        /// The dense block's description.
        ops::DenseCrossAttentionBlock dense_block() const {
            ops::DenseCrossAttentionBlock a;
            a.batch = batch_;
            a.genes = num_genes_;
            a.heads = heads_;
            a.dh = d_ / heads_;
            a.ff = 4 * d_;
            a.key_offsets = key_offsets_.data();
            a.activation = ActivationKind::gelu;
            a.eps1 = norm1.eps();
            a.eps2 = norm2.eps();
            return a;
        }
        ops::DenseCrossAttentionBlockWeights<T> dense_weights() const {
            return {out_proj.weight.value.data(), out_proj.bias.value.data(), norm1.weight.value.data(), norm1.bias.value.data(),
                    ffn0.weight.value.data(),     ffn0.bias.value.data(),     ffn3.weight.value.data(),  ffn3.bias.value.data(),
                    norm2.weight.value.data(),    norm2.bias.value.data()};
        }
        ops::DenseCrossAttentionBlockSaved<T> dense_saved() {
            return {lse_.data(), xhat1_.data(), rstd1_.data(), xhat2_.data(), rstd2_.data()};
        }

        /// All rows without dropout, through the fused block: the queries are projected once per gene (every
        /// sample's row g has the same query), and the block keeps O(rows·d) for its backward.
        void forward_dense(ConstView<T, B> H, const PerturbationBatch& batch, PerturbedRows<T, B>& out) {
            const index_t N = num_genes_, d = d_, R = out.rows();
            batch_ = out.batch;
            key_offsets_ = from_host<index_t, B>(batch.offsets);
            hq_ = Tensor<T, B>::copy_of(H);
            q_ = Tensor<T, B>::uninitialized(Shape{N, d});
            ops::gemm(B{}, false, true, N, d, d, T(1), H.data(), d, in_proj_weight.value.data(), d, T(0), q_.data(), d);
            ops::add_row_vector(B{}, q_.data(), in_proj_bias.value.data(), N, d);
            project_keys(H, batch);
            lse_ = Tensor<T, B>::uninitialized(Shape{R, heads_});
            xhat1_ = Tensor<T, B>::uninitialized(Shape{R, d});
            xhat2_ = Tensor<T, B>::uninitialized(Shape{R, d});
            rstd1_ = Tensor<T, B>::uninitialized(Shape{R});
            rstd2_ = Tensor<T, B>::uninitialized(Shape{R});
            o_ = Tensor<T, B>();
            pre_ = Tensor<T, B>();
            ops::dense_cross_attention_block_forward(B{}, dense_block(), hq_.data(), q_.data(), kv_.data(), dense_weights(), out.values.data(),
                                                     dense_saved());
        }

        void backward_dense(const PerturbedRows<T, B>& dRows, TensorView<T, B> dH) {
            const index_t N = num_genes_, d = d_, E = key_slot_.numel();
            Tensor<T, B> dq = Tensor<T, B>::uninitialized(Shape{N, d}), dkv = Tensor<T, B>::uninitialized(Shape{E, 2 * d});
            Tensor<T, B> scratch;  // the residual path's gradient when the caller wants no input gradient
            if (!dH.data()) scratch = Tensor<T, B>(Shape{N, d});
            auto grad = [](Parameter<T, B>& p) { return p.grad_for_backward().data(); };
            ops::DenseCrossAttentionBlockGrads<T> g{grad(out_proj.weight), grad(out_proj.bias), grad(norm1.weight), grad(norm1.bias),
                                                   grad(ffn0.weight),     grad(ffn0.bias),     grad(ffn3.weight),  grad(ffn3.bias),
                                                   grad(norm2.weight),    grad(norm2.bias)};
            ops::dense_cross_attention_block_backward(B{}, dense_block(), hq_.data(), q_.data(), kv_.data(), dense_weights(), dense_saved(),
                                                      dRows.values.data(), dq.data(), dH.data() ? dH.data() : scratch.data(), dkv.data(), g);
            // Query projection over the genes: dWq = dQᵀ H, dbq = Σ dQ; dH += dQ Wq.
            ops::gemm(B{}, true, false, d, d, N, T(1), dq.data(), d, hq_.data(), d, T(0), in_proj_weight.grad_for_backward().data(), d);
            ops::column_sum(B{}, dq.data(), N, d, in_proj_bias.grad_for_backward().data());
            if (dH.data()) ops::gemm(B{}, false, false, N, d, d, T(1), dq.data(), d, in_proj_weight.value.data(), d, T(1), dH.data(), d);
            key_value_backward(dkv, dH);
        }

        // Dropout streams: attention probabilities, attention output, FFN hidden, FFN output.
        static constexpr std::uint64_t stream_probs = 0x7065727431ull, stream_attn_out = 0x7065727432ull,
                                       stream_ffn_hidden = 0x7065727433ull, stream_ffn_out = 0x7065727434ull;

        /// The index arrays of one forward, built on the host and uploaded: each computed row's gene,
        /// the distinct perturbed genes (projected once) and each set entry's slot among them, the
        /// row and key offsets per sample, and a 1/0 factor per row (0: its sample has no keys).
        void plan(const PerturbedRows<T, B>& out, const PerturbationBatch& batch, const Context& ctx) {
            const index_t R = out.rows(), Bn = out.batch;
            std::vector<index_t> row_gene(static_cast<std::size_t>(R));
            std::vector<T> has_keys(static_cast<std::size_t>(R));
            for (index_t b = 0; b < Bn; ++b)
                for (index_t r = out.offsets[static_cast<std::size_t>(b)]; r < out.offsets[static_cast<std::size_t>(b) + 1]; ++r) {
                    row_gene[static_cast<std::size_t>(r)] = out.gene_of_row(b, r);
                    has_keys[static_cast<std::size_t>(r)] = batch.set_size(b) > 0 ? T(1) : T(0);
                }
            row_gene_ = from_host<index_t, B>(row_gene);
            has_keys_ = from_host<T, B>(has_keys);
            row_offsets_ = from_host<index_t, B>(out.offsets);
            key_offsets_ = from_host<index_t, B>(batch.offsets);
            batch_ = Bn;
            drop_ = ctx.training && p_ > 0.0;
            seed_ = ctx.seed;
            step_ = ctx.step;
        }

        ops::RaggedRows rows() const { return {batch_, row_gene_.numel(), row_offsets_.data(), row_gene_.data()}; }
        ops::RowDropout dropout(std::uint64_t stream) const { return {drop_ ? p_ : 0.0, seed_, stream, step_}; }
        ops::RaggedCrossAttention attention() const { return {rows(), key_offsets_.data(), heads_, d_ / heads_, dropout(stream_probs)}; }

        /// Row-addressed dropout of a [rows, w] tensor (the forward, and the backward of the gradient alike).
        void row_dropout(Tensor<T, B>& x, std::uint64_t stream) const {
            if (drop_) ops::row_dropout(B{}, rows(), dropout(stream), x.data(), x.shape().last());
        }
        /// src rows idx[i] -> [n, width].
        static Tensor<T, B> gather(const T* src, const Tensor<index_t, B>& idx, index_t width) {
            Tensor<T, B> out = Tensor<T, B>::uninitialized(Shape{idx.numel(), width});
            ops::gather_rows(B{}, src, idx.data(), idx.numel(), width, out.data());
            return out;
        }
        /// The FFN's hidden activation Dropout(GELU(pre)) of the computed rows, recomputed from pre_.
        Tensor<T, B> hidden() const {
            Tensor<T, B> g = Tensor<T, B>::uninitialized(pre_.shape());
            ops::activation_forward(B{}, ActivationKind::gelu, pre_.data(), g.data(), pre_.numel());
            row_dropout(g, stream_ffn_hidden);
            return g;
        }

        index_t d_ = 0, heads_ = 1;
        double p_ = 0.0;
        // Saved by forward.
        PerturbedRows<T, B> layout_;           // the rows of the last forward (values empty)
        index_t num_genes_ = 0, batch_ = 0;
        Tensor<index_t, B> row_gene_, key_genes_, key_slot_, row_offsets_, key_offsets_;
        Tensor<T, B> has_keys_;
        bool drop_ = false, dense_ = false;
        std::uint64_t seed_ = 0, step_ = 0;
        Tensor<T, B> hq_, q_, hkv_, kv_, o_, lse_, pre_;
        Tensor<T, B> xhat1_, rstd1_, xhat2_, rstd2_;  // the dense block's LayerNorm statistics
        bool kept_ = false;                          // whether the last forward kept the activations above
        void release_activations() {
            hq_ = q_ = hkv_ = kv_ = o_ = lse_ = pre_ = xhat1_ = rstd1_ = xhat2_ = rstd2_ = Tensor<T, B>();
        }
    };
};

} // namespace celltx
