#pragma once
// MultiHeadAttention: projections + memory-efficient attention (ops::attention_forward / backward) + output
// projection, with the parameter names of the PyTorch / Hugging Face modules it replaces:
//  - separate: q_proj, k_proj, v_proj, out_proj (.weight [out,in], .bias)        — CGT encoder layer
//  - packed:   in_proj_weight [(hq+2hkv)·dh, d], in_proj_bias, out_proj.*        — nn.MultiheadAttention
//  - llama:    q_proj [hq·dh,d], k_proj/v_proj [hkv·dh,d], o_proj (bias optional) — HF LlamaAttention
//  - gpt2:     c_attn.weight [d, 3·hq·dh] and c_proj.weight [hq·dh, d] (Conv1D, y = xW + b) — HF GPT2Attention
// forward(x) is self-attention; forward_cross(xq, xkv) takes keys/values from another set (tk = 0
// gives an exactly zero output, without the out_proj bias). Layer contract as nn::Linear: forward
// saves what backward needs (O(T·d), never T×T), backward ASSIGNS parameter gradients and ADDS into
// the input gradients. Dropout (training only) acts on the attention probabilities; its mask is a
// pure function of (ctx.seed, config.dropout_stream, ctx.step, element).
// Graph regularisation: set_graph_hook() before backward fuses c_i·P_ij − W_ij into the score
// gradient of that one backward; lse() and edge_scores() give log P at the edges for the loss value.
// LoRA (nn/lora.hpp): add_lora() puts a low-rank adapter beside each projection, PEFT's
// target_modules of the layout (llama: q_proj, k_proj, v_proj, o_proj; gpt2: c_attn — one adapter
// over the packed q|k|v columns — and c_proj; separate: q_proj, k_proj, v_proj, out_proj), named
// "<projection>.lora_A.weight" / "<projection>.lora_B.weight"; merge_lora() folds them into the
// weights. Self-attention only.
#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/init.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/nn/lora.hpp"

namespace celltx::nn {

enum class AttentionLayout { separate, packed, llama, gpt2 };

struct AttentionConfig {
    index_t d_model = 0;
    index_t num_heads = 1;
    index_t num_kv_heads = 0;  ///< 0: num_heads (grouped KV heads when smaller)
    index_t head_dim = 0;      ///< 0: d_model / num_heads
    bool bias = true;
    AttentionLayout layout = AttentionLayout::separate;
    double dropout = 0.0;                ///< on the attention probabilities, in training
    std::uint64_t dropout_stream = 0;    ///< distinguishes this layer's masks from every other layer's
    double scale = 0.0;                  ///< 0: 1/sqrt(head_dim)

    index_t kv_heads() const { return num_kv_heads ? num_kv_heads : num_heads; }
    index_t head_width() const { return head_dim ? head_dim : (num_heads ? d_model / num_heads : 0); }
};

/// The ops a MultiHeadAttention calls on backend B.
template <class B, class T>
concept AttentionOps = LinearOps<B, T> && ops::provides_attention_forward<B, T> && ops::provides_attention_backward<B, T> &&
                       ops::provides_attention_edge_scores<B, T>;

template <Scalar T, Backend B = cpu>
class MultiHeadAttention {
public:
    MultiHeadAttention() = default;
    explicit MultiHeadAttention(const AttentionConfig& cfg) : cfg_(cfg) {
        const index_t d = cfg.d_model, hq = cfg.num_heads, hkv = cfg.kv_heads(), dh = cfg.head_width();
        require(d >= 1 && hq >= 1 && hkv >= 1 && dh >= 1, "MultiHeadAttention: d_model {}, heads {}/{}, head_dim {} must be positive",
                d, hq, hkv, dh);
        require(hq % hkv == 0, "MultiHeadAttention: {} query heads are not a multiple of {} kv heads", hq, hkv);
        require(cfg.head_dim || d % hq == 0, "MultiHeadAttention: d_model {} is not divisible by {} heads", d, hq);
        require(cfg.dropout >= 0.0 && cfg.dropout < 1.0, "MultiHeadAttention: dropout {} is outside [0, 1)", cfg.dropout);
        hq_ = hq, hkv_ = hkv, dh_ = dh;
        const index_t wq = hq * dh, wkv = hkv * dh, wall = wq + 2 * wkv;
        switch (cfg.layout) {
            case AttentionLayout::separate:
            case AttentionLayout::llama:
                q_proj = Linear<T, B>(d, wq, cfg.bias);
                k_proj = Linear<T, B>(d, wkv, cfg.bias);
                v_proj = Linear<T, B>(d, wkv, cfg.bias);
                out_proj = Linear<T, B>(wq, d, cfg.bias);
                break;
            case AttentionLayout::packed:
                in_proj_weight = Parameter<T, B>(Shape{wall, d});
                if (cfg.bias) in_proj_bias = Parameter<T, B>(Shape{wall});
                out_proj = Linear<T, B>(wq, d, cfg.bias);
                break;
            case AttentionLayout::gpt2:
                in_proj_weight = Parameter<T, B>(Shape{d, wall});  // Conv1D: [in, out]
                if (cfg.bias) in_proj_bias = Parameter<T, B>(Shape{wall});
                c_proj_weight = Parameter<T, B>(Shape{wq, d});
                if (cfg.bias) c_proj_bias = Parameter<T, B>(Shape{d});
                break;
        }
    }

