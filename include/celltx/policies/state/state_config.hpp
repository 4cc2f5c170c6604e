#pragma once
// StateConfig: the runtime sizes and switches of a State Transition model (state's
// StateTransitionPerturbationModel kwargs; docs/state_transition.md). What is compiled in
// (backbone family, loss, options) is the model's template arguments; everything here is data, so
// one compiled model serves any gene count, width or depth. Presets: state_sm, state, pertsets.
#include <cstdint>
#include <string_view>
#include <vector>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"
#include "celltx/policies/backbone/backbone_config.hpp"

namespace celltx {

/// Where the model predicts, and so how the residual is added (docs/state_transition.md).
enum class OutputSpace {
    gene,    ///< expression or embedding; residual in hidden space: project_out(h + basal_encoder(ctrl))
    latent,  ///< same arithmetic as gene (state distinguishes them only for the decoder)
    all,     ///< residual in output space: final_down_then_up(project_out(h) + ctrl)
};

inline OutputSpace output_space_from_name(std::string_view s) {
    if (s == "gene") return OutputSpace::gene;
    if (s == "latent") return OutputSpace::latent;
    if (s == "all") return OutputSpace::all;
    throw ShapeError(fmt::format("StateConfig: unknown output_space '{}' (expected gene, latent or all)", s));
}

struct StateConfig {
    // ---- sizes
    index_t input_dim = 0;        ///< control-cell width (embedding width or gene count)
    index_t output_dim = 0;       ///< 0: input_dim
    index_t pert_dim = 0;         ///< perturbation one-hot / feature width
    index_t hidden = 0;           ///< H
    int n_encoder_layers = 4;     ///< build_mlp depth of pert_encoder and basal_encoder
    int n_decoder_layers = 4;     ///< build_mlp depth of project_out
    double dropout = 0.1;         ///< encoders, project_out and the confidence head
    index_t cell_set_len = 512;   ///< S for flat [B·S, ·] inputs (rank-3 inputs bring their own S)
    // ---- head
    bool predict_residual = true;
    OutputSpace output_space = OutputSpace::gene;
    bool use_basal_projection = true;  ///< false: basal_encoder is one Linear (names basal_encoder.weight/bias)
    bool apply_relu = true;            ///< ReLU on the output: state applies it when predicting expression or without gene decoder
    // ---- options (used only when the model type lists the option)
    index_t batch_dim = 0;                          ///< number of batches (read by the BatchEmbedding option only)
    index_t gene_dim = 0;                           ///< number of genes (read by the GeneDecoder option only)
    std::vector<index_t> decoder_hidden{1024, 1024, 512};
    double decoder_dropout = 0.1;
    bool detach_decoder = false;                    ///< the decoder loss does not train the model below it
    // ---- backbone
    BackboneConfig backbone;
    // ---- losses
    double blur = 0.05;                 ///< Sinkhorn
    double sinkhorn_weight = 0.01;      ///< CombinedLoss
    double energy_weight = 1.0;         ///< CombinedLoss
    double decoder_loss_weight = 1.0;
    double confidence_weight = 0.01;
    double confidence_target_scale = 10.0;  ///< the confidence regresses scale × the per-set main loss
    double l1_lambda = 0.0;             ///< state's `regularization`: λ · mean|pred − ctrl| (needs output_dim == input_dim)
    index_t loss_block = 256;           ///< tile edge of the pairwise loss kernels

    index_t out_dim() const noexcept { return output_dim ? output_dim : input_dim; }

    /// state_sm.yaml: H = 672, 4 LLaMA layers, 8 heads × 84, intermediate 2688, S = 128, one Linear basal encoder.
    static StateConfig state_sm(index_t genes, index_t pert_dim) {
        StateConfig c = common(genes, pert_dim, 672);
        c.use_basal_projection = false;
        c.cell_set_len = 128;
        c.backbone.layers = 4;
        c.backbone.heads = 8;
        c.backbone.head_dim = 84;
        c.backbone.intermediate = 2688;
        return c;
    }
    /// state.yaml: H = 696, 8 LLaMA layers, 12 heads × 58, intermediate 2784, S = 512.
    static StateConfig state(index_t genes, index_t pert_dim) {
        StateConfig c = common(genes, pert_dim, 696);
        c.backbone.layers = 8;
        c.backbone.heads = 12;
        c.backbone.kv_heads = 12;
        c.backbone.head_dim = 58;
        c.backbone.intermediate = 2784;
        return c;
    }
    /// pertsets.yaml: GPT-2, H = 328, 8 layers, 8 heads, S = 512, dropout 0, one Linear basal encoder.
    static StateConfig pertsets(index_t genes, index_t pert_dim) {
        StateConfig c = common(genes, pert_dim, 328);
        c.use_basal_projection = false;
        c.dropout = 0.0;
        c.backbone.layers = 8;
        c.backbone.heads = 8;
        return c;
    }

private:
    static StateConfig common(index_t genes, index_t pert_dim, index_t hidden) {
        StateConfig c;
        c.input_dim = c.output_dim = genes;
        c.pert_dim = pert_dim;
        c.hidden = c.backbone.hidden = hidden;
        return c;
    }
};

} // namespace celltx
