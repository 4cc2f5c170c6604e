#pragma once
// GeneDecoder (option): state's LatentToGeneDecoder (nn::LatentToGeneDecoder) on the model's
// predictions, mapping the latent output [B·S, output_dim] to gene expression [B·S, gene_dim];
// trained with the same set loss against the cells' expression (weight decoder_loss_weight).
// state_dict names under "gene_decoder.": decoder.{4k, 4k+1, 4n}.*. Widths come from
// StateConfig::gene_dim and decoder_hidden, dropout from decoder_dropout.
#include "celltx/nn/latent_to_gene_decoder.hpp"
#include "celltx/policies/state/option.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx {

namespace state_parts {

/// The gene decoder of a State model: an nn::LatentToGeneDecoder sized by the StateConfig.
template <Scalar T, Backend B = cpu>
class GeneDecoderModule : public nn::LatentToGeneDecoder<T, B> {
public:
    static constexpr std::uint64_t dropout_stream = 5;

    GeneDecoderModule() = default;
    explicit GeneDecoderModule(const StateConfig& c)
        : nn::LatentToGeneDecoder<T, B>(c.out_dim(), check(c).gene_dim, c.decoder_hidden, c.decoder_dropout, dropout_stream) {}

private:
    static const StateConfig& check(const StateConfig& c) {
        require(c.gene_dim >= 1, "GeneDecoder: the option needs gene_dim >= 1 (got {})", c.gene_dim);
        return c;
    }
};

} // namespace state_parts

/// Option: decode the latent predictions to genes.
struct GeneDecoder {
    static constexpr StateOptionKind option = StateOptionKind::gene_decoder;
    template <Scalar T, Backend B>
    using module = state_parts::GeneDecoderModule<T, B>;
};

} // namespace celltx