    const AttentionConfig& config() const noexcept { return cfg_; }
    index_t num_heads() const noexcept { return hq_; }
    index_t num_kv_heads() const noexcept { return hkv_; }
    index_t head_dim() const noexcept { return dh_; }

    /// PyTorch's initialisation of the module each layout mirrors: nn.Linear's default (separate,
    /// llama); xavier_uniform in_proj_weight and zero biases, out_proj.weight as nn.Linear
    /// (packed); N(0, 0.02) weights and zero biases (gpt2, HF's _init_weights without the
    /// depth-scaled c_proj, which needs the layer count).
    void reset_parameters(Generator& g) {
        const index_t d = cfg_.d_model;
        switch (cfg_.layout) {
            case AttentionLayout::separate:
            case AttentionLayout::llama:
                q_proj.reset_parameters(g);
                k_proj.reset_parameters(g);
                v_proj.reset_parameters(g);
                out_proj.reset_parameters(g);
                break;
            case AttentionLayout::packed:
                init::xavier_uniform(in_proj_weight.value, g, in_proj_weight.value.size(0), d);
                out_proj.reset_parameters(g);
                if (cfg_.bias) {
                    in_proj_bias.value.zero();
                    out_proj.bias.value.zero();
                }
                break;
            case AttentionLayout::gpt2:
                init::normal(in_proj_weight.value, g, 0.0, 0.02);
                init::normal(c_proj_weight.value, g, 0.0, 0.02);
                if (cfg_.bias) {
                    in_proj_bias.value.zero();
                    c_proj_bias.value.zero();
                }
                break;
        }
    }

    /// Self-attention: x [B, T, d] or [T, d] -> same shape.
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        check_input("forward: x", x);
        return forward(Tensor<T, B>::copy_of(x), ctx);
    }
    /// As above, keeping x itself as the saved input (no copy).
    Tensor<T, B> forward(Tensor<T, B>&& x, const Context& ctx = {}) {
        check_input("forward: x", x.cview());
        cross_ = false;
        rank_ = x.rank();
        batch_ = rank_ == 3 ? x.size(0) : 1;
        tq_ = tk_ = x.size(-2);
        kept_ = ctx.keep_for_backward;
        xq_ = std::move(x);
        xkv_ = Tensor<T, B>();
        const index_t rows = batch_ * tq_;
        q_ = project(which::q, xq_.data(), rows);
        k_ = project(which::k, xq_.data(), rows);
        v_ = project(which::v, xq_.data(), rows);
        lora_forward(xq_.data(), rows, ctx);
        if (!kept_) xq_ = Tensor<T, B>();
        return attend(ctx);
    }

