#pragma once
// The common Cell Graph Transformer types (CgtGi, CgtGiFitness, CgtNonEquivariant), and the means to
// compile their heavy out-of-class members (forward, backward, loss_backward, the encoder base's)
// once per program instead of once per translation unit. By default nothing changes: every
// translation unit that uses a model instantiates what it uses, so including this header never
// leaves a program with link errors. To compile them once:
//  - define CELLTX_EXTERN_CGT_INSTANTIATIONS in every translation unit (e.g. target_compile_definitions),
//  - and CELLTX_DEFINE_CGT_INSTANTIATIONS in exactly one of them, before this header: that one holds
//    the explicit instantiations.
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

// X(type) for every type this header can compile once.
#define CELLTX_CGT_INSTANTIATION_LIST(X)                                                                                   \
    X(CgtEncoderBase<float, cpu, GeneEmbedding, PostNormEncoder>)                                                          \
    X(CgtEncoderBase<double, cpu, GeneEmbedding, PostNormEncoder>)                                                         \
    X(CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>)  \
    X(CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>) \
    X(CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout,   \
                           FitnessReadout>)                                                                                \
    X(CellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout,  \
                           FitnessReadout>)                                                                                \
    X(NonEquivariantCellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>)                 \
    X(NonEquivariantCellGraphTransformer<double, cpu, GeneEmbedding, PostNormEncoder, NonEquivariantHead>)

#if defined(CELLTX_DEFINE_CGT_INSTANTIATIONS)
#define CELLTX_CGT_INSTANTIATE(...) template class __VA_ARGS__;
CELLTX_CGT_INSTANTIATION_LIST(CELLTX_CGT_INSTANTIATE)
#undef CELLTX_CGT_INSTANTIATE
#elif defined(CELLTX_EXTERN_CGT_INSTANTIATIONS)
#define CELLTX_CGT_EXTERN(...) extern template class __VA_ARGS__;
CELLTX_CGT_INSTANTIATION_LIST(CELLTX_CGT_EXTERN)
#undef CELLTX_CGT_EXTERN
#endif

} // namespace celltx
