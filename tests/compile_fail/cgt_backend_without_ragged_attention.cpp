// EXPECT: required for the satisfaction of 'provides_ragged_cross_attention_forward<B, T>' \[with B = no_ragged_attention_backend; T = float\]
// A backend that implements every op but the Type I transform's ragged cross-attention: the model
// type is rejected naming exactly that op (the embedding and the encoder are satisfied).
#include "celltx/models/cell_graph_transformer.hpp"

struct no_ragged_attention_backend {
    static constexpr const char* name = "no_ragged_attention";
    static constexpr bool is_device = false;
};

namespace celltx {
template <>
struct storage_traits<no_ragged_attention_backend> : storage_traits<cpu> {};
template <>
struct ops::kernels<no_ragged_attention_backend> : ops::kernels<cpu> {
    static void ragged_cross_attention_forward(auto&&...) = delete;
};
} // namespace celltx

int main() {
    celltx::CgtConfig cfg;
    celltx::CellGraphTransformer<float, no_ragged_attention_backend, celltx::GeneEmbedding, celltx::PostNormEncoder,
                                 celltx::CrossAttentionTransform, celltx::GeneInteractionReadout>
        model(cfg);
    return static_cast<int>(model.config().num_genes);
}
