#pragma once
// The common Cell Graph Transformer types, compiled once: `extern template` declarations that keep
// every translation unit which includes this header from instantiating the models' out-of-class
// members (forward, backward, loss_backward and the encoder stack's), which are the bulk of the
// compile time. tests/test_cgt_instantiations.cpp holds the matching explicit instantiations; a
// program that includes this header must link that file (or its own explicit instantiations).
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/models/non_equivariant_cell_graph_transformer.hpp"

namespace celltx {

/// The GI-only equivariant model (the published configuration) and the non-equivariant one.
template <Scalar T>
using CgtGi = CellGraphTransformer<T, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;
template <Scalar T>
using CgtGiFitness = CellGraphTransformer<T, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout, FitnessReadout>;
template <Scalar T>
using CgtNonEquivariant = NonEquivariantCellGraphTransformer<T, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>;

extern template class cgt_detail::EncoderStack<float, cpu, GeneEmbedding, PostNormEncoder>;
extern template class cgt_detail::EncoderStack<double, cpu, GeneEmbedding, PostNormEncoder>;
extern template class CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;
extern template class CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;
extern template class CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout,
                                           FitnessReadout>;
extern template class CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout,
                                           FitnessReadout>;
extern template class NonEquivariantCellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>;
extern template class NonEquivariantCellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>;

} // namespace celltx
