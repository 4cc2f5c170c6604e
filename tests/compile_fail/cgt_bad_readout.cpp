// EXPECT: the expression '\(ReadoutPolicy<Readouts, T, B> && \.\.\.\) \[with Readouts = {celltx::GeneInteractionReadout, celltx::CrossAttentionTransform}
// A Cell Graph Transformer whose readout slot holds the Type I transform (not a readout: it declares
// no RowNeed and reads H_genes, not H_pert rows): the ReadoutPolicy concept must reject it.
#include "celltx/models/cell_graph_transformer.hpp"

int main() {
    celltx::CgtConfig cfg;
    cfg.num_genes = 10;
    cfg.d_model = 8;
    celltx::CellGraphTransformer<float, celltx::cpu, celltx::GeneEmbedding, celltx::PostNormEncoder, celltx::CrossAttentionTransform,
                                 celltx::GeneInteractionReadout, celltx::CrossAttentionTransform>
        model(cfg);
    return static_cast<int>(model.config().num_genes);
}