    /// Cross-attention: queries from xq [B, Tq, d], keys and values from xkv [B, Tk, d] (or both
    /// rank 2). Tk may be 0: the output is then exactly zero and so are all gradients.
    Tensor<T, B> forward_cross(ConstView<T, B> xq, ConstView<T, B> xkv, const Context& ctx = {}) {
        check_input("forward_cross: xq", xq);
        check_input("forward_cross: xkv", xkv);
        require(!has_lora(), "MultiHeadAttention::forward_cross: LoRA adapters are supported in self-attention only");
        require(xq.rank() == xkv.rank() && (xq.rank() == 2 || xq.size(0) == xkv.size(0)),
                "MultiHeadAttention::forward_cross: xq {} and xkv {} disagree on the batch", xq.shape(), xkv.shape());
        cross_ = true;
        rank_ = xq.rank();
        batch_ = rank_ == 3 ? xq.size(0) : 1;
        tq_ = xq.size(-2);
        tk_ = xkv.size(-2);
        kept_ = ctx.keep_for_backward;
        xq_ = kept_ ? Tensor<T, B>::copy_of(xq) : Tensor<T, B>();
        xkv_ = kept_ ? Tensor<T, B>::copy_of(xkv) : Tensor<T, B>();
        q_ = project(which::q, xq.data(), batch_ * tq_);
        k_ = project(which::k, xkv.data(), batch_ * tk_);
        v_ = project(which::v, xkv.data(), batch_ * tk_);
        return attend(ctx);
    }

