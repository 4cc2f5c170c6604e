// EXPECT: required for the satisfaction of 'provides_gemm<B, T>' \[with B = null_backend; T = float\]
// A Cell Graph Transformer on a backend tag that implements no op: the model type is rejected in
// one line naming the first op its policies need (the embedding's GEMM), not in pages of errors
// from inside the layers.
#include "celltx/models/cell_graph_transformer.hpp"

struct null_backend {
    static constexpr const char* name = "null";
    static constexpr bool is_device = true;
};

int main() {
    celltx::CgtConfig cfg;
    celltx::CellGraphTransformer<float, null_backend, celltx::GeneEmbedding, celltx::PostNormEncoder, celltx::CrossAttentionTransform,
                                 celltx::GeneInteractionReadout>
        model(cfg);
    return static_cast<int>(model.config().num_genes);
}
