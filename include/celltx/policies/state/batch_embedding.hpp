#pragma once
// BatchEmbedding (option): state's batch_encoder, nn.Embedding(batch_dim, H) added to every cell's
// encoding from its (experimental) batch index; the model's forward then takes one index per cell.
// state_dict name "batch_encoder.weight" [batch_dim, H].
#include "celltx/nn/embedding.hpp"
#include "celltx/policies/state/option.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx {

namespace state_parts {

/// The batch encoder: an nn::Embedding of StateConfig::batch_dim rows of width StateConfig::hidden.
template <Scalar T, Backend B = cpu>
class BatchEncoder : public nn::Embedding<T, B> {
public:
    BatchEncoder() = default;
    explicit BatchEncoder(const StateConfig& c) : nn::Embedding<T, B>(check(c).batch_dim, c.hidden) {}

private:
    static const StateConfig& check(const StateConfig& c) {
        require(c.batch_dim >= 1, "BatchEmbedding: the option needs batch_dim >= 1 (got {})", c.batch_dim);
        return c;
    }
};

} // namespace state_parts

/// Option: add a learned embedding of each cell's batch.
struct BatchEmbedding {
    static constexpr StateOptionKind option = StateOptionKind::batch_embedding;
    template <Scalar T, Backend B>
    using module = state_parts::BatchEncoder<T, B>;
};

} // namespace celltx