    /// Backward of forward(): dx += dL/dx through the q, k and v paths.
    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        require(kept_, "MultiHeadAttention::backward: {}", nothing_kept_for_backward);
        require(!cross_, "MultiHeadAttention::backward: the last forward was not a self-attention forward");
        const index_t rows = batch_ * tq_;
        auto [dq, dk, dv] = attention_grads(dy);
        for (auto [w, g] : {std::pair{which::q, &dq}, std::pair{which::k, &dk}, std::pair{which::v, &dv}})
            param_grad(w, xq_.data(), g->data(), rows);
        if (dx.data()) {
            require(dx.shape() == xq_.shape(), "MultiHeadAttention::backward: dx {} does not match the input {}", dx.shape(), xq_.shape());
            input_grad(which::q, dq.data(), rows, dx.data());
            input_grad(which::k, dk.data(), rows, dx.data());
            input_grad(which::v, dv.data(), rows, dx.data());
        }
        lora_backward_qkv(dq, dk, dv, rows, dx.data());
    }

    /// Backward of forward_cross(): dxq += dL/dxq, dxkv += dL/dxkv (either may be empty).
    void backward_cross(ConstView<T, B> dy, TensorView<T, B> dxq, TensorView<T, B> dxkv) {
        require(kept_, "MultiHeadAttention::backward_cross: {}", nothing_kept_for_backward);
        require(cross_, "MultiHeadAttention::backward_cross: the last forward was not forward_cross");
        require(!dxq.data() || dxq.shape() == xq_.shape(), "MultiHeadAttention::backward_cross: dxq {} does not match xq {}",
                dxq.shape(), xq_.shape());
        require(!dxkv.data() || dxkv.shape() == xkv_.shape(), "MultiHeadAttention::backward_cross: dxkv {} does not match xkv {}",
                dxkv.shape(), xkv_.shape());
        if (tk_ == 0) {  // the output was a constant zero
            check_dy(dy);
            visit_parameters([](const std::string&, Parameter<T, B>& p) { p.grad_for_backward().zero(); });
            hook_.reset();
            return;
        }
        auto [dq, dk, dv] = attention_grads(dy);
        param_grad(which::q, xq_.data(), dq.data(), batch_ * tq_);
        param_grad(which::k, xkv_.data(), dk.data(), batch_ * tk_);
        param_grad(which::v, xkv_.data(), dv.data(), batch_ * tk_);
        if (dxq.data()) input_grad(which::q, dq.data(), batch_ * tq_, dxq.data());
        if (dxkv.data()) {
            input_grad(which::k, dk.data(), batch_ * tk_, dxkv.data());
            input_grad(which::v, dv.data(), batch_ * tk_, dxkv.data());
        }
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        switch (cfg_.layout) {
            case AttentionLayout::separate:
            case AttentionLayout::llama:
                q_proj.visit_parameters(f, join_name(prefix, "q_proj."));
                k_proj.visit_parameters(f, join_name(prefix, "k_proj."));
                v_proj.visit_parameters(f, join_name(prefix, "v_proj."));
                out_proj.visit_parameters(f, join_name(prefix, cfg_.layout == AttentionLayout::llama ? "o_proj." : "out_proj."));
                break;
            case AttentionLayout::packed:
                f(join_name(prefix, "in_proj_weight"), in_proj_weight);
                if (cfg_.bias) f(join_name(prefix, "in_proj_bias"), in_proj_bias);
                out_proj.visit_parameters(f, join_name(prefix, "out_proj."));
                break;
            case AttentionLayout::gpt2:
                f(join_name(prefix, "c_attn.weight"), in_proj_weight);
                if (cfg_.bias) f(join_name(prefix, "c_attn.bias"), in_proj_bias);
                f(join_name(prefix, "c_proj.weight"), c_proj_weight);
                if (cfg_.bias) f(join_name(prefix, "c_proj.bias"), c_proj_bias);
                break;
        }
        static constexpr const char* llama_names[4] = {"q_proj.", "k_proj.", "v_proj.", "o_proj."};
        static constexpr const char* separate_names[4] = {"q_proj.", "k_proj.", "v_proj.", "out_proj."};
        static constexpr const char* gpt2_names[4] = {"c_attn.", "", "", "c_proj."};
        const char* const* names = cfg_.layout == AttentionLayout::gpt2    ? gpt2_names
                                   : cfg_.layout == AttentionLayout::llama ? llama_names
                                                                           : separate_names;
        for (int k = 0; k < 4; ++k)
            if (lora_[k]) lora_[k]->visit_parameters(f, join_name(prefix, names[k]));
    }

    // ---- LoRA adapters (nn/lora.hpp)
    /// Adds a fresh adapter beside every projection of the layout (B = 0: the function is unchanged
    /// until it trains); replaces adapters already there.
    void add_lora(const LoraConfig& c, Generator& g) {
        require(cfg_.layout != AttentionLayout::packed,
                "MultiHeadAttention::add_lora: the packed in_proj layout (nn.MultiheadAttention) has no PEFT LoRA target");
        const index_t d = cfg_.d_model, wq = hq_ * dh_, wkv = hkv_ * dh_;
        const CounterRng streams(0, c.stream);
        for (auto& l : lora_) l.reset();
        if (cfg_.layout == AttentionLayout::gpt2) {
            lora_[0].emplace(d, wq + 2 * wkv, c, streams.substream(0).stream());  // c_attn
        } else {
            lora_[0].emplace(d, wq, c, streams.substream(0).stream());
            lora_[1].emplace(d, wkv, c, streams.substream(1).stream());
            lora_[2].emplace(d, wkv, c, streams.substream(2).stream());
        }
        lora_[3].emplace(wq, d, c, streams.substream(3).stream());
        for (auto& l : lora_)
            if (l) l->reset_parameters(g);
    }
    bool has_lora() const noexcept {
        for (const auto& l : lora_)
            if (l) return true;
        return false;
    }
    /// The adapters: [0] q_proj (gpt2: c_attn over q|k|v), [1] k_proj, [2] v_proj, [3] o_proj / c_proj / out_proj.
    std::array<std::optional<LoraAdapter<T, B>>, 4>& lora() noexcept { return lora_; }
    /// W += scaling · B A for every adapter, then drops them (PEFT's merge_and_unload).
    void merge_lora() {
        for (int k = 0; k < 4; ++k) {
            if (!lora_[k]) continue;
            if (cfg_.layout == AttentionLayout::gpt2 && k == 0) {
                lora_[k]->merge_into(in_proj_weight.value.data(), in_proj_weight.value.size(1), true);  // [d, wall]
            } else {
                const Proj p = proj(static_cast<which>(k));
                lora_[k]->merge_into(p.w->value.data() + p.offset, p.ld, p.conv1d);
            }
            lora_[k].reset();
        }
    }
    /// Drops the adapters without merging.
    void remove_lora() {
        for (auto& l : lora_) l.reset();
    }

    /// Fuses the graph term into the NEXT backward only (then it is dropped): the spans and the
    /// coefficient array must stay alive until that backward returns.
    void set_graph_hook(ops::GraphHook<T> hook) { hook_ = std::move(hook); }
    void clear_graph_hook() { hook_.reset(); }

    /// Log-sum-exp of every score row of the last forward: [B, num_heads, Tq] (empty after an inference forward).
    ConstView<T, B> lse() const { return lse_.cview(); }
    /// The attention sizes of the last forward.
    ops::AttentionDims dims() const { return {batch_, tq_, tk_, hq_, hkv_, dh_, cfg_.scale}; }

    /// Scores s_ij = scale·q_i·k_j of the last forward at the edges of `term`: [B, nnz]; with
    /// log_probs, log P_ij = s_ij − LSE_i (P before dropout), for a KL value without a T×T matrix.
    Tensor<T, B> edge_scores(const ops::GraphTerm<T>& term, bool log_probs = false) const {
        require(kept_, "MultiHeadAttention::edge_scores: {}", nothing_kept_for_backward);
        auto out = Tensor<T, B>::uninitialized(Shape{batch_, term.nnz()});
        const ops::HeadsRef<const T> q{q_.data(), hq_ * dh_}, k{k_.data(), hkv_ * dh_};
        ops::attention_edge_scores(B{}, dims(), q, k, term, out.data(), log_probs ? lse_.data() : nullptr);
        return out;
    }

    // Parameters (which ones exist depends on the layout; see visit_parameters).
    Linear<T, B> q_proj, k_proj, v_proj, out_proj;          ///< separate, llama (out_proj is o_proj); packed uses out_proj
    Parameter<T, B> in_proj_weight, in_proj_bias;           ///< packed; gpt2's c_attn (weight stored [in, out])
    Parameter<T, B> c_proj_weight, c_proj_bias;             ///< gpt2's c_proj (weight stored [in, out])

