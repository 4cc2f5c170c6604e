#pragma once
// GeneDecoder (option): state's LatentToGeneDecoder (nn::GeneDecoder) on the model's predictions,
// mapping the latent output [B·S, output_dim] to gene expression [B·S, gene_dim]; trained with the
// same set loss against the cells' expression (weight decoder_loss_weight). state_dict names under
// "gene_decoder.": decoder.{4k, 4k+1, 4n}.*. Widths come from StateConfig::decoder_hidden.
#include "celltx/nn/gene_decoder.hpp"
#include "celltx/policies/state/option.hpp"

namespace celltx {

/// Option: decode the latent predictions to genes.
struct GeneDecoder {
    static constexpr StateOptionKind option = StateOptionKind::gene_decoder;
    template <Scalar T, Backend B>
    using module = nn::GeneDecoder<T, B>;
};

} // namespace celltx
