#pragma once
// BatchEmbedding (option): state's batch_encoder, nn.Embedding(batch_dim, H) added to every cell's
// encoding from its (experimental) batch index; the model's forward then takes one index per cell.
// state_dict name "batch_encoder.weight" [batch_dim, H].
#include "celltx/nn/embedding.hpp"
#include "celltx/policies/state/option.hpp"

namespace celltx {

/// Option: add a learned embedding of each cell's batch.
struct BatchEmbedding {
    static constexpr StateOptionKind option = StateOptionKind::batch_embedding;
    template <Scalar T, Backend B>
    using module = nn::Embedding<T, B>;
};

} // namespace celltx