private:
    enum class which { q, k, v, o };

    // One projection y = x·Wᵀ + b as a view into the layout's parameters (no copies): weight block
    // at `offset` with leading dimension `ld`; Conv1D blocks are columns of an [in, out] matrix.
    struct Proj {
        Parameter<T, B>* w = nullptr;
        index_t offset = 0, ld = 0;
        bool conv1d = false;
        Parameter<T, B>* b = nullptr;
        index_t b_offset = 0;
        index_t in = 0, out = 0;
    };

    Proj proj(which wh) {
        const index_t d = cfg_.d_model, wq = hq_ * dh_, wkv = hkv_ * dh_, wall = wq + 2 * wkv;
        const index_t out = wh == which::o ? d : wh == which::q ? wq : wkv, in = wh == which::o ? wq : d;
        const index_t start = wh == which::q ? 0 : wh == which::k ? wq : wq + wkv;  // packed row / column block
        switch (cfg_.layout) {
            case AttentionLayout::separate:
            case AttentionLayout::llama: {
                Linear<T, B>& l = wh == which::q ? q_proj : wh == which::k ? k_proj : wh == which::v ? v_proj : out_proj;
                return {&l.weight, 0, in, false, cfg_.bias ? &l.bias : nullptr, 0, in, out};
            }
            case AttentionLayout::packed:
                if (wh == which::o) return {&out_proj.weight, 0, in, false, cfg_.bias ? &out_proj.bias : nullptr, 0, in, out};
                return {&in_proj_weight, start * d, d, false, cfg_.bias ? &in_proj_bias : nullptr, start, in, out};
            case AttentionLayout::gpt2:
                if (wh == which::o) return {&c_proj_weight, 0, d, true, cfg_.bias ? &c_proj_bias : nullptr, 0, in, out};
                return {&in_proj_weight, start, wall, true, cfg_.bias ? &in_proj_bias : nullptr, start, in, out};
        }
        return {};
    }

    /// y [rows, out] = x [rows, in] · Wᵀ + b
    Tensor<T, B> project(which wh, const T* x, index_t rows) {
        const Proj p = proj(wh);
        auto y = Tensor<T, B>::uninitialized(Shape{rows, p.out});
        const T* w = p.w->value.data() + p.offset;
        ops::gemm(B{}, false, !p.conv1d, rows, p.out, p.in, T(1), x, p.in, w, p.ld, T(0), y.data(), p.out);
        if (p.b) ops::add_row_vector(B{}, y.data(), p.b->value.data() + p.b_offset, rows, p.out);
        return y;
    }
    /// dW = dyᵀ x (or xᵀ dy for Conv1D), db = Σ_rows dy: assigned.
    void param_grad(which wh, const T* x, const T* dy, index_t rows) {
        const Proj p = proj(wh);
        T* dw = p.w->grad_for_backward().data() + p.offset;
        if (p.conv1d) ops::gemm(B{}, true, false, p.in, p.out, rows, T(1), x, p.in, dy, p.out, T(0), dw, p.ld);
        else ops::gemm(B{}, true, false, p.out, p.in, rows, T(1), dy, p.out, x, p.in, T(0), dw, p.ld);
        if (p.b) ops::column_sum(B{}, dy, rows, p.out, p.b->grad_for_backward().data() + p.b_offset);
    }
    /// dx += dy · W
    void input_grad(which wh, const T* dy, index_t rows, T* dx) {
        const Proj p = proj(wh);
        const T* w = p.w->value.data() + p.offset;
        ops::gemm(B{}, false, p.conv1d, rows, p.in, p.out, T(1), dy, p.out, w, p.ld, T(1), dx, p.in);
    }

    /// Adds the q/k/v adapters' deltas to q_, k_, v_ (gpt2: one delta over the packed columns).
    void lora_forward(const T* x, index_t rows, const Context& ctx) {
        if (!has_lora()) return;
        const index_t wq = hq_ * dh_, wkv = hkv_ * dh_;
        if (cfg_.layout == AttentionLayout::gpt2) {
            if (!lora_[0]) return;
            const Tensor<T, B> delta = lora_[0]->forward(x, rows, ctx);  // [rows, wq + 2 wkv]
            const index_t w = wq + 2 * wkv;
            for (index_t r = 0; r < rows; ++r) {
                ops::accumulate(B{}, delta.data() + r * w, q_.data() + r * wq, wq);
                ops::accumulate(B{}, delta.data() + r * w + wq, k_.data() + r * wkv, wkv);
                ops::accumulate(B{}, delta.data() + r * w + wq + wkv, v_.data() + r * wkv, wkv);
            }
            return;
        }
        Tensor<T, B>* outs[3] = {&q_, &k_, &v_};
        for (int k = 0; k < 3; ++k)
            if (lora_[k]) {
                const Tensor<T, B> delta = lora_[k]->forward(x, rows, ctx);
                ops::accumulate(B{}, delta.data(), outs[k]->data(), delta.numel());
            }
    }
    void lora_backward_qkv(const Tensor<T, B>& dq, const Tensor<T, B>& dk, const Tensor<T, B>& dv, index_t rows, T* dx) {
        if (!has_lora()) return;
        const index_t wq = hq_ * dh_, wkv = hkv_ * dh_;
        if (cfg_.layout == AttentionLayout::gpt2) {
            if (!lora_[0]) return;
            const index_t w = wq + 2 * wkv;
            auto dqkv = Tensor<T, B>::uninitialized(Shape{rows, w});
            for (index_t r = 0; r < rows; ++r) {
                storage_traits<B>::copy(dqkv.data() + r * w, dq.data() + r * wq, sizeof(T) * static_cast<std::size_t>(wq));
                storage_traits<B>::copy(dqkv.data() + r * w + wq, dk.data() + r * wkv, sizeof(T) * static_cast<std::size_t>(wkv));
                storage_traits<B>::copy(dqkv.data() + r * w + wq + wkv, dv.data() + r * wkv, sizeof(T) * static_cast<std::size_t>(wkv));
            }
            lora_[0]->backward(dqkv.data(), dx);
            return;
        }
        const Tensor<T, B>* grads[3] = {&dq, &dk, &dv};
        for (int k = 0; k < 3; ++k)
            if (lora_[k]) lora_[k]->backward(grads[k]->data(), dx);
    }

    void check_input(const char* what, ConstView<T, B> x) const {
        require(hq_ >= 1, "MultiHeadAttention: used before being configured");
        require((x.rank() == 2 || x.rank() == 3) && x.shape().last() == cfg_.d_model,
                "MultiHeadAttention::{} {} is not [B, T, {}] or [T, {}]", what, x.shape(), cfg_.d_model, cfg_.d_model);
    }
    Shape out_shape() const { return rank_ == 3 ? Shape{batch_, tq_, cfg_.d_model} : Shape{tq_, cfg_.d_model}; }
    void check_dy(ConstView<T, B> dy) const {
        require(dy.shape() == out_shape(), "MultiHeadAttention: dy {} does not match the output {}", dy.shape(), out_shape());
    }

    /// The attention itself and the output projection, from q_, k_, v_.
    Tensor<T, B> attend(const Context& ctx) {
        drop_ = {};
        if (ctx.training && cfg_.dropout > 0.0) drop_ = {cfg_.dropout, ctx.seed, cfg_.dropout_stream, ctx.step};
        o_ = Tensor<T, B>::uninitialized(Shape{batch_ * tq_, hq_ * dh_});
        lse_ = Tensor<T, B>::uninitialized(Shape{batch_, hq_, tq_});
        ops::attention_forward(B{}, dims(), ops::HeadsRef<const T>{q_.data(), hq_ * dh_}, ops::HeadsRef<const T>{k_.data(), hkv_ * dh_},
                               ops::HeadsRef<const T>{v_.data(), hkv_ * dh_}, ops::HeadsRef<T>{o_.data(), hq_ * dh_}, lse_.data(), drop_);
        if (!kept_) q_ = k_ = v_ = lse_ = Tensor<T, B>();
        if (tk_ == 0) {  // no keys: exactly zero, no out_proj bias
            if (!kept_) o_ = Tensor<T, B>();
            return Tensor<T, B>(out_shape());
        }
        Tensor<T, B> y = project(which::o, o_.data(), batch_ * tq_);
        if (lora_[3]) {
            const Tensor<T, B> delta = lora_[3]->forward(o_.data(), batch_ * tq_, ctx);
            ops::accumulate(B{}, delta.data(), y.data(), y.numel());
        }
        if (!kept_) o_ = Tensor<T, B>();
        return std::move(y.reshape(out_shape()));
    }

    /// Output-projection gradients (assigned) and dQ, dK, dV of the attention (graph hook fused).
    std::tuple<Tensor<T, B>, Tensor<T, B>, Tensor<T, B>> attention_grads(ConstView<T, B> dy) {
        check_dy(dy);
        const index_t rows = batch_ * tq_;
        param_grad(which::o, o_.data(), dy.data(), rows);
        Tensor<T, B> dout(Shape{rows, hq_ * dh_});
        input_grad(which::o, dy.data(), rows, dout.data());
        if (lora_[3]) lora_[3]->backward(dy.data(), dout.data());
        auto dq = Tensor<T, B>::uninitialized(Shape{rows, hq_ * dh_});
        auto dk = Tensor<T, B>::uninitialized(Shape{batch_ * tk_, hkv_ * dh_});
        auto dv = Tensor<T, B>::uninitialized(Shape{batch_ * tk_, hkv_ * dh_});
        const index_t lq = hq_ * dh_, lkv = hkv_ * dh_;
        ops::attention_backward(B{}, dims(), ops::HeadsRef<const T>{q_.data(), lq}, ops::HeadsRef<const T>{k_.data(), lkv},
                                ops::HeadsRef<const T>{v_.data(), lkv}, ops::HeadsRef<const T>{o_.data(), lq}, lse_.data(),
                                ops::HeadsRef<const T>{dout.data(), lq}, ops::HeadsRef<T>{dq.data(), lq}, ops::HeadsRef<T>{dk.data(), lkv},
                                ops::HeadsRef<T>{dv.data(), lkv}, drop_, hook_ ? &*hook_ : nullptr);
        hook_.reset();
        return {std::move(dq), std::move(dk), std::move(dv)};
    }

    AttentionConfig cfg_{};
    index_t hq_ = 0, hkv_ = 0, dh_ = 0;
    // Saved by forward: inputs (for the weight gradients), projections, attention output and LSE.
    bool kept_ = false, cross_ = false;
    int rank_ = 3;
    index_t batch_ = 0, tq_ = 0, tk_ = 0;
    Tensor<T, B> xq_, xkv_, q_, k_, v_, o_, lse_;
    ops::AttentionDropout drop_{};
    std::optional<ops::GraphHook<T>> hook_;
    std::array<std::optional<LoraAdapter<T, B>>, 4> lora_;  // q, k, v, o (gpt2: [0] is c_attn)
};

} // namespace celltx::nn
