#pragma once
// BackboneConfig: the runtime sizes of the State Transition model's transformer backbone, one struct
// for both families (the Hugging Face config fields named beside each member). Zero means "the
// family's default", resolved by the backbone module.
#include <cstdint>
#include "celltx/core/shape.hpp"

namespace celltx {

struct BackboneConfig {
    index_t hidden = 0;          ///< hidden_size / n_embd (0: the model's hidden width)
    int layers = 1;              ///< num_hidden_layers / n_layer
    index_t heads = 1;           ///< num_attention_heads / n_head
    index_t kv_heads = 0;        ///< num_key_value_heads, LLaMA only (0: heads)
    index_t head_dim = 0;        ///< head_dim, LLaMA only (0: hidden / heads)
    index_t intermediate = 0;    ///< intermediate_size (LLaMA, required) / n_inner (GPT-2; 0: 4·hidden)
    double eps = 0.0;            ///< rms_norm_eps / layer_norm_epsilon (0: 1e-6 LLaMA, 1e-5 GPT-2)
    double attn_dropout = 0.0;   ///< attention_dropout / attn_pdrop (training only)
    double resid_dropout = 0.0;  ///< resid_pdrop, GPT-2 only
    double embd_dropout = 0.0;   ///< embd_pdrop, GPT-2 only
    index_t vocab_size = 0;      ///< rows of the frozen token embedding (0: 32000 LLaMA, 50257 GPT-2); never allocated
    index_t n_positions = 0;     ///< rows of GPT-2's frozen position embedding (0: cell_set_len + 1); never allocated
    std::uint64_t stream = 16;   ///< base dropout stream; layer i uses substream(i)
};

} // namespace celltx
