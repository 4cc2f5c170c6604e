#pragma once
// GPT2Backbone: the State Transition model's GPT-2-style bidirectional backbone (HF GPT2Model fed
// inputs_embeds; state zeroes and freezes wpe and drops the causal mask): embd dropout, `layers`
// pre-LN GPT2Blocks (tanh GELU, attention with biases), then the final LayerNorm ln_f (eps 1e-5).
// The position embedding is zero, so the backbone is permutation-equivariant over the cells.
// state_dict names (under "transformer_backbone."): h.{i}.ln_1.*, h.{i}.attn.c_attn.*,
// h.{i}.attn.c_proj.*, h.{i}.ln_2.*, h.{i}.mlp.c_fc.*, h.{i}.mlp.c_proj.*, ln_f.*. The Conv1D
// weights keep the checkpoint's [in, out] layout (nn/conv1d.hpp), so they load and save unchanged.
// Checkpoints also hold the frozen, zeroed wte.weight and wpe.weight: is_frozen_key() names them.
// Layer contract of nn/linear.hpp; x is [B, T, H].
#include <string>
#include <string_view>
#include <vector>
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/gpt2_block.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/policies/backbone/backbone_config.hpp"

namespace celltx {

namespace backbone {

template <Scalar T, Backend B = cpu>
class GPT2 {
public:
    GPT2() = default;
    explicit GPT2(const BackboneConfig& c)
        : ln_f(c.hidden, c.eps > 0.0 ? c.eps : 1e-5),
          drop_(c.embd_dropout, CounterRng(0, c.stream).substream(~std::uint64_t{0}).stream()),
          cfg_(c) {
        require(c.hidden >= 1 && c.layers >= 0 && c.heads >= 1 && c.hidden % c.heads == 0,
                "GPT2Backbone: n_embd {} must be a positive multiple of n_head {} (layers {})", c.hidden, c.heads, c.layers);
        for (int i = 0; i < c.layers; ++i) {
            nn::GPT2BlockConfig bc;
            bc.d_model = c.hidden;
            bc.num_heads = c.heads;
            bc.inner = c.intermediate;
            bc.eps = c.eps > 0.0 ? c.eps : 1e-5;
            bc.attn_dropout = c.attn_dropout;
            bc.resid_dropout = c.resid_dropout;
            bc.stream = CounterRng(0, c.stream).substream(static_cast<std::uint64_t>(i)).stream();
            h.emplace_back(bc);
        }
    }

    const BackboneConfig& config() const noexcept { return cfg_; }

    void reset_parameters(Generator& g) {
        for (auto& b : h) b.reset_parameters(g);
        ln_f.reset_parameters(g);
    }

    /// x [B, T, H] -> [B, T, H]
    Tensor<T, B> forward(ConstView<T, B> x, const Context& ctx = {}) {
        Tensor<T, B> a = drop_.forward(x, ctx);  // x + wpe (= 0), then embd dropout
        for (auto& b : h) a = b.forward(a.cview(), ctx);
        return ln_f.forward(a.cview(), ctx);
    }

    void backward(ConstView<T, B> dy, TensorView<T, B> dx) {
        Tensor<T, B> g(dy.shape());
        ln_f.backward(dy, g.view());
        for (std::size_t i = h.size(); i-- > 0;) {
            Tensor<T, B> d(dy.shape());
            h[i].backward(g.cview(), d.view());
            g = std::move(d);
        }
        drop_.backward(g.cview(), dx);
    }

    template <class F>
    void visit_parameters(F&& f, const std::string& prefix = "") {
        for (std::size_t i = 0; i < h.size(); ++i) h[i].visit_parameters(f, prefix + "h." + std::to_string(i) + ".");
        ln_f.visit_parameters(f, prefix + "ln_f.");
    }

    std::vector<nn::GPT2Block<T, B>> h;
    nn::LayerNorm<T, B> ln_f;

private:
    nn::Dropout<T, B> drop_;
    BackboneConfig cfg_{};
};

} // namespace backbone

/// The GPT-2 backbone policy.
struct GPT2Backbone {
    template <Scalar T, Backend B>
    using module = backbone::GPT2<T, B>;
    static constexpr const char* name = "gpt2";

    static bool is_frozen_key(std::string_view key) { return key == "wte.weight" || key == "wpe.weight"; }
    /// wte: vocab_size × n_embd (50257 rows by default) and wpe: n_positions × n_embd
    /// (cell_set_len + 1 rows by default, room for the confidence token).
    static index_t frozen_parameter_count(const BackboneConfig& c, index_t set_len) {
        return ((c.vocab_size ? c.vocab_size : 50257) + (c.n_positions ? c.n_positions : set_len + 1)) * c.hidden;
    }
};

} // namespace celltx
