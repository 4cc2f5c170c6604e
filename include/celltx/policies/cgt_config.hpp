#pragma once
// CgtConfig: the runtime sizes and options of the Cell Graph Transformer (docs/cell_graph_transformer.md), shared
// by every CGT policy module (embedding, encoder, perturbation transform, readouts). Sizes are
// runtime values so that one compiled model serves any gene universe.
#include <cstdint>
#include "celltx/core/shape.hpp"

namespace celltx {

/// How the gene-interaction readout pools the perturbed rows of a set.
enum class GiPooling { mean, sum };

struct CgtConfig {
    index_t num_genes = 6607;   // N
    index_t d_model = 64;       // d
    int num_layers = 6;         // L
    int num_heads = 8;          // H (encoder)
    int pert_heads = 8;         // Type I cross-attention heads
    double dropout = 0.1;
    index_t gene_feature_dim = 0;  // 0: no precomputed gene features
    GiPooling gi_pooling = GiPooling::mean;
    int propagation_layers = 0;
    index_t fitness_outputs = 1, expression_outputs = 1;
    std::uint64_t seed = 0;     // init + row sampling
};

} // namespace celltx
